//! Control-flow graphs by recursive descent with iced-x86, one function at a time.
//!
//! Decoding follows branches from the function's start and never sweeps linearly through data:
//! `.text` can hold constants, and a linear sweep finds fake `0f 05` pairs in them (libcrypto's
//! elliptic-curve tables). Every call ends a block, so the analyses can cut the fall-through
//! after calls to functions that never return. Jump tables (`lea table; movsxd; add; jmp reg`,
//! the `lea` also as far back as the function's entry when nothing else writes its register; the
//! offsets also from a label of the function, GCC's computed `goto`, indexed directly or through
//! a table of bytes, with a bound; and absolute `jmp *table(,idx,8)`) are enumerated; an
//! indirect jump that is none of these marks the graph incomplete, and the rest of the function's
//! unwind range is then decoded linearly, since an FDE range is known to be code.

use std::collections::{HashMap, HashSet};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// Loaded bytes by address (code, and the read-only data jump tables live in), shared by all
/// functions of a file.
pub(crate) struct Code<'data> {
    sections: Vec<(u64, &'data [u8])>,
}

impl<'data> Code<'data> {
    pub fn new(mut sections: Vec<(u64, &'data [u8])>) -> Code<'data> {
        sections.sort_by_key(|&(addr, _)| addr);
        Code { sections }
    }

    fn bytes_at(&self, addr: u64) -> Option<&'data [u8]> {
        let index = self.sections.partition_point(|&(start, _)| start <= addr).checked_sub(1)?;
        let (start, bytes) = self.sections[index];
        let offset = (addr - start) as usize;
        (offset < bytes.len()).then(|| &bytes[offset..])
    }

    /// The end of the executable section holding `addr`.
    pub fn section_end(&self, addr: u64) -> u64 {
        self.bytes_at(addr).map_or(addr, |bytes| addr + bytes.len() as u64)
    }

    pub fn decode(&self, addr: u64) -> Option<Instruction> {
        let bytes = self.bytes_at(addr)?;
        let bytes = &bytes[..bytes.len().min(15)];
        let instruction = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE).decode();
        (!instruction.is_invalid()).then_some(instruction)
    }

    /// A decoder positioned at `addr`, reading at most up to `end`.
    fn decoder_at(&self, addr: u64, end: u64) -> Option<Decoder<'data>> {
        let bytes = self.bytes_at(addr)?;
        let len = (end.saturating_sub(addr) as usize).min(bytes.len());
        Some(Decoder::with_ip(64, &bytes[..len], addr, DecoderOptions::NONE))
    }
}

/// How a block ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Falls into the next block, or branches inside the function.
    Flow,
    /// A call; the fall-through successor runs only if the callee returns.
    Call,
    Return,
    /// Leaves the function for good: a tail jump, `ud2`, `hlt`, `int3`, undecodable bytes.
    Leave,
}

pub(crate) struct Block {
    pub first: usize,
    pub end: usize,
    /// This block's successors are `Cfg::edges[succ_start..succ_end]` (one buffer for all
    /// blocks: a vector per block was a tenth of the analysis time in the allocator).
    succ_start: u32,
    succ_end: u32,
    pub exit: Exit,
}

pub(crate) struct Cfg {
    pub insns: Vec<Instruction>,
    pub blocks: Vec<Block>,
    edges: Vec<u32>,
    pub incomplete: bool,
}

impl Cfg {
    pub fn succs(&self, block: usize) -> impl Iterator<Item = usize> + '_ {
        let info = &self.blocks[block];
        self.edges[info.succ_start as usize..info.succ_end as usize].iter().map(|&succ| succ as usize)
    }

    pub fn has_succs(&self, block: usize) -> bool {
        self.blocks[block].succ_start != self.blocks[block].succ_end
    }

    /// Reverse post-order of the blocks reachable from the entry (block 0).
    pub fn reverse_postorder(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.blocks.len());
        let mut seen = vec![false; self.blocks.len()];
        let mut stack = vec![(0usize, 0usize)];
        if self.blocks.is_empty() {
            return order;
        }
        seen[0] = true;
        while let Some((block, next)) = stack.pop() {
            let info = &self.blocks[block];
            let succs = &self.edges[info.succ_start as usize..info.succ_end as usize];
            if let Some(&succ) = succs.get(next).map(|succ| *succ as usize).as_ref() {
                stack.push((block, next + 1));
                if !seen[succ] {
                    seen[succ] = true;
                    stack.push((succ, 0));
                }
            } else {
                order.push(block);
            }
        }
        // Blocks only a linear sweep found have no path from the entry; analyse them last.
        order.extend((0..self.blocks.len()).filter(|&block| !seen[block]));
        order.reverse();
        order
    }

    /// The block holding the instruction at `addr`.
    pub fn block_containing(&self, addr: u64) -> Option<usize> {
        self.blocks.partition_point(|block| self.insns[block.first].ip() <= addr).checked_sub(1)
    }

    /// The block that starts at `addr`, if one does.
    pub fn block_at(&self, addr: u64) -> Option<usize> {
        self.blocks.binary_search_by_key(&addr, |block| self.insns[block.first].ip()).ok()
    }

    pub fn block_insns(&self, block: usize) -> &[Instruction] {
        &self.insns[self.blocks[block].first..self.blocks[block].end]
    }
}

/// Decodes the function occupying `[start, end)`.
///
/// A table base kept in a callee-saved register from the function's entry (`lea table(%rip),
/// %r15` before its first branch, hoisted out of the loop around a `switch`) counts where the
/// jump's own run does not load one, if nothing else in the function writes that register: every
/// path then holds it at the jump. So does one loaded into any register before the place where
/// the run joins other paths (the loop head), if its `lea` is on every path to the jump, nothing
/// on a path from the one to the other writes the register (a call writes the caller-saved
/// ones), and the function has no unresolved jump, which could bypass it. Where a run starts at a
/// join, the bound of a table's index and what the jump's register holds may come from the paths
/// into it, each checked or computed right before it (`Paths::resolve`); trusted only if the
/// function ends up with no unresolved or computed jump, which could come in another way.
/// Otherwise the jump stays unknown, and the linear sweep it forces leaves the states of the
/// blocks it finds unknown — the stack pointer's included, which a loop then carries back to the
/// blocks before the jump.
pub(crate) fn decode(code: &Code<'_>, start: u64, end: u64) -> Cfg {
    // Looked for only at a jump its own run leaves unknown: most functions have none.
    let bases = Bases::new();
    let held = || bases.get().into_iter().flatten();
    // Each attempt trusts less than the one before, until what it trusted holds.
    for keep in [true, false] {
        let (cfg, based, kept) = descend(code, start, end, Some(&bases), keep);
        let held_ok = !based || held().all(|&(reg, at, _)| written_only_at(&cfg, reg, at, (start, end)));
        let kept_ok = kept
            .iter()
            .all(|&(reg, at, jump)| !cfg.incomplete && dominates(&cfg, at, jump) && held_between(&cfg, reg, at, jump));
        if held_ok && kept_ok {
            return cfg;
        }
    }
    descend(code, start, end, None, false).0
}

