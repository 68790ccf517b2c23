//! Precision rules of the binary analysis, one table per rule: small C programs built by gcc and
//! clang-19, dynamic and static, with the exact syscalls each entry reaches. A rule that prunes
//! must prune only what cannot run: each table also holds the case the rule must not prune.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::static_analysis::{analyze, missing_tool, phase, set, trace_of};
use crate::util::{output, stderr};

/// A library that lets its internal function out to libc only (`write`'s buffer), and an
/// executable whose serving code calls through a pointer of its own after calling the library.
const LEAK_C: &str = r#"
#include <sys/syscall.h>
#include <unistd.h>

static void internal(void) { syscall(SYS_acct, 0); }
void lib_leak(void) { write(-1, (const void *)internal, 0); }
"#;

const SERVER_C: &str = r#"
#include <sys/syscall.h>
#include <unistd.h>

void lib_leak(void);
static void mine(void) { syscall(SYS_getpgrp); }
void (*volatile callback)(void) = mine;

__attribute__((noinline)) void serve(void) {
    lib_leak();
    callback();
}

int main(void) {
    serve();
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

#[test]
fn another_files_function_is_reached_only_by_the_files_it_was_let_out_to() {
    for compiler in COMPILERS {
        require!(missing_tool(compiler));
    }
    let dir = tempfile::tempdir().unwrap();
    for compiler in COMPILERS {
        let library = compile(compiler, dir.path(), &format!("libleak-{compiler}.so"), LEAK_C, &["-shared", "-fPIC"]);
        let link = format!("-l:{}", library.file_name().unwrap().to_str().unwrap());
        let rpath = format!("-Wl,-rpath,{}", dir.path().display());
        let flags = [format!("-L{}", dir.path().display()), link, rpath];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let name = format!("server-{compiler}");
        let server = compile(compiler, dir.path(), &name, SERVER_C, &flags);
        let run = dir.path().join(&name).with_extension("out");
        std::fs::create_dir_all(&run).unwrap();
        let trace = trace_of(&run, server.to_str().unwrap(), None);
        let analysis = analyze(&trace, &["--rootfs", "/", "--serving-entry", "serve"]);
        let serving = phase(&analysis, "serving");
        assert!(set(&["getpgrp", "write"]).is_subset(&serving), "{compiler}: {serving:?}");
        // libc may call `internal` (the exit path runs libc's indirect calls); the executable's
        // own indirect call may not.
        let witness = &analysis["phases"]["serving"]["acct"]["reachable"]["path"];
        let steps: Vec<&str> = witness.as_array().unwrap().iter().map(|step| step.as_str().unwrap()).collect();
        let through_executable = steps
            .windows(2)
            .any(|pair| pair[0].starts_with(&format!("{name}!")) && pair[1].contains("!internal (indirect call"));
        assert!(!through_executable, "{compiler}: {steps:?}");
        assert!(steps.iter().any(|step| step.starts_with("libc.so.6!")), "{compiler}: {steps:?}");
    }
}
