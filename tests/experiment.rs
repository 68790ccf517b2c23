//! `cargo xtask experiment` end to end on its cheapest whole cell: nginx on bookworm — an image
//! built offline, traced, analysed, verified, enforced at nginx's serving entry, and judged by the
//! built-in HTTP suite with and without the profiles. The full experiment is a command, not a test.

use std::path::PathBuf;
use std::process::Command;

use crate::tracer::tracer_missing;
use crate::util::{docker_missing, output, read_json, stderr, stdout};

/// The xtask binary `cargo xtask` built into this target directory (`target/debug/xtask`).
fn xtask() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // The test binary is target/debug/deps/tests-HASH.
    let xtask = exe.parent()?.parent()?.join("xtask");
    xtask.is_file().then_some(xtask)
}

#[test]
fn the_nginx_bookworm_cell_is_judged_by_its_suite_with_nothing_denied() {
    require!(tracer_missing().or_else(docker_missing));
    let Some(xtask) = xtask() else {
        seccomp_refine::skip_test("target/debug/xtask is missing (run the suite through `cargo xtask test`)");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let run = output(
        Command::new(&xtask)
            .args(["experiment", "nginx", "--releases", "bookworm", "--seccomp-refine"])
            .arg(env!("CARGO_BIN_EXE_seccomp-refine"))
            .arg("--out")
            .arg(out.path()),
    );
    assert!(run.status.success(), "the experiment failed:\n{}\n{}", stdout(&run), stderr(&run));

    let results = read_json(&out.path().join("EXPERIMENTS.json"));
    let cells = results["cells"].as_array().expect("a cells list");
    assert_eq!(cells.len(), 1, "{results:#}");
    let cell = &cells[0];
    assert_eq!((cell["app"].as_str(), cell["release"].as_str()), (Some("nginx"), Some("bookworm")));
    assert!(cell["glibc"].as_str().is_some_and(|glibc| glibc.starts_with("2.36")), "{}", cell["glibc"]);
    let count = |phase: &str| cell["allowed"][phase].as_array().map_or(0, Vec::len);
    let docker_default = cell["docker_default"].as_u64().unwrap() as usize;
    assert!(count("serving") > 0 && count("serving") <= count("container"), "{:#}", cell["allowed"]);
    assert!(count("container") < docker_default, "{} of Docker's {docker_default}", count("container"));

    // The judge: nothing denied anywhere, the serving filter really switched in, the suite ran.
    let empty = |key: &str| cell[key].as_array().is_some_and(Vec::is_empty);
    assert!(empty("denied_verify"), "verify: {}", cell["denied_verify"]);
    assert!(empty("denied_enforce"), "enforce: {}", cell["denied_enforce"]);
    assert!(empty("denied_suite"), "suite: {}", cell["denied_suite"]);
    assert!(
        cell["enforce"].as_str().is_some_and(|enforce| enforce.contains("ngx_process_events_and_timers")),
        "{}",
        cell["enforce"]
    );
    let suite = &cell["suite"];
    assert_eq!(suite["under"], "enforce");
    assert!(suite["failed_more"].as_array().is_some_and(Vec::is_empty), "failed only under the profile: {suite:#}");
    let passed = |run: &str| suite[run]["passed"].as_u64().unwrap_or(0);
    assert!(passed("profiled") >= 15 && passed("profiled") >= passed("unconfined"), "{suite:#}");
    // Everything the container did, in the trace or during the suite, its profiles allow.
    for phase in ["init", "serving", "container"] {
        let recall = cell["scores"][phase]["recall"].as_f64().unwrap();
        assert_eq!(recall, 1.0, "{phase}: observed but not allowed; {:#}", cell["scores"]);
    }

    // `verify --enforce` switched where the trace's stack put the serving entry: the profile
    // directory, written by `analyze -o` apart from the trace, holds the trace and its entry,
    // found running in nginx itself.
    let profiles = out.path().join("cells/nginx-bookworm/profile");
    let entry = seccomp_refine::enforce::derived_entry(&profiles).expect("the profiles' trace has a serving entry");
    assert_eq!(entry.program.as_deref(), Some("/usr/sbin/nginx"), "{entry:?}");

    let markdown = std::fs::read_to_string(out.path().join("EXPERIMENTS.md")).unwrap();
    assert!(markdown.contains("| nginx | bookworm |"), "{markdown}");
    let svg = std::fs::read_to_string(out.path().join("docs/experiments.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("nginx"), "{svg}");
}
