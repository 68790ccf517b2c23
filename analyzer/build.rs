//! Embeds the tracer's eBPF object, built beforehand by `cargo xtask build-ebpf`.
//!
//! Building the kernel programs needs nightly rustc and bpf-linker, which a plain `cargo build` of
//! the host workspace should not require. xtask builds the object and passes its path in
//! `SECCOMP_REFINE_EBPF_OBJECT`; without it, the default output path is tried. When no object
//! exists the analyzer still builds (every other command works) and `trace` explains how to get
//! one: `cfg(tracer_object)` says which case applies.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tracer_object)");
    println!("cargo::rerun-if-env-changed=SECCOMP_REFINE_EBPF_OBJECT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let object = std::env::var_os("SECCOMP_REFINE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target/ebpf/bpfel-unknown-none/release/seccomp-refine-tracer"));
    println!("cargo::rerun-if-changed={}", object.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("tracer.bpf.o");
    match std::fs::copy(&object, &out) {
        Ok(_) => println!("cargo::rustc-cfg=tracer_object"),
        Err(_) => println!(
            "cargo::warning=no eBPF object at {}: `trace` will be unavailable; build with `cargo xtask build`",
            object.display()
        ),
    }
}
