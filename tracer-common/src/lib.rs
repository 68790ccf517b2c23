//! Record layouts and constants shared by the kernel programs (`tracer-ebpf`) and the userspace
//! loader (`seccomp-refine`'s `trace::ebpf` module).
//!
//! Everything here is `no_std`, `#[repr(C)]` and defined exactly once, so the two sides cannot
//! disagree on a layout. The `user` feature adds the `aya::Pod` impls userspace needs. Names of
//! programs, maps and read-only globals are constants here too: userspace looks them up by these
//! strings, and the kernel side declares items with exactly these names.
#![no_std]

/// Syscall numbers the per-cgroup tables have room for; the highest x86_64 and i386 numbers are
/// below this.
pub const SYSCALL_SLOTS: usize = 512;
/// Bytes kept of a path (exec'd file, mapped file); longer paths are cut and counted.
pub const PATH_LEN: usize = 256;
/// Bytes of the cgroup path the kernel registers at `cgroup_mkdir` (`/docker/<64 hex>` is 72).
pub const CGROUP_PATH_LEN: usize = 128;
/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Cgroups (containers) one tracer can follow at once.
pub const MAX_CGROUPS: u32 = 1024;
/// Per-phase tables: every phase and ABI of every cgroup. The map allocates on use, so the
/// bound costs nothing until tables exist.
pub const MAX_TABLES: u32 = MAX_CGROUPS * phase::COUNT as u32 * 2;
/// Processes moved to serving by a per-process marker, alive at once.
pub const MAX_SERVING_PROCESSES: u32 = 16384;
/// Bytes of user stack a [`WaitStack`] copies from the stack pointer up: enough for the frames
/// from a server's wait up to `main` (nginx's worker: about 1.5 KiB; frames are rarely large).
pub const STACK_BYTES: usize = 16384;
/// The stack is copied in pieces of this size, so that a read running past the top of the
/// stack mapping loses one piece, not the whole copy.
pub const STACK_CHUNK: usize = 512;
/// Slots of `struct pt_regs` (x86_64 uapi, `arch/x86/include/uapi/asm/ptrace.h`) a
/// [`WaitStack`] carries, indexed by the `regs` constants.
pub const REGS_SLOTS: usize = 21;
/// Threads whose latest wait's stack is kept at once (`WAIT_STACKS`).
pub const MAX_WAIT_STACKS: u32 = 1024;
/// Processes another process put into a traced cgroup (`docker exec`'s `runc init`) that have not
/// exec'd yet, alive at once (`RUNTIME_PROCESSES`).
pub const MAX_RUNTIME_PROCESSES: u32 = 1024;
/// Narrowable arguments one syscall has at most (`socket`: domain and type; `setsockopt`: level
/// and option name): the slots of an [`ArgSpec`].
pub const ARGS_PER_SYSCALL: usize = 2;
/// Distinct values of one argument the kernel keeps per (cgroup, phase, syscall); one more sets
/// the key's overflow flag. Past this many a profile would not narrow the argument anyway.
pub const MAX_ARG_VALUES: u32 = 16;
/// `(cgroup, phase, syscall, argument, value)` entries of `ARG_VALUES`, over all cgroups; a value
/// that finds it full sets its key's overflow flag.
pub const MAX_ARG_ENTRIES: u32 = 65536;
/// `(cgroup, phase, syscall, argument)` entries of `ARG_KEYS`: every phase of every cgroup with
/// room for 32 narrowable arguments. A key that finds it full is counted in `stat::ARG_LOST`.
pub const MAX_ARG_KEYS: u32 = MAX_CGROUPS * phase::COUNT as u32 * 32;

/// The phases the kernel records syscalls in (the `phase` of a [`TableKey`] and a
/// [`CgroupState`]). Transitions only move forward.
pub mod phase {
    /// The container runtime's own setup in the container's cgroup (mounts, `pivot_root`, …),
    /// before runc's `prctl(PR_GET_PDEATHSIG)`: not under the container's filter.
    pub const RUNTIME_SETUP: u32 = 0;
    /// runc after that `prctl`, until it execs the entrypoint: under the container's filter.
    pub const RUNTIME: u32 = 1;
    /// From the entrypoint's exec until the phase marker fires.
    pub const INIT: u32 = 2;
    /// After the phase marker.
    pub const SERVING: u32 = 3;
    pub const COUNT: usize = 4;
}

/// The ABI of a recorded syscall (the `abi` of a [`TableKey`]).
pub mod abi {
    /// The kernel's own ABI (x86_64).
    pub const NATIVE: u32 = 0;
    /// A 32-bit syscall (`int $0x80` or a 32-bit process): numbered with the i386 table.
    pub const COMPAT: u32 = 1;
}

