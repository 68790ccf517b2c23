//! Argument-level rules from static evidence: a C program whose `socket` arguments are
//! constants or chosen by a branch gets rules naming exactly those values; its `prctl` option,
//! read from the command line, stays name-only; the serving filter `enforce` compiles from its
//! profile denies other socket families and `clone(CLONE_NEWUSER)` in a real kernel.
//!
//! And from dynamic evidence: the live tracer records exactly the values a traced program passes,
//! reports more distinct values than it keeps as an overflow (name-only), and nginx's profiles
//! narrow syscalls its trace observed and serve the verify workload with no denial.

use std::collections::BTreeSet;

use crate::static_analysis::{analyze, compile, missing_tool, trace_of};
use crate::tracer::tracer_missing;
use seccomp_refine::enforce::{Action, Filter};

use crate::util::{image_missing, output, read_json, seccomp_refine, stderr, stdout};

/// `serve` makes every call; `main` only reaches it. `socket`'s domain is a constant at one call
/// and one of two at the other (a branch), its type a constant with flags that the rule masks
/// off; `prctl`'s option comes from the input; `kill`'s signal is a constant; `fork` clones
/// without namespace flags; `set_option` passes its own argument as `setsockopt`'s option name
/// and is called directly with a constant, but also through a pointer with the input.
const ARGS_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((noinline)) int set_option(int fd, int name) {
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, name, &one, sizeof one);
}
static int (*volatile option_setter)(int, int) = set_option;

__attribute__((noinline)) void serve(int argc, char **argv) {
    int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int family = AF_UNIX;
    if (argc > 2) {
        family = AF_INET6;
        puts("inet6");
    }
    int b = socket(family, SOCK_STREAM, 0);
    prctl(atoi(argv[1]), 0, 0, 0, 0);
    kill(getpid(), SIGUSR2);
    set_option(a, SO_REUSEADDR);
    option_setter(b, argc);
    if (argc > 3 && fork() == 0) _exit(0);
    close(a);
    close(b);
}

int main(int argc, char **argv) {
    signal(SIGUSR2, SIG_IGN);
    if (argc > 1) serve(argc, argv);
    return 0;
}
"#;

/// The values `analysis.json` gives for argument `index` of `name` in `phase`, or `None` when
/// the syscall is reachable without known values.
fn values(analysis: &serde_json::Value, phase: &str, name: &str, index: u8) -> Option<Vec<u64>> {
    let reachable = &analysis["phases"][phase][name]["reachable"];
    assert!(reachable.is_object(), "{name} is not reachable in {phase}");
    let args = reachable["args"][index.to_string()].as_object()?;
    let mut values: Vec<u64> = args.keys().map(|value| value.parse().unwrap()).collect();
    values.sort_unstable();
    Some(values)
}

#[test]
fn constant_and_branch_chosen_arguments_give_exact_rules_and_input_stays_name_only() {
    require!(missing_tool("gcc"));
    for (name, flags) in [("dynamic", &[][..]), ("static", &["-static"][..])] {
        let dir = tempfile::tempdir().unwrap();
        let program = compile(dir.path(), name, ARGS_C, flags);
        let trace = trace_of(dir.path(), program.to_str().unwrap(), None);
        let analysis = analyze(&trace, &["--rootfs", "/", "--serving-entry", "serve"]);
        let (af_unix, af_inet, af_inet6, sock_stream) = (1, 2, 10, 1);
        assert_eq!(values(&analysis, "serving", "socket", 0), Some(vec![af_unix, af_inet, af_inet6]), "{name}");
        assert_eq!(values(&analysis, "serving", "socket", 1), Some(vec![sock_stream]), "{name}: flags are masked off");
        assert_eq!(values(&analysis, "serving", "kill", 1), Some(vec![12]), "{name}: SIGUSR2");
        assert_eq!(values(&analysis, "serving", "prctl", 0), None, "{name}: an option from the input is unknown");
        assert_eq!(values(&analysis, "serving", "setsockopt", 2), None, "{name}: a wrapper called through a pointer");
        let profile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("seccomp-serving.json")).unwrap()).unwrap();
        let rules = profile["syscalls"].as_array().unwrap();
        let socket: Vec<&serde_json::Value> =
            rules.iter().filter(|rule| rule["names"] == serde_json::json!(["socket"])).collect();
        assert_eq!(socket.len(), 3, "{name}: one rule per domain: {socket:?}");
        for rule in &socket {
            assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
            let args = rule["args"].as_array().unwrap();
            assert_eq!(args.len(), 2, "{name}: domain and type: {rule}");
            assert_eq!(
                args[1],
                serde_json::json!({"index": 1, "value": 15, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"})
            );
        }
        let unconditional: Vec<&str> = rules
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW" && rule.get("args").is_none())
            .flat_map(|rule| rule["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()))
            .collect();
        assert!(unconditional.contains(&"prctl"), "{name}: prctl stays name-only");
        assert!(!unconditional.contains(&"socket") && !unconditional.contains(&"kill"), "{name}");
        let explained = stdout(&output(seccomp_refine().args(["explain", "socket"]).arg(dir.path())));
        assert!(
            explained.contains("serving: socket argument 0 (domain, bits 0xffffffff) only 0x1 AF_UNIX ("),
            "{explained}"
        );
        let explained = stdout(&output(seccomp_refine().args(["explain", "prctl"]).arg(dir.path())));
        assert!(explained.contains("serving: prctl allowed with any arguments: some reachable site"), "{explained}");
        let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        let serving_row = report.lines().find(|line| line.starts_with("| serving |")).unwrap();
        let narrowed = serving_row.rsplit('|').nth(1).unwrap();
        assert!(
            narrowed.contains("kill") && narrowed.contains("socket") && !narrowed.contains("prctl"),
            "{serving_row}"
        );
        // The name-only profile of the same program differs from this one in socket's and kill's rules.
        let plain = tempfile::tempdir().unwrap();
        let names: Vec<&str> = rules
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()))
            .collect();
        let plain_profile = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]});
        std::fs::write(plain.path().join("seccomp-serving.json"), plain_profile.to_string()).unwrap();
        let diff = output(
            seccomp_refine()
                .arg("diff")
                .arg(plain.path().join("seccomp-serving.json"))
                .arg(dir.path().join("seccomp-serving.json")),
        );
        assert_eq!(diff.status.code(), Some(1), "{}", stderr(&diff));
        let diff = stdout(&diff);
        assert!(diff.contains("  ~ kill: any arguments → (arg1&0xffffffff==0xc)"), "{diff}");
        assert!(diff.contains("  ~ socket: any arguments → (arg0&0xffffffff==0x1 and arg1&0xf==0x1) or ("), "{diff}");
    }
}

