//! Processes for the call graph's tests, written as text: each file a header line and one line
//! per function, turned into the `ModuleSummary`s the ELF analysis would give.
//!
//! ```text
//! /usr/bin/app exe needed=libc.so.6 entry=_start
//!   _start: call main; jmp exit
//!   main: call write(arg1=1); call syscall(arg1=39); takes on_signal; icall 1
//! /lib/libc.so.6 so soname=libc.so.6
//!   write@@GLIBC_2.2.5: syscall 1
//!   syscall args=1: syscall arg1
//! ```
//!
//! A header is a path, `exe` or `so`, and `soname=`, `entry=`, `init=` and `fini=` as needed;
//! `dlopen` marks a file loaded at run time rather than in the global scope (files are in load
//! order). A function line is a name, with `@@VERSION` (default) or `@VERSION` (an old version)
//! for its export, `LOCAL=EXPORT` when the two names differ, and a leading `.` for a function
//! that is not exported; then `args=N`,
//! `noreturn` and `ifunc` if they apply; then its facts: `syscall N[,M]`, `syscall argK` (a
//! wrapper), `syscall ?`; `call NAME(ARGS)` and `jmp NAME(ARGS)` with `argK=N`, `argK=argJ`
//! (passed on) or `argK=&NAME` (a function pointer); `takes NAME`; `icall N` (an indirect call
//! preparing N arguments), `icall N argK` (one through the function's own argument K). `data
//! NAME: NAME…` is a data object holding pointers, `data NAME exported: NAME…` one the file
//! exports. A name this file does not define is an import (`NAME@VERSION` for a versioned one),
//! and so is `@NAME`: a call through the symbol even though the file defines it, which another
//! file may interpose.

use crate::elf::{
    ArgLoc, ArgValue, Call, DataObject, Export, Function, Import, IndirectSite, ModuleKind, ModuleSummary, Reason, Ref,
    Site, SiteNumber,
};

use super::loader::{Module, Process, Store};

/// A file being read: its path, its summary so far, its function lines, its data lines.
type File = (String, ModuleSummary, Vec<String>, Vec<String>);

fn finish(file: Option<File>, store: &mut Store) {
    if let Some((path, summary, lines, data)) = file {
        store.modules.push(Module {
            path,
            summary: summarize(summary, &lines, &data),
            bytes: Vec::new(),
            cached: false,
        });
    }
}

/// Each syscall number a phase reached, with its witness path, a line each.
pub(crate) fn witnesses(result: &super::phases::PhaseResult) -> String {
    result.syscalls.iter().map(|((_, number), found)| format!("{number}: {}\n", found.path.join(" > "))).collect()
}

/// The files of `text` and the process they make (the first file is the executable).
pub(crate) fn process(text: &str) -> (Store, Process) {
    let mut store = Store::default();
    let mut dlopen = Vec::new();
    let mut file: Option<File> = None;
    for line in text.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()) {
        if line.starts_with('/') {
            finish(file.take(), &mut store);
            let mut words = line.split_whitespace();
            let path = words.next().unwrap().to_owned();
            let kind = match words.next() {
                Some("exe") => ModuleKind::PieExecutable,
                Some("so") => ModuleKind::SharedObject,
                other => panic!("{path}: `exe` or `so`, not {other:?}"),
            };
            let mut summary = empty(kind);
            let mut roots = Vec::new();
            for word in words {
                match word.split_once('=') {
                    Some(("soname", soname)) => summary.soname = Some(soname.to_owned()),
                    Some((key @ ("entry" | "init" | "fini"), name)) => roots.push(format!("{key} {name}")),
                    None if word == "dlopen" => dlopen.push(store.modules.len()),
                    _ => panic!("{path}: unknown `{word}`"),
                }
            }
            file = Some((path, summary, roots, Vec::new()));
        } else {
            let (_, _, lines, data) = file.as_mut().expect("a file header first");
            let line = line.trim();
            if line.starts_with("data ") { data.push(line.to_owned()) } else { lines.push(line.to_owned()) }
        }
    }
    finish(file.take(), &mut store);
    let count = store.modules.len();
    let process = Process {
        name: store.modules[0].path.clone(),
        exe: 0,
        scope: (0..count).filter(|index| !dlopen.contains(index)).collect(),
        dlopened: dlopen,
        interp: None,
    };
    (store, process)
}

