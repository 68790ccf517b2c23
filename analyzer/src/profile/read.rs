//! Reading profiles back: the allowlist a Docker or OCI JSON file grants, for `diff`, `verify`
//! and `enforce`, and the same profile with more names allowed. The JSON stays in here: callers
//! ask a `ProfileFile` questions instead of reading its rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::docker_json::ArgMatch;
use super::{DockerProfile, SyscallSet};
use crate::syscalls::Arch;

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
    profile: DockerProfile,
    json: serde_json::Value,
}

impl ProfileFile {
    /// The action of every syscall no rule names.
    pub fn default_action(&self) -> &str {
        &self.profile.default_action
    }

    /// Whether the default lets syscalls run, so the rules list what is denied.
    pub fn is_denylist(&self) -> bool {
        is_allow_action(&self.profile.default_action)
    }

    /// The names a rule allows, under any condition.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.profile.allowed()
    }

    /// Names the profile allows on `arch` whatever the arguments, capabilities or kernel.
    pub fn unconditionally_allowed(&self, arch: Arch) -> SyscallSet {
        let rules = self.json.get("syscalls").and_then(|rules| rules.as_array()).cloned().unwrap_or_default();
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
        let allowed: BTreeSet<String> = if self.is_denylist() {
            arch.syscalls().map(|(_, name)| name.to_owned()).collect()
        } else {
            rules.iter().filter(|rule| is_allow_action(&action(rule)) && !conditional(rule)).flat_map(names).collect()
        };
        let conditional_names: BTreeSet<String> =
            rules.iter().filter(|rule| conditional(rule)).flat_map(names).collect();
        allowed.into_iter().filter(|name| !not_allowing.contains(name) && !conditional_names.contains(name)).collect()
    }

    /// Names allowed only under argument conditions, each with the conditions of every rule that
    /// allows it (a rule's conditions all hold at once; any one rule suffices). A rule whose
    /// conditions do not read as `index`/`value`/`valueTwo`/`op` is `None`. Names some rule
    /// allows unconditionally are left out.
    pub fn argument_rules(&self) -> BTreeMap<String, Vec<Option<Vec<ArgMatch>>>> {
        let rules = self.json.get("syscalls").and_then(|rules| rules.as_array()).cloned().unwrap_or_default();
        let mut conditional: BTreeMap<String, Vec<Option<Vec<ArgMatch>>>> = BTreeMap::new();
        let mut unconditional = BTreeSet::new();
        for rule in &rules {
            let action = rule.get("action").and_then(|action| action.as_str()).unwrap_or("");
            if !is_allow_action(action) || rule.get("includes").is_some() || rule.get("excludes").is_some() {
                continue;
            }
            let listed = rule.get("names").and_then(|names| names.as_array()).cloned().unwrap_or_default();
            let names = listed.iter().chain(rule.get("name")).filter_map(|name| name.as_str());
            let args = rule.get("args").filter(|args| !args.is_null() && args.as_array().is_none_or(|a| !a.is_empty()));
            for name in names {
                match args {
                    None => {
                        unconditional.insert(name.to_owned());
                    }
                    Some(args) => conditional
                        .entry(name.to_owned())
                        .or_default()
                        .push(serde_json::from_value::<Vec<ArgMatch>>(args.clone()).ok()),
                }
            }
        }
        conditional.retain(|name, _| !unconditional.contains(name));
        conditional
    }

    /// This profile with `names` allowed unconditionally: dropped from every other rule (the
    /// writer's explicit ENOSYS rule names them when the trace never saw them), then allowed by a
    /// rule of their own; every other rule, conditions included, kept as it was.
    pub fn with_allowed(mut self, names: &[&str]) -> ProfileFile {
        if let Some(rules) = self.json.get_mut("syscalls").and_then(|rules| rules.as_array_mut()) {
            for rule in rules.iter_mut() {
                if let Some(listed) = rule.get_mut("names").and_then(|listed| listed.as_array_mut()) {
                    listed.retain(|name| !names.contains(&name.as_str().unwrap_or_default()));
                }
            }
            rules.retain(|rule| rule["names"].as_array().is_none_or(|listed| !listed.is_empty()));
            rules.push(serde_json::json!({"names": names, "action": "SCMP_ACT_ALLOW"}));
        } else {
            self.json["syscalls"] = serde_json::json!([{"names": names, "action": "SCMP_ACT_ALLOW"}]);
        }
        self.profile = serde_json::from_value(self.json.clone()).expect("a profile read back still parses");
        self
    }

    /// The profile as JSON text (a Docker profile, also when it was read from an OCI section),
    /// for the Docker API.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.json).expect("JSON values serialize")
    }
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
    if file.is_denylist() {
        return Err(ReadError::Denylist { path: path.display().to_string(), action: file.profile.default_action });
    }
    Ok(file.allowed().map(str::to_owned).collect())
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
