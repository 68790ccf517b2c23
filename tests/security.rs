//! Security: outputs never go through a planted symlink nor over a kept file without `--force`;
//! files of a hostile root filesystem never lead to host files; profiles allow nothing without
//! evidence in `analysis.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/scap/{name}.scap"))
}

/// `import` of a small real capture into `dir`, with `extra` arguments first.
fn import(dir: &Path, extra: &[&str]) -> std::process::Output {
    let capture = fixture("synthetic_modern_exit_only");
    output(seccomp_refine().arg("import").args(extra).args(["--no-static", "-o"]).arg(dir).arg(capture))
}

/// The one line a refused command prints, after checking it exited 2 (bad input or usage).
fn refusal(out: &std::process::Output) -> String {
    failure(out, 2)
}

/// The one line a failed command prints, after checking its exit code.
fn failure(out: &std::process::Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    err.trim().to_owned()
}

#[test]
fn outputs_are_never_written_through_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("profiles");
    std::fs::create_dir(&out_dir).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let planted = out_dir.join("seccomp.json");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let expected = format!(
        "seccomp-refine: error: {} is a symbolic link; refusing to write through it (remove it or choose another \
         --output)",
        planted.display()
    );
    for force in [&[][..], &["--force"][..]] {
        assert_eq!(refusal(&import(&out_dir, force)), expected, "{force:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!out_dir.join("trace.json").exists(), "refused before anything is written");
    }
    // `trace` refuses before it records (or even checks privileges).
    let out = output(seccomp_refine().args(["trace", "--exec", "-o"]).arg(&out_dir).args(["--", "/bin/true"]));
    assert_eq!(refusal(&out), expected);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

#[test]
fn existing_outputs_are_kept_without_force_and_replaced_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("profiles");
    assert!(import(&out_dir, &[]).status.success());
    let profile = out_dir.join("seccomp.json");
    std::fs::write(&profile, "kept").unwrap();
    let exists = |path: &Path| {
        format!(
            "seccomp-refine: error: {} already exists; pass --force to overwrite it, or choose another --output",
            path.display()
        )
    };
    let first = out_dir.join("seccomp-init.json");
    assert_eq!(refusal(&import(&out_dir, &[])), exists(&first));
    let trace = out_dir.join("trace.json");
    assert_eq!(refusal(&output(seccomp_refine().arg("profile").arg(&trace))), exists(&first));
    let out = output(seccomp_refine().args(["analyze", "--rootfs", "/", "--no-cache"]).arg(&trace));
    assert_eq!(refusal(&out), exists(&first));
    let out =
        output(seccomp_refine().args(["trace", "--exec", "--no-static", "-o"]).arg(&out_dir).args(["--", "true"]));
    assert_eq!(refusal(&out), exists(&first));
    assert_eq!(std::fs::read_to_string(&profile).unwrap(), "kept", "nothing was overwritten");
    // `verify --json` refuses before it starts a container.
    let json = dir.path().join("verify.json");
    std::fs::write(&json, "kept").unwrap();
    let out =
        output(seccomp_refine().args(["verify", "nginx:latest", "--profile"]).arg(&profile).arg("--json").arg(&json));
    assert_eq!(refusal(&out), exists(&json));

    let out = import(&out_dir, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read_json(&profile)["defaultAction"], "SCMP_ACT_ERRNO", "replaced with --force");
    let out = output(seccomp_refine().args(["profile", "--force"]).arg(&trace));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_hostile_root_filesystem_never_leads_to_host_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for path in ["bin", "lib/x86_64-linux-gnu", "lib64"] {
        std::fs::create_dir_all(root.join(path)).unwrap();
    }
    std::fs::copy("/usr/bin/true", root.join("bin/true")).unwrap();
    let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    // The host has every one of these targets; the root has none.
    link("/usr/lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libc.so.6");
    link("../../../../../../../../lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2");
    link("/usr/bin/true", "bin/absolute");
    link("../../../../../../../../usr/bin/true", "bin/climb");
    link("loop", "bin/loop");
    let syscalls =
        |path: &str| output(seccomp_refine().args(["syscalls", "--no-cache", "--rootfs"]).arg(root).arg(path));
    let label = root.canonicalize().unwrap();
    for (path, why) in [
        ("/bin/absolute", "no such file"),
        ("/bin/climb", "no such file"),
        ("/bin/loop", "too many levels of symbolic links"),
    ] {
        let expected = format!("seccomp-refine: error: {path} is not analysed: {path}: {why} in {}", label.display());
        assert_eq!(refusal(&syscalls(path)), expected);
    }
    // The program itself is inside; its libraries and loader link out, and are not followed there.
    let out = syscalls("/bin/true");
    let err = stderr(&out);
    assert!(err.contains("/bin/true: needed library libc.so.6 not found"), "{err}");
    let loader = format!(
        "/bin/true: interpreter /lib64/ld-linux-x86-64.so.2 not found: /lib64/ld-linux-x86-64.so.2: too many levels \
         of symbolic links in {}",
        label.display()
    );
    assert!(err.contains(&loader), "{err}");
    assert!(err.contains("0 syscalls;") && stdout(&out).is_empty(), "nothing of the host's libc: {}", stdout(&out));
}

/// The names a profile in Docker JSON (or an OCI `linux.seccomp` section) allows.
fn allowed_json(profile: &Value) -> BTreeSet<String> {
    allowed_rules(profile["syscalls"].as_array().unwrap().iter().map(|rule| (&rule["action"], &rule["names"])))
}

