//! Tracing Docker containers: one started for the trace (registered in the kernel when runc
//! creates its cgroup, so its first syscall is seen), or running ones (`--attach`, several at once
//! with one set of kernel programs, each into its own trace).
//!
//! A container may stop at any moment: right after its start, between the daemon's answer and a
//! read of /proc, during an attach. None of that is an error. A started container's cgroup comes
//! from the kernel's registration, with no /proc read at all; elsewhere a /proc read that fails
//! because the container is gone means it stopped. Either way the outcome is the early exit — the
//! trace of what it did, its exit code and the tail of its log.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::SystemInfoCgroupDriverEnum;
use tracer_common::{MAX_CGROUPS, phase as kernel};

use super::exec::kernel_release;
use super::record::Recorder;
use super::{Ended, Session, TargetId, accepts, cgroup};
use crate::docker::container::{self, Container, RunSpec, Stopped};
use crate::docker::rootfs::Rootfs;
use crate::syscalls::Arch;
use crate::trace::ebpf::Config;
use crate::trace::{FileUse, MarkerSpec, Phase, Source, Target, Trace};

/// What `trace IMAGE` runs and how.
pub struct ContainerRequest {
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub publish: Vec<String>,
    pub marker: MarkerSpec,
    pub duration: Duration,
    pub ring_buffer_bytes: u32,
    pub workload: Option<String>,
    pub keep: bool,
}

/// How a container trace ended.
pub struct ContainerOutcome {
    pub trace: Trace,
    pub ended: Ended,
    /// Set when the container stopped on its own before the trace ended.
    pub early_exit: Option<EarlyExit>,
    /// The workload's exit status, when one ran to its end.
    pub workload: Option<std::io::Result<ExitStatus>>,
}

pub struct EarlyExit {
    pub stopped: Stopped,
    pub log_tail: Vec<String>,
}

impl EarlyExit {
    /// Why the trace is incomplete, if it is. A container that exited on its own, whatever its
    /// code, was traced to its end; one killed by a signal (`docker kill`, the OOM killer) was cut.
    pub fn incomplete_reason(&self) -> Option<String> {
        match &self.stopped {
            Stopped::Exited(code @ 129..=192) => Some(format!(
                "the container was killed by signal {} (exit code {code}) before the trace's end",
                code - 128
            )),
            Stopped::Exited(_) => None,
            Stopped::Removed => Some("the container was removed before the trace's end".to_owned()),
            Stopped::DaemonGone(address) => {
                Some(format!("the Docker daemon ({address}) stopped answering during the trace"))
            }
        }
    }
}

/// Lines of the container's log shown when it exits early.
const LOG_TAIL_LINES: usize = 15;

/// Runs `request.image` under the tracer; the container is removed afterwards unless `keep`.
pub async fn trace_container(request: &ContainerRequest) -> Result<ContainerOutcome> {
    crate::trace::ebpf::preflight()?;
    let docker = crate::docker::connect().await?;
    let image = crate::docker::image::ensure(&docker, &request.image).await?;
    let spec = RunSpec {
        image: &request.image,
        command: &request.command,
        env: &request.env,
        publish: &request.publish,
        seccomp_json: None,
    };
    let container = Container::create(&docker, &spec).await?;
    let result = run_traced(&container, &image, request).await;
    if !request.keep {
        container.remove().await;
    }
    result
}

enum Done {
    Stopped(Stopped),
    Workload(std::io::Result<ExitStatus>),
}

