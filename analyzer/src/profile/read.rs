//! Reading profiles back: the allowlist a Docker or OCI JSON file grants, for `diff` and `verify`.

use std::path::Path;

use super::{DockerProfile, SyscallSet};

/// Why a file could not be read as a profile.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a seccomp profile (Docker or OCI JSON)")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path} is a denylist (defaultAction {action}); only allowlists can be compared")]
    Denylist { path: String, action: String },
    #[error("{path} allows `{name}`, which is no syscall on x86_64, x86 or aarch64; correct the name or remove it")]
    UnknownSyscall { path: String, name: String },
}

/// A profile file as parsed, with the JSON kept for the parts `DockerProfile` does not model
/// (argument conditions).
pub struct ProfileFile {
    pub profile: DockerProfile,
    pub json: serde_json::Value,
}

/// Reads a Docker profile, or an OCI `config.json` (or fragment) holding one under `linux.seccomp`.
pub fn read_profile(path: &Path) -> Result<ProfileFile, ReadError> {
    let display = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io { path: display.clone(), source })?;
    parse_profile(&bytes, &display)
}

/// Parses a profile already in memory; `display` names it in errors.
pub fn parse_profile(bytes: &[u8], display: &str) -> Result<ProfileFile, ReadError> {
    let parse = |source| ReadError::Parse { path: display.to_owned(), source };
    let mut json: serde_json::Value = serde_json::from_slice(bytes).map_err(parse)?;
    if let Some(section) = json.pointer("/linux/seccomp") {
        json = section.clone();
    }
    let profile: DockerProfile = serde_json::from_value(json.clone()).map_err(parse)?;
    if let Some(name) = unknown_allowed(&profile, &json) {
        return Err(ReadError::UnknownSyscall { path: display.to_owned(), name: name.to_owned() });
    }
    Ok(ProfileFile { profile, json })
}

/// The first allowed name no ABI of the profile has: a typo would otherwise pass silently, since
/// runc skips names libseccomp does not resolve. Only checked when every listed architecture is
/// one whose table this tool has, and only in rules without architecture conditions (Docker's
/// default profile allows `arm_fadvise64_64` and the like under `includes.arches`).
fn unknown_allowed<'a>(profile: &'a DockerProfile, json: &serde_json::Value) -> Option<&'a str> {
    const CHECKED: [&str; 4] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"];
    if !profile.architectures.iter().all(|arch| CHECKED.contains(&arch.as_str())) {
        return None;
    }
    let rules = json.get("syscalls").and_then(|rules| rules.as_array())?;
    profile
        .syscalls
        .iter()
        .zip(rules)
        .filter(|(rule, raw)| {
            is_allow_action(&rule.action) && raw.get("includes").is_none() && raw.get("excludes").is_none()
        })
        .flat_map(|(rule, _)| rule.names.iter())
        .find(|name| !crate::syscalls::is_known(name))
        .map(String::as_str)
}

/// The names an allowlist profile allows, under any condition.
pub fn read_allowlist(path: &Path) -> Result<SyscallSet, ReadError> {
    let file = read_profile(path)?;
    if is_allow_action(&file.profile.default_action) {
        return Err(ReadError::Denylist { path: path.display().to_string(), action: file.profile.default_action });
    }
    Ok(file.profile.allowed().map(str::to_owned).collect())
}

/// Actions that let the syscall run (`SCMP_ACT_LOG` allows and logs).
pub fn is_allow_action(action: &str) -> bool {
    matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<SyscallSet, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(&path, json).unwrap();
        read_allowlist(&path).map_err(|err| format!("{:#}", anyhow::Error::from(err)))
    }

    #[test]
    fn docker_and_oci_forms_read_alike() {
        let docker = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":40,"op":"SCMP_CMP_NE"}]},
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#;
        let oci = format!(r#"{{"ociVersion":"1.0.2","linux":{{"seccomp":{docker}}}}}"#);
        let expected: SyscallSet = ["read", "socket", "write"].map(String::from).into();
        assert_eq!(read(docker).unwrap(), expected);
        assert_eq!(read(&oci).unwrap(), expected);
    }

    #[test]
    fn denylists_and_garbage_are_refused_by_name() {
        let err = read(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#).unwrap_err();
        assert!(err.contains("is a denylist (defaultAction SCMP_ACT_ALLOW)"), "{err}");
        let err = read("{").unwrap_err();
        assert!(err.contains("is not a seccomp profile (Docker or OCI JSON)"), "{err}");
    }

    #[test]
    fn an_allowed_name_no_abi_has_is_refused_unless_arch_conditioned() {
        let rules = |extra: &str| {
            format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[
                {{"names":["read","opne"],"action":"SCMP_ACT_ALLOW"{extra}}}]}}"#
            )
        };
        let err = read(&rules("")).unwrap_err();
        assert!(
            err.ends_with(
                "allows `opne`, which is no syscall on x86_64, x86 or aarch64; correct the name or remove it"
            ),
            "{err}"
        );
        assert!(read(&rules(r#","includes":{"arches":["arm"]}"#)).is_ok());
        let denied = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["opne"],"action":"SCMP_ACT_ERRNO"}]}"#;
        assert!(read(denied).is_ok(), "only what is allowed matters");
    }
}
