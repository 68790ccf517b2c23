//! Reachability over a [`Program`] for one phase: an RTA-style worklist with typed indirect calls.
//!
//! A function pointer counts only once it is *live*: its address is taken by reached code, or it
//! sits in the initializer of a global that reached code (or another live global) references.
//! An indirect call reaches the live functions of exactly its function type (a *hub* per type).
//! When the called pointer was loaded from a struct field (or pointer-typed global) whose writes
//! are all understood, the call reaches only the functions stored into that field plus those
//! stored into untyped memory ([`UNTYPED_MEMORY`]), again of the exact type. Functions handed to `signal`, `sigaction`,
//! `pthread_create`, `atexit` or any library become roots: they run whenever the system decides.
//!
//! A parameter holds what the reached direct calls pass for it (`Item::Passes`), so a field
//! written from a parameter, or a call through one, resolves through the callers (MLTA's
//! field-sensitive targets carried across calls). A function entered any other way — a root, an
//! indirect call, a library calling it back — gets unknown arguments: its parameters then pollute
//! the fields they are stored into, and calls through them fall back to the type. A field
//! becomes polluted while the analysis runs, too: sites that read it sharply switch to its type,
//! and so do the fields its contents were copied into.
//!
//! The state that describes memory (live functions, field contents, live globals, registered
//! callbacks) outlives a phase: the serving phase starts from everything init stored, because
//! pointers stored during start-up are called later. What is reached is per phase.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::program::{AsyncKind, FieldId, FnId, GlobalId, Item, Number, Program, Source, TypeId, UNTYPED_MEMORY};

/// A parameter: (function, index).
type Param = (FnId, u32);

/// One thing a caller may pass for a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Arg {
    Function(FnId),
    /// Whatever the field holds.
    Field(FieldId),
    Unknown,
}
use super::wrappers::is_library_wrapper;
use crate::syscalls::Arch;

/// How a function was first reached, for witness paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Call,
    Indirect,
}

/// Where a syscall number came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallOrigin {
    pub function: FnId,
    /// `syscall(39)`, `asm "syscall"`, or `ngx_gettid(…) → syscall(186)`-style call text.
    pub site: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedSite {
    pub function: FnId,
    pub reason: String,
}

/// Indirect call sites reached, and how they were resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndirectStats {
    pub sites: usize,
    /// Resolved through a struct field's contents.
    pub via_field: usize,
    /// Resolved by type alone (the pointer's origin is unknown or its field is polluted).
    pub via_type: usize,
    /// Sum over sites of the number of possible targets.
    pub targets: usize,
}

/// An indirect call site that was reached: its type and how the pointer's origin was classified.
#[derive(Debug, Clone)]
struct ReachedSite {
    ty: TypeId,
    sharp_fields: Vec<FieldId>,
    /// The caller's parameters the pointer comes from.
    params: Vec<Param>,
    by_type: bool,
}

/// Both the persistent memory model and one phase's reach.
#[derive(Clone)]
pub struct Reach<'p> {
    program: &'p Program,
    wrapper: &'p [Option<u32>],
    // Memory: carried from init into serving.
    live: Vec<bool>,
    hub: HashMap<TypeId, Vec<FnId>>,
    field_members: Vec<Vec<FnId>>,
    field_member_set: HashSet<(FieldId, FnId)>,
    /// A value loaded from the key field was stored into each of these fields.
    field_flows: Vec<Vec<FieldId>>,
    /// Registrations whose function comes from the key field.
    field_registrations: Vec<Vec<AsyncKind>>,
    live_globals: Vec<bool>,
    /// Fields whose writes are not all understood: the reader's verdict, plus what unknown
    /// arguments stored since.
    polluted: Vec<bool>,
    /// Functions entered with arguments nobody traced: their parameters are unknown.
    opaque: Vec<bool>,
    /// What reached callers pass for each parameter.
    args: HashMap<Param, HashSet<Arg>>,
    /// Fields each parameter is stored into.
    param_stores: HashMap<Param, Vec<FieldId>>,
    /// Parameters each parameter is passed on to.
    param_passes: HashMap<Param, Vec<Param>>,
    /// The parameters of each function that something reads.
    params_used: HashMap<FnId, Vec<u32>>,
    registered: BTreeMap<FnId, AsyncKind>,
    /// Registrations with an untraceable function: every live function of these types counts.
    registered_unknown: HashSet<AsyncKind>,
    // Reach: reset between phases.
    visited: Vec<bool>,
    parent: Vec<Option<(FnId, Edge)>>,
    root_label: HashMap<FnId, String>,
    /// Breadth first, so every witness path is a shortest one.
    queue: VecDeque<FnId>,
    active_hubs: HashMap<TypeId, FnId>,
    field_sites: Vec<Vec<(TypeId, FnId)>>,
    /// Indirect calls through each parameter: (type, calling function).
    param_calls: HashMap<Param, Vec<(TypeId, FnId)>>,
    sites: Vec<ReachedSite>,
    pub syscalls: BTreeMap<(Arch, u32), SyscallOrigin>,
    pub unresolved: Vec<UnresolvedSite>,
    pub asm_sites: Vec<u32>,
}

