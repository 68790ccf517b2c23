//! Running a command under GNU time: elapsed and CPU seconds and peak RSS of a whole process.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What one run of a command cost.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub elapsed: f64,
    /// User and system time of the process and its children.
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
}

/// Runs `program args…` with stdout discarded and returns its cost; fails if it fails.
pub fn run(program: &Path, args: &[&str]) -> Result<Cost> {
    let report = tempfile_path();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %U %S %M", "-o"])
        .arg(&report)
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .context("cannot run /usr/bin/time (apt-get install time)")?;
    if !out.status.success() {
        bail!("{} {args:?} failed: {}", program.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = std::fs::read_to_string(&report)?;
    std::fs::remove_file(&report)?;
    let fields: Vec<f64> = text.split_whitespace().filter_map(|field| field.parse().ok()).collect();
    let [elapsed, user, system, rss_kb] = fields[..] else { bail!("unexpected GNU time output: {text}") };
    Ok(Cost { elapsed, cpu_seconds: user + system, peak_rss_mb: rss_kb / 1024.0 })
}

fn tempfile_path() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "seccomp-refine-time-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}
