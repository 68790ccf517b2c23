//! The metadata blocks that describe the machine's state when the capture started: the process
//! list (PL, layouts V1–V9, one entry per thread) and the fd lists (FDL v1 and V2, one block per
//! thread). Only the fields seccomp-refine needs are returned; every string length is checked
//! against libscap's limits and the bytes really present.

/// libscap's limits (`scap_limits.h`): longer strings mean a corrupt entry.
const MAX_PATH: usize = 1024;
const MAX_LIST: usize = 4096;

/// One thread alive at capture start.
#[derive(Debug)]
pub struct ProcEntry<'a> {
    pub tid: u64,
    pub pid: u64,
    pub comm: &'a [u8],
    /// argv[0].
    pub exe: &'a [u8],
    /// The executable's full path (PL V7+; empty before).
    pub exepath: &'a [u8],
    /// argv[1..], NUL-separated.
    pub args: &'a [u8],
    pub cwd: &'a [u8],
    /// `subsys=path` items, NUL-separated (PL V4+; empty before).
    pub cgroups: &'a [u8],
    /// The pid inside the thread's pid namespace (PL V4+; 0 before).
    pub vpid: i64,
}

/// One open file of a thread at capture start.
#[derive(Debug, PartialEq, Eq)]
pub struct FdEntry<'a> {
    pub fd: i64,
    /// A path for files, directories and memfds; `None` for sockets, pipes and the like.
    pub path: Option<&'a [u8]>,
    /// `PPM_O_*` open flags (FILE_V2 entries only).
    pub flags: u32,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, count: usize) -> Result<&'a [u8], String> {
        let bytes = self.data.get(self.pos..self.pos + count).ok_or_else(|| {
            format!("entry at body byte {} runs past the block end ({} bytes)", self.pos, self.data.len())
        })?;
        self.pos += count;
        Ok(bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }

    fn skip(&mut self, count: usize) -> Result<(), String> {
        self.bytes(count).map(drop)
    }

    /// `u16 length` + bytes, not NUL-terminated in the file (a trailing NUL is dropped if present).
    fn str16(&mut self, limit: usize, field: &str) -> Result<&'a [u8], String> {
        let bytes = self.bytes(2)?;
        let length = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        if length > limit {
            return Err(format!("{field} is {length} bytes, over the {limit}-byte limit"));
        }
        let text = self.bytes(length)?;
        Ok(text.strip_suffix(b"\0").unwrap_or(text))
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Calls `each` for every thread entry of a PL block of layout `version`.
pub fn process_list(body: &[u8], version: u8, mut each: impl FnMut(ProcEntry<'_>)) -> Result<(), String> {
    let mut cursor = Cursor { data: body, pos: 0 };
    // What remains after the last entry is padding (fewer than 4 bytes).
    while cursor.remaining() >= 4 {
        let start = cursor.pos;
        let end = if version >= 9 {
            let length = cursor.u32()? as usize;
            if length < 4 || length > body.len() - start {
                return Err(format!("entry at body byte {start} claims {length} bytes, {} remain", body.len() - start));
            }
            Some(start + length)
        } else {
            None
        };
        let entry = process_entry(&mut cursor, version)?;
        if let Some(end) = end {
            if cursor.pos > end {
                return Err(format!("entry at body byte {start} is longer than its length field"));
            }
            // V9 entries may carry newer fields after `root`; the length skips them.
            cursor.pos = end;
        }
        each(entry);
    }
    Ok(())
}

fn process_entry<'a>(cursor: &mut Cursor<'a>, version: u8) -> Result<ProcEntry<'a>, String> {
    let (tid, pid) = (cursor.u64()?, cursor.u64()?);
    cursor.skip(8)?; // ptid
    if version >= 6 {
        cursor.skip(8)?; // sid
    }
    if version >= 8 {
        cursor.skip(8)?; // vpgid
    }
    let comm = cursor.str16(MAX_PATH, "comm")?;
    let exe = cursor.str16(MAX_PATH, "exe")?;
    let exepath = if version >= 7 { cursor.str16(MAX_PATH, "exepath")? } else { &[] };
    let args = cursor.str16(MAX_LIST, "args")?;
    let cwd = cursor.str16(MAX_PATH, "cwd")?;
    cursor.skip(8 + 4 + 4 + 4)?; // fdlimit, flags, uid, gid
    if version >= 2 {
        cursor.skip(3 * 4 + 2 * 8)?; // vmsize, vmrss, vmswap, pfmajor, pfminor
    }
    if version >= 3 {
        cursor.str16(MAX_LIST, "env")?;
    }
    let (mut vpid, mut cgroups) = (0, &[][..]);
    if version >= 4 {
        cursor.skip(8)?; // vtid
        vpid = cursor.u64()? as i64;
        cgroups = cursor.str16(MAX_LIST, "cgroups")?;
    }
    if version >= 5 {
        cursor.str16(MAX_PATH, "root")?;
    }
    Ok(ProcEntry { tid, pid, comm, exe, exepath, args, cwd, cgroups, vpid })
}

