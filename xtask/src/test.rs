//! `cargo xtask test`: every test, on a machine prepared for them.
//!
//! The suite needs what the product needs: the eBPF object, root, tracefs and bpffs, a Docker
//! daemon, the stand-in images, LLVM 19 and nginx's and redis's bitcode. xtask provides all of it, then runs
//! `cargo test` over the workspace with the `bitcode` feature. It sets `SECCOMP_REFINE_REQUIRE_PRIVILEGED=1`, which turns the privileged tests'
//! "skipping test - <reason>" into a failure: here nothing they need may be missing.

use anyhow::Result;

use crate::machine::{self, is_root, run};
use crate::{bitcode, build, images};

pub fn run_tests(extra: &[String]) -> Result<()> {
    let object = build::build_ebpf()?;
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
