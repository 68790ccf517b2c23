//! An x86-64 ELF file parsed with `object`: sections, segments, the dynamic table, symbols, and
//! reading bytes by virtual address.

use object::LittleEndian;
use object::elf::{self, FileHeader64, ProgramHeader64, SectionHeader64};
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _, SectionHeader as _, SectionTable, Sym as _};

use super::ElfError;
use super::summary::ModuleKind;

pub(crate) type Elf = FileHeader64<LittleEndian>;
pub(crate) const LE: LittleEndian = LittleEndian;

/// A parsed file; everything borrows from its bytes.
pub(crate) struct Image<'data> {
    pub data: &'data [u8],
    pub header: &'data Elf,
    pub sections: SectionTable<'data, Elf>,
    pub segments: &'data [ProgramHeader64<LittleEndian>],
    pub kind: ModuleKind,
    pub dynamic: Dynamic,
}

/// What the dynamic table says.
#[derive(Default)]
pub(crate) struct Dynamic {
    pub needed: Vec<String>,
    pub soname: Option<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub init: Option<u64>,
    pub fini: Option<u64>,
    pub preinit_array: Option<(u64, u64)>,
    pub init_array: Option<(u64, u64)>,
    pub fini_array: Option<(u64, u64)>,
}

/// A symbol from `.symtab` or `.dynsym`.
pub(crate) struct Symbol<'data> {
    pub index: usize,
    pub name: &'data str,
    pub value: u64,
    pub size: u64,
    pub kind: elf::SymbolType,
    pub bind: elf::SymbolBind,
    pub visibility: elf::SymbolVisibility,
    pub defined: bool,
}

/// Refuses sections that end past the address space (every later `sh_addr + sh_size` relies on
/// it), and loaded sections that share addresses: code decoded there would be another section's
/// bytes, and the analysis would report syscalls the file does not make. `SHT_NOBITS` sections
/// (`.bss`, `.tbss`) are left out of the overlap check: they hold no bytes, and `.tbss`
/// legitimately overlaps; so are relocatable objects, whose sections all start at address 0.
fn check_sections(sections: &SectionTable<'_, Elf>, relocatable: bool) -> Result<(), ElfError> {
    let name = |index: usize| {
        let section = sections.section(object::SectionIndex(index)).ok();
        let name = section.and_then(|section| sections.section_name(LE, section).ok());
        name.map_or_else(|| format!("#{index}"), |name| String::from_utf8_lossy(name).into_owned())
    };
    if let Some(index) =
        sections.iter().position(|section| section.sh_addr(LE).checked_add(section.sh_size(LE)).is_none())
    {
        return Err(ElfError::Malformed(format!("section {} ends past the end of the address space", name(index))));
    }
    if relocatable {
        return Ok(());
    }
    let mut loaded: Vec<(u64, u64, usize)> = sections
        .iter()
        .enumerate()
        .filter(|(_, section)| {
            section.sh_flags(LE).contains(elf::SHF_ALLOC)
                && section.sh_type(LE) != elf::SHT_NOBITS
                && section.sh_size(LE) != 0
        })
        .map(|(index, section)| (section.sh_addr(LE), section.sh_addr(LE) + section.sh_size(LE), index))
        .collect();
    loaded.sort_unstable();
    for pair in loaded.windows(2) {
        let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
        if end > start {
            return Err(ElfError::Malformed(format!(
                "sections {} and {} overlap at 0x{start:x}",
                name(first),
                name(second)
            )));
        }
    }
    Ok(())
}

