//! static: the nginx image's binary and libraries analysed by `seccomp-refine syscalls`, cold
//! (no cache) and warm (summaries cached by build-id), against `objdump -d` over the same files —
//! the first step of the seed's and Confine's pipelines — in the same run.
//!
//! The files are the stand-in's `/usr/sbin/nginx` and what `ldd` inside its root lists for it,
//! taken from a root filesystem exported once into `target/bench/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::harness::{Ratio, Variant, interleave, median};
use super::report::{Bar, Section, Table};
use super::{Context, output, timed};
use crate::project_root;

const GOAL_COLD_RATIO: f64 = 0.25;
const GOAL_COLD_SECONDS: f64 = 1.0;
const GOAL_WARM_SECONDS: f64 = 0.1;
const GOAL_RSS_MB: f64 = 300.0;

pub fn run(context: &Context) -> Result<Section> {
    let root = nginx_rootfs()?;
    let files = nginx_files(&root)?;
    let host_paths: Vec<PathBuf> = files.iter().map(|file| root.join(file.trim_start_matches('/'))).collect();
    let cache = std::env::temp_dir().join(format!("seccomp-refine-bench-cache-{}", std::process::id()));
    let root_arg = root.to_str().context("non-UTF-8 path")?.to_owned();
    let cache_arg = cache.to_str().context("non-UTF-8 path")?.to_owned();
    // One run fills the cache the warm variant reads.
    timed::run(
        &context.seccomp_refine,
        &["syscalls", "--rootfs", &root_arg, "--cache-dir", &cache_arg, "/usr/sbin/nginx"],
    )?;
    let mut rss = [Vec::new(), Vec::new()];
    let [cold_rss, warm_rss] = &mut rss;
    // CPU seconds of cold, warm and objdump, every round: on a loaded machine the wall time of a
    // parallel program says more about its neighbours than about it; the work it does does not.
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let [cold_cpu, warm_cpu, objdump_cpu] = &mut cpu;
    let samples = {
        let mut variants = [
            Variant::new("seccomp-refine cold", || {
                let cost = timed::run(
                    &context.seccomp_refine,
                    &["syscalls", "--rootfs", &root_arg, "--no-cache", "/usr/sbin/nginx"],
                )?;
                cold_rss.push(cost.peak_rss_mb);
                cold_cpu.push(cost.cpu_seconds);
                Ok(cost.elapsed)
            }),
            Variant::new("seccomp-refine warm", || {
                let cost = timed::run(
                    &context.seccomp_refine,
                    &["syscalls", "--rootfs", &root_arg, "--cache-dir", &cache_arg, "/usr/sbin/nginx"],
                )?;
                warm_rss.push(cost.peak_rss_mb);
                warm_cpu.push(cost.cpu_seconds);
                Ok(cost.elapsed)
            }),
            Variant::new("objdump -d", || {
                let mut args = vec!["-d"];
                args.extend(host_paths.iter().map(|path| path.to_str().expect("UTF-8 path")));
                let cost = timed::run(Path::new("objdump"), &args)?;
                objdump_cpu.push(cost.cpu_seconds);
                Ok(cost.elapsed)
            }),
        ];
        interleave("seconds", false, context.rounds, &mut variants)?
    };
    std::fs::remove_dir_all(&cache).ok();
    let cold = samples.ratio("seccomp-refine cold", "objdump -d");
    let warm = samples.ratio("seccomp-refine warm", "objdump -d");
    let (cold_seconds, warm_seconds) = (samples.median("seccomp-refine cold"), samples.median("seccomp-refine warm"));
    let peak_rss = rss.iter().flatten().copied().fold(0.0, f64::max);
    let met = |ok: bool| if ok { "met" } else { "not met" };
    let measured = |values: &[f64]| values[values.len() - context.rounds.measured..].to_vec();
    let cpu_ratio = |values: &[f64]| {
        let ratios: Vec<f64> =
            measured(values).iter().zip(measured(&cpu[2])).map(|(value, objdump)| value / objdump).collect();
        Ratio::of(&ratios)
    };
    let cold_cpu = cpu_ratio(&cpu[0]);
    let cold_goal = if cold.median <= GOAL_COLD_RATIO {
        "met".to_owned()
    } else {
        // The CPU work divided by the cores is the wall time's floor: past it, only less work helps.
        // How busy the cores were says how far above the floor the run is.
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let busy: Vec<f64> = measured(&cpu[0])
            .iter()
            .zip(samples.values("seccomp-refine cold"))
            .map(|(cpu, wall)| cpu / (wall * cores as f64))
            .collect();
        format!(
            "not met, by {:.0} % (its CPU time is {:.2}× objdump's, so on {cores} cores fully used the floor is {:.2}×; \
             they were busy for {:.0} % of its wall time)",
            (cold.median / GOAL_COLD_RATIO - 1.0) * 100.0,
            cold_cpu.median,
            cold_cpu.median / cores as f64,
            median(&busy) * 100.0
        )
    };
    let mut table = Table::new(&[
        "variant",
        "time / objdump time (median, range)",
        "CPU time / objdump CPU time (median, range)",
        "seconds (median)",
        "CPU seconds (median)",
        "peak RSS (MB)",
        "goal",
    ]);
    table.row(vec![
        "cold (no cache)".to_owned(),
        cold.to_string(),
        cold_cpu.to_string(),
        format!("{cold_seconds:.3}"),
        format!("{:.3}", median(&measured(&cpu[0]))),
        format!("{:.0}", median(&rss[0])),
        format!(
            "≤ {GOAL_COLD_RATIO}× objdump: {cold_goal}; ≤ {GOAL_COLD_SECONDS} s: {}",
            met(cold_seconds <= GOAL_COLD_SECONDS)
        ),
    ]);
    table.row(vec![
        "warm (build-id cache)".to_owned(),
        warm.to_string(),
        cpu_ratio(&cpu[1]).to_string(),
        format!("{warm_seconds:.3}"),
        format!("{:.3}", median(&measured(&cpu[1]))),
        format!("{:.0}", median(&rss[1])),
        format!("≤ {GOAL_WARM_SECONDS} s: {}", met(warm_seconds <= GOAL_WARM_SECONDS)),
    ]);
    table.row(vec![
        "objdump -d".to_owned(),
        "1".to_owned(),
        "1".to_owned(),
        format!("{:.3}", samples.median("objdump -d")),
        format!("{:.3}", median(&measured(&cpu[2]))),
        String::new(),
        format!("peak RSS ≤ {GOAL_RSS_MB} MB: {}", met(peak_rss <= GOAL_RSS_MB)),
    ]);
    let libraries = files.len() - 1;
    let bar = |label: &str, ratio: super::harness::Ratio| Bar {
        chart: format!("static analysis: time / objdump -d time (nginx + {libraries} libraries)"),
        label: label.to_owned(),
        value: ratio.median,
        spread: Some((ratio.min, ratio.max)),
    };
    Ok(Section {
        name: "static".to_owned(),
        measured_at: String::new(),
        description: format!(
            "`seccomp-refine syscalls --rootfs ROOT /usr/sbin/nginx` over the nginx stand-in's binary and the {} \
             libraries `ldd` lists ({}), cold (`--no-cache`) and warm (summaries cached by build-id), against \
             `objdump -d` over the same files, interleaved, {} measured rounds after {} warm-up; CPU time (user + \
             system) beside wall time, since on a shared machine the wall time of a parallel run follows the load. \
             Goals: cold ≤ \
             {GOAL_COLD_RATIO}× objdump and ≤ {GOAL_COLD_SECONDS} s, warm ≤ {GOAL_WARM_SECONDS} s, peak RSS ≤ \
             {GOAL_RSS_MB} MB.",
            libraries,
            files.join(", "),
            context.rounds.measured,
            context.rounds.warmup
        ),
        tables: vec![table],
        samples: vec![samples],
        bars: vec![bar("cold", cold), bar("warm", warm)],
    })
}

