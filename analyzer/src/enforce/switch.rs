//! One switch: a process the marker stopped gets the serving filter, or is refused and left as
//! it was — and in every case resumes.
//!
//! The thread that hit the marker is seized, checked by the preflight, and made to call
//! `prctl(PR_SET_NO_NEW_PRIVS)` (when not set yet) and `seccomp(SET_MODE_FILTER, TSYNC, prog)`,
//! which gives every thread of the process the filter. When a thread's filters diverge, TSYNC
//! names it; the call is then made again from that thread, whose chain is the deeper one.
//!
//! While it is held, the held thread runs under `SCHED_DEADLINE` (`Scheduled::urgent`) and the
//! enforcer's thread on the CPU it last ran on (`Beside`), so each wake-up of either gets that CPU
//! at once, and the process is asked as little as can be: its vDSO, no-new-privs and filters were
//! read at the hold of its birth, which pinned it; its identity, SIGTRAP disposition and last CPU
//! come from one read of its stat through that pin, and its filters are only checked for one
//! added since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::filter::Filter;
use super::inject::{InjectError, Seized};
use super::preflight::{FLAG_TSYNC, Preflight, SET_MODE_FILTER, Stack, Verdict, filter_stack, filters_added, lock};
use super::process::{Gadget, Pinned, host_tid, thread_status};

/// A process the marker stopped.
#[derive(Clone, Debug)]
pub struct Hit {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// CLOCK_MONOTONIC nanoseconds of the uprobe hit.
    pub hit_ns: u64,
}

/// What a switch came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// The serving filter is installed in every thread; `from` is the thread that installed it.
    Switched { from: u32 },
    /// An earlier run had switched it.
    AlreadySwitched,
    /// The preflight said no; nothing was changed.
    Refused(String),
    /// The injection failed; the process was restored and resumed.
    Failed(String),
    /// The process exited before it could be switched.
    Gone,
}

/// One switch, as `--stats` records it.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long the injector worked on the stopped process, from taking it up (pidfd, vDSO,
    /// seize) to its resume (detach and SIGCONT), in microseconds.
    pub stop_us: f64,
    /// From the uprobe hit to the process running again, in microseconds.
    pub hit_to_resume_us: f64,
    /// Whether the preflight's verdict came from its cache.
    pub preflight_cached: bool,
}

/// Switches processes to one serving filter.
pub struct Switcher {
    serving: Filter,
    /// Its instructions as the kernel reads them, made once: a buffer allocated while a process
    /// is held is, the first time, fresh memory, which takes page faults.
    program: Vec<u8>,
    gadget: Gadget,
    /// Shared with the replays decided ahead of a hit, on threads of their own.
    preflight: Arc<Preflight>,
    /// What the hold at a process's birth (fork or exec) read of it, by pid: its switch reads
    /// none of it from /proc again while it is held.
    births: Mutex<HashMap<u32, Birth>>,
    /// The scheduler's default time slice, as a thread of the default policy without a slice of
    /// its own reads it (this one, when it is made: none is set here).
    base_slice: u64,
}

/// What the injection needs to know of a process, read at its birth hold.
struct Birth {
    /// The process, pinned then, with the image the rest was read from (an exec since makes it
    /// stale): its switch reads its stat again through this pin.
    pinned: Pinned,
    /// The `syscall` instruction in its vDSO, mapped by its exec.
    gadget: u64,
    /// Set for good once set, and inherited by its threads: a `true` is never stale, a stale
    /// `false` costs one `prctl` call more.
    no_new_privs: bool,
    /// Its filters, oldest first, whose preflight verdict was decided while it ran on.
    filters: Option<Stack>,
}

/// What the injection needs to know of a seized thread.
struct Target {
    /// The `syscall` instruction in its vDSO.
    gadget: u64,
    no_new_privs: bool,
    ignores_sigtrap: bool,
    /// The filters of its process's birth: its own while it has no more than they count.
    born_with: Option<Stack>,
}

/// What an injection from one thread came to.
enum Injected {
    Done(Outcome),
    /// TSYNC failed because of this thread (its id in the process's pid namespace).
    Diverging(u32),
}

