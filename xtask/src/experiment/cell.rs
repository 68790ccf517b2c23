//! One cell of the experiment: one application on one Debian release, from image to judged profile.
//!
//! Every step is the product's own command line: `trace --no-static` with the application's
//! workload, `analyze` (static reach merged with the trace), `verify` of `seccomp.json` and
//! `verify --enforce` (the serving filter switched in at the `auto` marker) under the same
//! workload, the test suite as `verify --enforce`'s workload, the suite again with no profile, and
//! once more as `trace`'s workload (what it makes the container do, per phase). A step that cannot be done for this application (no serving entry to
//! enforce at) is said so in the cell; the suite then runs under `seccomp.json` alone.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::apps::App;
use super::suite::{self, Outcome};
use crate::bench::output;

/// Allowed syscalls per profile.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sets {
    pub init: BTreeSet<String>,
    pub serving: BTreeSet<String>,
    pub container: BTreeSet<String>,
}

/// Precision, recall and F1 of one profile against what was observed in its phase.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Score {
    pub fn of(allowed: &BTreeSet<String>, observed: &BTreeSet<String>) -> Score {
        let hits = allowed.intersection(observed).count() as f64;
        let precision = if allowed.is_empty() { 0.0 } else { hits / allowed.len() as f64 };
        let recall = if observed.is_empty() { 1.0 } else { hits / observed.len() as f64 };
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Score { precision, recall, f1 }
    }
}

/// A step's wall time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    pub step: String,
    pub seconds: f64,
}

/// How the suite went under the profiles and without them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SuiteResult {
    /// What the suite is.
    pub description: String,
    /// What the suite ran under: `enforce` (seccomp.json, then the serving filter) or `seccomp.json`.
    pub under: String,
    pub profiled: Outcome,
    pub unconfined: Outcome,
    /// The run that was traced, with no profile (cells written before it was kept have none).
    #[serde(default)]
    pub traced: Outcome,
    /// Tests that failed under the profiles and not without them: must be empty.
    pub failed_more: Vec<String>,
}

