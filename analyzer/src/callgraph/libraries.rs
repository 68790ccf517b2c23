//! The libraries of a process whose executable another front end analyses: the application's
//! LLVM bitcode (`bitcode::libraries` drives this).
//!
//! The process is laid out and linked as for the binary analysis, executable included — its
//! `DT_NEEDED` closure is the scope and its exports interpose — but the executable's functions
//! lose their bodies, except the entry point (`_start`, which hands `main` to
//! `__libc_start_main`) and library code linked into it statically under a name the front end
//! calls (glibc's `atexit` comes from `libc_nonshared.a`; in a stripped executable, where it has
//! no name, the symbol it wraps stands for it). The front end says what the application's code does and
//! names the library functions it calls; per phase, the libraries' reach starts from those
//! symbols plus what runs on its own: in init the dynamic loader, `_start` and every init and
//! fini array; in serving the fini arrays and the handlers, threads and exit functions libraries
//! registered during init, with every function pointer init made live. Executable functions the
//! libraries reach (through a symbol the executable defines) go back to the front end by name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::bail;
use petgraph::graph::NodeIndex;

use super::loader::{self, Process, Store};
use super::phases::{self, PhaseResult};
use super::reach::{Reach, Roots, Via};
use super::{Node, Options, Plan, Program, StaticAnalysis, UnresolvedPolicy};
use crate::docker::rootfs::Rootfs;
use crate::syscalls::Arch;
use crate::trace::{Phase, Trace};

/// Functions glibc links into the executable (`libc_nonshared.a`), and the `libc.so` symbol each
/// one only passes its arguments on to.
const STATIC_LIBC: &[(&str, &str)] =
    &[("atexit", "__cxa_atexit"), ("at_quick_exit", "__cxa_at_quick_exit"), ("pthread_atfork", "__register_atfork")];

/// Analyses every program `trace` saw except `server`, which another front end analyses: as
/// [`super::analyze_trace`], but none of them serves (unless exec'd while serving). `None` when
/// the trace saw no other program.
pub fn analyze_trace_besides(
    trace: &Trace,
    files: &Rootfs,
    options: &Options,
    server: &str,
) -> anyhow::Result<Option<StaticAnalysis>> {
    if trace.executables.iter().all(|file| file.path == server) {
        return Ok(None);
    }
    super::run(trace.arch, files, options, &Plan::of(trace, Some(server))).map(Some)
}

/// The files of one process, with the executable's code left to another front end.
pub struct Libraries {
    store: Store,
    process: Process,
    arch: Arch,
    warnings: Vec<String>,
}

impl Libraries {
    /// Lays out `executable` (a container path) with its `DT_NEEDED` closure and the `mapped`
    /// libraries the trace saw, and analyses every file but the executable's own code: its
    /// functions named in `external` (what the front end calls but does not define) are library
    /// code and keep their bodies.
    pub fn load(
        files: &Rootfs,
        options: &Options,
        arch: Arch,
        executable: &str,
        mapped: &[String],
        external: &BTreeSet<String>,
    ) -> anyhow::Result<Libraries> {
        let mut warnings = Vec::new();
        let (mut store, mut processes) =
            loader::load(files, &options.cache, &[executable.to_owned()], mapped, &mut warnings)?;
        let Some(process) = processes.pop() else {
            bail!("{}", warnings.join("; "));
        };
        let exe = &mut store.modules[process.exe].summary;
        if exe.interp.is_none() {
            bail!(
                "{executable} is statically linked: its libc is part of its own code, which the bitcode stands for; \
                 analyse it without --bitcode"
            );
        }
        let entry = exe.entry;
        for (index, function) in exe.functions.iter_mut().enumerate() {
            let library_code = function.name.as_ref().is_some_and(|name| external.contains(name));
            if Some(index as u32) != entry && !library_code {
                function.sites.clear();
                function.calls.clear();
                function.indirect.clear();
                function.refs.clear();
            }
        }
        Ok(Libraries { store, process, arch, warnings })
    }

    /// The process's call graph, ready to be reached phase by phase.
    pub fn session(&self, policy: UnresolvedPolicy) -> Session<'_> {
        Session {
            libraries: self,
            program: Program::build(&self.store, &self.process),
            policy,
            init: None,
            rounds: BTreeMap::new(),
            notes: Vec::new(),
        }
    }
}

