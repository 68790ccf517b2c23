//! Roots per phase, and the syscalls reachable from them.
//!
//! Init: the entry point (and the dynamic loader's), every file's init arrays, `main` (found as
//! `__libc_start_main`'s first argument), fini arrays. Serving: the serving entry — given, or a
//! known server's (`servers`) located structurally — plus what runs after it returns in its callers, signal
//! handlers, thread start routines and exit handlers registered anywhere, and the exit path.
//! Function pointers stored during init stay live in serving. Libraries that were `dlopen`ed
//! join a phase once a `dlopen` call is reachable in it: their init and fini functions and
//! exported functions as roots, the functions their exported data holds as live pointers.

use std::collections::{BTreeMap, HashSet};

use petgraph::Direction;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef as _;

use super::graph::{Edge, Node, Program};
use super::reach::{Reach, Roots, Via, reach};
use crate::elf::{self, ArgLoc, Ref};
use crate::servers::{KNOWN_SERVERS, Server, Spawn};
use crate::syscalls::Arch;

/// A serving entry as given on the command line (`SYMBOL[@BINARY]`), or derived from a stack
/// (`trace::ServingEntry`), where stripped functions are named `fn_<address>` like the analysis
/// names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySpec {
    pub symbol: String,
    /// A path or file name the symbol must be defined in.
    pub binary: Option<String>,
    /// The callers whose code after the call serves; empty: every caller.
    pub callers: Vec<EntrySpec>,
    /// The executable of the process the entry was found running in (a derived entry).
    pub program: Option<String>,
}

impl EntrySpec {
    /// The entry `auto` derived from the trace's stack, with its looping callers.
    pub fn derived(entry: &crate::trace::ServingEntry) -> EntrySpec {
        let spec = |function: &crate::trace::FunctionRef| EntrySpec {
            symbol: function.function.clone(),
            binary: Some(function.binary.clone()),
            callers: Vec::new(),
            program: None,
        };
        EntrySpec {
            callers: entry.callers.iter().map(spec).collect(),
            program: entry.program.clone(),
            ..spec(&entry.entry)
        }
    }
}

impl std::str::FromStr for EntrySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<EntrySpec, String> {
        let (symbol, binary) = match text.split_once('@') {
            Some((symbol, binary)) => (symbol, Some(binary.to_owned())),
            None => (text, None),
        };
        if symbol.is_empty() || binary.as_deref() == Some("") {
            return Err(format!("`{text}` is not SYMBOL or SYMBOL@BINARY"));
        }
        Ok(EntrySpec { symbol: symbol.to_owned(), binary, callers: Vec::new(), program: None })
    }
}

/// Registrars whose functions run as signal handlers.
const SIGNAL_REGISTRARS: &[&str] = &[
    "sigaction",
    "__sigaction",
    "__libc_sigaction",
    "signal",
    "ssignal",
    "bsd_signal",
    "sysv_signal",
    "__sysv_signal",
    "sigset",
];

/// Names that load libraries at run time.
const DLOPEN: &[&str] = &["dlopen", "dlmopen", "__libc_dlopen_mode", "_dl_open"];

/// Functions the vDSO serves without a syscall, unless the clock cannot be read in user space.
const VDSO_BACKED: &[&str] =
    &["clock_gettime", "__clock_gettime", "gettimeofday", "time", "clock_getres", "getcpu", "sched_getcpu"];
pub const VDSO_SYSCALLS: &[&str] = &["clock_gettime", "clock_getres", "gettimeofday", "time", "getcpu"];

/// Where a syscall is reached: the witness path and the site.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub path: Vec<String>,
    pub site: String,
}

