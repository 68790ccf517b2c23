//! `verify`: run a container under a seccomp profile, drive a workload against it, and report
//! whether it started, whether the workload succeeded, and exactly which syscalls the profile
//! denied — by which process, in which phase.
//!
//! Contract of [`run`]: it needs root (a perf watch and a cgroup of its own) and a Docker daemon
//! with the cgroupfs driver; it removes the container and the cgroup it made however it ends,
//! including Ctrl-C. It returns `Err` only when the check could not be done (bad profile, missing
//! image or host tool, no daemon); a container that does not start, a failed workload and
//! denials are results, in the [`VerifyReport`], and [`VerifyReport::passed`] sums them up.
//!
//! How denials are found (`perf`, `denials`): the profile is one filter, applied by runc before the
//! entrypoint. Perf tracepoint events scoped to the container's cgroup record the syscall numbers
//! the profile does not allow outright; a `sys_exit` with no `sys_enter` before it is a call
//! seccomp refused. Phases are relative to the container's life: `runtime` (runc's init, before it
//! exec's the entrypoint or a `docker exec` command), `init` (until the container is ready: its
//! first exposed TCP port accepts connections) and `serving` (from the workload's start on).

mod cgroup;
pub mod denials;
pub mod perf;
mod summary;
mod watched;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use serde::{Deserialize, Serialize};

pub use denials::Denial;
pub use workload::{Builtin, Step, Workload};

use crate::docker::container::Container;
use crate::docker::{self, verify_run};
use crate::enforce::switch::Outcome as SwitchOutcome;
use crate::enforce::{Action, Cgroup, Enforcing, Filter, container_profile};
use crate::profile::SyscallSet;
use crate::profile::read::{read_allowlist, read_profile};
use crate::syscalls::Arch;
use crate::trace::MarkerSpec;

/// What to verify.
#[derive(Clone, Debug)]
pub struct Config {
    pub image: String,
    /// Overrides the image's command when not empty.
    pub command: Vec<String>,
    /// The profile: Docker JSON, or an OCI `config.json` (fragment) with `linux.seccomp`.
    pub profile: PathBuf,
    pub workload: Workload,
    /// How long the workload may take; without a workload, how long the container runs.
    pub duration: Duration,
    /// `KEY=VALUE` environment for the container.
    pub env: Vec<String>,
    /// A profile directory to enforce (`seccomp-refine enforce`): the container runs under
    /// `profile` (its `seccomp.json`) plus `prctl` and `seccomp`, and each process that reaches
    /// the `auto` marker switches to its `seccomp-serving.json`, whose denials are watched too.
    pub enforce: Option<PathBuf>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub image: String,
    pub profile: String,
    /// The daemon's runtime, e.g. `runc 1.1.5+ds1`.
    pub runtime: Option<String>,
    /// The container started and became ready (its first exposed port accepted a connection, or it
    /// was running when the image exposes none).
    pub started: bool,
    /// Why it did not start: the runtime's error, or its exit code and last log lines.
    pub start_error: Option<String>,
    /// Milliseconds from start until ready.
    pub ready_ms: Option<u64>,
    pub workload: Option<WorkloadReport>,
    /// Set when the container exited before the end of the run: exit code and last log lines.
    pub exited: Option<String>,
    /// A container that exits 0 on its own (a batch job, no exposed port) is fine; a server is not.
    pub exit_is_failure: bool,
    pub denials: Vec<Denial>,
    pub lost_events: u64,
    /// Possible denials that lost events make uncertain.
    pub unconfirmed: u64,
    /// With `Config::enforce`: which processes were switched to the serving profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced: Option<Enforced>,
}

/// What enforcement did during a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    /// The marker as resolved (`symbol:FUNCTION@BINARY`).
    pub marker: String,
    /// Processes switched to the serving profile (host pids).
    pub switched: Vec<u32>,
    /// Switches refused or failed, one line each.
    pub not_switched: Vec<String>,
}

/// The workload and its steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub description: String,
    /// Milliseconds after the container started.
    pub started_ms: u64,
    pub steps: Vec<Step>,
}

impl WorkloadReport {
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|step| step.ok)
    }
}

impl VerifyReport {
    /// Denials that are not an expected libc fallback.
    pub fn failing_denials(&self) -> impl Iterator<Item = &Denial> {
        self.denials.iter().filter(|denial| denial.fallback.is_none())
    }

    /// Started, stayed up (or exited cleanly as a batch job), every workload step passed, nothing
    /// denied, and nothing uncertain.
    pub fn passed(&self) -> bool {
        self.started
            && !(self.exited.is_some() && self.exit_is_failure)
            && self.workload.as_ref().is_none_or(WorkloadReport::succeeded)
            && self.failing_denials().next().is_none()
            && self.unconfirmed == 0
    }
}

