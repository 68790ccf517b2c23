//! `auto`'s serving entry from the kernel's stack event: the IO around `stack::derive` —
//! `/proc/PID/maps` of the waiting process (alive: it is blocked in the wait the event was taken
//! at), the mapped files read inside the traced root, and their summaries through the build-id
//! cache the static analysis shares.

use std::path::PathBuf;

use tracer_common::{REGS_SLOTS, regs};

use crate::docker::rootfs::Rootfs;
use crate::elf::{self, ModuleSummary};
use crate::stack::{self, Mapping, Registers};
use crate::trace::ServingEntry;

/// The entry, and where to put the marker uprobe: the binary's host path and the file offset
/// of the entry.
pub struct Found {
    pub entry: ServingEntry,
    pub uprobe: Option<(PathBuf, u64)>,
}

/// Unwinds the stack `pid` sent at its wait (`found_at` says which) and derives the serving
/// entry; `Err` says why there is none.
pub fn derive(
    rootfs: &Rootfs,
    pid: u32,
    saved: &[u64; REGS_SLOTS],
    stack: &[u8],
    found_at: &str,
) -> Result<Found, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|err| format!("cannot read /proc/{pid}/maps: {err}"))?;
    let mut files = Vec::new();
    for (path, start, end, offset) in stack::executable_mappings(&maps) {
        // A file that cannot be read only shortens the stack, where its frames would be.
        if let Ok((_, bytes)) = rootfs.read(&path) {
            files.push((path, start, end, offset, bytes));
        }
    }
    let mappings: Vec<Mapping<'_>> = files
        .iter()
        .map(|(path, start, end, offset, bytes)| Mapping {
            path: path.clone(),
            start: *start,
            end: *end,
            offset: *offset,
            bytes,
        })
        .collect();
    let registers = Registers {
        ip: saved[regs::IP],
        sp: saved[regs::SP],
        bp: saved[regs::BP],
        bx: saved[regs::BX],
        r12: saved[regs::R12],
        r13: saved[regs::R13],
        r14: saved[regs::R14],
        r15: saved[regs::R15],
    };
    let frames = stack::unwind(&registers, stack, &mappings);
    // Only the application's files are analysed: the rule never looks into the C runtime.
    let cache = elf::default_cache_dir().map_or_else(elf::Cache::disabled, |dir| elf::Cache::at(&dir));
    let mut summaries: Vec<Option<ModuleSummary>> = Vec::new();
    for (index, mapping) in mappings.iter().enumerate() {
        let framed = frames.iter().any(|frame| frame.mapping == index);
        let analysed = (framed && stack::is_application(&mapping.path))
            .then(|| cache.summary(mapping.bytes).ok().map(|(summary, ..)| summary))
            .flatten();
        summaries.push(analysed);
    }
    let summaries: Vec<Option<&ModuleSummary>> = summaries.iter().map(Option::as_ref).collect();
    let mut entry = stack::derive(&frames, &mappings, &summaries, found_at)?;
    // The program is the application file that asks for a loader: libraries do not, but for
    // the C runtime's own, which is not the application's.
    entry.program = mappings
        .iter()
        .map(|mapping| &mapping.path)
        .find(|path| stack::is_application(path) && super::interpreter::of(rootfs, path).is_some())
        .cloned();
    let uprobe = mappings.iter().find(|mapping| mapping.path == entry.entry.binary).and_then(|mapping| {
        let offset = stack::file_offset(mapping.bytes, entry.entry.address)?;
        Some((rootfs.host_path(&mapping.path)?, offset))
    });
    Ok(Found { entry, uprobe })
}
