//! Faults while tracing, against the real kernel and Docker: Ctrl-C, SIGTERM, the container killed
//! or removed, the daemon stopping, a full disk, two traces at once. Each time the trace so far is
//! written whole and marked incomplete with the reason, the kernel programs and maps are freed, and
//! the next run works.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tracer::tracer_missing;
use crate::util::*;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// `seccomp-refine trace ARGS -o DIR` in the background, its stderr kept.
fn spawn_trace(args: &[&str], dir: &Path, docker_host: Option<&str>) -> Child {
    let mut command = seccomp_refine();
    command.arg("trace").arg("-o").arg(dir).args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(host) = docker_host {
        command.env("DOCKER_HOST", host);
    }
    command.spawn().unwrap()
}

/// The kernel objects a tracer process holds.
struct Held {
    programs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
}

/// Waits until the tracer `pid` has loaded and armed its programs — it gives up its loading
/// capabilities, in every thread, right before it starts the container — and returns what it holds.
fn wait_until_armed(pid: u32) -> Held {
    let effective = |status: &str| {
        let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:")).unwrap_or("0").trim().to_owned();
        u64::from_str_radix(&hex, 16).unwrap_or(0)
    };
    let dropped = || {
        let tasks: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
            .map(|status| effective(&status))
            .collect();
        let lacks = |caps: u64| [CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN].iter().all(|&cap| caps & (1 << cap) == 0);
        (!tasks.is_empty() && tasks.iter().all(|&caps| lacks(caps))).then_some(())
    };
    eventually(120, dropped).expect("the tracer never gave up CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN in every thread");
    let mut held = Held { programs: BTreeSet::new(), maps: BTreeSet::new() };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in info.lines() {
            let id = |prefix| line.strip_prefix(prefix).and_then(|id: &str| id.trim().parse::<u32>().ok());
            held.programs.extend(id("prog_id:"));
            held.maps.extend(id("map_id:"));
        }
    }
    assert!(!held.programs.is_empty() && !held.maps.is_empty(), "a loaded tracer holds programs and maps");
    held
}

impl Held {
    /// None of it is loaded any more (the kernel frees after an RCU grace period, so within a few
    /// seconds), and nothing was pinned.
    fn assert_freed(&self, pinned_before: &BTreeSet<PathBuf>) {
        let left = || {
            let programs: BTreeSet<u32> = aya::programs::loaded_programs().flatten().map(|info| info.id()).collect();
            let maps: BTreeSet<u32> = aya::maps::loaded_maps().flatten().map(|info| info.id()).collect();
            let programs: Vec<u32> = self.programs.intersection(&programs).copied().collect();
            let maps: Vec<u32> = self.maps.intersection(&maps).copied().collect();
            (programs, maps)
        };
        let freed = eventually(10, || (left() == (Vec::new(), Vec::new())).then_some(()));
        assert!(freed.is_some(), "programs and maps left: {:?}", left());
        assert_eq!(&pinned(), pinned_before, "nothing is pinned in /sys/fs/bpf");
    }
}

fn pinned() -> BTreeSet<PathBuf> {
    std::fs::read_dir("/sys/fs/bpf").map(|dir| dir.flatten().map(|entry| entry.path()).collect()).unwrap_or_default()
}

/// Waits for `child` (at most two minutes) and returns its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the tracer did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill sends a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

fn names(trace: &Value, phase: &str) -> BTreeSet<String> {
    trace["phases"][phase]["syscalls"].as_object().map(|map| map.keys().cloned().collect()).unwrap_or_default()
}

fn paths(trace: &Value, list: &str) -> Vec<String> {
    trace[list].as_array().unwrap().iter().map(|file| file["path"].as_str().unwrap().to_owned()).collect()
}

