//! `cargo xtask bench [NAME…]`: the product measured against its peers, side by side, in one run.
//!
//! Each benchmark compares seccomp-refine with a peer on the same machine in the same run,
//! interleaved round by round (`harness`), and reports ratios with their spread; absolute figures
//! are printed for context but never judged. The results go to `BENCHMARKS.md`, `BENCHMARKS.json`
//! and `docs/benchmarks.svg` (`report`, `plot`). Benchmarks run against the release build, as
//! root, on the stand-in images, like `cargo xtask run`.

mod bitcode;
mod enforce;
mod harness;
mod import;
pub mod plot;
mod profiles;
pub mod report;
mod static_analysis;
mod timed;
mod tracer_overhead;
mod tracer_scale;

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{build, images, machine};
pub use harness::{Rounds, median};
use report::Section;

/// A benchmark: its name on the command line, and the function that runs it.
struct Benchmark {
    name: &'static str,
    run: fn(&Context) -> Result<Section>,
}

const BENCHMARKS: &[Benchmark] = &[
    Benchmark { name: "tracer-overhead", run: tracer_overhead::run },
    Benchmark { name: "tracer-scale", run: tracer_scale::run },
    Benchmark { name: "static", run: static_analysis::run },
    Benchmark { name: "import", run: import::run },
    Benchmark { name: "bitcode", run: bitcode::run },
    Benchmark { name: "profiles", run: profiles::run },
    Benchmark { name: "enforce", run: enforce::run },
];

/// What every benchmark gets.
pub struct Context {
    pub rounds: Rounds,
    /// The release binary.
    pub seccomp_refine: std::path::PathBuf,
}

/// Runs the named benchmarks (all when `names` is empty) and writes the results.
pub fn run(names: &[String], rounds: Rounds) -> Result<()> {
    for name in names {
        if !BENCHMARKS.iter().any(|bench| bench.name == name) {
            let known: Vec<&str> = BENCHMARKS.iter().map(|bench| bench.name).collect();
            bail!("no benchmark named `{name}` (known: {})", known.join(", "));
        }
    }
    if !machine::is_root() {
        bail!("benchmarks trace containers and need root; run `sudo -E cargo xtask bench`");
    }
    machine::apt_install(&["time", "wrk", "bpftrace", "strace", "sysdig", "binutils", "curl", "redis-tools"])?;
    build::build_all()?;
    machine::mount_kernel_filesystems()?;
    machine::ensure_docker()?;
    images::build(&[])?;
    let context = Context { rounds, seccomp_refine: crate::project_root().join("target/release/seccomp-refine") };
    let mut sections = Vec::new();
    let mut failed = None;
    for bench in BENCHMARKS.iter().filter(|bench| names.is_empty() || names.iter().any(|name| name == bench.name)) {
        println!("xtask: bench {}", bench.name);
        match (bench.run)(&context) {
            Ok(section) => sections.push(section),
            // What was measured before the failure is still written.
            Err(error) => {
                failed = Some(error.context(format!("bench {}", bench.name)));
                break;
            }
        }
    }
    let machine = report::Machine::describe();
    let order: Vec<&str> = BENCHMARKS.iter().map(|bench| bench.name).collect();
    let markdown = report::write(&machine, sections, &order)?;
    println!("\n{markdown}");
    failed.map_or(Ok(()), Err)
}

/// `docker run -d` with the benchmarks' label and a capped log: `args` end with the image; returns
/// the container's id.
pub fn docker_run(args: &[&str]) -> Result<String> {
    let mut command = Command::new("docker");
    command.args(["run", "-d", "--log-opt", "max-size=1m", "--label", "io.seccomp-refine.bench=1"]);
    output(command.args(args))
}

/// Runs `cmd`, returning its trimmed stdout; its stderr is the error when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
