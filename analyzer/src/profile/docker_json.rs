//! The Docker / OCI seccomp profile format (moby `profiles/seccomp`, runtime-spec `linux.seccomp`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::baseline::profile_arches;
use crate::syscalls::Arch;

/// `ENOSYS`: what a denied syscall returns. glibc treats it as "this kernel lacks the call" and
/// falls back (`clone3` → `clone`, `faccessat2` → `faccessat`, `statx` → `newfstatat`, …), where
/// Docker's default `EPERM` would make those fallbacks fail.
pub const ERRNO_ENOSYS: u32 = 38;

/// The ABIs whose syscall names a profile for `arch` covers.
fn covered_abis(arch: Arch) -> &'static [Arch] {
    match arch {
        Arch::X86_64 | Arch::X86 => &[Arch::X86_64, Arch::X86],
        Arch::Aarch64 => &[Arch::Aarch64],
    }
}

/// One argument of a narrowed syscall: under `mask` it equals one of `values`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgCondition {
    pub index: u8,
    pub mask: u64,
    pub values: Vec<u64>,
}

/// The syscalls of one file allowed only with these arguments (all conditions hold at once);
/// a name in the file's set but not here is allowed whatever its arguments.
pub type ArgRules = BTreeMap<String, Vec<ArgCondition>>;

/// A seccomp profile as Docker reads it from `--security-opt seccomp=FILE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerProfile {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<SyscallRule>,
}

/// One rule: these names get this action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold (Docker ANDs them). Written, never
    /// read: profiles from elsewhere spell them in more ways (`null`, other operators), so
    /// `read::ProfileFile` reads them from the JSON it keeps.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgMatch>,
}

/// One argument condition as Docker and the OCI runtime-spec write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgMatch {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

impl DockerProfile {
    /// Allow exactly `names` (sorted, deduplicated); everything else fails with `ENOSYS`.
    ///
    /// `defaultErrnoRet` says so, but Docker 20.10 (Debian bookworm's) drops that field and would
    /// return `EPERM`; it does honour a rule's `errnoRet`. So every other syscall the profile's
    /// ABIs know is also named in an explicit `ENOSYS` rule, which gives the same answer on every
    /// Docker version. Syscalls newer than our tables still get the default action.
    pub fn allowlist<'a>(arch: Arch, names: impl IntoIterator<Item = &'a str>) -> DockerProfile {
        let allowed: BTreeSet<String> = names.into_iter().map(str::to_owned).collect();
        let denied: BTreeSet<String> = covered_abis(arch)
            .iter()
            .flat_map(|abi| abi.syscalls().map(|(_, name)| name))
            .filter(|name| !allowed.contains(*name))
            .map(str::to_owned)
            .collect();
        DockerProfile {
            default_action: "SCMP_ACT_ERRNO".to_owned(),
            default_errno_ret: Some(ERRNO_ENOSYS),
            architectures: profile_arches(arch).iter().map(|&arch| arch.to_owned()).collect(),
            syscalls: vec![
                SyscallRule {
                    names: allowed.into_iter().collect(),
                    action: "SCMP_ACT_ALLOW".to_owned(),
                    errno_ret: None,
                    args: Vec::new(),
                },
                SyscallRule {
                    names: denied.into_iter().collect(),
                    action: "SCMP_ACT_ERRNO".to_owned(),
                    errno_ret: Some(ERRNO_ENOSYS),
                    args: Vec::new(),
                },
            ],
        }
    }

    /// Like `allowlist`, with the names of `args` allowed only with those arguments: one rule per
    /// combination of values (Docker ANDs a rule's conditions, so a set of values for one argument
    /// takes one rule per value). A narrowed name is in no `ENOSYS` rule: a call with other
    /// arguments gets the default action (`ENOSYS`, or `EPERM` on Docker 20.10, which drops
    /// `defaultErrnoRet`), as an explicit `ENOSYS` rule for the name would override its
    /// conditional ones.
    pub fn allowlist_with_args<'a>(
        arch: Arch,
        names: impl IntoIterator<Item = &'a str>,
        args: &ArgRules,
    ) -> DockerProfile {
        let names: Vec<&str> = names.into_iter().collect();
        let mut profile = DockerProfile::allowlist(arch, names.iter().copied());
        let narrowed: Vec<(&String, &Vec<ArgCondition>)> =
            args.iter().filter(|(name, _)| names.contains(&name.as_str())).collect();
        for rule in &mut profile.syscalls {
            rule.names.retain(|name| !args.contains_key(name));
        }
        for (name, conditions) in narrowed {
            let mut combinations: Vec<Vec<ArgMatch>> = vec![Vec::new()];
            for condition in conditions {
                combinations = combinations
                    .into_iter()
                    .flat_map(|prefix| {
                        condition.values.iter().map(move |&value| {
                            let mut rule = prefix.clone();
                            rule.push(ArgMatch {
                                index: u32::from(condition.index),
                                value: condition.mask,
                                value_two: value & condition.mask,
                                op: "SCMP_CMP_MASKED_EQ".to_owned(),
                            });
                            rule
                        })
                    })
                    .collect();
            }
            for args in combinations {
                profile.syscalls.push(SyscallRule {
                    names: vec![name.clone()],
                    action: "SCMP_ACT_ALLOW".to_owned(),
                    errno_ret: None,
                    args,
                });
            }
        }
        profile
    }

    /// The allowed names, whatever rules they are spread over.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.syscalls
            .iter()
            .filter(|rule| rule.action == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule.names.iter().map(String::as_str))
    }

    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a profile always serializes");
        json.push('\n');
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_has_docker_shape() {
        let profile = DockerProfile::allowlist(Arch::X86_64, ["write", "read", "write"]);
        let value: serde_json::Value = serde_json::from_str(&profile.to_json()).unwrap();
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(value["defaultErrnoRet"], 38);
        assert_eq!(value["architectures"], serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
        assert_eq!(value["syscalls"][0], serde_json::json!({"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}));
        let enosys = &value["syscalls"][1];
        assert_eq!(
            (&enosys["action"], &enosys["errnoRet"]),
            (&serde_json::json!("SCMP_ACT_ERRNO"), &serde_json::json!(38))
        );
        let denied: Vec<&str> = enosys["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap()).collect();
        assert!(denied.contains(&"clone3") && denied.contains(&"socketcall"), "x86_64 and i386 names");
        assert!(!denied.contains(&"read"));
        let parsed: DockerProfile = serde_json::from_value(value).unwrap();
        assert_eq!(parsed.allowed().collect::<Vec<_>>(), ["read", "write"]);
    }
}
