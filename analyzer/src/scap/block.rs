//! The file layer: gzip sniffing and pcapng-style block framing.
//!
//! A capture is a sequence of blocks `u32 type | u32 total length | body | u32 total length`. This
//! module checks every frame (minimum length, 4-byte alignment, the 64 KiB limit of ordinary event
//! blocks, the trailer) and, for event blocks, the event inside (`event::check`), and hands the
//! blocks out in batches: a stretch of the stream in a buffer the caller recycles, with one
//! [`Item`] per block. Memory stays flat however long the capture is, and the framing can run on
//! a thread of its own while another imports the previous batch. Of the other blocks it knows
//! the ids, not what is inside.

use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;

use super::error::{BlockName, Problem, ScapError};
use super::event::{self, Checked, EventLayout, Malformed};
use super::kinds::action;

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

/// Bodies of ordinary event blocks never exceed this (libscap's `READER_BUF_SIZE`).
const EVENT_BODY_LIMIT: u32 = 64 * 1024;
/// No block of a real capture comes near this; a bigger length is a corrupt field.
const BLOCK_LIMIT: u32 = 1 << 30;

const fn event(v2: bool, flags: bool, large: bool) -> BlockKind {
    BlockKind::Event(EventLayout { v2, flags, large })
}

/// Every block type id this reader knows, with its kind and the format's name for it.
const BLOCK_TYPES: [(u32, BlockKind, &str); 31] = [
    (0x0A0D_0D0A, BlockKind::Section, "section header"),
    (0x201, BlockKind::MachineInfo, "MI"),
    (0x8002_ABCD, BlockKind::MachineInfo, "MI"),
    (0x202, BlockKind::ProcList(1), "PL"),
    (0x8000_ABCD, BlockKind::ProcList(1), "PL"),
    (0x207, BlockKind::ProcList(2), "PL_V2"),
    (0x8013_ABCD, BlockKind::ProcList(2), "PL_V2"),
    (0x209, BlockKind::ProcList(3), "PL_V3"),
    (0x8014_ABCD, BlockKind::ProcList(3), "PL_V3"),
    (0x210, BlockKind::ProcList(4), "PL_V4"),
    (0x211, BlockKind::ProcList(5), "PL_V5"),
    (0x212, BlockKind::ProcList(6), "PL_V6"),
    (0x213, BlockKind::ProcList(7), "PL_V7"),
    (0x214, BlockKind::ProcList(8), "PL_V8"),
    (0x215, BlockKind::ProcList(9), "PL_V9"),
    (0x203, BlockKind::FdList { v2: false }, "FDL"),
    (0x8001_ABCD, BlockKind::FdList { v2: false }, "FDL"),
    (0x218, BlockKind::FdList { v2: true }, "FDL_V2"),
    (0x204, event(false, false, false), "EV"),
    (0x8010_ABCD, event(false, false, false), "EV"),
    (0x216, event(true, false, false), "EV_V2"),
    (0x221, event(true, false, true), "EV_V2_LARGE"),
    (0x208, event(false, true, false), "EVF"),
    (0x217, event(true, true, false), "EVF_V2"),
    (0x222, event(true, true, true), "EVF_V2_LARGE"),
    (0x205, BlockKind::Ignored, "IL"),
    (0x8011_ABCD, BlockKind::Ignored, "IL"),
    (0x219, BlockKind::Ignored, "IL_V2"),
    (0x206, BlockKind::Ignored, "UL"),
    (0x8012_ABCD, BlockKind::Ignored, "UL"),
    (0x220, BlockKind::Ignored, "UL_V2"),
];

/// The kinds of the current format's ids (0x200–0x222), so that the kind of almost every block
/// is one load.
const CURRENT_KINDS: [BlockKind; 0x23] = current_kinds();

const fn current_kinds() -> [BlockKind; 0x23] {
    let mut table = [BlockKind::Unknown; 0x23];
    let mut index = 0;
    while index < BLOCK_TYPES.len() {
        let (id, kind, _) = BLOCK_TYPES[index];
        if id >= 0x200 && id < 0x223 {
            table[(id - 0x200) as usize] = kind;
        }
        index += 1;
    }
    table
}

#[inline]
fn block_kind(id: u32) -> BlockKind {
    match CURRENT_KINDS.get(id.wrapping_sub(0x200) as usize) {
        Some(&kind) => kind,
        None => describe(id).0,
    }
}

/// The kind and the format's name of block type `id`.
pub fn describe(id: u32) -> (BlockKind, &'static str) {
    BLOCK_TYPES
        .iter()
        .find(|&&(known, ..)| known == id)
        .map_or((BlockKind::Unknown, "unknown"), |&(_, kind, name)| (kind, name))
}

