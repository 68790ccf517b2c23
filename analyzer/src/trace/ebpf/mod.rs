//! The live tracer's kernel side, seen from userspace: loading the programs with this kernel's
//! struct offsets, attaching them, registering cgroups, moving phases, and reading the per-phase
//! syscall tables, the statistics and the event ring buffer.
//!
//! It knows nothing about Docker or the `Trace` model: `record` turns what it reads into a
//! `Trace`, and the `live` module drives a whole run.

mod btf;
pub mod events;
pub mod privileges;
pub mod switch;

use std::path::Path;

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, UProbe};
use tracer_common::{
    ArgCount, ArgKey, ArgSpec, ArgValueKey, CGROUP_PATH_LEN, CgroupState, FLAG_ENTRY_FOUND, SYSCALL_SLOTS,
    StatCounters, SyscallTable, TableKey, WaitStack, marker, names, offsets, stat,
};

pub use btf::{Btf, BtfError};

/// Why the tracer could not start, phrased with the fix.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("this seccomp-refine was built without its eBPF programs; build it with `cargo xtask build`")]
    NoObject,
    #[error(
        "tracing needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, and this process lacks {missing}; run it as root \
         (sudo) with its capabilities"
    )]
    NotPrivileged { missing: String },
    #[error(
        "this kernel publishes no BTF ({path}: {source}); the tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf { path: &'static str, source: std::io::Error },
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("the kernel refused the eBPF programs (are you root with CAP_BPF?)")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("cannot attach `{program}`")]
    Attach { program: &'static str, source: Box<aya::programs::ProgramError> },
    #[error("cannot attach the phase marker to `{function}` in {binary}")]
    Marker { function: String, binary: String, source: Box<aya::programs::ProgramError> },
    #[error("eBPF map `{map}`")]
    Map { map: &'static str, source: Box<aya::maps::MapError> },
}

/// What the kernel decides about the phase of a whole cgroup on its own (a uprobe marker, set
/// by `Tracer::attach_marker`, moves single processes instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelMarker {
    /// Nothing: userspace ends `init`.
    None,
    /// The first syscall with this number in `init`.
    Syscall(u32),
    /// The first accept-family or epoll wait after a `listen`.
    AfterListen,
    /// `auto`: per process, its first accept-family or epoll wait after the cgroup's `listen`;
    /// the first such wait sends its stack (`Event::Stack`).
    FirstWait,
}

/// How to load the programs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cgroup v2 path (`/docker/<id>`) the kernel registers when it is created.
    pub cgroup_path: Option<String>,
    /// Size of the event ring buffer: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
}

/// The default event ring buffer: 1 MiB holds ~3 000 exec or mmap records between two reads.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 1 << 20;

/// One syscall number's totals over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallTotal {
    pub number: u32,
    pub count: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub first_seen_ns: u64,
}

/// The values one argument of one syscall passed, per cgroup and phase, as the kernel kept them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgTotal {
    pub key: ArgKey,
    /// Masked as the argument's pair says, sorted.
    pub values: Vec<u64>,
    /// A value was seen that the kernel could not keep.
    pub overflow: bool,
}

/// The kernel's counters of things it could not record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub lost_events: u64,
    pub table_full: u64,
    pub path_cut: u64,
    /// Processes that entered serving under a per-process marker but could not be recorded.
    pub process_full: u64,
    /// Calls whose argument values were neither recorded nor flagged on their key.
    pub arg_lost: u64,
}

impl Stats {
    fn from_slots(slot: impl Fn(u32) -> u64) -> Stats {
        Stats {
            lost_events: slot(stat::LOST_EVENTS),
            table_full: slot(stat::TABLE_FULL),
            path_cut: slot(stat::PATH_CUT),
            process_full: slot(stat::PROCESS_FULL),
            arg_lost: slot(stat::ARG_LOST),
        }
    }

    /// What `self` counts beyond `part` (never below zero).
    pub fn minus(self, part: Stats) -> Stats {
        Stats {
            lost_events: self.lost_events.saturating_sub(part.lost_events),
            table_full: self.table_full.saturating_sub(part.table_full),
            path_cut: self.path_cut.saturating_sub(part.path_cut),
            process_full: self.process_full.saturating_sub(part.process_full),
            arg_lost: self.arg_lost.saturating_sub(part.arg_lost),
        }
    }

