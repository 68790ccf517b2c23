//! `cargo xtask test`: every test, on a machine prepared for them.
//!
//! It first holds the code to its style: `rustfmt` over every workspace (the host one, the kernel
//! programs', the fuzz targets'), and clippy with warnings denied over the host workspace (with the
//! `bitcode` feature, so the LLVM front end is linted too), over the kernel programs with their own
//! toolchain and target, and over the fuzz targets.
//!
//! The suite needs what the product needs: the eBPF object, root, tracefs and bpffs, a Docker
//! daemon, the stand-in images, LLVM 19 and nginx's and redis's bitcode. xtask provides all of it, then runs
//! `cargo test` over the workspace with the `bitcode` feature. It sets `SECCOMP_REFINE_REQUIRE_PRIVILEGED=1`, which turns the privileged tests'
//! "skipping test - <reason>" into a failure: here nothing they need may be missing.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::machine::{self, is_root, run};
use crate::{bitcode, build, images, project_root};

/// Workspaces `rustfmt` checks: the host one, and the two that build with nightly on their own.
const FORMATTED: &[&str] = &["Cargo.toml", "tracer-ebpf/Cargo.toml", "fuzz/Cargo.toml"];

pub fn run_tests(extra: &[String]) -> Result<()> {
    // Formatting compiles nothing: it fails in a second, before anything is built.
    for manifest in FORMATTED {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo).current_dir(project_root()).args([
            "fmt",
            "--all",
            "--check",
            "--manifest-path",
            manifest,
        ]))
        .with_context(|| format!("`cargo fmt --all --manifest-path {manifest}` would change files"))?;
    }
    let object = build::build_ebpf()?;
    build::clippy_ebpf()?;
    let clippy = ["clippy", "--workspace", "--all-targets", "--features", "seccomp-refine/bitcode"];
    run(build::host_cargo(&object)?.args(clippy).args(["--", "-D", "warnings"]))?;
    // The fuzz targets check on stable; in the host's target directory they share its dependencies.
    let fuzz = ["clippy", "--manifest-path", "fuzz/Cargo.toml", "--all-targets", "--target-dir", "target"];
    run(build::host_cargo(&object)?.args(fuzz).args(["--", "-D", "warnings"]))?;
    machine::mount_kernel_filesystems()?;
    machine::ensure_docker()?;
    images::build(&[])?;
    // The suite analyses nginx's and redis's bitcode (about 40 s each to build, cached after).
    bitcode::build(&[])?;
    let mut cargo = build::host_cargo(&object)?;
    cargo
        .args(["test", "--workspace", "--features", "seccomp-refine/bitcode"])
        .env("SECCOMP_REFINE_REQUIRE_PRIVILEGED", "1");
    if !is_root() {
        // Build as the user, run the test binaries as root (the aya way).
        cargo.args(["--config", r#"target.'cfg(all())'.runner = "sudo -E""#]);
    }
    run(cargo.args(extra))
}
