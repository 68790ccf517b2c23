//! The tracer's kernel programs: per-cgroup, per-phase syscall tables, and ring-buffer events for
//! the rare things (execs, executable mappings, phase changes, registered cgroups).
//!
//! - `sys_enter` (raw tracepoint) counts every syscall of a registered cgroup in a per-CPU table
//!   keyed by (cgroup, phase, ABI), keeps the distinct values of the narrowable arguments
//!   (`ARG_SPECS`) per (cgroup, phase, syscall) in a bounded map, moves the phase on runc's
//!   `PR_GET_PDEATHSIG` cut and on a kernel-decided marker, and remembers `open` paths for the
//!   `mmap` correlation;
//! - `sys_exit` (raw tracepoint) binds a successful `open`'s path to its (process, fd), and returns
//!   at once for any other syscall;
//! - `sched_process_exec` (raw tracepoint) reports execs and ends the runtime phase;
//! - `cgroup_mkdir` (raw tracepoint) registers the container's cgroup before any task runs in it;
//! - `cgroup_attach_task` (raw tracepoint) marks a process the runtime puts into a running
//!   container (`docker exec`'s `runc init`) as the runtime until it execs (`RUNTIME_PROCESSES`);
//! - a uprobe on the marker function ends `init` for the process that calls it;
//! - `sched_process_fork` and `sched_process_exit` (raw tracepoints) pass those per-process phases
//!   on to children forked afterwards and forget them when the process is gone;
//! - `seccomp-refine enforce` loads only the enforcer's uprobe on the serving entry with
//!   `cgroup_mkdir`, fork, exit, exec and the page-fault hold: a registered cgroup is then a
//!   target, each of its processes gets the uprobe for itself alone (`PROBED`; a new one is held
//!   at its first page fault until it has), and stops at its first entry for the switch to the
//!   serving filter (`SERVING_PROCESSES` = switched), after which its probe is detached.
//!
//! Phases are per cgroup, except under a per-process marker (`symbol:`, `auto`): then the cgroup
//! stays in `init` and a process is serving when it is in `SERVING_PROCESSES`, which costs the hot
//! path one hash lookup per syscall in `init`. Under `auto` a process also serves from its first
//! accept-family or epoll wait after the cgroup's `listen`, and such waits keep the thread's
//! registers and user stack (`WAIT_STACKS`) until userspace has derived the serving entry.
//!
//! No event is sent per syscall: userspace reads the tables. Struct offsets come from userspace
//! (BTF) through the read-only `OFFSETS` global, since Rust eBPF has no CO-RE.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "`bpfel-unknown-none` has no atomic read-modify-write types; the intrinsic's add becomes BPF's atomic add"
)]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "aya's map methods take `impl Borrow`; by reference a constant key or value stays in .rodata and a \
              scratch slot stays off the 512-byte BPF stack, by value each is copied onto it"
)]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, bpf_send_signal_thread, generated,
    },
    macros::{map, raw_tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProbeContext, RawTracePointContext},
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use tracer_common::{
    ARGS_PER_SYSCALL, ArgCount, ArgKey, ArgSpec, ArgValueKey, CGROUP_PATH_LEN, COMM_LEN, CgroupEvent, CgroupState,
    EventHeader, ExecEvent, FLAG_ENTRY_FOUND, FLAG_LISTENED, FdKey, MAX_ARG_ENTRIES, MAX_ARG_KEYS, MAX_ARG_VALUES,
    MAX_CGROUPS, MAX_RUNTIME_PROCESSES, MAX_SERVING_PROCESSES, MAX_TABLES, MAX_WAIT_STACKS, MmapEvent, PATH_LEN,
    PR_GET_PDEATHSIG, PROT_EXEC, PathBytes, PhaseEvent, REGS_SLOTS, STACK_BYTES, STACK_CHUNK, SYSCALL_SLOTS,
    StatCounters, SyscallTable, TS_COMPAT, TableKey, WaitStack, abi, cause, event, marker, offsets, phase, stat,
};

// x86_64 syscall numbers the programs act on.
const NR_OPEN: u64 = 2;
const NR_CLOSE: u64 = 3;
const NR_MMAP: u64 = 9;
const NR_ACCEPT: u64 = 43;
const NR_LISTEN: u64 = 50;
const NR_PRCTL: u64 = 157;
const NR_EPOLL_WAIT: u64 = 232;
const NR_OPENAT: u64 = 257;
const NR_EPOLL_PWAIT: u64 = 281;
const NR_ACCEPT4: u64 = 288;
const NR_SECCOMP: u64 = 317;
const NR_OPENAT2: u64 = 437;
const NR_EPOLL_PWAIT2: u64 = 441;

