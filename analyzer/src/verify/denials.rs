//! Which syscalls seccomp denied, by which process, in which phase — from the records of `perf`.
//!
//! The signature: seccomp decides before the `sys_enter` tracepoint fires, so a denied call shows
//! as a `sys_exit` with no `sys_enter` since that thread's previous exit, returning `-errno`. That
//! is certain only for a thread we have watched from a point between two syscalls:
//! - a task created inside the cgroup (a `Fork` record) starts between syscalls;
//! - any other task (one the runtime moved in, such as runc's init) is trusted from its first exit
//!   on — runc and crun make calls the filter always lets through (`prctl`/`seccomp` to install it,
//!   which the caller watches) before anything can be denied;
//! - lost records make every thread untrusted until its next exit; exits without an entry in that
//!   window are counted as `unconfirmed`, not reported as denials.
//!
//! Phases, for one filter: `runtime` for a process that has not exec'd anything inside the
//! container yet (runc init, for the container or a `docker exec`), then `init` until the workload
//! started (the container was ready) and `serving` from then on.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::perf::{Kind, Record};
use crate::syscalls::Arch;
use crate::trace::Phase;

/// One denied syscall in one process and phase, however often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub syscall: String,
    pub number: i64,
    /// The error the caller got (`38` is ENOSYS, `1` EPERM).
    pub errno: i64,
    pub phase: Phase,
    /// The program the process ran (its exec path), or its name before any exec.
    pub process: String,
    /// The first process (host pid) denied.
    pub pid: u32,
    pub count: u64,
    /// Milliseconds after the container was started.
    pub first_ms: u64,
    /// Set when the denial is one libc expects: the profile answered `ENOSYS` for a call glibc
    /// tries first and then does without, using this instead (`ENOSYS_FALLBACKS`) — allowed by
    /// the profile. Such denials do not fail a verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl Denial {
    /// Marks the denial as an expected fallback when it is one under a profile allowing `allowed`.
    pub fn classify(&mut self, allowed: &crate::profile::SyscallSet) {
        const ENOSYS: i64 = 38;
        let fallback = crate::profile::ENOSYS_FALLBACKS.iter().find(|(first, _)| *first == self.syscall);
        self.fallback = match fallback {
            Some((_, Some(instead))) if self.errno == ENOSYS && allowed.contains(*instead) => {
                Some((*instead).to_owned())
            }
            Some((_, None)) if self.errno == ENOSYS => Some("nothing (libc carries on without it)".to_owned()),
            _ => None,
        };
    }
}

/// What the records say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub denials: Vec<Denial>,
    pub lost_events: u64,
    pub unconfirmed: u64,
}

