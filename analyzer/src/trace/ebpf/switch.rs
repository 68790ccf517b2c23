//! The enforcer's kernel side (`seccomp-refine enforce`): the marker uprobe that stops each
//! process of a target cgroup at its first call of the serving entry and reports it, with the
//! programs that keep track of which processes are switched.
//!
//! Only `cgroup_mkdir` (so a container started for enforcement is a target before its first
//! process runs), fork, exit and the enforcer's uprobe are attached: no per-syscall program runs.
//! A registered cgroup is a target; a process in `SERVING_PROCESSES` has been stopped for its
//! switch (or forked by a switched one, whose filter it inherits) and is never stopped again.

use std::collections::BTreeSet;
use std::path::Path;

use aya::Ebpf;
use aya::maps::{HashMap, MapData, RingBuf};
use aya::programs::UProbe;
use aya::programs::uprobe::UProbeLinkId;
use tracer_common::{CgroupState, names, phase};

use super::{Config, TracerError, attach_raw_tracepoint, attach_uprobe, load_object, take_map};

/// The loaded programs; dropping it detaches everything.
pub struct SwitchProbe {
    ebpf: Ebpf,
    targets: HashMap<MapData, u64, CgroupState>,
    switched: HashMap<MapData, u32, u64>,
    events: Option<RingBuf<MapData>>,
    link: Option<UProbeLinkId>,
}

impl SwitchProbe {
    /// Loads and attaches the bookkeeping programs; `config.cgroup_path` is registered as a
    /// target when the kernel creates it.
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
        let events = Some(take_map(&mut ebpf, names::EVENTS, RingBuf::try_from)?);
        Ok(SwitchProbe { ebpf, targets, switched, events, link: None })
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

    /// Stops each target process at its first call of `function` in `binary` (a host path).
    pub fn attach(&mut self, binary: &Path, function: &str) -> Result<(), TracerError> {
        self.link = Some(attach_uprobe(&mut self.ebpf, names::ENFORCE_PROBE, binary, function, function)?);
        Ok(())
    }

    /// Stops each target process at its first execution of file offset `offset` of `binary` (a
    /// host path), the start of `function`.
    pub fn attach_at(&mut self, binary: &Path, function: &str, offset: u64) -> Result<(), TracerError> {
        self.link = Some(attach_uprobe(&mut self.ebpf, names::ENFORCE_PROBE, binary, function, offset)?);
        Ok(())
    }

    /// Stops stopping processes: after this, no new event asks for a switch.
    pub fn detach(&mut self) {
        let Some(link) = self.link.take() else { return };
        let program: Option<&mut UProbe> =
            self.ebpf.program_mut(names::ENFORCE_PROBE).and_then(|program| program.try_into().ok());
        if let Some(program) = program {
            let _ = program.detach(link);
        }
    }
}
