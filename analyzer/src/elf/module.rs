//! One file, start to finish: function discovery, decoding, the noreturn fixpoint, value
//! analysis, data objects, and the summary that ties raw addresses to functions and symbols.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use object::elf;
use rayon::prelude::*;

use super::cfg::{self, Cfg, Code, Exit};
use super::data::{self, Objects};
use super::funcs;
use super::image::Image;
use super::plt;
use super::relocs::{Relocs, SlotValue};
use super::summary::*;
use super::values::{self, RawCall, RawIndirect, RawTarget};
use super::{ElfError, NORETURN, REGISTRARS};

/// The file's facts before they are turned into a summary.
struct Module<'data> {
    image: Image<'data>,
    relocs: Relocs,
    stubs: HashMap<u64, u64>,
    code: Code<'data>,
    /// Start → (end, name).
    functions: BTreeMap<u64, (u64, Option<String>)>,
    /// Function starts in order, for index lookups once discovery is done.
    starts: Vec<u64>,
    code_ranges: Vec<(u64, u64)>,
    plt_ranges: Vec<(u64, u64)>,
    dynsyms: Vec<DynSym>,
    named: NamedTargets,
}

/// Call targets whose name says what they do (`NORETURN`, `REGISTRARS`), found once per file
/// when discovery is done. Every call of every function asks, in each round of the noreturn
/// fixpoint and again in the value analysis; matching the target's name against the lists at
/// each ask cost more than the rest of the noreturn fixpoint.
#[derive(Default)]
struct NamedTargets {
    noreturn: HashSet<RawTarget>,
    /// The argument each registrar registers.
    registrars: HashMap<RawTarget, u8>,
}

/// A `.dynsym` entry's identity for linking.
struct DynSym {
    name: String,
    version: Option<String>,
    weak: bool,
}

pub(crate) fn analyze(bytes: &[u8]) -> Result<ModuleSummary, ElfError> {
    let image = Image::parse(bytes)?;
    let build_id = super::identity(bytes)?;
    let relocs = Relocs::read(&image);
    let stubs = plt::stubs(&image);
    let code = Code::new(image.loaded_sections().map(|(addr, bytes, _)| (addr, bytes)).collect());
    let versions = image.dynamic_versions();
    let dynsyms = image
        .symbols(true)
        .into_iter()
        .map(|sym| DynSym {
            name: sym.name.to_owned(),
            version: versions.get(sym.index).and_then(|(version, _)| version.clone()),
            weak: sym.bind == elf::STB_WEAK,
        })
        .collect();
    let code_ranges = image.code_ranges().collect();
    let plt_ranges =
        [".plt", ".plt.sec", ".plt.got", ".iplt"].iter().filter_map(|name| image.section_range(name)).collect();
    let mut module = Module {
        image,
        relocs,
        stubs,
        code,
        functions: BTreeMap::new(),
        starts: Vec::new(),
        code_ranges,
        plt_ranges,
        dynsyms,
        named: NamedTargets::default(),
    };
    let (init, fini) = funcs::init_fini(&module.image, |slot| module.slot_address(slot));
    let cfgs = module.discover(&init, &fini);
    module.starts = module.functions.keys().copied().collect();
    module.named = module.named_targets();
    let noreturn = module.noreturn(&cfgs);
    let ranges: Vec<(u64, u64)> = module.functions.iter().map(|(&start, &(end, _))| (start, end)).collect();
    // Largest first: a function that takes tens of milliseconds alone (pcre2's matcher) must
    // not be the last one a thread picks up while the others have nothing left.
    let mut order: Vec<usize> = (0..cfgs.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(cfgs[index].insns.len()));
    let mut facts: Vec<(usize, values::Facts)> = order
        .into_par_iter()
        .map(|index| {
            let (start, end) = ranges[index];
            let is_noreturn = |target: RawTarget| module.target_noreturn(target, &noreturn);
            let registrar = |target: RawTarget| module.named.registrars.get(&target).copied();
            let context = values::Context { start, end, noreturn: &is_noreturn, registrar: &registrar };
            (index, values::analyze(&cfgs[index], &context))
        })
        .collect();
    facts.sort_unstable_by_key(|&(index, _)| index);
    let facts = facts.into_iter().map(|(_, facts)| facts).collect();
    Ok(module.summarize(build_id, &cfgs, facts, &noreturn, &init, &fini))
}

impl<'data> Module<'data> {
    /// What a pointer slot holds once relocated, as an address in this file.
    fn slot_address(&self, slot: u64) -> Option<u64> {
        match self.relocs.data.get(&slot) {
            Some(SlotValue::Addr(addr) | SlotValue::Irelative(addr)) => Some(*addr),
            Some(SlotValue::Symbol(_)) => None,
            None => self.image.u64_at(slot),
        }
    }

    fn in_plt(&self, addr: u64) -> bool {
        self.plt_ranges.iter().any(|&(start, end)| (start..end).contains(&addr))
    }

