//! Making a stopped thread execute syscalls for us with ptrace, and leaving it exactly as found.
//!
//! `Seized` is the state machine over ptrace stop kinds: it seizes the thread and stops it
//! (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`; a thread already in a group stop is re-trapped), saves
//! its registers and signal mask, writes data below its stack's red zone, runs each call through
//! a `syscall` instruction, and on release — or on drop, whatever failed — writes the saved
//! memory, mask and registers back verbatim and detaches. Restoring verbatim at a stop lets the
//! kernel restart a syscall the stop interrupted, as if nothing happened. Signals that arrive
//! meanwhile are held and delivered again at the end.
//!
//! A call is one `PTRACE_SINGLESTEP` over the instruction: the thread stops once, right after
//! it, where `PTRACE_SYSCALL` would stop twice (entry and exit) — each stop is a wake-up of the
//! thread and then of the enforcer, which a loaded machine makes slow. The step's stop is a
//! SIGTRAP the kernel forces: it unblocks the signal (the saved mask puts that right) and resets
//! an ignored SIGTRAP to its default (which nothing could put right), so the threads of a process
//! that ignores SIGTRAP go through the syscall's entry stop (checked with
//! `PTRACE_GET_SYSCALL_INFO`) and exit stop instead.

use std::io::{IoSlice, IoSliceMut};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::Signal;
use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Bytes below the stack pointer the x86-64 ABI lets a function use without moving it.
const RED_ZONE: u64 = 128;
/// Extra room between the red zone and what is written, in case of a signal frame's alignment.
const SLACK: u64 = 64;
/// `PTRACE_SYSCALL_INFO_ENTRY`.
const SYSCALL_INFO_ENTRY: u8 = 1;
/// `PTRACE_GETSIGMASK` and `PTRACE_SETSIGMASK`, with the kernel's `sigset_t` (64 bits on x86-64).
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
/// The length of `syscall` (0f 05): where a step over it stops.
const SYSCALL_LEN: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("thread {0} is already traced (by gdb, strace, …): it cannot be switched")]
    Busy(u32),
    #[error("thread {0} exited")]
    Gone(u32),
    #[error("thread {tid}: {what} failed: {errno}")]
    Ptrace { tid: u32, what: &'static str, errno: Errno },
    #[error("thread {tid}: stopped at syscall {found} instead of {expected}")]
    WrongSyscall { tid: u32, expected: u64, found: u64 },
}

/// A thread under our ptrace control; released (restored, detached) on drop at the latest.
pub struct Seized {
    tid: Pid,
    /// Its registers and signal mask as found, once it has stopped.
    saved: Option<Saved>,
    /// Where data was written, and the bytes it replaced.
    memory: Option<(u64, Vec<u8>)>,
    /// Signals that arrived while it was held, to deliver again.
    held: Vec<Signal>,
    /// Calls stop at the syscall's entry and exit rather than after a step (see the module doc).
    through_syscall_stops: bool,
    released: bool,
}

#[derive(Clone, Copy)]
struct Saved {
    regs: libc::user_regs_struct,
    sigmask: u64,
}

impl Seized {
    /// Seizes thread `tid` and asks it to stop; `meanwhile` (what needs no stop: reads of /proc)
    /// runs before the wait for the stop, so it overlaps the stop of a thread not yet stopped
    /// (`PTRACE_SEIZE` itself waits for one in a group stop to be trapped again), then its
    /// registers and signal mask are saved.
    pub fn seize_with<T>(tid: u32, meanwhile: impl FnOnce() -> T) -> Result<(Seized, T), InjectError> {
        let pid = Pid::from_raw(tid as i32);
        ptrace::seize(pid, Options::PTRACE_O_TRACESYSGOOD).map_err(|errno| match errno {
            Errno::EPERM => InjectError::Busy(tid),
            Errno::ESRCH => InjectError::Gone(tid),
            errno => InjectError::Ptrace { tid, what: "PTRACE_SEIZE", errno },
        })?;
        let mut seized = Seized {
            tid: pid,
            saved: None,
            memory: None,
            held: Vec::new(),
            through_syscall_stops: false,
            released: false,
        };
        // A thread in a group stop (the marker's SIGSTOP taken already) is trapped by the seize
        // itself; an interrupt then would stay pending and trap it once more at its first call,
        // a wake-up of both sides for nothing. Otherwise: the interrupt, or the SIGSTOP on its
        // way. The caller's SIGCONT covers every case.
        let (stop, value) = match seized.next_stop(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)? {
            Some(stop) => (stop, meanwhile()),
            None => {
                seized.check(ptrace::interrupt(pid), "PTRACE_INTERRUPT")?;
                let value = meanwhile();
                (seized.wait()?, value)
            }
        };
        if let Stop::Signal(signal) = stop {
            seized.hold(signal);
        }
        let regs = seized.check(ptrace::getregs(pid), "PTRACE_GETREGS")?;
        let mut sigmask = 0u64;
        // SAFETY: the kernel writes one sigset_t (8 bytes, the size passed) into `sigmask`.
        let got = unsafe { libc::ptrace(PTRACE_GETSIGMASK, tid as libc::pid_t, 8usize, &mut sigmask) };
        seized.check(Errno::result(got), "PTRACE_GETSIGMASK")?;
        seized.saved = Some(Saved { regs, sigmask });
        Ok((seized, value))
    }

