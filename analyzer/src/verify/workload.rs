//! Workloads `verify` drives against the container once it is ready: the built-in ones for the
//! nginx and redis images — the paths a short trace misses and a user hits in week one — or the
//! user's own shell command.
//!
//! Built-in steps use the host's `curl`, `wrk`, `redis-benchmark` and `redis-cli` against the
//! container's address, and the Docker API for what must happen inside it (`docker exec`, signals,
//! copying a file in). Nothing is run through a shell inside the container: a denial seen during a
//! step belongs to the application, not to tooling the step brought along.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use serde::{Deserialize, Serialize};

use crate::docker::verify_run;

/// What to run once the container is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The built-in workload for a known image (nginx, redis); none for other images.
    Auto,
    /// `sh -c COMMAND` on the host, with `SECCOMP_REFINE_HOST`, `SECCOMP_REFINE_PORT` and
    /// `SECCOMP_REFINE_CONTAINER` set.
    Shell(String),
}

/// The built-in workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Nginx,
    Redis,
}

impl Builtin {
    /// The built-in workload for `image` (`nginx`, `nginx:1.25`, `docker.io/library/redis:7`…).
    pub fn for_image(image: &str) -> Option<Builtin> {
        let repository = image.split('@').next().unwrap_or(image);
        let name = repository.rsplit('/').next().unwrap_or(repository);
        match name.split(':').next().unwrap_or(name) {
            "nginx" => Some(Builtin::Nginx),
            "redis" => Some(Builtin::Redis),
            _ => None,
        }
    }

    /// Host programs the workload runs.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Builtin::Nginx => &["curl", "wrk"],
            Builtin::Redis => &["redis-benchmark", "redis-cli"],
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Builtin::Nginx => {
                "nginx: static files over HTTP (curl), a wrk burst, nginx -s reload, log reopen (SIGUSR1)"
            }
            Builtin::Redis => {
                "redis: redis-benchmark, BGSAVE, CONFIG REWRITE on a second server started from a config file"
            }
        }
    }
}

/// One step of a workload and how it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    /// What was observed, one line.
    pub detail: String,
}

/// Where the workload finds the container.
pub struct Target<'a> {
    pub docker: &'a Docker,
    pub container: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
}

/// Fails with the missing program and how to get it.
pub fn check_tools(tools: &[&str]) -> Result<()> {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            let package = match *tool {
                "redis-benchmark" | "redis-cli" => "redis-tools",
                other => other,
            };
            bail!("the workload needs `{tool}` on the host; install it (apt-get install {package})");
        }
    }
    Ok(())
}

/// Runs a built-in workload, step by step; a failed step does not stop the next.
pub async fn run_builtin(builtin: Builtin, target: &Target<'_>) -> Result<Vec<Step>> {
    let port = target.port.context("the built-in workload needs the image to expose a TCP port")?;
    let base = format!("http://{}:{port}", target.host);
    match builtin {
        Builtin::Nginx => Ok(vec![
            http_status("GET / (curl)", &format!("{base}/"), "200").await?,
            http_status("GET a missing file (curl)", &format!("{base}/seccomp-refine-missing"), "404").await?,
            wrk_burst(&format!("{base}/")).await?,
            nginx_reload(target, &base).await?,
            log_reopen(target, &base).await?,
        ]),
        Builtin::Redis => Ok(vec![
            redis_benchmark(target.host, port).await?,
            bgsave(target.host, port).await?,
            config_rewrite(target).await?,
        ]),
    }
}

/// Runs the user's command with `sh -c` and reports its exit status and the end of its output.
pub async fn run_shell(command: &str, target: &Target<'_>) -> Result<Vec<Step>> {
    let mut shell = tokio::process::Command::new("sh");
    shell
        .args(["-c", command])
        .env("SECCOMP_REFINE_HOST", target.host)
        .env("SECCOMP_REFINE_CONTAINER", target.container)
        .kill_on_drop(true);
    if let Some(port) = target.port {
        shell.env("SECCOMP_REFINE_PORT", port.to_string());
    }
    let output = shell.output().await.with_context(|| format!("cannot run the workload `{command}`"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    let detail = format!(
        "{}{}",
        describe_status(output.status),
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        }
    );
    Ok(vec![Step { name: format!("sh -c {command:?}"), ok: output.status.success(), detail }])
}

fn describe_status(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".to_owned(),
    }
}

