//! Event types by what the importer does with them: the `PPME_*` ids (from
//! `driver/ppm_events_public.h`) that need handling of their own, and one precomputed set of
//! [`Action`] bits per type, so that the per-event path asks a table instead of matching lists.

use super::names::is_syscall_event;
use super::tables::EVENT_TYPES;

pub const OPEN_E: u16 = 2;
pub const OPEN_X: u16 = 3;
pub const CLOSE_E: u16 = 4;
pub const CLOSE_X: u16 = 5;
pub const PROCEXIT_E: u16 = 16;
pub const SOCKET_E: u16 = 18;
pub const SOCKET_X: u16 = 19;
pub const CREAT_E: u16 = 58;
pub const CREAT_X: u16 = 59;
pub const IOCTL_2_E: u16 = 90;
pub const IOCTL_2_X: u16 = 91;
pub const CHDIR_X: u16 = 95;
pub const FCHDIR_E: u16 = 96;
pub const FCHDIR_X: u16 = 97;
pub const OPENAT_E: u16 = 102;
pub const OPENAT_X: u16 = 103;
pub const DUP_E: u16 = 124;
pub const DUP_X: u16 = 125;
pub const KILL_E: u16 = 128;
pub const KILL_X: u16 = 129;
pub const TGKILL_E: u16 = 132;
pub const TGKILL_X: u16 = 133;
pub const DROP_E: u16 = 148;
pub const DROP_X: u16 = 149;
pub const FCNTL_E: u16 = 150;
pub const FCNTL_X: u16 = 151;
pub const MMAP_E: u16 = 160;
pub const MMAP_X: u16 = 161;
pub const MMAP2_E: u16 = 162;
pub const MMAP2_X: u16 = 163;
pub const IOCTL_3_E: u16 = 170;
pub const IOCTL_3_X: u16 = 171;
pub const PROCEXIT_1_E: u16 = 186;
pub const CONTAINER_E: u16 = 228;
pub const CONTAINER_JSON_E: u16 = 272;
pub const EXECVE_18_E: u16 = 288;
pub const EXECVE_19_E: u16 = 292;
pub const EXECVE_19_X: u16 = 293;
pub const OPENAT_2_E: u16 = 306;
pub const OPENAT_2_X: u16 = 307;
pub const CONTAINER_JSON_2_E: u16 = 324;
pub const MPROTECT_E: u16 = 328;
pub const MPROTECT_X: u16 = 329;
pub const OPENAT2_E: u16 = 326;
pub const OPENAT2_X: u16 = 327;
pub const EXECVEAT_E: u16 = 330;
pub const EXECVEAT_X: u16 = 331;
pub const OPEN_BY_HANDLE_AT_X: u16 = 337;
pub const DUP2_E: u16 = 362;
pub const DUP2_X: u16 = 363;
pub const DUP3_E: u16 = 364;
pub const DUP3_X: u16 = 365;
pub const DUP_1_E: u16 = 366;
pub const DUP_1_X: u16 = 367;
pub const ASYNCEVENT_E: u16 = 402;
pub const CLOSE_RANGE_X: u16 = 451;
/// The exits that open a file by name.
pub const OPEN_XS: [u16; 6] = [OPEN_X, CREAT_X, OPENAT_X, OPENAT_2_X, OPENAT2_X, OPEN_BY_HANDLE_AT_X];
/// Every execve/execveat exit version.
pub const EXEC_X: [u16; 9] = [13, 155, 173, 215, 231, 283, 289, 293, EXECVEAT_X];
/// Every clone, fork and vfork exit version.
const CLONE_X: [u16; 11] = [15, 157, 183, 185, 217, 219, 221, 223, 225, 227, 335];
/// Exits that change files, mappings, programs or the working directory, besides opens and execs.
const OTHER_EFFECTS: [u16; 11] =
    [CLOSE_X, CLOSE_RANGE_X, DUP_X, DUP_1_X, DUP2_X, DUP3_X, FCNTL_X, MMAP_X, MMAP2_X, CHDIR_X, FCHDIR_X];
