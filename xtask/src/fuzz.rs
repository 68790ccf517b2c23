//! `cargo xtask fuzz`: runs the libFuzzer targets of `fuzz/` one after the other.
//!
//! The targets need nightly and cargo-fuzz, which the product's build never does, so they live in
//! their own workspace and only this command runs them. Each run starts from the corpus left by
//! the last one, seeded on first use from real inputs (the `.scap` fixtures, small ELF files of
//! this machine, the committed seeds in `fuzz/seeds/`). A crash leaves its input in
//! `fuzz/artifacts/TARGET/`; once fixed, it belongs in `tests/data/fuzz/TARGET/`, which the normal
//! test suite replays on stable.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::machine::{on_path, run as run_cmd};
use crate::project_root;

/// The targets, in the order `fuzz` without a name runs them, with the longest input each may get.
const TARGETS: &[(&str, usize)] = &[
    ("scap", 64 * 1024),
    ("elf", 64 * 1024),
    ("trace_json", 16 * 1024),
    ("profile_json", 16 * 1024),
    ("bitcode", 4096),
];
/// Seconds per target when `--time` is not given.
const DEFAULT_SECONDS: u64 = 60;
/// ELF seeds are real files, but small ones: the fuzzer mutates faster on short inputs.
const ELF_SEED_LIMIT: u64 = 24 * 1024;
const ELF_SEEDS: usize = 6;
/// Captures are cut to their first blocks (a section header, process list, the first events).
const SCAP_SEED_LIMIT: usize = 16 * 1024;

/// Fuzzes `target` (or every target, splitting `seconds` between them) for `seconds`.
pub fn run(target: Option<&str>, seconds: Option<u64>) -> Result<()> {
    let targets: Vec<(&str, usize)> = match target {
        Some(name) => vec![*TARGETS.iter().find(|(known, _)| *known == name).with_context(|| {
            let names: Vec<&str> = TARGETS.iter().map(|(known, _)| *known).collect();
            format!("no fuzz target `{name}`; the targets are {}", names.join(", "))
        })?],
        None => TARGETS.to_vec(),
    };
    let each = match (seconds, target) {
        (Some(total), None) => (total / targets.len() as u64).max(1),
        (Some(total), Some(_)) => total,
        (None, _) => DEFAULT_SECONDS,
    };
    install_cargo_fuzz()?;
    let mut summaries = Vec::new();
    for (name, max_len) in targets {
        seed(name)?;
        summaries.push(format!("{name}: {}", fuzz_one(name, max_len, each)?));
    }
    for summary in summaries {
        println!("xtask: fuzz {summary}");
    }
    Ok(())
}

fn install_cargo_fuzz() -> Result<()> {
    if on_path("cargo-fuzz") {
        return Ok(());
    }
    println!("xtask: cargo install cargo-fuzz --locked");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]).env_remove("RUSTUP_TOOLCHAIN"))
}

/// Runs one target for `seconds`; returns libFuzzer's closing line ("Done N runs in S second(s)").
fn fuzz_one(name: &str, max_len: usize, seconds: u64) -> Result<String> {
    let fuzz_dir = project_root().join("fuzz");
    let mut cargo = Command::new("rustup");
    cargo
        .current_dir(&fuzz_dir)
        .args(["run", "nightly", "cargo", "fuzz", "run", name])
        .arg(corpus_dir(name))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        // libFuzzer's default is one process, which suits a shared machine (`-jobs=N` would fork
        // workers that log to files). A slow input counts as a failure, as does 2 GiB of memory.
        .args(["-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1"])
        // The scap reader frames on a scoped thread: LeakSanitizer can look while that joined
        // thread is still running std's own TLS destructors and report its bookkeeping (seen once in
        // 38k runs, not reproducible with the input). Memory growth is still caught by the RSS limit.
        .args((name == "scap").then_some("-detect_leaks=0"))
        .stderr(Stdio::piped());
    // The outer `cargo xtask` exports its own toolchain and flags; they must not leak into nightly.
    for var in ["RUSTC", "RUSTC_WRAPPER", "RUSTFLAGS", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"] {
        cargo.env_remove(var);
    }
    println!("xtask: fuzzing {name} for {seconds} s");
    let mut child = cargo.spawn().context("cannot start `cargo fuzz` (is the nightly toolchain installed?)")?;
    let mut done = None;
    for line in BufReader::new(child.stderr.take().expect("stderr is piped")).lines().map_while(Result::ok) {
        eprintln!("{line}");
        if line.starts_with("Done ") {
            done = Some(line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "fuzz target {name} failed ({status}): the input is in {}; fix the bug, then add the input to \
             tests/data/fuzz/{name}/",
            fuzz_dir.join("artifacts").join(name).display()
        );
    }
    Ok(done.unwrap_or_else(|| "finished".to_owned()))
}

fn corpus_dir(name: &str) -> PathBuf {
    project_root().join("fuzz/corpus").join(name)
}

/// Fills an empty corpus with real inputs, plus the stored crash inputs (so they stay covered).
fn seed(name: &str) -> Result<()> {
    let corpus = corpus_dir(name);
    std::fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    if std::fs::read_dir(&corpus)?.next().is_some() {
        return Ok(());
    }
    let root = project_root();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in [root.join("fuzz/seeds").join(name), root.join("tests/data/fuzz").join(name)] {
        seeds.extend(files_in(&dir)?.into_iter().map(|path| read_seed(&path, usize::MAX)).collect::<Result<Vec<_>>>()?);
    }
    match name {
        "scap" => {
            for path in files_in(&root.join("tests/data/scap"))? {
                if path.extension().is_some_and(|ext| ext == "scap") {
                    seeds.push(read_seed(&path, SCAP_SEED_LIMIT)?);
                }
            }
        }
        "elf" => {
            for path in small_elf_files(Path::new("/usr/lib/x86_64-linux-gnu"))? {
                seeds.push(read_seed(&path, usize::MAX)?);
            }
        }
        _ => {}
    }
    if seeds.is_empty() {
        bail!("no seeds for fuzz target {name}");
    }
    for (file, bytes) in seeds {
        std::fs::write(corpus.join(file), bytes)?;
    }
    Ok(())
}

fn read_seed(path: &Path, limit: usize) -> Result<(String, Vec<u8>)> {
    let mut bytes = std::fs::read(path).with_context(|| format!("cannot read seed {}", path.display()))?;
    bytes.truncate(limit);
    let file = path.file_name().expect("a file").to_string_lossy().into_owned();
    Ok((file, bytes))
}

/// The regular files in `dir`, sorted (none when it does not exist).
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A few small shared libraries, so the seeds have dynamic sections, PLTs and `.eh_frame`.
fn small_elf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut small = Vec::new();
    for path in files_in(dir)? {
        let is_library = path.file_name().is_some_and(|file| file.to_string_lossy().contains(".so"));
        let size = std::fs::metadata(&path)?.len();
        if is_library && size <= ELF_SEED_LIMIT && std::fs::read(&path)?.starts_with(b"\x7fELF") {
            small.push(path);
        }
        if small.len() == ELF_SEEDS {
            break;
        }
    }
    Ok(small)
}
