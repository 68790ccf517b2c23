//! `seccomp-refine analyze`: static analysis of a traced container's programs and libraries,
//! merged with the trace into `analysis.json` and per-phase profiles; with `--bitcode`, the
//! application's own code comes from its LLVM bitcode.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Outcome;
use super::progress::Printer;
use crate::callgraph::{EntrySpec, Options, UnresolvedPolicy};
use crate::elf::{Cache, default_cache_dir};
use crate::pipeline::{self, BitcodeSpec, Files, Statics};
use crate::profile::kubernetes;
use crate::trace::Trace;

/// Add what the traced programs' code can reach, per phase, to what the trace observed.
///
/// Reads every program the trace saw exec'd and every library it mapped, plus their DT_NEEDED
/// closure, from the container's files (the host's only for a `trace --exec` trace, whose
/// programs ran on the host), and writes analysis.json, seccomp-init.json, seccomp-serving.json
/// and seccomp.json. Each phase allows what was observed in it or is reachable in it;
/// analysis.json says which, for every syscall. A directory other than the trace's gets a copy
/// of trace.json too: `enforce` and `verify --enforce` switch where its stack put the serving entry.
#[derive(clap::Args)]
pub struct Args {
    /// The trace (`trace.json` from `trace` or `import`).
    trace: PathBuf,
    #[command(flatten)]
    files: FilesArgs,
    /// The function where serving starts, as SYMBOL or SYMBOL@BINARY; repeat for several
    /// [default: known servers' loops, e.g. nginx's worker cycle, redis's aeMain].
    #[arg(long, value_name = "SYMBOL[@BINARY]")]
    serving_entry: Vec<EntrySpec>,
    #[command(flatten)]
    analysis: AnalysisArgs,
    #[command(flatten)]
    bitcode: BitcodeArgs,
    /// Directory for analysis.json and the profiles [default: the trace's directory].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

/// Where the container's files come from.
#[derive(clap::Args)]
pub struct FilesArgs {
    /// Read the container's files from this directory (an extracted root filesystem)
    /// [default: / for a trace of a host command (`trace --exec`)].
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    rootfs: Option<PathBuf>,
    /// Read the container's files from this image, through the Docker daemon
    /// [default: the trace's image].
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

/// Options every static analysis command shares.
#[derive(clap::Args)]
pub struct AnalysisArgs {
    /// Syscall sites whose number is unknown: `deny` allows nothing extra for them (fail
    /// closed; they are listed), `allow-module` allows everything their file issues elsewhere.
    #[arg(long, value_enum, default_value = "deny", value_name = "POLICY")]
    unresolved: UnresolvedPolicy,
    /// Where per-file summaries are cached by build-id [default: $SECCOMP_REFINE_CACHE,
    /// $XDG_CACHE_HOME/seccomp-refine or ~/.cache/seccomp-refine].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Analyse every file again, reading and writing no cache.
    #[arg(long)]
    no_cache: bool,
}

/// The application's LLVM bitcode, for its own code.
#[derive(clap::Args)]
pub struct BitcodeArgs {
    /// Analyse the application's own code from its whole-program LLVM bitcode (e.g. from `cargo
    /// xtask bitcode nginx`) instead of its binary; its libraries still come from the container.
    /// @PATH names the traced executable it is the code of [default: the one named like the
    /// file, else the only one]. Needs a build with the `bitcode` feature.
    #[arg(long, value_name = "APP.bc[@PATH]")]
    bitcode: Option<BitcodeSpec>,
}

impl BitcodeArgs {
    /// Fails now, before any tracing, when the bitcode given cannot be read later.
    pub fn check(&self) -> Result<()> {
        pipeline::check_bitcode(self.bitcode.as_ref())
    }
}

impl AnalysisArgs {
    pub fn options(&self, serving_entries: Vec<EntrySpec>) -> Options {
        let cache = match (&self.cache_dir, self.no_cache) {
            (_, true) => Cache::disabled(),
            (Some(dir), false) => Cache::at(dir),
            (None, false) => default_cache_dir().map_or_else(Cache::disabled, |dir| Cache::at(&dir)),
        };
        Options { serving_entries, unresolved: self.unresolved, cache }
    }
}

impl FilesArgs {
    /// Where the files come from; `required`: without --rootfs or --image, a trace naming no usable
    /// image is an error rather than a reason to skip the static analysis.
    pub fn files(&self, required: bool) -> Files {
        match (&self.rootfs, &self.image) {
            (Some(dir), _) => Files::Dir(dir.clone()),
            (None, Some(image)) => Files::Image(image.clone()),
            (None, None) => Files::FromTrace { required },
        }
    }
}

/// Static analysis as the last step of a command that recorded a trace (`trace`, `import`).
#[derive(clap::Args)]
pub struct AfterTrace {
    /// Skip static analysis: the profiles allow what the trace saw and nothing more.
    #[arg(long)]
    no_static: bool,
    /// For static analysis: the function where serving starts, as SYMBOL or SYMBOL@BINARY; repeat
    /// for several [default: a symbol: phase marker's function, else known servers' loops].
    #[arg(long, value_name = "SYMBOL[@BINARY]")]
    serving_entry: Vec<EntrySpec>,
    #[command(flatten)]
    analysis: AnalysisArgs,
    #[command(flatten)]
    bitcode: BitcodeArgs,
}

impl AfterTrace {
    /// Checks, before anything is recorded, what can be checked of the static analysis's input.
    pub fn check(&self) -> Result<()> {
        if self.no_static {
            return Ok(());
        }
        self.bitcode.check()
    }

