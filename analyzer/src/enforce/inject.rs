//! Making a stopped thread execute syscalls for us with ptrace, and leaving it exactly as found.
//!
//! `Seized` is the state machine over ptrace stop kinds: it seizes the thread and stops it
//! (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`; a thread already in a group stop is re-trapped), saves
//! its registers, writes data below its stack's red zone, runs each call through a `syscall`
//! instruction with `PTRACE_SYSCALL` to the entry stop (checked with `PTRACE_GET_SYSCALL_INFO`)
//! and on to the exit stop, and on release — or on drop, whatever failed — writes the saved
//! memory and registers back verbatim and detaches. Restoring verbatim at a syscall stop lets the
//! kernel restart a syscall the stop interrupted, as if nothing happened. Signals that arrive
//! meanwhile are held and delivered again at the end.

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
    saved: libc::user_regs_struct,
    /// Where data was written, and the bytes it replaced.
    memory: Option<(u64, Vec<u8>)>,
    /// Signals that arrived while it was held, to deliver again.
    held: Vec<Signal>,
    released: bool,
}

impl Seized {
    /// Seizes and stops thread `tid`, and saves its registers.
    pub fn seize(tid: u32) -> Result<Seized, InjectError> {
        let pid = Pid::from_raw(tid as i32);
        ptrace::seize(pid, Options::PTRACE_O_TRACESYSGOOD).map_err(|errno| match errno {
            Errno::EPERM => InjectError::Busy(tid),
            Errno::ESRCH => InjectError::Gone(tid),
            errno => InjectError::Ptrace { tid, what: "PTRACE_SEIZE", errno },
        })?;
        let mut seized = Seized { tid: pid, saved: zeroed_regs(), memory: None, held: Vec::new(), released: false };
        seized.check(ptrace::interrupt(pid), "PTRACE_INTERRUPT")?;
        // A group stop (the marker's SIGSTOP taken already), the interrupt, or the SIGSTOP on its
        // way: the caller's SIGCONT covers every case.
        if let Stop::Signal(signal) = seized.wait()? {
            seized.hold(signal);
        }
        seized.saved = seized.check(ptrace::getregs(pid), "PTRACE_GETREGS")?;
        Ok(seized)
    }

    pub fn tid(&self) -> u32 {
        self.tid.as_raw() as u32
    }

    /// Where `len` bytes fit below the red zone of the thread's stack, 16-byte aligned.
    pub fn scratch(&self, len: usize) -> u64 {
        (self.saved.rsp - RED_ZONE - SLACK - len as u64) & !15
    }

    /// Writes `bytes` at `address` (from `scratch`); the bytes they replace are put back on
    /// release.
    pub fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), InjectError> {
        let remote = [RemoteIoVec { base: address as usize, len: bytes.len() }];
        let mut old = vec![0u8; bytes.len()];
        let read = process_vm_readv(self.tid, &mut [IoSliceMut::new(&mut old)], &remote);
        self.check(read, "process_vm_readv")?;
        self.memory = Some((address, old));
        let written = process_vm_writev(self.tid, &[IoSlice::new(bytes)], &remote);
        self.check(written, "process_vm_writev")?;
        Ok(())
    }

    /// Runs syscall `number` with `args` (unused argument registers zeroed: leftovers from an
    /// interrupted call make some syscalls fail) through the `syscall` instruction at `gadget`,
    /// and returns its raw result (`-errno` on failure).
    pub fn call(&mut self, gadget: u64, number: u64, args: &[u64]) -> Result<i64, InjectError> {
        let mut regs = self.saved;
        let arg = |index: usize| args.get(index).copied().unwrap_or(0);
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (arg(0), arg(1), arg(2), arg(3), arg(4), arg(5));
        regs.rip = gadget;
        regs.rax = number;
        // Not in a syscall: nothing for the kernel to restart on the way in.
        regs.orig_rax = u64::MAX;
        self.check(ptrace::setregs(self.tid, regs), "PTRACE_SETREGS")?;
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
        let regs = self.check(ptrace::getregs(self.tid), "PTRACE_GETREGS")?;
        Ok(regs.rax as i64)
    }

    /// Puts memory and registers back as found and detaches, delivering held signals.
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
        self.check(ptrace::setregs(self.tid, self.saved), "PTRACE_SETREGS")?;
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
            let status = waitpid(self.tid, Some(WaitPidFlag::__WALL));
            match self.check(status, "waitpid")? {
                WaitStatus::PtraceSyscall(_) => return Ok(Stop::Syscall),
                WaitStatus::PtraceEvent(_, _, event) if event == Event::PTRACE_EVENT_STOP as i32 => {
                    return Ok(Stop::Event);
                }
                WaitStatus::Stopped(_, signal) => return Ok(Stop::Signal(signal)),
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    // Nothing is left to restore.
                    self.released = true;
                    return Err(InjectError::Gone(self.tid()));
                }
                _ => {}
            }
        }
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
    /// A signal about to be delivered.
    Signal(Signal),
    /// A syscall entry or exit.
    Syscall,
}

fn zeroed_regs() -> libc::user_regs_struct {
    // SAFETY: user_regs_struct is plain integers; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}