/// Whether every path from the entry of `cfg` to the instruction at `to` goes through the one
/// at `through`.
fn dominates(cfg: &Cfg, through: u64, to: u64) -> bool {
    let (Some(through), Some(to)) = (cfg.block_containing(through), cfg.block_containing(to)) else { return false };
    if through == to || to == 0 {
        return false;
    }
    !spread(cfg.blocks.len(), 0, Some(through), |block| cfg.succs(block))[to]
}

/// Per block of `len`, whether it is reached from `start` along `next`, without going on from
/// `stop` (reached, but a dead end, even when it is `start`).
fn spread<I: IntoIterator<Item = usize>>(
    len: usize,
    start: usize,
    stop: Option<usize>,
    next: impl Fn(usize) -> I,
) -> Vec<bool> {
    let mut reached = vec![false; len];
    reached[start] = true;
    let mut pending = vec![start];
    while let Some(block) = pending.pop() {
        if Some(block) == stop {
            continue;
        }
        for succ in next(block) {
            if !std::mem::replace(&mut reached[succ], true) {
                pending.push(succ);
            }
        }
    }
    reached
}

/// Whether `reg` still holds what the instruction at `at` wrote when the one at `to` runs, on
/// every path from the one to the other that does not run it again: no instruction of a block on
/// such a path writes it after `at`, and no call does if the register is caller-saved.
fn held_between(cfg: &Cfg, reg: Register, at: u64, to: u64) -> bool {
    let (Some(from), Some(until)) = (cfg.block_containing(at), cfg.block_containing(to)) else { return false };
    let after_from = spread(cfg.blocks.len(), from, None, |block| cfg.succs(block));
    let mut preds = vec![Vec::new(); cfg.blocks.len()];
    for block in 0..cfg.blocks.len() {
        for succ in cfg.succs(block) {
            preds[succ].push(block);
        }
    }
    // Back from `until` up to `from`: a path from before it runs the `lea` again.
    let before_until = spread(cfg.blocks.len(), until, Some(from), |block| preds[block].iter().copied());
    let mut factory = iced_x86::InstructionInfoFactory::new();
    (0..cfg.blocks.len()).filter(|&block| after_from[block] && before_until[block]).all(|block| {
        cfg.block_insns(block)
            .iter()
            .filter(|insn| block != from || insn.ip() > at)
            .filter(|insn| block != until || insn.ip() < to)
            .all(|insn| !clobbers(&mut factory, insn, reg))
    })
}

/// Whether `instruction` may change `reg`: it writes it, or it is a call and the register is not
/// one a callee must preserve, or a `syscall`, which clobbers rcx and r11.
fn clobbers(factory: &mut iced_x86::InstructionInfoFactory, instruction: &Instruction, reg: Register) -> bool {
    let call = matches!(flow(instruction), FlowControl::Call | FlowControl::IndirectCall);
    let syscall = instruction.mnemonic() == Mnemonic::Syscall;
    (call && !CALLEE_SAVED.contains(&reg))
        || (syscall && [Register::RAX, Register::RCX, Register::R11].contains(&reg))
        || writes(factory, instruction, reg)
}

/// Whether `instruction` writes `reg` (or a part of it).
fn writes(factory: &mut iced_x86::InstructionInfoFactory, instruction: &Instruction, reg: Register) -> bool {
    factory.info(instruction).used_registers().iter().any(|used| {
        used.register().full_register() == reg
            && !matches!(used.access(), iced_x86::OpAccess::Read | iced_x86::OpAccess::CondRead)
    })
}

/// `lea X(%rip), %reg` into callee-saved registers before the function's first branch or call,
/// still held there: (register, address of the `lea`, X).
fn entry_bases(code: &Code<'_>, start: u64, end: u64) -> Vec<(Register, u64, u64)> {
    let mut run = Vec::new();
    let mut addr = start;
    while addr < end
        && let Some(instruction) = code.decode(addr)
        && flow(&instruction) == FlowControl::Next
    {
        run.push(instruction);
        addr = instruction.next_ip();
    }
    register_bases(&run, false)
}

/// The registers a call leaves as they were.
const CALLEE_SAVED: [Register; 6] =
    [Register::RBX, Register::RBP, Register::R12, Register::R13, Register::R14, Register::R15];

/// Table bases held from a function's entry (see `entry_bases`), found on first need.
type Bases = std::cell::OnceCell<Vec<(Register, u64, u64)>>;