    pub fn plus(self, other: Stats) -> Stats {
        Stats {
            lost_events: self.lost_events + other.lost_events,
            table_full: self.table_full + other.table_full,
            path_cut: self.path_cut + other.path_cut,
            process_full: self.process_full + other.process_full,
            arg_lost: self.arg_lost + other.arg_lost,
        }
    }
}

#[cfg(tracer_object)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));
#[cfg(not(tracer_object))]
static OBJECT: &[u8] = &[];

/// The loaded and attached programs and their maps. Dropping it detaches everything.
pub struct Tracer {
    ebpf: Ebpf,
    cgroups: HashMap<MapData, u64, CgroupState>,
    tables: PerCpuHashMap<MapData, TableKey, SyscallTable>,
    stats: PerCpuArray<MapData, u64>,
    cgroup_stats: PerCpuHashMap<MapData, u64, StatCounters>,
    events: Option<RingBuf<MapData>>,
    marker: Array<MapData, u64>,
    wait_stacks: HashMap<MapData, u32, WaitStack>,
    arg_keys: HashMap<MapData, ArgKey, ArgCount>,
    arg_values: HashMap<MapData, ArgValueKey, u8>,
}

impl Tracer {
    /// Checks privileges and BTF, loads the programs with this kernel's offsets and attaches them.
    pub fn load(config: &Config) -> Result<Tracer, TracerError> {
        let mut ebpf = load_object(config)?;
        for (program, tracepoint) in [
            (names::SYS_ENTER, "sys_enter"),
            (names::SYS_EXIT, "sys_exit"),
            (names::EXEC, "sched_process_exec"),
            (names::CGROUP_MKDIR, "cgroup_mkdir"),
            (names::FORK, "sched_process_fork"),
            (names::EXIT, "sched_process_exit"),
            (names::CGROUP_ATTACH, "cgroup_attach_task"),
        ] {
            attach_raw_tracepoint(&mut ebpf, program, tracepoint)?;
        }
        let cgroups = take_map(&mut ebpf, names::CGROUPS, HashMap::try_from)?;
        let tables = take_map(&mut ebpf, names::TABLES, PerCpuHashMap::try_from)?;
        let stats = take_map(&mut ebpf, names::STATS, PerCpuArray::try_from)?;
        let cgroup_stats = take_map(&mut ebpf, names::CGROUP_STATS, PerCpuHashMap::try_from)?;
        let events = Some(take_map(&mut ebpf, names::EVENTS, RingBuf::try_from)?);
        let marker = take_map(&mut ebpf, names::MARKER, Array::try_from)?;
        let wait_stacks = take_map(&mut ebpf, names::WAIT_STACKS, HashMap::try_from)?;
        let arg_keys = take_map(&mut ebpf, names::ARG_KEYS, HashMap::try_from)?;
        let arg_values = take_map(&mut ebpf, names::ARG_VALUES, HashMap::try_from)?;
        Ok(Tracer { ebpf, cgroups, tables, stats, cgroup_stats, events, marker, wait_stacks, arg_keys, arg_values })
    }

    /// The event ring buffer, for the caller's reading loop (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Traces `cgroup` from now on, starting in `phase` (a `tracer_common::phase`).
    pub fn register(&mut self, cgroup: u64, phase: u32) -> Result<(), TracerError> {
        let state = CgroupState { phase, flags: 0 };
        self.cgroups
            .insert(cgroup, state, 0)
            .map_err(|source| TracerError::Map { map: names::CGROUPS, source: Box::new(source) })
    }

    /// The phase of `cgroup`, if it is registered.
    pub fn phase(&self, cgroup: u64) -> Option<u32> {
        self.cgroups.get(&cgroup, 0).ok().map(|state| state.phase)
    }

    /// Every registered cgroup: those registered here and the one the kernel registered when it
    /// was created at the configured path.
    pub fn registered(&self) -> Vec<u64> {
        self.cgroups.keys().filter_map(Result::ok).collect()
    }

