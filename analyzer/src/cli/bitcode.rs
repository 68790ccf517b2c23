//! `seccomp-refine bitcode`: what an application's LLVM bitcode reaches in each phase.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use super::Outcome;
use crate::bitcode::{Analysis, PhaseReach};

/// Analyse an application's whole-program LLVM bitcode (e.g. from `cargo xtask bitcode nginx`).
///
/// Prints, per phase, the application functions reached, the library functions they call, the
/// syscalls the application's own code issues (`syscall(N)`, inline asm) and the sites whose
/// number is unknown. Library functions are resolved to syscalls by `analyze`.
#[derive(clap::Args)]
pub struct Args {
    /// The bitcode file (`.bc`).
    bitcode: PathBuf,
    /// Where serving starts [default: ngx_process_events_and_timers (in nginx's workers), aeMain, whichever is defined].
    #[arg(long, value_name = "FUNCTION")]
    serving_entry: Vec<String>,
    /// Print the full analysis as JSON (functions, externals and syscalls with witness paths).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let started = Instant::now();
    let analysis = analyze(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
    } else {
        print_summary(&analysis);
        eprintln!("analysed {} in {:.2} s", args.bitcode.display(), started.elapsed().as_secs_f64());
    }
    Ok(Outcome::Clean)
}

#[cfg(feature = "bitcode")]
fn analyze(args: &Args) -> Result<Analysis> {
    let program = crate::bitcode::read(&args.bitcode)?;
    Ok(crate::bitcode::analyze(&program, &args.serving_entry, &mut crate::bitcode::NoLibraries)?)
}

#[cfg(not(feature = "bitcode"))]
fn analyze(_: &Args) -> Result<Analysis> {
    anyhow::bail!(crate::bitcode::WITHOUT_LLVM)
}

fn print_summary(analysis: &Analysis) {
    println!("serving entries: {}", analysis.serving_entries.join(", "));
    for (name, phase) in [("init", &analysis.init), ("serving", &analysis.serving)] {
        print_phase(name, phase);
    }
}

fn print_phase(name: &str, phase: &PhaseReach) {
    let indirect = &phase.indirect;
    println!(
        "{name:<8} {:>5} functions  {:>4} library functions  {:>3} own syscalls  {:>3} unresolved  \
         {} indirect sites ({} by field, {} by type, {:.1} targets each)",
        phase.functions.len(),
        phase.externals.len(),
        phase.syscalls.len() + phase.compat_syscalls.len(),
        phase.unresolved.len(),
        indirect.sites,
        indirect.via_field,
        indirect.via_type,
        indirect.targets as f64 / indirect.sites.max(1) as f64,
    );
    if !phase.syscalls.is_empty() {
        println!("         own syscalls: {}", phase.syscalls.keys().cloned().collect::<Vec<_>>().join(" "));
    }
    for site in &phase.unresolved {
        println!("         unresolved: {}: {}", site.function, site.reason);
    }
}
