//! The facts the analysis needs from a bitcode module, and nothing else.
//!
//! Reading (`read.rs`, with LLVM) turns a module into a [`Program`]; everything after that is pure
//! Rust over these types, so the analysis is testable and the large LLVM structures are freed as
//! soon as the facts are out. Each function body keeps its facts in instruction order, grouped by
//! basic block with the block's successors, because the serving phase may start in the middle of
//! a function (after a call to a serving entry that returns).

use std::collections::{HashMap, HashSet};

use crate::syscalls::Arch;

/// Index into [`Program::functions`].
pub type FnId = u32;
/// Index into [`Program::globals`].
pub type GlobalId = u32;
/// Index into [`Program::types`].
pub type TypeId = u32;
/// Index into [`Program::fields`].
pub type FieldId = u32;

/// The pseudo-field for memory written without a known field: stores through untyped pointers
/// and initializer slots in unnamed structs. Every field-resolved indirect call also reads it.
pub const UNTYPED_MEMORY: FieldId = 0;

#[derive(Debug, Clone)]
pub struct Program {
    /// The producer string of the bitcode (`LLVM19.1.7`), when it has one.
    pub producer: Option<String>,
    /// The syscall ABI of the target triple: syscall numbers are numbered in it.
    pub arch: Arch,
    /// Defined functions and external declarations, in module order.
    pub functions: Vec<Function>,
    pub globals: Vec<Global>,
    /// Function types, printed as LLVM prints them (`void (ptr, i32)`); equal text, equal type.
    pub types: Vec<String>,
    pub fields: Vec<Field>,
    /// `llvm.global_ctors` and IFunc resolvers: run before `main`.
    pub constructors: Vec<FnId>,
    /// `llvm.global_dtors`: run at exit.
    pub destructors: Vec<FnId>,
    pub asm_sites: Vec<AsmSite>,
    /// Module-level inline assembly that issues syscalls (it has no function to attach to).
    pub module_asm_syscalls: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub ty: TypeId,
    /// `None` for an external declaration: a library function.
    pub body: Option<Body>,
}

#[derive(Debug, Clone, Default)]
pub struct Body {
    /// Facts in instruction order; [`Block::items`] ranges index into this.
    pub items: Vec<Item>,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub items: std::ops::Range<u32>,
    pub successors: Vec<u32>,
    /// Ends in `ret`: control can go back to the caller from here.
    pub returns: bool,
}

/// One fact about a function body.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A direct call. `args` holds what is known of each argument, for syscall wrappers; it is
    /// empty when no argument is a constant or a parameter.
    Call { callee: FnId, args: Box<[Number]> },
    /// A call through a pointer of function type `ty`.
    Indirect { ty: TypeId, callee: Source },
    /// The address of a function is used other than as a callee (stored, passed, returned, …).
    TakesAddress(FnId),
    /// A global variable is referenced; its initializer's function pointers become live with it.
    UsesGlobal(GlobalId),
    /// A function pointer is stored into a field (or into [`UNTYPED_MEMORY`]).
    FieldStore { field: FieldId, value: Source },
    /// A pointer is passed as argument `arg` of a direct call to a defined function whose
    /// parameter is stored into a field, called, or passed on in turn: the callee's parameter
    /// holds what its callers pass (see [`Source::params`]).
    Passes { callee: FnId, arg: u32, value: Source },
    /// A function is handed to something that will call it later, outside the normal call graph.
    Registers { kind: AsyncKind, value: Source },
    /// An inline-asm statement that issues a syscall: index into [`Program::asm_sites`].
    Asm(u32),
}

/// Where a function-pointer value may come from. A value is the union of its atoms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    pub functions: Vec<FnId>,
    /// Loaded from these struct fields.
    pub fields: Vec<FieldId>,
    /// The enclosing function's parameters: whatever its direct callers pass there (an indirect
    /// call, a library or any other entry without known arguments makes them unknown).
    pub params: Vec<u32>,
    /// Anything else: a call result, a load through an untyped pointer.
    pub unknown: bool,
}

/// What is known of an integer argument (a syscall number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    Const(u64),
    /// The enclosing function's parameter.
    Param(u32),
    Unknown,
}

/// Entry points the program hands to the system or a library, which calls them asynchronously.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AsyncKind {
    /// `signal`, `sigaction`.
    SignalHandler,
    /// `pthread_create`.
    ThreadStart,
    /// `atexit`, `on_exit`, `__cxa_atexit`.
    ExitHandler,
    /// Any other function pointer passed to a library function (`qsort`, OpenSSL callbacks, …).
    LibraryCallback,
}

impl AsyncKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AsyncKind::SignalHandler => "signal handler",
            AsyncKind::ThreadStart => "thread start routine",
            AsyncKind::ExitHandler => "exit handler",
            AsyncKind::LibraryCallback => "library callback",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Global {
    pub name: String,
    /// Functions in the initializer, with the field each one sits in ([`UNTYPED_MEMORY`] when the
    /// slot has no named field).
    pub functions: Vec<(FieldId, FnId)>,
    /// Other globals whose address is in the initializer.
    pub globals: Vec<GlobalId>,
}

