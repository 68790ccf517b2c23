//! Which LLVM wrote a bitcode file, read from its identification block without LLVM.
//!
//! A reader that is older than the writer fails with messages such as "Opaque pointers are only
//! supported in -opaque-pointers mode" or "Unknown attribute kind", which do not say what to do.
//! LLVM ≥ 3.8 starts every module with an `IDENTIFICATION_BLOCK` holding the producer string
//! (`"LLVM19.1.7"`) and the bitcode epoch, so this module decodes just that block — LLVM's
//! bitstream container (<https://llvm.org/docs/BitCodeFormat.html>) — to name the producer and
//! refuse newer bitcode with a clear message before LLVM sees it. It knows nothing else about
//! bitcode.

use thiserror::Error;

/// `'B' 'C' 0xC0DE`: the bitcode magic.
const MAGIC: [u8; 4] = [0x42, 0x43, 0xC0, 0xDE];
/// The optional wrapper header (`0x0B17C0DE`, little endian) some tools put in front.
const WRAPPER_MAGIC: [u8; 4] = [0xDE, 0xC0, 0x17, 0x0B];
const IDENTIFICATION_BLOCK: u64 = 13;
const CODE_STRING: u64 = 1;
const CODE_EPOCH: u64 = 2;

/// What the identification block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// E.g. `LLVM19.1.7`.
    pub name: String,
    /// The bitcode epoch (0 for every LLVM since 3.8).
    pub epoch: u64,
}

