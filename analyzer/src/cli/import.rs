//! `seccomp-refine import`: a sysdig/falco capture into `trace.json` and profiles.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::Outcome;
use super::analyze::{AfterTrace, FilesArgs};
use crate::scap::{self, Capture, Focus, Plan, Selection};
use crate::trace::{MARKER_HELP, MarkerSpec, Trace};

/// Import a sysdig/falco capture (`sysdig -w`, raw or gzip) as the trace of one container.
///
/// Writes trace.json and the per-phase profiles, as `trace` does, into DIR
/// (default ./profiles/<container name, else its 12-hex id, or host>/).
#[derive(clap::Args)]
pub struct Args {
    /// The capture file.
    capture: PathBuf,
    /// The container to import: a 12- or 64-hex id, a name, or `host` for processes outside any
    /// container [default: the capture's only container].
    #[arg(long, value_name = "ID|NAME")]
    container: Option<String>,
    /// What ends init and starts serving (symbol: and ready:tcp: cannot work on a capture).
    #[arg(long, value_name = "MARKER", default_value = "auto", long_help = MARKER_HELP)]
    phase_marker: MarkerSpec,
    /// Write what was read before damage in the capture, marked incomplete, instead of failing.
    #[arg(long)]
    partial: bool,
    /// Directory for trace.json and the profiles.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    #[command(flatten)]
    files: FilesArgs,
    #[command(flatten)]
    statics: AfterTrace,
}

pub fn run(args: Args) -> Result<Outcome> {
    args.statics.check()?;
    let path = &args.capture;
    let wanted = args.container.as_deref();
    let capture = read(path, &args.phase_marker, Focus::of(wanted))?;
    // A read focused on one id counts no other container: to list them, or to find a name that
    // looks like an id, everything is counted.
    let refocus = capture.focus != Focus::All && matches!(capture.select(wanted), Err(Selection::NotFound(..)));
    let capture = if refocus { read(path, &args.phase_marker, Focus::All)? } else { capture };
    if let Some(damage) = &capture.damage
        && !args.partial
    {
        bail!("cannot import {}: {damage} (--partial imports what comes before the damage)", path.display());
    }
    let aggregate = match capture.select(wanted) {
        Ok(aggregate) => aggregate,
        Err(selection) => return Err(explain(selection, path)),
    };
    let trace = capture.trace(aggregate, &path.display().to_string());
    let dir = args.output.clone().unwrap_or_else(|| default_dir(&trace));
    args.statics.claim(&dir)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(finish(&trace, &dir, &args))?;
    Ok(Outcome::Clean)
}

fn read(path: &Path, marker: &MarkerSpec, focus: Focus) -> Result<Capture> {
    let plan = Plan::new(marker).map_err(anyhow::Error::msg).context("--phase-marker")?;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    scap::read(file, plan, focus).with_context(|| format!("cannot import {}", path.display()))
}

/// `./profiles/<container name, else short id, else host>/`.
fn default_dir(trace: &Trace) -> PathBuf {
    let target = &trace.target;
    let id = target.container_id.as_deref().map(|id| &id[..id.len().min(12)]);
    Path::new("profiles").join(target.container_name.as_deref().or(id).unwrap_or("host"))
}

/// Prints the containers to choose from and says what went wrong.
fn explain(selection: Selection, capture: &Path) -> anyhow::Error {
    let (message, choices) = match selection {
        Selection::Nothing => {
            return anyhow::anyhow!("{}: no process made a syscall in the capture", capture.display());
        }
        Selection::Ambiguous(choices) => (format!("{} holds several containers", capture.display()), choices),
        Selection::NotFound(wanted, choices) => {
            (format!("no container `{wanted}` made a syscall in {}", capture.display()), choices)
        }
    };
    eprintln!("seccomp-refine: containers in {} (choose one with --container ID|NAME):", capture.display());
    for choice in &choices {
        eprintln!("  {choice}");
    }
    anyhow::anyhow!("{message}; choose one with --container ID|NAME")
}

/// The end of an import: the capture's warnings and a one-line summary, then `trace.json`, the
/// static analysis merged with it (unless `--no-static`, or when the container's files are not
/// available here), every profile format and the report, in `dir`. When the static analysis
/// fails, the trace and its dynamic profiles are still written before the error is returned.
async fn finish(trace: &Trace, dir: &Path, args: &Args) -> Result<()> {
    for warning in &trace.warnings {
        eprintln!("seccomp-refine: warning: {warning}");
    }
    let marker = &trace.phase_marker;
    let target = trace.target.container_name.as_deref().or(trace.target.container_id.as_deref()).unwrap_or("host");
    println!(
        "{target}: {} syscalls in init, {} in serving; phase marker {} {}",
        trace.phases.init.names().len(),
        trace.phases.serving.names().len(),
        marker.spec,
        if marker.fired { "fired" } else { "did not fire" }
    );
    args.statics.finish(trace, dir, &args.files.files(false), None).await
}
