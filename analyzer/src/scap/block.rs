//! The file layer: gzip sniffing and pcapng-style block framing.
//!
//! A capture is a sequence of blocks `u32 type | u32 total length | body | u32 total length`. This
//! module checks every frame (minimum length, 4-byte alignment, the 64 KiB limit of ordinary event
//! blocks, the trailer) and hands out one block body at a time from a buffer it reuses, so memory
//! stays flat however long the capture is. It knows block ids, not what is inside the blocks.

use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;

use super::error::{BlockName, Problem, ScapError};

/// The block types this reader knows, normalised over their legacy (`…ABCD`) ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Section,
    MachineInfo,
    /// A process list, by layout version (1–9).
    ProcList(u8),
    /// An fd list; `v2` entries carry their own length.
    FdList {
        v2: bool,
    },
    Event(EventLayout),
    /// Interface and user lists: nothing seccomp-refine needs.
    Ignored,
    /// A block type this reader does not know; skipped by its length.
    Unknown,
}

/// How an event block lays out its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLayout {
    /// 26-byte event header with `nparams` (v2) rather than the 22-byte v1 header.
    pub v2: bool,
    /// A u32 of dump flags sits between the cpu id and the event.
    pub flags: bool,
    /// The block may exceed 64 KiB.
    pub large: bool,
}

/// Bodies of ordinary event blocks never exceed this (libscap's `READER_BUF_SIZE`).
const EVENT_BODY_LIMIT: u32 = 64 * 1024;
/// No block of a real capture comes near this; a bigger length is a corrupt field.
const BLOCK_LIMIT: u32 = 1 << 30;

const fn event(v2: bool, flags: bool, large: bool) -> BlockKind {
    BlockKind::Event(EventLayout { v2, flags, large })
}

/// The kind and the format's name of block type `id`.
#[inline]
pub fn describe(id: u32) -> (BlockKind, &'static str) {
    match id {
        0x0A0D_0D0A => (BlockKind::Section, "section header"),
        0x201 | 0x8002_ABCD => (BlockKind::MachineInfo, "MI"),
        0x202 | 0x8000_ABCD => (BlockKind::ProcList(1), "PL"),
        0x207 | 0x8013_ABCD => (BlockKind::ProcList(2), "PL_V2"),
        0x209 | 0x8014_ABCD => (BlockKind::ProcList(3), "PL_V3"),
        0x210 => (BlockKind::ProcList(4), "PL_V4"),
        0x211 => (BlockKind::ProcList(5), "PL_V5"),
        0x212 => (BlockKind::ProcList(6), "PL_V6"),
        0x213 => (BlockKind::ProcList(7), "PL_V7"),
        0x214 => (BlockKind::ProcList(8), "PL_V8"),
        0x215 => (BlockKind::ProcList(9), "PL_V9"),
        0x203 | 0x8001_ABCD => (BlockKind::FdList { v2: false }, "FDL"),
        0x218 => (BlockKind::FdList { v2: true }, "FDL_V2"),
        0x204 | 0x8010_ABCD => (event(false, false, false), "EV"),
        0x216 => (event(true, false, false), "EV_V2"),
        0x221 => (event(true, false, true), "EV_V2_LARGE"),
        0x208 => (event(false, true, false), "EVF"),
        0x217 => (event(true, true, false), "EVF_V2"),
        0x222 => (event(true, true, true), "EVF_V2_LARGE"),
        0x205 | 0x8011_ABCD => (BlockKind::Ignored, "IL"),
        0x219 => (BlockKind::Ignored, "IL_V2"),
        0x206 | 0x8012_ABCD => (BlockKind::Ignored, "UL"),
        0x220 => (BlockKind::Ignored, "UL_V2"),
        _ => (BlockKind::Unknown, "unknown"),
    }
}

/// One framed block; `body` excludes the 8-byte header and the trailer (it includes padding).
pub struct Block<'a> {
    pub kind: BlockKind,
    pub name: BlockName,
    /// Where the block starts in the decompressed stream.
    pub offset: u64,
    pub body: &'a [u8],
}