    /// Finds every function and decodes it. Functions reached only by calls (assembly without
    /// unwind info) are added until no new ones appear; a code address another function
    /// materialises starts a function of its own even inside an unwind range (`__restore_rt`
    /// sits one byte into the range glibc describes for the unwinder).
    fn discover(&mut self, init: &[u64], fini: &[u64]) -> Vec<Cfg> {
        let mut starts = funcs::starts(&self.image);
        for &addr in init.iter().chain(fini) {
            starts.entry(addr).or_default();
        }
        for value in self.relocs.data.values().chain(self.relocs.plt.values()) {
            if let SlotValue::Irelative(resolver) = value
                && self.is_code(*resolver)
            {
                starts.entry(*resolver).or_default();
            }
        }
        starts.retain(|&addr, _| !self.in_plt(addr));
        let mut decoded: BTreeMap<u64, Cfg> = BTreeMap::new();
        let mut pending: Vec<u64> = starts.keys().copied().collect();
        while !pending.is_empty() {
            let addrs: Vec<u64> = starts.keys().copied().collect();
            for &start in &pending {
                let info = &starts[&start];
                let next = addrs.get(addrs.partition_point(|&addr| addr <= start)).copied().unwrap_or(u64::MAX);
                let end = next.min(self.code.section_end(start)).max(start + 1);
                self.functions.insert(start, (end, info.name.clone()));
            }
            // Each function's new starts are looked for on the thread that decoded it, not in a
            // scan of every instruction on one thread once all are decoded.
            let this = &*self;
            let round: Vec<(u64, Cfg, Vec<u64>, Vec<u64>)> = pending
                .par_iter()
                .map(|&start| {
                    let end = this.functions[&start].0;
                    let cfg = cfg::decode(&this.code, start, end);
                    let (found, split) = this.new_starts(start, end, &cfg);
                    (start, cfg, found, split)
                })
                .collect();
            let mut found = Vec::new();
            let mut split = Vec::new();
            for (start, cfg, found_here, split_here) in round {
                found.extend(found_here);
                split.extend(split_here);
                decoded.insert(start, cfg);
            }
            found.sort_unstable();
            found.dedup();
            split.sort_unstable();
            split.dedup();
            for &addr in &found {
                starts.entry(addr).or_default();
            }
            // A split function ends at the new start now; decode it again.
            pending = found;
            pending.extend(split);
        }
        decoded.into_values().collect()
    }

    /// The starts the graph of function `[start, end)` reveals: branch targets outside every
    /// known function, and code addresses it materialises inside another function, with that
    /// function (it is split there).
    fn new_starts(&self, start: u64, end: u64, cfg: &Cfg) -> (Vec<u64>, Vec<u64>) {
        let outside = |target: &u64| !(start..end).contains(target) && self.is_code(*target) && !self.in_plt(*target);
        let mut found = Vec::new();
        let mut split = Vec::new();
        for target in branch_targets(cfg).filter(outside) {
            if self.function_at(target).is_none() {
                found.push(target);
            }
        }
        for target in materialised(cfg).filter(outside) {
            if let Some(container) = self.function_at(target).filter(|&container| container != target) {
                found.push(target);
                split.push(container);
            }
        }
        (found, split)
    }

    fn is_code(&self, addr: u64) -> bool {
        self.code_ranges.iter().any(|&(start, end)| (start..end).contains(&addr))
    }

    fn function_at(&self, addr: u64) -> Option<u64> {
        let (&start, &(end, _)) = self.functions.range(..=addr).next_back()?;
        (addr < end).then_some(start)
    }

    fn index_of(&self, start: u64) -> u32 {
        self.starts.partition_point(|&addr| addr < start) as u32
    }

    /// The symbol a call through a PLT stub or GOT slot binds to, or the IFUNC resolver behind it.
    fn slot_target(&self, slot: u64) -> Option<SlotValue> {
        self.relocs.call_slot(slot)
    }

    /// Whether the word at `addr` keeps what the loader put there: the PLT's and the GOT's
    /// slots (no compiler writes them; lazy binding writes the same symbol's address), and
    /// whatever lies in a `PT_GNU_RELRO` segment or a read-only section.
    fn fixed(&self, addr: u64) -> bool {
        use object::read::elf::{ProgramHeader as _, SectionHeader as _};
        let in_range = |(start, end): (u64, u64)| (start..end).contains(&addr);
        if self.relocs.plt.contains_key(&addr) || self.image.section_range(".got").is_some_and(in_range) {
            return true;
        }
        let relro = self.image.segments.iter().any(|segment| {
            let start = segment.p_vaddr(super::image::LE);
            segment.p_type(super::image::LE) == elf::PT_GNU_RELRO
                && in_range((start, start.saturating_add(segment.p_memsz(super::image::LE))))
        });
        relro
            || self.image.loaded_sections().any(|(start, bytes, section)| {
                in_range((start, start + bytes.len() as u64))
                    && !section.sh_flags(super::image::LE).contains(elf::SHF_WRITE)
            })
    }

    /// The pointer table an indexed load at `table` reads: the words from there on that are
    /// pointer slots or null, all of which must stay as loaded. `None` when the table can change.
    fn table_slots(&self, table: u64, scanned: &BTreeMap<u64, u64>) -> Option<Vec<SlotValue>> {
        const MAX_ENTRIES: u64 = 4096;
        let mut values = Vec::new();
        for slot in (table..).step_by(8).take(MAX_ENTRIES as usize) {
            let value = match (self.relocs.data.get(&slot), scanned.get(&slot)) {
                (Some(value), _) => Some(*value),
                (None, Some(&addr)) => Some(SlotValue::Addr(addr)),
                (None, None) if self.image.u64_at(slot) == Some(0) => None,
                (None, None) => break,
            };
            if !self.fixed(slot) {
                return None;
            }
            values.extend(value);
        }
        (!values.is_empty()).then_some(values)
    }

