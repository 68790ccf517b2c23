//! Which syscall numbers the perf watch records: every number the profile might deny, plus the
//! calls runtimes install filters with (`prctl`, `seccomp`), which put runc's init thread between
//! two known syscalls before anything can be denied (see `denials`).

use crate::profile::read::ProfileFile;
use crate::syscalls::Arch;

/// The numbers on `arch` to watch, sorted.
pub fn watched_numbers(file: &ProfileFile, arch: Arch) -> Vec<u32> {
    let allowed = file.unconditionally_allowed(arch);
    arch.syscalls()
        .filter(|(_, name)| !allowed.contains(*name) || matches!(*name, "prctl" | "seccomp"))
        .map(|(number, _)| number)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::profile::read::parse_profile;

    fn watched(json: &str) -> BTreeSet<&'static str> {
        let file = parse_profile(json.as_bytes(), "test.json").unwrap();
        watched_numbers(&file, Arch::X86_64).into_iter().map(|nr| Arch::X86_64.name(nr).unwrap()).collect()
    }

    #[test]
    fn allowlists_watch_everything_not_allowed_outright() {
        let names = watched(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write","prctl"],"action":"SCMP_ACT_ALLOW"},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":40,"op":"SCMP_CMP_NE"}]}]}"#,
        );
        assert!(!names.contains("read") && !names.contains("write"));
        assert!(names.contains("socket"), "allowed only for some arguments");
        assert!(names.contains("mkdir") && names.contains("prctl") && names.contains("seccomp"));
    }

    #[test]
    fn denylists_watch_what_they_deny() {
        let names =
            watched(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#);
        assert_eq!(names, BTreeSet::from(["mkdir", "prctl", "seccomp"]));
    }
}
