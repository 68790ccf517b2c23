//! Owns switching live processes to the serving filter (`seccomp-refine enforce`).
//!
//! A container runs under its whole profile (`seccomp.json`, plus `prctl` and `seccomp` so the
//! switch can be installed). The marker uprobe on the serving entry, filtered in the kernel to the
//! container's cgroup (`auto`: where the profiles' trace found the serving entry in the server's
//! stack), stops each process at its first loop iteration; the injector makes that
//! process install `seccomp-serving.json` on itself with ptrace, after a preflight that replays
//! the exact calls under the process's own filters; the process then resumes, now serving under
//! the tighter filter, while processes that never serve (a master, a supervisor) stay in init.
//! Nothing in the image, the application or the kernel changes.
//!
//! - `filter`: the serving profile as BPF, the container profile;
//! - `process`: what /proc says about a target (seccomp state, identity, threads, vDSO);
//! - `inject`: the ptrace state machine that runs syscalls in a stopped thread;
//! - `preflight`: the replay in a forked child that refuses a switch that would fail;
//! - `switch`: one switch, TSYNC across threads included;
//! - `watch`: the loop on the marker's events, with the live counts.

pub mod filter;
mod inject;
mod preflight;
mod process;
pub mod switch;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub use self::filter::Action;
pub use self::filter::{Filter, container_profile};
use self::switch::Switcher;
use self::watch::Watch;
pub use self::watch::{Watched, describe};
use crate::docker::container::{self, Container, RunSpec, Stopped};
use crate::docker::rootfs::Rootfs;
use crate::servers::{self, KNOWN_SERVERS};
use crate::trace::ebpf::switch::SwitchProbe;
use crate::trace::ebpf::{Config, DEFAULT_RING_BUFFER_BYTES};
use crate::trace::live::container::{cgroup_dir, cgroup_path_of, resolve_entrypoint, running_cgroup};
use crate::trace::{MarkerSpec, ServingEntry, Trace};

/// The profile a container runs under, and the one its serving processes get.
pub const CONTAINER_PROFILE: &str = "seccomp.json";
pub const SERVING_PROFILE: &str = "seccomp-serving.json";
/// The trace the profiles came from: `auto` switches where its stack put the serving entry.
pub const TRACE_FILE: &str = "trace.json";

/// The serving entry `auto` derived while tracing the profiles in `profiles`, if they come from
/// such a trace: the switch then happens where the trace moved processes to serving.
pub fn derived_entry(profiles: &Path) -> Option<ServingEntry> {
    Trace::read(&profiles.join(TRACE_FILE)).ok()?.phase_marker.serving_entry
}

/// Which container to enforce in.
pub enum Target {
    /// Start one from an image.
    Image { image: String, command: Vec<String>, env: Vec<String>, publish: Vec<String> },
    /// A running container (its processes already serving switch at their next loop iteration).
    Attach(String),
}

pub struct Request {
    pub target: Target,
    /// The directory `trace` wrote the profiles into.
    pub profiles: PathBuf,
    pub marker: MarkerSpec,
    pub action: Action,
}

/// Why enforcing ended.
pub enum Ended {
    /// Ctrl-C (or SIGTERM): the container runs on with the filters it has.
    Interrupted,
    /// The container stopped.
    Exited { code: i64, log_tail: Vec<String> },
    /// The container went away without an exit code: what became of it (after "container NAME").
    Lost(String),
}

pub struct Report {
    pub container_id: String,
    pub container_name: String,
    /// The marker as resolved (`symbol:FUNCTION@BINARY`).
    pub marker: String,
    pub ended: Ended,
    pub watched: Watched,
}

/// Lines of the container's log kept when it exits.
const LOG_TAIL_LINES: usize = 15;

