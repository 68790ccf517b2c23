//! The project's build system, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! seccomp-refine is built from parts no single `cargo` invocation handles: kernel programs compiled
//! by nightly rustc for `bpfel-unknown-none`, a userspace binary that embeds them, and tests that
//! need root, tracefs, a Docker daemon and locally built images. xtask puts each of those steps
//! behind one command and installs what a fresh Debian machine lacks, printing one line per action.
//! It never reconfigures what is already there (an existing Docker daemon, a pulled image).

mod bench;
mod bitcode;
mod build;
mod codegen;
mod experiment;
mod fuzz;
mod gen_capture;
mod images;
mod machine;
mod test;
mod tidy;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test seccomp-refine")]
struct Flags {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel programs and the analyzer in release mode (`target/release/seccomp-refine`).
    Build,
    /// Build the kernel programs (tracer-ebpf), installing nightly rust-src and bpf-linker if missing.
    BuildEbpf,
    /// Build everything, prepare the machine, and run `seccomp-refine ARGS` as root.
    Run {
        /// Arguments for seccomp-refine, e.g. `trace nginx`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build local stand-ins for `nginx:latest` and `redis:latest` from Debian packages (offline path).
    Images {
        /// Which stand-ins to build (default: all).
        names: Vec<String>,
    },
    /// Run every test: unit, eBPF and Docker end-to-end.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the product against its peers (tracer overhead, static analysis, import, profiles)
    /// and write BENCHMARKS.md, BENCHMARKS.json and docs/benchmarks.svg.
    Bench {
        /// Which benchmarks to run (default: all).
        names: Vec<String>,
        /// Measured rounds per benchmark.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Warm-up rounds, run and discarded before measuring.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
    },
    /// Reproduce the research tables: for each application and Debian release, build the image,
    /// trace, analyse, verify, enforce and judge the profiles with the application's test suite;
    /// write EXPERIMENTS.md, EXPERIMENTS.json and docs/experiments.svg (see docs/experiments.md).
    Experiment {
        /// Which applications: nginx, apache2, lighttpd, redis (default: all).
        apps: Vec<String>,
        /// Which Debian releases, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "bullseye,bookworm,trixie")]
        releases: Vec<String>,
        /// How many times each cell is measured (times are medians, denials the union).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// The seccomp-refine binary to run [default: the release build, built first].
        #[arg(long, value_name = "FILE")]
        seccomp_refine: Option<PathBuf>,
        /// Where EXPERIMENTS.md/.json and docs/experiments.svg go [default: the project root]; the
        /// cells' files go to OUT/cells (default: target/experiment/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Build an application's whole-program LLVM bitcode from Debian's sources with clang-19
    /// (`target/bitcode/NAME.bc`, cached).
    Bitcode {
        /// Which applications: nginx, redis (default: all).
        names: Vec<String>,
    },
    /// Fuzz the parsers of untrusted input (needs nightly; installs cargo-fuzz when missing).
    Fuzz {
        /// One target: scap, elf, trace_json, profile_json, bitcode (default: all, in turn).
        target: Option<String>,
        /// Seconds: for the one target, or split between all of them [default: 60 per target].
        #[arg(long)]
        time: Option<u64>,
    },
    /// Regenerate committed source files from their upstream data.
    Codegen {
        /// libseccomp's `src/syscalls.csv` (the syscall tables are regenerated only when given).
        #[arg(long)]
        syscalls_csv: Option<PathBuf>,
        /// The `.scap` tables directory (`event_schema.tsv`, `event_syscall_map_x86_64.json`)
        /// [default: docs/scap-data].
        #[arg(long)]
        scap_data: Option<PathBuf>,
    },
    /// Write a large uncompressed capture for benchmarking `import`: a fixture's events replayed
    /// REPEAT times with shifted timestamps.
    GenCapture {
        /// The capture to replay [default: tests/data/scap/falco_psp_run_as_user_0_container.scap].
        #[arg(long)]
        fixture: Option<PathBuf>,
        /// How many times the events are replayed (the psp fixture is 0.43 MB per round).
        #[arg(long)]
        repeat: u32,
        /// The capture to write.
        out: PathBuf,
    },
}

fn main() {
    let flags = Flags::parse();
    if let Err(err) = dispatch(flags.command) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Build => build::build_all(),
        Command::BuildEbpf => build::build_ebpf().map(drop),
        Command::Run { args } => build::run(&args),
        Command::Images { names } => images::build(&names),
        Command::Test { args } => test::run_tests(&args),
        Command::Bench { names, rounds, warmup } => bench::run(&names, bench::Rounds { warmup, measured: rounds }),
        Command::Experiment { apps, releases, rounds, seccomp_refine, out } => {
            experiment::run(&experiment::Options { apps, releases, rounds, seccomp_refine, out })
        }
        Command::Bitcode { names } => bitcode::build(&names),
        Command::Fuzz { target, time } => fuzz::run(target.as_deref(), time),
        Command::GenCapture { fixture, repeat, out } => {
            let fixture = fixture.unwrap_or_else(gen_capture::default_fixture);
            gen_capture::generate(&fixture, repeat, &out)
        }
        Command::Codegen { syscalls_csv, scap_data } => {
            if let Some(csv) = syscalls_csv {
                codegen::syscall_tables(&csv)?;
            }
            codegen::scap_tables(&scap_data.unwrap_or_else(codegen::scap_data))
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits inside the workspace").to_path_buf()
}
