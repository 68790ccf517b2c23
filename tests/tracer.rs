//! The live eBPF tracer end to end: the real kernel, real programs, real containers.
//!
//! `--exec` runs `tests/data/phases.c`, whose syscalls are known one by one, so the per-phase sets
//! are compared exactly. The container tests trace the nginx and redis stand-ins and check what
//! the trace says against the running container itself, then run it under the profile the
//! trace produced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{Container, docker, eventually, image_missing, output, read_json, seccomp_refine, stderr};

/// Why the tracer cannot run here, if it cannot.
fn tracer_missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the tracer needs root".to_owned());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("the kernel has no BTF".to_owned());
    }
    let gcc = Command::new("gcc").arg("--version").output().is_ok_and(|out| out.status.success());
    (!gcc).then(|| "gcc is not installed".to_owned())
}

/// Compiles `phases.c` into `dir`, mapping `library` `repeat` times.
fn compile_phases(dir: &Path, library: &Path, repeat: u32) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/phases.c");
    let program = dir.join("phases");
    let out = output(
        Command::new("gcc")
            .args(["-O1", "-static", "-nostdlib", "-fno-pie", "-no-pie"])
            .arg(format!("-DLIBPATH=\"{}\"", library.display()))
            .arg(format!("-DREPEAT={repeat}"))
            .arg("-o")
            .arg(&program)
            .arg(source),
    );
    assert!(out.status.success(), "gcc: {}", stderr(&out));
    program
}

fn trace(args: &[&str], dir: &Path) -> (Output, Value) {
    // `-o` first: everything after `--` in `args` is the traced command's.
    let out = output(seccomp_refine().arg("trace").arg("-o").arg(dir).args(args));
    let trace_path = dir.join("trace.json");
    assert!(trace_path.exists(), "no trace.json; stderr: {}", stderr(&out));
    (out, read_json(&trace_path))
}

fn names(trace: &Value, phase: &str, table: &str) -> BTreeSet<String> {
    trace["phases"][phase][table].as_object().map(|map| map.keys().cloned().collect()).unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&name| name.to_owned()).collect()
}

fn paths(trace: &Value, list: &str) -> BTreeSet<String> {
    trace[list].as_array().unwrap().iter().map(|file| file["path"].as_str().unwrap().to_owned()).collect()
}