async fn run_traced(
    container: &Container,
    image: &bollard::models::ImageInspect,
    request: &ContainerRequest,
) -> Result<ContainerOutcome> {
    let info = container.inspect().await?;
    let rootfs = Rootfs::layers(container::layers(&info)?);
    let (cgroup_path, runtime) = cgroup_path_of(&container.docker, &container.id).await?;
    let target = Target {
        image: Some(request.image.clone()),
        container_id: Some(container.id.clone()),
        container_name: info.name.as_deref().map(|name| name.trim_start_matches('/').to_owned()),
        command: info.path.iter().cloned().chain(info.args.iter().flatten().cloned()).collect(),
        runtime,
        cgroup: Some(cgroup_path.clone()),
        capture: None,
    };
    let trace = Trace::new(Source::Ebpf, Arch::host(), kernel_release(), target);
    let config = Config { cgroup_path: Some(cgroup_path.clone()), ring_buffer_bytes: request.ring_buffer_bytes };
    let mut session = Session::start(&config, request.duration)?;
    let target = session.add_target(trace, rootfs.clone());
    let entrypoint = resolve_entrypoint(&info, &rootfs)?;
    session.arm_marker(target, &request.marker, &entrypoint, &rootfs)?;
    session.drop_privileges().await?;
    container.start().await?;
    follow_started(&mut session, target, container, &cgroup_path).await?;
    let running = container.inspect().await?;
    let address = container::address(&running).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    session.target_started(address);
    let published: Vec<_> = request.publish.iter().map(|text| container::parse_publish(text)).collect::<Result<_>>()?;
    let endpoint = workload_endpoint(address, container::first_port(image, &published), &published);
    let done = async {
        tokio::select! {
            stopped = container.wait() => Done::Stopped(stopped),
            status = run_workload(request.workload.as_deref(), &container.id, endpoint) => Done::Workload(status),
        }
    };
    let (ended, done) = session.run_until(done).await;
    let (stopped, workload) = match done {
        Some(Done::Stopped(stopped)) => (Some(stopped), None),
        Some(Done::Workload(status)) => (None, Some(status)),
        None => (None, None),
    };
    let early_exit = match stopped {
        Some(stopped) => Some(early_exit(container, stopped).await),
        None => None,
    };
    if early_exit.is_none() && !request.keep {
        // Stopped while still traced: the app's shutdown belongs in its profile too.
        container.stop().await;
    }
    let mut trace = session.finish()?.swap_remove(target);
    if let Some(reason) = early_exit.as_ref().and_then(EarlyExit::incomplete_reason) {
        trace.ended_early(reason);
    }
    Ok(ContainerOutcome { trace, ended, early_exit, workload })
}

/// Makes the session follow a just-started container's cgroup. The kernel registered it when
/// runc created it at the expected path, so nothing is read from /proc and it holds however soon
/// the container exits. A cgroup elsewhere (a parent the daemon chose) is found through the
/// container's process and registered late, its first syscalls missed.
async fn follow_started(session: &mut Session, target: TargetId, container: &Container, expected: &str) -> Result<()> {
    // Only the configured path is registered by the kernel, and nothing else is yet.
    if let Some(&cgroup) = session.tracer().registered().first() {
        return session.follow(target, cgroup, None);
    }
    let found = running_cgroup(container).await?;
    let trace = session.recorder(target).trace_mut();
    trace.complete = false;
    let Some((path, cgroup)) = found else {
        trace.warnings.push(format!(
            "the container's cgroup was not the expected {expected}, and the container stopped before it could be \
             found elsewhere: nothing of it was traced"
        ));
        return Ok(());
    };
    trace.warnings.push(format!(
        "the container's cgroup {path} was not the expected {expected}, so it was registered after it started: \
         its first syscalls are missing"
    ));
    trace.target.cgroup = Some(path);
    session.follow(target, cgroup, Some(kernel::INIT))
}

/// The cgroup v2 path and id of a container's processes, or `None` once it has stopped. Its
/// process can exit, and its cgroup go, between the daemon's answer and the /proc read; a pid
/// read that late may even be another process's, so the path must name the container.
pub async fn running_cgroup(container: &Container) -> Result<Option<(String, u64)>> {
    let info = container.inspect().await?;
    let Some(pid) = container::pid(&info) else { return Ok(None) };
    let found = cgroup::of_process(pid).and_then(|path| Ok((path.clone(), cgroup::id(&cgroup_dir(&path)?)?)));
    match found {
        Ok(found) if found.0.contains(&container.id) => Ok(Some(found)),
        // Gone meanwhile (even from the daemon) — or, if the daemon says it still runs, a real problem.
        other => match container.is_running().await {
            Ok(true) => other.map(Some),
            _ => Ok(None),
        },
    }
}

/// Where a cgroup v2 path (`/docker/<id>`) is on this host.
pub fn cgroup_dir(path: &str) -> Result<PathBuf> {
    Ok(cgroup::v2_mount()?.join(path.trim_start_matches('/')))
}

