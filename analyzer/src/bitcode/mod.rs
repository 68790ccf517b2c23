//! LLVM bitcode of the application: a sharper call graph for its own code than machine code gives.
//!
//! When the user has whole-program bitcode (`cargo xtask bitcode nginx` builds it from Debian's
//! sources), the application's functions, indirect calls and syscall sites come from it instead of
//! its binary: names are never stripped, and every indirect call carries its exact function type.
//! Library functions stay external; [`external`] defines how the binary analysis of the
//! libraries resolves them, phase by phase, and [`libraries`] runs both over a traced container
//! (`analyze --bitcode`), so the result is one set per phase with witness paths across both.
//!
//! Reading needs LLVM 19 and is behind the `bitcode` cargo feature ([`read()`]); the model
//! ([`program`]) and the analysis ([`phases`], [`reach`], [`wrappers`]) are plain Rust and always
//! built. IO happens only in [`read()`] and, through `callgraph`, in [`libraries`].

pub mod external;
pub mod libraries;
pub mod phases;
pub mod producer;
pub mod program;
pub mod reach;
#[cfg(feature = "bitcode")]
mod read;
pub mod wrappers;

pub use external::{LibrarySyscalls, NoLibraries};
pub use phases::{Analysis, PhaseError, PhaseReach, analyze};
pub use program::Program;
#[cfg(feature = "bitcode")]
pub use read::{BitcodeError, LLVM_MAJOR, check, read};

/// What every bitcode option says in a build without the `bitcode` feature.
#[cfg(not(feature = "bitcode"))]
pub const WITHOUT_LLVM: &str = "this seccomp-refine was built without LLVM bitcode support; rebuild it with \
    `--features bitcode` (needs llvm-19-dev, libpolly-19-dev, libzstd-dev), as `cargo xtask build` does";
