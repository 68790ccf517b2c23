//! The ELF interpreter (dynamic loader) a traced program asks for, read from the traced root.
//!
//! The kernel maps the interpreter itself, with no mmap syscall the tracer would see, so the
//! recorder reads `PT_INTERP` from the program's file — through the container's root only
//! (`docker::rootfs`), like every container file.

use crate::docker::rootfs::Rootfs;

/// Bytes of a program read for its program headers: `PT_INTERP` sits in the first page.
const HEAD: usize = 64 * 1024;

/// The loader the program at `path` (inside `rootfs`) asks for, if it is a dynamic ELF program.
pub fn of(rootfs: &Rootfs, path: &str) -> Option<String> {
    let (_, head) = rootfs.read_head(path, HEAD).ok()?;
    elf_interpreter(&head)
}

/// The `PT_INTERP` of an ELF file's first bytes, if it has one there (ELF64 and ELF32).
fn elf_interpreter(head: &[u8]) -> Option<String> {
    let bytes = |at: u64, length: u64| head.get(usize::try_from(at).ok()?..usize::try_from(at + length).ok()?);
    let u16_at = |at: u64| Some(u64::from(u16::from_le_bytes(bytes(at, 2)?.try_into().ok()?)));
    let u32_at = |at: u64| Some(u64::from(u32::from_le_bytes(bytes(at, 4)?.try_into().ok()?)));
    let u64_at = |at: u64| Some(u64::from_le_bytes(bytes(at, 8)?.try_into().ok()?));
    if bytes(0, 4)? != b"\x7fELF" || head.get(5) != Some(&1) {
        return None;
    }
    // (program header table offset, entry size, count; where p_offset and p_filesz sit in one).
    let (table, entry_size, count, offset_at, size_at) = match head.get(4)? {
        2 => (u64_at(32)?, u16_at(54)?, u16_at(56)?, 8, 32),
        1 => (u32_at(28)?, u16_at(42)?, u16_at(44)?, 4, 16),
        _ => return None,
    };
    const PT_INTERP: u64 = 3;
    let is_64 = offset_at == 8;
    let read_word = |at: u64| if is_64 { u64_at(at) } else { u32_at(at) };
    let header = (0..count).map(|index| table + index * entry_size).find(|&at| u32_at(at) == Some(PT_INTERP))?;
    let path = bytes(read_word(header + offset_at)?, read_word(header + size_at)?.min(4096))?;
    let end = path.iter().position(|&byte| byte == 0).unwrap_or(path.len());
    String::from_utf8(path[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_of_a_real_dynamic_binary() {
        let interp = of(&Rootfs::host(), "/bin/sh").expect("/bin/sh is dynamically linked");
        assert!(interp.starts_with('/') && interp.contains("ld-linux"), "{interp}");
        assert_eq!(of(&Rootfs::host(), "/etc/hostname"), None);
    }
}