    /// Its process ignores SIGTRAP: calls go through syscall stops, never a step.
    pub fn avoid_traps(&mut self) {
        self.through_syscall_stops = true;
    }

    pub fn tid(&self) -> u32 {
        self.tid.as_raw() as u32
    }

    /// Where `len` bytes fit below the red zone of the thread's stack, 16-byte aligned.
    pub fn scratch(&self, len: usize) -> u64 {
        (self.regs().rsp - RED_ZONE - SLACK - len as u64) & !15
    }

    fn regs(&self) -> libc::user_regs_struct {
        self.saved.expect("a seized thread has stopped").regs
    }

    /// Writes `parts`, one after the other, at `address` (from `scratch`); the bytes they replace
    /// are put back on release.
    pub fn write(&mut self, address: u64, parts: &[&[u8]]) -> Result<(), InjectError> {
        let len = parts.iter().map(|part| part.len()).sum();
        let remote = [RemoteIoVec { base: address as usize, len }];
        let mut old = vec![0u8; len];
        let read = process_vm_readv(self.tid, &mut [IoSliceMut::new(&mut old)], &remote);
        self.check(read, "process_vm_readv")?;
        self.memory = Some((address, old));
        let local: Vec<IoSlice> = parts.iter().map(|part| IoSlice::new(part)).collect();
        let written = process_vm_writev(self.tid, &local, &remote);
        self.check(written, "process_vm_writev")?;
        Ok(())
    }

    /// Runs syscall `number` with `args` (unused argument registers zeroed: leftovers from an
    /// interrupted call make some syscalls fail) through the `syscall` instruction at `gadget`,
    /// and returns its raw result (`-errno` on failure).
    pub fn call(&mut self, gadget: u64, number: u64, args: &[u64]) -> Result<i64, InjectError> {
        let mut regs = self.regs();
        let arg = |index: usize| args.get(index).copied().unwrap_or(0);
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (arg(0), arg(1), arg(2), arg(3), arg(4), arg(5));
        regs.rip = gadget;
        regs.rax = number;
        // Not in a syscall: nothing for the kernel to restart on the way in.
        regs.orig_rax = u64::MAX;
        self.check(ptrace::setregs(self.tid, regs), "PTRACE_SETREGS")?;
        let after = if self.through_syscall_stops { self.through_stops(number)? } else { self.step_over(gadget)? };
        // The syscall the kernel ran, whichever way it stopped.
        if after.orig_rax != number {
            return Err(InjectError::WrongSyscall { tid: self.tid(), expected: number, found: after.orig_rax });
        }
        Ok(after.rax as i64)
    }

    /// Steps over the `syscall` at `gadget`; the registers after it.
    fn step_over(&mut self, gadget: u64) -> Result<libc::user_regs_struct, InjectError> {
        loop {
            self.check(ptrace::step(self.tid, None), "PTRACE_SINGLESTEP")?;
            match self.wait()? {
                Stop::Signal(Signal::SIGTRAP) => {
                    let regs = self.check(ptrace::getregs(self.tid), "PTRACE_GETREGS")?;
                    if regs.rip == gadget + SYSCALL_LEN {
                        return Ok(regs);
                    }
                    // A SIGTRAP of its own, delivered before the step.
                    self.hold(Signal::SIGTRAP);
                }
                Stop::Signal(signal) => self.hold(signal),
                Stop::Event | Stop::Syscall => {}
            }
        }
    }

    /// Runs the syscall `number` set up at `gadget` from its entry stop to its exit stop; the
    /// registers after it.
    fn through_stops(&mut self, number: u64) -> Result<libc::user_regs_struct, InjectError> {
        self.resume_to_syscall_stop()?;
        let info = self.syscall_info()?;
        // SAFETY: the union holds integers only; `op` says whether `entry` is what the kernel filled.
        let nr = unsafe { info.u.entry.nr };
        let entered = (info.op == SYSCALL_INFO_ENTRY).then_some(nr);
        if entered != Some(number) {
            let found = entered.unwrap_or(u64::MAX);
            return Err(InjectError::WrongSyscall { tid: self.tid(), expected: number, found });
        }
        self.resume_to_syscall_stop()?;
        self.check(ptrace::getregs(self.tid), "PTRACE_GETREGS")
    }