/// One phase's result for one process.
#[derive(Default)]
pub struct PhaseResult {
    /// Syscall names (i386 ones prefixed by the caller) → first witness.
    pub syscalls: BTreeMap<(bool, u32), Found>,
    /// Extra names (vDSO fallbacks, `rt_sigreturn`) with the reason.
    pub extra: BTreeMap<String, Found>,
    /// (function node, site address, reason).
    pub unknown: Vec<(NodeIndex, u64, crate::elf::Reason)>,
    pub modules_with_unknown: HashSet<u16>,
    /// x86_64 syscall number → the values of its narrowable arguments (`None`: some unknown).
    pub args: BTreeMap<u32, Option<super::args::ArgValues>>,
}

/// Everything one process can do, per phase.
pub struct ProcessPhases {
    pub init: PhaseResult,
    pub serving: Option<PhaseResult>,
    pub serving_entry: Option<String>,
    pub notes: Vec<String>,
}

/// How a process takes part in the phases.
pub struct Role<'a> {
    /// Whether its serving part counts (it is the server, or it was exec'd while serving).
    pub serves: bool,
    /// Exec'd during serving: everything it can do counts for serving.
    pub exec_in_serving: bool,
    pub entries: &'a [EntrySpec],
    /// Whether to look for known serving entries when none is given.
    pub defaults: bool,
}

pub fn evaluate(program: &Program<'_>, role: &Role<'_>) -> ProcessPhases {
    let mut notes = Vec::new();
    let base = init_roots(program);
    let init = grow(program, base, true, &mut notes);
    let mut phases =
        ProcessPhases { init: collect(program, &init), serving: None, serving_entry: None, notes: Vec::new() };
    if role.exec_in_serving {
        phases.serving = Some(collect(program, &init));
        phases.serving_entry = Some("the whole program (exec'd while serving)".into());
    } else if role.serves {
        let (roots, entry) = serving_roots(program, role, &init, &mut notes);
        match entry {
            Some(entry) => {
                let serving = grow(program, roots, false, &mut notes);
                phases.serving = Some(collect(program, &serving));
                phases.serving_entry = Some(entry);
            }
            None => {
                notes.push(format!(
                    "{}: no serving entry found (give --serving-entry SYMBOL); serving allows everything init reaches",
                    program.module(program.exe).path
                ));
                phases.serving = Some(collect(program, &init));
            }
        }
    }
    phases.notes = notes;
    phases
}

/// Roots for a symbol: the function `spec` names, anywhere in the process.
pub fn symbol_roots(program: &Program<'_>, spec: &EntrySpec) -> Option<Roots> {
    let node = find_symbol(program, spec)?;
    Some(Roots { functions: vec![(node, spec.symbol.clone())], ..Roots::default() })
}

/// Roots for a file analysed on its own: its init roots, or, for a library without an entry
/// point, every function it exports.
pub fn program_roots(program: &Program<'_>) -> Roots {
    let exe = program.module(program.exe);
    if exe.summary.entry.is_some() {
        return init_roots(program);
    }
    let mut roots = Roots { functions: init_fini(program, program.exe), ..Roots::default() };
    for export in exe.summary.exports.iter().filter(|export| export.default) {
        if let Some(Ref::Fn(index)) = export.target {
            roots.functions.push((program.function_node(program.exe, index), format!("exported {}", export.name)));
        }
    }
    roots
}

/// Everything reachable from `roots` (growing with what it registers), collected.
pub fn reach_from(program: &Program<'_>, roots: Roots, notes: &mut Vec<String>) -> PhaseResult {
    let result = grow(program, roots, true, notes);
    collect(program, &result)
}

/// The init roots of a process.
pub fn init_roots(program: &Program<'_>) -> Roots {
    let mut roots = Roots::default();
    let exe = program.module(program.exe);
    if let Some(entry) = exe.summary.entry {
        roots.functions.push((program.function_node(program.exe, entry), "entry point".into()));
    }
    if let Some(interp) = program.interp
        && let Some(entry) = program.module(interp).summary.entry
    {
        roots.functions.push((program.function_node(interp, entry), "dynamic loader".into()));
    }
    if let Some(main) = exe.summary.function_named("main") {
        roots.functions.push((program.function_node(program.exe, main), "main".into()));
    }
    for module in 0..program.scope_len as u16 {
        roots.functions.extend(init_fini(program, module));
    }
    roots
}

