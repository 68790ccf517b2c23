//! A live eBPF trace from start to `Trace`: the session loop shared by every target (a container
//! started for the trace, running containers, a host command).
//!
//! The session owns the loaded tracer and one `Recorder` per target: one set of kernel programs
//! traces them all, keyed by cgroup, and every event and table goes to the target that follows
//! its cgroup. It drains the event ring buffer as it fills, flips the phase for markers decided in
//! userspace (`ready:tcp:`, `after:`), shows progress, and stops at the deadline, on Ctrl-C, or
//! when the targets say they are done — and in every case the traces are still finished and
//! returned.

pub mod cgroup;
pub mod container;
mod entry;
pub mod exec;
mod interpreter;
mod progress;
pub mod record;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::phase as kernel;

use self::progress::{Counts, Progress};
use self::record::Recorder;
use crate::docker::rootfs::Rootfs;
use crate::trace::ebpf::events::Event;
use crate::trace::ebpf::{Config, KernelMarker, Stats, Tracer, privileges};
use crate::trace::{MarkerScope, MarkerSpec, Phase, Trace};

/// A marker userspace decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserMarker {
    None,
    /// Once this port of the target's address accepts a TCP connection.
    ReadyTcp(u16),
    /// This long after the target started.
    After(Duration),
}

/// Why the session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `--duration` elapsed.
    Deadline,
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM.
    Terminated,
    /// The target finished (the container or command exited, the workload ended).
    TargetDone,
}

/// How often the progress line, the userspace markers and the readiness probe are refreshed.
const TICK: Duration = Duration::from_millis(250);

pub struct Session {
    tracer: Tracer,
    events: AsyncFd<RingBuf<MapData>>,
    /// One per target, indexed by `TargetId`.
    recorders: Vec<Recorder>,
    /// When the session started, CLOCK_MONOTONIC and wall clock: every trace counts from here.
    start_ns: u64,
    started_at_unix_ns: u64,
    user_marker: UserMarker,
    target_started: Option<(Instant, IpAddr)>,
    progress: Progress,
    duration: Duration,
    /// How `run_until` ended, for the traces `finish` closes.
    ended: Option<Ended>,
    /// `auto` waits for a stack to add its marker uprobe, which needs the loading capabilities:
    /// `drop_privileges` leaves them until then.
    awaiting_entry: bool,
    /// `drop_privileges` was asked for while `awaiting_entry`.
    drop_after_entry: bool,
}

/// One traced target of a session (a container, a host command), as `Session::add_target` gave it.
pub type TargetId = usize;

