//! `cargo xtask gen-capture`: a large `.scap` for benchmarking `seccomp-refine import`, made by
//! replaying a real capture's events many times.
//!
//! The metadata blocks (section header, machine info, process and fd lists) are written once;
//! the event blocks then follow `--repeat` times, each round's timestamps shifted past the
//! previous round's, so the result reads like one long recording of the same workload (threads
//! that exit in one round are created again by the replayed clones of the next). The output is
//! uncompressed: the benchmark measures the reader, not zlib.
//!
//! The comparison it is made for (the psp fixture's container is `697956520d89`):
//! `seccomp-refine import BIG.scap --container 697956520d89 -o DIR` against
//! `sysdig -r BIG.scap -p '%evt.type' container.id=697956520d89 > /dev/null`, at two sizes, under
//! `/usr/bin/time -f '%e %U %S %M'` (elapsed, CPU, peak RSS: which must not grow with the size).

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::project_root;

/// The capture replayed unless told otherwise: the container fixture of the `.scap` tests.
pub fn default_fixture() -> PathBuf {
    project_root().join("tests/data/scap/falco_psp_run_as_user_0_container.scap")
}

/// Event block ids (v1, v2, large) and whether a u32 of dump flags precedes the event.
fn event_header_offset(block_type: u32) -> Option<usize> {
    match block_type {
        0x204 | 0x8010_ABCD | 0x216 | 0x221 => Some(2),
        0x208 | 0x217 | 0x222 => Some(6),
        _ => None,
    }
}

pub fn generate(fixture: &Path, repeat: u32, out: &Path) -> Result<()> {
    let bytes = read_capture(fixture)?;
    let (metadata, events) = split_blocks(&bytes).with_context(|| format!("{} is not a capture", fixture.display()))?;
    let timestamps: Vec<u64> = events.iter().map(|event| event.ts).collect();
    let (first, last) = (timestamps.iter().min().copied(), timestamps.iter().max().copied());
    let (Some(first), Some(last)) = (first, last) else { bail!("{} holds no events", fixture.display()) };
    // Each round starts 1 µs after the previous one ended.
    let round = last - first + 1_000;
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    writer.write_all(metadata)?;
    let mut block = Vec::new();
    for index in 0..u64::from(repeat) {
        for event in &events {
            block.clear();
            block.extend_from_slice(event.block);
            let shifted = event.ts + index * round;
            block[event.ts_at..event.ts_at + 8].copy_from_slice(&shifted.to_le_bytes());
            writer.write_all(&block)?;
        }
    }
    writer.flush()?;
    let size = std::fs::metadata(out)?.len();
    println!(
        "xtask: wrote {} ({:.1} MB, {} events)",
        out.display(),
        size as f64 / 1e6,
        events.len() as u64 * u64::from(repeat)
    );
    Ok(())
}

/// The capture's bytes, decompressed if it is gzip.
fn read_capture(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot decompress {}", path.display()))?;
    Ok(bytes)
}

struct EventBlock<'a> {
    block: &'a [u8],
    /// Offset of the event's timestamp inside `block`.
    ts_at: usize,
    ts: u64,
}

/// The bytes before the first event block, and every event block after it.
fn split_blocks(bytes: &[u8]) -> Result<(&[u8], Vec<EventBlock<'_>>)> {
    let mut offset = 0;
    let mut metadata_end = None;
    let mut events = Vec::new();
    while offset + 8 <= bytes.len() {
        let block_type = u32::from_le_bytes(bytes[offset..offset + 4].try_into()?);
        let length = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into()?) as usize;
        if length < 12 || offset + length > bytes.len() {
            bail!("bad block length {length} at byte {offset}");
        }
        let block = &bytes[offset..offset + length];
        if let Some(header) = event_header_offset(block_type) {
            metadata_end.get_or_insert(offset);
            let ts_at = 8 + header;
            let ts = u64::from_le_bytes(block.get(ts_at..ts_at + 8).context("short event block")?.try_into()?);
            events.push(EventBlock { block, ts_at, ts });
        }
        offset += length;
    }
    Ok((&bytes[..metadata_end.unwrap_or(offset)], events))
}
