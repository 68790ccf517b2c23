//! `verify` against real containers: it names the syscall a tightened profile denies, in the right
//! phase and process, and passes the same workload under the untightened profile.

use std::path::{Path, PathBuf};
use std::process::Command;

use seccomp_refine::profile::{ALWAYS_ALLOWED, runtime_baseline};
use seccomp_refine::syscalls::Arch;
use seccomp_refine::trace::{Source, Target, Trace};

use crate::util::{docker, image_missing, output, read_json, seccomp_refine, stderr, stdout};

/// The writer's allowlist of every known syscall except `denied`, made by the real binary from a
/// trace whose init phase used them all. Returns the path of `seccomp.json`.
pub fn allowlist_without(dir: &Path, denied: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "test".into(), Target::default());
    for (_, name) in Arch::X86_64.syscalls().filter(|(_, name)| !denied.contains(name)) {
        trace.phases.init.record(name, 1, 0);
        trace.phases.serving.record(name, 1, 0);
    }
    let trace_path = dir.join("trace.json");
    trace.write(&trace_path).unwrap();
    let out = output(seccomp_refine().arg("profile").arg(&trace_path));
    assert!(out.status.success(), "{}", stderr(&out));
    dir.join("seccomp.json")
}

/// Runs `seccomp-refine verify` and returns (exit code, stdout, the JSON report).
pub fn verify(image: &str, profile: &Path, extra: &[&str]) -> (Option<i32>, String, serde_json::Value) {
    let json = profile.with_extension("verify.json");
    // Tests verify one profile more than once: each run replaces the last report.
    let mut command = seccomp_refine();
    command.args(["verify", "--force", image, "--profile"]).arg(profile).arg("--json").arg(&json).args(extra);
    let out = output(&mut command);
    let text = stdout(&out);
    assert!(json.exists(), "no report written: {}{}", text, stderr(&out));
    (out.status.code(), text, read_json(&json))
}

/// (phase, syscall, process) of each denial that fails the verification (not a libc fallback).
pub fn denials(report: &serde_json::Value) -> Vec<(String, String, String)> {
    let field = |denial: &serde_json::Value, key: &str| denial[key].as_str().unwrap().to_owned();
    let list = report["denials"].as_array().unwrap();
    let failing = list.iter().filter(|denial| denial["fallback"].is_null());
    failing.map(|denial| (field(denial, "phase"), field(denial, "syscall"), field(denial, "process"))).collect()
}

/// (syscall, what libc used instead) of each denial libc fell back from.
fn fallbacks(report: &serde_json::Value) -> Vec<(String, String)> {
    let list = report["denials"].as_array().unwrap();
    let fell_back = list.iter().filter(|denial| !denial["fallback"].is_null());
    let pair = |denial: &serde_json::Value| {
        (denial["syscall"].as_str().unwrap().to_owned(), denial["fallback"].as_str().unwrap().to_owned())
    };
    let mut pairs: Vec<(String, String)> = fell_back.map(pair).collect();
    pairs.dedup();
    pairs
}

