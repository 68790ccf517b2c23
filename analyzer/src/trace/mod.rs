//! The `Trace`: what one run of a container did, whichever source recorded it.
//!
//! Both sources — the eBPF tracer (`trace`) and `.scap` import (`import`) — produce a `Trace`, and
//! everything downstream (static analysis, profiles, reports, `explain`, `diff`) reads only this.
//! It is serialized as `trace.json`, versioned by its `schema` string. Field names listed in the
//! schema are fixed because scripts and later stages rely on them; new fields may be added.
//!
//! Times: `started_at_unix_ns` is the wall-clock start of the recording; every other `*_ns` field
//! counts nanoseconds from that start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::syscalls::Arch;

pub mod ebpf;
pub mod live;
mod marker;

pub use marker::{HELP as MARKER_HELP, MarkerScope, MarkerSpec, parse_duration};

/// The `schema` value this version writes and reads.
pub const SCHEMA: &str = "seccomp-refine.trace/1";

/// One recorded run of a container (or of a host command, for `trace --exec`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub schema: String,
    pub source: Source,
    pub arch: Arch,
    /// The kernel release of the recording machine (`uname -r`), or "unknown".
    pub kernel: String,
    pub target: Target,
    pub started_at_unix_ns: u64,
    pub duration_ns: u64,
    pub phases: Phases,
    /// Every program exec'd, in the order first seen.
    pub executables: Vec<FileUse>,
    /// Every file mapped executable (shared libraries, the ELF interpreter), in the order first seen.
    pub libraries: Vec<FileUse>,
    pub phase_marker: PhaseMarker,
    /// Events the source lost (ring-buffer reservations that failed, capture drops).
    pub lost_events: u64,
    /// False when the source says something is missing: lost events, a partial capture, a
    /// container already running when the trace started.
    pub complete: bool,
    /// Why the recording ended before it was meant to — a signal, the container dying or being
    /// removed, the Docker daemon stopping — when it did; `complete` is then false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_reason: Option<String>,
    /// What the source noticed and the user should know, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where the trace came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The eBPF tracer, live.
    Ebpf,
    /// A sysdig/falco capture file.
    Scap,
}

/// What was traced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The command the container (or `--exec`) ran, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The container runtime, e.g. "runc 1.1.5", when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The cgroup v2 path the container ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The capture file, for `source: scap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
}

/// The three phases of a container's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The container runtime's work after it installed the seccomp filter and before the
    /// entrypoint (or a `docker exec`'s command) runs: it happens under the container's profile,
    /// so the profile must allow it.
    Runtime,
    /// From the entrypoint's first instruction until the phase marker fires.
    Init,
    /// After the phase marker: the request loop.
    Serving,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Runtime, Phase::Init, Phase::Serving];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Runtime => "runtime",
            Phase::Init => "init",
            Phase::Serving => "serving",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The syscalls seen in each phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    pub runtime: PhaseSyscalls,
    pub init: PhaseSyscalls,
    pub serving: PhaseSyscalls,
    /// For information only, never in a profile: what the container runtime did in the
    /// container's cgroup before it installed the filter (mounts, `pivot_root`, `sethostname`, …;
    /// for runc, everything before its `prctl(PR_GET_PDEATHSIG)`, plus the `seccomp` call itself;
    /// for a `docker exec`, `runc init`'s calls until it installed the filter).
    #[serde(default, skip_serializing_if = "PhaseSyscalls::is_empty")]
    pub runtime_setup: PhaseSyscalls,
}

impl Phases {
    pub fn get(&self, phase: Phase) -> &PhaseSyscalls {
        match phase {
            Phase::Runtime => &self.runtime,
            Phase::Init => &self.init,
            Phase::Serving => &self.serving,
        }
    }

    pub fn get_mut(&mut self, phase: Phase) -> &mut PhaseSyscalls {
        match phase {
            Phase::Runtime => &mut self.runtime,
            Phase::Init => &mut self.init,
            Phase::Serving => &mut self.serving,
        }
    }
}

