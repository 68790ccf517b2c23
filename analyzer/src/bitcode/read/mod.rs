//! Reading a bitcode file into a [`Program`] (needs LLVM 19: the `bitcode` feature).
//!
//! Order of work: check the producer without LLVM (a clear error for newer bitcode), let LLVM's
//! C API parse it and collect what llvm-ir drops (`sidecar`), convert it with llvm-ir, then
//! extract the facts of every function body (`body`). The llvm-ir module is dropped before the
//! analysis starts, so peak memory is one module plus the facts.

mod body;
mod fields;
mod sidecar;

use std::collections::HashMap;
use std::path::Path;

use llvm_ir::{Module, Name};
use thiserror::Error;

use super::producer::{self, ProducerError};
use super::program::{
    AsmSite, FieldId, FnId, Function, Global, GlobalId, Item, Number, Program, Source, TypeId, UNTYPED_MEMORY,
};
use crate::syscalls::Arch;

/// The newest LLVM whose bitcode this build can read.
pub const LLVM_MAJOR: u32 = 19;

#[derive(Debug, Error)]
pub enum BitcodeError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: std::io::Error },
    #[error("{path}: {reason}; pass the application's whole-program .bc (e.g. from `cargo xtask bitcode nginx`)")]
    NotBitcode { path: String, reason: ProducerError },
    #[error(
        "{path} was written by {producer}, newer than the LLVM {LLVM_MAJOR} this build reads; \
         rebuild it with clang-{LLVM_MAJOR}"
    )]
    TooNew { path: String, producer: String },
    #[error("LLVM cannot parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: unsupported target `{triple}` (x86_64, i386 and aarch64 are)")]
    Target { path: String, triple: String },
}

/// Reads the bitcode at `path`.
pub fn read(path: &Path) -> Result<Program, BitcodeError> {
    let shown = path.display().to_string();
    let (bytes, producer) = header(path)?;
    let side = sidecar::scan(&bytes).map_err(|message| BitcodeError::Parse { path: shown.clone(), message })?;
    drop(bytes);
    let module = parse(path).map_err(|message| BitcodeError::Parse { path: shown.clone(), message })?;
    let arch = module_arch(&module).ok_or_else(|| BitcodeError::Target {
        path: shown.clone(),
        triple: module.target_triple.clone().unwrap_or_default(),
    })?;
    Ok(extract(&module, side, arch, producer.map(|producer| producer.name)))
}

/// Checks, without LLVM, that `path` is bitcode this build can read: a command that will read it
/// later (after a trace) fails before doing any work.
pub fn check(path: &Path) -> Result<(), BitcodeError> {
    header(path).map(drop)
}

/// The file's bytes and producer, refusing what is not bitcode or is newer than this LLVM.
fn header(path: &Path) -> Result<(Vec<u8>, Option<producer::Producer>), BitcodeError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|reason| BitcodeError::Io { path: shown.clone(), reason })?;
    let producer = producer::read(&bytes).map_err(|reason| BitcodeError::NotBitcode { path: shown.clone(), reason })?;
    if let Some(producer) = &producer
        && (producer.llvm_major().is_some_and(|major| major > LLVM_MAJOR) || producer.epoch != 0)
    {
        return Err(BitcodeError::TooNew { path: shown, producer: producer.name.clone() });
    }
    Ok((bytes, producer))
}

/// llvm-ir's reader, which panics on a non-UTF-8 path and on IR it does not model; both become
/// errors (the sidecar has already shown that LLVM itself accepts the file).
fn parse(path: &Path) -> Result<Module, String> {
    if path.to_str().is_none() {
        return Err("llvm-ir needs a UTF-8 path".to_owned());
    }
    std::panic::catch_unwind(|| Module::from_bc_path(path)).unwrap_or_else(|panic| {
        let detail =
            panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(format!("llvm-ir cannot represent it: {}", detail.unwrap_or_default()))
    })
}

fn module_arch(module: &Module) -> Option<Arch> {
    let triple = module.target_triple.as_deref().unwrap_or("x86_64");
    match triple.split('-').next()? {
        "x86_64" => Some(Arch::X86_64),
        "i386" | "i486" | "i586" | "i686" => Some(Arch::X86),
        "aarch64" => Some(Arch::Aarch64),
        _ => None,
    }
}