fn allowed_rules<'a>(rules: impl Iterator<Item = (&'a Value, &'a Value)>) -> BTreeSet<String> {
    rules
        .filter(|(action, _)| *action == "SCMP_ACT_ALLOW")
        .flat_map(|(_, names)| names.as_array().unwrap().iter().map(|name| name.as_str().unwrap().to_owned()))
        .collect()
}

/// Every profile file in `dir` allows only what `analysis.json` gives evidence or a reason for.
fn assert_profiles_follow_the_evidence(dir: &Path) {
    let analysis = read_json(&dir.join("analysis.json"));
    let names = |value: &Value| -> BTreeSet<String> {
        value.as_object().map(|map| map.keys().cloned().collect()).unwrap_or_default()
    };
    let granted = &analysis["granted"];
    let always = names(&granted["always"]);
    assert!(always.contains("exit_group") && always.len() == 9, "{always:?}");
    for (name, reason) in granted["always"].as_object().unwrap() {
        assert!(reason.as_str().is_some_and(|reason| reason.len() > 20), "{name} has no reason");
    }
    let baseline: BTreeSet<String> = granted["runtime_baseline"]["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().into())
        .collect();
    assert!(!baseline.is_empty() && granted["runtime_baseline"]["source"].as_str().is_some());
    let phase = |name: &str| names(&analysis["phases"][name]);
    let init: BTreeSet<String> = phase("init").union(&always).cloned().collect();
    let serving: BTreeSet<String> = phase("serving").union(&always).cloned().collect();
    let container: BTreeSet<String> =
        init.iter().chain(&serving).chain(&phase("runtime")).chain(&baseline).cloned().collect();

    let extra = |allowed: BTreeSet<String>, evidence: &BTreeSet<String>| -> Vec<String> {
        allowed.difference(evidence).cloned().collect()
    };
    assert_eq!(extra(allowed_json(&read_json(&dir.join("seccomp-init.json"))), &init), Vec::<String>::new());
    assert_eq!(extra(allowed_json(&read_json(&dir.join("seccomp-serving.json"))), &serving), Vec::<String>::new());
    let docker = allowed_json(&read_json(&dir.join("seccomp.json")));
    assert_eq!(extra(docker.clone(), &container), Vec::<String>::new());
    let oci = allowed_json(&read_json(&dir.join("seccomp.oci.json"))["linux"]["seccomp"]);
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("seccomp.k8s.yaml")).unwrap()).unwrap();
    let kubernetes: BTreeSet<String> = yaml["spec"]["syscalls"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|rule| rule["names"].as_sequence().unwrap().iter().map(|name| name.as_str().unwrap().to_owned()))
        .collect();
    // The OCI and Kubernetes files carry the container profile, name for name.
    assert_eq!((&oci, &kubernetes), (&docker, &docker));
    assert!(docker.len() > always.len(), "the evidence allowed something: {docker:?}");
}

#[test]
fn profiles_of_an_import_allow_nothing_without_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("falco_psp_run_as_user_0_container");
    let out =
        output(seccomp_refine().args(["import", "--rootfs", "/", "--no-cache", "-o"]).arg(dir.path()).arg(capture));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_profiles_follow_the_evidence(dir.path());
}

#[test]
fn profiles_of_a_traced_nginx_allow_nothing_without_evidence() {
    require!(crate::tracer::tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let url = "http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT";
    let out = output(
        seccomp_refine()
            .args([
                "trace",
                "nginx:latest",
                "--duration",
                "30s",
                "--workload",
                &format!("curl -sf {url}/ -o /dev/null"),
            ])
            .arg("-o")
            .arg(dir.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_profiles_follow_the_evidence(dir.path());
}

#[test]
fn the_capabilities_a_trace_lacks_are_named() {
    require!(crate::tracer::tracer_missing());
    let dir = tempfile::tempdir().unwrap();
    let needs =
        "seccomp-refine: error: tracing needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, and this process lacks";
    let fix = "run it as root (sudo) with its capabilities";
    let cases: [(&[&str], &str); 3] = [
        (&["--bounding-set", "-perfmon,-sys_admin"], "CAP_PERFMON and CAP_SYS_ADMIN"),
        (&["--bounding-set", "-bpf,-sys_admin"], "CAP_BPF and CAP_SYS_ADMIN"),
        (&["--reuid", "65534", "--regid", "65534", "--clear-groups"], "CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"),
    ];
    for (setpriv, lacks) in cases {
        let out = output(
            Command::new("setpriv")
                .args(setpriv)
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_seccomp-refine"))
                .args(["trace", "--exec", "--no-static", "-o"])
                .arg(dir.path().join("out"))
                .args(["--", "/bin/true"]),
        );
        // Missing privileges are the machine's state, not bad input: a runtime failure.
        assert_eq!(failure(&out, 1), format!("{needs} {lacks}; {fix}"), "{setpriv:?}");
    }
    // CAP_BPF with CAP_PERFMON is enough: CAP_SYS_ADMIN is not needed.
    let out = output(
        Command::new("setpriv")
            .args(["--bounding-set", "-sys_admin", "--"])
            .arg(env!("CARGO_BIN_EXE_seccomp-refine"))
            .args(["trace", "--exec", "--no-static", "-o"])
            .arg(dir.path().join("out"))
            .args(["--", "/bin/true"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