impl<'data> Image<'data> {
    pub fn parse(data: &'data [u8]) -> Result<Image<'data>, ElfError> {
        if data.get(..4) != Some(&elf::ELFMAG[..]) {
            return Err(ElfError::NotElf);
        }
        // e_ident[EI_CLASS] and e_ident[EI_DATA].
        if data.get(4) != Some(&elf::ELFCLASS64.0) || data.get(5) != Some(&elf::ELFDATA2LSB.0) {
            return Err(ElfError::Unsupported("not a 64-bit little-endian ELF".into()));
        }
        let header = Elf::parse(data).map_err(|err| ElfError::Malformed(err.to_string()))?;
        if header.e_machine(LE) != elf::EM_X86_64 {
            return Err(ElfError::Unsupported(format!("machine {} is not x86-64", header.e_machine(LE).0)));
        }
        let sections = header.sections(LE, data).map_err(|err| ElfError::Malformed(err.to_string()))?;
        if sections.is_empty() {
            return Err(ElfError::Malformed("no section headers".into()));
        }
        check_sections(&sections, header.e_type(LE) == elf::ET_REL)?;
        let segments = header.program_headers(LE, data).map_err(|err| ElfError::Malformed(err.to_string()))?;
        let mut image =
            Image { data, header, sections, segments, kind: ModuleKind::SharedObject, dynamic: Dynamic::default() };
        image.dynamic = image.read_dynamic()?;
        image.kind = image.module_kind();
        Ok(image)
    }

    fn module_kind(&self) -> ModuleKind {
        if self.header.e_type(LE) == elf::ET_EXEC {
            return ModuleKind::Executable;
        }
        let pie_flag =
            self.dynamic_entries().any(|(tag, value)| tag == elf::DT_FLAGS_1 && value & elf::DF_1_PIE.0 != 0);
        if pie_flag || (self.interp().is_some() && self.header.e_entry(LE) != 0) {
            ModuleKind::PieExecutable
        } else {
            ModuleKind::SharedObject
        }
    }

    pub fn entry(&self) -> u64 {
        self.header.e_entry(LE)
    }

    pub fn interp(&self) -> Option<String> {
        let segment = self.segments.iter().find(|segment| segment.p_type(LE) == elf::PT_INTERP)?;
        let bytes = segment.data(LE, self.data).ok()?;
        let end = bytes.iter().position(|&byte| byte == 0).unwrap_or(bytes.len());
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    fn dynamic_entries(&self) -> impl Iterator<Item = (elf::DynamicTag, u64)> + '_ {
        let entries = self.sections.dynamic(LE, self.data).ok().flatten().map(|(entries, _)| entries).unwrap_or(&[]);
        entries
            .iter()
            .take_while(|entry| entry.d_tag(LE) != elf::DT_NULL)
            .map(|entry| (entry.d_tag(LE), entry.d_val(LE)))
    }

    fn read_dynamic(&self) -> Result<Dynamic, ElfError> {
        let mut dynamic = Dynamic::default();
        let strtab = self.dynamic_entries().find(|&(tag, _)| tag == elf::DT_STRTAB).map(|(_, addr)| addr);
        let string = |offset: u64| -> Result<String, ElfError> {
            let base = strtab.ok_or_else(|| ElfError::Malformed("dynamic table without DT_STRTAB".into()))?;
            base.checked_add(offset)
                .and_then(|addr| self.cstr_at(addr))
                .ok_or_else(|| ElfError::Malformed("bad dynamic string".into()))
        };
        let (mut preinit, mut init, mut fini) = ((None, 0), (None, 0), (None, 0));
        for (tag, value) in self.dynamic_entries() {
            match tag {
                elf::DT_NEEDED => dynamic.needed.push(string(value)?),
                elf::DT_SONAME => dynamic.soname = Some(string(value)?),
                elf::DT_RPATH => dynamic.rpath.extend(string(value)?.split(':').map(str::to_owned)),
                elf::DT_RUNPATH => dynamic.runpath.extend(string(value)?.split(':').map(str::to_owned)),
                elf::DT_INIT => dynamic.init = Some(value),
                elf::DT_FINI => dynamic.fini = Some(value),
                elf::DT_PREINIT_ARRAY => preinit.0 = Some(value),
                elf::DT_PREINIT_ARRAYSZ => preinit.1 = value,
                elf::DT_INIT_ARRAY => init.0 = Some(value),
                elf::DT_INIT_ARRAYSZ => init.1 = value,
                elf::DT_FINI_ARRAY => fini.0 = Some(value),
                elf::DT_FINI_ARRAYSZ => fini.1 = value,
                _ => {}
            }
        }
        dynamic.rpath.retain(|dir| !dir.is_empty());
        dynamic.runpath.retain(|dir| !dir.is_empty());
        let array = |(start, size): (Option<u64>, u64)| start.map(|start| (start, start.saturating_add(size)));
        dynamic.preinit_array = array(preinit);
        dynamic.init_array = array(init);
        // Static executables have no dynamic table but still run their init/fini arrays.
        dynamic.init_array = dynamic.init_array.or_else(|| self.section_range(".init_array"));
        dynamic.fini_array = array(fini).or_else(|| self.section_range(".fini_array"));
        dynamic.preinit_array = dynamic.preinit_array.or_else(|| self.section_range(".preinit_array"));
        Ok(dynamic)
    }

    pub fn section_range(&self, name: &str) -> Option<(u64, u64)> {
        let section = self.section(name)?;
        let start = section.sh_addr(LE);
        Some((start, start + section.sh_size(LE)))
    }

    pub fn section(&self, name: &str) -> Option<&'data SectionHeader64<LittleEndian>> {
        self.sections.section_by_name(LE, name.as_bytes()).map(|(_, section)| section)
    }

