//! seccomp-refine: the smallest seccomp allowlist a container can live with, per phase.
//!
//! Data flows one way: sources → [`trace::Trace`] → analysis → [`profile::Profiles`] → files.
//! `ARCHITECTURE.md` at the repository root maps the modules; each module's own doc says what it
//! owns. The binary (`src/main.rs`) is a thin shell around [`cli`].

pub mod bitcode;
pub mod callgraph;
pub mod cli;
pub mod docker;
pub mod elf;
pub mod enforce;
pub mod output;
pub mod profile;
pub mod report;
pub mod scap;
pub mod stack;
pub mod syscalls;
pub mod trace;
pub mod verify;

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `contents` so that readers see the old file or the new one, never a mix,
/// and a crash mid-write leaves the old file intact.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(dir)?;
    temporary.write_all(contents)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|err| err.error)?;
    Ok(())
}
