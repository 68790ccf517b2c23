//! Value analysis inside one function: what each register and stack slot can hold, per block,
//! to recover syscall numbers and call arguments.
//!
//! Values are small sets of `Const(n)`, `Arg(k)` (argument register k at entry), `StackArg(off)`
//! (the caller's stack slot, 8 = the 7th argument), and `Sp(d)` (the stack pointer at entry plus
//! d); anything else is `Top` with the reason it is unknown. The analysis runs in reverse
//! post-order to a fixpoint, models `mov`/`lea`/`xor`/`push`/`pop`/`add`/`sub`/`movsx`/`xchg`/
//! `cmov`/`leave` and stack slots, lets every call clobber the caller-saved registers, and cuts
//! the fall-through after calls that never return. Everything else sets what it writes (from
//! iced-x86's instruction info) to `Top`.

use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};

use super::cfg::{Cfg, Exit};
use super::summary::{ArgLoc, ArgValue, Reason, SiteNumber};

const CAP: usize = 6;
const RAX: usize = 0;
const RSP: usize = 4;
const RBP: usize = 5;
/// rdi, rsi, rdx, rcx, r8, r9 as register numbers (rax = 0 … r15 = 15).
pub(crate) const ARG_REGS: [usize; 6] = [7, 6, 2, 1, 8, 9];
const CALLER_SAVED: [usize; 9] = [0, 1, 2, 6, 7, 8, 9, 10, 11];
/// Stack slots beyond this many are forgotten (a frame this large holds no syscall numbers).
const MAX_SLOTS: usize = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Val {
    Const(u64),
    Arg(u8),
    StackArg(u32),
    Sp(i64),
}

/// A set of at most `CAP` values, or `Top` with the reason nothing better is known. Values are
/// packed into words (a 2-bit tag above 62 bits of payload) to keep states small: the fixpoint
/// copies and joins them at every block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vals {
    Top(Reason),
    Set { len: u8, items: [u64; CAP] },
}

const PAYLOAD: u64 = (1 << 62) - 1;

fn pack(val: Val) -> Option<u64> {
    let (tag, payload) = match val {
        Val::Const(n) => (0, n),
        Val::Arg(k) => (1, u64::from(k)),
        Val::StackArg(offset) => (2, u64::from(offset)),
        Val::Sp(d) => (3, (d as u64) & PAYLOAD),
    };
    // Constants past 2^62 (negative numbers, mostly) are not syscall numbers or addresses.
    (payload <= PAYLOAD).then_some(tag << 62 | payload)
}

fn unpack(word: u64) -> Val {
    let payload = word & PAYLOAD;
    match word >> 62 {
        0 => Val::Const(payload),
        1 => Val::Arg(payload as u8),
        2 => Val::StackArg(payload as u32),
        // Sign-extend the 62-bit displacement.
        _ => Val::Sp(((payload << 2) as i64) >> 2),
    }
}

impl Vals {
    fn one(val: Val) -> Vals {
        match pack(val) {
            Some(word) => Vals::Set { len: 1, items: [word; CAP] },
            None => Vals::Top(Reason::Computed),
        }
    }

    fn items(&self) -> impl Iterator<Item = Val> + '_ {
        let words: &[u64] = match self {
            Vals::Top(_) => &[],
            Vals::Set { len, items } => &items[..*len as usize],
        };
        words.iter().map(|&word| unpack(word))
    }

    fn contains(&self, val: Val) -> bool {
        self.items().any(|item| item == val)
    }

    fn join(self, other: Vals) -> Vals {
        let Vals::Set { len, items } = other else { return other };
        let mut joined = self;
        for &word in &items[..len as usize] {
            joined = joined.with_word(word);
        }
        joined
    }

    fn with_word(self, word: u64) -> Vals {
        let Vals::Set { len, mut items } = self else { return self };
        let len = len as usize;
        let Err(position) = items[..len].binary_search(&word) else { return self };
        if len == CAP {
            return Vals::Top(Reason::Computed);
        }
        items.copy_within(position..len, position + 1);
        items[position] = word;
        Vals::Set { len: len as u8 + 1, items }
    }

    fn map(self, f: impl Fn(Val) -> Option<Val>) -> Vals {
        let mut out: Option<Vals> = None;
        for val in self.items() {
            let Some(word) = f(val).and_then(pack) else { return Vals::Top(Reason::Computed) };
            out = Some(match out {
                None => Vals::Set { len: 1, items: [word; CAP] },
                Some(set) => set.with_word(word),
            });
        }
        out.unwrap_or(self)
    }

    fn single(&self) -> Option<Val> {
        match self {
            Vals::Set { len: 1, items } => Some(unpack(items[0])),
            _ => None,
        }
    }

    fn single_sp(&self) -> Option<i64> {
        match self.single() {
            Some(Val::Sp(d)) => Some(d),
            _ => None,
        }
    }
}

/// Where a register's value was loaded from: a fixed address, or some entry of a table
/// (an indexed load from a fixed base). Tracked beside the value sets so that a call through
/// the register can be resolved to what the file's data holds there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Slot(u64),
    Table(u64),
}

#[derive(PartialEq)]
struct State {
    regs: [Vals; 16],
    loaded: [Option<Source>; 16],
    /// Stack slots written in this function, by offset from the entry stack pointer.
    slots: Vec<(i64, Vals)>,
    /// Vector registers known to hold zero (`pxor %xmm0,%xmm0`): compilers clear structures on
    /// the stack with them, and a cleared `struct sigaction` names `SIG_DFL`, not a handler.
    zero_vectors: u32,
    /// A write to the caller's stack arguments (offset 8 and up) found no place among the slots:
    /// those not listed no longer read as the incoming arguments.
    args_lost: bool,
}

impl Clone for State {
    fn clone(&self) -> State {
        State {
            regs: self.regs,
            loaded: self.loaded,
            slots: self.slots.clone(),
            zero_vectors: self.zero_vectors,
            args_lost: self.args_lost,
        }
    }

    /// Keeps `self`'s slot buffer: the fixpoint copies a block's entry state into one scratch
    /// state at every visit, and the derived `clone_from` would allocate each time.
    fn clone_from(&mut self, source: &State) {
        self.regs = source.regs;
        self.loaded = source.loaded;
        self.slots.clone_from(&source.slots);
        self.zero_vectors = source.zero_vectors;
        self.args_lost = source.args_lost;
    }
}

impl State {
    fn entry() -> State {
        let mut regs = [Vals::Top(Reason::Computed); 16];
        for (k, &reg) in ARG_REGS.iter().enumerate() {
            regs[reg] = Vals::one(Val::Arg(k as u8));
        }
        regs[RSP] = Vals::one(Val::Sp(0));
        State { regs, loaded: [None; 16], slots: Vec::new(), zero_vectors: 0, args_lost: false }
    }

    /// What a slot holds until this function writes it.
    fn initial_slot(&self, offset: i64) -> Vals {
        if offset >= 8 && !self.args_lost {
            Vals::one(Val::StackArg(offset as u32))
        } else {
            Vals::Top(Reason::MemoryLoad)
        }
    }

    fn slot(&self, offset: i64) -> Vals {
        match self.slots.binary_search_by_key(&offset, |&(key, _)| key) {
            Ok(index) => self.slots[index].1,
            Err(_) => self.initial_slot(offset),
        }
    }

    fn set_slot(&mut self, offset: i64, value: Vals) {
        match self.slots.binary_search_by_key(&offset, |&(key, _)| key) {
            Ok(index) => self.slots[index].1 = value,
            Err(index) if self.slots.len() < MAX_SLOTS => self.slots.insert(index, (offset, value)),
            // A local lost reads as unknown, which it is; a caller's argument lost would read as
            // the incoming argument: a local makes room for it, or the arguments count as lost.
            Err(index) if offset >= 8 && self.slots[0].0 < 8 => {
                self.slots.remove(0);
                self.slots.insert(index - 1, (offset, value));
            }
            Err(_) if offset >= 8 => self.args_lost = true,
            Err(_) => {}
        }
    }

    /// Forgets slots that overlap `[offset, offset + size)`.
    fn clobber_slots(&mut self, offset: i64, size: i64) {
        for (key, value) in &mut self.slots {
            if *key < offset + size && offset < *key + 8 {
                *value = Vals::Top(Reason::MemoryLoad);
            }
        }
        if !self.slots.iter().any(|&(key, _)| key == offset) && size >= 8 {
            self.set_slot(offset, Vals::Top(Reason::MemoryLoad));
        }
    }

