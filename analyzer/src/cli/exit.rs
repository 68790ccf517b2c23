//! Exit codes and last-resort error output: which errors are the user's input (2) and which are
//! the run's own failure (1), and the panic hook that keeps a bug report to one line.
//!
//! The library's error types say what went wrong, not how the shell should hear about it, so the
//! mapping lives here, in one place. An error is classified by the outermost cause of a known
//! type: `cannot read trace.json` wrapping an `io::Error` is bad input, whatever the io error.
//! Errors of no known type are input errors: most ad-hoc errors reject what was given (an unknown
//! syscall name, a container no capture holds); a runtime failure built from a plain message says
//! so with [`Failure`].

use std::error::Error as StdError;

use crate::docker::image::ImageError;
use crate::docker::rootfs::ExportError;
use crate::docker::{DaemonError, DockerError};
use crate::elf::ElfError;
use crate::output::OutputError;
use crate::profile::read::ReadError;
use crate::scap::ScapError;
use crate::trace::TraceError;
use crate::trace::ebpf::{BtfError, TracerError};

/// The command was wrong or named something unusable: a file, an image, a container, a syscall.
pub const INPUT: u8 = 2;
/// The command was fine but running it failed: the daemon, the kernel, the container, the disk.
pub const RUNTIME: u8 = 1;

/// A runtime failure described by a message alone (e.g. the traced workload exited with an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

/// The exit code for `err`.
pub fn code(err: &anyhow::Error) -> u8 {
    err.chain().find_map(kind).unwrap_or(INPUT)
}

/// The exit code one cause decides, if its type decides one.
fn kind(cause: &(dyn StdError + 'static)) -> Option<u8> {
    let input = |is_input: bool| Some(if is_input { INPUT } else { RUNTIME });
    if cause.is::<Failure>()
        || cause.is::<DockerError>()
        || cause.is::<DaemonError>()
        || cause.is::<TracerError>()
        || cause.is::<BtfError>()
    {
        return Some(RUNTIME);
    }
    if cause.is::<ScapError>() || cause.is::<ElfError>() || cause.is::<ReadError>() {
        return Some(INPUT);
    }
    if let Some(err) = cause.downcast_ref::<TraceError>() {
        return match err {
            TraceError::Write(err) => input(refused(err)),
            _ => Some(INPUT),
        };
    }
    // Outputs may reach here wrapped in an `io::Error` (writers behind `io::Write`).
    let output = cause.downcast_ref::<OutputError>().or_else(|| {
        cause.downcast_ref::<std::io::Error>().and_then(|err| err.get_ref()).and_then(|err| err.downcast_ref())
    });
    if let Some(err) = output {
        return input(refused(err));
    }
    if let Some(err) = cause.downcast_ref::<ImageError>() {
        return input(matches!(err, ImageError::NotPullable { .. }));
    }
    if let Some(err) = cause.downcast_ref::<ExportError>() {
        return input(matches!(err, ExportError::NoImage { .. }));
    }
    #[cfg(feature = "bitcode")]
    if cause.is::<crate::bitcode::BitcodeError>() {
        return Some(INPUT);
    }
    // What the daemon said, unwrapped by any of the above: it failed to do what was asked.
    cause.is::<bollard::errors::Error>().then_some(RUNTIME)
}

/// An output refused (a symlink, an existing file without `--force`) is the user's to fix; a full
/// disk or a failing write is the machine's.
fn refused(err: &OutputError) -> bool {
    matches!(err, OutputError::Symlink { .. } | OutputError::Exists { .. })
}

/// Replaces the panic message and backtrace with one line, unless `RUST_BACKTRACE` asks for them:
/// a bug should not look like a crash dump to someone profiling a container.
pub fn quiet_panics() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(info.payload());
        // `bitcode::read` catches llvm-ir's panics on IR it does not model and reports them as
        // an error about the file; they are not this program's bugs.
        let in_llvm_ir = info.location().is_some_and(|at| at.file().contains("/llvm-ir-"));
        if !is_closed_stdout(message) && !in_llvm_ir {
            eprintln!("{}", panic_line(message, info.location()));
        }
    }));
}

/// Runs `command`, or `None` when it stopped because stdout was closed (`seccomp-refine … | head`):
/// that is not a bug, the reader has what it wanted, so the exit is quiet and successful, as for
/// other Unix tools. The panic has unwound by then, so containers and tracers were cleaned up.
pub fn unless_stdout_closed<T>(command: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(command)) {
        Ok(value) => Some(value),
        Err(payload) if is_closed_stdout(panic_message(payload.as_ref())) => None,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// `println!`'s panic when the reader of stdout has gone.
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

fn panic_line(message: &str, location: Option<&std::panic::Location<'_>>) -> String {
    let location = location.map(|at| format!(" at {}:{}", at.file(), at.line())).unwrap_or_default();
    format!(
        "seccomp-refine: internal error: {}{location}; this is a bug, please report it \
         (RUST_BACKTRACE=1 shows the backtrace)",
        message.replace('\n', " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_line_naming_where() {
        let payload: Box<dyn std::any::Any + Send> = Box::new(String::from("index out of bounds:\nthe len is 3"));
        let location = std::panic::Location::caller();
        let line = panic_line(panic_message(payload.as_ref()), Some(location));
        assert_eq!(line.lines().count(), 1);
        assert!(line.starts_with("seccomp-refine: internal error: index out of bounds: the len is 3 at "), "{line}");
        assert!(line.contains(&format!("exit.rs:{}", location.line())), "{line}");
    }

    #[test]
    fn input_and_runtime_errors_get_their_codes() {
        let input = anyhow::Error::from(TraceError::Schema { path: "t.json".into(), found: "none".into() });
        assert_eq!(code(&input.context("cannot profile")), INPUT);
        let full = OutputError::NoSpace { path: "t.json".into(), filesystem: "tmpfs".into(), mount: "/tmp".into() };
        assert_eq!(code(&anyhow::Error::from(TraceError::Write(full))), RUNTIME);
        let exists = || OutputError::Exists { path: "t.json".into() };
        assert_eq!(code(&anyhow::Error::from(TraceError::Write(exists()))), INPUT);
        assert_eq!(code(&anyhow::Error::from(std::io::Error::from(exists())).context("cannot write")), INPUT);
        assert_eq!(code(&anyhow::Error::from(Failure("the container exited early".into()))), RUNTIME);
        assert_eq!(code(&anyhow::anyhow!("`opne` is not a syscall name")), INPUT);
    }
}
