//! Syscalls every profile allows although a trace may never show them.

use crate::syscalls::Arch;

/// Allowed in every phase of every profile:
/// - `exit` and `exit_group` never return, so exit-only sources never record them;
/// - `rt_sigreturn` and `restart_syscall` are issued by the kernel's signal machinery;
/// - the vDSO-backed calls normally never enter the kernel, so tracers never see them, but the
///   vDSO falls back to the real syscall when the clocksource cannot be read from userspace.
pub const ALWAYS_ALLOWED: &[&str] = &[
    "exit",
    "exit_group",
    "rt_sigreturn",
    "restart_syscall",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "getcpu",
];

/// Why `name` is in `ALWAYS_ALLOWED`, for `analysis.json`; `None` when it is not.
pub fn always_allowed_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "exit" | "exit_group" => "never returns, so sources that record exits never record it",
        "rt_sigreturn" | "restart_syscall" => "issued by the kernel's signal machinery, not by the program",
        _ if ALWAYS_ALLOWED.contains(&name) => {
            "a vDSO call: normally never enters the kernel (tracers never see it), but falls back to the real \
             syscall when the clocksource cannot be read from userspace"
        }
        _ => return None,
    })
}

/// What runc does after installing the container's filter and before exec'ing the entrypoint, used
/// when a trace carries no `runtime` set of its own (a `.scap` import, static-only analysis).
///
/// Docker runs containers with no-new-privileges off, so runc installs the filter *before*
/// dropping privileges: capabilities, groups, uid/gid, closing fds, the exec fifo and the Go
/// runtime's housekeeping all run under it. The list is security-profiles-operator's recorded
/// runc v1.4.2 base profile (a superset of its v1.2 one, which covers Debian's runc 1.1.5) joined
/// with the Go runtime calls that depend on scheduling (`clone`, `madvise`, `munmap`, signals).
pub const RUNC_AFTER_FILTER: &[&str] = &[
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clone",
    "close",
    "close_range",
    "epoll_ctl",
    "epoll_pwait",
    "execve",
    "exit_group",
    "faccessat2",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "openat2",
    "prctl",
    "read",
    "recvfrom",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_yield",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setuid",
    "sigaltstack",
    "statx",
    "tgkill",
    "write",
];

/// What runc 1.0 and 1.1 do after installing the filter, measured on this project's machines
/// (Debian 12 runc 1.1.5+ds1, Docker 20.10.24, kernel 6.18): every syscall runc init's process made
/// between `prctl(PR_SET_SECCOMP)` and the entrypoint's `execve`, joined with the Go runtime's
/// housekeeping that depends on scheduling (threads, signals, memory return) and so may not show in
/// one run. runc 1.1 installs the filter with `prctl`, not `seccomp`, and does not use `close_range`.
pub const RUNC_1_1_AFTER_FILTER: &[&str] = &[
    "brk",
    "capget",
    "capset",
    "chdir",
    "clone",
    "close",
    "epoll_ctl",
    "epoll_pwait",
    "execve",
    "exit_group",
    "faccessat2",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getpid",
    "getppid",
    "gettid",
    "madvise",
    "mmap",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "prctl",
    "read",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_yield",
    "setgid",
    "setgroups",
    "setuid",
    "sigaltstack",
    "tgkill",
    "write",
];

/// What crun does after installing the filter when no-new-privileges is off (Docker's and
/// Kubernetes' default), read from crun's `container_init_setup` / `container_init` (crun 1.29,
/// containers/crun `src/libcrun/container.c`): dropping capabilities and switching ids
/// (`prctl`, `setresgid`, `setresuid`, `capset`), finding the executable and the working directory,
/// unblocking signals, the sync socket and exec fifo, closing fds, `execve`; for `exec` also
/// `setgroups`, `fchown` of the std streams and `umask`. Cross-checked against
/// security-profiles-operator's recorded crun 1.26 base profile: every name here is in it. That
/// recording has no cut at the filter (SPO issue #2623), so its setup calls (`mount`, `pivot_root`,
/// `unshare`, `sethostname`, …) stay out.
pub const CRUN_AFTER_FILTER: &[&str] = &[
    "access",
    "brk",
    "capset",
    "chdir",
    "close",
    "close_range",
    "execve",
    "exit_group",
    "fchown",
    "fstat",
    "fstatfs",
    "getcwd",
    "lseek",
    "mmap",
    "newfstatat",
    "openat",
    "prctl",
    "pselect6",
    "read",
    "rt_sigprocmask",
    "rt_sigreturn",
    "setgroups",
    "setresgid",
    "setresuid",
    "statx",
    "umask",
    "write",
];

/// One row of the runtime baseline table: what a runtime, in a range of versions, does under the
/// container's filter.
#[derive(Debug, PartialEq, Eq)]
pub struct RuntimeBaseline {
    /// The runtime's name as `Target::runtime` starts with it (`runc`, `crun`).
    pub runtime: &'static str,
    /// Lowest version the row covers, (major, minor).
    pub since: (u32, u32),
    /// First version the row no longer covers, if any.
    pub until: Option<(u32, u32)>,
    /// Where the list comes from, for the report.
    pub source: &'static str,
    pub syscalls: &'static [&'static str],
}