/// Everything looked up before the container exists.
struct Prepared {
    docker: Docker,
    seccomp_json: String,
    /// What the profile allows outright, to tell expected fallbacks from denials.
    allowed: SyscallSet,
    watched: Vec<u32>,
    ports: Vec<u16>,
    builtin: Option<Builtin>,
    runtime: Option<String>,
    /// With `Config::enforce`: the serving filter.
    serving: Option<Filter>,
}

async fn prepare(config: &Config) -> Result<Prepared> {
    let file = read_profile(&config.profile)?;
    let mut watched = watched::watched_numbers(&file, Arch::host());
    let mut seccomp_json = file.to_json();
    let mut serving = None;
    if let Some(dir) = &config.enforce {
        seccomp_json = container_profile(&config.profile)?;
        let serving_path = dir.join(crate::enforce::SERVING_PROFILE);
        serving = Some(Filter::from_profile(&serving_path, Action::Errno)?);
        let allowed = read_allowlist(&serving_path)?;
        watched.extend(Arch::host().syscalls().filter(|(_, name)| !allowed.contains(*name)).map(|(number, _)| number));
        watched.sort_unstable();
        watched.dedup();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("verify needs root (a perf watch on the container's cgroup); run it with sudo");
    }
    let builtin = match config.workload {
        Workload::Auto => Builtin::for_image(&config.image),
        Workload::Shell(_) => None,
    };
    if let Some(builtin) = builtin {
        workload::check_tools(builtin.tools())?;
    }
    let docker = docker::connect().await?;
    if let Some(driver) = verify_run::cgroup_driver(&docker).await.filter(|driver| driver != "cgroupfs") {
        bail!("the Docker daemon uses the {driver} cgroup driver; verify needs the cgroupfs driver for now");
    }
    let ports = verify_run::image_tcp_ports(&docker, &config.image).await?;
    let runtime = crate::docker::runtime(&docker).await;
    let allowed = file.allowed().map(str::to_owned).collect();
    Ok(Prepared { docker, seccomp_json, allowed, watched, ports, builtin, runtime, serving })
}

/// Verifies `config.profile` against `config.image`; see the module doc for the contract.
pub async fn run(config: &Config) -> Result<VerifyReport> {
    let prepared = prepare(config).await?;
    let parent = cgroup::CgroupParent::create()?;
    let watch = perf::Watch::start(&parent.dir, &prepared.watched).context("cannot watch the container's syscalls")?;
    let spec = verify_run::RunSpec {
        image: &config.image,
        command: &config.command,
        env: &config.env,
        seccomp_json: &prepared.seccomp_json,
        cgroup_parent: &parent.docker_path(),
    };
    let id = verify_run::create(&prepared.docker, &spec).await?;
    let enforcing = match prepared.serving.clone() {
        Some(serving) => {
            let container = Container { docker: prepared.docker.clone(), id: id.clone() };
            let cgroup = Cgroup::Expected(format!("{}/{id}", parent.docker_path()));
            let derived = config.enforce.as_deref().and_then(crate::enforce::derived_entry);
            match Enforcing::begin(&container, cgroup, &MarkerSpec::Auto, derived.as_ref(), serving).await {
                Ok(enforcing) => Some(enforcing),
                Err(err) => {
                    let _ = verify_run::remove(&prepared.docker, &id).await;
                    return Err(err);
                }
            }
        }
        None => None,
    };
    let started_ns = perf::now_ns();
    let exercised = tokio::select! {
        exercised = exercise(config, &prepared, &id, started_ns) => exercised,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; the container and the cgroup were removed")),
    };
    let enforced = match enforcing {
        Some(enforcing) => Some(enforced(enforcing).await),
        None => None,
    };
    let records = watch.stop();
    let removed = verify_run::remove(&prepared.docker, &id).await;
    drop(parent);
    let mut report = exercised?;
    removed?;
    let workload_ns = report.workload.as_ref().map(|workload| started_ns + workload.started_ms * 1_000_000);
    let findings = denials::find(&records, Arch::host(), denials::Milestones { started_ns, workload_ns });
    report.denials = findings.denials;
    for denial in &mut report.denials {
        denial.classify(&prepared.allowed);
    }
    report.lost_events = findings.lost_events;
    report.unconfirmed = findings.unconfirmed;
    report.enforced = enforced.transpose()?;
    Ok(report)
}

