use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use seccomp_refine::syscalls::Arch;
use seccomp_refine::trace::{Source, Target, Trace};

use crate::util::{
    Container, docker_missing, eventually, image_missing, output, read_json, seccomp_refine, stderr, stdout,
};

/// Writes a trace whose init phase used every x86_64 syscall except `denied`, then turns it into
/// profiles with the real binary. Returns the path of `seccomp.json`.
fn profile_without(dir: &Path, denied: &[&str]) -> std::path::PathBuf {
    let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "test".into(), Target::default());
    for (_, name) in Arch::X86_64.syscalls().filter(|(_, name)| !denied.contains(name)) {
        trace.phases.init.record(name, 1, 0);
    }
    let trace_path = dir.join("trace.json");
    trace.write(&trace_path).unwrap();
    let out = output(seccomp_refine().arg("profile").arg(&trace_path));
    assert!(out.status.success(), "{}", stderr(&out));
    let profile = dir.join("seccomp.json");
    let allowed: BTreeSet<String> = read_json(&profile)["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap().to_owned())
        .collect();
    for name in denied {
        assert!(!allowed.contains(*name), "{name} must not be in the profile");
    }
    profile
}

fn run_under(profile: &Path, script: &str) -> std::process::Output {
    let seccomp = format!("seccomp={}", profile.display());
    output(Command::new("docker").args(["run", "--rm", "--security-opt", &seccomp, "nginx:latest", "sh", "-c", script]))
}

#[test]
fn docker_applies_a_written_profile_and_unlisted_syscalls_fail_with_enosys() {
    require!(image_missing("nginx:latest"));
    let dir = tempfile::tempdir().unwrap();
    let full = profile_without(&dir.path().join("full").tap_create(), &[]);
    let out = run_under(&full, "mkdir /tmp/allowed && echo made");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "made");

    let tight = profile_without(&dir.path().join("tight").tap_create(), &["mkdir", "mkdirat"]);
    let out = run_under(&tight, "echo started; mkdir /tmp/denied");
    assert_eq!(stdout(&out).trim(), "started", "the container must start under the profile");
    assert!(!out.status.success());
    // ENOSYS (errno 38), the profile's defaultErrnoRet, not Docker's EPERM.
    assert!(stderr(&out).contains("Function not implemented"), "{}", stderr(&out));
}

#[test]
fn standin_nginx_serves_a_page() {
    require!(image_missing("nginx:latest"));
    let nginx = Container::start(&["nginx:latest"]);
    let url = format!("http://{}/", nginx.ip());
    let page = eventually(20, || {
        let out = Command::new("curl").args(["-sf", &url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(page.is_some_and(|page| page.contains("Welcome to nginx")), "no page from {url}");
}

#[test]
fn standin_redis_answers_ping() {
    require!(image_missing("redis:latest"));
    require!(docker_missing().or_else(|| which("redis-cli")));
    let redis = Container::start(&["redis:latest"]);
    let ip = redis.ip();
    let pong = eventually(20, || {
        let out = Command::new("redis-cli").args(["-h", &ip, "ping"]).output().ok()?;
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (reply == "PONG").then_some(reply)
    });
    assert_eq!(pong.as_deref(), Some("PONG"));
}

fn which(program: &str) -> Option<String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|out| out.status.success());
    (!found).then(|| format!("{program} is not installed"))
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for std::path::PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn the_docker_module_negotiates_with_the_daemon() {
    require!(docker_missing());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let version = runtime.block_on(async {
        let docker = seccomp_refine::docker::connect().await.expect("connect to the local daemon");
        docker.version().await.expect("version call on the negotiated API")
    });
    assert!(version.version.is_some_and(|version| !version.is_empty()));
}
