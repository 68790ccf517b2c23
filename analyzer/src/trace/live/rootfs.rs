//! Files as the traced processes see them: resolving a path inside a root made of one directory
//! (the host's `/`) or of stacked image layers, and reading an ELF program's interpreter.
//!
//! The kernel reports paths as the process passed them (`/lib/x86_64-linux-gnu/libc.so.6`), but
//! on a merged-/usr system the file is `/usr/lib/…`; resolving symlinks inside the container's own
//! root gives the path `/proc/PID/maps` shows. Image layers also give the host path of a binary,
//! which is where a uprobe must be attached (uprobes work per inode).

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Symlinks followed before giving up, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// A root filesystem: one directory, or overlay layers (top first) as Docker's overlay2 stores them.
#[derive(Clone, Debug)]
pub struct Rootfs {
    layers: Vec<PathBuf>,
}

impl Rootfs {
    /// The host's own root.
    pub fn host() -> Rootfs {
        Rootfs { layers: vec![PathBuf::from("/")] }
    }

    /// Overlay layers, top first.
    pub fn layers(top_first: Vec<PathBuf>) -> Rootfs {
        Rootfs { layers: top_first }
    }

    /// The absolute path `path` names after following every symlink inside this root, if the file
    /// exists there.
    pub fn canonicalize(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = components(path).rev().collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(component) = pending.pop() {
            if component == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(component);
            let logical = format!("/{}", resolved.join("/"));
            let host = self.find(&logical)?;
            if host.symlink_metadata().ok()?.file_type().is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                let target = std::fs::read_link(&host).ok()?;
                let target = target.to_str()?;
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(components(target).rev());
            }
        }
        Some(format!("/{}", resolved.join("/")))
    }

    /// Where the file `path` names lives on the host, symlinks resolved.
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        self.find(&self.canonicalize(path)?)
    }

    /// The host path of the topmost layer entry for `logical` (not following a final symlink);
    /// `None` when absent or hidden by an overlay whiteout.
    fn find(&self, logical: &str) -> Option<PathBuf> {
        let relative = logical.trim_start_matches('/');
        for layer in &self.layers {
            let candidate = layer.join(relative);
            if let Ok(metadata) = candidate.symlink_metadata() {
                // overlayfs marks a file deleted in an upper layer with a 0:0 character device.
                let whiteout = metadata.file_type().is_char_device() && metadata.rdev() == 0;
                return (!whiteout).then_some(candidate);
            }
        }
        None
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/').filter(|part| !part.is_empty() && *part != ".").map(str::to_owned)
}

/// The `PT_INTERP` of an ELF file (the dynamic loader it asks for), if it has one.
pub fn elf_interpreter(file: &Path) -> Option<String> {
    let file = File::open(file).ok()?;
    let mut ident = [0u8; 64];
    file.read_exact_at(&mut ident, 0).ok()?;
    if &ident[..4] != b"\x7fELF" || ident[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| u16::from_le_bytes([ident[at], ident[at + 1]]) as u64;
    let u32_at = |at: usize| u32::from_le_bytes(ident[at..at + 4].try_into().unwrap()) as u64;
    let u64_at = |at: usize| u64::from_le_bytes(ident[at..at + 8].try_into().unwrap());
    // (program header table offset, entry size, count) for ELF64 and ELF32.
    let (table, entry_size, count, is_64) = match ident[4] {
        2 => (u64_at(32), u16_at(54), u16_at(56), true),
        1 => (u32_at(28), u16_at(42), u16_at(44), false),
        _ => return None,
    };
    const PT_INTERP: u32 = 3;
    for index in 0..count.min(256) {
        let mut header = [0u8; 56];
        let size = if is_64 { 56 } else { 32 };
        file.read_exact_at(&mut header[..size], table + index * entry_size).ok()?;
        if u32::from_le_bytes(header[..4].try_into().unwrap()) != PT_INTERP {
            continue;
        }
        let (offset, length) = if is_64 {
            (
                u64::from_le_bytes(header[8..16].try_into().unwrap()),
                u64::from_le_bytes(header[32..40].try_into().unwrap()),
            )
        } else {
            (
                u32::from_le_bytes(header[4..8].try_into().unwrap()) as u64,
                u32::from_le_bytes(header[16..20].try_into().unwrap()) as u64,
            )
        };
        let mut path = vec![0u8; length.min(4096) as usize];
        file.read_exact_at(&mut path, offset).ok()?;
        let end = path.iter().position(|&byte| byte == 0).unwrap_or(path.len());
        return String::from_utf8(path[..end].to_vec()).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root_across_layers() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, lower) = (dir.path().join("upper"), dir.path().join("lower"));
        std::fs::create_dir_all(lower.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(lower.join("usr/bin")).unwrap();
        std::fs::write(lower.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"").unwrap();
        std::fs::write(lower.join("usr/bin/redis-check-rdb"), b"").unwrap();
        // Absolute targets mean the root's /, not the host's.
        symlink("/usr/lib", lower.join("lib")).unwrap();
        std::fs::create_dir_all(upper.join("usr/bin")).unwrap();
        symlink("redis-check-rdb", upper.join("usr/bin/redis-server")).unwrap();
        let root = Rootfs::layers(vec![upper, lower.clone()]);
        assert_eq!(
            root.canonicalize("/lib/x86_64-linux-gnu/./libc.so.6").as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(root.canonicalize("/usr/bin/../bin/redis-server").as_deref(), Some("/usr/bin/redis-check-rdb"));
        assert_eq!(root.host_path("/usr/bin/redis-server"), Some(lower.join("usr/bin/redis-check-rdb")));
        assert_eq!(root.canonicalize("/lib/missing.so"), None);
    }

    #[test]
    fn symlink_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert_eq!(Rootfs::layers(vec![dir.path().to_owned()]).canonicalize("/a"), None);
    }

    #[test]
    fn the_interpreter_of_a_real_dynamic_binary() {
        let sh = Rootfs::host().host_path("/bin/sh").unwrap();
        let interp = elf_interpreter(&sh).expect("/bin/sh is dynamically linked");
        assert!(interp.starts_with('/') && interp.contains("ld-linux"), "{interp}");
        assert_eq!(elf_interpreter(Path::new("/etc/hostname")), None);
    }
}