pub(super) fn init_fini(program: &Program<'_>, module: u16) -> Vec<(NodeIndex, String)> {
    let file = program.module(module);
    let name = super::graph::basename(&file.path);
    let init = file.summary.init.iter().map(|&index| (index, format!("init array of {name}")));
    let fini = file.summary.fini.iter().map(|&index| (index, format!("fini array of {name}")));
    init.chain(fini).map(|(index, reason)| (program.function_node(module, index), reason)).collect()
}

/// Reaches from `roots`, adding what the reached code registers (handlers, threads, exit
/// functions, `main`) and `dlopen`ed libraries, until nothing new appears.
///
/// `main` counts only in init: `_start` hands it over once, at start-up.
pub(super) fn grow(program: &Program<'_>, mut roots: Roots, with_main: bool, notes: &mut Vec<String>) -> Reach {
    let mut known: HashSet<NodeIndex> = roots.functions.iter().map(|(node, _)| *node).collect();
    let mut dlopen_added = false;
    loop {
        let result = reach(program, clone_roots(&roots));
        let (registered, opaque) = registered(program, &result);
        let mut grew = false;
        for (node, reason) in registered.into_iter().filter(|(_, reason)| with_main || reason != "main") {
            if known.insert(node) {
                roots.functions.push((node, reason));
                grew = true;
            }
        }
        if opaque && roots.hubs_up_to.is_none_or(|level| level < 3) {
            // A handler or thread whose address is not known statically: any live function that
            // takes up to three arguments (a `sa_sigaction`) may be it.
            roots.hubs_up_to = Some(3);
            grew = true;
        }
        if !dlopen_added && result.order.iter().any(|&node| named(program, node, DLOPEN)) {
            dlopen_added = true;
            for module in program.scope_len as u16..program.modules.len() as u16 {
                let added = dlopened_roots(program, module);
                let data = dlopened_data(program, module);
                grew |= !added.is_empty() || !data.is_empty();
                roots.functions.extend(added);
                roots.live.extend(data);
            }
        }
        if !grew {
            if roots.hubs_up_to.is_some() {
                notes.push("a signal handler, thread or exit function is registered through a pointer loaded from memory; every live function taking up to 3 arguments counts as one".into());
            }
            return result;
        }
    }
}

fn clone_roots(roots: &Roots) -> Roots {
    Roots {
        functions: roots.functions.clone(),
        continuations: roots
            .continuations
            .iter()
            .map(|(node, cont, at, reason)| {
                (*node, elf::Continuation { ranges: cont.ranges.clone(), returns: cont.returns }, *at, reason.clone())
            })
            .collect(),
        live: roots.live.clone(),
        hubs_up_to: roots.hubs_up_to,
    }
}

fn dlopened_roots(program: &Program<'_>, module: u16) -> Vec<(NodeIndex, String)> {
    let file = program.module(module);
    let name = super::graph::basename(&file.path).to_owned();
    let mut roots = init_fini(program, module);
    for export in file.summary.exports.iter().filter(|export| export.default) {
        if let Some(Ref::Fn(index)) = export.target {
            roots.push((program.function_node(module, index), format!("exported by dlopen'd {name}")));
        }
    }
    roots
}

/// The data a `dlopen`ed file exports: `dlsym` hands it out (Apache's `module` structures), and
/// the application calls the functions in it through pointers, so it is live wherever the file
/// is loaded.
fn dlopened_data(program: &Program<'_>, module: u16) -> Vec<NodeIndex> {
    let exports = program.module(module).summary.exports.iter();
    exports
        .filter_map(|export| match export.target {
            Some(target @ Ref::Object(_)) => program.resolve(module, target),
            _ => None,
        })
        .collect()
}

