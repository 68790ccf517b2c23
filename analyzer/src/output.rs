//! Output files (traces, analyses, profiles, reports): written atomically, never through a
//! symlink, and never over an existing file unless the user asked for it (`--force`).
//!
//! The tool runs as root and writes into directories others may share, so a symlink planted where
//! an output goes must not redirect the write, and a file the user kept must not vanish silently.
//! A full disk must not leave a torn file either: each file is written to a temporary name beside
//! it and renamed into place only once complete, so the previous version survives any failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether an existing output may be replaced. The library's callers replace by default; the
/// command line sets this from `--force` before any command runs.
static REPLACE_EXISTING: AtomicBool = AtomicBool::new(true);

/// Sets whether existing outputs are replaced (`--force`) or refused.
pub fn replace_existing(allowed: bool) {
    REPLACE_EXISTING.store(allowed, Ordering::Relaxed);
}

/// Why an output file was not written, phrased with the fix.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path} is a symbolic link; refusing to write through it (remove it or choose another --output)")]
    Symlink { path: String },
    #[error("{path} already exists; pass --force to overwrite it, or choose another --output")]
    Exists { path: String },
    #[error(
        "no space left on {filesystem} mounted at {mount} (writing {path}); the previous file, if any, is untouched — \
         free space there or choose another --output"
    )]
    NoSpace { path: String, filesystem: String, mount: String },
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl From<OutputError> for std::io::Error {
    fn from(err: OutputError) -> std::io::Error {
        std::io::Error::other(err)
    }
}

/// Writes `contents` to `path` atomically, refusing a symlink there and, without `--force`, any
/// existing file.
pub fn write(path: &Path, contents: &[u8]) -> Result<(), OutputError> {
    check(path)?;
    let io = |source: std::io::Error| classify(path, source);
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // The temporary file is created O_EXCL with a random name, so nothing planted can catch it;
    // on failure it is removed when dropped.
    let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    temporary.write_all(contents).map_err(io)?;
    temporary.as_file().sync_all().map_err(io)?;
    // rename(2) replaces a link itself, never its target; without --force it may replace nothing.
    let persisted = if REPLACE_EXISTING.load(Ordering::Relaxed) {
        temporary.persist(path)
    } else {
        temporary.persist_noclobber(path)
    };
    persisted.map(drop).map_err(|err| match err.error.kind() {
        std::io::ErrorKind::AlreadyExists => check(path).err().unwrap_or_else(|| exists(path)),
        _ => io(err.error),
    })
}

/// Refuses `path` if it is a symlink, or exists and may not be replaced. Commands call it for
/// every file they will write before doing any work, so a refusal costs no recorded trace.
pub fn check(path: &Path) -> Result<(), OutputError> {
    match path.symlink_metadata() {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            Err(OutputError::Symlink { path: path.display().to_string() })
        }
        Ok(_) if !REPLACE_EXISTING.load(Ordering::Relaxed) => Err(exists(path)),
        _ => Ok(()),
    }
}

fn exists(path: &Path) -> OutputError {
    OutputError::Exists { path: path.display().to_string() }
}

/// A full disk or quota names the filesystem; anything else keeps its own words.
fn classify(path: &Path, source: std::io::Error) -> OutputError {
    let display = path.display().to_string();
    // tempfile wraps its errors with the temporary path, keeping their kind but not their errno.
    if !matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
        return OutputError::Io { path: display, source };
    }
    let (mount, filesystem) = mount_of(path).unwrap_or_else(|| (PathBuf::from("?"), "the disk".to_owned()));
    OutputError::NoSpace { path: display, filesystem, mount: mount.display().to_string() }
}

/// The mount point holding `path` and its filesystem type, from /proc/self/mountinfo.
fn mount_of(path: &Path) -> Option<(PathBuf, String)> {
    let dir = path.parent()?;
    let absolute = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let mount_point = PathBuf::from(fields.split(' ').nth(4)?);
            let filesystem = rest.split(' ').next()?.to_owned();
            absolute.starts_with(&mount_point).then_some((mount_point, filesystem))
        })
        .max_by_key(|(mount_point, _)| mount_point.as_os_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("out.json")).unwrap();
        let err = write(&dir.path().join("out.json"), b"new").unwrap_err();
        assert!(matches!(err, OutputError::Symlink { .. }), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left behind");
    }

    #[test]
    fn the_mount_of_a_path_is_the_longest_matching_mount_point() {
        let (mount, filesystem) = mount_of(Path::new("/proc/self/status")).unwrap();
        assert_eq!((mount.as_path(), filesystem.as_str()), (Path::new("/proc"), "proc"));
    }
}