/// The libraries' side of one program, phase by phase.
pub struct Session<'s> {
    libraries: &'s Libraries,
    program: Program<'s>,
    policy: UnresolvedPolicy,
    /// The last init reach: what serving starts from.
    init: Option<Reach>,
    /// The last reach of each phase.
    rounds: BTreeMap<Phase, Round>,
    notes: Vec<String>,
}

/// One phase's reach from the front end's calls.
struct Round {
    result: PhaseResult,
    /// Symbol → the front end's witness path to its call.
    calls: BTreeMap<String, Vec<String>>,
    /// How each symbol's root reads at the start of a library witness path → (the symbol, the
    /// root's label without the reason).
    root_labels: HashMap<String, (String, String)>,
    /// Symbols no library defines.
    undefined: Vec<String>,
}

impl Session<'_> {
    /// Reaches everything `calls` (symbol → the front end's witness path) lead to in `phase`,
    /// with what the libraries run on their own then, replacing the phase's earlier reach.
    /// Returns the executable's functions the libraries call, by name, with who calls them.
    pub fn reach(&mut self, phase: Phase, calls: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
        let program = &self.program;
        let mut roots = match phase {
            Phase::Serving => self.serving_roots(),
            _ => phases::init_roots(program),
        };
        let mut root_labels = HashMap::new();
        let mut undefined = Vec::new();
        for symbol in calls.keys() {
            let wrapped = STATIC_LIBC.iter().find(|(name, _)| name == symbol).map(|(_, wrapped)| *wrapped);
            match program.export(symbol).or_else(|| program.export(wrapped?)) {
                Some(node) => {
                    let (label, reason) = (program.label(node), format!("called as {symbol}"));
                    root_labels.insert(format!("{label} ({reason})"), (symbol.clone(), label));
                    roots.functions.push((node, reason));
                }
                None => undefined.push(symbol.clone()),
            }
        }
        let reach = phases::grow(program, roots, phase != Phase::Serving, &mut self.notes);
        let callbacks = self.callbacks(&reach);
        let result = phases::collect(program, &reach);
        if phase != Phase::Serving {
            self.init = Some(reach);
        }
        self.rounds.insert(phase, Round { result, calls: calls.clone(), root_labels, undefined });
        callbacks
    }

    /// Serving starts from init's live function pointers, the handlers, threads and exit
    /// functions libraries registered in init, and the fini arrays (the exit path).
    fn serving_roots(&self) -> Roots {
        let program = &self.program;
        let Some(init) = &self.init else { return Roots::default() };
        let (registered, opaque) = phases::registered(program, init);
        let mut roots = Roots {
            live: (0..init.live.len()).filter(|&node| init.live[node]).map(NodeIndex::new).collect(),
            functions: registered.into_iter().filter(|(_, reason)| reason != "main").collect(),
            hubs_up_to: opaque.then_some(3),
            ..Roots::default()
        };
        for module in 0..program.scope_len as u16 {
            let fini = phases::init_fini(program, module).into_iter().filter(|(_, reason)| reason.starts_with("fini"));
            roots.functions.extend(fini);
        }
        roots
    }

    /// Named executable functions the reach entered other than as roots: the application's
    /// functions libraries call (and library code linked into the executable, which the front
    /// end does not define).
    fn callbacks(&self, reach: &Reach) -> Vec<(String, String)> {
        let program = &self.program;
        let mut found = Vec::new();
        for &node in &reach.order {
            let (
                Node::Function { module, index },
                Some(
                    Via::Call { from }
                    | Via::Indirect { from, .. }
                    | Via::Taken { from }
                    | Via::Loaded { from, .. }
                    | Via::Passed { from, .. },
                ),
            ) = (program.graph[node], &reach.via[node.index()])
            else {
                continue;
            };
            if module != program.exe {
                continue;
            }
            if let Some(name) = &program.module(module).summary.functions[index as usize].name {
                found.push((name.clone(), format!("called by {}", program.label(*from))));
            }
        }
        found
    }

    /// Both phases' library syscalls as a static analysis of the libraries alone (no program
    /// report: the front end adds its own syscalls and the program), each witness path starting
    /// with the front end's path to the library call.
    pub fn finish(mut self) -> StaticAnalysis {
        let libraries = self.libraries;
        let exe_path = libraries.store.modules[libraries.process.exe].path.clone();
        let mut analysis = super::empty(libraries.arch, &libraries.store, libraries.warnings.clone());
        analysis.modules.retain(|module| module.path != exe_path);
        // Every round of a phase notes the same things again.
        self.notes.sort_unstable();
        self.notes.dedup();
        analysis.warnings.append(&mut self.notes);
        for (phase, mut round) in std::mem::take(&mut self.rounds) {
            join_witnesses(&mut round);
            super::merge_phase(&mut analysis, &self.program, &round.result, phase, self.policy);
            if !round.undefined.is_empty() {
                analysis.warnings.push(format!(
                    "{phase}: no library of {exe_path} defines {} the application calls: {}",
                    if round.undefined.len() == 1 { "a function" } else { "functions" },
                    round.undefined.join(", ")
                ));
            }
        }
        analysis
    }
}