/// One framed block of a [`Batch`], as the framer classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// An event the importer reads, checked: its block starts at `at` in the batch's bytes; it
    /// has `count` parameters, with u32 lengths when `wide`.
    Event { at: u32, count: u32, layout: EventLayout, wide: bool },
    /// Events in a row of types the importer does not read (their parameters were not checked).
    Skipped(u32),
    /// An event of a type newer than these tables.
    UnknownType(u16),
    /// Any other block, starting at `at`.
    Block { at: u32 },
}

/// Whole, checked blocks from one stretch of the stream, with what the framer made of each.
pub struct Batch {
    /// The blocks back to back (and after them, maybe, the start of the next one).
    bytes: Vec<u8>,
    /// Where `bytes[0]` is in the decompressed stream.
    pub offset: u64,
    pub items: Vec<Item>,
    /// What comes after the last item.
    pub end: End,
}

/// How a batch ends.
#[derive(Debug)]
pub enum End {
    /// The next batch continues the stream.
    More,
    /// The stream ended cleanly, between two blocks.
    Clean,
    /// The stream cannot be read past the last item.
    Damage(Box<ScapError>),
}

impl Batch {
    pub fn new() -> Batch {
        Batch { bytes: vec![0; CHUNK], offset: 0, items: Vec::new(), end: End::More }
    }

    /// The type id and body (padding included) of the block at `at`, and where it is in the stream.
    #[inline]
    pub fn block(&self, at: u32) -> (u32, &[u8], u64) {
        let at = at as usize;
        let id = u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"));
        (id, self.body(at), self.offset + at as u64)
    }

    /// The body of the event block at `at`.
    #[inline]
    pub fn event_body(&self, at: u32) -> &[u8] {
        self.body(at as usize)
    }

    #[inline]
    fn body(&self, at: usize) -> &[u8] {
        let length = u32::from_le_bytes(self.bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        &self.bytes[at + 8..at + length - 4]
    }
}

/// Reads a raw or gzip-compressed capture and frames it, a batch at a time.
///
/// Input is read in large chunks straight into a batch's buffer; the bytes of a block that the
/// chunk cuts are carried to the front of the next batch.
pub struct Framer {
    input: Box<dyn Read + Send>,
    /// Bytes read past the last whole block of the previous batch.
    carry: Vec<u8>,
    /// Where `carry[0]` is in the decompressed stream.
    offset: u64,
    /// The input has no more bytes (or failed: `failure`).
    eof: bool,
    /// The read error that ended the input, reported at the block whose bytes it cut off.
    failure: Option<io::Error>,
    started: bool,
}

/// How much is read from the input at a time: also the usual size of a batch.
const CHUNK: usize = 1 << 20;

impl Framer {
    /// A framer over `input`, decompressing it when it starts with the gzip magic. libscap opens
    /// every capture through zlib, so a `.scap` name says nothing about compression.
    pub fn new(input: impl Read + Send + 'static) -> io::Result<Framer> {
        // A small buffer, only to look at the first bytes: the chunk reads below are larger, so
        // they bypass it instead of copying through it.
        let mut raw = BufReader::with_capacity(64 * 1024, input);
        let gzip = raw.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        // Several gzip members one after the other are one valid stream.
        let input: Box<dyn Read + Send> = if gzip { Box::new(MultiGzDecoder::new(raw)) } else { Box::new(raw) };
        Ok(Framer { input, carry: Vec::new(), offset: 0, eof: false, failure: None, started: false })
    }

    /// Fills `batch` with the next whole blocks; its `end` says whether more follow.
    pub fn next_batch(&mut self, batch: &mut Batch) {
        batch.items.clear();
        batch.offset = self.offset;
        // A batch that grew for one big block shrinks back, so that memory stays flat.
        let size = CHUNK.max(self.carry.len());
        if batch.bytes.len() != size {
            batch.bytes = vec![0; size];
        }
        batch.bytes[..self.carry.len()].copy_from_slice(&self.carry);
        let mut filled = self.carry.len();
        self.read(&mut batch.bytes, &mut filled, size);
        let mut at = 0;
        batch.end = loop {
            if self.started {
                at = frame_events(&batch.bytes[..filled], at, &mut batch.items);
            }
            match self.frame(batch, at, &mut filled) {
                Ok(Some(length)) => at += length,
                Ok(None) if self.eof && at == filled => break End::Clean,
                Ok(None) => break End::More,
                Err(damage) => break End::Damage(damage),
            }
        };
        self.carry.clear();
        self.carry.extend_from_slice(&batch.bytes[at..filled]);
        self.offset += at as u64;
    }

