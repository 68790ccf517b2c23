//! `seccomp-refine diff`: what two profiles or traces allow differently, phase by phase.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::Outcome;
use crate::profile::read::{read_allowlist, read_profile};
use crate::profile::{ArgMatch, Profiles, SyscallSet};
use crate::trace::{Phase, Trace};

/// Compare two profiles, traces or profile directories: syscalls added and removed per phase.
///
/// A profile file counts as the phase its name says (seccomp-init.json → init,
/// seccomp-serving.json → serving, anything else → container); a directory as the profiles in it
/// (or its trace.json); a trace as its runtime, init and serving sets — or, next to a profile, as
/// the profiles it produces. Exits 1 when they differ, 0 when they are equal, for CI.
#[derive(clap::Args)]
pub struct Args {
    /// The old side: a profile (Docker/OCI JSON), a trace.json, or a profile directory.
    old: PathBuf,
    /// The new side.
    new: PathBuf,
}

/// Allowed names per phase label, in display order.
type Sides = BTreeMap<&'static str, SyscallSet>;

/// Per phase label: names allowed only under argument conditions → the conditions as text.
type ArgSides = BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>>;

/// One side as read: raw trace sets, or profiles.
enum Side {
    Trace(Box<Trace>),
    Profiles(Sides),
}

const PROFILE_FILES: [(&str, &str); 3] =
    [("seccomp-init.json", "init"), ("seccomp-serving.json", "serving"), ("seccomp.json", "container")];

pub fn run(args: Args) -> Result<Outcome> {
    let (old_args, new_args) = (load_args(&args.old)?, load_args(&args.new)?);
    let (old, new) = (load(&args.old)?, load(&args.new)?);
    let (old, new) = match (old, new) {
        (Side::Trace(old), Side::Trace(new)) => (trace_sets(&old), trace_sets(&new)),
        (old, new) => (profile_sets(old), profile_sets(new)),
    };
    let common: Vec<&str> = old.keys().filter(|phase| new.contains_key(*phase)).copied().collect();
    if common.is_empty() {
        let list = |sides: &Sides| sides.keys().copied().collect::<Vec<_>>().join(", ");
        bail!(
            "nothing to compare: {} has {} and {} has {}",
            args.old.display(),
            list(&old),
            args.new.display(),
            list(&new)
        );
    }
    let mut differs = false;
    for phase in common {
        let (before, after) = (&old[phase], &new[phase]);
        let added: Vec<&String> = after.difference(before).collect();
        let removed: Vec<&String> = before.difference(after).collect();
        let changed = changed_arguments(old_args.get(phase), new_args.get(phase), before, after);
        if !changed.is_empty() {
            differs = true;
            println!("{phase}: argument rules of {} syscalls differ", changed.len());
            changed.iter().for_each(|line| println!("  ~ {line}"));
        }
        if added.is_empty() && removed.is_empty() {
            println!("{phase}: same {} syscalls", after.len());
            continue;
        }
        differs = true;
        println!("{phase}: +{} -{} ({} → {} syscalls)", added.len(), removed.len(), before.len(), after.len());
        added.iter().for_each(|name| println!("  + {name}"));
        removed.iter().for_each(|name| println!("  - {name}"));
    }
    Ok(if differs { Outcome::Found } else { Outcome::Clean })
}

/// The argument rules of the profile files `path` is or holds (none for traces).
fn load_args(path: &Path) -> Result<ArgSides> {
    let files: Vec<(PathBuf, &'static str)> = if path.is_dir() {
        PROFILE_FILES.iter().map(|&(file, phase)| (path.join(file), phase)).filter(|(file, _)| file.exists()).collect()
    } else {
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("");
        let phase = PROFILE_FILES.iter().find(|(file, _)| *file == name).map_or("container", |(_, phase)| *phase);
        vec![(path.to_owned(), phase)]
    };
    let mut sides = ArgSides::new();
    for (file, phase) in files {
        // A trace is not a profile: it has no argument rules.
        let Ok(profile) = read_profile(&file) else { continue };
        let rules = profile
            .argument_rules()
            .into_iter()
            .map(|(name, rules)| (name, rules.iter().map(|rule| show(rule.as_deref())).collect()));
        sides.insert(phase, rules.collect());
    }
    Ok(sides)
}

