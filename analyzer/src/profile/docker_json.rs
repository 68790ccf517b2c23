//! The Docker / OCI seccomp profile format (moby `profiles/seccomp`, runtime-spec `linux.seccomp`).

use std::collections::BTreeSet;

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
                },
                SyscallRule {
                    names: denied.into_iter().collect(),
                    action: "SCMP_ACT_ERRNO".to_owned(),
                    errno_ret: Some(ERRNO_ENOSYS),
                },
            ],
        }
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
