//! Kernel struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs carry no CO-RE relocations, so the loader looks up each field the programs
//! read and hands the byte offsets over as read-only globals. Only what that needs is parsed:
//! type records, struct/union members (including anonymous ones), typedefs and modifiers.
//! Format: the kernel's `Documentation/bpf/btf.rst`.

use tracer_common::offsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF: struct `{owner}` has no member `{member}`")]
    NoMember { owner: String, member: String },
}

/// The fields the programs read, in `tracer_common::offsets` order: (struct, member path).
const FIELDS: [(&str, &[&str]); offsets::COUNT] = [
    ("task_struct", &["thread_info", "status"]),
    ("linux_binprm", &["filename"]),
    ("linux_binprm", &["interp"]),
    ("cgroup", &["kn"]),
    ("kernfs_node", &["id"]),
    ("cgroup", &["root"]),
    ("cgroup_root", &["hierarchy_id"]),
    ("pt_regs", &["di"]),
    ("pt_regs", &["si"]),
    ("pt_regs", &["dx"]),
    ("pt_regs", &["r10"]),
    ("pt_regs", &["r8"]),
    ("task_struct", &["pid"]),
    ("task_struct", &["tgid"]),
    ("task_struct", &["signal"]),
    ("signal_struct", &["live", "counter"]),
    ("pt_regs", &["orig_ax"]),
    ("pt_regs", &["r9"]),
];