    /// Refuses, before anything is recorded, a profile directory `finish` may not write into.
    pub fn claim(&self, dir: &Path) -> Result<()> {
        pipeline::claim(dir, true, !self.no_static)
    }

    /// The end of a recording command (see `pipeline::finish`). `marker_entry` is the serving
    /// entry a `symbol:` phase marker implies, used unless `--serving-entry` names some.
    pub async fn finish(
        &self,
        trace: &Trace,
        dir: &Path,
        files: &Files,
        marker_entry: Option<EntrySpec>,
    ) -> Result<()> {
        let statics = (!self.no_static).then(|| {
            let entries = if self.serving_entry.is_empty() {
                marker_entry.into_iter().collect()
            } else {
                self.serving_entry.clone()
            };
            Statics { options: self.analysis.options(entries), bitcode: self.bitcode.bitcode.clone() }
        });
        pipeline::finish(trace, dir, files, statics.as_ref(), &Printer).await
    }
}

pub fn run(args: Args) -> Result<Outcome> {
    let trace = Trace::read(&args.trace)?;
    let dir = args.output.clone().unwrap_or_else(|| args.trace.parent().unwrap_or(".".as_ref()).to_path_buf());
    let with_trace = !pipeline::holds_trace(&dir, &args.trace);
    pipeline::claim(&dir, with_trace, true)?;
    // Without --serving-entry, the entry `auto` derived from the trace's stack, if any.
    let entries = if args.serving_entry.is_empty() {
        trace.phase_marker.serving_entry.iter().map(EntrySpec::derived).collect()
    } else {
        args.serving_entry.clone()
    };
    let statics = Statics { options: args.analysis.options(entries), bitcode: args.bitcode.bitcode.clone() };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let analysis = runtime.block_on(pipeline::analyze(&trace, &args.files.files(true), &statics, &Printer))?;
    let request = pipeline::Request {
        dir: &dir,
        trace: &trace,
        kubernetes_api_version: kubernetes::DEFAULT_API_VERSION,
        analysis: analysis.as_ref(),
    };
    pipeline::write_outputs(&request, &Printer)?;
    if with_trace {
        pipeline::write_trace(&dir, &trace, &Printer)?;
    }
    Ok(Outcome::Clean)
}
