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
}