    fn join(&mut self, other: &State) -> bool {
        let mut changed = self.zero_vectors & other.zero_vectors != self.zero_vectors;
        self.zero_vectors &= other.zero_vectors;
        // Before the slots: a slot one side never wrote holds that side's initial value.
        let args_lost = self.args_lost || other.args_lost;
        for (mine, theirs) in self.loaded.iter_mut().zip(&other.loaded) {
            if mine.is_some() && mine != theirs {
                *mine = None;
                changed = true;
            }
        }
        for (mine, theirs) in self.regs.iter_mut().zip(&other.regs) {
            if mine != theirs {
                let joined = mine.join(*theirs);
                changed |= joined != *mine;
                *mine = joined;
            }
        }
        if self.slots == other.slots {
            changed |= args_lost != self.args_lost;
            self.args_lost = args_lost;
            return changed;
        }
        let same_offsets = self.slots.len() == other.slots.len()
            && self.slots.iter().zip(&other.slots).all(|(mine, theirs)| mine.0 == theirs.0);
        if same_offsets {
            for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
                let joined = mine.1.join(theirs.1);
                changed |= joined != mine.1;
                mine.1 = joined;
            }
            changed |= args_lost != self.args_lost;
            self.args_lost = args_lost;
            return changed;
        }
        // Merge the two sorted slot lists; a slot one side never wrote holds its initial value there.
        let mut merged = Vec::with_capacity(self.slots.len().max(other.slots.len()));
        let (mut mine, mut theirs) = (self.slots.iter().peekable(), other.slots.iter().peekable());
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(&&(a, va)), Some(&&(b, vb))) if a == b => {
                    mine.next();
                    theirs.next();
                    (a, va.join(vb))
                }
                (Some(&&(a, va)), Some(&&(b, _))) if a < b => {
                    mine.next();
                    (a, va.join(other.initial_slot(a)))
                }
                (Some(_), Some(&&(b, vb))) => {
                    theirs.next();
                    (b, vb.join(self.initial_slot(b)))
                }
                (Some(&&(a, va)), None) => {
                    mine.next();
                    (a, va.join(other.initial_slot(a)))
                }
                (None, Some(&&(b, vb))) => {
                    theirs.next();
                    (b, vb.join(self.initial_slot(b)))
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        // Locals (the lowest offsets) go first: lost, they read as unknown.
        let excess = merged.len().saturating_sub(MAX_SLOTS);
        let lost_args = merged.drain(..excess).any(|(offset, _)| offset >= 8);
        let args_lost = args_lost || lost_args;
        if merged != self.slots || args_lost != self.args_lost {
            self.slots = merged;
            self.args_lost = args_lost;
            changed = true;
        }
        changed
    }
}

/// A register number (rax = 0 … r15 = 15) for a general-purpose register of any width.
pub(crate) fn gpr(reg: Register) -> Option<usize> {
    if !reg.is_gpr() {
        return None;
    }
    let full = reg.full_register();
    let index = full as usize - Register::RAX as usize;
    (index < 16).then_some(index)
}

/// Where a call or jump goes, before the module maps addresses to functions and symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RawTarget {
    Direct(u64),
    /// Through the pointer slot at this address (`call *slot(%rip)`, or a register loaded from it).
    Slot(u64),
    /// Through some entry of the pointer table at this address (`call *table(,%rax,8)`).
    Table(u64),
}

#[derive(Clone)]
pub(crate) struct RawCall {
    pub at: u64,
    pub target: RawTarget,
    pub tail: bool,
    pub args: Vec<(ArgLoc, ArgValue)>,
    /// (argument register, a constant that may be a function address).
    pub pointer_args: Vec<(u8, u64)>,
    pub opaque_args: u8,
    /// How the call counts when its slot turns out to hold no known symbol.
    pub as_indirect: RawIndirect,
}

#[derive(Clone)]
pub(crate) struct RawIndirect {
    pub at: u64,
    /// Argument registers written before the site.
    pub written: u8,
    /// Argument registers that may still hold the function's own argument.
    pub passed: u8,
    /// The function's own argument the call goes through, unchanged.
    pub called_argument: Option<ArgLoc>,
}

/// What one function does, with raw addresses.
#[derive(Default)]
pub(crate) struct Facts {
    pub sites: Vec<(u64, SiteNumber, bool)>,
    pub calls: Vec<RawCall>,
    pub indirect: Vec<RawIndirect>,
    /// Addresses taken by `lea`, immediates and indexed table accesses.
    pub refs: Vec<u64>,
    /// Addresses loaded from or stored to directly.
    pub loads: Vec<u64>,
    /// Argument registers read while they may still hold the incoming argument.
    pub consumed: u8,
    /// Per `syscall` site (same order as `sites` before sorting): the known syscall arguments.
    pub site_args: Vec<(u64, Vec<(u8, ArgValue)>)>,
}

/// What the analysis needs to know about the rest of the file.
pub(crate) struct Context<'a> {
    pub start: u64,
    pub end: u64,
    /// Whether a call to this target never returns.
    pub noreturn: &'a dyn Fn(RawTarget) -> bool,
    /// The argument a call to this target registers for later (`sigaction`'s handler, …).
    pub registrar: &'a dyn Fn(RawTarget) -> Option<u8>,
}

/// Runs the value analysis over `cfg` and collects the facts.
pub(crate) fn analyze(cfg: &Cfg, context: &Context<'_>) -> Facts {
    // An unresolved jump may go to any block: there, one that no path from the entry reaches (its
    // predecessors come after calls that never return) starts from nothing known, as one only
    // the sweep found does, and is not left out.
    let has_pred = if cfg.incomplete { reached_from_entry(cfg, context) } else { with_predecessors(cfg) };
    let order = cfg.reverse_postorder();
    let mut rank = vec![0; cfg.blocks.len()];
    for (position, &block) in order.iter().enumerate() {
        rank[block] = position;
    }
    let mut facts = Facts::default();
    let mut factory = InstructionInfoFactory::new();
    // A function with an unresolved jump may jump back through a register (`own_blocks`): an
    // edge reverse postorder does not know.
    let loop_free = !cfg.incomplete
        && (0..cfg.blocks.len()).all(|block| successors(cfg, block, context).all(|succ| rank[succ] > rank[block]));
    if loop_free {
        // Each block's entry state is final once the blocks before it in reverse postorder were
        // analysed: one pass both finds the states and notes the facts (most functions; the
        // second pass over them was a sixth of all instructions stepped).
        let mut states = initial_states(cfg, &has_pred);
        for &block in &order {
            let Some(mut state) = states[block].take() else { continue };
            note_block(cfg, block, &mut state, context, &has_pred, true, &mut facts, &mut factory);
            for succ in successors(cfg, block, context) {
                match &mut states[succ] {
                    Some(existing) => {
                        existing.join(&state);
                    }
                    empty @ None => *empty = Some(state.clone()),
                }
            }
        }
    } else {
        let states = fixpoint(cfg, context, &order, &rank, &has_pred);
        for (block, state) in states.into_iter().enumerate() {
            let Some(mut state) = state else { continue };
            note_block(cfg, block, &mut state, context, &has_pred, false, &mut facts, &mut factory);
        }
    }
    // In address order, whichever order the blocks were noted in.
    facts.calls.sort_by_key(|call| call.at);
    facts.indirect.sort_by_key(|site| site.at);
    facts.sites.sort_by_key(|site| site.0);
    facts.refs.sort_unstable();
    facts.refs.dedup();
    facts.loads.sort_unstable();
    facts.loads.dedup();
    facts
}

/// Notes the facts of `block` from its entry `state`. With `whole`, or when the block can give
/// a fact, `state` is stepped through the block and leaves as the block does.
#[allow(clippy::too_many_arguments, reason = "the two passes share it; each argument is a different part of one walk")]
fn note_block(
    cfg: &Cfg,
    block: usize,
    state: &mut State,
    context: &Context<'_>,
    has_pred: &[bool],
    whole: bool,
    facts: &mut Facts,
    factory: &mut InstructionInfoFactory,
) {
    let table_jump = cfg.blocks[block].exit == Exit::Flow;
    let insns = cfg.block_insns(block);
    // Code that runs off the end of the function continues in the next one: a tail call.
    let last = insns.last().expect("blocks are never empty");
    // Alignment padding the linear sweep found after an indirect jump flows nowhere.
    let padding = block != 0 && !has_pred[block] && insns.iter().all(|insn| insn.mnemonic() == Mnemonic::Nop);
    let falls_out = cfg.blocks[block].exit == Exit::Flow
        && !cfg.has_succs(block)
        && flow_is_next(last)
        && last.next_ip() == context.end
        && !padding;
    // Most blocks hold no call, syscall or exit and no argument still unread: stepping through
    // them again after the fixpoint would note nothing.
    let noted = whole
        || falls_out
        || insns.iter().any(|instruction| gives_facts(instruction, context))
        || holds_unread_argument(state, facts.consumed);
    for (index, instruction) in insns.iter().enumerate() {
        if !registered_only(instruction, &insns[index + 1..], context) {
            note_refs(instruction, facts);
        }
        if noted {
            let within =
                table_jump || (index + 1 == insns.len() && own_blocks(cfg, instruction, state, context).is_some());
            collect(instruction, state, context, within, facts);
            step(instruction, state, factory);
        }
    }
    if falls_out {
        facts.calls.push(call_facts(last, RawTarget::Direct(last.next_ip()), true, state));
    }
}

