//! The facts of one function body, from llvm-ir's instructions.
//!
//! Every operand is looked at once: a function used other than as a callee has its address
//! taken; a global referenced is used. Calls become direct edges (with what is known of their
//! integer arguments, for syscall wrappers), indirect sites keyed by the call's function type,
//! inline-asm syscall sites, or registrations of callbacks with libraries. Stores of function
//! pointers into struct fields are recorded with where the stored value came from, and a field
//! whose writes are not all understood — an untraceable stored value, or its address used for
//! anything but a load or store — is marked polluted. A value that comes from a parameter is
//! left to the callers: pointers passed to defined functions are recorded with their sources
//! (`Item::Passes`), so a field written from a parameter, or a call through one, resolves to
//! what the callers pass.

use std::collections::{HashMap, HashSet};

use llvm_ir::instruction::{Call, GetElementPtr};
use llvm_ir::terminator::Terminator;
use llvm_ir::types::{NamedStructDef, Types};
use llvm_ir::{Constant, Instruction, Module, Name, Operand, Type, TypeRef};

use super::fields::{GepKey, Shape, TypeView, gep_key};
use super::sidecar::{RawAsm, Sidecar};
use super::{Symbols, asm_number, name_str};
use crate::bitcode::program::{AsmSite, AsyncKind, Block, Body, FieldId, FnId, Item, Number, Source, UNTYPED_MEMORY};
use crate::syscalls::Arch;

/// Library functions that take a function to call later: (name, argument, kind).
const REGISTRARS: &[(&str, usize, AsyncKind)] = &[
    ("signal", 1, AsyncKind::SignalHandler),
    ("sysv_signal", 1, AsyncKind::SignalHandler),
    ("__sysv_signal", 1, AsyncKind::SignalHandler),
    ("bsd_signal", 1, AsyncKind::SignalHandler),
    ("sigset", 1, AsyncKind::SignalHandler),
    ("pthread_create", 2, AsyncKind::ThreadStart),
    ("clone", 0, AsyncKind::ThreadStart),
    ("atexit", 0, AsyncKind::ExitHandler),
    ("at_quick_exit", 0, AsyncKind::ExitHandler),
    ("on_exit", 0, AsyncKind::ExitHandler),
    ("__cxa_atexit", 0, AsyncKind::ExitHandler),
];

/// `sigaction`-style registrars: argument 1 points to a struct whose first member is the handler.
const SIGACTION: &[&str] = &["sigaction", "__sigaction", "__libc_sigaction"];

/// Whether inline assembly text enters the kernel.
pub fn issues_syscalls(text: &str) -> bool {
    text.split([';', '\n']).any(|statement| {
        let words: Vec<&str> =
            statement.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
        match words.as_slice() {
            ["syscall" | "sysenter", ..] => true,
            ["int", number, ..] => is_int80(number),
            ["svc", ..] => true,
            _ => false,
        }
    })
}

fn is_int80(operand: &str) -> bool {
    matches!(operand.trim_start_matches('$'), "0x80" | "128")
}

/// `int $0x80` and `sysenter` use the i386 table even in 64-bit code.
fn asm_arch(text: &str, module_arch: Arch) -> Arch {
    let i386 = text.contains("sysenter") || text.split_whitespace().any(is_int80);
    if i386 && module_arch == Arch::X86_64 { Arch::X86 } else { module_arch }
}

#[expect(clippy::too_many_arguments, reason = "one call site; the pieces are all borrowed from the reader")]
pub(super) fn extract(
    module: &Module,
    function: &llvm_ir::Function,
    id: FnId,
    symbols: &mut Symbols,
    side: &Sidecar,
    asm: &[RawAsm],
    arch: Arch,
    asm_sites: &mut Vec<AsmSite>,
    summaries: &Summaries,
) -> Body {
    let mut cx = Context::new(module, function, side, summaries);
    cx.mark_pollution(symbols);
    let mut out = Extracted { id, arch, asm, asm_sites, asm_seen: 0, items: Vec::new(), block_seen: HashSet::new() };
    let block_index: HashMap<&Name, u32> =
        function.basic_blocks.iter().enumerate().map(|(index, block)| (&block.name, index as u32)).collect();
    let mut blocks = Vec::with_capacity(function.basic_blocks.len());
    for block in &function.basic_blocks {
        let start = out.items.len() as u32;
        out.block_seen.clear();
        for instruction in &block.instrs {
            cx.instruction(instruction, symbols, &mut out);
        }
        cx.terminator(&block.term, symbols, &mut out);
        let successors =
            successors(&block.term).into_iter().filter_map(|name| block_index.get(name).copied()).collect();
        let returns = matches!(block.term, Terminator::Ret(_));
        blocks.push(Block { items: start..out.items.len() as u32, successors, returns });
    }
    Body { items: out.items, blocks }
}

fn successors(term: &Terminator) -> Vec<&Name> {
    match term {
        Terminator::Br(br) => vec![&br.dest],
        Terminator::CondBr(br) => vec![&br.true_dest, &br.false_dest],
        Terminator::Switch(switch) => {
            switch.dests.iter().map(|(_, dest)| dest).chain(std::iter::once(&switch.default_dest)).collect()
        }
        Terminator::IndirectBr(br) => br.possible_dests.iter().collect(),
        Terminator::Invoke(invoke) => vec![&invoke.return_label, &invoke.exception_label],
        Terminator::CallBr(callbr) => vec![&callbr.return_label],
        _ => Vec::new(),
    }
}

/// The items of the function being read, and the inline-asm statements seen so far.
struct Extracted<'a> {
    id: FnId,
    arch: Arch,
    asm: &'a [RawAsm],
    asm_sites: &'a mut Vec<AsmSite>,
    asm_seen: usize,
    items: Vec<Item>,
    /// Address-taken functions and used globals already recorded in the current block.
    block_seen: HashSet<(bool, u32)>,
}

impl Extracted<'_> {
    fn takes_address(&mut self, function: FnId) {
        if self.block_seen.insert((true, function)) {
            self.items.push(Item::TakesAddress(function));
        }
    }

    fn uses_global(&mut self, global: u32) {
        if self.block_seen.insert((false, global)) {
            self.items.push(Item::UsesGlobal(global));
        }
    }
}

/// How an operand is used, for deciding whether a field's address escapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The address of a load or store, or the base of another `getelementptr`.
    Address,
    /// A comparison: a function that is only compared is never called through this use.
    Compared,
    Other,
}