/// What ends `init` in the kernel (slot 0 of the `MARKER` map; slot 1 holds the syscall number).
/// Markers decided in userspace (`ready:`, `after:`) use `NONE`.
pub mod marker {
    pub const NONE: u32 = 0;
    /// The first syscall numbered `MARKER[1]` in `init` moves the whole cgroup.
    pub const SYSCALL: u32 = 1;
    /// The first accept-family or epoll wait after the cgroup called `listen` moves the whole
    /// cgroup.
    pub const AFTER_LISTEN: u32 = 2;
    /// The marker uprobe moves only the process that hits it, and the processes it forks
    /// afterwards (`SERVING_PROCESSES`); the cgroup itself stays in `init`.
    pub const PER_PROCESS: u32 = 3;
    /// `auto`: per process, like `PER_PROCESS`, and a process also moves at its first
    /// accept-family or epoll wait that may block (a zero timeout only polls) after the cgroup
    /// called `listen`. Until userspace sets `FLAG_ENTRY_FOUND`, every such wait keeps the
    /// thread's registers and user stack in `WAIT_STACKS`; userspace takes the first wait it sees
    /// blocking, derives the serving entry from its stack and adds the marker uprobe there.
    pub const FIRST_WAIT: u32 = 4;

    /// Whether markers of `kind` move single processes (`SERVING_PROCESSES`), not the cgroup.
    pub const fn per_process(kind: u32) -> bool {
        kind == PER_PROCESS || kind == FIRST_WAIT
    }
}

/// Event kinds (the `kind` of an [`EventHeader`]).
pub mod event {
    pub const EXEC: u32 = 1;
    pub const MMAP_EXEC: u32 = 2;
    pub const PHASE: u32 = 3;
    pub const CGROUP: u32 = 4;
}

/// Why a phase changed (the `cause` of a [`PhaseEvent`]): a syscall number, or one of these.
pub mod cause {
    pub const EXEC: u32 = 0x1_0000;
    pub const UPROBE: u32 = 0x1_0001;
    /// Forked by a serving process (per-process markers).
    pub const FORK: u32 = 0x1_0002;
    /// The enforcer's marker uprobe stopped the calling thread (`SIGSTOP`) for its switch.
    pub const STOPPED: u32 = 0x1_0003;
    /// The enforcer's hold stopped a process of a target cgroup that has no marker uprobe yet
    /// (`SIGSTOP`), at its first page fault.
    pub const HELD: u32 = 0x1_0004;
    /// A probed process of a target cgroup exec'd; the enforcer stopped it (`SIGSTOP`) to read the
    /// filters of its new image.
    pub const EXECED: u32 = 0x1_0005;
}

