//! One event inside an event block: the v1 (22-byte) or v2 (26-byte) header, the parameter
//! length array (u16, or u32 for large-payload types) and bounds-checked access to the values.
//!
//! Nothing is copied: an `Event` borrows the block body. Every length is checked against the bytes
//! that are really there before anything is sliced, because crafted captures are an attack surface.

use super::tables::EVENT_TYPES;

const HEADER_V1: usize = 22;
const HEADER_V2: usize = 26;
/// `SCAP_DF_STATE_ONLY`: a capture filter rejected the event but kept it for state tracking.
pub const STATE_ONLY: u32 = 1;
/// In v1 files libscap counts 3 bytes too many in the length of these two meta events.
const NOTIFICATION_E: u16 = 280;
const INFRASTRUCTURE_EVENT_E: u16 = 286;

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

/// A decoded event, borrowing its block.
#[derive(Debug)]
pub struct Event<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts: u64,
    /// Host thread id; -1 (all ones) on meta events.
    pub tid: u64,
    pub kind: u16,
    /// `scap_dump_flags` of EVF blocks (0 otherwise).
    pub dump_flags: u32,
    count: usize,
    wide: bool,
    lengths: &'a [u8],
    values: &'a [u8],
}

/// What the check of an event block found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// A wanted event whose lengths all add up, with its parameter count (inferred for v1
    /// headers) and whether the lengths are u32 (large-payload types in v2 blocks).
    Event { count: u32, wide: bool },
    /// A type the caller does not want: its parameters were neither checked nor read.
    Skipped(u16),
    /// An event type newer than these tables: skipped (as libscap does) and counted.
    UnknownType(u16),
}

/// What is wrong with an event; kept as numbers, so that checking allocates and formats nothing
/// until an error is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{size} bytes cannot hold an event header ({prefix} + {header} bytes)")]
    NoHeader { size: usize, prefix: usize, header: usize },
    #[error("event length {length} does not fit the block's {size} bytes of event")]
    Length { length: usize, size: usize },
    #[error("{count} parameters cannot fit in {size} bytes")]
    Count { count: usize, size: usize },
    #[error("parameter lengths add up to {total} bytes, the event has {size} after its header")]
    Sum { total: usize, size: usize },
    #[error("no parameter count up to {schema} matches the event's {size} bytes (v1 event)")]
    V1 { schema: u8, size: usize },
}

/// Checks the event in an event block's body, if `wanted(type)`: most events of a capture
/// (scheduler switches, process statistics) only need to be stepped over.
#[inline(always)]
pub fn check(body: &[u8], layout: EventLayout, wanted: impl Fn(u16) -> bool) -> Result<Checked, Malformed> {
    let prefix = prefix(layout);
    let header = header(layout);
    let Some(event) = body.get(prefix..).filter(|event| event.len() >= header) else {
        return Err(Malformed::NoHeader { size: body.len(), prefix, header });
    };
    let length = le32(&event[16..20]) as usize;
    if length < header || length > event.len() {
        return Err(Malformed::Length { length, size: event.len() });
    }
    let event = &event[..length];
    let kind = u16::from_le_bytes([event[20], event[21]]);
    let Some(info) = EVENT_TYPES.get(usize::from(kind)) else {
        return Ok(Checked::UnknownType(kind));
    };
    if !wanted(kind) {
        return Ok(Checked::Skipped(kind));
    }
    let payload = &event[header..];
    let wide = layout.v2 && info.large;
    let count = if layout.v2 {
        let count = le32(&event[22..26]);
        check_lengths(payload, count as usize, wide)?;
        count
    } else {
        infer_count(payload, kind, info.params)?
    };
    Ok(Checked::Event { count, wide })
}

/// Bytes before the event header in an event block's body: the cpu id, and the dump flags of EVF blocks.
#[inline]
fn prefix(layout: EventLayout) -> usize {
    if layout.flags { 6 } else { 2 }
}

#[inline]
fn header(layout: EventLayout) -> usize {
    if layout.v2 { HEADER_V2 } else { HEADER_V1 }
}