struct Context<'m> {
    module: &'m Module,
    function: &'m llvm_ir::Function,
    side: &'m Sidecar,
    defs: HashMap<&'m Name, &'m Instruction>,
    params: HashMap<&'m Name, u32>,
    gep_fields: HashMap<&'m Name, Option<FieldId>>,
    summaries: &'m Summaries,
    /// The TBAA member of each load and store ([`Sidecar::access_tags`]), by instruction.
    tags: HashMap<*const Instruction, &'m str>,
}

/// What is known of every defined function before its callers are read.
pub(super) struct Summaries {
    /// What each defined function may return, in its own parameters' terms (see
    /// [`Summaries::new`]).
    returns: Vec<Source>,
    /// Parameters through which the function writes no function pointer (see
    /// [`Summaries::new`]).
    benign: HashSet<(FnId, u32)>,
}

impl<'m> Context<'m> {
    fn new(
        module: &'m Module,
        function: &'m llvm_ir::Function,
        side: &'m Sidecar,
        summaries: &'m Summaries,
    ) -> Context<'m> {
        let defs = function
            .basic_blocks
            .iter()
            .flat_map(|block| &block.instrs)
            .filter_map(|instruction| instruction.try_get_result().map(|name| (name, instruction)))
            .collect();
        let params = function.parameters.iter().enumerate().map(|(index, param)| (&param.name, index as u32)).collect();
        let accesses = function
            .basic_blocks
            .iter()
            .flat_map(|block| &block.instrs)
            .filter(|instruction| matches!(instruction, Instruction::Load(_) | Instruction::Store(_)));
        let tags = match side.access_tags.get(&function.name) {
            Some(tags) => accesses
                .zip(tags)
                .filter_map(|(instruction, tag)| Some((std::ptr::from_ref(instruction), tag.as_deref()?)))
                .collect(),
            None => HashMap::new(),
        };
        Context { module, function, side, defs, params, gep_fields: HashMap::new(), summaries, tags }
    }

    /// Marks fields whose address is used for anything but loads and stores through it: a
    /// store through the escaped address could write any function into the field. The address
    /// of a (member) object is its first field's too: handed to code outside the bitcode, which
    /// may write through it without a typed store, it pollutes that field.
    fn mark_pollution(&mut self, symbols: &mut Symbols) {
        let mut escaped = Vec::new();
        let external = self.external_arguments(symbols);
        let benign = self.benign_arguments(symbols);
        for block in &self.function.basic_blocks {
            for instruction in &block.instrs {
                escaped.extend(
                    operands(instruction).into_iter().filter(|(_, role)| *role == Role::Other).map(|(op, _)| op),
                );
            }
            escaped.extend(terminator_operands(&block.term));
        }
        for operand in escaped {
            // Nothing can write into a read-only global, whoever gets its address; a callee that
            // writes no function through its parameter leaves the field as it was.
            if self.in_constant_global(operand, symbols) || benign.contains(&std::ptr::from_ref(operand)) {
                continue;
            }
            let to_external = external.contains(&std::ptr::from_ref(operand));
            // Elsewhere, a pointer to a (member) object escaping is like any object pointer
            // escaping: its fields are still written through typed stores.
            if !to_external && self.selects_object(operand) {
                continue;
            }
            let field = match operand {
                Operand::LocalOperand { name, .. } => self.local_field(name, symbols),
                // A struct global's own address escaping within the bitcode is like any object
                // pointer escaping. A pointer-typed global has no typed stores, so its address
                // escaping means untraceable writes.
                Operand::ConstantOperand(constant) => match constant.as_ref() {
                    Constant::GlobalReference { name, .. } => name_str(name)
                        .and_then(|name| self.side.global_fields.get(name))
                        .filter(|field| to_external || field.starts_with('@'))
                        .map(|field| symbols.field_id(field)),
                    _ => self.constant_field(constant, symbols),
                },
                Operand::MetadataOperand => None,
            };
            if let Some(field) = field {
                symbols.polluted[field as usize] = true;
            }
        }
    }

    /// The arguments of calls to code outside the bitcode: declared functions and calls through
    /// pointers (memory copies aside, which move what is already there).
    fn external_arguments(&self, symbols: &Symbols) -> HashSet<*const Operand> {
        let mut external = HashSet::new();
        for instruction in self.function.basic_blocks.iter().flat_map(|block| &block.instrs) {
            let Instruction::Call(call) = instruction else { continue };
            let outside = match call.function.as_ref().right() {
                Some(Operand::ConstantOperand(constant)) => match constant.as_ref() {
                    Constant::GlobalReference { name, .. } => {
                        let declared = symbols.function(name).is_none_or(|id| id as usize >= symbols.defined);
                        declared && !copies_memory(call.function.as_ref().right().expect("matched above"))
                    }
                    _ => true,
                },
                Some(_) => true,
                None => false,
            };
            if outside {
                external.extend(call.arguments.iter().map(|(arg, _)| std::ptr::from_ref(arg)));
            }
        }
        for block in &self.function.basic_blocks {
            if let Terminator::Invoke(invoke) = &block.term {
                external.extend(invoke.arguments.iter().map(|(arg, _)| std::ptr::from_ref(arg)));
            }
        }
        external
    }

    /// The arguments of direct calls that go to a benign parameter of a defined function.
    fn benign_arguments(&self, symbols: &Symbols) -> HashSet<*const Operand> {
        let mut benign = HashSet::new();
        for instruction in self.function.basic_blocks.iter().flat_map(|block| &block.instrs) {
            let Instruction::Call(call) = instruction else { continue };
            let Some(callee) = call.function.as_ref().right().and_then(|callee| self.defined_callee(callee, symbols))
            else {
                continue;
            };
            for (index, (arg, _)) in call.arguments.iter().enumerate() {
                if self.summaries.benign.contains(&(callee, index as u32)) {
                    benign.insert(std::ptr::from_ref(arg));
                }
            }
        }
        benign
    }

    fn defined_callee(&self, callee: &Operand, symbols: &Symbols) -> Option<FnId> {
        let Operand::ConstantOperand(constant) = callee else { return None };
        let Constant::GlobalReference { name, .. } = constant.as_ref() else { return None };
        symbols.function(name).filter(|&id| (id as usize) < symbols.defined)
    }

    /// Whether this function writes no function pointer into the memory its parameter points
    /// to: the parameter and pointer arithmetic, phis and selects of it (not typed member
    /// accesses, which name their own fields) are only loaded from, compared, updated atomically
    /// with integers, stored through with values that are not pointers or are proven data,
    /// cleared (`memset`), copied (as a direct `memcpy` in the caller is, see [`copies_memory`]),
    /// or passed to benign parameters. Storing the pointer itself, returning it, or handing it
    /// anywhere else is not.
    fn param_is_benign(&mut self, param: &'m Name, symbols: &mut Symbols) -> bool {
        let instructions = || self.function.basic_blocks.iter().flat_map(|block| &block.instrs);
        let mut aliases: HashSet<&'m Name> = HashSet::from([param]);
        loop {
            let before = aliases.len();
            for instruction in instructions() {
                let (address, result) = match instruction {
                    Instruction::GetElementPtr(gep) => {
                        let indices: Vec<Option<u64>> = gep.indices.iter().map(constant_int).collect();
                        let source = IrType { ty: gep.source_element_type.clone(), types: &self.module.types };
                        if matches!(gep_key(source, &indices), GepKey::Field(_) | GepKey::Object(_)) {
                            continue;
                        }
                        (&gep.address, &gep.dest)
                    }
                    Instruction::BitCast(cast) => (&cast.operand, &cast.dest),
                    Instruction::AddrSpaceCast(cast) => (&cast.operand, &cast.dest),
                    // A pointer that may be the parameter's (a loop's cursor) is checked like it.
                    Instruction::Phi(phi) => {
                        if phi.incoming_values.iter().any(|(value, _)| is_alias(&aliases, value)) {
                            aliases.insert(&phi.dest);
                        }
                        continue;
                    }
                    Instruction::Select(select) => {
                        if is_alias(&aliases, &select.true_value) || is_alias(&aliases, &select.false_value) {
                            aliases.insert(&select.dest);
                        }
                        continue;
                    }
                    _ => continue,
                };
                if is_alias(&aliases, address) {
                    aliases.insert(result);
                }
            }
            if aliases.len() == before {
                break;
            }
        }
        let alias = |operand: &Operand| is_alias(&aliases, operand);
        let pointer = |operand: &Operand| matches!(self.module.type_of(operand).as_ref(), Type::PointerType { .. });
        for instruction in instructions() {
            let benign = match instruction {
                Instruction::Load(_) | Instruction::ICmp(_) => true,
                Instruction::GetElementPtr(gep) => gep.indices.iter().all(|index| !alias(index)),
                Instruction::BitCast(_) | Instruction::AddrSpaceCast(_) => true,
                Instruction::Phi(_) | Instruction::Select(_) => true,
                // Atomic updates of a lock word or counter write integers.
                Instruction::CmpXchg(op) => {
                    !alias(&op.expected) && !alias(&op.replacement) && !pointer(&op.replacement)
                }
                Instruction::AtomicRMW(op) => !alias(&op.value) && !pointer(&op.value),
                Instruction::Store(store) if alias(&store.value) => false,
                Instruction::Store(store) if alias(&store.address) => {
                    !pointer(&store.value)
                        || self.source(&store.value, symbols, &mut HashSet::new()) == Source::default()
                }
                Instruction::Call(call) => {
                    let callee = call.function.as_ref().right();
                    let name = callee.and_then(callee_name).unwrap_or_default();
                    let defined = callee.and_then(|callee| self.defined_callee(callee, symbols));
                    let base = name
                        .strip_prefix("llvm.")
                        .map_or(name, |intrinsic| intrinsic.split('.').next().unwrap_or_default());
                    callee.is_none_or(|callee| !alias(callee))
                        && call.arguments.iter().enumerate().all(|(index, (arg, _))| {
                            !alias(arg)
                                || matches!(base, "memset" | "bzero" | "explicit_bzero" | "lifetime" | "objectsize")
                                // Copies move field contents between objects of the same type,
                                // as for a direct call in the caller (see `copies_memory`).
                                || matches!(base, "memcpy" | "memmove")
                                || defined.is_some_and(|id| self.summaries.benign.contains(&(id, index as u32)))
                        })
                }
                other => operands(other).iter().all(|(operand, _)| !alias(operand)),
            };
            if !benign {
                return false;
            }
        }
        self.function.basic_blocks.iter().all(|block| terminator_operands(&block.term).into_iter().all(|op| !alias(op)))
    }

    /// Whether an address points into a `constant` global, through `getelementptr`s and casts.
    fn in_constant_global(&self, operand: &Operand, symbols: &Symbols) -> bool {
        match operand {
            Operand::LocalOperand { name, .. } => match self.defs.get(name) {
                Some(Instruction::GetElementPtr(gep)) => self.in_constant_global(&gep.address, symbols),
                Some(Instruction::BitCast(cast)) => self.in_constant_global(&cast.operand, symbols),
                _ => false,
            },
            Operand::ConstantOperand(constant) => constant_in_constant_global(constant, symbols),
            Operand::MetadataOperand => false,
        }
    }

    /// Whether `operand` is a `getelementptr` that selects a struct rather than a scalar field.
    fn selects_object(&self, operand: &Operand) -> bool {
        match operand {
            Operand::LocalOperand { name, .. } => match self.defs.get(name) {
                Some(Instruction::GetElementPtr(gep)) => {
                    let indices: Vec<Option<u64>> = gep.indices.iter().map(constant_int).collect();
                    let source = IrType { ty: gep.source_element_type.clone(), types: &self.module.types };
                    matches!(gep_key(source, &indices), GepKey::Object(_))
                }
                _ => false,
            },
            Operand::ConstantOperand(constant) => match constant.as_ref() {
                Constant::GetElementPtr(gep) => {
                    let Constant::GlobalReference { name, .. } = gep.address.as_ref() else { return false };
                    let indices: Vec<Option<u64>> = gep.indices.iter().map(|index| int_value(index)).collect();
                    name_str(name).is_some_and(|name| {
                        matches!(self.side.constant_geps.get(&(name.to_owned(), indices)), Some(GepKey::Object(_)))
                    })
                }
                _ => false,
            },
            Operand::MetadataOperand => false,
        }
    }

    fn instruction(&mut self, instruction: &'m Instruction, symbols: &mut Symbols, out: &mut Extracted<'_>) {
        match instruction {
            Instruction::Call(call) => self.call(call, symbols, out),
            Instruction::Store(store) => {
                self.references(&store.address, Role::Address, symbols, out);
                self.references(&store.value, Role::Other, symbols, out);
                self.field_store(instruction, &store.address, &store.value, symbols, out);
            }
            _ => {
                for (operand, role) in operands(instruction) {
                    self.references(operand, role, symbols, out);
                }
            }
        }
    }

    fn terminator(&mut self, term: &'m Terminator, symbols: &mut Symbols, out: &mut Extracted<'_>) {
        match term {
            Terminator::Ret(ret) => {
                if let Some(operand) = &ret.return_operand {
                    self.references(operand, Role::Other, symbols, out);
                }
            }
            Terminator::Invoke(invoke) => {
                let call = CallParts {
                    callee: invoke.function.as_ref().right(),
                    ty: &invoke.function_ty,
                    args: &invoke.arguments,
                };
                self.call_parts(call, symbols, out);
            }
            _ => {}
        }
    }

    /// Records the functions and globals an operand's constants refer to.
    fn references(&self, operand: &Operand, role: Role, symbols: &Symbols, out: &mut Extracted<'_>) {
        if let Operand::ConstantOperand(constant) = operand {
            constant_references(constant, &mut |name| {
                if let Some(function) = symbols.function(name) {
                    if role != Role::Compared {
                        out.takes_address(function);
                    }
                } else if let Some(global) = symbols.global(name) {
                    out.uses_global(global);
                }
            });
        }
    }

    fn call(&mut self, call: &'m Call, symbols: &mut Symbols, out: &mut Extracted<'_>) {
        let parts = CallParts { callee: call.function.as_ref().right(), ty: &call.function_ty, args: &call.arguments };
        self.call_parts(parts, symbols, out);
    }

    fn call_parts(&mut self, call: CallParts<'m>, symbols: &mut Symbols, out: &mut Extracted<'_>) {
        for (arg, _) in call.args {
            self.references(arg, Role::Other, symbols, out);
        }
        let Some(callee) = call.callee else {
            self.inline_asm(out);
            return;
        };
        let direct = match callee {
            Operand::ConstantOperand(constant) => match constant.as_ref() {
                Constant::GlobalReference { name, .. } => symbols.function(name).map(|id| (id, name)),
                _ => None,
            },
            _ => None,
        };
        let Some((target, name)) = direct else {
            let ty = symbols.type_id(call.ty.to_string());
            let callee = self.source(callee, symbols, &mut HashSet::new());
            out.items.push(Item::Indirect { ty, callee });
            return;
        };
        let name = name_str(name).unwrap_or_default();
        if name.starts_with("llvm.") {
            return;
        }
        let numbers: Box<[Number]> = call.args.iter().map(|(arg, _)| self.number(arg)).collect();
        let known = numbers.iter().any(|number| *number != Number::Unknown);
        out.items.push(Item::Call { callee: target, args: if known { numbers } else { Box::default() } });
        if target as usize >= symbols.defined {
            self.library_call(name, call.args, symbols, out);
            return;
        }
        for (index, (arg, _)) in call.args.iter().enumerate() {
            if !matches!(self.module.type_of(arg).as_ref(), Type::PointerType { .. }) {
                continue;
            }
            let value = self.source(arg, symbols, &mut HashSet::new());
            if value != Source::default() {
                out.items.push(Item::Passes { callee: target, arg: index as u32, value });
            }
        }
    }

    fn inline_asm(&self, out: &mut Extracted<'_>) {
        let ordinal = out.asm_seen;
        out.asm_seen += 1;
        let Some(raw) = out.asm.get(ordinal) else { return };
        if !issues_syscalls(&raw.text) {
            return;
        }
        let arch = asm_arch(&raw.text, out.arch);
        let site = AsmSite { function: out.id, text: raw.text.clone(), number: asm_number(raw, arch), arch };
        out.items.push(Item::Asm(out.asm_sites.len() as u32));
        out.asm_sites.push(site);
    }

    /// A call into a library: function pointers handed over are callbacks; the registrars'
    /// callbacks are signal handlers, thread starts or exit handlers.
    fn library_call(
        &mut self,
        name: &str,
        args: &'m [(Operand, Vec<llvm_ir::function::ParameterAttribute>)],
        symbols: &mut Symbols,
        out: &mut Extracted<'_>,
    ) {
        let registrar = REGISTRARS.iter().find(|(registrar, ..)| *registrar == name);
        for (index, (arg, _)) in args.iter().enumerate() {
            let (kind, value) = match registrar {
                Some(&(_, position, kind)) if position == index => {
                    (kind, without_params(self.source(arg, symbols, &mut HashSet::new())))
                }
                _ if index == 1 && SIGACTION.contains(&name) => {
                    (AsyncKind::SignalHandler, self.sigaction_handler(arg, symbols))
                }
                // Only functions named here count: a pointer loaded from a field is far more often
                // data (field types of the same shape are merged by the IR linker), and the
                // functions a field holds had their addresses taken where they were stored.
                _ => {
                    let functions = self.source(arg, symbols, &mut HashSet::new()).functions;
                    (AsyncKind::LibraryCallback, Source { functions, ..Source::default() })
                }
            };
            if value != Source::default() {
                out.items.push(Item::Registers { kind, value });
            }
        }
    }

    /// The handler stored into the `struct sigaction` passed to `sigaction`: the stores in this
    /// function at offset 0 of the same stack object. Anything else is untraceable.
    fn sigaction_handler(&mut self, arg: &'m Operand, symbols: &mut Symbols) -> Source {
        let Some(object) = self.offset_zero_base(arg) else {
            return Source { unknown: true, ..Source::default() };
        };
        let mut handler = Source::default();
        let stores = self.stores();
        for (address, value) in stores {
            if self.offset_zero_base(address) == Some(object) {
                let stored = self.source(value, symbols, &mut HashSet::new());
                merge(&mut handler, stored);
            }
        }
        if handler == Source::default() {
            handler.unknown = true;
        }
        without_params(handler)
    }

    /// Every store in the function, as (address, value).
    fn stores(&self) -> Vec<(&'m Operand, &'m Operand)> {
        let instructions = self.function.basic_blocks.iter().flat_map(|block| &block.instrs);
        instructions
            .filter_map(|instruction| match instruction {
                Instruction::Store(store) => Some((&store.address, &store.value)),
                _ => None,
            })
            .collect()
    }

    /// The stack object an address is at offset 0 of (through all-zero `getelementptr`s).
    fn offset_zero_base(&self, operand: &'m Operand) -> Option<&'m Name> {
        let Operand::LocalOperand { name, .. } = operand else { return None };
        match self.defs.get(name)? {
            Instruction::Alloca(_) => Some(name),
            Instruction::GetElementPtr(gep) if gep.indices.iter().all(|index| constant_int(index) == Some(0)) => {
                self.offset_zero_base(&gep.address)
            }
            _ => None,
        }
    }

    fn field_store(
        &mut self,
        instruction: &'m Instruction,
        address: &'m Operand,
        value: &'m Operand,
        symbols: &mut Symbols,
        out: &mut Extracted<'_>,
    ) {
        if !matches!(self.module.type_of(value).as_ref(), Type::PointerType { .. }) {
            return;
        }
        let mut stored = self.source(value, symbols, &mut HashSet::new());
        let field = match self.access_field(instruction, address, symbols) {
            Some(field) => {
                symbols.polluted[field as usize] |= stored.unknown;
                field
            }
            // An untraceable value written to untraceable memory was address-taken where it was
            // made; what is traceable joins every field-resolved call of its type.
            None => UNTYPED_MEMORY,
        };
        stored.unknown = false;
        if stored != Source::default() {
            out.items.push(Item::FieldStore { field, value: stored });
        }
    }

    /// Where a function-pointer value may come from.
    fn source(&mut self, operand: &'m Operand, symbols: &mut Symbols, seen: &mut HashSet<&'m Name>) -> Source {
        let name = match operand {
            Operand::ConstantOperand(constant) => {
                let mut source = Source::default();
                constant_references(constant, &mut |name| source.functions.extend(symbols.function(name)));
                return source;
            }
            Operand::LocalOperand { name, .. } => name,
            Operand::MetadataOperand => return Source::default(),
        };
        if !seen.insert(name) {
            return Source::default();
        }
        if let Some(&param) = self.params.get(name) {
            return Source { params: vec![param], ..Source::default() };
        }
        let Some(def) = self.defs.get(name).copied() else {
            // A value defined by an invoke.
            return Source { unknown: true, ..Source::default() };
        };
        match def {
            Instruction::Load(load) => match self.access_field(def, &load.address, symbols) {
                Some(field) => Source { fields: vec![field], ..Source::default() },
                None => self.stack_slot(&load.address, symbols, seen),
            },
            Instruction::Call(call) => self.call_result(call, symbols, seen),
            Instruction::IntToPtr(cast) => {
                let source = self.int_source(&cast.operand, symbols, seen);
                proven_data(source)
            }
            Instruction::Phi(phi) => {
                let mut source = Source::default();
                for (value, _) in &phi.incoming_values {
                    let incoming = self.source(value, symbols, seen);
                    merge(&mut source, incoming);
                }
                source
            }
            Instruction::Select(select) => {
                let mut source = self.source(&select.true_value, symbols, seen);
                let other = self.source(&select.false_value, symbols, seen);
                merge(&mut source, other);
                source
            }
            Instruction::BitCast(cast) => self.source(&cast.operand, symbols, seen),
            Instruction::AddrSpaceCast(cast) => self.source(&cast.operand, symbols, seen),
            Instruction::Freeze(freeze) => self.source(&freeze.operand, symbols, seen),
            // The address of a stack slot or of part of an object is data, never a function.
            Instruction::Alloca(_) | Instruction::GetElementPtr(_) => Source::default(),
            _ => Source { unknown: true, ..Source::default() },
        }
    }

    /// What a call returns: a defined function's return values with its parameters replaced by
    /// this call's arguments; nothing that is a function for an allocator; anything otherwise.
    fn call_result(&mut self, call: &'m Call, symbols: &mut Symbols, seen: &mut HashSet<&'m Name>) -> Source {
        let unknown = Source { unknown: true, ..Source::default() };
        let Some(Operand::ConstantOperand(callee)) = call.function.as_ref().right() else { return unknown };
        let Constant::GlobalReference { name, .. } = callee.as_ref() else { return unknown };
        let Some(id) = symbols.function(name) else { return unknown };
        if id as usize >= symbols.defined {
            let allocates = name_str(name).is_some_and(|name| ALLOCATORS.contains(&name));
            return if allocates { Source::default() } else { unknown };
        }
        let returned = self.summaries.returns.get(id as usize).cloned().unwrap_or(unknown);
        let mut source = Source { params: Vec::new(), ..returned.clone() };
        for param in returned.params {
            let passed = match call.arguments.get(param as usize) {
                Some((arg, _)) => self.source(arg, symbols, seen),
                None => Source { unknown: true, ..Source::default() },
            };
            merge(&mut source, passed);
        }
        proven_data(source)
    }

    /// Where a pointer made from an integer comes from: the pointers whose addresses went into
    /// the arithmetic (aligning or tagging a pointer keeps what it points to); constants are no
    /// function addresses; anything else (an integer loaded or computed otherwise) is unknown.
    fn int_source(&mut self, operand: &'m Operand, symbols: &mut Symbols, seen: &mut HashSet<&'m Name>) -> Source {
        let unknown = Source { unknown: true, ..Source::default() };
        let Operand::LocalOperand { name, .. } = operand else {
            return if constant_int(operand).is_some() { Source::default() } else { unknown };
        };
        match self.defs.get(name).copied() {
            Some(Instruction::PtrToInt(cast)) => self.source(&cast.operand, symbols, seen),
            Some(Instruction::ZExt(cast)) => self.int_source(&cast.operand, symbols, seen),
            Some(Instruction::SExt(cast)) => self.int_source(&cast.operand, symbols, seen),
            Some(Instruction::Trunc(cast)) => self.int_source(&cast.operand, symbols, seen),
            Some(Instruction::Add(op)) => self.int_sources(&op.operand0, &op.operand1, symbols, seen),
            Some(Instruction::Sub(op)) => self.int_sources(&op.operand0, &op.operand1, symbols, seen),
            Some(Instruction::And(op)) => self.int_sources(&op.operand0, &op.operand1, symbols, seen),
            Some(Instruction::Or(op)) => self.int_sources(&op.operand0, &op.operand1, symbols, seen),
            _ => unknown,
        }
    }

    fn int_sources(
        &mut self,
        left: &'m Operand,
        right: &'m Operand,
        symbols: &mut Symbols,
        seen: &mut HashSet<&'m Name>,
    ) -> Source {
        let mut source = self.int_source(left, symbols, seen);
        let other = self.int_source(right, symbols, seen);
        merge(&mut source, other);
        source
    }

    /// A load from a stack slot holds what this function stores there, when the slot's address
    /// goes nowhere else but to lifetime markers and as the result slot of an allocator
    /// (`posix_memalign`, which writes a heap address). Any other load through an untyped
    /// pointer is unknown.
    fn stack_slot(&mut self, address: &'m Operand, symbols: &mut Symbols, seen: &mut HashSet<&'m Name>) -> Source {
        let unknown = Source { unknown: true, ..Source::default() };
        let Operand::LocalOperand { name: slot, .. } = address else { return unknown };
        if !matches!(self.defs.get(slot), Some(Instruction::Alloca(_))) {
            return unknown;
        }
        let is_slot = |operand: &Operand| matches!(operand, Operand::LocalOperand { name, .. } if name == slot);
        let mut stored: Vec<&'m Operand> = Vec::new();
        for block in &self.function.basic_blocks {
            for instruction in &block.instrs {
                let fine = match instruction {
                    Instruction::Load(_) => true,
                    Instruction::Store(store) if is_slot(&store.address) && !is_slot(&store.value) => {
                        stored.push(&store.value);
                        true
                    }
                    Instruction::Call(call) => {
                        let name = call.function.as_ref().right().and_then(callee_name).unwrap_or_default();
                        call.arguments.iter().enumerate().all(|(index, (arg, _))| {
                            !is_slot(arg)
                                || name.starts_with("llvm.lifetime.")
                                || (index == 0 && SLOT_ALLOCATORS.contains(&name))
                        })
                    }
                    other => operands(other).iter().all(|(operand, _)| !is_slot(operand)),
                };
                if !fine {
                    return unknown;
                }
            }
            if terminator_operands(&block.term).into_iter().any(is_slot) {
                return unknown;
            }
        }
        let mut source = Source::default();
        for value in stored {
            let from = self.source(value, symbols, seen);
            merge(&mut source, from);
        }
        proven_data(source)
    }

    /// The field a load or store touches: by its TBAA tag, a member of the C struct it was
    /// written against, when its address names a field of the (merged) IR struct directly; else
    /// that IR field. A member is a part of its IR field: what is stored into either is read
    /// through the other (see [`super::Symbols::member_field`]).
    fn access_field(
        &mut self,
        instruction: &'m Instruction,
        address: &'m Operand,
        symbols: &mut Symbols,
    ) -> Option<FieldId> {
        let field = self.address_field(address, symbols)?;
        match self.tags.get(&std::ptr::from_ref(instruction)) {
            Some(tag) if self.names_field_directly(address) => Some(symbols.member_field(field, tag)),
            _ => Some(field),
        }
    }

    /// Whether an address is a typed member access itself, not pointer arithmetic on one (whose
    /// IR field, that of its base, need not be the member its tag names).
    fn names_field_directly(&self, address: &Operand) -> bool {
        let named = |key: Option<&GepKey>| matches!(key, Some(GepKey::Field(_) | GepKey::Object(_)));
        match address {
            Operand::LocalOperand { name, .. } => match self.defs.get(name) {
                Some(Instruction::GetElementPtr(gep)) => {
                    let indices: Vec<Option<u64>> = gep.indices.iter().map(constant_int).collect();
                    let source = IrType { ty: gep.source_element_type.clone(), types: &self.module.types };
                    named(Some(&gep_key(source, &indices)))
                }
                _ => false,
            },
            Operand::ConstantOperand(constant) => match constant.as_ref() {
                Constant::GlobalReference { name, .. } => name_str(name)
                    .and_then(|name| self.side.global_fields.get(name))
                    .is_some_and(|field| !field.starts_with('@')),
                Constant::GetElementPtr(gep) => {
                    let Constant::GlobalReference { name, .. } = gep.address.as_ref() else { return false };
                    let indices: Vec<Option<u64>> = gep.indices.iter().map(|index| int_value(index)).collect();
                    name_str(name).is_some_and(|name| named(self.side.constant_geps.get(&(name.to_owned(), indices))))
                }
                _ => false,
            },
            Operand::MetadataOperand => false,
        }
    }

    /// The struct field an address points into, when it is a named field.
    fn address_field(&mut self, address: &'m Operand, symbols: &mut Symbols) -> Option<FieldId> {
        match address {
            Operand::LocalOperand { name, .. } => self.local_field(name, symbols),
            Operand::ConstantOperand(constant) => self.constant_field(constant, symbols),
            Operand::MetadataOperand => None,
        }
    }

    /// The field a constant address points into: a constant `getelementptr`, or a global's own
    /// first field.
    fn constant_field(&self, constant: &Constant, symbols: &mut Symbols) -> Option<FieldId> {
        if let Constant::GlobalReference { name, .. } = constant {
            return self.side.global_fields.get(name_str(name)?).map(|field| symbols.field_id(field));
        }
        let Constant::GetElementPtr(gep) = constant else { return None };
        let Constant::GlobalReference { name, .. } = gep.address.as_ref() else { return None };
        let indices: Vec<Option<u64>> = gep.indices.iter().map(|index| int_value(index)).collect();
        match self.side.constant_geps.get(&(name_str(name)?.to_owned(), indices))? {
            GepKey::Field(field) | GepKey::Object(field) => Some(symbols.field_id(field)),
            GepKey::NoStruct => self.constant_field(&gep.address, symbols),
            GepKey::Untyped => None,
        }
    }

    fn local_field(&mut self, name: &'m Name, symbols: &mut Symbols) -> Option<FieldId> {
        if let Some(&field) = self.gep_fields.get(name) {
            return field;
        }
        let field = match self.defs.get(name) {
            Some(Instruction::GetElementPtr(gep)) => self.gep_field(gep, symbols),
            _ => None,
        };
        self.gep_fields.insert(name, field);
        field
    }

    fn gep_field(&mut self, gep: &'m GetElementPtr, symbols: &mut Symbols) -> Option<FieldId> {
        let indices: Vec<Option<u64>> = gep.indices.iter().map(constant_int).collect();
        let source = IrType { ty: gep.source_element_type.clone(), types: &self.module.types };
        match gep_key(source, &indices) {
            GepKey::Field(field) | GepKey::Object(field) => Some(symbols.field_id(&field)),
            GepKey::NoStruct => self.address_field(&gep.address, symbols),
            GepKey::Untyped => None,
        }
    }

    /// What is known of an integer argument.
    fn number(&self, operand: &Operand) -> Number {
        match operand {
            Operand::ConstantOperand(_) => constant_int(operand).map_or(Number::Unknown, Number::Const),
            Operand::LocalOperand { name, .. } => {
                if let Some(&param) = self.params.get(name) {
                    return Number::Param(param);
                }
                match self.defs.get(name) {
                    Some(Instruction::SExt(cast)) => self.number(&cast.operand),
                    Some(Instruction::ZExt(cast)) => self.number(&cast.operand),
                    Some(Instruction::Trunc(cast)) => self.number(&cast.operand),
                    _ => Number::Unknown,
                }
            }
            Operand::MetadataOperand => Number::Unknown,
        }
    }
}

