//! The values of the narrowable arguments (`syscalls::args`) a syscall exit event carries.
//!
//! Only where the capture holds the argument as the kernel saw it, or the bits a rule compares
//! unchanged: `socket`'s domain (the driver's `PPM_AF_*` numbers are Linux's `AF_*`, but it also
//! writes `PPM_AF_UNSPEC` for a family it does not know, so 0 counts as unknown) and type,
//! `kill`'s and `tgkill`'s signal, `ioctl`'s request, and the `PROT_EXEC` bit of `mmap` and
//! `mprotect` (`PPM_PROT_EXEC` is the same bit). The driver renumbers `fcntl`'s command,
//! `setsockopt`'s level and name, `clone`'s flags and `prctl`'s option into its own constants,
//! and exits written by drivers before libs 0.22 lack the arguments (their enters carry them):
//! the values of those calls are unknown, and the syscall keeps its name-only rule.

use super::event::Event;

const SOCKET_X: u16 = 19;
const KILL_X: u16 = 129;
const TGKILL_X: u16 = 133;
const MMAP_X: u16 = 161;
const IOCTL_3_X: u16 = 171;
const MPROTECT_X: u16 = 329;

/// Up to two (argument index, value) pairs of one call, not yet masked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventArgs {
    values: [(u8, u64); 2],
    len: u8,
}

impl EventArgs {
    fn of(values: &[(u8, u64)]) -> EventArgs {
        let mut args = EventArgs::default();
        for (slot, value) in args.values.iter_mut().zip(values) {
            *slot = *value;
            args.len += 1;
        }
        args
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.values[..usize::from(self.len)].iter().copied()
    }
}

/// The argument values `event` carries, when it is an exit that carries every narrowable argument
/// of its syscall; `None` for any other event.
#[inline]
pub fn of(event: &Event<'_>) -> Option<EventArgs> {
    Some(match event.kind {
        SOCKET_X => EventArgs::of(&[(0, event.unsigned(1).filter(|&domain| domain != 0)?), (1, event.unsigned(2)?)]),
        KILL_X => EventArgs::of(&[(1, event.unsigned(2)?)]),
        TGKILL_X => EventArgs::of(&[(2, event.unsigned(3)?)]),
        IOCTL_3_X => EventArgs::of(&[(1, event.unsigned(2)?)]),
        MMAP_X => EventArgs::of(&[(2, event.unsigned(6)?)]),
        MPROTECT_X => EventArgs::of(&[(2, event.unsigned(3)?)]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scap::tables::{EVENT_TYPES, PPM_SC_NAMES};

    #[test]
    fn each_type_is_its_syscalls_exit_with_the_parameters_read() {
        let exits = [
            (SOCKET_X, "socket", 5),
            (KILL_X, "kill", 3),
            (TGKILL_X, "tgkill", 4),
            (MMAP_X, "mmap", 10),
            (IOCTL_3_X, "ioctl", 4),
            (MPROTECT_X, "mprotect", 4),
        ];
        for (kind, name, params) in exits {
            let event = &EVENT_TYPES[usize::from(kind)];
            assert_eq!((PPM_SC_NAMES[usize::from(event.ppm_sc)], event.params), (name, params), "event {kind}");
        }
    }
}