/// `-EEXIST`, as map updates with `BPF_NOEXIST` return it.
const EEXIST: i32 = -17;
/// `seccomp`'s operation that installs a filter.
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// `prctl`'s way to install one (runc's, when it asks for no filter flags):
/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, program)`.
const PR_SET_SECCOMP: u64 = 22;
const SECCOMP_MODE_FILTER: u64 = 2;

/// Struct field offsets, indexed by `tracer_common::offsets`; set by userspace from BTF.
#[unsafe(no_mangle)]
static OFFSETS: [u64; offsets::COUNT] = [0; offsets::COUNT];
/// The v2 cgroup path (`/docker/<id>`) to register when created, NUL-padded; empty for none.
#[unsafe(no_mangle)]
static CGROUP_PATH: [u8; CGROUP_PATH_LEN] = [0; CGROUP_PATH_LEN];

/// Which arguments of each native syscall number to record, masked how; set by userspace from
/// the analyzer's table of narrowable arguments. A slot whose mask is 0 is unused.
#[unsafe(no_mangle)]
static ARG_SPECS: [ArgSpec; SYSCALL_SLOTS] =
    [ArgSpec { mask: [0; ARGS_PER_SYSCALL], index: [0; ARGS_PER_SYSCALL] }; SYSCALL_SLOTS];

/// Per (cgroup, phase, syscall, argument): how many distinct values `ARG_VALUES` holds, and
/// whether one was left out (the bound, or a full map), so a lost value is never silent.
#[map]
static ARG_KEYS: HashMap<ArgKey, ArgCount> = HashMap::with_max_entries(MAX_ARG_KEYS, BPF_F_NO_PREALLOC);

/// Every distinct (masked) value seen per (cgroup, phase, syscall, argument); the value is unused.
/// A hash map, not slots in `ARG_KEYS`, so that two CPUs adding values at once both keep theirs.
#[map]
static ARG_VALUES: HashMap<ArgValueKey, u8> = HashMap::with_max_entries(MAX_ARG_ENTRIES, BPF_F_NO_PREALLOC);

/// Registered cgroups and their phase: a cgroup not in here is not traced.
#[map]
static CGROUPS: HashMap<u64, CgroupState> = HashMap::with_max_entries(MAX_CGROUPS, 0);

/// The marker the kernel decides: `[kind, syscall number]` (`tracer_common::marker`). A map, not
/// a global, because userspace settles it after loading (`auto` tries uprobes first).
#[map]
static MARKER: Array<u64> = Array::with_max_entries(2, 0);

/// Allocated per key as tables appear (8 KiB per CPU each), not preallocated for every possible
/// cgroup: memory grows with what is traced.
#[map]
static TABLES: PerCpuHashMap<TableKey, SyscallTable> = PerCpuHashMap::with_max_entries(MAX_TABLES, BPF_F_NO_PREALLOC);

/// One zeroed table: new `TABLES` entries are copied from it, since 8 KiB cannot live on the
/// 512-byte stack.
#[map]
static ZERO_TABLE: Array<SyscallTable> = Array::with_max_entries(1, 0);

/// Userspace sets the size (`--ring-buffer`); this is the default.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Totals of the `stat` counters, whatever the cgroup.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The same counters per cgroup, so each container's trace reports its own losses.
#[map]
static CGROUP_STATS: PerCpuHashMap<u64, StatCounters> = PerCpuHashMap::with_max_entries(MAX_CGROUPS, 0);

/// Processes (tgid) a per-process marker moved to serving, with their cgroup.
#[map]
static SERVING_PROCESSES: HashMap<u32, u64> = HashMap::with_max_entries(MAX_SERVING_PROCESSES, BPF_F_NO_PREALLOC);

/// Processes (tgid) the runtime put into a running container that have not exec'd yet (`docker
/// exec`'s `runc init`), with the runtime phase their syscalls count in: `RUNTIME_SETUP` until
/// they install the container's filter, `RUNTIME` after. A full map leaves a process in its
/// cgroup's phase, which only widens a profile.
#[map]
static RUNTIME_PROCESSES: HashMap<u32, u32> = HashMap::with_max_entries(MAX_RUNTIME_PROCESSES, BPF_F_NO_PREALLOC);

/// How many entries `RUNTIME_PROCESSES` holds (at least; it is raised before an insert and
/// lowered after a removal), so that `sys_enter` looks processes up only while one exists.
#[map]
static RUNTIME_PROCESS_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Processes of target cgroups that have a marker uprobe of their own (the enforcer adds them), or
/// that the enforcer's hold stopped until it has attached one: neither is held again.
#[map]
static PROBED: HashMap<u32, u64> = HashMap::with_max_entries(MAX_SERVING_PROCESSES, BPF_F_NO_PREALLOC);

/// The path pointer of an `open` in flight, per thread, until `sys_exit` sees its result.
#[map]
static PENDING_OPEN: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// What each open fd of a traced process was opened as.
#[map]
static FD_PATHS: LruHashMap<FdKey, PathBytes> = LruHashMap::with_max_entries(16384, 0);

/// Under `auto`, each thread's latest wait after `listen` (registers and user stack), until
/// userspace has found the serving entry in one that blocks.
#[map]
static WAIT_STACKS: HashMap<u32, WaitStack> = HashMap::with_max_entries(MAX_WAIT_STACKS, BPF_F_NO_PREALLOC);

/// Where a wait's stack is assembled before it goes into `WAIT_STACKS` (16 KiB: not the stack).
#[map]
static WAIT_STACK_SCRATCH: PerCpuArray<WaitStack> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for a path being copied (too big for the stack next to everything else).
#[map]
static PATH_SCRATCH: PerCpuArray<PathBytes> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn offset(field: usize) -> u64 {
    // SAFETY: a plain read of a read-only global; volatile so the compiler cannot fold the
    // build-time zero in place of the value userspace writes before loading.
    unsafe { core::ptr::read_volatile(&OFFSETS[field]) }
}

/// Counts a loss in the totals and in `cgroup`'s own counters.
#[inline(always)]
fn count_stat(cgroup: u64, slot: u32) {
    if let Some(value) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot; nothing else runs on this CPU while the program does.
        unsafe { *value += 1 };
    }
    let counters = match CGROUP_STATS.get_ptr_mut(&cgroup) {
        Some(counters) => counters,
        None => {
            let _ = CGROUP_STATS.insert(&cgroup, &[0; stat::COUNT as usize], BPF_NOEXIST as u64);
            let Some(counters) = CGROUP_STATS.get_ptr_mut(&cgroup) else { return };
            counters
        }
    };
    // SAFETY: this CPU's copy of the cgroup's counters.
    if let Some(count) = unsafe { (*counters).get_mut(slot as usize) } {
        *count += 1;
    }
}

