//! The (syscall, argument) pairs whose values a profile may narrow: one line per pair.
//!
//! Each pair names the argument (0-based, as seccomp's `args[]` and Docker's `index` count) and
//! the bits of it a rule compares. Integer arguments (`int`, `unsigned int` in the kernel's
//! prototype) are compared in their low 32 bits only: the x86-64 ABI leaves the upper half of a
//! 32-bit argument undefined and the kernel ignores it, so a rule on the whole register could deny
//! a call the kernel would see as allowed. Flag words are compared under the mask of the flags
//! that matter for security (namespaces, `PROT_EXEC`); the other bits stay free.

/// Which bits of an argument a rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// An `int`-sized value, compared exactly (`SCMP_CMP_MASKED_EQ` over the low 32 bits).
    Value,
    /// Only the bits of this mask (`SCMP_CMP_MASKED_EQ`).
    Flags(u64),
}

impl ArgKind {
    /// The bits compared.
    pub fn mask(self) -> u64 {
        match self {
            ArgKind::Value => 0xffff_ffff,
            ArgKind::Flags(mask) => mask,
        }
    }
}

/// One narrowable argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgPair {
    pub syscall: &'static str,
    pub index: u8,
    pub kind: ArgKind,
    /// What the argument is, for `explain` and the docs.
    pub meaning: &'static str,
}

