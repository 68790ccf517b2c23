//! Turning what the kernel reported — events and per-phase tables — into a `Trace`.
//!
//! Pure bookkeeping, no IO besides reading files inside the traced root (symlinks, an executable's
//! ELF interpreter): kernel phases map onto the trace's phases, runc's own setup stays out of
//! everything a profile reads, paths are canonicalized inside the container's root, and the
//! marker's first firing is kept, with every process a per-process marker moved.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tracer_common::{REGS_SLOTS, abi, cause, phase as kernel};

use super::{entry, interpreter};
use crate::docker::rootfs::Rootfs;
use crate::syscalls::Arch;
use crate::trace::ebpf::events::{Event, Header};
use crate::trace::ebpf::{ArgTotal, Stats, SyscallTotal};
use crate::trace::{ArgsSeen, FileUse, Phase, PhaseSyscalls, ServingProcess, Trace};

/// Builds a `Trace` from a live run.
pub struct Recorder {
    trace: Trace,
    /// CLOCK_MONOTONIC at the start of the trace: kernel timestamps count from the same clock.
    start_ns: u64,
    rootfs: Rootfs,
    cgroups: BTreeSet<u64>,
    /// `auto` has not yet derived the serving entry.
    awaits_entry: bool,
}

impl Recorder {
    /// `trace` carries the target, marker spec and start time already; `start_ns` is the
    /// monotonic time of `trace.started_at_unix_ns`.
    pub fn new(trace: Trace, start_ns: u64, rootfs: Rootfs) -> Recorder {
        Recorder { trace, start_ns, rootfs, cgroups: BTreeSet::new(), awaits_entry: false }
    }

    /// Events and tables of `cgroup` belong to this trace.
    pub fn watch(&mut self, cgroup: u64) {
        self.cgroups.insert(cgroup);
    }

    /// The first cgroup followed (the kernel's registration event may be the only news of it).
    pub fn first_cgroup(&self) -> Option<u64> {
        self.cgroups.first().copied()
    }

    pub fn watches(&self, cgroup: u64) -> bool {
        self.cgroups.contains(&cgroup)
    }

