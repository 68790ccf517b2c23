//! A filesystem made of host directories — one (`--rootfs`, the host's `/`) or a container's
//! overlay layers, top first — looked up without ever leaving a layer.
//!
//! Every lookup is one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` under a layer's directory:
//! the kernel refuses `..` above it, any symlink on the way and magic links, so a path the caller
//! resolved inside the container can never land on a host file, even when a lower layer holds a
//! symlink where an upper one holds a directory, or a running container swaps a directory for a
//! link meanwhile. A final symlink is opened as itself (`O_PATH | O_NOFOLLOW`) and read, never
//! followed. As overlayfs does, the topmost layer holding an entry wins, a 0:0 character device
//! (a whiteout) hides what lies below, and a non-directory hides everything under its path.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::node::Node;

/// Overlay layers, top first (a single directory is one layer).
#[derive(Clone, Debug)]
pub(crate) struct Layers {
    top_first: Vec<PathBuf>,
}

impl Layers {
    pub fn new(top_first: Vec<PathBuf>) -> Layers {
        Layers { top_first }
    }

    /// The entry for the canonical container path `path` (no symlinks, no `..`), not following a
    /// final symlink: its layer and an `O_PATH` descriptor.
    fn lookup(&self, path: &str) -> Option<(&Path, File)> {
        for layer in &self.top_first {
            match open_beneath(layer, path, libc::O_PATH | libc::O_NOFOLLOW) {
                Ok(file) => {
                    let metadata = file.metadata().ok()?;
                    let whiteout = metadata.file_type().is_char_device() && metadata.rdev() == 0;
                    return (!whiteout).then_some((layer.as_path(), file));
                }
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                // A file, whiteout or symlink on the way in this layer hides the layers below.
                Err(_) => return None,
            }
        }
        None
    }

    pub fn node(&self, path: &str) -> Node {
        let Some((_, file)) = self.lookup(path) else { return Node::Missing };
        let Ok(metadata) = file.metadata() else { return Node::Missing };
        let kind = metadata.file_type();
        if kind.is_symlink() {
            read_link(&file).map_or(Node::Missing, Node::Symlink)
        } else if kind.is_dir() {
            Node::Dir
        } else if kind.is_file() {
            Node::File
        } else {
            Node::Other
        }
    }

    /// Opens the regular file at the canonical path `path` for reading.
    pub fn open(&self, path: &str) -> std::io::Result<File> {
        let not_found = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let (layer, _) = self.lookup(path).ok_or_else(not_found)?;
        open_beneath(layer, path, libc::O_RDONLY | libc::O_NOFOLLOW)
    }

    /// The host path of the entry at the canonical path `path`: for what takes a path rather than
    /// a descriptor (a uprobe), and for messages.
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        let (layer, _) = self.lookup(path)?;
        Some(layer.join(relative(path)))
    }

    /// Names in the directory at the canonical path `path`, merged over the layers.
    pub fn list(&self, path: &str) -> Vec<String> {
        let mut names = Vec::new();
        for layer in &self.top_first {
            let dir = match open_beneath(layer, path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) {
                Ok(dir) => dir,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                // A non-directory here hides the layers below.
                Err(_) => break,
            };
            // The descriptor is the directory the kernel resolved beneath the layer.
            let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else { continue };
            names.extend(entries.flatten().map(|entry| entry.file_name().to_string_lossy().into_owned()));
        }
        names.sort();
        names.dedup();
        // Whiteouts name what is gone.
        names.retain(|name| self.lookup(&format!("{}/{name}", path.trim_end_matches('/'))).is_some());
        names
    }
}

/// `/usr/lib` → `usr/lib`; the root is `.`.
fn relative(path: &str) -> &str {
    match path.trim_start_matches('/') {
        "" => ".",
        relative => relative,
    }
}

