//! The container a trace runs or attaches to: create, start, inspect, wait, stop, remove, and the
//! tail of its log for an early exit.
//!
//! Only what tracing needs is exposed: the container's id, its cgroup v2 path, its image layers
//! (to find files on the host), its address and first port, and how it ended.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, ImageInspect, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;

use super::DaemonError;
use bollard::errors::Error as BollardError;

/// Marks containers seccomp-refine started, so they can be found and cleaned up.
pub const LABEL: &str = "io.seccomp-refine.trace";

/// What to run.
pub struct RunSpec<'a> {
    pub image: &'a str,
    /// Replaces the image's command when not empty.
    pub command: &'a [String],
    pub env: &'a [String],
    pub publish: &'a [String],
    /// A seccomp profile's JSON text instead of Docker's default (`enforce`).
    pub seccomp_json: Option<&'a str>,
}

/// A container known to the daemon.
pub struct Container {
    pub docker: Docker,
    pub id: String,
}

/// How a waited-for container stopped, as far as the daemon could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It exited with this code.
    Exited(i64),
    /// It was removed (`docker rm -f`) under the waiter.
    Removed,
    /// The daemon (at this address) stopped answering: what became of the container is unknown.
    DaemonGone(String),
}

/// A published port: (container port, host address and port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub container_port: u16,
    pub host_ip: Option<String>,
    pub host_port: u16,
}