/// The recursive descent, with the table bases held from the function's entry unless `None`;
/// also says whether a jump table needed one of them, and (with `keep`) which bases loaded before
/// a join it kept for a table.
fn descend(code: &Code<'_>, start: u64, end: u64, bases: Option<&Bases>, keep: bool) -> (Cfg, bool, Vec<Kept>) {
    let size = (end - start) as usize;
    let mut based = false;
    // The length of the instruction decoded at each offset, 0 where none starts.
    let mut seen = vec![0u8; size];
    let mut leaders = vec![false; size];
    leaders[0] = true;
    // Offsets some branch or table goes to: where paths join, unlike a fall-through after a
    // conditional branch or a call.
    let mut targeted = vec![false; size];
    let mut insns: Vec<Instruction> = Vec::new();
    // (target, index in `insns` of the branch or table jump going there), in decoding order.
    let mut sources: Vec<(u64, u32)> = Vec::new();
    let mut tables: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut table_jumps: Vec<Instruction> = Vec::new();
    // Jumps resolved from what the paths into their run compute (see `Paths::resolve`).
    let mut joined_before = HashSet::new();
    let mut computed: Vec<u64> = Vec::new();
    let mut incomplete = false;
    let mut work = vec![start];
    let offset = |addr: u64| (addr - start) as usize;
    // 1 + the index of the instruction ending right before each offset, to walk back from an
    // indirect jump.
    let mut ending_at = vec![0u32; size + 1];
    while let Some(mut addr) = work.pop() {
        let Some(mut decoder) = code.decoder_at(addr, end) else { continue };
        while (start..end).contains(&addr) && seen[offset(addr)] == 0 && decoder.can_decode() {
            let instruction = decoder.decode();
            if instruction.is_invalid() {
                break;
            }
            seen[offset(addr)] = instruction.len() as u8;
            if let Some(slot) = ending_at.get_mut(offset(instruction.next_ip())) {
                *slot = insns.len() as u32 + 1;
            }
            insns.push(instruction);
            let next = instruction.next_ip();
            let mut branch_to =
                |target: u64, leaders: &mut Vec<bool>, targeted: &mut Vec<bool>, sources: &mut Vec<(u64, u32)>| {
                    if (start..end).contains(&target) {
                        leaders[offset(target)] = true;
                        targeted[offset(target)] = true;
                        sources.push((target, insns.len() as u32 - 1));
                        work.push(target);
                    }
                };
            let mark = |addr: u64, leaders: &mut Vec<bool>| {
                if (start..end).contains(&addr) {
                    leaders[offset(addr)] = true;
                }
            };
            match flow(&instruction) {
                FlowControl::UnconditionalBranch => {
                    branch_to(instruction.near_branch_target(), &mut leaders, &mut targeted, &mut sources);
                    break;
                }
                FlowControl::ConditionalBranch | FlowControl::XbeginXabortXend => {
                    if is_near_branch(instruction.op0_kind()) {
                        branch_to(instruction.near_branch_target(), &mut leaders, &mut targeted, &mut sources);
                    }
                    mark(next, &mut leaders);
                }
                FlowControl::Call | FlowControl::IndirectCall => mark(next, &mut leaders),
                FlowControl::IndirectBranch => {
                    let paths =
                        Paths { insns: &insns, ending_at: &ending_at, targeted: &targeted, sources: &sources, start };
                    let run = paths.run_before(addr);
                    let (found, before) = paths.resolve(code, &run, &instruction, end, bases, &mut based);
                    match found {
                        Some(targets) => {
                            if before {
                                joined_before.insert(addr);
                            }
                            for &target in &targets {
                                branch_to(target, &mut leaders, &mut targeted, &mut sources);
                            }
                            tables.insert(addr, targets);
                            table_jumps.push(instruction);
                        }
                        None if instruction.is_ip_rel_memory_operand() => {}
                        None => {
                            if computed_goto(&run, &instruction, start, end) {
                                computed.push(addr);
                            }
                            incomplete = true
                        }
                    }
                    break;
                }
                FlowControl::Return | FlowControl::Exception => break,
                FlowControl::Interrupt if stops(&instruction) => break,
                _ if instruction.mnemonic() == Mnemonic::Hlt => break,
                _ => {}
            }
            addr = next;
        }
    }
    // A branch found later may join the run a table was resolved from: resolved again from the
    // run as it now is, a table that comes out otherwise stays unknown.
    let mut unsure = Vec::new();
    let mut kept = Vec::new();
    let unjoined = vec![false; if keep { size } else { 0 }];
    let paths = Paths { insns: &insns, ending_at: &ending_at, targeted: &targeted, sources: &sources, start };
    for jump in &table_jumps {
        let run = paths.run_before(jump.ip());
        let targets = tables.get(&jump.ip());
        if paths.resolve(code, &run, jump, end, bases, &mut based).0.as_ref() == targets {
            continue;
        }
        let (bound, _) = paths.bound(&run, jump);
        // A base a register took before the join, kept if the decoded function bears it out
        // (see `decode`).
        let before_join = if keep { run_before(&insns, &ending_at, &unjoined, start, jump.ip()) } else { Vec::new() };
        let held = register_bases(&before_join[..before_join.len().saturating_sub(run.len())], true);
        let base =
            held.iter().find(|&&base| jump_table(code, &run, jump, (start, end, bound), &[base]).as_ref() == targets);
        match base {
            Some(&(reg, at, _)) => kept.push((reg, at, jump.ip())),
            None => unsure.push(jump.ip()),
        }
    }
    for at in unsure {
        tables.remove(&at);
        incomplete = true;
    }
    // A jump this function computes, or one left unknown, may go where such a run starts without
    // passing a bound.
    if incomplete || !computed.is_empty() {
        for at in joined_before {
            incomplete |= tables.remove(&at).is_some();
        }
    }
    if incomplete {
        let decoded = insns.len();
        sweep(code, &mut insns, &mut seen, start, end);
        // A branch only the sweep found joins its target's paths too: a block starts there.
        for instruction in &insns[decoded..] {
            let branch = matches!(flow(instruction), FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch);
            if branch
                && is_near_branch(instruction.op0_kind())
                && (start..end).contains(&instruction.near_branch_target())
            {
                leaders[offset(instruction.near_branch_target())] = true;
            }
        }
    }
    // Stable sort: the recursive descent leaves runs of ascending addresses, which it merges.
    insns.sort_by_key(|instruction| instruction.ip());
    let cfg = build_blocks(
        insns,
        |addr| (start..end).contains(&addr) && leaders[offset(addr)],
        &tables,
        &computed,
        incomplete,
    );
    (cfg, based, kept)
}

/// A table base held in a register from a `lea` before paths join, and the jump it is kept for:
/// (register, address of the `lea`, address of the jump).
type Kept = (Register, u64, u64);

/// `lea X(%rip), %reg` in `run` that nothing later in it writes, into callee-saved registers
/// only unless `any`: (register, address of the `lea`, X).
fn register_bases(run: &[Instruction], any: bool) -> Vec<(Register, u64, u64)> {
    let mut bases: Vec<(Register, u64, u64)> = Vec::new();
    for instruction in run {
        let dest = (instruction.op_count() > 0 && instruction.op0_kind() == OpKind::Register)
            .then(|| instruction.op0_register().full_register());
        if let Some(dest) = dest {
            bases.retain(|&(reg, _, _)| reg != dest);
            if instruction.mnemonic() == Mnemonic::Lea
                && instruction.is_ip_rel_memory_operand()
                && (any || CALLEE_SAVED.contains(&dest))
            {
                bases.push((dest, instruction.ip(), instruction.ip_rel_memory_address()));
            }
        }
    }
    bases
}

/// Whether no instruction of `cfg` but the one at `at` writes `reg`, apart from the epilogue's
/// `pop`s, after which the function (`range`) returns or tail-calls without coming back.
fn written_only_at(cfg: &Cfg, reg: Register, at: u64, range: (u64, u64)) -> bool {
    let mut factory = iced_x86::InstructionInfoFactory::new();
    cfg.insns
        .iter()
        .enumerate()
        .filter(|(_, instruction)| instruction.ip() != at)
        .all(|(index, instruction)| !writes(&mut factory, instruction, reg) || epilogue(&cfg.insns[index..], range))
}

/// Whether `insns` start with `pop`s, one after the other, then a return or a jump out of the
/// function (`range`).
fn epilogue(insns: &[Instruction], (start, end): (u64, u64)) -> bool {
    let pops = insns.iter().take_while(|instruction| instruction.mnemonic() == Mnemonic::Pop).count();
    let contiguous = insns.windows(2).take(pops).all(|pair| pair[0].next_ip() == pair[1].ip());
    let leaves = |last: &Instruction| match flow(last) {
        FlowControl::Return => true,
        FlowControl::UnconditionalBranch => !(start..end).contains(&last.near_branch_target()),
        _ => false,
    };
    pops > 0 && contiguous && insns.get(pops).is_some_and(leaves)
}

/// `syscall` and `int n` fall through; iced files them under other flow kinds.
fn flow(instruction: &Instruction) -> FlowControl {
    match instruction.mnemonic() {
        Mnemonic::Syscall | Mnemonic::Sysenter => FlowControl::Next,
        _ => instruction.flow_control(),
    }
}

/// Interrupts that end a path: `int3`, `int1`, `into` never return to the next instruction in
/// compiled code; `int $0x80` (a syscall) does.
fn stops(instruction: &Instruction) -> bool {
    !(instruction.mnemonic() == Mnemonic::Int && instruction.immediate8() == 0x80)
}

/// Decodes whatever the recursive descent left between `start` and `end`.
fn sweep(code: &Code<'_>, insns: &mut Vec<Instruction>, seen: &mut [u8], start: u64, end: u64) {
    let mut addr = start;
    while addr < end {
        let offset = (addr - start) as usize;
        if seen[offset] != 0 {
            addr += u64::from(seen[offset]);
            continue;
        }
        match code.decode(addr) {
            Some(instruction) if instruction.next_ip() <= end => {
                seen[offset] = instruction.len() as u8;
                insns.push(instruction);
                addr = instruction.next_ip();
            }
            _ => addr += 1,
        }
    }
}

fn ends_block(instruction: &Instruction) -> bool {
    match flow(instruction) {
        FlowControl::Next => instruction.mnemonic() == Mnemonic::Hlt,
        FlowControl::Interrupt => stops(instruction),
        _ => true,
    }
}