    /// The cgroups followed.
    pub fn cgroups(&self) -> impl Iterator<Item = u64> + '_ {
        self.cgroups.iter().copied()
    }

    /// Whether the kernel's registration of a cgroup created at `path` is this target's.
    pub fn expects(&self, path: &str) -> bool {
        self.trace.target.cgroup.as_deref() == Some(path)
    }

    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    pub fn set_rootfs(&mut self, rootfs: Rootfs) {
        self.rootfs = rootfs;
    }

    fn since_start(&self, ts_ns: u64) -> u64 {
        ts_ns.saturating_sub(self.start_ns)
    }

    pub fn on_event(&mut self, event: &Event) {
        if let Event::Cgroup { header, .. } = event {
            // The kernel registers only the cgroup it was told to watch.
            self.watch(header.cgroup);
            return;
        }
        let header = event.header();
        if !self.watches(header.cgroup) {
            return;
        }
        match event {
            Event::Exec { header, filename, interp } => self.on_exec(header, filename, interp),
            Event::MmapExec { header, path } => {
                if let Some(phase) = trace_phase(header.phase) {
                    let file = self.file_use(header, path, phase);
                    Trace::add_file(&mut self.trace.libraries, file);
                }
            }
            Event::Phase { header, cause, process } if header.phase == kernel::SERVING => {
                self.on_serving(header, *cause, *process);
            }
            Event::Phase { .. } | Event::Cgroup { .. } => {}
        }
    }

    /// `auto` waits for a stack to derive the serving entry from.
    pub fn await_entry(&mut self) {
        self.awaits_entry = true;
    }

    /// Whether `auto` still waits for its stack.
    pub fn awaits_entry(&self) -> bool {
        self.awaits_entry
    }

    /// `auto`'s stack of process `pid`'s first wait after `listen` seen blocking: derives the
    /// serving entry (once), notes it in the marker, and returns where to put the marker uprobe.
    pub fn on_stack(
        &mut self,
        pid: u32,
        syscall: u32,
        regs: &[u64; REGS_SLOTS],
        stack: &[u8],
    ) -> Option<(PathBuf, u64)> {
        if !std::mem::take(&mut self.awaits_entry) {
            return None;
        }
        let wait = syscall_name(Arch::host(), syscall);
        let found_at = format!("the first {wait} after listen that blocked (pid {pid})");
        match entry::derive(&self.rootfs, pid, regs, stack, &found_at) {
            Ok(found) => {
                let line = format!("serving entry found at {} from the stack at {found_at}", found.entry);
                self.add_marker_detail(&line);
                self.trace.phase_marker.serving_entry = Some(found.entry);
                found.uprobe
            }
            Err(why) => {
                self.add_marker_detail(&format!("no serving entry found: {why}"));
                None
            }
        }
    }

    /// Appends `line` to the marker's detail.
    pub fn add_marker_detail(&mut self, line: &str) {
        let detail = &mut self.trace.phase_marker.detail;
        *detail = Some(match detail.take() {
            Some(before) => format!("{before}; {line}"),
            None => line.to_owned(),
        });
    }

    /// The cgroup, or one process of it (`process` not 0), moved to serving.
    fn on_serving(&mut self, header: &Header, cause: u32, process: u32) {
        if process == 0 {
            self.marker_fired(header.ts_ns, Some(header.pid), &syscall_cause(cause));
            return;
        }
        let forked_by = (cause == cause::FORK).then_some(header.pid);
        if forked_by.is_none() {
            let how = if cause == cause::UPROBE { "function entry".to_owned() } else { syscall_cause(cause) };
            self.marker_fired(header.ts_ns, Some(process), &how);
        }
        let serving = &mut self.trace.phase_marker.serving_processes;
        if !serving.iter().any(|known| known.pid == process) {
            serving.push(ServingProcess {
                pid: process,
                at_ns: header.ts_ns.saturating_sub(self.start_ns),
                comm: (!header.comm.is_empty()).then(|| header.comm.clone()),
                forked_by,
            });
        }
    }

    fn on_exec(&mut self, header: &Header, filename: &str, interp: &str) {
        // Before its cut, execs in the cgroup are the runtime re-executing itself.
        let Some(phase) = trace_phase(header.phase) else { return };
        let exec = self.file_use(header, filename, phase);
        let binary = exec.path.clone();
        Trace::add_file(&mut self.trace.executables, exec);
        if interp != filename && !interp.is_empty() {
            // A `#!` script: the kernel ran its interpreter.
            let interpreter = self.file_use(header, interp, phase);
            Trace::add_file(&mut self.trace.executables, interpreter);
        }
        // The kernel maps the ELF interpreter itself (no mmap syscall), so it is read from the file.
        let loader = interpreter::of(&self.rootfs, &binary);
        if let Some(loader) = loader {
            let file = self.file_use(header, &loader, phase);
            Trace::add_file(&mut self.trace.libraries, file);
        }
    }

    fn file_use(&self, header: &Header, path: &str, phase: Phase) -> FileUse {
        let resolved = if path.starts_with('/') { self.rootfs.resolve(path).ok() } else { None };
        FileUse {
            path: resolved.unwrap_or_else(|| path.to_owned()),
            phase,
            pid: header.pid,
            first_seen_ns: self.since_start(header.ts_ns),
            comm: (!header.comm.is_empty()).then(|| header.comm.clone()),
        }
    }

    /// The marker fired at `ts_ns` (CLOCK_MONOTONIC), in `pid` when a process triggered it;
    /// later firings are ignored (it fires once per container).
    pub fn marker_fired(&mut self, ts_ns: u64, pid: Option<u32>, how: &str) {
        let at_ns = self.since_start(ts_ns);
        let marker = &mut self.trace.phase_marker;
        if marker.fired {
            return;
        }
        marker.fired = true;
        marker.at_ns = Some(at_ns);
        marker.pid = pid;
        marker.detail = Some(match &marker.detail {
            Some(detail) => format!("{detail}; fired on {how}"),
            None => format!("fired on {how}"),
        });
    }

    /// Fills the syscall sets and their argument values from the kernel's tables and closes the
    /// trace. `own` counts what the kernel could not record for this target's cgroups,
    /// `unattributed` what it could not tie to any cgroup (it may be this target's too).
    pub fn finish(
        mut self,
        tables: &[(tracer_common::TableKey, Vec<SyscallTotal>)],
        args: &[ArgTotal],
        own: Stats,
        unattributed: Stats,
        end_ns: u64,
    ) -> Trace {
        for (key, totals) in tables.iter().filter(|(key, _)| self.cgroups.contains(&key.cgroup)) {
            let phases = &mut self.trace.phases;
            let set: &mut PhaseSyscalls = match trace_phase(key.phase) {
                Some(phase) => phases.get_mut(phase),
                None => &mut phases.runtime_setup,
            };
            for total in totals {
                let at = total.first_seen_ns.saturating_sub(self.start_ns);
                if key.abi == abi::COMPAT {
                    set.record_compat(&syscall_name(Arch::X86, total.number), total.count, at);
                } else {
                    set.record(&syscall_name(Arch::host(), total.number), total.count, at);
                }
            }
        }
        for total in args.iter().filter(|total| self.cgroups.contains(&total.key.cgroup)) {
            let phases = &mut self.trace.phases;
            let set: &mut PhaseSyscalls = match trace_phase(total.key.phase) {
                Some(phase) => phases.get_mut(phase),
                None => &mut phases.runtime_setup,
            };
            let Ok(index) = u8::try_from(total.key.index) else { continue };
            let seen =
                ArgsSeen { values: [(index, total.values.iter().copied().collect())].into(), overflow: total.overflow };
            set.record_args(&syscall_name(Arch::host(), u32::from(total.key.syscall)), &seen);
        }
        self.trace.duration_ns = end_ns.saturating_sub(self.start_ns);
        if self.cgroups.is_empty() {
            self.trace.complete = false;
            self.trace.warnings.push("the target's cgroup was never seen, so nothing of it was traced".to_owned());
        }
        self.account_losses(own, "");
        self.account_losses(unattributed, " in the traced cgroups (which ones is unknown)");
        self.trace
    }

    /// Reports what the kernel could not record; `whose` qualifies losses not tied to this target.
    fn account_losses(&mut self, stats: Stats, whose: &str) {
        let trace = &mut self.trace;
        trace.lost_events += stats.lost_events;
        if stats.lost_events > 0 {
            trace.complete = false;
            trace.warnings.push(format!(
                "{} events (execs, mapped libraries, phase changes){whose} were lost because the ring buffer was \
                 full; trace again with a larger --ring-buffer",
                stats.lost_events
            ));
        }
        if stats.table_full > 0 {
            trace.complete = false;
            trace.warnings.push(format!(
                "{} syscalls{whose} could not be recorded: the kernel's table map was full",
                stats.table_full
            ));
        }
        if stats.process_full > 0 {
            trace.complete = false;
            trace.warnings.push(format!(
                "{} processes{whose} entered serving but the kernel's process map was full: their serving syscalls \
                 count as init",
                stats.process_full
            ));
        }
        if stats.arg_lost > 0 {
            // Which syscalls lost values is unknown: none of the trace's values can be trusted.
            for phase in [&mut trace.phases.runtime, &mut trace.phases.init, &mut trace.phases.serving] {
                phase.args.clear();
            }
            trace.warnings.push(format!(
                "the argument values of {} calls{whose} could not be recorded (the kernel's argument map was full): \
                 every observed syscall keeps its name-only rule",
                stats.arg_lost
            ));
        }
        if stats.path_cut > 0 {
            trace
                .warnings
                .push(format!("{} paths{whose} were longer than the kernel records or unreadable", stats.path_cut));
        }
    }
}

