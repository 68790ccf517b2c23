//! The unwinder and the entry rule on a real program: `tests/data/serving_loop.c`, built here
//! without frame pointers, writes its own registers, stack and maps at its first wait.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Builds and runs the stand-in server in `dir` (stripped of `.symtab` when `strip`); returns the
/// binary, the registers, the stack and the maps it wrote, or `None` when gcc is missing.
fn capture(dir: &Path, strip: bool) -> Option<(PathBuf, Registers, Vec<u8>, String)> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/serving_loop.c");
    let binary = dir.join("server");
    let built =
        Command::new("gcc").args(["-O2", "-fomit-frame-pointer", "-rdynamic", "-o"]).arg(&binary).arg(&source).status();
    let Ok(built) = built else {
        assert!(std::env::var_os("SECCOMP_REFINE_REQUIRE_PRIVILEGED").is_none(), "gcc is missing under xtask test");
        eprintln!("skipping test - gcc is not installed");
        return None;
    };
    assert!(built.success(), "gcc failed on {}", source.display());
    if strip {
        assert!(Command::new("strip").arg(&binary).status().unwrap().success());
    }
    let out = dir.join("out");
    assert!(Command::new(&binary).arg(&out).status().unwrap().success(), "the stand-in server failed");
    let file = |suffix: &str| std::fs::read(format!("{}.{suffix}", out.display())).unwrap();
    let words: Vec<u64> = file("regs").chunks(8).map(|word| u64::from_le_bytes(word.try_into().unwrap())).collect();
    let regs = Registers {
        ip: words[0],
        sp: words[1],
        bp: words[2],
        bx: words[3],
        r12: words[4],
        r13: words[5],
        r14: words[6],
        r15: words[7],
    };
    Some((binary, regs, file("stack"), String::from_utf8(file("maps")).unwrap()))
}

/// An executable mapping of `/proc/PID/maps` (path, start, end, offset) with its file's bytes.
type MappedFile = ((String, u64, u64, u64), Vec<u8>);

/// The executable mappings of `maps`, each with its file's bytes.
fn mapped_files(maps: &str) -> Vec<MappedFile> {
    executable_mappings(maps)
        .into_iter()
        .map(|found| {
            let bytes = std::fs::read(&found.0).unwrap();
            (found, bytes)
        })
        .collect()
}

fn mappings_of(files: &[MappedFile]) -> Vec<Mapping<'_>> {
    files
        .iter()
        .map(|((path, start, end, offset), bytes)| Mapping {
            path: path.clone(),
            start: *start,
            end: *end,
            offset: *offset,
            bytes,
        })
        .collect()
}

/// Unwinds what the stand-in wrote and derives its entry; returns the frames' labels, the entry
/// and the server's summary.
fn derive_from(strip: bool) -> Option<(Vec<String>, ServingEntry, ModuleSummary)> {
    let dir = tempfile::tempdir().unwrap();
    let (binary, regs, stack, maps) = capture(dir.path(), strip)?;
    let files = mapped_files(&maps);
    let mappings = mappings_of(&files);
    let server = elf::analyze(&std::fs::read(&binary).unwrap()).unwrap();
    // The C runtime is not analysed: its frames are named by file and offset.
    let summaries: Vec<Option<&ModuleSummary>> =
        mappings.iter().map(|mapping| (Path::new(&mapping.path) == binary).then_some(&server)).collect();
    let frames = unwind(&regs, &stack, &mappings);
    let entry = derive(&frames, &mappings, &summaries, "its first wait").unwrap();
    let in_libc = frames.iter().any(|frame| mappings[frame.mapping].path.contains("libc.so"));
    assert!(in_libc, "the unwinding goes through libc's start-up code: {:?}", entry.stack);
    Some((entry.stack.clone(), entry, server))
}

fn names(stack: &[String]) -> Vec<&str> {
    stack.iter().map(|frame| frame.split(['!', '+']).nth(1).unwrap_or(frame)).collect()
}