impl Switcher {
    /// Fails when this kernel's vDSO has no `syscall` instruction to make the calls through.
    pub fn new(serving: Filter) -> Result<Switcher> {
        Ok(Switcher {
            preflight: Arc::new(Preflight::new(serving.clone())),
            program: serving.bytes(),
            serving,
            gadget: Gadget::find()?,
            births: Mutex::new(HashMap::new()),
            base_slice: sched_attr(0).map_or(0, |attr| attr.sched_runtime),
        })
    }

    /// Reads the filters of thread `tid` of process `pinned` (`pid`), held (`SIGSTOP`) at its
    /// birth and not yet at its marker, and decides the preflight's verdict for them on a thread of
    /// its own while it runs on: its switch then finds the verdict cached, the first switch of a
    /// container included; what else its switch needs is kept for it too. A process whose filters
    /// cannot be read is left to the preflight at its switch.
    pub fn prepare_for(&self, pinned: &Pinned, pid: u32, tid: u32) {
        let read = || (thread_status(pid, tid), self.gadget.address_in(pid));
        let Ok((seized, (status, gadget))) = Seized::seize_with(tid, read) else { return };
        let stack = filter_stack(tid);
        if seized.release().is_err() {
            return;
        }
        let Ok(status) = status else { return };
        let stack = stack.ok();
        if let (Ok(gadget), Ok(kept)) = (gadget, pinned.try_clone()) {
            let no_new_privs = status.no_new_privs;
            let birth = Birth { pinned: kept, gadget, no_new_privs, filters: stack.clone() };
            lock(&self.births).insert(pid, birth);
        }
        let Some(stack) = stack else { return };
        let preflight = self.preflight.clone();
        std::thread::spawn(move || preflight.verdict(&stack, status.no_new_privs));
    }

    /// Switches the process of `hit`, and resumes it whatever happens. Several processes may be
    /// switched at once, each from a thread of its own (ptrace belongs to the thread that seized).
    pub fn switch(&self, hit: &Hit) -> Record {
        let mut cached = false;
        let boost = Scheduled::boosted(self.base_slice);
        let started = Instant::now();
        // Switched or refused, it is never held again: its birth is not needed after this.
        let birth = lock(&self.births).remove(&hit.pid);
        let (outcome, stopped, resumed_ns) = match pin(hit, birth) {
            None => (Outcome::Gone, started.elapsed(), crate::trace::live::monotonic_now_ns()),
            Some((pinned, known)) => {
                let _beside = Beside::cpu(pinned.cpu);
                let outcome = self.switch_pinned(hit, known, &mut cached);
                // The marker's SIGSTOP either stopped the whole process (the detached threads wait
                // for this), or is still pending (this discards it), or the injector took it.
                let _ = pinned.signal(libc::SIGCONT);
                // It runs from here: closing the pin and giving this thread its CPUs back do not
                // hold it.
                (outcome, started.elapsed(), crate::trace::live::monotonic_now_ns())
            }
        };
        drop(boost);
        Record {
            pid: hit.pid,
            tid: hit.tid,
            comm: hit.comm.clone(),
            outcome,
            stop_us: stopped.as_secs_f64() * 1e6,
            hit_to_resume_us: resumed_ns.saturating_sub(hit.hit_ns) as f64 / 1e3,
            preflight_cached: cached,
        }
    }

    /// Readies the preflight's next replay (see `Preflight::prepare`): when nothing is happening.
    pub fn prepare(&self) {
        self.preflight.prepare();
    }

    /// Forgets what the birth of process `pid` said (it has exited).
    pub fn forget(&self, pid: u32) {
        lock(&self.births).remove(&pid);
    }

    /// The injection from the hit thread, and from a diverging thread if TSYNC names one.
    fn switch_pinned(&self, hit: &Hit, known: Option<Target>, cached: &mut bool) -> Outcome {
        let urgent = Scheduled::urgent(hit.tid, self.base_slice);
        let seized = match known {
            Some(target) => Seized::seize_with(hit.tid, || Ok(target)),
            None => self.seize(hit.pid, hit.tid),
        };
        let (mut seized, target) = match seized {
            Ok(seized) => seized,
            Err(err) => return outcome_of(err),
        };
        let first = self.inject(&mut seized, target, cached);
        // Before it may run its own code again.
        drop(urgent);
        let released = seized.release();
        match (first, released) {
            (Err(err), _) | (Ok(_), Err(err)) => outcome_of(err),
            (Ok(Injected::Done(outcome)), Ok(())) => outcome,
            (Ok(Injected::Diverging(ns_tid)), Ok(())) => self.retry_from(hit.pid, ns_tid, cached),
        }
    }

