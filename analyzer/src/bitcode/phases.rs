//! Per-phase reach of an application's bitcode: which of its functions run during init and
//! serving, which library functions they call, which syscalls its own code issues.
//!
//! Roots follow the binary analysis. Init: `main`, constructors (`llvm.global_ctors`, IFunc
//! resolvers), destructors. Serving: the serving entries, found by name because bitcode is never
//! stripped (`--serving-entry`, else the known servers' of `servers`), the destructors (the
//! exit path runs while serving), and every signal handler, thread start routine, exit handler
//! and library callback registered in either phase: they run whenever the system decides, and
//! what init stored stays stored. When a serving entry can return, the code after each call to
//! it runs while serving too, up the call chain as long as that code can return as well; when
//! that reaches `main`'s return, libc's `exit` runs next.
//!
//! Each phase ends by settling with the libraries ([`LibrarySyscalls`]): the library functions
//! the phase calls are handed over, and the application functions the libraries call back
//! become roots, until neither side finds anything new.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;
use thiserror::Error;

use super::external::LibrarySyscalls;
use super::program::{Body, FnId, Item, Program};
use super::reach::{IndirectStats, Reach};
use super::wrappers::syscall_wrappers;
use crate::servers::{self, KNOWN_SERVERS};
use crate::syscalls::Arch;
use crate::trace::Phase;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PhaseError {
    #[error("the bitcode defines no `main`: analyse an application, not a library")]
    NoMain,
    #[error("serving entry `{0}` is not defined in the bitcode")]
    MissingEntry(String),
    #[error(
        "no serving entry: the bitcode defines none of {}; name one with --serving-entry",
        crate::servers::serving_entry_list()
    )]
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

/// Analyses both phases, settling each with `libraries`. `serving_entries` empty means the known
/// defaults.
pub fn analyze(
    program: &Program,
    serving_entries: &[String],
    libraries: &mut dyn LibrarySyscalls,
) -> Result<Analysis, PhaseError> {
    let main = defined(program, "main").ok_or(PhaseError::NoMain)?;
    let entries = serving_entry_ids(program, serving_entries)?;
    let wrapper = syscall_wrappers(program);

    let mut init = Reach::new(program, &wrapper);
    init.root(main, "main");
    root_all(&mut init, &program.constructors, "constructor");
    root_all(&mut init, &program.destructors, "destructor");
    init.run();
    settle(program, &mut init, Phase::Init, libraries, &[]);

    let mut serving = init.next_phase();
    let entry_ids: Vec<FnId> = entries.iter().map(|(entry, _)| *entry).collect();
    root_all(&mut serving, &entry_ids, "serving entry");
    root_all(&mut serving, &program.destructors, "destructor");
    let main_returns = continue_after_returns(program, &mut serving, &entries, main);
    serving.run();
    // `main` returns into libc's start-up code, which calls `exit` with its result.
    let exit = ("exit".to_owned(), vec!["main (returns into libc, which calls exit)".to_owned(), "exit".to_owned()]);
    settle(
        program,
        &mut serving,
        Phase::Serving,
        libraries,
        if main_returns { std::slice::from_ref(&exit) } else { &[] },
    );

    Ok(Analysis {
        serving_entries: entry_ids.iter().map(|&id| program.function(id).name.clone()).collect(),
        init: report(program, &init),
        serving: report(program, &serving),
    })
}

/// A function the bitcode defines (not only declares).
fn defined(program: &Program, name: &str) -> Option<FnId> {
    program.function_id(name).filter(|&id| program.function(id).body.is_some())
}

/// Hands the phase's library calls (and `extra` ones) to `libraries` and roots the application
/// functions they call back, until neither side reaches anything new.
fn settle(
    program: &Program,
    reach: &mut Reach<'_>,
    phase: Phase,
    libraries: &mut dyn LibrarySyscalls,
    extra: &[(String, Vec<String>)],
) {
    loop {
        let mut calls: BTreeMap<String, Vec<String>> =
            reach.externals().map(|id| (program.function(id).name.clone(), reach.witness(id))).collect();
        for (symbol, witness) in extra {
            calls.entry(symbol.clone()).or_insert_with(|| witness.clone());
        }
        let mut grew = false;
        for (name, label) in libraries.reach(phase, &calls) {
            if let Some(id) = defined(program, &name).filter(|&id| !reach.visited(id)) {
                reach.root(id, &label);
                grew = true;
            }
        }
        if !grew {
            return;
        }
        reach.run();
    }
}

/// Each serving entry with the callers its continuations are limited to (`None`: all callers).
type Entry = (FnId, Option<Vec<FnId>>);