    fn target_name(&self, target: RawTarget) -> Option<&str> {
        let slot = match target {
            RawTarget::Direct(addr) => match self.stubs.get(&addr) {
                Some(&slot) => slot,
                None => return self.functions.get(&addr).and_then(|(_, name)| name.as_deref()),
            },
            RawTarget::Slot(slot) => slot,
            RawTarget::Table(_) => return None,
        };
        match self.slot_target(slot)? {
            SlotValue::Symbol(index) => self.dynsyms.get(index as usize).map(|sym| sym.name.as_str()),
            _ => None,
        }
    }

    fn target_noreturn(&self, target: RawTarget, noreturn: &HashSet<u64>) -> bool {
        self.named.noreturn.contains(&target) || matches!(target, RawTarget::Direct(addr) if noreturn.contains(&addr))
    }

    /// The functions, PLT stubs and pointer slots whose name is in `NORETURN` or `REGISTRARS`.
    fn named_targets(&self) -> NamedTargets {
        let functions = self.functions.keys().map(|&start| RawTarget::Direct(start));
        let stubs = self.stubs.keys().map(|&stub| RawTarget::Direct(stub));
        let data_slots = self.relocs.data.keys().filter(|slot| !self.relocs.plt.contains_key(slot));
        let slots = self.relocs.plt.keys().chain(data_slots).map(|&slot| RawTarget::Slot(slot));
        let mut named = NamedTargets::default();
        for target in functions.chain(stubs).chain(slots) {
            let Some(name) = self.target_name(target) else { continue };
            if NORETURN.contains(&name) {
                named.noreturn.insert(target);
            }
            if let Some(&(_, arg)) = REGISTRARS.iter().find(|(registrar, _)| *registrar == name) {
                named.registrars.insert(target, arg);
            }
        }
        named
    }

    /// Functions that never return: known names, and every function with no path to a `ret`
    /// or to a tail call of a returning function (a greatest fixpoint, so mutual recursion
    /// without an exit stays noreturn).
    fn noreturn(&self, cfgs: &[Cfg]) -> HashSet<u64> {
        let starts: Vec<(u64, u64)> = self.functions.iter().map(|(&start, &(end, _))| (start, end)).collect();
        let mut noreturn: HashSet<u64> = starts.iter().map(|&(start, _)| start).collect();
        loop {
            let returning: Vec<u64> = starts
                .par_iter()
                .zip(cfgs.par_iter())
                .filter(|((start, _), _)| noreturn.contains(start))
                .filter(|((start, end), cfg)| {
                    !self.named.noreturn.contains(&RawTarget::Direct(*start))
                        && self.may_return(cfg, *start, *end, &noreturn)
                })
                .map(|((start, _), _)| *start)
                .collect();
            if returning.is_empty() {
                return noreturn;
            }
            for start in returning {
                noreturn.remove(&start);
            }
        }
    }

    fn may_return(&self, cfg: &Cfg, start: u64, end: u64, noreturn: &HashSet<u64>) -> bool {
        let Some(_) = cfg.blocks.first() else { return false };
        let mut seen = vec![false; cfg.blocks.len()];
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(block) = stack.pop() {
            let info = &cfg.blocks[block];
            let last = &cfg.insns[info.end - 1];
            let tail = values::raw_target(last).filter(|target| match target {
                RawTarget::Direct(addr) => !(start..end).contains(addr),
                RawTarget::Slot(_) | RawTarget::Table(_) => true,
            });
            let is_branch = last.is_jmp_short_or_near() || last.is_jcc_short_or_near() || last.is_jmp_near_indirect();
            match info.exit {
                Exit::Return => return true,
                Exit::Leave if last.is_jmp_near_indirect() && tail.is_none() => return true,
                _ if is_branch && tail.is_some_and(|target| !self.target_noreturn(target, noreturn)) => return true,
                _ => {}
            }
            let cut = info.exit == Exit::Call
                && values::raw_target(last).is_some_and(|target| self.target_noreturn(target, noreturn));
            if cut {
                continue;
            }
            for succ in cfg.succs(block) {
                if !seen[succ] {
                    seen[succ] = true;
                    stack.push(succ);
                }
            }
        }
        false
    }

    fn summarize(
        &self,
        build_id: String,
        cfgs: &[Cfg],
        facts: Vec<values::Facts>,
        noreturn: &HashSet<u64>,
        init: &[u64],
        fini: &[u64],
    ) -> ModuleSummary {
        // Objects split where code takes an address, not where it reads a field: nginx reads
        // `ngx_epoll_module_ctx.actions` field by field, but reaches the structure's start through
        // a pointer in its module table, and the structure must stay whole for that.
        let code_refs: Vec<u64> = facts.iter().flat_map(|facts| facts.refs.iter().copied()).collect();
        let scanned = data::scan_absolute(&self.image);
        let objects = Objects::build(&self.image, &self.relocs, &scanned, &code_refs);
        let linker = Linker::new(self, &objects, &scanned);
        let resolvers = self.ifunc_resolvers();
        let entries: Vec<(&u64, &(u64, Option<String>))> = self.functions.iter().collect();
        let functions: Vec<Function> = facts
            .into_par_iter()
            .zip(cfgs)
            .zip(entries)
            .map(|((facts, cfg), (&start, (end, name)))| {
                linker.function(start, *end, name.clone(), facts, cfg.incomplete, noreturn, &resolvers)
            })
            .collect();
        let objects_out: Vec<DataObject> = objects
            .list
            .iter()
            .map(|(start, end, values)| {
                let mut ptrs: Vec<Ref> = values.iter().filter_map(|value| linker.slot_ref(*value)).collect();
                ptrs.sort_unstable();
                ptrs.dedup();
                DataObject { start: *start, end: *end, ptrs }
            })
            .collect();
        let exports = linker.exports();
        let fn_id = |addr: &u64| self.function_at(*addr).map(|start| self.index_of(start));
        let dynamic = &self.image.dynamic;
        ModuleSummary {
            format: FORMAT,
            build_id,
            kind: self.image.kind,
            soname: dynamic.soname.clone(),
            interp: self.image.interp(),
            needed: dynamic.needed.clone(),
            rpath: dynamic.rpath.clone(),
            runpath: dynamic.runpath.clone(),
            entry: Some(self.image.entry()).filter(|&entry| entry != 0).and_then(|entry| fn_id(&entry)),
            init: init.iter().filter_map(fn_id).collect(),
            fini: fini.iter().filter_map(fn_id).collect(),
            functions,
            exports,
            imports: linker.imports,
            objects: objects_out,
        }
    }

