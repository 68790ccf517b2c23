//! The last step of every command that produces evidence (`trace`, `import`, `analyze`, `profile`):
//! the profiles in every format, `analysis.json` when static analysis ran, and the report, written
//! into the profile directory.
//!
//! One function, so that what a profile directory holds does not depend on which command made it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::profile::{ANALYSIS_FILE, Analysis, KUBERNETES_FILE, OCI_FILE, OutputOptions, Profiles};
use crate::report::{self, ReportInput};
use crate::trace::Trace;

/// What to write besides the profiles.
pub struct Request<'a> {
    pub dir: &'a Path,
    pub trace: &'a Trace,
    pub kubernetes_api_version: &'a str,
    /// The static analysis merged with the trace, when it ran: the profiles come from it, and
    /// `analysis.json` and the report's unresolved sites with it.
    pub analysis: Option<&'a Analysis>,
}

/// Writes every profile format and the report (`write_trace` writes `trace.json`), printing one
/// line per file.
pub fn write(request: &Request<'_>) -> Result<Vec<PathBuf>> {
    let dir = request.dir;
    let mut written = Vec::new();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(analysis) = request.analysis {
        let path = analysis.write(dir).with_context(|| format!("cannot write the analysis to {}", dir.display()))?;
        println!("{:<16}               {}", "analysis", path.display());
        written.push(path);
    }
    let profiles = request.analysis.map_or_else(|| Profiles::from_trace(request.trace), Analysis::profiles);
    for name in profiles.unknown_names() {
        eprintln!("seccomp-refine: warning: `{name}` is not a syscall this version knows; left out of the profiles");
    }
    let label = request.trace.target.image.clone().unwrap_or_else(|| directory_label(dir));
    let options =
        OutputOptions { label: label.clone(), kubernetes_api_version: request.kubernetes_api_version.to_owned() };
    let files =
        profiles.write_all(dir, &options).with_context(|| format!("cannot write profiles to {}", dir.display()))?;
    for ((stem, names), path) in profiles.by_file().iter().zip(&files) {
        println!("{stem:<16} {:>3} syscalls  {}", names.len(), path.display());
    }
    let input = ReportInput {
        title: &label,
        profiles: &profiles,
        trace: Some(request.trace),
        analysis: request.analysis,
        unresolved_static_sites: None,
        verify: None,
    };
    let reports =
        report::write(dir, &input).with_context(|| format!("cannot write the report to {}", dir.display()))?;
    for path in files.iter().skip(3).chain(&reports) {
        println!("{:<16}               {}", "", path.display());
    }
    written.extend(files);
    written.extend(reports);
    Ok(written)
}

/// Writes `trace.json` into `dir` (created if needed), printing its line.
pub fn write_trace(dir: &Path, trace: &Trace) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("trace.json");
    trace.write(&path)?;
    println!("{:<16}               {}", "trace", path.display());
    Ok(path)
}

/// Refuses, before any work, a profile directory where an output would replace an existing file
/// without `--force` or go through a symlink: a trace must not be recorded only to be refused.
/// `write_trace`: the command records `trace.json` too; `analysis`: it writes `analysis.json`.
pub fn claim(dir: &Path, write_trace: bool, analysis: bool) -> Result<()> {
    let mut names = vec!["seccomp-init.json", "seccomp-serving.json", "seccomp.json", OCI_FILE, KUBERNETES_FILE];
    names.extend(report::FILES);
    names.extend(write_trace.then_some("trace.json"));
    names.extend(analysis.then_some(ANALYSIS_FILE));
    for name in names {
        crate::output::check(&dir.join(name))?;
    }
    Ok(())
}

/// A name for the application when the trace has no image: the profile directory's.
fn directory_label(dir: &Path) -> String {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute.file_name().and_then(|name| name.to_str()).unwrap_or("profile").to_owned()
}
