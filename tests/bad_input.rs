//! The "Bad input" table of `docs/faults.md`, row by row: each hostile input is built here (in a
//! temporary directory, from real captures and binaries), given to the real binary, and must produce
//! one line naming the problem and the fix, the documented exit code, and no panic.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::tracer::tracer_missing;
use crate::util::{docker_missing, image_missing, output, seccomp_refine, stderr};

const INPUT: i32 = 2;
const RUNTIME: i32 = 1;

/// Asserts the contract of every row: `code`, one line of stderr starting with the error prefix
/// and holding each of `needles`, no panic. Returns the line.
fn one_line_error(out: &Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("seccomp-refine: error: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
    err.trim_end().to_owned()
}

fn capture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/scap").join(format!("{name}.scap"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// `import FILE -o DIR/out`, with `FILE` holding `bytes`; nothing may be written for bad input.
fn import(dir: &Path, bytes: &[u8]) -> Output {
    let file = dir.join("capture.scap");
    std::fs::write(&file, bytes).unwrap();
    let out = output(seccomp_refine().arg("import").arg(&file).arg("-o").arg(dir.join("out")).arg("--no-static"));
    assert!(!dir.join("out").exists(), "nothing is written for bad input");
    out
}

#[test]
fn an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    one_line_error(&import(dir.path(), b""), INPUT, &["the file is empty, not a .scap capture"]);
    let trace = dir.path().join("trace.json");
    std::fs::write(&trace, b"").unwrap();
    let out = output(seccomp_refine().arg("profile").arg(&trace));
    one_line_error(&out, INPUT, &["is not a seccomp-refine trace", "EOF while parsing"]);
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let elf = std::fs::read("/bin/true").unwrap();
    let line = one_line_error(&import(dir.path(), &elf), INPUT, &["not a .scap capture"]);
    assert!(line.ends_with("this file with 0x464c457f"), "{line}");
}

#[test]
fn a_truncated_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = capture("synthetic_modern_exit_only");
    bytes.truncate(bytes.len() - 10);
    one_line_error(
        &import(dir.path(), &bytes),
        INPUT,
        &["(truncated capture)", "--partial imports what comes before the damage"],
    );
}

/// A block that claims just under the 1 GiB limit in a file of a few kilobytes: the reader must
/// notice the file ends instead of making room for what the length claims. Under a 512 MiB
/// address-space limit an allocation of the declared size would abort the process.
#[test]
fn a_huge_declared_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = capture("synthetic_modern_exit_only");
    let huge: u32 = (1 << 30) - 16;
    bytes.extend_from_slice(&0x221u32.to_le_bytes());
    bytes.extend_from_slice(&huge.to_le_bytes());
    bytes.extend_from_slice(&[0; 4096]);
    let file = dir.path().join("huge.scap");
    std::fs::write(&file, &bytes).unwrap();
    let limited = |args: &[&OsStr]| {
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", "ulimit -v 524288 && exec \"$@\"", "sh"]).arg(seccomp_refine().get_program()).args(args);
        output(&mut sh)
    };
    let out = dir.path().join("out");
    let args = [OsStr::new("import"), file.as_os_str(), OsStr::new("--no-static"), OsStr::new("-o"), out.as_os_str()];
    one_line_error(&limited(&args), INPUT, &[&format!("into a {huge}-byte block (truncated capture)")]);
    let partial = limited(&[&args[..], &[OsStr::new("--partial")]].concat());
    assert!(partial.status.success(), "what came before is imported: {}", stderr(&partial));
    assert!(out.join("trace.json").is_file());
}

/// `.text` moved onto `.dynsym` in a copy of a real binary: the sections overlap in the file and
/// in memory.
#[test]
fn an_elf_with_overlapping_sections() {
    let dir = tempfile::tempdir().unwrap();
    let mut elf = std::fs::read("/bin/true").unwrap();
    let (text, dynsym) = (section_header(&elf, ".text"), section_header(&elf, ".dynsym"));
    // sh_addr (+16) and sh_offset (+24) of .text := those of .dynsym.
    let moved = elf[dynsym + 16..dynsym + 32].to_vec();
    elf[text + 16..text + 32].copy_from_slice(&moved);
    let file = dir.path().join("overlapping");
    std::fs::write(&file, &elf).unwrap();
    let out = output(seccomp_refine().args(["syscalls", "--no-cache"]).arg(&file));
    one_line_error(&out, INPUT, &[&file.display().to_string(), "overlap"]);
}

/// The file offset of the 64-byte section header named `name` in a little-endian ELF64 file.
fn section_header(elf: &[u8], name: &str) -> usize {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (table, count, names) = (u64_at(0x28), u16_at(0x3c), u16_at(0x3e));
    let strings = u64_at(table + names * 64 + 24);
    (0..count)
        .map(|index| table + index * 64)
        .find(|header| {
            let start = strings + u32::from_le_bytes(elf[*header..*header + 4].try_into().unwrap()) as usize;
            elf[start..].starts_with(name.as_bytes()) && elf[start + name.len()] == 0
        })
        .unwrap_or_else(|| panic!("no {name} section"))
}

