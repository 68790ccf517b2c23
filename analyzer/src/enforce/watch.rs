//! The enforcer's loop, on a thread of its own (ptrace belongs to the thread that seized): reads
//! the marker's events, switches each stopped process (those that stopped together on threads of
//! their own, in parallel) and then takes its marker probe away, gives each process the hold
//! stopped its probe and lets it run on (one stopped at its exec, after reading its filters for
//! the preflight), shows the live counts, and notices processes added with `docker exec`, which
//! run under the container's original filter.
//!
//! When told to stop it first disarms (hold and probes), then handles what is still in the ring
//! buffer, so no process is left stopped.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracer_common::cause;

use super::process::Pinned;
use super::switch::{Hit, Outcome, Record, Switcher};
use crate::trace::ebpf::events::Event;
use crate::trace::ebpf::switch::SwitchProbe;
use crate::trace::live::cgroup;

/// How often the counts are refreshed and the stop flag looked at.
const TICK: Duration = Duration::from_millis(250);
/// How long without an event before the probes of processes gone are closed and the
/// preflight's next child is forked (neither holds up processes starting or switching).
const QUIET: Duration = Duration::from_secs(2);

/// What the loop leaves behind.
#[derive(Default)]
pub struct Watched {
    pub records: Vec<Record>,
    /// Processes that joined the container with `docker exec`: (pid, command name).
    pub exec_processes: Vec<(u32, String)>,
    /// Processes the hold stopped until their marker probe was attached: (pid, command name).
    pub held: Vec<(u32, String)>,
    /// Processes found without a probe a tick after they appeared, and probed then: the hold
    /// missed them (or its event was lost), so they may have run past their serving entry once
    /// before switching at a later call: (pid, command name).
    pub late: Vec<(u32, String)>,
}

pub struct Watch {
    pub probe: SwitchProbe,
    pub switcher: Switcher,
    /// The container's cgroup directory on this host.
    pub cgroup_dir: PathBuf,
}

/// What the kernel asked for.
enum Asked {
    /// Switch it: the marker stopped it.
    Switch(Hit),
    /// Probe it: the hold stopped it.
    Probe(Hit),
    /// Prepare its preflight: it exec'd.
    Prepare(Hit),
}

/// When the container's processes are looked over for probes.
enum Sweep {
    /// Before the loop: every process is probed, as a running container's are all there.
    Start,
    /// At a tick; `quiet` when nothing has happened for `QUIET`.
    Tick { quiet: bool },
}