/// `openat2` of `path` beneath `layer`: no `..` above it, no symlink or magic link anywhere.
fn open_beneath(layer: &Path, path: &str, flags: i32) -> std::io::Result<File> {
    let layer = File::open(layer)?;
    let relative = CString::new(Path::new(relative(path)).as_os_str().as_bytes())?;
    // SAFETY: open_how is plain integers, for which all zeroes is valid (and the kernel's default).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the path is NUL-terminated, `how` is a valid open_how of the size passed, and the
    // directory fd stays open for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            layer.as_raw_fd(),
            relative.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// The target of the symlink `link` (an `O_PATH | O_NOFOLLOW` descriptor of it).
fn read_link(link: &File) -> Option<String> {
    let mut buffer = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat with an empty path reads the link the descriptor refers to into the
    // buffer, at most its length.
    let length = unsafe { libc::readlinkat(link.as_raw_fd(), c"".as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
    let length = usize::try_from(length).ok()?;
    Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::{Rootfs, RootfsError};

    /// Two layers, as overlay2 stores them: `upper` over `lower`, and a host directory outside both
    /// holding a secret.
    fn layered() -> (tempfile::TempDir, Rootfs) {
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower, host) = (dir.path().join("upper"), dir.path().join("lower"), dir.path().join("host"));
        for path in ["usr/lib/x86_64-linux-gnu", "usr/bin", "etc"] {
            std::fs::create_dir_all(lower.join(path)).unwrap();
        }
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("shadow"), b"host secret").unwrap();
        std::fs::write(lower.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"libc").unwrap();
        std::fs::write(lower.join("usr/bin/redis-check-rdb"), b"redis").unwrap();
        std::fs::write(lower.join("etc/gone"), b"deleted above").unwrap();
        // Absolute targets mean the root's /, not the host's.
        symlink("/usr/lib", lower.join("lib")).unwrap();
        // Hostile: a lower-layer symlink to the host where the upper layer has a directory.
        symlink(&host, lower.join("data")).unwrap();
        std::fs::create_dir_all(upper.join("data")).unwrap();
        std::fs::create_dir_all(upper.join("usr/bin")).unwrap();
        symlink("redis-check-rdb", upper.join("usr/bin/redis-server")).unwrap();
        // Hostile: the host's absolute path, and a `..` chain long enough to leave any root.
        symlink(host.join("shadow"), upper.join("usr/bin/absolute")).unwrap();
        let climb = format!("{}{}", "../".repeat(20), host.join("shadow").display());
        symlink(climb, upper.join("usr/bin/climb")).unwrap();
        symlink("b", upper.join("a")).unwrap();
        symlink("a", upper.join("b")).unwrap();
        (dir, Rootfs::layers(vec![upper, lower]))
    }

    /// Makes `path` an overlay whiteout (a 0:0 character device); false without CAP_MKNOD.
    fn whiteout(path: &std::path::Path) -> bool {
        let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mknod reads the NUL-terminated path it is given.
        unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, 0) == 0 }
    }

    #[test]
    fn symlinks_resolve_inside_the_root_across_layers() {
        let (dir, root) = layered();
        assert_eq!(root.resolve("/lib/x86_64-linux-gnu/./libc.so.6").unwrap(), "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(root.resolve("/usr/bin/../bin/redis-server").unwrap(), "/usr/bin/redis-check-rdb");
        assert_eq!(root.host_path("/usr/bin/redis-server"), Some(dir.path().join("lower/usr/bin/redis-check-rdb")));
        assert_eq!(root.read("/lib/x86_64-linux-gnu/libc.so.6").unwrap().1, b"libc");
        assert!(matches!(root.resolve("/lib/missing.so"), Err(RootfsError::NotFound { .. })));
        assert!(matches!(root.resolve("/a"), Err(RootfsError::Loop { .. })));
        assert_eq!(root.list("/usr/bin"), ["absolute", "climb", "redis-check-rdb", "redis-server"]);
    }

    #[test]
    fn hostile_links_never_reach_the_host() {
        let (_dir, root) = layered();
        for path in ["/usr/bin/absolute", "/usr/bin/climb", "/data/shadow"] {
            let err = root.read(path).unwrap_err();
            assert!(matches!(err, RootfsError::NotFound { .. }), "{path}: {err}");
            assert_eq!(root.host_path(path), None, "{path}");
        }
        assert!(root.list("/data").is_empty(), "the upper directory hides the lower link");
    }

    #[test]
    fn a_whiteout_hides_the_file_below() {
        let (dir, root) = layered();
        assert_eq!(root.read("/etc/gone").unwrap().1, b"deleted above");
        std::fs::create_dir_all(dir.path().join("upper/etc")).unwrap();
        if !whiteout(&dir.path().join("upper/etc/gone")) {
            crate::skip_test("making a whiteout needs CAP_MKNOD");
            return;
        }
        assert!(matches!(root.read("/etc/gone"), Err(RootfsError::NotFound { .. })));
        assert!(root.list("/etc").is_empty());
    }
}
