//! The inputs the fuzzers crashed on, replayed on stable through the very entry points the fuzz
//! targets call (`fuzz/fuzz_targets/entries.rs`, included here): each must now return, Ok or Err,
//! without a panic. They live in `tests/data/fuzz/<target>/`; the seeds in `fuzz/seeds/` run too,
//! so every entry is also exercised on input it accepts.

#[path = "../fuzz/fuzz_targets/entries.rs"]
mod entries;

use std::path::Path;

/// Every target with its entry point.
const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("scap", entries::scap),
    ("elf", entries::elf),
    ("trace_json", entries::trace_json),
    ("profile_json", entries::profile_json),
    ("bitcode", entries::bitcode),
];

/// The files directly in `dir`, sorted (none when it does not exist).
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.map(|entry| entry.unwrap().path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_stored_crash_input_and_seed_is_handled_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut replayed = 0;
    for (target, entry) in TARGETS {
        let seeds = inputs(&root.join("fuzz/seeds").join(target));
        let crashes = inputs(&root.join("tests/data/fuzz").join(target));
        for path in seeds.iter().chain(&crashes) {
            let bytes = std::fs::read(path).unwrap();
            // A panic names the input that caused it.
            let result = std::panic::catch_unwind(|| entry(&bytes));
            assert!(result.is_ok(), "{} panics", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs found");
}