fn build_blocks(
    insns: Vec<Instruction>,
    is_leader: impl Fn(u64) -> bool,
    tables: &HashMap<u64, Vec<u64>>,
    computed: &[u64],
    incomplete: bool,
) -> Cfg {
    let mut blocks: Vec<Block> = Vec::new();
    let mut first = 0;
    for index in 0..insns.len() {
        let instruction = &insns[index];
        let split = match insns.get(index + 1) {
            None => true,
            Some(next) => ends_block(instruction) || next.ip() != instruction.next_ip() || is_leader(next.ip()),
        };
        if split {
            blocks.push(Block { first, end: index + 1, succ_start: 0, succ_end: 0, exit: Exit::Flow });
            first = index + 1;
        }
    }
    let starts: Vec<u64> = blocks.iter().map(|block| insns[block.first].ip()).collect();
    let block_at = |addr: u64| starts.binary_search(&addr).ok();
    let mut edges: Vec<u32> = Vec::with_capacity(blocks.len() * 2);
    for block in &mut blocks {
        let last = &insns[block.end - 1];
        let fall = block_at(last.next_ip());
        let target = || block_at(last.near_branch_target());
        let (exit, mut succs): (Exit, Vec<usize>) = match flow(last) {
            FlowControl::UnconditionalBranch => match target() {
                Some(succ) => (Exit::Flow, vec![succ]),
                None => (Exit::Leave, vec![]),
            },
            FlowControl::ConditionalBranch | FlowControl::XbeginXabortXend => {
                let taken = if is_near_branch(last.op0_kind()) { target() } else { None };
                (Exit::Flow, taken.into_iter().chain(fall).collect())
            }
            FlowControl::Call | FlowControl::IndirectCall => (Exit::Call, fall.into_iter().collect()),
            FlowControl::IndirectBranch => match tables.get(&last.ip()) {
                Some(targets) => (Exit::Flow, targets.iter().filter_map(|&target| block_at(target)).collect()),
                // A computed jump into this function's own code may land in any of its blocks.
                None if computed.contains(&last.ip()) => (Exit::Flow, (0..starts.len()).collect()),
                None => (Exit::Leave, vec![]),
            },
            FlowControl::Return => (Exit::Return, vec![]),
            _ if ends_block(last) => (Exit::Leave, vec![]),
            _ => (Exit::Flow, fall.into_iter().collect()),
        };
        succs.dedup();
        block.exit = exit;
        block.succ_start = edges.len() as u32;
        edges.extend(succs.iter().map(|&succ| succ as u32));
        block.succ_end = edges.len() as u32;
    }
    Cfg { insns, blocks, edges, incomplete }
}

/// What the descent knows of how paths meet: the instructions decoded, which ends where, the
/// offsets branches go to, and the branches (and table jumps) going to each.
struct Paths<'a> {
    insns: &'a [Instruction],
    ending_at: &'a [u32],
    targeted: &'a [bool],
    /// (target, index in `insns` of a branch or table jump going there); looked through only
    /// where a run is cut short, so not indexed.
    sources: &'a [(u64, u32)],
    start: u64,
}

impl Paths<'_> {
    fn run_before(&self, addr: u64) -> Vec<Instruction> {
        run_before(self.insns, self.ending_at, self.targeted, self.start, addr)
    }

    /// The targets of the indirect jump `jump` after `run` (the function ends at `end`), and
    /// whether they come from what the paths into the run compute rather than from the run: a
    /// label the jump's register holds (GCC's computed `goto` to one label: `vfprintf` goes to
    /// its handler of unknown specifiers so), or a jump table.
    fn resolve(
        &self,
        code: &Code<'_>,
        run: &[Instruction],
        jump: &Instruction,
        end: u64,
        bases: Option<&Bases>,
        based: &mut bool,
    ) -> (Option<Vec<u64>>, bool) {
        if jump.op0_kind() == OpKind::Register {
            match written_label(run, jump.op0_register().full_register(), (self.start, end)) {
                Some(Some(label)) => return (Some(vec![label]), false),
                Some(None) => {}
                None => return (self.resolve_into(code, run_start(run, jump), jump, end, bases, based), true),
            }
        }
        let (bound, before) = self.bound(run, jump);
        (resolve(code, run, jump, (self.start, end, bound), bases, based), before)
    }

    /// The targets of `jump` when the run from `label` to it leaves its register alone: what
    /// each path into `label` leaves there, a label or a table's entries, from the run before
    /// it (`vfwprintf` sets a flag in a block both its dispatch and its unknown-specifier branch
    /// go through).
    fn resolve_into(
        &self,
        code: &Code<'_>,
        label: u64,
        jump: &Instruction,
        end: u64,
        bases: Option<&Bases>,
        based: &mut bool,
    ) -> Option<Vec<u64>> {
        let mut targets = Vec::new();
        for (run, _) in self.runs_into(label)? {
            match written_label(&run, jump.op0_register().full_register(), (self.start, end))? {
                Some(label) => targets.push(label),
                None => {
                    let (bound, _) = self.bound(&run, jump);
                    targets.extend(resolve(code, &run, jump, (self.start, end, bound), bases, based)?);
                }
            }
        }
        targets.sort_unstable();
        targets.dedup();
        (!targets.is_empty()).then_some(targets)
    }

    /// The paths into `label`: the run before each direct branch to it, with the branch, and the
    /// run before it if the instruction there falls into it. `None` if a table jump goes there
    /// too, or `label` is not where paths join.
    fn runs_into(&self, label: u64) -> Option<Vec<(Vec<Instruction>, Option<&Instruction>)>> {
        if label == self.start || !self.targeted[(label - self.start) as usize] {
            return None;
        }
        let mut runs = Vec::new();
        let branches = self.sources.iter().filter(|&&(target, _)| target == label);
        for branch in branches.map(|&(_, index)| &self.insns[index as usize]) {
            if !is_near_branch(branch.op0_kind()) {
                return None;
            }
            runs.push((self.run_before(branch.ip()), Some(branch)));
        }
        let previous = self.ending_at.get((label - self.start) as usize).filter(|&&index| index > 0);
        if let Some(&index) = previous
            && falls_through(&self.insns[index as usize - 1])
        {
            runs.push((self.run_before(label), None));
        }
        Some(runs)
    }

    /// How many entries a table index is checked to be below (`cmp` and an unsigned branch) on
    /// every path to the jump after `run`; and whether the check is on the paths into the run
    /// rather than in it. glibc's `vfprintf` checks the format character before it joins the
    /// paths that then dispatch on it.
    fn bound(&self, run: &[Instruction], jump: &Instruction) -> (Option<u64>, bool) {
        match bound(run) {
            Some(bound) => (Some(bound), false),
            None => {
                let before = self.bound_into(run_start(run, jump));
                (before, before.is_some())
            }
        }
    }

    /// The bound every path into `label` has just checked: each direct branch to it right after
    /// the check it passes (`cmp $N, …; jbe label`, or `cmp $N, …; ja elsewhere; jmp label`),
    /// and the fall-through into it right after one.
    fn bound_into(&self, label: u64) -> Option<u64> {
        let runs = self.runs_into(label)?.into_iter();
        let bounds = runs.map(|(run, branch)| match branch.map(|branch| branch.mnemonic()) {
            None | Some(Mnemonic::Jmp) => checked_then_fell(&run),
            Some(Mnemonic::Jbe) => Some(compared(run.last()?)? + 1),
            Some(Mnemonic::Jb) => compared(run.last()?),
            Some(_) => None,
        });
        bounds.collect::<Option<Vec<u64>>>()?.into_iter().max()
    }
}