fn serving_entry_ids(program: &Program, names: &[String]) -> Result<Vec<Entry>, PhaseError> {
    let with_callers = |id: FnId| {
        let name = program.function(id).name.as_str();
        // A known server's callers apply whenever the entry is its serving entry, named or not.
        let callers = servers::serving_entry(name)
            .filter(|server| !server.serving_callers.is_empty())
            .map(|server| server.serving_callers.iter().filter_map(|caller| defined(program, caller)).collect());
        (id, callers)
    };
    if names.is_empty() {
        let found: Vec<Entry> = KNOWN_SERVERS
            .iter()
            .filter_map(|server| defined(program, server.serving_entry))
            .map(with_callers)
            .collect();
        return if found.is_empty() { Err(PhaseError::NoServingEntry) } else { Ok(found) };
    }
    names
        .iter()
        .map(|name| defined(program, name).map(with_callers).ok_or_else(|| PhaseError::MissingEntry(name.clone())))
        .collect()
}

fn root_all(reach: &mut Reach<'_>, functions: &[FnId], label: &str) {
    for &function in functions {
        reach.root(function, label);
    }
}

/// Reaches the code after every direct call to a serving entry that can return (in the callers
/// the entry allows), and after calls to those callers when that code can return in turn
/// (SysPart's continuation rule). Returns whether `main` itself can return that way.
fn continue_after_returns(program: &Program, reach: &mut Reach<'_>, entries: &[Entry], main: FnId) -> bool {
    let mut returning: Vec<Entry> = entries.iter().filter(|(id, _)| can_return(program, *id)).cloned().collect();
    let mut continued: HashSet<FnId> = returning.iter().map(|(id, _)| *id).collect();
    while let Some((callee, allowed)) = returning.pop() {
        let label = format!("continuation after {} returns", program.function(callee).name);
        for (caller, function) in program.functions.iter().enumerate() {
            let caller = caller as FnId;
            let Some(body) = &function.body else { continue };
            if allowed.as_ref().is_some_and(|allowed| !allowed.contains(&caller)) {
                continue;
            }
            for (block, position) in call_sites(body, callee) {
                let (items, returns) = continuation(body, block, position);
                reach.reach_items(caller, &items, &label);
                if returns && continued.insert(caller) {
                    returning.push((caller, None));
                }
            }
        }
    }
    continued.contains(&main)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcode::program::{Block, Field, Function, Number};

    /// `main` calls the library function `lib_run`, which calls the application's `app_hook` by
    /// name; `app_hook` issues getpid through `syscall()`.
    fn program() -> Program {
        let body = |items: Vec<Item>| {
            let blocks = vec![Block { items: 0..items.len() as u32, successors: Vec::new(), returns: true }];
            Some(Body { items, blocks })
        };
        let function = |name: &str, body| Function { name: name.to_owned(), ty: 0, body };
        Program {
            producer: None,
            arch: Arch::X86_64,
            functions: vec![
                function("main", body(vec![Item::Call { callee: 2, args: Box::default() }])),
                function("app_hook", body(vec![Item::Call { callee: 3, args: Box::new([Number::Const(39)]) }])),
                function("lib_run", None),
                function("syscall", None),
            ],
            globals: Vec::new(),
            types: vec!["void ()".to_owned()],
            fields: vec![Field { name: "untyped".to_owned(), polluted: false }],
            constructors: Vec::new(),
            destructors: Vec::new(),
            asm_sites: Vec::new(),
            module_asm_syscalls: None,
        }
    }

    /// A library that calls `app_hook` (and a function the application does not define) once
    /// `lib_run` is called, and remembers what it was asked.
    #[derive(Default)]
    struct Hooking {
        asked: Vec<(Phase, Vec<String>)>,
    }

    impl LibrarySyscalls for Hooking {
        fn reach(&mut self, phase: Phase, calls: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
            self.asked.push((phase, calls.keys().cloned().collect()));
            if !calls.contains_key("lib_run") {
                return Vec::new();
            }
            ["app_hook", "its_own_helper"]
                .iter()
                .map(|name| (name.to_string(), "called by lib!run".to_owned()))
                .collect()
        }
    }

    #[test]
    fn functions_libraries_call_back_join_the_phase() {
        let mut libraries = Hooking::default();
        let analysis = analyze(&program(), &["main".to_owned()], &mut libraries).unwrap();
        assert_eq!(analysis.init.syscalls["getpid"], ["app_hook (called by lib!run)", "syscall(39)"]);
        assert_eq!(analysis.serving.syscalls["getpid"], ["app_hook (called by lib!run)", "syscall(39)"]);
        assert!(analysis.init.functions.contains("app_hook"));
        // Each phase is asked again after the callback joined it, and nothing new came of it.
        // Serving returns from `main` into libc's `exit`.
        let calls = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(
            libraries.asked,
            [
                (Phase::Init, calls(&["lib_run"])),
                (Phase::Init, calls(&["lib_run"])),
                (Phase::Serving, calls(&["exit", "lib_run"])),
                (Phase::Serving, calls(&["exit", "lib_run"])),
            ]
        );
    }
}
