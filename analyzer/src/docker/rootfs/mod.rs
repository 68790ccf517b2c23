//! A container's filesystem, read safely: a directory on the host (`--rootfs`, the host's `/`), a
//! running container's overlay layers (the live tracer), or an image's files exported through the
//! Docker API (`--image`).
//!
//! Every path is resolved component by component inside the container root: an absolute
//! symlink restarts from the container's `/`, `..` never climbs above it, and a link can never
//! lead to a host file. On the host, each step is an `openat2` confined beneath the layer
//! (`layers`). This is the only way the analysis and the tracer read container files.

mod archive;
mod export;
mod layers;
mod node;

use std::collections::VecDeque;
use std::io::Read as _;
use std::path::{Path, PathBuf};

pub use export::{ExportError, export_image};

use archive::Archive;
use layers::Layers;
use node::Node;

/// Why a file could not be read from a container filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path}: no such file in {root}")]
    NotFound { path: String, root: String },
    #[error("{path}: too many levels of symbolic links in {root}")]
    Loop { path: String, root: String },
    #[error("{path}: not a regular file in {root}")]
    NotAFile { path: String, root: String },
    #[error("cannot read {path} in {root}")]
    Io { path: String, root: String, source: std::io::Error },
}

/// A container filesystem.
#[derive(Clone)]
pub struct Rootfs {
    kind: Kind,
    /// How errors name this filesystem ("image nginx:latest", "/srv/root").
    label: String,
}

#[derive(Clone)]
enum Kind {
    Layers(Layers),
    Archive(std::sync::Arc<Archive>),
}

/// Symlinks followed while resolving one path, as Linux allows (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

impl Rootfs {
    /// The tree under `dir` on this machine.
    pub fn dir(dir: &Path) -> std::io::Result<Rootfs> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(Rootfs { label: dir.display().to_string(), kind: Kind::Layers(Layers::new(vec![dir])) })
    }

    /// The host's own root.
    pub fn host() -> Rootfs {
        Rootfs { label: "/".to_owned(), kind: Kind::Layers(Layers::new(vec![PathBuf::from("/")])) }
    }

    /// A container's overlay layers as Docker's overlay2 stores them, top first.
    pub fn layers(top_first: Vec<PathBuf>) -> Rootfs {
        Rootfs { label: "the container's layers".to_owned(), kind: Kind::Layers(Layers::new(top_first)) }
    }

    pub(crate) fn archive(archive: Archive, label: String) -> Rootfs {
        Rootfs { kind: Kind::Archive(std::sync::Arc::new(archive)), label }
    }

    /// How messages name this filesystem.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn node(&self, path: &str) -> Node {
        match &self.kind {
            Kind::Layers(layers) => layers.node(path),
            Kind::Archive(archive) => archive.node(path),
        }
    }

    /// The canonical path (inside the container) of `path`, every symlink resolved inside the root.
    pub fn resolve(&self, path: &str) -> Result<String, RootfsError> {
        let error_path = path.to_owned();
        let mut pending: VecDeque<String> = components(path).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = join(&resolved, &component);
            match self.node(&candidate) {
                Node::Symlink(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(RootfsError::Loop { path: error_path, root: self.label.clone() });
                    }
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    for (index, part) in components(&target).enumerate() {
                        pending.insert(index, part);
                    }
                }
                Node::Dir => resolved.push(component),
                Node::File | Node::Other if pending.is_empty() => resolved.push(component),
                Node::File | Node::Other => {
                    return Err(RootfsError::NotFound { path: error_path, root: self.label.clone() });
                }
                Node::Missing => return Err(RootfsError::NotFound { path: error_path, root: self.label.clone() }),
            }
        }
        Ok(join(&resolved, ""))
    }

    /// Whether `path` resolves to a regular file.
    pub fn is_file(&self, path: &str) -> bool {
        self.resolve(path).is_ok_and(|canonical| self.node(&canonical) == Node::File)
    }

    /// Reads the regular file `path` names; returns its canonical path and contents.
    pub fn read(&self, path: &str) -> Result<(String, Vec<u8>), RootfsError> {
        self.read_head(path, usize::MAX)
    }

    /// The first `limit` bytes of the regular file `path` names, with its canonical path.
    pub fn read_head(&self, path: &str, limit: usize) -> Result<(String, Vec<u8>), RootfsError> {
        let canonical = self.resolve(path)?;
        if self.node(&canonical) != Node::File {
            return Err(RootfsError::NotAFile { path: path.to_owned(), root: self.label.clone() });
        }
        let io = |source| RootfsError::Io { path: canonical.clone(), root: self.label.clone(), source };
        let bytes = match &self.kind {
            Kind::Layers(layers) => layers.open(&canonical).and_then(|file| read_up_to(file, limit)),
            Kind::Archive(archive) => archive.read(&canonical).map(|mut bytes| {
                bytes.truncate(limit);
                bytes
            }),
        };
        let bytes = bytes.map_err(io)?;
        Ok((canonical, bytes))
    }

    /// Where the file `path` names is on the host, symlinks resolved inside the root: for what
    /// takes a path (a uprobe). `None` when it does not exist, or the files are in an archive.
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        let canonical = self.resolve(path).ok()?;
        match &self.kind {
            Kind::Layers(layers) => layers.host_path(&canonical),
            Kind::Archive(_) => None,
        }
    }

    /// Names in directory `path` (resolved inside the root), sorted.
    pub fn list(&self, path: &str) -> Vec<String> {
        let Ok(canonical) = self.resolve(path) else { return Vec::new() };
        let mut names = match &self.kind {
            Kind::Layers(layers) => layers.list(&canonical),
            Kind::Archive(archive) => archive.list(&canonical),
        };
        names.sort();
        names
    }
}