impl Session {
    /// Loads the tracer; targets are added afterwards.
    pub fn start(config: &Config, duration: Duration) -> Result<Session> {
        let mut tracer = Tracer::load(config)?;
        let events = tracer.take_events().expect("a fresh tracer has its ring buffer");
        // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as the
        // AsyncFd owns the ring buffer.
        let events = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|err| err.into_parts().1)
            .context("cannot watch the event ring buffer")?;
        Ok(Session {
            tracer,
            events,
            recorders: Vec::new(),
            start_ns: monotonic_now_ns(),
            started_at_unix_ns: unix_now_ns(),
            user_marker: UserMarker::None,
            target_started: None,
            progress: Progress::new(duration),
            duration,
            ended: None,
            awaiting_entry: false,
            drop_after_entry: false,
        })
    }

    /// Adds a target; `trace` already names it, its start time is the session's.
    pub fn add_target(&mut self, mut trace: Trace, rootfs: Rootfs) -> TargetId {
        trace.started_at_unix_ns = self.started_at_unix_ns;
        self.recorders.push(Recorder::new(trace, self.start_ns, rootfs));
        self.recorders.len() - 1
    }

    pub fn tracer(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    pub fn recorder(&mut self, target: TargetId) -> &mut Recorder {
        &mut self.recorders[target]
    }

    pub fn note(&self, line: &str) {
        self.progress.note(line);
    }

    /// Gives up CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN once every program is loaded and attached:
    /// on this thread, which runs the session, and on the runtime's worker (`trace` runs one).
    /// Under `auto`, that waits until the serving entry's uprobe is attached (or the session ends).
    pub async fn drop_privileges(&mut self) -> Result<()> {
        if self.awaiting_entry {
            self.drop_after_entry = true;
            return Ok(());
        }
        let failed = "cannot give up the tracer's loading capabilities";
        privileges::drop_loading().context(failed)?;
        tokio::spawn(async { privileges::drop_loading() }).await.context(failed)?.context(failed)
    }

    /// `target` is traced in `cgroup` (already registered in the kernel, or registered here in
    /// `phase`).
    pub fn follow(&mut self, target: TargetId, cgroup: u64, register_in: Option<u32>) -> Result<()> {
        if let Some(phase) = register_in {
            self.tracer.register(cgroup, phase)?;
        }
        self.recorders[target].watch(cgroup);
        Ok(())
    }

    /// The target has started at `address`: `after:` counts from now, `ready:` probes there.
    pub fn target_started(&mut self, address: IpAddr) {
        self.target_started = Some((Instant::now(), address));
    }

    /// Runs until the deadline, Ctrl-C or SIGTERM, or `done` completes, processing events meanwhile.
    pub async fn run_until<F: Future>(&mut self, done: F) -> (Ended, Option<F::Output>) {
        let (ended, output) = self.process_until(done).await;
        // A short workload may end before a tick saw the event loop block; the target still runs.
        for _ in 0..5 {
            if !self.awaiting_entry {
                break;
            }
            self.check_wait_stacks().await;
            tokio::time::sleep(BLOCKED).await;
        }
        self.ended = Some(ended);
        (ended, output)
    }

    async fn process_until<F: Future>(&mut self, done: F) -> (Ended, Option<F::Output>) {
        let deadline = tokio::time::sleep(self.duration);
        tokio::pin!(deadline, done);
        let mut tick = tokio::time::interval(TICK);
        let started = Instant::now();
        // Without a handler SIGTERM would kill the process with the trace unwritten. Both streams
        // exist for the whole loop, so a signal that arrives while its body runs (unwinding a stack
        // can take seconds) waits for the next poll; a `ctrl_c()` made per iteration would miss it.
        let mut terminate = signal(SignalKind::terminate());
        let mut interrupt = signal(SignalKind::interrupt());
        loop {
            tokio::select! {
                () = &mut deadline => return (Ended::Deadline, None),
                Some(()) = async { interrupt.as_mut().ok()?.recv().await } => return (Ended::Interrupted, None),
                Some(()) = async { terminate.as_mut().ok()?.recv().await } => return (Ended::Terminated, None),
                output = &mut done => return (Ended::TargetDone, Some(output)),
                readable = self.events.readable_mut() => {
                    if let Ok(mut guard) = readable {
                        drain(guard.get_inner_mut(), &mut self.recorders);
                        guard.clear_ready();
                    }
                }
                _ = tick.tick() => {
                    self.check_user_marker().await;
                    if self.awaiting_entry {
                        self.check_wait_stacks().await;
                    }
                    self.progress.update(started.elapsed(), self.counts());
                }
            }
        }
    }

    /// Moves every target still in `init` to serving once the userspace marker says so (these
    /// markers are for one target, whose start `target_started` gave).
    async fn check_user_marker(&mut self) {
        let Some((started, address)) = self.target_started else { return };
        let waiting: Vec<u64> = self
            .recorders
            .iter()
            .filter_map(Recorder::first_cgroup)
            .filter(|&cgroup| self.tracer.phase(cgroup) == Some(kernel::INIT))
            .collect();
        if waiting.is_empty() {
            return;
        }
        let fire = match self.user_marker {
            UserMarker::None => false,
            UserMarker::After(after) => started.elapsed() >= after,
            UserMarker::ReadyTcp(port) => accepts(SocketAddr::new(address, port)).await,
        };
        if !fire {
            return;
        }
        let how = match self.user_marker {
            UserMarker::ReadyTcp(port) => format!("port {port} accepting a connection"),
            _ => "the timer".to_owned(),
        };
        for cgroup in waiting {
            if self.tracer.advance(cgroup, kernel::INIT, kernel::SERVING).unwrap_or(false) {
                let recorder = self.recorders.iter_mut().find(|recorder| recorder.watches(cgroup));
                recorder.expect("a waiting cgroup is followed").marker_fired(monotonic_now_ns(), None, &how);
            }
        }
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts { lost_events: self.tracer.stats().lost_events, ..Counts::default() };
        for (key, totals) in self.tracer.tables().unwrap_or_default() {
            if !self.recorders.iter().any(|recorder| recorder.watches(key.cgroup)) {
                continue;
            }
            match record::trace_phase(key.phase) {
                Some(Phase::Runtime) => counts.runtime += totals.len(),
                Some(Phase::Init) => counts.init += totals.len(),
                Some(Phase::Serving) => counts.serving += totals.len(),
                None => {}
            }
        }
        counts
    }

    /// Reads what is left and closes the traces, in `TargetId` order, marked incomplete when a
    /// signal ended the session. Loss is reported on stderr
    /// as well as in them: each trace counts its own cgroups' losses, and losses the kernel could
    /// not attribute to a cgroup count for every trace.
    pub fn finish(mut self) -> Result<Vec<Trace>> {
        drain(self.events.get_mut(), &mut self.recorders);
        self.progress.finish();
        let tables = self.tracer.tables()?;
        let args = self.tracer.args()?;
        let total = self.tracer.stats();
        if total.lost_events > 0 {
            eprintln!(
                "seccomp-refine: warning: {} events lost (ring buffer full); the trace is marked incomplete",
                total.lost_events
            );
        }
        let attributed = self
            .tracer
            .registered()
            .into_iter()
            .fold(Stats::default(), |sum, cgroup| sum.plus(self.tracer.stats_of(cgroup)));
        let unattributed = total.minus(attributed);
        let end_ns = monotonic_now_ns();
        let tracer = &self.tracer;
        let signalled = self.ended.and_then(Ended::incomplete_reason);
        Ok(self
            .recorders
            .into_iter()
            .map(|recorder| {
                let own = recorder.cgroups().fold(Stats::default(), |sum, cgroup| sum.plus(tracer.stats_of(cgroup)));
                let mut trace = recorder.finish(&tables, &args, own, unattributed, end_ns);
                if let Some(reason) = signalled {
                    trace.ended_early(reason.to_owned());
                }
                trace
            })
            .collect())
    }
}

