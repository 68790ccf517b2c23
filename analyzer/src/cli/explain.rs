//! `seccomp-refine explain`: why a syscall is (or is not) in a profile.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::Outcome;
use crate::profile::{ALWAYS_ALLOWED, ANALYSIS_FILE, Analysis, ArgCondition, Evidence, Profiles};
use crate::syscalls::args::{pairs_of, show_value};
use crate::trace::{Phase, Trace};

/// Say why a syscall is allowed: observed (phase, programs, count) and/or reachable (a
/// shortest path from a root to the syscall site).
///
/// DIR is a profile directory: it holds analysis.json (written by `analyze`, `trace` and
/// `import`) or at least trace.json. Without DIR: the current directory if it holds one of
/// them, else the only directory under ./profiles/ that does. Exits 1 when no phase allows the
/// syscall.
#[derive(clap::Args)]
pub struct Args {
    /// The syscall, e.g. openat.
    syscall: String,
    /// The profile directory [default: see above].
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<Outcome> {
    if !crate::syscalls::is_known(&args.syscall) {
        bail!("`{}` is not a syscall name this version knows", args.syscall);
    }
    let dir = match args.dir {
        Some(dir) => dir,
        None => default_dir()?,
    };
    let analysis_path = dir.join(ANALYSIS_FILE);
    // Without the static analysis the profiles are the trace's own, which narrow no argument.
    let (analysis, profiles) = if analysis_path.exists() {
        let analysis = Analysis::read(&analysis_path)?;
        let profiles = analysis.profiles();
        (analysis, profiles)
    } else if dir.join("trace.json").exists() {
        let trace = Trace::read(&dir.join("trace.json"))?;
        println!("(no {ANALYSIS_FILE} in {}: observed evidence only; run `analyze` for reachability)", dir.display());
        (Analysis::new(&trace, crate::callgraph::StaticAnalysis::none(trace.arch)), Profiles::from_trace(&trace))
    } else {
        bail!("{} holds neither {ANALYSIS_FILE} nor trace.json; give the profile directory", dir.display());
    };
    let name = args.syscall.as_str();
    let mut allowed = false;
    let trace_only = !analysis_path.exists();
    for phase in Phase::ALL {
        let Some(evidence) = analysis.phases.get(&phase).and_then(|entries| entries.get(name)) else { continue };
        allowed = true;
        print_evidence(phase, evidence);
        let rules = match phase {
            Phase::Init => Some(&profiles.init_args),
            Phase::Serving => Some(&profiles.serving_args),
            _ => None,
        };
        if let Some(rules) = rules {
            print_arguments(phase, name, evidence, rules.get(name), trace_only);
        }
    }
    if ALWAYS_ALLOWED.contains(&name) {
        allowed = true;
        println!(
            "{name}: allowed in every phase of every profile (the kernel or the vDSO issues it without the program asking)"
        );
    }
    if !allowed {
        println!("{name}: in no profile of {}: neither observed nor reachable in any phase", dir.display());
        return Ok(Outcome::Found);
    }
    Ok(Outcome::Clean)
}

fn print_evidence(phase: Phase, evidence: &Evidence) {
    if let Some(seen) = &evidence.observed {
        let programs =
            if seen.programs.is_empty() { String::new() } else { format!(" while {} ran", seen.programs.join(", ")) };
        let failed = if seen.failed > 0 { format!(", {} failed", seen.failed) } else { String::new() };
        println!(
            "{phase}: observed {} call(s){failed}, first at +{:.3}s{programs}",
            seen.count,
            seen.first_seen_ns as f64 / 1e9
        );
    }
    if let Some(why) = &evidence.reachable {
        let compat = if why.compat { " (i386 numbering)" } else { "" };
        println!("{phase}: reachable{compat}: {} → {}", why.path.join(" → "), why.site);
    }
}

/// The argument rule of a syscall of `syscalls::args` in `phase`, with the evidence behind each
/// value (observed, and the site that passes it), or why it has none.
fn print_arguments(phase: Phase, name: &str, evidence: &Evidence, rule: Option<&Vec<ArgCondition>>, trace_only: bool) {
    let pairs: Vec<_> = pairs_of(name).collect();
    if pairs.is_empty() {
        return;
    }
    let observed = evidence.observed.as_ref().and_then(|seen| seen.args.as_ref());
    if let Some(observed) = observed {
        for pair in &pairs {
            let values: Vec<String> = observed
                .get(&pair.index)
                .into_iter()
                .flatten()
                .map(|&value| show_value(name, pair.index, value))
                .collect();
            println!("{phase}: {name} argument {} ({}) observed: {}", pair.index, pair.meaning, values.join(", "));
        }
    }
    let Some(conditions) = rule else {
        let why = if trace_only {
            "the profiles come from the trace alone, which narrows no argument (a trace sees only the calls that \
             ran); run `analyze`"
        } else if evidence.reachable.is_none() {
            "observed, but the static analysis finds no site of it in this phase: the calls came from code it \
             does not see, which may pass other values"
        } else if evidence.observed.is_some() && observed.is_none() {
            "observed, and the trace does not know every call's arguments (a trace older than argument recording, \
             more distinct values than the tracer keeps, or a capture without them)"
        } else if evidence.reachable.as_ref().is_some_and(|why| why.args.is_none()) {
            "some reachable site passes a value the static analysis does not know"
        } else {
            "every value the compared bits can take is passed, or too many values"
        };
        println!("{phase}: {name} allowed with any arguments: {why}");
        return;
    };
    let sites = evidence.reachable.as_ref().and_then(|why| why.args.as_ref());
    for condition in conditions {
        let meaning = pairs.iter().find(|pair| pair.index == condition.index).map_or("", |pair| pair.meaning);
        let values: Vec<String> = condition
            .values
            .iter()
            .map(|value| {
                let seen = observed
                    .and_then(|observed| observed.get(&condition.index))
                    .is_some_and(|seen| seen.iter().any(|observed| observed & condition.mask == *value));
                let site = sites.and_then(|sites| sites.get(&condition.index)?.get(value));
                let evidence: Vec<&str> =
                    seen.then_some("observed").into_iter().chain(site.map(String::as_str)).collect();
                let shown = show_value(name, condition.index, *value);
                if evidence.is_empty() { shown } else { format!("{shown} ({})", evidence.join("; ")) }
            })
            .collect();
        println!(
            "{phase}: {name} argument {} ({meaning}, bits {:#x}) only {}",
            condition.index,
            condition.mask,
            values.join(", ")
        );
    }
}

/// `.` when it is a profile directory, else the only one under `./profiles/`.
fn default_dir() -> Result<PathBuf> {
    let is_profile_dir = |dir: &Path| dir.join(ANALYSIS_FILE).exists() || dir.join("trace.json").exists();
    if is_profile_dir(Path::new(".")) {
        return Ok(PathBuf::from("."));
    }
    let candidates: Vec<PathBuf> = std::fs::read_dir("profiles")
        .map(|entries| entries.flatten().map(|entry| entry.path()).filter(|path| is_profile_dir(path)).collect())
        .unwrap_or_default();
    match candidates.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("no profile here: give the directory holding analysis.json or trace.json"),
        _ => bail!("several profiles under ./profiles/; name the one to explain"),
    }
}