/// Prefixes every library witness that starts at a call from the front end with the front end's
/// path to that call (whose last step, the symbol, the library path names again).
fn join_witnesses(round: &mut Round) {
    let found = round.result.syscalls.values_mut().chain(round.result.extra.values_mut());
    for found in found {
        let Some((symbol, label)) = found.path.first().and_then(|first| round.root_labels.get(first)) else { continue };
        let Some(before) = round.calls.get(symbol) else { continue };
        let mut path: Vec<String> = before[..before.len().saturating_sub(1)].to_vec();
        path.push(label.clone());
        path.extend(found.path.drain(1..));
        found.path = path;
    }
}

impl StaticAnalysis {
    /// Adds `other`'s programs, files, syscalls (keeping this one's witness where both have
    /// one), unresolved sites and warnings.
    pub fn merge(&mut self, other: StaticAnalysis) {
        self.programs.extend(other.programs);
        for module in other.modules {
            if !self.modules.iter().any(|known| known.path == module.path) {
                self.modules.push(module);
            }
        }
        self.resolution = super::resolution(&self.modules);
        for (phase, theirs) in [(&mut self.init, other.init), (&mut self.serving, other.serving)] {
            for (name, reachable) in theirs {
                match phase.entry(name) {
                    std::collections::btree_map::Entry::Occupied(mut known) => known.get_mut().join(reachable),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(reachable);
                    }
                }
            }
        }
        for site in other.unresolved {
            match self.unresolved.iter_mut().find(|known| known.module == site.module && known.address == site.address)
            {
                Some(known) => {
                    for phase in site.phases {
                        if !known.phases.contains(&phase) {
                            known.phases.push(phase);
                        }
                    }
                }
                None => self.unresolved.push(site),
            }
        }
        self.warnings.extend(other.warnings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callgraph::fixture;
    use crate::elf::assembler::assert_text;

    /// Runs the libraries of `fixture`'s process (the executable written as the binary analysis
    /// leaves it: bodies only for `_start` and library code) through an init and a serving round,
    /// the front end calling the symbols `init` and `serving` name (each from `bitcode!main`),
    /// and prints the executable functions each round hands back, every syscall per phase with
    /// its witness, and the warnings.
    fn check(fixture: &str, init: &[&str], serving: &[&str], expect: &str) {
        let (store, process) = fixture::process(fixture);
        let libraries = Libraries { store, process, arch: Arch::X86_64, warnings: Vec::new() };
        let mut session = libraries.session(UnresolvedPolicy::Deny);
        let calls = |symbols: &[&str]| -> BTreeMap<String, Vec<String>> {
            symbols
                .iter()
                .map(|symbol| (symbol.to_string(), vec!["bitcode!main".to_owned(), symbol.to_string()]))
                .collect()
        };
        let mut out = String::new();
        for (phase, symbols) in [(Phase::Init, init), (Phase::Serving, serving)] {
            for (name, caller) in session.reach(phase, &calls(symbols)) {
                out.push_str(&format!("{phase} calls back {name}: {caller}\n"));
            }
        }
        let analysis = session.finish();
        for (phase, syscalls) in [(Phase::Init, &analysis.init), (Phase::Serving, &analysis.serving)] {
            for (name, found) in syscalls {
                out.push_str(&format!("{phase} {name}: {}\n", found.path.join(" > ")));
            }
        }
        for warning in &analysis.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        assert_text(&out, expect);
    }

    #[test]
    fn each_phase_reaches_from_the_front_end_s_calls_and_what_libraries_run_on_their_own() {
        // The executable's `malloc` interposes libc's, so `fopen` calls back into the
        // application. libc's constructor registers a signal handler in init, which serving
        // keeps; its destructor runs in both phases. `atexit` is static libc code the
        // executable does not define here: it stands for `__cxa_atexit`.
        check(
            "
/app exe entry=_start
  _start: call __libc_start_main(arg1=&main)
  main:
  malloc:
/lib/libc.so.6 so init=libc_init fini=libc_fini
  __libc_start_main: syscall 158
  write: syscall 1
  read: syscall 0
  fopen: call @malloc; syscall 257
  __cxa_atexit: syscall 12
  libc_init: call sigaction(arg1=15 arg2=&on_term)
  sigaction: syscall 13
  .on_term: syscall 39
  libc_fini: syscall 3
",
            &["write", "fopen", "atexit"],
            &["read", "nothing_defines_this"],
            "
init calls back malloc: called by libc.so.6!fopen
init arch_prctl: app!_start (entry point) > libc.so.6!__libc_start_main
init brk: bitcode!main > libc.so.6!__cxa_atexit
init close: libc.so.6!libc_fini (fini array of libc.so.6)
init getpid: libc.so.6!on_term (registered with sigaction)
init openat: bitcode!main > libc.so.6!fopen
init rt_sigaction: libc.so.6!libc_init (init array of libc.so.6) > libc.so.6!sigaction
init rt_sigreturn: libc.so.6!on_term (registered with sigaction)
init write: bitcode!main > libc.so.6!write
serving close: libc.so.6!libc_fini (fini array of libc.so.6)
serving getpid: libc.so.6!on_term (registered with sigaction)
serving read: bitcode!main > libc.so.6!read
serving rt_sigreturn: libc.so.6!on_term (registered with sigaction)
warning: serving: no library of /app defines a function the application calls: nothing_defines_this
",
        );
    }

    /// Links `/app` (dynamic unless `static_exe`) from `source` beside a libc in a temporary root,
    /// loads it for the front end with `external` as the symbols it calls but does not define,
    /// and prints the executable's functions with the syscalls each kept.
    fn check_load(source: &str, static_exe: bool, external: &[&str], expect: &str) {
        use crate::elf::assembler;
        let dir = tempfile::tempdir().unwrap();
        let libc = dir.path().join("lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&libc).unwrap();
        assembler::link_in(&libc, "libc.so.6", ".globl write\nwrite: ret\n", &["-shared", "-soname", "libc.so.6"]);
        let libc_path = libc.join("libc.so.6").display().to_string();
        let args: &[&str] =
            if static_exe { &[] } else { &["-dynamic-linker", "/lib64/ld-linux-x86-64.so.2", &libc_path] };
        assembler::link_in(dir.path(), "app", source, args);
        let options = Options {
            serving_entries: Vec::new(),
            unresolved: UnresolvedPolicy::Deny,
            cache: crate::elf::Cache::disabled(),
        };
        let external: BTreeSet<String> = external.iter().map(|name| name.to_string()).collect();
        let rootfs = Rootfs::dir(dir.path()).unwrap();
        let out = match Libraries::load(&rootfs, &options, Arch::X86_64, "/app", &[], &external) {
            Ok(libraries) => {
                let exe = &libraries.store.modules[libraries.process.exe].summary;
                let mut out = String::new();
                for function in &exe.functions {
                    let sites: Vec<String> = function
                        .sites
                        .iter()
                        .map(|site| match &site.number {
                            crate::elf::SiteNumber::Known(numbers) => {
                                numbers.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                            }
                            other => format!("{other:?}"),
                        })
                        .collect();
                    out.push_str(&format!("{}: {}\n", function.name.as_deref().unwrap_or("?"), sites.join(" ")));
                }
                out
            }
            Err(err) => format!("error: {err}"),
        };
        assert_text(&out, expect);
    }

    #[test]
    fn the_executable_keeps_only_its_entry_and_library_code() {
        let source = "
.globl _start
_start: mov $158, %eax
    syscall
    ret
main: mov $39, %eax
    syscall
    ret
atexit: mov $12, %eax
    syscall
    ret
";
        check_load(
            source,
            false,
            &["atexit", "write"],
            "
_start: 158
main:
atexit: 12
",
        );
        check_load(
            source,
            true,
            &[],
            "error: /app is statically linked: its libc is part of its own code, which the bitcode stands for; analyse it without --bitcode",
        );
    }
}