/// A memory location that may hold function pointers: a struct field (`struct.name:index`, nested
/// structs resolved to the innermost one), a pointer-typed global (`@name`), or
/// [`UNTYPED_MEMORY`].
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    /// Some write to the field is not understood (an unknown value, the field's address escaping):
    /// loads from it may yield any address-taken function.
    pub polluted: bool,
}

/// An inline-asm statement that contains a syscall instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct AsmSite {
    pub function: FnId,
    /// The assembly text, as in the IR (`syscall`, `int $$0x80`).
    pub text: String,
    /// The value bound to the syscall-number register (`{ax}` on x86, `{x8}` on aarch64).
    pub number: Number,
    /// The ABI its numbers belong to (`int $0x80` in 64-bit code is i386).
    pub arch: Arch,
}

impl Program {
    pub fn function(&self, id: FnId) -> &Function {
        &self.functions[id as usize]
    }

    pub fn function_id(&self, name: &str) -> Option<FnId> {
        self.functions.iter().position(|function| function.name == name).map(|index| index as FnId)
    }

    /// Keeps only the [`Item::Passes`] whose callee parameter holds function pointers: one stored
    /// into a field, called, or passed on to such a parameter. The reader records every pointer
    /// argument of a direct call; most are data.
    pub fn drop_unused_passes(&mut self) {
        let mut used: HashSet<(FnId, u32)> = HashSet::new();
        // (callee, argument) → the (caller, parameter) pairs passed there.
        let mut passed_from: HashMap<(FnId, u32), Vec<(FnId, u32)>> = HashMap::new();
        for (id, function) in self.functions.iter().enumerate() {
            let id = id as FnId;
            for item in function.body.iter().flat_map(|body| &body.items) {
                match item {
                    Item::FieldStore { value, .. } | Item::Indirect { callee: value, .. } => {
                        used.extend(value.params.iter().map(|&param| (id, param)));
                    }
                    Item::Passes { callee, arg, value } => {
                        let from = passed_from.entry((*callee, *arg)).or_default();
                        from.extend(value.params.iter().map(|&param| (id, param)));
                    }
                    _ => {}
                }
            }
        }
        let mut pending: Vec<(FnId, u32)> = used.iter().copied().collect();
        while let Some(param) = pending.pop() {
            for &from in passed_from.get(&param).into_iter().flatten() {
                if used.insert(from) {
                    pending.push(from);
                }
            }
        }
        for body in self.functions.iter_mut().filter_map(|function| function.body.as_mut()) {
            let mut items = Vec::with_capacity(body.items.len());
            for block in &mut body.blocks {
                let start = items.len() as u32;
                for item in &body.items[block.items.start as usize..block.items.end as usize] {
                    let keep = match item {
                        Item::Passes { callee, arg, .. } => used.contains(&(*callee, *arg)),
                        _ => true,
                    };
                    if keep {
                        items.push(item.clone());
                    }
                }
                block.items = start..items.len() as u32;
            }
            body.items = items;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str, items: Vec<Item>) -> Function {
        // Two blocks, so that dropping items moves the second one's range.
        let middle = items.len() as u32 / 2;
        let blocks = vec![
            Block { items: 0..middle, successors: vec![1], returns: false },
            Block { items: middle..items.len() as u32, successors: Vec::new(), returns: true },
        ];
        Function { name: name.to_owned(), ty: 0, body: Some(Body { items, blocks }) }
    }

    fn passes(callee: FnId, value: Source) -> Item {
        Item::Passes { callee, arg: 0, value }
    }

    #[test]
    fn only_arguments_for_parameters_that_hold_function_pointers_are_kept() {
        let param = Source { params: vec![0], ..Source::default() };
        let function_2 = Source { functions: vec![2], ..Source::default() };
        let mut program = Program {
            producer: None,
            arch: Arch::X86_64,
            functions: vec![
                function(
                    "main",
                    vec![passes(1, function_2.clone()), passes(3, function_2.clone()), passes(4, function_2.clone())],
                ),
                // Calls through its parameter.
                function("run", vec![Item::Indirect { ty: 0, callee: param.clone() }]),
                function("target", Vec::new()),
                // Only reads data through its parameter.
                function("data", Vec::new()),
                // Passes its parameter on to `run`.
                function("relay", vec![passes(1, param.clone()), Item::TakesAddress(2)]),
            ],
            globals: Vec::new(),
            types: vec!["void ()".to_owned()],
            fields: Vec::new(),
            constructors: Vec::new(),
            destructors: Vec::new(),
            asm_sites: Vec::new(),
            module_asm_syscalls: None,
        };
        program.drop_unused_passes();
        let main = program.functions[0].body.as_ref().unwrap();
        assert_eq!(main.items, [passes(1, function_2.clone()), passes(4, function_2)]);
        assert_eq!((main.blocks[0].items.clone(), main.blocks[1].items.clone()), (0..1, 1..2));
        let relay = program.functions[4].body.as_ref().unwrap();
        assert_eq!(relay.items, [passes(1, param), Item::TakesAddress(2)]);
    }
}
