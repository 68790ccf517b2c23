use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use seccomp_refine::syscalls::Arch;
use seccomp_refine::trace::{FileUse, FunctionRef, Phase, ServingEntry, Source, Target, Trace};

use crate::util::{
    Container, docker_missing, eventually, image_missing, output, read_json, seccomp_refine, stderr, stdout,
};

/// No libc: every syscall the program can make is written here, so the sets per phase are
/// known exactly. `start` runs init work, registers a signal handler through a function named
/// like libc's registration call, then serves from a function-pointer table; afterwards it
/// calls `getsid` and exits. `never` sits in a table nothing reads.
const BARE_C: &str = r#"
#define SYS_write 1
#define SYS_rt_sigaction 13
#define SYS_getpid 39
#define SYS_uname 63
#define SYS_getegid 108
#define SYS_getppid 110
#define SYS_getpgrp 111
#define SYS_getsid 124
#define SYS_acct 163
#define SYS_exit_group 231

static long raw3(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static long raw4(long nr, long a, long b, long c, long d) {
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
}

/* Like libc's syscall(): the number is the first argument. */
__attribute__((noinline)) long number_first(long nr, long a, long b) { return raw3(nr, a, b, 0); }

/* Like glibc 2.41's __syscall_cancel: the number is the 7th argument, on the stack. */
__attribute__((noinline)) long number_seventh(long a1, long a2, long a3, long a4, long a5, long a6, long nr) {
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return ret;
}

struct kernel_sigaction { void (*handler)(int); unsigned long flags; void (*restorer)(void); unsigned long mask; };
void restore(void);
__asm__(".text\n restore: mov $15, %eax\n syscall\n");

__attribute__((noinline)) long sigaction(int sig, const struct kernel_sigaction *act, struct kernel_sigaction *old) {
    return raw4(SYS_rt_sigaction, sig, (long)act, (long)old, 8);
}

static void on_signal(int sig) { (void)sig; raw3(SYS_getppid, 0, 0, 0); }
static void handle_a(void) { raw3(SYS_getpgrp, 0, 0, 0); }
static void handle_b(void) { number_seventh(0, 0, 0, 0, 0, 0, SYS_getegid); }
static void never(void) { number_first(SYS_acct, 0, 0); }
static void (*handlers[])(void) = { handle_a, handle_b };
__attribute__((used)) static void (*unused_table[])(void) = { never };

__attribute__((noinline)) void serve(int rounds) {
    for (int i = 0; i < rounds; i++) handlers[i % 2]();
}

__attribute__((noreturn)) void start(long *stack) {
    char name[390];
    raw3(SYS_write, 1, (long)"ready\n", 6);
    number_first(SYS_getpid, 0, 0);
    number_seventh((long)name, 0, 0, 0, 0, 0, SYS_uname);
    struct kernel_sigaction act = { on_signal, 0x04000000 /* SA_RESTORER */, restore, 0 };
    sigaction(1 /* SIGHUP */, &act, 0);
    serve((int)stack[0] + 3);
    raw3(SYS_getsid, 0, 0, 0);
    for (;;) raw3(SYS_exit_group, 0, 0, 0);
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start\n");
"#;

/// The same shape with glibc: `syscall()`, a 7th-argument wrapper, `signal`, a thread, a
/// function-pointer table, a serving loop, init-only `vhangup` and `getsid` after serving.
const GLIBC_C: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noinline)) long number_seventh(long a1, long a2, long a3, long a4, long a5, long a6, long nr) {
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return ret;
}

static void on_hangup(int sig) { (void)sig; syscall(SYS_getppid); }
static void *worker(void *arg) { syscall(SYS_sched_yield); return arg; }
static void handle_a(void) { syscall(SYS_getpgrp); }
static void handle_b(void) { number_seventh(0, 0, 0, 0, 0, 0, SYS_getegid); }
static void never(void) { syscall(SYS_acct, 0); }
static void (*const handlers[])(void) = { handle_a, handle_b };
__attribute__((used)) static void (*unused_table[])(void) = { never };

