//! Watching one cgroup's syscalls from the host: perf tracepoint events on `raw_syscalls:sys_enter`,
//! `raw_syscalls:sys_exit` and `sched:sched_process_exec`, scoped by the kernel to a cgroup (and its
//! descendants), read from one ring buffer per CPU.
//!
//! Why perf and not the kernel's seccomp audit records: an errno action is logged only when the
//! filter was installed with `SECCOMP_FILTER_FLAG_LOG`, and Docker 20.10 drops a profile's `flags`
//! (measured on this project's machines: the OCI config it hands runc has none, and nothing reaches
//! the kernel log however `actions_logged` is set). The syscall tracepoints see every denial
//! instead: seccomp runs before `sys_enter` fires, so a denied call produces a `sys_exit` with no
//! `sys_enter` before it (see `denials`).
//!
//! Only the syscall numbers the caller asks for are recorded (an in-kernel tracepoint filter), so a
//! busy server costs little: a denial can only hit numbers the profile does not allow outright.
//! Every record carries the task's host pid and tid and a `CLOCK_MONOTONIC` time. `task` and `comm`
//! records (forks, name changes) come along so that `denials` can tell which program a pid runs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// One thing the kernel reported about a task of the watched cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `CLOCK_MONOTONIC`, nanoseconds (`now_ns` reads the same clock).
    pub time: u64,
    pub pid: u32,
    pub tid: u32,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Enter {
        nr: i64,
    },
    Exit {
        nr: i64,
        ret: i64,
    },
    /// The task exec'd `filename`.
    Exec {
        filename: String,
    },
    /// The task was created by `parent_pid` (a new thread when `pid == parent_pid`).
    Fork {
        parent_pid: u32,
    },
    /// The task's name changed (exec, `prctl(PR_SET_NAME)`).
    Comm {
        comm: String,
    },
    /// The ring buffer was full and `count` records were dropped before this point.
    Lost {
        count: u64,
    },
}

/// Reads `CLOCK_MONOTONIC`, the clock every `Record::time` is on.
pub fn now_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the kernel to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A running watch: per-CPU events and rings, drained by a background thread until `stop`.
pub struct Watch {
    stop: Arc<AtomicBool>,
    /// Taken by `stop`; still here when the watch is dropped on an error path.
    drainer: Option<JoinHandle<Vec<Record>>>,
}

impl Watch {
    /// Starts watching the tasks of the cgroup directory `cgroup` (cgroup v2, or a v1 `perf_event`
    /// hierarchy) for the syscall numbers in `watched`.
    pub fn start(cgroup: &Path, watched: &[u32]) -> io::Result<Watch> {
        let ids = Tracepoints::read()?;
        let cgroup_dir = std::fs::File::open(cgroup)
            .map_err(|err| io::Error::new(err.kind(), format!("cannot open cgroup {}: {err}", cgroup.display())))?;
        let filter = id_filter(watched);
        let mut rings = Vec::new();
        for cpu in online_cpus()? {
            rings.push(CpuRing::open(cgroup_dir.as_raw_fd(), cpu, &ids, &filter)?);
        }
        for ring in &rings {
            ring.enable()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let drainer =
            std::thread::Builder::new().name("verify-perf".into()).spawn(move || drain_until(rings, ids, &flag))?;
        Ok(Watch { stop, drainer: Some(drainer) })
    }

    /// Stops watching and returns everything recorded, sorted by time.
    pub fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::Release);
        let drainer = self.drainer.take().expect("stop runs once");
        let mut records = drainer.join().expect("the perf drain thread never panics");
        records.sort_by_key(|record| record.time);
        records
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
    }
}