    /// Moves `cgroup` from `from` to `to` (for markers decided in userspace); false when it was
    /// not in `from` (the kernel got there first, or the phase is already past it).
    pub fn advance(&mut self, cgroup: u64, from: u32, to: u32) -> Result<bool, TracerError> {
        let map_error = |source| TracerError::Map { map: names::CGROUPS, source: Box::new(source) };
        let Ok(mut state) = self.cgroups.get(&cgroup, 0) else { return Ok(false) };
        if state.phase != from {
            return Ok(false);
        }
        state.phase = to;
        self.cgroups.insert(cgroup, state, 0).map_err(map_error)?;
        Ok(true)
    }

    /// What the kernel itself watches for to end `init`.
    pub fn set_kernel_marker(&mut self, kernel_marker: KernelMarker) -> Result<(), TracerError> {
        let (kind, syscall) = match kernel_marker {
            KernelMarker::None => (marker::NONE, u64::MAX),
            KernelMarker::Syscall(number) => (marker::SYSCALL, u64::from(number)),
            KernelMarker::AfterListen => (marker::AFTER_LISTEN, u64::MAX),
            KernelMarker::FirstWait => (marker::FIRST_WAIT, u64::MAX),
        };
        let map_error = |source| TracerError::Map { map: names::MARKER, source: Box::new(source) };
        // The syscall first, so the kernel never sees the kind with a stale number.
        self.marker.set(1, syscall, 0).map_err(map_error)?;
        self.marker.set(0, u64::from(kind), 0).map_err(map_error)
    }

    /// Ends `init` for each process of a registered cgroup at its first call of `function` in
    /// `binary` (a host path); processes it forks afterwards inherit serving.
    pub fn attach_marker(&mut self, binary: &Path, function: &str) -> Result<(), TracerError> {
        attach_uprobe(&mut self.ebpf, names::MARKER_PROBE, binary, function, function)?;
        let map_error = |source| TracerError::Map { map: names::MARKER, source: Box::new(source) };
        self.marker.set(0, u64::from(marker::PER_PROCESS), 0).map_err(map_error)
    }

    /// Adds the marker uprobe at file offset `offset` of `binary` (a host path) to `auto`'s
    /// kernel marker, which stays as it is: a process serves from whichever comes first.
    pub fn attach_marker_at(&mut self, binary: &Path, offset: u64) -> Result<(), TracerError> {
        attach_uprobe(&mut self.ebpf, names::MARKER_PROBE, binary, &format!("{offset:#x}"), offset)?;
        Ok(())
    }

    /// Under `auto`, each thread's latest wait after `listen`, by thread id.
    pub fn wait_stacks(&self) -> Vec<(u32, Box<WaitStack>)> {
        self.wait_stacks.iter().filter_map(Result::ok).map(|(tid, stack)| (tid, Box::new(stack))).collect()
    }

    /// The serving entry of `cgroup` is found: its waits stop keeping their stacks, and those kept
    /// are dropped.
    pub fn entry_found(&mut self, cgroup: u64) -> Result<(), TracerError> {
        let map_error = |source| TracerError::Map { map: names::CGROUPS, source: Box::new(source) };
        if let Ok(mut state) = self.cgroups.get(&cgroup, 0) {
            state.flags |= FLAG_ENTRY_FOUND;
            self.cgroups.insert(cgroup, state, 0).map_err(map_error)?;
        }
        let kept: Vec<u32> = self
            .wait_stacks
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, stack)| stack.header.cgroup == cgroup)
            .map(|(tid, _)| tid)
            .collect();
        for tid in kept {
            // Gone already: a thread that exited takes nothing with it here.
            let _ = self.wait_stacks.remove(&tid);
        }
        Ok(())
    }

    /// Every (cgroup, phase, ABI) table, summed over CPUs: the syscalls seen, by number.
    pub fn tables(&self) -> Result<Vec<(TableKey, Vec<SyscallTotal>)>, TracerError> {
        let mut rows = Vec::new();
        for entry in self.tables.iter() {
            let (key, per_cpu) =
                entry.map_err(|source| TracerError::Map { map: names::TABLES, source: Box::new(source) })?;
            rows.push((key, sum_tables(per_cpu.iter())));
        }
        Ok(rows)
    }

    /// Every (cgroup, phase, syscall, argument) the kernel saw values of, with those values.
    ///
    /// The values are read before the keys: a key flagged while the values were read is seen
    /// flagged, and one that counts more values than were read (added meanwhile) is incomplete.
    pub fn args(&self) -> Result<Vec<ArgTotal>, TracerError> {
        let map_error = |map| move |source| TracerError::Map { map, source: Box::new(source) };
        let mut values = std::collections::BTreeMap::<ArgKey, Vec<u64>>::new();
        for entry in self.arg_values.keys() {
            let value = entry.map_err(map_error(names::ARG_VALUES))?;
            values.entry(value.key).or_default().push(value.value);
        }
        let mut totals = Vec::new();
        for entry in self.arg_keys.iter() {
            let (key, count) = entry.map_err(map_error(names::ARG_KEYS))?;
            let mut values = values.remove(&key).unwrap_or_default();
            values.sort_unstable();
            let overflow = count.overflow != 0 || count.distinct as usize > values.len();
            totals.push(ArgTotal { key, values, overflow });
        }
        Ok(totals)
    }

    /// The counters of things not recorded, over all cgroups.
    pub fn stats(&self) -> Stats {
        Stats::from_slots(|index| self.stats.get(&index, 0).map(|values| values.iter().sum()).unwrap_or(0))
    }

    /// The same counters for one cgroup.
    pub fn stats_of(&self, cgroup: u64) -> Stats {
        let Ok(per_cpu) = self.cgroup_stats.get(&cgroup, 0) else { return Stats::default() };
        Stats::from_slots(|index| per_cpu.iter().map(|counters| counters[index as usize]).sum())
    }
}