/// `SOCK_TYPE_MASK`: the socket type without `SOCK_NONBLOCK` and `SOCK_CLOEXEC`.
const SOCK_TYPE: u64 = 0xf;
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET | CLONE_NEWTIME`.
const CLONE_NAMESPACES: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x80;
const PROT_EXEC: u64 = 0x4;

/// The pairs. `clone3` is absent on purpose: its flags live in memory a filter cannot read, and
/// where `clone` is allowed `clone3` already gets `ENOSYS`, so glibc falls back to `clone`.
pub const ARG_PAIRS: &[ArgPair] = &[
    ArgPair { syscall: "socket", index: 0, kind: ArgKind::Value, meaning: "domain" },
    ArgPair { syscall: "socket", index: 1, kind: ArgKind::Flags(SOCK_TYPE), meaning: "type (without flags)" },
    ArgPair { syscall: "clone", index: 0, kind: ArgKind::Flags(CLONE_NAMESPACES), meaning: "namespace flags" },
    ArgPair { syscall: "prctl", index: 0, kind: ArgKind::Value, meaning: "option" },
    ArgPair { syscall: "personality", index: 0, kind: ArgKind::Value, meaning: "persona" },
    ArgPair { syscall: "mprotect", index: 2, kind: ArgKind::Flags(PROT_EXEC), meaning: "PROT_EXEC" },
    ArgPair { syscall: "mmap", index: 2, kind: ArgKind::Flags(PROT_EXEC), meaning: "PROT_EXEC" },
    ArgPair { syscall: "pkey_mprotect", index: 2, kind: ArgKind::Flags(PROT_EXEC), meaning: "PROT_EXEC" },
    ArgPair { syscall: "ioctl", index: 1, kind: ArgKind::Value, meaning: "request" },
    ArgPair { syscall: "fcntl", index: 1, kind: ArgKind::Value, meaning: "command" },
    ArgPair { syscall: "setsockopt", index: 1, kind: ArgKind::Value, meaning: "level" },
    ArgPair { syscall: "setsockopt", index: 2, kind: ArgKind::Value, meaning: "option name" },
    ArgPair { syscall: "getsockopt", index: 1, kind: ArgKind::Value, meaning: "level" },
    ArgPair { syscall: "getsockopt", index: 2, kind: ArgKind::Value, meaning: "option name" },
    ArgPair { syscall: "kill", index: 1, kind: ArgKind::Value, meaning: "signal" },
    ArgPair { syscall: "tgkill", index: 2, kind: ArgKind::Value, meaning: "signal" },
    ArgPair { syscall: "madvise", index: 2, kind: ArgKind::Value, meaning: "advice" },
];

/// The pairs of `syscall`, in argument order.
pub fn pairs_of(syscall: &str) -> impl Iterator<Item = &'static ArgPair> + '_ {
    ARG_PAIRS.iter().filter(move |pair| pair.syscall == syscall)
}

/// Names the constants of `libc` by their own identifiers.
macro_rules! named {
    ($($name:ident),* $(,)?) => { &[$((libc::$name as u64, stringify!($name))),*] };
}

const FAMILIES: &[(u64, &str)] =
    named![AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK, AF_BLUETOOTH, AF_CAN, AF_XDP];
const SOCKET_TYPES: &[(u64, &str)] = named![SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET];
const SIGNALS: &[(u64, &str)] = named![
    SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE,
    SIGALRM, SIGTERM, SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ,
    SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS,
];
const FCNTL_COMMANDS: &[(u64, &str)] = named![
    F_DUPFD,
    F_GETFD,
    F_SETFD,
    F_GETFL,
    F_SETFL,
    F_GETLK,
    F_SETLK,
    F_SETLKW,
    F_SETOWN,
    F_GETOWN,
    F_OFD_GETLK,
    F_OFD_SETLK,
    F_OFD_SETLKW,
    F_SETLEASE,
    F_GETLEASE,
    F_NOTIFY,
    F_DUPFD_CLOEXEC,
    F_SETPIPE_SZ,
    F_GETPIPE_SZ,
    F_ADD_SEALS,
    F_GET_SEALS,
];
const PRCTL_OPTIONS: &[(u64, &str)] = named![
    PR_SET_PDEATHSIG,
    PR_GET_PDEATHSIG,
    PR_GET_DUMPABLE,
    PR_SET_DUMPABLE,
    PR_GET_KEEPCAPS,
    PR_SET_KEEPCAPS,
    PR_SET_NAME,
    PR_GET_NAME,
    PR_GET_SECCOMP,
    PR_SET_SECCOMP,
    PR_CAPBSET_READ,
    PR_CAPBSET_DROP,
    PR_SET_MM,
    PR_SET_CHILD_SUBREAPER,
    PR_GET_CHILD_SUBREAPER,
    PR_SET_NO_NEW_PRIVS,
    PR_GET_NO_NEW_PRIVS,
    PR_SET_THP_DISABLE,
    PR_GET_THP_DISABLE,
    PR_CAP_AMBIENT,
];
const MADVICE: &[(u64, &str)] = named![
    MADV_NORMAL,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_WILLNEED,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_REMOVE,
    MADV_DONTFORK,
    MADV_DOFORK,
    MADV_MERGEABLE,
    MADV_UNMERGEABLE,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MADV_DONTDUMP,
    MADV_DODUMP,
    MADV_HWPOISON,
];
const PROT: &[(u64, &str)] = &[(0, "no PROT_EXEC"), (PROT_EXEC, "PROT_EXEC")];

/// The constant's name of `value` (masked) in argument `index` of `syscall`, where the argument
/// takes named constants and the value is one of the common ones: for `explain` and the report.
pub fn value_name(syscall: &str, index: u8, value: u64) -> Option<&'static str> {
    let names = match (syscall, index) {
        ("socket", 0) => FAMILIES,
        ("socket", 1) => SOCKET_TYPES,
        ("kill", 1) | ("tgkill", 2) => SIGNALS,
        ("fcntl", 1) => FCNTL_COMMANDS,
        ("prctl", 0) => PRCTL_OPTIONS,
        ("madvise", 2) => MADVICE,
        ("mmap" | "mprotect" | "pkey_mprotect", 2) => PROT,
        _ => return None,
    };
    names.iter().find(|(known, _)| *known == value).map(|(_, name)| *name)
}

/// `value` in hex, with its constant's name where `value_name` knows it: `0x2 AF_INET`.
pub fn show_value(syscall: &str, index: u8, value: u64) -> String {
    match value_name(syscall, index, value) {
        Some(name) => format!("{value:#x} {name}"),
        None => format!("{value:#x}"),
    }
}

/// The largest value set a rule lists: past it the rules (one per value) cost more than they
/// narrow, and the syscall stays allowed by name.
pub const MAX_VALUES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Arch;

    #[test]
    fn every_pair_names_a_syscall_and_a_real_argument() {
        for pair in ARG_PAIRS {
            assert!(Arch::X86_64.number(pair.syscall).is_some(), "{} is no x86_64 syscall", pair.syscall);
            assert!(pair.index < 6 && pair.kind.mask() != 0, "{pair:?}");
        }
        assert_eq!(CLONE_NAMESPACES, 0x7e02_0080);
        assert!(pairs_of("clone3").next().is_none(), "clone3 keeps its ENOSYS fallback");
    }

    #[test]
    fn common_values_are_shown_with_their_constants_name() {
        assert_eq!(show_value("socket", 0, 2), "0x2 AF_INET");
        assert_eq!(show_value("socket", 1, 5), "0x5 SOCK_SEQPACKET");
        assert_eq!(show_value("tgkill", 2, 19), "0x13 SIGSTOP");
        assert_eq!(show_value("fcntl", 1, 1030), "0x406 F_DUPFD_CLOEXEC");
        assert_eq!(show_value("mmap", 2, 4), "0x4 PROT_EXEC");
        assert_eq!(show_value("ioctl", 1, 0x5401), "0x5401", "requests are not named");
    }
}