    /// Puts memory, signal mask and registers back as found and detaches, delivering held signals.
    pub fn release(mut self) -> Result<(), InjectError> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), InjectError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        if let Some((address, old)) = self.memory.take() {
            let remote = [RemoteIoVec { base: address as usize, len: old.len() }];
            self.check(process_vm_writev(self.tid, &[IoSlice::new(&old)], &remote), "process_vm_writev")?;
        }
        // Not stopped yet (the seize failed half-way): nothing was changed.
        if let Some(saved) = self.saved {
            // SAFETY: the kernel reads one sigset_t (8 bytes, the size passed) from `saved.sigmask`.
            let set = unsafe { libc::ptrace(PTRACE_SETSIGMASK, self.tid.as_raw(), 8usize, &saved.sigmask) };
            self.check(Errno::result(set), "PTRACE_SETSIGMASK")?;
            self.check(ptrace::setregs(self.tid, saved.regs), "PTRACE_SETREGS")?;
        }
        let first = (!self.held.is_empty()).then(|| self.held.remove(0));
        self.check(ptrace::detach(self.tid, first), "PTRACE_DETACH")?;
        for signal in self.held.drain(..) {
            // Only one signal rides on the detach; the rest are queued to the thread again.
            let _ = nix::sys::signal::kill(self.tid, signal);
        }
        Ok(())
    }

    /// `PTRACE_GET_SYSCALL_INFO` (nix passes no buffer size, so the kernel would copy nothing).
    fn syscall_info(&mut self) -> Result<libc::ptrace_syscall_info, InjectError> {
        // SAFETY: all-zero is a valid ptrace_syscall_info (integers and a union of integers).
        let mut info: libc::ptrace_syscall_info = unsafe { std::mem::zeroed() };
        let size = size_of::<libc::ptrace_syscall_info>();
        // SAFETY: the kernel writes at most `size` bytes into `info`.
        let copied = unsafe { libc::ptrace(libc::PTRACE_GET_SYSCALL_INFO, self.tid.as_raw(), size, &mut info) };
        self.check(Errno::result(copied), "PTRACE_GET_SYSCALL_INFO")?;
        Ok(info)
    }

    /// Resumes until the next syscall stop, holding signals and passing other stops.
    fn resume_to_syscall_stop(&mut self) -> Result<(), InjectError> {
        loop {
            self.check(ptrace::syscall(self.tid, None), "PTRACE_SYSCALL")?;
            match self.wait()? {
                Stop::Syscall => return Ok(()),
                Stop::Signal(signal) => self.hold(signal),
                Stop::Event => {}
            }
        }
    }

    /// The marker's SIGSTOP only asked for this stop: it is dropped, everything else held.
    fn hold(&mut self, signal: Signal) {
        if signal != Signal::SIGSTOP && !self.held.contains(&signal) {
            self.held.push(signal);
        }
    }

    fn wait(&mut self) -> Result<Stop, InjectError> {
        loop {
            if let Some(stop) = self.next_stop(WaitPidFlag::__WALL)? {
                return Ok(stop);
            }
        }
    }

    /// One `waitpid` with `flags`: the stop it reports, if it is one the injector meets.
    fn next_stop(&mut self, flags: WaitPidFlag) -> Result<Option<Stop>, InjectError> {
        let status = waitpid(self.tid, Some(flags));
        Ok(match self.check(status, "waitpid")? {
            WaitStatus::PtraceSyscall(_) => Some(Stop::Syscall),
            WaitStatus::PtraceEvent(_, _, event) if event == Event::PTRACE_EVENT_STOP as i32 => Some(Stop::Event),
            WaitStatus::Stopped(_, signal) => Some(Stop::Signal(signal)),
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                // Nothing is left to restore.
                self.released = true;
                return Err(InjectError::Gone(self.tid()));
            }
            _ => None,
        })
    }

    fn check<T>(&mut self, result: nix::Result<T>, what: &'static str) -> Result<T, InjectError> {
        result.map_err(|errno| match errno {
            Errno::ESRCH if what != "PTRACE_SEIZE" && !self.alive() => {
                self.released = true;
                InjectError::Gone(self.tid())
            }
            errno => InjectError::Ptrace { tid: self.tid(), what, errno },
        })
    }

    fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.tid)).exists()
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// The kinds of ptrace stop the injector meets.
enum Stop {
    /// `PTRACE_EVENT_STOP`: the interrupt, or a group stop.
    Event,
    /// A signal about to be delivered (a step's trap included).
    Signal(Signal),
    /// A syscall entry or exit.
    Syscall,
}