/// A call or invoke: the callee (`None` for inline assembly), its function type, its arguments.
struct CallParts<'m> {
    callee: Option<&'m Operand>,
    ty: &'m TypeRef,
    args: &'m [(Operand, Vec<llvm_ir::function::ParameterAttribute>)],
}

fn merge(into: &mut Source, from: Source) {
    into.functions.extend(from.functions);
    into.fields.extend(from.fields);
    into.params.extend(from.params);
    into.unknown |= from.unknown;
    into.functions.sort_unstable();
    into.functions.dedup();
    into.fields.sort_unstable();
    into.fields.dedup();
    into.params.sort_unstable();
    into.params.dedup();
}

/// A value handed to a library: the library calls it whenever it likes, with arguments the
/// analysis does not follow, so what the enclosing function's callers pass counts as unknown.
fn without_params(mut source: Source) -> Source {
    if !source.params.is_empty() {
        source.params.clear();
        source.unknown = true;
    }
    source
}

/// Library functions that return fresh heap or mapped memory, never a code address: their
/// results are data wherever they are stored.
const ALLOCATORS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "strdup",
    "strndup",
    "mmap",
    "mmap64",
];

/// Library functions that write a fresh heap address through their first argument.
const SLOT_ALLOCATORS: &[&str] = &["posix_memalign"];

