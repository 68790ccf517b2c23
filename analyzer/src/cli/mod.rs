//! The command line: argument parsing, dispatch, and how errors reach the user.
//!
//! Each subcommand lives in its own file with its `clap` arguments and a `run` function; this
//! module only routes. Errors print once, on one line (`seccomp-refine: error: …` with the cause
//! chain), and map to the exit codes documented in `--help`.

mod analyze;
mod bitcode;
mod diff;
mod enforce;
mod exit;
mod explain;
mod import;
mod precision;
mod profile;
mod progress;
mod syscalls;
mod trace;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status: 0 success; 1 a check found something (a difference, a denied syscall), or the run
failed (the daemon, the kernel, the traced workload); 2 bad input or usage (a corrupt file, a
missing image or container, an unknown name). Errors are reported on one line.";

#[derive(Parser)]
#[command(name = "seccomp-refine", version, about, after_help = EXIT_CODES)]
#[command(long_about = "The smallest seccomp allowlist a container can live with, in two phases: \
initialization (start-up, config, binding sockets, dropping privileges) and serving (the request loop).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Overwrite output files that already exist (a symlink where an output goes is always refused).
    #[arg(long, global = true)]
    force: bool,
}

#[derive(Subcommand)]
enum Command {
    Import(import::Args),
    Profile(profile::Args),
    Verify(verify::Args),
    Diff(diff::Args),
    Precision(precision::Args),
    Trace(trace::Args),
    Bitcode(bitcode::Args),
    Analyze(analyze::Args),
    Syscalls(syscalls::Args),
    Explain(explain::Args),
    Enforce(enforce::Args),
}

/// What a successful command tells the shell.
pub enum Outcome {
    /// Everything as expected: exit 0.
    Clean,
    /// The command worked and found something the caller asked to be told about: exit 1.
    Found,
}

pub fn main() -> ExitCode {
    exit::quiet_panics();
    let cli = Cli::parse();
    crate::output::replace_existing(cli.force);
    let Some(result) = exit::unless_stdout_closed(|| dispatch(cli.command)) else {
        return ExitCode::SUCCESS;
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Found) => ExitCode::from(1),
        Err(err) => {
            eprintln!("seccomp-refine: error: {err:#}");
            ExitCode::from(exit::code(&err))
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Import(args) => import::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Precision(args) => precision::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Bitcode(args) => bitcode::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Syscalls(args) => syscalls::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Enforce(args) => enforce::run(args),
    }
}
