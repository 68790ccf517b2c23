//! `seccomp-refine analyze`: static analysis of a traced container's programs and libraries,
//! merged with the trace into `analysis.json` and per-phase profiles.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Outcome, outputs};
use crate::callgraph::{self, EntrySpec, Options, StaticAnalysis, UnresolvedPolicy};
use crate::docker::rootfs::{self, Rootfs};
use crate::elf::{Cache, default_cache_dir};
use crate::profile::{Analysis, kubernetes};
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
    pub async fn open(&self, fallback_image: Option<&str>) -> Result<Rootfs> {
        if let Some(dir) = &self.rootfs {
            return Rootfs::dir(dir).with_context(|| format!("cannot use {} as a root filesystem", dir.display()));
        }
        let Some(image) = self.image.as_deref().or(fallback_image) else {
            bail!("no files to analyse: the trace names no image; give --rootfs DIR or --image IMAGE");
        };
        Ok(rootfs::export_image(image).await?)
    }

    fn given(&self) -> bool {
        self.rootfs.is_some() || self.image.is_some()
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
}

/// Where a recorded trace's files are.
pub enum TracedFiles<'a> {
    /// The image the container ran (or, for a capture, the image it names, if the daemon has it).
    Image(&'a str),
    /// The host's own files (`trace --exec`).
    Host,
    /// What the user said (`import --rootfs/--image`), else the trace's image when available.
    Given(&'a FilesArgs),
}

impl AfterTrace {
    /// The end of a recording command: the static analysis of `trace` (see `run`) merged into
    /// `trace.json`'s directory with every profile format and the report. When the static
    /// analysis fails, the trace and its dynamic profiles are still written before the error
    /// is returned, so nothing recorded is lost.
    pub async fn finish(
        &self,
        trace: &Trace,
        dir: &Path,
        files: TracedFiles<'_>,
        marker_entry: Option<EntrySpec>,
    ) -> Result<()> {
        let (analysis, failure) = match self.run(trace, files, marker_entry).await {
            Ok(analysis) => (analysis, None),
            Err(err) => (None, Some(err)),
        };
        let request = outputs::Request {
            dir,
            trace,
            write_trace: true,
            kubernetes_api_version: kubernetes::DEFAULT_API_VERSION,
            analysis: analysis.as_ref(),
        };
        outputs::write(&request)?;
        match failure {
            Some(err) => Err(err.context(format!(
                "static analysis failed (the trace and its dynamic profiles are in {}; retry with `seccomp-refine analyze`)",
                dir.display()
            ))),
            None => Ok(()),
        }
    }

    /// Runs the static analysis of `trace` over `files`, merged with the trace; `None` when asked
    /// not to, or when a capture's image is not available here (a warning says so).
    /// `marker_entry` is the serving entry a `symbol:` phase marker implies.
    pub async fn run(
        &self,
        trace: &Trace,
        files: TracedFiles<'_>,
        marker_entry: Option<EntrySpec>,
    ) -> Result<Option<Analysis>> {
        if self.no_static {
            return Ok(None);
        }
        let rootfs = match files {
            TracedFiles::Image(image) => rootfs::export_image(image).await?,
            TracedFiles::Host => Rootfs::dir(Path::new("/")).context("cannot read the host's root filesystem")?,
            TracedFiles::Given(args) if args.given() => args.open(None).await?,
            TracedFiles::Given(_) => match trace.target.image.as_deref() {
                Some(image) if crate::docker::image::is_present(image).await => rootfs::export_image(image).await?,
                named => {
                    let which = named.map_or_else(
                        || "the capture names no image".to_owned(),
                        |image| format!("image {image} is not available here"),
                    );
                    eprintln!(
                        "seccomp-refine: warning: static analysis skipped: {which}; give --rootfs DIR or --image IMAGE \
                         (or run `seccomp-refine analyze` later)"
                    );
                    return Ok(None);
                }
            },
        };
        let entries =
            if self.serving_entry.is_empty() { marker_entry.into_iter().collect() } else { self.serving_entry.clone() };
        let options = self.analysis.options(entries);
        let found = tokio::task::block_in_place(|| callgraph::analyze_trace(trace, &rootfs, &options))?;
        print_summary(&found);
        Ok(Some(Analysis::new(trace, found)))
    }
}

pub fn run(args: Args) -> Result<Outcome> {
    let trace = Trace::read(&args.trace)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let files = runtime.block_on(args.files.open(trace.target.image.as_deref()))?;
    let options = args.analysis.options(args.serving_entry.clone());
    let found = callgraph::analyze_trace(&trace, &files, &options)?;
    print_summary(&found);
    let analysis = Analysis::new(&trace, found);
    let dir = args.output.unwrap_or_else(|| args.trace.parent().unwrap_or(".".as_ref()).to_path_buf());
    let request = outputs::Request {
        dir: &dir,
        trace: &trace,
        write_trace: false,
        kubernetes_api_version: kubernetes::DEFAULT_API_VERSION,
        analysis: Some(&analysis),
    };
    outputs::write(&request)?;
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