__attribute__((noinline)) void serve(int rounds) {
    for (int i = 0; i < rounds; i++) handlers[i % 2]();
}

int main(int argc, char **argv) {
    (void)argv;
    syscall(SYS_vhangup);
    signal(SIGHUP, on_hangup);
    pthread_t thread;
    pthread_create(&thread, 0, worker, 0);
    pthread_join(thread, 0);
    serve(argc + 3);
    syscall(SYS_getsid, 0);
    return 0;
}
"#;

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&name| name.to_owned()).collect()
}

pub fn missing_tool(tool: &str) -> Option<String> {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|out| out.status.success());
    (!found).then(|| format!("{tool} is not installed"))
}

/// Compiles `source` with gcc into `dir/name`.
pub fn compile(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).unwrap();
    let binary = dir.join(name);
    let out = output(Command::new("gcc").args(["-O2", "-o"]).arg(&binary).arg(&source_path).args(flags));
    assert!(out.status.success(), "gcc {name}: {}", stderr(&out));
    binary
}

/// A trace in which `program` was exec'd during init and nothing was observed.
pub fn trace_of(dir: &Path, program: &str, image: Option<&str>) -> PathBuf {
    let target = Target { image: image.map(str::to_owned), ..Target::default() };
    let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "test".into(), target);
    trace.executables.push(FileUse {
        path: program.to_owned(),
        phase: Phase::Init,
        pid: 1,
        first_seen_ns: 0,
        comm: None,
    });
    let path = dir.join("trace.json");
    trace.write(&path).unwrap();
    path
}

/// Runs `analyze` and returns `analysis.json`.
pub fn analyze(trace: &Path, args: &[&str]) -> serde_json::Value {
    let dir = trace.parent().unwrap();
    let cache = dir.join("cache");
    let out =
        output(seccomp_refine().args(["analyze", "--force"]).arg(trace).arg("--cache-dir").arg(&cache).args(args));
    assert!(out.status.success(), "analyze: {}{}", stdout(&out), stderr(&out));
    read_json(&dir.join("analysis.json"))
}

pub fn phase(analysis: &serde_json::Value, phase: &str) -> BTreeSet<String> {
    analysis["phases"][phase].as_object().unwrap().keys().cloned().collect()
}

/// The syscall names `strace` saw `program` make, but the exec that started it.
pub fn strace(dir: &Path, program: &Path) -> BTreeSet<String> {
    let log = dir.join("strace.log");
    let out = output(Command::new("strace").args(["-f", "-qq", "-o"]).arg(&log).arg(program));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter_map(|line| {
            let call = line.split_once(' ').map_or(line, |(_, rest)| rest).trim_start();
            call.split_once('(').map(|(name, _)| name.to_owned())
        })
        .filter(|name| !name.is_empty() && !name.starts_with('+') && !name.starts_with('<') && name != "execve")
        .collect()
}

#[test]
fn a_program_without_libc_gets_exact_sets_per_phase() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    let flags = ["-static", "-nostdlib", "-fno-stack-protector", "-fcf-protection=none"];
    let bare = compile(dir.path(), "bare", BARE_C, &flags);
    let trace = trace_of(dir.path(), bare.to_str().unwrap(), None);
    let analysis = analyze(&trace, &["--rootfs", "/", "--serving-entry", "serve"]);
    let init = [
        "exit_group",
        "getegid",
        "getpgrp",
        "getpid",
        "getppid",
        "getsid",
        "rt_sigaction",
        "rt_sigreturn",
        "uname",
        "write",
    ];
    assert_eq!(phase(&analysis, "init"), set(&init));
    // Serving: the table's handlers, the signal handler and its return, what runs after `serve`.
    let serving = ["exit_group", "getegid", "getpgrp", "getppid", "getsid", "rt_sigreturn"];
    assert_eq!(phase(&analysis, "serving"), set(&serving));
    assert_eq!(analysis["static"]["resolution"]["resolved"], analysis["static"]["resolution"]["sites"]);
    let witness = &analysis["phases"]["serving"]["getegid"]["reachable"];
    assert_eq!(witness["path"][0], "bare!serve (serving entry)");
    assert!(witness["site"].as_str().unwrap().starts_with("wrapper call at"), "{witness}");
    if missing_tool("strace").is_none() {
        let seen = strace(dir.path(), &bare);
        assert!(seen.is_subset(&phase(&analysis, "init")), "observed {seen:?} is not all reachable");
    }

    let explain = |name: &str| output(seccomp_refine().args(["explain", name]).arg(dir.path()));
    let out = explain("getegid");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("serving: reachable: bare!serve (serving entry) → bare!handle_b"), "{text}");
    assert!(text.contains("init: reachable: "), "{text}");
    let out = explain("acct");
    assert_eq!(out.status.code(), Some(1), "a syscall no phase allows");
    assert!(stdout(&out).contains("acct: in no profile"), "{}", stdout(&out));
    let out = explain("not_a_syscall");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim(), "seccomp-refine: error: `not_a_syscall` is not a syscall name this version knows");
}

