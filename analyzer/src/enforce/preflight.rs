//! Whether a switch would work, decided before anything is done to the target: its filter stack
//! is read (`PTRACE_SECCOMP_GET_FILTER`), reinstalled in a child, and the child makes the exact
//! calls the injection would. Denied or killed there means refused here — better than a target
//! killed by SIGSYS, or left with NO_NEW_PRIVS set and no serving filter. Verdicts are cached by
//! the stack's contents, since every worker of one container has the same stack; and the child
//! is forked ahead of the hit that needs it (a fork costs over a millisecond, which the stopped
//! process would otherwise wait for), then waits on a pipe for the stack to replay: at the start,
//! and again once the enforcer has been quiet for a while, not right after a replay, when the
//! container's other processes are starting and switching and the fork's millisecond of CPU made
//! them wait (the first switch of nginx held 525 µs, median of 14 starts, 327 without). The verdict
//! itself is decided ahead of the hit too: the stack a process has when it is held at birth for
//! its marker probe is replayed while it runs on (`Switcher::prepare_for`), so its switch, and
//! its siblings', finds it cached unless it added a filter since.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

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

/// The preflight with its cache and its next replaying child, for one serving filter. Several
/// switches may ask at once.
pub struct Preflight {
    serving: Filter,
    cache: Mutex<HashMap<u64, Verdict>>,
    spare: Mutex<Option<Spare>>,
    /// Held while a stack is replayed: a second process with the same stack waits for the verdict
    /// (a fraction of a millisecond) rather than forking a child of its own.
    replaying: Mutex<()>,
    /// Children that answered and are still exiting (tearing down a copy of the enforcer's address
    /// space takes about a millisecond), reaped by `prepare`.
    answered: Mutex<Vec<Spare>>,
}

/// Locks `mutex`; a panic elsewhere leaves the data consistent (each update is one call).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A thread's filters, index 0 the oldest: the kernel's `get_nth_filter` counts from the oldest,
/// whatever the man page says.
pub type Stack = Vec<Vec<libc::sock_filter>>;

impl Preflight {
    /// The preflight, with its first replaying child already forked.
    pub fn new(serving: Filter) -> Preflight {
        let preflight = Preflight {
            serving,
            cache: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
            replaying: Mutex::new(()),
            answered: Mutex::new(Vec::new()),
        };
        preflight.prepare();
        preflight
    }

    /// Reaps the children that answered and forks the next one, if none is waiting: called when
    /// the enforcer is quiet.
    pub fn prepare(&self) {
        drop(std::mem::take(&mut *lock(&self.answered)));
        let mut spare = lock(&self.spare);
        if spare.is_none() {
            // A failed fork is retried on the hit that needs the child, and reported there.
            *spare = Spare::fork(&self.serving).ok();
        }
    }

    /// The verdict for thread `tid`, which must be in a ptrace stop of ours; `no_new_privs` is
    /// its state (the injection sets it first when it is not set). Returns whether it was cached.
    pub fn check(&self, tid: u32, no_new_privs: bool) -> (Verdict, bool) {
        match filter_stack(tid) {
            Ok(stack) => self.verdict(&stack, no_new_privs),
            Err(err) => (Verdict::Refuse(format!("cannot read its seccomp filters: {err}")), false),
        }
    }

    /// The verdict for a thread with filters `stack` and `no_new_privs`, and whether it was cached.
    pub fn verdict(&self, stack: &Stack, no_new_privs: bool) -> (Verdict, bool) {
        if stack.last().is_some_and(|newest| newest == &self.serving.insns) {
            return (Verdict::AlreadySwitched, true);
        }
        let key = stack_key(stack, no_new_privs);
        if let Some(verdict) = lock(&self.cache).get(&key) {
            return (verdict.clone(), true);
        }
        let _turn = lock(&self.replaying);
        if let Some(verdict) = lock(&self.cache).get(&key) {
            return (verdict.clone(), true);
        }
        let spare = lock(&self.spare).take();
        let verdict = match spare.map_or_else(|| Spare::fork(&self.serving), Ok) {
            Ok(mut spare) => {
                let verdict = spare.replay(stack, no_new_privs);
                lock(&self.answered).push(spare);
                verdict
            }
            Err(err) => Verdict::Refuse(format!("cannot fork the preflight: {err}")),
        };
        lock(&self.cache).insert(key, verdict.clone());
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

/// The filters of `tid` (in a ptrace stop of ours), oldest first, as `PTRACE_SECCOMP_GET_FILTER`
/// numbers them.
pub fn filter_stack(tid: u32) -> std::io::Result<Stack> {
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

/// Whether thread `tid` (in a ptrace stop of ours) has more filters than `count`: one request,
/// where reading them copies each.
pub fn filters_added(tid: u32, count: usize) -> bool {
    // SAFETY: with a null buffer the kernel only returns the filter's length.
    let len = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid as libc::pid_t, count, 0usize) };
    // ENOENT: no filter at that index; EINVAL: no filter at all.
    let none = match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOENT) => true,
        Some(libc::EINVAL) => count == 0,
        _ => false,
    };
    !(len < 0 && none)
}