fn drain_until(mut rings: Vec<CpuRing>, ids: Tracepoints, stop: &AtomicBool) -> Vec<Record> {
    let mut records = Vec::new();
    loop {
        let last_round = stop.load(Ordering::Acquire);
        for ring in &mut rings {
            ring.drain(&ids, &mut records);
        }
        if last_round {
            return records;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The tracepoint ids, from tracefs.
#[derive(Clone, Copy)]
struct Tracepoints {
    sys_enter: u64,
    sys_exit: u64,
    exec: u64,
}

impl Tracepoints {
    fn read() -> io::Result<Tracepoints> {
        Ok(Tracepoints {
            sys_enter: tracepoint_id("raw_syscalls/sys_enter")?,
            sys_exit: tracepoint_id("raw_syscalls/sys_exit")?,
            exec: tracepoint_id("sched/sched_process_exec")?,
        })
    }
}

fn tracepoint_id(event: &str) -> io::Result<u64> {
    let roots = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    for root in roots {
        if let Ok(text) = std::fs::read_to_string(format!("{root}/events/{event}/id")) {
            return text
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("{root}/events/{event}/id: not a number")));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no tracepoint {event}: tracefs is not mounted; mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
        ),
    ))
}

/// The ftrace filter selecting `watched` syscall numbers (plus every number above the highest one
/// the table knows, which no profile can name). Runs of numbers become ranges. The kernel takes at
/// most a page; the worst case, every other x86_64 number, is about 3 KiB (a test checks).
fn id_filter(watched: &[u32]) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let mut sorted = watched.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for nr in sorted {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == nr => *end = nr,
            _ => ranges.push((nr, nr)),
        }
    }
    let beyond_table = crate::syscalls::Arch::X86_64.syscalls().map(|(nr, _)| nr + 1).max().unwrap_or(0);
    let above = ranges.last().map_or(0, |&(_, end)| end + 1).max(beyond_table);
    let mut terms: Vec<String> = ranges
        .iter()
        .map(|&(start, end)| match start == end {
            true => format!("id == {start}"),
            false => format!("(id >= {start} && id <= {end})"),
        })
        .collect();
    terms.push(format!("id >= {above}"));
    terms.join(" || ")
}

fn online_cpus() -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let parse = |text: &str| text.parse::<i32>().map_err(|_| io::Error::other(format!("bad cpu list `{text}`")));
        cpus.extend(parse(first)?..=parse(last)?);
    }
    Ok(cpus)
}

// linux/perf_event.h, the parts used here.
const PERF_TYPE_TRACEPOINT: u32 = 2;
const SAMPLE_TID: u64 = 1 << 1;
const SAMPLE_TIME: u64 = 1 << 2;
const SAMPLE_RAW: u64 = 1 << 10;
const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_TASK: u64 = 1 << 13;
const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
const ATTR_USE_CLOCKID: u64 = 1 << 25;
const FLAG_PID_CGROUP: libc::c_ulong = 1 << 2;
const FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const IOC_ENABLE: libc::c_ulong = 0x2400;
const IOC_SET_OUTPUT: libc::c_ulong = 0x2405;
const IOC_SET_FILTER: libc::c_ulong = 0x4008_2406;
const RECORD_LOST: u32 = 2;
const RECORD_COMM: u32 = 3;
const RECORD_FORK: u32 = 7;
const RECORD_SAMPLE: u32 = 9;
const RECORD_LOST_SAMPLES: u32 = 13;
/// Data pages per CPU (256 KiB): within the default `perf_event_mlock_kb` of 516 KiB per CPU.
const DATA_PAGES: usize = 64;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes); the bitfield is `flags`.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 112);