/// Names → ids for everything facts refer to, built before any body is read.
pub(super) struct Symbols {
    pub functions: HashMap<String, FnId>,
    /// Ids below this are defined functions; the rest are external declarations.
    pub defined: usize,
    pub globals: HashMap<String, GlobalId>,
    /// Per global: declared `constant`, so read-only once relocated — nothing writes into it.
    pub constant: Vec<bool>,
    types: HashMap<String, TypeId>,
    pub type_names: Vec<String>,
    fields: HashMap<String, FieldId>,
    pub field_names: Vec<String>,
    pub polluted: Vec<bool>,
    /// C struct members ([`Symbols::member_field`]) → the IR field they are part of.
    parents: HashMap<FieldId, FieldId>,
}

impl Symbols {
    pub fn type_id(&mut self, text: String) -> TypeId {
        let next = self.type_names.len() as TypeId;
        *self.types.entry(text).or_insert_with_key(|text| {
            self.type_names.push(text.clone());
            next
        })
    }

    pub fn field_id(&mut self, name: &str) -> FieldId {
        if let Some(&id) = self.fields.get(name) {
            return id;
        }
        let id = self.field_names.len() as FieldId;
        self.fields.insert(name.to_owned(), id);
        self.field_names.push(name.to_owned());
        self.polluted.push(false);
        id
    }

    /// The member `tag` (a C struct and offset, from a TBAA tag) of an IR field. The IR linker
    /// merges struct types of the same layout, so one IR field may stand for the members of many
    /// C structs; accesses that carry a tag name the member, the rest (untagged accesses, escaping
    /// addresses, initializers, char and union accesses) the IR field, and [`expand_members`]
    /// makes each read see the writes that may alias it.
    pub fn member_field(&mut self, field: FieldId, tag: &str) -> FieldId {
        let name = format!("{}~{tag}", self.field_names[field as usize]);
        let member = self.field_id(&name);
        self.parents.insert(member, field);
        member
    }

    /// The function a global name refers to, through aliases.
    pub fn function(&self, name: &Name) -> Option<FnId> {
        self.functions.get(name_str(name)?).copied()
    }

    pub fn global(&self, name: &Name) -> Option<GlobalId> {
        self.globals.get(name_str(name)?).copied()
    }
}

pub(super) fn name_str(name: &Name) -> Option<&str> {
    match name {
        Name::Name(name) => Some(name),
        Name::Number(_) => None,
    }
}

fn extract(module: &Module, side: sidecar::Sidecar, arch: Arch, producer: Option<String>) -> Program {
    let mut symbols = symbols(module);
    let mut functions: Vec<Function> = Vec::with_capacity(module.functions.len() + module.func_declarations.len());
    let mut asm_sites: Vec<AsmSite> = Vec::new();
    let summaries = body::Summaries::new(module, &side, &mut symbols);
    for function in &module.functions {
        let ty = symbols.type_id(module.type_of(function).to_string());
        let id = functions.len() as FnId;
        let asm = side.asm.get(&function.name).map(Vec::as_slice).unwrap_or_default();
        let body = body::extract(module, function, id, &mut symbols, &side, asm, arch, &mut asm_sites, &summaries);
        functions.push(Function { name: function.name.clone(), ty, body: Some(body) });
    }
    for declaration in &module.func_declarations {
        let ty = symbols.type_id(
            module
                .types
                .func_type(
                    declaration.return_type.clone(),
                    declaration.parameters.iter().map(|parameter| parameter.ty.clone()).collect(),
                    declaration.is_var_arg,
                )
                .to_string(),
        );
        functions.push(Function { name: declaration.name.clone(), ty, body: None });
    }
    expand_members(&mut functions, &symbols.parents);
    let globals = globals(module, &side, &mut symbols);
    let by_name = |names: &[String]| -> Vec<FnId> {
        names.iter().filter_map(|name| symbols.functions.get(name).copied()).collect()
    };
    let mut program = Program {
        producer,
        arch,
        constructors: by_name(&side.constructors),
        destructors: by_name(&side.destructors),
        functions,
        globals,
        types: symbols.type_names,
        fields: symbols
            .field_names
            .into_iter()
            .zip(symbols.polluted)
            .map(|(name, polluted)| super::program::Field { name, polluted })
            .collect(),
        asm_sites,
        module_asm_syscalls: body::issues_syscalls(&side.module_asm).then_some(side.module_asm),
    };
    program.drop_unused_passes();
    program
}

