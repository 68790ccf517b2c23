//! enforce: what switching a live container to its serving profile costs.
//!
//! The nginx stand-in's profiles come from `trace` (with a curl workload and the static
//! analysis). Each round measures one nginx under its container profile (`seccomp.json`, no
//! enforcement) and one started by `seccomp-refine enforce` — workers switched, the marker uprobe
//! still attached to the master, which has not switched, as in production — under the same wrk
//! load, back to back. Every switch of
//! every round is timed by `enforce --stats`: how long the injector worked on the stopped process
//! (taking it up, seize, preflight, the calls, detach, SIGCONT) and how long from the uprobe hit
//! until it ran again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::harness::{Samples, Variant, VariantSamples, interleave, median};
use super::report::{Bar, Section, Table};
use super::tracer_overhead::{Background, wrk};
use super::{Context, docker_run, output};

/// Goals from the enforce issue.
const STOP_GOAL_US: f64 = 300.0;
const RESUME_GOAL_US: f64 = 1000.0;
const THROUGHPUT_GOAL: f64 = 0.99;
/// nginx's two workers switch at their first loop iteration.
const SWITCHES_PER_RUN: usize = 2;

pub fn run(context: &Context) -> Result<Section> {
    let work = std::env::temp_dir().join(format!("seccomp-refine-bench-enforce-{}", std::process::id()));
    let profiles = work.join("profiles");
    println!("  tracing nginx for its profiles");
    output(
        Command::new(&context.seccomp_refine)
            .args(["trace", "nginx:latest", "--duration", "60s", "-o"])
            .arg(&profiles)
            .args(["--workload", "curl -sf http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/ -o /dev/null"]),
    )?;
    let baseline = Confined::start(&profiles.join("seccomp.json"))?;
    let mut switches: Vec<Timed> = Vec::new();
    let samples = {
        let mut variants = [
            Variant::new("not enforced (seccomp.json)", || wrk(&baseline.url)),
            Variant::new("enforced (serving filter + uprobe)", || {
                let (throughput, mut timed) = enforced_round(context, &profiles, &work)?;
                switches.append(&mut timed);
                Ok(throughput)
            }),
        ];
        interleave("requests/s", true, context.rounds, &mut variants)?
    };
    drop(baseline);
    let _ = std::fs::remove_dir_all(&work);
    // Only the measured rounds' switches (the warm-up rounds come first).
    let measured = switches.split_off(context.rounds.warmup * SWITCHES_PER_RUN);
    Ok(section(context, samples, &measured))
}

/// A container under a profile, without enforcement; removed when dropped.
struct Confined {
    id: String,
    url: String,
}

impl Confined {
    fn start(profile: &Path) -> Result<Confined> {
        let seccomp = format!("seccomp={}", profile.display());
        let id = docker_run(&["--security-opt", &seccomp, "nginx:latest"])?;
        let confined = Confined { url: format!("http://{}/", ip_of(&id)?), id };
        wait_serving(&confined.url)?;
        Ok(confined)
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// One switch as `enforce --stats` timed it.
struct Timed {
    stop_us: f64,
    hit_to_resume_us: f64,
    preflight_cached: bool,
    /// The first switch of its container.
    first: bool,
}

/// One enforced run: start, wait for both switches, load, Ctrl-C; the throughput and the switches.
fn enforced_round(context: &Context, profiles: &Path, work: &Path) -> Result<(f64, Vec<Timed>)> {
    let (log, stats) = (work.join("enforce.log"), work.join("stats.json"));
    let child = Command::new(&context.seccomp_refine)
        .args(["enforce", "nginx:latest", "--profiles"])
        .arg(profiles)
        .arg("--stats")
        .arg(&stats)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start seccomp-refine enforce")?;
    let enforcer = Background::new(child);
    let container = RemoveOnDrop(wait_for_switches(&log)?);
    let url = format!("http://{}/", ip_of(&container.0)?);
    wait_serving(&url)?;
    let throughput = wrk(&url)?;
    enforcer.stop("INT")?;
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)?;
    let switches: Vec<Timed> = stats["switches"]
        .as_array()
        .context("no switches in --stats")?
        .iter()
        .filter(|switch| switch["outcome"] == "switched")
        .enumerate()
        .map(|(index, switch)| {
            let number = |key: &str| switch[key].as_f64().unwrap_or(f64::NAN);
            Timed {
                stop_us: number("stop_us"),
                hit_to_resume_us: number("hit_to_resume_us"),
                preflight_cached: switch["preflight_cached"] == true,
                first: index == 0,
            }
        })
        .collect();
    if switches.len() != SWITCHES_PER_RUN {
        bail!("expected {SWITCHES_PER_RUN} switches, --stats has: {stats}");
    }
    Ok((throughput, switches))
}

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// The container id from enforce's log, once both workers are switched.
fn wait_for_switches(log: &PathBuf) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let switched = text.lines().filter(|line| line.starts_with("seccomp-refine: switched pid ")).count();
        let id = text.lines().find_map(|line| {
            let rest = line.strip_prefix("seccomp-refine: enforcing ")?;
            Some(rest.split(" (").nth(1)?.split(')').next()?.to_owned())
        });
        match id {
            Some(id) if switched >= SWITCHES_PER_RUN => return Ok(id),
            _ if Instant::now() > deadline => {
                // Interrupted, enforce leaves the container it started running: remove it here.
                drop(id.map(RemoveOnDrop));
                bail!("enforce did not switch nginx's workers within 60 s:\n{text}")
            }
            _ => sleep(Duration::from_millis(100)),
        }
    }
}

