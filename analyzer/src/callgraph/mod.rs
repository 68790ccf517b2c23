//! From files to per-phase syscall sets: loader-exact linking of each process (the executable,
//! its `DT_NEEDED` closure in load order, what it `dlopen`ed), a petgraph call graph over the
//! files' summaries, and reachability per phase with a shortest witness path per syscall.
//!
//! Entry points: [`analyze_trace`] (every program a trace saw, split by phase) and
//! [`analyze_programs`] (given files, from their entry points or a symbol). Both read files only
//! through a [`Rootfs`], so nothing outside the container is ever analysed. Turning the result
//! into profiles and `analysis.json` is the `profile` module's job.

mod args;
#[cfg(test)]
mod fixture;
mod graph;
mod libraries;
mod loader;
mod phases;
mod reach;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

pub use args::ArgValues;
pub use graph::{Edge, Issue, Node, Program};
pub use libraries::{Libraries, Session, analyze_trace_besides};
pub use loader::{Module, Process, Store};
pub use phases::EntrySpec;

use crate::docker::rootfs::Rootfs;
use crate::elf::Cache;
use crate::servers::KNOWN_SERVERS;
use crate::syscalls::Arch;
use crate::trace::{Phase, Trace};

/// What to do about syscall sites whose number is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnresolvedPolicy {
    /// Fail closed: allow nothing extra for them (they are listed, and denied with ENOSYS).
    Deny,
    /// Allow every syscall the file holding the site issues anywhere.
    AllowModule,
}

/// How to analyse.
#[derive(Clone, Debug)]
pub struct Options {
    /// Serving entries given by the user; empty means "look for known ones".
    pub serving_entries: Vec<EntrySpec>,
    pub unresolved: UnresolvedPolicy,
    pub cache: Cache,
}

/// The static result: syscalls reachable per phase, with evidence, and what could not be known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StaticAnalysis {
    pub arch: Arch,
    pub programs: Vec<ProgramReport>,
    pub modules: Vec<ModuleReport>,
    pub init: BTreeMap<String, Reachable>,
    pub serving: BTreeMap<String, Reachable>,
    pub unresolved: Vec<UnresolvedSite>,
    pub resolution: Resolution,
    pub warnings: Vec<String>,
}

impl StaticAnalysis {
    /// No static analysis: what a profile made from a trace alone stands on.
    pub fn none(arch: Arch) -> StaticAnalysis {
        StaticAnalysis {
            arch,
            programs: Vec::new(),
            modules: Vec::new(),
            init: BTreeMap::new(),
            serving: BTreeMap::new(),
            unresolved: Vec::new(),
            resolution: resolution(&[]),
            warnings: Vec::new(),
        }
    }
}

/// One program analysed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramReport {
    pub path: String,
    /// The phase the trace saw it exec'd in.
    pub phase: Option<Phase>,
    pub serving_entry: Option<String>,
    pub init_syscalls: usize,
    pub serving_syscalls: Option<usize>,
}

/// One file analysed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleReport {
    pub path: String,
    pub build_id: String,
    pub cached: bool,
    pub functions: usize,
    /// `syscall` instructions, and how many have a known number or forward their argument.
    pub sites: usize,
    pub resolved: usize,
}

/// Why a syscall is reachable: a shortest path from a root, and the site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reachable {
    pub path: Vec<String>,
    pub site: String,
    /// Named in the i386 table (`int $0x80` in 64-bit code).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compat: bool,
    /// The values of its narrowable arguments (`syscalls::args`) at every reachable site;
    /// `None` when some site's value is unknown, or the syscall has no such argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<ArgValues>,
}

