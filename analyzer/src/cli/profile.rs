//! `seccomp-refine profile`: profiles from an existing `trace.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Outcome;
use crate::profile::Profiles;
use crate::trace::Trace;

/// Write seccomp profiles from a trace (`trace.json` from `trace` or `import`).
///
/// Writes seccomp-init.json, seccomp-serving.json and seccomp.json (the one Docker applies at start:
/// init, serving and what the container runtime does after installing the filter).
#[derive(clap::Args)]
pub struct Args {
    /// The trace to read.
    trace: PathBuf,
    /// Directory for the profiles [default: the trace's directory].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome> {
    let trace = Trace::read(&args.trace)?;
    let dir = args.output.unwrap_or_else(|| args.trace.parent().unwrap_or(".".as_ref()).to_path_buf());
    let profiles = Profiles::from_trace(&trace);
    for name in profiles.unknown_names() {
        eprintln!("seccomp-refine: warning: `{name}` is not a syscall this version knows; left out of the profiles");
    }
    let written =
        profiles.write_docker_json(&dir).with_context(|| format!("cannot write profiles to {}", dir.display()))?;
    for ((stem, names), path) in profiles.by_file().iter().zip(&written) {
        println!("{stem:<16} {:>3} syscalls  {}", names.len(), path.display());
    }
    Ok(Outcome::Clean)
}
