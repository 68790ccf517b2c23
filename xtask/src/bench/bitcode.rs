//! bitcode: `analyze --bitcode` on nginx's whole-program bitcode — parse and analysis time and peak
//! memory, with the libraries' summaries cold and cached.
//!
//! The peer here is a published figure, not a run: Temporal Specialization's SVF-based pipeline
//! (`docs/peers.md` § 2.1). The bitcode is `cargo xtask bitcode nginx`'s; the libraries are the
//! nginx stand-in's, from the root filesystem the static benchmark exports; the trace is a short
//! one of the stand-in.

use std::process::Command;

use anyhow::{Context as _, Result};

use super::harness::{Variant, interleave, median};
use super::report::{Bar, Section, Table};
use super::static_analysis::nginx_rootfs;
use super::{Context, output, timed};
use crate::project_root;

const GOAL_SECONDS: f64 = 10.0;
const GOAL_MEMORY_MB: f64 = 2048.0;
/// Temporal Specialization's published pipeline runtime for nginx, about 90 minutes
/// (`docs/peers.md` § 2.1): the one figure here that is not measured in the run.
const PUBLISHED_SECONDS: f64 = 5400.0;

pub fn run(context: &Context) -> Result<Section> {
    crate::bitcode::build(&["nginx".to_owned()])?;
    let bitcode = project_root().join("target/bitcode/nginx.bc");
    let root = nginx_rootfs()?;
    let work = std::env::temp_dir().join(format!("seccomp-refine-bench-bitcode-{}", std::process::id()));
    let trace_dir = work.join("trace");
    output(
        Command::new(&context.seccomp_refine)
            .args(["trace", "--force", "nginx:latest", "--no-static", "--duration", "5s", "-o"])
            .arg(&trace_dir),
    )?;
    let text = |path: &std::path::Path| path.to_str().context("non-UTF-8 path").map(str::to_owned);
    let (trace, bitcode, root) = (text(&trace_dir.join("trace.json"))?, text(&bitcode)?, text(&root)?);
    let (out, cache) = (text(&work.join("out"))?, text(&work.join("cache"))?);
    let analyze = |cache_args: &[&str]| -> Result<timed::Cost> {
        let mut args = vec![
            "analyze",
            "--force",
            trace.as_str(),
            "--bitcode",
            bitcode.as_str(),
            "--rootfs",
            root.as_str(),
            "-o",
            out.as_str(),
        ];
        args.extend_from_slice(cache_args);
        timed::run(&context.seccomp_refine, &args)
    };
    analyze(&["--cache-dir", &cache])?;
    let mut memory = [Vec::new(), Vec::new()];
    let [cold_memory, warm_memory] = &mut memory;
    let samples = {
        let mut variants = [
            Variant::new("libraries cold", || {
                let cost = analyze(&["--no-cache"])?;
                cold_memory.push(cost.peak_rss_mb);
                Ok(cost.elapsed)
            }),
            Variant::new("libraries cached", || {
                let cost = analyze(&["--cache-dir", &cache])?;
                warm_memory.push(cost.peak_rss_mb);
                Ok(cost.elapsed)
            }),
        ];
        interleave("seconds", false, context.rounds, &mut variants)?
    };
    std::fs::remove_dir_all(&work).ok();
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let mut table = Table::new(&["`analyze --bitcode nginx.bc`", "seconds (median)", "peak RSS (MB, median)", "goal"]);
    let mut bars = Vec::new();
    for (label, values) in [("libraries cold", &memory[0]), ("libraries cached", &memory[1])] {
        let (seconds, megabytes) = (samples.median(label), median(values));
        table.row(vec![
            label.to_owned(),
            format!("{seconds:.2}"),
            format!("{megabytes:.0}"),
            format!(
                "≤ {GOAL_SECONDS} s: {}; ≤ {GOAL_MEMORY_MB} MB: {}",
                met(seconds <= GOAL_SECONDS),
                met(megabytes <= GOAL_MEMORY_MB)
            ),
        ]);
        bars.push(Bar {
            chart: format!(
                "nginx bitcode analysis, seconds (Temporal Specialization: ~{PUBLISHED_SECONDS} s published)"
            ),
            label: format!("analyze --bitcode, {label}"),
            value: seconds,
            spread: None,
        });
    }
    table.row(vec![
        "Temporal Specialization (published, SVF)".to_owned(),
        format!("≈ {PUBLISHED_SECONDS}"),
        String::new(),
        String::new(),
    ]);
    Ok(Section {
        name: "bitcode".to_owned(),
        measured_at: String::new(),
        description: format!(
            "`seccomp-refine analyze TRACE --bitcode nginx.bc --rootfs ROOT`: nginx's whole-program bitcode \
             (`cargo xtask bitcode nginx`, clang-19 LTO) for the application, the stand-in's libraries from ELF, \
             {} measured rounds after {} warm-up. Goals: ≤ {GOAL_SECONDS} s, ≤ {GOAL_MEMORY_MB} MB. Temporal \
             Specialization reports about {} minutes for nginx (`docs/peers.md` § 2.1).",
            context.rounds.measured,
            context.rounds.warmup,
            PUBLISHED_SECONDS / 60.0
        ),
        tables: vec![table],
        samples: vec![samples],
        bars,
    })
}