fn ip_of(id: &str) -> Result<String> {
    output(Command::new("docker").args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", id]))
}

fn wait_serving(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new("curl").args(["-sf", "-o", "/dev/null", url]).status().is_ok_and(|status| status.success()) {
        if Instant::now() > deadline {
            bail!("nginx did not answer on {url} within 20 s");
        }
        sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn section(context: &Context, samples: Samples, switches: &[Timed]) -> Section {
    let ratio = samples.ratio("enforced (serving filter + uprobe)", "not enforced (seccomp.json)");
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let mut throughput = Table::new(&["nginx under wrk", "enforced / not enforced (median, range)", "goal"]);
    throughput.row(vec![
        "throughput".to_owned(),
        ratio.to_string(),
        format!("≥ {THROUGHPUT_GOAL} ({})", verdict(ratio.median >= THROUGHPUT_GOAL)),
    ]);
    let stops: Vec<f64> = switches.iter().map(|switch| switch.stop_us).collect();
    let resumes: Vec<f64> = switches.iter().map(|switch| switch.hit_to_resume_us).collect();
    let held = |wanted: fn(&Timed) -> bool| -> Vec<f64> {
        switches.iter().filter(|switch| wanted(switch)).map(|switch| switch.stop_us).collect()
    };
    let (first, cached, replayed) =
        (held(|switch| switch.first), held(|switch| switch.preflight_cached), held(|switch| !switch.preflight_cached));
    let mut timing = Table::new(&["per switch (µs)", "median", "range", "p90", "goal"]);
    for (what, values, goal) in [
        ("process held by the injector (pick-up → resume)", &stops, Some(STOP_GOAL_US)),
        ("… first switch of a container", &first, Some(STOP_GOAL_US)),
        ("… with the preflight's verdict cached (decided ahead of the hit)", &cached, None),
        ("… with the preflight replayed while held", &replayed, None),
        ("uprobe hit → running again", &resumes, Some(RESUME_GOAL_US)),
    ] {
        if values.is_empty() {
            timing.row(vec![what.to_owned(), "none".to_owned(), String::new(), String::new(), String::new()]);
            continue;
        }
        let med = median(values);
        let goal = goal.map_or_else(String::new, |goal| format!("≤ {goal} ({})", verdict(med <= goal)));
        let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &value| (lo.min(value), hi.max(value)));
        let range = format!("{min:.0}–{max:.0}");
        timing.row(vec![what.to_owned(), format!("{med:.0}"), range, format!("{:.0}", p90(values)), goal]);
    }
    let timings = Samples {
        metric: "µs".to_owned(),
        higher_is_better: false,
        variants: vec![
            VariantSamples { label: "stop".to_owned(), values: stops },
            VariantSamples { label: "hit-to-resume".to_owned(), values: resumes },
        ],
    };
    Section {
        name: "enforce".to_owned(),
        measured_at: String::new(),
        description: format!(
            "nginx stand-in with its traced profiles: `enforce` (workers switched to seccomp-serving.json, the marker \
             uprobe left only on the master, which has not switched) against the same image under seccomp.json alone, `wrk` as in tracer-overhead, {} \
             measured rounds after {} warm-up, interleaved; {} switches timed by `enforce --stats` in the measured \
             rounds. Goals: held ≤ {STOP_GOAL_US} µs, the first switch of each container included, and \
             hit-to-resume ≤ {RESUME_GOAL_US} µs (medians), throughput ≥ {THROUGHPUT_GOAL}.",
            context.rounds.measured,
            context.rounds.warmup,
            switches.len()
        ),
        tables: vec![throughput, timing],
        bars: vec![Bar {
            chart: "enforce: nginx throughput enforced / not enforced (wrk)".to_owned(),
            label: "enforced".to_owned(),
            value: ratio.median,
            spread: Some((ratio.min, ratio.max)),
        }],
        samples: vec![samples, timings],
    }
}

fn p90(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len => sorted[((len as f64 * 0.9).ceil() as usize).clamp(1, len) - 1],
    }
}
