//! Every deployable file for a set of profiles, written in one go into the profile directory.
//!
//! Docker JSON per phase (`seccomp-init.json`, `seccomp-serving.json`, `seccomp.json`), and for the
//! container profile — the one a runtime applies at start — its OCI `config.json` section
//! (`seccomp.oci.json`) and its Kubernetes `SeccompProfile` (`seccomp.k8s.yaml`).

use std::path::{Path, PathBuf};

use super::kubernetes::{self, Object};
use super::{DockerProfile, Profiles, oci};
use crate::syscalls;

/// File names of the formats beyond the Docker JSON, for docs and tests.
pub const OCI_FILE: &str = "seccomp.oci.json";
pub const KUBERNETES_FILE: &str = "seccomp.k8s.yaml";

/// How the Kubernetes object is named.
pub struct OutputOptions {
    /// A label for the application, usually the image (`nginx:latest`); the object name is derived
    /// from it and it is recorded as an annotation.
    pub label: String,
    /// The `SeccompProfile` apiVersion (`kubernetes::DEFAULT_API_VERSION` unless the cluster's
    /// operator wants another).
    pub kubernetes_api_version: String,
}

impl Profiles {
    /// The container profile as Docker reads it (known names only, like the written files).
    pub fn container_profile(&self) -> DockerProfile {
        let known = self.container.iter().map(String::as_str).filter(|name| syscalls::is_known(name));
        DockerProfile::allowlist_with_args(self.arch, known, &self.container_args)
    }

    /// Writes every format into `dir` (created if needed) and returns the paths written: the three
    /// Docker files first, then `seccomp.oci.json` and `seccomp.k8s.yaml`.
    pub fn write_all(&self, dir: &Path, options: &OutputOptions) -> std::io::Result<Vec<PathBuf>> {
        let mut written = self.write_docker_json(dir)?;
        let container = self.container_profile();
        let oci_path = dir.join(OCI_FILE);
        crate::output::write(&oci_path, oci::config_fragment(&container).as_bytes())?;
        written.push(oci_path);
        let name = kubernetes::object_name(&options.label);
        let annotations = [("seccomp-refine/for", options.label.clone())];
        let object = Object { name: &name, api_version: &options.kubernetes_api_version, annotations: &annotations };
        let yaml_path = dir.join(KUBERNETES_FILE);
        crate::output::write(&yaml_path, kubernetes::seccomp_profile_yaml(&container, &object).as_bytes())?;
        written.push(yaml_path);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{SyscallSet, kubernetes::DEFAULT_API_VERSION};
    use crate::syscalls::Arch;

    #[test]
    fn every_format_carries_the_container_profile() {
        let set = |names: &[&str]| -> SyscallSet { names.iter().map(|&name| name.to_owned()).collect() };
        let profiles = Profiles::from_sets(Arch::X86_64, set(&["bind"]), set(&["accept4"]), set(&["capset"]));
        let dir = tempfile::tempdir().unwrap();
        let options =
            OutputOptions { label: "nginx:latest".into(), kubernetes_api_version: DEFAULT_API_VERSION.into() };
        let written = profiles.write_all(dir.path(), &options).unwrap();
        let names: Vec<_> = written.iter().map(|path| path.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["seccomp-init.json", "seccomp-serving.json", "seccomp.json", OCI_FILE, KUBERNETES_FILE]);
        let docker: serde_json::Value = serde_json::from_slice(&std::fs::read(&written[2]).unwrap()).unwrap();
        let oci: serde_json::Value = serde_json::from_slice(&std::fs::read(&written[3]).unwrap()).unwrap();
        assert_eq!(oci["linux"]["seccomp"], docker);
        let yaml = std::fs::read_to_string(&written[4]).unwrap();
        assert!(yaml.contains("\n  name: nginx\n"), "{yaml}");
        assert!(yaml.contains("        - accept4\n") && yaml.contains("        - capset\n"), "{yaml}");
    }
}
