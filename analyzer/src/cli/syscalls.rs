//! `seccomp-refine syscalls`: the syscalls an ELF file can reach, on its own.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Outcome;
use super::analyze::AnalysisArgs;
use crate::callgraph::{self, EntrySpec, Resolution, UnresolvedSite};
use crate::docker::rootfs::Rootfs;

/// List the syscalls reachable from programs' entry points (or from a symbol), through the
/// programs and their libraries.
///
/// Paths are inside --rootfs (default /), and so are the libraries they load; a shared library
/// without an entry point is analysed from every function it exports.
#[derive(clap::Args)]
pub struct Args {
    /// The ELF files to analyse.
    #[arg(required = true, value_name = "ELF")]
    files: Vec<String>,
    /// Start from this function instead of the entry point.
    #[arg(long, value_name = "SYMBOL")]
    entry: Option<String>,
    /// The root filesystem the paths and their libraries are in.
    #[arg(long, value_name = "DIR", default_value = "/")]
    rootfs: PathBuf,
    /// Print JSON: { "syscalls": [...], "unresolved": [...], "resolution": {...} }.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    analysis: AnalysisArgs,
}

#[derive(Serialize)]
struct Report<'a> {
    syscalls: Vec<&'a str>,
    unresolved: &'a [UnresolvedSite],
    resolution: Resolution,
    warnings: &'a [String],
}

pub fn run(args: Args) -> Result<Outcome> {
    let rootfs = Rootfs::dir(&args.rootfs)
        .with_context(|| format!("cannot use {} as a root filesystem", args.rootfs.display()))?;
    let entry = args.entry.as_deref().map(|symbol| EntrySpec {
        symbol: symbol.to_owned(),
        binary: None,
        callers: Vec::new(),
        program: None,
    });
    let options = args.analysis.options(Vec::new());
    let found = callgraph::analyze_programs(&args.files, &rootfs, entry.as_ref(), &options)?;
    let names: Vec<&str> = found.init.keys().map(String::as_str).collect();
    if args.json {
        let report = Report {
            syscalls: names,
            unresolved: &found.unresolved,
            resolution: found.resolution,
            warnings: &found.warnings,
        };
        println!("{}", serde_json::to_string_pretty(&report).expect("a report always serializes"));
        return Ok(Outcome::Clean);
    }
    for warning in &found.warnings {
        eprintln!("seccomp-refine: warning: {warning}");
    }
    for name in &names {
        println!("{name}");
    }
    for site in &found.unresolved {
        eprintln!("unresolved: {} {} at {}: {}", site.module, site.function, site.address, site.reason);
    }
    eprintln!(
        "{} syscalls; {} of {} sites resolved ({:.1}%)",
        names.len(),
        found.resolution.resolved,
        found.resolution.sites,
        found.resolution.rate
    );
    Ok(Outcome::Clean)
}