/// One rule's conditions as text: `arg0&0xffffffff==0x2 and arg1&0xf==0x1`.
fn show(rule: Option<&[ArgMatch]>) -> String {
    let Some(rule) = rule else { return "conditions not read".to_owned() };
    let conditions = rule.iter().map(|arg| match arg.op.as_str() {
        "SCMP_CMP_MASKED_EQ" => format!("arg{}&{:#x}=={:#x}", arg.index, arg.value, arg.value_two),
        op => format!("arg{} {op} {:#x}", arg.index, arg.value),
    });
    conditions.collect::<Vec<_>>().join(" and ")
}

/// Names both sides allow whose argument rules differ, as `name: old → new` lines.
fn changed_arguments(
    old: Option<&BTreeMap<String, BTreeSet<String>>>,
    new: Option<&BTreeMap<String, BTreeSet<String>>>,
    before: &SyscallSet,
    after: &SyscallSet,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let show_side = |rules: Option<&BTreeSet<String>>| match rules {
        None => "any arguments".to_owned(),
        Some(rules) => rules.iter().map(|rule| format!("({rule})")).collect::<Vec<_>>().join(" or "),
    };
    before
        .intersection(after)
        .filter(|name| old.get(*name) != new.get(*name))
        .map(|name| format!("{name}: {} → {}", show_side(old.get(name)), show_side(new.get(name))))
        .collect()
}

fn load(path: &Path) -> Result<Side> {
    if path.is_dir() {
        let mut sides = Sides::new();
        for (file, phase) in PROFILE_FILES {
            let profile = path.join(file);
            if profile.exists() {
                sides.insert(phase, read_allowlist(&profile)?);
            }
        }
        if !sides.is_empty() {
            return Ok(Side::Profiles(sides));
        }
        let trace = path.join("trace.json");
        if trace.exists() {
            return Ok(Side::Trace(Box::new(Trace::read(&trace)?)));
        }
        bail!("{} holds no seccomp*.json profile and no trace.json", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_trace = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|value| value.get("schema")?.as_str().map(|schema| schema.starts_with("seccomp-refine.trace/")))
        .unwrap_or(false);
    if is_trace || path.file_name().is_some_and(|name| name == "trace.json") {
        return Ok(Side::Trace(Box::new(Trace::read(path)?)));
    }
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("");
    let phase = PROFILE_FILES.iter().find(|(file, _)| *file == name).map_or("container", |(_, phase)| *phase);
    Ok(Side::Profiles(Sides::from([(phase, read_allowlist(path)?)])))
}

fn trace_sets(trace: &Trace) -> Sides {
    let names = |phase: Phase| trace.phases.get(phase).names().into_iter().map(str::to_owned).collect();
    Sides::from([
        (Phase::Runtime.as_str(), names(Phase::Runtime)),
        (Phase::Init.as_str(), names(Phase::Init)),
        (Phase::Serving.as_str(), names(Phase::Serving)),
    ])
}

/// A trace next to a profile compares as the profiles it produces (as `profile` would write them).
fn profile_sets(side: Side) -> Sides {
    match side {
        Side::Profiles(sides) => sides,
        Side::Trace(trace) => {
            let profiles = Profiles::from_trace(&trace);
            let known = |set: &SyscallSet| set.iter().filter(|name| crate::syscalls::is_known(name)).cloned().collect();
            Sides::from([
                ("init", known(&profiles.init)),
                ("serving", known(&profiles.serving)),
                ("container", known(&profiles.container)),
            ])
        }
    }
}