impl Reachable {
    /// Adds another witness of the same syscall in the same phase: the first path stays, the
    /// argument values join (unknown on either side is unknown).
    pub fn join(&mut self, other: Reachable) {
        self.args = match (self.args.take(), other.args) {
            (Some(mut mine), Some(theirs)) => {
                for (index, values) in theirs {
                    let known = mine.entry(index).or_default();
                    for (value, site) in values {
                        known.entry(value).or_insert(site);
                    }
                }
                let small = mine.values().all(|values| values.len() <= crate::syscalls::args::MAX_VALUES);
                small.then_some(mine)
            }
            _ => None,
        };
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnresolvedSite {
    pub module: String,
    pub function: String,
    pub address: String,
    pub reason: String,
    pub phases: Vec<Phase>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    pub resolved: usize,
    pub sites: usize,
    /// resolved / sites, in percent.
    pub rate: f64,
}

/// Analyses every program `trace` saw and every library it mapped, split by phase.
///
/// Contract: `files` must be the traced container's filesystem (from `Rootfs::dir` or
/// `docker::rootfs::export_image`); paths in the trace are container paths. Programs exec'd
/// only during init (entrypoint scripts and their helpers) count for init only; a program
/// exec'd while serving counts whole for serving; the server's serving set starts at the
/// serving entry (`options.serving_entries`, else a known default). Files that cannot be read
/// or parsed become warnings; the call fails only when no program can be analysed. No profile
/// is written here: pass the result to `profile::Analysis::new` and write that.
pub fn analyze_trace(trace: &Trace, files: &Rootfs, options: &Options) -> anyhow::Result<StaticAnalysis> {
    if trace.executables.is_empty() {
        anyhow::bail!("the trace lists no executed program to analyse; trace the container from its start");
    }
    run(trace.arch, files, options, &Plan::of(trace, None))
}

/// Analyses `paths` (container paths) as programs of their own, each through its libraries:
/// the syscalls reachable from their entry points (or from `entry`) go to `init`, and
/// `serving` stays empty.
pub fn analyze_programs(
    paths: &[String],
    files: &Rootfs,
    entry: Option<&EntrySpec>,
    options: &Options,
) -> anyhow::Result<StaticAnalysis> {
    let mut warnings = Vec::new();
    let programs: Vec<String> = paths.to_vec();
    let (store, processes) = loader::load(files, &options.cache, &programs, &[], &mut warnings)?;
    if processes.is_empty() {
        anyhow::bail!("{}", warnings.join("; "));
    }
    let mut analysis = empty(Arch::X86_64, &store, warnings);
    for process in &processes {
        let program = Program::build(&store, process);
        let roots = match entry {
            Some(spec) => phases::symbol_roots(&program, spec).ok_or_else(|| {
                anyhow::anyhow!("{} is not defined in {} or its libraries", spec.symbol, process.name)
            })?,
            None => phases::program_roots(&program),
        };
        let result = phases::reach_from(&program, roots, &mut analysis.warnings);
        let count = merge_phase(&mut analysis, &program, &result, Phase::Init, options.unresolved);
        analysis.programs.push(ProgramReport {
            path: process.name.clone(),
            phase: None,
            serving_entry: None,
            init_syscalls: count,
            serving_syscalls: None,
        });
    }
    Ok(analysis)
}

/// The programs to analyse and how they take part.
struct Plan<'a> {
    programs: Vec<(String, Option<Phase>)>,
    libraries: Vec<String>,
    serving_execs: Vec<&'a str>,
    /// The server is analysed elsewhere (from bitcode): none of these programs serves, except
    /// those exec'd while serving.
    server_elsewhere: bool,
}

impl Plan<'_> {
    /// Every program `trace` saw but `elsewhere` (the server, analysed by another front end).
    fn of<'t>(trace: &'t Trace, elsewhere: Option<&str>) -> Plan<'t> {
        let executables = trace.executables.iter().filter(|file| Some(file.path.as_str()) != elsewhere);
        Plan {
            programs: executables.clone().map(|file| (file.path.clone(), Some(file.phase))).collect(),
            libraries: trace.libraries.iter().map(|file| file.path.clone()).collect(),
            serving_execs: executables
                .filter(|file| file.phase == Phase::Serving)
                .map(|file| file.path.as_str())
                .collect(),
            server_elsewhere: elsewhere.is_some(),
        }
    }
}