/// Path components of `path`, relative to the container root whether or not it starts with `/`.
fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|part| !part.is_empty()).map(str::to_owned)
}

fn join(resolved: &[String], last: &str) -> String {
    let mut path = String::from("/");
    for part in resolved.iter().map(String::as_str).chain(Some(last).filter(|last| !last.is_empty())) {
        if !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
    path
}

/// The first `limit` bytes of `file`, read into a buffer sized from its length: grown by
/// doubling as it filled, libcrypto's buffer was copied and faulted in again at every step.
fn read_up_to(file: std::fs::File, limit: usize) -> std::io::Result<Vec<u8>> {
    let len = file.metadata()?.len().min(limit as u64) as usize;
    let mut bytes = Vec::with_capacity(len);
    file.take(limit as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Rootfs) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/libc.so.6"), b"inside").unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/lib/libc.so.6", root.join("usr/lib/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../lib/libc.so.6", root.join("usr/lib/climb")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let rootfs = Rootfs::dir(root).unwrap();
        (dir, rootfs)
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let (_dir, rootfs) = tree();
        assert_eq!(rootfs.resolve("/lib/libc.so.6").unwrap(), "/usr/lib/libc.so.6");
        assert_eq!(rootfs.read("/usr/lib/abs").unwrap(), ("/usr/lib/libc.so.6".to_owned(), b"inside".to_vec()));
        assert_eq!(rootfs.read_head("/usr/lib/abs", 3).unwrap().1, b"ins");
        assert_eq!(rootfs.read_head("/usr/lib/abs", 100).unwrap().1, b"inside");
        // `..` stops at the container root, as it does in a chroot.
        assert_eq!(rootfs.resolve("/usr/lib/climb").unwrap(), "/usr/lib/libc.so.6");
        assert!(matches!(rootfs.resolve("/loop"), Err(RootfsError::Loop { .. })));
        assert!(matches!(rootfs.read("/usr/lib"), Err(RootfsError::NotAFile { .. })));
        assert!(matches!(rootfs.read("/usr/lib/libc.so.6/x"), Err(RootfsError::NotFound { .. })));
        assert_eq!(rootfs.list("/lib"), ["abs", "climb", "libc.so.6"]);
    }

    #[test]
    fn an_exported_archive_resolves_inside_itself() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(6);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, "usr/lib/libc.so.6", &b"inside"[..]).unwrap();
        for (link, target) in [("lib", "usr/lib"), ("bin/escape", "/etc/passwd"), ("bin/abs", "/lib/libc.so.6")] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, link, target).unwrap();
        }
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &builder.into_inner().unwrap()).unwrap();
        let rootfs = Rootfs::archive(Archive::index(file).unwrap(), "image test".into());
        assert_eq!(rootfs.read("/bin/abs").unwrap(), ("/usr/lib/libc.so.6".to_owned(), b"inside".to_vec()));
        // The host's /etc/passwd exists; the archive's does not.
        let err = rootfs.read("/bin/escape").unwrap_err().to_string();
        assert_eq!(err, "/bin/escape: no such file in image test");
        assert_eq!(rootfs.list("/usr"), ["lib"]);
    }
}
