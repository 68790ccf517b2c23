//! `analysis.json`: the merged per-phase sets (observed ∪ reachable), each syscall with its
//! evidence, and the profiles they become.
//!
//! Evidence per syscall and phase: `observed` (the trace's count, first time, failures, and the
//! programs the trace saw run in that phase) and/or `reachable` (a shortest witness path from a
//! root to the site). `explain` reads this file back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::baseline::always_allowed_reason;
use super::{ALWAYS_ALLOWED, ArgCondition, ArgRules, Profiles, RuntimeSource, SyscallSet};
use crate::callgraph::{Reachable, StaticAnalysis};
use crate::syscalls::Arch;
use crate::syscalls::args::{MAX_VALUES, pairs_of};
use crate::trace::{Phase, Target, Trace};

/// The `schema` value of `analysis.json`.
pub const ANALYSIS_SCHEMA: &str = "seccomp-refine.analysis/1";

/// The file name `write` uses and `explain` looks for.
pub const ANALYSIS_FILE: &str = "analysis.json";

/// The merged evidence for one application.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub schema: String,
    pub arch: Arch,
    pub target: Target,
    /// Phase → syscall name → why it is allowed.
    pub phases: BTreeMap<Phase, BTreeMap<String, Evidence>>,
    /// The static analysis: programs, files, unresolved sites, resolution rate, warnings.
    #[serde(rename = "static")]
    pub static_analysis: StaticSummary,
    /// What the profiles allow beyond `phases`, each with its reason; nothing else is allowed.
    #[serde(default)]
    pub granted: Granted,
}

/// Syscalls a profile allows without evidence in `phases`, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Granted {
    /// Allowed in every phase: name → reason (`ALWAYS_ALLOWED`).
    pub always: BTreeMap<String, String>,
    /// Allowed in the container profile only (`seccomp.json`): what the runtime does after it
    /// installs the filter, from its documented baseline row.
    pub runtime_baseline: RuntimeGrant,
}

/// A runtime baseline row, as `Granted` lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeGrant {
    pub runtime: String,
    pub source: String,
    pub syscalls: Vec<String>,
}

/// Why one syscall is in one phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<Reachable>,
}

/// The conditions `evidence` supports for `name`: for every pair of the syscall, the union of the
/// values every reachable site passes and every observed call passed; `None` when either side
/// does not know them all, there are too many, or no pair restricts anything. The syscall must
/// be reachable: a call the trace saw where the static analysis finds no site came from code it
/// does not see, which may pass other values.
fn narrowing(name: &str, evidence: &Evidence) -> Option<Vec<ArgCondition>> {
    let observed = match &evidence.observed {
        Some(seen) => Some(seen.args.as_ref()?),
        None => None,
    };
    let reachable = evidence.reachable.as_ref()?.args.as_ref()?;
    let mut conditions = Vec::new();
    for pair in pairs_of(name) {
        let mask = pair.kind.mask();
        let known = reachable.get(&pair.index).filter(|known| !known.is_empty())?;
        let mut allowed: BTreeSet<u64> = known.keys().map(|value| value & mask).collect();
        if let Some(values) = observed {
            let seen = values.get(&pair.index).filter(|seen| !seen.is_empty())?;
            allowed.extend(seen.iter().map(|value| value & mask));
        }
        if allowed.is_empty() || allowed.len() > MAX_VALUES {
            return None;
        }
        // Every value the mask lets through is allowed: the argument is free.
        let free = mask.count_ones() < 8 && allowed.len() as u64 >= 1u64 << mask.count_ones();
        if !free {
            conditions.push(ArgCondition { index: pair.index, mask, values: allowed.into_iter().collect() });
        }
    }
    (!conditions.is_empty()).then_some(conditions)
}

/// What the trace saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub count: u64,
    pub first_seen_ns: u64,
    #[serde(default)]
    pub failed: u64,
    /// The programs the trace saw exec'd in this phase (a trace counts per phase, not per process).
    pub programs: Vec<String>,
    /// For a syscall of `syscalls::args`: argument index → every value the calls passed, when
    /// the trace knows them all (`PhaseSyscalls::known_args`); absent when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<BTreeMap<u8, BTreeSet<u64>>>,
}

/// The static analysis without its per-phase sets (those are merged into `phases`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StaticSummary {
    pub programs: Vec<crate::callgraph::ProgramReport>,
    pub modules: Vec<crate::callgraph::ModuleReport>,
    pub unresolved: Vec<crate::callgraph::UnresolvedSite>,
    pub resolution: crate::callgraph::Resolution,
    pub warnings: Vec<String>,
}