impl<'p> Reach<'p> {
    pub fn new(program: &'p Program, wrapper: &'p [Option<u32>]) -> Reach<'p> {
        let (functions, fields) = (program.functions.len(), program.fields.len());
        Reach {
            program,
            wrapper,
            live: vec![false; functions],
            hub: HashMap::new(),
            field_members: vec![Vec::new(); fields],
            field_member_set: HashSet::new(),
            field_flows: vec![Vec::new(); fields],
            field_registrations: vec![Vec::new(); fields],
            live_globals: vec![false; program.globals.len()],
            polluted: program.fields.iter().map(|field| field.polluted).collect(),
            opaque: vec![false; functions],
            args: HashMap::new(),
            param_stores: HashMap::new(),
            param_passes: HashMap::new(),
            params_used: HashMap::new(),
            registered: BTreeMap::new(),
            registered_unknown: HashSet::new(),
            visited: vec![false; functions],
            parent: vec![None; functions],
            root_label: HashMap::new(),
            queue: VecDeque::new(),
            active_hubs: HashMap::new(),
            field_sites: vec![Vec::new(); fields],
            param_calls: HashMap::new(),
            sites: Vec::new(),
            syscalls: BTreeMap::new(),
            unresolved: Vec::new(),
            asm_sites: Vec::new(),
        }
    }

    /// A new phase over the same memory: nothing reached yet, every stored pointer still there,
    /// every registered callback a root again.
    pub fn next_phase(&self) -> Reach<'p> {
        let mut next = self.clone();
        next.visited.fill(false);
        next.parent.fill(None);
        next.root_label.clear();
        next.queue.clear();
        next.active_hubs.clear();
        next.field_sites.iter_mut().for_each(Vec::clear);
        next.param_calls.clear();
        next.sites.clear();
        next.syscalls.clear();
        next.unresolved.clear();
        next.asm_sites.clear();
        for (&function, &kind) in &self.registered {
            next.root(function, kind.as_str());
        }
        next
    }

    /// Reaches `function` from nowhere: a phase root.
    pub fn root(&mut self, function: FnId, label: &str) {
        self.make_opaque(function);
        if !self.visited[function as usize] {
            self.root_label.insert(function, label.to_owned());
            self.enter(function, None);
        }
    }

    /// Processes a part of a function's body as reached (the code after a call that returns).
    pub fn reach_items(&mut self, function: FnId, items: &[Item], label: &str) {
        self.root_label.entry(function).or_insert_with(|| label.to_owned());
        for item in items {
            self.item(function, item);
        }
    }

    /// Drains the worklist.
    pub fn run(&mut self) {
        while let Some(function) = self.queue.pop_front() {
            let program = self.program;
            if let Some(body) = &program.function(function).body {
                for item in &body.items {
                    self.item(function, item);
                }
            }
        }
    }

    fn enter(&mut self, function: FnId, via: Option<(FnId, Edge)>) {
        if via.is_none_or(|(_, edge)| edge == Edge::Indirect) {
            self.make_opaque(function);
        }
        let index = function as usize;
        if self.visited[index] {
            return;
        }
        self.visited[index] = true;
        self.parent[index] = via;
        if self.wrapper[index].is_some() && via.is_none_or(|(_, edge)| edge != Edge::Call) {
            let reason = "syscall wrapper entered without a direct call: its number is unknown".to_owned();
            self.unresolved.push(UnresolvedSite { function, reason });
        }
        self.queue.push_back(function);
    }

    fn item(&mut self, function: FnId, item: &Item) {
        match item {
            Item::Call { callee, args } => self.call(function, *callee, args),
            Item::Indirect { ty, callee } => self.indirect(function, *ty, callee),
            Item::TakesAddress(target) => self.make_live(*target),
            Item::UsesGlobal(global) => self.use_global(*global),
            Item::FieldStore { field, value } => self.field_store(function, *field, value),
            Item::Passes { callee, arg, value } => self.passes(function, (*callee, *arg), value),
            Item::Registers { kind, value } => self.register(*kind, value),
            Item::Asm(site) => self.asm(*site),
        }
    }

    fn call(&mut self, function: FnId, callee: FnId, args: &[Number]) {
        self.enter(callee, Some((function, Edge::Call)));
        let Some(param) = self.wrapper[callee as usize] else { return };
        let site = |detail: String| SyscallOrigin { function, site: detail };
        let name = &self.program.function(callee).name;
        match args.get(param as usize).copied().unwrap_or(Number::Unknown) {
            Number::Const(number) => {
                let origin = site(format!("{name}({number})"));
                self.syscall(self.program.arch, number, origin);
            }
            // The caller is a wrapper itself: its own callers supply the number.
            Number::Param(_) if self.wrapper[function as usize].is_some() => {}
            _ => {
                let reason = format!("{name}() called with a number that is not a constant");
                self.unresolved.push(UnresolvedSite { function, reason });
            }
        }
    }

    fn syscall(&mut self, arch: Arch, number: u64, origin: SyscallOrigin) {
        match u32::try_from(number).ok().filter(|&number| arch.name(number).is_some()) {
            Some(number) => {
                self.syscalls.entry((arch, number)).or_insert(origin);
            }
            None => {
                let reason = format!("{}: {number} is no {arch} syscall", origin.site);
                self.unresolved.push(UnresolvedSite { function: origin.function, reason });
            }
        }
    }

    fn asm(&mut self, index: u32) {
        self.asm_sites.push(index);
        let site = &self.program.asm_sites[index as usize];
        let origin = SyscallOrigin { function: site.function, site: format!("asm \"{}\"", site.text) };
        match site.number {
            Number::Const(number) => self.syscall(site.arch, number, origin),
            Number::Param(_) => {}
            Number::Unknown => {
                let reason = format!("{}: the syscall number is not a constant", origin.site);
                self.unresolved.push(UnresolvedSite { function: site.function, reason });
            }
        }
    }

    fn indirect(&mut self, function: FnId, ty: TypeId, callee: &Source) {
        for &target in &callee.functions {
            // A call through a pointer passes arguments nobody records.
            self.make_opaque(target);
            self.enter(target, Some((function, Edge::Call)));
        }
        let params: Vec<Param> = callee.params.iter().map(|&param| (function, param)).collect();
        let site =
            ReachedSite { ty, sharp_fields: callee.fields.clone(), params: params.clone(), by_type: callee.unknown };
        if site.by_type {
            self.activate_hub(ty, function);
        }
        for &field in &callee.fields {
            self.call_through_field(field, ty, function);
        }
        for param in params {
            self.use_param(param);
            let calls = self.param_calls.entry(param).or_default();
            if !calls.contains(&(ty, function)) {
                calls.push((ty, function));
                for arg in self.param_args(param) {
                    self.call_arg(arg, ty, function);
                }
            }
        }
        if !callee.functions.is_empty() || site.by_type || !site.sharp_fields.is_empty() || !site.params.is_empty() {
            self.sites.push(site);
        }
    }

    /// A call of type `ty` in `site` through a pointer loaded from `field`: its members of that
    /// type (and untyped memory's, which may hold anything), or every live function of the type
    /// once the field is polluted.
    fn call_through_field(&mut self, field: FieldId, ty: TypeId, site: FnId) {
        if self.polluted[field as usize] {
            self.activate_hub(ty, site);
            return;
        }
        for field in [field, UNTYPED_MEMORY] {
            if self.field_sites[field as usize].contains(&(ty, site)) {
                continue;
            }
            self.field_sites[field as usize].push((ty, site));
            let members: Vec<FnId> = self.field_members[field as usize].clone();
            for member in members {
                self.reach_if_type(member, ty, site);
            }
        }
    }

    /// What callers pass for `param` so far.
    fn param_args(&self, param: Param) -> Vec<Arg> {
        let mut args: Vec<Arg> = self.args.get(&param).map(|args| args.iter().copied().collect()).unwrap_or_default();
        if self.opaque[param.0 as usize] {
            args.push(Arg::Unknown);
        }
        args
    }

    /// Notes that something reads `param`, so that an opaque entry of its function reaches it.
    fn use_param(&mut self, (function, param): Param) {
        let used = self.params_used.entry(function).or_default();
        if !used.contains(&param) {
            used.push(param);
        }
    }

    /// `function` is entered with arguments nobody traced.
    fn make_opaque(&mut self, function: FnId) {
        if std::mem::replace(&mut self.opaque[function as usize], true) {
            return;
        }
        for param in self.params_used.get(&function).cloned().unwrap_or_default() {
            self.add_arg((function, param), Arg::Unknown);
        }
    }

    /// `function` passes `value` for `param` in a direct call.
    fn passes(&mut self, function: FnId, param: Param, value: &Source) {
        for &target in &value.functions {
            self.add_arg(param, Arg::Function(target));
        }
        for &field in &value.fields {
            self.add_arg(param, Arg::Field(field));
        }
        if value.unknown {
            self.add_arg(param, Arg::Unknown);
        }
        for &from in &value.params {
            let from = (function, from);
            self.use_param(from);
            let passes = self.param_passes.entry(from).or_default();
            if !passes.contains(&param) {
                passes.push(param);
                for arg in self.param_args(from) {
                    self.add_arg(param, arg);
                }
            }
        }
    }

    /// One more thing `param` may hold, to every place it goes.
    fn add_arg(&mut self, param: Param, arg: Arg) {
        let mut pending = vec![(param, arg)];
        while let Some((param, arg)) = pending.pop() {
            if !self.args.entry(param).or_default().insert(arg) {
                continue;
            }
            for field in self.param_stores.get(&param).cloned().unwrap_or_default() {
                self.store_arg(field, arg);
            }
            for (ty, site) in self.param_calls.get(&param).cloned().unwrap_or_default() {
                self.call_arg(arg, ty, site);
            }
            for next in self.param_passes.get(&param).cloned().unwrap_or_default() {
                pending.push((next, arg));
            }
        }
    }

    fn call_arg(&mut self, arg: Arg, ty: TypeId, site: FnId) {
        match arg {
            Arg::Function(target) => self.reach_if_type(target, ty, site),
            Arg::Field(field) => self.call_through_field(field, ty, site),
            Arg::Unknown => self.activate_hub(ty, site),
        }
    }

    fn store_arg(&mut self, field: FieldId, arg: Arg) {
        match arg {
            Arg::Function(function) => {
                self.make_live(function);
                self.add_field_member(field, function);
            }
            Arg::Field(from) => self.field_flow(from, field),
            Arg::Unknown => self.pollute(field),
        }
    }

    /// Writes to `field` are no longer all understood: whatever reads it sharply falls back to
    /// the type, and so does every field its contents were copied into. Untyped memory is never
    /// polluted: an untraceable value stored there was address-taken where it was made.
    fn pollute(&mut self, field: FieldId) {
        let mut pending = vec![field];
        while let Some(field) = pending.pop() {
            let index = field as usize;
            if field == UNTYPED_MEMORY || std::mem::replace(&mut self.polluted[index], true) {
                continue;
            }
            for (ty, site) in self.field_sites[index].clone() {
                self.activate_hub(ty, site);
            }
            for kind in self.field_registrations[index].clone() {
                self.activate_async_types(kind);
            }
            pending.extend(self.field_flows[index].iter().copied());
        }
    }

    fn reach_if_type(&mut self, target: FnId, ty: TypeId, site: FnId) {
        if self.program.function(target).ty == ty {
            self.enter(target, Some((site, Edge::Indirect)));
        }
    }

    fn activate_hub(&mut self, ty: TypeId, site: FnId) {
        if self.active_hubs.insert(ty, site).is_none() {
            for member in self.hub.get(&ty).cloned().unwrap_or_default() {
                self.enter(member, Some((site, Edge::Indirect)));
            }
        }
    }

    fn make_live(&mut self, function: FnId) {
        let index = function as usize;
        if self.live[index] {
            return;
        }
        self.live[index] = true;
        let ty = self.program.function(function).ty;
        self.hub.entry(ty).or_default().push(function);
        if let Some(&site) = self.active_hubs.get(&ty) {
            self.enter(function, Some((site, Edge::Indirect)));
        }
        let async_kinds: Vec<AsyncKind> = self.registered_unknown.iter().copied().collect();
        for kind in async_kinds {
            if self.async_type_matches(kind, ty) {
                self.register_function(kind, function);
            }
        }
    }

    fn use_global(&mut self, global: GlobalId) {
        let mut pending = vec![global];
        while let Some(global) = pending.pop() {
            if std::mem::replace(&mut self.live_globals[global as usize], true) {
                continue;
            }
            let initializer = &self.program.globals[global as usize];
            for &(field, function) in &initializer.functions {
                self.make_live(function);
                self.add_field_member(field, function);
            }
            pending.extend(initializer.globals.iter().copied());
        }
    }

    fn field_store(&mut self, function: FnId, field: FieldId, value: &Source) {
        for &function in &value.functions {
            self.make_live(function);
            self.add_field_member(field, function);
        }
        for &from in &value.fields {
            self.field_flow(from, field);
        }
        for &param in &value.params {
            let param = (function, param);
            self.use_param(param);
            let stores = self.param_stores.entry(param).or_default();
            if !stores.contains(&field) {
                stores.push(field);
                for arg in self.param_args(param) {
                    self.store_arg(field, arg);
                }
            }
        }
    }

    /// What `from` holds is copied into `into`, including anything unknown.
    fn field_flow(&mut self, from: FieldId, into: FieldId) {
        if self.field_flows[from as usize].contains(&into) {
            return;
        }
        self.field_flows[from as usize].push(into);
        for member in self.field_members[from as usize].clone() {
            self.add_field_member(into, member);
        }
        if self.polluted[from as usize] {
            self.pollute(into);
        }
    }

    /// Adds `function` to `field` and to every field its contents flow into, reaching it from the
    /// indirect calls and registrations that already read those fields.
    fn add_field_member(&mut self, field: FieldId, function: FnId) {
        let mut pending = vec![field];
        while let Some(field) = pending.pop() {
            if !self.field_member_set.insert((field, function)) {
                continue;
            }
            let index = field as usize;
            self.field_members[index].push(function);
            for (ty, site) in self.field_sites[index].clone() {
                self.reach_if_type(function, ty, site);
            }
            for kind in self.field_registrations[index].clone() {
                self.register_function(kind, function);
            }
            pending.extend(self.field_flows[index].iter().copied());
        }
    }

    fn register(&mut self, kind: AsyncKind, value: &Source) {
        for &target in &value.functions {
            self.make_live(target);
            self.register_function(kind, target);
        }
        for &field in &value.fields {
            let index = field as usize;
            if self.polluted[index] {
                self.activate_async_types(kind);
                continue;
            }
            if !self.field_registrations[index].contains(&kind) {
                self.field_registrations[index].push(kind);
                for member in self.field_members[index].clone() {
                    self.register_function(kind, member);
                }
            }
        }
        if value.unknown {
            self.activate_async_types(kind);
        }
    }

    /// A registration whose function cannot be traced: every live function of a type the
    /// registrar accepts is a candidate. Library callbacks have no known type, so an untraceable
    /// one is skipped (its address was taken somewhere, and indirect calls of its type reach it).
    fn activate_async_types(&mut self, kind: AsyncKind) {
        if kind == AsyncKind::LibraryCallback || !self.registered_unknown.insert(kind) {
            return;
        }
        let candidates: Vec<FnId> = self
            .hub
            .iter()
            .filter(|(ty, _)| self.async_type_matches(kind, **ty))
            .flat_map(|(_, members)| members.iter().copied())
            .collect();
        for function in candidates {
            self.register_function(kind, function);
        }
    }

    fn async_type_matches(&self, kind: AsyncKind, ty: TypeId) -> bool {
        async_types(kind).contains(&self.program.types[ty as usize].as_str())
    }

    fn register_function(&mut self, kind: AsyncKind, function: FnId) {
        self.registered.entry(function).or_insert(kind);
        self.root(function, kind.as_str());
    }

    pub fn visited(&self, function: FnId) -> bool {
        self.visited[function as usize]
    }

    pub fn registered(&self) -> &BTreeMap<FnId, AsyncKind> {
        &self.registered
    }

    /// Root → … → `function`, function names with how each was reached.
    pub fn witness(&self, function: FnId) -> Vec<String> {
        let mut path = Vec::new();
        let mut current = Some(function);
        while let Some(function) = current {
            let name = &self.program.function(function).name;
            match self.parent[function as usize] {
                Some((caller, edge)) => {
                    path.push(if edge == Edge::Indirect { format!("{name} (indirect)") } else { name.clone() });
                    current = Some(caller);
                }
                None => {
                    let label = self.root_label.get(&function).map(String::as_str).unwrap_or("root");
                    path.push(format!("{name} ({label})"));
                    current = None;
                }
            }
            // A continuation's function can later be entered from code it reached itself, which
            // closes a loop in the parent links.
            if path.len() > self.program.functions.len() {
                break;
            }
        }
        path.reverse();
        path
    }

    /// How the reached indirect call sites were resolved.
    pub fn indirect_stats(&self) -> IndirectStats {
        let mut stats = IndirectStats { sites: self.sites.len(), ..IndirectStats::default() };
        for site in &self.sites {
            let args: Vec<Arg> = site.params.iter().flat_map(|&param| self.param_args(param)).collect();
            let mut fields: Vec<FieldId> = site.sharp_fields.clone();
            fields.extend(args.iter().filter_map(|arg| match arg {
                Arg::Field(field) => Some(*field),
                _ => None,
            }));
            let by_type = site.by_type
                || args.contains(&Arg::Unknown)
                || fields.iter().any(|&field| self.polluted[field as usize]);
            if by_type {
                stats.via_type += 1;
                stats.targets += self.hub.get(&site.ty).map_or(0, Vec::len);
                continue;
            }
            stats.via_field += 1;
            let untyped = (!fields.is_empty()).then_some(UNTYPED_MEMORY);
            let targets: HashSet<FnId> = fields
                .iter()
                .copied()
                .chain(untyped)
                .flat_map(|field| self.field_members[field as usize].iter().copied())
                .chain(args.iter().filter_map(|arg| match arg {
                    Arg::Function(function) => Some(*function),
                    _ => None,
                }))
                .filter(|&target| self.program.function(target).ty == site.ty)
                .collect();
            stats.targets += targets.len();
        }
        stats
    }

    /// External functions reached, other than syscall wrappers resolved at their call sites.
    pub fn externals(&self) -> impl Iterator<Item = FnId> + '_ {
        (0..self.program.functions.len() as FnId).filter(move |&id| {
            self.visited(id) && self.program.function(id).body.is_none() && !is_library_wrapper(self.program, id)
        })
    }
}

