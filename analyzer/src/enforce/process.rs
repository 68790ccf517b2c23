//! What the injector needs to know about a target process from /proc and the kernel: its seccomp
//! state and whether it ignores SIGTRAP, its identity against pid reuse, the CPU it last ran on,
//! its threads under their namespaced ids, and where its vDSO holds a `syscall` instruction.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};

/// What the injector reads of a thread in `/proc/PID/task/TID/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadStatus {
    pub no_new_privs: bool,
    /// Filters attached to the thread (`Seccomp_filters`).
    pub filters: u32,
    /// Whether its process ignores SIGTRAP (`SigIgn`).
    pub ignores_sigtrap: bool,
}

/// The status of thread `tid` of process `pid`.
pub fn thread_status(pid: u32, tid: u32) -> Result<ThreadStatus> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| text.lines().find_map(|line| Some(line.strip_prefix(name)?.strip_prefix(':')?.trim()));
    let number = |name: &str| -> Option<u32> { field(name)?.parse().ok() };
    let ignored = field("SigIgn").and_then(|mask| u64::from_str_radix(mask, 16).ok());
    match (number("NoNewPrivs"), number("Seccomp_filters"), ignored) {
        (Some(nnp), Some(filters), Some(ignored)) => Ok(ThreadStatus {
            no_new_privs: nnp == 1,
            filters,
            ignores_sigtrap: ignored & 1 << (libc::SIGTRAP - 1) != 0,
        }),
        _ => bail!("{path} has no NoNewPrivs/Seccomp_filters/SigIgn (kernel older than 5.9?)"),
    }
}

/// A process pinned by a pidfd, so signals reach it and never a later process with its pid, with
/// what its `/proc/PID/stat` said when it was pinned or `refresh`ed. Its stat stays open: a read
/// through it reaches this process or fails once it has exited, never a later one with its pid,
/// and takes no path lookup while a process is held.
pub struct Pinned {
    pidfd: OwnedFd,
    stat: File,
    pub image: Image,
    /// Whether it ignores SIGTRAP (`sigignore`, as `SigIgn` in its status).
    pub ignores_sigtrap: bool,
    /// The CPU it last ran on.
    pub cpu: usize,
}

/// One process running one executable image: a reused pid starts later, and an exec maps a new
/// stack and code (where ASLR is off, the code of another binary elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// When the process started, in CLOCK_BOOTTIME nanoseconds (rounded down to the clock tick).
    started_ns: u64,
    start_code: u64,
    end_code: u64,
    start_stack: u64,
}

