//! The machine as the capture describes it at each event: live threads, the processes they
//! belong to (container, working directory, open files) and each thread's pending enter event.
//!
//! Memory is bounded by what is alive: a thread is dropped at its `procexit`, a process (and its
//! fd table) when its last thread is gone. Files are keyed by process, because threads share them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use super::names::Sys;

/// A hash map keyed by tids, pids and fds: integers, hashed with one multiply.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing for integer keys; not for untrusted string keys (none are used here).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        let mixed = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = mixed ^ (mixed >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// An enter event waiting for its exit.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub kind: u16,
    pub ts: u64,
    pub sys: Sys,
    /// The thread's container at the enter: an enter no exit follows is counted there.
    pub container: u32,
}

/// The arguments of the last enter event of a type whose old exit lacks them (open, mmap, close,
/// dup, fcntl, execve, …). Kept apart from `Pending`, so that the common enter stays small and the
/// path's allocation is reused.
#[derive(Debug, Default)]
pub struct EnterArgs {
    /// The enter type that wrote them.
    pub kind: u16,
    /// Parameters 0–4 as signed integers.
    pub ints: [Option<i64>; 5],
    pub path: Vec<u8>,
}

impl EnterArgs {
    pub fn int(&self, index: usize) -> Option<i64> {
        self.ints.get(index).copied().flatten()
    }

    pub fn path(&self) -> Option<&[u8]> {
        (!self.path.is_empty()).then_some(&self.path[..])
    }
}

pub struct Thread {
    pub pid: u64,
    /// Index into the importer's container list (0 is the host).
    pub container: u32,
    pub pending: Option<Pending>,
    pub args: EnterArgs,
    /// From the process list and not counted yet: its process may need reporting as one that
    /// was running before the capture.
    pub announce: bool,
}

impl Thread {
    pub fn new(pid: u64, container: u32) -> Thread {
        Thread { pid, container, pending: None, args: EnterArgs::default(), announce: false }
    }
}

/// An open file of a process.
#[derive(Clone, Debug)]
pub struct FdFile {
    pub path: Rc<[u8]>,
    /// Closed by a successful exec (`O_CLOEXEC`, `F_DUPFD_CLOEXEC`, `dup3(…, O_CLOEXEC)`).
    pub cloexec: bool,
}

#[derive(Clone)]
pub struct Process {
    pub container: u32,
    pub threads: u32,
    pub cwd: Rc<[u8]>,
    pub comm: Rc<str>,
    /// The pid inside the container's pid namespace (1 is the container's init), 0 if unknown.
    pub vpid: i64,
    pub fds: IdMap<i64, FdFile>,
    /// Running when the capture started, and not yet reported: it is, with the path of its
    /// executable when the process list has one, once it does something.
    pub running_before: Option<Option<Rc<str>>>,
}

impl Process {
    pub fn new(container: u32) -> Process {
        Process {
            container,
            threads: 0,
            cwd: Rc::from(&b""[..]),
            comm: Rc::from(""),
            vpid: 0,
            fds: IdMap::default(),
            running_before: None,
        }
    }

    pub fn fd_path(&self, fd: i64) -> Option<&Rc<[u8]>> {
        self.fds.get(&fd).map(|file| &file.path)
    }

    /// `dup`-style copy of `old` to `new`, with the copy's own close-on-exec flag.
    pub fn duplicate(&mut self, old: i64, new: i64, cloexec: bool) {
        if let Some(path) = self.fd_path(old).cloned() {
            self.fds.insert(new, FdFile { path, cloexec });
        } else {
            self.fds.remove(&new);
        }
    }

    /// A path relative to `dirfd` (`PPM_AT_FDCWD` = -100: the working directory).
    pub fn resolve_at(&self, dirfd: Option<i64>, path: &[u8]) -> Vec<u8> {
        if path.starts_with(b"/") {
            return resolve(b"/", path);
        }
        let base = match dirfd {
            Some(AT_FDCWD) | None => &self.cwd,
            Some(fd) => self.fd_path(fd).unwrap_or(&self.cwd),
        };
        resolve(base, path)
    }
}

pub const AT_FDCWD: i64 = -100;

/// `path` made absolute against `base` and normalised lexically (`.`, `..`, `//`). A relative
/// path with an unknown (empty) base stays relative: a guess would be worse than saying so.
pub fn resolve(base: &[u8], path: &[u8]) -> Vec<u8> {
    if !path.starts_with(b"/") && !base.starts_with(b"/") {
        return path.to_vec();
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    let joined = if path.starts_with(b"/") { [path].to_vec() } else { [base, path].to_vec() };
    for part in joined.into_iter().flat_map(|text| text.split(|&byte| byte == b'/')) {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(path.len() + base.len() + 1);
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_lexically() {
        assert_eq!(resolve(b"/", b"/lib/../lib64//ld.so"), b"/lib64/ld.so");
        assert_eq!(resolve(b"/usr/src", b"./a/../b"), b"/usr/src/b");
        assert_eq!(resolve(b"/", b".."), b"/");
        assert_eq!(resolve(b"", b"etc/passwd"), b"etc/passwd", "unknown cwd: left relative");
    }

    #[test]
    fn at_paths_use_the_dirfd_or_the_cwd() {
        let mut process = Process::new(0);
        process.cwd = Rc::from(&b"/srv"[..]);
        process.fds.insert(5, FdFile { path: Rc::from(&b"/etc"[..]), cloexec: false });
        assert_eq!(process.resolve_at(Some(AT_FDCWD), b"a"), b"/srv/a");
        assert_eq!(process.resolve_at(Some(5), b"hosts"), b"/etc/hosts");
        assert_eq!(process.resolve_at(Some(5), b"/abs"), b"/abs");
        process.duplicate(5, 9, true);
        assert!(process.fds[&9].cloexec);
        process.duplicate(77, 9, false);
        assert!(!process.fds.contains_key(&9), "dup of an unknown fd forgets what the target held");
    }
}
