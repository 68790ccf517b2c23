//! Building: the kernel programs (nightly, `bpfel-unknown-none`), the analyzer, and `run`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::machine::{self, as_root, run as run_cmd};
use crate::{images, project_root};

/// bpf-linker ≥ 0.11 needs a system LLVM 22; 0.10.1 uses the nightly toolchain's own LLVM.
const BPF_LINKER_VERSION: &str = "0.10.1";
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// The name of the tracer-ebpf binary target, which is the eBPF object file.
const EBPF_BIN: &str = "seccomp-refine-tracer";

/// Where `build_ebpf` leaves the object; the analyzer's build script embeds it from here.
pub fn ebpf_object() -> PathBuf {
    project_root().join("target/ebpf").join(EBPF_TARGET).join("release").join(EBPF_BIN)
}

/// Installs the nightly `rust-src` component and bpf-linker when missing, then builds tracer-ebpf.
pub fn build_ebpf() -> Result<PathBuf> {
    install_ebpf_toolchain()?;
    run_cmd(&mut ebpf_cargo("build")).context("building tracer-ebpf")?;
    Ok(ebpf_object())
}

/// Clippy over tracer-ebpf as `build_ebpf` compiles it, warnings denied.
pub fn clippy_ebpf() -> Result<()> {
    install_nightly_component("rust-src")?;
    install_nightly_component("clippy")?;
    run_cmd(ebpf_cargo("clippy").args(["--", "-D", "warnings"])).context("clippy on tracer-ebpf")
}

/// `cargo SUBCOMMAND` for tracer-ebpf: nightly, `core` built for `bpfel-unknown-none`, into
/// `target/ebpf`.
fn ebpf_cargo(subcommand: &str) -> Command {
    let root = project_root();
    let mut cargo = Command::new("rustup");
    cargo
        .current_dir(root.join("tracer-ebpf"))
        .args(["run", "nightly", "cargo", subcommand, "--release", "-Z", "build-std=core"])
        .args(["--target", EBPF_TARGET, "--bin", EBPF_BIN])
        .arg("--target-dir")
        .arg(root.join("target/ebpf"))
        // bpf-linker turns debug info into the .BTF/.BTF.ext sections the loader needs. Clippy
        // gets the same flags, so it checks the code the build compiles.
        .env("CARGO_ENCODED_RUSTFLAGS", ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"));
    // The outer `cargo xtask` exports its own toolchain and flags; they must not leak into nightly.
    for var in ["RUSTC", "RUSTC_WRAPPER", "RUSTFLAGS", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"] {
        cargo.env_remove(var);
    }
    cargo
}

fn install_ebpf_toolchain() -> Result<()> {
    install_nightly_component("rust-src")?;
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        println!("xtask: cargo install bpf-linker@{BPF_LINKER_VERSION} --locked");
        run_cmd(
            Command::new("cargo")
                .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--force"])
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    Ok(())
}

fn install_nightly_component(component: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup is needed to build the eBPF programs")?;
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|line| line.starts_with(component)) {
        println!("xtask: rustup component add {component} --toolchain nightly");
        run_cmd(Command::new("rustup").args(["component", "add", component, "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// Debian's LLVM 19, which the analyzer's `bitcode` feature links statically (llvm-sys needs
/// Polly's and zstd's static libraries for that).
const LLVM_PACKAGES: &[&str] = &["llvm-19-dev", "libpolly-19-dev", "libzstd-dev"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-19";

/// `cargo` for the host workspace, with the eBPF object handed to the analyzer's build script
/// and LLVM 19 installed and located for the `bitcode` feature.
pub fn host_cargo(object: &std::path::Path) -> Result<Command> {
    machine::apt_install(LLVM_PACKAGES)?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(project_root()).env("SECCOMP_REFINE_EBPF_OBJECT", object).env("LLVM_SYS_191_PREFIX", LLVM_PREFIX);
    Ok(cargo)
}

/// Builds the kernel programs, then `target/release/seccomp-refine`.
pub fn build_all() -> Result<()> {
    let object = build_ebpf()?;
    run_cmd(host_cargo(&object)?.args(["build", "--release", "--package", "seccomp-refine", "--features", "bitcode"]))
}

/// `cargo xtask run -- ARGS`: build, prepare the machine for the command, run it as root.
pub fn run(args: &[String]) -> Result<()> {
    build_all()?;
    machine::mount_kernel_filesystems()?;
    if needs_docker(args) {
        machine::ensure_docker()?;
        for name in images::STANDINS.iter().filter(|standin| standin.named_in(args)) {
            images::ensure_available(name)?;
        }
    }
    let binary = project_root().join("target/release/seccomp-refine");
    let status = as_root(binary.to_str().context("non-UTF-8 project path")?)
        .args(args)
        .status()
        .context("cannot start seccomp-refine")?;
    if !status.success() {
        bail!("seccomp-refine exited with {status}");
    }
    Ok(())
}

/// Commands that talk to Docker; `trace --exec` runs a host command and does not.
fn needs_docker(args: &[String]) -> bool {
    let Some(command) = args.first() else { return false };
    let docker_command = matches!(command.as_str(), "trace" | "verify" | "analyze");
    docker_command && !args.iter().any(|arg| arg == "--exec")
}