/// Exit codes of the replaying child: the failed step in the high bits, the errno in the low 6.
const STEP_STACK: i32 = 1;
const STEP_PRCTL: i32 = 2;
const STEP_SECCOMP: i32 = 3;

/// The most a request can hold, in 32-bit words: the kernel caps a thread's stack at 32768
/// instructions (two words each) counting 4 per filter, and each filter takes one word of length.
const REQUEST_WORDS: usize = 2 + 32768 * 2 + 32768 / 4;

/// A child forked ahead of time, blocked reading the stack it is to replay from a pipe. A request
/// is its length in words, then `no_new_privs`, the number of filters, and each filter as its
/// length followed by its instructions, oldest first. The child answers with its exit code on a
/// second pipe before it exits, so the verdict does not wait for its exit. Dropped unused, it
/// sees the request pipe close and exits; dropped, it is reaped.
struct Spare {
    pid: libc::pid_t,
    /// The request pipe's write end; closed before the child is waited for.
    request: Option<OwnedFd>,
    /// The answer pipe's read end.
    answer: OwnedFd,
}

/// A pipe's (read, write) ends.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two fds it creates.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Spare {
    fn fork(serving: &Filter) -> std::io::Result<Spare> {
        let (read, write) = pipe()?;
        let (answer, answer_write) = pipe()?;
        // Allocated before the fork: the child must not allocate (another thread may have held the
        // allocator's lock at the fork).
        let mut buffer = vec![0u32; REQUEST_WORDS];
        let serving_prog =
            libc::sock_fprog { len: serving.insns.len() as u16, filter: serving.insns.as_ptr().cast_mut() };
        // SAFETY: the child makes raw syscalls on memory prepared before the fork, then _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above.
            unsafe { replay_in_child(read.as_raw_fd(), answer_write.as_raw_fd(), &mut buffer, &serving_prog) };
        }
        if child < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Spare { pid: child, request: Some(write), answer })
    }

    /// Hands `stack` to the child and reads its verdict: its answer, or how it died.
    fn replay(&mut self, stack: &Stack, no_new_privs: bool) -> Verdict {
        let mut words = vec![0, u32::from(no_new_privs), stack.len() as u32];
        for filter in stack {
            words.push(filter.len() as u32);
            for insn in filter {
                words.push(u32::from(insn.code) | u32::from(insn.jt) << 16 | u32::from(insn.jf) << 24);
                words.push(insn.k);
            }
        }
        words[0] = (words.len() - 1) as u32;
        let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
        let request = self.request.take().expect("a spare is used once");
        // A child that died cannot take the request: its exit status says why.
        let _ = std::io::Write::write_all(&mut std::fs::File::from(request), &bytes);
        let mut code = [0u8; 4];
        // SAFETY: the buffer holds the 4 bytes read.
        if unsafe { read_exact(self.answer.as_raw_fd(), code.as_mut_ptr(), 4) } {
            // As `waitpid` would report an exit with that code.
            verdict(i32::from_ne_bytes(code) << 8)
        } else {
            // Killed before it could answer (SIGSYS from the stack it replayed).
            self.wait()
        }
    }

    fn wait(&mut self) -> Verdict {
        let mut status = 0;
        // SAFETY: waits for the child forked by `fork`, once (the pid is cleared).
        let waited = unsafe { libc::waitpid(std::mem::replace(&mut self.pid, 0), &mut status, 0) };
        if waited < 0 {
            return Verdict::Refuse(format!("the preflight was lost: {}", std::io::Error::last_os_error()));
        }
        verdict(status)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if self.pid > 0 {
            self.request = None;
            self.wait();
        }
    }
}