/// The container's v2 cgroup path as the kernel names it at `cgroup_mkdir`, and the runtime.
pub async fn cgroup_path_of(docker: &Docker, id: &str) -> Result<(String, Option<String>)> {
    let info =
        docker.info().await.map_err(|err| anyhow::anyhow!("docker info: {}", crate::docker::image::one_line(&err)))?;
    let path = match info.cgroup_driver {
        Some(SystemInfoCgroupDriverEnum::SYSTEMD) => format!("/system.slice/docker-{id}.scope"),
        _ => format!("/docker/{id}"),
    };
    // The runtime's version picks its baseline row (what runc 1.1 does under the filter differs
    // from runc 1.2's): "runc 1.1.5+ds1", as the daemon reports it.
    Ok((path, crate::docker::runtime(docker).await.or(info.default_runtime)))
}

/// The entrypoint as a path inside the image, found along the container's PATH when bare.
pub fn resolve_entrypoint(info: &bollard::models::ContainerInspectResponse, rootfs: &Rootfs) -> Result<String> {
    let program = container::entrypoint(info).context("the image has neither an entrypoint nor a command")?;
    if program.contains('/') {
        return Ok(program);
    }
    container::search_path(info)
        .split(':')
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .find(|candidate| rootfs.host_path(candidate).is_some())
        .with_context(|| format!("the container's command `{program}` is not on its PATH"))
}

/// How the container ended and its last words. `docker rm -f` kills before it removes, so an exit
/// the waiter saw may turn out to be a removal.
async fn early_exit(container: &Container, stopped: Stopped) -> EarlyExit {
    let log_tail = container.log_tail(LOG_TAIL_LINES).await;
    let stopped = match stopped {
        Stopped::Exited(code) if code != 0 && container.stopped().await == Some(Stopped::Removed) => Stopped::Removed,
        other => other,
    };
    EarlyExit { stopped, log_tail }
}

/// Where the workload reaches the container: the published host port, else the container's own.
fn workload_endpoint(address: IpAddr, port: Option<u16>, published: &[container::Published]) -> Option<(IpAddr, u16)> {
    let port = port?;
    match published.iter().find(|binding| binding.container_port == port) {
        Some(binding) => {
            let host =
                binding.host_ip.as_deref().and_then(|ip| ip.parse().ok()).filter(|ip: &IpAddr| !ip.is_unspecified());
            Some((host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), binding.host_port))
        }
        None => Some((address, port)),
    }
}

/// Runs `sh -c CMD` once `endpoint` accepts connections, with the container's id in
/// `SECCOMP_REFINE_CONTAINER` (as `verify` gives it) for steps that signal or exec into it; never
/// resolves without a workload.
async fn run_workload(
    workload: Option<&str>,
    container: &str,
    endpoint: Option<(IpAddr, u16)>,
) -> std::io::Result<ExitStatus> {
    let Some(workload) = workload else { return std::future::pending().await };
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(workload).env("SECCOMP_REFINE_CONTAINER", container);
    if let Some((host, port)) = endpoint {
        while !accepts(std::net::SocketAddr::new(host, port)).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        command.env("SECCOMP_REFINE_HOST", host.to_string()).env("SECCOMP_REFINE_PORT", port.to_string());
    }
    command.kill_on_drop(true).status().await
}

/// What `trace --attach` needs.
pub struct AttachRequest {
    /// Names or ids, in the order the outcomes come back.
    pub containers: Vec<String>,
    pub duration: Duration,
    pub ring_buffer_bytes: u32,
}

/// The marker spec of an attached trace: none, everything was serving.
pub const ATTACHED_MARKER: &str = "none";

/// A running container's trace before the session starts, and where it runs (none when it
/// stopped before the tracer could attach).
struct Attaching {
    trace: Trace,
    rootfs: Rootfs,
    cgroup: Option<(String, u64)>,
}

