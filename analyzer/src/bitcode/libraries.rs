//! A traced program analysed from its bitcode, through the container's libraries.
//!
//! The application's own code comes from the bitcode; its libraries are the ones the loader
//! would bind for the traced executable (its `DT_NEEDED` closure and what the trace saw mapped),
//! analysed from their ELF files by `callgraph`, which implements [`LibrarySyscalls`] here. The
//! result is the same [`StaticAnalysis`] the binary analysis gives — per-phase syscalls with a
//! witness path that runs from a root through the application into a library and to its syscall
//! site — merged with the binary analysis of every other program the trace saw.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};

use super::external::LibrarySyscalls;
use super::phases::{self, Analysis, PhaseReach};
use super::program::{Item, Number, Program};
use super::wrappers::syscall_wrappers;
use crate::callgraph::{
    self, EntrySpec, Libraries, ModuleReport, Options, ProgramReport, Reachable, Session, StaticAnalysis,
    UnresolvedPolicy, UnresolvedSite,
};
use crate::docker::rootfs::Rootfs;
use crate::syscalls::Arch;
use crate::trace::{Phase, Trace};

impl LibrarySyscalls for Session<'_> {
    fn reach(&mut self, phase: Phase, calls: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
        Session::reach(self, phase, calls)
    }
}

/// An application's bitcode and the traced executable it stands for.
pub struct Application<'a> {
    pub program: &'a Program,
    /// The bitcode file, as the user named it.
    pub bitcode: &'a str,
    /// The executable's path in the trace (a container path).
    pub executable: &'a str,
}