/// Whether [`collect`] can note anything at `instruction`: a syscall, a call, or a jump that
/// leaves the function.
fn gives_facts(instruction: &Instruction, context: &Context<'_>) -> bool {
    match instruction.mnemonic() {
        Mnemonic::Syscall | Mnemonic::Sysenter | Mnemonic::Call => true,
        Mnemonic::Int => instruction.immediate8() == 0x80,
        mnemonic if mnemonic == Mnemonic::Jmp || instruction.is_jcc_short_or_near() => !matches!(
            raw_target(instruction),
            Some(RawTarget::Direct(addr)) if (context.start..context.end).contains(&addr)
        ),
        _ => false,
    }
}

/// Whether some register or stack slot may still hold an incoming argument not yet counted as
/// read (`consumed`): reading it, in place or moved back, counts.
fn holds_unread_argument(state: &State, consumed: u8) -> bool {
    let slots = state.slots.iter().map(|(_, value)| value);
    state
        .regs
        .iter()
        .chain(slots)
        .flat_map(Vals::items)
        .any(|val| matches!(val, Val::Arg(k) if consumed & (1 << k) == 0))
}

/// The blocks some block goes to.
fn with_predecessors(cfg: &Cfg) -> Vec<bool> {
    let mut has_pred = vec![false; cfg.blocks.len()];
    for block in 0..cfg.blocks.len() {
        for succ in cfg.succs(block) {
            has_pred[succ] = true;
        }
    }
    has_pred
}

/// The blocks a path from the entry reaches, the fall-through of calls that never return cut.
fn reached_from_entry(cfg: &Cfg, context: &Context<'_>) -> Vec<bool> {
    let mut reached = vec![false; cfg.blocks.len()];
    let mut pending = vec![0];
    while let Some(block) = pending.pop() {
        for succ in successors(cfg, block, context) {
            if !std::mem::replace(&mut reached[succ], true) {
                pending.push(succ);
            }
        }
    }
    reached
}

/// The states blocks start from before any is analysed: the entry's, and nothing known for
/// blocks only the linear sweep reached; `None` for the rest.
fn initial_states(cfg: &Cfg, has_pred: &[bool]) -> Vec<Option<State>> {
    let mut states: Vec<Option<State>> = vec![None; cfg.blocks.len()];
    if let Some(entry) = states.first_mut() {
        *entry = Some(State::entry());
    }
    for (block, state) in states.iter_mut().enumerate().skip(1) {
        if !has_pred[block] {
            *state = Some(unknown_state());
        }
    }
    states
}

/// Entry states of each block (`None` for blocks no path reaches), `order` the blocks in reverse
/// postorder and `rank` each block's place in it.
fn fixpoint(
    cfg: &Cfg,
    context: &Context<'_>,
    order: &[usize],
    rank: &[usize],
    has_pred: &[bool],
) -> Vec<Option<State>> {
    let mut states = initial_states(cfg, has_pred);
    if cfg.blocks.is_empty() {
        return states;
    }
    let mut factory = InstructionInfoFactory::new();
    let mut pending = Worklist::full(order.len());
    let mut visits = vec![0u32; cfg.blocks.len()];
    let mut state = unknown_state();
    while let Some(position) = pending.pop() {
        let block = order[position];
        let Some(entry) = &states[block] else { continue };
        // `clone_from` keeps the scratch state's slot buffer: no allocation per visit.
        state.clone_from(entry);
        visits[block] += 1;
        for instruction in cfg.block_insns(block) {
            step(instruction, &mut state, &mut factory);
        }
        let last = &cfg.insns[cfg.blocks[block].end - 1];
        let jumped = own_blocks(cfg, last, &state, context).unwrap_or_default();
        for succ in successors(cfg, block, context).chain(jumped) {
            let changed = match &mut states[succ] {
                Some(existing) => existing.join(&state),
                empty @ None => {
                    *empty = Some(state.clone());
                    true
                }
            };
            if changed && visits[succ] < MAX_VISITS {
                pending.push(rank[succ]);
            } else if changed && let Some(existing) = &mut states[succ] {
                widen(existing);
            }
        }
    }
    states
}

/// Positions in reverse post-order still to visit, the first one first (a set: a position queued
/// twice is visited once). A heap with a flag per position: a `BTreeSet` spent more on its nodes
/// than some blocks take to analyse.
struct Worklist {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<usize>>,
    queued: Vec<bool>,
}

impl Worklist {
    fn full(len: usize) -> Worklist {
        Worklist { heap: (0..len).map(std::cmp::Reverse).collect(), queued: vec![true; len] }
    }

    fn push(&mut self, position: usize) {
        if !std::mem::replace(&mut self.queued[position], true) {
            self.heap.push(std::cmp::Reverse(position));
        }
    }

    fn pop(&mut self) -> Option<usize> {
        let std::cmp::Reverse(position) = self.heap.pop()?;
        self.queued[position] = false;
        Some(position)
    }
}

/// Visits of one block before its state is widened to `Top`. At 24 a sixth of all visits went to
/// loops growing a value set one element a turn; at 8 the syscall sets of the 12 experiment cells
/// are the same.
const MAX_VISITS: u32 = 8;

fn widen(state: &mut State) {
    for reg in &mut state.regs {
        if let Vals::Set { len, .. } = reg
            && *len > 1
        {
            *reg = Vals::Top(Reason::Computed);
        }
    }
}

fn unknown_state() -> State {
    State {
        regs: [Vals::Top(Reason::Computed); 16],
        loaded: [None; 16],
        slots: Vec::new(),
        zero_vectors: 0,
        args_lost: false,
    }
}

fn successors<'c>(cfg: &'c Cfg, block_index: usize, context: &Context<'_>) -> impl Iterator<Item = usize> + 'c {
    let block = &cfg.blocks[block_index];
    let cut = block.exit == Exit::Call && {
        let last = &cfg.insns[block.end - 1];
        raw_target(last).is_some_and(|target| (context.noreturn)(target))
    };
    cfg.succs(block_index).filter(move |_| !cut)
}

/// The blocks an indirect jump goes to when the register it jumps through holds nothing but
/// addresses where blocks of this function start: glibc's `vfprintf` dispatches with computed
/// gotos, and for a character outside its tables jumps to one label that a register took before
/// a branch. Such a jump calls nothing; its targets join its state. `None` for any other jump.
fn own_blocks(cfg: &Cfg, jump: &Instruction, state: &State, context: &Context<'_>) -> Option<Vec<usize>> {
    if jump.mnemonic() != Mnemonic::Jmp || jump.op0_kind() != OpKind::Register {
        return None;
    }
    let value = state.regs[gpr(jump.op0_register())?];
    let Vals::Set { .. } = value else { return None };
    value
        .items()
        .map(|val| match val {
            Val::Const(addr) if (context.start..context.end).contains(&addr) => cfg.block_at(addr),
            _ => None,
        })
        .collect::<Option<Vec<usize>>>()
        .filter(|blocks| !blocks.is_empty())
}

/// The direct or slot target of a call or jump.
pub(crate) fn raw_target(instruction: &Instruction) -> Option<RawTarget> {
    match instruction.op0_kind() {
        OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16 => {
            Some(RawTarget::Direct(instruction.near_branch_target()))
        }
        OpKind::Memory if instruction.is_ip_rel_memory_operand() => {
            Some(RawTarget::Slot(instruction.ip_rel_memory_address()))
        }
        _ => None,
    }
}

fn value_of(instruction: &Instruction, operand: u32, state: &State) -> Vals {
    match instruction.op_kind(operand) {
        OpKind::Register => match gpr(instruction.op_register(operand)) {
            Some(reg) => truncate(state.regs[reg], instruction.op_register(operand).size()),
            None => Vals::Top(Reason::Computed),
        },
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Vals::one(Val::Const(instruction.immediate(operand))),
        OpKind::Memory => match stack_offset(instruction, state) {
            Some(offset) => truncate(state.slot(offset), instruction.memory_size().size()),
            None => Vals::Top(Reason::MemoryLoad),
        },
        _ => Vals::Top(Reason::Computed),
    }
}

/// A value as seen through a register or memory access of `size` bytes.
fn truncate(value: Vals, size: usize) -> Vals {
    match size {
        8 => value,
        4 => value.map(|val| match val {
            Val::Const(n) => Some(Val::Const(n & 0xffff_ffff)),
            Val::Sp(_) => None,
            other => Some(other),
        }),
        _ => Vals::Top(Reason::Computed),
    }
}

/// The stack offset a memory operand addresses, if its base is a known stack pointer value.
fn stack_offset(instruction: &Instruction, state: &State) -> Option<i64> {
    if instruction.memory_index() != Register::None {
        return None;
    }
    let base = gpr(instruction.memory_base())?;
    let sp = state.regs[base].single_sp()?;
    Some(sp + instruction.memory_displacement64() as i64)
}

fn set_reg(state: &mut State, reg: Register, value: Vals) {
    let Some(index) = gpr(reg) else { return };
    // A register an instruction writes holds what the code chose, even when that is a value a
    // call left (`f(g())` moves the result into an argument): unknown, but written, unlike a
    // register nothing wrote since the call.
    let value = match value {
        Vals::Top(Reason::ClobberedByCall) => Vals::Top(Reason::Computed),
        value => value,
    };
    state.loaded[index] = None;
    state.regs[index] = match reg.size() {
        8 | 4 => truncate(value, reg.size()),
        _ => Vals::Top(Reason::Computed),
    };
}