/// Makes every read of a field see the writes that may alias it: a read of a C member also
/// reads its IR field (written without a tag), and a read of an IR field also reads all its
/// members. Writes and pollution stay where they were made, so two members of one IR field
/// stay apart.
fn expand_members(functions: &mut [Function], parents: &HashMap<FieldId, FieldId>) {
    let mut members: HashMap<FieldId, Vec<FieldId>> = HashMap::new();
    for (&member, &parent) in parents {
        members.entry(parent).or_default().push(member);
    }
    let expand = |source: &mut Source| {
        let mut fields = Vec::with_capacity(source.fields.len());
        for &field in &source.fields {
            fields.push(field);
            fields.extend(parents.get(&field));
            fields.extend(members.get(&field).into_iter().flatten());
        }
        fields.sort_unstable();
        fields.dedup();
        source.fields = fields;
    };
    for item in functions.iter_mut().filter_map(|function| function.body.as_mut()).flat_map(|body| &mut body.items) {
        match item {
            Item::Indirect { callee: source, .. }
            | Item::FieldStore { value: source, .. }
            | Item::Passes { value: source, .. }
            | Item::Registers { value: source, .. } => expand(source),
            Item::Call { .. } | Item::TakesAddress(_) | Item::UsesGlobal(_) | Item::Asm(_) => {}
        }
    }
}

fn symbols(module: &Module) -> Symbols {
    let mut functions: HashMap<String, FnId> = HashMap::new();
    let names = module.functions.iter().map(|f| &f.name).chain(module.func_declarations.iter().map(|f| &f.name));
    for (id, name) in names.enumerate() {
        functions.insert(name.clone(), id as FnId);
    }
    for alias in &module.global_aliases {
        if let (Some(alias_name), llvm_ir::Constant::GlobalReference { name, .. }) =
            (name_str(&alias.name), alias.aliasee.as_ref())
            && let Some(&target) = name_str(name).and_then(|name| functions.get(name))
        {
            functions.insert(alias_name.to_owned(), target);
        }
    }
    let named = || module.global_vars.iter().filter(|global| name_str(&global.name).is_some());
    let globals = named()
        .filter_map(|global| name_str(&global.name))
        .enumerate()
        .map(|(id, name)| (name.to_owned(), id as GlobalId))
        .collect();
    let constant = named().map(|global| global.is_constant).collect();
    let mut symbols = Symbols {
        functions,
        defined: module.functions.len(),
        globals,
        constant,
        types: HashMap::new(),
        type_names: Vec::new(),
        fields: HashMap::new(),
        field_names: Vec::new(),
        polluted: Vec::new(),
        parents: HashMap::new(),
    };
    let untyped = symbols.field_id("(untyped memory)");
    debug_assert_eq!(untyped, UNTYPED_MEMORY);
    symbols
}

fn globals(module: &Module, side: &sidecar::Sidecar, symbols: &mut Symbols) -> Vec<Global> {
    let mut globals = Vec::with_capacity(module.global_vars.len());
    for global in &module.global_vars {
        let Some(name) = name_str(&global.name) else { continue };
        let mut out = Global { name: name.to_owned(), functions: Vec::new(), globals: Vec::new() };
        if let Some(contents) = side.initializers.get(name) {
            for (field, function) in &contents.functions {
                if let Some(&id) = symbols.functions.get(function) {
                    let field = field.as_deref().map_or(UNTYPED_MEMORY, |field| symbols.field_id(field));
                    out.functions.push((field, id));
                }
            }
            out.globals.extend(contents.globals.iter().filter_map(|name| symbols.globals.get(name).copied()));
        }
        globals.push(out);
    }
    globals
}