/// Enters that carry arguments their old exits lack (files, fds, programs; and the narrowable
/// arguments `args` reads).
const ARGUMENT_ENTERS: [u16; 23] = [
    OPEN_E,
    CREAT_E,
    EXECVE_18_E,
    EXECVE_19_E,
    OPENAT_E,
    OPENAT_2_E,
    OPENAT2_E,
    EXECVEAT_E,
    MMAP_E,
    MMAP2_E,
    CLOSE_E,
    FCHDIR_E,
    DUP_E,
    DUP_1_E,
    DUP2_E,
    DUP3_E,
    FCNTL_E,
    SOCKET_E,
    KILL_E,
    TGKILL_E,
    IOCTL_2_E,
    IOCTL_3_E,
    MPROTECT_E,
];
/// The meta events the importer reads (drops, container metadata, thread ends).
const META: [u16; 8] =
    [DROP_E, DROP_X, CONTAINER_E, CONTAINER_JSON_E, CONTAINER_JSON_2_E, ASYNCEVENT_E, PROCEXIT_E, PROCEXIT_1_E];

/// What the importer does with events of one type, as bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action(u8);

impl Action {
    /// A syscall: counted.
    pub const SYSCALL: Action = Action(1);
    /// An exit that changes the fd table, the working directory, or names a program or library.
    pub const EFFECTS: Action = Action(2);
    /// An exit that may introduce a thread (clone family, exec).
    pub const INTRODUCES: Action = Action(4);
    /// An enter whose arguments an old exit lacks.
    pub const ARGUMENTS: Action = Action(8);
    /// A meta event the importer reads.
    pub const META: Action = Action(16);
    /// A clone-family exit.
    pub const CLONE: Action = Action(32);
    /// An exit whose first parameter is the syscall's signed result.
    pub const RESULT: Action = Action(64);

    #[inline]
    pub const fn has(self, bits: Action) -> bool {
        self.0 & bits.0 != 0
    }

    /// A syscall that changes no state: only counting (and the thread's pending enter) needs it.
    #[inline]
    pub const fn counts_only(self) -> bool {
        self.0 & (Action::EFFECTS.0 | Action::INTRODUCES.0 | Action::ARGUMENTS.0) == 0
    }

    /// Events that need their parameters checked and their event read: syscalls and `META`.
    #[inline]
    pub const fn wanted(self) -> bool {
        self.0 & (Action::SYSCALL.0 | Action::META.0) != 0
    }

    const fn with(self, bits: Action, when: bool) -> Action {
        if when { Action(self.0 | bits.0) } else { self }
    }
}

/// The action of every event type, indexed by type.
pub static ACTIONS: [Action; EVENT_TYPES.len()] = actions();

/// The action of `kind`, which must be below `EVENT_TYPES.len()` (the event decoder checks).
#[inline]
pub fn action(kind: u16) -> Action {
    ACTIONS[usize::from(kind)]
}

const fn actions() -> [Action; EVENT_TYPES.len()] {
    let mut table = [Action(0); EVENT_TYPES.len()];
    let mut index = 0;
    while index < table.len() {
        let kind = index as u16;
        let clone = member(&CLONE_X, kind);
        let exec = member(&EXEC_X, kind);
        table[index] = Action(0)
            .with(Action::SYSCALL, is_syscall_event(kind))
            .with(Action::EFFECTS, exec || member(&OPEN_XS, kind) || member(&OTHER_EFFECTS, kind))
            .with(Action::INTRODUCES, clone || exec)
            .with(Action::ARGUMENTS, member(&ARGUMENT_ENTERS, kind))
            .with(Action::META, member(&META, kind))
            .with(Action::CLONE, clone)
            .with(Action::RESULT, EVENT_TYPES[index].result);
        index += 1;
    }
    table
}

const fn member(list: &[u16], kind: u16) -> bool {
    let mut index = 0;
    while index < list.len() {
        if list[index] == kind {
            return true;
        }
        index += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scap::names::GENERIC_E;

    #[test]
    fn every_special_type_is_a_syscall_exit_or_enter_of_the_right_direction() {
        for kind in OPEN_XS.iter().chain(&EXEC_X).chain(&CLONE_X).chain(&OTHER_EFFECTS) {
            let action = action(*kind);
            assert!(action.has(Action::SYSCALL) && kind % 2 == 1 && !action.counts_only(), "exit {kind}");
        }
        for kind in ARGUMENT_ENTERS {
            assert!(action(kind).has(Action::SYSCALL) && kind % 2 == 0 && !action(kind).counts_only(), "enter {kind}");
        }
        for kind in META {
            assert!(action(kind).wanted() && !action(kind).has(Action::SYSCALL), "meta {kind}");
        }
        const READ_X: u16 = 7;
        const SCHEDSWITCH_6_E: u16 = 152;
        assert!(action(READ_X).counts_only() && action(READ_X).has(Action::RESULT));
        assert!(action(GENERIC_E).counts_only() && action(GENERIC_E).wanted());
        assert!(!action(SCHEDSWITCH_6_E).wanted());
    }
}
