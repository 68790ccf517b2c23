//! Every output format checked by something other than our writer: Docker runs containers under
//! each JSON profile, `oci-spec` and a YAML parser read the OCI and Kubernetes files, headless
//! Chromium renders the report, and `diff` compares what `profile` wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use seccomp_refine::syscalls::Arch;
use seccomp_refine::trace::{Source, Target, Trace};

use crate::util::{image_missing, output, read_json, seccomp_refine, stderr, stdout};

/// A trace of nginx-like shape: init uses every known syscall but `mount`, serving a short list.
fn write_trace(dir: &Path, serving: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let target = Target { image: Some("nginx:latest".into()), runtime: Some("runc 1.1.5".into()), ..Target::default() };
    let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "6.18".into(), target);
    for (_, name) in Arch::X86_64.syscalls().filter(|(_, name)| *name != "mount") {
        trace.phases.init.record(name, 1, 0);
    }
    for name in serving {
        trace.phases.serving.record(name, 1, 0);
    }
    trace.phase_marker.spec = "symbol:ngx_process_events_and_timers".into();
    trace.phase_marker.fired = true;
    trace.lost_events = 3;
    let path = dir.join("trace.json");
    trace.write(&path).unwrap();
    path
}

fn profile(trace: &Path) -> PathBuf {
    let out = output(seccomp_refine().arg("profile").arg(trace));
    assert!(out.status.success(), "{}", stderr(&out));
    trace.parent().unwrap().to_path_buf()
}

const SERVING: &[&str] = &["accept4", "close", "epoll_wait", "read", "recvfrom", "writev"];

#[test]
fn docker_runs_a_container_under_every_json_we_emit() {
    require!(image_missing("nginx:latest"));
    let dir = tempfile::tempdir().unwrap();
    // Serving allows everything init does, so each profile is enough for `true` to run to the end.
    let all: Vec<&str> = Arch::X86_64.syscalls().map(|(_, name)| name).filter(|&name| name != "mount").collect();
    let profiles = profile(&write_trace(&dir.path().join("p"), &all));
    let oci = read_json(&profiles.join("seccomp.oci.json"));
    let oci_section = profiles.join("oci-section.json");
    std::fs::write(&oci_section, oci["linux"]["seccomp"].to_string()).unwrap();
    for file in ["seccomp-init.json", "seccomp-serving.json", "seccomp.json", "oci-section.json"] {
        let seccomp = format!("seccomp={}", profiles.join(file).display());
        let out =
            output(Command::new("docker").args(["run", "--rm", "--security-opt", &seccomp, "nginx:latest", "true"]));
        assert!(out.status.success(), "{file}: {}", stderr(&out));
    }
    // The check can fail: Docker refuses a profile it cannot decode.
    let broken = profiles.join("broken.json");
    std::fs::write(&broken, r#"{"defaultAction": 7}"#).unwrap();
    let seccomp = format!("seccomp={}", broken.display());
    let out = output(Command::new("docker").args(["run", "--rm", "--security-opt", &seccomp, "nginx:latest", "true"]));
    assert!(!out.status.success());
}

#[test]
fn the_oci_section_reads_as_a_runtime_spec_linux_seccomp() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = profile(&write_trace(&dir.path().join("p"), SERVING));
    let value = read_json(&profiles.join("seccomp.oci.json"));
    let seccomp: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(value["linux"]["seccomp"].clone()).unwrap();
    assert_eq!(seccomp.default_action(), oci_spec::runtime::LinuxSeccompAction::ScmpActErrno);
    assert_eq!(seccomp.default_errno_ret(), Some(38));
    let arches = seccomp.architectures().clone().unwrap();
    assert_eq!(
        arches,
        [
            oci_spec::runtime::Arch::ScmpArchX86_64,
            oci_spec::runtime::Arch::ScmpArchX86,
            oci_spec::runtime::Arch::ScmpArchX32
        ]
    );
    let rules = seccomp.syscalls().clone().unwrap();
    assert_eq!(rules[0].action(), oci_spec::runtime::LinuxSeccompAction::ScmpActAllow);
    assert!(rules[0].names().contains(&"bind".to_owned()) && !rules[0].names().contains(&"mount".to_owned()));
    assert_eq!(
        (rules[1].action(), rules[1].errno_ret()),
        (oci_spec::runtime::LinuxSeccompAction::ScmpActErrno, Some(38))
    );
    assert!(rules[1].names().contains(&"mount".to_owned()));
}

