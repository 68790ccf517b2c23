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
    let parse = |source| ReadError::Parse { path: display.clone(), source };
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).map_err(parse)?;
    if let Some(section) = json.pointer("/linux/seccomp") {
        json = section.clone();
    }
    let profile: DockerProfile = serde_json::from_value(json.clone()).map_err(parse)?;
    Ok(ProfileFile { profile, json })
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
}