/// Hands each event to the target that follows its cgroup; a newly created cgroup goes to the
/// target expecting its path.
fn drain(events: &mut RingBuf<MapData>, recorders: &mut [Recorder]) {
    while let Some(item) = events.next() {
        let Some(event) = Event::decode(&item) else { continue };
        let target = match &event {
            Event::Cgroup { path, .. } => recorders.iter().position(|recorder| recorder.expects(path)),
            other => recorders.iter().position(|recorder| recorder.watches(other.header().cgroup)),
        };
        if let Some(target) = target {
            recorders[target].on_event(&event);
        }
    }
}

/// How long a wait must have blocked before its stack counts as the event loop's: set-up code
/// waits too, but its waits return at once (nginx's `EPOLLRDHUP` test), while at start-up, with
/// no client yet, the event loop waits for one (redis wakes every 100 ms for its timers).
const BLOCKED: Duration = Duration::from_millis(20);

impl Session {
    /// `auto`: takes the first kept wait that has blocked for `BLOCKED` and is still blocked,
    /// derives the serving entry from its stack and adds the marker uprobe there, so that the
    /// other processes (nginx's other workers) serve from their own first call of it; once every
    /// target has its entry, gives up the loading capabilities if that was put off for it.
    async fn check_wait_stacks(&mut self) {
        let now = monotonic_now_ns();
        for (tid, stack) in self.tracer.wait_stacks() {
            let header = &stack.header;
            let Some(target) = self.recorders.iter().position(|recorder| recorder.watches(header.cgroup)) else {
                continue;
            };
            let sp = stack.regs[tracer_common::regs::SP];
            if !self.recorders[target].awaits_entry()
                || now.saturating_sub(header.ts_ns) < BLOCKED.as_nanos() as u64
                || !blocked_in(header.tgid, tid, stack.syscall, sp)
            {
                continue;
            }
            let recorder = &mut self.recorders[target];
            let len = (stack.stack_len as usize).min(stack.stack.len());
            // Unwinding reads and analyses the application's files: not on the event loop's thread.
            let uprobe = tokio::task::block_in_place(|| {
                recorder.on_stack(header.tgid, stack.syscall, &stack.regs, &stack.stack[..len])
            });
            if let Some((binary, offset)) = uprobe
                && let Err(err) = self.tracer.attach_marker_at(&binary, offset)
            {
                let line =
                    format!("the marker uprobe could not be added ({err:#}); processes serve from their first wait");
                self.recorders[target].add_marker_detail(&line);
            }
            if let Err(err) = self.tracer.entry_found(header.cgroup) {
                self.progress.note(&format!("seccomp-refine: warning: {err:#}"));
            }
        }
        if self.recorders.iter().any(Recorder::awaits_entry) {
            return;
        }
        self.awaiting_entry = false;
        if std::mem::take(&mut self.drop_after_entry)
            && let Err(err) = self.drop_privileges().await
        {
            self.progress.note(&format!("seccomp-refine: warning: {err:#}"));
        }
    }
}

