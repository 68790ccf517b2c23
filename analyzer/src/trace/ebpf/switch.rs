//! The enforcer's kernel side (`seccomp-refine enforce`): the marker uprobe that stops each
//! process of a target cgroup at its first call of the serving entry and reports it, with the
//! programs that keep track of which processes are switched and which have a probe.
//!
//! Only `cgroup_mkdir` (so a container started for enforcement is a target before its first
//! process runs), fork, exit, exec, the page-fault hold and the enforcer's uprobe are attached:
//! no per-syscall program runs. A registered cgroup is a target; a process in `SERVING_PROCESSES`
//! has been stopped for its switch (or forked by a switched one, whose filter it inherits) and is
//! never stopped again. The uprobe is attached per process, only to processes that have not
//! switched: the kernel then sets its breakpoint in their memory alone, so a switched process
//! whose probe is detached runs its loop without a trap. A process of a target that has no probe
//! is held (`SIGSTOP`) at its first page fault, before it runs code of its own, until userspace
//! has attached one (`PROBED`).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{HashMap, MapData, RingBuf};
use aya::programs::raw_trace_point::RawTracePointLinkId;
use aya::programs::uprobe::{UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use tracer_common::{CgroupState, names, phase};

use super::{Config, TracerError, attach_raw_tracepoint, load_object, take_map};

/// The loaded programs; dropping it detaches everything.
pub struct SwitchProbe {
    ebpf: Ebpf,
    targets: HashMap<MapData, u64, CgroupState>,
    switched: HashMap<MapData, u32, u64>,
    probed: HashMap<MapData, u32, u64>,
    events: Option<RingBuf<MapData>>,
    marker: Option<Marker>,
    /// The marker uprobe of each process that has one.
    links: BTreeMap<u32, UProbeLinkId>,
    /// The probe of this process, which maps nothing of the binary: it keeps the kernel's uprobe
    /// alive while no process of the target has one, so attaching one does not create it anew.
    keep: Option<UProbeLinkId>,
    holds: Vec<(&'static str, RawTracePointLinkId)>,
}

/// Where the marker uprobe goes.
struct Marker {
    /// The binary's host path.
    binary: PathBuf,
    function: String,
    /// The function's entry, as a file offset.
    offset: u64,
}

impl SwitchProbe {
    /// Loads and attaches the bookkeeping programs and the hold; `config.cgroup_path` is
    /// registered as a target when the kernel creates it.
    pub fn load(config: &Config) -> Result<SwitchProbe, TracerError> {
        let mut ebpf = load_object(config)?;
        for (program, tracepoint) in [
            (names::CGROUP_MKDIR, "cgroup_mkdir"),
            (names::FORK, "sched_process_fork"),
            (names::EXIT, "sched_process_exit"),
        ] {
            attach_raw_tracepoint(&mut ebpf, program, tracepoint)?;
        }
        let targets = take_map(&mut ebpf, names::CGROUPS, HashMap::try_from)?;
        let switched = take_map(&mut ebpf, names::SERVING_PROCESSES, HashMap::try_from)?;
        let probed = take_map(&mut ebpf, names::PROBED, HashMap::try_from)?;
        let events = Some(take_map(&mut ebpf, names::EVENTS, RingBuf::try_from)?);
        let mut probe = SwitchProbe {
            ebpf,
            targets,
            switched,
            probed,
            events,
            marker: None,
            links: BTreeMap::new(),
            keep: None,
            holds: Vec::new(),
        };
        probe.hold()?;
        Ok(probe)
    }

    /// Attaches the programs that stop processes (besides the marker), keeping their links so
    /// that `disarm` stops them.
    fn hold(&mut self) -> Result<(), TracerError> {
        for (program, tracepoints) in [
            (names::HOLD, &["page_fault_user", "page_fault_kernel"][..]),
            (names::REPROBE, &["sched_process_exec"][..]),
        ] {
            let attach_error = |source| TracerError::Attach { program, source: Box::new(source) };
            let raw: &mut RawTracePoint =
                self.ebpf.program_mut(program).and_then(|program| program.try_into().ok()).expect("the object has it");
            raw.load().map_err(attach_error)?;
            for tracepoint in tracepoints {
                self.holds.push((program, raw.attach(tracepoint).map_err(attach_error)?));
            }
        }
        Ok(())
    }

    /// The event ring buffer, for the caller's reading loop (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Makes a running container's cgroup a target.
    pub fn target(&mut self, cgroup: u64) -> Result<(), TracerError> {
        let state = CgroupState { phase: phase::INIT, flags: 0 };
        self.targets
            .insert(cgroup, state, 0)
            .map_err(|source| TracerError::Map { map: names::CGROUPS, source: Box::new(source) })
    }

    /// The target cgroups, including the one the kernel registered at its creation.
    pub fn targets(&self) -> Vec<u64> {
        self.targets.keys().filter_map(Result::ok).collect()
    }

    /// The processes stopped for their switch so far, and those they forked afterwards.
    pub fn switched(&self) -> BTreeSet<u32> {
        self.switched.keys().filter_map(Result::ok).collect()
    }

    /// The processes the hold stopped, or that have had a probe, and have not exited.
    pub fn held_or_probed(&self) -> BTreeSet<u32> {
        self.probed.keys().filter_map(Result::ok).collect()
    }

    /// The processes that have a marker uprobe now.
    pub fn probed(&self) -> BTreeSet<u32> {
        self.links.keys().copied().collect()
    }

    /// Stops each target process given a probe at its first execution of file offset `offset`
    /// of `binary` (a host path), the start of `function`. Loads the uprobe and attaches it for
    /// this process (`keep`), so a marker the kernel refuses fails here.
    pub fn arm(&mut self, binary: &Path, function: &str, offset: u64) -> Result<(), TracerError> {
        self.marker = Some(Marker { binary: binary.to_owned(), function: function.to_owned(), offset });
        let own = std::process::id();
        self.attach_for(own)?;
        self.keep = self.links.remove(&own);
        Ok(())
    }

    /// Gives process `pid` the marker uprobe, for it alone (again if it had one: an exec may have
    /// replaced the task it was attached to), and records it as probed.
    pub fn probe(&mut self, pid: u32) -> Result<(), TracerError> {
        self.probed
            .insert(pid, 0, 0)
            .map_err(|source| TracerError::Map { map: names::PROBED, source: Box::new(source) })?;
        self.unprobe(pid);
        self.attach_for(pid)
    }

    fn attach_for(&mut self, pid: u32) -> Result<(), TracerError> {
        let marker = self.marker.as_ref().expect("armed before probing");
        let (binary, offset, function) = (marker.binary.clone(), marker.offset, marker.function.clone());
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("a process id is never 0"));
        let marker_error = |source| TracerError::Marker {
            function: function.clone(),
            binary: binary.display().to_string(),
            source: Box::new(source),
        };
        let probe = self.uprobe();
        if probe.fd().is_err() {
            probe.load().map_err(marker_error)?;
        }
        let link = probe.attach(offset, &binary, scope).map_err(marker_error)?;
        self.links.insert(pid, link);
        Ok(())
    }

    /// Takes process `pid`'s probe away: the kernel removes its breakpoint from that process.
    /// Closing a uprobe waits for RCU grace periods (up to hundreds of milliseconds, holding the
    /// kernel's lock that attaching one takes too), so it is done on a thread of its own, not
    /// while the next process waits for its switch.
    pub fn unprobe(&mut self, pid: u32) {
        if let Some(link) = self.links.remove(&pid)
            && let Ok(link) = self.uprobe().take_link(link)
        {
            std::thread::spawn(move || drop(link));
        }
    }

    /// Stops holding and stopping processes: after this, no new event asks for anything.
    pub fn disarm(&mut self) {
        for (program, link) in std::mem::take(&mut self.holds) {
            let raw: Option<&mut RawTracePoint> =
                self.ebpf.program_mut(program).and_then(|program| program.try_into().ok());
            if let Some(raw) = raw {
                let _ = raw.detach(link);
            }
        }
        for pid in self.probed() {
            self.unprobe(pid);
        }
        if let Some(link) = self.keep.take() {
            let _ = self.uprobe().detach(link);
        }
    }

    fn uprobe(&mut self) -> &mut UProbe {
        self.ebpf
            .program_mut(names::ENFORCE_PROBE)
            .and_then(|program| program.try_into().ok())
            .expect("the object has the uprobe")
    }
}