/// Everything measured for one application on one release.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub app: String,
    pub release: String,
    pub image: String,
    pub glibc: String,
    /// The server's Debian package and version.
    pub package: String,
    /// The Debian version of the suite's source, for suites that come from one.
    pub suite_source: Option<String>,
    pub docker_default: usize,
    pub allowed: Sets,
    /// Observed: the phases of the trace and of the trace with the suite as its workload.
    pub observed: Sets,
    pub scores: Scores,
    /// Denied under `verify` of seccomp.json, "name (phase)".
    pub denied_verify: Vec<String>,
    /// Denied under `verify --enforce`; `None` when enforcement could not be set up.
    pub denied_enforce: Option<Vec<String>>,
    /// The marker enforcement switched at and how many processes switched, or why it could not.
    pub enforce: String,
    /// Denied while the suite ran under the profiles: the "missing" syscalls.
    pub denied_suite: Vec<String>,
    pub suite: SuiteResult,
    /// Names allowed per phase that the nearest older release's cell did not allow, and the
    /// reverse; set by the report from the cells it writes, so a cell measured again moves its
    /// neighbours' changes too.
    #[serde(default)]
    pub diff_from_previous: Vec<PhaseDiff>,
    /// Median over rounds.
    pub times: Vec<Timing>,
    /// The seccomp-refine binary that ran (its build profile shows in the times).
    #[serde(default)]
    pub binary: String,
    pub rounds: usize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Scores {
    pub init: Score,
    pub serving: Score,
    pub container: Score,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseDiff {
    pub phase: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// What a cell needs from the run.
pub struct Setup<'a> {
    pub seccomp_refine: &'a Path,
    pub app: &'a App,
    pub release: &'a str,
    pub image: &'a str,
    pub work: &'a Path,
    pub image_seconds: f64,
}

/// One round's measurements.
struct Round {
    allowed: Sets,
    observed: Sets,
    denied_verify: Vec<String>,
    denied_enforce: Option<Vec<String>>,
    enforce: String,
    denied_suite: Vec<String>,
    suite: SuiteResult,
    times: Vec<Timing>,
}

pub fn run(setup: &Setup<'_>, rounds: usize) -> Result<Cell> {
    std::fs::create_dir_all(setup.work)?;
    let suite = suite::prepare(setup.app, setup.release, setup.work)?;
    let port = exposed_port(setup.image)?;
    let mut measured = Vec::new();
    for round in 1..=rounds {
        println!("xtask: experiment {} on {} (round {round} of {rounds})", setup.app.name, setup.release);
        measured.push(one_round(setup, &suite, port)?);
    }
    let (package, glibc) = versions(setup.image, setup.app.package)?;
    let last = measured.last().expect("at least one round");
    let union = |pick: fn(&Round) -> &Vec<String>| -> Vec<String> {
        measured.iter().flat_map(pick).cloned().collect::<BTreeSet<_>>().into_iter().collect()
    };
    let mut times = vec![Timing { step: "image".into(), seconds: setup.image_seconds }];
    for (index, timing) in last.times.iter().enumerate() {
        let values: Vec<f64> = measured.iter().map(|round| round.times[index].seconds).collect();
        times.push(Timing { step: timing.step.clone(), seconds: crate::bench::median(&values) });
    }
    let denied_enforce = if measured.iter().all(|round| round.denied_enforce.is_some()) {
        Some(union(|round| round.denied_enforce.as_ref().expect("checked")))
    } else {
        None
    };
    let mut suite_result = last.suite.clone();
    suite_result.failed_more = measured
        .iter()
        .flat_map(|round| round.suite.failed_more.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Cell {
        app: setup.app.name.to_owned(),
        release: setup.release.to_owned(),
        image: setup.image.to_owned(),
        glibc,
        package,
        suite_source: suite.source.as_ref().map(|source| source.version.clone()),
        docker_default: super::docker_default_count(),
        scores: Scores {
            init: Score::of(&last.allowed.init, &last.observed.init),
            serving: Score::of(&last.allowed.serving, &last.observed.serving),
            container: Score::of(&last.allowed.container, &last.observed.container),
        },
        allowed: last.allowed.clone(),
        observed: last.observed.clone(),
        denied_verify: union(|round| &round.denied_verify),
        denied_enforce,
        enforce: last.enforce.clone(),
        denied_suite: union(|round| &round.denied_suite),
        suite: suite_result,
        diff_from_previous: Vec::new(),
        times,
        binary: setup.seccomp_refine.display().to_string(),
        rounds,
    })
}

fn one_round(setup: &Setup<'_>, suite: &suite::Prepared<'_>, port: u16) -> Result<Round> {
    let work = setup.work;
    let tool = || Command::new(setup.seccomp_refine);
    let mut times = Vec::new();
    let mut timed = |step: &str, started: Instant| {
        times.push(Timing { step: step.to_owned(), seconds: started.elapsed().as_secs_f64() });
    };
    let (trace_dir, profile_dir) = (work.join("trace"), work.join("profile"));

    let started = Instant::now();
    output(
        tool()
            .args(["trace", "--force", "--no-static", "--duration", "120s", "--workload", setup.app.workload])
            .arg(setup.image)
            .arg("-o")
            .arg(&trace_dir),
    )
    .with_context(|| format!("trace of {}", setup.image))?;
    timed("trace", started);

    let started = Instant::now();
    output(tool().args(["analyze", "--force"]).arg(trace_dir.join("trace.json")).arg("-o").arg(&profile_dir))
        .with_context(|| format!("analyze of {}", setup.image))?;
    timed("analyze", started);

    let started = Instant::now();
    let container_profile: [OsString; 2] = ["--profile".into(), profile_dir.join("seccomp.json").into()];
    let verified = verify_with(setup, &container_profile, "verify", setup.app.workload, &[])?;
    let denied_verify = verified.map_err(anyhow::Error::msg).context("verify of seccomp.json could not run")?.denials;
    timed("verify", started);

    let started = Instant::now();
    let enforced: [OsString; 2] = ["--enforce".into(), profile_dir.clone().into()];
    let (denied_enforce, enforce) = match verify_with(setup, &enforced, "enforce", setup.app.workload, &[])? {
        Ok(report) => (Some(report.denials), report.enforced),
        Err(why) => (None, format!("not enforced: {why}")),
    };
    timed("enforce", started);

    let started = Instant::now();
    let out = work.join("suite-profiled.out");
    let log = work.join("suite-profiled.log");
    let under = if denied_enforce.is_some() { &enforced } else { &container_profile };
    let env = suite.env(setup.image, &log);
    let suite_report = verify_with(setup, under, "suite", &suite.command_line(&out, &log), &env)?
        .map_err(anyhow::Error::msg)
        .context("verify with the test suite as its workload could not run")?;
    let profiled = Outcome::parse(&std::fs::read_to_string(&out).unwrap_or_default());
    timed("suite (profiled)", started);

    let suite_trace_dir = work.join("suite-trace");
    // One run after the other: a suite may publish a fixed port (the HTTP upstream) or share its
    // source tree's scratch directory and test-server port (redis's runtest).
    let started = Instant::now();
    let unconfined = suite::unconfined(suite, setup.image, port, work)?;
    timed("suite (no profile)", started);

    let started = Instant::now();
    let out = work.join("suite-traced.out");
    let log = work.join("suite-traced.log");
    let _ = std::fs::remove_file(suite_trace_dir.join("trace.json"));
    let traced = tool()
        .args(["trace", "--force", "--no-static", "--duration", "7200s", "--workload", &suite.command_line(&out, &log)])
        .arg(setup.image)
        .arg("-o")
        .arg(&suite_trace_dir)
        .envs(suite.env(setup.image, &log))
        .output()
        .context("cannot run seccomp-refine trace")?;
    // The suite's last test stops the server, and a server that exits non-zero then (lighttpd
    // 1.4.59 answers SIGINT with 1, with no profile too) ends the trace as an early exit, with
    // everything recorded written: what the container did is still what this step is for, and
    // the exit code is the suite's stop test's to judge.
    if !traced.status.success() && !suite_trace_dir.join("trace.json").is_file() {
        bail!("trace of {} with its suite failed: {}", setup.image, String::from_utf8_lossy(&traced.stderr).trim());
    }
    timed("suite (traced)", started);

    let allowed = Sets {
        init: allowlist(&profile_dir.join("seccomp-init.json"))?,
        serving: allowlist(&profile_dir.join("seccomp-serving.json"))?,
        container: allowlist(&profile_dir.join("seccomp.json"))?,
    };
    let trace = read_json(&trace_dir.join("trace.json"))?;
    let suite_trace = read_json(&suite_trace_dir.join("trace.json"))?;
    let both =
        |name: &str| -> BTreeSet<String> { phase(&trace, name).into_iter().chain(phase(&suite_trace, name)).collect() };
    let (runtime, init, serving) = (both("runtime"), both("init"), both("serving"));
    let container = runtime.iter().chain(&init).chain(&serving).cloned().collect();
    let failed_more = profiled.worse_than(&unconfined);
    let under = if denied_enforce.is_some() { "enforce" } else { "seccomp.json" }.to_owned();
    Ok(Round {
        allowed,
        observed: Sets { init, serving, container },
        denied_verify,
        denied_enforce,
        enforce,
        denied_suite: suite_report.denials,
        suite: SuiteResult {
            description: setup.app.suite.description.to_owned(),
            under,
            profiled,
            unconfined,
            traced: Outcome::parse(&std::fs::read_to_string(&out).unwrap_or_default()),
            failed_more,
        },
        times,
    })
}

/// What a `verify --json` run found.
struct Verified {
    denials: Vec<String>,
    /// How enforcement went: the marker and the switches.
    enforced: String,
}

/// `verify ARGS --workload WORKLOAD IMAGE`; `Err` inside when verify could not set up (its
/// message), e.g. no serving entry to enforce at.
fn verify_with(
    setup: &Setup<'_>,
    args: &[OsString],
    name: &str,
    workload: &str,
    env: &[(String, String)],
) -> Result<std::result::Result<Verified, String>> {
    let json = setup.work.join(format!("{name}.json"));
    let _ = std::fs::remove_file(&json);
    let out = Command::new(setup.seccomp_refine)
        .args(["verify", "--force", "--duration", "7200s", "--workload", workload, "--json"])
        .arg(&json)
        .args(args)
        .arg(setup.image)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .context("cannot run seccomp-refine verify")?;
    std::fs::write(setup.work.join(format!("{name}.log")), [&out.stdout[..], &out.stderr[..]].concat())?;
    if !json.exists() {
        // Exit 1 with a report is a finding; no report means verify could not be done.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no output");
        return Ok(Err(why.trim().trim_start_matches("seccomp-refine: error: ").to_owned()));
    }
    let report = read_json(&json)?;
    if report["started"] != true {
        bail!("{name}: {} did not start under its profile: {}", setup.image, report["start_error"]);
    }
    let denials = report["denials"]
        .as_array()
        .context("verify.json has no denials list")?
        .iter()
        .filter(|denial| denial["fallback"].is_null())
        .map(|denial| {
            format!("{} ({})", denial["syscall"].as_str().unwrap_or("?"), denial["phase"].as_str().unwrap_or("?"))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let enforced = &report["enforced"];
    let enforced = if enforced.is_null() {
        String::new()
    } else {
        let count = |key: &str| enforced[key].as_array().map_or(0, Vec::len);
        format!(
            "{}: {} processes switched, {} not",
            enforced["marker"].as_str().unwrap_or("?"),
            count("switched"),
            count("not_switched")
        )
    };
    Ok(Ok(Verified { denials, enforced }))
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The names a Docker profile allows, unconditionally or with argument rules (`docs/arguments.md`).
fn allowlist(path: &Path) -> Result<BTreeSet<String>> {
    let profile = read_json(path)?;
    let names: BTreeSet<String> = profile["syscalls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        bail!("{} has no allow rule", path.display());
    }
    Ok(names)
}

/// The syscall names a trace saw in `phase`.
fn phase(trace: &Value, phase: &str) -> BTreeSet<String> {
    trace["phases"][phase]["syscalls"].as_object().map(|names| names.keys().cloned().collect()).unwrap_or_default()
}

/// The image's first exposed TCP port.
fn exposed_port(image: &str) -> Result<u16> {
    let ports =
        output(Command::new("docker").args(["image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image]))?;
    let ports: Value = serde_json::from_str(&ports).with_context(|| format!("{image}: unreadable exposed ports"))?;
    ports
        .as_object()
        .and_then(|ports| ports.keys().find_map(|port| port.strip_suffix("/tcp")?.parse().ok()))
        .with_context(|| format!("{image} exposes no TCP port"))
}

/// The server package's and glibc's versions in the image, from its dpkg database.
fn versions(image: &str, package: &str) -> Result<(String, String)> {
    let listed = output(Command::new("docker").args([
        "run",
        "--rm",
        "--label",
        "io.seccomp-refine.experiment=1",
        image,
        "dpkg-query",
        "-W",
        "-f",
        "${Package} ${Version}\\n",
        "libc6",
        package,
    ]))?;
    let version = |name: &str| {
        listed
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .map(str::to_owned)
            .with_context(|| format!("{image} has no package {name}"))
    };
    Ok((format!("{package} {}", version(package)?), version("libc6")?))
}

/// Where a cell's files go.
pub fn work_dir(root: &Path, app: &str, release: &str) -> PathBuf {
    root.join(format!("{app}-{release}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_weigh_extra_and_missing_names() {
        let set = |names: &[&str]| names.iter().map(|&name| name.to_owned()).collect::<BTreeSet<_>>();
        let exact = Score::of(&set(&["read", "write"]), &set(&["read", "write"]));
        assert_eq!((exact.precision, exact.recall, exact.f1), (1.0, 1.0, 1.0));
        let wide = Score::of(&set(&["read", "write", "open", "close"]), &set(&["read", "write"]));
        assert_eq!((wide.precision, wide.recall), (0.5, 1.0));
        assert!((wide.f1 - 2.0 / 3.0).abs() < 1e-9);
    }
}