/// A trace of nginx cut short: what it did until then, in whole files, marked with `reason`.
fn assert_cut_short(dir: &Path, reason: &str) -> Value {
    let trace = read_json(&dir.join("trace.json"));
    assert_eq!((&trace["complete"], &trace["incomplete_reason"]), (&Value::Bool(false), &Value::from(reason)));
    assert!(paths(&trace, "executables").contains(&"/usr/sbin/nginx".to_owned()), "{:?}", paths(&trace, "executables"));
    assert!(names(&trace, "init").is_superset(&set(&["bind", "listen"])), "{:?}", names(&trace, "init"));
    assert!(read_json(&dir.join("seccomp.json"))["syscalls"].is_array());
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains(reason), "the report says why the trace is incomplete");
    trace
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&name| name.to_owned()).collect()
}

/// The container is gone from the daemon.
fn assert_removed(trace: &Value, docker_host: Option<&str>) {
    let id = trace["target"]["container_id"].as_str().unwrap();
    let mut inspect = Command::new("docker");
    if let Some(host) = docker_host {
        inspect.args(["-H", host]);
    }
    assert!(!output(inspect.args(["inspect", id])).status.success(), "container {id} was left behind");
}

/// Traces nginx again, briefly: a run right after a fault works.
fn assert_next_run_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        seccomp_refine().args(["trace", "nginx:latest", "--no-static", "--duration", "2s", "-o"]).arg(dir.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_json(&dir.path().join("trace.json"))["complete"], true);
}

#[test]
fn ctrl_c_and_sigterm_write_the_trace_so_far() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    for (number, name, reason) in [
        (libc::SIGINT, "interrupted by SIGINT", "interrupted by SIGINT (Ctrl-C) before the trace's end"),
        (libc::SIGTERM, "terminated by SIGTERM", "terminated by SIGTERM before the trace's end"),
    ] {
        let pinned_before = pinned();
        let dir = tempfile::tempdir().unwrap();
        let tracer = spawn_trace(&["nginx:latest", "--no-static", "--duration", "60s"], dir.path(), None);
        let held = wait_until_armed(tracer.id());
        // nginx is serving well within this.
        std::thread::sleep(Duration::from_secs(3));
        signal(tracer.id(), number);
        let (code, err) = finish(tracer);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains(&format!("({name}); phase marker")), "{err}");
        let trace = assert_cut_short(dir.path(), reason);
        assert_removed(&trace, None);
        held.assert_freed(&pinned_before);
    }
    assert_next_run_works();
}

/// The id of the traced container that carries `token` in its environment.
fn container_with(token: &str) -> String {
    let find = || {
        let ids = docker(&["ps", "-q", "--no-trunc", "--filter", "label=io.seccomp-refine.trace"]);
        ids.lines().find(|id| docker(&["inspect", "-f", "{{json .Config.Env}}", id]).contains(token)).map(str::to_owned)
    };
    eventually(60, find).expect("the traced container never ran")
}

#[test]
fn a_container_killed_or_removed_mid_trace_leaves_its_trace() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    for how in ["kill", "rm"] {
        let pinned_before = pinned();
        let dir = tempfile::tempdir().unwrap();
        let token = format!("SECCOMP_REFINE_FAULT={how}-{}", std::process::id());
        let tracer = spawn_trace(&["nginx:latest", "--no-static", "--duration", "60s", "-e", &token], dir.path(), None);
        let held = wait_until_armed(tracer.id());
        let id = container_with(&token);
        std::thread::sleep(Duration::from_secs(2));
        match how {
            "kill" => docker(&["kill", &id]),
            _ => docker(&["rm", "-f", &id]),
        };
        let (code, err) = finish(tracer);
        assert_eq!(code, Some(1), "{err}");
        let last = err.lines().last().unwrap_or_default();
        let written = format!("what was recorded until then is in {}, marked incomplete", dir.path().display());
        let killed = format!(
            "seccomp-refine: error: the container exited early with code 137 ({written}; its last log lines are above)"
        );
        let removed = format!("seccomp-refine: error: the container was removed during the trace ({written})");
        let died = "the container was killed by signal 9 (exit code 137) before the trace's end";
        let gone = "the container was removed before the trace's end";
        // `docker rm -f` kills, then removes: the tracer may see the exit before the removal.
        let trace = match how {
            "kill" => {
                assert_eq!(last, killed);
                assert_cut_short(dir.path(), died)
            }
            _ if last == removed => assert_cut_short(dir.path(), gone),
            _ => {
                assert_eq!(last, killed);
                assert_cut_short(dir.path(), died)
            }
        };
        assert_removed(&trace, None);
        held.assert_freed(&pinned_before);
    }
    assert_next_run_works();
}

