use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use seccomp_refine::scap::{self, Capture, KernelName, Plan, Problem};
use seccomp_refine::trace::{MarkerSpec, Phase};

use crate::util::{output, read_json, seccomp_refine, stderr, stdout};

/// Real captures with sysdig's reference output (`tests/data/scap/SOURCES.md`).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/scap")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.scap"))
}

fn golden(name: &str, kind: &str) -> String {
    let path = fixtures().join(format!("golden/{name}.{kind}.txt"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn import(path: &Path) -> Capture {
    let plan = Plan::new(&MarkerSpec::Auto).unwrap();
    let file = std::fs::File::open(path).unwrap();
    scap::read(file, plan, scap::Focus::All).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// (container, kernel name) → count.
type Counts = BTreeMap<(String, String), u64>;

/// What each container's syscalls add up to, counted from exit events or from lone enters.
fn counts(capture: &Capture, from_exits: bool) -> Counts {
    let mut counts = Counts::new();
    for aggregate in capture.aggregates() {
        for phase in [Phase::Init, Phase::Serving] {
            for (sys, stat) in aggregate.counters(phase).unwrap().iter() {
                let name = match scap::kernel_name(sys) {
                    KernelName::Native(name) | KernelName::Compat(name) | KernelName::Not(name) => name,
                };
                let count = if from_exits { stat.exits } else { stat.enters };
                if count > 0 {
                    *counts.entry((aggregate.id.clone(), name.to_owned())).or_default() += count;
                }
            }
        }
    }
    counts
}

/// The golden `count container name` lines, with sysdig's names turned into the kernel's.
fn golden_counts(name: &str) -> Counts {
    let mut counts = Counts::new();
    for line in golden(name, "syscalls_by_container").lines() {
        let [count, container, syscall] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("bad golden line `{line}`")
        };
        counts.insert((container.to_owned(), kernel_name_of_sysdig(syscall).to_owned()), count.parse().unwrap());
    }
    counts
}

/// sysdig prints event names, or for generic events the `ppm_sc` name, which on x86_64 are the
/// kernel's names except for these (none but `<unknown>` occurs in the golden files; the rest are
/// checked by the `names` unit tests):
/// - `<unknown>`: a generic event with `ppm_sc` code 0 that sysdig cannot name; its enter event
///   carries native number 221, which is `fadvise64` (2016 capture, `cat` reading /dev/null);
/// - `pread`, `pwrite`, `prlimit`, `umount` are `pread64`, `pwrite64`, `prlimit64`, `umount2`;
/// - `sigreturn` is `rt_sigreturn`.
fn kernel_name_of_sysdig(name: &str) -> &str {
    match name {
        "<unknown>" => "fadvise64",
        "pread" => "pread64",
        "pwrite" => "pwrite64",
        "prlimit" => "prlimit64",
        "umount" => "umount2",
        // sysdig 0.29's name for ppm_sc 298, today's (and the kernel's) `rt_sigreturn`.
        "sigreturn" => "rt_sigreturn",
        other => other,
    }
}

/// The golden files count exits with `evt.category!=unknown`, and sysdig puts some fd-based exits
/// in category `unknown` (its category of an I/O event comes from what it knows of the fd). Running
/// sysdig 0.29.3 with `evt.dir=<` alone shows exactly these extra exits, which a profile needs.
fn exits_sysdig_filtered_out(name: &str) -> Vec<(&'static str, &'static str, u64)> {
    match name {
        "falco_psp_run_as_user_0_container" => vec![
            ("697956520d89", "ioctl", 18),
            ("697956520d89", "read", 11),
            ("host", "ioctl", 46),
            ("host", "read", 116),
        ],
        // The two extra closes are of fds 1 and 2, which `cat` inherited and sysdig never saw opened.
        "falco_cat_write" => vec![("host", "close", 2), ("host", "read", 2)],
        "libs_sample" => vec![("host", "ioctl", 2), ("host", "read", 2)],
        _ => vec![],
    }
}

fn check_against_golden(name: &str, expected_enters: &[(&str, &str, u64)]) {
    let capture = import(&fixture(name));
    assert!(capture.damage.is_none(), "{name}: {:?}", capture.damage);
    let mut expected = golden_counts(name);
    for (container, syscall, count) in exits_sysdig_filtered_out(name) {
        *expected.entry((container.to_owned(), syscall.to_owned())).or_default() += count;
    }
    assert_eq!(counts(&capture, true), expected, "{name}: exit counts per container");
    let enters: Counts = expected_enters
        .iter()
        .map(|&(container, syscall, count)| ((container.to_owned(), syscall.to_owned()), count))
        .collect();
    assert_eq!(counts(&capture, false), enters, "{name}: syscalls counted from an enter with no exit");
}

// The syscalls counted from an enter event alone (no exit can follow: `exit_group`, or the call was
// still blocked when recording stopped) were found independently by replaying sysdig's own event
// order, `sysdig -r FILE -p '%thread.tid %evt.dir %evt.type %container.id'`, and keeping, per
// thread, each enter not followed by its exit. sysdig's `sigreturn` is `rt_sigreturn`.

#[test]
fn psp_container_capture_reproduces_sysdig_counts() {
    check_against_golden(
        "falco_psp_run_as_user_0_container",
        &[
            ("697956520d89", "exit_group", 1),
            ("697956520d89", "pselect6", 1),
            ("697956520d89", "rt_sigreturn", 1),
            ("host", "epoll_pwait", 3),
            ("host", "epoll_wait", 5),
            ("host", "futex", 18),
            ("host", "nanosleep", 1),
            ("host", "pause", 1),
            ("host", "poll", 2),
            ("host", "pselect6", 1),
            ("host", "read", 1),
            ("host", "rt_sigreturn", 12),
            ("host", "select", 3),
        ],
    );
}

#[test]
fn cat_write_capture_reproduces_sysdig_counts() {
    check_against_golden("falco_cat_write", &[("host", "exit_group", 1)]);
}

#[test]
fn libs_sample_capture_reproduces_sysdig_counts() {
    check_against_golden(
        "libs_sample",
        &[
            ("host", "clock_nanosleep", 1),
            ("host", "epoll_pwait", 1),
            ("host", "epoll_wait", 1),
            ("host", "futex", 3),
            ("host", "pselect6", 2),
        ],
    );
}

/// Every successful exec of the golden file is an executable of its container, with its pid and
/// time; the other executables are processes that were already running when the capture started.
/// The libraries are exactly the files the golden file shows mapped with PROT_EXEC.
fn check_execs_and_libraries(name: &str) {
    let capture = import(&fixture(name));
    for line in golden(name, "execs").lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (ts, pid, container, exepath, exe) = (fields[0], fields[2], fields[3], fields[4], fields[5]);
        // An empty exepath: the 2016 driver records no exec path; sysdig shows argv[0] instead.
        let path = if exepath.is_empty() { exe } else { exepath };
        let aggregate = capture.aggregates().iter().find(|aggregate| aggregate.id == container).unwrap();
        let start = aggregate.first_ts.unwrap();
        let found = aggregate
            .executables
            .iter()
            .find(|file| file.path == path)
            .unwrap_or_else(|| panic!("{name}: exec of {path} missing from {:?}", aggregate.executables));
        assert_eq!(found.pid.to_string(), pid, "{name}: {path}");
        assert_eq!(found.first_seen_ns, ts.parse::<u64>().unwrap() - start, "{name}: {path}");
    }
    for aggregate in capture.aggregates() {
        let golden_execs = golden(name, "execs");
        let running: Vec<u32> = aggregate.preexisting.iter().map(|&(pid, _)| pid).collect();
        for file in &aggregate.executables {
            let execd = golden_execs.lines().any(|line| line.contains(&format!(" {} {} ", file.pid, aggregate.id)));
            assert!(
                execd || running.contains(&file.pid),
                "{name}: {} ({}) is neither exec'd nor running before",
                file.path,
                file.pid
            );
        }
        let expected: Vec<String> = golden(name, "exec_mmaps")
            .lines()
            .filter(|line| line.split(' ').nth(2) == Some(aggregate.id.as_str()))
            .map(|line| line.rsplit(' ').next().unwrap().to_owned())
            .collect();
        let libraries: Vec<String> = aggregate.libraries.iter().map(|file| file.path.clone()).collect();
        assert_eq!(libraries, expected, "{name}: libraries of {}", aggregate.id);
    }
}

#[test]
fn golden_execs_and_exec_mapped_libraries() {
    for name in ["falco_psp_run_as_user_0_container", "falco_cat_write", "libs_sample"] {
        check_execs_and_libraries(name);
    }
}

/// `seccomp-refine import ARGS…` in a fresh directory (so the default `./profiles/` lands there).
/// `import` from the capture alone: these tests check what the capture says, so no static
/// analysis of whatever local image shares the capture's image name.
fn run_import(dir: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    output(seccomp_refine().current_dir(dir).args(["import", "--no-static"]).args(args))
}

fn arg(text: &str) -> &std::ffi::OsStr {
    text.as_ref()
}

fn names(value: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

fn strings(list: &[&str]) -> Vec<String> {
    let mut list: Vec<String> = list.iter().map(|&name| name.to_owned()).collect();
    list.sort();
    list
}

const PSP_ID: &str = "697956520d891b5cb0e215093970c733549a3f745f52263c05b37f8a488994f3";
/// The psp container's first syscall (bash's pselect6 exit) and ls's execve exit.
const PSP_START: u64 = 1_562_711_472_092_752_628;
const PSP_LS_EXEC: u64 = 1_562_711_472_095_933_116;

#[test]
fn import_writes_the_containers_trace_and_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("falco_psp_run_as_user_0_container");
    let out = run_import(dir.path(), &[capture.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without --container: the only container (the host's processes are not a container).
    let profiles = dir.path().join("profiles/hopeful_taussig");
    let trace = read_json(&profiles.join("trace.json"));
    assert_eq!(trace["schema"], "seccomp-refine.trace/1");
    assert_eq!(trace["source"], "scap");
    assert_eq!(trace["arch"], "x86_64");
    let target = &trace["target"];
    assert_eq!(target["container_id"], PSP_ID);
    assert_eq!(target["container_name"], "hopeful_taussig");
    assert_eq!(target["image"], "nginx");
    assert_eq!(target["command"], serde_json::json!(["/bin/bash"]));
    assert_eq!(target["capture"], capture.display().to_string());
    assert_eq!(trace["started_at_unix_ns"], PSP_START);
    // The golden set plus what sysdig's category filter hid (ioctl, read), the calls seen only
    // entering (exit_group, rt_sigreturn) and pipe2, which this driver reported as pipe.
    let mut expected: Vec<String> = golden_counts("falco_psp_run_as_user_0_container")
        .into_keys()
        .filter(|(id, _)| id == "697956520d89")
        .map(|(_, name)| name)
        .collect();
    expected.extend(strings(&["ioctl", "read", "exit_group", "rt_sigreturn", "pipe2"]));
    expected.sort();
    let phases = &trace["phases"];
    assert_eq!(names(&phases["init"]["syscalls"]), expected);
    assert_eq!(phases["init"]["syscalls"]["pselect6"]["count"], 4, "3 exits and bash's last, unfinished call");
    assert_eq!(phases["init"]["syscalls"]["pipe2"]["count"], 0);
    assert_eq!(phases["init"]["syscalls"]["stat"]["failed"], 5, "bash's PATH search for ls: 5 × ENOENT");
    assert!(names(&phases["serving"]["syscalls"]).is_empty());
    assert!(names(&phases["runtime"]["syscalls"]).is_empty(), "a capture has no runc cut");
    let executables: Vec<(String, u64, u64)> = trace["executables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| {
            (
                file["path"].as_str().unwrap().to_owned(),
                file["pid"].as_u64().unwrap(),
                file["first_seen_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    // bash was running before the capture (process list); ls is the golden exec.
    assert_eq!(
        executables,
        [("/bin/bash".to_owned(), 25754, 0), ("/bin/ls".to_owned(), 32052, PSP_LS_EXEC - PSP_START)]
    );
    let libraries: Vec<&str> =
        trace["libraries"].as_array().unwrap().iter().map(|file| file["path"].as_str().unwrap()).collect();
    assert_eq!(libraries.len(), 5);
    assert!(trace["libraries"].as_array().unwrap().iter().all(|file| file["pid"] == 32052 && file["comm"] == "ls"));
    let marker = &trace["phase_marker"];
    assert_eq!((marker["spec"].as_str(), marker["fired"].as_bool()), (Some("auto"), Some(false)));
    assert!(
        marker["detail"].as_str().unwrap().contains("no accept, accept4, epoll_wait or epoll_pwait after a listen")
    );
    assert_eq!(trace["lost_events"], 0);
    assert_eq!(trace["complete"], false, "bash was already running: the container's start is not in the capture");
    let warnings = trace["warnings"].to_string();
    for expected in
        ["already running when the capture started (bash 25754)", "reports pipe2 as pipe", "ELF interpreter"]
    {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
    assert!(stderr(&out).contains("warning: 1 processes were already running"), "{}", stderr(&out));
    let init = read_json(&profiles.join("seccomp-init.json"));
    let allowed = init["syscalls"][0]["names"].to_string();
    for name in ["pipe2", "ioctl", "execve", "exit_group", "getdents", "rt_sigreturn"] {
        assert!(allowed.contains(&format!("\"{name}\"")), "{name} not allowed: {allowed}");
    }
    assert!(profiles.join("seccomp.json").is_file() && profiles.join("seccomp-serving.json").is_file());
    assert!(stdout(&out).contains("hopeful_taussig: 35 syscalls in init, 0 in serving"), "{}", stdout(&out));
}

#[test]
fn containers_are_chosen_by_id_name_or_host() {
    let capture = fixture("falco_psp_run_as_user_0_container");
    for (wanted, id) in
        [("697956520d89", Some(PSP_ID)), (PSP_ID, Some(PSP_ID)), ("hopeful_taussig", Some(PSP_ID)), ("host", None)]
    {
        let dir = tempfile::tempdir().unwrap();
        let out = run_import(
            dir.path(),
            &[arg("--container"), arg(wanted), capture.as_os_str(), arg("-o"), dir.path().as_os_str()],
        );
        assert!(out.status.success(), "{wanted}: {}", stderr(&out));
        let trace = read_json(&dir.path().join("trace.json"));
        assert_eq!(trace["target"]["container_id"].as_str(), id, "{wanted}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run_import(dir.path(), &[arg("--container"), arg("nosuch"), capture.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("697956520d89  hopeful_taussig") && err.contains("\n  host "),
        "the choices are listed: {err}"
    );
    assert_eq!(
        err.lines().last().unwrap(),
        format!(
            "seccomp-refine: error: no container `nosuch` made a syscall in {}; choose one with --container ID|NAME",
            capture.display()
        )
    );
    assert!(!dir.path().join("profiles").exists());
}

/// Two captures one after the other are one valid stream (a second section header): its two
/// containers make `--container` necessary, and each imports as it does alone.
#[test]
fn several_containers_need_a_choice_and_sections_concatenate() {
    let dir = tempfile::tempdir().unwrap();
    let joined = dir.path().join("joined.scap");
    let raw = [decompressed("falco_psp_run_as_user_0_container"), decompressed("synthetic_modern_exit_only")].concat();
    std::fs::write(&joined, raw).unwrap();
    let out = run_import(dir.path(), &[joined.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("697956520d89  hopeful_taussig") && err.contains("3c5d0b7e1f2a  synthetic_ctr"), "{err}");
    assert!(err.ends_with("holds several containers; choose one with --container ID|NAME\n"), "{err}");
    let alone = dir.path().join("alone");
    let together = dir.path().join("together");
    let synthetic = fixture("synthetic_modern_exit_only");
    assert!(run_import(dir.path(), &[synthetic.as_os_str(), arg("-o"), alone.as_os_str()]).status.success());
    let out = run_import(
        dir.path(),
        &[arg("--container"), arg("synthetic_ctr"), joined.as_os_str(), arg("-o"), together.as_os_str()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (alone, together) = (read_json(&alone.join("trace.json")), read_json(&together.join("trace.json")));
    for key in ["phases", "executables", "libraries", "target"] {
        if key == "target" {
            assert_eq!(alone[key]["container_id"], together[key]["container_id"]);
        } else {
            assert_eq!(alone[key], together[key], "{key}");
        }
    }
}

/// The exit-only layout of libs ≥ 0.22 (synthetic; see SOURCES.md), field by field.
#[test]
fn exit_only_capture_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("synthetic_modern_exit_only");
    let out = run_import(dir.path(), &[capture.as_os_str(), arg("-o"), dir.path().as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    let target = &trace["target"];
    assert_eq!(target["container_id"], "3c5d0b7e1f2a4b6c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e");
    // From the ASYNCEVENT "container" (u32 parameter lengths in an EV_V2_LARGE block).
    assert_eq!(target["container_name"], "synthetic_ctr");
    assert_eq!(target["image"], "busybox:latest");
    // The container's init (vpid 1) exec'd `ls -l /`.
    assert_eq!(target["command"], serde_json::json!(["ls", "-l", "/"]));
    assert_eq!(trace["started_at_unix_ns"], 1_700_000_001_000_001_000u64);
    assert_eq!(trace["duration_ns"], 4000);
    let init = &trace["phases"]["init"]["syscalls"];
    // EXECVE_19_X, OPENAT_2_X, MMAP_X, GENERIC_X (arch_prctl), CLOSE_X; PROCEXIT_1_E is no syscall.
    for (name, first_seen) in [("execve", 0), ("openat", 1000), ("mmap", 2000), ("arch_prctl", 3000), ("close", 4000)] {
        assert_eq!(init[name], serde_json::json!({"count": 1, "first_seen_ns": first_seen}), "{name}");
    }
    assert_eq!(names(init).len(), 5);
    // The path is EXECVE_19_X's trusted_exepath, not the process list's /usr/bin/dash.
    assert_eq!(
        trace["executables"],
        serde_json::json!([{"path": "/usr/bin/ls", "phase": "init", "pid": 200, "first_seen_ns": 0, "comm": "ls"}])
    );
    // MMAP_X carries prot (PROT_EXEC) and the fd that OPENAT_2_X opened.
    assert_eq!(
        trace["libraries"],
        serde_json::json!([{"path": "/lib/x86_64-linux-gnu/libc.so.6", "phase": "init", "pid": 200, "first_seen_ns": 2000, "comm": "ls"}])
    );
    assert_eq!(trace["lost_events"], 0);
    assert_eq!(trace["complete"], true);
    assert_eq!(trace["phase_marker"]["fired"], false);
    // The exit carries mmap's prot: its PROT_EXEC bit is the argument value the trace records.
    assert_eq!(trace["phases"]["init"]["args"], serde_json::json!({"mmap": {"values": {"2": [4]}}}));
}

/// Exits written before libs 0.22 lack the arguments: the values come from their enters. A
/// syscall the driver then reported through the generic event, which carries no arguments, stays
/// unknown (incomplete).
#[test]
fn an_old_capture_gives_the_values_its_enters_carry_and_generic_events_leave_them_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("falco_psp_run_as_user_0_container");
    let out = run_import(dir.path(), &[capture.as_os_str(), arg("-o"), dir.path().as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    let args = &trace["phases"]["init"]["args"];
    // Libraries mapped executable (exec_mmaps.txt lists them) and data mapped without PROT_EXEC.
    assert_eq!(args["mmap"], serde_json::json!({"values": {"2": [0, 4]}}));
    // The terminal ioctls of `ls` and the shell: TCGETS, TCSETSW, TIOCGPGRP, TIOCSPGRP, TIOCGWINSZ, TIOCSWINSZ.
    assert_eq!(args["ioctl"], serde_json::json!({"values": {"1": [0x5401, 0x5403, 0x540f, 0x5410, 0x5413, 0x5414]}}));
    assert!(trace["phases"]["init"]["syscalls"]["mprotect"].is_object());
    assert_eq!(args["mprotect"], serde_json::json!({"values": {}, "overflow": true}), "generic events");
}

#[test]
fn syscall_marker_splits_the_stream_at_the_first_call() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("falco_psp_run_as_user_0_container");
    let args = [arg("--phase-marker"), arg("syscall:execve"), capture.as_os_str(), arg("-o"), dir.path().as_os_str()];
    let out = run_import(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    let marker = &trace["phase_marker"];
    assert_eq!(marker["spec"], "syscall:execve");
    assert_eq!((marker["fired"].as_bool(), marker["pid"].as_u64()), (Some(true), Some(32052)));
    assert_eq!(marker["at_ns"], PSP_LS_EXEC - PSP_START);
    // Exits before ls's execve returned (bash reading the command line and forking), and after,
    // as `sysdig "container.id=697956520d89 and evt.dir=<"` splits them at that time; plus pipe2
    // (folded) before, and the lone enters (exit_group, bash's pselect6, rt_sigreturn) after.
    let init = strings(&[
        "access",
        "clone",
        "close",
        "getegid",
        "geteuid",
        "getgid",
        "getpid",
        "getuid",
        "ioctl",
        "pipe",
        "pipe2",
        "pselect6",
        "read",
        "rt_sigaction",
        "rt_sigprocmask",
        "select",
        "setpgid",
        "stat",
        "write",
    ]);
    let serving = strings(&[
        "access",
        "arch_prctl",
        "brk",
        "close",
        "execve",
        "fstat",
        "getdents",
        "getrlimit",
        "ioctl",
        "mmap",
        "mprotect",
        "munmap",
        "open",
        "read",
        "rt_sigaction",
        "rt_sigprocmask",
        "set_robust_list",
        "set_tid_address",
        "statfs",
        "wait4",
        "write",
        "exit_group",
        "pselect6",
        "rt_sigreturn",
    ]);
    assert_eq!(names(&trace["phases"]["init"]["syscalls"]), init);
    assert_eq!(names(&trace["phases"]["serving"]["syscalls"]), serving);
    assert_eq!(trace["executables"][0]["phase"], "init");
    assert_eq!(trace["executables"][1]["phase"], "serving");
    assert!(trace["libraries"].as_array().unwrap().iter().all(|file| file["phase"] == "serving"));
    let serving_profile = read_json(&dir.path().join("seccomp-serving.json"))["syscalls"][0]["names"].to_string();
    assert!(
        serving_profile.contains("\"arch_prctl\"") && !serving_profile.contains("\"setpgid\""),
        "{serving_profile}"
    );
}

#[test]
fn after_marker_fires_on_stream_time_or_says_why_not() {
    let capture = fixture("falco_psp_run_as_user_0_container");
    let dir = tempfile::tempdir().unwrap();
    let out = run_import(
        dir.path(),
        &[arg("--phase-marker"), arg("after:2ms"), capture.as_os_str(), arg("-o"), dir.path().as_os_str()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    assert_eq!(
        (trace["phase_marker"]["fired"].as_bool(), trace["phase_marker"]["at_ns"].as_u64()),
        (Some(true), Some(2_000_000))
    );
    assert!(trace["phases"]["serving"]["syscalls"]["execve"]["count"] == 1);
    let out = run_import(
        dir.path(),
        &[
            arg("--force"),
            arg("--phase-marker"),
            arg("after:1h"),
            capture.as_os_str(),
            arg("-o"),
            dir.path().as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&dir.path().join("trace.json"));
    assert_eq!(trace["phase_marker"]["fired"], false);
    assert!(
        trace["phase_marker"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("did not fire: the capture ends 10ms 66us 856ns after")
    );
    assert!(names(&trace["phases"]["serving"]["syscalls"]).is_empty());
}

#[test]
fn markers_a_capture_cannot_show_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("libs_sample");
    let out =
        run_import(dir.path(), &[arg("--phase-marker"), arg("symbol:ngx_worker_process_cycle"), capture.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "seccomp-refine: error: --phase-marker: `symbol:ngx_worker_process_cycle` cannot work on a capture: a capture records syscalls, not function calls; use syscall:NAME, after:DURATION or auto\n"
    );
}

/// The capture's bytes without gzip.
fn decompressed(name: &str) -> Vec<u8> {
    let raw = std::fs::read(fixture(name)).unwrap();
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return raw;
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut bytes).unwrap();
    bytes
}

/// (offset, type, length) of every block, walked independently of the reader under test.
fn blocks(bytes: &[u8]) -> Vec<(usize, u32, u32)> {
    let mut blocks = Vec::new();
    let mut offset = 0;
    while offset + 8 <= bytes.len() {
        let kind = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
        let length = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap());
        blocks.push((offset, kind, length));
        offset += length as usize;
    }
    blocks
}

const EVENT_BLOCKS: [(u32, &str); 3] = [(0x204, "EV"), (0x216, "EV_V2"), (0x221, "EV_V2_LARGE")];

/// Damaged copies of `name`, each with the one-line error it must give: cut inside an event block
/// halfway through the file, that block's length with its lowest bit flipped, and its trailer off by 4.
fn damaged_copies(name: &str) -> Vec<(&'static str, Vec<u8>, String)> {
    let bytes = decompressed(name);
    let events: Vec<(usize, u32, u32)> =
        blocks(&bytes).into_iter().filter(|(_, kind, _)| EVENT_BLOCKS.iter().any(|(id, _)| id == kind)).collect();
    let (offset, kind, length) = events[events.len() / 2];
    let block = format!("{} block (0x{kind:x})", EVENT_BLOCKS.iter().find(|(id, _)| *id == kind).unwrap().1);
    let cut = bytes[..offset + 14].to_vec();
    let mut flipped = bytes.clone();
    flipped[offset + 4] ^= 1;
    let mut trailer = bytes.clone();
    let end = offset + length as usize;
    trailer[end - 4..end].copy_from_slice(&(length + 4).to_le_bytes());
    vec![
        (
            "cut",
            cut,
            format!("byte {offset}: {block}: the file ends 14 bytes into a {length}-byte block (truncated capture)"),
        ),
        (
            "flipped",
            flipped,
            format!(
                "byte {offset}: {block}: block length {} is not a multiple of 4 (corrupt length field)",
                length ^ 1
            ),
        ),
        (
            "trailer",
            trailer,
            format!(
                "byte {offset}: {block}: block length {length} in the header but {} in the trailer (corrupt block)",
                length + 4
            ),
        ),
    ]
}

const FIXTURES: [&str; 4] =
    ["falco_psp_run_as_user_0_container", "falco_cat_write", "libs_sample", "synthetic_modern_exit_only"];

#[test]
fn damaged_captures_are_refused_with_offset_and_block() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        for (damage, bytes, expected) in damaged_copies(name) {
            let path = dir.path().join(format!("{name}.{damage}.scap"));
            std::fs::write(&path, bytes).unwrap();
            let out = run_import(dir.path(), &[path.as_os_str()]);
            assert_eq!(out.status.code(), Some(2), "{name} {damage}");
            assert_eq!(
                stderr(&out),
                format!(
                    "seccomp-refine: error: cannot import {}: {expected} (--partial imports what comes before the damage)\n",
                    path.display()
                ),
                "{name} {damage}"
            );
            assert!(!dir.path().join("profiles").exists(), "{name} {damage}: nothing is written");
        }
    }
}

#[test]
fn partial_imports_keep_what_came_before_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let full = dir.path().join(format!("{name}.full"));
        let out = run_import(
            dir.path(),
            &[arg("--container"), arg("host"), fixture(name).as_os_str(), arg("-o"), full.as_os_str()],
        );
        let host_only = out.status.success();
        for (damage, bytes, expected) in damaged_copies(name) {
            let path = dir.path().join(format!("{name}.{damage}.scap"));
            std::fs::write(&path, bytes).unwrap();
            let partial = dir.path().join(format!("{name}.{damage}"));
            let mut args = vec![arg("--partial"), path.as_os_str(), arg("-o"), partial.as_os_str()];
            if host_only {
                args.extend([arg("--container"), arg("host")]);
            }
            let out = run_import(dir.path(), &args);
            assert!(out.status.success(), "{name} {damage}: {}", stderr(&out));
            let trace = read_json(&partial.join("trace.json"));
            assert_eq!(trace["complete"], false, "{name} {damage}");
            let warning = format!("the capture is damaged at {expected}; this trace holds only the events before it");
            assert_eq!(trace["warnings"][0], warning, "{name} {damage}");
            assert!(stderr(&out).contains(&warning), "{name} {damage}");
            assert!(partial.join("seccomp.json").is_file());
        }
    }
}

#[test]
fn damage_in_a_gzip_capture_is_located_in_the_decompressed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cut, expected) = damaged_copies("falco_psp_run_as_user_0_container").remove(0);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &cut).unwrap();
    let path = dir.path().join("cut.scap.gz");
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();
    let out = run_import(dir.path(), &[path.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    // A gzip stream that itself stops short.
    let compressed = std::fs::read(fixture("falco_psp_run_as_user_0_container")).unwrap();
    std::fs::write(&path, &compressed[..compressed.len() / 2]).unwrap();
    let out = run_import(dir.path(), &[path.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read the capture: incomplete deflate stream"), "{}", stderr(&out));
}

#[test]
fn files_that_are_not_captures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut gzip_text = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip_text, b"{\"not\": \"a capture\"}").unwrap();
    for (bytes, expected) in [
        (b"".to_vec(), "byte 0: block header: the file is empty, not a .scap capture"),
        (b"hello\n".to_vec(), "byte 0: block header: not a .scap capture: 6 bytes, fewer than one block header"),
        (
            b"#!/bin/sh\necho hello\n".to_vec(),
            "byte 0: unknown block (0x622f2123): not a .scap capture: a capture starts with a section header block (0x0a0d0d0a), this file with 0x622f2123",
        ),
        (gzip_text.finish().unwrap(), "byte 0: unknown block (0x6f6e227b): not a .scap capture"),
        (
            decompressed("libs_sample")[..28].to_vec(),
            "byte 0: stream: the capture holds no events (it ends after its headers)",
        ),
    ] {
        let path = dir.path().join("input.scap");
        std::fs::write(&path, bytes).unwrap();
        let out = run_import(dir.path(), &[path.as_os_str()]);
        assert_eq!(out.status.code(), Some(2), "{expected}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("seccomp-refine: error: cannot import {}: {expected}", path.display())),
            "{err}"
        );
    }
}

/// Random damage anywhere in the real captures: the reader returns an error or a result, never
/// panics, and whatever it returns can be turned into a trace.
#[test]
fn random_damage_never_panics() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    for name in FIXTURES {
        let bytes = decompressed(name);
        for round in 0..40 {
            let mut damaged = bytes.clone();
            if round % 4 == 0 {
                damaged.truncate(random(bytes.len()));
            } else {
                for _ in 0..1 + random(8) {
                    let at = random(damaged.len());
                    damaged[at] = random(256) as u8;
                }
            }
            let plan = Plan::new(&MarkerSpec::Auto).unwrap();
            if let Ok(capture) = scap::read(std::io::Cursor::new(damaged), plan, scap::Focus::All) {
                for aggregate in capture.aggregates() {
                    capture.trace(aggregate, name);
                }
            }
        }
    }
}

#[test]
fn the_problem_names_the_damage() {
    let plan = Plan::new(&MarkerSpec::Auto).unwrap();
    let bytes = damaged_copies("libs_sample").remove(1).1;
    let capture = scap::read(std::io::Cursor::new(bytes), plan, scap::Focus::All).unwrap();
    let damage = capture.damage.expect("damage after the first events is reported with the result");
    assert!(matches!(damage.problem, Problem::BadLength { why: "not a multiple of 4", .. }), "{damage}");
}

/// An EV_V2 block holding one event (u16 parameter lengths).
fn event_block(kind: u16, tid: u64, ts: u64, params: &[&[u8]]) -> Vec<u8> {
    let length = 26 + 2 * params.len() + params.iter().map(|param| param.len()).sum::<usize>();
    let mut body = vec![0u8, 0];
    body.extend(ts.to_le_bytes());
    body.extend(tid.to_le_bytes());
    body.extend((length as u32).to_le_bytes());
    body.extend(kind.to_le_bytes());
    body.extend((params.len() as u32).to_le_bytes());
    for param in params {
        body.extend((param.len() as u16).to_le_bytes());
    }
    for param in params {
        body.extend(*param);
    }
    framed(0x216, &body)
}

fn framed(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()).next_multiple_of(4) as u32;
    let mut block = [kind.to_le_bytes(), total.to_le_bytes()].concat();
    block.extend(body);
    block.resize(total as usize - 4, 0);
    block.extend(total.to_le_bytes());
    block
}

/// The synthetic capture with `extra` blocks before its last event (ls's procexit), or with the
/// blocks `keep` rejects left out.
fn synthetic_with(extra: &[Vec<u8>], keep: impl Fn(u32, &[u8]) -> bool) -> Vec<u8> {
    let bytes = decompressed("synthetic_modern_exit_only");
    let all = blocks(&bytes);
    let mut out = Vec::new();
    for (index, &(offset, kind, length)) in all.iter().enumerate() {
        if index == all.len() - 1 {
            extra.iter().for_each(|block| out.extend(block));
        }
        let block = &bytes[offset..offset + length as usize];
        if keep(kind, block) {
            out.extend(block);
        }
    }
    out
}

/// Imports `bytes` (written to a file) and returns the trace and stderr.
fn import_bytes(bytes: &[u8], extra_args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.scap");
    std::fs::write(&path, bytes).unwrap();
    let mut args = vec![path.as_os_str(), arg("-o"), dir.path().as_os_str()];
    args.extend(extra_args.iter().map(|&text| arg(text)));
    let out = run_import(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    (read_json(&dir.path().join("trace.json")), stderr(&out))
}

const LS_TID: u64 = 200;
const AFTER_CLOSE: u64 = 1_700_000_001_000_005_000;

#[test]
fn auto_marker_fires_on_the_first_accept_after_a_listen() {
    let listen =
        event_block(25, LS_TID, AFTER_CLOSE + 100, &[&0i64.to_le_bytes(), &3i64.to_le_bytes(), &128i32.to_le_bytes()]);
    let accept = event_block(389, LS_TID, AFTER_CLOSE + 200, &[&4i64.to_le_bytes()]);
    let (trace, _) = import_bytes(&synthetic_with(&[listen, accept], |_, _| true), &[]);
    let marker = &trace["phase_marker"];
    assert_eq!(
        (marker["fired"].as_bool(), marker["pid"].as_u64(), marker["at_ns"].as_u64()),
        (Some(true), Some(200), Some(4200))
    );
    assert!(marker["detail"].as_str().unwrap().starts_with("auto on a capture: the first accept"));
    assert_eq!(names(&trace["phases"]["serving"]["syscalls"]), strings(&["accept4"]));
    assert!(trace["phases"]["init"]["syscalls"]["listen"]["count"] == 1);
}

#[test]
fn drops_unknown_events_and_unknown_blocks_are_reported() {
    let ratio = 8u32.to_le_bytes();
    let extra = [
        event_block(148, u64::MAX, AFTER_CLOSE + 100, &[&ratio]),
        event_block(149, u64::MAX, AFTER_CLOSE + 200, &[&ratio]),
        event_block(500, LS_TID, AFTER_CLOSE + 300, &[]),
        framed(0x7777, b"a block from the future"),
    ];
    let (trace, err) = import_bytes(&synthetic_with(&extra, |_, _| true), &[]);
    assert_eq!(trace["lost_events"], 2);
    assert_eq!(trace["complete"], false);
    let drops =
        "the capture holds 2 drop events: the driver discarded events in sampling windows, so syscalls may be missing";
    assert_eq!(trace["warnings"][0], drops);
    assert!(err.contains(&format!("seccomp-refine: warning: {drops}")), "{err}");
    let warnings = trace["warnings"].to_string();
    assert!(warnings.contains("1 events of types newer than this reader (500) were skipped"), "{warnings}");
    assert!(warnings.contains("1 blocks of unknown types were skipped"), "{warnings}");
    assert_eq!(names(&trace["phases"]["init"]["syscalls"]).len(), 5, "the rest is read as before");
}

#[test]
fn a_capture_without_read_write_or_mmap_looks_filtered() {
    let is_mmap = |block: &[u8]| block.len() > 32 && u16::from_le_bytes([block[30], block[31]]) == 161;
    let (trace, _) = import_bytes(&synthetic_with(&[], |_, block| !is_mmap(block)), &[]);
    assert!(
        trace["warnings"].to_string().contains("no read, write or mmap at all: it looks filtered"),
        "{}",
        trace["warnings"]
    );
    let (trace, _) = import_bytes(&decompressed("synthetic_modern_exit_only"), &[]);
    assert!(!trace["warnings"].to_string().contains("looks filtered"));
}

/// Section-header options, and event blocks with dump flags (EVF_V2) whose events a capture filter
/// kept only for state: both read as the plain capture does.
#[test]
fn section_options_and_state_only_events_change_nothing() {
    let bytes = decompressed("synthetic_modern_exit_only");
    let (plain, _) = import_bytes(&bytes, &[]);
    let mut with_options = bytes[8..24].to_vec(); // magic, version, section length
    with_options.extend([1, 0, 8, 0]); // opt_comment, 8 bytes
    with_options.extend(b"comment!");
    let mut rewritten = framed(0x0A0D_0D0A, &with_options);
    for (offset, kind, length) in blocks(&bytes).into_iter().skip(1) {
        let block = &bytes[offset..offset + length as usize];
        if kind == 0x216 {
            // cpu id, then dump flags SCAP_DF_STATE_ONLY, then the event.
            let body = [&block[8..10], &1u32.to_le_bytes()[..], &block[10..block.len() - 4]].concat();
            rewritten.extend(framed(0x217, &body));
        } else {
            rewritten.extend(block);
        }
    }
    let (rewritten, _) = import_bytes(&rewritten, &[]);
    for key in ["phases", "executables", "libraries", "phase_marker", "complete"] {
        assert_eq!(plain[key], rewritten[key], "{key}");
    }
    assert_eq!(plain["target"]["container_name"], rewritten["target"]["container_name"]);
    let warnings = rewritten["warnings"].to_string();
    assert!(
        warnings.contains("6 events are marked state-only: the capture was written through a filter"),
        "{warnings}"
    );
}

#[test]
fn import_adds_the_static_analysis_of_the_named_images_files() {
    require!(crate::util::image_missing("nginx:latest"));
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("falco_psp_run_as_user_0_container");
    let args = ["import", "--image", "nginx:latest", "-o"];
    let out = output(seccomp_refine().current_dir(dir.path()).args(args).arg(dir.path()).arg(&capture));
    assert!(out.status.success(), "{}", stderr(&out));
    let analysis = read_json(&dir.path().join("analysis.json"));
    let programs = analysis["static"]["programs"].as_array().unwrap();
    assert!(programs.iter().any(|program| program["path"] == "/bin/ls"), "{programs:?}");
    // Each phase allows what the capture saw and what `ls` can reach: more than it was seen doing.
    let trace = read_json(&dir.path().join("trace.json"));
    let init = read_json(&dir.path().join("seccomp-init.json"))["syscalls"][0]["names"].clone();
    let init: Vec<&str> = init.as_array().unwrap().iter().map(|name| name.as_str().unwrap()).collect();
    for observed in names(&trace["phases"]["init"]["syscalls"]) {
        assert!(init.contains(&observed.as_str()), "{observed} was observed but is not allowed");
    }
    let reachable_only = analysis["phases"]["init"]
        .as_object()
        .unwrap()
        .values()
        .filter(|evidence| evidence["observed"].is_null() && evidence["reachable"].is_object())
        .count();
    assert!(reachable_only > 0, "static analysis added nothing to what the capture saw");
}

#[test]
fn import_without_the_containers_files_skips_static_analysis_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("libs_sample");
    let out = output(seccomp_refine().current_dir(dir.path()).args(["import", "-o"]).arg(dir.path()).arg(&capture));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("static analysis skipped: the capture names no image"), "{}", stderr(&out));
    assert!(!dir.path().join("analysis.json").exists());
    assert!(dir.path().join("seccomp.json").exists());
}