impl Producer {
    /// The major LLVM version, when the producer is an LLVM release (`LLVM19.1.7` → 19).
    pub fn llvm_major(&self) -> Option<u32> {
        let version = self.name.strip_prefix("LLVM")?;
        version.split('.').next()?.parse().ok()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProducerError {
    #[error("not LLVM bitcode (no 'BC' 0xC0DE magic)")]
    NotBitcode,
    #[error("truncated bitcode (ends inside its identification block)")]
    Truncated,
    #[error("malformed bitcode identification block ({0})")]
    Malformed(&'static str),
}

/// Reads the producer of `bytes`, or `Ok(None)` for bitcode older than LLVM 3.8, which has no
/// identification block.
pub fn read(bytes: &[u8]) -> Result<Option<Producer>, ProducerError> {
    let bytes = unwrap(bytes)?;
    if bytes.get(..4) != Some(&MAGIC) {
        return Err(ProducerError::NotBitcode);
    }
    let mut bits = Bits { bytes, pos: 32 };
    // At the top level abbreviation ids are 2 bits wide; the first entry must enter a block.
    if bits.fixed(2)? != ENTER_SUBBLOCK {
        return Err(ProducerError::Malformed("no top-level block"));
    }
    let block_id = bits.vbr(8)?;
    let width = width(bits.vbr(4)?)?;
    bits.align32();
    let _length_in_words = bits.fixed(32)?;
    if block_id != IDENTIFICATION_BLOCK {
        return Ok(None);
    }
    read_identification(&mut bits, width).map(Some)
}

/// Skips the wrapper header (offset and size of the real bitcode) when present.
fn unwrap(bytes: &[u8]) -> Result<&[u8], ProducerError> {
    if bytes.get(..4) != Some(&WRAPPER_MAGIC) {
        return Ok(bytes);
    }
    let word = |index: usize| {
        let field = bytes.get(index * 4..index * 4 + 4).ok_or(ProducerError::Truncated)?;
        Ok(u32::from_le_bytes(field.try_into().expect("4 bytes")) as usize)
    };
    let (offset, size) = (word(2)?, word(3)?);
    bytes.get(offset..offset.saturating_add(size)).ok_or(ProducerError::Truncated)
}

const END_BLOCK: u64 = 0;
const ENTER_SUBBLOCK: u64 = 1;
const DEFINE_ABBREV: u64 = 2;
const UNABBREV_RECORD: u64 = 3;

/// One operand of an abbreviation definition.
#[derive(Clone, Copy)]
enum Op {
    Literal(u64),
    Fixed(u32),
    Vbr(u32),
    Array,
    Char6,
    Blob,
}

fn read_identification(bits: &mut Bits<'_>, width: u32) -> Result<Producer, ProducerError> {
    let mut abbrevs: Vec<Vec<Op>> = Vec::new();
    let (mut name, mut epoch) = (None, None);
    loop {
        match bits.fixed(width)? {
            END_BLOCK => break,
            ENTER_SUBBLOCK => return Err(ProducerError::Malformed("nested block")),
            DEFINE_ABBREV => abbrevs.push(read_abbrev(bits)?),
            id => {
                let record = if id == UNABBREV_RECORD {
                    read_unabbreviated(bits)?
                } else {
                    let abbrev =
                        abbrevs.get(id as usize - 4).ok_or(ProducerError::Malformed("unknown abbreviation"))?;
                    read_abbreviated(bits, abbrev)?
                };
                match record.split_first() {
                    Some((&CODE_STRING, chars)) => {
                        name = Some(chars.iter().map(|&c| char::from(c as u8)).collect::<String>())
                    }
                    Some((&CODE_EPOCH, [value, ..])) => epoch = Some(*value),
                    _ => {}
                }
            }
        }
    }
    Ok(Producer { name: name.ok_or(ProducerError::Malformed("no producer string"))?, epoch: epoch.unwrap_or(0) })
}

fn read_abbrev(bits: &mut Bits<'_>) -> Result<Vec<Op>, ProducerError> {
    let count = bits.vbr(5)?;
    let mut ops = Vec::new();
    for _ in 0..count {
        let op = if bits.fixed(1)? == 1 {
            Op::Literal(bits.vbr(8)?)
        } else {
            match bits.fixed(3)? {
                encoding @ (1 | 2) => match (encoding, bits.vbr(5)?) {
                    // A zero-width field reads as the literal 0, as in LLVM.
                    (_, 0) => Op::Literal(0),
                    (1, wide) => Op::Fixed(width(wide)?),
                    (_, wide) => Op::Vbr(width(wide)?),
                },
                3 => Op::Array,
                4 => Op::Char6,
                5 => Op::Blob,
                _ => return Err(ProducerError::Malformed("unknown operand encoding")),
            }
        };
        ops.push(op);
    }
    Ok(ops)
}

fn read_unabbreviated(bits: &mut Bits<'_>) -> Result<Vec<u64>, ProducerError> {
    let code = bits.vbr(6)?;
    let count = bits.vbr(6)?;
    let mut record = vec![code];
    for _ in 0..count {
        record.push(bits.vbr(6)?);
    }
    Ok(record)
}

fn read_abbreviated(bits: &mut Bits<'_>, abbrev: &[Op]) -> Result<Vec<u64>, ProducerError> {
    let mut record = Vec::new();
    let mut ops = abbrev.iter();
    while let Some(&op) = ops.next() {
        match op {
            Op::Array => {
                let element = *ops.next().ok_or(ProducerError::Malformed("array without element type"))?;
                for _ in 0..bits.count()? {
                    record.push(bits.scalar(element)?);
                }
            }
            Op::Blob => {
                let length = bits.count()?;
                bits.align32();
                for _ in 0..length {
                    record.push(bits.fixed(8)?);
                }
                bits.align32();
            }
            scalar => record.push(bits.scalar(scalar)?),
        }
    }
    Ok(record)
}

/// A little-endian bit cursor, least significant bit first, as the bitstream format specifies.
struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A field width read from the file: 1 to 64 bits, so that no shift overflows.
fn width(bits: u64) -> Result<u32, ProducerError> {
    u32::try_from(bits)
        .ok()
        .filter(|bits| (1..=64).contains(bits))
        .ok_or(ProducerError::Malformed("field width out of range"))
}

impl Bits<'_> {
    /// An array or blob length, believed only if the rest of the file could hold that many
    /// elements of one bit: a literal element takes no bits, so a huge count would otherwise
    /// fill memory without reading anything.
    fn count(&mut self) -> Result<u64, ProducerError> {
        let count = self.vbr(6)?;
        let left = (self.bytes.len() as u64 * 8).saturating_sub(self.pos as u64);
        if count > left {
            return Err(ProducerError::Truncated);
        }
        Ok(count)
    }

    fn fixed(&mut self, width: u32) -> Result<u64, ProducerError> {
        let mut value = 0u64;
        for bit in 0..width as usize {
            let byte = *self.bytes.get((self.pos + bit) / 8).ok_or(ProducerError::Truncated)?;
            value |= u64::from((byte >> ((self.pos + bit) % 8)) & 1) << bit;
        }
        self.pos += width as usize;
        Ok(value)
    }

    fn vbr(&mut self, width: u32) -> Result<u64, ProducerError> {
        let high_bit = 1 << (width - 1);
        let (mut value, mut shift) = (0u64, 0u32);
        loop {
            let chunk = self.fixed(width)?;
            value |= (chunk & (high_bit - 1)).checked_shl(shift).ok_or(ProducerError::Malformed("oversized number"))?;
            if chunk & high_bit == 0 {
                return Ok(value);
            }
            shift += width - 1;
            if shift >= 64 {
                return Err(ProducerError::Malformed("oversized number"));
            }
        }
    }

    fn scalar(&mut self, op: Op) -> Result<u64, ProducerError> {
        match op {
            Op::Literal(value) => Ok(value),
            Op::Fixed(width) => self.fixed(width),
            Op::Vbr(width) if width > 1 => self.vbr(width),
            Op::Char6 => self.fixed(6).map(char6),
            _ => Err(ProducerError::Malformed("bad scalar operand")),
        }
    }

    fn align32(&mut self) {
        self.pos = self.pos.next_multiple_of(32);
    }
}

/// The 6-bit character set: `a-z A-Z 0-9 . _`.
fn char6(value: u64) -> u64 {
    let c = match value {
        0..=25 => b'a' + value as u8,
        26..=51 => b'A' + (value - 26) as u8,
        52..=61 => b'0' + (value - 52) as u8,
        62 => b'.',
        _ => b'_',
    };
    u64::from(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 36 bytes clang-19 writes for any module (`llvm-bcanalyzer -dump` shows
    /// `IDENTIFICATION_BLOCK_ID` with `STRING 'LLVM19.1.7'` and `EPOCH 0`).
    const CLANG19_HEAD: &[u8] = &[
        0x42, 0x43, 0xc0, 0xde, 0x35, 0x14, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x62, 0x0c, 0x30, 0x24, 0x4a, 0x59,
        0xbe, 0x66, 0xdd, 0xfb, 0xb5, 0xbf, 0x0b, 0x51, 0x80, 0x4c, 0x01, 0x00, 0x00, 0x00, 0x21, 0x0c, 0x00, 0x00,
    ];

    /// Writes bitstream fields, to build identification blocks LLVM 19 cannot produce.
    #[derive(Default)]
    struct Writer {
        bits: Vec<bool>,
    }

    impl Writer {
        fn fixed(&mut self, value: u64, width: u32) -> &mut Self {
            self.bits.extend((0..width).map(|bit| value >> bit & 1 == 1));
            self
        }

        fn vbr(&mut self, mut value: u64, width: u32) -> &mut Self {
            let payload = width - 1;
            while value >= 1 << payload {
                self.fixed(value & ((1 << payload) - 1) | 1 << payload, width);
                value >>= payload;
            }
            self.fixed(value, width)
        }

        fn align32(&mut self) -> &mut Self {
            while !self.bits.len().is_multiple_of(32) {
                self.bits.push(false);
            }
            self
        }

        fn bytes(&self) -> Vec<u8> {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(self.bits.chunks(8).map(|byte| byte.iter().rev().fold(0, |acc, &bit| acc << 1 | bit as u8)));
            bytes
        }
    }

    /// An identification block whose producer is an unabbreviated record, as LLVM writes it when
    /// the string has characters outside the 6-bit set.
    fn unabbreviated_block(producer: &str, epoch: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.fixed(ENTER_SUBBLOCK, 2).vbr(IDENTIFICATION_BLOCK, 8).vbr(3, 4).align32().fixed(0, 32);
        w.fixed(UNABBREV_RECORD, 3).vbr(CODE_STRING, 6).vbr(producer.len() as u64, 6);
        for byte in producer.bytes() {
            w.vbr(u64::from(byte), 6);
        }
        w.fixed(UNABBREV_RECORD, 3).vbr(CODE_EPOCH, 6).vbr(1, 6).vbr(epoch, 6);
        w.fixed(END_BLOCK, 3).align32();
        w.bytes()
    }

    #[test]
    fn reads_the_producer_clang_19_writes() {
        let producer = read(CLANG19_HEAD).unwrap().unwrap();
        assert_eq!(producer, Producer { name: "LLVM19.1.7".into(), epoch: 0 });
        assert_eq!(producer.llvm_major(), Some(19));
    }

    #[test]
    fn reads_unabbreviated_producers_and_newer_versions() {
        let producer = read(&unabbreviated_block("LLVM21.1.0-rc2 (fork)", 0)).unwrap().unwrap();
        assert_eq!(producer.name, "LLVM21.1.0-rc2 (fork)");
        assert_eq!(producer.llvm_major(), Some(21));
        assert_eq!(read(&unabbreviated_block("APPLE_1_1500", 1)).unwrap().unwrap().epoch, 1);
        assert_eq!(Producer { name: "APPLE_1_1500".into(), epoch: 0 }.llvm_major(), None);
    }

    #[test]
    fn bitcode_without_identification_has_no_producer() {
        let mut w = Writer::default();
        w.fixed(ENTER_SUBBLOCK, 2).vbr(8, 8).vbr(3, 4).align32().fixed(0, 32);
        assert_eq!(read(&w.bytes()), Ok(None));
    }

    #[test]
    fn the_wrapper_header_is_skipped() {
        let mut wrapped = WRAPPER_MAGIC.to_vec();
        for word in [0u32, 20, CLANG19_HEAD.len() as u32, 7] {
            wrapped.extend(word.to_le_bytes());
        }
        wrapped.extend(CLANG19_HEAD);
        assert_eq!(read(&wrapped).unwrap().unwrap().name, "LLVM19.1.7");
    }

    #[test]
    fn rejects_what_is_not_bitcode() {
        assert_eq!(read(b"\x7fELF\x02\x01\x01"), Err(ProducerError::NotBitcode));
        assert_eq!(read(b""), Err(ProducerError::NotBitcode));
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        for len in 4..28 {
            assert!(read(&CLANG19_HEAD[..len]).is_err(), "a {len}-byte prefix was accepted");
        }
    }

    /// An identification block defining one abbreviation of `ops` (each written by the closure),
    /// then a record with it whose first operand, a length, is `length`.
    fn abbreviated_block(ops: impl Fn(&mut Writer), length: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.fixed(ENTER_SUBBLOCK, 2).vbr(IDENTIFICATION_BLOCK, 8).vbr(3, 4).align32().fixed(0, 32);
        w.fixed(DEFINE_ABBREV, 3);
        ops(&mut w);
        w.fixed(4, 3).vbr(length, 6).fixed(END_BLOCK, 3).align32();
        w.bytes()
    }

    #[test]
    fn lengths_and_widths_from_the_file_are_bounded() {
        // An array of a literal takes no bits per element: 2^40 of them must not be believed.
        let literal_array =
            abbreviated_block(|w| _ = w.vbr(2, 5).fixed(0, 1).fixed(3, 3).fixed(1, 1).vbr(7, 8), 1 << 40);
        assert_eq!(read(&literal_array), Err(ProducerError::Truncated));
        // A 65-bit field would overflow the shifts that assemble it.
        let too_wide = abbreviated_block(|w| _ = w.vbr(1, 5).fixed(0, 1).fixed(1, 3).vbr(65, 5), 0);
        assert_eq!(read(&too_wide), Err(ProducerError::Malformed("field width out of range")));
    }
}