impl Analysis {
    /// Merges what `trace` observed with what `found` proved reachable, phase by phase.
    pub fn new(trace: &Trace, found: StaticAnalysis) -> Analysis {
        let mut phases: BTreeMap<Phase, BTreeMap<String, Evidence>> = BTreeMap::new();
        for phase in Phase::ALL {
            let programs: Vec<String> =
                trace.executables.iter().filter(|file| file.phase == phase).map(|file| file.path.clone()).collect();
            let observed = trace.phases.get(phase);
            let entries = phases.entry(phase).or_default();
            for (name, stat) in observed.syscalls.iter().chain(&observed.compat_syscalls) {
                let evidence = entries.entry(name.clone()).or_default();
                evidence.observed = Some(Observed {
                    count: stat.count,
                    first_seen_ns: stat.first_seen_ns,
                    failed: stat.failed,
                    programs: programs.clone(),
                    args: observed.known_args(name).cloned(),
                });
            }
        }
        for (phase, reachable) in [(Phase::Init, &found.init), (Phase::Serving, &found.serving)] {
            let entries = phases.entry(phase).or_default();
            for (name, why) in reachable {
                entries.entry(name.clone()).or_default().reachable = Some(why.clone());
            }
        }
        if found.programs.iter().any(|program| program.serving_syscalls.is_some() && program.serving_entry.is_none()) {
            serve_what_init_does(&mut phases);
        }
        let mut analysis = Analysis {
            schema: ANALYSIS_SCHEMA.to_owned(),
            arch: trace.arch,
            target: trace.target.clone(),
            phases,
            static_analysis: StaticSummary {
                programs: found.programs,
                modules: found.modules,
                unresolved: found.unresolved,
                resolution: found.resolution,
                warnings: found.warnings,
            },
            granted: Granted::default(),
        };
        analysis.granted = analysis.grants();
        analysis
    }

    /// What `profiles` adds to the evidence: the always-allowed names and the runtime's baseline.
    fn grants(&self) -> Granted {
        let always = ALWAYS_ALLOWED
            .iter()
            .filter_map(|&name| Some((name.to_owned(), always_allowed_reason(name)?.to_owned())))
            .collect();
        let (RuntimeSource::Traced(baseline) | RuntimeSource::Baseline(baseline)) = self.profiles().runtime_source;
        let runtime_baseline = RuntimeGrant {
            runtime: baseline.runtime.to_owned(),
            source: baseline.source.to_owned(),
            syscalls: baseline.syscalls.iter().map(|&name| name.to_owned()).collect(),
        };
        Granted { always, runtime_baseline }
    }

    /// The names allowed in `phase` (before the always-allowed ones are added).
    pub fn names(&self, phase: Phase) -> SyscallSet {
        self.phases.get(&phase).map(|entries| entries.keys().cloned().collect()).unwrap_or_default()
    }

    /// The names `phase` allows on reachability alone: reachable in it, never observed in it.
    pub fn static_only(&self, phase: Phase) -> SyscallSet {
        let entries = self.phases.get(&phase).into_iter().flatten();
        entries
            .filter(|(_, evidence)| evidence.observed.is_none() && evidence.reachable.is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The profiles: each phase allows what was observed or is reachable in it; the runtime's part
    /// follows the traced runtime, as for a trace alone.
    ///
    /// A syscall of `syscalls::args` reachable in a phase is narrowed there to the union of the
    /// values of its arguments at every reachable site and in every observed call, when both sides
    /// know them all: a trace without argument values (an older trace, an overflow, a capture
    /// lacking the argument) leaves an observed syscall its name-only rule.
    pub fn profiles(&self) -> Profiles {
        let profiles = Profiles::from_sets_for_runtime(
            self.arch,
            self.names(Phase::Init),
            self.names(Phase::Serving),
            self.names(Phase::Runtime),
            self.target.runtime.as_deref(),
        );
        let runtime = match profiles.runtime_source {
            RuntimeSource::Traced(baseline) | RuntimeSource::Baseline(baseline) => {
                let mut runtime = self.names(Phase::Runtime);
                runtime.extend(baseline.syscalls.iter().map(|&name| name.to_owned()));
                runtime
            }
        };
        profiles.with_args(self.arg_rules(Phase::Init), self.arg_rules(Phase::Serving), &runtime)
    }

    /// The argument rules the evidence supports in `phase` (see `profiles`).
    pub fn arg_rules(&self, phase: Phase) -> ArgRules {
        let Some(entries) = self.phases.get(&phase) else { return ArgRules::new() };
        entries.iter().filter_map(|(name, evidence)| Some((name.clone(), narrowing(name, evidence)?))).collect()
    }

    /// Writes `analysis.json` into `dir` and returns its path (the profiles are written with the
    /// other formats, from `profiles`).
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(ANALYSIS_FILE);
        let mut json = serde_json::to_string_pretty(self).expect("an analysis always serializes");
        json.push('\n');
        crate::output::write(&path, json.as_bytes())?;
        Ok(path)
    }

    /// Reads an `analysis.json`.
    pub fn read(path: &Path) -> anyhow::Result<Analysis> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a seccomp-refine analysis", path.display()))?;
        let schema = value.get("schema").and_then(|schema| schema.as_str()).unwrap_or("none");
        if schema != ANALYSIS_SCHEMA {
            anyhow::bail!(
                "{} has schema `{schema}`, this seccomp-refine reads `{ANALYSIS_SCHEMA}`; run `analyze` again",
                path.display()
            );
        }
        serde_json::from_value(value).with_context(|| format!("{} is not a seccomp-refine analysis", path.display()))
    }
}