/// Ends enforcement and sums up its switches.
async fn enforced(enforcing: Enforcing) -> Result<Enforced> {
    let marker = enforcing.marker.clone();
    let watched = enforcing.end().await?;
    let mut summary = Enforced { marker, switched: Vec::new(), not_switched: Vec::new() };
    for record in &watched.records {
        match record.outcome {
            SwitchOutcome::Switched { .. } => summary.switched.push(record.pid),
            _ => summary.not_switched.push(crate::enforce::describe(record)),
        }
    }
    Ok(summary)
}

fn elapsed_ms(since_ns: u64) -> u64 {
    perf::now_ns().saturating_sub(since_ns) / 1_000_000
}

/// Starts the container, waits until it is ready, runs the workload, and checks it is still up.
async fn exercise(config: &Config, prepared: &Prepared, id: &str, started_ns: u64) -> Result<VerifyReport> {
    let docker = &prepared.docker;
    let port = prepared.ports.first().copied();
    let mut report = VerifyReport {
        image: config.image.clone(),
        profile: config.profile.display().to_string(),
        runtime: prepared.runtime.clone(),
        started: false,
        start_error: None,
        ready_ms: None,
        workload: None,
        exited: None,
        exit_is_failure: port.is_some(),
        denials: Vec::new(),
        lost_events: 0,
        unconfirmed: 0,
        enforced: None,
    };
    if let Err(message) = verify_run::start(docker, id).await {
        report.start_error = Some(message);
        return Ok(report);
    }
    let host = match wait_ready(docker, id, port, config.duration).await? {
        Ready::Yes(host) => host,
        Ready::No(why) => {
            report.start_error = Some(why);
            return Ok(report);
        }
    };
    report.started = true;
    report.ready_ms = Some(elapsed_ms(started_ns));
    let target = workload::Target { docker, container: id, host: &host, port };
    let description = match (&config.workload, prepared.builtin) {
        (Workload::Shell(command), _) => Some(format!("sh -c {command:?}")),
        (Workload::Auto, Some(builtin)) => Some(builtin.description().to_owned()),
        (Workload::Auto, None) => None,
    };
    if let Some(description) = description {
        let started_ms = elapsed_ms(started_ns);
        let steps = match tokio::time::timeout(config.duration, run_workload(config, prepared, &target)).await {
            Ok(steps) => steps?,
            Err(_) => vec![Step {
                name: "workload".into(),
                ok: false,
                detail: format!("did not finish within {}", humantime::format_duration(config.duration)),
            }],
        };
        report.workload = Some(WorkloadReport { description, started_ms, steps });
        // Let what the workload set off (new workers, a save in the background) run under the watch.
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        tokio::time::sleep(config.duration).await;
    }
    let state = verify_run::state(docker, id).await?;
    if !state.running {
        report.exited = Some(exit_description(docker, id, state.exit_code).await);
        report.exit_is_failure = port.is_some() || state.exit_code != Some(0);
    }
    Ok(report)
}

async fn run_workload(config: &Config, prepared: &Prepared, target: &workload::Target<'_>) -> Result<Vec<Step>> {
    match (&config.workload, prepared.builtin) {
        (Workload::Shell(command), _) => workload::run_shell(command, target).await,
        (Workload::Auto, Some(builtin)) => workload::run_builtin(builtin, target).await,
        (Workload::Auto, None) => Ok(Vec::new()),
    }
}

enum Ready {
    /// Ready; the address to reach it at.
    Yes(String),
    No(String),
}

/// Waits until `port` accepts TCP connections on the container's address (or, without a port,
/// until the container runs), giving up when the container exits or after `timeout`.
async fn wait_ready(docker: &Docker, id: &str, port: Option<u16>, timeout: Duration) -> Result<Ready> {
    let deadline = tokio::time::Instant::now() + timeout.max(Duration::from_secs(10));
    loop {
        let state = verify_run::state(docker, id).await?;
        if !state.running {
            let exited = exit_description(docker, id, state.exit_code).await;
            // A batch container without ports may finish before we look: that is a start.
            if port.is_none() && state.exit_code == Some(0) {
                return Ok(Ready::Yes(String::new()));
            }
            return Ok(Ready::No(exited));
        }
        let host = state.ip.unwrap_or_else(|| "127.0.0.1".to_owned());
        match port {
            None => return Ok(Ready::Yes(host)),
            Some(port) => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), port));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
                    return Ok(Ready::Yes(host));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Ready::No(format!("port {} did not accept connections", port.unwrap_or_default())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exit_description(docker: &Docker, id: &str, exit_code: Option<i64>) -> String {
    let tail = verify_run::log_tail(docker, id, 5).await;
    let tail: Vec<&str> = tail.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let code = exit_code.map_or("unknown".to_owned(), |code| code.to_string());
    if tail.is_empty() {
        format!("exited with code {code}")
    } else {
        format!("exited with code {code}: {}", tail.join(" | "))
    }
}