fn open_event(cgroup_fd: i32, cpu: i32, tracepoint: u64, extra_flags: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: tracepoint,
        sample_period: 1,
        sample_type: SAMPLE_TID | SAMPLE_TIME | SAMPLE_RAW,
        flags: ATTR_DISABLED | ATTR_SAMPLE_ID_ALL | ATTR_USE_CLOCKID | extra_flags,
        clockid: libc::CLOCK_MONOTONIC,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a fully initialised perf_event_attr whose `size` matches its layout; the
    // kernel only reads it during the call. The other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            cgroup_fd,
            cpu,
            -1,
            FLAG_PID_CGROUP | FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => io::Error::new(
                err.kind(),
                format!("perf_event_open refused ({err}); watching a cgroup's syscalls needs root (CAP_PERFMON)"),
            ),
            _ => io::Error::new(err.kind(), format!("perf_event_open on cpu {cpu}: {err}")),
        });
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, argument: libc::c_ulong) -> io::Result<()> {
    // SAFETY: `fd` is an open perf event; every request used here takes an integer or a pointer to
    // a NUL-terminated string that outlives the call.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request, argument) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The events of one CPU, all writing into the ring of the first.
struct CpuRing {
    events: Vec<OwnedFd>,
    ring: Mapping,
    /// Bytes of the data area consumed so far (the kernel's `data_tail`).
    tail: u64,
    /// Time of the last record read, where a later loss is placed.
    last_time: u64,
}

impl CpuRing {
    fn open(cgroup_fd: i32, cpu: i32, ids: &Tracepoints, filter: &str) -> io::Result<CpuRing> {
        let enter = open_event(cgroup_fd, cpu, ids.sys_enter, ATTR_COMM | ATTR_TASK)?;
        let exit = open_event(cgroup_fd, cpu, ids.sys_exit, 0)?;
        let exec = open_event(cgroup_fd, cpu, ids.exec, 0)?;
        let filter = std::ffi::CString::new(filter).expect("a filter has no NUL");
        for event in [&enter, &exit] {
            ioctl(event, IOC_SET_FILTER, filter.as_ptr() as libc::c_ulong)
                .map_err(|err| io::Error::new(err.kind(), format!("tracepoint filter refused: {err}")))?;
        }
        let ring = Mapping::new(&enter)?;
        for event in [&exit, &exec] {
            ioctl(event, IOC_SET_OUTPUT, enter.as_raw_fd() as libc::c_ulong)?;
        }
        Ok(CpuRing { events: vec![enter, exit, exec], ring, tail: 0, last_time: 0 })
    }

    fn enable(&self) -> io::Result<()> {
        self.events.iter().try_for_each(|event| ioctl(event, IOC_ENABLE, 0))
    }

    fn drain(&mut self, ids: &Tracepoints, out: &mut Vec<Record>) {
        let head = self.ring.data_head();
        let mut record = Vec::new();
        while self.tail + 8 <= head {
            let header = self.ring.copy(self.tail, 8);
            let kind = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
            let size = u16::from_ne_bytes(header[6..8].try_into().expect("2 bytes")) as u64;
            if size < 8 || self.tail + size > head {
                break;
            }
            record.clear();
            record.extend_from_slice(&self.ring.copy(self.tail + 8, size as usize - 8));
            self.tail += size;
            if let Some(parsed) = parse(kind, &record, ids, self.last_time) {
                self.last_time = parsed.time;
                out.push(parsed);
            }
        }
        self.ring.set_data_tail(self.tail);
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?))
}

/// Parses one record body (after the 8-byte header). Non-sample records end with the sample id
/// (`pid`, `tid`, `time`: 16 bytes) because `sample_id_all` is set.
fn parse(kind: u32, body: &[u8], ids: &Tracepoints, last_time: u64) -> Option<Record> {
    let trailer = body.len().checked_sub(16);
    let trailer_time = || trailer.and_then(|at| u64_at(body, at + 8));
    match kind {
        RECORD_SAMPLE => parse_sample(body, ids),
        RECORD_COMM => {
            let comm_bytes = body.get(8..trailer?)?;
            let comm = comm_bytes.split(|&byte| byte == 0).next()?;
            Some(Record {
                time: trailer_time()?,
                pid: u32_at(body, 0)?,
                tid: u32_at(body, 4)?,
                kind: Kind::Comm { comm: String::from_utf8_lossy(comm).into_owned() },
            })
        }
        RECORD_FORK => Some(Record {
            time: trailer_time()?,
            pid: u32_at(body, 0)?,
            tid: u32_at(body, 8)?,
            kind: Kind::Fork { parent_pid: u32_at(body, 4)? },
        }),
        // Lost records stand where the ring had room again; the records they replace came after
        // the last one read, so the loss is dated there.
        RECORD_LOST => Some(Record { time: last_time, pid: 0, tid: 0, kind: Kind::Lost { count: u64_at(body, 8)? } }),
        RECORD_LOST_SAMPLES => {
            Some(Record { time: last_time, pid: 0, tid: 0, kind: Kind::Lost { count: u64_at(body, 0)? } })
        }
        _ => None,
    }
}

