//! Seccomp allowlists: which syscalls each phase may make, and the files that say so.
//!
//! A `Profiles` value holds three sets: `init` (start-up), `serving` (the request loop) and
//! `container` — what Docker applies at start, which must let the whole life through:
//! init ∪ serving ∪ what the runtime does after installing the filter. Seccomp filters only ever
//! tighten, so the serving set is enforced by adding a second filter at the phase boundary.
//!
//! Only this module knows the profile file formats (`docker_json`, `oci`, `kubernetes`; `outputs`
//! writes them all, `read` reads the JSON ones back) and `analysis.json`, which merges a trace with
//! the static analysis (`analysis`). `precision` measures a profile against observed syscalls.

mod analysis;
mod baseline;
pub mod docker_default;
mod docker_json;
pub mod kubernetes;
mod oci;
mod outputs;
mod precision;
pub mod read;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use analysis::{ANALYSIS_FILE, ANALYSIS_SCHEMA, Analysis, Evidence, Observed, StaticSummary};
pub use baseline::{
    ALWAYS_ALLOWED, CRUN_AFTER_FILTER, DEFAULT_BASELINE, ENOSYS_FALLBACKS, RUNC_1_1_AFTER_FILTER, RUNC_AFTER_FILTER,
    RUNTIME_BASELINES, RuntimeBaseline, profile_arches, runtime_baseline,
};
pub use docker_json::{ArgCondition, ArgMatch, ArgRules, DockerProfile, ERRNO_ENOSYS};
pub use outputs::{KUBERNETES_FILE, OCI_FILE, OutputOptions};
pub use precision::{MEASURED_PHASES, Precision, observed};

use crate::syscalls::{self, Arch};
use crate::trace::{Phase, Trace};

/// Syscall names, sorted.
pub type SyscallSet = BTreeSet<String>;

/// The most rules one narrowed syscall may take (one per combination of its arguments' values).
const MAX_RULES_PER_SYSCALL: usize = 64;

/// The rules `conditions` become: one per combination of values, or `None` past the limit.
fn combinations(conditions: &[ArgCondition]) -> Option<usize> {
    conditions
        .iter()
        .try_fold(1usize, |count, condition| count.checked_mul(condition.values.len()))
        .filter(|&count| count <= MAX_RULES_PER_SYSCALL)
}

/// The allowlists of one application, per phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profiles {
    pub arch: Arch,
    pub init: SyscallSet,
    pub serving: SyscallSet,
    pub container: SyscallSet,
    /// Argument rules of each file (`init`, `serving`, `container`); empty means name-only.
    pub init_args: ArgRules,
    pub serving_args: ArgRules,
    pub container_args: ArgRules,
    /// Where the runtime's part of `container` came from, for the report.
    pub runtime_source: RuntimeSource,
}

