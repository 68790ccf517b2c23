//! Summaries cached on disk by build-id, so libc is analysed once per version, not once per run.
//!
//! Layout: `DIR/v{FORMAT}/{build-id}.summary`, postcard-encoded. A file that does not decode, or
//! that holds another file's summary, is ignored and replaced. Writes are atomic, so concurrent
//! runs sharing a cache never read half a summary.

use std::path::{Path, PathBuf};

use super::summary::{FORMAT, ModuleSummary};
use super::{ElfError, analyze, identity};

/// Where summaries are kept, or nowhere.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
}

/// `$SECCOMP_REFINE_CACHE`, else `$XDG_CACHE_HOME/seccomp-refine`, else `~/.cache/seccomp-refine`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    env("SECCOMP_REFINE_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|dir| dir.join("seccomp-refine")))
        .or_else(|| env("HOME").map(|home| home.join(".cache/seccomp-refine")))
}

impl Cache {
    /// A cache in `dir`, created on first store.
    pub fn at(dir: &Path) -> Cache {
        Cache { dir: Some(dir.join(format!("v{FORMAT}"))) }
    }

    /// No cache: every file is analysed every time.
    pub fn disabled() -> Cache {
        Cache { dir: None }
    }

    fn path(&self, identity: &str) -> Option<PathBuf> {
        let name: String = identity.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        self.dir.as_ref().map(|dir| dir.join(format!("{name}.summary")))
    }

    pub fn load(&self, identity: &str) -> Option<ModuleSummary> {
        let bytes = std::fs::read(self.path(identity)?).ok()?;
        let summary: ModuleSummary = postcard::from_bytes(&bytes).ok()?;
        (summary.format == FORMAT && summary.build_id == identity).then_some(summary)
    }

    /// Stores `summary`; a cache that cannot be written only costs time, so errors are returned
    /// for the caller to report, not to fail on.
    pub fn store(&self, summary: &ModuleSummary) -> std::io::Result<()> {
        let Some(path) = self.path(&summary.build_id) else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = postcard::to_stdvec(summary).map_err(std::io::Error::other)?;
        crate::write_atomically(&path, &bytes)
    }

    /// The summary of the file with these bytes: from the cache, or analysed and stored.
    /// Returns whether it came from the cache, and a cache write error to report, if any.
    pub fn summary(&self, bytes: &[u8]) -> Result<(ModuleSummary, bool, Option<std::io::Error>), ElfError> {
        let identity = identity(bytes)?;
        if let Some(summary) = self.load(&identity) {
            return Ok((summary, true, None));
        }
        let summary = analyze(bytes)?;
        let stored = self.store(&summary).err();
        Ok((summary, false, stored))
    }
}
