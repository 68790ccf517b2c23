//! A live eBPF trace from start to `Trace`: the session loop shared by every target (a container
//! started for the trace, a running container, a host command).
//!
//! The session owns the loaded tracer and a `Recorder`. It drains the event ring buffer as it
//! fills, flips the phase for markers decided in userspace (`ready:tcp:`, `after:`), shows
//! progress, and stops at the deadline, on Ctrl-C, or when the target says it is done — and in
//! every case the trace is still finished and returned.

pub mod cgroup;
pub mod container;
pub mod exec;
mod progress;
pub mod record;
pub mod rootfs;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::phase as kernel;

use self::progress::{Counts, Progress};
use self::record::Recorder;
use self::rootfs::Rootfs;
use crate::trace::ebpf::events::Event;
use crate::trace::ebpf::{Config, KernelMarker, Tracer};
use crate::trace::{MarkerSpec, Phase, Trace};

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
    /// Ctrl-C.
    Interrupted,
    /// The target finished (the container or command exited, the workload ended).
    TargetDone,
}

/// How often the progress line, the userspace markers and the readiness probe are refreshed.
const TICK: Duration = Duration::from_millis(250);

pub struct Session {
    tracer: Tracer,
    events: AsyncFd<RingBuf<MapData>>,
    recorder: Recorder,
    cgroup: Option<u64>,
    user_marker: UserMarker,
    target_started: Option<(Instant, IpAddr)>,
    progress: Progress,
    duration: Duration,
}

