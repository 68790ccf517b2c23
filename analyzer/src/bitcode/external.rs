//! Where bitcode and binary analysis meet: the library functions the application calls, and the
//! application functions the libraries call back.
//!
//! The application's bitcode ends at its external declarations (`read`, `SSL_read`, …). What
//! those reach is known from the ELF summaries of the libraries the trace saw; the binary
//! analysis implements [`LibrarySyscalls`] over them (`bitcode::libraries`). The exchange is per
//! phase and repeated until nothing new appears: the bitcode reach hands over every external
//! symbol it calls, the libraries reach what those lead to and name the application functions
//! they call in turn (a symbol the application defines and a library imports), which become
//! roots of the bitcode reach. Function pointers the application hands to libraries (`qsort`,
//! `pthread_create`, `sigaction`, …) are roots already: the bitcode records them where they are
//! passed or stored.
//!
//! The query is per phase rather than per symbol because libraries keep state: `SSL_CTX_new`
//! stores the method table that `SSL_read` later calls through, so what `SSL_read` reaches
//! depends on what ran before it, in this phase and in init.

use std::collections::BTreeMap;

use crate::trace::Phase;

/// Library summaries, asked phase by phase.
pub trait LibrarySyscalls {
    /// Reaches in the libraries everything the application's `calls` (symbol → witness path in
    /// the application) lead to during `phase`, together with what the libraries run on their
    /// own then. Called again with more calls while the phase grows; init comes first, and
    /// serving starts from the state init left. Returns the application functions the libraries
    /// call by name, each with a label saying who calls it.
    fn reach(&mut self, phase: Phase, calls: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)>;
}

/// No libraries: the application's own reach alone (`seccomp-refine bitcode`).
pub struct NoLibraries;

impl LibrarySyscalls for NoLibraries {
    fn reach(&mut self, _: Phase, _: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
        Vec::new()
    }
}