fn empty(kind: ModuleKind) -> ModuleSummary {
    ModuleSummary {
        format: crate::elf::FORMAT,
        build_id: String::new(),
        kind,
        soname: None,
        interp: None,
        needed: Vec::new(),
        rpath: Vec::new(),
        runpath: Vec::new(),
        entry: None,
        init: Vec::new(),
        fini: Vec::new(),
        functions: Vec::new(),
        exports: Vec::new(),
        imports: Vec::new(),
        objects: Vec::new(),
    }
}

/// `lines` holds the header's `entry`/`init`/`fini` words first, then the function lines.
fn summarize(mut summary: ModuleSummary, lines: &[String], data: &[String]) -> ModuleSummary {
    let (roots, functions): (Vec<&String>, Vec<&String>) =
        lines.iter().partition(|line| ["entry ", "init ", "fini "].iter().any(|key| line.starts_with(key)));
    // Names first, so a call may name a function defined further down.
    let heads: Vec<(&str, &str)> =
        functions.iter().map(|line| line.split_once(':').expect("NAME: FACTS")).map(|(h, f)| (h.trim(), f)).collect();
    let names: Vec<String> =
        heads.iter().map(|(head, _)| local_name(head.split_whitespace().next().unwrap())).collect();
    // `data NAME exported: …` is also a symbol of the file.
    let data_heads: Vec<(String, bool)> = data
        .iter()
        .map(|line| {
            let head = line["data ".len()..].split_once(':').unwrap().0;
            let mut words = head.split_whitespace();
            (words.next().unwrap().to_owned(), words.next() == Some("exported"))
        })
        .collect();
    let data_names: Vec<String> = data_heads.iter().map(|(name, _)| name.clone()).collect();
    let mut imports: Vec<Import> = Vec::new();
    let mut reference = |name: &str| -> Ref {
        // `@name`: through the symbol, as calls to a library's own exported functions go.
        let (by_symbol, name) = match name.strip_prefix('@') {
            Some(name) => (true, name),
            None => (false, name),
        };
        let local = |known: &Vec<String>| known.iter().position(|known| known == name).filter(|_| !by_symbol);
        if let Some(index) = local(&names) {
            return Ref::Fn(index as u32);
        }
        if let Some(index) = local(&data_names) {
            return Ref::Object(index as u32);
        }
        let (name, version) = match name.split_once('@') {
            Some((name, version)) => (name.to_owned(), Some(version.to_owned())),
            None => (name.to_owned(), None),
        };
        let import = Import { name, version, weak: false };
        let index = imports.iter().position(|known| *known == import).unwrap_or_else(|| {
            imports.push(import);
            imports.len() - 1
        });
        Ref::Import(index as u32)
    };
    for (index, (head, facts)) in heads.iter().enumerate() {
        let addr = 0x1000 * (index as u64 + 1);
        let mut words = head.split_whitespace();
        let symbol = words.next().unwrap();
        let mut function =
            Function { addr, end: addr + 0x1000, name: Some(names[index].clone()), ..Function::default() };
        for word in words {
            match word.split_once('=') {
                Some(("args", count)) => function.args = count.parse().unwrap(),
                None if word == "noreturn" => function.noreturn = true,
                None if word == "ifunc" => function.ifunc_resolver = true,
                _ => panic!("{symbol}: unknown `{word}`"),
            }
        }
        for (position, fact) in facts.split(';').map(str::trim).filter(|fact| !fact.is_empty()).enumerate() {
            let at = addr + 1 + position as u64;
            let (verb, rest) = fact.split_once(' ').unwrap_or((fact, ""));
            match verb {
                "syscall" => function.sites.push(Site { at, number: site_number(rest), i386: false, args: Vec::new() }),
                "call" | "jmp" => {
                    let (target, args) = match rest.split_once('(') {
                        Some((target, args)) => (target, args.trim_end_matches(')')),
                        None => (rest, ""),
                    };
                    let mut call = Call {
                        at,
                        target: reference(target),
                        tail: verb == "jmp",
                        args: Vec::new(),
                        fn_args: Vec::new(),
                        opaque_args: 0,
                        through: None,
                    };
                    for arg in args.split_whitespace() {
                        let (loc, value) = arg.split_once('=').unwrap();
                        let loc = arg_loc(loc);
                        if let Some(pointer) = value.strip_prefix('&') {
                            let ArgLoc::Reg(k) = loc else { panic!("{arg}: pointers go in registers") };
                            call.fn_args.push((k, reference(pointer)));
                        } else if value.starts_with("arg") {
                            call.args.push((loc, ArgValue { consts: Vec::new(), forwarded: Some(arg_loc(value)) }));
                        } else {
                            let consts = value.split(',').map(|n| n.parse().unwrap()).collect();
                            call.args.push((loc, ArgValue { consts, forwarded: None }));
                        }
                    }
                    function.calls.push(call);
                }
                "takes" => function.refs.push(reference(rest)),
                "icall" => {
                    // `icall N argK`: through the function's own argument K.
                    let mut words = rest.split_whitespace();
                    let args = words.next().unwrap().parse().unwrap();
                    let argument = words.next().map(arg_loc);
                    function.indirect.push(IndirectSite { at, args, argument });
                }
                _ => panic!("{symbol}: unknown fact `{fact}`"),
            }
        }
        summary.functions.push(function);
        if !symbol.starts_with('.') {
            let symbol = symbol.split_once('=').map_or(symbol, |(_, export)| export);
            let (name, version, default) = match symbol.split_once("@@") {
                Some((name, version)) => (name, Some(version), true),
                None => match symbol.split_once('@') {
                    Some((name, version)) => (name, Some(version), false),
                    None => (symbol, None, true),
                },
            };
            summary.exports.push(Export {
                name: name.to_owned(),
                version: version.map(str::to_owned),
                default,
                weak: false,
                target: Some(Ref::Fn(index as u32)),
            });
        }
    }
    for (index, line) in data.iter().enumerate() {
        let (_, pointers) = line.split_once(':').unwrap();
        let start = 0x100_0000 + 0x100 * index as u64;
        let ptrs = pointers.split_whitespace().map(&mut reference).collect();
        summary.objects.push(DataObject { start, end: start + 0x100, ptrs });
        if data_heads[index].1 {
            summary.exports.push(Export {
                name: data_heads[index].0.clone(),
                version: None,
                default: true,
                weak: false,
                target: Some(Ref::Object(index as u32)),
            });
        }
    }
    for root in roots {
        let (key, name) = root.split_once(' ').unwrap();
        let index = names.iter().position(|known| known == name).expect("a function of this file") as u32;
        match key {
            "entry" => summary.entry = Some(index),
            "init" => summary.init.push(index),
            _ => summary.fini.push(index),
        }
    }
    summary.imports = imports;
    summary
}

/// `name@@V1` and `.name` are both `name` inside the file, `old=name@V1` is `old`.
fn local_name(symbol: &str) -> String {
    let symbol = symbol.split_once('=').map_or(symbol, |(local, _)| local);
    symbol.trim_start_matches('.').split('@').next().unwrap().to_owned()
}

fn arg_loc(text: &str) -> ArgLoc {
    let k: u8 = text.strip_prefix("arg").and_then(|k| k.parse().ok()).expect("argK");
    if k <= 6 { ArgLoc::Reg(k - 1) } else { ArgLoc::Stack(8 + 8 * u32::from(k - 7)) }
}

fn site_number(text: &str) -> SiteNumber {
    match text {
        "?" => SiteNumber::Unresolved(Reason::Computed),
        _ if text.starts_with("arg") => SiteNumber::Forwarded(arg_loc(text)),
        _ => SiteNumber::Known(text.split(',').map(|n| n.parse().unwrap()).collect()),
    }
}