    /// Frames and classifies the block at `at`: its length, or `None` when the batch holds no
    /// more whole blocks (the stream's end, or bytes still to read).
    #[inline]
    fn frame(&mut self, batch: &mut Batch, at: usize, filled: &mut usize) -> Result<Option<usize>, Box<ScapError>> {
        let start = batch.offset + at as u64;
        let available = *filled - at;
        if available < 8 {
            if !self.eof || (available == 0 && self.started && self.failure.is_none()) {
                return Ok(None);
            }
            let problem = match (self.failure.take(), self.started, available) {
                (Some(err), ..) => return Err(Box::new(ScapError::new(start, BlockName::STREAM, Problem::Io(err)))),
                (None, true, _) => Problem::ShortHeader,
                (None, false, 0) => Problem::Empty,
                (None, false, bytes) => Problem::TooShort(bytes),
            };
            return Err(Box::new(ScapError::new(start, BlockName::HEADER, problem)));
        }
        let header = &batch.bytes[at..at + 8];
        let id = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let length = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let kind = block_kind(id);
        let fail =
            |problem| Err(Box::new(ScapError::new(start, BlockName { name: describe(id).1, id: Some(id) }, problem)));
        if !self.started && kind != BlockKind::Section {
            return fail(Problem::NotACapture(id));
        }
        self.started = true;
        if let Some(why) = bad_length(kind, length) {
            return fail(Problem::BadLength { length, why });
        }
        let length = length as usize;
        let mut available = available;
        if available < length && at == 0 && !self.eof {
            // A block bigger than the buffer: the buffer grows for it.
            self.read(&mut batch.bytes, filled, length);
            available = *filled;
        }
        if available < length {
            if !self.eof {
                return Ok(None);
            }
            if let Some(err) = self.failure.take() {
                return fail(Problem::Io(err));
            }
            return fail(Problem::Truncated { length: length as u64, available: available as u64 });
        }
        let block = &batch.bytes[at..at + length];
        let trailer = u32::from_le_bytes(block[length - 4..].try_into().expect("4 bytes"));
        if trailer as usize != length {
            return fail(Problem::TrailerMismatch { header: length as u32, trailer });
        }
        let item = match kind {
            BlockKind::Event(layout) => match event_item(&block[8..length - 4], layout, at) {
                Ok(item) => item,
                Err(malformed) => return fail(Problem::Event(malformed)),
            },
            _ => Item::Block { at: at as u32 },
        };
        push(&mut batch.items, item);
        Ok(Some(length))
    }

    /// Reads until `bytes[..want]` is filled or the input ends. The buffer grows only as bytes
    /// actually arrive, so a corrupt length in a truncated file cannot make it allocate what the
    /// length claims.
    #[inline(never)]
    fn read(&mut self, bytes: &mut Vec<u8>, filled: &mut usize, want: usize) {
        while *filled < want && !self.eof {
            if *filled == bytes.len() {
                let grown = (bytes.len() * 2).min(want);
                bytes.resize(grown, 0);
            }
            match self.input.read(&mut bytes[*filled..]) {
                Ok(0) => self.eof = true,
                Ok(read) => *filled += read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.failure = Some(err);
                    self.eof = true;
                }
            }
        }
    }
}

/// Frames the common case with the fewest steps: whole, sound, ordinary event blocks from `at`
/// on, after the section header. It stops, leaving the block to [`Framer::frame`] and its
/// complete checks and errors, at any other block, any doubt, or where the bytes run out.
#[inline]
fn frame_events(bytes: &[u8], mut at: usize, items: &mut Vec<Item>) -> usize {
    while let Some(header) = bytes.get(at..at + 8) {
        let id = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let length = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let BlockKind::Event(layout) = block_kind(id) else { break };
        if layout.large || bad_length(BlockKind::Event(layout), length).is_some() {
            break;
        }
        let length = length as usize;
        let Some(block) = bytes.get(at..at + length) else { break };
        if u32::from_le_bytes(block[length - 4..].try_into().expect("4 bytes")) as usize != length {
            break;
        }
        let Ok(item) = event_item(&block[8..length - 4], layout, at) else { break };
        push(items, item);
        at += length;
    }
    at
}

/// What the importer gets of an event block: only the event types it reads are checked and
/// handed on whole.
#[inline(always)]
fn event_item(body: &[u8], layout: EventLayout, at: usize) -> Result<Item, Malformed> {
    Ok(match event::check(body, layout, |kind| action(kind).wanted())? {
        Checked::Event { count, wide } => Item::Event { at: at as u32, count, layout, wide },
        Checked::Skipped(_) => Item::Skipped(1),
        Checked::UnknownType(kind) => Item::UnknownType(kind),
    })
}