    fn retry_from(&self, pid: u32, ns_tid: u32, cached: &mut bool) -> Outcome {
        let Some(tid) = host_tid(pid, ns_tid) else {
            return Outcome::Failed(format!("TSYNC named thread {ns_tid}, which has exited"));
        };
        let (mut seized, target) = match self.seize(pid, tid) {
            Ok(seized) => seized,
            Err(err) => return outcome_of(err),
        };
        let injected = self.inject(&mut seized, target, cached);
        match (injected, seized.release()) {
            (Ok(Injected::Done(outcome)), Ok(())) => outcome,
            (Ok(Injected::Diverging(other)), Ok(())) => {
                Outcome::Failed(format!("threads {ns_tid} and {other} have diverging seccomp filters"))
            }
            (Err(err), _) | (_, Err(err)) => outcome_of(err),
        }
    }

    /// Seizes thread `tid` of process `pid`, and reads what the injection needs as it stops.
    fn seize(&self, pid: u32, tid: u32) -> Result<(Seized, Result<Target>), InjectError> {
        Seized::seize_with(tid, || {
            let status = thread_status(pid, tid)?;
            let gadget = self.gadget.address_in(pid)?;
            let (no_new_privs, ignores_sigtrap) = (status.no_new_privs, status.ignores_sigtrap);
            Ok(Target { gadget, no_new_privs, ignores_sigtrap, born_with: None })
        })
    }

    /// Preflight, then the calls, from the seized thread; `Seized::release` restores it.
    fn inject(&self, seized: &mut Seized, target: Result<Target>, cached: &mut bool) -> Result<Injected, InjectError> {
        let tid = seized.tid();
        let Target { gadget, no_new_privs, ignores_sigtrap, born_with } = match target {
            Ok(target) => target,
            Err(err) => return Ok(Injected::Done(Outcome::Failed(format!("{err:#}")))),
        };
        if ignores_sigtrap {
            seized.avoid_traps();
        }
        // Filters are only ever added, and every thread's descend from those of the birth (when it
        // was the only thread): as many as then are the same ones, and need not be read again.
        let (verdict, from_cache) = match born_with {
            Some(filters) if !filters_added(tid, filters.len()) => self.preflight.verdict(&filters, no_new_privs),
            _ => self.preflight.check(tid, no_new_privs),
        };
        *cached = from_cache;
        match verdict {
            Verdict::Go => {}
            Verdict::AlreadySwitched => return Ok(Injected::Done(Outcome::AlreadySwitched)),
            Verdict::Refuse(why) => return Ok(Injected::Done(Outcome::Refused(why))),
        }
        let address = seized.scratch(16 + self.program.len());
        let header = fprog_header(address + 16, self.serving.insns.len());
        seized.write(address, &[&header, &self.program])?;
        if !no_new_privs {
            let result = seized.call(gadget, libc::SYS_prctl as u64, &[libc::PR_SET_NO_NEW_PRIVS as u64, 1])?;
            if result != 0 {
                return Ok(Injected::Done(Outcome::Failed(format!("prctl(PR_SET_NO_NEW_PRIVS) returned {result}"))));
            }
        }
        let result = seized.call(gadget, libc::SYS_seccomp as u64, &[SET_MODE_FILTER, FLAG_TSYNC, address])?;
        Ok(match result {
            0 => Injected::Done(Outcome::Switched { from: tid }),
            diverging if diverging > 0 => Injected::Diverging(diverging as u32),
            errno => Injected::Done(Outcome::Failed(format!(
                "seccomp(SET_MODE_FILTER, TSYNC) failed: {}",
                std::io::Error::from_raw_os_error(-errno as i32)
            ))),
        })
    }
}