/// Checks what can be checked without IO: the marker must be a function.
pub fn check_marker(marker: &MarkerSpec) -> Result<()> {
    match marker {
        MarkerSpec::Symbol { .. } | MarkerSpec::Auto => Ok(()),
        other => bail!(
            "enforce stops each process at a function it calls when it starts serving: --phase-marker must be \
             symbol:FUNCTION[@BINARY] or auto, not {other}"
        ),
    }
}

/// Enforces until Ctrl-C or the container's exit. A container created here is removed when this
/// fails.
pub async fn enforce(request: &Request) -> Result<Report> {
    check_marker(&request.marker)?;
    // Handled from now on: a process killed by them mid-switch would leave a target stopped.
    let interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let serving = Filter::from_profile(&request.profiles.join(SERVING_PROFILE), request.action)?;
    crate::trace::ebpf::preflight()?;
    let docker = crate::docker::connect().await?;
    let (container, created) = match &request.target {
        Target::Image { image, command, env, publish } => {
            let json = container_profile(&request.profiles.join(CONTAINER_PROFILE))?;
            crate::docker::image::ensure(&docker, image).await?;
            let spec = RunSpec { image, command, env, publish, seccomp_json: Some(&json) };
            (Container::create(&docker, &spec).await?, true)
        }
        Target::Attach(name) => (Container::existing(&docker, name).await?, false),
    };
    let result = enforce_in(&container, created, request, serving, (interrupt, terminate)).await;
    if created && result.is_err() {
        container.remove().await;
    }
    result
}

async fn enforce_in(
    container: &Container,
    created: bool,
    request: &Request,
    serving: Filter,
    (mut interrupt, mut terminate): (Signal, Signal),
) -> Result<Report> {
    let info = container.inspect().await?;
    let name = info.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned();
    let cgroup = if created {
        Cgroup::Expected(cgroup_path_of(&container.docker, &container.id).await?.0)
    } else {
        Cgroup::Running
    };
    let derived = derived_entry(&request.profiles);
    let enforcing = Enforcing::begin(container, cgroup, &request.marker, derived.as_ref(), serving).await?;
    if created {
        container.start().await?;
        enforcing.check_started(&name)?;
    }
    eprintln!(
        "seccomp-refine: enforcing {} in container {name} ({}) at {}; Ctrl-C stops enforcing and leaves the \
         container running with the filters it has",
        request.profiles.join(SERVING_PROFILE).display(),
        container.short_id(),
        enforcing.marker
    );
    let ended = tokio::select! {
        _ = interrupt.recv() => Ended::Interrupted,
        _ = terminate.recv() => Ended::Interrupted,
        stopped = container.wait() => match stopped {
            Stopped::Exited(code) => Ended::Exited { code, log_tail: container.log_tail(LOG_TAIL_LINES).await },
            Stopped::Removed => Ended::Lost("was removed".to_owned()),
            Stopped::DaemonGone(address) => Ended::Lost(format!("was lost: the Docker daemon ({address}) stopped answering")),
        }
    };
    let marker = enforcing.marker.clone();
    let watched = enforcing.end().await?;
    Ok(Report { container_id: container.id.clone(), container_name: name, marker, ended, watched })
}

/// Where a target container's cgroup is.
pub enum Cgroup {
    /// At this v2 path (`/docker/<id>`) once the container, created but not started, starts:
    /// the kernel makes it a target when it creates it, before any process runs in it.
    Expected(String),
    /// Where the running container's first process is.
    Running,
}

/// Enforcement under way on one container: its loop runs on a thread of its own.
pub struct Enforcing {
    /// The marker as resolved (`symbol:FUNCTION@BINARY`).
    pub marker: String,
    cgroup_path: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Watched>>,
}

