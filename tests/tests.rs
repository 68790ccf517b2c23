//! Integration and end-to-end tests, one binary: the real `seccomp-refine`, the real kernel, real
//! containers. Tests that need root or Docker print "skipping test - <reason>" where those are
//! missing — except under `cargo xtask test`, which provides them and turns a skip into a failure.

#[macro_use]
mod util;

/// The CLI's help, exit codes and one-line errors.
mod cli;
/// Profiles the writer produced, applied by a real Docker daemon; the stand-in images serving.
mod docker_profiles;
/// Static analysis of real binaries (gcc-built, and the stand-in images'), per phase, and its profiles at work.
mod static_analysis;