/// The nginx stand-in's files, exported once into `target/bench/nginx-rootfs`.
pub fn nginx_rootfs() -> Result<PathBuf> {
    let root = project_root().join("target/bench/nginx-rootfs");
    if root.join("usr/sbin/nginx").exists() {
        return Ok(root);
    }
    let partial = root.with_extension("partial");
    std::fs::remove_dir_all(&partial).ok();
    std::fs::create_dir_all(&partial)?;
    let id = output(Command::new("docker").args(["create", "nginx:latest"]))?;
    let export =
        Command::new("sh").args(["-c", "docker export \"$1\" | tar -x -C \"$2\"", "sh", &id]).arg(&partial).status();
    output(Command::new("docker").args(["rm", &id]))?;
    if !export.is_ok_and(|status| status.success()) {
        bail!("cannot export the nginx:latest stand-in into {}", partial.display());
    }
    std::fs::rename(&partial, &root)?;
    Ok(root)
}

/// `/usr/sbin/nginx` and the libraries `ldd` resolves for it inside `root`.
fn nginx_files(root: &Path) -> Result<Vec<String>> {
    let listing = output(Command::new("chroot").arg(root).args(["/usr/bin/ldd", "/usr/sbin/nginx"]))?;
    let mut files = vec!["/usr/sbin/nginx".to_owned()];
    for line in listing.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, or the interpreter's bare path.
        let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            files.push(path.to_owned());
        }
    }
    Ok(files)
}
