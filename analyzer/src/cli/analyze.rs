//! `seccomp-refine analyze`: static analysis of a traced container's programs and libraries,
//! merged with the trace into `analysis.json` and per-phase profiles.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::Outcome;
use crate::callgraph::{self, EntrySpec, Options, StaticAnalysis, UnresolvedPolicy};
use crate::docker::rootfs::{self, Rootfs};
use crate::elf::{Cache, default_cache_dir};
use crate::profile::Analysis;
use crate::trace::Trace;

/// Add what the traced programs' code can reach, per phase, to what the trace observed.
///
/// Reads every program the trace saw exec'd and every library it mapped, plus their DT_NEEDED
/// closure, from the container's files (never the host's), and writes analysis.json,
/// seccomp-init.json, seccomp-serving.json and seccomp.json. Each phase allows what was observed
/// in it or is reachable in it; analysis.json says which, for every syscall.
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
    /// Directory for analysis.json and the profiles [default: the trace's directory].
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

/// Where the container's files come from.
#[derive(clap::Args)]
pub struct FilesArgs {
    /// Read the container's files from this directory (an extracted root filesystem).
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
    /// The container filesystem to read; `fallback_image` is the trace's image, if any.
    pub fn open(&self, fallback_image: Option<&str>) -> Result<Rootfs> {
        if let Some(dir) = &self.rootfs {
            return Rootfs::dir(dir).with_context(|| format!("cannot use {} as a root filesystem", dir.display()));
        }
        let Some(image) = self.image.as_deref().or(fallback_image) else {
            bail!("no files to analyse: the trace names no image; give --rootfs DIR or --image IMAGE");
        };
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        Ok(runtime.block_on(rootfs::export_image(image))?)
    }
}

pub fn run(args: Args) -> Result<Outcome> {
    let trace = Trace::read(&args.trace)?;
    let files = args.files.open(trace.target.image.as_deref())?;
    let options = args.analysis.options(args.serving_entry.clone());
    let found = callgraph::analyze_trace(&trace, &files, &options)?;
    print_summary(&found);
    let analysis = Analysis::new(&trace, found);
    let dir = args.output.unwrap_or_else(|| args.trace.parent().unwrap_or(".".as_ref()).to_path_buf());
    let written = analysis.write(&dir).with_context(|| format!("cannot write to {}", dir.display()))?;
    let profiles = analysis.profiles();
    println!("{:<16} {}", "analysis", written[0].display());
    for ((stem, names), path) in profiles.by_file().iter().zip(&written[1..]) {
        println!("{stem:<16} {:>3} syscalls  {}", names.len(), path.display());
    }
    Ok(Outcome::Clean)
}

/// What the static analysis found, for the terminal; warnings go to stderr.
pub fn print_summary(found: &StaticAnalysis) {
    for warning in &found.warnings {
        eprintln!("seccomp-refine: warning: {warning}");
    }
    let cached = found.modules.iter().filter(|module| module.cached).count();
    println!(
        "static analysis: {} programs, {} files ({} from cache), {} of {} syscall sites resolved ({:.1}%)",
        found.programs.len(),
        found.modules.len(),
        cached,
        found.resolution.resolved,
        found.resolution.sites,
        found.resolution.rate
    );
    for program in &found.programs {
        let serving = program.serving_syscalls.map_or_else(|| "-".to_owned(), |count| count.to_string());
        let entry = program.serving_entry.as_deref().map(|entry| format!("  serving from {entry}")).unwrap_or_default();
        println!("  {}: init {} / serving {}{entry}", program.path, program.init_syscalls, serving);
    }
    if !found.unresolved.is_empty() {
        println!(
            "  {} reachable syscall sites with an unknown number (listed in analysis.json)",
            found.unresolved.len()
        );
    }
}