fn run(arch: Arch, files: &Rootfs, options: &Options, plan: &Plan<'_>) -> anyhow::Result<StaticAnalysis> {
    let mut warnings = Vec::new();
    let paths: Vec<String> = plan.programs.iter().map(|(path, _)| path.clone()).collect();
    let (store, processes) = loader::load(files, &options.cache, &paths, &plan.libraries, &mut warnings)?;
    if processes.is_empty() {
        anyhow::bail!("no program of the trace could be analysed: {}", warnings.join("; "));
    }
    let mut analysis = empty(arch, &store, warnings);
    let programs: Vec<Program<'_>> = processes.iter().map(|process| Program::build(&store, process)).collect();
    let server = if plan.server_elsewhere { None } else { server_index(&processes, &programs, options) };
    let mut roles: Vec<phases::Role<'_>> = processes
        .iter()
        .enumerate()
        .map(|(position, process)| phases::Role {
            serves: Some(position) == server,
            exec_in_serving: plan.serving_execs.contains(&process.name.as_str()),
            entries: &options.serving_entries,
            defaults: options.serving_entries.is_empty(),
        })
        .collect();
    let mut results: Vec<phases::ProcessPhases> =
        programs.iter().zip(&roles).map(|(program, role)| phases::evaluate(program, role)).collect();
    // A server that can exec while serving may run again what the container exec'd before it
    // served (lighttpd's reload re-reads its configuration, which runs shell commands): those
    // programs serve as a whole, as if the trace had seen them exec'd while serving.
    if results.iter().any(|result| result.serving.as_ref().is_some_and(|serving| can_exec(arch, serving))) {
        for ((program, role), result) in programs.iter().zip(&mut roles).zip(&mut results) {
            if result.serving.is_none() {
                role.exec_in_serving = true;
                *result = phases::evaluate(program, role);
                result.serving_entry = Some("the whole program (serving can exec it again)".into());
            }
        }
    }
    for ((process, program), result) in processes.iter().zip(&programs).zip(results) {
        let phase = plan.programs.iter().find(|(path, _)| *path == process.name).and_then(|(_, phase)| *phase);
        analysis.warnings.extend(result.notes.iter().cloned());
        let init = merge_phase(&mut analysis, program, &result.init, Phase::Init, options.unresolved);
        let serving = result
            .serving
            .as_ref()
            .map(|serving| merge_phase(&mut analysis, program, serving, Phase::Serving, options.unresolved));
        analysis.programs.push(ProgramReport {
            path: process.name.clone(),
            phase,
            serving_entry: result.serving_entry.clone(),
            init_syscalls: init,
            serving_syscalls: serving,
        });
    }
    Ok(analysis)
}

/// Whether a phase reaches `execve` or `execveat` in 64-bit code.
fn can_exec(arch: Arch, phase: &phases::PhaseResult) -> bool {
    ["execve", "execveat"]
        .iter()
        .filter_map(|name| arch.number(name))
        .any(|number| phase.syscalls.contains_key(&(false, number)))
}

/// The process that serves: the program a derived entry was found running in; else the one
/// defining a given or known serving entry; else the one loading a given entry's file (its
/// serving then allows what its init reaches); else the last program exec'd (the entrypoint
/// chain ends by exec'ing the server). A program exec'd after the server — a helper its
/// configuration runs — never stands in for the server an entry names.
fn server_index(processes: &[Process], programs: &[Program<'_>], options: &Options) -> Option<usize> {
    let executable = |position: usize| {
        let program = &programs[position];
        [processes[position].name.as_str(), program.module(program.exe).path.as_str()]
    };
    let running = options
        .serving_entries
        .iter()
        .filter_map(|spec| spec.program.as_deref())
        .find_map(|found| (0..programs.len()).find(|&position| executable(position).contains(&found)));
    if running.is_some() {
        return running;
    }
    let loads = |program: &Program<'_>| {
        let files: Vec<&str> =
            (0..program.modules.len() as u16).map(|module| program.module(module).path.as_str()).collect();
        options
            .serving_entries
            .iter()
            .filter_map(|spec| spec.binary.as_deref())
            .any(|binary| files.iter().any(|&path| path == binary || graph::basename(path) == binary))
    };
    let defines = |program: &Program<'_>| {
        if options.serving_entries.is_empty() {
            let exe = &program.module(program.exe).summary;
            KNOWN_SERVERS.iter().any(|server| exe.function_named(server.serving_entry).is_some())
        } else {
            options.serving_entries.iter().any(|spec| phases::symbol_roots(program, spec).is_some())
        }
    };
    programs.iter().position(defines).or_else(|| programs.iter().position(loads)).or(programs.len().checked_sub(1))
}

fn empty(arch: Arch, store: &loader::Store, warnings: Vec<String>) -> StaticAnalysis {
    let modules: Vec<ModuleReport> = store
        .modules
        .iter()
        .map(|module| {
            let (resolved, sites) = module.summary.site_counts();
            ModuleReport {
                path: module.path.clone(),
                build_id: module.summary.build_id.clone(),
                cached: module.cached,
                functions: module.summary.functions.len(),
                sites,
                resolved,
            }
        })
        .collect();
    StaticAnalysis { resolution: resolution(&modules), modules, warnings, ..StaticAnalysis::none(arch) }
}

