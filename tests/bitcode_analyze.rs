//! `analyze --bitcode` and `trace --bitcode`: the application's own code from clang-19 bitcode,
//! its libraries from real ELF files, merged into one set per phase.
//!
//! The C programs are compiled to bitcode the way `cargo xtask bitcode` builds nginx, and the
//! same bitcode is linked into the executable the trace names; their libraries are this
//! machine's (Debian 12: glibc 2.36-9+deb12u14, the stand-in images' version too). The expected
//! sets are layered: what glibc's start-up and exit reach for any program, what its
//! `pthread_create` reaches, and what each program's own code and callbacks add — so a change in
//! the library analysis shows up in the first two, and a change in the bitcode side in the last.
//! nginx and redis are analysed from `cargo xtask bitcode` output with the stand-in images'
//! libraries, and must start and work under the resulting profile.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use seccomp_refine::profile::read::read_allowlist;
use serde_json::Value;

use crate::bitcode::{SERVER, app_bitcode, bitcode_missing, compile, run_tool, toolchain_missing};
use crate::static_analysis::{analyze, missing_tool, phase, set, strace, trace_of};
use crate::util::{image_missing, output, read_json, seccomp_refine, stderr, stdout};
use crate::verify::{denials, verify};

/// A program whose code does nothing: what remains is glibc's.
const EMPTY: &str = "int main(void) { return 0; }\n";

/// A library calling the application back by name: the executable defines (and exports)
/// `app_hook`, and the library imports it.
const HOOK_LIBRARY: &str = "void app_hook(int x);\nvoid lib_notify(int x) { app_hook(x); }\n";

/// Every way a library calls the application: by name (`app_hook`, from libhook.so), a `qsort`
/// comparator, a `sigaction` handler set through the struct, an `atexit` function (glibc links
/// `atexit` into the executable) and a thread's start routine; each issues a syscall nothing else
/// does. `vhangup` and `umask` happen before serving only.
const CALLBACKS: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

void lib_notify(int x);

/* Called by libhook.so through its import of `app_hook`, never by this program. */
void app_hook(int x) { syscall(SYS_times, (long)x * 0); }

static int by_value(const void *a, const void *b) {
    syscall(SYS_getsid, 0);
    return *(const int *)a - *(const int *)b;
}
static void on_usr1(int sig) { (void)sig; syscall(SYS_getppid); }
static void *worker(void *arg) { syscall(SYS_getresuid, 0, 0, 0); return arg; }
static void at_end(void) { syscall(SYS_getresgid, 0, 0, 0); }

__attribute__((noinline)) void serve(int rounds) {
    int values[3] = { 3, 1, 2 };
    for (int i = 0; i < rounds; i++) {
        lib_notify(i);
        qsort(values, 3, sizeof values[0], by_value);
    }
}

int main(int argc, char **argv) {
    (void)argv;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, 0);
    atexit(at_end);
    pthread_t thread;
    pthread_create(&thread, 0, worker, 0);
    pthread_join(thread, 0);
    umask(022);
    syscall(SYS_vhangup);
    raise(SIGUSR1);
    serve(argc + 2);
    return 0;
}
"#;

/// What glibc reaches for every dynamically linked program, in both phases: the loader,
/// `__libc_start_main`, `exit` and the fini arrays, and the vDSO fallbacks.
const LIBC_START_AND_EXIT: &str = "access arch_prctl brk clock_getres clock_gettime close execve exit exit_group \
    fcntl futex getcpu getcwd getdents64 getpid getrandom gettid gettimeofday ioctl lseek madvise mmap mprotect \
    mremap munmap newfstatat openat pread64 prlimit64 read readlink rseq rt_sigaction rt_sigprocmask rt_sigreturn \
    sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getparam sched_getscheduler \
    sched_setscheduler sched_yield set_robust_list set_tid_address setitimer sysinfo tgkill time uname utimensat \
    write writev";

/// What glibc's `pthread_create` adds: `clone3`/`clone`, the new thread's affinity, and through
/// `start_thread`'s call of the start routine every live libc function taking one argument
/// (`posix_spawn`'s child among them) — the binary analysis's precision for libc.
const PTHREAD_CREATE: &str = "bind chdir clone clone3 close_range connect dup dup2 fchdir getgid getpeername \
    getpgid getsockname getuid kill pipe2 poll recvfrom recvmsg sched_setaffinity sched_setparam sendmmsg sendto \
    setpgid setresgid setresuid setsid setsockopt socket wait4";

fn words(lists: &[&str]) -> BTreeSet<String> {
    lists.iter().flat_map(|list| list.split_whitespace()).map(str::to_owned).collect()
}

