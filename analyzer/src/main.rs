//! The `seccomp-refine` command: see `seccomp-refine --help`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    seccomp_refine::cli::main()
}