/// # Safety
/// Only in a freshly forked child, with `buffer` and `serving` prepared before the fork; never
/// returns.
unsafe fn replay_in_child(request: i32, answer: i32, buffer: &mut [u32], serving: &libc::sock_fprog) -> ! {
    let finish = |code: i32| -> ! {
        // SAFETY: a write of 4 bytes from the stack; _exit ends the child.
        unsafe {
            libc::write(answer, (&raw const code).cast(), 4);
            libc::_exit(code)
        }
    };
    let fail = |step: i32| -> ! {
        // SAFETY: errno is this thread's.
        finish(step << 6 | unsafe { *libc::__errno_location() }.min(63))
    };
    let malformed = |step: i32| -> ! {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        fail(step)
    };
    // SAFETY: raw syscalls on this child's own fds and on buffers that outlive it.
    unsafe {
        // The enforcer's fds (its maps, links and sockets) must not live on in a waiting child.
        let (low, high) = (request.min(answer), request.max(answer));
        if low > 0 {
            libc::syscall(libc::SYS_close_range, 0, low - 1, 0);
        }
        if high > low + 1 {
            libc::syscall(libc::SYS_close_range, low + 1, high - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, high + 1, u32::MAX, 0);
        let mut words = [0u32; 1];
        if !read_exact(request, words.as_mut_ptr().cast(), 4) {
            // The enforcer ended without needing this child.
            libc::_exit(0);
        }
        let len = words[0] as usize;
        if len > buffer.len() || len < 2 || !read_exact(request, buffer.as_mut_ptr().cast(), len * 4) {
            malformed(STEP_STACK);
        }
        let (no_new_privs, filters) = (buffer[0] != 0, buffer[1]);
        if no_new_privs && libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(STEP_STACK);
        }
        // As root with CAP_SYS_ADMIN the child may install filters without NO_NEW_PRIVS, so the
        // target's own state is replayed exactly.
        let mut at = 2;
        for _ in 0..filters {
            let Some(&count) = buffer.get(at) else { malformed(STEP_STACK) };
            let end = at + 1 + 2 * count as usize;
            if end > len {
                malformed(STEP_STACK);
            }
            // Two words per instruction: code, jt and jf packed, then k (see `Spare::replay`).
            let insns: &mut [u32] = &mut buffer[at + 1..end];
            for pair in insns.chunks_exact_mut(2) {
                let packed = pair[0];
                let insn = libc::sock_filter {
                    code: packed as u16,
                    jt: (packed >> 16) as u8,
                    jf: (packed >> 24) as u8,
                    k: pair[1],
                };
                pair.as_mut_ptr().cast::<libc::sock_filter>().write_unaligned(insn);
            }
            let prog = libc::sock_fprog { len: count as u16, filter: insns.as_mut_ptr().cast() };
            if libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, 0, &prog) != 0 {
                fail(STEP_STACK);
            }
            at = end;
        }
        if !no_new_privs && libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(STEP_PRCTL);
        }
        if libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, FLAG_TSYNC, serving) != 0 {
            fail(STEP_SECCOMP);
        }
        finish(0)
    }
}

/// Reads exactly `len` bytes from `fd` into `into`; false at the end of the pipe or on an error.
///
/// # Safety
/// `into` must be valid for `len` bytes of writes.
unsafe fn read_exact(fd: i32, into: *mut u8, len: usize) -> bool {
    let mut done = 0;
    while done < len {
        // SAFETY: within the buffer the caller vouches for.
        let got = unsafe { libc::read(fd, into.add(done).cast(), len - done) };
        if got > 0 {
            done += got as usize;
        // SAFETY: errno is this thread's.
        } else if got < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        } else {
            return false;
        }
    }
    true
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
        let replay = |stack: Stack| Spare::fork(&serving).unwrap().replay(&stack, false);
        assert!(matches!(replay(vec![deny_seccomp]), Verdict::Refuse(why) if why.contains("deny seccomp")));
        let allow_all = Filter::allowlist(&all, Action::Errno).insns;
        assert_eq!(replay(vec![allow_all.clone()]), Verdict::Go);
        // Two filters, replayed oldest first, each instruction intact.
        assert_eq!(replay(vec![allow_all.clone(), allow_all]), Verdict::Go);
        // A stack that kills on seccomp: the child dies before it can answer.
        let kill_seccomp = Filter::allowlist(&without_seccomp, Action::Kill).insns;
        assert!(matches!(replay(vec![kill_seccomp]), Verdict::Refuse(why) if why.contains("SIGSYS")));
        // A spare the enforcer never needed exits when dropped.
        drop(Spare::fork(&serving).unwrap());
    }
}