/// Whether `node` is a function known under one of `names`.
fn named(program: &Program<'_>, node: NodeIndex, names: &[&str]) -> bool {
    function_name(program, node).is_some_and(|name| names.contains(&name))
}

fn function_name<'p>(program: &'p Program<'_>, node: NodeIndex) -> Option<&'p str> {
    let Node::Function { module, index } = program.graph[node] else { return None };
    program.module(module).summary.functions[index as usize].name.as_deref()
}

/// Functions reached code registers for later (and `main`), and whether some registration
/// passed a pointer the analysis could not pin down.
///
/// A registration whose pointer is loaded from memory (nginx fills `sa_handler` from its
/// `signals[]` table) is bounded by what the registering function can name: the functions whose
/// address it takes and the functions in data it refers to, transitively. Only when that is
/// empty does the registration count as unknown.
pub(super) fn registered(program: &Program<'_>, result: &Reach) -> (Vec<(NodeIndex, String)>, bool) {
    let mut found = Vec::new();
    let mut opaque = false;
    for &caller in &result.order {
        let Node::Function { module, index } = program.graph[caller] else { continue };
        let function = &program.module(module).summary.functions[index as usize];
        for edge in program.graph.edges(caller) {
            let Edge::Call { call, .. } = *edge.weight() else { continue };
            let Some(call) = function.calls.get(call as usize) else { continue };
            let Some(name) = function_name(program, edge.target()) else { continue };
            let argument = elf::REGISTRARS
                .iter()
                .find(|(registrar, _)| *registrar == name)
                .map(|&(_, arg)| (arg, if name == "__libc_start_main" { "main" } else { name }));
            let Some((arg, registrar)) = argument else { continue };
            let reason = if registrar == "main" { "main".to_owned() } else { format!("registered with {registrar}") };
            let mut pinned = false;
            for &(_, target) in call.fn_args.iter().filter(|(index, _)| *index == arg) {
                if let Some(node) = program.resolve(module, target).filter(|&node| program.is_function(node)) {
                    found.push((node, reason.clone()));
                    pinned = true;
                }
            }
            if pinned || call.opaque_args & (1 << arg) == 0 || registrar == "main" {
                continue;
            }
            let candidates = nameable(program, caller);
            if candidates.is_empty() {
                opaque = true;
            }
            let reason = format!("{reason}, through a pointer {} can name", program.label(caller));
            found.extend(candidates.into_iter().map(|node| (node, reason.clone())));
        }
    }
    (found, opaque)
}

/// Functions `caller` can name: those whose address it takes, and those held by data it refers
/// to, following pointers between data.
fn nameable(program: &Program<'_>, caller: NodeIndex) -> Vec<NodeIndex> {
    let mut functions = Vec::new();
    let mut seen: HashSet<NodeIndex> = HashSet::new();
    let mut stack: Vec<NodeIndex> = program
        .graph
        .edges(caller)
        .filter(|edge| matches!(edge.weight(), Edge::Takes { .. }))
        .map(|edge| edge.target())
        .collect();
    while let Some(node) = stack.pop() {
        if !seen.insert(node) {
            continue;
        }
        match program.graph[node] {
            Node::Function { .. } => functions.push(node),
            Node::Object { .. } => stack.extend(program.graph.neighbors(node)),
            Node::Hub(_) => {}
        }
    }
    functions.sort_unstable();
    functions
}