/// Reads a kernel value at `base + off`.
#[inline(always)]
fn read_kernel<T>(base: u64, off: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one only returns an error.
    unsafe { bpf_probe_read_kernel((base + off) as *const T) }.ok()
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn seccomp_refine_sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    if !(0..SYSCALL_SLOTS as i64).contains(&id) {
        return 0;
    }
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let Some(state) = CGROUPS.get_ptr_mut(cgroup) else { return 0 };
    let id = id as u64;
    let abi = current_abi();
    if let Some(process_phase) = runtime_process(tgid()) {
        record_runtime(cgroup, process_phase, abi, id, ctx.arg(0));
        return 0;
    }
    // SAFETY: the entry lives as long as the cgroup is registered; racing writers only ever move
    // the phase forward, and a torn read is impossible for an aligned u32.
    let mut current = unsafe { (*state).phase };
    if current == phase::INIT {
        current = phase_in_init(cgroup, state, abi, id, ctx.arg(0));
    }
    let recorded = if abi == abi::NATIVE && current == phase::RUNTIME && id == NR_SECCOMP {
        // Installing the filter is the last thing runc does without it.
        phase::RUNTIME_SETUP
    } else {
        current
    };
    record(cgroup, recorded, abi, id);
    if abi == abi::NATIVE {
        let regs: u64 = ctx.arg(0);
        record_args(cgroup, recorded, id, regs);
        on_native_syscall(cgroup, state, current, id, regs);
    }
    0
}

/// Records a syscall of a process the runtime put into the running container: no marker fires and
/// no path is remembered, none of it is the application's. Its calls are setup until it installs
/// the container's filter (`seccomp` or `prctl(PR_SET_SECCOMP)`; that call included, and every
/// `seccomp` call, as at the container's start) and `RUNTIME` after; a probe with no filter
/// (libseccomp's, `NULL`) moves nothing. The phase is the process's, not the thread's: runc
/// installs the filter on one thread, so its Go runtime threads' later calls count as `RUNTIME`
/// too, as they do at the container's start.
#[inline(always)]
fn record_runtime(cgroup: u64, process_phase: *mut u32, abi: u32, id: u64, regs: u64) {
    // SAFETY: a map value, valid during the program; only this process's threads write it, and
    // only ever forward.
    let current = unsafe { *process_phase };
    let argument = |register| read_kernel::<u64>(regs, offset(register));
    // Both calls take the filter program third.
    let installs = abi == abi::NATIVE
        && current == phase::RUNTIME_SETUP
        && match id {
            NR_SECCOMP => argument(offsets::REGS_DI) == Some(SECCOMP_SET_MODE_FILTER),
            NR_PRCTL => {
                argument(offsets::REGS_DI) == Some(PR_SET_SECCOMP)
                    && argument(offsets::REGS_SI) == Some(SECCOMP_MODE_FILTER)
            }
            _ => false,
        }
        && argument(offsets::REGS_DX).is_some_and(|program| program != 0);
    if installs {
        // SAFETY: as above.
        unsafe { *process_phase = phase::RUNTIME };
    }
    let recorded = if installs || (abi == abi::NATIVE && id == NR_SECCOMP) { phase::RUNTIME_SETUP } else { current };
    record(cgroup, recorded, abi, id);
}

/// Records the values of the syscall's narrowable arguments, if it has any: one array read for
/// every other syscall, one hash lookup per argument for a value already seen.
#[inline(always)]
fn record_args(cgroup: u64, phase: u32, id: u64, regs: u64) {
    let slot = (id as usize) & (SYSCALL_SLOTS - 1);
    // SAFETY: plain reads of a read-only global (volatile: see `offset`); `slot` is in range.
    let (first_mask, second_mask) = unsafe {
        (core::ptr::read_volatile(&ARG_SPECS[slot].mask[0]), core::ptr::read_volatile(&ARG_SPECS[slot].mask[1]))
    };
    if first_mask == 0 {
        return;
    }
    // SAFETY: as above.
    let (first, second) = unsafe {
        (core::ptr::read_volatile(&ARG_SPECS[slot].index[0]), core::ptr::read_volatile(&ARG_SPECS[slot].index[1]))
    };
    record_arg(ArgKey { cgroup, phase, syscall: slot as u16, index: first as u16 }, first_mask, regs);
    if second_mask != 0 {
        record_arg(ArgKey { cgroup, phase, syscall: slot as u16, index: second as u16 }, second_mask, regs);
    }
}

/// Adds the value of argument `key.index`, under `mask`, to the values of `key`, or flags `key`
/// as overflowed when it cannot.
#[inline(always)]
fn record_arg(key: ArgKey, mask: u64, regs: u64) {
    let value = read_kernel::<u64>(regs, offset(arg_register(key.index)));
    if let Some(value) = value
        && ARG_VALUES.get_ptr(&ArgValueKey { key, value: value & mask }).is_some()
    {
        return;
    }
    let count = match ARG_KEYS.get_ptr_mut(&key) {
        Some(count) => count,
        None => {
            let _ = ARG_KEYS.insert(&key, &ArgCount { distinct: 0, overflow: 0 }, BPF_NOEXIST as u64);
            match ARG_KEYS.get_ptr_mut(&key) {
                Some(count) => count,
                None => {
                    count_stat(key.cgroup, stat::ARG_LOST);
                    return;
                }
            }
        }
    };
    // SAFETY: the key's entry, valid during the program. Two CPUs may both add a value near the
    // bound and keep one more than `MAX_ARG_VALUES` (the count is a plain add): userspace treats
    // more than the bound as overflowed, so no value is ever lost unflagged.
    unsafe {
        let Some(value) = value else {
            (*count).overflow = 1;
            return;
        };
        if (*count).distinct >= MAX_ARG_VALUES {
            (*count).overflow = 1;
            return;
        }
        match ARG_VALUES.insert(&ArgValueKey { key, value: value & mask }, &0, BPF_NOEXIST as u64) {
            Ok(()) => (*count).distinct += 1,
            Err(EEXIST) => {}
            Err(_) => (*count).overflow = 1,
        }
    }
}

