//! The OCI runtime-spec form of a profile: the `linux.seccomp` section of a bundle's `config.json`.
//!
//! Runtimes run without Docker (runc, crun, youki, podman's `--security-opt` through containers-common)
//! read the profile from `config.json`. The file holds `{"linux": {"seccomp": …}}`, so it merges into
//! a bundle with `jq -s '.[0] * .[1]' config.json seccomp.oci.json`. The section's fields are the
//! runtime-spec's (`config-linux.md`): `defaultAction`, `defaultErrnoRet`, `architectures`,
//! `syscalls[].names/action/errnoRet`; Docker's extensions (`archMap`, `includes`, `excludes`) are
//! never used, so the rules are the same as in the Docker file.

use serde::Serialize;

use super::docker_json::DockerProfile;

#[derive(Serialize)]
struct ConfigFragment<'a> {
    linux: LinuxSection<'a>,
}

#[derive(Serialize)]
struct LinuxSection<'a> {
    seccomp: &'a DockerProfile,
}

/// `{"linux": {"seccomp": profile}}`, pretty-printed, ending in a newline.
pub fn config_fragment(profile: &DockerProfile) -> String {
    let fragment = ConfigFragment { linux: LinuxSection { seccomp: profile } };
    let mut json = serde_json::to_string_pretty(&fragment).expect("a profile always serializes");
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::Arch;

    #[test]
    fn the_profile_sits_under_linux_seccomp() {
        let profile = DockerProfile::allowlist(Arch::X86_64, ["read"]);
        let value: serde_json::Value = serde_json::from_str(&config_fragment(&profile)).unwrap();
        let seccomp = &value["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(seccomp["syscalls"][0]["names"], serde_json::json!(["read"]));
        assert_eq!(value.as_object().unwrap().len(), 1, "nothing else of config.json is touched");
    }
}
