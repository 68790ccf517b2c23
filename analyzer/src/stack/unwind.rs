//! Unwinding a copied user stack with the mapped files' `.eh_frame`, the way
//! `perf --call-graph dwarf` does: start from the registers saved at syscall entry, find the
//! frame description of each pc, compute the canonical frame address (CFA), and read the return
//! address and the saved callee-saved registers from the copy.
//!
//! x86_64 only. It stops, keeping the frames found so far, at a pc no mapping or FDE covers, at a
//! rule it does not evaluate (DWARF expressions: PLT stubs and signal trampolines use them), at
//! a read outside the copy, and at a zero return address (the outermost frame's convention).

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext, UnwindSection as _, X86_64,
};
use object::read::elf::{ElfFile64, ProgramHeader as _};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

/// A file mapped executable in the process: where (from `/proc/PID/maps`) and its bytes.
pub struct Mapping<'a> {
    /// The path inside the container (or on the host, for a host process).
    pub path: String,
    pub start: u64,
    pub end: u64,
    /// The file offset mapped at `start`.
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// One frame of the unwound stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Index into the mappings.
    pub mapping: usize,
    /// The pc in the process: for frame 0 where the thread was, for the others the return address.
    pub pc: u64,
    /// `pc` as an address of the file (its ELF virtual address).
    pub addr: u64,
}

/// The registers the unwinder follows, as the kernel saved them at syscall entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registers {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub bx: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// A recursion or a corrupt stack must not loop for long.
const MAX_FRAMES: usize = 256;

/// DWARF numbers of the registers followed (callee-saved, plus the stack pointer).
const FOLLOWED: [gimli::Register; 7] =
    [X86_64::RBX, X86_64::RBP, X86_64::RSP, X86_64::R12, X86_64::R13, X86_64::R14, X86_64::R15];

/// Unwinds `stack`, the bytes copied from `regs.sp` up, through `mappings`.
pub fn unwind(regs: &Registers, stack: &[u8], mappings: &[Mapping<'_>]) -> Vec<Frame> {
    let files: Vec<Option<Unwinder<'_>>> = mappings.iter().map(|mapping| Unwinder::parse(mapping.bytes)).collect();
    let read = |addr: u64| -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(regs.sp)?).ok()?;
        let bytes = stack.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    // Indexed by DWARF register number (0..=15).
    let mut values: [Option<u64>; 16] = [None; 16];
    for (register, value) in [
        (X86_64::RBX, regs.bx),
        (X86_64::RBP, regs.bp),
        (X86_64::RSP, regs.sp),
        (X86_64::R12, regs.r12),
        (X86_64::R13, regs.r13),
        (X86_64::R14, regs.r14),
        (X86_64::R15, regs.r15),
    ] {
        values[register.0 as usize] = Some(value);
    }
    let mut context = UnwindContext::new();
    let mut frames = Vec::new();
    let mut pc = regs.ip;
    while frames.len() < MAX_FRAMES {
        // A return address points after its call, which may be the next function's first byte
        // (a call to a function that never returns ends its caller): look up the call itself.
        let lookup = if frames.is_empty() { pc } else { pc.wrapping_sub(1) };
        let Some(mapping) = mappings.iter().position(|mapping| (mapping.start..mapping.end).contains(&lookup)) else {
            break;
        };
        let Some(unwinder) = &files[mapping] else { break };
        let Some(addr) = unwinder.file_address(&mappings[mapping], lookup) else { break };
        frames.push(Frame { mapping, pc, addr: addr + (pc - lookup) });
        let Some(row) = unwinder.row(&mut context, addr) else { break };
        let cfa = match *row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                let Some(Some(base)) = values.get(register.0 as usize) else { break };
                base.wrapping_add_signed(offset)
            }
            CfaRule::Expression(_) => break,
        };
        let return_address = match row.register(X86_64::RA) {
            Some(RegisterRule::Offset(offset)) => read(cfa.wrapping_add_signed(offset)),
            _ => None,
        };
        let Some(return_address) = return_address.filter(|&address| address != 0) else { break };
        let mut next = values;
        for register in FOLLOWED {
            next[register.0 as usize] = match row.register(register) {
                // Absent and same-value: callee-saved registers the function left alone.
                None | Some(RegisterRule::SameValue) => values[register.0 as usize],
                Some(RegisterRule::Offset(offset)) => read(cfa.wrapping_add_signed(offset)),
                Some(RegisterRule::ValOffset(offset)) => Some(cfa.wrapping_add_signed(offset)),
                Some(RegisterRule::Register(other)) => values.get(other.0 as usize).copied().flatten(),
                Some(_) => None,
            };
        }
        // The caller's stack pointer is the CFA, whatever the row says.
        next[X86_64::RSP.0 as usize] = Some(cfa);
        values = next;
        pc = return_address;
    }
    frames
}