/// Calls `each` with the list's thread and every entry of an FD list block.
pub fn fd_list(body: &[u8], v2: bool, mut each: impl FnMut(u64, FdEntry<'_>)) -> Result<(), String> {
    let mut cursor = Cursor { data: body, pos: 0 };
    let tid = cursor.u64()?;
    while cursor.remaining() >= 4 {
        let start = cursor.pos;
        let end = if v2 {
            let length = cursor.u32()? as usize;
            if length < 4 || length > body.len() - start {
                return Err(format!(
                    "fd entry at body byte {start} claims {length} bytes, {} remain",
                    body.len() - start
                ));
            }
            Some(start + length)
        } else {
            None
        };
        let entry = fd_entry(&mut cursor, end.is_some())?;
        if let Some(end) = end {
            if cursor.pos > end {
                return Err(format!("fd entry at body byte {start} is longer than its length field"));
            }
            cursor.pos = end;
        }
        if let Some(entry) = entry {
            each(tid, entry);
        }
    }
    Ok(())
}

/// One fd entry; `None` for a type only a V2 list (which carries entry lengths) can skip.
fn fd_entry<'a>(cursor: &mut Cursor<'a>, skippable: bool) -> Result<Option<FdEntry<'a>>, String> {
    let fd = cursor.u64()? as i64;
    cursor.skip(8)?; // ino
    let kind = cursor.bytes(1)?[0];
    let (path, flags) = match kind {
        // FILE_V2: open flags, name, and a device number when the entry leaves room for it.
        16 => {
            let flags = cursor.u32()?;
            (Some(cursor.str16(MAX_PATH, "fd name")?), flags)
        }
        // FILE, DIRECTORY, MEMFD: a path worth keeping.
        1 | 2 | 20 => (Some(cursor.str16(MAX_PATH, "fd name")?), 0),
        // FIFO, EVENT, UNSUPPORTED, SIGNALFD, EVENTPOLL, INOTIFY, TIMERFD, NETLINK, BPF,
        // USERFAULTFD, IOURING, PIDFD: a name, but no file.
        7 | 9..=15 | 17..=19 | 21 => {
            cursor.str16(MAX_PATH, "fd name")?;
            (None, 0)
        }
        3 => (cursor.skip(13).map(|()| None)?, 0), // IPv4 socket
        5 => (cursor.skip(7).map(|()| None)?, 0),  // IPv4 server socket
        4 => (cursor.skip(37).map(|()| None)?, 0), // IPv6 socket
        6 => (cursor.skip(19).map(|()| None)?, 0), // IPv6 server socket
        8 => {
            cursor.skip(16)?; // unix socket: source, dest
            cursor.str16(MAX_PATH, "fd name")?;
            (None, 0)
        }
        _ if skippable => return Ok(None),
        _ => return Err(format!("unknown fd type {kind} in a v1 fd list (its size is unknown)")),
    };
    Ok(Some(FdEntry { fd, path: path.filter(|path| !path.is_empty()), flags }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn str16(text: &[u8]) -> Vec<u8> {
        [(text.len() as u16).to_le_bytes().to_vec(), text.to_vec()].concat()
    }

    /// A PL_V9 entry with the given identity, cgroups and `extra` bytes of newer fields.
    pub fn v9_entry(tid: u64, pid: u64, exepath: &[u8], cgroups: &[u8], extra: usize) -> Vec<u8> {
        let mut entry = Vec::new();
        for value in [tid, pid, 1, 0, 0] {
            entry.extend(value.to_le_bytes());
        }
        for text in [&b"sh"[..], b"/bin/sh", exepath, b"-c\0ls", b"/"] {
            entry.extend(str16(text));
        }
        entry.extend([0; 8 + 4 + 4 + 4 + 12 + 16]);
        entry.extend(str16(b"PATH=/bin"));
        entry.extend(tid.to_le_bytes());
        entry.extend(1u64.to_le_bytes());
        entry.extend(str16(cgroups));
        entry.extend(str16(b"/"));
        entry.extend(vec![0xAA; extra]);
        [((entry.len() + 4) as u32).to_le_bytes().to_vec(), entry].concat()
    }

    #[test]
    fn v9_entries_are_read_and_newer_fields_skipped() {
        let body =
            [v9_entry(7, 7, b"/usr/bin/dash", b"cpu=/docker/x", 40), v9_entry(8, 7, b"", b"", 0), vec![0, 0]].concat();
        let mut seen = Vec::new();
        process_list(&body, 9, |entry| {
            seen.push((entry.tid, entry.pid, entry.exepath.to_vec(), entry.cgroups.to_vec(), entry.vpid))
        })
        .unwrap();
        assert_eq!(seen, [(7, 7, b"/usr/bin/dash".to_vec(), b"cpu=/docker/x".to_vec(), 1), (8, 7, vec![], vec![], 1)]);
    }

    #[test]
    fn bad_entries_are_refused() {
        let mut body = v9_entry(7, 7, b"/bin/sh", b"", 0);
        body[0] = 200;
        assert!(process_list(&body, 9, |_| {}).unwrap_err().contains("claims 200 bytes"));
        let long = vec![b'x'; 1025];
        let body = v9_entry(7, 7, &long, b"", 0);
        assert!(
            process_list(&body, 9, |_| {}).unwrap_err().contains("exepath is 1025 bytes, over the 1024-byte limit")
        );
        let body = v9_entry(7, 7, b"/bin/sh", b"", 0);
        assert!(process_list(&body[4..40], 6, |_| {}).unwrap_err().contains("runs past the block end"));
    }

    #[test]
    fn fd_lists_keep_file_paths_only() {
        let mut body = 42u64.to_le_bytes().to_vec();
        let file = [
            3i64.to_le_bytes().to_vec(),
            vec![0; 8],
            vec![16],
            0x1001u32.to_le_bytes().to_vec(),
            str16(b"/lib/libc.so.6"),
            vec![0; 4],
        ]
        .concat();
        let socket = [4i64.to_le_bytes().to_vec(), vec![0; 8], vec![3], vec![0; 13]].concat();
        let newer = [5i64.to_le_bytes().to_vec(), vec![0; 8], vec![99], vec![0; 6]].concat();
        for entry in [file, socket, newer] {
            body.extend(((entry.len() + 4) as u32).to_le_bytes());
            body.extend(entry);
        }
        let mut seen = Vec::new();
        fd_list(&body, true, |tid, entry| seen.push((tid, entry.fd, entry.path.map(<[u8]>::to_vec), entry.flags)))
            .unwrap();
        assert_eq!(seen, [(42, 3, Some(b"/lib/libc.so.6".to_vec()), 0x1001), (42, 4, None, 0)]);
        let v1 = [42u64.to_le_bytes().to_vec(), 5i64.to_le_bytes().to_vec(), vec![0; 8], vec![99]].concat();
        assert!(fd_list(&v1, false, |_, _| {}).unwrap_err().contains("unknown fd type 99"));
    }
}
