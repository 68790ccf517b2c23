//! Where functions start and end: `.eh_frame` FDEs (gimli), symbols, the entry point and the
//! init/fini arrays. Stripped libraries name few functions but describe nearly all of them in
//! `.eh_frame`; hand-written assembly without unwind info is found through symbols and, later,
//! through the calls that reach it.

use std::collections::BTreeMap;

use gimli::{BaseAddresses, CieOrFde, EhFrame, UnwindSection};
use object::elf;
use object::read::elf::SectionHeader as _;

use super::image::{Image, LE};

/// A function start with its name, if a symbol gives one. Extents are not taken from unwind
/// info or symbol sizes: a function runs to the next start (glibc's `__clone3` FDE stops right
/// before its `syscall`, whose number the code before it sets).
#[derive(Clone, Debug, Default)]
pub(crate) struct Start {
    pub name: Option<String>,
    /// Named by a global symbol (preferred over local names for display).
    pub global: bool,
}

/// All function starts found before decoding, by address.
pub(crate) fn starts(image: &Image<'_>) -> BTreeMap<u64, Start> {
    let mut starts: BTreeMap<u64, Start> = BTreeMap::new();
    for addr in fde_starts(image) {
        starts.entry(addr).or_default();
    }
    for dynamic in [false, true] {
        for sym in image.symbols(dynamic) {
            let function = sym.kind == elf::STT_FUNC || sym.kind == elf::STT_GNU_IFUNC;
            if !function || !sym.defined || sym.value == 0 || !image.is_code(sym.value) {
                continue;
            }
            let start = starts.entry(sym.value).or_default();
            let global = sym.bind != elf::STB_LOCAL;
            let better = match &start.name {
                None => true,
                Some(current) => (global && !start.global) || (global == start.global && plainer(sym.name, current)),
            };
            if !sym.name.is_empty() && better {
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

/// Of two aliases, the public one: fewer leading underscores, then shorter (`sigaction` over
/// `__sigaction`, `__libc_start_main` over `__libc_start_main_impl`). Name-based rules (which
/// functions register handlers, never return, …) are written against these names.
fn plainer(candidate: &str, current: &str) -> bool {
    let key = |name: &str| (name.len() - name.trim_start_matches('_').len(), name.len(), name.to_owned());
    key(candidate) < key(current)
}

/// `.eh_frame` FDE start addresses.
fn fde_starts(image: &Image<'_>) -> Vec<u64> {
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
    let mut starts = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    // A malformed entry ends the walk: the FDEs before it are still good starts.
    while let Ok(Some(entry)) = entries.next() {
        if let CieOrFde::Fde(partial) = entry
            && let Ok(fde) = partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
            && fde.len() > 0
        {
            starts.push(fde.initial_address());
        }
    }
    starts
}

/// Addresses the loader calls in init and fini order: (preinit ∪ DT_INIT ∪ init_array, fini_array ∪ DT_FINI).
pub(crate) fn init_fini(image: &Image<'_>, slot_value: impl Fn(u64) -> Option<u64>) -> (Vec<u64>, Vec<u64>) {
    let array = |range: Option<(u64, u64)>| -> Vec<u64> {
        let Some(range) = range else { return Vec::new() };
        let (start, end) = image.present(range);
        (start..end)
            .step_by(8)
            .filter_map(&slot_value)
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