impl Summaries {
    /// Both summaries, each to a fixed point. Returns first: what each defined function may
    /// return (indexed by [`FnId`]), as a [`Source`] whose `params` are its own parameters, so
    /// that a call's result is the callee's returned functions and fields plus what the call
    /// passes for those parameters, instead of unknown. Allocators written in the application
    /// (`ngx_palloc_large`, `ngx_alloc`) return data this way, and storing their results into a
    /// field no longer pollutes it. Grown from "returns nothing".
    ///
    /// Then the benign pointer parameters: shrunk from "every one" until each remaining one is
    /// only used as [`Context::param_is_benign`] allows, given the others. A field whose address
    /// goes only to benign parameters keeps its writes understood.
    pub(super) fn new(module: &Module, side: &Sidecar, symbols: &mut Symbols) -> Summaries {
        let mut summaries =
            Summaries { returns: vec![Source::default(); module.functions.len()], benign: HashSet::new() };
        loop {
            let mut next = Vec::with_capacity(module.functions.len());
            for function in &module.functions {
                let mut returned = Source::default();
                if matches!(function.return_type.as_ref(), Type::PointerType { .. }) {
                    let mut cx = Context::new(module, function, side, &summaries);
                    for block in &function.basic_blocks {
                        if let Terminator::Ret(ret) = &block.term
                            && let Some(operand) = &ret.return_operand
                        {
                            let value = cx.source(operand, symbols, &mut HashSet::new());
                            merge(&mut returned, value);
                        }
                    }
                }
                next.push(returned);
            }
            if next == summaries.returns {
                break;
            }
            summaries.returns = next;
        }
        for (id, function) in module.functions.iter().enumerate() {
            for (index, param) in function.parameters.iter().enumerate() {
                if matches!(param.ty.as_ref(), Type::PointerType { .. }) {
                    summaries.benign.insert((id as FnId, index as u32));
                }
            }
        }
        // A parameter turns harmful only through its own body or a callee's parameter turning
        // harmful: after the first round, only the callers of what changed are checked again.
        let mut callers: HashMap<FnId, Vec<FnId>> = HashMap::new();
        for (id, function) in module.functions.iter().enumerate() {
            for instruction in function.basic_blocks.iter().flat_map(|block| &block.instrs) {
                let Instruction::Call(call) = instruction else { continue };
                let callee = call.function.as_ref().right().and_then(callee_name);
                if let Some(callee) = callee.and_then(|name| symbols.functions.get(name)) {
                    callers.entry(*callee).or_default().push(id as FnId);
                }
            }
        }
        let mut pending: Vec<FnId> = (0..module.functions.len() as FnId).collect();
        loop {
            let mut harmful = Vec::new();
            for &id in &pending {
                let function = &module.functions[id as usize];
                let candidate = |index: usize| summaries.benign.contains(&(id, index as u32));
                if !(0..function.parameters.len()).any(candidate) {
                    continue;
                }
                let mut cx = Context::new(module, function, side, &summaries);
                for (index, param) in function.parameters.iter().enumerate() {
                    let key = (id, index as u32);
                    if summaries.benign.contains(&key) && !cx.param_is_benign(&param.name, symbols) {
                        harmful.push(key);
                    }
                }
            }
            if harmful.is_empty() {
                return summaries;
            }
            pending.clear();
            for key in harmful {
                summaries.benign.remove(&key);
                pending.extend(callers.get(&key.0).into_iter().flatten());
            }
            pending.sort_unstable();
            pending.dedup();
        }
    }
}