/// The `OFFSETS` global's value for the kernel described by `btf`.
pub fn program_offsets(btf: &Btf) -> Result<[u64; offsets::COUNT], BtfError> {
    let mut values = [0; offsets::COUNT];
    for (value, (owner, path)) in values.iter_mut().zip(FIELDS) {
        *value = btf.member_offset(owner, path)?;
    }
    Ok(values)
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A parsed BTF blob: the type section indexed by type id.
pub struct Btf {
    data: Vec<u8>,
    strings_at: usize,
    strings_len: usize,
    /// Byte offset of each type record, by type id (id 0 is `void` and has none).
    records: Vec<usize>,
}

/// A struct or union member.
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

impl Btf {
    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let u32_at = |at: usize| read_u32(&data, at).ok_or(BtfError::Malformed("truncated header"));
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_at = header_len + type_off;
        let strings_at = header_len + str_off;
        if types_at + type_len > data.len() || strings_at + str_len > data.len() {
            return Err(BtfError::Malformed("sections run past the end"));
        }
        let mut btf = Btf { data, strings_at, strings_len: str_len, records: vec![0] };
        let mut at = types_at;
        while at < types_at + type_len {
            btf.records.push(at);
            at += btf.record_len(at).ok_or(BtfError::Malformed("truncated type record"))?;
        }
        Ok(btf)
    }

    /// Reads the running kernel's BTF.
    pub fn vmlinux() -> Result<Btf, std::io::Error> {
        let data = std::fs::read(VMLINUX)?;
        Btf::parse(data).map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
    }

    /// Byte offset of `path` (a member, then members of its type, …) inside struct `owner`.
    pub fn member_offset(&self, owner: &str, path: &[&str]) -> Result<u64, BtfError> {
        let mut type_id = self.find_struct(owner).ok_or_else(|| BtfError::NoStruct(owner.to_owned()))?;
        let mut bits = 0u64;
        let mut owner_name = owner.to_owned();
        for &member in path {
            let (member_bits, member_type) = self
                .find_member(type_id, member)
                .ok_or_else(|| BtfError::NoMember { owner: owner_name.clone(), member: member.to_owned() })?;
            bits += member_bits;
            type_id = self.strip(member_type);
            owner_name = member.to_owned();
        }
        Ok(bits / 8)
    }

    fn find_struct(&self, name: &str) -> Option<u32> {
        (1..self.records.len() as u32).find(|&id| {
            let kind = self.kind(id);
            (kind == KIND_STRUCT || kind == KIND_UNION) && self.name(self.u32(id, 0)) == Some(name)
        })
    }

    /// (bit offset, type) of member `name` of struct/union `type_id`, looking through anonymous
    /// struct and union members.
    fn find_member(&self, type_id: u32, name: &str) -> Option<(u64, u32)> {
        for member in self.members(type_id) {
            let member_name = self.name(member.name_off).unwrap_or("");
            if member_name == name {
                return Some((member.bit_offset.into(), member.type_id));
            }
            if member_name.is_empty() {
                let inner = self.strip(member.type_id);
                if let Some((bits, found)) = self.find_member(inner, name) {
                    return Some((u64::from(member.bit_offset) + bits, found));
                }
            }
        }
        None
    }

    fn members(&self, type_id: u32) -> Vec<Member> {
        let kind = self.kind(type_id);
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return Vec::new();
        }
        let info = self.u32(type_id, 4);
        let bitfields = info & (1 << 31) != 0;
        let at = self.records[type_id as usize] + 12;
        (0..(info & 0xffff) as usize)
            .filter_map(|index| {
                let base = at + index * 12;
                let raw_offset = read_u32(&self.data, base + 8)?;
                let bit_offset = if bitfields { raw_offset & 0x00ff_ffff } else { raw_offset };
                Some(Member {
                    name_off: read_u32(&self.data, base)?,
                    type_id: read_u32(&self.data, base + 4)?,
                    bit_offset,
                })
            })
            .collect()
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn strip(&self, mut type_id: u32) -> u32 {
        for _ in 0..32 {
            match self.kind(type_id) {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    type_id = self.u32(type_id, 8);
                }
                _ => break,
            }
        }
        type_id
    }

    fn kind(&self, type_id: u32) -> u32 {
        if type_id == 0 || type_id as usize >= self.records.len() {
            return 0;
        }
        (self.u32(type_id, 4) >> 24) & 0x1f
    }

    fn u32(&self, type_id: u32, field: usize) -> u32 {
        read_u32(&self.data, self.records[type_id as usize] + field).unwrap_or(0)
    }

    fn name(&self, offset: u32) -> Option<&str> {
        let offset = offset as usize;
        if offset >= self.strings_len {
            return None;
        }
        let strings = &self.data[self.strings_at + offset..self.strings_at + self.strings_len];
        let end = strings.iter().position(|&byte| byte == 0)?;
        std::str::from_utf8(&strings[..end]).ok()
    }

    /// Length of the type record at byte `at`: 12 bytes plus what its kind appends.
    fn record_len(&self, at: usize) -> Option<usize> {
        let info = read_u32(&self.data, at + 4)?;
        let vlen = (info & 0xffff) as usize;
        let extra = match (info >> 24) & 0x1f {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            kind if kind <= 19 => 0,
            _ => return None,
        };
        let len = 12 + extra;
        (at + len <= self.data.len()).then_some(len)
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A string section: `offset(name)` gives a name's offset, adding it on first use.
    #[derive(Default)]
    struct Strings(Vec<u8>);

    impl Strings {
        fn offset(&mut self, name: &str) -> u32 {
            if self.0.is_empty() {
                self.0.push(0);
            }
            let offset = self.0.len() as u32;
            self.0.extend_from_slice(name.as_bytes());
            self.0.push(0);
            offset
        }
    }

    /// A BTF blob from type records given as u32 words (name offset, info, size/type, extras).
    fn blob(strings: Strings, types: &[Vec<u32>]) -> Vec<u8> {
        let type_section: Vec<u8> = types.iter().flatten().flat_map(|word| word.to_le_bytes()).collect();
        let mut data = vec![0x9f, 0xeb, 1, 0];
        for word in [24, 0, type_section.len() as u32, type_section.len() as u32, strings.0.len() as u32] {
            data.extend_from_slice(&word.to_le_bytes());
        }
        data.extend(type_section);
        data.extend(strings.0);
        data
    }

    fn info(kind: u32, vlen: u32) -> u32 {
        (kind << 24) | vlen
    }

    #[test]
    fn finds_members_through_typedefs_and_anonymous_unions() {
        let mut names = Strings::default();
        let mut name = |text: &str| names.offset(text);
        // 1: int; 2: struct inner { int pad; int status @ 32 bits }; 3: typedef inner_t = 2;
        // 4: union { int a; inner_t info }; 5: struct outer { int x; <anon union 4> @ 64 bits }.
        let types = vec![
            vec![name("int"), info(KIND_INT, 0), 4, 32],
            vec![name("inner"), info(KIND_STRUCT, 2), 8, name("pad"), 1, 0, name("status"), 1, 32],
            vec![name("inner_t"), info(KIND_TYPEDEF, 0), 2],
            vec![0, info(KIND_UNION, 2), 8, name("a"), 1, 0, name("info"), 3, 0],
            vec![name("outer"), info(KIND_STRUCT, 2), 16, name("x"), 1, 0, 0, 4, 64],
        ];
        let btf = Btf::parse(blob(names, &types)).unwrap();
        assert_eq!(btf.member_offset("outer", &["x"]).unwrap(), 0);
        assert_eq!(btf.member_offset("outer", &["info", "status"]).unwrap(), 12);
        let missing = btf.member_offset("outer", &["info", "nope"]).unwrap_err().to_string();
        assert_eq!(missing, "kernel BTF: struct `info` has no member `nope`");
        assert_eq!(btf.member_offset("task", &["x"]).unwrap_err().to_string(), "kernel BTF has no struct `task`");
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        assert!(matches!(Btf::parse(b"not btf at all, clearly not".to_vec()), Err(BtfError::Malformed(_))));
        let mut names = Strings::default();
        let int = names.offset("int");
        let mut truncated = blob(names, &[vec![int, info(KIND_INT, 0), 4, 32]]);
        truncated[12] = 200; // type_len past the end
        assert!(matches!(Btf::parse(truncated), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn the_running_kernel_gives_every_offset_the_programs_need() {
        let btf = match Btf::vmlinux() {
            Ok(btf) => btf,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return crate::skip_test(&format!("no {VMLINUX}"));
            }
            Err(err) => panic!("{VMLINUX}: {err}"),
        };
        let values = program_offsets(&btf).unwrap();
        // struct pt_regs is the user register frame, whose layout is x86_64 ABI.
        assert_eq!(&values[offsets::REGS_DI..=offsets::REGS_R8], &[112, 104, 96, 56, 72]);
        assert_eq!(values[offsets::REGS_ORIG_AX], 120);
        assert_eq!(values[offsets::REGS_R9], 64);
        assert!(values[offsets::CGROUP_KN] > 0 && values[offsets::KERNFS_ID] > 0);
        // pid_t pid and tgid are adjacent in task_struct.
        assert_eq!(values[offsets::TASK_TGID], values[offsets::TASK_PID] + 4);
    }
}