/// Where `run`, the instructions before `jump`, starts.
fn run_start(run: &[Instruction], jump: &Instruction) -> u64 {
    run.first().unwrap_or(jump).ip()
}

/// The bound of a `run` that ends with `cmp $N, …` and `ja`/`jae`, whose fall-through is then
/// below it.
fn checked_then_fell(run: &[Instruction]) -> Option<u64> {
    run.windows(2).last().and_then(checked_below)
}

/// How many entries `cmp $N, idx` and `ja` (N + 1) or `jae` (N) let through below.
fn checked_below(pair: &[Instruction]) -> Option<u64> {
    match pair[1].mnemonic() {
        Mnemonic::Ja => Some(compared(&pair[0])? + 1),
        Mnemonic::Jae => compared(&pair[0]),
        _ => None,
    }
}

/// N of `cmp $N, …`.
fn compared(compare: &Instruction) -> Option<u64> {
    let immediate = matches!(compare.op1_kind(), OpKind::Immediate8to32 | OpKind::Immediate32 | OpKind::Immediate8);
    (compare.mnemonic() == Mnemonic::Cmp && immediate).then(|| compare.immediate(1))
}

/// Up to 24 instructions that fall through, one into the next, to `addr`, back to where another
/// path may join (`targeted`); oldest first. What they compute is what every path to `addr`
/// computes.
fn run_before(insns: &[Instruction], ending_at: &[u32], targeted: &[bool], start: u64, addr: u64) -> Vec<Instruction> {
    let mut run = Vec::new();
    let mut expect = addr;
    while let Some(&index) = ending_at.get((expect - start) as usize)
        && index > 0
        && run.len() < 24
    {
        let instruction = insns[index as usize - 1];
        if !falls_through(&instruction) {
            break;
        }
        run.push(instruction);
        if instruction.ip() < start || targeted[(instruction.ip() - start) as usize] {
            break;
        }
        expect = instruction.ip();
    }
    run.reverse();
    run
}

/// Whether the instruction after `instruction` runs right after it, with the registers it left:
/// not after a call, which may change any caller-saved one.
fn falls_through(instruction: &Instruction) -> bool {
    match flow(instruction) {
        FlowControl::UnconditionalBranch | FlowControl::IndirectBranch | FlowControl::Return => false,
        FlowControl::Call | FlowControl::IndirectCall => false,
        FlowControl::Exception => false,
        FlowControl::Interrupt => !stops(instruction),
        _ => instruction.mnemonic() != Mnemonic::Hlt,
    }
}

/// The targets of the jump table ending in `jump` after `run`: with a base the run loads, else
/// with one a register holds from the function's entry (`based` is then set).
fn resolve(
    code: &Code<'_>,
    run: &[Instruction],
    jump: &Instruction,
    (start, end, bound): (u64, u64, Option<u64>),
    bases: Option<&Bases>,
    based: &mut bool,
) -> Option<Vec<u64>> {
    jump_table(code, run, jump, (start, end, bound), &[]).or_else(|| {
        let held = bases?.get_or_init(|| entry_bases(code, start, end));
        let targets = jump_table(code, run, jump, (start, end, bound), held)?;
        *based = true;
        Some(targets)
    })
}

/// What the last instruction of `run` to write `reg` leaves there: `None` if none writes it,
/// `Some(label)` if it is `lea label(%rip)` with the label in the function (`range`), else
/// `Some(None)`.
fn written_label(run: &[Instruction], reg: Register, (start, end): (u64, u64)) -> Option<Option<u64>> {
    let mut factory = iced_x86::InstructionInfoFactory::new();
    let last = run.iter().rev().find(|instruction| writes(&mut factory, instruction, reg))?;
    let is_label = last.mnemonic() == Mnemonic::Lea
        && last.is_ip_rel_memory_operand()
        && last.op0_register().full_register() == reg
        && (start..end).contains(&last.ip_rel_memory_address());
    Some(is_label.then(|| last.ip_rel_memory_address()))
}

/// The targets of a jump table ending in `jump` after the straight-line `run`, if the code has a
/// recognised shape; `bound`: how many entries the index is checked to be below; `held`: table
/// bases registers hold from before the run (from the function's entry, or from before the place
/// where the run joins other paths).
fn jump_table(
    code: &Code<'_>,
    run: &[Instruction],
    jump: &Instruction,
    (start, end, bound): (u64, u64, Option<u64>),
    held: &[(Register, u64, u64)],
) -> Option<Vec<u64>> {
    let in_function = |target: u64| (start..end).contains(&target);
    let limit = bound.unwrap_or(MAX_TABLE).min(MAX_TABLE);
    if jump.op0_kind() == OpKind::Memory && jump.memory_base() == Register::None && jump.memory_index_scale() == 8 {
        // Position-dependent code: `jmp *table(,%idx,8)` with absolute entries.
        let table = jump.memory_displacement64();
        return table_entries(limit, |index| read_u64(code, table.wrapping_add(8 * index)).filter(|&t| in_function(t)));
    }
    if jump.op0_kind() != OpKind::Register {
        return None;
    }
    let mut bases: HashMap<Register, u64> = held.iter().map(|&(reg, _, table)| (reg, table)).collect();
    // A byte loaded from a table (`movzbl (%base,%idx), %r`), by the table.
    let mut bytes: HashMap<Register, u64> = HashMap::new();
    // An entry loaded from a table of offsets, and the byte table its index came from, if any.
    let mut entries: HashMap<Register, (u64, Option<u64>)> = HashMap::new();
    let mut targets: HashMap<Register, Offsets> = HashMap::new();
    // An entry added to its own table's address, or to a label of the function (GCC's computed
    // `goto`, whose tables hold `&&label - &&base`: glibc's `vfprintf`).
    let sum = |entry: Option<&(u64, Option<u64>)>, base: Option<&u64>| {
        let (&(table, via), &base) = (entry?, base?);
        (base == table || in_function(base)).then_some(Offsets { table, base, via })
    };
    for instruction in run {
        let dest = instruction.op0_register().full_register();
        match instruction.mnemonic() {
            Mnemonic::Lea if instruction.is_ip_rel_memory_operand() => {
                bases.insert(dest, instruction.ip_rel_memory_address());
            }
            Mnemonic::Lea => {
                // `lea (%base,%entry), %dest`: the add in address form.
                let (base, index) =
                    (instruction.memory_base().full_register(), instruction.memory_index().full_register());
                let plain = instruction.memory_index_scale() == 1 && instruction.memory_displacement64() == 0;
                let offsets = sum(entries.get(&index), bases.get(&base))
                    .or_else(|| sum(entries.get(&base), bases.get(&index)))
                    .filter(|_| plain);
                bases.remove(&dest);
                entries.remove(&dest);
                match offsets {
                    Some(offsets) => targets.insert(dest, offsets),
                    None => targets.remove(&dest),
                };
            }
            Mnemonic::Movzx if instruction.op1_kind() == OpKind::Memory && instruction.memory_size().size() == 1 => {
                match bases.get(&instruction.memory_base().full_register()) {
                    Some(&table) if instruction.memory_index_scale() == 1 => bytes.insert(dest, table),
                    _ => bytes.remove(&dest),
                };
                bases.remove(&dest);
            }
            Mnemonic::Movsxd | Mnemonic::Mov if instruction.op1_kind() == OpKind::Memory => {
                match bases.get(&instruction.memory_base().full_register()) {
                    Some(&table) if instruction.memory_index_scale() == 4 => {
                        let via = bytes.get(&instruction.memory_index().full_register()).copied();
                        entries.insert(dest, (table, via));
                    }
                    _ => {
                        entries.remove(&dest);
                    }
                }
                bases.remove(&dest);
            }
            Mnemonic::Add if instruction.op1_kind() == OpKind::Register => {
                let other = instruction.op1_register().full_register();
                let offsets =
                    sum(entries.get(&dest), bases.get(&other)).or_else(|| sum(entries.get(&other), bases.get(&dest)));
                if let Some(offsets) = offsets {
                    targets.insert(dest, offsets);
                }
            }
            _ => {}
        }
    }
    let Offsets { table, base, via } = *targets.get(&jump.op0_register().full_register())?;
    let target = |index: u64| {
        let entry = read_i32(code, table.wrapping_add(4 * index))?;
        Some(base.wrapping_add_signed(i64::from(entry))).filter(|&target| in_function(target))
    };
    match via {
        None if base == table => table_entries(limit, target),
        // Offsets from a label: only up to a bound, the label being no end marker for the table.
        None => table_entries(bound?.min(MAX_TABLE), target),
        // Every index the byte table holds below its bound, each entry landing in the function.
        Some(indices) => {
            let indices = read_data(code, indices, usize::try_from(bound?.min(MAX_TABLE)).ok()?)?;
            let mut targets: Vec<u64> = indices.iter().map(|&index| target(u64::from(index))).collect::<Option<_>>()?;
            targets.sort_unstable();
            targets.dedup();
            Some(targets)
        }
    }
}