/// Loads the object (no program attached yet) with this kernel's offsets and `config`.
fn load_object(config: &Config) -> Result<Ebpf, TracerError> {
    preflight()?;
    let btf = Btf::vmlinux().map_err(|source| TracerError::NoBtf { path: btf::VMLINUX, source })?;
    let field_offsets = btf::program_offsets(&btf)?;
    raise_memlock_limit();
    let cgroup_path = cgroup_path_bytes(config.cgroup_path.as_deref());
    let arg_specs = arg_specs();
    aya::EbpfLoader::new()
        .override_global(offsets::GLOBAL, &field_offsets, true)
        .override_global(names::CGROUP_PATH, &cgroup_path, true)
        .override_global(names::ARG_SPECS, &arg_specs, true)
        .map_max_entries(names::EVENTS, config.ring_buffer_bytes)
        .load(OBJECT)
        .map_err(|err| TracerError::Load(Box::new(err)))
}

/// The `ARG_SPECS` global: per native syscall number, the arguments of `syscalls::args` and
/// their masks. Loaded with the programs, so no call is counted before its arguments are watched.
fn arg_specs() -> [ArgSpec; SYSCALL_SLOTS] {
    let mut specs = [ArgSpec::default(); SYSCALL_SLOTS];
    for pair in crate::syscalls::args::ARG_PAIRS {
        // A syscall this architecture lacks is never counted under the pair's name either.
        let Some(number) = crate::syscalls::Arch::host().number(pair.syscall) else { continue };
        let spec = &mut specs[number as usize];
        let slot = spec.mask.iter().position(|&mask| mask == 0).expect("ARGS_PER_SYSCALL pairs per syscall at most");
        spec.mask[slot] = pair.kind.mask();
        spec.index[slot] = u32::from(pair.index);
    }
    specs
}

/// Checks, without loading anything, that this binary and machine can trace: the programs are
/// built in, the process may use bpf(), and the kernel publishes BTF. Callers run it before any
/// other work (pulling an image, creating a container) so the error comes first.
pub fn preflight() -> Result<(), TracerError> {
    if OBJECT.is_empty() {
        return Err(TracerError::NoObject);
    }
    if let Some(missing) = privileges::missing() {
        return Err(TracerError::NotPrivileged { missing: privileges::names(&missing) });
    }
    std::fs::metadata(btf::VMLINUX).map_err(|source| TracerError::NoBtf { path: btf::VMLINUX, source })?;
    Ok(())
}

/// Adds up per-CPU tables: counts add, the first sighting is the earliest on any CPU.
fn sum_tables<'a>(per_cpu: impl Iterator<Item = &'a SyscallTable>) -> Vec<SyscallTotal> {
    let mut count = [0u64; SYSCALL_SLOTS];
    let mut first = [u64::MAX; SYSCALL_SLOTS];
    for table in per_cpu {
        for number in 0..SYSCALL_SLOTS {
            count[number] += table.count[number];
            if table.count[number] > 0 {
                first[number] = first[number].min(table.first_seen_ns[number]);
            }
        }
    }
    (0..SYSCALL_SLOTS)
        .filter(|&number| count[number] > 0)
        .map(|number| SyscallTotal { number: number as u32, count: count[number], first_seen_ns: first[number] })
        .collect()
}

