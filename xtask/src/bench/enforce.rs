//! enforce: what switching a live container to its serving profile costs.
//!
//! The nginx stand-in's profiles come from `trace` (with a curl workload and the static
//! analysis). Each round measures one nginx under its container profile (`seccomp.json`, no
//! enforcement) and one started by `seccomp-refine enforce` — workers switched, the marker uprobe
//! still attached to the master, which has not switched, as in production — under the same wrk
//! load, in short slices alternated between the two, so that what else the machine runs meanwhile
//! weighs on both alike; the not-enforced container's slices against each other say how much of a
//! difference is noise. Every switch of every round is timed by `enforce --stats`: how long the
//! injector worked on the stopped process (taking it up, seize, preflight, the calls, detach,
//! SIGCONT) and how long from the uprobe hit until it ran again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::harness::{Ratio, Samples, VariantSamples, at_least, median, range};
use super::report::{Bar, Section, Table};
use super::tracer_overhead::{Background, wrk_for};
use super::{Context, docker_run, output};

/// Goals from the enforce issue.
const STOP_GOAL_US: f64 = 300.0;
const RESUME_GOAL_US: f64 = 1000.0;
const THROUGHPUT_GOAL: f64 = 0.99;
/// nginx's two workers switch at their first loop iteration.
const SWITCHES_PER_RUN: usize = 2;
/// wrk slices per container and round, alternated (not enforced first in even pairs, enforced
/// first in odd ones): one 10-second run of each, one after the other, put the ratio anywhere from
/// 0.67 to 1.19 with a compile running beside it on 2 cores.
const SLICES: usize = 4;
const SLICE_SECONDS: u64 = 3;
/// A first load of a fresh container (its caches), not measured.
const WARM_SECONDS: u64 = 1;
/// Containers started per measured round only to time their switches: one first switch per
/// round made its median swing from 283 to 480 µs between two runs of the same code.
const STARTS_PER_ROUND: usize = 2;
const BASELINE: &str = "not enforced (seccomp.json)";
const ENFORCED: &str = "enforced (serving filter + uprobe)";

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
    let mut rounds = Vec::with_capacity(context.rounds.measured);
    for round in 0..context.rounds.warmup + context.rounds.measured {
        let measured =
            enforced_round(context, &profiles, &work, &baseline.url).with_context(|| format!("round {}", round + 1))?;
        println!(
            "  round {:>2} {:.0} requests/s not enforced, {:.0} enforced",
            round + 1,
            mean(&measured.baseline),
            mean(&measured.enforced)
        );
        if round >= context.rounds.warmup {
            rounds.push(measured);
        }
    }
    drop(baseline);
    println!("  {} more starts for the switch timings", STARTS_PER_ROUND * context.rounds.measured);
    let mut started = Vec::new();
    for start in 0..STARTS_PER_ROUND * context.rounds.measured {
        let (enforcer, container, stats) =
            start_enforced(context, &profiles, &work).with_context(|| format!("start {}", start + 1))?;
        enforcer.stop("INT")?;
        drop(container);
        started.extend(switches_of(&stats)?);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(section(context, &rounds, &started))
}