impl<'a> Event<'a> {
    /// The event of a block body that [`check`] found to be an event of `count` parameters.
    #[inline]
    pub fn checked(body: &'a [u8], layout: EventLayout, count: u32, wide: bool) -> Event<'a> {
        let prefix = prefix(layout);
        let dump_flags = if layout.flags { le32(&body[2..6]) } else { 0 };
        let event = &body[prefix..];
        let length = le32(&event[16..20]) as usize;
        let event = &event[..length];
        let kind = u16::from_le_bytes([event[20], event[21]]);
        let count = count as usize;
        let payload = &event[header(layout)..];
        let lengths_size = count * if wide { 4 } else { 2 };
        Event {
            ts: u64::from_le_bytes(event[0..8].try_into().expect("8 bytes")),
            tid: u64::from_le_bytes(event[8..16].try_into().expect("8 bytes")),
            kind,
            dump_flags,
            count,
            wide,
            lengths: &payload[..lengths_size],
            values: &payload[lengths_size..],
        }
    }
}

/// Checks `header + lengths + Σ values == event length` for `count` parameters.
#[inline]
fn check_lengths(payload: &[u8], count: usize, wide: bool) -> Result<(), Malformed> {
    let width = if wide { 4 } else { 2 };
    let Some(lengths) = count.checked_mul(width).and_then(|size| payload.get(..size)) else {
        return Err(Malformed::Count { count, size: payload.len() });
    };
    let total: usize = lengths.chunks_exact(width).map(|chunk| param_length(chunk, wide)).sum();
    if lengths.len() + total != payload.len() {
        return Err(Malformed::Sum { total: lengths.len() + total, size: payload.len() });
    }
    Ok(())
}

/// v1 blocks lack `nparams`: find the largest count up to the schema's whose lengths account for
/// the payload exactly, the way libscap upgrades such events.
fn infer_count(payload: &[u8], kind: u16, schema_count: u8) -> Result<u32, Malformed> {
    let payload_size = if matches!(kind, NOTIFICATION_E | INFRASTRUCTURE_EVENT_E) {
        payload.len().saturating_sub(3)
    } else {
        payload.len()
    };
    for count in (0..=usize::from(schema_count)).rev() {
        if 2 * count > payload_size {
            continue;
        }
        let total: usize =
            2 * count + payload[..2 * count].chunks_exact(2).map(|chunk| param_length(chunk, false)).sum::<usize>();
        if total == payload_size {
            return Ok(count as u32);
        }
        if total < payload_size {
            break;
        }
    }
    Err(Malformed::V1 { schema: schema_count, size: payload_size })
}

/// Where parameter `index` starts among the values, and its length, from `WIDTH`-byte lengths.
#[inline]
fn offset<const WIDTH: usize>(lengths: &[u8], index: usize) -> (usize, usize) {
    let start = lengths[..index * WIDTH].chunks_exact(WIDTH).map(|chunk| param_length(chunk, WIDTH == 4)).sum();
    (start, param_length(&lengths[index * WIDTH..], WIDTH == 4))
}

#[inline]
fn param_length(bytes: &[u8], wide: bool) -> usize {
    if wide { le32(bytes) as usize } else { usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) }
}

#[inline]
fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