/// A table of 32-bit offsets from `base` (the table itself, or a label of the function), indexed
/// directly or by a byte of the table `via`.
#[derive(Clone, Copy)]
struct Offsets {
    table: u64,
    base: u64,
    via: Option<u64>,
}

/// Whether `jump` goes to an address computed from this function's own code (`lea
/// block(%rip), %r; add %idx, %r; jmp *%r`: hand-written string functions jump into one of a row
/// of equally long blocks). Such a jump stays inside the function, which the linear sweep then
/// decodes whole; it calls nothing.
fn computed_goto(run: &[Instruction], jump: &Instruction, start: u64, end: u64) -> bool {
    if jump.op0_kind() != OpKind::Register {
        return false;
    }
    let mut code_based: Vec<Register> = Vec::new();
    for instruction in run {
        if instruction.op_count() == 0 || instruction.op0_kind() != OpKind::Register {
            continue;
        }
        let dest = instruction.op0_register().full_register();
        let based = |reg: Register| code_based.contains(&reg.full_register());
        let derived = match instruction.mnemonic() {
            Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Push => continue,
            Mnemonic::Lea if instruction.is_ip_rel_memory_operand() => {
                (start..end).contains(&instruction.ip_rel_memory_address())
            }
            Mnemonic::Lea => {
                based(instruction.memory_base())
                    || (instruction.memory_index_scale() == 1 && based(instruction.memory_index()))
            }
            Mnemonic::Add => {
                instruction.op1_kind() == OpKind::Register && (based(dest) || based(instruction.op1_register()))
            }
            Mnemonic::Mov => instruction.op1_kind() == OpKind::Register && based(instruction.op1_register()),
            _ => false,
        };
        code_based.retain(|&reg| reg != dest);
        if derived {
            code_based.push(dest);
        }
    }
    code_based.contains(&jump.op0_register().full_register())
}

/// Jump tables longer than this are not believed.
const MAX_TABLE: u64 = 4096;

fn table_entries(limit: u64, entry: impl Fn(u64) -> Option<u64>) -> Option<Vec<u64>> {
    let targets: Vec<u64> = (0..limit).map_while(entry).collect();
    (!targets.is_empty()).then_some(targets)
}

/// The last `cmp idx, N` followed by `ja` in `run`: the table has N + 1 entries.
fn bound(run: &[Instruction]) -> Option<u64> {
    run.windows(2).rev().find_map(checked_below)
}

