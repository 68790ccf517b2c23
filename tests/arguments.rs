//! Argument-level rules from static evidence: a C program whose `socket` arguments are
//! constants or chosen by a branch gets rules naming exactly those values; its `prctl` option,
//! read from the command line, stays name-only; the serving filter `enforce` compiles from its
//! profile denies other socket families and `clone(CLONE_NEWUSER)` in a real kernel.

use crate::static_analysis::{analyze, compile, missing_tool, trace_of};
use seccomp_refine::enforce::{Action, Filter};

use crate::util::{output, seccomp_refine, stderr, stdout};

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
        assert!(explained.contains("serving: socket argument 0 (domain, bits 0xffffffff) only 0x1 ("), "{explained}");
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