/// Reads blocks from a raw or gzip-compressed capture.
///
/// Input is read in large chunks into one buffer and blocks are handed out as slices of it, so
/// the common small event block costs no copy and no call into the reader.
pub struct BlockReader {
    input: Box<dyn Read>,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`; `buffer[start]` is at stream offset `offset`.
    start: usize,
    end: usize,
    offset: u64,
    eof: bool,
    started: bool,
}

/// How much is read from the input at a time.
const CHUNK: usize = 256 * 1024;

impl BlockReader {
    /// A reader over `input`, decompressing it when it starts with the gzip magic. libscap opens
    /// every capture through zlib, so a `.scap` name says nothing about compression.
    pub fn new(input: impl Read + 'static) -> io::Result<BlockReader> {
        // A small buffer, only to look at the first bytes: the chunk reads below are larger, so
        // they bypass it instead of copying through it.
        let mut raw = BufReader::with_capacity(64 * 1024, input);
        let gzip = raw.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        // Several gzip members one after the other are one valid stream.
        let input: Box<dyn Read> = if gzip { Box::new(MultiGzDecoder::new(raw)) } else { Box::new(raw) };
        Ok(BlockReader { input, buffer: vec![0; CHUNK], start: 0, end: 0, offset: 0, eof: false, started: false })
    }

    /// The next block, `None` at a clean end of file (one that falls between two blocks). The
    /// error is boxed to keep the result small: this is called once per event.
    #[inline]
    pub fn next_block(&mut self) -> Result<Option<Block<'_>>, Box<ScapError>> {
        let start = self.offset;
        let io_error = |name| move |err| Box::new(ScapError::new(start, name, Problem::Io(err)));
        let available = self.fill(8).map_err(io_error(BlockName::STREAM))?;
        if available == 0 && self.started {
            return Ok(None);
        }
        if available < 8 {
            let problem = match (self.started, available) {
                (true, _) => Problem::ShortHeader,
                (false, 0) => Problem::Empty,
                (false, bytes) => Problem::TooShort(bytes),
            };
            return Err(Box::new(ScapError::new(start, BlockName::HEADER, problem)));
        }
        let header = &self.buffer[self.start..self.start + 8];
        let id = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let length = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let (kind, name) = describe(id);
        let name = BlockName { name, id: Some(id) };
        let fail = |problem| Err(Box::new(ScapError::new(start, name, problem)));
        if !self.started && kind != BlockKind::Section {
            return fail(Problem::NotACapture(id));
        }
        self.started = true;
        if let Some(why) = bad_length(kind, length) {
            return fail(Problem::BadLength { length, why });
        }
        let length = length as usize;
        let available = self.fill(length).map_err(io_error(name))?;
        if available < length {
            return fail(Problem::Truncated { length: length as u64, available: available as u64 });
        }
        let block = &self.buffer[self.start..self.start + length];
        let trailer = u32::from_le_bytes(block[length - 4..].try_into().expect("4 bytes"));
        if trailer as usize != length {
            return fail(Problem::TrailerMismatch { header: length as u32, trailer });
        }
        self.start += length;
        self.offset += length as u64;
        Ok(Some(Block { kind, name, offset: start, body: &block[8..length - 4] }))
    }

    /// Makes at least `count` unread bytes available if the input has them; returns how many are.
    #[inline]
    fn fill(&mut self, count: usize) -> io::Result<usize> {
        if self.end - self.start >= count || self.eof {
            return Ok((self.end - self.start).min(count));
        }
        self.refill(count)
    }

    /// Moves the unread bytes to the front and reads until `count` are there or the input ends.
    /// The buffer grows only as bytes actually arrive, so a corrupt length in a truncated file
    /// cannot make it allocate what the length claims.
    #[inline(never)]
    fn refill(&mut self, count: usize) -> io::Result<usize> {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < count && !self.eof {
            if self.end == self.buffer.len() {
                let grown = (self.buffer.len() * 2).min(count.max(CHUNK));
                self.buffer.resize(grown, 0);
            }
            match self.input.read(&mut self.buffer[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(read) => self.end += read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(self.end.min(count))
    }
}

/// Why `length` cannot frame a block of `kind`, if it cannot.
#[inline]
fn bad_length(kind: BlockKind, length: u32) -> Option<&'static str> {
    if length < 12 {
        Some("shorter than the 12-byte minimum")
    } else if !length.is_multiple_of(4) {
        Some("not a multiple of 4")
    } else if matches!(kind, BlockKind::Event(layout) if !layout.large) && length - 8 > EVENT_BODY_LIMIT {
        Some("over the 64 KiB limit of an event block")
    } else if length > BLOCK_LIMIT {
        Some("over 1 GiB")
    } else {
        None
    }
}

/// The section header's version, checked: byte-order magic, then major version ≤ 1. Anything
/// after the first 16 bytes of the body is options (e.g. a comment), which nothing here needs.
pub fn check_section_header(body: &[u8]) -> Result<(), Problem> {
    if body.len() < 16 {
        return Err(Problem::Corrupt(format!("the section header body is {} bytes, less than 16", body.len())));
    }
    let magic = u32::from_le_bytes(body[0..4].try_into().expect("4 bytes"));
    if magic != 0x1A2B_3C4D {
        return Err(Problem::ByteOrder(magic));
    }
    let major = u16::from_le_bytes([body[4], body[5]]);
    let minor = u16::from_le_bytes([body[6], body[7]]);
    if major > 1 {
        return Err(Problem::Version { major, minor });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scap::testing::{block, section};

    fn read_all(bytes: Vec<u8>) -> Result<Vec<(BlockKind, u64, usize)>, Box<ScapError>> {
        let mut reader = BlockReader::new(std::io::Cursor::new(bytes)).unwrap();
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block()? {
            blocks.push((block.kind, block.offset, block.body.len()));
        }
        Ok(blocks)
    }

    #[test]
    fn blocks_are_framed_and_unknown_ones_pass_by_length() {
        let mut bytes = section();
        bytes.extend(block(0x8010_ABCD, &[1, 2, 3]));
        bytes.extend(block(0x7777, &[0; 9]));
        let blocks = read_all(bytes).unwrap();
        assert_eq!(
            blocks,
            [(BlockKind::Section, 0, 16), (event(false, false, false), 28, 4), (BlockKind::Unknown, 44, 12),]
        );
    }

    #[test]
    fn gzip_members_are_one_stream() {
        use std::io::Write as _;
        let mut bytes = Vec::new();
        for part in [section(), block(0x216, &[7; 30])] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&part).unwrap();
            bytes.extend(encoder.finish().unwrap());
        }
        assert_eq!(read_all(bytes).unwrap().len(), 2);
    }

    #[test]
    fn damage_is_named_with_offset_and_block() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "byte 0: block header: the file is empty"),
            (b"hello\n".to_vec(), "byte 0: block header: not a .scap capture: 6 bytes, fewer than one block header"),
            (b"hello, world".to_vec(), "byte 0: unknown block (0x6c6c6568): not a .scap capture"),
            ([section(), vec![0x16, 2, 0]].concat(), "byte 28: block header: the file ends inside the 8-byte"),
            (
                [section(), block(0x216, &[0; 8])[..14].to_vec()].concat(),
                "byte 28: EV_V2 block (0x216): the file ends 14 bytes into a 20-byte block",
            ),
            (
                [section(), vec![0x16, 2, 0, 0, 14, 0, 0, 0]].concat(),
                "byte 28: EV_V2 block (0x216): block length 14 is not a multiple of 4",
            ),
            (
                [section(), vec![0x16, 2, 0, 0, 8, 0, 0, 0]].concat(),
                "block length 8 is shorter than the 12-byte minimum",
            ),
            ([section(), vec![0x16, 2, 0, 0, 12, 0, 1, 0]].concat(), "block length 65548 is over the 64 KiB limit"),
            (
                [section(), vec![0x15, 2, 0, 0, 12, 0, 0, 0x70]].concat(),
                "PL_V9 block (0x215): block length 1879048204 is over 1 GiB",
            ),
        ];
        for (bytes, expected) in cases {
            let err = read_all(bytes).unwrap_err().to_string();
            assert!(err.starts_with(expected) || err.contains(expected), "{err}\nexpected: {expected}");
        }
        let mut bad_trailer = [section(), block(0x216, &[0; 8])].concat();
        let end = bad_trailer.len();
        bad_trailer[end - 4] = 24;
        let err = read_all(bad_trailer).unwrap_err().to_string();
        assert_eq!(
            err,
            "byte 28: EV_V2 block (0x216): block length 20 in the header but 24 in the trailer (corrupt block)"
        );
    }

    #[test]
    fn section_header_versions_and_byte_order_are_checked() {
        let good = [0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 2, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9, 9, 9, 9];
        assert!(check_section_header(&good).is_ok(), "options after the fixed fields are skipped");
        let mut newer = good;
        newer[4] = 2;
        assert_eq!(
            check_section_header(&newer).unwrap_err().to_string(),
            "format version 2.2 is newer than this reader's 1.x"
        );
        let mut swapped = good;
        swapped[..4].copy_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
        assert!(check_section_header(&swapped).unwrap_err().to_string().contains("0x4d3c2b1a is not 0x1a2b3c4d"));
        assert!(check_section_header(&good[..10]).is_err());
    }
}