/// The serving roots of a process, and a description of the entry, if one was found.
fn serving_roots(
    program: &Program<'_>,
    role: &Role<'_>,
    init: &Reach,
    notes: &mut Vec<String>,
) -> (Roots, Option<String>) {
    let mut roots = Roots {
        live: (0..init.live.len()).filter(|&i| init.live[i]).map(NodeIndex::new).collect(),
        ..Roots::default()
    };
    let entries = entries(program, role, notes);
    if entries.is_empty() {
        return (roots, None);
    }
    let (registered, opaque) = registered(program, init);
    let mains: Vec<NodeIndex> =
        registered.iter().filter(|(_, reason)| reason == "main").map(|(node, _)| *node).collect();
    let mut labels = Vec::new();
    for (entry, callers) in &entries {
        labels.push(program.label(*entry));
        roots.functions.push((*entry, "serving entry".into()));
        continuations(program, *entry, callers.as_ref(), &mains, &mut roots, notes);
    }
    // Registered earlier, run while serving: handlers, threads, exit functions.
    roots.functions.extend(registered.into_iter().filter(|(_, reason)| reason != "main"));
    if opaque {
        roots.hubs_up_to = Some(3);
    }
    for module in 0..program.scope_len as u16 {
        roots.functions.extend(init_fini(program, module).into_iter().filter(|(_, reason)| reason.starts_with("fini")));
    }
    (roots, Some(labels.join(", ")))
}

/// Serving entry functions, each with the callers whose continuations count (`None`: all).
fn entries(
    program: &Program<'_>,
    role: &Role<'_>,
    notes: &mut Vec<String>,
) -> Vec<(NodeIndex, Option<Vec<NodeIndex>>)> {
    let mut found = Vec::new();
    for spec in role.entries {
        match find_symbol(program, spec) {
            Some(node) if spec.callers.is_empty() => found.push((node, None)),
            Some(node) => {
                let callers: Vec<NodeIndex> =
                    spec.callers.iter().filter_map(|caller| find_symbol(program, caller)).collect();
                if callers.len() < spec.callers.len() {
                    notes.push(format!(
                        "a caller of serving entry {} was not found; every caller of it counts",
                        spec.symbol
                    ));
                }
                found.push((node, (callers.len() == spec.callers.len()).then_some(callers)));
            }
            None => {
                notes.push(format!("serving entry {} not found in {}", spec.symbol, program.module(program.exe).path))
            }
        }
    }
    if !found.is_empty() || !role.defaults {
        return found;
    }
    let exe = program.exe;
    let exe_summary = &program.module(exe).summary;
    let known =
        KNOWN_SERVERS.iter().find_map(|server| Some((server, exe_summary.function_named(server.serving_entry)?)));
    if let Some((server, entry)) = known {
        let callers = serving_callers(program, server);
        if callers.is_empty() && !server.serving_callers.is_empty() {
            notes.push(format!(
                "{}: the serving callers of {} ({}) were not located; every caller counts",
                server.name,
                server.serving_entry,
                server.serving_callers.join(", ")
            ));
        }
        let callers = (!callers.is_empty()).then_some(callers);
        found.push((program.function_node(exe, entry), callers));
    }
    found
}

fn find_symbol(program: &Program<'_>, spec: &EntrySpec) -> Option<NodeIndex> {
    (0..program.modules.len() as u16).find_map(|module| {
        let file = program.module(module);
        let matches = spec
            .binary
            .as_deref()
            .is_none_or(|binary| file.path == binary || super::graph::basename(&file.path) == binary);
        if !matches {
            return None;
        }
        let index = file.summary.function_named(&spec.symbol).or_else(|| {
            // A function without a symbol, named by its address as `function_label` names it.
            let addr = u64::from_str_radix(spec.symbol.strip_prefix("fn_")?, 16).ok()?;
            file.summary.function_starting_at(addr)
        })?;
        Some(program.function_node(module, index))
    })
}

/// The executable's functions among `server`'s serving callers: by symbol, and, since they may
/// be `static` (no symbol in a distribution's binary), as the function pointers its spawn call
/// is handed.
fn serving_callers(program: &Program<'_>, server: &Server) -> Vec<NodeIndex> {
    let exe = program.exe;
    let file = program.module(exe);
    let mut callers: Vec<NodeIndex> = server
        .serving_callers
        .iter()
        .filter_map(|name| file.summary.function_named(name))
        .map(|index| program.function_node(exe, index))
        .collect();
    if let Some(spawn) = &server.callers_spawned {
        callers.extend(spawned(program, spawn));
    }
    callers.sort_unstable();
    callers.dedup();
    callers
}