/// Traces running containers from now on, all with one set of kernel programs; everything counts
/// as serving. One outcome per container, in the order asked; the session ends at the deadline,
/// on Ctrl-C, or when every container has stopped.
pub async fn attach(request: &AttachRequest) -> Result<Vec<ContainerOutcome>> {
    crate::trace::ebpf::preflight()?;
    if request.containers.len() > MAX_CGROUPS as usize {
        bail!("{} containers given; one tracer follows at most {MAX_CGROUPS}", request.containers.len());
    }
    let docker = crate::docker::connect().await?;
    let mut containers: Vec<Container> = Vec::new();
    let mut attaching = Vec::new();
    for name in &request.containers {
        let container = Container::existing(&docker, name).await?;
        if containers.iter().any(|known| known.id == container.id) {
            bail!("container {name} is given twice to --attach");
        }
        attaching.push(prepare_attach(&container, name).await?);
        containers.push(container);
    }
    let config = Config { cgroup_path: None, ring_buffer_bytes: request.ring_buffer_bytes };
    let mut session = Session::start(&config, request.duration)?;
    for Attaching { trace, rootfs, cgroup } in attaching {
        let target = session.add_target(trace, rootfs);
        if let Some((path, id)) = cgroup {
            session.follow(target, id, Some(kernel::SERVING))?;
            record_running_processes(session.recorder(target), &cgroup_dir(&path)?);
        }
    }
    session.drop_privileges().await?;
    let all_stopped = futures_util::future::join_all(containers.iter().map(Container::wait));
    let (ended, _) = session.run_until(all_stopped).await;
    let traces = session.finish()?;
    let mut outcomes = Vec::new();
    for (container, mut trace) in containers.iter().zip(traces) {
        let early_exit = match container.stopped().await {
            Some(stopped) => Some(early_exit(container, stopped).await),
            None => None,
        };
        if let Some(reason) = early_exit.as_ref().and_then(EarlyExit::incomplete_reason) {
            trace.ended_early(reason);
        }
        outcomes.push(ContainerOutcome { trace, ended, early_exit, workload: None });
    }
    Ok(outcomes)
}

/// What an attached trace starts with: the target, the warning that its start-up is missing, and
/// its cgroup.
async fn prepare_attach(container: &Container, name: &str) -> Result<Attaching> {
    let info = container.inspect().await?;
    if container::pid(&info).is_none() {
        bail!("container {name} is not running");
    }
    let rootfs = Rootfs::layers(container::layers(&info)?);
    let cgroup = running_cgroup(container).await?;
    let target = Target {
        image: info.config.as_ref().and_then(|config| config.image.clone()),
        container_id: Some(container.id.clone()),
        container_name: info.name.as_deref().map(|name| name.trim_start_matches('/').to_owned()),
        command: info.path.iter().cloned().chain(info.args.iter().flatten().cloned()).collect(),
        cgroup: cgroup.as_ref().map(|(path, _)| path.clone()),
        ..Target::default()
    };
    let mut trace = Trace::new(Source::Ebpf, Arch::host(), kernel_release(), target);
    trace.complete = false;
    trace.warnings.push("attached to a running container: its start-up was not traced".to_owned());
    if cgroup.is_none() {
        trace.warnings.push("the container stopped before the tracer attached: nothing of it was traced".to_owned());
    }
    trace.phase_marker.spec = ATTACHED_MARKER.to_owned();
    trace.phase_marker.detail = Some("attached to a running container: everything counts as serving".to_owned());
    Ok(Attaching { trace, rootfs, cgroup })
}

/// What the processes already running were started from and have mapped, from /proc.
fn record_running_processes(recorder: &mut Recorder, cgroup_dir: &std::path::Path) {
    for pid in cgroup::processes(cgroup_dir) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|comm| comm.trim().to_owned());
        let file = |path: String| FileUse { path, phase: Phase::Serving, pid, first_seen_ns: 0, comm: comm.clone() };
        let trace = recorder.trace_mut();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|exe| exe.display().to_string());
        if let Some(exe) = &exe {
            Trace::add_file(&mut trace.executables, file(exe.clone()));
        }
        // The program itself is an executable, not a library, as in a traced start.
        for path in executable_mappings(pid).into_iter().filter(|path| Some(path) != exe.as_ref()) {
            Trace::add_file(&mut trace.libraries, file(path));
        }
    }
}

/// Files mapped executable by `pid`, as `/proc/PID/maps` names them.
pub fn executable_mappings(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut paths: Vec<String> = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        let (Some(perms), Some(path)) = (fields.get(1), fields.get(5)) else { continue };
        let path = path.trim();
        if perms.contains('x') && path.starts_with('/') && !paths.iter().any(|known| known == path) {
            paths.push(path.to_owned());
        }
    }
    paths
}