#[test]
fn the_serving_filter_from_the_analysis_denies_other_socket_families_and_new_namespaces() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    let program = compile(dir.path(), "args", ARGS_C, &[]);
    let trace = trace_of(dir.path(), program.to_str().unwrap(), None);
    let analysis = analyze(&trace, &["--rootfs", "/", "--serving-entry", "serve"]);
    assert_eq!(values(&analysis, "serving", "clone", 0), Some(vec![0]), "fork clones without namespace flags");
    let filter = Filter::from_profile(&dir.path().join("seccomp-serving.json"), Action::Errno).unwrap();
    let prog = libc::sock_fprog { len: filter.insns.len() as u16, filter: filter.insns.as_ptr().cast_mut() };
    // SAFETY: the child makes raw syscalls only and leaves with _exit; the parent waits for it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; `prog` outlives the calls.
        unsafe {
            libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if libc::syscall(libc::SYS_seccomp, 1, 0, &prog) != 0 {
                libc::_exit(3);
            }
            let denied = |result: libc::c_long| result == -1 && *libc::__errno_location() == libc::ENOSYS;
            let inet = libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            let packet = denied(libc::syscall(libc::SYS_socket, libc::AF_PACKET, libc::SOCK_RAW, 0));
            let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
            let clone = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
            if clone == 0 {
                libc::_exit(0);
            }
            let user_namespace = denied(clone);
            libc::_exit(if inet < 0 {
                4
            } else if !packet {
                5
            } else if !user_namespace {
                6
            } else {
                0
            });
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let what = [
        "",
        "",
        "",
        "seccomp refused the filter",
        "socket(AF_INET) was denied",
        "socket(AF_PACKET) ran",
        "clone(CLONE_NEWUSER) ran",
    ];
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    let code = libc::WEXITSTATUS(status) as usize;
    assert_eq!(code, 0, "{}", what.get(code).copied().unwrap_or("the child failed"));
}