/// The functions passed as argument `spawn.callback` of the executable's calls to
/// `spawn.function` whose argument `spawn.label_arg` is the string `spawn.label`.
fn spawned(program: &Program<'_>, spawn: &Spawn) -> Vec<NodeIndex> {
    let exe = program.exe;
    let file = program.module(exe);
    let Some(function) = file.summary.function_named(spawn.function) else { return Vec::new() };
    let function = program.function_node(exe, function);
    let mut found = Vec::new();
    for edge in program.graph.edges_directed(function, Direction::Incoming) {
        let (Edge::Call { call, .. }, Node::Function { module, index }) =
            (*edge.weight(), program.graph[edge.source()])
        else {
            continue;
        };
        let Some(call) = program.module(module).summary.functions[index as usize].calls.get(call as usize) else {
            continue;
        };
        let label = call
            .args
            .iter()
            .find(|(loc, _)| *loc == ArgLoc::Reg(spawn.label_arg))
            .and_then(|(_, value)| value.consts.first());
        let labelled =
            label.and_then(|&addr| elf::string_at(&program.module(module).bytes, addr)).as_deref() == Some(spawn.label);
        if !labelled {
            continue;
        }
        for &(_, target) in call.fn_args.iter().filter(|(arg, _)| *arg == spawn.callback) {
            if let Some(node) = program.resolve(module, target) {
                found.push(node);
            }
        }
    }
    found
}

/// What runs after `entry` returns: the rest of each (allowed) caller, and, when a caller can
/// return too, the rest of its callers, up to `main` and beyond.
fn continuations(
    program: &Program<'_>,
    entry: NodeIndex,
    allowed: Option<&Vec<NodeIndex>>,
    mains: &[NodeIndex],
    roots: &mut Roots,
    notes: &mut Vec<String>,
) {
    let mut pending = vec![(entry, allowed.cloned())];
    let mut seen = HashSet::from([entry]);
    while let Some((callee, allowed)) = pending.pop() {
        let callee_returns = match program.graph[callee] {
            Node::Function { module, index } => !program.module(module).summary.functions[index as usize].noreturn,
            _ => false,
        };
        if !callee_returns {
            continue;
        }
        let callers: Vec<(NodeIndex, u64)> = program
            .graph
            .edges_directed(callee, Direction::Incoming)
            .filter_map(|edge| match *edge.weight() {
                Edge::Call { at, call } if call != u32::MAX => Some((edge.source(), at)),
                _ => None,
            })
            .filter(|(caller, _)| allowed.as_ref().is_none_or(|allowed| allowed.contains(caller)))
            .collect();
        if mains.contains(&callee) {
            // `main` returns into libc, which calls `exit` with its result.
            if let Some(exit) = program.export("exit") {
                roots.functions.push((exit, format!("{} returns into exit", program.label(callee))));
            }
            continue;
        }
        let indirectly_called =
            program.graph.edges_directed(callee, Direction::Incoming).any(|edge| *edge.weight() == Edge::Member);
        if indirectly_called && allowed.is_none() {
            notes.push(format!(
                "{} is also called indirectly and returns; the callers it returns to are not known, so every live function counts",
                program.label(callee)
            ));
            roots.hubs_up_to = Some(6);
        }
        for (caller, at) in callers {
            let Node::Function { module, index } = program.graph[caller] else { continue };
            let file = program.module(module);
            let Ok(continuation) = elf::continuation(&file.bytes, &file.summary, index, at) else { continue };
            let returns = continuation.returns;
            roots.continuations.push((caller, continuation, at, format!("{} returns", program.label(callee))));
            if returns && seen.insert(caller) {
                pending.push((caller, None));
            }
        }
    }
}

