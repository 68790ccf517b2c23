//! Whether a switch would work, decided before anything is done to the target: its filter stack
//! is read (`PTRACE_SECCOMP_GET_FILTER`), reinstalled in a forked child, and the child makes the
//! exact calls the injection would. Denied or killed there means refused here — better than a
//! target killed by SIGSYS, or left with NO_NEW_PRIVS set and no serving filter. Verdicts are
//! cached by the stack's contents, since a fork costs over a millisecond and every worker of one
//! container has the same stack.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::filter::Filter;

/// `PTRACE_SECCOMP_GET_FILTER`.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// `SECCOMP_SET_MODE_FILTER` and `SECCOMP_FILTER_FLAG_TSYNC`.
pub const SET_MODE_FILTER: u64 = 1;
pub const FLAG_TSYNC: u64 = 1;

/// What the preflight says about a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The switch will work.
    Go,
    /// Its newest filter is the serving filter already (switched by an earlier run).
    AlreadySwitched,
    /// The switch would fail or kill it: why.
    Refuse(String),
}

/// The preflight with its cache, for one serving filter.
pub struct Preflight {
    serving: Filter,
    cache: HashMap<u64, Verdict>,
}

/// A thread's filters, index 0 the oldest: the kernel's `get_nth_filter` counts from the oldest,
/// whatever the man page says.
type Stack = Vec<Vec<libc::sock_filter>>;

impl Preflight {
    pub fn new(serving: Filter) -> Preflight {
        Preflight { serving, cache: HashMap::new() }
    }

    /// The verdict for thread `tid`, which must be in a ptrace stop of ours; `no_new_privs` is
    /// its state (the injection sets it first when it is not set). Returns whether it was cached.
    pub fn check(&mut self, tid: u32, no_new_privs: bool) -> (Verdict, bool) {
        let stack = match filter_stack(tid) {
            Ok(stack) => stack,
            Err(err) => return (Verdict::Refuse(format!("cannot read its seccomp filters: {err}")), false),
        };
        if stack.last().is_some_and(|newest| newest == &self.serving.insns) {
            return (Verdict::AlreadySwitched, true);
        }
        let key = stack_key(&stack, no_new_privs);
        if let Some(verdict) = self.cache.get(&key) {
            return (verdict.clone(), true);
        }
        let verdict = replay(&stack, no_new_privs, &self.serving);
        self.cache.insert(key, verdict.clone());
        (verdict, false)
    }
}

fn stack_key(stack: &Stack, no_new_privs: bool) -> u64 {
    let mut hasher = DefaultHasher::new();
    no_new_privs.hash(&mut hasher);
    for filter in stack {
        filter.len().hash(&mut hasher);
        for insn in filter {
            (insn.code, insn.jt, insn.jf, insn.k).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The filters of `tid`, oldest first, as `PTRACE_SECCOMP_GET_FILTER` numbers them.
fn filter_stack(tid: u32) -> std::io::Result<Stack> {
    let mut stack = Vec::new();
    for index in 0.. {
        // SAFETY: with a null buffer the kernel only returns the filter's length.
        let len = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid as libc::pid_t, index as usize, 0usize) };
        if len < 0 {
            let err = std::io::Error::last_os_error();
            // ENOENT past the oldest filter; EINVAL when the thread has no filter at all.
            return match err.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::EINVAL) if !stack.is_empty() || index == 0 => Ok(stack),
                _ => Err(err),
            };
        }
        let mut insns = vec![libc::sock_filter { code: 0, jt: 0, jf: 0, k: 0 }; len as usize];
        // SAFETY: the buffer holds `len` instructions, as many as the kernel copies.
        let copied =
            unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid as libc::pid_t, index as usize, insns.as_mut_ptr()) };
        if copied < 0 {
            return Err(std::io::Error::last_os_error());
        }
        stack.push(insns);
    }
    Ok(stack)
}

/// Exit codes of the replaying child: the failed step in the high bits, the errno in the low 6.
const STEP_STACK: i32 = 1;
const STEP_PRCTL: i32 = 2;
const STEP_SECCOMP: i32 = 3;