/// The checks security-profiles-operator's CRD (`seccompprofiles.security-profiles-operator.x-k8s.io`,
/// version v1beta1) makes: required fields, types and enums of what we emit.
#[test]
fn the_kubernetes_file_has_the_seccompprofile_crd_shape() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = profile(&write_trace(&dir.path().join("p"), SERVING));
    let text = std::fs::read_to_string(profiles.join("seccomp.k8s.yaml")).unwrap();
    let object: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(object["apiVersion"], "security-profiles-operator.x-k8s.io/v1beta1");
    assert_eq!(object["kind"], "SeccompProfile");
    let name = object["metadata"]["name"].as_str().unwrap();
    assert_eq!(name, "nginx");
    assert_eq!(object["metadata"]["annotations"]["seccomp-refine/for"], "nginx:latest");
    let spec = &object["spec"];
    let actions = [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    ];
    assert!(actions.contains(&spec["defaultAction"].as_str().unwrap()));
    let keys: Vec<&str> = spec.as_mapping().unwrap().keys().map(|key| key.as_str().unwrap()).collect();
    assert_eq!(keys, ["defaultAction", "architectures", "syscalls"], "no field the CRD lacks (defaultErrnoRet)");
    for arch in spec["architectures"].as_sequence().unwrap() {
        assert!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"].contains(&arch.as_str().unwrap()));
    }
    let rules = spec["syscalls"].as_sequence().unwrap();
    assert_eq!(rules.len(), 2);
    for rule in rules {
        assert!(actions.contains(&rule["action"].as_str().unwrap()), "{rule:?}");
        let names = rule["names"].as_sequence().unwrap();
        assert!(!names.is_empty() && names.iter().all(|name| name.is_string()), "names: min 1, strings");
        if let Some(errno) = rule.get("errnoRet") {
            assert_eq!(errno.as_u64(), Some(38), "errnoRet is an integer ≥ 0");
        }
    }
    let allowed: Vec<&str> =
        rules[0]["names"].as_sequence().unwrap().iter().map(|name| name.as_str().unwrap()).collect();
    let docker = read_json(&profiles.join("seccomp.json"));
    assert_eq!(
        serde_json::to_value(&allowed).unwrap(),
        docker["syscalls"][0]["names"],
        "same allowlist as seccomp.json"
    );
}

fn chromium(args: &[&str], user_data: &Path) -> std::process::Output {
    let profile_dir = format!("--user-data-dir={}", user_data.display());
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        &profile_dir,
    ]);
    output(command.args(args))
}

/// The `data-count`s of the chart's bars, as the browser's DOM has them.
fn bar_counts(dom: &str) -> Vec<(String, usize)> {
    let chart = &dom[dom.find("<svg id=\"phase-chart\"").expect("the chart is in the DOM")..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    chart
        .split("<rect ")
        .skip(1)
        .map(|rect| {
            let attribute = |name: &str| {
                let start = rect.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                rect[start..start + rect[start..].find('"').unwrap()].to_owned()
            };
            (attribute("data-label"), attribute("data-count").parse().unwrap())
        })
        .collect()
}

#[test]
fn report_html_renders_in_headless_chromium_with_the_chart() {
    let found = Command::new("chromium").arg("--version").output().is_ok_and(|out| out.status.success());
    require!((!found).then(|| "chromium is not installed (apt-get install chromium)".to_owned()));
    let dir = tempfile::tempdir().unwrap();
    let profiles = profile(&write_trace(&dir.path().join("p"), SERVING));
    let html = profiles.join("report.html");
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(!text.contains("<script") && !text.contains("http://") && !text.contains("https://"), "self-contained");
    let url = format!("file://{}", html.display());

    let dom = chromium(&["--dump-dom", &url], &dir.path().join("chromium-dom"));
    assert!(dom.status.success(), "{}", stderr(&dom));
    let init = read_json(&profiles.join("seccomp-init.json"))["syscalls"][0]["names"].as_array().unwrap().len();
    let serving = read_json(&profiles.join("seccomp-serving.json"))["syscalls"][0]["names"].as_array().unwrap().len();
    let container = read_json(&profiles.join("seccomp.json"))["syscalls"][0]["names"].as_array().unwrap().len();
    assert_eq!(
        bar_counts(&stdout(&dom)),
        [
            ("Docker default".to_owned(), 309),
            ("container (seccomp.json)".to_owned(), container),
            ("init".to_owned(), init),
            ("serving".to_owned(), serving)
        ]
    );
    assert_eq!(serving, SERVING.len() + seccomp_refine::profile::ALWAYS_ALLOWED.len());

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = chromium(
        &[&format!("--screenshot={}", screenshot.display()), "--window-size=1000,900", &url],
        &dir.path().join("chromium-shot"),
    );
    assert!(shot.status.success(), "{}", stderr(&shot));
    println!("report screenshot: {}", screenshot.display());
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 900));
    assert!(png.len() > 20_000, "a rendered page, not a blank one: {} bytes", png.len());
}