/// Without a serving entry the static side cannot tell serving from init (it lets serving reach
/// everything init reaches), and the phase moves for the whole container at once: a server that
/// reloads in place runs its init code again while serving (apache's graceful restart re-reads its
/// configuration and rewrites its pid file). So serving allows everything init was seen or found
/// to do; a name init only observed gets a witness saying so.
fn serve_what_init_does(phases: &mut BTreeMap<Phase, BTreeMap<String, Evidence>>) {
    let init = phases.get(&Phase::Init).cloned().unwrap_or_default();
    let serving = phases.entry(Phase::Serving).or_default();
    for (name, evidence) in init {
        let why = evidence.reachable.unwrap_or_else(|| Reachable {
            path: vec!["observed in init; with no serving entry, serving allows what init does".to_owned()],
            site: "the trace's init phase".to_owned(),
            compat: false,
            args: None,
        });
        serving.entry(name).or_default().reachable.get_or_insert(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callgraph::Resolution;
    use crate::trace::{FileUse, Source};

    #[test]
    fn each_phase_is_observed_union_reachable_with_evidence() {
        let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "6.18".into(), Target::default());
        trace.phases.init.record("openat", 3, 10);
        trace.phases.serving.record("accept4", 7, 99);
        trace.phases.runtime.record("capset", 1, 0);
        trace.executables.push(FileUse {
            path: "/usr/sbin/nginx".into(),
            phase: Phase::Init,
            pid: 1,
            first_seen_ns: 0,
            comm: None,
        });
        let why =
            |site: &str| Reachable { path: vec!["nginx!main".into()], site: site.into(), compat: false, args: None };
        let found = StaticAnalysis {
            init: BTreeMap::from([
                ("openat".to_owned(), why("syscall at 0x10")),
                ("bind".to_owned(), why("syscall at 0x20")),
            ]),
            serving: BTreeMap::from([("epoll_wait".to_owned(), why("syscall at 0x30"))]),
            resolution: Resolution { resolved: 1, sites: 1, rate: 100.0 },
            ..StaticAnalysis::none(Arch::X86_64)
        };
        let analysis = Analysis::new(&trace, found);
        let init = &analysis.phases[&Phase::Init];
        assert_eq!(init.keys().collect::<Vec<_>>(), ["bind", "openat"]);
        assert_eq!(init["openat"].observed.as_ref().map(|seen| seen.count), Some(3));
        assert_eq!(init["openat"].observed.as_ref().unwrap().programs, ["/usr/sbin/nginx"]);
        assert!(init["openat"].reachable.is_some() && init["bind"].observed.is_none());
        assert_eq!(analysis.static_only(Phase::Init), SyscallSet::from(["bind".to_owned()]));
        assert_eq!(analysis.static_only(Phase::Serving), SyscallSet::from(["epoll_wait".to_owned()]));
        let profiles = analysis.profiles();
        assert!(profiles.serving.contains("accept4") && profiles.serving.contains("epoll_wait"));
        assert!(!profiles.serving.contains("bind"));
        assert!(profiles.container.contains("capset"), "the traced runtime phase");
        let dir = tempfile::tempdir().unwrap();
        analysis.write(dir.path()).unwrap();
        assert_eq!(Analysis::read(&dir.path().join(ANALYSIS_FILE)).unwrap(), analysis);
    }

    #[test]
    fn without_a_serving_entry_serving_allows_what_init_did_and_reached() {
        let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "6.18".into(), Target::default());
        trace.phases.init.record("rename", 1, 10);
        trace.phases.serving.record("accept4", 7, 99);
        let why =
            Reachable { path: vec!["apache2!main".into()], site: "syscall at 0x10".into(), compat: false, args: None };
        let program = |serving_entry: Option<&str>| crate::callgraph::ProgramReport {
            path: "/usr/sbin/apache2".into(),
            phase: Some(Phase::Init),
            serving_entry: serving_entry.map(str::to_owned),
            init_syscalls: 1,
            serving_syscalls: Some(1),
        };
        let found = |serving_entry: Option<&str>| StaticAnalysis {
            programs: vec![program(serving_entry)],
            init: BTreeMap::from([("bind".to_owned(), why.clone())]),
            serving: BTreeMap::from([("bind".to_owned(), why.clone())]),
            resolution: Resolution { resolved: 1, sites: 1, rate: 100.0 },
            ..StaticAnalysis::none(Arch::X86_64)
        };
        let analysis = Analysis::new(&trace, found(None));
        let serving = &analysis.phases[&Phase::Serving];
        assert_eq!(serving.keys().collect::<Vec<_>>(), ["accept4", "bind", "rename"]);
        let witness = serving["rename"].reachable.as_ref().unwrap();
        assert!(witness.path[0].contains("no serving entry"), "{witness:?}");
        assert!(serving["rename"].observed.is_none(), "not observed in serving");
        assert_eq!(serving["bind"].reachable.as_ref(), Some(&why));
        // With an entry, serving keeps to what serving did and reaches.
        let analysis = Analysis::new(&trace, found(Some("ap_mpm_run")));
        assert!(!analysis.profiles().serving.contains("rename"));
    }

    #[test]
    fn an_observed_syscall_is_narrowed_by_the_union_of_observed_and_reachable_values() {
        use crate::trace::ArgsSeen;
        let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "6.18".into(), Target::default());
        let seen = |values: &[(u8, &[u64])], overflow| ArgsSeen {
            values: values.iter().map(|(index, values)| (*index, values.iter().copied().collect())).collect(),
            overflow,
        };
        for name in ["socket", "kill", "fcntl", "prctl", "madvise"] {
            trace.phases.serving.record(name, 2, 10);
        }
        trace.phases.serving.record_args("madvise", &seen(&[(2, &[4])], false));
        trace.phases.serving.record_args("socket", &seen(&[(0, &[2]), (1, &[1])], false));
        trace.phases.serving.record_args("kill", &seen(&[(1, &[15])], false));
        trace.phases.serving.record_args("fcntl", &seen(&[(1, &[1, 2])], true));
        let site = |values: &[u64]| values.iter().map(|&value| (value, "serve at 0x10".to_owned())).collect();
        let why = |args: Option<crate::callgraph::ArgValues>| Reachable {
            path: vec!["app!serve".into()],
            site: "syscall at 0x10".into(),
            compat: false,
            args,
        };
        let found = StaticAnalysis {
            serving: BTreeMap::from([
                ("socket".to_owned(), why(Some(BTreeMap::from([(0, site(&[1])), (1, site(&[1]))])))),
                ("kill".to_owned(), why(None)),
            ]),
            resolution: Resolution { resolved: 1, sites: 1, rate: 100.0 },
            ..StaticAnalysis::none(Arch::X86_64)
        };
        let analysis = Analysis::new(&trace, found);
        let rules = analysis.arg_rules(Phase::Serving);
        let socket: Vec<(u8, Vec<u64>)> =
            rules["socket"].iter().map(|condition| (condition.index, condition.values.clone())).collect();
        assert_eq!(socket, [(0, vec![1, 2]), (1, vec![1])], "AF_UNIX reachable, AF_INET observed");
        assert!(!rules.contains_key("kill"), "a reachable site with an unknown signal");
        assert!(!rules.contains_key("fcntl"), "the tracer's bound overflowed");
        assert!(!rules.contains_key("prctl"), "observed without values");
        assert!(!rules.contains_key("madvise"), "observed where the static analysis finds no site");
        let observed = analysis.phases[&Phase::Serving]["socket"].observed.as_ref().unwrap();
        assert_eq!(observed.args.as_ref().unwrap()[&0], BTreeSet::from([2]));
    }
}