/// The `pt_regs` field holding syscall argument `index` (x86-64: di, si, dx, r10, r8, r9).
#[inline(always)]
fn arg_register(index: u16) -> usize {
    match index {
        0 => offsets::REGS_DI,
        1 => offsets::REGS_SI,
        2 => offsets::REGS_DX,
        3 => offsets::REGS_R10,
        4 => offsets::REGS_R8,
        _ => offsets::REGS_R9,
    }
}

/// `abi::COMPAT` for a 32-bit syscall (`TS_COMPAT` in the thread's status), else `abi::NATIVE`.
#[inline(always)]
fn current_abi() -> u32 {
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    match read_kernel::<u32>(task, offset(offsets::TASK_STATUS)) {
        Some(status) if status & TS_COMPAT != 0 => abi::COMPAT,
        _ => abi::NATIVE,
    }
}

#[inline(always)]
fn record(cgroup: u64, phase: u32, abi: u32, id: u64) {
    let key = TableKey { cgroup, phase, abi };
    let table = match TABLES.get_ptr_mut(&key) {
        Some(table) => table,
        None => {
            let Some(zero) = ZERO_TABLE.get(0) else { return };
            // Another CPU may have inserted it meanwhile; NOEXIST keeps its data either way.
            let _ = TABLES.insert(&key, zero, BPF_NOEXIST as u64);
            match TABLES.get_ptr_mut(&key) {
                Some(table) => table,
                None => {
                    count_stat(cgroup, stat::TABLE_FULL);
                    return;
                }
            }
        }
    };
    let slot = (id as usize) & (SYSCALL_SLOTS - 1);
    // SAFETY: this CPU's copy of the table; `slot` is masked into range.
    unsafe {
        (*table).count[slot] += 1;
        if (*table).first_seen_ns[slot] == 0 {
            (*table).first_seen_ns[slot] = bpf_ktime_get_ns();
        }
    }
}

/// Phase moves and bookkeeping that depend on a native syscall's number and arguments.
#[inline(always)]
fn on_native_syscall(cgroup: u64, state: *mut CgroupState, current: u32, id: u64, regs: u64) {
    match id {
        NR_OPENAT | NR_OPENAT2 => remember_open(read_kernel::<u64>(regs, offset(offsets::REGS_SI))),
        NR_OPEN => remember_open(read_kernel::<u64>(regs, offset(offsets::REGS_DI))),
        NR_CLOSE => {
            if let Some(fd) = read_kernel::<u64>(regs, offset(offsets::REGS_DI)) {
                let _ = FD_PATHS.remove(&FdKey { tgid: tgid(), fd: fd as u32 });
            }
        }
        NR_MMAP => on_mmap(cgroup, current, regs),
        NR_PRCTL
            if current == phase::RUNTIME_SETUP
                && read_kernel::<u64>(regs, offset(offsets::REGS_DI)) == Some(PR_GET_PDEATHSIG) =>
        {
            set_phase(cgroup, state, phase::RUNTIME, id as u32);
        }
        _ => {}
    }
}

/// The phase of the calling process while its cgroup is in `init`: a per-process marker looks the
/// process up; a kernel marker may move the whole cgroup (the marker syscall is the first serving
/// one).
#[inline(always)]
fn phase_in_init(cgroup: u64, state: *mut CgroupState, abi: u32, id: u64, regs: u64) -> u32 {
    let kind = marker_kind();
    if kind == marker::FIRST_WAIT {
        return first_wait_phase(cgroup, state, abi, id, regs);
    }
    if kind == marker::PER_PROCESS {
        return process_phase();
    }
    if abi == abi::NATIVE && kernel_marker_fires(kind, state, id) {
        set_phase(cgroup, state, phase::SERVING, id as u32);
        return phase::SERVING;
    }
    phase::INIT
}

/// `auto`'s marker: a process serves from the marker uprobe (added by userspace once it knows the
/// serving entry) or from its own first accept-family or epoll wait that may block after the
/// cgroup's `listen`, whichever comes first. Until the entry is found every such wait keeps its
/// stack: userspace needs one that blocks, since the first wait may be set-up code (nginx's
/// workers test `EPOLLRDHUP` with a wait that returns at once).
#[inline(always)]
fn first_wait_phase(cgroup: u64, state: *mut CgroupState, abi: u32, id: u64, regs: u64) -> u32 {
    let current = process_phase();
    if abi != abi::NATIVE || !kernel_marker_fires(marker::AFTER_LISTEN, state, id) || !may_block(id, regs) {
        return current;
    }
    if current != phase::SERVING {
        serve_process(cgroup, tgid(), id as u32);
    }
    // SAFETY: the cgroup's entry (see `seccomp_refine_sys_enter`).
    if unsafe { (*state).flags } & FLAG_ENTRY_FOUND == 0 {
        keep_stack(cgroup, id, regs);
    }
    phase::SERVING
}