/// Where the syscalls the runtime needs under the filter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeSource {
    /// The trace's own `runtime` phase, joined with the runtime's baseline row: what the Go runtime
    /// inside runc does after the filter depends on scheduling (`sched_yield`, `nanosleep`, … come
    /// and go between runs), and a container that cannot start is worse than a few more calls
    /// allowed in the container-wide profile (never in init or serving).
    Traced(&'static RuntimeBaseline),
    /// A documented baseline from `RUNTIME_BASELINES`, because the evidence had no runtime phase:
    /// the row for the trace's runtime, or `DEFAULT_BASELINE` when it names none (or one the table
    /// lacks).
    Baseline(&'static RuntimeBaseline),
}

impl Profiles {
    /// Profiles from dynamic evidence alone: each phase allows what it was seen doing.
    pub fn from_trace(trace: &Trace) -> Profiles {
        let phase =
            |phase: Phase| -> SyscallSet { trace.phases.get(phase).names().into_iter().map(str::to_owned).collect() };
        Profiles::from_sets_for_runtime(
            trace.arch,
            phase(Phase::Init),
            phase(Phase::Serving),
            phase(Phase::Runtime),
            trace.target.runtime.as_deref(),
        )
    }

    /// Profiles from per-phase sets of any origin (trace, static analysis, or both merged).
    /// An empty `runtime` set falls back to the default (runc) baseline.
    pub fn from_sets(arch: Arch, init: SyscallSet, serving: SyscallSet, runtime: SyscallSet) -> Profiles {
        Profiles::from_sets_for_runtime(arch, init, serving, runtime, None)
    }

    /// Like `from_sets`, for a known container runtime (`"runc 1.1.5"`, `"crun 1.26"`): the
    /// runtime's part of the container profile is the `runtime` set joined with that runtime's row
    /// of `RUNTIME_BASELINES` (see `RuntimeSource`).
    pub fn from_sets_for_runtime(
        arch: Arch,
        init: SyscallSet,
        serving: SyscallSet,
        runtime: SyscallSet,
        runtime_name: Option<&str>,
    ) -> Profiles {
        let always: SyscallSet = ALWAYS_ALLOWED.iter().map(|&name| name.to_owned()).collect();
        let baseline = runtime_name.and_then(runtime_baseline).unwrap_or(DEFAULT_BASELINE);
        let runtime_source =
            if runtime.is_empty() { RuntimeSource::Baseline(baseline) } else { RuntimeSource::Traced(baseline) };
        let runtime: SyscallSet =
            runtime.into_iter().chain(baseline.syscalls.iter().map(|&name| name.to_owned())).collect();
        let init = without_clone3(init.union(&always).cloned().collect());
        let serving = without_clone3(serving.union(&always).cloned().collect());
        let container = without_clone3(init.iter().chain(&serving).chain(&runtime).cloned().collect());
        Profiles {
            arch,
            init,
            serving,
            container,
            init_args: ArgRules::new(),
            serving_args: ArgRules::new(),
            container_args: ArgRules::new(),
            runtime_source,
        }
    }

    /// The three sets by file stem, in the order they are written.
    pub fn by_file(&self) -> [(&'static str, &SyscallSet); 3] {
        [("seccomp-init", &self.init), ("seccomp-serving", &self.serving), ("seccomp", &self.container)]
    }

    /// The argument rules of the files `by_file` lists, in the same order.
    pub fn args_by_file(&self) -> [&ArgRules; 3] {
        [&self.init_args, &self.serving_args, &self.container_args]
    }

    /// Narrows the phase files by `init` and `serving` (each kept only for names the phase
    /// allows, within the rule limit), and the container file where every phase allowing the
    /// name narrows it and the runtime's part (`runtime`) does not need it: the union of the
    /// phases' values.
    pub fn with_args(mut self, init: ArgRules, serving: ArgRules, runtime: &SyscallSet) -> Profiles {
        let keep = |rules: ArgRules, set: &SyscallSet| -> ArgRules {
            rules
                .into_iter()
                .filter(|(name, conditions)| set.contains(name) && combinations(conditions).is_some())
                .collect()
        };
        self.init_args = keep(init, &self.init);
        self.serving_args = keep(serving, &self.serving);
        let mut container = ArgRules::new();
        for name in self.init_args.keys().chain(self.serving_args.keys()) {
            let phases = [(&self.init, &self.init_args), (&self.serving, &self.serving_args)];
            let narrowed = phases.iter().all(|(set, rules)| !set.contains(name) || rules.contains_key(name));
            if !narrowed || runtime.contains(name) || container.contains_key(name) {
                continue;
            }
            let mut joined: Vec<ArgCondition> = Vec::new();
            for conditions in phases.iter().filter_map(|(_, rules)| rules.get(name)) {
                for condition in conditions {
                    match joined.iter_mut().find(|known| known.index == condition.index) {
                        Some(known) => {
                            known.values.extend(&condition.values);
                            known.values.sort_unstable();
                            known.values.dedup();
                        }
                        None => joined.push(condition.clone()),
                    }
                }
            }
            // A phase that leaves an argument free leaves it free in the container.
            let every_phase_has = |index: u8| {
                phases
                    .iter()
                    .filter_map(|(_, rules)| rules.get(name))
                    .all(|conditions| conditions.iter().any(|condition| condition.index == index))
            };
            joined.retain(|condition| every_phase_has(condition.index));
            if !joined.is_empty() && combinations(&joined).is_some() {
                container.insert(name.clone(), joined);
            }
        }
        self.container_args = container;
        self
    }

    /// Names no supported ABI knows (a source's bug, or a syscall newer than our tables). They are
    /// left out of the files, since a runtime would reject or ignore them.
    pub fn unknown_names(&self) -> BTreeSet<&str> {
        self.container.iter().map(String::as_str).filter(|name| !syscalls::is_known(name)).collect()
    }

    /// Writes `seccomp-init.json`, `seccomp-serving.json` and `seccomp.json` (Docker/OCI format)
    /// into `dir`, creating it, and returns the paths written.
    pub fn write_docker_json(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for ((stem, names), args) in self.by_file().into_iter().zip(self.args_by_file()) {
            let path = dir.join(format!("{stem}.json"));
            let known = names.iter().map(String::as_str).filter(|name| syscalls::is_known(name));
            let json = DockerProfile::allowlist_with_args(self.arch, known, args).to_json();
            crate::output::write(&path, json.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Like Docker's default profile: where `clone` is allowed, `clone3` is answered with `ENOSYS` and
/// glibc falls back to `clone`, whose flags a filter can inspect (`clone3` keeps them in memory).
fn without_clone3(mut set: SyscallSet) -> SyscallSet {
    if set.contains("clone") {
        set.remove("clone3");
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Source, Target};

    fn set(names: &[&str]) -> SyscallSet {
        names.iter().map(|&name| name.to_owned()).collect()
    }

    #[test]
    fn container_profile_covers_every_phase_and_the_runtime() {
        let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "6.18".into(), Target::default());
        trace.phases.runtime.record("capset", 1, 0);
        trace.phases.init.record("bind", 1, 0);
        trace.phases.serving.record("accept4", 1, 0);
        let profiles = Profiles::from_trace(&trace);
        assert!(profiles.init.contains("bind") && !profiles.init.contains("accept4"));
        assert!(profiles.serving.contains("accept4") && !profiles.serving.contains("bind"));
        assert!(profiles.serving.contains("exit_group"), "always-allowed syscalls are in every phase");
        assert!(set(&["capset", "bind", "accept4", "exit_group"]).is_subset(&profiles.container));
        assert!(profiles.container.contains("setgroups"), "a traced runtime phase is joined with the baseline");
        assert!(!profiles.init.contains("setgroups") && !profiles.serving.contains("capset"));
        assert_eq!(profiles.runtime_source, RuntimeSource::Traced(DEFAULT_BASELINE));
    }

    #[test]
    fn clone3_falls_back_to_clone_where_clone_is_allowed() {
        let profiles =
            Profiles::from_sets(Arch::X86_64, set(&["clone", "clone3"]), set(&["clone3"]), SyscallSet::new());
        assert!(profiles.init.contains("clone") && !profiles.init.contains("clone3"));
        assert!(profiles.serving.contains("clone3"), "without clone, clone3 stays");
        assert!(!profiles.container.contains("clone3"));
    }

    #[test]
    fn without_a_runtime_phase_the_runc_baseline_is_used() {
        let profiles = Profiles::from_sets(Arch::X86_64, set(&["read"]), set(&["read"]), SyscallSet::new());
        assert_eq!(profiles.runtime_source, RuntimeSource::Baseline(DEFAULT_BASELINE));
        assert!(profiles.container.contains("setgroups") && profiles.container.contains("capset"));
    }

    #[test]
    fn the_traces_runtime_picks_its_baseline() {
        let mut trace = Trace::new(Source::Scap, Arch::X86_64, "6.18".into(), Target::default());
        trace.target.runtime = Some("crun 1.26".into());
        trace.phases.init.record("read", 1, 0);
        let profiles = Profiles::from_trace(&trace);
        assert_eq!(profiles.runtime_source, RuntimeSource::Baseline(&RUNTIME_BASELINES[2]));
        assert!(profiles.container.contains("setresuid"), "crun switches ids with setresuid");
        assert!(!profiles.container.contains("capget"), "only runc reads capabilities under the filter");
    }

    #[test]
    fn argument_rules_narrow_each_phase_and_the_container_only_where_every_part_agrees() {
        let domain = |values: &[u64]| vec![ArgCondition { index: 0, mask: 0xffff_ffff, values: values.to_vec() }];
        let rules = |entries: &[(&str, &[u64])]| -> ArgRules {
            entries.iter().map(|&(name, values)| (name.to_owned(), domain(values))).collect()
        };
        let profiles =
            Profiles::from_sets(Arch::X86_64, set(&["socket", "kill"]), set(&["socket", "prctl"]), SyscallSet::new())
                .with_args(
                    rules(&[("socket", &[2]), ("kill", &[15])]),
                    rules(&[("socket", &[1]), ("prctl", &[15])]),
                    &set(&["prctl"]),
                );
        assert_eq!(profiles.container_args["socket"], domain(&[1, 2]), "the phases' values joined");
        assert_eq!(profiles.container_args["kill"], domain(&[15]), "kill is in init only");
        assert!(!profiles.container_args.contains_key("prctl"), "the runtime calls prctl with anything");
        let dir = tempfile::tempdir().unwrap();
        let written = profiles.write_docker_json(dir.path()).unwrap();
        let container: serde_json::Value = serde_json::from_slice(&std::fs::read(&written[2]).unwrap()).unwrap();
        let rules = container["syscalls"].as_array().unwrap();
        let socket: Vec<&serde_json::Value> =
            rules.iter().filter(|rule| rule["names"] == serde_json::json!(["socket"])).collect();
        assert_eq!(socket.len(), 2, "one rule per value: Docker ANDs a rule's conditions");
        assert_eq!(
            socket[0]["args"],
            serde_json::json!([{"index": 0, "value": 0xffff_ffffu64, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let unconditional = rules.iter().filter(|rule| rule.get("args").is_none());
        assert!(
            unconditional.flat_map(|rule| rule["names"].as_array().unwrap()).all(|name| name != "socket"),
            "a narrowed name is in no unconditional rule, allowing or denying"
        );
    }

    #[test]
    fn files_leave_out_unknown_names() {
        let profiles = Profiles::from_sets(Arch::X86_64, set(&["read", "syscall_500"]), set(&[]), set(&["write"]));
        assert_eq!(profiles.unknown_names(), BTreeSet::from(["syscall_500"]));
        let dir = tempfile::tempdir().unwrap();
        let written = profiles.write_docker_json(dir.path()).unwrap();
        assert_eq!(written.len(), 3);
        let init: serde_json::Value = serde_json::from_slice(&std::fs::read(&written[0]).unwrap()).unwrap();
        let names = init["syscalls"][0]["names"].as_array().unwrap();
        assert!(names.iter().any(|name| name == "read"));
        assert!(!names.iter().any(|name| name == "syscall_500"));
    }
}