#[test]
fn a_stack_without_frame_pointers_unwinds_to_main_through_eh_frame() {
    let Some((stack, ..)) = derive_from(false) else { return };
    assert_eq!(
        names(&stack)[..5],
        ["wait_for_events", "process_events", "worker_cycle", "start_workers", "main"],
        "{stack:?}"
    );
    assert!(stack.iter().all(|frame| frame.starts_with("server!") || frame.starts_with("libc.so")), "{stack:?}");
    assert!(stack.last().unwrap().starts_with("server!_start+"), "up to the entry point: {stack:?}");
}

#[test]
fn the_entry_is_what_the_innermost_loop_around_the_wait_calls() {
    let Some((_, entry, server)) = derive_from(false) else { return };
    assert_eq!(entry.entry.function, "process_events");
    let callers: Vec<&str> = entry.callers.iter().map(|caller| caller.function.as_str()).collect();
    assert_eq!(callers, ["worker_cycle"], "the worker loop, not the outer loop of start_workers");
    let process_events = server.function_named("process_events").unwrap();
    assert_eq!(entry.entry.address, server.functions[process_events as usize].addr);
    assert!(entry.entry.binary.ends_with("/server"));
}

#[test]
fn a_stripped_server_names_its_static_looping_function_by_address() {
    let Some((_, named, _)) = derive_from(false) else { return };
    let Some((_, stripped, _)) = derive_from(true) else { return };
    // `process_events` is exported (-rdynamic); the worker cycle is static and loses its name.
    assert_eq!(stripped.entry.function, "process_events");
    assert_eq!(stripped.callers[0].function, format!("fn_{:x}", named.callers[0].address));
    assert_eq!(stripped.callers[0].address, named.callers[0].address);
}

#[test]
fn the_c_runtime_is_not_the_application() {
    assert!(!is_application("/lib/x86_64-linux-gnu/libc.so.6"));
    assert!(!is_application("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
    assert!(is_application("/usr/sbin/nginx"));
    assert!(is_application("/usr/lib/x86_64-linux-gnu/libapr-1.so.0.7.2"));
}

#[test]
fn proc_maps_keep_only_executable_files() {
    let maps = "55d0-55d1 r--p 00000000 fe:00 1 /usr/sbin/nginx\n\
                55d1-55d9 r-xp 00001000 fe:00 1 /usr/sbin/nginx\n\
                7f00-7f10 r-xp 00000000 00:00 0 \n\
                7ffd-7ffe r-xp 00000000 00:00 0 [vdso]\n";
    assert_eq!(executable_mappings(maps), [("/usr/sbin/nginx".to_owned(), 0x55d1, 0x55d9, 0x1000)]);
}

#[test]
fn without_the_application_analysed_there_is_no_entry_and_the_error_shows_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, regs, stack, maps)) = capture(dir.path(), false) else { return };
    let files = mapped_files(&maps);
    let mappings = mappings_of(&files);
    let frames = unwind(&regs, &stack, &mappings);
    let unanalysed = vec![None; mappings.len()];
    let why = derive(&frames, &mappings, &unanalysed, "its first wait").unwrap_err();
    assert!(why.starts_with("no function of the application calls another inside a loop around its first wait"));
    assert!(why.contains("server+0x") && why.contains(" ← "), "{why}");
}

#[test]
fn a_function_is_found_by_name_in_the_symbol_table_or_in_the_dynamic_one_when_stripped() {
    for strip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let Some((binary, ..)) = capture(dir.path(), strip) else { return };
        let bytes = std::fs::read(&binary).unwrap();
        let server = elf::analyze(&bytes).unwrap();
        let address = server.functions[server.function_named("process_events").unwrap() as usize].addr;
        let offset = symbol_offset(&bytes, "process_events");
        assert!(offset.is_some(), "stripped: {strip}");
        assert_eq!(offset, file_offset(&bytes, address), "stripped: {strip}");
        assert_eq!(symbol_offset(&bytes, "no_such_function"), None);
    }
}
