//! What each fuzz target feeds its bytes to, shared with the regression test that replays the
//! stored crash inputs on stable (`tests/fuzz_inputs.rs` includes this file), so both exercise
//! exactly the same entry points. Every entry must return (Ok or Err) without panicking,
//! allocating from an untrusted length, or running for long.

use std::io::Cursor;

use seccomp_refine::callgraph::StaticAnalysis;
use seccomp_refine::profile::read::parse_profile;
use seccomp_refine::profile::{Analysis, Profiles};
use seccomp_refine::scap::{self, Focus, Plan};
use seccomp_refine::trace::{MarkerSpec, Trace};
use seccomp_refine::{bitcode, elf};

/// A `.scap` capture, as `import` reads it: every container's trace is built from what was read,
/// counting all containers and, as `--container ID` does, only one.
pub fn scap(data: &[u8]) {
    for focus in [Focus::All, Focus::Container("host".to_owned())] {
        let plan = Plan::new(&MarkerSpec::Auto).expect("auto works on captures");
        if let Ok(capture) = scap::read(Cursor::new(data.to_vec()), plan, focus) {
            for aggregate in capture.aggregates() {
                let trace = capture.trace(aggregate, "fuzz.scap");
                Profiles::from_trace(&trace);
            }
            let _ = capture.select(None);
        }
    }
}

/// An ELF file, as the static analysis reads it: dependencies, identity, then the full summary.
pub fn elf(data: &[u8]) {
    let _ = elf::dependencies(data);
    let _ = elf::identity(data);
    let _ = elf::analyze(data);
}

/// A `trace.json`, and the profiles `profile` makes of it.
pub fn trace_json(data: &[u8]) {
    if let Ok(trace) = Trace::from_slice(data, "fuzz.json".to_owned()) {
        Profiles::from_trace(&trace);
        // The observed argument values become rules only through an analysis.
        Analysis::new(&trace, StaticAnalysis::none(trace.arch)).profiles();
    }
}

/// A Docker/OCI profile, as `diff` and `verify` read it.
pub fn profile_json(data: &[u8]) {
    if let Ok(file) = parse_profile(data, "fuzz.json") {
        let _ = file.is_denylist();
        let _ = file.allowed().count();
        let _ = file.unconditionally_allowed(seccomp_refine::syscalls::Arch::X86_64);
    }
}

/// The bitcode check that runs before LLVM sees a file (LLVM's own reader is not ours to fuzz).
pub fn bitcode(data: &[u8]) {
    let _ = bitcode::producer::read(data);
}