/// The function types each registrar accepts (glibc's prototypes, in LLVM's spelling).
fn async_types(kind: AsyncKind) -> &'static [&'static str] {
    match kind {
        AsyncKind::SignalHandler => &["void (i32)", "void (i32, ptr, ptr)"],
        AsyncKind::ThreadStart => &["ptr (ptr)"],
        AsyncKind::ExitHandler => &["void ()", "void (i32, ptr)", "void (ptr)"],
        AsyncKind::LibraryCallback => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcode::program::{Block, Body, Field, Function};

    /// Functions of one type `void ()`, with these bodies; fields besides untyped memory are `a`
    /// and `b`. `good` and `other` are 2 and 3.
    fn program(bodies: Vec<(&str, Vec<Item>)>) -> Program {
        let functions = bodies
            .into_iter()
            .map(|(name, items)| {
                let blocks = vec![Block { items: 0..items.len() as u32, successors: Vec::new(), returns: true }];
                Function { name: name.to_owned(), ty: 0, body: Some(Body { items, blocks }) }
            })
            .collect();
        let field = |name: &str| Field { name: name.to_owned(), polluted: false };
        Program {
            producer: None,
            arch: Arch::X86_64,
            functions,
            globals: Vec::new(),
            types: vec!["void ()".to_owned()],
            fields: vec![field("untyped"), field("struct.a:0"), field("struct.b:0")],
            constructors: Vec::new(),
            destructors: Vec::new(),
            asm_sites: Vec::new(),
            module_asm_syscalls: None,
        }
    }

    fn source(functions: &[FnId], fields: &[FieldId], params: &[u32], unknown: bool) -> Source {
        Source { functions: functions.to_vec(), fields: fields.to_vec(), params: params.to_vec(), unknown }
    }

    fn reached(program: &Program, roots: &[FnId]) -> Vec<String> {
        let wrapper = vec![None; program.functions.len()];
        let mut reach = Reach::new(program, &wrapper);
        for &root in roots {
            reach.root(root, "root");
        }
        reach.run();
        let visited = (0..program.functions.len() as FnId).filter(|&id| reach.visited(id));
        visited.map(|id| program.function(id).name.clone()).collect()
    }

    #[test]
    fn a_parameter_holds_what_direct_callers_pass_until_something_else_enters() {
        let program = program(vec![
            (
                "main",
                vec![
                    Item::Call { callee: 1, args: Box::default() },
                    Item::Passes { callee: 1, arg: 0, value: source(&[2], &[], &[], false) },
                    Item::TakesAddress(3),
                ],
            ),
            ("run", vec![Item::Indirect { ty: 0, callee: source(&[], &[], &[0], false) }]),
            ("good", Vec::new()),
            ("other", Vec::new()),
        ]);
        assert_eq!(reached(&program, &[0]), ["main", "run", "good"], "other has the type, nobody passes it");
        // A library calling `run` back passes arguments nobody traced: every live `void ()`.
        assert_eq!(reached(&program, &[0, 1]), ["main", "run", "good", "other"]);
    }

    #[test]
    fn an_unknown_argument_stored_into_a_field_pollutes_it_and_what_it_was_copied_into() {
        let bodies = |argument: Source| {
            vec![
                (
                    "main",
                    vec![
                        Item::FieldStore { field: 1, value: source(&[2], &[], &[], false) },
                        Item::Call { callee: 1, args: Box::default() },
                        Item::Passes { callee: 1, arg: 0, value: argument },
                        Item::Indirect { ty: 0, callee: source(&[], &[2], &[], false) },
                        Item::TakesAddress(3),
                    ],
                ),
                (
                    "copy",
                    vec![
                        Item::FieldStore { field: 2, value: source(&[], &[1], &[], false) },
                        Item::FieldStore { field: 1, value: source(&[], &[], &[0], false) },
                    ],
                ),
                ("good", Vec::new()),
                ("other", Vec::new()),
            ]
        };
        // b = a, a = the argument: a call through b reaches what a held and what was passed.
        let known = program(bodies(source(&[2], &[], &[], false)));
        assert_eq!(reached(&known, &[0]), ["main", "copy", "good"]);
        let unknown = program(bodies(source(&[], &[], &[], true)));
        assert_eq!(reached(&unknown, &[0]), ["main", "copy", "good", "other"]);
    }
}