/// Attaches uprobe `program` (loaded first if it is not yet) at `location` (a symbol or a file
/// offset) in `binary`, a host path; `function` names the location in errors. A failed attach
/// leaves it loaded, ready for another function.
fn attach_uprobe<'a>(
    ebpf: &mut Ebpf,
    program: &'static str,
    binary: &Path,
    function: &str,
    location: impl Into<UProbeAttachLocation<'a>>,
) -> Result<UProbeLinkId, TracerError> {
    let marker_error = |source| TracerError::Marker {
        function: function.to_owned(),
        binary: binary.display().to_string(),
        source: Box::new(source),
    };
    let probe: &mut UProbe =
        ebpf.program_mut(program).and_then(|program| program.try_into().ok()).expect("the object has the uprobe");
    if probe.fd().is_err() {
        probe.load().map_err(marker_error)?;
    }
    probe.attach(location.into(), binary, UProbeScope::AllProcesses).map_err(marker_error)
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &'static str, tracepoint: &str) -> Result<(), TracerError> {
    let attach_error = |source| TracerError::Attach { program, source: Box::new(source) };
    let raw: &mut RawTracePoint =
        ebpf.program_mut(program).and_then(|program| program.try_into().ok()).expect("the object has the program");
    raw.load().map_err(attach_error)?;
    raw.attach(tracepoint).map_err(attach_error)?;
    Ok(())
}

fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, aya::maps::MapError>,
) -> Result<M, TracerError> {
    let map = ebpf.take_map(name).expect("the object has the map");
    convert(map).map_err(|source| TracerError::Map { map: name, source: Box::new(source) })
}

fn cgroup_path_bytes(path: Option<&str>) -> [u8; CGROUP_PATH_LEN] {
    let mut bytes = [0u8; CGROUP_PATH_LEN];
    if let Some(path) = path {
        // The last byte stays NUL; paths are `/docker/<64 hex>`, far shorter.
        let len = path.len().min(CGROUP_PATH_LEN - 1);
        bytes[..len].copy_from_slice(&path.as_bytes()[..len]);
    }
    bytes
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to the memory cgroup, and
/// raising the limit may be refused (no CAP_SYS_RESOURCE) without harm.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_tables_add_counts_and_keep_the_earliest_sighting() {
        let mut cpu0 = SyscallTable { count: [0; SYSCALL_SLOTS], first_seen_ns: [0; SYSCALL_SLOTS] };
        let mut cpu1 = cpu0;
        (cpu0.count[1], cpu0.first_seen_ns[1]) = (2, 500);
        (cpu1.count[1], cpu1.first_seen_ns[1]) = (3, 300);
        (cpu1.count[39], cpu1.first_seen_ns[39]) = (1, 900);
        let totals = sum_tables([&cpu0, &cpu1].into_iter());
        assert_eq!(
            totals,
            [
                SyscallTotal { number: 1, count: 5, first_seen_ns: 300 },
                SyscallTotal { number: 39, count: 1, first_seen_ns: 900 }
            ]
        );
    }

    #[test]
    fn the_kernel_watches_the_arguments_of_the_one_table() {
        let specs = arg_specs();
        let socket = specs[libc::SYS_socket as usize];
        assert_eq!(socket, ArgSpec { mask: [0xffff_ffff, 0xf], index: [0, 1] });
        let mmap = specs[libc::SYS_mmap as usize];
        assert_eq!((mmap.mask[0], mmap.index[0], mmap.mask[1]), (4, 2, 0));
        let watched = specs.iter().flat_map(|spec| spec.mask).filter(|&mask| mask != 0).count();
        assert_eq!(watched, crate::syscalls::args::ARG_PAIRS.len());
    }

    #[test]
    fn the_cgroup_path_is_nul_padded() {
        let bytes = cgroup_path_bytes(Some("/docker/abc"));
        assert_eq!(&bytes[..12], b"/docker/abc\0");
        assert!(cgroup_path_bytes(None).iter().all(|&byte| byte == 0));
    }
}