/// A call result, a pointer made from an integer or a stack slot's contents is either proven to
/// be data — no function can be in it — or unknown, as before these were traced: a value that
/// may hold what a field holds would otherwise join untyped memory wherever it is stored there,
/// and widen every field-resolved call. The enclosing function's parameters stay: its callers
/// decide (a call's result maps them to its arguments, then decides again).
fn proven_data(source: Source) -> Source {
    if source.functions.is_empty() && source.fields.is_empty() && !source.unknown {
        source
    } else {
        Source { unknown: true, ..Source::default() }
    }
}

fn constant_in_constant_global(constant: &Constant, symbols: &Symbols) -> bool {
    match constant {
        Constant::GlobalReference { name, .. } => {
            symbols.global(name).is_some_and(|global| symbols.constant[global as usize])
        }
        Constant::GetElementPtr(gep) => constant_in_constant_global(&gep.address, symbols),
        Constant::BitCast(cast) => constant_in_constant_global(&cast.operand, symbols),
        _ => false,
    }
}

fn is_alias(aliases: &HashSet<&Name>, operand: &Operand) -> bool {
    matches!(operand, Operand::LocalOperand { name, .. } if aliases.contains(name))
}

fn callee_name(callee: &Operand) -> Option<&str> {
    let Operand::ConstantOperand(constant) = callee else { return None };
    let Constant::GlobalReference { name, .. } = constant.as_ref() else { return None };
    name_str(name)
}

