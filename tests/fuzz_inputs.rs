//! The inputs the fuzzers crashed on, replayed on stable through the very entry points the fuzz
//! targets call (`fuzz/fuzz_targets/entries.rs`, included here): each must now return, Ok or Err,
//! without a panic. They live in `tests/data/fuzz/<target>/`; the seeds in `fuzz/seeds/` run too,
//! so every entry is also exercised on input it accepts.

#[path = "../fuzz/fuzz_targets/entries.rs"]
mod entries;

use std::path::{Path, PathBuf};

/// A fuzz target: its entry point, and real inputs it accepts besides its seeds in `fuzz/seeds/`
/// (relative paths are from the repository root).
struct Target {
    name: &'static str,
    entry: fn(&[u8]),
    accepted: &'static [&'static str],
}

const TARGETS: &[Target] = &[
    Target { name: "scap", entry: entries::scap, accepted: &["tests/data/scap/synthetic_modern_exit_only.scap"] },
    Target { name: "elf", entry: entries::elf, accepted: &["/bin/true"] },
    Target { name: "trace_json", entry: entries::trace_json, accepted: &[] },
    Target { name: "profile_json", entry: entries::profile_json, accepted: &[] },
    Target { name: "bitcode", entry: entries::bitcode, accepted: &[] },
];

/// The files directly in `dir`, sorted (none when it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.map(|entry| entry.unwrap().path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

/// A fuzz target missing here would never be replayed.
#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest).unwrap_or_else(|err| panic!("{}: {err}", manifest.display()));
    let declared: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| bin.lines().find_map(|line| line.strip_prefix("name = \"")?.strip_suffix('"')))
        .collect();
    let replayed: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
    assert_eq!(declared, replayed, "fuzz/Cargo.toml's targets and the ones replayed here");
}

#[test]
fn every_stored_crash_input_and_seed_is_handled_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for Target { name, entry, accepted } in TARGETS {
        let mut files = inputs(&root.join("fuzz/seeds").join(name));
        files.extend(accepted.iter().map(|path| root.join(path)));
        files.extend(inputs(&root.join("tests/data/fuzz").join(name)));
        assert!(!files.is_empty(), "{name}: no inputs to replay (add seeds to fuzz/seeds/{name}/)");
        for path in files {
            let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            let result = std::panic::catch_unwind(|| entry(&bytes));
            assert!(result.is_ok(), "{name}: {} panics", path.display());
        }
    }
}