impl Watch {
    /// Runs until `stop` is set, then drains; the probe is dropped (everything detached) at the end.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> Watched {
        block_termination_signals();
        let mut events = self.probe.take_events().expect("a fresh probe has its ring buffer");
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} enforcing {msg}").expect("a valid template"));
        let mut watched = Watched::default();
        let mut known: BTreeSet<u32> = BTreeSet::new();
        // Processes without a probe at the last tick.
        let mut unprobed: BTreeSet<u32> = BTreeSet::new();
        // Those whose probe could not be attached: reported once, not tried again.
        let mut given_up: BTreeSet<u32> = BTreeSet::new();
        // A running container's processes (--attach) are probed now; those that come later are held.
        self.probe_unprobed(Sweep::Start, &mut unprobed, &mut given_up, &mut watched, &bar);
        let mut last_tick = Instant::now() - TICK;
        let mut last_event = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            wait_readable(&events, TICK);
            if self.handle_events(&mut events, true, &mut given_up, &mut watched, &bar) {
                last_event = Instant::now();
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.notice_exec(&mut known, &mut watched, &bar);
                let quiet = last_event.elapsed() >= QUIET;
                if quiet {
                    self.switcher.prepare();
                }
                let when = Sweep::Tick { quiet };
                self.probe_unprobed(when, &mut unprobed, &mut given_up, &mut watched, &bar);
                bar.set_message(self.counts(&watched));
                bar.tick();
            }
        }
        self.probe.disarm();
        self.handle_events(&mut events, false, &mut given_up, &mut watched, &bar);
        bar.finish_and_clear();
        watched
    }

    /// Handles what the ring buffer holds; returns whether it held anything.
    fn handle_events(
        &mut self,
        events: &mut RingBuf<MapData>,
        armed: bool,
        given_up: &mut BTreeSet<u32>,
        watched: &mut Watched,
        bar: &ProgressBar,
    ) -> bool {
        let mut hits = Vec::new();
        let mut any = false;
        while let Some(item) = events.next() {
            any = true;
            let Some(Event::Phase { header, cause, process }) = Event::decode(&item) else { continue };
            let hit = Hit { pid: process, tid: header.tid, comm: header.comm, hit_ns: header.ts_ns };
            match cause {
                cause::STOPPED => hits.push(Asked::Switch(hit)),
                cause::HELD => hits.push(Asked::Probe(hit)),
                cause::EXECED => hits.push(Asked::Prepare(hit)),
                _ => {}
            }
        }
        // The held first: a new process waits for its probe no longer than it takes to attach
        // one, and one that exec'd for its filters to be read.
        let mut stopped = Vec::new();
        for asked in hits {
            match asked {
                Asked::Probe(hit) => self.release_held(&hit, armed, given_up, watched, bar),
                Asked::Prepare(hit) => self.release_execed(&hit, armed),
                Asked::Switch(hit) => stopped.push(hit),
            }
        }
        let hits = stopped;
        // Processes that hit the marker together are switched together: the second one does not
        // wait for the first one's switch. The first is switched on this thread, whose stack and
        // heap are in memory already: a new thread's first switch takes page faults (about 20,
        // 50-100 µs) while its process is held.
        let switcher = &self.switcher;
        let records: Vec<Record> = match hits.as_slice() {
            [] => Vec::new(),
            [first, others @ ..] => std::thread::scope(|scope| {
                let switching: Vec<_> = others.iter().map(|hit| scope.spawn(move || switcher.switch(hit))).collect();
                let mut records = vec![switcher.switch(first)];
                records.extend(switching.into_iter().map(|thread| thread.join().expect("a switch never panics")));
                records
            }),
        };
        for record in records {
            // Switched or not, it is never stopped again: its breakpoint goes.
            self.probe.unprobe(record.pid);
            bar.suspend(|| eprintln!("seccomp-refine: {}", describe(&record)));
            watched.records.push(record);
        }
        any
    }

    /// Gives a process the hold stopped its marker probe (unless disarmed) and lets it run on.
    fn release_held(
        &mut self,
        hit: &Hit,
        armed: bool,
        given_up: &mut BTreeSet<u32>,
        watched: &mut Watched,
        bar: &ProgressBar,
    ) {
        let Ok(pinned) = Pinned::open(hit.pid, hit.hit_ns) else { return };
        if armed {
            match self.probe.probe(hit.pid) {
                Ok(()) => {
                    self.switcher.prepare_for(&pinned, hit.pid, hit.tid);
                    watched.held.push((hit.pid, hit.comm.clone()));
                }
                Err(err) => self.give_up(hit.pid, &hit.comm, &anyhow::Error::from(err), given_up, watched, bar),
            }
        }
        let _ = pinned.signal(libc::SIGCONT);
    }

    /// Prepares the preflight for the filters a process has after its exec (unless disarmed),
    /// and lets it run on.
    fn release_execed(&mut self, hit: &Hit, armed: bool) {
        let Ok(pinned) = Pinned::open(hit.pid, hit.hit_ns) else { return };
        if armed {
            self.switcher.prepare_for(&pinned, hit.pid, hit.tid);
        }
        let _ = pinned.signal(libc::SIGCONT);
    }

    fn give_up(
        &self,
        pid: u32,
        comm: &str,
        err: &anyhow::Error,
        given_up: &mut BTreeSet<u32>,
        watched: &mut Watched,
        bar: &ProgressBar,
    ) {
        given_up.insert(pid);
        let record = Record {
            pid,
            tid: pid,
            comm: comm.to_owned(),
            outcome: Outcome::Failed(format!("no marker probe: {err:#}")),
            stop_us: 0.0,
            hit_to_resume_us: 0.0,
            preflight_cached: false,
        };
        bar.suspend(|| eprintln!("seccomp-refine: {}", describe(&record)));
        watched.records.push(record);
    }

    /// Probes the container's processes that have neither switched nor a probe: all of them at
    /// the start, later those already without one at the last tick (`unprobed`, which this
    /// refills), since the hold's event for them would have been handled by now. The probes of
    /// processes that have left go when it is quiet.
    fn probe_unprobed(
        &mut self,
        when: Sweep,
        unprobed: &mut BTreeSet<u32>,
        given_up: &mut BTreeSet<u32>,
        watched: &mut Watched,
        bar: &ProgressBar,
    ) {
        let (at_start, quiet) = (matches!(when, Sweep::Start), matches!(when, Sweep::Tick { quiet: true }));
        let previous = std::mem::take(unprobed);
        let processes: BTreeSet<u32> = cgroup::processes(&self.cgroup_dir).into_iter().collect();
        // Closing a probe holds up attaching one (`SwitchProbe::unprobe`): those of processes
        // gone go when nothing has happened for a while, not while others are born or switch.
        if quiet {
            for pid in self.probe.probed().difference(&processes) {
                self.probe.unprobe(*pid);
                self.switcher.forget(*pid);
            }
        }
        let switched = self.probe.switched();
        let probed = self.probe.probed();
        let held = self.probe.held_or_probed();
        for &pid in &processes {
            if switched.contains(&pid) || probed.contains(&pid) || given_up.contains(&pid) {
                continue;
            }
            if !at_start && !previous.contains(&pid) {
                unprobed.insert(pid);
                continue;
            }
            let comm = comm_of(pid);
            match self.probe.probe(pid) {
                Err(err) => self.give_up(pid, &comm, &anyhow::Error::from(err), given_up, watched, bar),
                Ok(()) if at_start => {}
                Ok(()) => {
                    // Held with its event lost: it waits for this.
                    if held.contains(&pid)
                        && let Ok(pinned) = Pinned::open(pid, u64::MAX)
                    {
                        let _ = pinned.signal(libc::SIGCONT);
                    }
                    bar.suspend(|| {
                        eprintln!(
                            "seccomp-refine: pid {pid} ({comm}) had no marker probe a tick after it appeared: probed \
                             now; if it passed its serving entry meanwhile, it switches at its next call of it"
                        )
                    });
                    watched.late.push((pid, comm));
                }
            }
        }
    }

    /// Live counts: switched (also by inheritance), refused or failed, and pending (in the
    /// container and not switched: those yet to reach the marker, and those that never will).
    fn counts(&self, watched: &Watched) -> String {
        let processes: BTreeSet<u32> = cgroup::processes(&self.cgroup_dir).into_iter().collect();
        let switched = self.probe.switched();
        let refused: BTreeSet<u32> = watched
            .records
            .iter()
            .filter(|record| matches!(record.outcome, Outcome::Refused(_) | Outcome::Failed(_)))
            .map(|record| record.pid)
            .collect();
        let live_switched = processes.iter().filter(|pid| switched.contains(pid) && !refused.contains(pid)).count();
        let live_refused = processes.intersection(&refused).count();
        let pending = processes.len() - live_switched - live_refused;
        format!("switched {live_switched} · refused {live_refused} · pending {pending}")
    }

    /// Reports each process that joined the container from outside its process tree.
    fn notice_exec(&self, known: &mut BTreeSet<u32>, watched: &mut Watched, bar: &ProgressBar) {
        let processes: BTreeSet<u32> = cgroup::processes(&self.cgroup_dir).into_iter().collect();
        for &pid in processes.difference(&known.clone()) {
            let joined = exec_joined(pid, &processes);
            // runc's own stages (at the container's start, or an exec not yet exec'd): look again
            // at the next tick.
            if joined.as_deref().is_some_and(|comm| comm.starts_with("runc:")) {
                continue;
            }
            known.insert(pid);
            if let Some(comm) = joined {
                bar.suspend(|| {
                    eprintln!(
                        "seccomp-refine: pid {pid} ({comm}) joined with docker exec: it runs under the container's \
                         original filter and is switched only if it reaches the marker itself"
                    )
                });
                watched.exec_processes.push((pid, comm));
            }
        }
    }
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|comm| comm.trim_end().to_owned()).unwrap_or_default()
}