/// One measured round: requests/s of each wrk slice, and the switches.
struct Round {
    baseline: Vec<f64>,
    enforced: Vec<f64>,
    switches: Vec<Timed>,
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
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

/// One enforced run: start, wait for both switches, load both containers in turns, Ctrl-C.
fn enforced_round(context: &Context, profiles: &Path, work: &Path, baseline_url: &str) -> Result<Round> {
    let (enforcer, container, stats) = start_enforced(context, profiles, work)?;
    let url = format!("http://{}/", ip_of(&container.0)?);
    wait_serving(&url)?;
    wrk_for(&url, WARM_SECONDS)?;
    let (mut baseline, mut enforced) = (Vec::with_capacity(SLICES), Vec::with_capacity(SLICES));
    for slice in 0..SLICES {
        let pair = [(baseline_url, true), (url.as_str(), false)];
        let order = if slice % 2 == 0 { pair } else { [pair[1], pair[0]] };
        for (url, is_baseline) in order {
            let throughput = wrk_for(url, SLICE_SECONDS)?;
            if is_baseline { baseline.push(throughput) } else { enforced.push(throughput) }
        }
    }
    enforcer.stop("INT")?;
    Ok(Round { baseline, enforced, switches: switches_of(&stats)? })
}

/// `enforce` started on a fresh nginx container, once both workers are switched: the enforcer,
/// the container and where `--stats` goes.
fn start_enforced(context: &Context, profiles: &Path, work: &Path) -> Result<(Background, RemoveOnDrop, PathBuf)> {
    let (log, stats) = (work.join("enforce.log"), work.join("stats.json"));
    // What the previous run wrote must not pass for this one's.
    let _ = std::fs::remove_file(&stats);
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
    Ok((enforcer, container, stats))
}

/// The switches a stopped `enforce` wrote to `--stats`, in order.
fn switches_of(stats: &Path) -> Result<Vec<Timed>> {
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stats)?)?;
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
    Ok(switches)
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

fn section(context: &Context, rounds: &[Round], started: &[Timed]) -> Section {
    let per_round = |values: fn(&Round) -> &Vec<f64>| rounds.iter().map(|round| mean(values(round))).collect();
    let samples = Samples {
        metric: "requests/s".to_owned(),
        higher_is_better: true,
        variants: vec![
            VariantSamples { label: BASELINE.to_owned(), values: per_round(|round| &round.baseline) },
            VariantSamples { label: ENFORCED.to_owned(), values: per_round(|round| &round.enforced) },
        ],
    };
    let ratio = samples.ratio(ENFORCED, BASELINE);
    let noise = noise(rounds);
    let switches: Vec<&Timed> = rounds.iter().flat_map(|round| &round.switches).chain(started).collect();
    let mut throughput = Table::new(&["nginx under wrk", "enforced / not enforced (median, range)", "goal"]);
    throughput.row(vec![
        "throughput".to_owned(),
        ratio.to_string(),
        at_least(THROUGHPUT_GOAL, ratio, noise, "the not-enforced container"),
    ]);
    throughput.row(vec![
        "not enforced against itself (its even slices / its odd ones: the noise)".to_owned(),
        noise.to_string(),
        String::new(),
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
        let goal = goal.map_or_else(String::new, |goal| match med <= goal {
            true => format!("≤ {goal} (met)"),
            false => format!("≤ {goal} (not met, by {:.0} µs)", med - goal),
        });
        let (min, max) = range(values);
        timing.row(vec![
            what.to_owned(),
            format!("{med:.0}"),
            format!("{min:.0}–{max:.0}"),
            format!("{:.0}", p90(values)),
            goal,
        ]);
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
             uprobe left only on the master, which has not switched) against the same image under seccomp.json alone, `wrk` as in tracer-overhead \
             in {SLICES} slices of {SLICE_SECONDS} s per container and round, alternated, after {WARM_SECONDS} s of \
             warm-up of the fresh enforced container; {} measured rounds after {} warm-up; {} switches timed by \
             `enforce --stats` in the measured rounds and in {} more containers started for them alone. Goals: held ≤ {STOP_GOAL_US} µs, the first switch of each \
             container included, and hit-to-resume ≤ {RESUME_GOAL_US} µs (medians), throughput ≥ {THROUGHPUT_GOAL}.",
            context.rounds.measured,
            context.rounds.warmup,
            switches.len(),
            started.len() / SWITCHES_PER_RUN
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

/// Per round, the not-enforced container's even slices against its odd ones: how far two
/// measures of one and the same thing differ here.
fn noise(rounds: &[Round]) -> Ratio {
    let halves = |parity: usize, round: &Round| -> f64 {
        let slices: Vec<f64> = round.baseline.iter().skip(parity).step_by(2).copied().collect();
        mean(&slices)
    };
    let ratios: Vec<f64> = rounds.iter().map(|round| halves(0, round) / halves(1, round)).collect();
    Ratio::of(&ratios)
}

fn p90(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len => sorted[((len as f64 * 0.9).ceil() as usize).clamp(1, len) - 1],
    }
}
