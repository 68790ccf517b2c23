//! `seccomp-refine trace`: record a container (or a host command) with the eBPF tracer and write
//! the trace and its profiles.
//!
//! Arguments are checked here without IO; the `trace::live` module runs the tracer and the
//! `docker` module the container. Whatever ends the trace — its duration, Ctrl-C, the container
//! exiting — the trace and profiles are written (`pipeline::finish`) before any error is reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::Outcome;
use super::analyze::AfterTrace;
use super::exit::Failure;
use crate::callgraph::EntrySpec;
use crate::docker::container::Stopped;
use crate::pipeline::Files;
use crate::trace::ebpf::DEFAULT_RING_BUFFER_BYTES;
use crate::trace::live::Ended;
use crate::trace::live::container::{
    ATTACHED_MARKER, AttachRequest, ContainerRequest, EarlyExit, attach, trace_container,
};
use crate::trace::live::exec::{ExecRequest, trace_command};
use crate::trace::{MARKER_HELP, MarkerSpec, Trace, parse_duration};

/// Trace a container from its first syscall and write per-phase seccomp profiles.
///
/// Runs IMAGE (with its own command, or CMD after `--`), records every syscall per phase, every
/// program exec'd and every library mapped executable, and writes trace.json, seccomp-init.json,
/// seccomp-serving.json and seccomp.json (what Docker applies at start) into the output directory.
#[derive(clap::Args)]
pub struct Args {
    /// The image to run, e.g. `nginx` (not with --attach or --exec).
    #[arg(required_unless_present_any = ["attach", "exec"], conflicts_with_all = ["attach", "exec"])]
    image: Option<String>,
    /// Trace a running container from now on (everything counts as serving). Repeat it to trace
    /// several containers at once with one set of kernel programs, each into DIR/<container name>/.
    #[arg(long, value_name = "CONTAINER", conflicts_with = "exec")]
    attach: Vec<String>,
    /// Trace a host command (after `--`) in a fresh cgroup, without Docker.
    #[arg(long, requires = "command")]
    exec: bool,
    /// How long to trace; Ctrl-C ends earlier and still writes everything.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Run CMD (with `sh -c`) once the container accepts connections on its first exposed port,
    /// with SECCOMP_REFINE_HOST, SECCOMP_REFINE_PORT and SECCOMP_REFINE_CONTAINER set; the trace
    /// ends when it exits.
    #[arg(long, value_name = "CMD")]
    workload: Option<String>,
    /// Where to write the trace and profiles [default: ./profiles/<image or container>/]. With
    /// several --attach, the directory that gets one subdirectory per container [default: ./profiles/].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Keep the container after the trace instead of removing it.
    #[arg(long)]
    keep: bool,
    #[arg(long, value_name = "MARKER", default_value = "auto", long_help = MARKER_HELP)]
    /// What ends the init phase and starts serving (see --help).
    phase_marker: MarkerSpec,
    /// Size of the kernel's event ring buffer (execs, mapped libraries, phase changes): a power of
    /// two of at least 4K, e.g. 64K, 1M. Events that do not fit are counted as lost.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_ring_buffer)]
    ring_buffer: u32,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    statics: AfterTrace,
}

/// How a container is run: shared by the commands that start one (`trace`, `enforce`).
#[derive(clap::Args)]
pub struct RunArgs {
    /// Publish a container port, as `docker run -p` ([HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp]).
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Set an environment variable in the container (NAME=VALUE).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The command instead of the image's (CMD ARGS after `--`); for `trace --exec`, the host command.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// Whether any option was given (they make no sense for a container already running).
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.env.is_empty() && self.command.is_empty()
    }
}