/// The command name of `pid` when it came into the container from outside: its parent is not
/// in the container and it is not the container's first process (pid 1 in its namespace).
fn exec_joined(pid: u32, in_container: &BTreeSet<u32>) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    let ppid: u32 = field("PPid:")?.parse().ok()?;
    let innermost = field("NSpid:")?.split_whitespace().last()?;
    (innermost != "1" && !in_container.contains(&ppid)).then(|| field("Name:").unwrap_or("?").to_owned())
}

/// One log line per switch.
pub fn describe(record: &Record) -> String {
    let who = format!("pid {} ({})", record.pid, record.comm);
    let timing = format!("stopped {:.0} µs, hit to resume {:.0} µs", record.stop_us, record.hit_to_resume_us);
    match &record.outcome {
        Outcome::Switched { from } if *from == record.tid => format!("switched {who}: {timing}"),
        Outcome::Switched { from } => format!("switched {who} from its thread {from} (TSYNC): {timing}"),
        Outcome::AlreadySwitched => format!("{who} was already switched: {timing}"),
        Outcome::Refused(why) => format!("refused {who}: {why}; it runs on unchanged ({timing})"),
        Outcome::Failed(why) => format!("could not switch {who}: {why}; it was restored ({timing})"),
        Outcome::Gone => format!("{who} exited before its switch"),
    }
}

fn wait_readable(events: &RingBuf<MapData>, timeout: Duration) {
    let mut fds = [libc::pollfd { fd: events.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as i32) };
}

/// Ctrl-C and friends go to the main thread: a signal that ended this thread's process mid-way
/// would leave a target with injected registers.
fn block_termination_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        set.add(signal);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}