fn failed_steps(report: &serde_json::Value) -> Vec<String> {
    let steps = report["workload"]["steps"].as_array().unwrap();
    steps.iter().filter(|step| step["ok"] == false).map(|step| step["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn nginx_default_workload_names_the_one_syscall_a_tightened_profile_denies() {
    require!(image_missing("nginx:latest"));
    let dir = tempfile::tempdir().unwrap();
    let full = allowlist_without(&dir.path().join("full"), &[]);
    let (code, text, report) = verify("nginx:latest", &full, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["started"], true);
    assert_eq!(report["workload"]["steps"].as_array().unwrap().len(), 5, "{text}");
    assert!(denials(&report).is_empty(), "{text}");

    // `nginx -s reload` signals the master with kill(2): nothing else in nginx's life needs it.
    let tight = allowlist_without(&dir.path().join("tight"), &["kill"]);
    let (code, text, report) = verify("nginx:latest", &tight, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(report["started"], true, "{text}");
    assert_eq!(denials(&report), [("serving".into(), "kill".into(), "/usr/sbin/nginx".into())], "{text}");
    assert_eq!(report["denials"][0]["errno"], 38, "the writer denies with ENOSYS");
    assert_eq!(failed_steps(&report), ["nginx -s reload"], "{text}");
    assert!(text.contains("serving  kill (62) errno 38 by /usr/sbin/nginx"), "{text}");
}

#[test]
fn redis_default_workload_exercises_bgsave_and_config_rewrite() {
    require!(image_missing("redis:latest"));
    let dir = tempfile::tempdir().unwrap();
    let full = allowlist_without(&dir.path().join("full"), &[]);
    let (code, text, report) = verify("redis:latest", &full, &[]);
    assert_eq!(code, Some(0), "{text}");
    let names: Vec<&str> =
        report["workload"]["steps"].as_array().unwrap().iter().map(|step| step["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["redis-benchmark", "BGSAVE", "CONFIG REWRITE"]);
    // Like Docker's default, the writer answers clone3 with ENOSYS where clone is allowed: redis's
    // threads start through glibc's fallback, reported as such and not as a failure.
    assert!(denials(&report).is_empty(), "{text}");
    assert_eq!(fallbacks(&report), [("clone3".to_owned(), "clone".to_owned())], "{text}");
    assert!(text.contains("fallback: clone3 answered ENOSYS by the profile"), "{text}");

    // Both the RDB save and the config rewrite finish by renaming a temporary file into place.
    let tight = allowlist_without(&dir.path().join("tight"), &["rename"]);
    let (code, text, report) = verify("redis:latest", &tight, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(failed_steps(&report), ["BGSAVE", "CONFIG REWRITE"], "{text}");
    assert_eq!(denials(&report), [("serving".into(), "rename".into(), "/usr/bin/redis-server".into())], "{text}");
    assert!(report["denials"][0]["count"].as_u64().unwrap() >= 2, "the save child and the second server: {text}");
}

/// An image holding one static program that exits at once: whatever its container needs beyond
/// `exit` is the runtime's. Removed when dropped.
struct ExitImage {
    tag: String,
}

impl ExitImage {
    fn build(dir: &Path) -> ExitImage {
        let source = dir.join("exit0.S");
        std::fs::write(&source, ".globl _start\n_start:\n    mov $60, %eax\n    xor %edi, %edi\n    syscall\n")
            .unwrap();
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let out = output(Command::new("gcc").args(["-static", "-nostdlib", "-o"]).arg(root.join("exit0")).arg(&source));
        assert!(out.status.success(), "gcc: {}", stderr(&out));
        let tarball = dir.join("exit0.tar");
        let out = output(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tarball).arg("exit0"));
        assert!(out.status.success(), "tar: {}", stderr(&out));
        let tag = format!("seccomp-refine-test/exit0:{}", std::process::id());
        docker(&["import", "--change", r#"CMD ["/exit0"]"#, tarball.to_str().unwrap(), &tag]);
        ExitImage { tag }
    }
}

impl Drop for ExitImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.tag]).output();
    }
}

fn daemon_runtime() -> String {
    let runtime = docker(&["info", "--format", "{{.DefaultRuntime}}"]);
    let version = docker(&["version", "--format", "{{range .Server.Components}}{{.Name}} {{.Version}}\n{{end}}"]);
    let line = version.lines().find(|line| line.starts_with(&format!("{runtime} "))).unwrap_or(&runtime);
    line.to_owned()
}

fn profile_of(path: &Path, names: &[&str]) {
    let json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
    });
    std::fs::write(path, json.to_string()).unwrap();
}

#[test]
fn the_runtime_baseline_starts_a_container_and_a_missing_entry_is_named_in_the_runtime_phase() {
    require!(image_missing("nginx:latest"));
    let dir = tempfile::tempdir().unwrap();
    let image = ExitImage::build(dir.path());
    let runtime = daemon_runtime();
    let baseline = runtime_baseline(&runtime).unwrap_or_else(|| panic!("no baseline for the daemon's `{runtime}`"));
    let mut allowed: Vec<&str> = baseline.syscalls.iter().chain(ALWAYS_ALLOWED).copied().collect();
    let enough = dir.path().join("baseline.json");
    profile_of(&enough, &allowed);
    let (code, text, report) = verify(&image.tag, &enough, &["--duration", "1s"]);
    assert_eq!(code, Some(0), "{runtime}: {text}");
    assert_eq!(report["started"], true);

    // runc drops supplementary groups under the filter: the container cannot start without it.
    allowed.retain(|&name| name != "setgroups");
    let short = dir.path().join("short.json");
    profile_of(&short, &allowed);
    let (code, text, report) = verify(&image.tag, &short, &["--duration", "1s"]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(report["started"], false, "{text}");
    assert!(report["start_error"].as_str().unwrap().contains("setgroups"), "{text}");
    let found = denials(&report);
    assert_eq!(found.len(), 1, "{text}");
    assert_eq!((found[0].0.as_str(), found[0].1.as_str()), ("runtime", "setgroups"), "{text}");
    assert!(found[0].2.starts_with("runc"), "runc's init, before it exec'd anything: {text}");
}

#[test]
fn a_shell_workload_sees_where_the_container_is() {
    require!(image_missing("nginx:latest"));
    let dir = tempfile::tempdir().unwrap();
    let full = allowlist_without(&dir.path().join("full"), &[]);
    let workload = r#"test "$SECCOMP_REFINE_PORT" = 80 && curl -sf "http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/" >/dev/null && docker exec "$SECCOMP_REFINE_CONTAINER" true"#;
    let (code, text, report) = verify("nginx:latest", &full, &["--workload", workload]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["workload"]["steps"][0]["ok"], true, "{text}");
    let failing = verify("nginx:latest", &full, &["--workload", "exit 3"]);
    assert_eq!(failing.0, Some(1), "{}", failing.1);
    assert_eq!(failing.2["workload"]["steps"][0]["detail"], "exit 3");
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = output(seccomp_refine().args(["verify", "nginx:latest", "--profile", "/nonexistent/seccomp.json"]));
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing).trim(),
        "seccomp-refine: error: cannot read /nonexistent/seccomp.json: No such file or directory (os error 2)"
    );
    require!(crate::util::docker_missing());
    let profile = allowlist_without(&dir.path().join("full"), &[]);
    let out = output(seccomp_refine().args(["verify", "seccomp-refine-test/absent:none", "--profile"]).arg(&profile));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("image seccomp-refine-test/absent:none is not present"), "{err}");
}