/// `serve` (the serving entry) makes two sockets with constant arguments, then calls `fcntl` with
/// as many distinct (invalid, harmless) commands as its second argument says.
const OBSERVED_C: &str = r#"
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((noinline)) void serve(int commands) {
    close(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    close(socket(AF_UNIX, SOCK_DGRAM, 0));
    for (int i = 0; i < commands; i++) fcntl(0, 1000 + i);
}

int main(int argc, char **argv) {
    serve(atoi(argv[1]));
    return 0;
}
"#;

/// The values `trace.json` recorded for argument `index` of `name` in `phase`, and its overflow flag.
fn observed(trace: &serde_json::Value, phase: &str, name: &str, index: u8) -> (BTreeSet<u64>, bool) {
    let seen = &trace["phases"][phase]["args"][name];
    assert!(seen.is_object(), "no values of {name} in {phase}: {}", trace["phases"][phase]);
    let values =
        seen["values"][index.to_string()].as_array().map(|values| values.iter().map(|v| v.as_u64().unwrap()).collect());
    (values.unwrap_or_default(), seen["overflow"] == true)
}

#[test]
fn the_tracer_records_exactly_the_values_passed_and_an_overflow_keeps_the_name_only_rule() {
    require!(tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let program = compile(dir.path(), "observed", OBSERVED_C, &[]);
    let distinct = tracer_common::MAX_ARG_VALUES as u64 + 4;
    let out_dir = dir.path().join("out");
    let out = output(
        seccomp_refine()
            .args(["trace", "-o"])
            .arg(&out_dir)
            .args(["--exec", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .args(["--phase-marker", "symbol:serve", "--"])
            .arg(&program)
            .arg(distinct.to_string()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let trace = read_json(&out_dir.join("trace.json"));
    let (af_unix, af_inet, sock_stream, sock_dgram) = (1, 2, 1, 2);
    assert_eq!(observed(&trace, "serving", "socket", 0), (BTreeSet::from([af_unix, af_inet]), false));
    assert_eq!(
        observed(&trace, "serving", "socket", 1),
        (BTreeSet::from([sock_stream, sock_dgram]), false),
        "flags masked"
    );
    let (commands, overflow) = observed(&trace, "serving", "fcntl", 1);
    assert!(overflow, "{distinct} distinct commands overflow the bound");
    assert_eq!(commands.len() as u32, tracer_common::MAX_ARG_VALUES, "the first ones are kept");
    assert!(commands.iter().all(|command| (1000..1000 + distinct).contains(command)), "{commands:?}");
    // Observed and reachable with the same constants: narrowed, with the observed values as evidence.
    let profile = read_json(&out_dir.join("seccomp-serving.json"));
    let rules = profile["syscalls"].as_array().unwrap();
    let socket: Vec<&serde_json::Value> =
        rules.iter().filter(|rule| rule["names"] == serde_json::json!(["socket"])).collect();
    let allowed: BTreeSet<(u64, u64)> = socket
        .iter()
        .map(|rule| (rule["args"][0]["valueTwo"].as_u64().unwrap(), rule["args"][1]["valueTwo"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        allowed,
        BTreeSet::from([(af_inet, sock_stream), (af_inet, sock_dgram), (af_unix, sock_stream), (af_unix, sock_dgram)])
    );
    let unconditional: Vec<&str> = rules
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW" && rule.get("args").is_none())
        .flat_map(|rule| rule["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()))
        .collect();
    assert!(unconditional.contains(&"fcntl") && !unconditional.contains(&"socket"), "{unconditional:?}");
    let explained = stdout(&output(seccomp_refine().args(["explain", "socket"]).arg(&out_dir)));
    assert!(
        explained.contains("serving: socket argument 0 (domain) observed: 0x1 AF_UNIX, 0x2 AF_INET"),
        "{explained}"
    );
    assert!(
        explained.contains("serving: socket argument 0 (domain, bits 0xffffffff) only 0x1 AF_UNIX (observed; "),
        "{explained}"
    );
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    let (domains, types) = ("0x1 AF_UNIX, 0x2 AF_INET", "0x1 SOCK_STREAM, 0x2 SOCK_DGRAM");
    let row = format!(
        "| serving | `socket` | arg0 (domain) {domains}; arg1 (type (without flags)) {types} | arg0 {domains}; arg1 {types} |"
    );
    assert!(report.contains(&row), "{report}");
    let explained = stdout(&output(seccomp_refine().args(["explain", "fcntl"]).arg(&out_dir)));
    assert!(
        explained.contains("serving: fcntl allowed with any arguments: observed, and the trace does not know"),
        "{explained}"
    );
}

#[test]
fn nginx_profiles_narrow_what_its_trace_observed_and_verify_finds_no_denial() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let profiles = crate::enforce::nginx_profiles();
    let trace = read_json(&profiles.join("trace.json"));
    let analysis = read_json(&profiles.join("analysis.json"));
    // Every narrowed syscall the trace observed in a phase, by phase file.
    let mut narrowed_observed = Vec::new();
    for (phase, file) in [("init", "seccomp-init.json"), ("serving", "seccomp-serving.json")] {
        let profile = read_json(&profiles.join(file));
        for rule in profile["syscalls"].as_array().unwrap().iter().filter(|rule| rule.get("args").is_some()) {
            let name = rule["names"][0].as_str().unwrap();
            let evidence = &analysis["phases"][phase][name]["observed"];
            if evidence.is_object() {
                assert!(evidence["args"].is_object(), "{name} narrowed in {phase} without observed values: {evidence}");
                assert!(trace["phases"][phase]["args"][name].is_object(), "{name} in {phase}");
                narrowed_observed.push(format!("{phase} {name}"));
            }
        }
    }
    narrowed_observed.dedup();
    assert!(!narrowed_observed.is_empty(), "no observed syscall narrowed: {}", trace["phases"]);
    let json = profiles.join("narrowed.verify.json");
    let out = output(
        seccomp_refine()
            .args(["verify", "--force", "nginx:latest", "--enforce"])
            .arg(&profiles)
            .arg("--json")
            .arg(&json),
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let report = read_json(&json);
    let failing: Vec<&serde_json::Value> =
        report["denials"].as_array().unwrap().iter().filter(|denial| denial["fallback"].is_null()).collect();
    assert!(failing.is_empty(), "{narrowed_observed:?}: {failing:?}");
}
