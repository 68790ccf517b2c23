//! Docker operations `verify` needs: a container run under a given seccomp profile in a cgroup
//! parent of our choosing, its address and state, `docker exec`, signals, logs, removal, and what
//! the daemon says about its runtime.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, RemoveContainerOptions, StartContainerOptions,
};
use futures_util::StreamExt as _;

/// The label every container `verify` starts carries, so a stray one is easy to find.
pub const LABEL: &str = "io.seccomp-refine.verify";

/// What to run.
pub struct RunSpec<'a> {
    pub image: &'a str,
    /// Overrides the image's CMD when not empty.
    pub command: &'a [String],
    pub env: &'a [String],
    /// The profile's JSON text: the API takes the content, not a path (the docker CLI reads the file).
    pub seccomp_json: &'a str,
    /// A cgroup path such as `/seccomp-refine-verify-1234`, under which the container's cgroup is made.
    pub cgroup_parent: &'a str,
}

/// Checks that `image` exists locally and returns its exposed TCP ports, lowest first.
pub async fn image_tcp_ports(docker: &Docker, image: &str) -> Result<Vec<u16>> {
    let inspected = match docker.inspect_image(image).await {
        Ok(inspected) => inspected,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            bail!(
                "image {image} is not present; pull it (`docker pull {image}`) or build the stand-ins with `cargo xtask images`"
            )
        }
        Err(err) => return Err(err).with_context(|| format!("cannot inspect image {image}")),
    };
    let exposed = inspected.config.and_then(|config| config.exposed_ports).unwrap_or_default();
    let mut ports: Vec<u16> = exposed
        .keys()
        .filter_map(|key| key.strip_suffix("/tcp").or(Some(key.as_str())).filter(|_| !key.ends_with("/udp")))
        .filter_map(|port| port.parse().ok())
        .collect();
    ports.sort_unstable();
    Ok(ports)
}

/// Creates the container (not started) and returns its id.
pub async fn create(docker: &Docker, spec: &RunSpec<'_>) -> Result<String> {
    let host_config = HostConfig {
        security_opt: Some(vec![format!("seccomp={}", spec.seccomp_json)]),
        cgroup_parent: Some(spec.cgroup_parent.to_owned()),
        ..HostConfig::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.to_owned()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.to_vec()),
        env: Some(spec.env.to_vec()),
        labels: Some(HashMap::from([(LABEL.to_owned(), "1".to_owned())])),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    };
    let created = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .with_context(|| format!("cannot create a container from {}", spec.image))?;
    Ok(created.id)
}

/// Starts the container; the error is the daemon's message (for a profile that stops the runtime,
/// runc's own words).
pub async fn start(docker: &Docker, id: &str) -> Result<(), String> {
    docker.start_container(id, None::<StartContainerOptions>).await.map_err(|err| match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    })
}

/// A container's state as far as `verify` cares.
pub struct State {
    pub running: bool,
    pub exit_code: Option<i64>,
    /// Its address on the default bridge, if it has one.
    pub ip: Option<String>,
}

pub async fn state(docker: &Docker, id: &str) -> Result<State> {
    let inspected = docker
        .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .with_context(|| format!("cannot inspect container {id}"))?;
    let state = inspected.state.unwrap_or_default();
    let ip = inspected.network_settings.and_then(|settings| settings.ip_address).filter(|ip| !ip.is_empty());
    Ok(State { running: state.running.unwrap_or(false), exit_code: state.exit_code, ip })
}

/// The output and exit code of a command run inside the container (`docker exec`).
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    pub output: String,
}

pub async fn exec(docker: &Docker, id: &str, command: &[&str]) -> Result<ExecOutput> {
    let options = CreateExecOptions {
        cmd: Some(command.iter().map(|&part| part.to_owned()).collect()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..CreateExecOptions::default()
    };
    let created = docker.create_exec(id, options).await.with_context(|| format!("cannot exec {command:?} in {id}"))?;
    let mut output = String::new();
    if let StartExecResults::Attached { output: mut stream, .. } =
        docker.start_exec(&created.id, None::<StartExecOptions>).await?
    {
        while let Some(chunk) = stream.next().await {
            output.push_str(&chunk?.to_string());
        }
    }
    let inspected = docker.inspect_exec(&created.id).await?;
    Ok(ExecOutput { exit_code: inspected.exit_code, output })
}

/// Sends `signal` (e.g. `SIGUSR1`) to the container's main process.
pub async fn signal(docker: &Docker, id: &str, signal: &str) -> Result<()> {
    let options = KillContainerOptions { signal: signal.to_owned() };
    docker.kill_container(id, Some(options)).await.with_context(|| format!("cannot send {signal} to {id}"))
}

/// The last `lines` lines of the container's output.
pub async fn log_tail(docker: &Docker, id: &str, lines: usize) -> String {
    let options = LogsOptions { stdout: true, stderr: true, tail: lines.to_string(), ..LogsOptions::default() };
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text
}

/// Removes the container, running or not.
pub async fn remove(docker: &Docker, id: &str) -> Result<()> {
    let options = RemoveContainerOptions { force: true, ..RemoveContainerOptions::default() };
    docker.remove_container(id, Some(options)).await.with_context(|| format!("cannot remove container {id}"))
}

/// The daemon's cgroup driver (`cgroupfs`, `systemd`), if it says.
pub async fn cgroup_driver(docker: &Docker) -> Option<String> {
    let info = docker.info().await.ok()?;
    info.cgroup_driver.map(|driver| driver.to_string())
}

/// Polls `probe` every 100 ms until it yields a value or `timeout` passes.
pub async fn poll<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `command` inside the container and returns without waiting for it (`docker exec -d`).
pub async fn exec_detached(docker: &Docker, id: &str, command: &[&str]) -> Result<()> {
    let options = CreateExecOptions {
        cmd: Some(command.iter().map(|&part| part.to_owned()).collect()),
        ..CreateExecOptions::default()
    };
    let created = docker.create_exec(id, options).await.with_context(|| format!("cannot exec {command:?} in {id}"))?;
    docker.start_exec(&created.id, Some(StartExecOptions { detach: true, ..StartExecOptions::default() })).await?;
    Ok(())
}