    /// IFUNC resolvers: targets of `IRELATIVE` relocations and of `STT_GNU_IFUNC` symbols.
    fn ifunc_resolvers(&self) -> HashSet<u64> {
        let relocated = self.relocs.data.values().chain(self.relocs.plt.values()).filter_map(|value| match value {
            SlotValue::Irelative(addr) => Some(*addr),
            _ => None,
        });
        let symbols = [false, true]
            .into_iter()
            .flat_map(|dynamic| self.image.symbols(dynamic))
            .filter(|sym| sym.kind == elf::STT_GNU_IFUNC && sym.defined)
            .map(|sym| sym.value);
        relocated.chain(symbols).collect()
    }
}

/// Every direct branch and call target in a graph.
fn branch_targets(cfg: &Cfg) -> impl Iterator<Item = u64> + '_ {
    cfg.insns.iter().filter_map(|instruction| match values::raw_target(instruction) {
        Some(RawTarget::Direct(target))
            if instruction.is_call_near()
                || instruction.is_jmp_short_or_near()
                || instruction.is_jcc_short_or_near() =>
        {
            Some(target)
        }
        _ => None,
    })
}

/// Code addresses put in registers (`lea fn(%rip)`, `mov $fn`): function pointers.
fn materialised(cfg: &Cfg) -> impl Iterator<Item = u64> + '_ {
    cfg.insns.iter().filter_map(|instruction| match instruction.mnemonic() {
        iced_x86::Mnemonic::Lea if instruction.is_ip_rel_memory_operand() => Some(instruction.ip_rel_memory_address()),
        iced_x86::Mnemonic::Mov if instruction.op1_kind() == iced_x86::OpKind::Immediate32to64 => {
            Some(instruction.immediate(1))
        }
        _ => None,
    })
}

/// Turns raw addresses into references to functions, objects and symbols.
struct Linker<'m, 'data> {
    module: &'m Module<'data>,
    objects: &'m Objects,
    /// Pointer slots of a position-dependent executable (no relocations).
    scanned: &'m BTreeMap<u64, u64>,
    /// Every symbol a relocation binds, by `.dynsym` index: what the file may import. Made up
    /// front, so that functions are linked in parallel.
    imports: Vec<Import>,
    import_index: HashMap<u32, u32>,
}

impl<'m, 'data> Linker<'m, 'data> {
    fn new(module: &'m Module<'data>, objects: &'m Objects, scanned: &'m BTreeMap<u64, u64>) -> Self {
        let relocs = &module.relocs;
        let bound = relocs.plt.values().chain(relocs.data.values()).filter_map(|value| match value {
            SlotValue::Symbol(dynsym) => Some(*dynsym),
            SlotValue::Addr(_) | SlotValue::Irelative(_) => None,
        });
        let mut dynsyms: Vec<u32> = bound.chain(relocs.copies.iter().map(|&(_, _, dynsym)| dynsym)).collect();
        dynsyms.sort_unstable();
        dynsyms.dedup();
        let imports = dynsyms
            .iter()
            .map(|&dynsym| match module.dynsyms.get(dynsym as usize) {
                Some(sym) => Import { name: sym.name.clone(), version: sym.version.clone(), weak: sym.weak },
                None => Import { name: String::new(), version: None, weak: true },
            })
            .collect();
        let import_index = dynsyms.iter().enumerate().map(|(index, &dynsym)| (dynsym, index as u32)).collect();
        Linker { module, objects, scanned, imports, import_index }
    }

    fn import(&self, dynsym: u32) -> Option<Ref> {
        self.import_index.get(&dynsym).map(|&index| Ref::Import(index))
    }

    fn slot_ref(&self, value: SlotValue) -> Option<Ref> {
        match value {
            SlotValue::Addr(addr) => self.addr_ref(addr),
            SlotValue::Symbol(index) => self.import(index),
            SlotValue::Irelative(resolver) => self.code_ref(resolver),
        }
    }

    fn code_ref(&self, addr: u64) -> Option<Ref> {
        self.module.function_at(addr).map(|start| Ref::Fn(self.module.index_of(start)))
    }

