//! From a trace to a profile directory, whichever command holds the trace (`trace`, `import`,
//! `analyze`, `profile`): the container's files (a root directory or an exported image), the
//! static analysis of the traced programs (machine code, or the application's LLVM bitcode), its
//! merge with the trace, and every output file.
//!
//! The command line resolves its arguments into these types and prints what a [`Progress`] is
//! told; the steps and their order live here, so that what a profile directory holds does not
//! depend on which command made it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::bitcode::Program;
use crate::bitcode::libraries::{self as bitcode_libraries, Application};
use crate::callgraph::{self, Options, StaticAnalysis};
use crate::docker::rootfs::{self, Rootfs};
use crate::profile::{ANALYSIS_FILE, Analysis, KUBERNETES_FILE, OCI_FILE, OutputOptions, Profiles};
use crate::report::{self, ReportInput};
use crate::trace::Trace;

/// What the pipeline tells its caller as it goes.
pub trait Progress {
    /// `path` was written: `label` names it (`trace`, `seccomp-init`, … or empty for a further
    /// format of the line before), `syscalls` counts a profile's names.
    fn wrote(&self, label: &str, syscalls: Option<usize>, path: &Path);
    /// Something the user should know that does not stop the pipeline.
    fn warning(&self, message: &str);
    /// The static analysis finished.
    fn analysed(&self, found: &StaticAnalysis);
}

/// Where the traced programs' files are read from.
pub enum Files {
    /// A root directory on this machine (an extracted filesystem, or `/` for the host).
    Dir(PathBuf),
    /// An image, exported through the Docker daemon.
    Image(String),
    /// Where the trace says: the host's `/` for a host command traced live (`trace --exec`), else
    /// the trace's image. `required`: a trace naming no usable image is an error; otherwise the
    /// static analysis is skipped with a warning (a capture's image may not be here).
    FromTrace { required: bool },
}