fn constant_int(operand: &Operand) -> Option<u64> {
    match operand {
        Operand::ConstantOperand(constant) => int_value(constant),
        _ => None,
    }
}

fn int_value(constant: &Constant) -> Option<u64> {
    match constant {
        Constant::Int { value, .. } => Some(*value),
        _ => None,
    }
}

/// Calls `found` with every global name inside a constant (through constant expressions).
fn constant_references(constant: &Constant, found: &mut impl FnMut(&Name)) {
    match constant {
        Constant::GlobalReference { name, .. } => found(name),
        Constant::Struct { values, .. } => values.iter().for_each(|value| constant_references(value, found)),
        Constant::Array { elements, .. } => elements.iter().for_each(|element| constant_references(element, found)),
        Constant::Vector(elements) => elements.iter().for_each(|element| constant_references(element, found)),
        Constant::GetElementPtr(gep) => {
            constant_references(&gep.address, found);
        }
        Constant::BitCast(cast) => constant_references(&cast.operand, found),
        Constant::AddrSpaceCast(cast) => constant_references(&cast.operand, found),
        Constant::PtrToInt(cast) => constant_references(&cast.operand, found),
        Constant::IntToPtr(cast) => constant_references(&cast.operand, found),
        Constant::Trunc(cast) => constant_references(&cast.operand, found),
        Constant::Add(op) => {
            constant_references(&op.operand0, found);
            constant_references(&op.operand1, found);
        }
        Constant::Sub(op) => {
            constant_references(&op.operand0, found);
            constant_references(&op.operand1, found);
        }
        _ => {}
    }
}