#[test]
fn glibc_programs_dynamic_and_static_split_by_phase() {
    require!(missing_tool("gcc"));
    for (name, flags) in [("dynamic", &["-lpthread"][..]), ("static", &["-static", "-lpthread"][..])] {
        let dir = tempfile::tempdir().unwrap();
        let program = compile(dir.path(), name, GLIBC_C, flags);
        let trace = trace_of(dir.path(), program.to_str().unwrap(), None);
        let analysis = analyze(&trace, &["--rootfs", "/", "--serving-entry", "serve"]);
        let (init, serving) = (phase(&analysis, "init"), phase(&analysis, "serving"));
        let everywhere = ["getppid", "sched_yield", "getpgrp", "getegid", "getsid", "rt_sigreturn", "clone3"];
        assert!(set(&everywhere).is_subset(&init), "{name} init lacks some of {everywhere:?}: {init:?}");
        assert!(init.contains("vhangup") && init.contains("rt_sigaction"), "{name}: {init:?}");
        // The handler, the thread and the table run while serving; `vhangup` ran before.
        let served = ["getppid", "sched_yield", "getpgrp", "getegid", "getsid", "rt_sigreturn"];
        assert!(set(&served).is_subset(&serving), "{name} serving lacks some of {served:?}: {serving:?}");
        assert!(!serving.contains("vhangup"), "{name}: init-only vhangup is in serving");
        assert!(!init.contains("acct") && !serving.contains("acct"), "{name}: a dead table's function is reachable");
        if missing_tool("strace").is_none() {
            let seen = strace(dir.path(), &program);
            let missing: BTreeSet<&String> = seen.difference(&init).collect();
            assert!(missing.is_empty(), "{name}: observed but not reachable: {missing:?}");
        }
    }
}

#[test]
fn syscalls_from_a_symbol_are_exact() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    for (name, flags) in [("dynamic", &["-lpthread"][..]), ("static", &["-static", "-lpthread"][..])] {
        let program = compile(dir.path(), name, GLIBC_C, flags);
        let out = output(seccomp_refine().args(["syscalls", "--no-cache", "--json", "--entry", "serve"]).arg(&program));
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        // `syscall(SYS_getpgrp)` through libc's wrapper, `getegid` through the stack-argument one.
        assert_eq!(report["syscalls"], serde_json::json!(["getegid", "getpgrp"]), "{name}");
        assert_eq!(report["unresolved"], serde_json::json!([]), "{name}");
    }
}

#[test]
fn packed_relative_relocations_carry_function_pointers() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    // A library whose only path to `getpgrp` is a pointer in relocated data (RELR-packed).
    let source = r#"
        #include <sys/syscall.h>
        #include <unistd.h>
        static void group(void) { syscall(SYS_getpgrp); }
        static void (*const table[])(void) = { group, group, group };
        void run(int i) { table[i % 3](); }
    "#;
    let library = compile(dir.path(), "librelr.so", source, &["-shared", "-fPIC", "-Wl,-z,pack-relative-relocs"]);
    let sections = output(Command::new("readelf").arg("-S").arg(&library));
    assert!(stdout(&sections).contains(".relr.dyn"), "the linker did not pack relocations");
    let out = output(seccomp_refine().args(["syscalls", "--no-cache", "--json", "--entry", "run"]).arg(&library));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["syscalls"], serde_json::json!(["getpgrp"]));
}