/// The argument of an inline-asm call bound to the syscall-number register, from its
/// constraints (`={ax},{ax},{di},…`): outputs take no argument unless indirect (`=*m`),
/// clobbers (`~{…}`) none, inputs one each; a digit ties an input to that output's register.
pub(super) fn asm_number(raw: &sidecar::RawAsm, arch: Arch) -> Number {
    let register: &[&str] = match arch {
        Arch::Aarch64 => &["{x8}", "{w8}"],
        Arch::X86_64 | Arch::X86 => &["{ax}", "{eax}", "{rax}", "a"],
    };
    let mut outputs: Vec<&str> = Vec::new();
    let mut arg = 0usize;
    for constraint in raw.constraints.split(',') {
        if let Some(output) = constraint.strip_prefix('=') {
            if output.starts_with('*') {
                arg += 1;
            }
            outputs.push(output.trim_start_matches(['&', '*']));
            continue;
        }
        if constraint.starts_with('~') {
            continue;
        }
        let tied = constraint.parse::<usize>().ok().and_then(|index| outputs.get(index).copied());
        if register.contains(&tied.unwrap_or(constraint)) {
            return raw.args.get(arg).copied().unwrap_or(Number::Unknown);
        }
        arg += 1;
    }
    Number::Unknown
}

#[cfg(test)]
mod tests {
    use super::body::issues_syscalls;
    use super::sidecar::RawAsm;
    use super::*;
    use crate::bitcode::program::Body;

    fn asm(constraints: &str, args: &[Number]) -> RawAsm {
        RawAsm { text: "syscall".into(), constraints: constraints.into(), args: args.to_vec() }
    }

    #[test]
    fn the_number_register_is_found_through_outputs_ties_and_clobbers() {
        let direct = asm("={ax},{ax},{di},~{rcx},~{r11},~{memory}", &[Number::Const(39), Number::Unknown]);
        assert_eq!(asm_number(&direct, Arch::X86_64), Number::Const(39));
        let tied = asm("={ax},={dx},{di},1,0", &[Number::Unknown, Number::Const(7), Number::Param(2)]);
        assert_eq!(asm_number(&tied, Arch::X86_64), Number::Param(2));
        // An indirect output (`=*m`) takes an argument of its own.
        let indirect = asm("=*m,{ax}", &[Number::Const(1), Number::Const(60)]);
        assert_eq!(asm_number(&indirect, Arch::X86_64), Number::Const(60));
        let aarch64 = asm("={x0},{x8},{x0}", &[Number::Const(172), Number::Unknown]);
        assert_eq!(asm_number(&aarch64, Arch::Aarch64), Number::Const(172));
        assert_eq!(asm_number(&asm("={ax},{di}", &[Number::Const(1)]), Arch::X86_64), Number::Unknown);
    }

    #[test]
    fn reads_of_a_member_see_its_ir_field_and_reads_of_the_ir_field_see_every_member() {
        // Field 1 is the merged IR field; 2 and 3 are members of two C structs it stands for.
        let parents = HashMap::from([(2, 1), (3, 1)]);
        let read = |fields: Vec<FieldId>| Item::Indirect { ty: 0, callee: Source { fields, ..Source::default() } };
        let body = Body { items: vec![read(vec![2]), read(vec![1]), read(vec![3, 4])], blocks: Vec::new() };
        let mut functions = vec![Function { name: "f".into(), ty: 0, body: Some(body) }];
        expand_members(&mut functions, &parents);
        let items = &functions[0].body.as_ref().unwrap().items;
        assert_eq!(items, &[read(vec![1, 2]), read(vec![1, 2, 3]), read(vec![1, 3, 4])]);
    }

    #[test]
    fn syscall_instructions_are_recognised_as_statements() {
        for text in ["syscall", "movl $$60, %eax\n\tsyscall", "int $$0x80", "int $$128", "sysenter", "svc #0"] {
            assert!(issues_syscalls(text), "{text}");
        }
        for text in ["pause", "cpuid", "call my_syscall", "lock; cmpxchg $1, $2", "int $$3"] {
            assert!(!issues_syscalls(text), "{text}");
        }
    }
}