/// Syscalls (and unknown sites) of everything reached.
pub(super) fn collect(program: &Program<'_>, result: &Reach) -> PhaseResult {
    let mut phase =
        PhaseResult { args: super::args::phase_values(program, result, Arch::X86_64), ..PhaseResult::default() };
    for &node in &result.order {
        for issue in result.issues(program, node) {
            phase.syscalls.entry((issue.i386, issue.number)).or_insert_with(|| Found {
                path: result.path(program, node),
                site: if issue.via_wrapper {
                    format!("wrapper call at {:#x}", issue.at)
                } else {
                    format!("syscall at {:#x}", issue.at)
                },
            });
        }
        for unknown in result.unknowns(program, node) {
            phase.unknown.push((node, unknown.at, unknown.reason));
            if let Node::Function { module, .. } = program.graph[node] {
                phase.modules_with_unknown.insert(module);
            }
        }
        if let Some(Via::Root(reason)) = &result.via[node.index()]
            && SIGNAL_REGISTRARS.iter().any(|registrar| reason.starts_with(&format!("registered with {registrar}")))
        {
            // The kernel returns from a handler through `sa_restorer`, i.e. `rt_sigreturn`.
            phase.extra.entry("rt_sigreturn".to_owned()).or_insert_with(|| Found {
                path: result.path(program, node),
                site: "return from the signal handler".into(),
            });
        }
        if named(program, node, VDSO_BACKED) {
            for name in VDSO_SYSCALLS {
                phase
                    .extra
                    .entry((*name).to_owned())
                    .or_insert_with(|| Found { path: result.path(program, node), site: "vDSO fallback".into() });
            }
        }
    }
    phase
}

#[cfg(test)]
mod tests {
    use super::EntrySpec;
    use crate::callgraph::fixture;
    use crate::callgraph::graph::Program;
    use crate::elf::assembler::assert_text;

    /// The syscalls init reaches in `files`, with their witness paths.
    fn check_init(files: &str, expect: &str) {
        let (store, process) = fixture::process(files);
        let program = Program::build(&store, &process);
        let result = super::reach_from(&program, super::init_roots(&program), &mut Vec::new());
        assert_text(&fixture::witnesses(&result), expect);
    }

    #[test]
    fn a_dlopened_file_s_exported_data_makes_its_functions_live() {
        // Apache finds a module's hooks through its exported `module` structure: `dlsym` hands
        // out the data, `main` calls what it holds. `unused`, in data the file keeps to itself,
        // stays dead; `mod_init` is a root of its own once `dlopen` is reachable.
        let files = "
/app exe entry=main
  main: call dlopen; icall 1
  dlopen: syscall 257
/lib/mod.so so dlopen
  .hook args=1: syscall 41
  .unused args=1: syscall 42
  mod_init: syscall 43
  data module exported: table
  data table: hook
  data private: unused
";
        check_init(
            files,
            "
41: app!main (entry point) > mod.so!hook (indirect call at 0x1002)
43: mod.so!mod_init (exported by dlopen'd mod.so)
257: app!main (entry point) > app!dlopen
",
        );
        check_init(&files.replace("call dlopen; ", ""), "");
    }

    #[test]
    fn serving_entries_parse_with_an_optional_binary() {
        let spec: EntrySpec = "aeMain@redis-server".parse().unwrap();
        assert_eq!(
            spec,
            EntrySpec {
                symbol: "aeMain".into(),
                binary: Some("redis-server".into()),
                callers: Vec::new(),
                program: None
            }
        );
        assert_eq!("serve".parse::<EntrySpec>().unwrap().binary, None);
        assert_eq!("@x".parse::<EntrySpec>().unwrap_err(), "`@x` is not SYMBOL or SYMBOL@BINARY");
    }
}