impl<'a> Event<'a> {
    /// Parameter `index`; `None` when it is missing or empty (both mean "not available").
    #[inline]
    pub fn param(&self, index: usize) -> Option<&'a [u8]> {
        if index >= self.count {
            return None;
        }
        let (start, length) =
            if self.wide { offset::<4>(self.lengths, index) } else { offset::<2>(self.lengths, index) };
        self.values.get(start..start + length).filter(|value| !value.is_empty())
    }

    /// An unsigned integer parameter of any width.
    #[inline]
    pub fn unsigned(&self, index: usize) -> Option<u64> {
        let value = self.param(index)?;
        Some(match value.len() {
            1 => value[0].into(),
            2 => u16::from_le_bytes([value[0], value[1]]).into(),
            4 => le32(value).into(),
            8 => u64::from_le_bytes(value.try_into().expect("8 bytes")),
            _ => return None,
        })
    }

    /// A signed parameter (a result, an fd, a pid). Old drivers stored a 32-bit -1 or -errno
    /// zero-extended into 8 bytes (`0xFFFF_FFFF`); such values are read as the negative number.
    #[inline]
    pub fn signed(&self, index: usize) -> Option<i64> {
        let value = self.param(index)?;
        Some(match value.len() {
            1 => (value[0] as i8).into(),
            2 => i16::from_le_bytes([value[0], value[1]]).into(),
            4 => (le32(value) as i32).into(),
            8 => {
                let raw = u64::from_le_bytes(value.try_into().expect("8 bytes"));
                if (0xFFFF_F001..=0xFFFF_FFFF).contains(&raw) { i64::from(raw as u32 as i32) } else { raw as i64 }
            }
            _ => return None,
        })
    }

    /// A string parameter without its terminating NUL; `None` for the driver's `<NA>` as well.
    #[inline]
    pub fn text(&self, index: usize) -> Option<&'a [u8]> {
        let value = self.param(index)?;
        let end = value.iter().position(|&byte| byte == 0).unwrap_or(value.len());
        let text = &value[..end];
        (!text.is_empty() && text != b"<NA>").then_some(text)
    }

    /// Whether the event is an exit (odd type) rather than an enter (even type).
    #[inline]
    pub fn is_exit(&self) -> bool {
        self.kind % 2 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scap::testing::{decode, event_body};

    const V2: EventLayout = EventLayout { v2: true, flags: false, large: false };
    const V1: EventLayout = EventLayout { v2: false, flags: false, large: false };

    fn all(_: u16) -> bool {
        true
    }

    fn v2_body(kind: u16, params: &[&[u8]]) -> Vec<u8> {
        event_body(kind, 4242, 1_700_000_000_123_456_789, params)
    }

    #[test]
    fn the_annotated_close_exit_decodes() {
        // scap-format.md § 5.5, block header and trailer stripped.
        let body = v2_body(5, &[&0u64.to_le_bytes(), &3u64.to_le_bytes()]);
        let close = decode(&body, V2);
        assert_eq!((close.ts, close.tid, close.kind), (1_700_000_000_123_456_789, 4242, 5));
        assert_eq!((close.signed(0), close.signed(1), close.signed(2)), (Some(0), Some(3), None));
        assert!(close.is_exit());
    }

    #[test]
    fn v1_events_get_their_parameter_count_inferred() {
        // A v1 MMAP_X with the 4 parameters of 2016 (the schema has 10 now).
        let mut body = v2_body(161, &[&[1; 8], &[2; 4], &[3; 4], &[4; 4]]);
        body.drain(24..28); // drop nparams: the v1 header is 22 bytes
        let length = (body.len() - 2) as u32;
        body[18..22].copy_from_slice(&length.to_le_bytes());
        let mmap = decode(&body, V1);
        assert_eq!((mmap.count, mmap.param(4)), (4, None));
        assert_eq!(mmap.unsigned(3), Some(0x0404_0404));
    }

    #[test]
    fn old_zero_extended_minus_one_reads_as_minus_one() {
        let body = v2_body(161, &[&0xFFFF_FFFFu64.to_le_bytes(), &0xFFFF_FFFEu64.to_le_bytes(), &7u64.to_le_bytes()]);
        let mmap = decode(&body, V2);
        assert_eq!((mmap.signed(0), mmap.signed(1), mmap.signed(2)), (Some(-1), Some(-2), Some(7)));
    }

    #[test]
    fn strings_lose_their_nul_and_na_means_absent() {
        let body = v2_body(3, &[&3u64.to_le_bytes(), b"/etc/passwd\0", b"<NA>\0", b""]);
        let open = decode(&body, V2);
        assert_eq!(open.text(1), Some(&b"/etc/passwd"[..]));
        assert_eq!((open.text(2), open.param(3), open.param(9)), (None, None, None));
    }

    #[test]
    fn lengths_that_do_not_add_up_are_corruption() {
        let mut body = v2_body(5, &[&0u64.to_le_bytes(), &3u64.to_le_bytes()]);
        body[28] = 9; // first length 8 → 9
        assert!(check(&body, V2, all).unwrap_err().to_string().contains("parameter lengths add up to 21 bytes"));
        let mut body = v2_body(5, &[]);
        body[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check(&body, V2, all).unwrap_err().to_string().contains("parameters cannot fit"));
        let mut body = v2_body(5, &[]);
        body[18..22].copy_from_slice(&1000u32.to_le_bytes());
        assert!(check(&body, V2, all).unwrap_err().to_string().contains("event length 1000 does not fit"));
        assert!(check(&[0; 5], V2, all).unwrap_err().to_string().contains("cannot hold an event header"));
        let body = v2_body(999, &[]);
        assert_eq!(check(&body, V2, all), Ok(Checked::UnknownType(999)));
        let mut body = v2_body(5, &[&[0; 8]]);
        body[28..30].copy_from_slice(&[0xff, 0xff]); // corrupt, but never looked at
        assert_eq!(check(&body, V2, |kind| kind != 5), Ok(Checked::Skipped(5)));
    }
}