    /// Allocated sections with file contents, as (address, bytes, executable).
    pub fn loaded_sections(
        &self,
    ) -> impl Iterator<Item = (u64, &'data [u8], &'data SectionHeader64<LittleEndian>)> + '_ {
        self.sections.iter().filter_map(|section| {
            let flags = section.sh_flags(LE);
            if !flags.contains(elf::SHF_ALLOC) || section.sh_type(LE) == elf::SHT_NOBITS {
                return None;
            }
            let bytes = section.data(LE, self.data).ok()?;
            Some((section.sh_addr(LE), bytes, section))
        })
    }

    /// The bytes from `addr` to the end of the section holding it.
    pub fn bytes_at(&self, addr: u64) -> Option<&'data [u8]> {
        self.loaded_sections().find_map(|(start, bytes, _)| {
            let offset = addr.checked_sub(start)?;
            (offset < bytes.len() as u64).then(|| &bytes[offset as usize..])
        })
    }

    /// The part of `start..end` the file has bytes for. Sizes from headers and the dynamic table
    /// (`DT_INIT_ARRAYSZ`, a `.got`'s `sh_size`) are believed only that far: a forged one would
    /// otherwise make a loop over the range run for ages.
    pub fn present(&self, (start, end): (u64, u64)) -> (u64, u64) {
        let present = self.bytes_at(start).map_or(0, |bytes| bytes.len() as u64);
        (start, end.min(start + present))
    }

    pub fn u64_at(&self, addr: u64) -> Option<u64> {
        let bytes = self.bytes_at(addr)?.get(..8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    pub fn cstr_at(&self, addr: u64) -> Option<String> {
        let bytes = self.bytes_at(addr)?;
        let end = bytes.iter().position(|&byte| byte == 0)?;
        std::str::from_utf8(&bytes[..end]).ok().map(str::to_owned)
    }

    /// The GNU build-id note, in hex.
    pub fn build_id(&self) -> Option<String> {
        for section in self.sections.iter() {
            let Ok(Some(mut notes)) = section.notes(LE, self.data) else { continue };
            while let Ok(Some(note)) = notes.next() {
                if note.name() == elf::ELF_NOTE_GNU && note.n_type(LE) == elf::NT_GNU_BUILD_ID {
                    return Some(note.desc().iter().map(|byte| format!("{byte:02x}")).collect());
                }
            }
        }
        None
    }

    /// Symbols of `.symtab` (when `dynamic` is false) or `.dynsym`.
    pub fn symbols(&self, dynamic: bool) -> Vec<Symbol<'data>> {
        let table = if dynamic {
            self.sections.symbols(LE, self.data, elf::SHT_DYNSYM)
        } else {
            self.sections.symbols(LE, self.data, elf::SHT_SYMTAB)
        };
        let Ok(table) = table else { return Vec::new() };
        let strings = table.strings();
        table
            .enumerate()
            .map(|(index, sym)| Symbol {
                index: index.0,
                name: sym.name(LE, strings).ok().and_then(|name| std::str::from_utf8(name).ok()).unwrap_or(""),
                value: sym.st_value(LE),
                size: sym.st_size(LE),
                kind: sym.st_type(),
                bind: sym.st_bind(),
                visibility: sym.st_visibility(),
                defined: !sym.is_undefined(LE),
            })
            .collect()
    }

    /// Version names per `.dynsym` index: (version, hidden). Unversioned symbols get `None`.
    pub fn dynamic_versions(&self) -> Vec<(Option<String>, bool)> {
        let Ok(Some(table)) = self.sections.versions(LE, self.data) else { return Vec::new() };
        let count = self.sections.symbols(LE, self.data, elf::SHT_DYNSYM).map(|table| table.len()).unwrap_or(0);
        (0..count)
            .map(|index| {
                let versym = table.version_index(LE, object::SymbolIndex(index));
                let name = table
                    .version(versym.index())
                    .ok()
                    .flatten()
                    .map(|version| String::from_utf8_lossy(version.name()).into_owned());
                (name, versym.is_hidden())
            })
            .collect()
    }

    /// Whether `addr` lies in an executable section.
    pub fn is_code(&self, addr: u64) -> bool {
        self.code_ranges().any(|(start, end)| (start..end).contains(&addr))
    }

    pub fn code_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sections.iter().filter_map(|section| {
            let flags = section.sh_flags(LE);
            let code = flags.contains(elf::SHF_EXECINSTR) && flags.contains(elf::SHF_ALLOC);
            code.then(|| (section.sh_addr(LE), section.sh_addr(LE) + section.sh_size(LE)))
        })
    }

    /// Allocated, non-executable sections as (name, start, end, writable-or-relro).
    pub fn data_ranges(&self) -> Vec<(String, u64, u64)> {
        self.sections
            .iter()
            .filter(|section| {
                let flags = section.sh_flags(LE);
                flags.contains(elf::SHF_ALLOC) && !flags.contains(elf::SHF_EXECINSTR)
            })
            .map(|section| {
                let name = self.sections.section_name(LE, section).unwrap_or(b"");
                (
                    String::from_utf8_lossy(name).into_owned(),
                    section.sh_addr(LE),
                    section.sh_addr(LE) + section.sh_size(LE),
                )
            })
            .collect()
    }
}