/// Slots of the per-CPU `STATS` array.
pub mod stat {
    /// Ring-buffer reservations that failed: events lost.
    pub const LOST_EVENTS: u32 = 0;
    /// Per-phase syscall tables that could not be created (map full): syscalls not recorded.
    pub const TABLE_FULL: u32 = 1;
    /// Paths cut at `PATH_LEN` or unreadable.
    pub const PATH_CUT: u32 = 2;
    /// Processes that entered serving but could not be recorded as such (map full): their
    /// syscalls count as init.
    pub const PROCESS_FULL: u32 = 3;
    /// Calls of a syscall with narrowable arguments whose values could not be recorded, nor their
    /// loss flagged on their key (`ARG_KEYS` full): every argument value of the cgroup is unknown.
    pub const ARG_LOST: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Value of the per-CPU `CGROUP_STATS` map: the `stat` counters of one cgroup.
pub type StatCounters = [u64; stat::COUNT as usize];

/// `CgroupState::flags`: the cgroup has called `listen` (for the `AFTER_LISTEN` and
/// `FIRST_WAIT` markers).
pub const FLAG_LISTENED: u32 = 1;
/// `CgroupState::flags`, set by userspace: the serving entry is found, waits stop keeping their
/// stacks (`FIRST_WAIT` marker).
pub const FLAG_ENTRY_FOUND: u32 = 2;
/// `TS_COMPAT` in `thread_info.status` (arch/x86/include/asm/thread_info.h).
pub const TS_COMPAT: u32 = 0x0002;
/// `PR_GET_PDEATHSIG`: runc reads it just before it installs the container's filter.
pub const PR_GET_PDEATHSIG: u64 = 2;
/// `PROT_EXEC`.
pub const PROT_EXEC: u64 = 4;

/// Program, map and global names, shared so neither side can misspell them.
pub mod names {
    pub const SYS_ENTER: &str = "seccomp_refine_sys_enter";
    pub const SYS_EXIT: &str = "seccomp_refine_sys_exit";
    pub const EXEC: &str = "seccomp_refine_exec";
    pub const CGROUP_MKDIR: &str = "seccomp_refine_cgroup_mkdir";
    pub const FORK: &str = "seccomp_refine_fork";
    pub const EXIT: &str = "seccomp_refine_exit";
    pub const CGROUP_ATTACH: &str = "seccomp_refine_cgroup_attach";
    pub const MARKER_PROBE: &str = "seccomp_refine_marker";
    pub const ENFORCE_PROBE: &str = "seccomp_refine_enforce";
    pub const HOLD: &str = "seccomp_refine_hold";
    pub const REPROBE: &str = "seccomp_refine_reprobe";
    pub const CGROUPS: &str = "CGROUPS";
    pub const TABLES: &str = "TABLES";
    pub const EVENTS: &str = "EVENTS";
    pub const STATS: &str = "STATS";
    pub const CGROUP_STATS: &str = "CGROUP_STATS";
    pub const SERVING_PROCESSES: &str = "SERVING_PROCESSES";
    pub const PROBED: &str = "PROBED";
    pub const MARKER: &str = "MARKER";
    pub const CGROUP_PATH: &str = "CGROUP_PATH";
    pub const WAIT_STACKS: &str = "WAIT_STACKS";
    pub const ARG_SPECS: &str = "ARG_SPECS";
    pub const ARG_VALUES: &str = "ARG_VALUES";
    pub const ARG_KEYS: &str = "ARG_KEYS";
}

/// Slots of the user register frame (`struct pt_regs`, x86_64 uapi: the layout is ABI) in a
/// [`WaitStack`].
pub mod regs {
    pub const R15: usize = 0;
    pub const R14: usize = 1;
    pub const R13: usize = 2;
    pub const R12: usize = 3;
    pub const BP: usize = 4;
    pub const BX: usize = 5;
    pub const IP: usize = 16;
    pub const SP: usize = 19;
}

/// Kernel struct field offsets, read from BTF by userspace and injected as read-only globals
/// (Rust eBPF emits no CO-RE relocations). The global of field `i` is `OFFSET_NAMES[i]`.
pub mod offsets {
    pub const TASK_STATUS: usize = 0;
    pub const BPRM_FILENAME: usize = 1;
    pub const BPRM_INTERP: usize = 2;
    pub const CGROUP_KN: usize = 3;
    pub const KERNFS_ID: usize = 4;
    pub const CGROUP_ROOT: usize = 5;
    pub const ROOT_HIERARCHY_ID: usize = 6;
    pub const REGS_DI: usize = 7;
    pub const REGS_SI: usize = 8;
    pub const REGS_DX: usize = 9;
    pub const REGS_R10: usize = 10;
    pub const REGS_R8: usize = 11;
    pub const TASK_PID: usize = 12;
    pub const TASK_TGID: usize = 13;
    pub const TASK_SIGNAL: usize = 14;
    pub const SIGNAL_LIVE: usize = 15;
    pub const REGS_ORIG_AX: usize = 16;
    pub const REGS_R9: usize = 17;
    pub const COUNT: usize = 18;
    /// The global holding all of them, indexed by the constants above.
    pub const GLOBAL: &str = "OFFSETS";
}

/// Key of the per-CPU `TABLES` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableKey {
    pub cgroup: u64,
    pub phase: u32,
    pub abi: u32,
}

/// Value of `TABLES`, per CPU: how often each syscall number was entered, and when first
/// (`bpf_ktime_get_ns`, CLOCK_MONOTONIC). Per CPU, so the hot path needs no atomics.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallTable {
    pub count: [u64; SYSCALL_SLOTS],
    pub first_seen_ns: [u64; SYSCALL_SLOTS],
}

/// Which arguments of one syscall number the kernel records the values of: the read-only
/// `ARG_SPECS` global holds one per native syscall number, filled by userspace from the
/// analyzer's table of narrowable arguments (`syscalls::args`), so that table stays the only one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgSpec {
    /// The bits kept of each argument; 0 leaves the slot unused (no mask keeps nothing).
    pub mask: [u64; ARGS_PER_SYSCALL],
    /// The argument of each slot, 0-based (`args[]` of seccomp: di, si, dx, r10, r8, r9).
    pub index: [u32; ARGS_PER_SYSCALL],
}

/// Key of the `ARG_KEYS` hash map: one narrowable argument of one syscall, per cgroup and phase.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgKey {
    pub cgroup: u64,
    pub phase: u32,
    /// The native syscall number.
    pub syscall: u16,
    /// The argument, 0-based.
    pub index: u16,
}