/// Whether thread `tid` of `pid` is still in `syscall` with its stack pointer at `sp`, i.e. in
/// the very wait whose stack was kept (`/proc/PID/task/TID/syscall`: number, six arguments, sp, pc).
fn blocked_in(pid: u32, tid: u32, syscall: u32, sp: u64) -> bool {
    let Ok(line) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else { return false };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let hex = |text: &str| u64::from_str_radix(text.trim_start_matches("0x"), 16).ok();
    fields.len() == 9 && fields[0] == syscall.to_string() && hex(fields[7]) == Some(sp)
}

impl Ended {
    /// Why the trace is incomplete, when it ended on a signal.
    pub fn incomplete_reason(self) -> Option<&'static str> {
        match self {
            Ended::Interrupted => Some("interrupted by SIGINT (Ctrl-C) before the trace's end"),
            Ended::Terminated => Some("terminated by SIGTERM before the trace's end"),
            Ended::Deadline | Ended::TargetDone => None,
        }
    }
}

/// Whether `address` accepts a TCP connection within a short wait.
pub async fn accepts(address: SocketAddr) -> bool {
    let attempt = tokio::net::TcpStream::connect(address);
    matches!(tokio::time::timeout(Duration::from_millis(200), attempt).await, Ok(Ok(_)))
}

/// How a `symbol:` marker applies, for the trace's marker detail.
const PER_PROCESS: &str =
    "per process: each process serves from its own first call, and the processes it forks afterwards inherit that";

impl Session {
    /// Arms the phase marker of `target` before it runs and records in its trace what the marker
    /// resolved to. `entrypoint` is the program the target runs, as a path inside `rootfs`.
    pub fn arm_marker(&mut self, target: TargetId, spec: &MarkerSpec, entrypoint: &str, rootfs: &Rootfs) -> Result<()> {
        let (resolved, detail) = match spec {
            MarkerSpec::Symbol { function, binary } => {
                let binary = binary.as_deref().unwrap_or(entrypoint);
                let host =
                    rootfs.host_path(binary).with_context(|| format!("marker binary {binary} does not exist"))?;
                self.tracer.attach_marker(&host, function)?;
                (format!("symbol:{function}@{binary}"), format!("uprobe on {}; {PER_PROCESS}", host.display()))
            }
            MarkerSpec::Syscall(name) => {
                let number = crate::syscalls::Arch::host().number(name).expect("validated when parsed");
                self.tracer.set_kernel_marker(KernelMarker::Syscall(number))?;
                (spec.to_string(), "decided in the kernel".to_owned())
            }
            MarkerSpec::ReadyTcp(port) => {
                self.user_marker = UserMarker::ReadyTcp(*port);
                (spec.to_string(), "decided by a connection probe every 250ms".to_owned())
            }
            MarkerSpec::After(after) => {
                self.user_marker = UserMarker::After(*after);
                (spec.to_string(), "decided by a timer from the target's start".to_owned())
            }
            MarkerSpec::Auto => {
                self.recorders[target].await_entry();
                self.arm_auto()?
            }
        };
        let marker = &mut self.recorders[target].trace_mut().phase_marker;
        let per_process = resolved.starts_with("symbol:") || matches!(spec, MarkerSpec::Auto);
        marker.scope = Some(if per_process { MarkerScope::Process } else { MarkerScope::Container });
        marker.spec = resolved;
        marker.detail = Some(detail);
        Ok(())
    }

    /// `auto`: per process, the first accept-family or epoll wait after the container's `listen`,
    /// and the serving entry derived from the stack of the first such wait seen blocking, where a
    /// uprobe then moves the other processes as `symbol:` would (`check_wait_stacks`). No server
    /// is known by name.
    fn arm_auto(&mut self) -> Result<(String, String)> {
        self.tracer.set_kernel_marker(KernelMarker::FirstWait)?;
        self.awaiting_entry = true;
        let detail = format!(
            "auto: a process serves from its first accept/accept4/epoll_wait/epoll_pwait after a listen, or from its \
             first call of the serving entry found in the stack of the first such wait seen blocking; {PER_PROCESS}"
        );
        Ok(("auto".to_owned(), detail))
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}