/// The baselines, by runtime and version. Rows for one runtime do not overlap.
pub const RUNTIME_BASELINES: &[RuntimeBaseline] = &[
    RuntimeBaseline {
        runtime: "runc",
        since: (1, 0),
        until: Some((1, 2)),
        source: "measured: runc 1.1.5 on Debian 12, plus Go runtime housekeeping",
        syscalls: RUNC_1_1_AFTER_FILTER,
    },
    RuntimeBaseline {
        runtime: "runc",
        since: (1, 2),
        until: None,
        source: "security-profiles-operator's recorded runc 1.4.2 base profile, plus Go runtime housekeeping",
        syscalls: RUNC_AFTER_FILTER,
    },
    RuntimeBaseline {
        runtime: "crun",
        since: (0, 0),
        until: None,
        source: "crun's source (container_init), checked against security-profiles-operator's crun 1.26 recording",
        syscalls: CRUN_AFTER_FILTER,
    },
];

/// The baseline used when the runtime is unknown (a `.scap` import, static-only analysis): Docker
/// and containerd run runc unless told otherwise, and this row covers every runc version above.
pub const DEFAULT_BASELINE: &RuntimeBaseline = &RUNTIME_BASELINES[1];

/// The baseline for `runtime` as `Target::runtime` spells it (`"runc 1.1.5"`, `"runc version
/// 1.1.5+ds1"`, `"crun 1.26"`). `None` when the runtime is named but not in the table; the caller
/// decides what to do about an unknown runtime.
pub fn runtime_baseline(runtime: &str) -> Option<&'static RuntimeBaseline> {
    let mut words = runtime.split_whitespace();
    let name = words.next()?.to_ascii_lowercase();
    let version = words.find_map(major_minor);
    let mut rows = RUNTIME_BASELINES.iter().filter(|row| row.runtime == name);
    match version {
        Some(version) => rows.find(|row| row.since <= version && row.until.is_none_or(|until| version < until)),
        // No version given: the newest row, whose list is the broadest for runc.
        None => rows.next_back(),
    }
}

/// `1.1.5+ds1-1` → (1, 1).
fn major_minor(word: &str) -> Option<(u32, u32)> {
    let word = word.trim_start_matches('v');
    let mut parts = word.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Syscalls glibc tries first and gives up on when they fail with `ENOSYS` (what every generated
/// profile answers for what it does not allow), with what glibc uses instead: `None` when it simply
/// carries on without (no restartable sequences). `verify` reports such denials as fallbacks, not
/// failures, when the profile allows the fallback.
pub const ENOSYS_FALLBACKS: &[(&str, Option<&str>)] = &[
    ("clone3", Some("clone")),
    ("faccessat2", Some("faccessat")),
    ("close_range", Some("close")),
    ("epoll_pwait2", Some("epoll_pwait")),
    ("rseq", None),
];

/// The ABIs a profile for `arch` lists. On x86_64 these are the entries Docker's own profile uses:
/// the same names then also apply to 32-bit and x32 callers.
pub fn profile_arches(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 | Arch::X86 => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        Arch::Aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls;

    #[test]
    fn every_baseline_name_is_a_real_syscall() {
        for name in ALWAYS_ALLOWED.iter().chain(RUNTIME_BASELINES.iter().flat_map(|row| row.syscalls)) {
            assert!(syscalls::is_known(name), "{name}");
        }
    }

    #[test]
    fn runtimes_are_looked_up_by_name_and_version() {
        for (runtime, expected) in [
            ("runc 1.1.5", Some(RUNC_1_1_AFTER_FILTER)),
            ("runc version 1.1.5+ds1", Some(RUNC_1_1_AFTER_FILTER)),
            ("runc 1.2.3", Some(RUNC_AFTER_FILTER)),
            ("runc v1.4.2", Some(RUNC_AFTER_FILTER)),
            ("runc", Some(RUNC_AFTER_FILTER)),
            ("crun 1.26", Some(CRUN_AFTER_FILTER)),
            ("youki 0.5.1", None),
        ] {
            assert_eq!(runtime_baseline(runtime).map(|row| row.syscalls), expected, "{runtime}");
        }
    }

    #[test]
    fn the_seeds_missing_runtime_syscalls_are_in_the_runc_baselines() {
        // The seed project's crash analysis found these missing from static profiles (prlimit64 came
        // from memcached itself, not from runc).
        for name in ["capget", "capset", "getdents64", "setgroups", "fstatfs", "prctl"] {
            assert!(RUNC_1_1_AFTER_FILTER.contains(&name) && RUNC_AFTER_FILTER.contains(&name), "{name}");
        }
    }

    #[test]
    fn baseline_lists_are_sorted_without_duplicates() {
        for row in RUNTIME_BASELINES {
            assert!(row.syscalls.windows(2).all(|pair| pair[0] < pair[1]), "{}", row.source);
        }
    }
}
