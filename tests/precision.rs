//! Precision rules of the binary analysis, one table per rule: small C programs built by gcc and
//! clang-19, dynamic and static, with the exact syscalls each entry reaches. A rule that prunes
//! must prune only what cannot run: each table also holds the case the rule must not prune.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::static_analysis::{analyze, missing_tool, phase, set, static_profile, trace_of};
use crate::util::{image_missing, output, seccomp_refine, stderr, stdout};

/// `serve` calls through a read-only table (`.data.rel.ro` once relocated) and takes the address
/// of a function it never calls; `main` also calls through a writable pointer it reassigns.
const TABLE_C: &str = r#"
#include <sys/syscall.h>
#include <unistd.h>

static void group(void) { syscall(SYS_getpgrp); }
static void egid(void) { syscall(SYS_getegid); }
static void account(void) { syscall(SYS_acct, 0); }
static void session(void) { syscall(SYS_getsid, 0); }
static void (*const table[])(void) = { group, egid };
static void (*hook)(void) = account;
void (*volatile sink)(void);

__attribute__((noinline)) void serve(int i) {
    sink = account;
    table[i % 2]();
}
__attribute__((noinline)) void set_hook(void) { hook = session; }
__attribute__((noinline)) void run_hook(void) { hook(); }

int main(int argc, char **argv) {
    (void)argv;
    serve(argc);
    if (argc > 2) set_hook();
    run_hook();
    return 0;
}
"#;

const COMPILERS: [&str; 2] = ["gcc", "clang-19"];

fn compile(compiler: &str, dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).unwrap();
    let binary = dir.join(name);
    let out = output(Command::new(compiler).args(["-O2", "-o"]).arg(&binary).arg(&source_path).args(flags));
    assert!(out.status.success(), "{compiler} {name}: {}", stderr(&out));
    binary
}

/// `syscalls --entry ENTRY` of `binary`: the exact set from one function.
fn syscalls_from(binary: &Path, entry: &str) -> Vec<String> {
    let out = output(seccomp_refine().args(["syscalls", "--no-cache", "--json", "--entry", entry]).arg(binary));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    serde_json::from_value(report["syscalls"].clone()).unwrap()
}

#[test]
fn calls_through_fixed_data_reach_what_it_holds() {
    for compiler in COMPILERS {
        require!(missing_tool(compiler));
    }
    let dir = tempfile::tempdir().unwrap();
    let builds = [("dynamic", &[][..]), ("static", &["-static"][..])];
    // (entry, exact set): the table's two entries only, though `account` is live; through the
    // writable pointer, both what it was initialised with and what `set_hook` stores.
    let table: [(&str, &[&str]); 2] =
        [("serve", &["getegid", "getpgrp"]), ("main", &["acct", "getegid", "getpgrp", "getsid"])];
    for compiler in COMPILERS {
        for (build, flags) in builds {
            let name = format!("table-{compiler}-{build}");
            let binary = compile(compiler, dir.path(), &name, TABLE_C, flags);
            for (entry, expected) in table {
                let found = syscalls_from(&binary, entry);
                if entry == "main" {
                    let wanted: Vec<String> = expected.iter().map(|&name| name.to_owned()).collect();
                    assert!(wanted.iter().all(|name| found.contains(name)), "{name} from {entry}: {found:?}");
                } else {
                    assert_eq!(found, expected, "{name} from {entry}");
                }
            }
        }
    }
    // The witness names the table.
    let binary = dir.path().join("table-gcc-dynamic");
    let trace = trace_of(dir.path(), binary.to_str().unwrap(), None);
    let analysis = analyze(&trace, &["--rootfs", "/", "--serving-entry", "serve"]);
    let witness = analysis["phases"]["serving"]["getegid"]["reachable"]["path"].to_string();
    assert!(witness.contains("table-gcc-dynamic!serve (serving entry)"), "{witness}");
    assert!(witness.contains("(loaded from table 0x"), "{witness}");
}

/// The stand-ins' static profiles must not grow back: the ceilings are the sets measured when
/// the rules above went in.
#[test]
fn the_stand_ins_static_profiles_do_not_grow() {
    for (image, program, init_ceiling, serving_ceiling) in
        [("nginx:latest", "/usr/sbin/nginx", 127, 124), ("redis:latest", "/usr/bin/redis-server", 119, 117)]
    {
        require!(image_missing(image));
        let (_dir, analysis) = static_profile(image, program);
        let (init, serving) = (phase(&analysis, "init"), phase(&analysis, "serving"));
        assert!(init.len() <= init_ceiling, "{image}: init grew to {}: {init:?}", init.len());
        assert!(serving.len() <= serving_ceiling, "{image}: serving grew to {}: {serving:?}", serving.len());
        assert!(set(&["epoll_wait", "accept4"]).is_subset(&serving), "{image}: {serving:?}");
    }
}
