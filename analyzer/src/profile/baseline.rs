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
        for name in ALWAYS_ALLOWED.iter().chain(RUNC_AFTER_FILTER) {
            assert!(syscalls::is_known(name), "{name}");
        }
    }
}
