//! From an event to the syscall a seccomp profile must name.
//!
//! Events are not syscalls: sysdig's event names differ from the kernel's (`pread` is `pread64`,
//! `prlimit` is `prlimit64`, the old `accept` events are `accept4`), so names are never taken from
//! the event name. Specific events go through the event → `ppm_sc` map; generic events carry the
//! `ppm_sc` code themselves, with the native x86_64 number as fallback when the code is 0
//! (`PPM_SC_UNKNOWN`). On x86_64 a `ppm_sc` name is the kernel's (and libseccomp's) name, with
//! these exceptions, resolved by [`kernel_name`]:
//! - `umount` events are `umount2`: x86_64 has no `umount` syscall;
//! - 32-bit-only names (`mmap2`, `_llseek`, `stat64`, `fcntl64`, `ugetrlimit`, …) can only come
//!   from ia32 tasks and are reported as compat (x86) syscalls;
//! - `send`/`recv` exist on no x86 ABI as syscalls: an ia32 task reaches them through `socketcall`;
//! - tracepoint codes (`sched_process_exit`, page faults, …) are not syscalls.
//!
//! Older drivers also reported several syscalls through one event; see [`FAMILIES`].

use crate::syscalls::Arch;

use super::tables::{EVENT_TYPES, PPM_SC_NAMES, X86_64_NATIVE};

/// A syscall as a capture identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sys {
    /// A `ppm_sc` code (index into `PPM_SC_NAMES`).
    Code(u16),
    /// A native x86_64 number the driver's tables do not know.
    Native(u16),
    /// A generic event that named no syscall (code 0 and no native number).
    Unknown,
}

/// The generic events, which name their syscall in their parameters.
pub const GENERIC_E: u16 = 0;
pub const GENERIC_X: u16 = 1;

/// Whether events of type `kind` are syscalls (rather than meta events or tracepoints).
pub const fn is_syscall_event(kind: u16) -> bool {
    kind <= GENERIC_X || (kind as usize) < EVENT_TYPES.len() && EVENT_TYPES[kind as usize].ppm_sc != 0
}

/// The syscall of a non-generic syscall event.
#[inline]
pub fn of_event(kind: u16) -> Sys {
    Sys::Code(EVENT_TYPES[usize::from(kind)].ppm_sc)
}

/// The syscall of a generic event from its `ID` (`ppm_sc`) and `nativeID` parameters.
#[inline]
pub fn of_generic(id: Option<u64>, native: Option<u64>) -> Sys {
    let native_code = |nr: u64| {
        let nr = u16::try_from(nr).ok()?;
        let index = X86_64_NATIVE.binary_search_by_key(&nr, |&(number, _)| number);
        Some(index.map_or(Sys::Native(nr), |index| Sys::Code(X86_64_NATIVE[index].1)))
    };
    match (id, native) {
        // 2016-era drivers gave mq_unlink the code 18, which is ptrace's; the number tells them apart.
        (Some(18), Some(241)) => Sys::Code(MQ_UNLINK),
        (Some(code), _) if code != 0 && (code as usize) < PPM_SC_NAMES.len() => Sys::Code(code as u16),
        (_, Some(nr)) => native_code(nr).unwrap_or(Sys::Unknown),
        _ => Sys::Unknown,
    }
}

const MQ_UNLINK: u16 = 182;