#[test]
fn a_recursive_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/b", root.join("usr/bin/a")).unwrap();
    std::os::unix::fs::symlink("a", root.join("usr/bin/b")).unwrap();
    let out = output(seccomp_refine().args(["syscalls", "--no-cache", "--rootfs"]).arg(&root).arg("/usr/bin/a"));
    one_line_error(&out, INPUT, &["/usr/bin/a", "too many levels of symbolic links"]);
    // A library that loops is looked for like a missing one: the program is still analysed.
    std::fs::copy("/bin/true", root.join("usr/bin/true")).unwrap();
    let lib = root.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    std::os::unix::fs::symlink("libc.so.7", lib.join("libc.so.6")).unwrap();
    std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/libc.so.6", lib.join("libc.so.7")).unwrap();
    let out = output(seccomp_refine().args(["syscalls", "--no-cache", "--rootfs"]).arg(&root).arg("/usr/bin/true"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("/usr/bin/true: needed library libc.so.6 not found"), "{}", stderr(&out));
}

/// Paths are bytes on Linux: a trace in a directory whose name is not UTF-8 is read and its
/// profiles written there; a missing one is named (lossily) in the error.
#[test]
fn non_utf8_paths() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join(OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&odd).unwrap();
    let trace = crate::static_analysis::trace_of(&odd, "/bin/true", None);
    let out = output(seccomp_refine().arg("profile").arg(&trace));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(odd.join("seccomp.json").is_file());
    let missing: PathBuf = dir.path().join(OsStr::from_bytes(b"na\xefve/trace.json"));
    let out = output(seccomp_refine().arg("profile").arg(&missing));
    one_line_error(&out, INPUT, &["cannot read", "na\u{fffd}ve/trace.json", "No such file or directory"]);
}

#[test]
fn an_unknown_syscall_name_in_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let profile = |name: &str, names: &str| {
        let path = dir.path().join(name);
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{{"names":[{names}],"action":"SCMP_ACT_ALLOW"}}]}}"#
        );
        std::fs::write(&path, json).unwrap();
        path
    };
    let good = profile("good.json", r#""read","write""#);
    let typo = profile("typo.json", r#""read","wirte""#);
    let out = output(seccomp_refine().arg("diff").arg(&good).arg(&typo));
    let line = one_line_error(&out, INPUT, &[]);
    assert_eq!(
        line,
        format!(
            "seccomp-refine: error: {} allows `wirte`, which is no syscall on x86_64, x86 or aarch64; \
             correct the name or remove it",
            typo.display()
        )
    );
}

#[test]
fn a_container_that_does_not_exist() {
    require!(tracer_missing().or_else(docker_missing));
    let out = output(seccomp_refine().args(["trace", "--attach", "seccomp-refine-nosuch", "--duration", "1s"]));
    let line = one_line_error(&out, INPUT, &[]);
    assert_eq!(line, "seccomp-refine: error: no container seccomp-refine-nosuch; `docker ps` lists the running ones");
}

/// Only the stand-ins for nginx and redis are built locally; any other image must be present or
/// pullable, and the error says which and how to get it.
#[test]
fn an_image_that_does_not_exist() {
    require!(tracer_missing().or_else(docker_missing));
    let out = output(seccomp_refine().args(["trace", "seccomp-refine-nosuch:latest", "--duration", "1s"]));
    one_line_error(
        &out,
        INPUT,
        &[
            "image seccomp-refine-nosuch:latest is not present and cannot be pulled",
            "(`docker pull seccomp-refine-nosuch:latest`) or build it (`cargo xtask images`",
        ],
    );
}

/// The traced workload exiting with an error is the run's failure, not bad input: exit 1, with
/// the workload's last log lines above the error (so only the last line is the error).
#[test]
fn a_workload_that_fails() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        seccomp_refine()
            .args(["trace", "nginx:latest", "--duration", "30s", "--no-static", "-o"])
            .arg(dir.path())
            .args(["--", "sh", "-c", "echo cannot-serve >&2; exit 3"]),
    );
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(RUNTIME), "{err}");
    assert_eq!(err.lines().filter(|line| line.starts_with("seccomp-refine: error:")).count(), 1, "{err}");
    assert!(err.lines().any(|line| line.contains("cannot-serve")), "{err}");
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("seccomp-refine: error: the container exited early with code 3"), "{last}");
    assert!(dir.path().join("trace.json").is_file(), "the trace is kept");
}

/// `seccomp-refine … | head` closes the pipe early: a quiet exit, not a panic with a backtrace.
#[test]
fn a_closed_stdout() {
    let mut child = seccomp_refine()
        .args(["syscalls", "--no-cache", "/bin/true"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
}
