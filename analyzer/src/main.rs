//! The `seccomp-refine` command: see `seccomp-refine --help`.

fn main() -> std::process::ExitCode {
    seccomp_refine::cli::main()
}
