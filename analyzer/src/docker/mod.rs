//! Talking to the Docker daemon (bollard): connecting, and the errors a user can act on.
//!
//! Everything that touches Docker goes through this module, so the daemon's address, its API
//! version and the wording of "no daemon" live in one place. Submodules add what each command
//! needs (running a traced container, reading an image's files, …).

pub mod container;
pub mod image;
pub mod rootfs;
pub mod verify_run;

use bollard::Docker;

/// Why the daemon could not be used, phrased with the fix.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon at {address} ({reason}); start dockerd (`cargo xtask run` does), or set DOCKER_HOST"
    )]
    Unreachable { address: String, reason: String },
    #[error("permission denied on the Docker socket {address}; run as root or as a member of the `docker` group")]
    PermissionDenied { address: String },
}

/// The daemon failed a request it understood (creating, starting or inspecting a container): the
/// run's failure rather than bad input. The daemon's message is kept on one line.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {reason}")]
pub struct DaemonError {
    pub action: String,
    pub reason: String,
}

impl DaemonError {
    pub fn new(action: String, err: &bollard::errors::Error) -> DaemonError {
        DaemonError { action, reason: image::one_line(err) }
    }
}

/// The daemon's default runtime and its version as the daemon reports it, e.g. `runc 1.1.5+ds1`.
pub async fn runtime(docker: &Docker) -> Option<String> {
    let info = docker.info().await.ok()?;
    let name = info.default_runtime.unwrap_or_else(|| "runc".to_owned());
    let version = docker.version().await.ok()?;
    let component = version.components?.into_iter().find(|component| component.name.eq_ignore_ascii_case(&name));
    Some(match component {
        Some(component) => format!("{name} {}", component.version),
        None => name,
    })
}

/// The daemon address in use: `DOCKER_HOST`, else the local socket.
pub fn address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

/// Connects to the daemon at `DOCKER_HOST` (or `/var/run/docker.sock`).
pub async fn connect() -> Result<Docker, DockerError> {
    connect_to(&address()).await
}

/// Connects to the daemon at `address` (`unix://…` or `tcp://…`) and agrees on an API version both
/// sides speak: Debian's Docker 20.10 tops out at API 1.41, older than bollard's default, and
/// refuses newer clients outright.
pub async fn connect_to(address: &str) -> Result<Docker, DockerError> {
    // The cause goes into the sentence rather than the error chain, so it is printed once, before the fix.
    let unreachable =
        |err: bollard::errors::Error| DockerError::Unreachable { address: address.to_owned(), reason: err.to_string() };
    let docker = match address.strip_prefix("tcp://") {
        Some(_) => Docker::connect_with_http(address, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_socket(address, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
    }
    .map_err(unreachable)?;
    match docker.negotiate_version().await {
        Ok(docker) => Ok(docker),
        Err(err) if is_permission_denied(&err) => Err(DockerError::PermissionDenied { address: address.to_owned() }),
        Err(err) => Err(unreachable(err)),
    }
}

/// bollard's own default request timeout.
const TIMEOUT_SECS: u64 = 120;

fn is_permission_denied(err: &bollard::errors::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::PermissionDenied;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn no_daemon_is_one_actionable_sentence() {
        let missing = "unix:///nonexistent/docker.sock";
        let message = super::connect_to(missing).await.unwrap_err().to_string();
        assert!(message.starts_with(&format!("cannot reach the Docker daemon at {missing}")), "{message}");
        assert!(message.contains("start dockerd"), "{message}");
        assert_eq!(message.lines().count(), 1);
    }
}