/// Compiles `source` to bitcode and links that bitcode into an executable (with `link` flags).
fn build(dir: &Path, name: &str, source: &str, link: &[&str]) -> (PathBuf, PathBuf) {
    let bitcode = compile(dir, name, source);
    let binary = dir.join(name);
    run_tool(Command::new("clang-19").arg("-O2").arg(&bitcode).arg("-o").arg(&binary).args(link));
    (bitcode, binary)
}

/// `analyze --bitcode` of `binary` (from `bitcode`) with this machine's libraries.
fn analyze_with_libc(dir: &Path, bitcode: &Path, binary: &Path, entry: &str) -> Value {
    let trace = trace_of(dir, binary.to_str().unwrap(), None);
    let bitcode = format!("{}@{}", bitcode.display(), binary.display());
    analyze(&trace, &["--rootfs", "/", "--bitcode", &bitcode, "--serving-entry", entry])
}

fn witness(analysis: &Value, phase: &str, syscall: &str) -> (Vec<String>, String) {
    let reachable = &analysis["phases"][phase][syscall]["reachable"];
    let path = reachable["path"].as_array().unwrap_or_else(|| panic!("{syscall} is not reachable in {phase}"));
    (path.iter().map(|step| step.as_str().unwrap().to_owned()).collect(), reachable["site"].as_str().unwrap().into())
}

#[test]
fn glibc_start_and_exit_are_the_floor_of_both_phases() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let (bitcode, binary) = build(dir.path(), "empty", EMPTY, &[]);
    let analysis = analyze_with_libc(dir.path(), &bitcode, &binary, "main");
    assert_eq!(phase(&analysis, "init"), words(&[LIBC_START_AND_EXIT]));
    assert_eq!(phase(&analysis, "serving"), words(&[LIBC_START_AND_EXIT]));
    let program = &analysis["static"]["programs"][0];
    assert_eq!(program["path"], binary.to_str().unwrap());
    assert_eq!(program["serving_entry"], "main (bitcode)");
    // The executable's own code is the bitcode's: its file is not among the analysed ones.
    let modules: Vec<&str> =
        analysis["static"]["modules"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap()).collect();
    assert_eq!(modules[0], bitcode.to_str().unwrap());
    assert!(!modules.contains(&binary.to_str().unwrap()), "{modules:?}");
    // `main` returns into libc's exit: its witness crosses from the bitcode into libc.
    let (path, site) = witness(&analysis, "serving", "exit_group");
    assert_eq!(path[..2], ["main (returns into libc, which calls exit)", "libc.so.6!exit"], "{path:?}");
    assert!(site.starts_with("syscall at 0x"), "{site}");
}

#[test]
fn server_bitcode_through_libc_gets_exact_sets() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let (bitcode, binary) = build(dir.path(), "server", SERVER, &["-lpthread"]);
    let analysis = analyze_with_libc(dir.path(), &bitcode, &binary, "serve");
    // Its own: fsync (a route), sync (at exit), getppid (the handler), fdatasync (after serving),
    // umask (start-up only); gettid and getpid are glibc's anyway.
    let init = words(&[LIBC_START_AND_EXIT, PTHREAD_CREATE, "fdatasync fsync getppid sync umask"]);
    assert_eq!(phase(&analysis, "init"), init);
    let serving: BTreeSet<String> = init.difference(&words(&["sched_setaffinity umask"])).cloned().collect();
    assert_eq!(phase(&analysis, "serving"), serving);

    let (path, site) = witness(&analysis, "serving", "write");
    assert_eq!(path, ["serve (serving entry)", "read_request (indirect)", "on_get (indirect)", "libc.so.6!write"]);
    assert!(site.starts_with("syscall at 0x"), "{site}");
    assert_eq!(
        witness(&analysis, "serving", "sync"),
        (vec!["goodbye (exit handler)".to_owned()], "syscall(162)".into())
    );
    let explained = output(seccomp_refine().args(["explain", "write"]).arg(dir.path()));
    assert!(
        stdout(&explained).contains("serving: reachable: serve (serving entry) → read_request (indirect) → on_get"),
        "{}",
        stdout(&explained)
    );
    // The profiles follow: umask is allowed until serving starts, and not after.
    let allowed = |file: &str| read_allowlist(&dir.path().join(file)).unwrap();
    assert!(allowed("seccomp-init.json").contains("umask") && !allowed("seccomp-serving.json").contains("umask"));
}