/// Whether a wait may block, i.e. waits for clients: an epoll wait with a zero timeout only polls
/// (nginx's workers test `EPOLLRDHUP` with one while they set up; redis polls while it loads its
/// data), and its stack is set-up code, not the event loop's. Accepts count as waits.
#[inline(always)]
fn may_block(id: u64, regs: u64) -> bool {
    // The timeout is the fourth argument (r10): milliseconds, or for epoll_pwait2 a timespec
    // pointer (NULL: no timeout).
    let Some(timeout) = read_kernel::<u64>(regs, offset(offsets::REGS_R10)) else { return true };
    match id {
        NR_EPOLL_WAIT | NR_EPOLL_PWAIT => timeout as i32 != 0,
        NR_EPOLL_PWAIT2 if timeout != 0 => {
            // SAFETY: the helper checks the user address; a failed read counts as blocking.
            let span = unsafe { bpf_probe_read_user(timeout as *const [u64; 2]) };
            !matches!(span, Ok([0, 0]))
        }
        _ => true,
    }
}

/// Keeps the calling thread's user registers (`regs`, the frame saved at syscall entry) and up to
/// `STACK_BYTES` of its stack in `WAIT_STACKS`: userspace unwinds it with the binaries'
/// `.eh_frame`, since Debian builds without frame pointers and the kernel's own stack walk would
/// stop at the first frame.
#[inline(always)]
fn keep_stack(cgroup: u64, id: u64, regs: u64) {
    let Some(record) = WAIT_STACK_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's scratch slot; the kernel and user pointers are only read through the
    // probe-read helpers, which check the addresses and write at most the given sizes inside it.
    unsafe {
        fill_header(&raw mut (*record).header, 0, phase::SERVING, cgroup);
        (*record).syscall = id as u32;
        let frame = (&raw mut (*record).regs).cast();
        let frame_len = (REGS_SLOTS * 8) as u32;
        if generated::bpf_probe_read_kernel(frame, frame_len, regs as *const _) != 0 {
            (*record).regs = [0; REGS_SLOTS];
        }
        let sp = (*record).regs[tracer_common::regs::SP];
        let stack = (&raw mut (*record).stack).cast::<u8>();
        let mut copied = 0;
        // A piece past the top of the stack mapping fails alone; what is below it is whole.
        while copied < STACK_BYTES {
            let source = (sp + copied as u64) as *const _;
            if generated::bpf_probe_read_user(stack.add(copied).cast(), STACK_CHUNK as u32, source) != 0 {
                break;
            }
            copied += STACK_CHUNK;
        }
        (*record).stack_len = copied as u32;
        let tid = bpf_get_current_pid_tgid() as u32;
        // A full map costs a candidate stack, not a syscall: nothing the trace reports is lost.
        let _ = WAIT_STACKS.insert(&tid, &*record, 0);
    }
}

#[inline(always)]
fn marker_kind() -> u32 {
    MARKER.get(0).copied().unwrap_or(0) as u32
}

/// Under a per-process marker, the calling process's phase.
#[inline(always)]
fn process_phase() -> u32 {
    if SERVING_PROCESSES.get_ptr(&tgid()).is_some() { phase::SERVING } else { phase::INIT }
}

#[inline(always)]
fn kernel_marker_fires(kind: u32, state: *mut CgroupState, id: u64) -> bool {
    match kind {
        marker::SYSCALL => Some(&id) == MARKER.get(1),
        marker::AFTER_LISTEN => {
            // SAFETY: the cgroup's entry (see `seccomp_refine_sys_enter`).
            let flags = unsafe { (*state).flags };
            if id == NR_LISTEN {
                // SAFETY: as above; a lost race only delays the marker to the next wait.
                unsafe { (*state).flags = flags | FLAG_LISTENED };
                return false;
            }
            flags & FLAG_LISTENED != 0
                && matches!(id, NR_ACCEPT | NR_ACCEPT4 | NR_EPOLL_WAIT | NR_EPOLL_PWAIT | NR_EPOLL_PWAIT2)
        }
        _ => false,
    }
}

#[inline(always)]
fn tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn remember_open(path: Option<u64>) {
    if let Some(path) = path {
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = PENDING_OPEN.insert(&tid, &path, 0);
    }
}

#[inline(always)]
fn on_mmap(cgroup: u64, current: u32, regs: u64) {
    let prot = read_kernel::<u64>(regs, offset(offsets::REGS_DX)).unwrap_or(0);
    let fd = read_kernel::<u64>(regs, offset(offsets::REGS_R8)).unwrap_or(u64::MAX) as i64;
    if prot & PROT_EXEC == 0 || fd < 0 {
        return;
    }
    let key = FdKey { tgid: tgid(), fd: fd as u32 };
    let Some(path) = FD_PATHS.get_ptr(&key) else { return };
    let Some(mut entry) = EVENTS.reserve::<MmapEvent>(0) else {
        count_stat(cgroup, stat::LOST_EVENTS);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reserved, exclusively owned ring-buffer slot of the right size;
    // `path` to a map value that stays valid during the program.
    unsafe {
        fill_header(&raw mut (*record).header, event::MMAP_EXEC, current, cgroup);
        (*record).fd = fd as u32;
        (*record)._pad = 0;
        (*record).path = (*path).bytes;
    }
    entry.submit(0);
}

/// Moves `cgroup` to `next` and tells userspace why.
#[inline(always)]
fn set_phase(cgroup: u64, state: *mut CgroupState, next: u32, why: u32) {
    // SAFETY: the cgroup's entry; phases only move forward, so a racing writer agrees.
    unsafe { (*state).phase = next };
    phase_event(cgroup, next, why, 0);
}

/// Tells userspace that `cgroup`, or only its process `process` when not 0, moved to `next`.
#[inline(always)]
fn phase_event(cgroup: u64, next: u32, why: u32, process: u32) {
    let Some(mut entry) = EVENTS.reserve::<PhaseEvent>(0) else {
        count_stat(cgroup, stat::LOST_EVENTS);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned ring-buffer slot of the right size.
    unsafe {
        fill_header(&raw mut (*record).header, event::PHASE, next, cgroup);
        (*record).cause = why;
        (*record).process = process;
    }
    entry.submit(0);
}

/// # Safety
/// `header` must point to writable memory for an `EventHeader`.
#[inline(always)]
unsafe fn fill_header(header: *mut EventHeader, kind: u32, phase: u32, cgroup: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*header).kind = kind;
        (*header).phase = phase;
        (*header).pid = pid_tgid as u32;
        (*header).tgid = (pid_tgid >> 32) as u32;
        (*header).ts_ns = bpf_ktime_get_ns();
        (*header).cgroup = cgroup;
        (*header).comm = comm;
    }
}