/// The transfer function of one instruction.
fn step(instruction: &Instruction, state: &mut State, factory: &mut InstructionInfoFactory) {
    let op0_reg = (instruction.op0_kind() == OpKind::Register).then(|| instruction.op0_register());
    match instruction.mnemonic() {
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsxd | Mnemonic::Movsx => {
            let value = extend(instruction, value_of(instruction, 1, state));
            match op0_reg {
                Some(reg) => {
                    let source = match instruction.mnemonic() {
                        Mnemonic::Mov if instruction.op1_kind() == OpKind::Memory => load_source(instruction, state),
                        _ => None,
                    };
                    set_reg(state, reg, value);
                    if let (Some(index), 8) = (gpr(reg), reg.size()) {
                        state.loaded[index] = source;
                    }
                }
                None => store(instruction, state, value),
            }
        }
        Mnemonic::Lea => {
            let value = address(instruction, state);
            set_reg(state, instruction.op0_register(), value);
        }
        Mnemonic::Xor | Mnemonic::Sub | Mnemonic::Pxor
            if op0_reg.is_some()
                && instruction.op1_kind() == OpKind::Register
                && op0_reg == Some(instruction.op1_register()) =>
        {
            set_reg(state, instruction.op0_register(), Vals::one(Val::Const(0)));
        }
        Mnemonic::Add | Mnemonic::Sub | Mnemonic::And | Mnemonic::Or if op0_reg.is_some() => {
            let operand = value_of(instruction, 1, state);
            let current = value_of(instruction, 0, state);
            let value = arithmetic(instruction.mnemonic(), current, operand);
            set_reg(state, instruction.op0_register(), value);
        }
        Mnemonic::Push => {
            let value = value_of(instruction, 0, state);
            push(state, value);
        }
        Mnemonic::Pop => {
            let value = match state.regs[RSP].single_sp() {
                Some(sp) => state.slot(sp),
                None => Vals::Top(Reason::MemoryLoad),
            };
            state.regs[RSP] = state.regs[RSP].map(|val| match val {
                Val::Sp(d) => Some(Val::Sp(d + 8)),
                _ => None,
            });
            match op0_reg {
                Some(reg) => set_reg(state, reg, value),
                None => generic(instruction, state, factory),
            }
        }
        Mnemonic::Leave => {
            state.loaded[RBP] = None;
            let frame = state.regs[RBP].single_sp();
            state.regs[RBP] = frame.map_or(Vals::Top(Reason::MemoryLoad), |frame| state.slot(frame));
            state.regs[RSP] = frame.map_or(Vals::Top(Reason::Computed), |frame| Vals::one(Val::Sp(frame + 8)));
        }
        Mnemonic::Xchg if op0_reg.is_some() && instruction.op1_kind() == OpKind::Register => {
            let (a, b) = (value_of(instruction, 0, state), value_of(instruction, 1, state));
            set_reg(state, instruction.op0_register(), b);
            set_reg(state, instruction.op1_register(), a);
        }
        mnemonic if is_cmov(mnemonic) && op0_reg.is_some() => {
            let value = value_of(instruction, 0, state).join(value_of(instruction, 1, state));
            set_reg(state, instruction.op0_register(), value);
        }
        Mnemonic::Call => {
            for reg in CALLER_SAVED {
                state.regs[reg] = Vals::Top(Reason::ClobberedByCall);
                state.loaded[reg] = None;
            }
            // The callee's frame lives below our stack pointer.
            if let Some(sp) = state.regs[RSP].single_sp() {
                state.slots.retain(|&(offset, _)| offset >= sp);
            }
        }
        Mnemonic::Syscall | Mnemonic::Sysenter => {
            for reg in [RAX, 1, 11] {
                state.regs[reg] = Vals::Top(Reason::Computed);
                state.loaded[reg] = None;
            }
        }
        Mnemonic::Stosb | Mnemonic::Stosd | Mnemonic::Stosq if instruction.has_rep_prefix() => {
            if !rep_store(instruction, state) {
                generic(instruction, state, factory);
            }
        }
        _ if vector_zeroing(instruction) => {
            state.zero_vectors |= 1 << vector_index(instruction.op0_register());
        }
        _ if vector_store(instruction) => {
            let zero = state.zero_vectors & (1 << vector_index(instruction.op1_register())) != 0;
            match stack_offset(instruction, state) {
                Some(offset) if zero => {
                    let size = instruction.memory_size().size() as i64;
                    for slot in (offset..offset + size).step_by(8) {
                        state.clobber_slots(slot, 8);
                        state.set_slot(slot, Vals::one(Val::Const(0)));
                    }
                }
                _ => generic(instruction, state, factory),
            }
        }
        _ => {
            if instruction.op0_kind() == OpKind::Register && instruction.op0_register().is_vector_register() {
                state.zero_vectors &= !(1 << vector_index(instruction.op0_register()));
            }
            generic(instruction, state, factory)
        }
    }
}

/// `rep stos` over a stack structure (`memset(&act, 0, sizeof act)`, or the rest of a structure
/// after its first fields were set): the slots it covers hold the stored value, and the slots
/// outside it keep theirs — lighttpd sets `sa_handler = SIG_IGN`, then fills the rest with a
/// register the analysis cannot know.
fn rep_store(instruction: &Instruction, state: &mut State) -> bool {
    const RCX: usize = 1;
    const RDI: usize = 7;
    let element = match instruction.mnemonic() {
        Mnemonic::Stosb => 1,
        Mnemonic::Stosd => 4,
        _ => 8,
    };
    let (Some(start), Some(Val::Const(count))) = (state.regs[RDI].single_sp(), state.regs[RCX].single()) else {
        return false;
    };
    // RCX can hold any constant the code loaded: the product must not overflow.
    let size = count.checked_mul(element).and_then(|size| i64::try_from(size).ok());
    let Some(size) = size.filter(|&size| size <= 8 * MAX_SLOTS as i64) else {
        return false;
    };
    // A slot holds the register itself only when each element is a whole slot, or it is zero.
    let value = match state.regs[RAX].single() {
        Some(Val::Const(0)) => Vals::one(Val::Const(0)),
        _ if element == 8 => state.regs[RAX],
        _ => Vals::Top(Reason::Computed),
    };
    state.clobber_slots(start, size);
    for slot in (start..start + size).step_by(8).filter(|slot| slot + 8 <= start + size) {
        state.set_slot(slot, value);
    }
    state.regs[RDI] = Vals::one(Val::Sp(start + size));
    state.regs[RCX] = Vals::one(Val::Const(0));
    state.loaded[RDI] = None;
    state.loaded[RCX] = None;
    true
}

/// `pxor %xmmN,%xmmN` and its relatives.
fn vector_zeroing(instruction: &Instruction) -> bool {
    let zeroing = matches!(
        instruction.mnemonic(),
        Mnemonic::Pxor | Mnemonic::Xorps | Mnemonic::Xorpd | Mnemonic::Vpxor | Mnemonic::Vxorps | Mnemonic::Vxorpd
    );
    let register = |operand| match instruction.op_kind(operand) {
        OpKind::Register => instruction.op_register(operand),
        _ => Register::None,
    };
    zeroing
        && (0..instruction.op_count()).all(|operand| {
            let reg = register(operand);
            reg != Register::None && reg.full_register() == register(0).full_register()
        })
}

fn flow_is_next(instruction: &Instruction) -> bool {
    instruction.flow_control() == iced_x86::FlowControl::Next
        || matches!(instruction.mnemonic(), Mnemonic::Syscall | Mnemonic::Sysenter)
}

/// A vector register stored to memory.
fn vector_store(instruction: &Instruction) -> bool {
    matches!(
        instruction.mnemonic(),
        Mnemonic::Movaps
            | Mnemonic::Movups
            | Mnemonic::Movdqa
            | Mnemonic::Movdqu
            | Mnemonic::Vmovaps
            | Mnemonic::Vmovups
            | Mnemonic::Vmovdqa
            | Mnemonic::Vmovdqu
    ) && instruction.op0_kind() == OpKind::Memory
        && instruction.op1_kind() == OpKind::Register
}

fn vector_index(reg: Register) -> u32 {
    (reg.full_register().number() % 32) as u32
}

fn is_cmov(mnemonic: Mnemonic) -> bool {
    matches!(
        mnemonic,
        Mnemonic::Cmova
            | Mnemonic::Cmovae
            | Mnemonic::Cmovb
            | Mnemonic::Cmovbe
            | Mnemonic::Cmove
            | Mnemonic::Cmovg
            | Mnemonic::Cmovge
            | Mnemonic::Cmovl
            | Mnemonic::Cmovle
            | Mnemonic::Cmovne
            | Mnemonic::Cmovno
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovns
            | Mnemonic::Cmovo
            | Mnemonic::Cmovp
            | Mnemonic::Cmovs
    )
}

