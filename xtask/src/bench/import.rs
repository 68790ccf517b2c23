//! import: a large generated capture, `seccomp-refine import` against `sysdig -r` with the
//! equivalent container filter, at two sizes.
//!
//! The capture is the psp fixture's events replayed many times (`cargo xtask gen-capture`),
//! uncompressed so the comparison is of the readers, not of zlib. Both tools read the same file
//! in alternating rounds; the figure is elapsed seconds, reported as throughput and as sysdig's
//! time over ours. Peak RSS is recorded at both sizes: memory must stay flat as the capture grows.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::harness::{Variant, interleave};
use super::report::{Bar, Section, Table};
use super::{Context, timed};
use crate::{gen_capture, project_root};

const CONTAINER: &str = "697956520d89";
/// Replays of the fixture's events: about 267 MB and 1 GB.
const SIZES: [u32; 2] = [1000, 4000];
const GOAL_SPEEDUP: f64 = 5.0;
const GOAL_MB_PER_S: f64 = 300.0;

pub fn run(context: &Context) -> Result<Section> {
    let mut table = Table::new(&[
        "capture",
        "sysdig time / import time (median, range)",
        "import MB/s",
        "sysdig MB/s",
        "import peak RSS (MB)",
        "sysdig peak RSS (MB)",
        "goals",
    ]);
    let mut samples = Vec::new();
    let mut bars = Vec::new();
    for repeat in SIZES {
        let capture = capture(repeat)?;
        let megabytes = std::fs::metadata(&capture)?.len() as f64 / 1e6;
        let out = std::env::temp_dir().join(format!("seccomp-refine-bench-import-{}", std::process::id()));
        let capture_arg = capture.to_str().context("non-UTF-8 path")?;
        let out_arg = out.to_str().context("non-UTF-8 path")?;
        let filter = format!("container.id={CONTAINER}");
        let mut rss = [Vec::new(), Vec::new()];
        let [import_rss, sysdig_rss] = &mut rss;
        let measured = {
            let mut variants = [
                Variant::new("seccomp-refine import", || {
                    let args =
                        ["import", "--force", "--no-static", capture_arg, "--container", CONTAINER, "-o", out_arg];
                    let cost = timed::run(&context.seccomp_refine, &args)?;
                    import_rss.push(cost.peak_rss_mb);
                    Ok(cost.elapsed)
                }),
                Variant::new("sysdig -r", || {
                    let cost = timed::run(Path::new("sysdig"), &["-r", capture_arg, "-p", "%evt.type", &filter])?;
                    sysdig_rss.push(cost.peak_rss_mb);
                    Ok(cost.elapsed)
                }),
            ];
            interleave("seconds", false, context.rounds, &mut variants)?
        };
        std::fs::remove_dir_all(&out).ok();
        let speedup = measured.ratio("sysdig -r", "seccomp-refine import");
        let import_rate = megabytes / measured.median("seccomp-refine import");
        let met = |ok: bool| if ok { "met" } else { "not met" };
        table.row(vec![
            format!("{megabytes:.0} MB"),
            speedup.to_string(),
            format!("{import_rate:.0}"),
            format!("{:.0}", megabytes / measured.median("sysdig -r")),
            format!("{:.1}", super::harness::median(&rss[0])),
            format!("{:.1}", super::harness::median(&rss[1])),
            format!(
                "≥ {GOAL_SPEEDUP}× sysdig: {}; ≥ {GOAL_MB_PER_S} MB/s: {}",
                met(speedup.median >= GOAL_SPEEDUP),
                met(import_rate >= GOAL_MB_PER_S)
            ),
        ]);
        bars.push(Bar {
            chart: "import: sysdig time / seccomp-refine import time".to_owned(),
            label: format!("{megabytes:.0} MB capture"),
            value: speedup.median,
            spread: Some((speedup.min, speedup.max)),
        });
        samples.push(measured);
    }
    Ok(Section {
        name: "import".to_owned(),
        measured_at: String::new(),
        description: format!(
            "The psp fixture's events replayed into uncompressed captures (`cargo xtask gen-capture`), read by \
             `seccomp-refine import --no-static --container {CONTAINER}` (the capture alone, as sysdig reads it) and by `sysdig -r FILE -p %evt.type container.id={CONTAINER}`, \
             alternating, {} measured rounds after {} warm-up. Goals: ≥ {GOAL_SPEEDUP}× sysdig's speed, \
             ≥ {GOAL_MB_PER_S} MB/s, memory flat as the capture grows.",
            context.rounds.measured, context.rounds.warmup
        ),
        tables: vec![table],
        samples,
        bars,
    })
}

/// The generated capture for `repeat` replays, made once and kept under `target/bench/`.
fn capture(repeat: u32) -> Result<PathBuf> {
    let dir = project_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("psp-x{repeat}.scap"));
    if !path.exists() {
        let fixture = gen_capture::default_fixture();
        println!("xtask: generating {} ({repeat} replays of {})", path.display(), fixture.display());
        let partial = path.with_extension("partial");
        gen_capture::generate(&fixture, repeat, &partial)?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}