impl Enforcing {
    /// Loads the kernel side for `container`, arms the marker (`auto`: at `derived`, the entry the
    /// trace found, when there is one) and starts the loop.
    pub async fn begin(
        container: &Container,
        cgroup: Cgroup,
        marker: &MarkerSpec,
        derived: Option<&ServingEntry>,
        serving: Filter,
    ) -> Result<Enforcing> {
        let info = container.inspect().await?;
        let rootfs = Rootfs::layers(container::layers(&info)?);
        let entrypoint = resolve_entrypoint(&info, &rootfs)?;
        let config = |cgroup_path| Config { cgroup_path, ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES };
        let (mut probe, cgroup_path) = match cgroup {
            Cgroup::Expected(path) => (SwitchProbe::load(&config(Some(path.clone())))?, path),
            Cgroup::Running => {
                let (path, id) = running_cgroup(container)
                    .await?
                    .with_context(|| format!("container {} is not running", container.short_id()))?;
                let mut probe = SwitchProbe::load(&config(None))?;
                probe.target(id)?;
                (probe, path)
            }
        };
        let marker = arm(&mut probe, marker, derived, &entrypoint, &rootfs)?;
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Watch { probe, switcher: Switcher::new(serving)?, cgroup_dir: cgroup_dir(&cgroup_path)? };
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || watch.run(stop)
        });
        Ok(Enforcing { marker, cgroup_path, stop, thread: Some(thread) })
    }

    /// After the start of a container whose cgroup was `Expected`: fails when it is elsewhere,
    /// where the kernel would not tell its processes from others.
    pub fn check_started(&self, name: &str) -> Result<()> {
        if !cgroup_dir(&self.cgroup_path)?.exists() {
            bail!(
                "container {name}'s cgroup is not {} as expected, so its processes cannot be told apart",
                self.cgroup_path
            );
        }
        Ok(())
    }

    /// Stops enforcing (no process is left stopped) and returns what happened.
    pub async fn end(mut self) -> Result<Watched> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("ended once");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("the enforcer's thread was lost")?
            .map_err(|_| anyhow::anyhow!("the enforcer's thread panicked"))
    }
}

impl Drop for Enforcing {
    /// Abandoned on an error path: the loop still detaches the marker and resumes what it stopped.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Arms the marker uprobe; returns the marker as resolved.
fn arm(
    probe: &mut SwitchProbe,
    marker: &MarkerSpec,
    derived: Option<&ServingEntry>,
    entrypoint: &str,
    rootfs: &Rootfs,
) -> Result<String> {
    let host =
        |binary: &str| rootfs.host_path(binary).with_context(|| format!("marker binary {binary} does not exist"));
    let read =
        |binary: &str| rootfs.read(binary).map(|(_, bytes)| bytes).with_context(|| format!("cannot read {binary}"));
    let (function, binary, offset) = match (marker, derived) {
        (MarkerSpec::Symbol { function, binary }, _) => {
            let binary = binary.as_deref().unwrap_or(entrypoint);
            let offset = crate::stack::symbol_offset(&read(binary)?, function)
                .with_context(|| format!("{binary} has no function {function} to stop at"))?;
            (function.clone(), binary.to_owned(), offset)
        }
        (_, Some(derived)) => {
            let entry = &derived.entry;
            let offset = crate::stack::file_offset(&read(&entry.binary)?, entry.address).with_context(|| {
                format!(
                    "the serving entry {} is not loaded from {}; trace the container again",
                    entry.function, entry.binary
                )
            })?;
            (entry.function.clone(), entry.binary.clone(), offset)
        }
        _ => {
            let bytes = read(entrypoint)?;
            KNOWN_SERVERS
                .iter()
                .find_map(|server| {
                    crate::stack::symbol_offset(&bytes, server.serving_entry)
                        .map(|offset| (server.serving_entry.to_owned(), entrypoint.to_owned(), offset))
                })
                .with_context(|| {
                    format!(
                        "auto: {entrypoint} has none of the known serving functions ({}); name one with \
                         --phase-marker symbol:FUNCTION[@BINARY]",
                        servers::serving_entry_list()
                    )
                })?
        }
    };
    probe.arm(&host(&binary)?, &function, offset)?;
    Ok(format!("symbol:{function}@{binary}"))
}