/// Sign extension for `movsx`/`movsxd` of constants; arguments pass through (syscall numbers are
/// `int`s, and a wrapper's `movslq %edi,%rax` still forwards its argument).
fn extend(instruction: &Instruction, value: Vals) -> Vals {
    let source_size = match instruction.op1_kind() {
        OpKind::Register => instruction.op1_register().size(),
        OpKind::Memory => instruction.memory_size().size(),
        _ => 8,
    };
    match instruction.mnemonic() {
        Mnemonic::Movsxd | Mnemonic::Movsx if source_size == 4 => value.map(|val| match val {
            Val::Const(n) => Some(Val::Const(n as u32 as i32 as i64 as u64)),
            other => Some(other),
        }),
        Mnemonic::Movsx | Mnemonic::Movzx if source_size < 4 => value.map(|val| match val {
            Val::Const(n) => Some(Val::Const(n & ((1 << (8 * source_size)) - 1))),
            _ => None,
        }),
        _ => value,
    }
}

fn arithmetic(mnemonic: Mnemonic, current: Vals, operand: Vals) -> Vals {
    let Some(Val::Const(n)) = operand.single() else { return Vals::Top(Reason::Computed) };
    current.map(|val| match (mnemonic, val) {
        (Mnemonic::Add, Val::Const(m)) => Some(Val::Const(m.wrapping_add(n))),
        (Mnemonic::Sub, Val::Const(m)) => Some(Val::Const(m.wrapping_sub(n))),
        (Mnemonic::And, Val::Const(m)) => Some(Val::Const(m & n)),
        (Mnemonic::Or, Val::Const(m)) => Some(Val::Const(m | n)),
        (Mnemonic::Add, Val::Sp(d)) => Some(Val::Sp(d.wrapping_add(n as i64))),
        (Mnemonic::Sub, Val::Sp(d)) => Some(Val::Sp(d.wrapping_sub(n as i64))),
        _ => None,
    })
}

/// The value `lea` computes.
/// Where an 8-byte memory operand reads from, when that is a fixed address of the file (rip-relative,
/// absolute, or a register holding an address the code took) or an entry of a table at one.
fn load_source(instruction: &Instruction, state: &State) -> Option<Source> {
    if instruction.memory_size().size() != 8 {
        return None;
    }
    if instruction.is_ip_rel_memory_operand() {
        return Some(Source::Slot(instruction.ip_rel_memory_address()));
    }
    let displacement = instruction.memory_displacement64();
    let base = match gpr(instruction.memory_base()) {
        None if instruction.memory_base() == Register::None => 0,
        None => return None,
        Some(base) => match state.regs[base].single() {
            Some(Val::Const(base)) => base,
            _ => return None,
        },
    };
    let addr = base.wrapping_add(displacement);
    match instruction.memory_index() {
        Register::None => Some(Source::Slot(addr)),
        _ if instruction.memory_index_scale() == 8 => Some(Source::Table(addr)),
        _ => None,
    }
}

fn address(instruction: &Instruction, state: &State) -> Vals {
    if instruction.is_ip_rel_memory_operand() {
        return Vals::one(Val::Const(instruction.ip_rel_memory_address()));
    }
    if instruction.memory_index() != Register::None {
        return Vals::Top(Reason::Computed);
    }
    let displacement = instruction.memory_displacement64();
    let Some(base) = gpr(instruction.memory_base()) else {
        return Vals::one(Val::Const(displacement));
    };
    state.regs[base].map(|val| match val {
        Val::Sp(d) => Some(Val::Sp(d.wrapping_add(displacement as i64))),
        Val::Const(n) => Some(Val::Const(n.wrapping_add(displacement))),
        _ => None,
    })
}

fn store(instruction: &Instruction, state: &mut State, value: Vals) {
    if let Some(offset) = stack_offset(instruction, state) {
        let size = instruction.memory_size().size() as i64;
        if size == 8 || size == 4 {
            state.clobber_slots(offset, size);
            state.set_slot(offset, truncate(value, size as usize));
        } else {
            state.clobber_slots(offset, size.max(1));
        }
    }
}

fn push(state: &mut State, value: Vals) {
    match state.regs[RSP].single_sp() {
        Some(sp) => {
            state.set_slot(sp - 8, value);
            state.regs[RSP] = Vals::one(Val::Sp(sp - 8));
        }
        None => state.regs[RSP] = Vals::Top(Reason::Computed),
    }
}