/// The process of `hit`, pinned, with what its birth said of it while that still holds. The pin
/// of its birth, read again, is the process that hit while it lives (no other could have had its
/// pid meanwhile); else it is pinned anew.
fn pin(hit: &Hit, birth: Option<Birth>) -> Option<(Pinned, Option<Target>)> {
    if let Some(Birth { mut pinned, gadget, no_new_privs, filters }) = birth {
        let born = pinned.image;
        if pinned.refresh().is_ok() {
            let ignores_sigtrap = pinned.ignores_sigtrap;
            let known =
                (pinned.image == born).then_some(Target { gadget, no_new_privs, ignores_sigtrap, born_with: filters });
            return Some((pinned, known));
        }
    }
    Pinned::open(hit.pid, hit.hit_ns).ok().map(|pinned| (pinned, None))
}

/// A thread under other scheduling attributes until dropped, then under its own again: its
/// policy, nice, slice and flags as they were.
struct Scheduled {
    tid: u32,
    previous: Option<libc::sched_attr>,
}

impl Scheduled {
    /// Thread `tid` (`0`: the calling thread) under what `change` makes of its own attributes, or
    /// left as it is where `change` declines or the kernel refuses. `base_slice`: the scheduler's
    /// default time slice, which a thread without a slice of its own reads as its `sched_runtime`
    /// (see `Switcher::base_slice`).
    fn start(
        tid: u32,
        base_slice: u64,
        change: impl FnOnce(&libc::sched_attr) -> Option<libc::sched_attr>,
    ) -> Scheduled {
        let Some(mut own) = sched_attr(tid) else { return Scheduled { tid, previous: None } };
        // Given back as read, the default slice would become a slice of the thread's own.
        if own.sched_runtime == base_slice {
            own.sched_runtime = 0;
        }
        let previous = change(&own).filter(|changed| set_sched_attr(tid, changed)).map(|_| own);
        Scheduled { tid, previous }
    }

    /// The held thread under `SCHED_DEADLINE`. Each of its wake-ups (the seize's trap, each call)
    /// otherwise waits for a CPU behind whatever else runs there — on two cores, its sibling worker
    /// still starting — while the process is held; a deadline task runs at once. It is set while
    /// the thread is stopped and restored before it is let go, so none of its own code runs under
    /// it. Container cgroups refuse real-time policies, not this one; where it is refused (a cpuset
    /// narrower than the machine, the bandwidth taken), or the thread is not under the default
    /// policy, the thread is left as it is.
    fn urgent(tid: u32, base_slice: u64) -> Scheduled {
        Scheduled::start(tid, base_slice, |own| {
            (own.sched_policy == libc::SCHED_OTHER as u32).then_some(libc::sched_attr {
                sched_policy: SCHED_DEADLINE,
                sched_runtime: URGENT_RUNTIME_NS,
                sched_deadline: URGENT_PERIOD_NS,
                sched_period: URGENT_PERIOD_NS,
                ..*own
            })
        })
    }

    /// The calling thread at the lowest real-time priority. A switch waits for the stopped thread
    /// several times (at its seize and after each call), and on a busy machine each wake-up of the
    /// enforcer otherwise waits behind whatever runs on its CPU, while the process stays held.
    /// Without the privilege it runs as it was.
    fn boosted(base_slice: u64) -> Scheduled {
        Scheduled::start(0, base_slice, |own| {
            Some(libc::sched_attr { sched_policy: libc::SCHED_FIFO as u32, sched_priority: 1, ..*own })
        })
    }
}

/// The held thread's budget: over twice the CPU time a switch takes in it (its trap and two calls,
/// about 100 µs), so it is not throttled, and a quarter of a CPU, so several switches at once are
/// admitted beside other deadline tasks.
const URGENT_RUNTIME_NS: u64 = 250_000;
const URGENT_PERIOD_NS: u64 = 1_000_000;
/// `SCHED_DEADLINE` (not in the libc crate).
const SCHED_DEADLINE: u32 = 6;

impl Drop for Scheduled {
    fn drop(&mut self) {
        if let Some(own) = self.previous {
            set_sched_attr(self.tid, &own);
        }
    }
}

/// Thread `tid`'s scheduling attributes (`0`: the calling thread).
fn sched_attr(tid: u32) -> Option<libc::sched_attr> {
    // SAFETY: all-zero is a valid sched_attr (integers only).
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::sched_attr>() as libc::c_uint;
    // SAFETY: the kernel writes at most `size` bytes into `attr`.
    let got = unsafe { libc::syscall(libc::SYS_sched_getattr, tid as libc::pid_t, &mut attr, size, 0) };
    (got == 0).then_some(attr)
}

