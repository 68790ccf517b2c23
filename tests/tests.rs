//! Integration and end-to-end tests, one binary: the real `seccomp-refine`, the real kernel, real
//! containers. Tests that need root or Docker print "skipping test - <reason>" where those are
//! missing — except under `cargo xtask test`, which provides them and turns a skip into a failure.

#[macro_use]
mod util;

/// Argument-level rules: C programs with known, branch-chosen and input-dependent arguments.
mod arguments;
/// The bad-input table of `docs/faults.md`: hostile files, missing images and containers, a failing workload.
mod bad_input;
/// LLVM bitcode analysis of C programs compiled here by clang-19.
mod bitcode;
/// `analyze`/`trace --bitcode`: bitcode for the application, real libraries, exact sets, nginx and redis at work.
mod bitcode_analyze;
/// The CLI's help, exit codes and one-line errors.
mod cli;
/// Profiles the writer produced, applied by a real Docker daemon; the stand-in images serving.
mod docker_profiles;
/// `enforce`: live containers switched to their serving profile at the marker, by the real kernel.
mod enforce;
/// `cargo xtask experiment` on one cell (nginx, bookworm): built, traced, enforced, judged by its suite.
mod experiment;
/// Faults while tracing: signals, the container or daemon going away, a full disk, two traces at once.
mod faults;
/// The inputs the fuzzers once crashed on, and their seeds, through the fuzz targets' entry points.
mod fuzz_inputs;
/// Every output format: Docker accepts the JSON, OCI/Kubernetes shapes, the report in Chromium, `diff`.
mod outputs;
/// Precision rules of the binary analysis: exact sets per rule (gcc, clang-19), the stand-ins not growing.
mod precision;
/// `.scap` import: the captures in `tests/data/scap/` against sysdig's reference output, damage, the CLI.
mod scap;
/// Outputs never through symlinks nor over kept files; hostile roots; profiles only from evidence.
mod security;
/// Static analysis of real binaries (gcc-built, and the stand-in images'), per phase, and its profiles at work.
mod static_analysis;
/// The live eBPF tracer: exact per-phase sets with `--exec`, containers, attach, errors.
mod tracer;
/// `verify` on real containers: denials named with phase and process; built-in and shell workloads.
mod verify;