/// Syscalls of one phase, by name. Native syscalls are named with the trace's `arch` table;
/// 32-bit compat syscalls (x86 on an x86_64 kernel) are kept apart and named with the i386 table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSyscalls {
    pub syscalls: BTreeMap<String, SyscallStat>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compat_syscalls: BTreeMap<String, SyscallStat>,
    /// The values native calls passed in the narrowable arguments (`syscalls::args`), by syscall
    /// name, where the source records them. A syscall of `syscalls` missing here (every syscall,
    /// in a trace written before this field) passed values nobody knows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, ArgsSeen>,
}

/// The argument values one syscall's calls passed in a phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgsSeen {
    /// Argument index → every value seen, masked as its pair in `syscalls::args` says.
    pub values: BTreeMap<u8, BTreeSet<u64>>,
    /// Some call's value could not be kept (the kernel's bound of `MAX_ARG_VALUES` distinct values,
    /// or a full map): `values` is incomplete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
}

impl PhaseSyscalls {
    /// Adds `count` calls of `name` first seen at `at_ns`, merging with what is already recorded.
    pub fn record(&mut self, name: &str, count: u64, at_ns: u64) {
        merge_stat(&mut self.syscalls, name, count, at_ns);
    }

    /// Like `record`, for a 32-bit compat syscall.
    pub fn record_compat(&mut self, name: &str, count: u64, at_ns: u64) {
        merge_stat(&mut self.compat_syscalls, name, count, at_ns);
    }

    pub fn is_empty(&self) -> bool {
        self.syscalls.is_empty() && self.compat_syscalls.is_empty()
    }

    /// Adds the values `seen` to what `name`'s calls passed.
    pub fn record_args(&mut self, name: &str, seen: &ArgsSeen) {
        let known = self.args.entry(name.to_owned()).or_default();
        for (index, values) in &seen.values {
            known.values.entry(*index).or_default().extend(values);
        }
        known.overflow |= seen.overflow;
    }

    /// The values every call of `name` in this phase passed in each of its narrowable arguments,
    /// when all are known: `None` when the source did not record them, one was left out
    /// (overflow), there are more than a rule lists, or 32-bit calls (never recorded) were seen.
    pub fn known_args(&self, name: &str) -> Option<&BTreeMap<u8, BTreeSet<u64>>> {
        if self.compat_syscalls.contains_key(name) {
            return None;
        }
        let seen = self.args.get(name).filter(|seen| !seen.overflow)?;
        let complete = crate::syscalls::args::pairs_of(name).all(|pair| {
            seen.values
                .get(&pair.index)
                .is_some_and(|values| !values.is_empty() && values.len() <= crate::syscalls::args::MAX_VALUES)
        });
        complete.then_some(&seen.values)
    }

    /// Every name in the phase, native and compat (a profile lists names for all its ABIs).
    pub fn names(&self) -> BTreeSet<&str> {
        self.syscalls.keys().chain(self.compat_syscalls.keys()).map(String::as_str).collect()
    }
}

fn merge_stat(map: &mut BTreeMap<String, SyscallStat>, name: &str, count: u64, at_ns: u64) {
    let stat = map.entry(name.to_owned()).or_insert(SyscallStat { count: 0, first_seen_ns: at_ns, failed: 0 });
    stat.count += count;
    stat.first_seen_ns = stat.first_seen_ns.min(at_ns);
}

/// How often a syscall was seen in a phase and when first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallStat {
    pub count: u64,
    pub first_seen_ns: u64,
    /// How many of the calls returned an error, where the source knows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A file the container exec'd or mapped executable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUse {
    /// The path inside the container.
    pub path: String,
    pub phase: Phase,
    /// The process (host pid) that exec'd or mapped it first.
    pub pid: u32,
    pub first_seen_ns: u64,
    /// The process name at that moment, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
}

/// Which phase marker was used and what happened to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseMarker {
    /// The marker as given to `--phase-marker`, resolved (`auto` is recorded as what it chose).
    pub spec: String,
    pub fired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
    /// The process in which it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How the marker was resolved or why it could not fire, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the marker moves to serving (the live tracer says; absent when the source does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<MarkerScope>,
    /// Under a per-process marker, every process that moved to serving, in order: the ones that
    /// hit the marker and the ones a serving process forked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serving_processes: Vec<ServingProcess>,
    /// The serving entry `auto` derived from the stack at the first wait after `listen`; the
    /// static analysis starts serving there unless `--serving-entry` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_entry: Option<ServingEntry>,
}