/// Runs a host program, returning (success, stdout + stderr).
async fn host(program: &str, args: &[&str]) -> Result<(bool, String)> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text.trim().to_owned()))
}

async fn http_status(name: &str, url: &str, expected: &str) -> Result<Step> {
    let (_, status) = host("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url]).await?;
    Ok(Step { name: name.to_owned(), ok: status == expected, detail: format!("HTTP {status} from {url}") })
}

/// Polls `url` until it answers 200, for the steps that change the server under our feet.
async fn serves_again(url: &str) -> Result<bool> {
    for _ in 0..50 {
        let (_, status) =
            host("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]).await?;
        if status == "200" {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

async fn wrk_burst(url: &str) -> Result<Step> {
    let (ok, output) = host("wrk", &["-t2", "-c16", "-d2s", url]).await?;
    let requests = output.lines().find(|line| line.contains("requests in")).unwrap_or("no request completed");
    let errors = output.lines().find(|line| line.contains("Non-2xx") || line.contains("Socket errors"));
    let detail = match errors {
        Some(errors) => format!("{} ({})", requests.trim(), errors.trim()),
        None => requests.trim().to_owned(),
    };
    Ok(Step { name: "wrk burst, 2 s".into(), ok: ok && errors.is_none() && output.contains("requests in"), detail })
}

async fn nginx_reload(target: &Target<'_>, base: &str) -> Result<Step> {
    let reload = verify_run::exec(target.docker, target.container, &["nginx", "-s", "reload"]).await?;
    let serving = serves_again(&format!("{base}/")).await?;
    let detail = format!(
        "docker exec nginx -s reload: exit {}{}; {}",
        reload.exit_code.map_or("unknown".into(), |code| code.to_string()),
        last_line(&reload.output),
        if serving { "serving afterwards" } else { "not serving afterwards" }
    );
    Ok(Step { name: "nginx -s reload".into(), ok: reload.exit_code == Some(0) && serving, detail })
}

async fn log_reopen(target: &Target<'_>, base: &str) -> Result<Step> {
    verify_run::signal(target.docker, target.container, "SIGUSR1").await?;
    // The master reopens its logs and tells the workers; give them a moment before checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let serving = serves_again(&format!("{base}/")).await?;
    let state = verify_run::state(target.docker, target.container).await?;
    let detail = format!(
        "SIGUSR1 to the master; {}",
        if state.running && serving { "still serving" } else { "no longer serving" }
    );
    Ok(Step { name: "log reopen (SIGUSR1)".into(), ok: state.running && serving, detail })
}

/// The last line a command printed: where nginx puts its error.
fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| format!(" ({})", line.trim()))
        .unwrap_or_default()
}

async fn redis_benchmark(host_ip: &str, port: u16) -> Result<Step> {
    let port = port.to_string();
    let tests = "ping,set,get,incr,lpush,lpop,sadd,hset";
    let (ok, output) =
        host("redis-benchmark", &["-h", host_ip, "-p", &port, "-q", "-n", "2000", "-c", "10", "-t", tests]).await?;
    let finished = output.lines().filter(|line| line.contains("requests per second")).count();
    let errors = output.lines().find(|line| line.contains("ERR") || line.contains("rror"));
    let ok = ok && finished >= tests.split(',').count() && errors.is_none();
    let detail = match errors {
        Some(error) => format!("{finished} tests finished; {}", error.trim()),
        None => format!("{finished} tests finished, 2000 requests each"),
    };
    Ok(Step { name: "redis-benchmark".into(), ok, detail })
}

async fn redis_cli(host_ip: &str, port: u16, args: &[&str]) -> Result<String> {
    let port = port.to_string();
    let mut all = vec!["-h", host_ip, "-p", &port];
    all.extend_from_slice(args);
    Ok(host("redis-cli", &all).await?.1)
}

async fn bgsave(host_ip: &str, port: u16) -> Result<Step> {
    let started = redis_cli(host_ip, port, &["BGSAVE"]).await?;
    if !started.contains("Background saving started") {
        return Ok(Step { name: "BGSAVE".into(), ok: false, detail: format!("BGSAVE answered `{started}`") });
    }
    for _ in 0..100 {
        let info = redis_cli(host_ip, port, &["INFO", "persistence"]).await?;
        if info.contains("rdb_bgsave_in_progress:0") {
            let ok = info.contains("rdb_last_bgsave_status:ok");
            let detail = format!("the forked child {} the RDB file", if ok { "wrote" } else { "failed to write" });
            return Ok(Step { name: "BGSAVE".into(), ok, detail });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Step { name: "BGSAVE".into(), ok: false, detail: "the save did not finish within 10 s".into() })
}

/// The port of the second server `config_rewrite` starts.
const REWRITE_PORT: u16 = 6380;
const REWRITE_CONFIG: &str = "seccomp-refine-rewrite.conf";

/// CONFIG REWRITE needs a server started from a config file, and the image's default command has
/// none. So a second redis-server — the same binary, under the same profile — starts inside the
/// container from a config file copied in through the Docker API, has a setting changed and
/// rewritten, and is shut down.
async fn config_rewrite(target: &Target<'_>) -> Result<Step> {
    let name = "CONFIG REWRITE".to_owned();
    let config = format!("port {REWRITE_PORT}\nprotected-mode no\nsave \"\"\nappendonly no\n");
    upload_file(target, "/data", REWRITE_CONFIG, config.as_bytes()).await?;
    let config_path = format!("/data/{REWRITE_CONFIG}");
    verify_run::exec_detached(target.docker, target.container, &["redis-server", &config_path]).await?;
    let up = verify_run::poll(Duration::from_secs(10), || async {
        redis_cli(target.host, REWRITE_PORT, &["PING"]).await.ok().filter(|reply| reply == "PONG")
    })
    .await;
    if up.is_none() {
        let detail = format!("redis-server {config_path} did not answer on port {REWRITE_PORT}");
        return Ok(Step { name, ok: false, detail });
    }
    let set = redis_cli(target.host, REWRITE_PORT, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]).await?;
    let rewrite = redis_cli(target.host, REWRITE_PORT, &["CONFIG", "REWRITE"]).await?;
    let _ = redis_cli(target.host, REWRITE_PORT, &["SHUTDOWN", "NOSAVE"]).await;
    let ok = set == "OK" && rewrite == "OK";
    let detail = format!("CONFIG SET answered `{set}`, CONFIG REWRITE of {config_path} answered `{rewrite}`");
    Ok(Step { name, ok, detail })
}

/// Copies one file into the container (`PUT /containers/ID/archive`, a one-entry tar).
async fn upload_file(target: &Target<'_>, dir: &str, name: &str, contents: &[u8]) -> Result<()> {
    let options = bollard::query_parameters::UploadToContainerOptions { path: dir.to_owned(), ..Default::default() };
    let tar = one_file_tar(name, contents);
    target
        .docker
        .upload_to_container(target.container, Some(options), bollard::body_full(tar.into()))
        .await
        .with_context(|| format!("cannot copy {name} into {dir} of the container"))
}

/// A POSIX ustar archive holding one regular file, mode 0644, owned by root.
fn one_file_tar(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", contents.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&byte| byte as u32).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(contents);
    tar.resize(tar.len().next_multiple_of(512) + 1024, 0);
    tar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_images_get_their_workload() {
        for (image, expected) in [
            ("nginx", Some(Builtin::Nginx)),
            ("nginx:1.25", Some(Builtin::Nginx)),
            ("docker.io/library/redis:7@sha256:00", Some(Builtin::Redis)),
            ("myregistry:5000/nginx-proxy:latest", None),
            ("postgres", None),
        ] {
            assert_eq!(Builtin::for_image(image), expected, "{image}");
        }
    }

    #[test]
    fn the_tar_is_what_tar_reads() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("one.tar");
        std::fs::write(&archive, one_file_tar("hello.conf", b"port 6380\n")).unwrap();
        let listing = std::process::Command::new("tar").arg("-tvf").arg(&archive).output().unwrap();
        assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("hello.conf") && listing.contains(" 10 "), "{listing}");
        let extracted = std::process::Command::new("tar").arg("-xOf").arg(&archive).output().unwrap();
        assert_eq!(extracted.stdout, b"port 6380\n");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let err = check_tools(&["seccomp-refine-no-such-tool"]).unwrap_err().to_string();
        assert!(err.contains("apt-get install seccomp-refine-no-such-tool"), "{err}");
    }
}