fn read_u64(code: &Code<'_>, addr: u64) -> Option<u64> {
    read_data(code, addr, 8).map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

fn read_i32(code: &Code<'_>, addr: u64) -> Option<i32> {
    read_data(code, addr, 4).map(|bytes| i32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

/// Jump tables live in `.rodata`; `Code` is given every loaded section for this reason.
fn read_data<'data>(code: &Code<'data>, addr: u64, len: usize) -> Option<&'data [u8]> {
    code.bytes_at(addr)?.get(..len)
}

/// A direct branch target operand (`addr32 call` in static glibc's `_start` has a 32-bit one).
pub(crate) fn is_near_branch(kind: OpKind) -> bool {
    matches!(kind, OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::assembler::{self, Symbols, assert_text};

    /// Decodes function `f` of `source` and prints one line per block: where it starts (a label
    /// of the source, or `f+offset`), how it ends (`flow`, `call`, `return`, `leave`), and its
    /// successors in address order; then `incomplete` if an indirect jump stayed unresolved.
    fn check(source: &str, expect: &str) {
        assert_text(&check_text(source), expect);
    }

    /// The blocks of `f` as `check` prints them.
    fn check_text(source: &str) -> String {
        let bytes = assembler::link(source, &["-e", "0", "-Ttext=0x401000"]);
        let symbols = Symbols::of(&bytes);
        let image = crate::elf::image::Image::parse(&bytes).unwrap();
        let code = Code::new(image.loaded_sections().map(|(addr, bytes, _)| (addr, bytes)).collect());
        let (start, end) = symbols.function("f");
        let graph = decode(&code, start, end);
        let mut out = String::new();
        for (index, block) in graph.blocks.iter().enumerate() {
            let exit = match block.exit {
                Exit::Flow => "flow",
                Exit::Call => "call",
                Exit::Return => "return",
                Exit::Leave => "leave",
            };
            let mut succs: Vec<u64> =
                graph.succs(index).map(|succ| graph.insns[graph.blocks[succ].first].ip()).collect();
            succs.sort_unstable();
            succs.dedup();
            let succs: Vec<String> = succs.into_iter().map(|addr| symbols.label(addr)).collect();
            let arrow = if succs.is_empty() { String::new() } else { format!(" -> {}", succs.join(" ")) };
            out.push_str(&format!("{}: {exit}{arrow}\n", symbols.label(graph.insns[block.first].ip())));
        }
        if graph.incomplete {
            out.push_str("incomplete\n");
        }
        out
    }

    #[test]
    fn blocks_end_at_branches_calls_and_branch_targets() {
        check(
            "
f:  test %edi, %edi
    je zero
    call g
    int $0x80
  zero:
    xor %eax, %eax
    ret
g:  ret
",
            "
f: flow -> f+0x4 zero
f+0x4: call -> f+0x9
f+0x9: flow -> zero
zero: return
",
        );
    }

    #[test]
    fn paths_end_at_traps_and_tail_jumps() {
        // Nothing after `ud2`, `hlt`, `int3` or a jump out of the function is decoded.
        check(
            "
f:  cmp $1, %edi
    je one
    cmp $2, %edi
    je two
    cmp $3, %edi
    je three
    jmp g
  one:
    ud2
    syscall
  two:
    hlt
    syscall
  three:
    int3
    syscall
g:  ret
",
            "
f: flow -> f+0x5 one
f+0x5: flow -> f+0xa two
f+0xa: flow -> f+0xf three
f+0xf: leave
one: leave
two: leave
three: leave
",
        );
    }

    #[test]
    fn relative_jump_tables_are_enumerated_up_to_their_bound() {
        // The compiler's `switch`: `cmp $N; ja default` bounds a table of N + 1 offsets; the
        // word after it, which would be a fifth entry, is not believed (nothing reaches `beyond`).
        check(
            "
f:  cmp $3, %edi
    ja default
    lea table(%rip), %rdx
    movslq (%rdx,%rdi,4), %rax
    add %rdx, %rax
    jmp *%rax
  case0:
    mov $0, %eax
    ret
  case1:
    mov $1, %eax
    ret
  default:
    mov $-1, %eax
    ret
  beyond:
    mov $2, %eax
    ret
  table:
    .long case0 - table, case1 - table, case0 - table, default - table, beyond - table
",
            "
f: flow -> f+0x5 default
f+0x5: flow -> case0 case1 default
case0: return
case1: return
default: return
",
        );
    }

    /// The loop around a `switch` with its table's address in a callee-saved register from the
    /// function's entry (lighttpd's option loop): enumerated while nothing else writes the
    /// register, the epilogue's `pop` aside; written again elsewhere, the jump stays unknown.
    #[test]
    fn a_table_base_held_from_the_entry_is_used_while_nothing_else_writes_it() {
        let source = |elsewhere: &str| {
            format!(
                "
f:  push %r15
    lea table(%rip), %r15
    jmp again
    ud2
  again:
    call g
    cmp $1, %eax
    ja done
    movslq (%r15,%rax,4), %rax
    add %r15, %rax
    jmp *%rax
  case0:
    {elsewhere}
    jmp again
  case1:
    jmp again
  done:
    pop %r15
    ret
g:  ret
  table:
    .long case0 - table, case1 - table
"
            )
        };
        check(
            &source("nop"),
            "
f: flow -> again
again: call -> again+0x5
again+0x5: flow -> again+0xa done
again+0xa: flow -> case0 case1
case0: flow -> again
case1: flow -> again
done: return
",
        );
        check(
            &source("xor %r15d, %r15d"),
            "
f: flow -> again
f+0xb: leave
again: call -> again+0x5
again+0x5: flow -> again+0xa done
again+0xa: leave
case0: flow -> again
case1: flow -> again
done: return
incomplete
",
        );
    }

    #[test]
    fn a_table_of_offsets_from_a_label_indexed_by_a_byte_table_is_enumerated() {
        // glibc's `vfprintf`: a character's class is a byte of one table, which indexes a table
        // of offsets from the label `unknown` (GCC's `&&label - &&base`). Only the classes the
        // byte table holds below its bound count: nothing reaches `beyond`, whose offset sits in
        // the table at a class no character has.
        check(
            "
f:  lea -0x20(%rdi), %eax
    cmp $3, %al
    ja unknown
    movzbl %al, %eax
    lea classes(%rip), %rdx
    lea unknown(%rip), %rcx
    movzbl (%rdx,%rax,1), %edx
    lea steps(%rip), %rax
    movslq (%rax,%rdx,4), %rax
    add %rcx, %rax
    jmp *%rax
  unknown:
    ret
  form_a:
    ret
  form_b:
    ret
  beyond:
    ret
  classes:
    .byte 1, 0, 2, 1
  steps:
    .long 0, form_a - unknown, form_b - unknown, beyond - unknown
",
            "
f: flow -> f+0x7 unknown
f+0x7: flow -> unknown form_a form_b
unknown: return
form_a: return
form_b: return
",
        );
    }

    #[test]
    fn a_table_base_set_before_paths_join_is_not_believed() {
        // `other` reaches the jump's run with another table, by a branch decoded after the jump:
        // the base the fall-through path loads holds on one path only, so the jump stays unknown
        // (and `case2`, which only the other table holds, is decoded by the sweep). Nor does a
        // run go back across the unconditional jump before `again`.
        check(
            "
f:  cmp $1, %esi
    ja out
    cmp $1, %edi
    ja other
    lea table(%rip), %rdx
  join:
    movslq (%rdx,%rsi,4), %rax
    add %rdx, %rax
    jmp *%rax
  other:
    lea elsewhere(%rip), %rdx
    jmp join
  out:
    lea table(%rip), %rdx
    jmp again
  again:
    movslq (%rdx,%rsi,4), %rax
    add %rdx, %rax
    jmp *%rax
  case0:
    ret
  case1:
    ret
  case2:
    ret
  table:
    .long case0 - table, case1 - table
  elsewhere:
    .long case2 - elsewhere, case2 - elsewhere
",
            "
f: flow -> f+0x5 out
f+0x5: flow -> f+0xa other
f+0xa: flow -> join
join: leave
other: flow -> join
out: flow -> again
again: leave
case0: return
case1: return
case2: return
table: flow
table+0x7: flow
elsewhere+0x3: flow
incomplete
",
        );
    }

    #[test]
    fn a_table_base_in_a_register_a_call_may_change_is_not_believed() {
        // `%rdx` is caller-saved: after `call g` it holds whatever `g` left there.
        check(
            "
f:  cmp $1, %edi
    ja default
    lea table(%rip), %rdx
    call g
    movslq (%rdx,%rdi,4), %rax
    add %rdx, %rax
    jmp *%rax
  case0:
    ret
  default:
    ret
g:  ret
  table:
    .long case0 - table, default - table
",
            "
f: flow -> f+0x5 default
f+0x5: call -> f+0x11
f+0x11: leave
case0: return
default: return
incomplete
",
        );
    }

    /// posix_spawn's child: the table's address goes into a callee-saved register before the loop
    /// whose head joins the jump's run. Kept while that `lea` is on every path to the jump and
    /// nothing else writes the register; else the jump stays unknown.
    #[test]
    fn a_table_base_taken_before_a_loop_is_kept_while_every_path_holds_it() {
        let source = |entry: &str, body: &str| {
            format!(
                "
f:  push %r13
    {entry}
    lea table(%rip), %r13
  again:
    call g
    cmp $1, %eax
    ja done
    movslq (%r13,%rax,4), %rax
    add %r13, %rax
    jmp *%rax
  case0:
    {body}
    jmp again
  case1:
    jmp again
  done:
    pop %r13
    ret
g:  ret
  table:
    .long case0 - table, case1 - table
"
            )
        };
        check(
            &source("nop", "nop"),
            "
f: flow -> again
again: call -> again+0x5
again+0x5: flow -> again+0xa done
again+0xa: flow -> case0 case1
case0: flow -> again
case1: flow -> again
done: return
",
        );
        let unknown = "incomplete";
        let written = check_text(&source("nop", "xor %r13d, %r13d"));
        assert!(written.trim_end().ends_with(unknown), "{written}");
        let around = check_text(&source("test %edi, %edi\n    je again", "nop"));
        assert!(around.trim_end().ends_with(unknown), "{around}");
    }

    /// glibc's printf parsers: the table's address goes into a caller-saved register before the
    /// loop over the format. Kept while nothing on the way from that `lea` to the jump writes
    /// the register, a call included; else the jump stays unknown.
    #[test]
    fn a_table_base_in_any_register_is_kept_while_no_path_to_the_jump_changes_it() {
        let source_after = |body: &str, after_call: &str| {
            format!(
                "
f:  lea table(%rip), %rcx
  again:
    movzbl (%rdi), %eax
    add $1, %rdi
    cmp $1, %eax
    ja done
    movslq (%rcx,%rax,4), %rdx
    add %rcx, %rdx
    jmp *%rdx
  case0:
    {body}
    jmp again
  case1:
    jmp again
  done:
    call g
    {after_call}
    ret
g:  ret
  table:
    .long case0 - table, case1 - table
"
            )
        };
        let source = |body: &str| source_after(body, "xor %ecx, %ecx");
        // The `xor` after `done` writes the register on no path to the jump.
        check(
            &source("nop"),
            "
f: flow -> again
again: flow -> again+0xc done
again+0xc: flow -> case0 case1
case0: flow -> again
case1: flow -> again
done: call -> done+0x5
done+0x5: return
",
        );
        let unknown = "incomplete";
        for body in ["call g", "mov %rsi, %rcx", "syscall"] {
            let changed = check_text(&source(body));
            assert!(changed.trim_end().ends_with(unknown), "{body}: {changed}");
        }
        // Back to the `lea` after the call: that path takes the table's address again.
        let again = check_text(&source_after("nop", "test %eax, %eax\n    jne f"));
        assert!(again.contains("again+0xc: flow -> case0 case1\n") && !again.contains(unknown), "{again}");
    }

    /// glibc's `vfprintf`: the format character is checked before the paths join that dispatch
    /// on it, and a character outside the table goes to a label taken before a branch.
    #[test]
    fn what_every_path_into_a_jump_s_run_checks_or_loads_counts() {
        let source = |other: &str| {
            format!(
                "
f:  movzbl (%rdi), %ecx
    lea -0x20(%rcx), %eax
    cmp $1, %al
    jbe dispatch
    lea unknown(%rip), %rax
    test %esi, %esi
    jne out
    {other}
    ret
  out:
    jmp *%rax
  dispatch:
    movzbl %cl, %eax
    sub $0x20, %eax
    lea table(%rip), %rdx
    movslq (%rdx,%rax,4), %rax
    add %rdx, %rax
    jmp *%rax
  case0:
    ret
  case1:
    ret
  unknown:
    ret
  table:
    .long case0 - table, case1 - table, unknown - table
"
            )
        };
        check(
            &source("nop"),
            "
f: flow -> f+0xa dispatch
f+0xa: flow -> f+0x15 out
f+0x15: return
out: flow -> unknown
dispatch: flow -> case0 case1
case0: return
case1: return
unknown: return
",
        );
        // Another path into each run, which checks nothing and loads another label: both labels.
        let other =
            |load: &str| check_text(&source(&format!("{load}\n    cmp $2, %edx\n    je out\n    jmp dispatch")));
        let unchecked = other("lea case0(%rip), %rax");
        assert!(unchecked.contains("dispatch: flow -> case0 case1 unknown\n"), "{unchecked}");
        assert!(unchecked.contains("out: flow -> case0 unknown\n"), "{unchecked}");
        // A path that loads the register from memory: anywhere.
        let loaded = other("mov (%rsi), %rax");
        assert!(loaded.contains("out: leave\n") && loaded.trim_end().ends_with("incomplete"), "{loaded}");
    }

    /// glibc's `vfwprintf`: the dispatch computes its target, then falls into a block that the
    /// unknown-specifier branch, with its label, also goes to, and that block jumps. `case2`,
    /// beyond the bound the dispatch's path checked, is not a target.
    #[test]
    fn a_jump_after_paths_join_goes_where_each_path_points_it() {
        check(
            "
f:  movzbl (%rdi), %ecx
    lea unknown(%rip), %rax
    lea -0x20(%rcx), %edx
    cmp $1, %edx
    ja shared
    movzbl %cl, %eax
    sub $0x20, %eax
    lea table(%rip), %rdx
    movslq (%rdx,%rax,4), %rax
    add %rdx, %rax
  shared:
    mov $1, %r9d
    jmp *%rax
  case0:
    ret
  case1:
    ret
  unknown:
    ret
  case2:
    ret
  table:
    .long case0 - table, case1 - table, case2 - table
",
            "
f: flow -> f+0x12 shared
f+0x12: flow -> shared
shared: flow -> case0 case1 unknown
case0: return
case1: return
unknown: return
",
        );
    }

    #[test]
    fn a_relative_table_whose_add_is_a_lea_is_enumerated() {
        // glibc's SSE2 `strcmp`: the entry is added to the table's address by `lea`.
        check(
            "
f:  cmp $1, %edi
    ja default
    lea table(%rip), %r10
    movslq (%r10,%rdi,4), %r9
    lea (%r10,%r9,1), %r10
    jmp *%r10
  case0:
    ret
  case1:
    ret
  default:
    ret
  table:
    .long case0 - table, case1 - table
",
            "
f: flow -> f+0x5 default
f+0x5: flow -> case0 case1
case0: return
case1: return
default: return
",
        );
    }

    #[test]
    fn a_jump_computed_from_the_function_s_own_code_may_land_in_any_of_its_blocks() {
        // glibc's SSSE3 `memmove` jumps into one of a row of equally long blocks (8 bytes here):
        // every block of the function is a successor, and the jump calls nothing.
        check(
            "
f:  mov $39, %eax
    lea one(%rip), %rcx
    shl $3, %edi
    add %rdi, %rcx
    jmp *%rcx
  one:
    mov $1, %eax
    ret
  two:
    nop
    nop
    syscall
    ret
",
            "
f: flow -> f one two
one: return
two: return
incomplete
",
        );
    }

    #[test]
    fn absolute_jump_tables_are_enumerated() {
        // Position-dependent code jumps through a table of addresses.
        check(
            "
f:  cmp $1, %edi
    ja default
    jmp *table(,%rdi,8)
  case0:
    ret
  case1:
    ret
  default:
    ret
  table:
    .quad case0, case1
",
            "
f: flow -> f+0x5 default
f+0x5: flow -> case0 case1
case0: return
case1: return
default: return
",
        );
    }

    #[test]
    fn an_unresolved_indirect_jump_makes_the_rest_of_the_function_swept() {
        // `reached` is found only by the sweep; it has no predecessor.
        check(
            "
f:  mov (%rdi), %rax
    jmp *%rax
  reached:
    mov $39, %eax
    syscall
    ret
",
            "
f: leave
reached: return
incomplete
",
        );
    }

    #[test]
    fn bytes_no_path_reaches_are_not_decoded() {
        // Without an unresolved jump there is no sweep: the constant's `0f 05` is no `syscall`.
        check(
            "
f:  ret
  constant:
    .byte 0x0f, 0x05
",
            "f: return",
        );
    }
}