    /// What an address the code or data holds refers to.
    fn addr_ref(&self, addr: u64) -> Option<Ref> {
        if let Some(&slot) = self.module.stubs.get(&addr) {
            return self.module.slot_target(slot).and_then(|value| self.slot_ref(value));
        }
        if let Some(found) = self.code_ref(addr) {
            return Some(found);
        }
        if let Some(&(_, _, dynsym)) = self
            .module
            .relocs
            .copies
            .iter()
            .find(|&&(start, size, _)| (start..start.saturating_add(size.max(1))).contains(&addr))
        {
            return self.import(dynsym);
        }
        self.objects.at(addr).map(Ref::Object)
    }

    /// The functions a call may reach, when the code and the file's fixed data pin them down,
    /// and the data the target was loaded from when that is not the GOT or the PLT.
    fn call_targets(&self, target: RawTarget) -> Option<(Vec<Ref>, Option<u64>)> {
        let module = self.module;
        match target {
            RawTarget::Direct(addr) => Some((vec![self.addr_ref(addr)?], None)),
            RawTarget::Slot(slot) if module.fixed(slot) => {
                let value = module.slot_target(slot)?;
                let got = module.relocs.plt.contains_key(&slot)
                    || module.image.section_range(".got").is_some_and(|(start, end)| (start..end).contains(&slot));
                Some((vec![self.slot_ref(value)?], (!got).then_some(slot)))
            }
            RawTarget::Slot(_) => None,
            RawTarget::Table(table) => {
                let slots = module.table_slots(table, self.scanned)?;
                let mut targets: Vec<Ref> = Vec::new();
                for value in slots {
                    match self.slot_ref(value) {
                        Some(found @ (Ref::Fn(_) | Ref::Import(_))) => targets.push(found),
                        // Data in a table of code pointers: not something to call.
                        Some(Ref::Object(_)) | None => {}
                    }
                }
                targets.sort_unstable();
                targets.dedup();
                Some((targets, Some(table)))
            }
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one call site, each argument a different fact of the function")]
    fn function(
        &self,
        start: u64,
        end: u64,
        name: Option<String>,
        facts: values::Facts,
        incomplete: bool,
        noreturn: &HashSet<u64>,
        resolvers: &HashSet<u64>,
    ) -> Function {
        let consumed = facts.consumed;
        let args = 8 - consumed.leading_zeros() as u8;
        let prepared = |site: &RawIndirect| {
            let mask = site.written | (site.passed & consumed);
            IndirectSite { at: site.at, args: 8 - mask.leading_zeros() as u8, argument: site.called_argument }
        };
        let mut indirect: Vec<IndirectSite> = facts.indirect.iter().map(prepared).collect();
        let mut calls = Vec::with_capacity(facts.calls.len());
        let mut changing = Vec::new();
        for raw in facts.calls {
            match self.call_targets(raw.target) {
                Some((targets, through)) => {
                    for target in targets {
                        let mut call = self.call(raw.clone(), target);
                        call.through = through;
                        calls.push(call);
                    }
                }
                None => match raw.target {
                    // A slot that can change: the call reaches what may be stored there, and
                    // what the file put there first stays live through it.
                    RawTarget::Slot(slot) | RawTarget::Table(slot) => {
                        indirect.push(prepared(&raw.as_indirect));
                        changing.push(slot);
                    }
                    RawTarget::Direct(_) => {}
                },
            }
        }
        let mut refs: Vec<Ref> =
            facts.refs.iter().chain(&facts.loads).chain(&changing).filter_map(|&addr| self.addr_ref(addr)).collect();
        refs.sort_unstable();
        refs.dedup();
        let mut site_args: HashMap<u64, Vec<(u8, ArgValue)>> = facts.site_args.into_iter().collect();
        let sites = facts
            .sites
            .into_iter()
            .map(|(at, number, i386)| Site { at, number, i386, args: site_args.remove(&at).unwrap_or_default() })
            .collect();
        Function {
            addr: start,
            end,
            name,
            sites,
            calls,
            indirect,
            refs,
            args,
            noreturn: noreturn.contains(&start),
            ifunc_resolver: resolvers.contains(&start),
            incomplete,
        }
    }

    fn call(&self, raw: RawCall, target: Ref) -> Call {
        let mut fn_args: Vec<(u8, Ref)> = Vec::new();
        for &(arg, addr) in &raw.pointer_args {
            let pointer = match self.addr_ref(addr) {
                Some(found @ (Ref::Fn(_) | Ref::Import(_)))
                    if self.module.is_code(addr) || self.module.stubs.contains_key(&addr) =>
                {
                    Some(found)
                }
                Some(found @ Ref::Object(_)) => Some(found),
                _ => None,
            };
            fn_args.extend(pointer.map(|found| (arg, found)));
        }
        fn_args.sort_unstable();
        fn_args.dedup();
        Call {
            at: raw.at,
            target,
            tail: raw.tail,
            args: raw.args,
            fn_args,
            opaque_args: raw.opaque_args,
            through: None,
        }
    }

    /// Exported symbols, COPY-relocated data left out (references bind to the library's original).
    fn exports(&self) -> Vec<Export> {
        let module = self.module;
        let versions = module.image.dynamic_versions();
        let copied: HashSet<u32> = module.relocs.copies.iter().map(|&(_, _, dynsym)| dynsym).collect();
        let mut exports = Vec::new();
        for sym in module.image.symbols(true) {
            let visible = sym.bind == elf::STB_GLOBAL || sym.bind == elf::STB_WEAK || sym.bind == elf::STB_GNU_UNIQUE;
            let hidden_visibility = sym.visibility == elf::STV_HIDDEN || sym.visibility == elf::STV_INTERNAL;
            if !sym.defined
                || !visible
                || hidden_visibility
                || sym.name.is_empty()
                || copied.contains(&(sym.index as u32))
            {
                continue;
            }
            let (version, hidden) = versions.get(sym.index).cloned().unwrap_or((None, false));
            let target = match sym.kind {
                elf::STT_FUNC | elf::STT_GNU_IFUNC => self.code_ref(sym.value),
                _ => self.objects.at(sym.value).map(Ref::Object).or_else(|| self.code_ref(sym.value)),
            };
            exports.push(Export {
                name: sym.name.to_owned(),
                version,
                default: !hidden,
                weak: sym.bind == elf::STB_WEAK,
                target,
            });
        }
        exports
    }
}

/// The part of a function that runs after one of its calls returns.
pub struct Continuation {
    /// Instruction ranges `[start, end)` that can run after the call.
    pub ranges: Vec<(u64, u64)>,
    /// Whether the function can return from there.
    pub returns: bool,
}

impl Continuation {
    pub fn contains(&self, addr: u64) -> bool {
        self.ranges.iter().any(|&(start, end)| (start..end).contains(&addr))
    }
}

/// The call instruction of function `index` whose return address is `return_to` (as found on a
/// stack), if the function's decoded code holds one.
pub fn call_returning_to(
    bytes: &[u8],
    summary: &ModuleSummary,
    index: u32,
    return_to: u64,
) -> Result<Option<u64>, ElfError> {
    let image = Image::parse(bytes)?;
    let code = Code::new(image.loaded_sections().map(|(addr, bytes, _)| (addr, bytes)).collect());
    let function = &summary.functions[index as usize];
    let graph = cfg::decode(&code, function.addr, function.end);
    let is_call = |insn: &&iced_x86::Instruction| {
        matches!(insn.flow_control(), iced_x86::FlowControl::Call | iced_x86::FlowControl::IndirectCall)
    };
    Ok(graph.insns.iter().filter(is_call).find(|insn| insn.next_ip() == return_to).map(|insn| insn.ip()))
}

/// What function `index` of `summary` can still do once the call at `call_at` returns.
/// Re-decodes just that function from the file's bytes, so summaries need not store graphs.
pub fn continuation(bytes: &[u8], summary: &ModuleSummary, index: u32, call_at: u64) -> Result<Continuation, ElfError> {
    let image = Image::parse(bytes)?;
    let code = Code::new(image.loaded_sections().map(|(addr, bytes, _)| (addr, bytes)).collect());
    let function = &summary.functions[index as usize];
    let graph = cfg::decode(&code, function.addr, function.end);
    let noreturn_at: HashSet<u64> = function
        .calls
        .iter()
        .filter(|call| match call.target {
            Ref::Fn(callee) => summary.functions[callee as usize].noreturn,
            Ref::Import(import) => NORETURN.contains(&summary.imports[import as usize].name.as_str()),
            Ref::Object(_) => false,
        })
        .map(|call| call.at)
        .collect();
    let Some(call_block) = graph.blocks.iter().position(|block| graph.insns[block.end - 1].ip() == call_at) else {
        return Ok(Continuation { ranges: Vec::new(), returns: true });
    };
    let mut seen = vec![false; graph.blocks.len()];
    let mut stack: Vec<usize> = graph.succs(call_block).collect();
    let mut returns = graph.blocks[call_block].exit != Exit::Call;
    let mut ranges = Vec::new();
    while let Some(block) = stack.pop() {
        if std::mem::replace(&mut seen[block], true) {
            continue;
        }
        let info = &graph.blocks[block];
        let (first, last) = (&graph.insns[info.first], &graph.insns[info.end - 1]);
        ranges.push((first.ip(), last.next_ip()));
        returns |= info.exit == Exit::Return || (info.exit == Exit::Leave && last.is_jmp_short_or_near());
        if !(info.exit == Exit::Call && noreturn_at.contains(&last.ip())) {
            stack.extend(graph.succs(block).filter(|&succ| !seen[succ]));
        }
    }
    ranges.sort_unstable();
    Ok(Continuation { ranges, returns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::assembler::{self, Symbols, assert_text};

    /// Links `source` as a shared library (with `version_script`, if any) and prints its summary:
    /// one line per function (`noreturn`, `ifunc resolver`, `incomplete` flags; its syscalls,
    /// calls and tail calls, indirect calls with the arguments they prepare, references, and the
    /// arguments it consumes), then its init and fini functions, exports and data objects.
    /// Exports are sorted by name. A function prints as its name, followed by `[LABEL]`, its label
    /// in the source, when that differs (alone when it has no name); `NAME@import` for a symbol and
    /// `data@LABEL` for an object (`data@SECTION` for one the linker made).
    fn check(source: &str, version_script: Option<&str>, expect: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["-shared".to_owned(), "-soname".to_owned(), "libtest.so".to_owned()];
        if let Some(script) = version_script {
            std::fs::write(dir.path().join("versions"), script).unwrap();
            args.push(format!("--version-script={}", dir.path().join("versions").display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let bytes = assembler::link_in(dir.path(), "libtest.so", source, &args);
        let summary = analyze(&bytes).unwrap();
        assert_text(&render(&summary, &Symbols::of(&bytes)), expect);
    }

    fn render(summary: &ModuleSummary, symbols: &Symbols) -> String {
        let name = |index: u32| {
            let function = &summary.functions[index as usize];
            let label = symbols.label(function.addr);
            match &function.name {
                Some(name) if *name == label => label,
                Some(name) => format!("{name}[{label}]"),
                None => format!("[{label}]"),
            }
        };
        let reference = |reference: &Ref| match *reference {
            Ref::Fn(index) => name(index),
            Ref::Import(index) => format!("{}@import", summary.imports[index as usize].name),
            Ref::Object(index) => format!("data@{}", symbols.place(summary.objects[index as usize].start)),
        };
        let mut out = String::new();
        for (index, function) in summary.functions.iter().enumerate() {
            let mut facts: Vec<(u64, String)> = Vec::new();
            for site in &function.sites {
                let number = match &site.number {
                    SiteNumber::Known(numbers) => numbers.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "),
                    SiteNumber::Forwarded(loc) => loc.to_string(),
                    SiteNumber::Unresolved(reason) => format!("?{}", reason.as_str()),
                };
                facts.push((site.at, format!("syscall {number}")));
            }
            for call in &function.calls {
                let kind = if call.tail { "jmp" } else { "call" };
                facts.push((call.at, format!("{kind} {}", reference(&call.target))));
            }
            for site in &function.indirect {
                let through = site.argument.map_or(String::new(), |loc| format!(" through {loc}"));
                facts.push((site.at, format!("icall/{}{through}", site.args)));
            }
            facts.sort();
            let mut parts: Vec<String> = facts.into_iter().map(|(_, fact)| fact).collect();
            parts.extend(function.refs.iter().map(|target| format!("takes {}", reference(target))));
            if function.args != 0 {
                parts.push(format!("args {}", function.args));
            }
            let flags = [
                (function.noreturn, " noreturn"),
                (function.ifunc_resolver, " ifunc"),
                (function.incomplete, " incomplete"),
            ];
            let flags: String = flags.iter().filter(|(set, _)| *set).map(|(_, flag)| *flag).collect();
            out.push_str(&format!("{}{flags}: {}\n", name(index as u32), parts.join("; ")));
        }
        let names = |indices: &[u32]| indices.iter().map(|&index| name(index)).collect::<Vec<_>>();
        if !summary.init.is_empty() || !summary.fini.is_empty() {
            out.push_str(&format!(
                "init: {}; fini: {}\n",
                names(&summary.init).join(" "),
                names(&summary.fini).join(" ")
            ));
        }
        let mut exports: Vec<String> = summary
            .exports
            .iter()
            .map(|export| {
                let version = match (&export.version, export.default) {
                    (Some(version), true) => format!("@@{version}"),
                    (Some(version), false) => format!("@{version}"),
                    (None, _) => String::new(),
                };
                let weak = if export.weak { " (weak)" } else { "" };
                let target = export.target.as_ref().map_or("-".to_owned(), reference);
                format!("{}{version}{weak} = {target}", export.name)
            })
            .collect();
        exports.sort();
        out.push_str(&format!("exports: {}\n", exports.join(", ")));
        for object in &summary.objects {
            let pointers: Vec<String> = object.ptrs.iter().map(reference).collect();
            out.push_str(&format!("data@{}: {}\n", symbols.place(object.start), pointers.join(" ")));
        }
        out
    }

    /// Prints, for each call function `name` of `source` makes, what can run once it returns.
    fn check_continuations(source: &str, name: &str, expect: &str) {
        let bytes = assembler::link(source, &["-shared"]);
        let summary = analyze(&bytes).unwrap();
        let symbols = Symbols::of(&bytes);
        let index = summary.function_named(name).unwrap();
        let mut out = String::new();
        for call in &summary.functions[index as usize].calls {
            let after = continuation(&bytes, &summary, index, call.at).unwrap();
            let ranges: Vec<String> = after
                .ranges
                .iter()
                .map(|&(start, end)| format!("{}..{}", symbols.label(start), symbols.label(end)))
                .collect();
            let returns = if after.returns { "returns" } else { "does not return" };
            out.push_str(&format!("after {}: {} {returns}\n", symbols.label(call.at), ranges.join(" ")));
        }
        assert_text(&out, expect);
    }

    #[test]
    fn functions_that_cannot_return_are_found_to_a_fixpoint() {
        // `exit` by name; `die` calls it; `fatal`'s `ret` follows a call to `die`; `spin_a` and
        // `spin_b` jump to each other forever; `checked` returns when its test passes. Only
        // `checked` is exported: a call to an exported function goes through the PLT, since
        // another file may interpose it, and only a name says what that one does.
        check(
            "
.globl checked
die:  mov $1, %edi
    call exit@PLT
fatal: call die
    ret
spin_a: jmp spin_b
spin_b: jmp spin_a
checked: test %edi, %edi
    je fine
    call die
  fine:
    ret
",
            None,
            "
die noreturn: call exit@import
fatal noreturn: call die
spin_a noreturn: jmp spin_b
spin_b noreturn: jmp spin_a
checked: call die; args 1
exports: checked = checked
",
        );
    }

    #[test]
    fn calls_bind_to_functions_plt_stubs_and_got_slots() {
        // `helper` has no symbol of function type: the call to it makes it a function.
        check(
            "
  helper:
    mov $39, %eax
    syscall
    ret
.globl f
f:  call helper
    call local
    call *malloc@GOTPCREL(%rip)
    call free@PLT
    jmp local
local: ret
",
            None,
            "
[helper]: syscall 39
f: call [helper]; call local; call malloc@import; call free@import; jmp local
local:
exports: f = f
data@.got: malloc@import
",
        );
    }

    #[test]
    fn exports_carry_versions_weakness_and_visibility() {
        // `read@V1` is the old version, kept for binaries linked against it; unversioned
        // references bind to `read@@V2`. `V1` and `V2` are the linker's symbols for the version
        // definitions, with nothing behind them. A hidden symbol is not exported.
        check(
            "
.globl read_new, read_old, sometimes, internal
.symver read_new, read@@V2
.symver read_old, read@V1
read_new: ret
read_old: ret
.weak sometimes
sometimes: ret
.hidden internal
internal: ret
",
            Some("V1 { global: sometimes; }; V2 { } V1;"),
            "
read[read_new]:
read[read_old]:
sometimes:
internal:
exports: V1@@V1 = -, V2@@V2 = -, read@@V2 = read[read_new], read@V1 = read[read_old], read_new = read[read_new], read_old = read[read_old], sometimes@@V1 (weak) = sometimes
",
        );
    }

    #[test]
    fn init_arrays_resolvers_and_pointers_in_data() {
        // `copy` is an IFUNC whose resolver returns `copy_fast`; `install` passes a table of
        // handlers and jumps through a register (unresolved: the rest of it is swept).
        check(
            "
.section .init_array, \"aw\"
  .quad setup
.section .fini_array, \"aw\"
  .quad teardown
.section .data.rel.ro, \"aw\"
  handlers:
    .quad on_term, on_hup
.text
.globl copy, install
setup: ret
teardown: ret
copy: lea copy_fast(%rip), %rax
    ret
.type copy, @gnu_indirect_function
copy_fast: ret
install: lea handlers(%rip), %rdi
    jmp *%rax
on_term: ret
on_hup: ret
",
            None,
            "
setup:
teardown:
copy ifunc: takes copy_fast
copy_fast:
install incomplete: icall/1; takes data@handlers
on_term:
on_hup:
init: setup; fini: teardown
exports: copy = copy, install = install
data@handlers: on_term on_hup
",
        );
    }

    #[test]
    fn a_jump_into_the_function_s_own_code_calls_nothing() {
        // `rows` jumps to an address computed from its own code (hand-written string
        // functions do): no indirect call, unlike `install`'s jump through a loaded pointer. The
        // jump may land in any block, and every block it can reach the syscall from sees 39.
        check(
            "
.globl rows, install
rows: mov $39, %eax
    lea first(%rip), %rcx
    shl $3, %edi
    add %rdi, %rcx
    jmp *%rcx
  first:
    mov $1, %eax
    ret
  second:
    nop
    nop
    syscall
    ret
install: mov (%rdi), %rax
    jmp *%rax
",
            None,
            "
rows incomplete: syscall 39; takes rows
install incomplete: icall/1; args 1
exports: install = install, rows = rows
",
        );
    }

    #[test]
    fn a_call_through_the_function_s_own_argument_is_recorded_as_such() {
        // `once` keeps its first argument in a callee-saved register across a call, `convert`
        // its second in a stack slot; `loaded` calls a pointer read from its argument's memory,
        // which is no argument of its own.
        check(
            "
.globl once, convert, loaded
once: push %rbx
    mov %rdi, %rbx
    call helper@PLT
    call *%rbx
    pop %rbx
    ret
convert: sub $24, %rsp
    mov %rsi, 8(%rsp)
    call helper@PLT
    mov %eax, %edi
    call *8(%rsp)
    add $24, %rsp
    ret
loaded: mov (%rdi), %rax
    jmp *%rax
",
            None,
            "
once: call helper@import; icall/0 through argument 1; args 1
convert: call helper@import; icall/1 through argument 2; args 2
loaded incomplete: icall/1; args 1
exports: convert = convert, loaded = loaded, once = once
",
        );
    }

    #[test]
    fn continuations_stop_where_a_callee_never_returns() {
        check_continuations(
            "
.globl f
f:  call work
    test %eax, %eax
    js failed
    call work
    ret
  failed:
    call abort@PLT
    mov $1, %eax
    ret
work: ret
",
            "f",
            "
after f: f+0x5..f+0x9 f+0x9..f+0xe f+0xe..failed failed..failed+0x5 returns
after f+0x9: f+0xe..failed returns
after failed: failed+0x5..work returns
",
        );
    }

    /// lighttpd's `main`: a check run once (its privileges: getuid, getegid), then a restart
    /// loop around the server's setup and its serving loop. What follows the serving loop's
    /// return is the loop from its head — the setup again — but never the check before it.
    #[test]
    fn a_restart_loop_continues_from_its_head_not_from_before_it() {
        check_continuations(
            "
.globl main
main: call check
  again:
    call setup
    call serve
    test %eax, %eax
    jne again
    ret
check: ret
setup: ret
serve: ret
",
            "main",
            "
after main: again..again+0x5 again+0x5..again+0xa again+0xa..again+0xe again+0xe..check returns
after again: again..again+0x5 again+0x5..again+0xa again+0xa..again+0xe again+0xe..check returns
after again+0x5: again..again+0x5 again+0x5..again+0xa again+0xa..again+0xe again+0xe..check returns
",
        );
    }
}
