//! What the capture showed for one container: syscall counts per phase, the programs it exec'd
//! and the files it mapped executable, and where its phase marker stands.
//!
//! Counts are kept by `ppm_sc` code in flat arrays, so counting an event allocates nothing; names
//! are resolved once, when the trace is built.

use std::collections::{BTreeMap, BTreeSet};

use crate::syscalls::args::MAX_VALUES;
use crate::trace::{FileUse, Phase, Trace};

use super::args::EventArgs;
use super::marker::{MarkerState, Plan};
use super::names::Sys;
use super::tables::PPM_SC_NAMES;

/// How often one syscall was seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Exit events: completed syscalls (what `sysdig "evt.dir=<"` counts).
    pub exits: u64,
    /// Enter events no exit followed: `exit_group`, a thread that died in the call, the capture's end.
    pub enters: u64,
    /// Exits whose result was an error.
    pub failed: u64,
    /// Timestamp of the first one (nanoseconds since the epoch).
    pub first_ts: u64,
}

impl Stat {
    pub fn count(&self) -> u64 {
        self.exits + self.enters
    }
}

/// Whether a syscall was counted from its exit or, lacking one, from its enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Exit { failed: bool },
    EnterOnly,
}

/// The narrowable argument values the events of one syscall carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysArgs {
    /// Calls whose event carried them: all of them only when this is the syscall's count.
    pub calls: u64,
    /// Argument index → distinct values (unmasked), at most `MAX_VALUES + 1` each.
    pub values: BTreeMap<u8, BTreeSet<u64>>,
    /// More distinct values were seen than a rule lists; the rest were not kept.
    pub overflow: bool,
}

/// Syscall counts of one phase.
#[derive(Clone, Debug)]
pub struct Counters {
    codes: Box<[Stat]>,
    native: BTreeMap<u16, Stat>,
    unknown: Stat,
    /// Only for syscalls whose events carry narrowable arguments.
    args: BTreeMap<Sys, SysArgs>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            codes: vec![Stat::default(); PPM_SC_NAMES.len()].into(),
            native: BTreeMap::new(),
            unknown: Stat::default(),
            args: BTreeMap::new(),
        }
    }
}

impl Counters {
    #[inline]
    fn add(&mut self, sys: Sys, ts: u64, seen: Seen, args: Option<EventArgs>) {
        if let Some(args) = args {
            let known = self.args.entry(sys).or_default();
            known.calls += 1;
            for (index, value) in args.iter() {
                let values = known.values.entry(index).or_default();
                // Bounded: past a rule's limit the values no longer matter, only that there were more.
                if values.len() > MAX_VALUES {
                    known.overflow = true;
                } else {
                    values.insert(value);
                }
            }
        }
        let stat = match sys {
            Sys::Code(code) => &mut self.codes[usize::from(code)],
            Sys::Native(nr) => self.native.entry(nr).or_default(),
            Sys::Unknown => &mut self.unknown,
        };
        if stat.count() == 0 || ts < stat.first_ts {
            stat.first_ts = ts;
        }
        match seen {
            Seen::Exit { failed } => {
                stat.exits += 1;
                stat.failed += u64::from(failed);
            }
            Seen::EnterOnly => stat.enters += 1,
        }
    }

    /// The argument values the events of `sys` carried, if any did.
    pub fn args(&self, sys: Sys) -> Option<&SysArgs> {
        self.args.get(&sys)
    }

    /// Every syscall seen, with its counts.
    pub fn iter(&self) -> impl Iterator<Item = (Sys, Stat)> + '_ {
        let codes = self.codes.iter().enumerate().map(|(code, stat)| (Sys::Code(code as u16), *stat));
        let native = self.native.iter().map(|(&nr, stat)| (Sys::Native(nr), *stat));
        codes.chain(native).chain([(Sys::Unknown, self.unknown)]).filter(|(_, stat)| stat.count() > 0)
    }
}

/// Everything seen of one container (or of the host's processes).
#[derive(Clone, Debug)]
pub struct ContainerAgg {
    /// The 12-hex short id, or `host`.
    pub id: String,
    /// The 64-hex id from the cgroup path.
    pub full_id: Option<String>,
    /// The first and last syscall event (nanoseconds since the epoch).
    pub first_ts: Option<u64>,
    pub last_ts: u64,
    /// Syscall events counted.
    pub events: u64,
    init: Counters,
    serving: Counters,
    pub marker: MarkerState,
    pub executables: Vec<FileUse>,
    pub libraries: Vec<FileUse>,
    /// Processes already running when the capture started that did something in it: (pid, comm).
    pub preexisting: Vec<(u32, String)>,
    /// The command of the container's init process (pid 1 inside), when the capture shows it.
    pub command: Vec<String>,
    /// Programs exec'd whose path the capture does not hold (only argv[0]).
    pub argv0_only: Vec<String>,
}

impl ContainerAgg {
    pub fn new(id: String, full_id: Option<String>) -> ContainerAgg {
        ContainerAgg {
            id,
            full_id,
            first_ts: None,
            last_ts: 0,
            events: 0,
            init: Counters::default(),
            serving: Counters::default(),
            marker: MarkerState::default(),
            executables: Vec::new(),
            libraries: Vec::new(),
            preexisting: Vec::new(),
            command: Vec::new(),
            argv0_only: Vec::new(),
        }
    }

    /// Counts one syscall of process `pid`, letting the phase marker look at it first.
    #[inline]
    pub fn syscall(&mut self, plan: &Plan, sys: Sys, ts: u64, pid: u32, seen: Seen, args: Option<EventArgs>) {
        let start = *self.first_ts.get_or_insert(ts);
        self.last_ts = self.last_ts.max(ts);
        self.events += 1;
        plan.observe(&mut self.marker, sys, ts, start, pid);
        match self.marker.phase_at(ts) {
            Phase::Serving => self.serving.add(sys, ts, seen, args),
            _ => self.init.add(sys, ts, seen, args),
        }
    }

    /// The counts of `phase` (a capture has no runtime phase: it is never cut at runc's exec).
    pub fn counters(&self, phase: Phase) -> Option<&Counters> {
        match phase {
            Phase::Runtime => None,
            Phase::Init => Some(&self.init),
            Phase::Serving => Some(&self.serving),
        }
    }

    /// Records a program exec'd (or running at capture start) at `ts`.
    pub fn executable(&mut self, path: String, ts: u64, pid: u32, comm: Option<String>) {
        let file = self.file_use(path, ts, pid, comm);
        Trace::add_file(&mut self.executables, file);
    }

    /// Records a file mapped executable at `ts`.
    pub fn library(&mut self, path: String, ts: u64, pid: u32, comm: Option<String>) {
        let file = self.file_use(path, ts, pid, comm);
        Trace::add_file(&mut self.libraries, file);
    }

    fn file_use(&self, path: String, ts: u64, pid: u32, comm: Option<String>) -> FileUse {
        let start = self.first_ts.unwrap_or(ts);
        FileUse { path, phase: self.marker.phase_at(ts), pid, first_seen_ns: ts.saturating_sub(start), comm }
    }
}