#[test]
fn library_callbacks_come_back_into_the_bitcode() {
    require!(toolchain_missing().or_else(|| missing_tool("strace")));
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libhook.so");
    let hook = dir.path().join("hook.c");
    std::fs::write(&hook, HOOK_LIBRARY).unwrap();
    run_tool(Command::new("clang-19").args(["-O2", "-shared", "-fPIC", "-o"]).arg(&library).arg(&hook));
    let link = ["-rdynamic", "-L", dir.path().to_str().unwrap(), "-lhook", "-Wl,-rpath,$ORIGIN", "-lpthread"];
    let (bitcode, binary) = build(dir.path(), "callbacks", CALLBACKS, &link);
    let analysis = analyze_with_libc(dir.path(), &bitcode, &binary, "serve");

    let own = "getppid getresgid getresuid getsid times umask vhangup";
    let init = words(&[LIBC_START_AND_EXIT, PTHREAD_CREATE, own]);
    assert_eq!(phase(&analysis, "init"), init);
    let serving: BTreeSet<String> = init.difference(&words(&["sched_setaffinity umask vhangup"])).cloned().collect();
    assert_eq!(phase(&analysis, "serving"), serving);
    let callback = |syscall: &str| witness(&analysis, "serving", syscall).0[0].clone();
    assert_eq!(callback("times"), "app_hook (called by libhook.so!lib_notify)");
    assert_eq!(callback("getsid"), "by_value (library callback)");
    assert_eq!(callback("getppid"), "on_usr1 (signal handler)");
    assert_eq!(callback("getresuid"), "worker (thread start routine)");
    assert_eq!(callback("getresgid"), "at_end (exit handler)");
    assert!(analysis["static"]["warnings"].as_array().unwrap().is_empty(), "{}", analysis["static"]["warnings"]);

    // What the program really does is all there.
    let seen = strace(dir.path(), &binary);
    let missing: Vec<&String> = seen.difference(&init).collect();
    assert!(missing.is_empty(), "observed but not reachable: {missing:?}");
    assert!(seen.contains("times") && seen.contains("getresgid"), "the callbacks ran: {seen:?}");
}

/// The stand-in image's program analysed twice from its files alone (sharing the summary
/// cache): from its binary, then with its own code from `app`'s bitcode. Returns (the directory,
/// holding the bitcode-based profiles; the binary-only analysis; the bitcode-based analysis).
fn image_analyses(image: &str, program: &str, app: &Path) -> (tempfile::TempDir, Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let trace = trace_of(dir.path(), program, Some(image));
    let binary_only = analyze(&trace, &[]);
    let with_bitcode = analyze(&trace, &["--bitcode", app.to_str().unwrap()]);
    (dir, binary_only, with_bitcode)
}

/// Per phase: the count is within `bounds`, and no larger than the binary-only one.
fn assert_counts(bitcode: &Value, binary: &Value, bounds: [std::ops::RangeInclusive<usize>; 2]) {
    for (name, bounds) in ["init", "serving"].into_iter().zip(bounds) {
        let (ours, theirs) = (phase(bitcode, name), phase(binary, name));
        assert!(bounds.contains(&ours.len()), "{name}: {} syscalls, expected {bounds:?}: {ours:?}", ours.len());
        let extra: Vec<&String> = ours.difference(&theirs).collect();
        assert!(extra.is_empty(), "{name}: the bitcode reaches what the binary cannot: {extra:?}");
    }
}