fn set_sched_attr(tid: u32, attr: &libc::sched_attr) -> bool {
    let attr = libc::sched_attr { size: size_of::<libc::sched_attr>() as u32, ..*attr };
    // SAFETY: the kernel reads one sched_attr of the size it says.
    unsafe { libc::syscall(libc::SYS_sched_setattr, tid as libc::pid_t, &attr, 0) == 0 }
}

/// The calling thread kept on the CPU the held process last ran on until dropped, then given its
/// CPUs back. The held thread's wake-ups then stay on that CPU — the enforcer waits, it runs; it
/// stops, the enforcer runs — where each would otherwise cross to the other CPU: an
/// inter-processor interrupt, on a virtual machine an exit to the host, to a CPU that may be
/// asleep. The held thread is not moved (under `SCHED_DEADLINE` it must be free to run on every
/// CPU), and it preempts the enforcer, which only waits for it.
struct Beside {
    previous: Option<libc::cpu_set_t>,
}

impl Beside {
    fn cpu(cpu: usize) -> Beside {
        let size = size_of::<libc::cpu_set_t>();
        // SAFETY: all-zero is an empty cpu_set_t; the calls act on the calling thread (0) and
        // read or write one cpu_set_t of the size passed.
        let previous = unsafe {
            let mut previous: libc::cpu_set_t = std::mem::zeroed();
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            (libc::sched_getaffinity(0, size, &mut previous) == 0
                && libc::CPU_ISSET(cpu, &previous)
                && libc::sched_setaffinity(0, size, &one) == 0)
                .then_some(previous)
        };
        Beside { previous }
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: the calling thread's own CPUs, as read at the start.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &previous) };
        }
    }
}

/// `struct sock_fprog`: length, padding, pointer to the instructions at `insns_at`.
fn fprog_header(insns_at: u64, len: usize) -> [u8; 16] {
    let mut header = [0; 16];
    header[..2].copy_from_slice(&(len as u16).to_ne_bytes());
    header[8..].copy_from_slice(&insns_at.to_ne_bytes());
    header
}

