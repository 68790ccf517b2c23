use crate::util::{output, seccomp_refine, stderr, stdout};

#[test]
fn help_lists_the_commands_and_exit_codes() {
    let out = output(seccomp_refine().arg("--help"));
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("profile"), "{help}");
    assert!(help.contains("Exit status"), "{help}");
}

#[test]
fn a_missing_trace_is_one_line_and_exit_code_2() {
    let out = output(seccomp_refine().args(["profile", "/nonexistent/trace.json"]));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("seccomp-refine: error: cannot read /nonexistent/trace.json"), "{err}");
}

#[test]
fn a_file_that_is_not_a_trace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    std::fs::write(&path, b"\x1f\x8bgarbage").unwrap();
    let out = output(seccomp_refine().arg("profile").arg(&path));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a seccomp-refine trace"), "{}", stderr(&out));
    assert!(!dir.path().join("seccomp.json").exists(), "nothing is written for bad input");
}
