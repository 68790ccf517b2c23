//! Per-phase reach of an application's bitcode: which of its functions run during init and
//! serving, which library functions they call, which syscalls its own code issues.
//!
//! Roots follow the binary analysis. Init: `main`, constructors (`llvm.global_ctors`, IFunc
//! resolvers), destructors. Serving: the serving entries, found by name because bitcode is never
//! stripped (`ngx_worker_process_cycle`, `aeMain`, or `--serving-entry`), the destructors (the
//! exit path runs while serving), and every signal handler, thread start routine, exit handler
//! and library callback registered in either phase: they run whenever the system decides, and
//! what init stored stays stored. When a serving entry can return, the code after each call to
//! it runs while serving too, up the call chain as long as that code can return as well.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;
use thiserror::Error;

use super::program::{Body, FnId, Item, Program};
use super::reach::{IndirectStats, Reach};
use super::wrappers::syscall_wrappers;
use crate::syscalls::Arch;

/// Serving entries used when none is given: the functions TSP, the seed project and SysPart
/// identified as the request loops of nginx and redis.
pub const DEFAULT_SERVING_ENTRIES: &[&str] = &["ngx_worker_process_cycle", "aeMain"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PhaseError {
    #[error("the bitcode defines no `main`: analyse an application, not a library")]
    NoMain,
    #[error("serving entry `{0}` is not defined in the bitcode")]
    MissingEntry(String),
    #[error("no serving entry: the bitcode defines none of {}; name one with --serving-entry", DEFAULT_SERVING_ENTRIES.join(", "))]
    NoServingEntry,
}

/// Both phases of one program.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub serving_entries: Vec<String>,
    pub init: PhaseReach,
    pub serving: PhaseReach,
}