/// Appends `item`; skipped events in a row become one item.
#[inline]
fn push(items: &mut Vec<Item>, item: Item) {
    if let (Item::Skipped(more), Some(Item::Skipped(count))) = (item, items.last_mut()) {
        *count += more;
    } else {
        items.push(item);
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
    use crate::scap::testing::{block, event_body, section};

    /// (block id, stream offset, body length) of every block, or the damage that stops the stream.
    fn read_all(input: impl Read + Send + 'static) -> Result<Vec<(u32, u64, usize)>, Box<ScapError>> {
        let mut framer = Framer::new(input).unwrap();
        let mut batch = Batch::new();
        let mut blocks = Vec::new();
        loop {
            framer.next_batch(&mut batch);
            for item in &batch.items {
                let (Item::Event { at, .. } | Item::Block { at }) = *item else { panic!("{item:?}") };
                let (id, body, offset) = batch.block(at);
                blocks.push((id, offset, body.len()));
            }
            match std::mem::replace(&mut batch.end, End::More) {
                End::More => {}
                End::Clean => return Ok(blocks),
                End::Damage(err) => return Err(err),
            }
        }
    }

    fn read_bytes(bytes: Vec<u8>) -> Result<Vec<(u32, u64, usize)>, Box<ScapError>> {
        read_all(std::io::Cursor::new(bytes))
    }

    fn close_x() -> Vec<u8> {
        event_body(5, 7, 1_000, &[&0u64.to_le_bytes(), &3u64.to_le_bytes()])
    }

    #[test]
    fn blocks_are_framed_and_unknown_ones_pass_by_length() {
        let mut bytes = section();
        bytes.extend(block(0x216, &close_x()));
        bytes.extend(block(0x7777, &[0; 9]));
        assert_eq!(read_bytes(bytes).unwrap(), [(0x0A0D_0D0A, 0, 16), (0x216, 28, 48), (0x7777, 88, 12)]);
    }

    /// Hands out at most `step` bytes per read, like a pipe.
    struct Trickle {
        bytes: std::io::Cursor<Vec<u8>>,
        step: usize,
        /// After this many bytes, reads fail.
        fail_at: Option<u64>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let left = self.fail_at.map_or(u64::MAX, |at| at - self.bytes.position());
            if left == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let step = buf.len().min(self.step).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.bytes.read(&mut buf[..step])
        }
    }

    #[test]
    fn blocks_cut_by_the_chunks_and_bigger_than_a_chunk_come_whole() {
        let mut bytes = section();
        let mut expected = vec![(0x0A0D_0D0A, 0, 16)];
        let mut add = |bytes: &mut Vec<u8>, id: u32, body: &[u8]| {
            expected.push((id, bytes.len() as u64, body.len().next_multiple_of(4)));
            bytes.extend(block(id, body));
        };
        while bytes.len() < 2 * CHUNK + 100 {
            add(&mut bytes, 0x216, &close_x());
        }
        add(&mut bytes, 0x7777, &vec![1; 3 * CHUNK + 5]);
        add(&mut bytes, 0x216, &close_x());
        for step in [usize::MAX, 4093] {
            let trickle = Trickle { bytes: std::io::Cursor::new(bytes.clone()), step, fail_at: None };
            assert!(read_all(trickle).unwrap() == expected, "{step}-byte reads");
        }
        let cut = 5 * CHUNK as u64;
        let trickle = Trickle { bytes: std::io::Cursor::new(bytes.clone()), step: 4093, fail_at: Some(cut) };
        let damage = read_all(trickle).unwrap_err();
        assert!(damage.to_string().ends_with("cannot read the capture: disk on fire"), "{damage}");
        let first_cut = expected.iter().find(|(_, offset, length)| offset + *length as u64 + 12 > cut).unwrap();
        assert_eq!(damage.offset, first_cut.1, "the read error is reported at the block it cuts");
    }

    #[test]
    fn gzip_members_are_one_stream() {
        use std::io::Write as _;
        let mut bytes = Vec::new();
        for part in [section(), block(0x216, &close_x())] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&part).unwrap();
            bytes.extend(encoder.finish().unwrap());
        }
        assert_eq!(read_bytes(bytes).unwrap().len(), 2);
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
            let err = read_bytes(bytes).unwrap_err().to_string();
            assert!(err.starts_with(expected) || err.contains(expected), "{err}\nexpected: {expected}");
        }
        let mut bad_trailer = [section(), block(0x216, &[0; 8])].concat();
        let end = bad_trailer.len();
        bad_trailer[end - 4] = 24;
        let err = read_bytes(bad_trailer).unwrap_err().to_string();
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