#[test]
fn diff_lists_added_and_removed_syscalls_per_phase_with_ci_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_trace(&dir.path().join("old"), SERVING);
    let new = write_trace(&dir.path().join("new"), &["accept4", "close", "epoll_wait", "read", "sendfile", "writev"]);
    let out = output(seccomp_refine().arg("diff").arg(&old).arg(&new));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "init: same 384 syscalls\nruntime: same 0 syscalls\nserving: +1 -1 (6 → 6 syscalls)\n  + sendfile\n  - recvfrom\n"
    );

    // Profile directories written by `profile`, and a directory against a trace.
    let (old_dir, new_dir) = (profile(&old), profile(&new));
    let out = output(seccomp_refine().arg("diff").arg(&old_dir).arg(&new_dir));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("serving: +1 -1"), "{}", stdout(&out));
    let out = output(seccomp_refine().arg("diff").arg(&old_dir).arg(&old));
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let out = output(seccomp_refine().arg("diff").arg(old_dir.join("seccomp.json")).arg(new_dir.join("seccomp.json")));
    // Every x86_64 syscall but clone3, which the profiles answer with ENOSYS where clone is allowed.
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), "container: same 383 syscalls\n".to_owned()));

    let out = output(seccomp_refine().arg("diff").arg(&old).arg(dir.path().join("absent.json")));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1);
}

#[test]
fn precision_measures_a_profile_against_several_traces_and_fails_below_full_recall() {
    let dir = tempfile::tempdir().unwrap();
    let own = write_trace(&dir.path().join("own"), SERVING);
    let profiles = profile(&own);
    let out = output(seccomp_refine().arg("precision").arg(&profiles).arg(&own).arg("--json"));
    assert!(out.status.success(), "{}", stderr(&out));
    let measured: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let serving = &measured["serving"];
    let allowed = read_json(&profiles.join("seccomp-serving.json"))["syscalls"][0]["names"].as_array().unwrap().len();
    assert_eq!((serving["allowed"].as_u64(), serving["observed"].as_u64()), (Some(allowed as u64), Some(6)));
    assert_eq!(serving["recall"], 1.0);
    assert_eq!(serving["precision"].as_f64().unwrap(), 6.0 / allowed as f64);
    assert!(serving["static_only"].is_null(), "no analysis.json: no static-only count");

    // A wider run served with sendfile too: the serving profile would deny it.
    let wide = write_trace(&dir.path().join("wide"), &["accept4", "sendfile"]);
    let out = output(seccomp_refine().arg("precision").arg(&profiles).arg(&own).arg(&wide));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let serving = stdout(&out).lines().find(|line| line.starts_with("serving: ")).unwrap().to_owned();
    assert!(
        serving.contains("recall 0.86") && serving.ends_with("RECALL BELOW 1: denies observed sendfile"),
        "{serving}"
    );
    assert!(stderr(&out).contains("seccomp-serving.json denies what the traces observed in serving: sendfile"));
    assert!(stdout(&out).lines().any(|line| line.starts_with("init: ") && line.contains("recall 1.00")));
}