/// What one phase reaches.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReach {
    /// The application's own functions.
    pub functions: BTreeSet<String>,
    /// Library functions called, each with a witness path from a root.
    pub externals: BTreeMap<String, Vec<String>>,
    /// Syscalls the application's own code issues (`syscall(N)`, inline asm), with witnesses.
    pub syscalls: BTreeMap<String, Vec<String>>,
    /// Syscalls issued with the i386 numbering (`int $0x80` in 64-bit code).
    pub compat_syscalls: BTreeMap<String, Vec<String>>,
    /// Functions that run asynchronously (signal handlers, threads, …) and what registered them.
    pub async_roots: BTreeMap<String, String>,
    /// Inline-asm syscall sites reached.
    pub asm_sites: Vec<AsmReport>,
    /// Syscall sites whose number is unknown: fail closed on them.
    pub unresolved: Vec<Unresolved>,
    pub indirect: IndirectStats,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AsmReport {
    pub function: String,
    pub text: String,
    pub syscall: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Unresolved {
    pub function: String,
    pub reason: String,
}

/// Analyses both phases. `serving_entries` empty means the known defaults.
pub fn analyze(program: &Program, serving_entries: &[String]) -> Result<Analysis, PhaseError> {
    let main =
        program.function_id("main").filter(|&id| program.function(id).body.is_some()).ok_or(PhaseError::NoMain)?;
    let entries = serving_entry_ids(program, serving_entries)?;
    let wrapper = syscall_wrappers(program);

    let mut init = Reach::new(program, &wrapper);
    init.root(main, "main");
    root_all(&mut init, &program.constructors, "constructor");
    root_all(&mut init, &program.destructors, "destructor");
    init.run();

    let mut serving = init.next_phase();
    root_all(&mut serving, &entries, "serving entry");
    root_all(&mut serving, &program.destructors, "destructor");
    continue_after_returns(program, &mut serving, &entries);
    serving.run();

    Ok(Analysis {
        serving_entries: entries.iter().map(|&id| program.function(id).name.clone()).collect(),
        init: report(program, &init),
        serving: report(program, &serving),
    })
}

fn serving_entry_ids(program: &Program, names: &[String]) -> Result<Vec<FnId>, PhaseError> {
    let defined = |name: &str| program.function_id(name).filter(|&id| program.function(id).body.is_some());
    if names.is_empty() {
        let found: Vec<FnId> = DEFAULT_SERVING_ENTRIES.iter().filter_map(|name| defined(name)).collect();
        return if found.is_empty() { Err(PhaseError::NoServingEntry) } else { Ok(found) };
    }
    names.iter().map(|name| defined(name).ok_or_else(|| PhaseError::MissingEntry(name.clone()))).collect()
}

fn root_all(reach: &mut Reach<'_>, functions: &[FnId], label: &str) {
    for &function in functions {
        reach.root(function, label);
    }
}

/// Reaches the code after every direct call to a serving entry that can return, and after
/// calls to those callers when that code can return in turn (SysPart's continuation rule).
fn continue_after_returns(program: &Program, reach: &mut Reach<'_>, entries: &[FnId]) {
    let mut returning: Vec<FnId> = entries.iter().copied().filter(|&id| can_return(program, id)).collect();
    let mut continued: HashSet<FnId> = returning.iter().copied().collect();
    while let Some(callee) = returning.pop() {
        let label = format!("continuation after {} returns", program.function(callee).name);
        for (caller, function) in program.functions.iter().enumerate() {
            let Some(body) = &function.body else { continue };
            for (block, position) in call_sites(body, callee) {
                let (items, returns) = continuation(body, block, position);
                reach.reach_items(caller as FnId, &items, &label);
                if returns && continued.insert(caller as FnId) {
                    returning.push(caller as FnId);
                }
            }
        }
    }
}

fn can_return(program: &Program, function: FnId) -> bool {
    program.function(function).body.as_ref().is_some_and(|body| body.blocks.iter().any(|block| block.returns))
}

/// (block, item index) of every direct call to `callee`.
fn call_sites(body: &Body, callee: FnId) -> Vec<(usize, usize)> {
    let mut sites = Vec::new();
    for (index, block) in body.blocks.iter().enumerate() {
        for position in block.items.start as usize..block.items.end as usize {
            if matches!(body.items[position], Item::Call { callee: target, .. } if target == callee) {
                sites.push((index, position));
            }
        }
    }
    sites
}

/// The items after `position` in `block` and in every block reachable from it, and whether any
/// of those blocks returns.
fn continuation(body: &Body, block: usize, position: usize) -> (Vec<Item>, bool) {
    let start = &body.blocks[block];
    let mut items: Vec<Item> = body.items[position + 1..start.items.end as usize].to_vec();
    let mut returns = start.returns;
    let mut seen: HashSet<u32> = HashSet::new();
    let mut pending: Vec<u32> = start.successors.clone();
    while let Some(next) = pending.pop() {
        if !seen.insert(next) {
            continue;
        }
        let next_block = &body.blocks[next as usize];
        items.extend_from_slice(&body.items[next_block.items.start as usize..next_block.items.end as usize]);
        returns |= next_block.returns;
        pending.extend(next_block.successors.iter().copied());
    }
    (items, returns)
}

fn report(program: &Program, reach: &Reach<'_>) -> PhaseReach {
    let mut phase = PhaseReach { indirect: reach.indirect_stats(), ..PhaseReach::default() };
    for (id, function) in program.functions.iter().enumerate() {
        if function.body.is_some() && reach.visited(id as FnId) {
            phase.functions.insert(function.name.clone());
        }
    }
    for external in reach.externals() {
        phase.externals.insert(program.function(external).name.clone(), reach.witness(external));
    }
    for (&(arch, number), origin) in &reach.syscalls {
        let mut witness = reach.witness(origin.function);
        witness.push(origin.site.clone());
        let name = arch.name(number).expect("only known numbers are recorded").to_owned();
        let set = if arch == program.arch || program.arch == Arch::X86 {
            &mut phase.syscalls
        } else {
            &mut phase.compat_syscalls
        };
        set.entry(name).or_insert(witness);
    }
    for (&function, &kind) in reach.registered() {
        if reach.visited(function) {
            phase.async_roots.insert(program.function(function).name.clone(), kind.as_str().to_owned());
        }
    }
    let asm: BTreeSet<AsmReport> = reach
        .asm_sites
        .iter()
        .map(|&index| {
            let site = &program.asm_sites[index as usize];
            let syscall = match site.number {
                super::program::Number::Const(number) => {
                    u32::try_from(number).ok().and_then(|number| site.arch.name(number)).map(str::to_owned)
                }
                _ => None,
            };
            AsmReport { function: program.function(site.function).name.clone(), text: site.text.clone(), syscall }
        })
        .collect();
    phase.asm_sites = asm.into_iter().collect();
    let unresolved: BTreeSet<Unresolved> = reach
        .unresolved
        .iter()
        .map(|site| Unresolved { function: program.function(site.function).name.clone(), reason: site.reason.clone() })
        .chain(program.module_asm_syscalls.iter().map(|text| Unresolved {
            function: "(module asm)".to_owned(),
            reason: format!("module-level assembly issues syscalls: {text}"),
        }))
        .collect();
    phase.unresolved = unresolved.into_iter().collect();
    phase
}