/// A function of a file, named as the static analysis names it (its symbol, else `fn_<address>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRef {
    pub function: String,
    /// The file's path inside the container.
    pub binary: String,
    /// The function's start, as an address of the file.
    pub address: u64,
}

/// Where serving starts, found from a stack (`stack::derive`): the function a loop of the
/// application calls around its wait, and the looping function, whose code after the call runs
/// while serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingEntry {
    pub entry: FunctionRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<FunctionRef>,
    /// Where the stack was taken: "the first epoll_wait after listen (pid 123)".
    pub found_at: String,
    /// The unwound frames, innermost first (`file!function+0xoffset`).
    pub stack: Vec<String>,
    /// The executable of the process the stack was taken in: the program that serves, where
    /// the entry's file is a library other programs load too (absent in older traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

impl std::fmt::Display for ServingEntry {
    /// "ngx_process_events_and_timers (nginx+0x4f2a0), called in a loop by fn_4f9c0 (nginx+0x4f9c0)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |function: &FunctionRef| {
            let file = function.binary.rsplit('/').next().unwrap_or(&function.binary);
            format!("{} ({file}+{:#x})", function.function, function.address)
        };
        write!(f, "{}", name(&self.entry))?;
        if !self.callers.is_empty() {
            let callers: Vec<String> = self.callers.iter().map(name).collect();
            write!(f, ", called in a loop by {}", callers.join(", "))?;
        }
        Ok(())
    }
}

/// A process a per-process marker moved to serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingProcess {
    /// Host pid (the process's thread group id).
    pub pid: u32,
    pub at_ns: u64,
    /// Its name when it moved, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The serving process that forked it; absent when it hit the marker itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_by: Option<u32>,
}

/// Why a `trace.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] crate::output::OutputError),
    #[error("{path} is not a seccomp-refine trace")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path} has schema `{found}`, this seccomp-refine reads `{SCHEMA}`; regenerate it with this version")]
    Schema { path: String, found: String },
}

