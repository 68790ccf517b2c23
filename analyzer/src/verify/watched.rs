//! Which syscall numbers the perf watch records: every number the profile might deny, plus the
//! calls runtimes install filters with (`prctl`, `seccomp`), which put runc's init thread between
//! two known syscalls before anything can be denied (see `denials`).

use std::collections::BTreeSet;

use crate::profile::read::{ProfileFile, is_allow_action};
use crate::syscalls::Arch;

/// Names the profile allows whatever the arguments, capabilities or kernel.
fn unconditionally_allowed(file: &ProfileFile, arch: Arch) -> BTreeSet<String> {
    let rules = file.json.get("syscalls").and_then(|rules| rules.as_array()).cloned().unwrap_or_default();
    let names = |rule: &serde_json::Value| -> Vec<String> {
        let listed = rule.get("names").and_then(|names| names.as_array()).cloned().unwrap_or_default();
        let single = rule.get("name").cloned().into_iter();
        listed.into_iter().chain(single).filter_map(|name| name.as_str().map(str::to_owned)).collect()
    };
    let conditional = |rule: &serde_json::Value| {
        let has = |key: &str| {
            rule.get(key).is_some_and(|value| {
                !value.is_null() && value != &serde_json::json!([]) && value != &serde_json::json!({})
            })
        };
        has("args") || has("includes") || has("excludes")
    };
    let action =
        |rule: &serde_json::Value| rule.get("action").and_then(|action| action.as_str()).unwrap_or("").to_owned();
    let not_allowing: BTreeSet<String> =
        rules.iter().filter(|rule| !is_allow_action(&action(rule))).flat_map(names).collect();
    let allowed: BTreeSet<String> = if is_allow_action(&file.profile.default_action) {
        arch.syscalls().map(|(_, name)| name.to_owned()).collect()
    } else {
        rules.iter().filter(|rule| is_allow_action(&action(rule)) && !conditional(rule)).flat_map(names).collect()
    };
    let conditional_names: BTreeSet<String> = rules.iter().filter(|rule| conditional(rule)).flat_map(names).collect();
    allowed.into_iter().filter(|name| !not_allowing.contains(name) && !conditional_names.contains(name)).collect()
}

/// The numbers on `arch` to watch, sorted.
pub fn watched_numbers(file: &ProfileFile, arch: Arch) -> Vec<u32> {
    let allowed = unconditionally_allowed(file, arch);
    arch.syscalls()
        .filter(|(_, name)| !allowed.contains(*name) || matches!(*name, "prctl" | "seccomp"))
        .map(|(number, _)| number)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DockerProfile;

    fn watched(json: &str) -> BTreeSet<&'static str> {
        let json: serde_json::Value = serde_json::from_str(json).unwrap();
        let profile: DockerProfile = serde_json::from_value(json.clone()).unwrap();
        let file = ProfileFile { profile, json };
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
