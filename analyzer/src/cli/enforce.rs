//! `seccomp-refine enforce`: run a container under its profile and switch each process to the
//! serving profile when it starts serving; the `enforce` module does the work.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::Outcome;
use super::trace::RunArgs;
use crate::enforce::switch::{Outcome as SwitchOutcome, Record};
use crate::enforce::{self, Action, Ended, Report, Request, Target};
use crate::trace::MarkerSpec;

/// Enforce the serving profile from the moment each process starts serving.
///
/// Runs IMAGE under DIR/seccomp.json (plus prctl and seccomp, for the switch) and, when a process
/// first calls the serving entry (the phase marker), installs DIR/seccomp-serving.json into it:
/// the process stops there, a preflight replays the switch under its own filters, the filter is
/// injected with ptrace, and it resumes. Processes that never serve (nginx's master) keep the
/// init profile; processes respawned later are switched at their own first entry. Runs in the
/// foreground with live counts and a line per switch; Ctrl-C stops enforcing and leaves the
/// container running with the filters it has. Needs root.
#[derive(clap::Args)]
pub struct Args {
    /// The image to run, e.g. `nginx` (not with --attach).
    #[arg(required_unless_present = "attach", conflicts_with = "attach")]
    image: Option<String>,
    /// Enforce in a running container instead: its processes switch at their next loop iteration.
    #[arg(long, value_name = "CONTAINER")]
    attach: Option<String>,
    /// The directory `trace` wrote the profiles into (seccomp.json, seccomp-serving.json).
    #[arg(long, value_name = "DIR")]
    profiles: PathBuf,
    /// Where each process starts serving: symbol:FUNCTION[@BINARY] (a function it calls then, in
    /// the entrypoint unless BINARY says otherwise), or auto (the serving entry the trace of DIR
    /// found in the server's stack; else nginx's ngx_process_events_and_timers, redis's aeMain).
    #[arg(long, value_name = "MARKER", default_value = "auto")]
    phase_marker: MarkerSpec,
    /// What the serving filter does to a syscall outside the serving profile: fail it with ENOSYS,
    /// log it and let it run (an audit run), or kill the process.
    #[arg(long, value_enum, default_value = "errno")]
    action: Action,
    /// Write every switch (outcome, stop time, uprobe-hit-to-resume latency) as JSON to FILE at the end.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args) -> Result<Outcome> {
    enforce::check_marker(&args.phase_marker)?;
    let target = match (&args.image, &args.attach) {
        (_, Some(_)) if !args.run.is_empty() => bail!("-p, -e and CMD start a container; --attach takes a running one"),
        (_, Some(name)) => Target::Attach(name.clone()),
        (Some(image), None) => Target::Image {
            image: image.clone(),
            command: args.run.command.clone(),
            env: args.run.env.clone(),
            publish: args.run.publish.clone(),
        },
        (None, None) => unreachable!("clap requires an image without --attach"),
    };
    let request =
        Request { target, profiles: args.profiles.clone(), marker: args.phase_marker.clone(), action: args.action };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(enforce::enforce(&request))?;
    if let Some(path) = &args.stats {
        let text = serde_json::to_string_pretty(&stats(&report, args.action)).expect("JSON always serializes");
        crate::write_atomically(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    finish(&report)
}

fn finish(report: &Report) -> Result<Outcome> {
    let summary = summary(&report.watched.records);
    eprintln!(
        "seccomp-refine: {} switched, {} refused, {} failed",
        summary["switched"], summary["refused"], summary["failed"]
    );
    match &report.ended {
        Ended::Interrupted => {
            eprintln!(
                "seccomp-refine: container {} keeps running with the filters it has (docker rm -f {} removes it)",
                report.container_name, report.container_name
            );
            Ok(Outcome::Clean)
        }
        Ended::Exited { code, log_tail } => {
            for line in log_tail {
                eprintln!("  | {line}");
            }
            if *code != 0 {
                bail!("container {} exited with code {code} (its last log lines are above)", report.container_name);
            }
            eprintln!("seccomp-refine: container {} exited (code 0)", report.container_name);
            Ok(Outcome::Clean)
        }
        Ended::Lost(what) => bail!("container {} {what} while enforcing", report.container_name),
    }
}

/// What `--stats` writes.
fn stats(report: &Report, action: Action) -> serde_json::Value {
    let processes = |list: &[(u32, String)]| -> Vec<serde_json::Value> {
        list.iter().map(|(pid, comm)| json!({"pid": pid, "comm": comm})).collect()
    };
    let exec = processes(&report.watched.exec_processes);
    json!({
        "container_id": report.container_id,
        "container_name": report.container_name,
        "marker": report.marker,
        "action": format!("{action:?}").to_lowercase(),
        "summary": summary(&report.watched.records),
        "switches": report.watched.records,
        "exec_processes": exec,
        "held": processes(&report.watched.held),
        "late_probes": processes(&report.watched.late),
    })
}

/// Counts by outcome and the medians of the switches that happened.
fn summary(records: &[Record]) -> serde_json::Value {
    let count = |wanted: fn(&SwitchOutcome) -> bool| records.iter().filter(|record| wanted(&record.outcome)).count();
    let switched: Vec<&Record> =
        records.iter().filter(|record| matches!(record.outcome, SwitchOutcome::Switched { .. })).collect();
    json!({
        "switched": switched.len(),
        "already_switched": count(|outcome| matches!(outcome, SwitchOutcome::AlreadySwitched)),
        "refused": count(|outcome| matches!(outcome, SwitchOutcome::Refused(_))),
        "failed": count(|outcome| matches!(outcome, SwitchOutcome::Failed(_))),
        "gone": count(|outcome| matches!(outcome, SwitchOutcome::Gone)),
        "stop_us_median": median(switched.iter().map(|record| record.stop_us).collect()),
        "hit_to_resume_us_median": median(switched.iter().map(|record| record.hit_to_resume_us).collect()),
    })
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