/// What a profile calls a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelName {
    /// An x86_64 syscall.
    Native(&'static str),
    /// A 32-bit (ia32) syscall on an x86_64 kernel.
    Compat(&'static str),
    /// No syscall a profile can name; the capture's own name, for the report.
    Not(&'static str),
}

/// The profile name of `sys` on an x86_64 capture (see the module doc for the exceptions).
pub fn kernel_name(sys: Sys) -> KernelName {
    let name = match sys {
        Sys::Code(code) => PPM_SC_NAMES.get(usize::from(code)).copied().unwrap_or("unknown"),
        Sys::Native(nr) => return Arch::X86_64.name(nr.into()).map_or(KernelName::Not("unknown"), KernelName::Native),
        Sys::Unknown => return KernelName::Not("unknown"),
    };
    match name {
        "umount" => KernelName::Native("umount2"),
        "send" | "recv" => KernelName::Compat("socketcall"),
        _ if Arch::X86_64.number(name).is_some() => KernelName::Native(name),
        _ if Arch::X86.number(name).is_some() => KernelName::Compat(name),
        _ => KernelName::Not(name),
    }
}

/// Syscalls an older driver reported through one shared event, before the specific events
/// existed (falcosecurity/libs history: DUP2/DUP3 events 2022-06, PIPE2, EVENTFD2, SIGNALFD4 and
/// INOTIFY_INIT1 2023-03). A capture with the old event and none of the split-out ones may have
/// called any member: all are allowed, which errs on the safe side for an allowlist.
pub struct Family {
    /// The name the old event maps to today.
    pub base: &'static str,
    /// The old shared event types (enter, exit).
    pub old_events: [u16; 2],
    /// Event types that exist only in drivers that report the members apart.
    pub split_events: &'static [u16],
    pub members: &'static [&'static str],
}

pub const FAMILIES: &[Family] = &[
    Family {
        base: "dup",
        old_events: [124, 125],
        split_events: &[362, 363, 364, 365, 366, 367],
        members: &["dup2", "dup3"],
    },
    Family { base: "pipe", old_events: [60, 61], split_events: &[392, 393], members: &["pipe2"] },
    Family { base: "eventfd", old_events: [62, 63], split_events: &[396, 397], members: &["eventfd2"] },
    Family { base: "signalfd", old_events: [126, 127], split_events: &[398, 399], members: &["signalfd4"] },
    Family { base: "inotify_init", old_events: [138, 139], split_events: &[394, 395], members: &["inotify_init1"] },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of_event(kind: u16) -> KernelName {
        kernel_name(of_event(kind))
    }

    #[test]
    fn event_names_become_kernel_names() {
        for (kind, expected) in [
            (3, KernelName::Native("open")),
            (113, KernelName::Native("pread64")),   // sysdig: pread
            (115, KernelName::Native("pwrite64")),  // sysdig: pwrite
            (145, KernelName::Native("prlimit64")), // sysdig: prlimit
            (57, KernelName::Native("accept4")),    // sysdig: accept (old accept4 event)
            (249, KernelName::Native("accept4")),
            (259, KernelName::Native("umount2")), // sysdig: umount
            (387, KernelName::Native("umount2")),
            (163, KernelName::Compat("mmap2")),
            (89, KernelName::Compat("_llseek")),
            (73, KernelName::Compat("stat64")),
            (29, KernelName::Compat("socketcall")), // send
            (33, KernelName::Compat("socketcall")), // recv
        ] {
            assert_eq!(name_of_event(kind), expected, "event {kind}");
        }
    }

    #[test]
    fn meta_events_and_tracepoints_are_not_syscalls() {
        for kind in [16, 17, 146, 148, 149, 186, 228, 232, 272, 290, 324, 354, 402, 450] {
            assert!(!is_syscall_event(kind), "event {kind}");
        }
        for kind in [GENERIC_E, GENERIC_X, 2, 3, 293, 451] {
            assert!(is_syscall_event(kind), "event {kind}");
        }
    }

    #[test]
    fn generic_events_use_the_code_then_the_native_number() {
        assert_eq!(kernel_name(of_generic(Some(296), None)), KernelName::Native("arch_prctl"));
        assert_eq!(kernel_name(of_generic(Some(300), Some(262))), KernelName::Native("newfstatat"));
        // The 2016 capture's `ID 0, nativeID 221`.
        assert_eq!(kernel_name(of_generic(Some(0), Some(221))), KernelName::Native("fadvise64"));
        assert_eq!(kernel_name(of_generic(Some(18), Some(101))), KernelName::Native("ptrace"));
        assert_eq!(kernel_name(of_generic(Some(18), Some(241))), KernelName::Native("mq_unlink"));
        assert_eq!(kernel_name(of_generic(Some(273), None)), KernelName::Compat("ugetrlimit"));
        assert_eq!(of_generic(Some(0), None), Sys::Unknown);
        assert_eq!(kernel_name(of_generic(None, Some(60_000))), KernelName::Not("unknown"));
    }

    #[test]
    fn every_syscall_event_has_a_profile_name() {
        for kind in 2..EVENT_TYPES.len() as u16 {
            if is_syscall_event(kind) {
                let name = name_of_event(kind);
                assert!(!matches!(name, KernelName::Not(_)), "event {kind}: {name:?}");
            }
        }
    }

    #[test]
    fn family_members_are_real_syscalls_and_their_events_exist() {
        for family in FAMILIES {
            for &kind in family.old_events.iter().chain(family.split_events) {
                assert!(is_syscall_event(kind), "{}: event {kind}", family.base);
            }
            assert_eq!(name_of_event(family.old_events[1]), KernelName::Native(family.base));
            for member in family.members {
                assert!(Arch::X86_64.number(member).is_some(), "{member}");
            }
        }
    }
}
