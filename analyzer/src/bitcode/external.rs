//! Where bitcode and binary analysis meet: library functions the application calls, resolved to
//! the syscalls they can reach.
//!
//! The application's bitcode ends at its external declarations (`read`, `SSL_read`, …). What
//! those reach is known from the ELF summaries of the libraries the trace saw; the binary
//! analysis implements [`LibrarySyscalls`] over them. [`resolve`] then unions, per phase, the
//! application's own syscall sites with the syscalls of every library function it reaches, and
//! joins the witness paths (application part, then library part).

use std::collections::BTreeMap;

use serde::Serialize;

use super::phases::PhaseReach;

/// What calling one library function can lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryReach {
    /// The library (soname or path) that defines the symbol, as the loader would bind it.
    pub library: String,
    /// Syscall name → witness inside the library (`read` → `__libc_read` → `syscall site 0x…`).
    pub syscalls: BTreeMap<String, Vec<String>>,
    /// Sites inside the library, reachable from the symbol, whose syscall number is unknown.
    pub unresolved: Vec<String>,
}

/// Library summaries by exported symbol.
pub trait LibrarySyscalls {
    /// What calling `symbol` can reach, or `None` when no analysed library defines it.
    fn reach(&self, symbol: &str) -> Option<LibraryReach>;
}

/// One phase's syscalls from bitcode and library summaries together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResolvedPhase {
    /// Syscall name → witness from a root through the application into a library.
    pub syscalls: BTreeMap<String, Vec<String>>,
    /// External symbols no analysed library defines.
    pub undefined: Vec<String>,
    /// Unknown-number sites: the application's own, then the libraries'.
    pub unresolved: Vec<String>,
}

/// Joins a phase's bitcode reach with the libraries' summaries.
pub fn resolve(phase: &PhaseReach, libraries: &dyn LibrarySyscalls) -> ResolvedPhase {
    let mut resolved = ResolvedPhase { syscalls: phase.syscalls.clone(), ..ResolvedPhase::default() };
    resolved.unresolved = phase.unresolved.iter().map(|site| format!("{}: {}", site.function, site.reason)).collect();
    for (symbol, path) in &phase.externals {
        let Some(reach) = libraries.reach(symbol) else {
            resolved.undefined.push(symbol.clone());
            continue;
        };
        for (syscall, inside) in reach.syscalls {
            resolved.syscalls.entry(syscall).or_insert_with(|| {
                let mut witness = path.clone();
                witness.extend(inside.into_iter().map(|step| format!("{step} [{}]", reach.library)));
                witness
            });
        }
        resolved
            .unresolved
            .extend(reach.unresolved.into_iter().map(|site| format!("{symbol} [{}]: {site}", reach.library)));
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Summaries given as data: the merge rule is what is under test here.
    struct Table(BTreeMap<&'static str, LibraryReach>);

    impl LibrarySyscalls for Table {
        fn reach(&self, symbol: &str) -> Option<LibraryReach> {
            self.0.get(symbol).cloned()
        }
    }

    #[test]
    fn joins_application_and_library_witnesses() {
        let mut phase = PhaseReach::default();
        phase.syscalls.insert("gettid".into(), vec!["main (main)".into(), "syscall(186)".into()]);
        phase.externals.insert("write".into(), vec!["main (main)".into(), "log".into(), "write".into()]);
        phase.externals.insert("frobnicate".into(), vec!["main (main)".into(), "frobnicate".into()]);
        let write = LibraryReach {
            library: "libc.so.6".into(),
            syscalls: BTreeMap::from([("write".into(), vec!["syscall site 0x1234".into()])]),
            unresolved: vec!["__nptl_setxid 0x99: memory load".into()],
        };
        let resolved = resolve(&phase, &Table(BTreeMap::from([("write", write)])));
        assert_eq!(resolved.syscalls.keys().collect::<Vec<_>>(), ["gettid", "write"]);
        assert_eq!(resolved.syscalls["write"], ["main (main)", "log", "write", "syscall site 0x1234 [libc.so.6]"]);
        assert_eq!(resolved.undefined, ["frobnicate"]);
        assert_eq!(resolved.unresolved, ["write [libc.so.6]: __nptl_setxid 0x99: memory load"]);
    }
}
