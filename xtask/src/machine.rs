//! Preparing the machine: commands, root, kernel filesystems, Debian packages and the Docker daemon.
//!
//! Every function here is idempotent and prints one line for each change it makes, so a second run
//! on a prepared machine is silent.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmd` with inherited stdio and fails with the command line when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and tells whether it succeeded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|status| status.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// A command that runs as root: itself when we are root, else through `sudo -E`.
pub fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-E", "--", program]);
        cmd
    }
}

pub fn on_path(program: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {program}")]))
}

/// Installs Debian packages that are missing, in one `apt-get` call.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|package| !installed_ok(package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    let apt_get_install = || {
        let mut cmd = as_root("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing);
        cmd
    };
    // A fresh machine's package lists may be stale or absent: refresh them only when needed.
    if succeeds(&mut apt_get_install()) {
        return Ok(());
    }
    run(as_root("apt-get").args(["update", "-q"]))?;
    run(&mut apt_get_install())
}

fn installed_ok(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// Mounts tracefs and bpffs where the kernel expects them, if they are not mounted yet.
pub fn mount_kernel_filesystems() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    for (fstype, target) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        let mounted = mounts.lines().any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(target) && fields.next() == Some(fstype)
        });
        if !mounted {
            println!("xtask: mounting {fstype} at {target}");
            run(as_root("mount").args(["-t", fstype, fstype, target]))?;
        }
    }
    Ok(())
}

/// Makes sure a Docker daemon answers. Where none does, installs Debian's `docker.io` and starts
/// `dockerd` in the background with its default configuration. An existing daemon is left alone.
pub fn ensure_docker() -> Result<()> {
    if docker_answers() {
        return Ok(());
    }
    if !on_path("dockerd") {
        apt_install(&["docker.io"])?;
    }
    if docker_answers() {
        return Ok(());
    }
    println!("xtask: starting dockerd (log: /var/log/seccomp-refine-dockerd.log)");
    let log = "/var/log/seccomp-refine-dockerd.log";
    // Containers run under too-tight profiles can log an error per loop iteration (nginx without
    // `epoll_wait` wrote 50 GB in half an hour here); the daemon we start caps every container's log.
    let daemon = "dockerd --log-opt max-size=10m --log-opt max-file=2";
    // In a session of its own: a job runner that ends the caller's process group (CI steps,
    // terminals closing) must not take the daemon, and every later test, down with it.
    run(as_root("sh").args(["-c", &format!("setsid -f {daemon} >{log} 2>&1 </dev/null")]))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if docker_answers() {
            return Ok(());
        }
        sleep(Duration::from_millis(500));
    }
    bail!("dockerd did not answer within 60 s; see {log}")
}

fn docker_answers() -> bool {
    on_path("docker") && succeeds(as_root("docker").args(["version", "--format", "{{.Server.Version}}"]))
}
