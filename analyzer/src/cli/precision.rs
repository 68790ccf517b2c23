//! `seccomp-refine precision`: a profile directory measured against the observations of one or
//! more traces (`profile::Precision`), per phase.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Outcome;
use crate::profile::{ANALYSIS_FILE, Analysis, MEASURED_PHASES, Precision, SyscallSet, observed, read::read_allowlist};
use crate::trace::Trace;

/// Measure profiles against what traces observed: precision, recall and F1 per phase.
///
/// Reads seccomp-init.json and seccomp-serving.json from DIR and measures each against the union
/// of what the traces observed in that phase — e.g. the trace the profiles came from and a trace
/// under a wider workload. With DIR/analysis.json, also counts the syscalls each phase allows on
/// static reachability alone. Exits 1 when a profile denies an observed syscall (recall below 1).
#[derive(clap::Args)]
pub struct Args {
    /// The profile directory (from `trace`, `analyze` or `profile`).
    #[arg(value_name = "DIR")]
    profiles: PathBuf,
    /// The traces (trace.json) whose observations count, together.
    #[arg(required = true, value_name = "TRACE")]
    traces: Vec<PathBuf>,
    /// Print the measurements as JSON.
    #[arg(long)]
    json: bool,
}

/// One phase, as `--json` prints it.
#[derive(Serialize)]
struct PhaseReport {
    #[serde(flatten)]
    measured: Precision,
    /// Allowed on static reachability alone; absent without analysis.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    static_only: Option<usize>,
}

pub fn run(args: Args) -> Result<Outcome> {
    let traces: Vec<Trace> = args.traces.iter().map(|path| Trace::read(path)).collect::<Result<_, _>>()?;
    let traces: Vec<&Trace> = traces.iter().collect();
    let analysis_path = args.profiles.join(ANALYSIS_FILE);
    let analysis = analysis_path.exists().then(|| Analysis::read(&analysis_path)).transpose()?;
    let mut phases = BTreeMap::new();
    for phase in MEASURED_PHASES {
        let file = args.profiles.join(format!("seccomp-{}.json", phase.as_str()));
        let allowed: SyscallSet =
            read_allowlist(&file).with_context(|| format!("cannot measure {}", args.profiles.display()))?;
        let measured = Precision::measure(&allowed, &observed(&traces, phase));
        let static_only = analysis.as_ref().map(|analysis| analysis.static_only(phase).len());
        phases.insert(phase.as_str(), PhaseReport { measured, static_only });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&phases).expect("measurements always serialize"));
    } else {
        for (phase, report) in &phases {
            let static_only =
                report.static_only.map(|count| format!(", {count} static-only grants")).unwrap_or_default();
            println!("{phase}: {}{static_only}", report.measured.describe());
        }
    }
    let mut complete = true;
    for (phase, report) in &phases {
        if !report.measured.complete() {
            complete = false;
            eprintln!(
                "seccomp-refine: RECALL BELOW 1: seccomp-{phase}.json denies what the traces observed in {phase}: {}",
                report.measured.denied.join(" ")
            );
        }
    }
    Ok(if complete { Outcome::Clean } else { Outcome::Found })
}