/// A dockerd of the test's own — own data root, exec root, socket, pid file and bridge, no
/// iptables — with its containers, mounts and bridge removed on drop. The shared daemon is never
/// touched (`--bridge=none` is not an option: dockerd then deletes the host's `docker0`).
struct PrivateDaemon {
    dir: tempfile::TempDir,
    host: String,
    bridge: String,
    daemon: Option<Child>,
}

impl PrivateDaemon {
    fn start() -> PrivateDaemon {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        let id = std::process::id();
        let bridge = format!("srt{}", id % 100_000);
        let address = format!("10.213.{}.1/24", id % 250);
        let ip = |args: &[&str]| assert!(output(Command::new("ip").args(args)).status.success(), "ip {args:?}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut daemon = PrivateDaemon { host, bridge, daemon: None, dir };
        ip(&["addr", "add", &address, "dev", &daemon.bridge]);
        ip(&["link", "set", &daemon.bridge, "up"]);
        daemon.launch();
        daemon
    }

    fn launch(&mut self) {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(root.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .args(["-H", &self.host, "--bridge", &self.bridge, "--iptables=false", "--ip-masq=false"])
            .args(["--log-opt", "max-size=1m"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let answers = || self.docker(&["version", "--format", "{{.Server.Version}}"]).status.success().then_some(());
        if eventually(60, answers).is_none() {
            let log = std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            panic!("the private dockerd did not answer: {tail:?}");
        }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        output(Command::new("docker").args(["-H", &self.host]).args(args))
    }

    /// Stops it hard, as a crash would, with the containerd it started: its containers keep
    /// running without them.
    fn kill(&mut self) {
        let pid_file = self.dir.path().join("exec/containerd/containerd.pid");
        let containerd: i32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
        let mut daemon = self.daemon.take().unwrap();
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        // SAFETY: kill sends a signal to the containerd this daemon started.
        unsafe { libc::kill(containerd, libc::SIGKILL) };
        let gone = || (!Path::new(&format!("/proc/{containerd}")).exists()).then_some(());
        eventually(30, gone).expect("containerd exits");
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        // A daemon started again on the same roots takes back (and stops) what the killed one left.
        if self.daemon.is_none() {
            self.launch();
        }
        let ids = stdout(&self.docker(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        if let Some(mut daemon) = self.daemon.take() {
            signal(daemon.id(), libc::SIGTERM);
            daemon.wait().unwrap();
        }
        let data = self.dir.path().join("data");
        let _ = Command::new("umount").arg("-R").arg(&data).status();
        let _ = Command::new("ip").args(["link", "delete", &self.bridge]).status();
    }
}

#[test]
fn the_daemon_stopping_mid_trace_leaves_the_trace() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")).or_else(|| {
        let dockerd = Command::new("dockerd").arg("--version").output().is_ok_and(|out| out.status.success());
        (!dockerd).then(|| "dockerd is not installed".to_owned())
    }));
    let mut daemon = PrivateDaemon::start();
    let mut load = Command::new("docker").args(["-H", &daemon.host, "load"]).stdin(Stdio::piped()).spawn().unwrap();
    let save = Command::new("docker").args(["save", "nginx:latest"]).stdout(load.stdin.take().unwrap()).status();
    assert!(save.unwrap().success() && load.wait().unwrap().success(), "nginx:latest loads into the private daemon");
    let pinned_before = pinned();
    let dir = tempfile::tempdir().unwrap();
    let tracer = spawn_trace(&["nginx:latest", "--no-static", "--duration", "60s"], dir.path(), Some(&daemon.host));
    let held = wait_until_armed(tracer.id());
    let running = || (!stdout(&daemon.docker(&["ps", "-q"])).trim().is_empty()).then_some(());
    eventually(60, running).expect("nginx runs in the private daemon");
    std::thread::sleep(Duration::from_secs(2));
    daemon.kill();
    let (code, err) = finish(tracer);
    assert_eq!(code, Some(1), "{err}");
    let reason = format!("the Docker daemon ({}) stopped answering during the trace", daemon.host);
    let expected = format!(
        "seccomp-refine: error: {reason}; what was recorded until then is in {}, marked incomplete; once the daemon \
         is back, remove what is left of the container with `docker rm -f`",
        dir.path().display()
    );
    assert_eq!(err.lines().last().unwrap_or_default(), expected);
    let trace = assert_cut_short(dir.path(), &reason);
    held.assert_freed(&pinned_before);
    drop(daemon);
    assert!(trace["target"]["container_id"].is_string());
    assert_next_run_works();
}

/// A tmpfs of `size` mounted for the test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let options = format!("size={size}");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(dir.path()).status();
        assert!(status.unwrap().success(), "mount tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_keeps_the_previous_trace_whole() {
    require!(tracer_missing());
    let disk = Tmpfs::mount("2m");
    let dir = disk.0.path().join("profiles");
    let trace = |extra: &[&str]| {
        output(
            seccomp_refine()
                .args(["trace", "--exec", "--no-static"])
                .args(extra)
                .arg("-o")
                .arg(&dir)
                .args(["--", "/bin/true"]),
        )
    };
    let out = trace(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = files(&dir);
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(disk.0.path().join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    while std::io::Write::write_all(&mut filler, &chunk[..1]).is_ok() {}
    let out = trace(&["--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let expected = format!(
        "seccomp-refine: error: no space left on tmpfs mounted at {mount} (writing {mount}/profiles/trace.json); the \
         previous file, if any, is untouched — free space there or choose another --output",
        mount = disk.0.path().display()
    );
    assert_eq!(err.lines().last().unwrap_or_default(), expected);
    assert_eq!(files(&dir), before, "every previous file is whole, and no temporary file is left");
}

#[test]
fn two_traces_at_once_keep_their_containers_apart() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")).or_else(|| image_missing("redis:latest")));
    let dir = tempfile::tempdir().unwrap();
    let (nginx_dir, redis_dir) = (dir.path().join("nginx"), dir.path().join("redis"));
    let nginx = spawn_trace(&["nginx:latest", "--no-static", "--duration", "6s"], &nginx_dir, None);
    let redis = spawn_trace(&["redis:latest", "--no-static", "--duration", "6s"], &redis_dir, None);
    for (name, tracer) in [("nginx", nginx), ("redis", redis)] {
        let (code, err) = finish(tracer);
        assert_eq!(code, Some(0), "{name}: {err}");
    }
    let nginx = read_json(&nginx_dir.join("trace.json"));
    let redis = read_json(&redis_dir.join("trace.json"));
    assert_ne!(nginx["target"]["cgroup"], redis["target"]["cgroup"]);
    for (trace, own, other) in [(&nginx, "nginx", "redis"), (&redis, "redis", "nginx")] {
        assert_eq!(trace["complete"], true, "{own}");
        let executables = paths(trace, "executables");
        let files: Vec<String> = executables.iter().cloned().chain(paths(trace, "libraries")).collect();
        assert!(executables.iter().any(|path| path.contains(own)), "{own}: {executables:?}");
        assert!(!files.iter().any(|path| path.contains(other)), "{own} holds {other}'s files: {files:?}");
    }
    // Each server's own libraries: nginx's regex library, redis's allocator.
    let libraries = |trace: &Value| paths(trace, "libraries").join(" ");
    assert!(libraries(&nginx).contains("libpcre2") && !libraries(&redis).contains("libpcre2"));
    assert!(names(&redis, "serving").contains("epoll_wait") && names(&nginx, "serving").contains("epoll_wait"));
}
