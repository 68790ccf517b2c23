//! Shared test harness: running the binary, skipping (or failing) privileged tests, containers.

use std::path::Path;
use std::process::{Command, Output};

/// The `seccomp-refine` binary cargo built for this test run.
pub fn seccomp_refine() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seccomp-refine"))
}

/// Runs `cmd` and returns its output, panicking with the command line if it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `require!(reason_or_none)`: return from the test through the one skip gate
/// ([`seccomp_refine::skip_test`]) when a reason is given.
macro_rules! require {
    ($missing:expr) => {
        if let Some(reason) = $missing {
            seccomp_refine::skip_test(&reason);
            return;
        }
    };
}

/// Why Docker cannot be used here, if it cannot.
pub fn docker_missing() -> Option<String> {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|out| out.status.success());
    (!answers).then(|| "no Docker daemon answers (`docker version` fails)".to_owned())
}

/// Why `image` cannot be used here, if it cannot (including no Docker at all).
pub fn image_missing(image: &str) -> Option<String> {
    docker_missing().or_else(|| {
        let present =
            Command::new("docker").args(["image", "inspect", image]).output().is_ok_and(|out| out.status.success());
        (!present).then(|| format!("image {image} is missing (build it with `cargo xtask images`)"))
    })
}

/// Runs `docker ARGS`, panicking with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = output(Command::new("docker").args(args));
    assert!(out.status.success(), "docker {args:?} failed: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// A container started for a test and removed when the test ends, however it ends.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d ARGS`.
    pub fn start(args: &[&str]) -> Container {
        // A container under a too-tight profile may log an error per loop iteration: cap its log.
        let mut run = vec!["run", "-d", "--log-opt", "max-size=1m"];
        run.extend_from_slice(args);
        Container { id: docker(&run) }
    }

    /// The container's address on Docker's default bridge.
    pub fn ip(&self) -> String {
        docker(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", &self.id])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// Retries `probe` for up to `seconds`, returning its first success.
pub fn eventually<T>(seconds: u64, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Reads a JSON file written by the tool.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}