/// The share of syscall sites over `modules` whose number is known.
pub fn resolution(modules: &[ModuleReport]) -> Resolution {
    let (resolved, sites) = modules.iter().fold((0, 0), |(r, s), module| (r + module.resolved, s + module.sites));
    let rate = if sites == 0 { 100.0 } else { 100.0 * resolved as f64 / sites as f64 };
    Resolution { resolved, sites, rate }
}

/// Adds one process's phase result to the analysis; returns how many syscalls it has.
fn merge_phase(
    analysis: &mut StaticAnalysis,
    program: &Program<'_>,
    result: &phases::PhaseResult,
    phase: Phase,
    policy: UnresolvedPolicy,
) -> usize {
    let arch = analysis.arch;
    let mut names: BTreeMap<String, Reachable> = BTreeMap::new();
    for (&(i386, number), found) in &result.syscalls {
        let table = if i386 { Arch::X86 } else { arch };
        match table.name(number) {
            Some(name) => {
                let args =
                    if i386 || arch != Arch::X86_64 { None } else { result.args.get(&number).cloned().flatten() };
                names.entry(name.to_owned()).or_insert_with(|| Reachable {
                    path: found.path.clone(),
                    site: found.site.clone(),
                    compat: i386,
                    args,
                });
            }
            None => {
                analysis.warnings.push(format!("syscall number {number} at {} names no {table} syscall", found.site))
            }
        }
    }
    for (name, found) in &result.extra {
        names.entry(name.clone()).or_insert_with(|| Reachable {
            path: found.path.clone(),
            site: found.site.clone(),
            compat: false,
            args: None,
        });
    }
    if let Some(sigaction) = names.get("rt_sigaction").cloned() {
        // The kernel returns from every handler through `sa_restorer` (`__restore_rt`).
        names
            .entry("rt_sigreturn".into())
            .or_insert(Reachable { site: "signal return after a handler".into(), ..sigaction });
    }
    if policy == UnresolvedPolicy::AllowModule {
        allow_modules(program, result, arch, &mut names);
    }
    record_unknown(analysis, program, result, phase);
    let count = names.len();
    let target = match phase {
        Phase::Serving => &mut analysis.serving,
        _ => &mut analysis.init,
    };
    for (name, reachable) in names {
        match target.entry(name) {
            std::collections::btree_map::Entry::Occupied(mut known) => known.get_mut().join(reachable),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(reachable);
            }
        }
    }
    count
}

/// `--unresolved allow-module`: a file with an unknown site may issue anything it issues elsewhere.
fn allow_modules(
    program: &Program<'_>,
    result: &phases::PhaseResult,
    arch: Arch,
    names: &mut BTreeMap<String, Reachable>,
) {
    for &module in &result.modules_with_unknown {
        let file = program.module(module);
        let mut numbers: BTreeSet<(bool, u32)> = BTreeSet::new();
        for node in (0..program.function_count()).map(petgraph::graph::NodeIndex::new) {
            if matches!(program.graph[node], Node::Function { module: m, .. } if m == module) {
                numbers.extend(program.issues[node.index()].iter().map(|issue| (issue.i386, issue.number)));
            }
        }
        for (i386, number) in numbers {
            let table = if i386 { Arch::X86 } else { arch };
            if let Some(name) = table.name(number) {
                names.entry(name.to_owned()).or_insert_with(|| Reachable {
                    path: vec![file.path.clone()],
                    site: "allowed for an unresolved site in this file (--unresolved allow-module)".into(),
                    compat: i386,
                    args: None,
                });
            }
        }
    }
}

fn record_unknown(analysis: &mut StaticAnalysis, program: &Program<'_>, result: &phases::PhaseResult, phase: Phase) {
    let mut index: HashMap<(String, String), usize> = analysis
        .unresolved
        .iter()
        .enumerate()
        .map(|(i, site)| ((site.module.clone(), site.address.clone()), i))
        .collect();
    for &(node, at, reason) in &result.unknown {
        let Node::Function { module, index: function } = program.graph[node] else { continue };
        let file = program.module(module);
        let key = (file.path.clone(), format!("{at:#x}"));
        let position = *index.entry(key.clone()).or_insert_with(|| {
            analysis.unresolved.push(UnresolvedSite {
                module: key.0.clone(),
                function: file.summary.function_label(function),
                address: key.1.clone(),
                reason: reason.as_str().to_owned(),
                phases: Vec::new(),
            });
            analysis.unresolved.len() - 1
        });
        let phases = &mut analysis.unresolved[position].phases;
        if !phases.contains(&phase) {
            phases.push(phase);
        }
    }
}