/// Runs for every syscall of every process on the host, so the cheapest test comes first: only an
/// `open*` can have a path waiting, and only a traced thread's open left one in `PENDING_OPEN`
/// (which `sys_enter` fills for registered cgroups only), so nothing else is looked up.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn seccomp_refine_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let Some(id) = read_kernel::<u64>(regs, offset(offsets::REGS_ORIG_AX)) else { return 0 };
    if !matches!(id, NR_OPEN | NR_OPENAT | NR_OPENAT2) {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(path) = (unsafe { PENDING_OPEN.get(&tid) }).copied() else { return 0 };
    let _ = PENDING_OPEN.remove(&tid);
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return 0;
    }
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch slot; the user pointer is only read through the helper.
    let copied = unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut (*scratch).bytes) };
    match copied {
        Ok(bytes) if bytes.len() < PATH_LEN - 1 => {}
        _ => {
            // SAFETY: the helper has no preconditions.
            count_stat(unsafe { bpf_get_current_cgroup_id() }, stat::PATH_CUT);
            return 0;
        }
    }
    // SAFETY: as above; the map copies the value.
    let _ = FD_PATHS.insert(&FdKey { tgid: tgid(), fd: ret as u32 }, unsafe { &*scratch }, 0);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn seccomp_refine_exec(ctx: RawTracePointContext) -> i32 {
    // The runtime has exec'd the command it was asked for: from here on it is the application
    // (an execve has killed the process's other threads, which shared the mark).
    forget_runtime_process(tgid());
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let Some(state) = CGROUPS.get_ptr_mut(cgroup) else { return 0 };
    // SAFETY: the cgroup's entry (see `seccomp_refine_sys_enter`).
    let mut current = unsafe { (*state).phase };
    if current == phase::RUNTIME {
        // runc has exec'd the entrypoint: from here on it is the application.
        set_phase(cgroup, state, phase::INIT, cause::EXEC);
        current = phase::INIT;
    }
    if current == phase::INIT && marker::per_process(marker_kind()) {
        current = process_phase();
    }
    let bprm: u64 = ctx.arg(2);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_stat(cgroup, stat::LOST_EVENTS);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned ring-buffer slot of the right size; kernel pointers
    // are only read through bpf_probe_read_kernel*.
    unsafe {
        fill_header(&raw mut (*record).header, event::EXEC, current, cgroup);
        copy_kernel_str(cgroup, read_kernel::<u64>(bprm, offset(offsets::BPRM_FILENAME)), &mut (*record).filename);
        copy_kernel_str(cgroup, read_kernel::<u64>(bprm, offset(offsets::BPRM_INTERP)), &mut (*record).interp);
    }
    entry.submit(0);
    0
}

#[inline(always)]
fn copy_kernel_str(cgroup: u64, source: Option<u64>, dest: &mut [u8; PATH_LEN]) {
    dest[0] = 0;
    let Some(source) = source else { return };
    // SAFETY: the helper checks the address and stops at `dest`'s length.
    match unsafe { bpf_probe_read_kernel_str_bytes(source as *const u8, dest) } {
        Ok(bytes) if bytes.len() < PATH_LEN - 1 => {}
        _ => count_stat(cgroup, stat::PATH_CUT),
    }
}

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn seccomp_refine_cgroup_mkdir(ctx: RawTracePointContext) -> i32 {
    let cgrp: u64 = ctx.arg(0);
    let path: u64 = ctx.arg(1);
    if !is_v2(cgrp) {
        return 0;
    }
    let Some(name) = PATH_SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch slot; the helper checks the address and stops at the slice's end.
    let name = unsafe { &mut (&mut (*name).bytes)[..CGROUP_PATH_LEN] };
    // SAFETY: as above.
    if unsafe { bpf_probe_read_kernel_str_bytes(path as *const u8, name) }.is_err() || !is_configured(name) {
        return 0;
    }
    let Some(id) = cgroup_id(cgrp) else { return 0 };
    let _ = CGROUPS.insert(&id, &CgroupState { phase: phase::RUNTIME_SETUP, flags: 0 }, 0);
    let Some(mut entry) = EVENTS.reserve::<CgroupEvent>(0) else {
        count_stat(id, stat::LOST_EVENTS);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned ring-buffer slot of the right size.
    unsafe {
        fill_header(&raw mut (*record).header, event::CGROUP, phase::RUNTIME_SETUP, id);
        (*record).path.copy_from_slice(name);
    }
    entry.submit(0);
    0
}

/// In hybrid mode every v1 hierarchy reports its cgroups too; only v2 (hierarchy 0) has the ids
/// `bpf_get_current_cgroup_id` returns.
#[inline(always)]
fn is_v2(cgrp: u64) -> bool {
    let Some(root) = read_kernel::<u64>(cgrp, offset(offsets::CGROUP_ROOT)) else { return false };
    read_kernel::<i32>(root, offset(offsets::ROOT_HIERARCHY_ID)) == Some(0)
}

/// The id of a `struct cgroup` (its kernfs node's), as `bpf_get_current_cgroup_id` returns it.
#[inline(always)]
fn cgroup_id(cgrp: u64) -> Option<u64> {
    let kn = read_kernel::<u64>(cgrp, offset(offsets::CGROUP_KN))?;
    read_kernel::<u64>(kn, offset(offsets::KERNFS_ID))
}

/// A process another one puts into a traced cgroup once its container runs — `runc init` of a
/// `docker exec`, which sets itself up inside the cgroup (Go runtime, session keyring, filter)
/// before it execs the command — counts as the runtime until its exec, like runc at the
/// container's start. Its threads share the mark (it is per process); left alone are a process
/// that moves itself (`trace --exec`'s child, just before its exec) and runc's own init while the
/// container starts, whose phases the cgroup follows. The tracepoint fires once the move is
/// done, so a Go runtime thread's syscall in those few microseconds may still count in the
/// cgroup's phase: a wider profile, never a narrower one.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn seccomp_refine_cgroup_attach(ctx: RawTracePointContext) -> i32 {
    let cgrp: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(2);
    if !is_v2(cgrp) {
        return 0;
    }
    let Some(id) = cgroup_id(cgrp) else { return 0 };
    let Some(state) = CGROUPS.get_ptr(id) else { return 0 };
    // SAFETY: the cgroup's entry (see `seccomp_refine_sys_enter`).
    if unsafe { (*state).phase } < phase::INIT {
        return 0;
    }
    let Some(process) = read_kernel::<i32>(task, offset(offsets::TASK_TGID)) else { return 0 };
    if process as u32 != tgid() {
        add_runtime_process(process as u32, phase::RUNTIME_SETUP);
    }
    0
}