fn outcome_of(err: InjectError) -> Outcome {
    match err {
        InjectError::Gone(_) => Outcome::Gone,
        other => Outcome::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::filter::Action;

    /// What the `sleep` does with SIGTRAP, set up before its exec (which keeps both).
    #[derive(Clone, Copy, PartialEq)]
    enum Sigtrap {
        Default,
        Blocked,
        Ignored,
    }

    /// A switch of a real host process (`sleep`, blocked in `clock_nanosleep`), the way the
    /// marker leaves it (`stop_first`: in a group stop) or not. Needs root for the preflight.
    /// `born`: its birth was read first (`prepare_for`), as the hold does for a container's
    /// processes, so the switch reads nothing of it but its stat.
    fn switch_sleep(stop_first: bool, sigtrap: Sigtrap, born: bool) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            crate::skip_test("reading seccomp filters needs root");
            return;
        }
        let mut child = sleep_with(sigtrap);
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(200));
        if stop_first {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let all: Vec<u32> = crate::syscalls::Arch::X86_64.syscalls().map(|(nr, _)| nr).collect();
        let switcher = Switcher::new(Filter::allowlist(&all, Action::Errno)).unwrap();
        let hit = Hit { pid, tid: pid, comm: "sleep".into(), hit_ns: crate::trace::live::monotonic_now_ns() };
        if born {
            switcher.prepare_for(&Pinned::open(pid, hit.hit_ns).unwrap(), pid, pid);
            assert!(lock(&switcher.births).contains_key(&pid));
        }
        let scheduled =
            |attr: libc::sched_attr| (attr.sched_policy, attr.sched_nice, attr.sched_runtime, attr.sched_flags);
        let before = sched_attr(pid).map(scheduled);
        let record = switcher.switch(&hit);
        assert!(lock(&switcher.births).is_empty(), "a switch uses its birth up");
        assert_eq!(sched_attr(pid).map(scheduled), before, "its policy, nice, slice and flags as they were");
        assert_eq!(record.outcome, Outcome::Switched { from: pid });
        let status = thread_status(pid, pid).unwrap();
        assert_eq!((status.no_new_privs, status.filters), (true, 1));
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
        };
        // Back in its (restarted) sleep, neither stopped nor traced.
        let asleep = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            state() == 'S'
        });
        assert!(asleep, "state {}", state());
        assert_eq!(signal_mask(pid, "SigBlk"), sigtrap == Sigtrap::Blocked, "SIGTRAP blocked as before");
        assert_eq!(signal_mask(pid, "SigIgn"), sigtrap == Sigtrap::Ignored, "SIGTRAP ignored as before");
        assert_eq!(switcher.switch(&hit).outcome, Outcome::AlreadySwitched);
        assert_eq!(thread_status(pid, pid).unwrap().filters, 1);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn sleep_with(sigtrap: Sigtrap) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("sleep");
        command.arg("30");
        // SAFETY: the closure only makes async-signal-safe calls on the child's own nice and signal state.
        unsafe {
            command.pre_exec(move || {
                // A nice of its own, which the switch must leave as it was.
                libc::setpriority(libc::PRIO_PROCESS, 0, 5);
                match sigtrap {
                    Sigtrap::Default => {}
                    Sigtrap::Blocked => {
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        libc::sigaddset(&mut set, libc::SIGTRAP);
                        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    }
                    Sigtrap::Ignored => {
                        libc::signal(libc::SIGTRAP, libc::SIG_IGN);
                    }
                }
                Ok(())
            })
        };
        command.spawn().unwrap()
    }

    /// Whether SIGTRAP is in the mask `field` (`SigBlk`, `SigIgn`) of process `pid`.
    fn signal_mask(pid: u32, field: &str) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let mask = status.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':')).unwrap();
        u64::from_str_radix(mask.trim(), 16).unwrap() & 1 << (libc::SIGTRAP - 1) != 0
    }

    #[test]
    fn a_blocked_process_is_switched_and_sleeps_on() {
        switch_sleep(false, Sigtrap::Default, false);
    }

    #[test]
    fn a_stopped_process_is_switched_and_continued() {
        switch_sleep(true, Sigtrap::Default, false);
    }

    /// Seized in its group stop, as the marker leaves it, with what its birth said.
    #[test]
    fn a_stopped_process_seen_at_birth_is_switched_and_continued() {
        switch_sleep(true, Sigtrap::Default, true);
    }

    /// A step's trap unblocks SIGTRAP: the mask is put back.
    #[test]
    fn a_process_blocking_sigtrap_is_switched_and_still_blocks_it() {
        switch_sleep(true, Sigtrap::Blocked, false);
    }

    /// A step's trap would reset an ignored SIGTRAP: the calls go through syscall stops.
    #[test]
    fn a_process_ignoring_sigtrap_is_switched_and_still_ignores_it() {
        switch_sleep(false, Sigtrap::Ignored, false);
    }

    /// Its disposition read from its stat at the switch, not from its status.
    #[test]
    fn a_process_seen_at_birth_ignoring_sigtrap_still_ignores_it() {
        switch_sleep(true, Sigtrap::Ignored, true);
    }

    /// The enforcer's own thread at real-time priority while a switch holds a process (where it
    /// may be), then with its policy, nice, slice and flags as they were.
    #[test]
    fn a_boost_lasts_until_dropped() {
        let scheduled =
            |attr: libc::sched_attr| (attr.sched_policy, attr.sched_nice, attr.sched_runtime, attr.sched_flags);
        let own = sched_attr(0).unwrap();
        let boost = Scheduled::boosted(own.sched_runtime);
        if boost.previous.is_some() {
            assert_eq!(sched_attr(0).unwrap().sched_policy, libc::SCHED_FIFO as u32);
        }
        drop(boost);
        assert_eq!(sched_attr(0).map(scheduled), Some(scheduled(own)));
    }

    #[test]
    fn the_fprog_header_points_at_its_instructions() {
        let header = fprog_header(0x7ff0_0010, 2);
        assert_eq!(u16::from_ne_bytes([header[0], header[1]]), 2);
        assert_eq!(&header[2..8], &[0; 6]);
        assert_eq!(u64::from_ne_bytes(header[8..].try_into().unwrap()), 0x7ff0_0010);
    }
}
