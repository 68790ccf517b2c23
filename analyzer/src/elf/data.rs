//! Pointer-bearing data objects, the unit of RTA liveness.
//!
//! A slot is a pointer the loader relocates (or, in a position-dependent executable, an aligned
//! word whose value is an address in the file). Slots are grouped into objects: a symbol's
//! extent when `.symtab`/`.dynsym` gives one, otherwise the run between two addresses that code
//! or data refers to (sysfilter's "vacuum"). An object becomes live only when live code or a
//! live object refers to it, so tables nobody reachable reads keep their functions dead.

use std::collections::{BTreeMap, BTreeSet};

use object::elf;

use super::image::Image;
use super::relocs::{Relocs, SlotValue};

/// Objects as (start, end, slot values), sorted by start.
pub(crate) struct Objects {
    pub list: Vec<(u64, u64, Vec<SlotValue>)>,
}

impl Objects {
    /// `code_refs`: every address the file's code takes.
    pub fn build(image: &Image<'_>, relocs: &Relocs, scanned: &BTreeMap<u64, u64>, code_refs: &[u64]) -> Objects {
        let excluded: Vec<(u64, u64)> =
            [image.dynamic.preinit_array, image.dynamic.init_array, image.dynamic.fini_array]
                .into_iter()
                .flatten()
                .chain(image.section_range(".got.plt"))
                .collect();
        let kept = |slot: &u64| !excluded.iter().any(|&(start, end)| (start..end).contains(slot));
        let mut slots: BTreeMap<u64, SlotValue> =
            relocs.data.iter().filter(|(slot, _)| kept(slot)).map(|(&slot, &value)| (slot, value)).collect();
        for (&slot, &value) in scanned {
            if kept(&slot) {
                slots.entry(slot).or_insert(SlotValue::Addr(value));
            }
        }
        let sections = image.data_ranges();
        let in_data = |addr: u64| sections.iter().any(|&(_, start, end)| (start..end).contains(&addr));
        let symbols = symbol_ranges(image);
        let mut splits: BTreeSet<u64> = code_refs.iter().copied().filter(|&addr| in_data(addr)).collect();
        splits.extend(sections.iter().map(|&(_, start, _)| start));
        // GOT entries are independent of one another.
        if let Some(range) = image.section_range(".got") {
            let (start, end) = image.present(range);
            splits.extend((start..end).step_by(8));
        }
        splits.extend(symbols.iter().map(|&(start, _)| start));
        splits.extend(slots.values().filter_map(|value| match value {
            SlotValue::Addr(addr) if in_data(*addr) => Some(*addr),
            _ => None,
        }));
        let section_end =
            |addr: u64| sections.iter().find(|&&(_, start, end)| (start..end).contains(&addr)).map(|r| r.2);
        let mut objects: BTreeMap<u64, (u64, Vec<SlotValue>)> = BTreeMap::new();
        for (slot, value) in slots {
            let (start, end) = match containing(&symbols, slot) {
                Some(range) => range,
                None => {
                    let start = splits.range(..=slot).next_back().copied().unwrap_or(slot);
                    let limit = section_end(slot).unwrap_or(slot.saturating_add(8));
                    // Symbol starts are split points, so a gap object never runs into a symbol.
                    let next = splits.range(slot.saturating_add(1)..).next().copied().unwrap_or(limit).min(limit);
                    (start, next)
                }
            };
            objects.entry(start).or_insert((end, Vec::new())).1.push(value);
        }
        let list = objects.into_iter().map(|(start, (end, values))| (start, end, values)).collect();
        Objects { list }
    }

    /// The object holding `addr`.
    pub fn at(&self, addr: u64) -> Option<u32> {
        let index = self.list.partition_point(|&(start, _, _)| start <= addr).checked_sub(1)?;
        let (_, end, _) = self.list[index];
        (addr < end).then_some(index as u32)
    }
}

/// `STT_OBJECT` symbols with a size, as sorted non-overlapping (start, end).
fn symbol_ranges(image: &Image<'_>) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = [false, true]
        .into_iter()
        .flat_map(|dynamic| image.symbols(dynamic))
        .filter(|sym| sym.kind == elf::STT_OBJECT && sym.defined && sym.size > 0 && sym.value != 0)
        .map(|sym| (sym.value, sym.value.saturating_add(sym.size)))
        .collect();
    ranges.sort_unstable();
    ranges.dedup();
    let mut disjoint: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match disjoint.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => disjoint.push((start, end)),
        }
    }
    disjoint
}

fn containing(ranges: &[(u64, u64)], addr: u64) -> Option<(u64, u64)> {
    let index = ranges.partition_point(|&(start, _)| start <= addr).checked_sub(1)?;
    let (start, end) = ranges[index];
    (addr < end).then_some((start, end))
}

/// Position-dependent executables store absolute addresses without relocations: every aligned
/// word of their data that holds an address inside the file is a pointer slot.
pub(crate) fn scan_absolute(image: &Image<'_>) -> BTreeMap<u64, u64> {
    let mut slots = BTreeMap::new();
    if image.kind != super::summary::ModuleKind::Executable {
        return slots;
    }
    let loaded: Vec<(u64, u64)> =
        image.loaded_sections().map(|(addr, bytes, _)| (addr, addr + bytes.len() as u64)).collect();
    let in_file = |value: u64| loaded.iter().any(|&(start, end)| (start..end).contains(&value));
    for (addr, bytes, section) in image.loaded_sections() {
        use object::read::elf::SectionHeader as _;
        if section.sh_flags(super::image::LE).contains(elf::SHF_EXECINSTR) {
            continue;
        }
        let first = addr.next_multiple_of(8);
        for slot in (first..addr + bytes.len() as u64).step_by(8) {
            let offset = (slot - addr) as usize;
            let Some(word) = bytes.get(offset..offset + 8) else { break };
            let value = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            if value >= 0x1000 && in_file(value) {
                slots.insert(slot, value);
            }
        }
    }
    slots
}
