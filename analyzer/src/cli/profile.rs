//! `seccomp-refine profile`: profiles, in every format, and the report from an existing `trace.json`.

use std::path::PathBuf;

use anyhow::Result;

use super::Outcome;
use super::progress::Printer;
use crate::pipeline;
use crate::profile::{ANALYSIS_FILE, Analysis, kubernetes};
use crate::trace::Trace;

/// Write seccomp profiles and the report from a trace (`trace.json` from `trace` or `import`).
///
/// Writes seccomp-init.json, seccomp-serving.json and seccomp.json (the one Docker applies at start:
/// init, serving and what the container runtime does after installing the filter), seccomp.oci.json
/// (the OCI config.json section), seccomp.k8s.yaml (a security-profiles-operator SeccompProfile),
/// report.md and report.html. When the analysis.json of `analyze` sits beside the trace, each phase
/// also allows what the static analysis found reachable in it.
#[derive(clap::Args)]
pub struct Args {
    /// The trace to read.
    trace: PathBuf,
    /// Directory for the profiles [default: the trace's directory].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// apiVersion of the Kubernetes SeccompProfile.
    #[arg(long, value_name = "VERSION", default_value = kubernetes::DEFAULT_API_VERSION)]
    k8s_api_version: String,
}

pub fn run(args: Args) -> Result<Outcome> {
    let trace = Trace::read(&args.trace)?;
    let dir = args.output.unwrap_or_else(|| args.trace.parent().unwrap_or(".".as_ref()).to_path_buf());
    let beside = args.trace.with_file_name(ANALYSIS_FILE);
    let analysis = if beside.exists() { Some(Analysis::read(&beside)?) } else { None };
    pipeline::claim(&dir, false, analysis.is_some())?;
    let request = pipeline::Request {
        dir: &dir,
        trace: &trace,
        kubernetes_api_version: &args.k8s_api_version,
        analysis: analysis.as_ref(),
    };
    pipeline::write_outputs(&request, &Printer)?;
    Ok(Outcome::Clean)
}
