//! Builders for capture bytes in unit tests: blocks, the section header, v2 events.

use super::event::{Checked, Event, EventLayout, check};

/// A block of type `id` around `body`, padded to 4 bytes, with its trailer.
pub fn block(id: u32, body: &[u8]) -> Vec<u8> {
    let length = (12 + body.len()).next_multiple_of(4) as u32;
    let mut out = Vec::new();
    out.extend(id.to_le_bytes());
    out.extend(length.to_le_bytes());
    out.extend(body);
    out.resize(length as usize - 4, 0);
    out.extend(length.to_le_bytes());
    out
}

/// The 28-byte section header libscap writes (version 1.2).
pub fn section() -> Vec<u8> {
    let mut body = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 2, 0];
    body.extend([0xff; 8]);
    block(0x0A0D_0D0A, &body)
}

/// The body of an EV_V2 block: cpu id, 26-byte header, u16 lengths, values.
pub fn event_body(kind: u16, tid: u64, ts: u64, params: &[&[u8]]) -> Vec<u8> {
    let length = 26 + params.len() * 2 + params.iter().map(|param| param.len()).sum::<usize>();
    let mut body = vec![0, 0];
    body.extend(ts.to_le_bytes());
    body.extend(tid.to_le_bytes());
    body.extend((length as u32).to_le_bytes());
    body.extend(kind.to_le_bytes());
    body.extend((params.len() as u32).to_le_bytes());
    params.iter().for_each(|param| body.extend((param.len() as u16).to_le_bytes()));
    params.iter().for_each(|param| body.extend(*param));
    body
}

/// The event of an event block body, which must check (all types wanted).
pub fn decode(body: &[u8], layout: EventLayout) -> Event<'_> {
    match check(body, layout, |_| true) {
        Ok(Checked::Event { count, wide }) => Event::checked(body, layout, count, wide),
        other => panic!("not an event: {other:?}"),
    }
}
