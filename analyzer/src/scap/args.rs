//! The values of the narrowable arguments (`syscalls::args`) a syscall's events carry.
//!
//! Only where the capture holds the argument as the kernel saw it, or the bits a rule compares
//! unchanged: `socket`'s domain (the driver's `PPM_AF_*` numbers are Linux's `AF_*`, but it also
//! writes `PPM_AF_UNSPEC` for a family it does not know, so 0 counts as unknown) and type,
//! `kill`'s and `tgkill`'s signal, `ioctl`'s request, and the `PROT_EXEC` bit of `mmap` and
//! `mprotect` (`PPM_PROT_EXEC` is the same bit). The driver renumbers `fcntl`'s command,
//! `setsockopt`'s level and name, `clone`'s flags and `prctl`'s option into its own constants:
//! those calls' values are unknown, and the syscall keeps its name-only rule. Exits written by
//! libs ≥ 0.22 drivers carry the arguments; older exits lack them and take them from their enter
//! (`state::EnterArgs`), when it was captured.

use super::event::Event;
use super::kinds::{IOCTL_2_X, IOCTL_3_X, KILL_X, MMAP_X, MPROTECT_X, SOCKET_X, TGKILL_X};
use super::state::EnterArgs;

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

/// The argument values of the call `event` ends, from the exit or else from `enter`, its enter's
/// arguments; `None` unless every narrowable argument of the syscall is there.
#[inline]
pub fn of(event: &Event<'_>, enter: Option<&EnterArgs>) -> Option<EventArgs> {
    // Enter parameters are kept signed; the bits a rule compares are the same either way.
    let exit_or_enter =
        |exit: usize, enter_index: usize| event.unsigned(exit).or_else(|| Some(enter?.int(enter_index)? as u64));
    Some(match event.kind {
        SOCKET_X => {
            EventArgs::of(&[(0, exit_or_enter(1, 0).filter(|&domain| domain != 0)?), (1, exit_or_enter(2, 1)?)])
        }
        KILL_X => EventArgs::of(&[(1, exit_or_enter(2, 1)?)]),
        TGKILL_X => EventArgs::of(&[(2, exit_or_enter(3, 2)?)]),
        IOCTL_3_X => EventArgs::of(&[(1, exit_or_enter(2, 1)?)]),
        IOCTL_2_X => EventArgs::of(&[(1, enter?.int(1)? as u64)]),
        MMAP_X => EventArgs::of(&[(2, exit_or_enter(6, 2)?)]),
        MPROTECT_X => EventArgs::of(&[(2, exit_or_enter(3, 2)?)]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scap::kinds::{IOCTL_2_E, IOCTL_3_E, KILL_E, MMAP_E, MPROTECT_E, SOCKET_E, TGKILL_E};
    use crate::scap::tables::{EVENT_TYPES, PPM_SC_NAMES};

    #[test]
    fn each_type_is_its_syscalls_event_with_the_parameters_read() {
        let events = [
            (SOCKET_X, "socket", 5),
            (KILL_X, "kill", 3),
            (TGKILL_X, "tgkill", 4),
            (MMAP_X, "mmap", 10),
            (IOCTL_3_X, "ioctl", 4),
            (MPROTECT_X, "mprotect", 4),
            (SOCKET_E, "socket", 3),
            (KILL_E, "kill", 2),
            (TGKILL_E, "tgkill", 3),
            (MMAP_E, "mmap", 6),
            (IOCTL_2_E, "ioctl", 2),
            (IOCTL_3_E, "ioctl", 3),
            (MPROTECT_E, "mprotect", 3),
        ];
        for (kind, name, params) in events {
            let event = &EVENT_TYPES[usize::from(kind)];
            assert_eq!((PPM_SC_NAMES[usize::from(event.ppm_sc)], event.params), (name, params), "event {kind}");
        }
    }
}