/// Whether `callee` is `memcpy`, `memmove`, `memset` or one of their intrinsics.
fn copies_memory(callee: &Operand) -> bool {
    let Operand::ConstantOperand(constant) = callee else { return false };
    let Constant::GlobalReference { name, .. } = constant.as_ref() else { return false };
    let name = name_str(name).unwrap_or_default();
    let base = name.strip_prefix("llvm.").map_or(name, |intrinsic| intrinsic.split('.').next().unwrap_or_default());
    matches!(base, "memcpy" | "memmove" | "memset" | "bzero" | "explicit_bzero")
}

/// Operands of a terminator that can carry an address out of the function.
fn terminator_operands(term: &Terminator) -> Vec<&Operand> {
    match term {
        Terminator::Ret(ret) => ret.return_operand.iter().collect(),
        Terminator::Invoke(invoke) => invoke.arguments.iter().map(|(arg, _)| arg).collect(),
        _ => Vec::new(),
    }
}

/// Every operand of an instruction with its role (the callee of a direct call excluded).
fn operands(instruction: &Instruction) -> Vec<(&Operand, Role)> {
    use Instruction as I;
    macro_rules! binary {
        ($($variant:ident),*) => {
            match instruction {
                $(I::$variant(op) => return vec![(&op.operand0, Role::Other), (&op.operand1, Role::Other)],)*
                _ => {}
            }
        };
    }
    macro_rules! unary {
        ($($variant:ident),*) => {
            match instruction {
                $(I::$variant(op) => return vec![(&op.operand, Role::Other)],)*
                _ => {}
            }
        };
    }
    binary!(Add, Sub, Mul, UDiv, SDiv, URem, SRem, And, Or, Xor, Shl, LShr, AShr, FAdd, FSub, FMul, FDiv, FRem);
    unary!(FNeg, Trunc, ZExt, SExt, FPTrunc, FPExt, FPToUI, FPToSI, UIToFP, SIToFP, PtrToInt, IntToPtr, BitCast);
    unary!(AddrSpaceCast, Freeze);
    let other = |operand| (operand, Role::Other);
    match instruction {
        I::Load(load) => vec![(&load.address, Role::Address)],
        I::Store(store) => vec![(&store.address, Role::Address), other(&store.value)],
        I::GetElementPtr(gep) => {
            std::iter::once((&gep.address, Role::Address)).chain(gep.indices.iter().map(other)).collect()
        }
        I::ICmp(cmp) => vec![(&cmp.operand0, Role::Compared), (&cmp.operand1, Role::Compared)],
        I::FCmp(cmp) => vec![other(&cmp.operand0), other(&cmp.operand1)],
        I::Phi(phi) => phi.incoming_values.iter().map(|(value, _)| other(value)).collect(),
        I::Select(select) => vec![other(&select.condition), other(&select.true_value), other(&select.false_value)],
        I::Call(call) => {
            let callee = call.function.as_ref().right();
            // Copying or clearing memory moves field contents between objects of the same type
            // (or writes no functions): the addresses do not escape.
            let role = if callee.is_some_and(copies_memory) { Role::Address } else { Role::Other };
            let indirect = callee.filter(|callee| matches!(callee, Operand::LocalOperand { .. }));
            indirect.into_iter().map(other).chain(call.arguments.iter().map(|(arg, _)| (arg, role))).collect()
        }
        I::ExtractElement(op) => vec![other(&op.vector), other(&op.index)],
        I::InsertElement(op) => vec![other(&op.vector), other(&op.element), other(&op.index)],
        I::ShuffleVector(op) => vec![other(&op.operand0), other(&op.operand1)],
        I::ExtractValue(op) => vec![other(&op.aggregate)],
        I::InsertValue(op) => vec![other(&op.aggregate), other(&op.element)],
        I::Alloca(op) => vec![other(&op.num_elements)],
        I::CmpXchg(op) => vec![(&op.address, Role::Address), other(&op.expected), other(&op.replacement)],
        I::AtomicRMW(op) => vec![(&op.address, Role::Address), other(&op.value)],
        I::VAArg(op) => vec![other(&op.arg_list)],
        _ => Vec::new(),
    }
}

/// An llvm-ir type seen through [`TypeView`].
struct IrType<'t> {
    ty: TypeRef,
    types: &'t Types,
}

impl TypeView for IrType<'_> {
    fn shape(&self) -> Shape<Self> {
        let wrap = |ty: &TypeRef| IrType { ty: ty.clone(), types: self.types };
        match self.ty.as_ref() {
            Type::NamedStructType { name } => match self.types.named_struct_def(name) {
                Some(NamedStructDef::Defined(defined)) => match defined.as_ref() {
                    Type::StructType { element_types, .. } => {
                        Shape::Struct { name: Some(name.clone()), fields: element_types.iter().map(wrap).collect() }
                    }
                    _ => Shape::Scalar,
                },
                _ => Shape::Scalar,
            },
            Type::StructType { element_types, .. } => {
                Shape::Struct { name: None, fields: element_types.iter().map(wrap).collect() }
            }
            Type::ArrayType { element_type, .. } | Type::VectorType { element_type, .. } => {
                Shape::Sequence(wrap(element_type))
            }
            _ => Shape::Scalar,
        }
    }
}
