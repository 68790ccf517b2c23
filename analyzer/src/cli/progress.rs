//! What the pipeline tells the terminal: one line per file written, warnings on stderr, and the
//! static analysis's summary.

use std::path::Path;

use crate::callgraph::StaticAnalysis;
use crate::pipeline::Progress;

/// Prints what the pipeline reports.
pub struct Printer;

impl Progress for Printer {
    fn wrote(&self, label: &str, syscalls: Option<usize>, path: &Path) {
        match syscalls {
            Some(count) => println!("{label:<16} {count:>3} syscalls  {}", path.display()),
            None => println!("{label:<16}               {}", path.display()),
        }
    }

    fn warning(&self, message: &str) {
        eprintln!("seccomp-refine: warning: {message}");
    }

    fn analysed(&self, found: &StaticAnalysis) {
        print_summary(found);
    }
}

/// What the static analysis found, for the terminal; warnings go to stderr.
fn print_summary(found: &StaticAnalysis) {
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