/// One file's unwind tables and load segments.
struct Unwinder<'a> {
    eh_frame: EhFrame<gimli::EndianSlice<'a, LittleEndian>>,
    table: Option<gimli::ParsedEhFrameHdr<gimli::EndianSlice<'a, LittleEndian>>>,
    bases: BaseAddresses,
    /// `PT_LOAD` segments: (file offset, virtual address, file size).
    loads: Vec<(u64, u64, u64)>,
}

impl<'a> Unwinder<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Unwinder<'a>> {
        let file = ElfFile64::<object::LittleEndian>::parse(bytes).ok()?;
        let endian = file.endian();
        let loads = file
            .elf_program_headers()
            .iter()
            .filter(|header| header.p_type(endian) == object::elf::PT_LOAD)
            .map(|header| (header.p_offset(endian), header.p_vaddr(endian), header.p_filesz(endian)))
            .collect();
        let eh_frame_section = file.section_by_name(".eh_frame")?;
        let mut bases = BaseAddresses::default().set_eh_frame(eh_frame_section.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let eh_frame = EhFrame::new(eh_frame_section.data().ok()?, LittleEndian);
        let table = file.section_by_name(".eh_frame_hdr").and_then(|section| {
            bases = bases.clone().set_eh_frame_hdr(section.address());
            EhFrameHdr::new(section.data().ok()?, LittleEndian).parse(&bases, 8).ok()
        });
        Some(Unwinder { eh_frame, table, bases, loads })
    }

    /// The file's virtual address of `pc`, mapped by `mapping`.
    fn file_address(&self, mapping: &Mapping<'_>, pc: u64) -> Option<u64> {
        let offset = pc - mapping.start + mapping.offset;
        let &(file_offset, vaddr, _) =
            self.loads.iter().find(|&&(start, _, size)| (start..start + size).contains(&offset))?;
        Some(offset - file_offset + vaddr)
    }

    /// The unwind row for file address `addr`.
    fn row<'c>(&self, context: &'c mut UnwindContext<usize>, addr: u64) -> Option<&'c gimli::UnwindTableRow<usize>> {
        let fde = match self.table.as_ref().and_then(|hdr| hdr.table()) {
            Some(table) => table.fde_for_address(&self.eh_frame, &self.bases, addr, EhFrame::cie_from_offset),
            None => self.eh_frame.fde_for_address(&self.bases, addr, EhFrame::cie_from_offset),
        }
        .ok()?;
        fde.unwind_info_for_address(&self.eh_frame, &self.bases, context, addr).ok()
    }
}

/// The file offset of file address `addr` (what a uprobe is attached at), from the `PT_LOAD`
/// segment holding it.
pub fn file_offset(bytes: &[u8], addr: u64) -> Option<u64> {
    let file = ElfFile64::<object::LittleEndian>::parse(bytes).ok()?;
    let endian = file.endian();
    file.elf_program_headers()
        .iter()
        .filter(|header| header.p_type(endian) == object::elf::PT_LOAD)
        .map(|header| (header.p_offset(endian), header.p_vaddr(endian), header.p_filesz(endian)))
        .find(|&(_, vaddr, size)| (vaddr..vaddr + size).contains(&addr))
        .map(|(offset, vaddr, _)| addr - vaddr + offset)
}

/// The file offset of function `name`'s entry (what a uprobe is attached at), from the symbol
/// table or, in a stripped file, the dynamic one.
pub fn symbol_offset(bytes: &[u8], name: &str) -> Option<u64> {
    let file = ElfFile64::<object::LittleEndian>::parse(bytes).ok()?;
    let address = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|symbol| symbol.kind() == SymbolKind::Text && symbol.is_definition() && symbol.name() == Ok(name))?
        .address();
    file_offset(bytes, address)
}

/// Parses `/proc/PID/maps`: the file-backed executable mappings, as (path, start, end, offset).
pub fn executable_mappings(maps: &str) -> Vec<(String, u64, u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2)?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let hex = |text: &str| u64::from_str_radix(text, 16).ok();
            Some((path.to_owned(), hex(start)?, hex(end)?, hex(offset)?))
        })
        .collect()
}
