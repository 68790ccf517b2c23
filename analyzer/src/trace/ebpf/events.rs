//! Decoding the kernel's ring-buffer records (`tracer_common`'s event layouts) into owned values.
//!
//! A record that is too short or of an unknown kind decodes to `None`: the kernel and this
//! decoder share one layout definition, so that only happens if the object and binary disagree.

use tracer_common::{CgroupEvent, EventHeader, ExecEvent, MmapEvent, PhaseEvent, event};

/// Who and when, for every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The cgroup's phase at the event (for `Phase`, the new one).
    pub phase: u32,
    pub tid: u32,
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub cgroup: u64,
    pub comm: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A successful exec: what was asked for and what the kernel ran (they differ for scripts).
    Exec { header: Header, filename: String, interp: String },
    /// `mmap(PROT_EXEC)` of a file the process had opened as `path`.
    MmapExec { header: Header, path: String },
    /// The kernel moved the cgroup to `header.phase` because of `cause` (a syscall number or a
    /// `tracer_common::cause` value) — or only process `process` when it is not 0 (per-process
    /// markers; for `cause::FORK`, `header` is the parent that forked it).
    Phase { header: Header, cause: u32, process: u32 },
    /// The kernel registered a newly created cgroup (id in `header.cgroup`).
    Cgroup { header: Header, path: String },
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Option<Event> {
        let header: EventHeader = read(bytes)?;
        let decoded = decode_header(&header);
        match header.kind {
            event::EXEC => {
                let record: ExecEvent = read(bytes)?;
                Some(Event::Exec {
                    header: decoded,
                    filename: c_string(&record.filename),
                    interp: c_string(&record.interp),
                })
            }
            event::MMAP_EXEC => {
                let record: MmapEvent = read(bytes)?;
                Some(Event::MmapExec { header: decoded, path: c_string(&record.path) })
            }
            event::PHASE => {
                let record: PhaseEvent = read(bytes)?;
                Some(Event::Phase { header: decoded, cause: record.cause, process: record.process })
            }
            event::CGROUP => {
                let record: CgroupEvent = read(bytes)?;
                Some(Event::Cgroup { header: decoded, path: c_string(&record.path) })
            }
            _ => None,
        }
    }

    pub fn header(&self) -> &Header {
        match self {
            Event::Exec { header, .. }
            | Event::MmapExec { header, .. }
            | Event::Phase { header, .. }
            | Event::Cgroup { header, .. } => header,
        }
    }
}

/// Copies a `T` out of the front of `bytes`, if they are long enough.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes, the read is unaligned-safe, and every
    // `T` used here is a #[repr(C)] record of integers and byte arrays, valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn decode_header(header: &EventHeader) -> Header {
    Header {
        phase: header.phase,
        tid: header.pid,
        pid: header.tgid,
        ts_ns: header.ts_ns,
        cgroup: header.cgroup,
        comm: c_string(&header.comm),
    }
}

/// The text up to the first NUL (all of it when there is none), lossily decoded.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&byte| byte == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{COMM_LEN, PATH_LEN};

    fn header(kind: u32) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..5].copy_from_slice(b"nginx");
        EventHeader { kind, phase: 2, pid: 11, tgid: 10, ts_ns: 99, cgroup: 82, comm }
    }

    fn bytes_of<T>(record: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value without padding.
        unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn an_mmap_record_decodes_with_its_path() {
        let mut path = [0u8; PATH_LEN];
        path[..9].copy_from_slice(b"/lib/x.so");
        let record = MmapEvent { header: header(event::MMAP_EXEC), fd: 3, _pad: 0, path };
        let Some(Event::MmapExec { header, path }) = Event::decode(&bytes_of(&record)) else { panic!("not mmap") };
        assert_eq!(path, "/lib/x.so");
        assert_eq!((header.pid, header.tid, header.cgroup, header.comm.as_str()), (10, 11, 82, "nginx"));
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        let record = PhaseEvent { header: header(event::PHASE), cause: 232, process: 12 };
        let bytes = bytes_of(&record);
        assert!(matches!(Event::decode(&bytes), Some(Event::Phase { cause: 232, process: 12, .. })));
        assert_eq!(Event::decode(&bytes[..20]), None);
        assert_eq!(Event::decode(&bytes_of(&PhaseEvent { header: header(77), cause: 0, process: 0 })), None);
        let exec = PhaseEvent { header: header(event::EXEC), cause: 0, process: 0 };
        assert_eq!(Event::decode(&bytes_of(&exec)), None, "an exec kind needs an exec-sized record");
    }
}