pub fn run(args: Args) -> Result<Outcome> {
    args.statics.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<Outcome> {
    if args.exec {
        return trace_exec(args).await;
    }
    if !args.attach.is_empty() {
        return trace_attached(args).await;
    }
    let image = args.image.clone().expect("clap requires an image without --attach or --exec");
    let request = ContainerRequest {
        image: image.clone(),
        command: args.run.command.clone(),
        env: args.run.env.clone(),
        publish: args.run.publish.clone(),
        marker: args.phase_marker.clone(),
        duration: args.duration,
        ring_buffer_bytes: args.ring_buffer,
        workload: args.workload.clone(),
        keep: args.keep,
    };
    let dir = args.output.clone().unwrap_or_else(|| default_output(&image));
    args.statics.claim(&dir)?;
    let outcome = trace_container(&request).await?;
    finish(&outcome.trace, &dir, &args, &Files::Image(image)).await?;
    report_end(outcome.ended, &outcome.trace, None);
    match outcome.workload {
        Some(Ok(status)) if !status.success() => {
            eprintln!("seccomp-refine: warning: the workload exited with {status}")
        }
        Some(Err(err)) => eprintln!("seccomp-refine: warning: the workload could not run: {err}"),
        _ => {}
    }
    match outcome.early_exit {
        Some(exit) => early_exit_result(&exit, &dir, None),
        None => Ok(Outcome::Clean),
    }
}

/// `--attach C1 [--attach C2 …]`: one tracer for all, one profile directory each.
async fn trace_attached(args: Args) -> Result<Outcome> {
    let several = args.attach.len() > 1;
    let dir_of = |name: &str| match (&args.output, several) {
        (Some(dir), false) => dir.clone(),
        (None, false) => default_output(name),
        (parent, true) => parent.clone().unwrap_or_else(|| PathBuf::from("profiles")).join(name),
    };
    for asked in &args.attach {
        args.statics.claim(&dir_of(asked))?;
    }
    let request =
        AttachRequest { containers: args.attach.clone(), duration: args.duration, ring_buffer_bytes: args.ring_buffer };
    let outcomes = attach(&request).await?;
    let mut written = Vec::new();
    for (outcome, asked) in outcomes.iter().zip(&args.attach) {
        let name = outcome.trace.target.container_name.clone().unwrap_or_else(|| asked.clone());
        let dir = dir_of(&name);
        let image = outcome.trace.target.image.clone().unwrap_or_else(|| name.clone());
        finish(&outcome.trace, &dir, &args, &Files::Image(image)).await?;
        written.push((name, dir));
    }
    let mut failed = Vec::new();
    for (outcome, (name, dir)) in outcomes.iter().zip(&written) {
        let label = several.then_some(name.as_str());
        report_end(outcome.ended, &outcome.trace, label);
        if let Some(Err(err)) = outcome.early_exit.as_ref().map(|exit| early_exit_result(exit, dir, label)) {
            failed.push(err);
        }
    }
    match failed.len() {
        0 => Ok(Outcome::Clean),
        1 => Err(failed.remove(0)),
        _ => Err(Failure(failed.iter().map(|err| format!("{err:#}")).collect::<Vec<_>>().join("; ")).into()),
    }
}

/// A container that stopped before the trace's end: its log tail on stderr; an error unless it
/// exited with code 0. `label` names it when several were traced.
fn early_exit_result(exit: &EarlyExit, dir: &Path, label: Option<&str>) -> Result<Outcome> {
    let container = label.map_or_else(|| "the container".to_owned(), |name| format!("container {name}"));
    for line in &exit.log_tail {
        eprintln!("  | {line}");
    }
    let written = format!("what was recorded until then is in {}, marked incomplete", dir.display());
    let failure = |message: String| Err(Failure(message).into());
    match &exit.stopped {
        Stopped::Exited(0) => {
            eprintln!("seccomp-refine: {container} exited (code 0) before the trace's end");
            Ok(Outcome::Clean)
        }
        Stopped::Exited(code) => {
            failure(format!("{container} exited early with code {code} ({written}; its last log lines are above)"))
        }
        Stopped::Removed => failure(format!("{container} was removed during the trace ({written})")),
        Stopped::DaemonGone(address) => failure(format!(
            "the Docker daemon ({address}) stopped answering during the trace; {written}; once the daemon is back, \
             remove what is left of {container} with `docker rm -f`"
        )),
    }
}

async fn trace_exec(args: Args) -> Result<Outcome> {
    let request = ExecRequest {
        command: args.run.command.clone(),
        marker: args.phase_marker.clone(),
        duration: args.duration,
        ring_buffer_bytes: args.ring_buffer,
    };
    let name = Path::new(&args.run.command[0]).file_name().map_or("command".into(), |name| name.to_string_lossy());
    let dir = args.output.clone().unwrap_or_else(|| default_output(&name));
    args.statics.claim(&dir)?;
    let outcome = trace_command(&request).await?;
    finish(&outcome.trace, &dir, &args, &Files::FromTrace { required: true }).await?;
    report_end(outcome.ended, &outcome.trace, None);
    if let Some(status) = outcome.status.filter(|status| !status.success()) {
        eprintln!("seccomp-refine: the traced command exited with {status}");
    }
    Ok(Outcome::Clean)
}

/// `./profiles/<name>/`, with an image's registry path and tag dropped (`docker.io/library/nginx:1`
/// → `nginx`).
pub fn default_output(name: &str) -> PathBuf {
    let without_tag = name.split('@').next().unwrap_or(name);
    let last = without_tag.rsplit('/').next().unwrap_or(without_tag);
    let short = last.split(':').next().unwrap_or(last);
    Path::new("profiles").join(if short.is_empty() { "trace" } else { short })
}

/// The trace and everything made of it (`pipeline::finish`), the static analysis reading `files`;
/// a `symbol:` phase marker's function is the serving entry unless `--serving-entry` names one.
async fn finish(trace: &Trace, dir: &Path, args: &Args, files: &Files) -> Result<()> {
    let marker_entry = match &args.phase_marker {
        MarkerSpec::Symbol { function, binary } => {
            Some(EntrySpec { symbol: function.clone(), binary: binary.clone(), callers: Vec::new(), program: None })
        }
        _ => trace.phase_marker.serving_entry.as_ref().map(EntrySpec::derived),
    };
    args.statics.finish(trace, dir, files, marker_entry).await
}

/// The summary on stderr; `label` prefixes it with the container's name when several were traced.
fn report_end(ended: Ended, trace: &Trace, label: Option<&str>) {
    let seconds = trace.duration_ns as f64 / 1e9;
    let why = match ended {
        Ended::Deadline => "the duration elapsed",
        Ended::Interrupted => "interrupted by SIGINT",
        Ended::Terminated => "terminated by SIGTERM",
        Ended::TargetDone => "the target finished",
    };
    let marker = &trace.phase_marker;
    let fired = match marker.at_ns {
        Some(at) if marker.fired => format!("fired at {:.3}s", at as f64 / 1e9),
        // Attached: there is no marker, the container was serving all along.
        _ if marker.spec == ATTACHED_MARKER => "(attached: everything counts as serving)".to_owned(),
        _ => "did not fire: everything counts as init".to_owned(),
    };
    let prefix = label.map(|name| format!("{name}: ")).unwrap_or_default();
    let entry = marker.serving_entry.as_ref().map(|entry| format!("; serving entry {entry}")).unwrap_or_default();
    eprintln!("seccomp-refine: {prefix}traced {seconds:.1}s ({why}); phase marker {} {fired}{entry}", marker.spec);
    for warning in &trace.warnings {
        eprintln!("seccomp-refine: warning: {prefix}{warning}");
    }
    if let Some(reason) = &trace.incomplete_reason {
        eprintln!("seccomp-refine: warning: {prefix}the trace is incomplete: {reason}");
    }
}

fn parse_ring_buffer(text: &str) -> Result<u32, String> {
    let (digits, unit) = match text.strip_suffix(['K', 'k']) {
        Some(digits) => (digits, 1 << 10),
        None => match text.strip_suffix(['M', 'm']) {
            Some(digits) => (digits, 1 << 20),
            None => (text, 1),
        },
    };
    let bytes = digits.parse::<u32>().ok().and_then(|value| value.checked_mul(unit));
    match bytes {
        Some(bytes) if bytes.is_power_of_two() && bytes >= 4096 => Ok(bytes),
        _ => Err(format!(
            "`{text}` is not a power of two of at least 4K (e.g. 64K, 1M; default {DEFAULT_RING_BUFFER_BYTES})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_directories_are_named_after_the_image() {
        assert_eq!(default_output("nginx"), Path::new("profiles/nginx"));
        assert_eq!(default_output("docker.io/library/redis:7.0"), Path::new("profiles/redis"));
        assert_eq!(default_output("localhost:5000/team/app@sha256:abc"), Path::new("profiles/app"));
    }

    #[test]
    fn ring_buffer_sizes_are_pages_in_powers_of_two() {
        assert_eq!(parse_ring_buffer("4096"), Ok(4096));
        assert_eq!(parse_ring_buffer("64K"), Ok(65536));
        assert_eq!(parse_ring_buffer("1M"), Ok(1 << 20));
        assert!(parse_ring_buffer("3000").unwrap_err().contains("power of two"));
        assert!(parse_ring_buffer("2048").is_err());
        assert!(parse_ring_buffer("lots").is_err());
    }
}