/// `APP.bc[@PATH]`: the application's bitcode, and the traced executable it is the code of.
#[derive(Clone, Debug)]
pub struct BitcodeSpec {
    pub file: PathBuf,
    pub executable: Option<String>,
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

/// How the static analysis runs.
pub struct Statics {
    pub options: Options,
    pub bitcode: Option<BitcodeSpec>,
}

/// Bitcode read and matched to the traced executable it stands for.
pub struct LoadedBitcode {
    program: Program,
    file: String,
    executable: String,
}

/// Fails now, before any tracing, when the bitcode given cannot be read later.
pub fn check_bitcode(spec: Option<&BitcodeSpec>) -> Result<()> {
    match spec {
        Some(spec) => check_bitcode_file(&spec.file),
        None => Ok(()),
    }
}

/// Finds the traced executable the bitcode stands for and reads the bitcode, if one is given.
pub fn load_bitcode(spec: Option<&BitcodeSpec>, trace: &Trace) -> Result<Option<LoadedBitcode>> {
    let Some(spec) = spec else { return Ok(None) };
    let file = spec.file.display().to_string();
    let executable = bitcode_libraries::traced_executable(trace, &file, spec.executable.as_deref())?;
    Ok(Some(LoadedBitcode { program: read_bitcode(&spec.file)?, file, executable }))
}

#[cfg(feature = "bitcode")]
fn check_bitcode_file(path: &Path) -> Result<()> {
    Ok(crate::bitcode::check(path)?)
}

#[cfg(feature = "bitcode")]
fn read_bitcode(path: &Path) -> Result<Program> {
    Ok(crate::bitcode::read(path)?)
}

#[cfg(not(feature = "bitcode"))]
fn check_bitcode_file(_: &Path) -> Result<()> {
    bail!(crate::bitcode::WITHOUT_LLVM)
}

#[cfg(not(feature = "bitcode"))]
fn read_bitcode(_: &Path) -> Result<Program> {
    bail!(crate::bitcode::WITHOUT_LLVM)
}

/// The static analysis of every program `trace` saw; the one `bitcode` stands for from it.
pub fn static_analysis(
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

/// Whether `trace` recorded a command on this machine's own files (`trace --exec`: the live
/// tracer, no container, no image), so that its programs are read from `/`.
fn traced_on_host(trace: &Trace) -> bool {
    let target = &trace.target;
    trace.source == crate::trace::Source::Ebpf && target.container_id.is_none() && target.image.is_none()
}

/// The files to analyse `trace` over; `None` when `files` lets the analysis be skipped and the
/// trace's image is not available here (`progress` is told why).
pub async fn rootfs(trace: &Trace, files: &Files, progress: &dyn Progress) -> Result<Option<Rootfs>> {
    let required = match files {
        Files::Dir(dir) => {
            let rootfs =
                Rootfs::dir(dir).with_context(|| format!("cannot use {} as a root filesystem", dir.display()))?;
            return Ok(Some(rootfs));
        }
        Files::Image(image) => return Ok(Some(rootfs::export_image(image).await?)),
        Files::FromTrace { .. } if traced_on_host(trace) => {
            return Ok(Some(Rootfs::dir(Path::new("/")).context("cannot read the host's root filesystem")?));
        }
        Files::FromTrace { required } => *required,
    };
    match trace.target.image.as_deref() {
        Some(image) if required => Ok(Some(rootfs::export_image(image).await?)),
        None if required => bail!("no files to analyse: the trace names no image; give --rootfs DIR or --image IMAGE"),
        Some(image) if crate::docker::image::is_present(image).await => Ok(Some(rootfs::export_image(image).await?)),
        named => {
            let which = named.map_or_else(
                || "the capture names no image".to_owned(),
                |image| format!("image {image} is not available here"),
            );
            progress.warning(&format!(
                "static analysis skipped: {which}; give --rootfs DIR or --image IMAGE (or run `seccomp-refine analyze` later)"
            ));
            Ok(None)
        }
    }
}

/// The static analysis of `trace` over `files`, merged with the trace; `None` when `files` lets
/// it be skipped and they are not available here.
pub async fn analyze(
    trace: &Trace,
    files: &Files,
    statics: &Statics,
    progress: &dyn Progress,
) -> Result<Option<Analysis>> {
    let bitcode = load_bitcode(statics.bitcode.as_ref(), trace)?;
    let Some(rootfs) = rootfs(trace, files, progress).await? else { return Ok(None) };
    let found = tokio::task::block_in_place(|| static_analysis(trace, &rootfs, &statics.options, bitcode.as_ref()))?;
    progress.analysed(&found);
    Ok(Some(Analysis::new(trace, found)))
}

/// The end of a recording command: `trace.json` first (so nothing recorded waits on the
/// analysis), then the static analysis of `trace` (unless `statics` is `None`: `--no-static`)
/// merged into `dir` with every profile format and the report. When the static analysis fails,
/// the dynamic profiles are still written before the error is returned.
pub async fn finish(
    trace: &Trace,
    dir: &Path,
    files: &Files,
    statics: Option<&Statics>,
    progress: &dyn Progress,
) -> Result<()> {
    write_trace(dir, trace, progress)?;
    let analysed = match statics {
        Some(statics) => analyze(trace, files, statics, progress).await,
        None => Ok(None),
    };
    let (analysis, failure) = match analysed {
        Ok(analysis) => (analysis, None),
        Err(err) => (None, Some(err)),
    };
    let request = Request {
        dir,
        trace,
        kubernetes_api_version: crate::profile::kubernetes::DEFAULT_API_VERSION,
        analysis: analysis.as_ref(),
    };
    write_outputs(&request, progress)?;
    match failure {
        Some(err) => Err(err.context(format!(
            "static analysis failed (the trace and its dynamic profiles are in {}; retry with `seccomp-refine analyze`)",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// What to write besides the profiles.
pub struct Request<'a> {
    pub dir: &'a Path,
    pub trace: &'a Trace,
    pub kubernetes_api_version: &'a str,
    /// The static analysis merged with the trace, when it ran: the profiles come from it, and
    /// `analysis.json` and the report's unresolved sites with it.
    pub analysis: Option<&'a Analysis>,
}

/// The one place profiles become files: every profile format, `analysis.json` when static
/// analysis ran, and the report (`write_trace` writes `trace.json`).
pub fn write_outputs(request: &Request<'_>, progress: &dyn Progress) -> Result<Vec<PathBuf>> {
    let dir = request.dir;
    let mut written = Vec::new();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(analysis) = request.analysis {
        let path = analysis.write(dir).with_context(|| format!("cannot write the analysis to {}", dir.display()))?;
        progress.wrote("analysis", None, &path);
        written.push(path);
    }
    let profiles = request.analysis.map_or_else(|| Profiles::from_trace(request.trace), Analysis::profiles);
    for name in profiles.unknown_names() {
        progress.warning(&format!("`{name}` is not a syscall this version knows; left out of the profiles"));
    }
    let label = request.trace.target.image.clone().unwrap_or_else(|| directory_label(dir));
    let options =
        OutputOptions { label: label.clone(), kubernetes_api_version: request.kubernetes_api_version.to_owned() };
    let files =
        profiles.write_all(dir, &options).with_context(|| format!("cannot write profiles to {}", dir.display()))?;
    for ((stem, names), path) in profiles.by_file().iter().zip(&files) {
        progress.wrote(stem, Some(names.len()), path);
    }
    let input = ReportInput {
        title: &label,
        profiles: &profiles,
        trace: Some(request.trace),
        analysis: request.analysis,
        unresolved_static_sites: request.analysis.map(|analysis| analysis.static_analysis.unresolved.as_slice()),
        verify: None,
    };
    let reports =
        report::write(dir, &input).with_context(|| format!("cannot write the report to {}", dir.display()))?;
    for path in files.iter().skip(3).chain(&reports) {
        progress.wrote("", None, path);
    }
    written.extend(files);
    written.extend(reports);
    Ok(written)
}

/// Writes `trace.json` into `dir` (created if needed).
pub fn write_trace(dir: &Path, trace: &Trace, progress: &dyn Progress) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("trace.json");
    trace.write(&path)?;
    progress.wrote("trace", None, &path);
    Ok(path)
}

/// Whether `dir` already holds `trace` as its `trace.json`. A profile directory written apart
/// from its trace gets a copy: `enforce` and `verify --enforce` switch where the trace's stack put
/// the serving entry, and find it only there.
pub fn holds_trace(dir: &Path, trace: &Path) -> bool {
    match (std::fs::canonicalize(dir.join("trace.json")), std::fs::canonicalize(trace)) {
        (Ok(held), Ok(trace)) => held == trace,
        _ => false,
    }
}

/// Refuses, before any work, a profile directory where an output would replace an existing file
/// without `--force` or go through a symlink: a trace must not be recorded only to be refused.
/// `write_trace`: the command records `trace.json` too; `analysis`: it writes `analysis.json`.
pub fn claim(dir: &Path, write_trace: bool, analysis: bool) -> Result<()> {
    let mut names = vec!["seccomp-init.json", "seccomp-serving.json", "seccomp.json", OCI_FILE, KUBERNETES_FILE];
    names.extend(report::FILES);
    names.extend(write_trace.then_some("trace.json"));
    names.extend(analysis.then_some(ANALYSIS_FILE));
    for name in names {
        crate::output::check(&dir.join(name))?;
    }
    Ok(())
}

/// A name for the application when the trace has no image: the profile directory's.
fn directory_label(dir: &Path) -> String {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute.file_name().and_then(|name| name.to_str()).unwrap_or("profile").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callgraph::Resolution;
    use crate::syscalls::Arch;
    use crate::trace::{Source, Target};

    struct Quiet;

    impl Progress for Quiet {
        fn wrote(&self, _: &str, _: Option<usize>, _: &Path) {}
        fn warning(&self, _: &str) {}
        fn analysed(&self, _: &StaticAnalysis) {}
    }

    #[test]
    fn the_report_says_whether_static_analysis_ran() {
        let mut trace = Trace::new(Source::Ebpf, Arch::X86_64, "6.18".into(), Target::default());
        trace.phases.init.record("openat", 3, 10);
        let found = StaticAnalysis {
            resolution: Resolution { resolved: 1, sites: 1, rate: 100.0 },
            ..StaticAnalysis::none(Arch::X86_64)
        };
        let analysis = Analysis::new(&trace, found);
        let unresolved_line = |analysis: Option<&Analysis>| {
            let dir = tempfile::tempdir().unwrap();
            let request = Request {
                dir: dir.path(),
                trace: &trace,
                kubernetes_api_version: crate::profile::kubernetes::DEFAULT_API_VERSION,
                analysis,
            };
            write_outputs(&request, &Quiet).unwrap();
            let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
            report.lines().find(|line| line.contains("unresolved static sites")).unwrap_or_default().to_owned()
        };
        assert_eq!(unresolved_line(None), "- **unresolved static sites:** static analysis did not run");
        assert_eq!(unresolved_line(Some(&analysis)), "- **unresolved static sites:** none");
    }
}
