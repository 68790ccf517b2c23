//! The Kubernetes form of a profile: a security-profiles-operator `SeccompProfile` object.
//!
//! Applied with `kubectl apply -f`, the operator writes the profile to every node's kubelet seccomp
//! directory, and pods refer to it as `localhostProfile: operator/<name>.json` (operators before
//! February 2025 were namespaced: `operator/<namespace>/<name>.json`). The spec follows
//! kubernetes-sigs/security-profiles-operator `api/seccompprofile/v1beta1`: `defaultAction`
//! (required), `architectures`, `syscalls[]` with `names` (at least one), `action` and an integer
//! `errnoRet` (a string before mid-2023). There is no `defaultErrnoRet` field — kubectl's strict field
//! validation would reject it — so denial as `ENOSYS` rests on the explicit `errnoRet` rule.
//!
//! The YAML is written by hand: every scalar is an action, architecture or syscall name (plain
//! words), except the object name (checked against DNS-1123) and annotations (emitted as JSON
//! strings, which are valid YAML double-quoted scalars).

use std::fmt::Write as _;

use super::docker_json::DockerProfile;

/// The `apiVersion` written unless told otherwise: served by every operator release since 2021,
/// while `v1` exists only since mid-2026.
pub const DEFAULT_API_VERSION: &str = "security-profiles-operator.x-k8s.io/v1beta1";

/// What names and labels the object.
pub struct Object<'a> {
    /// `metadata.name`, already a DNS-1123 subdomain (see `object_name`).
    pub name: &'a str,
    pub api_version: &'a str,
    /// Free-text `metadata.annotations`, e.g. the image the profile is for.
    pub annotations: &'a [(&'a str, String)],
}

/// A DNS-1123 subdomain for `metadata.name` derived from an image reference or any label:
/// `docker.io/library/nginx:1.25` → `nginx`.
pub fn object_name(label: &str) -> String {
    let without_digest = label.split('@').next().unwrap_or(label);
    let repository = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let base = repository.split(':').next().unwrap_or(repository);
    let name: String = base
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let name: String = name.chars().take(253).collect();
    if name.is_empty() { "seccomp-refine".to_owned() } else { name }
}

/// The `SeccompProfile` YAML document for `profile`.
pub fn seccomp_profile_yaml(profile: &DockerProfile, object: &Object) -> String {
    let mut yaml = String::new();
    let _ = writeln!(yaml, "# A security-profiles-operator SeccompProfile written by seccomp-refine.");
    let _ = writeln!(yaml, "# kubectl apply -f this file, then in the pod or container securityContext:");
    let _ = writeln!(yaml, "#   seccompProfile: {{type: Localhost, localhostProfile: operator/{}.json}}", object.name);
    let _ = writeln!(yaml, "apiVersion: {}", object.api_version);
    let _ = writeln!(yaml, "kind: SeccompProfile");
    let _ = writeln!(yaml, "metadata:");
    let _ = writeln!(yaml, "  name: {}", object.name);
    if !object.annotations.is_empty() {
        let _ = writeln!(yaml, "  annotations:");
        for (key, value) in object.annotations {
            let _ = writeln!(yaml, "    {key}: {}", serde_json::to_string(value).expect("strings serialize"));
        }
    }
    let _ = writeln!(yaml, "spec:");
    let _ = writeln!(yaml, "  defaultAction: {}", profile.default_action);
    let _ = writeln!(yaml, "  architectures:");
    for arch in &profile.architectures {
        let _ = writeln!(yaml, "    - {arch}");
    }
    let _ = writeln!(yaml, "  syscalls:");
    for rule in profile.syscalls.iter().filter(|rule| !rule.names.is_empty()) {
        let _ = writeln!(yaml, "    - action: {}", rule.action);
        if let Some(errno) = rule.errno_ret {
            let _ = writeln!(yaml, "      errnoRet: {errno}");
        }
        let _ = writeln!(yaml, "      names:");
        for name in &rule.names {
            let _ = writeln!(yaml, "        - {name}");
        }
        if !rule.args.is_empty() {
            let _ = writeln!(yaml, "      args:");
            for arg in &rule.args {
                let _ = writeln!(yaml, "        - index: {}", arg.index);
                let _ = writeln!(yaml, "          value: {}", arg.value);
                let _ = writeln!(yaml, "          valueTwo: {}", arg.value_two);
                let _ = writeln!(yaml, "          op: {}", arg.op);
            }
        }
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Arch;

    #[test]
    fn names_are_dns_subdomains() {
        for (label, expected) in [
            ("nginx:latest", "nginx"),
            ("docker.io/library/Redis:7.0", "redis"),
            ("registry:5000/team/my_app@sha256:abc", "my-app"),
            ("___", "seccomp-refine"),
        ] {
            assert_eq!(object_name(label), expected, "{label}");
        }
    }

    #[test]
    fn rules_without_names_are_left_out() {
        // Every known syscall allowed: the ENOSYS rule is empty, and SPO requires at least one name.
        let all: Vec<&str> = Arch::X86_64.syscalls().chain(Arch::X86.syscalls()).map(|(_, name)| name).collect();
        let profile = DockerProfile::allowlist(Arch::X86_64, all);
        let object = Object { name: "all", api_version: DEFAULT_API_VERSION, annotations: &[] };
        let yaml = seccomp_profile_yaml(&profile, &object);
        assert_eq!(yaml.matches("- action:").count(), 1, "{yaml}");
    }
}