/// Anything not modelled: what it writes becomes unknown.
fn generic(instruction: &Instruction, state: &mut State, factory: &mut InstructionInfoFactory) {
    if writes_nothing(instruction) {
        return;
    }
    let info = factory.info(instruction);
    for used in info.used_registers() {
        let written = matches!(
            used.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        if written && let Some(reg) = gpr(used.register()) {
            state.regs[reg] = Vals::Top(Reason::Computed);
            state.loaded[reg] = None;
        }
    }
    let mut unknown_extent = false;
    for memory in info.used_memory() {
        let written = matches!(
            memory.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        if !written {
            continue;
        }
        let base = gpr(memory.base()).and_then(|base| state.regs[base].single_sp());
        match base {
            Some(sp) if memory.index() == Register::None => {
                let size = memory.memory_size().size().max(1) as i64;
                state.clobber_slots(sp + memory.displacement() as i64, size);
            }
            _ if instruction.has_rep_prefix() || instruction.has_repne_prefix() => unknown_extent = true,
            _ => {}
        }
    }
    if unknown_extent {
        state.slots.clear();
    }
}

/// Instructions that write no general-purpose register and no memory (flags only, or nothing):
/// the most common ones `generic` sees, and iced's instruction info is the costliest part of it.
fn writes_nothing(instruction: &Instruction) -> bool {
    matches!(
        instruction.mnemonic(),
        Mnemonic::Cmp
            | Mnemonic::Test
            | Mnemonic::Nop
            | Mnemonic::Endbr64
            | Mnemonic::Jmp
            | Mnemonic::Ucomiss
            | Mnemonic::Ucomisd
            | Mnemonic::Comiss
            | Mnemonic::Comisd
            | Mnemonic::Bt
    ) || instruction.is_jcc_short_or_near()
}

/// Records what the instruction tells about the function, given the state before it.
fn collect(instruction: &Instruction, state: &State, context: &Context<'_>, within: bool, facts: &mut Facts) {
    note_reads(instruction, state, facts);
    let int80 = instruction.mnemonic() == Mnemonic::Int && instruction.immediate8() == 0x80;
    if matches!(instruction.mnemonic(), Mnemonic::Syscall | Mnemonic::Sysenter) || int80 {
        let i386 = instruction.mnemonic() != Mnemonic::Syscall;
        facts.sites.push((instruction.ip(), site_number(truncate(state.regs[RAX], 4)), i386));
        facts.site_args.push((instruction.ip(), syscall_args(state)));
        return;
    }
    let (is_call, is_jump) = match instruction.mnemonic() {
        Mnemonic::Call => (true, false),
        Mnemonic::Jmp => (false, true),
        _ => (false, instruction.is_jcc_short_or_near()),
    };
    if !is_call && !is_jump {
        return;
    }
    let target = raw_target(instruction);
    let inside = |addr: u64| (context.start..context.end).contains(&addr);
    match target {
        Some(RawTarget::Direct(addr)) if is_jump && inside(addr) => {}
        Some(target) => facts.calls.push(call_facts(instruction, target, is_jump, state)),
        // A jump table the decoder enumerated, or a jump `own_blocks` resolved: its targets are
        // blocks of this function.
        None if is_jump && within => {}
        None => {
            let source = match instruction.op0_kind() {
                OpKind::Register => gpr(instruction.op0_register()).and_then(|reg| state.loaded[reg]),
                OpKind::Memory => load_source(instruction, state),
                _ => None,
            };
            match source {
                Some(Source::Slot(slot)) => {
                    facts.calls.push(call_facts(instruction, RawTarget::Slot(slot), is_jump, state))
                }
                Some(Source::Table(table)) => {
                    facts.calls.push(call_facts(instruction, RawTarget::Table(table), is_jump, state))
                }
                None => facts.indirect.push(indirect_facts(instruction, state)),
            }
        }
    }
}

fn site_number(value: Vals) -> SiteNumber {
    match value {
        Vals::Top(reason) => SiteNumber::Unresolved(reason),
        Vals::Set { .. } => {
            let mut numbers = Vec::new();
            let mut forwarded = None;
            for val in value.items() {
                match val {
                    Val::Const(n) if n < 0x4000_0000 => numbers.push(n as u32),
                    Val::Arg(k) if forwarded.is_none() => forwarded = Some(ArgLoc::Reg(k)),
                    Val::StackArg(offset) if forwarded.is_none() => forwarded = Some(ArgLoc::Stack(offset)),
                    _ => return SiteNumber::Unresolved(Reason::Computed),
                }
            }
            match forwarded {
                // A wrapper whose own path also issues fixed numbers is still a wrapper; the
                // constants are rare enough (none in glibc) to be reported as unresolved.
                Some(loc) if numbers.is_empty() => SiteNumber::Forwarded(loc),
                Some(_) => SiteNumber::Unresolved(Reason::Computed),
                None => SiteNumber::Known(numbers),
            }
        }
    }
}

/// rdi, rsi, rdx, r10, r8, r9: the kernel's argument registers.
const SYSCALL_ARG_REGS: [usize; 6] = [7, 6, 2, 10, 8, 9];

/// The syscall arguments known at a site: constants, or the function's own arguments passed on.
fn syscall_args(state: &State) -> Vec<(u8, ArgValue)> {
    SYSCALL_ARG_REGS
        .iter()
        .enumerate()
        .filter_map(|(index, &reg)| Some((index as u8, arg_value(state.regs[reg])?)))
        .collect()
}

fn call_facts(instruction: &Instruction, target: RawTarget, tail: bool, state: &State) -> RawCall {
    let mut args = Vec::new();
    let mut pointer_args = Vec::new();
    let mut opaque_args = 0u8;
    for (k, &reg) in ARG_REGS.iter().enumerate() {
        let value = state.regs[reg];
        if let Some(arg) = arg_value(value) {
            args.push((ArgLoc::Reg(k as u8), arg));
        }
        if let Vals::Top(Reason::MemoryLoad | Reason::Computed) = value {
            opaque_args |= 1 << k;
        }
        for val in value.items() {
            match val {
                Val::Const(addr) => pointer_args.push((k as u8, addr)),
                // A structure on our stack (`struct sigaction`): its first field.
                Val::Sp(d) => match state.slot(d) {
                    Vals::Top(_) => opaque_args |= 1 << k,
                    field => pointer_args.extend(field.items().filter_map(|val| match val {
                        Val::Const(addr) => Some((k as u8, addr)),
                        _ => None,
                    })),
                },
                _ => {}
            }
        }
    }
    if let Some(sp) = state.regs[RSP].single_sp() {
        // At a call the callee's 8(%rsp) is our 0(%rsp); at a tail jump it is our 8(%rsp).
        let base = if tail { sp + 8 } else { sp };
        for index in 0..4 {
            if let Some(arg) = arg_value(state.slot(base + 8 * index)) {
                args.push((ArgLoc::Stack(8 + 8 * index as u32), arg));
            }
        }
    }
    pointer_args.retain(|&(_, addr)| addr >= 0x1000);
    let as_indirect = indirect_facts(instruction, state);
    RawCall { at: instruction.ip(), target, tail, args, pointer_args, opaque_args, as_indirect }
}

fn arg_value(value: Vals) -> Option<ArgValue> {
    let Vals::Set { .. } = value else { return None };
    let mut consts = Vec::new();
    let mut forwarded = None;
    for val in value.items() {
        match val {
            Val::Const(n) => consts.push(n),
            Val::Arg(k) => forwarded = Some(ArgLoc::Reg(k)),
            Val::StackArg(offset) => forwarded = Some(ArgLoc::Stack(offset)),
            Val::Sp(_) => return None,
        }
    }
    Some(ArgValue { consts, forwarded })
}

fn indirect_facts(instruction: &Instruction, state: &State) -> RawIndirect {
    let (mut written, mut passed) = (0u8, 0u8);
    for (k, &reg) in ARG_REGS.iter().enumerate() {
        match state.regs[reg] {
            Vals::Top(Reason::ClobberedByCall) => {}
            Vals::Top(_) => written |= 1 << k,
            value => {
                let own = value.contains(Val::Arg(k as u8));
                if own {
                    passed |= 1 << k;
                }
                if value.items().any(|val| val != Val::Arg(k as u8)) {
                    written |= 1 << k;
                }
            }
        }
    }
    RawIndirect { at: instruction.ip(), written, passed, called_argument: called_argument(instruction, state) }
}

/// The function's own argument an indirect call or jump goes through unchanged, kept in a
/// register or a stack slot (`pthread_once`'s initialiser, `__mktime_internal`'s converter):
/// such a call reaches what the function's callers pass there.
fn called_argument(instruction: &Instruction, state: &State) -> Option<ArgLoc> {
    let value = match instruction.op0_kind() {
        OpKind::Register => state.regs[gpr(instruction.op0_register())?],
        OpKind::Memory if instruction.memory_index() == Register::None && instruction.memory_size().size() == 8 => {
            match address(instruction, state).single()? {
                Val::Sp(offset) => state.slot(offset),
                _ => return None,
            }
        }
        _ => return None,
    };
    match value.single()? {
        Val::Arg(k) => Some(ArgLoc::Reg(k)),
        Val::StackArg(offset) => Some(ArgLoc::Stack(offset)),
        _ => None,
    }
}

/// Argument registers read while they may still hold the caller's value. Explicit operands
/// only: an implicit read (`rep movs`) is rare in argument registers, and missing it only makes
/// the function look like it takes fewer arguments, which admits it to more call sites.
fn note_reads(instruction: &Instruction, state: &State, facts: &mut Facts) {
    let mnemonic = instruction.mnemonic();
    let zeroing = matches!(mnemonic, Mnemonic::Xor | Mnemonic::Sub)
        && instruction.op0_kind() == OpKind::Register
        && instruction.op1_kind() == OpKind::Register
        && instruction.op0_register() == instruction.op1_register();
    if zeroing {
        return;
    }
    let writes_op0 = writes_only(instruction) || is_cmov(mnemonic);
    let mut note = |reg: Register| {
        let Some(reg) = gpr(reg) else { return };
        if let Some(k) = ARG_REGS.iter().position(|&arg| arg == reg)
            && state.regs[reg].contains(Val::Arg(k as u8))
        {
            facts.consumed |= 1 << k;
        }
    };
    for operand in 0..instruction.op_count() {
        match instruction.op_kind(operand) {
            OpKind::Register if operand > 0 || !writes_op0 => note(instruction.op_register(operand)),
            OpKind::Memory => {
                note(instruction.memory_base());
                note(instruction.memory_index());
            }
            _ => {}
        }
    }
}

/// Whether `instruction` puts an address in a register whose only uses, up to the end of its
/// block, are comparisons and the argument a registration call hands over
/// (`__libc_start_main(main, …)`, `signal(sig, handler)`). Such a pointer never becomes callable
/// from an arbitrary indirect call: a registered one is a root of its own (found through the
/// call's arguments), a compared one is only an identity (`main` is not a signal handler).
fn registered_only(instruction: &Instruction, rest: &[Instruction], context: &Context<'_>) -> bool {
    let materialises = match instruction.mnemonic() {
        Mnemonic::Lea => instruction.is_ip_rel_memory_operand(),
        Mnemonic::Mov => {
            matches!(instruction.op1_kind(), OpKind::Immediate32to64 | OpKind::Immediate32 | OpKind::Immediate64)
        }
        _ => false,
    };
    let Some(reg) =
        gpr(instruction.op0_register()).filter(|_| materialises && instruction.op0_kind() == OpKind::Register)
    else {
        return false;
    };
    for next in rest {
        if next.mnemonic() == Mnemonic::Call {
            let registered = raw_target(next).and_then(|target| (context.registrar)(target));
            let passed = ARG_REGS.contains(&reg);
            return match registered {
                Some(arg) => ARG_REGS[arg as usize] == reg || (!passed && CALLER_SAVED.contains(&reg)),
                // Any other call may receive it; past the call a caller-saved register is dead.
                None => !passed && CALLER_SAVED.contains(&reg),
            };
        }
        let reads = (0..next.op_count()).any(|operand| match next.op_kind(operand) {
            OpKind::Register => gpr(next.op_register(operand)) == Some(reg) && (operand > 0 || !writes_only(next)),
            OpKind::Memory => gpr(next.memory_base()) == Some(reg) || gpr(next.memory_index()) == Some(reg),
            _ => false,
        });
        if reads && !matches!(next.mnemonic(), Mnemonic::Cmp | Mnemonic::Test) {
            return false;
        }
        let overwritten =
            writes_only(next) && next.op0_kind() == OpKind::Register && gpr(next.op0_register()) == Some(reg);
        if overwritten && next.op0_register().size() >= 4 {
            return true;
        }
    }
    false
}

/// Instructions whose first operand is written without being read.
fn writes_only(instruction: &Instruction) -> bool {
    matches!(
        instruction.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd | Mnemonic::Lea | Mnemonic::Pop
    )
}

/// Addresses the instruction refers to. Taking an address (`lea`, an address-sized immediate,
/// an indexed table access) may reach the whole object from there on; a plain load or store
/// touches the field at that address.
fn note_refs(instruction: &Instruction, facts: &mut Facts) {
    let through_memory = matches!(instruction.mnemonic(), Mnemonic::Call | Mnemonic::Jmp);
    let lea = instruction.mnemonic() == Mnemonic::Lea;
    if instruction.is_ip_rel_memory_operand() && !through_memory {
        let addr = instruction.ip_rel_memory_address();
        if lea { facts.refs.push(addr) } else { facts.loads.push(addr) }
    }
    for operand in 0..instruction.op_count() {
        match instruction.op_kind(operand) {
            OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate32to64 => {
                let value = instruction.immediate(operand);
                if value >= 0x1000 {
                    facts.refs.push(value);
                }
            }
            OpKind::Memory if instruction.memory_base() == Register::None && !through_memory => {
                let displacement = instruction.memory_displacement64();
                if displacement < 0x1000 {
                    continue;
                }
                if lea || instruction.memory_index() != Register::None {
                    facts.refs.push(displacement);
                } else {
                    facts.loads.push(displacement);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::assembler::{self, Symbols, assert_text};
    use crate::elf::cfg::{self, Code};
    use crate::elf::{NORETURN, REGISTRARS};

    /// Analyses every function of `source` and prints, per function with any, its facts in
    /// address order: `syscall NUMBERS` (`int80` for `int $0x80`), `syscall argK` (a wrapper),
    /// `syscall ?REASON`; `call NAME(ARGS)` or `jmp NAME(ARGS)` (a tail call) with the arguments
    /// known there (`argK=CONSTS`, `&NAME` for an address with a symbol, `argK=argJ` for the
    /// caller's own argument passed on, `argK->&NAME` for a pointer in a stack structure the
    /// argument points to; an argument left as it came in is not shown); `icall`; and
    /// `reads argK…` for the arguments it consumes. Functions named in `NORETURN` never return
    /// and those in `REGISTRARS` register their pointer argument, as in a real file.
    /// `generic` skips iced's instruction info for these: it must agree that they write no
    /// general-purpose register and no memory, in every form the compilers emit.
    #[test]
    fn instructions_that_write_nothing_say_so() {
        let bytes = assembler::link(
            "
f:  cmp $1, %edi
    cmpq $0, 8(%rsp)
    cmp %rax, (%rdi,%rsi,8)
    test %al, %al
    testb $1, (%rdi)
    nop
    nopw 0(%rax,%rax,1)
    endbr64
    ucomiss %xmm1, %xmm0
    ucomisd (%rdi), %xmm0
    comiss %xmm1, %xmm0
    comisd %xmm1, %xmm0
    bt %esi, %edi
    btq $3, (%rdi)
    jne f
    jmp *%rax
    jmp *8(%rdi)
    jmp f
",
            &["-e", "0", "-Ttext=0x401000"],
        );
        let image = crate::elf::image::Image::parse(&bytes).unwrap();
        let code = Code::new(image.loaded_sections().map(|(addr, bytes, _)| (addr, bytes)).collect());
        let mut factory = InstructionInfoFactory::new();
        let writes = |access: OpAccess| {
            matches!(access, OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
        };
        let mut addr = 0x401000;
        let mut checked = 0;
        while let Some(instruction) = code.decode(addr) {
            assert!(writes_nothing(&instruction), "{:?} at {addr:#x}", instruction.mnemonic());
            let info = factory.info(&instruction);
            let registers = info.used_registers().iter().filter(|used| writes(used.access()));
            assert_eq!(registers.filter_map(|used| gpr(used.register())).count(), 0, "{:?}", instruction.mnemonic());
            assert!(!info.used_memory().iter().any(|memory| writes(memory.access())), "{:?}", instruction.mnemonic());
            checked += 1;
            addr = instruction.next_ip();
            if instruction.mnemonic() == Mnemonic::Jmp && instruction.near_branch_target() == 0x401000 {
                break;
            }
        }
        assert_eq!(checked, 18);
    }

    fn check(source: &str, expect: &str) {
        let bytes = assembler::link(source, &["-e", "0", "-Ttext=0x401000"]);
        let symbols = Symbols::of(&bytes);
        let image = crate::elf::image::Image::parse(&bytes).unwrap();
        let code = Code::new(image.loaded_sections().map(|(addr, bytes, _)| (addr, bytes)).collect());
        let name = |target: RawTarget| match target {
            RawTarget::Direct(addr) => symbols.label(addr),
            RawTarget::Slot(slot) => format!("*{}", symbols.label(slot)),
            RawTarget::Table(table) => format!("*{}[]", symbols.label(table)),
        };
        let noreturn = |target: RawTarget| NORETURN.contains(&name(target).as_str());
        let registrar = |target: RawTarget| {
            REGISTRARS.iter().find(|(registrar, _)| *registrar == name(target)).map(|&(_, arg)| arg)
        };
        let mut out = String::new();
        for (function, start, end) in &symbols.functions {
            let graph = cfg::decode(&code, *start, *end);
            let context = Context { start: *start, end: *end, noreturn: &noreturn, registrar: &registrar };
            let facts = analyze(&graph, &context);
            let mut lines: Vec<(u64, String)> = Vec::new();
            for (at, number, i386) in &facts.sites {
                let instruction = if *i386 { "int80" } else { "syscall" };
                lines.push((*at, format!("{instruction} {}", site_text(number))));
            }
            for call in &facts.calls {
                let passed_on = |loc: &ArgLoc, value: &ArgValue| {
                    value.consts.is_empty() && (value.forwarded == Some(*loc) || matches!(loc, ArgLoc::Stack(_)))
                };
                let constant = |n: u64| match symbols.names.get(&n) {
                    Some(name) => format!("&{name}"),
                    None => n.to_string(),
                };
                let mut args: Vec<String> = call
                    .args
                    .iter()
                    .filter(|(loc, value)| !passed_on(loc, value))
                    .map(|(loc, value)| {
                        let mut known: Vec<String> = value.consts.iter().map(|&n| constant(n)).collect();
                        known.extend(value.forwarded.map(loc_text));
                        format!("{}={}", loc_text(*loc), known.join(","))
                    })
                    .collect();
                // Pointers found in a structure on the stack whose address is the argument.
                let in_registers = |k: u8, addr: u64| {
                    call.args.iter().any(|(loc, value)| *loc == ArgLoc::Reg(k) && value.consts.contains(&addr))
                };
                args.extend(
                    call.pointer_args
                        .iter()
                        .filter(|&&(k, addr)| !in_registers(k, addr))
                        .map(|&(k, addr)| format!("arg{}->{}", k + 1, constant(addr))),
                );
                // What a registrar is handed but the analysis lost.
                if registrar(call.target).is_some() {
                    let lost = (0..6).filter(|k| call.opaque_args & (1 << k) != 0);
                    args.extend(lost.map(|k| format!("arg{}->?", k + 1)));
                }
                let kind = if call.tail { "jmp" } else { "call" };
                lines.push((call.at, format!("{kind} {}({})", name(call.target), args.join(" "))));
            }
            for site in &facts.indirect {
                lines.push((site.at, "icall".to_owned()));
            }
            lines.sort();
            let mut facts_text: Vec<String> = lines.into_iter().map(|(_, line)| line).collect();
            if facts.consumed != 0 {
                let read = (0..6).filter(|k| facts.consumed & (1 << k) != 0).map(|k| format!("arg{}", k + 1));
                facts_text.push(format!("reads {}", read.collect::<Vec<_>>().join(" ")));
            }
            if !facts_text.is_empty() {
                out.push_str(&format!("{function}: {}\n", facts_text.join("; ")));
            }
        }
        assert_text(&out, expect);
    }

    fn loc_text(loc: ArgLoc) -> String {
        match loc {
            ArgLoc::Reg(k) => format!("arg{}", k + 1),
            ArgLoc::Stack(offset) => format!("arg{}", 7 + (offset - 8) / 8),
        }
    }

    fn site_text(number: &SiteNumber) -> String {
        match number {
            SiteNumber::Known(numbers) => numbers.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "),
            SiteNumber::Forwarded(loc) => loc_text(*loc),
            SiteNumber::Unresolved(reason) => format!("?{}", reason.as_str()),
        }
    }

    #[test]
    fn a_branch_the_sweep_found_joins_its_target() {
        // `b` is found only by the sweep after the unresolved jump; its branch into the middle of
        // `a` brings 60 to the syscall there.
        check(
            "
f:  test %esi, %esi
    je a
    mov (%rdi), %rax
    jmp *%rax
  a:
    mov $39, %eax
  mid:
    syscall
    ret
  b:
    mov $60, %eax
    jmp mid
",
            "f: icall; syscall 39 60; reads arg1 arg2",
        );
    }

    #[test]
    fn a_block_only_an_unresolved_jump_reaches_is_analysed() {
        // `reached` follows a call that never returns: no path from the entry gets there, but the
        // unresolved jump may. Its syscall counts, from a state nothing is known of.
        check(
            "
f:  mov (%rdi), %rax
    test %esi, %esi
    je dead
    jmp *%rax
  dead:
    call exit
  reached:
    mov $39, %eax
    syscall
    ret
exit:
    ret
",
            "f: icall; call exit(); syscall 39; reads arg1 arg2",
        );
    }

    #[test]
    fn a_jump_through_a_register_holding_blocks_of_the_function_stays_in_it() {
        // glibc's `vfprintf`: a character outside the table jumps to a label taken before the
        // branch. The jump calls nothing, and its state joins the label's (60 as well as 39).
        // The label is taken before a call, further back than the decoder looks.
        let source = |target: &str| {
            format!(
                "
f:  push %rbx
    lea {target}(%rip), %rbx
    call g
    mov $39, %ecx
    cmp $1, %edi
    ja out
  label:
    mov %ecx, %eax
  inside:
    syscall
    pop %rbx
    ret
  out:
    mov $60, %ecx
    jmp *%rbx
g:  ret
"
            )
        };
        check(&source("label"), "f: call g(); syscall 39 60");
        // An address no block starts at: the jump may go anywhere.
        check(&source("inside"), "f: call g(); syscall 39; icall");
    }

    #[test]
    fn a_number_set_before_a_loop_reaches_the_site_inside_it() {
        // exit's loop shape.
        check(
            "
f:  mov $0x3c, %edx
  again:
    mov %edx, %eax
    syscall
    jmp again
",
            "f: syscall 60",
        );
    }

    #[test]
    fn arguments_read_in_blocks_with_nothing_else_to_note_count() {
        // The second pass skips blocks with no call, syscall or exit: `f` reads its third
        // argument only in such a block, `g` its first only after moving it through another
        // register and the stack, `h` only in a loop. `k` overwrites its argument first.
        check(
            "
f:  test %edi, %edi
    je done
    mov (%rdx), %eax
  done:
    ret
g:  mov %rdi, %rax
    mov %rax, -8(%rsp)
    test %esi, %esi
    je out
    mov -8(%rsp), %rdi
    mov (%rdi), %eax
  out:
    ret
h:  xor %eax, %eax
  loop:
    add $1, %eax
    cmp %eax, %ecx
    jne loop
    ret
k:  mov $1, %edi
    mov (%rdi), %eax
    ret
",
            "
f: reads arg1 arg3
g: reads arg1 arg2
h: reads arg4
",
        );
    }

    #[test]
    fn numbers_from_several_paths_join() {
        check(
            "
f:  test %edi, %edi
    je other
    mov $1, %eax
    jmp done
  other:
    mov $2, %eax
  done:
    syscall
    ret
",
            "f: syscall 1 2; reads arg1",
        );
    }

    #[test]
    fn numbers_chosen_through_a_jump_table_join_at_the_site() {
        check(
            "
f:  cmp $2, %edi
    ja other
    lea table(%rip), %rdx
    movslq (%rdx,%rdi,4), %rcx
    add %rdx, %rcx
    jmp *%rcx
  case0:
    mov $0, %eax
    jmp done
  case1:
    mov $1, %eax
    jmp done
  case2:
    mov $19, %eax
    jmp done
  other:
    mov $17, %eax
  done:
    syscall
    ret
  table:
    .long case0 - table, case1 - table, case2 - table
",
            "f: syscall 0 1 17 19; reads arg1",
        );
    }

    #[test]
    fn numbers_move_through_registers_and_the_stack() {
        check(
            "
f:  push $39
    pop %rcx
    xchg %rcx, %rax
    syscall
    sub $8, %rsp
    movq $231, (%rsp)
    mov (%rsp), %rax
    syscall
    add $8, %rsp
    ret
",
            "f: syscall 39; syscall 231",
        );
    }

    #[test]
    fn wrappers_forward_a_register_or_a_stack_argument() {
        // libc's `syscall()`, and a wrapper taking the number as its 7th argument.
        check(
            "
syscall: mov %rdi, %rax
    mov %rsi, %rdi
    syscall
    ret
seventh: mov 8(%rsp), %rax
    syscall
    ret
",
            "
syscall: syscall arg1; reads arg1 arg2
seventh: syscall arg7
",
        );
    }

    /// With every place for slots taken by locals, a store to the caller's stack argument must
    /// not be lost: the slot would read as the incoming argument again (`arg7`).
    #[test]
    fn a_stack_argument_written_in_a_full_frame_is_not_the_argument_any_more() {
        check(
            "
seventh:
    movq $0, -0x8(%rsp)
    movq $0, -0x10(%rsp)
    movq $0, -0x18(%rsp)
    movq $0, -0x20(%rsp)
    movq $0, -0x28(%rsp)
    movq $0, -0x30(%rsp)
    movq $0, -0x38(%rsp)
    movq $0, -0x40(%rsp)
    movq $0, -0x48(%rsp)
    movq $0, -0x50(%rsp)
    movq $0, -0x58(%rsp)
    movq $0, -0x60(%rsp)
    movq $0, -0x68(%rsp)
    movq $0, -0x70(%rsp)
    movq $0, -0x78(%rsp)
    movq $0, -0x80(%rsp)
    movq $0, -0x88(%rsp)
    movq $0, -0x90(%rsp)
    movq $0, -0x98(%rsp)
    movq $0, -0xa0(%rsp)
    movq $0, -0xa8(%rsp)
    movq $0, -0xb0(%rsp)
    movq $0, -0xb8(%rsp)
    movq $0, -0xc0(%rsp)
    movq $0, -0xc8(%rsp)
    movq $0, -0xd0(%rsp)
    movq $0, -0xd8(%rsp)
    movq $0, -0xe0(%rsp)
    movq $0, -0xe8(%rsp)
    movq $0, -0xf0(%rsp)
    movq $0, -0xf8(%rsp)
    movq $0, -0x100(%rsp)
    movq $0, -0x108(%rsp)
    movq $0, -0x110(%rsp)
    movq $0, -0x118(%rsp)
    movq $0, -0x120(%rsp)
    movq $0, -0x128(%rsp)
    movq $0, -0x130(%rsp)
    movq $0, -0x138(%rsp)
    movq $0, -0x140(%rsp)
    movq $0, -0x148(%rsp)
    movq $0, -0x150(%rsp)
    movq $0, -0x158(%rsp)
    movq $0, -0x160(%rsp)
    movq $0, -0x168(%rsp)
    movq $0, -0x170(%rsp)
    movq $0, -0x178(%rsp)
    movq $0, -0x180(%rsp)
    movq $39, 8(%rsp)
    mov 8(%rsp), %rax
    syscall
    ret
",
            "
seventh: syscall 39
",
        );
    }

    #[test]
    fn calls_carry_constants_in_registers_on_the_stack_and_passed_on() {
        check(
            "
f:  mov $60, %edi
    call syscall
    sub $0x18, %rsp
    movq $231, (%rsp)
    call seventh
    add $0x18, %rsp
    ret
g:  mov %rsi, %rdi
    jmp syscall
syscall: ret
seventh: ret
",
            "
f: call syscall(arg1=60); call seventh(arg7=231)
g: jmp syscall(arg1=arg2); reads arg2
",
        );
    }

    #[test]
    fn what_the_analysis_cannot_know_is_said_with_its_reason() {
        check(
            "
clobbered: mov $39, %eax
    call other
    syscall
    ret
loaded: mov number(%rip), %rax
    syscall
    ret
computed: mov $1, %eax
    imul %edi, %eax
    syscall
    ret
other: ret
  number: .quad 39
",
            "
clobbered: call other(); syscall ?number register clobbered by a call
loaded: syscall ?number loaded from memory
computed: syscall ?number computed at run time; reads arg1
",
        );
    }

    #[test]
    fn nothing_after_a_call_that_never_returns_runs() {
        check(
            "
f:  test %edi, %edi
    jne fail
    mov $39, %eax
    syscall
    ret
  fail:
    call abort
    mov $62, %eax
    syscall
    ret
abort: hlt
",
            "f: syscall 39; call abort(); reads arg1",
        );
    }

    #[test]
    fn function_pointers_given_to_registrars_and_indirect_calls() {
        // `signal(SIGTERM, handler)` hands `handler` over, `sigaction(SIGTERM, &act, NULL)` in
        // the structure on the stack (whose first field, at the stack pointer, is also where a
        // 7th argument would be); `(*table[0])()` calls through the slot it loads.
        check(
            "
f:  mov $15, %edi
    lea handler(%rip), %rsi
    call signal
    mov table(%rip), %rax
    mov $1, %edi
    call *%rax
    ret
g:  sub $0x98, %rsp
    lea handler(%rip), %rax
    mov %rax, (%rsp)
    mov $15, %edi
    mov %rsp, %rsi
    xor %edx, %edx
    call sigaction
    add $0x98, %rsp
    ret
signal: ret
sigaction: ret
handler: mov $39, %eax
    syscall
    ret
  table: .quad handler
",
            "
f: call signal(arg1=15 arg2=&handler); call *table(arg1=1)
g: call sigaction(arg1=15 arg3=0 arg7=&handler arg2->&handler)
handler: syscall 39
",
        );
    }

    #[test]
    fn a_structure_filled_by_rep_stos_keeps_the_fields_set_before() {
        // lighttpd's child: `act.sa_handler = SIG_IGN`, then `rep stos` of a register the
        // analysis cannot know over the rest of `act`; the handler is still a constant, no
        // function, so nothing is registered. The same `rep stos` over the handler loses it.
        let program = |first: &str| {
            format!(
                "
h:  sub $0x98, %rsp
    movq $1, (%rsp)
    lea {first}(%rsp), %rdi
    mov %ebx, %eax
    mov $0x22, %ecx
    rep stosl
    mov $10, %edi
    mov %rsp, %rsi
    xor %edx, %edx
    call sigaction
    add $0x98, %rsp
    ret
sigaction: ret
"
            )
        };
        check(&program("8"), "h: call sigaction(arg1=10 arg3=0 arg4=0 arg7=1)");
        check(&program("0"), "h: call sigaction(arg1=10 arg3=0 arg4=0 arg2->?)");
    }

    #[test]
    fn int_0x80_numbers_are_i386_ones() {
        check(
            "
f:  mov $1, %eax
    int $0x80
    ret
",
            "f: int80 1",
        );
    }
}