fn parse_sample(body: &[u8], ids: &Tracepoints) -> Option<Record> {
    let pid = u32_at(body, 0)?;
    let tid = u32_at(body, 4)?;
    let time = u64_at(body, 8)?;
    let raw_size = u32_at(body, 16)? as usize;
    let raw = body.get(20..20 + raw_size)?;
    let tracepoint = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?) as u64;
    let kind = if tracepoint == ids.sys_enter {
        Kind::Enter { nr: u64_at(raw, 8)? as i64 }
    } else if tracepoint == ids.sys_exit {
        Kind::Exit { nr: u64_at(raw, 8)? as i64, ret: u64_at(raw, 16)? as i64 }
    } else if tracepoint == ids.exec {
        // `__data_loc char[] filename`: offset in the low 16 bits, length in the high 16.
        let location = u32_at(raw, 8)?;
        let (offset, length) = ((location & 0xffff) as usize, (location >> 16) as usize);
        let bytes = raw.get(offset..offset + length)?;
        let name = bytes.split(|&byte| byte == 0).next()?;
        Kind::Exec { filename: String::from_utf8_lossy(name).into_owned() }
    } else {
        return None;
    };
    Some(Record { time, pid, tid, kind })
}

/// The shared mapping of a perf ring: one metadata page, then `DATA_PAGES` of data.
struct Mapping {
    base: *mut u8,
    len: usize,
    data_offset: u64,
    data_size: u64,
}

// SAFETY: the mapping is owned by exactly one `CpuRing`, which moves to the drain thread as a whole;
// nothing else holds the pointer.
unsafe impl Send for Mapping {}

// `struct perf_event_mmap_page` offsets.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

impl Mapping {
    fn new(event: &OwnedFd) -> io::Result<Mapping> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = page * (1 + DATA_PAGES);
        // SAFETY: a fresh shared mapping of a perf event fd, length as perf requires (1 + 2^n pages);
        // the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                event.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("cannot map a perf ring buffer: {err}")));
        }
        let mut mapping = Mapping { base: base.cast(), len, data_offset: 0, data_size: 0 };
        mapping.data_offset = mapping.word(DATA_OFFSET).load(Ordering::Relaxed);
        mapping.data_size = mapping.word(DATA_SIZE).load(Ordering::Relaxed);
        if mapping.data_offset == 0 {
            // Kernels before 4.1 leave these zero: data starts after the metadata page.
            (mapping.data_offset, mapping.data_size) = (page as u64, (page * DATA_PAGES) as u64);
        }
        Ok(mapping)
    }

    /// A 64-bit field of the metadata page, shared with the kernel.
    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is one of the 8-byte-aligned fields of the metadata page, which stays
        // mapped as long as `self`; the kernel updates them concurrently, hence atomics.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    fn data_head(&self) -> u64 {
        self.word(DATA_HEAD).load(Ordering::Acquire)
    }

    fn set_data_tail(&self, tail: u64) {
        self.word(DATA_TAIL).store(tail, Ordering::Release);
    }

    /// `len` bytes of the data area starting at the ring position `at`, unwrapped.
    fn copy(&self, at: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for index in 0..len as u64 {
            let position = (at + index) % self.data_size;
            // SAFETY: `position < data_size`, so the byte lies inside the mapped data area; the
            // kernel does not write between `data_tail` and `data_head`.
            out.push(unsafe { self.base.add((self.data_offset + position) as usize).read_volatile() });
        }
        out
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Arch;

    #[test]
    fn filters_are_ranges_and_always_cover_unknown_numbers() {
        assert_eq!(id_filter(&[3, 1, 2, 7]), "(id >= 1 && id <= 3) || id == 7 || id >= 472");
        assert_eq!(id_filter(&[]), "id >= 472");
    }

    #[test]
    fn the_longest_filter_fits_a_page() {
        let every_other: Vec<u32> = Arch::X86_64.syscalls().map(|(nr, _)| nr).step_by(2).collect();
        assert!(id_filter(&every_other).len() < 4096);
    }
}