fn assert_verified(image: &str, dir: &Path) {
    let (code, text, report) = verify(image, &dir.join("seccomp.json"), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(denials(&report).is_empty(), "{text}");
}

#[test]
fn nginx_from_bitcode_with_the_image_libraries_serves_under_its_profile() {
    require!(image_missing("nginx:latest").or_else(|| bitcode_missing("nginx")));
    let app = app_bitcode("nginx");
    let (dir, binary, bitcode) = image_analyses("nginx:latest", "/usr/sbin/nginx", &app);
    let program = &bitcode["static"]["programs"][0];
    assert_eq!(program["serving_entry"], "ngx_process_events_and_timers (bitcode)");
    assert_counts(&bitcode, &binary, [120..=132, 110..=122]);
    let (init, serving) = (phase(&bitcode, "init"), phase(&bitcode, "serving"));
    // The master's listening and signal wait, and each worker's start-up before its first event
    // loop: the binary analysis keeps the privilege drop in serving (a function-pointer call it
    // cannot tell apart reaches the worker cycle); the bitcode's typed calls do not.
    let binary_serving = phase(&binary, "serving");
    for init_only in ["listen", "rt_sigsuspend", "umask", "setuid", "setgid", "setgroups", "capset", "prctl"] {
        assert!(init.contains(init_only) && !serving.contains(init_only), "{init_only} in serving: {serving:?}");
    }
    assert!(set(&["setuid", "setgid", "setgroups", "capset", "prctl"]).is_subset(&binary_serving));
    assert!(set(&["epoll_wait", "epoll_ctl", "accept4", "recvfrom", "writev", "sendfile"]).is_subset(&serving));
    let (path, site) = witness(&bitcode, "serving", "epoll_wait");
    assert_eq!(path[0], "ngx_process_events_and_timers (serving entry)", "{path:?}");
    assert!(path.last().unwrap().starts_with("libc.so.6!") && site.starts_with("syscall at 0x"), "{path:?} {site}");
    assert_verified("nginx:latest", dir.path());
}

#[test]
fn redis_from_bitcode_with_the_image_libraries_serves_under_its_profile() {
    require!(image_missing("redis:latest").or_else(|| bitcode_missing("redis")));
    let app = app_bitcode("redis");
    let (dir, binary, bitcode) = image_analyses("redis:latest", "/usr/bin/redis-server", &app);
    assert_eq!(bitcode["static"]["programs"][0]["serving_entry"], "aeMain (bitcode)");
    assert_counts(&bitcode, &binary, [112..=124, 108..=120]);
    let serving = phase(&bitcode, "serving");
    // BGSAVE forks from serverCron while serving; the event loop is created before.
    assert!(set(&["epoll_wait", "accept4", "read", "write", "clone", "rename"]).is_subset(&serving), "{serving:?}");
    assert!(!serving.contains("epoll_create") && !serving.contains("umask"), "{serving:?}");
    assert_verified("redis:latest", dir.path());
}

#[test]
fn tracing_with_bitcode_reaches_everything_it_observed() {
    require!(
        crate::tracer::tracer_missing().or_else(|| image_missing("nginx:latest")).or_else(|| bitcode_missing("nginx"))
    );
    let app = app_bitcode("nginx");
    let dir = tempfile::tempdir().unwrap();
    let url = "http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT";
    let workload =
        format!("curl -sf {url}/ -o /dev/null && curl -s {url}/none -o /dev/null && wrk -d 1 -c 4 -t 1 {url}/");
    let out = output(
        seccomp_refine()
            .args(["trace", "nginx:latest", "--workload", &workload, "--duration", "60s", "--bitcode"])
            .arg(&app)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("-o")
            .arg(dir.path()),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let analysis = read_json(&dir.path().join("analysis.json"));
    assert_eq!(analysis["static"]["programs"][0]["serving_entry"], "ngx_process_events_and_timers (bitcode)");
    for name in ["init", "serving"] {
        let evidence = analysis["phases"][name].as_object().unwrap();
        let observed: Vec<&String> =
            evidence.iter().filter(|(_, why)| why.get("observed").is_some()).map(|e| e.0).collect();
        let unreached: Vec<&&String> =
            observed.iter().filter(|syscall| evidence[syscall.as_str()].get("reachable").is_none()).collect();
        assert!(observed.len() > 10 && unreached.is_empty(), "{name}: observed but not reachable: {unreached:?}");
    }
}

#[test]
fn bad_bitcode_input_is_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_bitcode = dir.path().join("notes.bc");
    std::fs::write(&not_bitcode, "hello").unwrap();
    let trace = trace_of(dir.path(), "/bin/true", None);
    let mut two = read_json(&trace);
    two["executables"].as_array_mut().unwrap().push(serde_json::json!({
        "path": "/bin/false", "phase": "init", "pid": 2, "first_seen_ns": 0
    }));
    // In a directory of its own: a trace analysed into a directory whose trace.json is another
    // run's is refused before the bitcode is looked at.
    let two_programs = dir.path().join("two").join("trace.json");
    std::fs::create_dir(two_programs.parent().unwrap()).unwrap();
    std::fs::write(&two_programs, two.to_string()).unwrap();
    let notes = not_bitcode.to_str().unwrap();
    let cases: Vec<(&Path, String, &str)> = if cfg!(feature = "bitcode") {
        vec![
            (&trace, notes.to_owned(), "not LLVM bitcode (no 'BC' 0xC0DE magic)"),
            (&trace, format!("{notes}@/usr/sbin/nginx"), "/usr/sbin/nginx is not a program the trace saw run"),
            (&two_programs, notes.replace("notes.bc", "app.bc"), "cannot tell which traced program"),
        ]
    } else {
        vec![(&trace, notes.to_owned(), "built without LLVM bitcode support; rebuild it with `--features bitcode`")]
    };
    for (trace, bitcode, expected) in cases {
        let out = output(seccomp_refine().arg("analyze").arg(trace).args(["--rootfs", "/", "--bitcode", &bitcode]));
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bitcode}: {message}");
        assert!(message.contains(expected) && message.lines().count() == 1, "{bitcode}: {message}");
    }
    let out = output(seccomp_refine().arg("analyze").arg(&trace).args(["--bitcode", &format!("{notes}@")]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not APP.bc or APP.bc@PATH"), "{}", stderr(&out));
    assert!(!dir.path().join("analysis.json").exists() && !dir.path().join("two/analysis.json").exists());
    // `trace` refuses before it records anything.
    let traced = dir.path().join("traced");
    let out =
        output(seccomp_refine().args(["trace", "--exec", "--bitcode", notes, "-o"]).arg(&traced).args(["--", "true"]));
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!traced.exists(), "trace wrote {}", traced.display());
}
