//! The per-ELF summary: everything the call graph needs from one file, and nothing else.
//!
//! A summary depends only on the file's bytes, so it is cached by build-id and shared by every
//! container that uses the same libc. Addresses are the file's virtual addresses; references
//! into other files are by symbol (`Ref::Import`), resolved later by the loader-exact linker.

use serde::{Deserialize, Serialize};

/// Bump when the summary's meaning or layout changes: cached summaries of another format are
/// ignored and recomputed.
pub const FORMAT: u32 = 17;

/// What one ELF file can do, function by function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleSummary {
    pub format: u32,
    /// `.note.gnu.build-id` in hex, or `sha256:` and a digest of the file when it has none.
    pub build_id: String,
    pub kind: ModuleKind,
    pub soname: Option<String>,
    /// `PT_INTERP`: the dynamic loader the kernel maps for an executable.
    pub interp: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// The function at `e_entry`, for executables (and for ld.so, which is also run directly).
    pub entry: Option<u32>,
    /// `DT_PREINIT_ARRAY`, `DT_INIT` and `DT_INIT_ARRAY`, in the order the loader runs them.
    pub init: Vec<u32>,
    /// `DT_FINI_ARRAY` and `DT_FINI`.
    pub fini: Vec<u32>,
    pub functions: Vec<Function>,
    pub exports: Vec<Export>,
    /// Symbols this file refers to by name (PLT, GOT, symbolic data relocations), including its
    /// own exported symbols, which another file may interpose.
    pub imports: Vec<Import>,
    /// Data holding pointers (function pointers, pointers to other such data), RTA's unit of
    /// liveness.
    pub objects: Vec<DataObject>,
}

/// The ELF type, as the loader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// `ET_EXEC`: a position-dependent executable.
    Executable,
    /// `ET_DYN` with an entry point and `PT_INTERP` or `DF_1_PIE`: a position-independent executable.
    PieExecutable,
    /// `ET_DYN` otherwise: a shared library.
    SharedObject,
}

/// One function: a start address, its code's reach and what it does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub addr: u64,
    pub end: u64,
    pub name: Option<String>,
    /// `syscall` (and `int $0x80`) instructions.
    pub sites: Vec<Site>,
    /// Direct calls and tail jumps.
    pub calls: Vec<Call>,
    /// Calls and jumps through a register or memory that no analysis pinned to one target.
    pub indirect: Vec<IndirectSite>,
    /// Function pointers and pointer-bearing data this code materialises (RTA's "address taken").
    pub refs: Vec<Ref>,
    /// Argument registers the function reads before writing them (TypeArmor's consumer count).
    pub args: u8,
    pub noreturn: bool,
    /// An IFUNC resolver: whoever calls the symbol runs one of the functions it returns.
    pub ifunc_resolver: bool,
    /// Some indirect jump could not be resolved; the code was also swept linearly.
    pub incomplete: bool,
}

/// A `syscall` instruction and what its number can be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub at: u64,
    pub number: SiteNumber,
    /// `int $0x80`: the number is in the i386 table.
    pub i386: bool,
    /// Syscall arguments (0 = rdi … 5 = r9) known at the site; an argument not listed is unknown.
    #[serde(default)]
    pub args: Vec<(u8, ArgValue)>,
}

/// The syscall number at a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SiteNumber {
    /// These constants, whichever path reaches the site.
    Known(Vec<u32>),
    /// The function's own argument: it is a syscall wrapper, resolved at its call sites.
    Forwarded(ArgLoc),
    /// Neither; the reason says why.
    Unresolved(Reason),
}

/// Why a syscall number was not recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Loaded from memory that is not a tracked stack slot.
    MemoryLoad,
    /// The result of a computation the analysis does not model, or too many candidates.
    Computed,
    /// Clobbered by a call between its definition and the site.
    ClobberedByCall,
    /// A wrapper was called with a number argument that is none of the above.
    WrapperArgument,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MemoryLoad => "number loaded from memory",
            Reason::Computed => "number computed at run time",
            Reason::ClobberedByCall => "number register clobbered by a call",
            Reason::WrapperArgument => "wrapper called with a non-constant number",
        }
    }
}