impl Container {
    /// `docker create` for `spec`, the image already present.
    pub async fn create(docker: &Docker, spec: &RunSpec<'_>) -> Result<Container> {
        let published: Vec<Published> = spec.publish.iter().map(|text| parse_publish(text)).collect::<Result<_>>()?;
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for port in &published {
            bindings
                .entry(format!("{}/tcp", port.container_port))
                .or_insert_with(|| Some(Vec::new()))
                .as_mut()
                .unwrap()
                .push(PortBinding { host_ip: port.host_ip.clone(), host_port: Some(port.host_port.to_string()) });
        }
        let exposed = bindings.keys().map(|port| (port.clone(), HashMap::new())).collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.to_owned()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.to_vec()),
            env: Some(spec.env.to_vec()),
            exposed_ports: Some(exposed),
            labels: Some(HashMap::from([(LABEL.to_owned(), "1".to_owned())])),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                security_opt: spec.seccomp_json.map(|json| vec![format!("seccomp={json}")]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|err| DaemonError::new(format!("cannot create a container from {}", spec.image), &err))?;
        Ok(Container { docker: docker.clone(), id: created.id })
    }

    /// A running container by name or id, for `--attach`.
    pub async fn existing(docker: &Docker, name: &str) -> Result<Container> {
        let found = docker.inspect_container(name, None::<InspectContainerOptions>).await.map_err(|err| {
            if super::image::is_not_found(&err) {
                anyhow::anyhow!("no container {name}; `docker ps` lists the running ones")
            } else {
                DaemonError::new(format!("cannot inspect container {name}"), &err).into()
            }
        })?;
        let id = found.id.context("the daemon gave a container without an id")?;
        Ok(Container { docker: docker.clone(), id })
    }

    pub async fn inspect(&self) -> Result<ContainerInspectResponse> {
        self.docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .map_err(|err| DaemonError::new(format!("cannot inspect container {}", self.short_id()), &err).into())
    }

    pub async fn start(&self) -> Result<()> {
        self.docker
            .start_container(&self.id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|err| DaemonError::new(format!("cannot start container {}", self.short_id()), &err).into())
    }

    /// Whether the daemon says it runs now.
    pub async fn is_running(&self) -> Result<bool> {
        let info = self.inspect().await?;
        Ok(info.state.and_then(|state| state.running) == Some(true))
    }

    /// Resolves when the container stops running — or is removed, or the daemon goes — with how.
    pub async fn wait(&self) -> Stopped {
        loop {
            let options = WaitContainerOptions { condition: "not-running".to_owned() };
            let mut stream = self.docker.wait_container(&self.id, Some(options));
            match stream.next().await {
                Some(Ok(response)) => return Stopped::Exited(response.status_code),
                // A non-zero exit arrives as an error item.
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => return Stopped::Exited(code),
                Some(Err(BollardError::DockerResponseServerError { status_code: 404, .. })) => return Stopped::Removed,
                // A long trace outlives one request's timeout: ask again.
                Some(Err(BollardError::RequestTimeoutError)) => {}
                Some(Err(_)) | None => {
                    if self.docker.ping().await.is_err() {
                        return Stopped::DaemonGone(super::address());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// How the container stopped, or `None` while it runs.
    pub async fn stopped(&self) -> Option<Stopped> {
        match self.docker.inspect_container(&self.id, None::<InspectContainerOptions>).await {
            Ok(info) if pid(&info).is_some() => None,
            Ok(info) => Some(Stopped::Exited(exit_code(&info).unwrap_or(-1))),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Some(Stopped::Removed),
            Err(_) => Some(Stopped::DaemonGone(super::address())),
        }
    }

    /// `docker stop` with a short grace period: the app's shutdown is traced too.
    pub async fn stop(&self) {
        let options = StopContainerOptions { t: Some(5), signal: None };
        let _ = self.docker.stop_container(&self.id, Some(options)).await;
    }

    pub async fn remove(&self) {
        let options = RemoveContainerOptions { force: true, v: true, link: false };
        let _ = self.docker.remove_container(&self.id, Some(options)).await;
    }

    /// The last `lines` lines of the container's output.
    pub async fn log_tail(&self, lines: usize) -> Vec<String> {
        let options = LogsOptions { stdout: true, stderr: true, tail: lines.to_string(), ..LogsOptions::default() };
        let mut stream = self.docker.logs(&self.id, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&chunk.to_string());
        }
        text.lines().map(str::to_owned).collect()
    }

    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// The container's filesystem layers on the host, top first (overlay2 `UpperDir`, `LowerDir`).
pub fn layers(info: &ContainerInspectResponse) -> Result<Vec<PathBuf>> {
    let driver = info.graph_driver.as_ref().context("the daemon did not say where the container's files are")?;
    if driver.name != "overlay2" {
        bail!("the Docker storage driver is {}; the tracer reads image files through overlay2 layers", driver.name);
    }
    let mut layers = Vec::new();
    layers.extend(driver.data.get("UpperDir").map(PathBuf::from));
    if let Some(lower) = driver.data.get("LowerDir") {
        layers.extend(lower.split(':').map(PathBuf::from));
    }
    Ok(layers)
}

/// The host pid of the container's first process, while it runs.
pub fn pid(info: &ContainerInspectResponse) -> Option<u32> {
    let pid = info.state.as_ref()?.pid?;
    (pid > 0).then_some(pid as u32)
}

/// Its exit code, once it stopped.
pub fn exit_code(info: &ContainerInspectResponse) -> Option<i64> {
    let state = info.state.as_ref()?;
    (state.running != Some(true)).then_some(state.exit_code?)
}

/// Its address on its first network.
pub fn address(info: &ContainerInspectResponse) -> Option<IpAddr> {
    let settings = info.network_settings.as_ref()?;
    let from_networks = settings.networks.as_ref().and_then(|networks| {
        networks
            .values()
            .find_map(|network| network.ip_address.as_deref().filter(|ip| !ip.is_empty()).map(str::to_owned))
    });
    settings.ip_address.clone().filter(|ip| !ip.is_empty()).or(from_networks)?.parse().ok()
}

/// The program the container runs first (entrypoint, else command), as written in the image.
pub fn entrypoint(info: &ContainerInspectResponse) -> Option<String> {
    let config = info.config.as_ref()?;
    let first = config.entrypoint.as_ref().and_then(|entry| entry.first()).or_else(|| config.cmd.as_ref()?.first());
    first.cloned()
}

/// The container's PATH (Docker's default when the image sets none).
pub fn search_path(info: &ContainerInspectResponse) -> String {
    let env = info.config.as_ref().and_then(|config| config.env.as_ref());
    env.and_then(|env| env.iter().find_map(|var| var.strip_prefix("PATH=")))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_owned()
}

/// The lowest TCP port the image exposes, or the first one published.
pub fn first_port(image: &ImageInspect, published: &[Published]) -> Option<u16> {
    if let Some(port) = published.first() {
        return Some(port.container_port);
    }
    let exposed = image.config.as_ref()?.exposed_ports.as_ref()?;
    exposed.keys().filter_map(|port| port.strip_suffix("/tcp")?.parse().ok()).min()
}

/// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp]`, or just `CONTAINER_PORT` (published on the same port).
pub fn parse_publish(text: &str) -> Result<Published> {
    let bad = || anyhow::anyhow!("-p {text}: expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp]");
    let spec = match text.split_once('/') {
        Some((spec, "tcp")) => spec,
        Some(_) => bail!("-p {text}: only TCP ports can be published for a trace"),
        None => text,
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let port = |part: &str| part.parse::<u16>().ok().filter(|&port| port != 0).ok_or_else(bad);
    match parts.as_slice() {
        [container] => Ok(Published { container_port: port(container)?, host_ip: None, host_port: port(container)? }),
        [container, host] => Ok(Published { container_port: port(container)?, host_ip: None, host_port: port(host)? }),
        [container, host, ip] => {
            Ok(Published { container_port: port(container)?, host_ip: Some((*ip).to_owned()), host_port: port(host)? })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_parse_like_docker_run() {
        assert_eq!(parse_publish("8080:80").unwrap(), Published { container_port: 80, host_ip: None, host_port: 8080 });
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/tcp").unwrap(),
            Published { container_port: 80, host_ip: Some("127.0.0.1".into()), host_port: 8080 }
        );
        assert_eq!(parse_publish("6379").unwrap().host_port, 6379);
        assert!(parse_publish("53:53/udp").unwrap_err().to_string().contains("only TCP"));
        assert!(parse_publish("http:80").unwrap_err().to_string().contains("expected [HOST_IP:]"));
    }
}