impl Pinned {
    /// Pins process `pid` if it is the one that hit the marker at `hit_ns` (CLOCK_MONOTONIC):
    /// a process started after that is a reuse of its pid.
    pub fn open(pid: u32, hit_ns: u64) -> Result<Pinned> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            bail!("process {pid} is gone");
        }
        // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let gone = || format!("process {pid} is gone");
        let stat = File::open(format!("/proc/{pid}/stat")).with_context(gone)?;
        let (image, ignores_sigtrap, cpu) = read_stat(&stat).with_context(gone)?;
        // /proc counts from boot including suspends (CLOCK_BOOTTIME); the marker's clock does not.
        let suspended_ns = clock_ns(libc::CLOCK_BOOTTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC));
        if image.started_ns > hit_ns.saturating_add(suspended_ns) {
            bail!("pid {pid} was reused after the marker fired");
        }
        Ok(Pinned { pidfd, stat, image, ignores_sigtrap, cpu })
    }

    /// Reads its stat again: its image and SIGTRAP disposition now. Fails when it has exited.
    pub fn refresh(&mut self) -> Result<()> {
        (self.image, self.ignores_sigtrap, self.cpu) = read_stat(&self.stat).context("the process is gone")?;
        Ok(())
    }

    /// The same pin on descriptors of its own.
    pub fn try_clone(&self) -> Result<Pinned> {
        let (pidfd, stat) = (self.pidfd.try_clone()?, self.stat.try_clone()?);
        Ok(Pinned { pidfd, stat, image: self.image, ignores_sigtrap: self.ignores_sigtrap, cpu: self.cpu })
    }

    /// Sends `signal` to the pinned process (a no-op error when it has exited).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal reads nothing but its scalar arguments (no siginfo).
        let sent = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0)
        };
        if sent < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { libc::clock_gettime(clock, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A process's image and whether it ignores SIGTRAP, from one read of its open stat (a few hundred
/// bytes, where its status is over a thousand).
fn read_stat(file: &File) -> Option<(Image, bool, usize)> {
    // More than the longest line: a 64-byte name and 52 fields of at most 21 characters each.
    let mut buffer = [0u8; 1536];
    // From offset 0, the kernel makes the text anew.
    let len = file.read_at(&mut buffer, 0).ok()?;
    let stat = std::str::from_utf8(&buffer[..len]).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')' (field 3
    // is the first after it; numbers as in proc(5)).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let image = Image {
        started_ns: field(22)? * (1_000_000_000 / per_second),
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
    };
    Some((image, field(33)? & 1 << (libc::SIGTRAP - 1) != 0, field(39)? as usize))
}

/// The threads of process `pid`.
pub fn threads(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// The host id of the thread of `pid` whose id in its own pid namespace is `ns_tid` (what
/// `seccomp` returns when TSYNC fails).
pub fn host_tid(pid: u32, ns_tid: u32) -> Option<u32> {
    threads(pid).into_iter().find(|tid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let innermost = status.lines().find_map(|line| line.strip_prefix("NSpid:")?.split_whitespace().last());
        innermost.and_then(|id| id.parse().ok()) == Some(ns_tid)
    })
}

/// Where this kernel's vDSO holds a `syscall` instruction. Every process of this kernel maps the
/// same vDSO image, so the offset found once in the enforcer's own vDSO holds everywhere.
#[derive(Clone, Copy, Debug)]
pub struct Gadget {
    offset: u64,
}

/// `AT_SYSINFO_EHDR`: the auxiliary vector's entry for the vDSO's address.
const AT_SYSINFO_EHDR: u64 = 33;

impl Gadget {
    /// Scans the enforcer's own vDSO (once, at the start: not while a process is held).
    pub fn find() -> Result<Gadget> {
        let (start, end) = vdso_range(std::process::id()).context("the enforcer has no vDSO")?;
        // SAFETY: the vDSO is mapped readable in this process for its whole life, from start to end.
        let image = unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
        let at = image.windows(2).position(|pair| pair == [0x0f, 0x05]);
        let offset = at.context("this kernel's vDSO has no `syscall` instruction")?;
        Ok(Gadget { offset: offset as u64 })
    }

    /// The instruction's address in process `pid`.
    pub fn address_in(self, pid: u32) -> Result<u64> {
        let base = vdso_base(pid).with_context(|| format!("process {pid} has no vDSO"))?;
        Ok(base + self.offset)
    }
}

/// From the process's auxiliary vector: a few hundred bytes, where its maps can be thousands of lines.
fn vdso_base(pid: u32) -> Option<u64> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let word = |chunk: &[u8]| u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
    auxv.chunks_exact(16).find(|entry| word(&entry[..8]) == AT_SYSINFO_EHDR).map(|entry| word(&entry[8..]))
}

/// This process's vDSO, from its maps.
fn vdso_range(pid: u32) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let line = maps.lines().find(|line| line.ends_with("[vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_a_target() {
        let me = std::process::id();
        let status = thread_status(me, me).unwrap();
        assert!(!status.ignores_sigtrap);
        assert!(threads(me).contains(&me));
        // Outside a container the innermost pid namespace is the host's.
        assert_eq!(host_tid(me, me), Some(me));
        let gadget = Gadget::find().unwrap().address_in(me).unwrap();
        assert_eq!(vdso_base(me), vdso_range(me).map(|(start, _)| start), "auxv and maps agree");
        // SAFETY: the gadget lies inside this process's own vDSO, mapped readable.
        assert_eq!(unsafe { std::slice::from_raw_parts(gadget as *const u8, 2) }, [0x0f, 0x05]);
    }

    #[test]
    fn a_pinned_process_has_one_image_and_its_sigtrap_disposition() {
        let me = std::process::id();
        let pinned = Pinned::open(me, u64::MAX).unwrap();
        assert_eq!(pinned.image, Pinned::open(me, u64::MAX).unwrap().image);
        // SAFETY: all-zero is an empty cpu_set_t, which sched_getaffinity fills for this thread.
        let allowed = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set);
            libc::CPU_ISSET(pinned.cpu, &set)
        };
        assert!(allowed, "cpu {} is one this process may run on", pinned.cpu);
        assert!(!pinned.ignores_sigtrap);
        assert_ne!(pinned.image.start_stack, 0);
        // Our parent (cargo's test runner, a shell…) is another process, started before us.
        let parent = std::os::unix::process::parent_id();
        assert_ne!(Pinned::open(parent, u64::MAX).unwrap().image, pinned.image);
    }

    /// Its stat read again through the pin, and never another process's once it has exited.
    #[test]
    fn a_pin_reads_its_own_process_again_until_it_exits() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut pinned = Pinned::open(child.id(), u64::MAX).unwrap();
        let image = pinned.image;
        pinned.refresh().unwrap();
        assert_eq!(pinned.image, image);
        let mut clone = pinned.try_clone().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(pinned.refresh().is_err());
        assert!(clone.refresh().is_err());
    }

    #[test]
    fn a_pid_started_after_the_hit_is_not_pinned() {
        let me = std::process::id();
        assert!(Pinned::open(me, u64::MAX).is_ok());
        let err = Pinned::open(me, 0).err().unwrap().to_string();
        assert!(err.contains("reused"), "{err}");
        assert!(Pinned::open(me, u64::MAX).unwrap().signal(0).is_ok());
    }
}
