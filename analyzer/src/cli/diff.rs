//! `seccomp-refine diff`: what two profiles or traces allow differently, phase by phase.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::Outcome;
use crate::profile::{Profiles, SyscallSet, read::read_allowlist};
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

/// One side as read: raw trace sets, or profiles.
enum Side {
    Trace(Box<Trace>),
    Profiles(Sides),
}

const PROFILE_FILES: [(&str, &str); 3] =
    [("seccomp-init.json", "init"), ("seccomp-serving.json", "serving"), ("seccomp.json", "container")];

pub fn run(args: Args) -> Result<Outcome> {
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