/// Value of `ARG_KEYS`: how many distinct values of the argument `ARG_VALUES` holds (bounded by
/// `MAX_ARG_VALUES`), and whether a value was seen that it could not hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgCount {
    pub distinct: u32,
    /// Not 0 once a value was left out: the values are incomplete.
    pub overflow: u32,
}

/// Key of the `ARG_VALUES` hash map (its value is unused): one value, masked as its [`ArgSpec`]
/// says, an argument of a syscall was seen with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgValueKey {
    pub key: ArgKey,
    pub value: u64,
}

/// Value of the `CGROUPS` hash map, keyed by cgroup v2 id: a registered cgroup is traced.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupState {
    pub phase: u32,
    pub flags: u32,
}

/// Key of the `FD_PATHS` map: the path an `open` returned, per process and fd.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// A NUL-terminated path.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathBytes {
    pub bytes: [u8; PATH_LEN],
}

/// Leads every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventHeader {
    pub kind: u32,
    /// The cgroup's phase when the event happened (for `PHASE`, the new phase).
    pub phase: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    pub ts_ns: u64,
    pub cgroup: u64,
    pub comm: [u8; COMM_LEN],
}

/// `event::EXEC`: a successful exec in a traced cgroup.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// What was passed to `execve` (`bprm->filename`).
    pub filename: [u8; PATH_LEN],
    /// What the kernel ran (`bprm->interp`): differs from `filename` for `#!` scripts.
    pub interp: [u8; PATH_LEN],
}

/// `event::MMAP_EXEC`: `mmap` with `PROT_EXEC` of a file the process opened by path.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmapEvent {
    pub header: EventHeader,
    pub fd: u32,
    pub _pad: u32,
    pub path: [u8; PATH_LEN],
}

/// `event::PHASE`: the kernel moved a cgroup, or one process of it, to `header.phase`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PhaseEvent {
    pub header: EventHeader,
    /// The syscall number that caused it, or a `cause::` constant.
    pub cause: u32,
    /// The process that moved (per-process markers: the one that hit the marker, or for
    /// `cause::FORK` the child, while the header names the parent); 0 when the whole cgroup moved.
    pub process: u32,
}

/// `event::CGROUP`: the kernel registered a new cgroup at `cgroup_mkdir`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupEvent {
    pub header: EventHeader,
    pub path: [u8; CGROUP_PATH_LEN],
}

/// Value of `WAIT_STACKS`, keyed by thread id: the registers and user stack of the thread's
/// latest wait after `listen` (`marker::FIRST_WAIT`), taken at that syscall's entry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WaitStack {
    /// Who and when (`kind` is 0: this is no event).
    pub header: EventHeader,
    /// The wait's syscall number.
    pub syscall: u32,
    /// Bytes of `stack` copied, from `regs[regs::SP]` up (a multiple of `STACK_CHUNK`).
    pub stack_len: u32,
    /// The user register frame, as the kernel saved it at syscall entry.
    pub regs: [u64; REGS_SLOTS],
    pub stack: [u8; STACK_BYTES],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no padding bytes.
    unsafe impl aya::Pod for TableKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallTable {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CgroupState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FdKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PathBytes {}
    // SAFETY: as above.
    unsafe impl aya::Pod for WaitStack {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ArgSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ArgKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ArgCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ArgValueKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<TableKey>(), 16);
        assert_eq!(size_of::<SyscallTable>(), 2 * 8 * SYSCALL_SLOTS);
        assert_eq!(size_of::<CgroupState>(), 8);
        assert_eq!(size_of::<EventHeader>(), 48);
        assert_eq!(size_of::<ExecEvent>(), 48 + 2 * PATH_LEN);
        assert_eq!(size_of::<MmapEvent>(), 56 + PATH_LEN);
        assert_eq!(size_of::<PhaseEvent>(), 56);
        assert_eq!(size_of::<CgroupEvent>(), 48 + CGROUP_PATH_LEN);
        assert_eq!(size_of::<WaitStack>(), 56 + 8 * REGS_SLOTS + STACK_BYTES);
        assert_eq!(STACK_BYTES % STACK_CHUNK, 0);
        assert_eq!(size_of::<ArgSpec>(), 12 * ARGS_PER_SYSCALL);
        assert_eq!(size_of::<ArgKey>(), 16);
        assert_eq!(size_of::<ArgCount>(), 8);
        assert_eq!(size_of::<ArgValueKey>(), 24);
    }

    #[test]
    fn percpu_table_fits_the_kernel_limit() {
        // PCPU_MIN_UNIT_SIZE: per-CPU map values above 32 KiB are refused.
        assert!(size_of::<SyscallTable>() <= 32 * 1024);
    }
}
