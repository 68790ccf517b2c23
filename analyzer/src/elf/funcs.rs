//! Where functions start and end: `.eh_frame` FDEs (gimli), symbols, the entry point and the
//! init/fini arrays. Stripped libraries name few functions but describe nearly all of them in
//! `.eh_frame`; hand-written assembly without unwind info is found through symbols and, later,
//! through the calls that reach it.

use std::collections::BTreeMap;

use gimli::{BaseAddresses, CieOrFde, EhFrame, UnwindSection};
use object::elf;
use object::read::elf::SectionHeader as _;

use super::image::{Image, LE};

/// A function start with what is known about its extent and name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Start {
    /// The end the unwind info or symbol size gives, if any.
    pub end: Option<u64>,
    pub name: Option<String>,
    /// Named by a global symbol (preferred over local names for display).
    pub global: bool,
}

/// All function starts found before decoding, by address.
pub(crate) fn starts(image: &Image<'_>) -> BTreeMap<u64, Start> {
    let mut starts: BTreeMap<u64, Start> = BTreeMap::new();
    for (addr, len) in fde_ranges(image) {
        let start = starts.entry(addr).or_default();
        start.end = Some(start.end.map_or(addr + len, |end| end.max(addr + len)));
    }
    for dynamic in [false, true] {
        for sym in image.symbols(dynamic) {
            let function = sym.kind == elf::STT_FUNC || sym.kind == elf::STT_GNU_IFUNC;
            if !function || !sym.defined || sym.value == 0 || !image.is_code(sym.value) {
                continue;
            }
            let start = starts.entry(sym.value).or_default();
            if sym.size > 0 {
                start.end = Some(start.end.map_or(sym.value + sym.size, |end| end.max(sym.value + sym.size)));
            }
            let global = sym.bind != elf::STB_LOCAL;
            if !sym.name.is_empty() && (start.name.is_none() || (global && !start.global)) {
                start.name = Some(sym.name.to_owned());
                start.global = global;
            }
        }
    }
    let entry = image.entry();
    if entry != 0 && image.is_code(entry) {
        starts.entry(entry).or_default();
    }
    starts.retain(|&addr, _| image.is_code(addr));
    starts
}

/// `.eh_frame` FDEs as (start, length).
fn fde_ranges(image: &Image<'_>) -> Vec<(u64, u64)> {
    let Some(section) = image.section(".eh_frame") else { return Vec::new() };
    let Ok(bytes) = section.data(LE, image.data) else { return Vec::new() };
    let mut bases = BaseAddresses::default().set_eh_frame(section.sh_addr(LE));
    if let Some((text, _)) = image.section_range(".text") {
        bases = bases.set_text(text);
    }
    if let Some((got, _)) = image.section_range(".got") {
        bases = bases.set_got(got);
    }
    let eh_frame = EhFrame::new(bytes, gimli::LittleEndian);
    let mut ranges = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    // A malformed entry ends the walk: the FDEs before it are still good starts.
    while let Ok(Some(entry)) = entries.next() {
        if let CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
            && fde.len() > 0
        {
            ranges.push((fde.initial_address(), fde.len()));
        }
    }
    ranges
}

/// Addresses the loader calls in init and fini order: (preinit ∪ DT_INIT ∪ init_array, fini_array ∪ DT_FINI).
pub(crate) fn init_fini(image: &Image<'_>, slot_value: impl Fn(u64) -> Option<u64>) -> (Vec<u64>, Vec<u64>) {
    let array = |range: Option<(u64, u64)>| -> Vec<u64> {
        let Some((start, end)) = range else { return Vec::new() };
        (start..end)
            .step_by(8)
            .filter_map(|slot| slot_value(slot))
            // 0 and -1 are the historical list terminators; neither is code.
            .filter(|&addr| addr != 0 && addr != u64::MAX && image.is_code(addr))
            .collect()
    };
    let dynamic = &image.dynamic;
    let mut init = array(dynamic.preinit_array);
    init.extend(dynamic.init);
    init.extend(array(dynamic.init_array));
    let mut fini = array(dynamic.fini_array);
    fini.reverse();
    fini.extend(dynamic.fini);
    (init, fini)
}