impl Trace {
    /// An empty trace about to be filled by `source`.
    pub fn new(source: Source, arch: Arch, kernel: String, target: Target) -> Trace {
        Trace {
            schema: SCHEMA.to_owned(),
            source,
            arch,
            kernel,
            target,
            started_at_unix_ns: 0,
            duration_ns: 0,
            phases: Phases::default(),
            executables: Vec::new(),
            libraries: Vec::new(),
            phase_marker: PhaseMarker::default(),
            lost_events: 0,
            complete: true,
            incomplete_reason: None,
            warnings: Vec::new(),
        }
    }

    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TraceError::Read { path: display.clone(), source })?;
        Trace::from_slice(&bytes, display)
    }

    /// Parses a `trace.json` already in memory; `display` names it in errors.
    pub fn from_slice(bytes: &[u8], display: String) -> Result<Trace, TraceError> {
        // Check the schema before the shape, so an old trace gets the message that says why.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| TraceError::Parse { path: display.clone(), source })?;
        let found = value.get("schema").and_then(|schema| schema.as_str()).unwrap_or("none");
        if found != SCHEMA {
            return Err(TraceError::Schema { path: display, found: found.to_owned() });
        }
        serde_json::from_value(value).map_err(|source| TraceError::Parse { path: display, source })
    }

    /// Writes the trace as pretty JSON, atomically: a reader never sees half a file, and an
    /// existing trace is replaced only once the new one is complete on disk.
    pub fn write(&self, path: &Path) -> Result<(), TraceError> {
        let json = serde_json::to_string_pretty(self).expect("a Trace always serializes");
        Ok(crate::output::write(path, json.as_bytes())?)
    }

    /// The recording ended early for `reason`: the trace holds what happened until then. The
    /// first reason is kept (a daemon that stops also stops its containers).
    pub fn ended_early(&mut self, reason: String) {
        self.complete = false;
        self.incomplete_reason.get_or_insert(reason);
    }

    /// Records that `path` was exec'd (or mapped, for `libraries`) unless already listed.
    pub fn add_file(list: &mut Vec<FileUse>, file: FileUse) {
        if !list.iter().any(|known| known.path == file.path) {
            list.push(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trace {
        let mut trace = Trace::new(
            Source::Ebpf,
            Arch::X86_64,
            "6.18.44".into(),
            Target { image: Some("nginx:latest".into()), ..Target::default() },
        );
        trace.phases.init.record("openat", 3, 10);
        trace.phases.init.record("openat", 2, 5);
        trace.phases.serving.record_compat("getpid", 1, 99);
        trace
    }

    #[test]
    fn record_merges_counts_and_keeps_first_time() {
        let trace = sample();
        assert_eq!(trace.phases.init.syscalls["openat"], SyscallStat { count: 5, first_seen_ns: 5, failed: 0 });
        assert_eq!(trace.phases.serving.names(), BTreeSet::from(["getpid"]));
    }

    #[test]
    fn argument_values_are_known_only_when_every_call_was_recorded() {
        let mut phase = PhaseSyscalls::default();
        phase.record("socket", 3, 1);
        let seen = |values: &[(u8, &[u64])], overflow| ArgsSeen {
            values: values.iter().map(|(index, values)| (*index, values.iter().copied().collect())).collect(),
            overflow,
        };
        assert_eq!(phase.known_args("socket"), None, "not recorded");
        phase.record_args("socket", &seen(&[(0, &[2])], false));
        assert_eq!(phase.known_args("socket"), None, "the type is missing");
        phase.record_args("socket", &seen(&[(0, &[1]), (1, &[1])], false));
        let known = phase.known_args("socket").unwrap();
        assert_eq!(known[&0], BTreeSet::from([1, 2]));
        let mut overflowed = phase.clone();
        overflowed.record_args("socket", &seen(&[(0, &[10])], true));
        assert_eq!(overflowed.known_args("socket"), None, "overflow");
        let many: Vec<u64> = (0..=crate::syscalls::args::MAX_VALUES as u64).collect();
        let mut too_many = phase.clone();
        too_many.record_args("socket", &seen(&[(0, &many)], false));
        assert_eq!(too_many.known_args("socket"), None, "more values than a rule lists");
        phase.record_compat("socketcall", 1, 1);
        phase.record_compat("socket", 1, 1);
        assert_eq!(phase.known_args("socket"), None, "32-bit calls are not recorded");
        // The kernel keeps as many values per argument as a rule lists.
        assert_eq!(crate::syscalls::args::MAX_VALUES, tracer_common::MAX_ARG_VALUES as usize);
        // A trace written before the field loads, with every value unknown.
        let old: PhaseSyscalls =
            serde_json::from_str(r#"{"syscalls": {"socket": {"count": 1, "first_seen_ns": 0}}}"#).unwrap();
        assert!(old.args.is_empty() && old.known_args("socket").is_none());
    }

    #[test]
    fn json_uses_the_fixed_field_names_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.json");
        sample().write(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["schema"], "seccomp-refine.trace/1");
        assert_eq!(value["source"], "ebpf");
        assert_eq!(value["arch"], "x86_64");
        assert_eq!(value["phases"]["init"]["syscalls"]["openat"]["count"], 5);
        assert_eq!(value["phases"]["init"]["syscalls"]["openat"]["first_seen_ns"], 5);
        for key in ["runtime", "serving"] {
            assert!(value["phases"][key]["syscalls"].is_object(), "phases.{key}.syscalls");
        }
        for key in ["executables", "libraries", "phase_marker", "lost_events", "complete", "target", "kernel"] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(Trace::read(&path).unwrap(), sample());
    }

    #[test]
    fn a_foreign_schema_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.json");
        std::fs::write(&path, r#"{"schema": "seccomp-refine.trace/0"}"#).unwrap();
        let message = format!("{:#}", anyhow::Error::from(Trace::read(&path).unwrap_err()));
        assert!(message.contains("schema `seccomp-refine.trace/0`"), "{message}");
        std::fs::write(&path, "not json").unwrap();
        let message = format!("{:#}", anyhow::Error::from(Trace::read(&path).unwrap_err()));
        assert!(message.contains("is not a seccomp-refine trace: expected ident"), "{message}");
    }
}