/// The traced executable `bitcode` stands for: `named` (from `APP.bc@PATH`), else the one whose
/// file name is the bitcode's (`nginx.bc` → `/usr/sbin/nginx`), else the only one.
pub fn traced_executable(trace: &Trace, bitcode: &str, named: Option<&str>) -> Result<String> {
    let paths: Vec<&str> = trace.executables.iter().map(|file| file.path.as_str()).collect();
    if paths.is_empty() {
        bail!("the trace lists no executed program for {bitcode} to stand for; trace the container from its start");
    }
    let listed = || paths.join(", ");
    if let Some(named) = named {
        return match paths.iter().find(|path| **path == named) {
            Some(path) => Ok((*path).to_owned()),
            None => bail!("{named} is not a program the trace saw run (it saw: {})", listed()),
        };
    }
    let stem = std::path::Path::new(bitcode).file_stem().and_then(|stem| stem.to_str()).unwrap_or_default();
    let by_name: Vec<&str> = paths.iter().copied().filter(|path| file_name(path) == stem).collect();
    match (by_name.as_slice(), paths.as_slice()) {
        ([only], _) | ([], [only]) => Ok((*only).to_owned()),
        _ => bail!(
            "cannot tell which traced program {bitcode} is the code of (the trace saw: {}); name it with --bitcode {bitcode}@PATH",
            listed()
        ),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Analyses every program `trace` saw: `app`'s executable from its bitcode through its
/// libraries, the others from their binaries. `options.serving_entries` naming the executable
/// (or no binary) are looked up in the bitcode.
pub fn analyze_trace(
    trace: &Trace,
    files: &Rootfs,
    options: &Options,
    app: &Application<'_>,
) -> Result<StaticAnalysis> {
    let entries = bitcode_entries(&options.serving_entries, app.executable);
    let mapped: Vec<String> = trace.libraries.iter().map(|file| file.path.clone()).collect();
    let external: BTreeSet<String> =
        app.program.functions.iter().filter(|function| function.body.is_none()).map(|f| f.name.clone()).collect();
    let libraries = Libraries::load(files, options, trace.arch, app.executable, &mapped, &external)
        .with_context(|| format!("cannot analyse the libraries of {}", app.executable))?;
    let mut session = libraries.session(options.unresolved);
    let analysis = phases::analyze(app.program, &entries, &mut session).with_context(|| app.bitcode.to_owned())?;
    let mut found = session.finish();
    let phase = trace.executables.iter().find(|file| file.path == app.executable).map(|file| file.phase);
    add_application(&mut found, app, &analysis, phase, options.unresolved);
    if let Some(others) = callgraph::analyze_trace_besides(trace, files, options, app.executable)? {
        found.merge(others);
    }
    Ok(found)
}

/// The serving entries that are the bitcode's: given without a binary, or for its executable.
fn bitcode_entries(entries: &[EntrySpec], executable: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|spec| {
            spec.binary.as_deref().is_none_or(|binary| binary == executable || binary == file_name(executable))
        })
        // An entry derived from a stripped binary is named by its address there, which the
        // bitcode does not know; its own known entries apply instead.
        .filter(|spec| !is_address_label(&spec.symbol))
        .map(|spec| spec.symbol.clone())
        .collect()
}

/// `fn_<hex>`: how the binary analysis names a function without a symbol.
fn is_address_label(symbol: &str) -> bool {
    symbol.strip_prefix("fn_").is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// Adds what the application's own code does — its syscall sites, unknown sites, its report —
/// to the libraries' result.
fn add_application(
    found: &mut StaticAnalysis,
    app: &Application<'_>,
    analysis: &Analysis,
    phase: Option<Phase>,
    policy: UnresolvedPolicy,
) {
    let own = own_sites(app.program);
    for (phase, reach) in [(Phase::Init, &analysis.init), (Phase::Serving, &analysis.serving)] {
        let target = if phase == Phase::Init { &mut found.init } else { &mut found.serving };
        for (witness, compat) in [(&reach.syscalls, false), (&reach.compat_syscalls, true)] {
            for (name, path) in witness {
                target.insert(name.clone(), reachable(path, compat));
            }
        }
        if let Some((handler, _)) = reach.async_roots.iter().find(|(_, kind)| *kind == "signal handler") {
            let site = "return from the signal handler".to_owned();
            target.entry("rt_sigreturn".into()).or_insert(Reachable {
                path: vec![handler.clone()],
                site,
                compat: false,
                args: None,
            });
        }
        if policy == UnresolvedPolicy::AllowModule && !reach.unresolved.is_empty() {
            allow_everything_issued(target, &own.numbers, app.program.arch, app.bitcode);
        }
        record_unresolved(found, reach, phase, app.bitcode);
    }
    if phase == Some(Phase::Serving) {
        // Exec'd while serving: everything it can do happens under the serving filter.
        for (name, reachable) in found.init.clone() {
            found.serving.entry(name).or_insert(reachable);
        }
    }
    found.modules.insert(
        0,
        ModuleReport {
            path: app.bitcode.to_owned(),
            build_id: app
                .program
                .producer
                .clone()
                .map_or_else(|| "LLVM bitcode".to_owned(), |p| format!("bitcode {p}")),
            cached: false,
            functions: app.program.functions.iter().filter(|function| function.body.is_some()).count(),
            sites: own.sites,
            resolved: own.resolved,
        },
    );
    found.resolution = callgraph::resolution(&found.modules);
    found.programs.insert(
        0,
        ProgramReport {
            path: app.executable.to_owned(),
            phase,
            serving_entry: Some(format!("{} (bitcode)", analysis.serving_entries.join(", "))),
            init_syscalls: found.init.len(),
            serving_syscalls: Some(found.serving.len()),
        },
    );
}

/// A bitcode witness (functions, then the site) as a reachability record.
fn reachable(witness: &[String], compat: bool) -> Reachable {
    let (site, path) = witness.split_last().map_or((String::new(), &[][..]), |(site, path)| (site.clone(), path));
    Reachable { path: path.to_vec(), site, compat, args: None }
}

fn record_unresolved(found: &mut StaticAnalysis, reach: &PhaseReach, phase: Phase, bitcode: &str) {
    for site in &reach.unresolved {
        let known = found
            .unresolved
            .iter_mut()
            .find(|known| known.module == bitcode && known.function == site.function && known.reason == site.reason);
        match known {
            Some(known) if !known.phases.contains(&phase) => known.phases.push(phase),
            Some(_) => {}
            None => found.unresolved.push(UnresolvedSite {
                module: bitcode.to_owned(),
                function: site.function.clone(),
                address: "bitcode".to_owned(),
                reason: site.reason.clone(),
                phases: vec![phase],
            }),
        }
    }
}

/// `--unresolved allow-module` for the bitcode: every syscall it issues anywhere.
fn allow_everything_issued(
    target: &mut BTreeMap<String, Reachable>,
    numbers: &BTreeSet<(Arch, u32)>,
    program_arch: Arch,
    bitcode: &str,
) {
    for &(arch, number) in numbers {
        let Some(name) = arch.name(number) else { continue };
        target.entry(name.to_owned()).or_insert_with(|| Reachable {
            path: vec![bitcode.to_owned()],
            site: "allowed for an unresolved site in the bitcode (--unresolved allow-module)".to_owned(),
            compat: arch != program_arch,
            args: None,
        });
    }
}

/// The bitcode's own syscall sites: calls to syscall wrappers and inline assembly.
struct OwnSites {
    sites: usize,
    /// A constant number, or a wrapper's own parameter.
    resolved: usize,
    numbers: BTreeSet<(Arch, u32)>,
}

fn own_sites(program: &Program) -> OwnSites {
    let wrapper = syscall_wrappers(program);
    let mut own = OwnSites { sites: 0, resolved: 0, numbers: BTreeSet::new() };
    let mut count = |arch: Arch, number: Number| {
        own.sites += 1;
        match number {
            Number::Const(number) => {
                own.resolved += 1;
                own.numbers.extend(u32::try_from(number).ok().map(|number| (arch, number)));
            }
            Number::Param(_) => own.resolved += 1,
            Number::Unknown => {}
        }
    };
    let bodies = program.functions.iter().filter_map(|function| function.body.as_ref());
    for item in bodies.flat_map(|body| &body.items) {
        if let Item::Call { callee, args } = item
            && let Some(param) = wrapper[*callee as usize]
        {
            count(program.arch, args.get(param as usize).copied().unwrap_or(Number::Unknown));
        }
    }
    for site in &program.asm_sites {
        count(site.arch, site.number);
    }
    own
}