/// Reinstalls `stack` (oldest first) in a forked child and makes the injection's calls there.
fn replay(stack: &Stack, no_new_privs: bool, serving: &Filter) -> Verdict {
    let progs: Vec<libc::sock_fprog> = stack
        .iter()
        .map(|insns| libc::sock_fprog { len: insns.len() as u16, filter: insns.as_ptr().cast_mut() })
        .collect();
    let serving_prog = libc::sock_fprog { len: serving.insns.len() as u16, filter: serving.insns.as_ptr().cast_mut() };
    // SAFETY: the child makes raw syscalls on memory prepared before the fork, then _exit: nothing
    // that could deadlock on a lock another thread held at the fork.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        unsafe { replay_in_child(&progs, no_new_privs, &serving_prog) };
    }
    if child < 0 {
        return Verdict::Refuse(format!("cannot fork the preflight: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(child, &mut status, 0) };
    verdict(status)
}

/// # Safety
/// Only in a freshly forked child; never returns.
unsafe fn replay_in_child(stack: &[libc::sock_fprog], no_new_privs: bool, serving: &libc::sock_fprog) -> ! {
    let fail = |step: i32| -> ! {
        // SAFETY: errno is this thread's; _exit ends the child.
        unsafe { libc::_exit(step << 6 | (*libc::__errno_location()).min(63)) }
    };
    // SAFETY: raw syscalls on valid `sock_fprog`s; their instructions outlive the child.
    unsafe {
        if no_new_privs && libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(STEP_STACK);
        }
        // As root with CAP_SYS_ADMIN the child may install filters without NO_NEW_PRIVS, so the
        // target's own state is replayed exactly.
        for prog in stack {
            if libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, 0, prog) != 0 {
                fail(STEP_STACK);
            }
        }
        if !no_new_privs && libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(STEP_PRCTL);
        }
        if libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, FLAG_TSYNC, serving) != 0 {
            fail(STEP_SECCOMP);
        }
        libc::_exit(0)
    }
}

fn verdict(status: i32) -> Verdict {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        return Verdict::Refuse(if signal == libc::SIGSYS {
            "its filters kill a process that calls prctl or seccomp (SIGSYS)".to_owned()
        } else {
            format!("the preflight died of signal {signal}")
        });
    }
    let code = libc::WEXITSTATUS(status);
    if code == 0 {
        return Verdict::Go;
    }
    let errno = std::io::Error::from_raw_os_error(code & 63);
    Verdict::Refuse(match code >> 6 {
        STEP_PRCTL => format!("its filters deny prctl(PR_SET_NO_NEW_PRIVS): {errno}"),
        STEP_SECCOMP => format!("its filters deny seccomp(SECCOMP_SET_MODE_FILTER): {errno}"),
        _ => format!("its filters cannot be replayed: {errno}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::filter::Action;

    #[test]
    fn exit_codes_name_the_step_and_errno() {
        let exited = |code: i32| code << 8;
        assert_eq!(verdict(exited(0)), Verdict::Go);
        assert_eq!(
            verdict(exited(STEP_SECCOMP << 6 | libc::ENOSYS)),
            Verdict::Refuse(format!(
                "its filters deny seccomp(SECCOMP_SET_MODE_FILTER): {}",
                std::io::Error::from_raw_os_error(libc::ENOSYS)
            ))
        );
        assert!(matches!(verdict(libc::SIGSYS), Verdict::Refuse(why) if why.contains("SIGSYS")));
    }

    #[test]
    fn a_stack_denying_seccomp_is_refused_and_one_allowing_it_goes() {
        // Runs the real replay: a stack whose one filter denies seccomp (317) with ENOSYS.
        let all: Vec<u32> = crate::syscalls::Arch::X86_64.syscalls().map(|(nr, _)| nr).collect();
        let without_seccomp: Vec<u32> = all.iter().copied().filter(|&nr| nr != 317).collect();
        let deny_seccomp = Filter::allowlist(&without_seccomp, Action::Errno).insns;
        let serving = Filter::allowlist(&all, Action::Errno);
        assert!(
            matches!(replay(&vec![deny_seccomp], false, &serving), Verdict::Refuse(why) if why.contains("deny seccomp"))
        );
        let allow_all = Filter::allowlist(&all, Action::Errno).insns;
        assert_eq!(replay(&vec![allow_all], false, &serving), Verdict::Go);
    }
}