/// Moments of the run, on the records' clock.
#[derive(Clone, Copy, Debug)]
pub struct Milestones {
    pub started_ns: u64,
    /// When the workload started; `None` when there was none (everything after exec is `init`).
    pub workload_ns: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreadState {
    /// Between syscalls, as far as we know for certain.
    Between,
    InSyscall,
    /// Not known: first seen mid-life, or records were lost.
    Unknown,
}

#[derive(Clone, Default)]
struct Process {
    program: Option<String>,
    comm: Option<String>,
}

impl Process {
    fn label(&self, pid: u32) -> String {
        match (&self.program, &self.comm) {
            (Some(program), _) => program.clone(),
            (None, Some(comm)) => comm.clone(),
            (None, None) => format!("pid {pid}"),
        }
    }
}

/// Reads `records` (sorted by time) and returns the denials, aggregated.
pub fn find(records: &[Record], arch: Arch, milestones: Milestones) -> Findings {
    let mut threads: HashMap<u32, ThreadState> = HashMap::new();
    let mut processes: HashMap<u32, Process> = HashMap::new();
    let mut findings = Findings::default();
    let mut denied: BTreeMap<(Phase, String, i64, i64), Denial> = BTreeMap::new();
    for record in records {
        match &record.kind {
            Kind::Fork { parent_pid } => {
                if record.pid != *parent_pid {
                    let parent = processes.get(parent_pid).cloned().unwrap_or_default();
                    processes.insert(record.pid, parent);
                }
                threads.insert(record.tid, ThreadState::Between);
            }
            Kind::Comm { comm } => processes.entry(record.pid).or_default().comm = Some(comm.clone()),
            Kind::Exec { filename } => processes.entry(record.pid).or_default().program = Some(filename.clone()),
            Kind::Enter { .. } => {
                threads.insert(record.tid, ThreadState::InSyscall);
            }
            Kind::Exit { nr, ret } => {
                let before = threads.insert(record.tid, ThreadState::Between).unwrap_or(ThreadState::Unknown);
                let failed = (-4095..0).contains(ret);
                match before {
                    ThreadState::Between if failed => {
                        let process = processes.get(&record.pid).cloned().unwrap_or_default();
                        let phase = phase_of(&process, record.time, milestones);
                        let key = (phase, process.label(record.pid), *nr, -ret);
                        let entry = denied.entry(key).or_insert_with(|| Denial {
                            syscall: syscall_name(arch, *nr),
                            number: *nr,
                            errno: -ret,
                            phase,
                            process: process.label(record.pid),
                            pid: record.pid,
                            count: 0,
                            first_ms: record.time.saturating_sub(milestones.started_ns) / 1_000_000,
                            fallback: None,
                        });
                        entry.count += 1;
                    }
                    ThreadState::Unknown if failed && findings.lost_events > 0 => findings.unconfirmed += 1,
                    _ => {}
                }
            }
            Kind::Lost { count } => {
                findings.lost_events += count;
                threads.values_mut().for_each(|state| *state = ThreadState::Unknown);
            }
        }
    }
    findings.denials = denied.into_values().collect();
    findings.denials.sort_by_key(|denial| (denial.phase, denial.first_ms));
    findings
}

fn phase_of(process: &Process, at: u64, milestones: Milestones) -> Phase {
    match (&process.program, milestones.workload_ns) {
        (None, _) => Phase::Runtime,
        (Some(_), Some(workload)) if at >= workload => Phase::Serving,
        (Some(_), _) => Phase::Init,
    }
}

fn syscall_name(arch: Arch, nr: i64) -> String {
    u32::try_from(nr).ok().and_then(|nr| arch.name(nr)).map_or_else(|| format!("syscall_{nr}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MKDIR: i64 = 83;
    const PRCTL: i64 = 157;
    const ENOSYS: i64 = -38;

    fn at(time: u64, pid: u32, tid: u32, kind: Kind) -> Record {
        Record { time, pid, tid, kind }
    }

    fn enter(time: u64, tid: u32, nr: i64) -> Record {
        at(time, tid, tid, Kind::Enter { nr })
    }

    fn exit(time: u64, tid: u32, nr: i64, ret: i64) -> Record {
        at(time, tid, tid, Kind::Exit { nr, ret })
    }

    fn exec(time: u64, pid: u32, program: &str) -> Record {
        at(time, pid, pid, Kind::Exec { filename: program.into() })
    }

    fn check(records: &[Record], workload_ns: Option<u64>) -> Vec<(Phase, String, String, i64, u64)> {
        let findings = find(records, Arch::X86_64, Milestones { started_ns: 0, workload_ns });
        findings.denials.into_iter().map(|d| (d.phase, d.syscall, d.process, d.errno, d.count)).collect()
    }

    #[test]
    fn an_exit_without_entry_is_a_denial_in_the_right_phase() {
        let records = [
            // runc init, moved into the cgroup mid-syscall: its first exit only synchronizes.
            at(1, 10, 10, Kind::Comm { comm: "runc:[2:INIT]".into() }),
            exit(2, 10, 0, -11),
            enter(3, 10, PRCTL),
            exit(4, 10, PRCTL, 0),
            exit(5, 10, 116, ENOSYS), // setgroups denied under the filter, before exec
            exec(6, 10, "/usr/sbin/nginx"),
            exit(7, 10, MKDIR, ENOSYS),
            at(8, 11, 11, Kind::Fork { parent_pid: 10 }),
            exit(9, 11, MKDIR, ENOSYS),
            exit(10, 11, MKDIR, ENOSYS),
        ];
        assert_eq!(
            check(&records, Some(9)),
            [
                (Phase::Runtime, "setgroups".into(), "runc:[2:INIT]".into(), 38, 1),
                (Phase::Init, "mkdir".into(), "/usr/sbin/nginx".into(), 38, 1),
                (Phase::Serving, "mkdir".into(), "/usr/sbin/nginx".into(), 38, 2),
            ]
        );
    }

    #[test]
    fn completed_calls_children_and_successes_are_not_denials() {
        let records = [
            at(1, 20, 20, Kind::Fork { parent_pid: 1 }),
            exit(2, 20, 56, 0), // the child's return from clone
            enter(3, 20, MKDIR),
            exit(4, 20, MKDIR, -17), // EEXIST from the kernel, not from seccomp
            exit(5, 20, 3, 0),       // a watched call returning success without entry: not an error
        ];
        assert!(check(&records, None).is_empty());
    }

    #[test]
    fn losses_make_exits_unconfirmed_until_the_thread_resynchronizes() {
        let records = [
            at(1, 30, 30, Kind::Fork { parent_pid: 1 }),
            at(2, 0, 0, Kind::Lost { count: 5 }),
            exit(3, 30, MKDIR, ENOSYS), // its entry may have been lost
            exit(4, 30, MKDIR, ENOSYS), // synchronized again: certain
        ];
        let findings = find(&records, Arch::X86_64, Milestones { started_ns: 0, workload_ns: None });
        assert_eq!((findings.lost_events, findings.unconfirmed), (5, 1));
        assert_eq!(findings.denials.len(), 1);
        assert_eq!(findings.denials[0].count, 1);
    }
}