/// Traces `phases` with `marker` and checks the exact sets the program's source lists.
fn check_exact_phases(marker: &str) {
    require!(tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library.bin");
    std::fs::write(&library, [0u8; 4096]).unwrap();
    let program = compile_phases(dir.path(), &library, 1);
    let out_dir = dir.path().join("out");
    let (out, trace) =
        trace(&["--exec", "--duration", "20s", "--phase-marker", marker, "--", program.to_str().unwrap()], &out_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    // The tracer's child joins the cgroup, then execs: execve is the first syscall traced.
    let init = set(&["execve", "getpid", "getuid", "openat", "mmap", "munmap", "close"]);
    assert_eq!(names(&trace, "init", "syscalls"), init);
    assert_eq!(names(&trace, "init", "compat_syscalls"), set(&["getpid"]));
    assert_eq!(names(&trace, "serving", "syscalls"), set(&["getppid", "getgid", "exit_group"]));
    assert!(names(&trace, "serving", "compat_syscalls").is_empty());
    assert!(names(&trace, "runtime", "syscalls").is_empty(), "no container runtime in --exec");
    assert_eq!(trace["phases"]["init"]["syscalls"]["getpid"]["count"], 1);
    assert_eq!(paths(&trace, "executables"), set(&[program.to_str().unwrap()]));
    assert_eq!(paths(&trace, "libraries"), set(&[library.to_str().unwrap()]));
    let marker_state = &trace["phase_marker"];
    assert_eq!(marker_state["fired"], true);
    assert_eq!(marker_state["pid"], trace["executables"][0]["pid"], "fired in the traced process");
    assert!(marker_state["at_ns"].as_u64().unwrap() >= trace["executables"][0]["first_seen_ns"].as_u64().unwrap());
    assert_eq!((trace["lost_events"].as_u64(), trace["complete"].as_bool()), (Some(0), Some(true)));
    // The profiles follow the sets.
    let serving_profile = read_json(&out_dir.join("seccomp-serving.json"));
    let allowed = serving_profile["syscalls"][0]["names"].as_array().unwrap();
    assert!(allowed.iter().any(|name| name == "getppid") && !allowed.iter().any(|name| name == "getuid"));
}

#[test]
fn exec_with_a_symbol_marker_records_exact_sets_per_phase() {
    check_exact_phases("symbol:serve");
}

#[test]
fn exec_with_a_syscall_marker_records_exact_sets_per_phase() {
    // The marker syscall is the first one of the serving phase.
    check_exact_phases("syscall:getppid");
}

#[test]
fn a_full_ring_buffer_is_reported_not_hidden() {
    require!(tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library.bin");
    std::fs::write(&library, [0u8; 4096]).unwrap();
    // 2000 executable mappings: 2000 events of 312 bytes, far beyond a 4 KiB ring buffer and
    // within the default 1 MiB one.
    let program = compile_phases(dir.path(), &library, 2000);
    let program = program.to_str().unwrap();
    let (out, tiny) = trace(&["--exec", "--ring-buffer", "4K", "--", program], &dir.path().join("tiny"));
    assert!(out.status.success(), "{}", stderr(&out));
    let lost = tiny["lost_events"].as_u64().unwrap();
    assert!(lost > 1000, "lost {lost}");
    assert_eq!(tiny["complete"], false);
    assert!(tiny["warnings"][0].as_str().unwrap().contains(&format!("{lost} events")), "{}", tiny["warnings"]);
    assert!(stderr(&out).contains(&format!("warning: {lost} events lost")), "{}", stderr(&out));
    let (out, roomy) = trace(&["--exec", "--", program], &dir.path().join("roomy"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((roomy["lost_events"].as_u64(), roomy["complete"].as_bool()), (Some(0), Some(true)));
}

/// runc's setup before its filter: it must never reach a profile.
const RUNC_SETUP: &[&str] = &["mount", "umount2", "pivot_root", "sethostname", "keyctl", "unshare", "seccomp"];

/// Traces `image` (kept running), checks runc's setup stays apart and the files match the
/// running processes, then returns the output directory and the trace.
fn trace_standin(image: &str, workload: &str, dir: &Path) -> (Container, Value) {
    let (out, trace) = trace(&[image, "--keep", "--duration", "15s", "--workload", workload], dir);
    let container = Container { id: trace["target"]["container_id"].as_str().expect("a container id").to_owned() };
    assert!(out.status.success(), "{}", stderr(&out));
    let setup = names(&trace, "runtime_setup", "syscalls");
    assert!(setup.contains("mount") && setup.contains("pivot_root"), "runc's setup was traced: {setup:?}");
    for phase in ["runtime", "init", "serving"] {
        let leaked: Vec<_> =
            RUNC_SETUP.iter().filter(|name| names(&trace, phase, "syscalls").contains(**name)).collect();
        assert!(leaked.is_empty(), "runc setup {leaked:?} leaked into {phase}");
    }
    assert!(names(&trace, "runtime", "syscalls").contains("execve"), "runc's exec of the entrypoint");
    assert_eq!(trace["phase_marker"]["fired"], true, "{}", trace["phase_marker"]);
    assert!(!names(&trace, "serving", "syscalls").is_empty());
    let (executables, libraries) = running_files(&container.id);
    assert_eq!(paths(&trace, "executables"), executables);
    assert_eq!(paths(&trace, "libraries"), libraries);
    (container, trace)
}

/// What /proc says the container's processes run and have mapped executable.
fn running_files(container: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", container]);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroup.lines().find_map(|line| line.strip_prefix("0::")).unwrap().to_owned();
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/unified{path}/cgroup.procs")).unwrap();
    let (mut executables, mut libraries) = (BTreeSet::new(), BTreeSet::new());
    for pid in procs.lines() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().display().to_string();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() == 6 && fields[1].contains('x') && fields[5].starts_with('/') && fields[5] != exe {
                libraries.insert(fields[5].to_owned());
            }
        }
        executables.insert(exe);
    }
    (executables, libraries)
}

fn run_under_profile(image: &str, profile: &Path) -> Container {
    Container::start(&["--security-opt", &format!("seccomp={}", profile.display()), image])
}

#[test]
fn nginx_traced_from_its_first_syscall_serves_under_its_own_profile() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let workload = "curl -sf http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/ -o /dev/null";
    let (traced, trace) = trace_standin("nginx:latest", workload, dir.path());
    drop(traced);
    assert_eq!(trace["phase_marker"]["spec"], "symbol:ngx_process_events_and_timers@/usr/sbin/nginx");
    assert!(paths(&trace, "executables").contains("/usr/sbin/nginx"));
    let serving = names(&trace, "serving", "syscalls");
    assert!(serving.contains("accept4") && serving.contains("epoll_wait"), "{serving:?}");
    let confined = run_under_profile("nginx:latest", &dir.path().join("seccomp.json"));
    let url = format!("http://{}/", confined.ip());
    let page = eventually(20, || {
        let out = Command::new("curl").args(["-sf", &url]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(page.is_some_and(|page| page.contains("Welcome to nginx")), "nginx does not serve under seccomp.json");
}

#[test]
fn redis_traced_from_its_first_syscall_answers_under_its_own_profile() {
    require!(tracer_missing().or_else(|| image_missing("redis:latest")));
    let dir = tempfile::tempdir().unwrap();
    let workload = "redis-cli -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT set k v";
    let (traced, trace) = trace_standin("redis:latest", workload, dir.path());
    drop(traced);
    assert_eq!(trace["phase_marker"]["spec"], "symbol:aeMain@/usr/bin/redis-server");
    let confined = run_under_profile("redis:latest", &dir.path().join("seccomp.json"));
    let ip = confined.ip();
    let pong = eventually(20, || {
        let out = Command::new("redis-cli").args(["-h", &ip, "ping"]).output().ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "PONG").then_some(())
    });
    assert!(pong.is_some(), "redis does not answer under seccomp.json");
}

#[test]
fn a_container_that_exits_early_is_an_error_with_its_log_and_the_trace_kept() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let (out, trace) = trace(
        &["nginx:latest", "--duration", "30s", "--", "sh", "-c", "echo boom-from-the-app >&2; exit 3"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("boom-from-the-app"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("seccomp-refine: error: the container exited early with code 3"), "{last}");
    assert!(names(&trace, "init", "syscalls").contains("exit_group"));
    assert!(dir.path().join("seccomp.json").exists());
}

#[test]
fn an_image_that_is_neither_present_nor_pullable_is_one_line() {
    require!(tracer_missing().or_else(crate::util::docker_missing));
    let out = output(seccomp_refine().args(["trace", "seccomp-refine-no-such-image:v0", "--duration", "5s"]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("image seccomp-refine-no-such-image:v0 is not present and cannot be pulled"), "{err}");
}

#[test]
fn attaching_to_a_running_container_records_its_serving_loop() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let nginx = Container::start(&["nginx:latest"]);
    let url = format!("http://{}/", nginx.ip());
    let up = || Command::new("curl").args(["-sf", "-o", "/dev/null", &url]).status().ok()?.success().then_some(());
    assert!(eventually(20, up).is_some(), "nginx did not start");
    let dir = tempfile::tempdir().unwrap();
    let mut tracer = seccomp_refine()
        .args(["trace", "--attach", &nginx.id, "--duration", "3s", "-o"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Requests for as long as the trace runs, so some land after the programs are attached.
    while tracer.try_wait().unwrap().is_none() {
        assert!(up().is_some());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    let serving = names(&trace, "serving", "syscalls");
    assert!(serving.contains("accept4") && serving.contains("recvfrom"), "{serving:?}");
    assert!(names(&trace, "init", "syscalls").is_empty());
    assert_eq!(trace["complete"], false, "the start-up was not seen");
    let (executables, libraries) = running_files(&nginx.id);
    assert_eq!(paths(&trace, "executables"), executables);
    assert_eq!(paths(&trace, "libraries"), libraries);
}

#[test]
fn without_privileges_the_tracer_says_what_it_needs() {
    require!(tracer_missing());
    // setpriv drops every capability, so even uid 0 cannot use bpf().
    let out = output(
        Command::new("setpriv")
            .args(["--bounding-set", "-all", "--inh-caps", "-all", "--"])
            .arg(env!("CARGO_BIN_EXE_seccomp-refine"))
            .args(["trace", "--exec", "--", "/bin/true"]),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "seccomp-refine: error: tracing needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN); run it with sudo"
    );
}