/// The runtime phase of `process` if it is in `RUNTIME_PROCESSES`; while the map is empty, one
/// array read.
#[inline(always)]
fn runtime_process(process: u32) -> Option<*mut u32> {
    if RUNTIME_PROCESS_COUNT.get(0).copied().unwrap_or(0) == 0 {
        return None;
    }
    RUNTIME_PROCESSES.get_ptr_mut(&process)
}

#[inline(always)]
fn count_runtime_processes(delta: u64) {
    if let Some(count) = RUNTIME_PROCESS_COUNT.get_ptr_mut(0) {
        // SAFETY: the map's one slot, aligned and valid during the program; atomic, since every
        // CPU updates it.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, delta) };
    }
}

#[inline(always)]
fn add_runtime_process(process: u32, process_phase: u32) {
    count_runtime_processes(1);
    if RUNTIME_PROCESSES.insert(&process, &process_phase, BPF_NOEXIST as u64).is_err() {
        count_runtime_processes(u64::MAX);
    }
}

#[inline(always)]
fn forget_runtime_process(process: u32) {
    if runtime_process(process).is_some() && RUNTIME_PROCESSES.remove(&process).is_ok() {
        count_runtime_processes(u64::MAX);
    }
}

/// Whether `name` (NUL-terminated) is the configured `CGROUP_PATH`; never when none is configured.
#[inline(always)]
fn is_configured(name: &[u8]) -> bool {
    let mut i = 0;
    while i < CGROUP_PATH_LEN && i < name.len() {
        // SAFETY: a plain read of a read-only global (volatile: see `offset`).
        let wanted = unsafe { core::ptr::read_volatile(&CGROUP_PATH[i]) };
        if name[i] != wanted {
            return false;
        }
        if wanted == 0 {
            return i > 0;
        }
        i += 1;
    }
    false
}

/// The `symbol:` marker: moves the calling process (all its threads) to serving, once.
#[uprobe]
pub fn seccomp_refine_marker(_ctx: ProbeContext) -> u32 {
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let Some(state) = CGROUPS.get_ptr(cgroup) else { return 0 };
    // SAFETY: the cgroup's entry (see `seccomp_refine_sys_enter`).
    if unsafe { (*state).phase } != phase::INIT {
        return 0;
    }
    let process = tgid();
    // The function runs on every loop iteration; only the first call moves the process.
    if SERVING_PROCESSES.get_ptr(&process).is_none() {
        serve_process(cgroup, process, cause::UPROBE);
    }
    0
}

/// Records `process` of `cgroup` as serving and tells userspace, unless it already is.
#[inline(always)]
fn serve_process(cgroup: u64, process: u32, why: u32) {
    match SERVING_PROCESSES.insert(&process, &cgroup, BPF_NOEXIST as u64) {
        Ok(()) => phase_event(cgroup, phase::SERVING, why, process),
        // Two of its threads raced to the marker: the other one recorded it.
        Err(EEXIST) => {}
        Err(_) => count_stat(cgroup, stat::PROCESS_FULL),
    }
}

/// `SIGSTOP`, which no process can catch or ignore.
const SIGSTOP: u32 = 19;

/// The enforcer's marker: the first call of the serving entry by a process of a target cgroup
/// stops the calling thread right there, at the function's entry (the signal is taken on the
/// return to user space, so no syscall is interrupted), and tells userspace, which installs the
/// serving filter and resumes it. Processes of other cgroups running the same binary (uprobes
/// fire per inode, in every container of the image) are never touched.
#[uprobe]
pub fn seccomp_refine_enforce(_ctx: ProbeContext) -> u32 {
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if CGROUPS.get_ptr(cgroup).is_none() {
        return 0;
    }
    let process = tgid();
    // The function runs on every loop iteration; a process is stopped once, and what it forks
    // afterwards inherits its filter (the fork program records that).
    if SERVING_PROCESSES.get_ptr(&process).is_some() {
        return 0;
    }
    match SERVING_PROCESSES.insert(&process, &cgroup, BPF_NOEXIST as u64) {
        Ok(()) => {
            // SAFETY: the helper has no preconditions; the thread is the current one.
            unsafe { bpf_send_signal_thread(SIGSTOP) };
            phase_event(cgroup, phase::SERVING, cause::STOPPED, process);
        }
        Err(EEXIST) => {}
        Err(_) => count_stat(cgroup, stat::PROCESS_FULL),
    }
    0
}

