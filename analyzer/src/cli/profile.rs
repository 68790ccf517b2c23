//! `seccomp-refine profile`: profiles, in every format, and the report from an existing `trace.json`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Outcome;
use crate::profile::{OutputOptions, Profiles, kubernetes};
use crate::report::{self, ReportInput};
use crate::trace::Trace;

/// Write seccomp profiles and the report from a trace (`trace.json` from `trace` or `import`).
///
/// Writes seccomp-init.json, seccomp-serving.json and seccomp.json (the one Docker applies at start:
/// init, serving and what the container runtime does after installing the filter), seccomp.oci.json
/// (the OCI config.json section), seccomp.k8s.yaml (a security-profiles-operator SeccompProfile),
/// report.md and report.html.
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
    let profiles = Profiles::from_trace(&trace);
    for name in profiles.unknown_names() {
        eprintln!("seccomp-refine: warning: `{name}` is not a syscall this version knows; left out of the profiles");
    }
    let label = trace.target.image.clone().unwrap_or_else(|| directory_label(&dir));
    let options = OutputOptions { label: label.clone(), kubernetes_api_version: args.k8s_api_version };
    let written =
        profiles.write_all(&dir, &options).with_context(|| format!("cannot write profiles to {}", dir.display()))?;
    for ((stem, names), path) in profiles.by_file().iter().zip(&written) {
        println!("{stem:<16} {:>3} syscalls  {}", names.len(), path.display());
    }
    for path in &written[3..] {
        println!("{:<16}               {}", "", path.display());
    }
    let input = ReportInput {
        title: &label,
        profiles: &profiles,
        trace: Some(&trace),
        unresolved_static_sites: None,
        verify: None,
    };
    let reports =
        report::write(&dir, &input).with_context(|| format!("cannot write the report to {}", dir.display()))?;
    for path in reports {
        println!("{:<16}               {}", "", path.display());
    }
    Ok(Outcome::Clean)
}

/// A name for the application when the trace has no image: the profile directory's.
fn directory_label(dir: &std::path::Path) -> String {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute.file_name().and_then(|name| name.to_str()).unwrap_or("profile").to_owned()
}