impl Session {
    /// Loads the tracer. `trace` already names the target; its start time is set here.
    pub fn start(config: &Config, mut trace: Trace, rootfs: Rootfs, duration: Duration) -> Result<Session> {
        let mut tracer = Tracer::load(config)?;
        let events = tracer.take_events().expect("a fresh tracer has its ring buffer");
        // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as the
        // AsyncFd owns the ring buffer.
        let events = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|err| err.into_parts().1)
            .context("cannot watch the event ring buffer")?;
        trace.started_at_unix_ns = unix_now_ns();
        let recorder = Recorder::new(trace, monotonic_now_ns(), rootfs);
        let progress = Progress::new(duration);
        Ok(Session {
            tracer,
            events,
            recorder,
            cgroup: None,
            user_marker: UserMarker::None,
            target_started: None,
            progress,
            duration,
        })
    }

    pub fn tracer(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.recorder
    }

    pub fn note(&self, line: &str) {
        self.progress.note(line);
    }

    /// Traces `cgroup` (already registered in the kernel, or registered here in `phase`).
    pub fn follow(&mut self, cgroup: u64, register_in: Option<u32>) -> Result<()> {
        if let Some(phase) = register_in {
            self.tracer.register(cgroup, phase)?;
        }
        self.recorder.watch(cgroup);
        self.cgroup = Some(cgroup);
        Ok(())
    }

    /// The target has started at `address`: `after:` counts from now, `ready:` probes there.
    pub fn target_started(&mut self, address: IpAddr) {
        self.target_started = Some((Instant::now(), address));
    }

    /// Runs until the deadline, Ctrl-C, or `done` completes, processing events meanwhile.
    pub async fn run_until<F: Future>(&mut self, done: F) -> (Ended, Option<F::Output>) {
        let deadline = tokio::time::sleep(self.duration);
        tokio::pin!(deadline, done);
        let mut tick = tokio::time::interval(TICK);
        let started = Instant::now();
        loop {
            tokio::select! {
                () = &mut deadline => return (Ended::Deadline, None),
                _ = tokio::signal::ctrl_c() => return (Ended::Interrupted, None),
                output = &mut done => return (Ended::TargetDone, Some(output)),
                readable = self.events.readable_mut() => {
                    if let Ok(mut guard) = readable {
                        drain(guard.get_inner_mut(), &mut self.recorder);
                        guard.clear_ready();
                    }
                }
                _ = tick.tick() => {
                    self.check_user_marker().await;
                    self.progress.update(started.elapsed(), self.counts());
                }
            }
        }
    }

    async fn check_user_marker(&mut self) {
        let cgroup = self.cgroup.or_else(|| self.recorder.first_cgroup());
        let (Some(cgroup), Some((started, address))) = (cgroup, self.target_started) else { return };
        if self.tracer.phase(cgroup) != Some(kernel::INIT) {
            return;
        }
        let fire = match self.user_marker {
            UserMarker::None => false,
            UserMarker::After(after) => started.elapsed() >= after,
            UserMarker::ReadyTcp(port) => accepts(SocketAddr::new(address, port)).await,
        };
        if fire && self.tracer.advance(cgroup, kernel::INIT, kernel::SERVING).unwrap_or(false) {
            let how = match self.user_marker {
                UserMarker::ReadyTcp(port) => format!("port {port} accepting a connection"),
                _ => "the timer".to_owned(),
            };
            self.recorder.marker_fired(monotonic_now_ns(), None, &how);
        }
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts { lost_events: self.tracer.stats().lost_events, ..Counts::default() };
        for (key, totals) in self.tracer.tables().unwrap_or_default() {
            if !self.recorder.watches(key.cgroup) {
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

    /// Reads what is left and closes the trace. Loss is reported on stderr as well as in it.
    pub fn finish(mut self) -> Result<Trace> {
        drain(self.events.get_mut(), &mut self.recorder);
        self.progress.finish();
        let tables = self.tracer.tables()?;
        let stats = self.tracer.stats();
        if stats.lost_events > 0 {
            eprintln!(
                "seccomp-refine: warning: {} events lost (ring buffer full); the trace is marked incomplete",
                stats.lost_events
            );
        }
        Ok(self.recorder.finish(&tables, stats, monotonic_now_ns()))
    }
}

fn drain(events: &mut RingBuf<MapData>, recorder: &mut Recorder) {
    while let Some(item) = events.next() {
        if let Some(event) = Event::decode(&item) {
            recorder.on_event(&event);
        }
    }
}

/// Whether `address` accepts a TCP connection within a short wait.
pub async fn accepts(address: SocketAddr) -> bool {
    let attempt = tokio::net::TcpStream::connect(address);
    matches!(tokio::time::timeout(Duration::from_millis(200), attempt).await, Ok(Ok(_)))
}

/// Functions whose first call starts serving in well-known servers, tried in order by `auto`:
/// nginx's event loop iteration and redis's event loop.
pub const KNOWN_MARKER_FUNCTIONS: &[&str] = &["ngx_process_events_and_timers", "aeMain"];

impl Session {
    /// Arms the phase marker before the target runs and records in the trace what it resolved to.
    /// `entrypoint` is the program the target runs, as a path inside `rootfs`.
    pub fn arm_marker(&mut self, spec: &MarkerSpec, entrypoint: &str, rootfs: &Rootfs) -> Result<()> {
        let (resolved, detail) = match spec {
            MarkerSpec::Symbol { function, binary } => {
                let binary = binary.as_deref().unwrap_or(entrypoint);
                let host =
                    rootfs.host_path(binary).with_context(|| format!("marker binary {binary} does not exist"))?;
                self.tracer.attach_marker(&host, function)?;
                (format!("symbol:{function}@{binary}"), format!("uprobe on {}", host.display()))
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
            MarkerSpec::Auto => self.arm_auto(entrypoint, rootfs)?,
        };
        let marker = &mut self.recorder.trace_mut().phase_marker;
        marker.spec = resolved;
        marker.detail = Some(detail);
        Ok(())
    }

    /// `auto`: a known function of the entrypoint if it has one, else the first accept-family or
    /// epoll wait after a `listen`.
    fn arm_auto(&mut self, entrypoint: &str, rootfs: &Rootfs) -> Result<(String, String)> {
        if let Some(host) = rootfs.host_path(entrypoint) {
            for function in KNOWN_MARKER_FUNCTIONS {
                if self.tracer.attach_marker(&host, function).is_ok() {
                    let spec = format!("symbol:{function}@{entrypoint}");
                    return Ok((spec, format!("auto: known function of the entrypoint, uprobe on {}", host.display())));
                }
            }
        }
        self.tracer.set_kernel_marker(KernelMarker::AfterListen)?;
        let detail = "auto: no known function in the entrypoint; first accept/accept4/epoll_wait/epoll_pwait \
                      after a listen, decided in the kernel";
        Ok(("auto".to_owned(), detail.to_owned()))
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
