//! What can be wrong with a capture file, said so that the user can find the damage: every error
//! names the byte offset (in the decompressed stream) and the block it was found in.

use std::fmt;

use super::event::Malformed;

/// A capture that cannot be read past some point.
#[derive(Debug, thiserror::Error)]
#[error("byte {offset}: {block}: {problem}")]
pub struct ScapError {
    /// Where the damaged block starts, counted in the decompressed stream.
    pub offset: u64,
    pub block: BlockName,
    pub problem: Problem,
}

/// The block an error was found in, as the format names it (`EV_V2 block (0x216)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockName {
    pub name: &'static str,
    pub id: Option<u32>,
}

impl BlockName {
    /// The 8 bytes that frame a block, before its type is known.
    pub const HEADER: BlockName = BlockName { name: "block header", id: None };
    /// The decompressor, before any block could be framed.
    pub const STREAM: BlockName = BlockName { name: "stream", id: None };
}

impl fmt::Display for BlockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} block (0x{id:x})", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// What is wrong at that offset.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("not a .scap capture: a capture starts with a section header block (0x0a0d0d0a), this file with 0x{0:08x}")]
    NotACapture(u32),
    #[error("the file is empty, not a .scap capture")]
    Empty,
    #[error("not a .scap capture: {0} bytes, fewer than one block header")]
    TooShort(usize),
    #[error("the file ends inside the 8-byte block header (truncated capture)")]
    ShortHeader,
    #[error("the file ends {available} bytes into a {length}-byte block (truncated capture)")]
    Truncated { length: u64, available: u64 },
    #[error("block length {length} is {why} (corrupt length field)")]
    BadLength { length: u32, why: &'static str },
    #[error("block length {header} in the header but {trailer} in the trailer (corrupt block)")]
    TrailerMismatch { header: u32, trailer: u32 },
    #[error("byte-order magic 0x{0:08x} is not 0x1a2b3c4d (big-endian or corrupt section header)")]
    ByteOrder(u32),
    #[error("format version {major}.{minor} is newer than this reader's 1.x")]
    Version { major: u16, minor: u16 },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Event(Malformed),
    #[error("cannot read the capture: {0}")]
    Io(std::io::Error),
    #[error("the capture holds no events (it ends after its headers)")]
    NoEvents,
}

impl ScapError {
    pub fn new(offset: u64, block: BlockName, problem: Problem) -> ScapError {
        ScapError { offset, block, problem }
    }
}
