//! Dynamic relocations: which pointer slots the loader fills, and with what.
//!
//! RELA (`R_X86_64_RELATIVE`, `_64`, `GLOB_DAT`, `JUMP_SLOT`, `IRELATIVE`, `COPY`) and packed
//! RELR (`.relr.dyn`, whose implicit addend is the slot's file contents). Without RELR every
//! function pointer in glibc 2.36's data would be missed.

use std::collections::{BTreeMap, HashMap};

use object::elf;
use object::read::elf::{Rela as _, SectionHeader as _};

use super::image::{Image, LE};

/// What the loader writes into a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotValue {
    /// An address in this file.
    Addr(u64),
    /// The address of a symbol (`.dynsym` index), wherever the loader finds its definition.
    Symbol(u32),
    /// The result of calling this IFUNC resolver.
    Irelative(u64),
}

/// Slots by address. `plt` holds the `JUMP_SLOT`s (and IRELATIVEs of `.rela.plt`), which only
/// PLT stubs and `-fno-plt` calls use; `data` holds every other pointer slot.
#[derive(Default)]
pub(crate) struct Relocs {
    pub data: BTreeMap<u64, SlotValue>,
    pub plt: HashMap<u64, SlotValue>,
    /// `R_X86_64_COPY`: (address, size, `.dynsym` index) of data copied from a library.
    pub copies: Vec<(u64, u64, u32)>,
}

impl Relocs {
    pub fn read(image: &Image<'_>) -> Relocs {
        let dynsym = image.symbols(true);
        let local_value = |index: u32| {
            dynsym.get(index as usize).filter(|sym| sym.defined && sym.bind == elf::STB_LOCAL).map(|sym| sym.value)
        };
        let mut relocs = Relocs::default();
        for section in image.sections.iter() {
            if !section.sh_flags(LE).contains(elf::SHF_ALLOC) {
                continue;
            }
            if let Ok(Some(relr)) = section.relr(LE, image.data) {
                for slot in relr {
                    if let Some(value) = image.u64_at(slot) {
                        relocs.data.insert(slot, SlotValue::Addr(value));
                    }
                }
                continue;
            }
            let Ok(Some((entries, _))) = section.rela(LE, image.data) else { continue };
            for entry in entries {
                let (slot, addend, symbol) = (entry.r_offset(LE), entry.r_addend(LE), entry.r_sym(LE, false));
                let symbolic = || match local_value(symbol) {
                    Some(value) => SlotValue::Addr(value.wrapping_add_signed(addend)),
                    None if symbol == 0 => SlotValue::Addr(addend as u64),
                    None => SlotValue::Symbol(symbol),
                };
                match entry.r_type(LE, false) {
                    elf::R_X86_64_RELATIVE => {
                        relocs.data.insert(slot, SlotValue::Addr(addend as u64));
                    }
                    elf::R_X86_64_64 | elf::R_X86_64_GLOB_DAT => {
                        relocs.data.insert(slot, symbolic());
                    }
                    elf::R_X86_64_JUMP_SLOT => {
                        relocs.plt.insert(slot, symbolic());
                    }
                    elf::R_X86_64_IRELATIVE => {
                        let value = SlotValue::Irelative(addend as u64);
                        if image.section(".got.plt").is_some_and(|got| in_section(got, slot)) {
                            relocs.plt.insert(slot, value);
                        } else {
                            relocs.data.insert(slot, value);
                        }
                    }
                    elf::R_X86_64_COPY => {
                        let size = dynsym.get(symbol as usize).map_or(8, |sym| sym.size);
                        relocs.copies.push((slot, size, symbol));
                    }
                    _ => {}
                }
            }
        }
        relocs
    }

    /// The slot's value for a call or jump through memory: PLT slots first, then data (GOT).
    pub fn call_slot(&self, slot: u64) -> Option<SlotValue> {
        self.plt.get(&slot).or_else(|| self.data.get(&slot)).copied()
    }
}

fn in_section(section: &object::elf::SectionHeader64<object::LittleEndian>, addr: u64) -> bool {
    let start = section.sh_addr(LE);
    (start..start + section.sh_size(LE)).contains(&addr)
}
