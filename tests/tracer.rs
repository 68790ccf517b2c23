//! The live eBPF tracer end to end: the real kernel, real programs, real containers.
//!
//! `--exec` runs `tests/data/phases.c` and `processes.c`, whose syscalls are known one by one, so
//! the per-phase sets are compared exactly. The container tests trace the nginx and redis
//! stand-ins and check what the trace says against the running container itself, then run it
//! under the profile the trace produced; several running containers are traced at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{Container, docker, eventually, image_missing, output, read_json, seccomp_refine, stderr, stdout};

/// Why the tracer cannot run here, if it cannot.
pub fn tracer_missing() -> Option<String> {
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

/// Compiles `tests/data/NAME.c` (no libc: raw syscalls only) into `dir` with `defines`.
fn compile(dir: &Path, name: &str, defines: &[String]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/{name}.c"));
    let program = dir.join(name);
    let out = output(
        Command::new("gcc")
            .args(["-O1", "-static", "-nostdlib", "-fno-pie", "-no-pie"])
            .args(defines)
            .arg("-o")
            .arg(&program)
            .arg(source),
    );
    assert!(out.status.success(), "gcc: {}", stderr(&out));
    program
}

/// Compiles `phases.c` into `dir`, mapping `library` `repeat` times.
fn compile_phases(dir: &Path, library: &Path, repeat: u32) -> PathBuf {
    compile(dir, "phases", &[format!("-DLIBPATH=\"{}\"", library.display()), format!("-DREPEAT={repeat}")])
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
    // Dynamic evidence alone, so that the profiles can be checked against the exact sets too.
    let args =
        ["--exec", "--no-static", "--duration", "20s", "--phase-marker", marker, "--", program.to_str().unwrap()];
    let (out, trace) = trace(&args, &out_dir);
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
fn trace_runs_static_analysis_from_the_symbol_markers_function() {
    require!(tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library.bin");
    std::fs::write(&library, [0u8; 4096]).unwrap();
    let program = compile_phases(dir.path(), &library, 1);
    let out_dir = dir.path().join("out");
    let (out, _) = trace(&["--exec", "--phase-marker", "symbol:serve", "--", program.to_str().unwrap()], &out_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let analysis = read_json(&out_dir.join("analysis.json"));
    let evidence = |phase: &str, name: &str| analysis["phases"][phase][name].clone();
    // Seen and reachable after `serve`, where the marker put serving; reachable only before it.
    for name in ["getppid", "getgid", "exit_group"] {
        assert!(evidence("serving", name)["observed"].is_object(), "{name} observed in serving");
        assert!(evidence("serving", name)["reachable"].is_object(), "{name} reachable in serving");
    }
    assert!(evidence("init", "getuid")["reachable"].is_object());
    assert!(evidence("serving", "getuid").is_null(), "getuid is only reachable before serve()");
    let serving = read_json(&out_dir.join("seccomp-serving.json"))["syscalls"][0]["names"].to_string();
    assert!(serving.contains("\"getgid\"") && !serving.contains("\"getuid\""), "{serving}");
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("- **unresolved static sites:** none"), "the report knows the analysis ran: {report}");
    check_precision_against_the_run(&out_dir, &analysis);
}

#[test]
fn analyze_reads_the_host_for_a_trace_of_a_host_command() {
    require!(tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library.bin");
    std::fs::write(&library, [0u8; 4096]).unwrap();
    let program = compile_phases(dir.path(), &library, 1);
    let out_dir = dir.path().join("out");
    let (out, _) = trace(&["--exec", "--no-static", "--", program.to_str().unwrap()], &out_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let cache = dir.path().join("cache");
    let trace_json = out_dir.join("trace.json");
    let out = output(seccomp_refine().args(["analyze", "--force"]).arg(&trace_json).arg("--cache-dir").arg(&cache));
    assert!(out.status.success(), "analyze without --rootfs: {}", stderr(&out));
    let analysis = read_json(&out_dir.join("analysis.json"));
    assert!(analysis["phases"]["init"]["getuid"]["reachable"].is_object(), "the program was read from the host");
}

#[test]
fn auto_finds_the_serving_entry_of_an_unknown_server_in_its_stack() {
    require!(tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/event_server.c");
    let program = dir.path().join("event_server");
    let out = output(Command::new("gcc").args(["-O2", "-fomit-frame-pointer", "-o"]).arg(&program).arg(&source));
    assert!(out.status.success(), "gcc: {}", stderr(&out));
    let out_dir = dir.path().join("out");
    let (out, trace) = trace(&["--exec", "--duration", "20s", "--", program.to_str().unwrap()], &out_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let marker = &trace["phase_marker"];
    let derived = &marker["serving_entry"];
    // Not the set-up wait (it returned at once) but the event loop's, which blocked.
    assert_eq!(derived["entry"]["function"], "handle_events", "{marker}");
    assert_eq!(derived["callers"][0]["function"], "serve", "{marker}");
    assert_eq!(derived["entry"]["binary"], program.to_str().unwrap());
    // The program the stack was taken in: the static side's server.
    assert_eq!(derived["program"], program.to_str().unwrap(), "{marker}");
    assert!(stderr(&out).contains("serving entry handle_events (event_server+0x"), "{}", stderr(&out));
    // The static analysis serves from there: the set-up before the loop is init only.
    let analysis = read_json(&out_dir.join("analysis.json"));
    assert_eq!(analysis["static"]["programs"][0]["serving_entry"], "event_server!handle_events");
    let reachable = |phase: &str, name: &str| analysis["phases"][phase][name]["reachable"].is_object();
    for name in ["socket", "bind", "listen", "eventfd2", "epoll_create1"] {
        assert!(reachable("init", name) && !reachable("serving", name), "{name} is set-up only");
    }
    for name in ["epoll_wait", "accept", "close", "exit_group"] {
        assert!(reachable("serving", name), "{name} serves");
    }
}

#[test]
fn exec_with_a_syscall_marker_records_exact_sets_per_phase() {
    // The marker syscall is the first one of the serving phase.
    check_exact_phases("syscall:getppid");
}

/// Traces `processes.c` (a process forked before the marker, one after) with `marker`.
fn trace_processes(marker: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let program = compile(dir.path(), "processes", &[]);
    let args = ["--exec", "--duration", "20s", "--phase-marker", marker, "--", program.to_str().unwrap()];
    let (out, trace) = trace(&args, &dir.path().join("out"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((trace["lost_events"].as_u64(), trace["complete"].as_bool()), (Some(0), Some(true)));
    trace
}

#[test]
fn a_symbol_marker_moves_only_the_process_that_hits_it_and_what_it_forks_afterwards() {
    require!(tracer_missing());
    let trace = trace_processes("symbol:serve");
    // `early`, forked before the marker, keeps making init syscalls after main hit it.
    assert_eq!(
        names(&trace, "init", "syscalls"),
        set(&["execve", "pipe2", "fork", "getpid", "read", "getegid", "exit_group"])
    );
    // `late`, forked by main after the marker, inherits serving.
    assert_eq!(
        names(&trace, "serving", "syscalls"),
        set(&["getppid", "write", "fork", "wait4", "getpgrp", "exit_group"])
    );
    let count = |phase: &str, name: &str| trace["phases"][phase]["syscalls"][name]["count"].as_u64();
    assert_eq!((count("init", "fork"), count("serving", "fork")), (Some(1), Some(1)));
    assert_eq!((count("init", "exit_group"), count("serving", "exit_group")), (Some(1), Some(2)), "early; main, late");
    let marker = &trace["phase_marker"];
    let main = &trace["executables"][0]["pid"];
    assert_eq!((&marker["scope"], &marker["pid"]), (&Value::from("process"), main));
    let moved = marker["serving_processes"].as_array().unwrap();
    assert_eq!(moved.len(), 2, "main and late, not early: {moved:?}");
    assert_eq!((&moved[0]["pid"], moved[0].get("forked_by")), (main, None));
    assert_eq!(&moved[1]["forked_by"], main);
    assert_ne!(&moved[1]["pid"], main);
}

#[test]
fn a_syscall_marker_moves_every_process_of_the_cgroup_at_once() {
    require!(tracer_missing());
    let trace = trace_processes("syscall:getppid");
    // `early` blocks in `read` either side of main's getppid, so only `read` is left out.
    let (mut init, mut serving) = (names(&trace, "init", "syscalls"), names(&trace, "serving", "syscalls"));
    assert!(init.remove("read") != serving.remove("read"), "read is in exactly one phase");
    assert_eq!(init, set(&["execve", "pipe2", "fork", "getpid"]));
    assert_eq!(serving, set(&["getppid", "write", "fork", "wait4", "getpgrp", "getegid", "exit_group"]));
    assert_eq!(trace["phase_marker"]["scope"], "container");
    assert!(trace["phase_marker"].get("serving_processes").is_none());
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

/// The serving entry `auto` derived from the trace's stack and its looping callers, checked
/// against the servers known by name (the table is the check here, never an input), against the
/// report, and against where the static analysis started serving.
fn derived_entry(trace: &Value, dir: &Path) -> (String, Vec<String>) {
    let marker = &trace["phase_marker"];
    assert_eq!((marker["spec"].as_str(), marker["scope"].as_str()), (Some("auto"), Some("process")), "{marker}");
    let derived = &marker["serving_entry"];
    let entry =
        derived["entry"]["function"].as_str().unwrap_or_else(|| panic!("no serving entry: {marker}")).to_owned();
    let callers: Vec<String> = derived["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|caller| caller["function"].as_str().unwrap().to_owned())
        .collect();
    let known: Vec<&str> = seccomp_refine::servers::KNOWN_SERVERS.iter().map(|server| server.serving_entry).collect();
    assert!(
        known.contains(&entry.as_str()) || callers.iter().any(|caller| known.contains(&caller.as_str())),
        "{entry} called by {callers:?} is none of the known serving functions {known:?}"
    );
    assert!(derived["found_at"].as_str().unwrap().contains("after listen"), "{derived}");
    let stack: Vec<&str> = derived["stack"].as_array().unwrap().iter().map(|frame| frame.as_str().unwrap()).collect();
    let position = stack.iter().position(|frame| frame.contains(&format!("!{entry}+"))).expect("the entry's frame");
    assert!(stack[position + 1].contains(&format!("!{}+", callers[0])), "the looping caller is next: {stack:?}");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains(&format!("**serving entry:** {entry} (")), "{report}");
    let analysis = read_json(&dir.join("analysis.json"));
    let starts: Vec<&str> = analysis["static"]["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|program| program["serving_entry"].as_str())
        .collect();
    assert!(starts.iter().any(|start| start.ends_with(&format!("!{entry}"))), "static serving from {starts:?}");
    (entry, callers)
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
    // Found from the stack, not known by name: the event-loop iteration, called in a loop by the
    // worker cycle (static, so named by its address), and where the static serving set starts.
    let (entry, callers) = derived_entry(&trace, dir.path());
    assert_eq!((entry.as_str(), callers.len()), ("ngx_process_events_and_timers", 1), "{callers:?}");
    assert!(callers[0].starts_with("fn_"), "{callers:?}");
    assert!(paths(&trace, "executables").contains("/usr/sbin/nginx"));
    let serving = names(&trace, "serving", "syscalls");
    assert!(serving.contains("accept4") && serving.contains("epoll_wait"), "{serving:?}");
    // Each worker drops its privileges before its own first loop iteration, while the other one
    // may already serve: per-process phases keep that out of serving.
    let init = names(&trace, "init", "syscalls");
    for privileged in ["setuid", "setgid", "setgroups"] {
        assert!(init.contains(privileged) && !serving.contains(privileged), "{privileged}: {serving:?}");
    }
    // The master never runs the event loop: it stays in init (its rt_sigsuspend too); the workers serve.
    assert!(!serving.contains("rt_sigsuspend"), "{serving:?}");
    let master = docker(&["inspect", "--format", "{{.State.Pid}}", &traced.id]);
    let workers: BTreeSet<String> = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let moved: BTreeSet<String> = trace["phase_marker"]["serving_processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|process| process["pid"].to_string())
        .collect();
    assert_eq!(moved, workers, "the serving processes are the master's workers");
    drop(traced);
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
    // Found from the stack: what aeMain calls in its loop (aeProcessEvents, unexported in
    // Debian's binary, so named by its address).
    let (entry, callers) = derived_entry(&trace, dir.path());
    assert!(entry.starts_with("fn_"), "{entry}");
    assert_eq!(callers, ["aeMain"]);
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
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("boom-from-the-app"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("seccomp-refine: error: the container exited early with code 3"), "{last}");
    assert!(names(&trace, "init", "syscalls").contains("exit_group"));
    assert!(dir.path().join("seccomp.json").exists());
}

#[test]
fn a_container_whose_command_exits_at_once_is_an_early_exit_every_time() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    // `false` is gone within a millisecond of its start, before the tracer could look for it in
    // /proc: that must make no difference, whichever way the race goes.
    for attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (out, trace) = trace(&["nginx:latest", "--duration", "30s", "--", "false"], dir.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "attempt {attempt}: {err}");
        let last = err.lines().last().unwrap();
        assert!(last.starts_with("seccomp-refine: error: the container exited early with code 1"), "{last}");
        assert!(names(&trace, "runtime", "syscalls").contains("execve"), "runc's exec of `false`");
        assert!(names(&trace, "init", "syscalls").contains("exit_group"), "attempt {attempt}");
        assert_eq!(paths(&trace, "executables"), set(&["/usr/bin/false"]));
        assert_eq!(trace["complete"], true, "{}", trace["warnings"]);
        assert!(dir.path().join("seccomp.json").exists());
    }
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
    // The argument values are read from the kernel for an attached container too: every observed
    // syscall with narrowable arguments has the values of each.
    let narrowable: Vec<&String> =
        serving.iter().filter(|name| seccomp_refine::syscalls::args::pairs_of(name).next().is_some()).collect();
    assert!(!narrowable.is_empty(), "{serving:?}");
    for name in narrowable {
        let seen = &trace["phases"]["serving"]["args"][name];
        for pair in seccomp_refine::syscalls::args::pairs_of(name) {
            let values = seen["values"][pair.index.to_string()].as_array();
            assert!(values.is_some_and(|values| !values.is_empty()), "{name} argument {}: {seen}", pair.index);
        }
    }
    assert!(names(&trace, "init", "syscalls").is_empty());
    assert_eq!(trace["complete"], false, "the start-up was not seen");
    let (executables, libraries) = running_files(&nginx.id);
    assert_eq!(paths(&trace, "executables"), executables);
    assert_eq!(paths(&trace, "libraries"), libraries);
}

/// `docker exec` into a traced container: `runc init` joins the cgroup and sets itself up there (its
/// session keyring, its filter; its capabilities and ids under the filter) before it execs the
/// command. That setup is runc's, as at the container's start, and only the command counts in the
/// container's phase.
#[test]
fn a_docker_exec_counts_as_the_runtime_until_its_command_runs() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let nginx = Container::start(&["nginx:latest"]);
    let dir = tempfile::tempdir().unwrap();
    let mut tracer = seccomp_refine()
        .args(["trace", "--attach", &nginx.id, "--no-static", "--duration", "4s", "-o"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `sync` is a call neither runc nor nginx makes; exec'd until one lands in the trace.
    while tracer.try_wait().unwrap().is_none() {
        docker(&["exec", &nginx.id, "sync"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    let (setup, runtime, serving) = (
        names(&trace, "runtime_setup", "syscalls"),
        names(&trace, "runtime", "syscalls"),
        names(&trace, "serving", "syscalls"),
    );
    assert!(serving.contains("sync"), "the command counts as serving: {serving:?}");
    assert!(paths(&trace, "executables").contains("/usr/bin/sync"));
    assert!(setup.contains("keyctl"), "runc's session keyring, before its filter: {setup:?}");
    // Under the filter: the profile must allow what runc does there, as at the container's start.
    for under_filter in ["execve", "capset", "setgroups"] {
        assert!(runtime.contains(under_filter), "{under_filter}: {runtime:?}");
    }
    for runc in RUNC_SETUP.iter().chain(&["capget", "capset", "setgroups", "execve", "getdents64"]) {
        assert!(!serving.contains(*runc), "runc's {runc} leaked into serving: {serving:?}");
    }
    for runc in RUNC_SETUP {
        assert!(!runtime.contains(*runc), "runc's setup {runc} leaked into runtime: {runtime:?}");
    }
}

#[test]
fn an_attached_container_that_stops_is_an_early_exit_with_its_log() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let script = "echo ready; sleep 2; echo bye-from-the-app >&2; exit 4";
    let short = Container::start(&["nginx:latest", "sh", "-c", script]);
    assert!(eventually(10, || docker(&["logs", &short.id]).contains("ready").then_some(())).is_some());
    let dir = tempfile::tempdir().unwrap();
    let (out, trace) = trace(&["--attach", &short.id, "--duration", "30s"], dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bye-from-the-app"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("seccomp-refine: error: the container exited early with code 4"), "{last}");
    assert!(names(&trace, "serving", "syscalls").contains("exit_group"), "its end was traced");
}

/// Starts `image` with a name unique to this run, ready when `probe(ip)` succeeds.
fn start_ready(image: &str, name: &str, probe: impl Fn(&str) -> bool) -> (Container, String) {
    let name = format!("seccomp-refine-test-{name}-{}", std::process::id());
    let container = Container::start(&["--name", &name, image]);
    let ip = container.ip();
    assert!(eventually(20, || probe(&ip).then_some(())).is_some(), "{name} did not start");
    (container, name)
}

fn curl(url: &str) -> bool {
    Command::new("curl").args(["-s", "-o", "/dev/null", url]).status().is_ok_and(|status| status.success())
}

fn redis_cli(ip: &str, args: &[&str]) -> bool {
    Command::new("redis-cli").args(["-h", ip]).args(args).output().is_ok_and(|out| out.status.success())
}

#[test]
fn one_tracer_attached_to_several_containers_keeps_each_apart() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")).or_else(|| image_missing("redis:latest")));
    let up = |ip: &str| curl(&format!("http://{ip}/"));
    let (nginx_files, nginx_files_name) = start_ready("nginx:latest", "files", up);
    let (nginx_404, nginx_404_name) = start_ready("nginx:latest", "404", up);
    let ping = |ip: &str| redis_cli(ip, &["ping"]);
    let (redis_set, redis_set_name) = start_ready("redis:latest", "set", ping);
    let (redis_save, redis_save_name) = start_ready("redis:latest", "save", ping);
    let dir = tempfile::tempdir().unwrap();
    let mut tracer = seccomp_refine()
        .args(["trace", "--duration", "5s", "-o"])
        .arg(dir.path())
        .args(["--attach", &nginx_files_name, "--attach", &nginx_404_name])
        .args(["--attach", &redis_set_name, "--attach", &redis_save_name])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Each container gets its own kind of request, for as long as the trace runs.
    let ips: Vec<String> = [&nginx_files, &nginx_404, &redis_set, &redis_save].iter().map(|c| c.ip()).collect();
    while tracer.try_wait().unwrap().is_none() {
        assert!(curl(&format!("http://{}/", ips[0])));
        curl(&format!("http://{}/no-such-page", ips[1]));
        assert!(redis_cli(&ips[2], &["set", "key", "value"]));
        // A save already running answers with an error, which is fine.
        redis_cli(&ips[3], &["bgsave"]);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let traced = |container: &Container, name: &str| {
        let trace = read_json(&dir.path().join(name).join("trace.json"));
        assert_eq!(trace["target"]["container_id"], container.id.as_str());
        assert_eq!(trace["lost_events"], 0);
        // Its own programs and libraries only: exactly what its processes run.
        let (executables, libraries) = running_files(&container.id);
        assert_eq!(paths(&trace, "executables"), executables, "{name}");
        assert_eq!(paths(&trace, "libraries"), libraries, "{name}");
        names(&trace, "serving", "syscalls")
    };
    let files = traced(&nginx_files, &nginx_files_name);
    let not_found = traced(&nginx_404, &nginx_404_name);
    let set_only = traced(&redis_set, &redis_set_name);
    let saving = traced(&redis_save, &redis_save_name);
    // nginx receives with recvfrom and answers with writev; redis reads and writes.
    for nginx in [&files, &not_found] {
        assert!(nginx.contains("recvfrom") && nginx.contains("writev") && !nginx.contains("read"), "{nginx:?}");
    }
    for redis in [&set_only, &saving] {
        assert!(redis.contains("read") && !redis.contains("recvfrom") && !redis.contains("writev"), "{redis:?}");
    }
    // Same image, different requests: only the nginx serving a file sends it.
    assert!(files.contains("sendfile") && !not_found.contains("sendfile"), "{files:?} / {not_found:?}");
    // Only the redis asked to BGSAVE forks a child that writes and renames the dump.
    for call in ["clone", "rename", "wait4"] {
        assert!(saving.contains(call) && !set_only.contains(call), "{call}: {saving:?} / {set_only:?}");
    }
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
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "seccomp-refine: error: tracing needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, and this process lacks \
         CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN; run it as root (sudo) with its capabilities"
    );
}

/// The report's precision table and `precision`: each phase's profile against what the run
/// observed, with recall 1.0 (the merged profile allows everything seen) and the static-only
/// grants that analysis.json lists.
fn check_precision_against_the_run(dir: &Path, analysis: &Value) {
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for phase in ["init", "serving"] {
        let row = report
            .lines()
            .find(|line| line.starts_with(&format!("| {phase} |")) && line.matches('|').count() == 9)
            .unwrap_or_else(|| panic!("no precision row for {phase} in report.md:\n{report}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let number = |index: usize| cells[index].parse::<f64>().unwrap_or_else(|_| panic!("{row}"));
        let (allowed, observed, hits) = (number(2), number(3), number(4));
        assert_eq!(cells[6], "1.00", "recall of {phase}: {row}");
        assert_eq!(hits, observed, "{row}");
        let (precision, f1) = (number(5), number(7));
        assert!((precision - hits / allowed).abs() < 0.006, "{row}");
        assert!((f1 - 2.0 * precision / (precision + 1.0)).abs() < 0.006 && f1 > 0.0, "{row}");
        let static_only = analysis["phases"][phase]
            .as_object()
            .unwrap()
            .values()
            .filter(|evidence| evidence["reachable"].is_object() && evidence["observed"].is_null())
            .count();
        assert_eq!(cells[8], static_only.to_string(), "static-only grants of {phase}: {row}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<table id=\"precision\">") && !html.contains("RECALL BELOW 1"));
    let out = output(seccomp_refine().arg("precision").arg(dir).arg(dir.join("trace.json")));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    for phase in ["init", "serving"] {
        let line = printed.lines().find(|line| line.starts_with(&format!("{phase}: precision "))).unwrap();
        assert!(line.contains(", recall 1.00, F1 ") && line.contains("static-only grants"), "{line}");
    }
}