/// The trace phase of a kernel phase; `None` for the runtime's setup, which no profile reads.
pub fn trace_phase(kernel_phase: u32) -> Option<Phase> {
    match kernel_phase {
        kernel::RUNTIME => Some(Phase::Runtime),
        kernel::INIT => Some(Phase::Init),
        kernel::SERVING => Some(Phase::Serving),
        _ => None,
    }
}

fn syscall_name(arch: Arch, number: u32) -> String {
    arch.name(number).map_or_else(|| format!("syscall_{number}"), str::to_owned)
}

fn syscall_cause(number: u32) -> String {
    format!("syscall {}", syscall_name(Arch::host(), number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Source, Target};
    use tracer_common::TableKey;

    fn header(phase: u32, cgroup: u64, ts_ns: u64) -> Header {
        Header { phase, tid: 7, pid: 7, ts_ns, cgroup, comm: "app".into() }
    }

    fn recorder() -> Recorder {
        let trace = Trace::new(Source::Ebpf, Arch::X86_64, "test".into(), Target::default());
        let mut recorder = Recorder::new(trace, 1_000, Rootfs::layers(Vec::new()));
        recorder.watch(82);
        recorder
    }

    #[test]
    fn tables_land_in_their_phases_and_runtime_setup_stays_apart() {
        let total = |number, count, first_seen_ns| SyscallTotal { number, count, first_seen_ns };
        let key = |phase, abi| TableKey { cgroup: 82, phase, abi };
        let tables = vec![
            (key(kernel::RUNTIME_SETUP, abi::NATIVE), vec![total(165, 3, 1_100)]), // mount
            (key(kernel::RUNTIME, abi::NATIVE), vec![total(126, 1, 1_200)]),       // capset
            (key(kernel::INIT, abi::NATIVE), vec![total(49, 1, 1_300)]),           // bind
            (key(kernel::INIT, abi::COMPAT), vec![total(20, 2, 1_400)]),           // i386 getpid
            (key(kernel::SERVING, abi::NATIVE), vec![total(288, 9, 1_500)]),       // accept4
            (TableKey { cgroup: 99, phase: kernel::SERVING, abi: abi::NATIVE }, vec![total(0, 1, 1_600)]),
        ];
        let trace = recorder().finish(&tables, &[], Stats::default(), Stats::default(), 5_000);
        assert_eq!(trace.phases.runtime_setup.names(), BTreeSet::from(["mount"]));
        assert_eq!(trace.phases.runtime.names(), BTreeSet::from(["capset"]));
        assert_eq!(trace.phases.init.syscalls.keys().collect::<Vec<_>>(), ["bind"]);
        assert_eq!(trace.phases.init.compat_syscalls["getpid"].count, 2);
        assert_eq!(trace.phases.serving.syscalls["accept4"].first_seen_ns, 500);
        assert!(!trace.phases.serving.syscalls.contains_key("read"), "another cgroup's table is not ours");
        assert_eq!(trace.duration_ns, 4_000);
        assert!(trace.complete && trace.warnings.is_empty());
    }

    #[test]
    fn argument_values_land_in_their_phases_and_a_lost_one_makes_them_all_unknown() {
        let arg = |cgroup, phase, syscall, index, values: &[u64], overflow| ArgTotal {
            key: tracer_common::ArgKey { cgroup, phase, syscall, index },
            values: values.to_vec(),
            overflow,
        };
        let args = vec![
            arg(82, kernel::SERVING, 41, 0, &[1, 2], false), // socket domain
            arg(82, kernel::SERVING, 41, 1, &[1], false),    // socket type
            arg(82, kernel::INIT, 72, 1, &[1, 2, 3], true),  // fcntl command
            arg(99, kernel::SERVING, 62, 1, &[9], false),    // kill, another cgroup's
        ];
        let trace = recorder().finish(&[], &args, Stats::default(), Stats::default(), 2_000);
        let socket = &trace.phases.serving.args["socket"];
        assert_eq!(socket.values[&0], BTreeSet::from([1, 2]));
        assert_eq!(socket.values[&1], BTreeSet::from([1]));
        assert!(trace.phases.init.args["fcntl"].overflow);
        assert!(!trace.phases.serving.args.contains_key("kill"), "another cgroup's values are not ours");
        let lost = Stats { arg_lost: 1, ..Stats::default() };
        let trace = recorder().finish(&[], &args, lost, Stats::default(), 2_000);
        assert!(trace.phases.serving.args.is_empty() && trace.phases.init.args.is_empty());
        assert!(trace.warnings[0].contains("keeps its name-only rule"), "{:?}", trace.warnings);
    }

    #[test]
    fn the_marker_fires_once_and_losses_are_reported() {
        let mut recorder = recorder();
        recorder.on_event(&Event::Phase { header: header(kernel::SERVING, 82, 2_000), cause: 232, process: 0 });
        recorder.on_event(&Event::Phase { header: header(kernel::SERVING, 82, 3_000), cause: 232, process: 0 });
        let own = Stats { lost_events: 4, ..Stats::default() };
        let unattributed = Stats { lost_events: 2, ..Stats::default() };
        let trace = recorder.finish(&[], &[], own, unattributed, 4_000);
        assert!(trace.phase_marker.fired);
        assert_eq!(trace.phase_marker.at_ns, Some(1_000));
        assert_eq!(trace.phase_marker.detail.as_deref(), Some("fired on syscall epoll_wait"));
        assert!(trace.phase_marker.serving_processes.is_empty(), "the whole cgroup moved");
        assert_eq!(trace.lost_events, 6);
        assert!(!trace.complete);
        assert!(trace.warnings[0].starts_with("4 events (execs, mapped libraries, phase changes) were"));
        assert!(trace.warnings[1].contains("2 events (execs, mapped libraries, phase changes) in the traced cgroups"));
    }

    #[test]
    fn a_per_process_marker_lists_the_processes_it_moved() {
        let mut recorder = recorder();
        let moved = |ts_ns, pid, cause, process| Event::Phase {
            header: Header { pid, tid: pid, ..header(kernel::SERVING, 82, ts_ns) },
            cause,
            process,
        };
        recorder.on_event(&moved(2_000, 20, cause::UPROBE, 20));
        recorder.on_event(&moved(2_500, 20, cause::FORK, 21));
        recorder.on_event(&moved(3_000, 30, cause::UPROBE, 30));
        recorder.on_event(&moved(3_100, 30, cause::UPROBE, 30));
        let trace = recorder.finish(&[], &[], Stats::default(), Stats::default(), 4_000);
        let marker = &trace.phase_marker;
        assert_eq!((marker.fired, marker.at_ns, marker.pid), (true, Some(1_000), Some(20)), "the first firing");
        let moved: Vec<_> = marker.serving_processes.iter().map(|p| (p.pid, p.at_ns, p.forked_by)).collect();
        assert_eq!(moved, [(20, 1_000, None), (21, 1_500, Some(20)), (30, 2_000, None)]);
    }

    #[test]
    fn runtime_setup_execs_and_other_cgroups_are_ignored() {
        let mut recorder = recorder();
        let exec = |phase, cgroup, filename: &str| Event::Exec {
            header: header(phase, cgroup, 1_500),
            filename: filename.into(),
            interp: filename.into(),
        };
        recorder.on_event(&exec(kernel::RUNTIME_SETUP, 82, "/proc/self/exe"));
        recorder.on_event(&exec(kernel::INIT, 99, "/usr/bin/other"));
        recorder.on_event(&exec(kernel::INIT, 82, "/usr/sbin/nginx"));
        let script = Event::Exec {
            header: header(kernel::SERVING, 82, 1_700),
            filename: "/docker-entrypoint.sh".into(),
            interp: "/bin/sh".into(),
        };
        recorder.on_event(&script);
        let trace = recorder.finish(&[], &[], Stats::default(), Stats::default(), 2_000);
        let paths: Vec<_> = trace.executables.iter().map(|file| (file.path.as_str(), file.phase)).collect();
        assert_eq!(
            paths,
            [("/usr/sbin/nginx", Phase::Init), ("/docker-entrypoint.sh", Phase::Serving), ("/bin/sh", Phase::Serving)]
        );
        assert_eq!(trace.executables[0].first_seen_ns, 500);
    }
}