/// A new process inherits its parent's per-process phases: serving, as a seccomp filter is
/// inherited, and the runtime's until its own exec.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn seccomp_refine_fork(ctx: RawTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    let Some(child_tgid) = read_kernel::<i32>(child, offset(offsets::TASK_TGID)) else { return 0 };
    if read_kernel::<i32>(child, offset(offsets::TASK_PID)) != Some(child_tgid) {
        // A new thread: its process's phase already covers it.
        return 0;
    }
    let child_tgid = child_tgid as u32;
    // A reused pid whose exit was missed must not keep a dead process's mark.
    forget_runtime_process(child_tgid);
    if let Some(parent_phase) = runtime_process(tgid()) {
        // SAFETY: a map value, valid during the program.
        add_runtime_process(child_tgid, unsafe { *parent_phase });
    }
    match SERVING_PROCESSES.get_ptr(&tgid()) {
        // SAFETY: a map value, valid during the program.
        Some(cgroup) => serve_process(unsafe { *cgroup }, child_tgid, cause::FORK),
        None => {
            // A reused pid of a process that served or had a probe, whose exit was missed, must
            // neither serve nor count as probed: the enforcer holds it at its first page fault.
            let _ = SERVING_PROCESSES.remove(&child_tgid);
            let _ = PROBED.remove(&child_tgid);
        }
    }
    0
}

/// Forgets a serving, runtime or probed process when its last thread exits (`signal->live` has just
/// reached zero).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn seccomp_refine_exit(_ctx: RawTracePointContext) -> i32 {
    let process = tgid();
    if SERVING_PROCESSES.get_ptr(&process).is_none()
        && runtime_process(process).is_none()
        && PROBED.get_ptr(&process).is_none()
    {
        return 0;
    }
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    let Some(signal) = read_kernel::<u64>(task, offset(offsets::TASK_SIGNAL)) else { return 0 };
    if read_kernel::<i32>(signal, offset(offsets::SIGNAL_LIVE)) == Some(0) {
        let _ = SERVING_PROCESSES.remove(&process);
        forget_runtime_process(process);
        let _ = PROBED.remove(&process);
    }
    0
}

/// The enforcer's hold, on `page_fault_user` and `page_fault_kernel`: the first page fault of a
/// process of a target cgroup that is neither switched nor probed stops it (`SIGSTOP`, taken on
/// its return to user space) and tells userspace, which attaches the marker uprobe for that
/// process alone and lets it run on. A marker uprobe attached for one process does not follow
/// fork (the child's first hit only removes the inherited breakpoint), and a child forked by a
/// process that has not switched may still reach the serving entry: holding it first makes that
/// impossible. Every new process faults before it runs any code of its own: fork leaves all its
/// writable pages copy-on-write (the kernel's `set_child_tid` write already faults, and so does
/// any call's push), and after an exec nothing of the new image is mapped in yet. Faults are
/// rare next to syscalls, so this costs the host one hash lookup per fault.
#[raw_tracepoint]
pub fn seccomp_refine_hold(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if CGROUPS.get_ptr(cgroup).is_none() {
        return 0;
    }
    let process = tgid();
    if SERVING_PROCESSES.get_ptr(&process).is_some() {
        return 0;
    }
    match PROBED.insert(&process, &cgroup, BPF_NOEXIST as u64) {
        Ok(()) => {
            // SAFETY: the helper has no preconditions; the thread is the current one.
            unsafe { bpf_send_signal_thread(SIGSTOP) };
            phase_event(cgroup, phase::INIT, cause::HELD, process);
        }
        // Probed already, or held by another of its faults.
        Err(EEXIST) => {}
        Err(_) => count_stat(cgroup, stat::PROCESS_FULL),
    }
    0
}

/// The enforcer's exec, in the process that exec'd (of a target cgroup, not switched). Exec'd by
/// another thread than its leader, it is probed again: its probe is bound to the leader's task,
/// which such an exec replaces (the exec'ing thread takes over its pid), and the new image's first
/// fault holds it (`seccomp_refine_hold`). Exec'd by its leader, it keeps its probe, which follows
/// the task into the new image, and is held here (`SIGSTOP`) only for userspace to read the
/// filters it will serve under (the runtime installed them before this exec) and decide the
/// switch's preflight while it starts up.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn seccomp_refine_reprobe(ctx: RawTracePointContext) -> i32 {
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if CGROUPS.get_ptr(cgroup).is_none() {
        return 0;
    }
    let process = tgid();
    if SERVING_PROCESSES.get_ptr(&process).is_some() {
        return 0;
    }
    // `old_pid`: the exec'ing thread's id before it took over the leader's.
    let old_pid: u64 = ctx.arg(1);
    if old_pid as u32 != process {
        let _ = PROBED.remove(&process);
    } else if PROBED.get_ptr(&process).is_some() {
        // SAFETY: the helper has no preconditions; the thread is the current one.
        unsafe { bpf_send_signal_thread(SIGSTOP) };
        phase_event(cgroup, phase::INIT, cause::EXECED, process);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