#[test]
fn libc_from_the_image_resolves_its_syscall_sites() {
    require!(image_missing("nginx:latest"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rootfs = runtime.block_on(seccomp_refine::docker::rootfs::export_image("nginx:latest")).unwrap();
    let (path, bytes) = rootfs.read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    assert_eq!(path, "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib is a symlink to usr/lib inside the image");
    let libc = seccomp_refine::elf::analyze(&bytes).unwrap();
    let (resolved, sites) = libc.site_counts();
    assert!(sites > 500, "glibc 2.36 has 526 syscall instructions, found {sites}");
    assert!(resolved * 100 >= sites * 98, "resolution {resolved}/{sites} is under 98%");
    use seccomp_refine::elf::{ArgLoc, SiteNumber};
    let sites_of = |name: &str| {
        let index = libc.function_named(name).unwrap_or_else(|| panic!("{name} not found"));
        libc.functions[index as usize].sites.iter().map(|site| site.number.clone()).collect::<Vec<_>>()
    };
    assert_eq!(sites_of("syscall"), [SiteNumber::Forwarded(ArgLoc::Reg(0))], "syscall() forwards argument 1");
    assert!(sites_of("epoll_wait").iter().all(|number| *number == SiteNumber::Known(vec![232])));
    // `__restore_rt` has no symbol and starts one byte into an unwind range; sigaction stores its
    // address in `sa_restorer`.
    let restorer = libc
        .functions
        .iter()
        .position(|function| function.sites.iter().any(|site| site.number == SiteNumber::Known(vec![15])))
        .expect("no rt_sigreturn site");
    let sigaction = libc.function_named("__libc_sigaction").unwrap();
    let taken = &libc.functions[sigaction as usize].refs;
    assert!(
        taken.contains(&seccomp_refine::elf::Ref::Fn(restorer as u32)),
        "sigaction does not take the trampoline's address"
    );
}

/// Analyses `program` of `image` from its files alone (no syscall observed) and checks the
/// container starts and works under the resulting `seccomp.json`.
pub fn static_profile(image: &str, program: &str) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let trace = trace_of(dir.path(), program, Some(image));
    let analysis = analyze(&trace, &[]);
    (dir, analysis)
}

#[test]
fn nginx_static_profile_starts_and_serves() {
    require!(image_missing("nginx:latest"));
    let (dir, analysis) = static_profile("nginx:latest", "/usr/sbin/nginx");
    let program = &analysis["static"]["programs"][0];
    assert_eq!(program["serving_entry"], "nginx!ngx_process_events_and_timers");
    let warnings = analysis["static"]["warnings"].to_string();
    assert!(!warnings.contains("serving callers of ngx_process_events_and_timers"), "{warnings}");
    let (init, serving) = (phase(&analysis, "init"), phase(&analysis, "serving"));
    assert!(set(&["bind", "listen", "setuid", "setgid", "clone", "epoll_create"]).is_subset(&init), "{init:?}");
    assert!(set(&["epoll_wait", "epoll_ctl", "accept4", "recvfrom", "writev", "sendfile"]).is_subset(&serving));
    // The master's listening and its sigsuspend loop happen before the worker serves.
    assert!(!serving.contains("listen") && !serving.contains("rt_sigsuspend"), "{serving:?}");
    let witness = &analysis["phases"]["serving"]["epoll_wait"]["reachable"]["path"];
    assert!(witness[0].as_str().unwrap().contains("ngx_process_events_and_timers"), "{witness}");

    let seccomp = format!("seccomp={}", dir.path().join("seccomp.json").display());
    let nginx = Container::start(&["--security-opt", &seccomp, "nginx:latest"]);
    let base = format!("http://{}", nginx.ip());
    let page = eventually(20, || {
        let out = Command::new("curl").args(["-sf", "-m", "5", &base]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(page.is_some_and(|page| page.contains("Welcome to nginx")), "no page under the static profile");
    let missing = output(
        Command::new("curl")
            .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{base}/none")),
    );
    assert_eq!(stdout(&missing), "404");
    let logs = output(Command::new("docker").args(["logs", &nginx.id]));
    let logs = format!("{}{}", stdout(&logs), stderr(&logs));
    assert!(!logs.contains("Function not implemented") && !logs.contains("[alert]"), "{logs}");
}

#[test]
fn redis_static_profile_serves_and_saves() {
    require!(image_missing("redis:latest"));
    require!(docker_missing().or_else(|| missing_tool("redis-cli")));
    let (dir, analysis) = static_profile("redis:latest", "/usr/bin/redis-server");
    assert!(analysis["static"]["programs"][0]["serving_entry"].as_str().unwrap().ends_with("!aeMain"));
    let serving = phase(&analysis, "serving");
    // BGSAVE forks from serverCron while serving.
    assert!(set(&["epoll_wait", "accept4", "read", "write", "clone", "rename"]).is_subset(&serving), "{serving:?}");
    let seccomp = format!("seccomp={}", dir.path().join("seccomp.json").display());
    let redis = Container::start(&["--security-opt", &seccomp, "redis:latest"]);
    let ip = redis.ip();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-h", &ip]).args(args).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    assert_eq!(eventually(20, || cli(&["ping"]).filter(|reply| reply == "PONG")).as_deref(), Some("PONG"));
    assert_eq!(cli(&["set", "key", "value"]).as_deref(), Some("OK"));
    assert_eq!(cli(&["get", "key"]).as_deref(), Some("value"));
    assert_eq!(cli(&["bgsave"]).as_deref(), Some("Background saving started"));
    let saved =
        eventually(10, || cli(&["info", "persistence"]).filter(|info| info.contains("rdb_bgsave_in_progress:0")));
    assert!(saved.is_some_and(|info| info.contains("rdb_last_bgsave_status:ok")), "BGSAVE failed under the profile");
}

#[test]
fn symlinks_in_a_rootfs_never_lead_to_host_files() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
    let program = compile(dir.path(), "program", GLIBC_C, &["-lpthread"]);
    std::fs::copy(&program, root.join("bin/program")).unwrap();
    // Both point at this machine's libc; inside the root, neither leads anywhere.
    let host_libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    std::os::unix::fs::symlink(host_libc, root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../usr/lib/x86_64-linux-gnu/libc.so.6", root.join("bin/libc.so.6"))
        .unwrap();
    let mut command = seccomp_refine();
    command.args(["syscalls", "--no-cache", "--json", "--entry", "serve", "--rootfs"]).arg(&root).arg("/bin/program");
    let out = match missing_tool("strace") {
        None => {
            let log = dir.path().join("opens.log");
            let mut traced = Command::new("strace");
            traced.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"]).arg(&log).arg(command.get_program());
            traced.args(command.get_args());
            let out = output(&mut traced);
            let opens = std::fs::read_to_string(&log).unwrap();
            assert!(!opens.contains(&format!("\"{host_libc}\"")), "the host libc was opened:\n{opens}");
            out
        }
        Some(_) => output(&mut command),
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("needed library libc.so.6 not found"), "{warnings}");
    // Only the program's own code is analysed: its stack-argument wrapper call with a constant.
    assert_eq!(report["syscalls"], serde_json::json!(["getegid"]));
}

#[test]
fn summaries_come_from_the_cache_and_a_damaged_entry_is_redone() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    let program = compile(dir.path(), "program", GLIBC_C, &["-lpthread"]);
    let trace = trace_of(dir.path(), program.to_str().unwrap(), None);
    let cache = dir.path().join("cache");
    let run = || {
        let out = output(
            seccomp_refine()
                .args(["analyze", "--force"])
                .arg(&trace)
                .args(["--rootfs", "/", "--cache-dir"])
                .arg(&cache),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let cold = run();
    assert!(cold.contains("files (0 from cache)"), "{cold}");
    let first = read_json(&dir.path().join("analysis.json"));
    let warm = run();
    let files = first["static"]["modules"].as_array().unwrap().len();
    assert!(warm.contains(&format!("{files} files ({files} from cache)")), "{warm}");
    let versioned = cache.join(format!("v{}", seccomp_refine::elf::FORMAT));
    let entry = std::fs::read_dir(versioned).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&entry, b"damaged").unwrap();
    let repaired = run();
    assert!(repaired.contains(&format!("{files} files ({} from cache)", files - 1)), "{repaired}");
    assert_eq!(read_json(&dir.path().join("analysis.json"))["phases"], first["phases"]);
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated");
    let bytes = std::fs::read("/bin/true").unwrap();
    std::fs::write(&truncated, &bytes[..200]).unwrap();
    let out = output(seccomp_refine().args(["syscalls", "--no-cache"]).arg(&truncated));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("truncated") && err.contains("ELF"), "{err}");

    let trace = trace_of(dir.path(), "/usr/sbin/nginx", Some("seccomp-refine-test/no-such-image:1"));
    let out = output(seccomp_refine().arg("analyze").arg(&trace).arg("--no-cache"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.path().join("analysis.json").exists(), "nothing is written for bad input");
}

/// A program the container exec'd before it served serves as a whole when the server can exec
/// while serving (lighttpd's reload runs its configuration's shell commands again: the
/// experiment's suite found its serving profile without the shell's getegid, geteuid and vfork).
#[test]
fn programs_exec_d_before_serving_serve_whole_when_serving_can_exec() {
    let dir = tempfile::tempdir().unwrap();
    let source = "#include <unistd.h>\n#include <sys/syscall.h>\n\
                  void serve(int again) { if (again) execl(\"/bin/sh\", \"sh\", \"-c\", \"true\", (char *)0); \
                  syscall(SYS_getppid); }\n\
                  int main(int argc, char **argv) { serve(argc > 5); return 0; }\n";
    let program = compile(dir.path(), "reloads", source, &[]);
    let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "test".into(), Target::default());
    for (pid, path) in [(1, program.to_str().unwrap()), (2, "/bin/sh")] {
        trace.executables.push(FileUse {
            path: path.to_owned(),
            phase: Phase::Init,
            pid,
            first_seen_ns: u64::from(pid),
            comm: None,
        });
    }
    let trace_path = dir.path().join("trace.json");
    trace.write(&trace_path).unwrap();
    let analysis = analyze(&trace_path, &["--rootfs", "/", "--serving-entry", "serve"]);
    assert!(phase(&analysis, "serving").contains("execve"));
    let programs = analysis["static"]["programs"].as_array().unwrap();
    let sh = programs.iter().find(|report| report["path"] == "/bin/sh").expect("the shell was analysed");
    assert_eq!(sh["serving_syscalls"], sh["init_syscalls"], "{sh}");
    assert_eq!(sh["serving_entry"], "the whole program (serving can exec it again)");
}

/// A serving loop in a library, as libapr's poll is apache's.
const LOOP_LIBRARY_C: &str = "#include <unistd.h>\n#include <sys/syscall.h>\n\
                              void serve_loop(void) { syscall(SYS_getppid); }\n";
/// A program that runs the library's loop.
const LOOP_PROGRAM_C: &str = "void serve_loop(void);\n\
                              int main(int argc, char **argv) { if (argc > 5) serve_loop(); return 0; }\n";

/// `libloop.so` and the programs `names`, each linked to it (found through DT_RUNPATH).
fn loop_programs(dir: &Path, names: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let library = compile(dir, "libloop.so", LOOP_LIBRARY_C, &["-shared", "-fPIC"]);
    let link = ["-L", dir.to_str().unwrap(), "-lloop", &format!("-Wl,-rpath,{}", dir.display())];
    let programs = names.iter().map(|name| compile(dir, name, LOOP_PROGRAM_C, &link)).collect();
    (library, programs)
}

/// A trace of `programs` exec'd during init, in that order, with the serving entry `auto`
/// derived at `serve_loop` in `library` from the stack of a process running `server`.
fn trace_with_derived_entry(dir: &Path, programs: &[&str], library: &Path, server: &Path) -> (PathBuf, ServingEntry) {
    let symbols = output(Command::new("nm").args(["-D", "--defined-only"]).arg(library));
    let address = stdout(&symbols)
        .lines()
        .find_map(|line| line.strip_suffix(" T serve_loop").map(|address| u64::from_str_radix(address, 16).unwrap()))
        .expect("libloop.so defines serve_loop");
    let entry = ServingEntry {
        entry: FunctionRef { function: "serve_loop".into(), binary: library.display().to_string(), address },
        callers: Vec::new(),
        found_at: "the first epoll_wait after listen that blocked (pid 2)".into(),
        stack: Vec::new(),
        program: Some(server.display().to_string()),
    };
    let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "test".into(), Target::default());
    for (pid, path) in (1..).zip(programs) {
        trace.executables.push(FileUse {
            path: (*path).to_owned(),
            phase: Phase::Init,
            pid,
            first_seen_ns: u64::from(pid),
            comm: None,
        });
    }
    trace.phase_marker.spec = "auto".into();
    trace.phase_marker.serving_entry = Some(entry.clone());
    let path = dir.join("trace.json");
    trace.write(&path).unwrap();
    (path, entry)
}

/// `enforce` and `verify --enforce` switch where the trace's stack put the serving entry, reading
/// it from the profile directory: `analyze -o` elsewhere used to leave it behind with the trace,
/// and `auto` then looked for the known servers' functions (apache2 and lighttpd have none).
#[test]
fn a_profile_directory_apart_from_its_trace_keeps_the_serving_entry_the_stack_gave() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    let (library, programs) = loop_programs(dir.path(), &["server"]);
    let (trace, entry) = trace_with_derived_entry(dir.path(), &[programs[0].to_str().unwrap()], &library, &programs[0]);
    let profiles = dir.path().join("profiles");
    let out = output(
        seccomp_refine()
            .arg("analyze")
            .arg(&trace)
            .args(["--rootfs", "/", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg("-o")
            .arg(&profiles),
    );
    assert!(out.status.success(), "analyze: {}{}", stdout(&out), stderr(&out));
    assert!(profiles.join("seccomp-serving.json").is_file());
    assert_eq!(seccomp_refine::enforce::derived_entry(&profiles), Some(entry));
    // In the trace's own directory the trace is left as it is.
    let modified = || std::fs::metadata(&trace).unwrap().modified().unwrap();
    let before = modified();
    let out = output(seccomp_refine().arg("analyze").arg(&trace).args(["--rootfs", "/", "--force", "--no-cache"]));
    assert!(out.status.success(), "analyze: {}{}", stdout(&out), stderr(&out));
    assert_eq!(modified(), before);
}

/// The server is the program whose stack gave the serving entry, not the first program that
/// loads the entry's library nor the last one exec'd (lighttpd's configuration runs perl after
/// lighttpd starts).
#[test]
fn the_server_is_the_program_the_serving_entry_was_found_running_in() {
    require!(missing_tool("gcc"));
    let dir = tempfile::tempdir().unwrap();
    let (library, programs) = loop_programs(dir.path(), &["helper", "server"]);
    let (helper, server) = (programs[0].to_str().unwrap(), programs[1].to_str().unwrap());
    let (trace, _) = trace_with_derived_entry(dir.path(), &[helper, server, "/bin/sh"], &library, &programs[1]);
    let analysis = analyze(&trace, &["--rootfs", "/"]);
    let programs = analysis["static"]["programs"].as_array().unwrap();
    let entry_of = |path: &str| {
        let report = programs.iter().find(|report| report["path"] == path).unwrap_or_else(|| panic!("{path} analysed"));
        report["serving_entry"].as_str().unwrap_or_default().to_owned()
    };
    assert!(entry_of(server).contains("serve_loop"), "{programs:#?}");
    for other in [helper, "/bin/sh"] {
        assert!(!entry_of(other).contains("serve_loop"), "{other} does not serve from the entry: {programs:#?}");
    }
}
