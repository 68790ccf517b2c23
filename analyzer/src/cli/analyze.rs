//! `seccomp-refine analyze`: static analysis of a traced container's programs and libraries,
//! merged with the trace into `analysis.json` and per-phase profiles; with `--bitcode`, the
//! application's own code comes from its LLVM bitcode.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Outcome, outputs};
use crate::bitcode::Program;
use crate::bitcode::libraries::{self as bitcode_libraries, Application};
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
    #[command(flatten)]
    bitcode: BitcodeArgs,
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

/// `APP.bc[@PATH]`.
#[derive(Clone)]
struct BitcodeSpec {
    file: PathBuf,
    executable: Option<String>,
}

impl std::str::FromStr for BitcodeSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<BitcodeSpec, String> {
        let (file, executable) = match text.rsplit_once('@') {
            Some((file, executable)) => (file, Some(executable.to_owned())),
            None => (text, None),
        };
        if file.is_empty() || executable.as_deref() == Some("") {
            return Err(format!("`{text}` is not APP.bc or APP.bc@PATH"));
        }
        Ok(BitcodeSpec { file: PathBuf::from(file), executable })
    }
}

/// Bitcode read and matched to the traced executable it stands for.
pub struct LoadedBitcode {
    program: Program,
    file: String,
    executable: String,
}

impl BitcodeArgs {
    /// Fails now, before any tracing, when the bitcode given cannot be read later.
    pub fn check(&self) -> Result<()> {
        match &self.bitcode {
            Some(spec) => check_bitcode(&spec.file),
            None => Ok(()),
        }
    }

    /// Finds the traced executable the bitcode stands for and reads the bitcode, if one is given.
    pub fn load(&self, trace: &Trace) -> Result<Option<LoadedBitcode>> {
        let Some(spec) = &self.bitcode else { return Ok(None) };
        let file = spec.file.display().to_string();
        let executable = bitcode_libraries::traced_executable(trace, &file, spec.executable.as_deref())?;
        Ok(Some(LoadedBitcode { program: read_bitcode(&spec.file)?, file, executable }))
    }
}

#[cfg(feature = "bitcode")]
fn check_bitcode(path: &Path) -> Result<()> {
    Ok(crate::bitcode::check(path)?)
}

#[cfg(feature = "bitcode")]
fn read_bitcode(path: &Path) -> Result<Program> {
    Ok(crate::bitcode::read(path)?)
}

#[cfg(not(feature = "bitcode"))]
fn check_bitcode(_: &Path) -> Result<()> {
    bail!(super::bitcode::WITHOUT_LLVM)
}

#[cfg(not(feature = "bitcode"))]
fn read_bitcode(_: &Path) -> Result<Program> {
    bail!(super::bitcode::WITHOUT_LLVM)
}

/// The static analysis of every program `trace` saw; the one `bitcode` stands for from it.
fn static_analysis(
    trace: &Trace,
    files: &Rootfs,
    options: &Options,
    bitcode: Option<&LoadedBitcode>,
) -> Result<StaticAnalysis> {
    match bitcode {
        None => callgraph::analyze_trace(trace, files, options),
        Some(loaded) => {
            let app = Application { program: &loaded.program, bitcode: &loaded.file, executable: &loaded.executable };
            bitcode_libraries::analyze_trace(trace, files, options, &app)
        }
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
    #[command(flatten)]
    bitcode: BitcodeArgs,
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
    /// Checks, before anything is recorded, what can be checked of the static analysis's input.
    pub fn check(&self) -> Result<()> {
        if self.no_static {
            return Ok(());
        }
        self.bitcode.check()
    }

    /// Refuses, before anything is recorded, a profile directory `finish` may not write into.
    pub fn claim(&self, dir: &Path) -> Result<()> {
        outputs::claim(dir, true, !self.no_static)
    }

    /// The end of a recording command: `trace.json` first (so nothing recorded waits on the
    /// analysis), then the static analysis of `trace` (see `run`) merged into its directory with
    /// every profile format and the report. When the static analysis fails, the dynamic profiles
    /// are still written before the error is returned.
    pub async fn finish(
        &self,
        trace: &Trace,
        dir: &Path,
        files: TracedFiles<'_>,
        marker_entry: Option<EntrySpec>,
    ) -> Result<()> {
        outputs::write_trace(dir, trace)?;
        let (analysis, failure) = match self.run(trace, files, marker_entry).await {
            Ok(analysis) => (analysis, None),
            Err(err) => (None, Some(err)),
        };
        let request = outputs::Request {
            dir,
            trace,
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
        let bitcode = self.bitcode.load(trace)?;
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
        let found = tokio::task::block_in_place(|| static_analysis(trace, &rootfs, &options, bitcode.as_ref()))?;
        print_summary(&found);
        Ok(Some(Analysis::new(trace, found)))
    }
}

pub fn run(args: Args) -> Result<Outcome> {
    let trace = Trace::read(&args.trace)?;
    let dir = args.output.clone().unwrap_or_else(|| args.trace.parent().unwrap_or(".".as_ref()).to_path_buf());
    outputs::claim(&dir, false, true)?;
    let bitcode = args.bitcode.load(&trace)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let files = runtime.block_on(args.files.open(trace.target.image.as_deref()))?;
    // Without --serving-entry, the entry `auto` derived from the trace's stack, if any.
    let entries = if args.serving_entry.is_empty() {
        trace.phase_marker.serving_entry.iter().map(EntrySpec::derived).collect()
    } else {
        args.serving_entry.clone()
    };
    let options = args.analysis.options(entries);
    let found = static_analysis(&trace, &files, &options, bitcode.as_ref())?;
    print_summary(&found);
    let analysis = Analysis::new(&trace, found);
    let request = outputs::Request {
        dir: &dir,
        trace: &trace,
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