/// Where a function receives an argument (System V x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ArgLoc {
    /// Argument register `k`: rdi, rsi, rdx, rcx, r8, r9.
    Reg(u8),
    /// The stack slot at this offset from the stack pointer at entry (8 is the 7th argument).
    Stack(u32),
}

impl std::fmt::Display for ArgLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgLoc::Reg(k) => write!(f, "argument {}", k + 1),
            ArgLoc::Stack(offset) => write!(f, "argument {} (stack)", 7 + (offset - 8) / 8),
        }
    }
}

/// A direct call or tail jump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub at: u64,
    pub target: Ref,
    pub tail: bool,
    /// Argument values known at the call: constants, or the caller's own arguments passed on.
    pub args: Vec<(ArgLoc, ArgValue)>,
    /// Function pointers (and pointer-bearing data) passed, directly or in a stack structure
    /// whose address is passed (`sigaction`'s `act`), with the argument they were found in.
    pub fn_args: Vec<(u8, Ref)>,
    /// Argument registers holding an unknown value (a pointer loaded from memory, say).
    pub opaque_args: u8,
    /// A call through a pointer loaded from the file's fixed data (not the GOT): the slot, or
    /// the start of the table, it was loaded from.
    pub through: Option<u64>,
}

impl Call {
    /// What the call passes in `loc`; `None` when the analysis lost it.
    pub fn passes(&self, loc: ArgLoc) -> Option<&ArgValue> {
        self.args.iter().find(|(arg, _)| *arg == loc).map(|(_, value)| value)
    }
}

/// A value an argument is known to have at a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgValue {
    pub consts: Vec<u64>,
    /// The caller's own argument, unchanged.
    pub forwarded: Option<ArgLoc>,
}

/// An indirect call (or indirect tail jump) and how many argument registers it prepares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndirectSite {
    pub at: u64,
    pub args: u8,
    /// The function's own argument the call goes through unchanged: it reaches what the
    /// function's callers pass there.
    #[serde(default)]
    pub argument: Option<ArgLoc>,
}

/// A reference to a function or data, local or by symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ref {
    Fn(u32),
    Object(u32),
    Import(u32),
}

/// A symbol this file defines for others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub name: String,
    pub version: Option<String>,
    /// `name@@version` (or unversioned): what an unversioned reference binds to.
    pub default: bool,
    pub weak: bool,
    /// `None` for data without pointers.
    pub target: Option<Ref>,
}

/// A symbol this file refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Import {
    pub name: String,
    pub version: Option<String>,
    pub weak: bool,
}

/// A pointer-bearing piece of data: a symbol's extent when there is one, otherwise a run of
/// relocated slots between two addresses something refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    pub start: u64,
    pub end: u64,
    pub ptrs: Vec<Ref>,
}

impl ModuleSummary {
    /// The function whose range holds `addr`.
    pub fn function_at(&self, addr: u64) -> Option<u32> {
        let index = self.functions.partition_point(|function| function.addr <= addr).checked_sub(1)?;
        (addr < self.functions[index].end.max(self.functions[index].addr + 1)).then_some(index as u32)
    }

    /// The function starting exactly at `addr`.
    pub fn function_starting_at(&self, addr: u64) -> Option<u32> {
        self.functions.binary_search_by_key(&addr, |function| function.addr).ok().map(|index| index as u32)
    }

    /// Functions by symbol name (`.symtab` or an export).
    pub fn function_named(&self, name: &str) -> Option<u32> {
        let exported = self.exports.iter().find(|export| export.name == name && export.default);
        match exported.and_then(|export| export.target) {
            Some(Ref::Fn(index)) => Some(index),
            _ => self.functions.iter().position(|function| function.name.as_deref() == Some(name)).map(|i| i as u32),
        }
    }

    /// A printable name for function `index`: its symbol, or its address.
    pub fn function_label(&self, index: u32) -> String {
        let function = &self.functions[index as usize];
        match &function.name {
            Some(name) => name.clone(),
            None => format!("fn_{:x}", function.addr),
        }
    }

    /// `syscall` sites and wrapper calls, and how many of them have a known number.
    pub fn site_counts(&self) -> (usize, usize) {
        let sites = self.functions.iter().flat_map(|function| &function.sites);
        let total = sites.clone().count();
        let resolved = sites.filter(|site| !matches!(site.number, SiteNumber::Unresolved(_))).count();
        (resolved, total)
    }
}
