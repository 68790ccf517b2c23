//! One process's call graph (petgraph): a node per function and per pointer-bearing data object
//! of every file in the process, plus one indirect-call hub per argument count.
//!
//! Edges: direct calls and tail jumps (`Call`), function pointers and data references that code
//! materialises (`Takes`), pointers stored in data (`Points`), indirect call sites to the hub of
//! the arguments they prepare (`Indirect`), and each address-taken function from the hub of the
//! arguments it consumes (`Member`). References by symbol are bound like the loader binds them:
//! the first definition in load order wins (interposition), versions must match, and an IFUNC
//! resolver stands for every implementation it can return. Syscall wrappers are then resolved at
//! their call sites over the strongly connected components, callees first.
//!
//! The node and edge model is shared with other front ends: anything that can name a function
//! by symbol can link into these nodes through [`Program::export`].

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef as _;

use super::loader::{Module, Process, Store};
use crate::elf::{ArgLoc, Call, Export, Import, Reason, Ref, SiteNumber};

/// Hubs for indirect calls preparing 0 … 6 argument registers.
pub const HUBS: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// Function `index` of the process's `module`-th file (a position in [`Program::modules`]).
    Function {
        module: u16,
        index: u32,
    },
    Object {
        module: u16,
        index: u32,
    },
    Hub(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// A direct call or tail jump; `call` indexes the caller's `calls`.
    Call {
        at: u64,
        call: u32,
    },
    Takes {
        at: Option<u64>,
    },
    Points,
    Indirect {
        at: u64,
    },
    Member,
}

/// A syscall number a function issues, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issue {
    pub number: u32,
    pub i386: bool,
    /// The `syscall` instruction, or the call to a wrapper.
    pub at: u64,
    /// Through a wrapper call (the number is the wrapper's argument).
    pub via_wrapper: bool,
}

/// A site whose number is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub at: u64,
    pub reason: Reason,
}

pub struct Program<'s> {
    pub store: &'s Store,
    /// Store indices of the process's files: its global scope, then what it `dlopen`ed.
    pub modules: Vec<usize>,
    /// How many of `modules` are in the global scope.
    pub scope_len: usize,
    pub exe: u16,
    pub interp: Option<u16>,
    pub graph: DiGraph<Node, Edge>,
    fn_base: Vec<u32>,
    obj_base: Vec<u32>,
    hub_base: u32,
    exports: Vec<HashMap<&'s str, Vec<&'s Export>>>,
    /// Per file, what each of its imports binds to: looked up once, since every call into
    /// another file resolves its import again in each pass over the graph.
    imports: Vec<Vec<Option<NodeIndex>>>,
    pub issues: Vec<Vec<Issue>>,
    pub unknown: Vec<Vec<Unknown>>,
    /// Functions whose syscall number is an argument: where, and whether it is an i386 number.
    pub wrapper: Vec<Option<(ArgLoc, bool)>>,
    /// Per node: whether other files can hold this function's (or data's) address. See
    /// [`Program::shared`].
    shared: Vec<bool>,
}

impl<'s> Program<'s> {
    pub fn build(store: &'s Store, process: &Process) -> Program<'s> {
        let modules: Vec<usize> = process.scope.iter().chain(&process.dlopened).copied().collect();
        let position = |index: usize| modules.iter().position(|&m| m == index).map(|p| p as u16);
        let mut graph = DiGraph::new();
        let (mut fn_base, mut obj_base) = (Vec::new(), Vec::new());
        for (module, &index) in modules.iter().enumerate() {
            fn_base.push(graph.node_count() as u32);
            for function in 0..store.modules[index].summary.functions.len() {
                graph.add_node(Node::Function { module: module as u16, index: function as u32 });
            }
        }
        for (module, &index) in modules.iter().enumerate() {
            obj_base.push(graph.node_count() as u32);
            for object in 0..store.modules[index].summary.objects.len() {
                graph.add_node(Node::Object { module: module as u16, index: object as u32 });
            }
        }
        let hub_base = graph.node_count() as u32;
        for hub in 0..HUBS {
            graph.add_node(Node::Hub(hub as u8));
        }
        let exports = modules.iter().map(|&index| export_index(&store.modules[index])).collect();
        let mut program = Program {
            store,
            scope_len: process.scope.len(),
            exe: position(process.exe).unwrap_or(0),
            interp: process.interp.and_then(position),
            modules,
            graph,
            fn_base,
            obj_base,
            hub_base,
            exports,
            imports: Vec::new(),
            issues: Vec::new(),
            unknown: Vec::new(),
            wrapper: Vec::new(),
            shared: Vec::new(),
        };
        program.imports = (0..program.modules.len() as u16)
            .map(|module| {
                let imports = &program.module(module).summary.imports;
                imports.iter().map(|import| program.lookup(import, module)).collect()
            })
            .collect();
        program.add_edges();
        program.resolve_wrappers();
        program.shared = program.sharing();
        program
    }

    pub fn module(&self, module: u16) -> &'s Module {
        &self.store.modules[self.modules[module as usize]]
    }

    pub fn function_node(&self, module: u16, index: u32) -> NodeIndex {
        NodeIndex::new((self.fn_base[module as usize] + index) as usize)
    }

    pub fn hub(&self, args: u8) -> NodeIndex {
        NodeIndex::new((self.hub_base + u32::from(args.min(HUBS as u8 - 1))) as usize)
    }

    pub fn function_count(&self) -> usize {
        self.obj_base.first().copied().unwrap_or(self.hub_base) as usize
    }

    /// `module!function` for reports.
    pub fn label(&self, node: NodeIndex) -> String {
        match self.graph[node] {
            Node::Function { module, index } => {
                let module = self.module(module);
                format!("{}!{}", basename(&module.path), module.summary.function_label(index))
            }
            Node::Object { module, index } => {
                let module = self.module(module);
                format!("{}!data_{:x}", basename(&module.path), module.summary.objects[index as usize].start)
            }
            Node::Hub(args) => format!("indirect call ({args} arguments)"),
        }
    }

    /// The node a reference from `module` binds to.
    pub fn resolve(&self, module: u16, reference: Ref) -> Option<NodeIndex> {
        match reference {
            Ref::Import(index) => self.imports[module as usize][index as usize],
            local => self.bind(module, local),
        }
    }

    /// [`Program::resolve`] with imports looked up afresh.
    fn bind(&self, module: u16, reference: Ref) -> Option<NodeIndex> {
        match reference {
            Ref::Fn(index) => Some(self.function_node(module, index)),
            Ref::Object(index) => Some(NodeIndex::new((self.obj_base[module as usize] + index) as usize)),
            Ref::Import(index) => self.lookup(&self.module(module).summary.imports[index as usize], module),
        }
    }

    /// The first definition of `import` in load order: the global scope, then (for a
    /// `dlopen`ed file) the other `dlopen`ed files and their dependencies.
    fn lookup(&self, import: &Import, from: u16) -> Option<NodeIndex> {
        let dlopened = from as usize >= self.scope_len;
        let searched = if dlopened { self.modules.len() } else { self.scope_len };
        for module in 0..searched {
            let Some(candidates) = self.exports[module].get(import.name.as_str()) else { continue };
            if let Some(export) = candidates.iter().find(|export| versions_match(import, export)) {
                return export.target.and_then(|target| self.bind(module as u16, target));
            }
        }
        None
    }

    /// A function exported under `name` (default version) anywhere in the process, in load order;
    /// in a static executable, its own function of that name.
    pub fn export(&self, name: &str) -> Option<NodeIndex> {
        let exported = (0..self.modules.len()).find_map(|module| {
            let export = self.exports[module].get(name)?.iter().find(|export| export.default)?;
            match export.target? {
                target @ Ref::Fn(_) => self.resolve(module as u16, target),
                _ => None,
            }
        });
        let local =
            || self.module(self.exe).summary.function_named(name).map(|index| self.function_node(self.exe, index));
        exported.or_else(local)
    }

    fn add_edges(&mut self) {
        let mut edges: Vec<(NodeIndex, NodeIndex, Edge)> = Vec::new();
        let mut taken: Vec<NodeIndex> = Vec::new();
        for module in 0..self.modules.len() as u16 {
            let summary = &self.module(module).summary;
            for (index, function) in summary.functions.iter().enumerate() {
                let node = self.function_node(module, index as u32);
                for (call_index, call) in function.calls.iter().enumerate() {
                    if let Some(target) = self.resolve(module, call.target).filter(|&t| self.is_function(t)) {
                        edges.push((node, target, Edge::Call { at: call.at, call: call_index as u32 }));
                    }
                }
                for &reference in &function.refs {
                    let Some(target) = self.resolve(module, reference) else { continue };
                    if function.ifunc_resolver && self.is_function(target) {
                        // What a resolver returns is what callers of the symbol run.
                        edges.push((node, target, Edge::Call { at: function.addr, call: u32::MAX }));
                    } else {
                        edges.push((node, target, Edge::Takes { at: None }));
                        taken.push(target);
                    }
                }
                for site in &function.indirect {
                    edges.push((node, self.hub(site.args), Edge::Indirect { at: site.at }));
                }
            }
            for (index, object) in summary.objects.iter().enumerate() {
                let node = NodeIndex::new((self.obj_base[module as usize] + index as u32) as usize);
                for &pointer in &object.ptrs {
                    if let Some(target) = self.resolve(module, pointer) {
                        edges.push((node, target, Edge::Points));
                        taken.push(target);
                    }
                }
            }
        }
        taken.sort_unstable();
        taken.dedup();
        for target in taken.into_iter().filter(|&target| self.is_function(target)) {
            edges.push((self.hub(self.args(target)), target, Edge::Member));
        }
        self.graph.reserve_edges(edges.len());
        for (from, to, edge) in edges {
            self.graph.add_edge(from, to, edge);
        }
    }

    /// The file (position in `modules`) a function or data object belongs to.
    pub fn module_of(&self, node: NodeIndex) -> Option<u16> {
        match self.graph[node] {
            Node::Function { module, .. } | Node::Object { module, .. } => Some(module),
            Node::Hub(_) => None,
        }
    }

    /// Whether an indirect call in another file than `node`'s may reach it.
    ///
    /// A library's internal function pointers are called by that library: another file can only
    /// call one whose address it was given. So a library function (or data) is shared when
    /// another file refers to it (by symbol, from code or data), when it is passed — itself, or
    /// data holding it — to a call into another file (a callback, a `pthread_once`
    /// initialiser), when shared data points to it, or when it is the export of a `dlopen`ed
    /// file (`dlsym` hands those out). The executable's functions are always
    /// shared: applications hand callbacks to libraries in every way, including through
    /// structures on the heap (zlib's `zalloc`).
    pub fn shared(&self, node: NodeIndex) -> bool {
        self.shared.get(node.index()).copied().unwrap_or(true)
    }

    fn sharing(&self) -> Vec<bool> {
        let mut shared = vec![false; self.graph.node_count()];
        let mut stack: Vec<NodeIndex> = Vec::new();
        for edge in self.graph.edge_references() {
            let (from, to) = (self.module_of(edge.source()), self.module_of(edge.target()));
            let crossing = matches!(edge.weight(), Edge::Takes { .. } | Edge::Points) && from != to;
            if to == Some(self.exe) || crossing {
                stack.push(edge.target());
            }
        }
        for module in 0..self.modules.len() as u16 {
            let summary = &self.module(module).summary;
            for (index, function) in summary.functions.iter().enumerate() {
                let caller = self.function_node(module, index as u32);
                for edge in self.graph.edges(caller) {
                    let Edge::Call { call, .. } = *edge.weight() else { continue };
                    let leaves = self.module_of(edge.target()) != Some(module);
                    let Some(call) = function.calls.get(call as usize).filter(|_| leaves) else { continue };
                    stack.extend(call.fn_args.iter().filter_map(|&(_, pointer)| self.resolve(module, pointer)));
                }
            }
        }
        // What a `dlopen`ed file exports, the application gets through `dlsym`.
        for module in self.scope_len as u16..self.modules.len() as u16 {
            let exports = self.module(module).summary.exports.iter();
            stack.extend(exports.filter_map(|export| self.resolve(module, export.target?)));
        }
        while let Some(node) = stack.pop() {
            if std::mem::replace(&mut shared[node.index()], true) {
                continue;
            }
            if matches!(self.graph[node], Node::Object { .. }) {
                stack.extend(
                    self.graph.edges(node).filter(|edge| *edge.weight() == Edge::Points).map(|edge| edge.target()),
                );
            }
        }
        shared
    }

    /// The `call`-th direct call of function `node` (`None` for an IFUNC resolver's edge).
    pub fn call(&self, node: NodeIndex, call: u32) -> Option<&'s Call> {
        let Node::Function { module, index } = self.graph[node] else { return None };
        self.module(module).summary.functions[index as usize].calls.get(call as usize)
    }

    /// The argument of function `node` its indirect call at `at` goes through, if it does.
    pub fn called_argument(&self, node: NodeIndex, at: u64) -> Option<ArgLoc> {
        let Node::Function { module, index } = self.graph[node] else { return None };
        let function = &self.module(module).summary.functions[index as usize];
        function.indirect.iter().find(|site| site.at == at)?.argument
    }

    pub fn is_function(&self, node: NodeIndex) -> bool {
        matches!(self.graph[node], Node::Function { .. })
    }

    /// Argument registers the function consumes.
    pub fn args(&self, node: NodeIndex) -> u8 {
        match self.graph[node] {
            Node::Function { module, index } => self.module(module).summary.functions[index as usize].args,
            _ => 0,
        }
    }

    /// Numbers every function issues, directly or through the wrappers it calls with constants.
    fn resolve_wrappers(&mut self) {
        let count = self.function_count();
        self.issues = vec![Vec::new(); count];
        self.unknown = vec![Vec::new(); count];
        self.wrapper = vec![None; count];
        for node in (0..count).map(NodeIndex::new) {
            let Node::Function { module, index } = self.graph[node] else { continue };
            for site in &self.module(module).summary.functions[index as usize].sites {
                match &site.number {
                    SiteNumber::Known(numbers) => {
                        self.issues[node.index()].extend(numbers.iter().map(|&number| Issue {
                            number,
                            i386: site.i386,
                            at: site.at,
                            via_wrapper: false,
                        }))
                    }
                    SiteNumber::Forwarded(loc) => {
                        self.wrapper[node.index()].get_or_insert((*loc, site.i386));
                    }
                    SiteNumber::Unresolved(reason) => {
                        self.unknown[node.index()].push(Unknown { at: site.at, reason: *reason });
                    }
                }
            }
        }
        let calls =
            petgraph::visit::EdgeFiltered::from_fn(&self.graph, |edge| matches!(edge.weight(), Edge::Call { .. }));
        // Callees first, so a wrapper is known before its callers are looked at.
        for component in petgraph::algo::tarjan_scc(&calls) {
            let component: Vec<NodeIndex> = component.into_iter().filter(|node| node.index() < count).collect();
            loop {
                let before = component.iter().filter(|node| self.wrapper[node.index()].is_some()).count();
                for &node in &component {
                    self.wrapper_calls(node, false);
                }
                let after = component.iter().filter(|node| self.wrapper[node.index()].is_some()).count();
                if after == before {
                    break;
                }
            }
            for &node in &component {
                self.wrapper_calls(node, true);
            }
        }
    }

    /// Looks at `node`'s calls to wrappers: learns whether it forwards its own argument, and
    /// (when `record`) the numbers it passes.
    fn wrapper_calls(&mut self, node: NodeIndex, record: bool) {
        let Node::Function { module, index } = self.graph[node] else { return };
        let function = &self.module(module).summary.functions[index as usize];
        let targets: Vec<(NodeIndex, u32)> = self
            .graph
            .edges(node)
            .filter_map(|edge| match edge.weight() {
                Edge::Call { call, .. } if *call != u32::MAX => Some((edge.target(), *call)),
                _ => None,
            })
            .collect();
        for (target, call_index) in targets {
            let Some((loc, i386)) = self.wrapper.get(target.index()).copied().flatten() else { continue };
            let call = &function.calls[call_index as usize];
            let value = call.args.iter().find(|(arg, _)| *arg == loc).map(|(_, value)| value);
            if let Some(forwarded) = value.and_then(|value| value.forwarded) {
                self.wrapper[node.index()].get_or_insert((forwarded, i386));
            }
            if !record {
                continue;
            }
            match value {
                Some(value) if !value.consts.is_empty() => {
                    for &number in value.consts.iter().filter(|&&number| number < 0x4000_0000) {
                        self.issues[node.index()].push(Issue {
                            number: number as u32,
                            i386,
                            at: call.at,
                            via_wrapper: true,
                        });
                    }
                }
                Some(value) if value.forwarded.is_some() => {}
                _ => self.unknown[node.index()].push(Unknown { at: call.at, reason: Reason::WrapperArgument }),
            }
        }
    }
}

fn export_index(module: &Module) -> HashMap<&str, Vec<&Export>> {
    let mut index: HashMap<&str, Vec<&Export>> = HashMap::new();
    for export in &module.summary.exports {
        index.entry(export.name.as_str()).or_default().push(export);
    }
    index
}

/// Versioned references need that version; unversioned ones bind to the default version.
fn versions_match(import: &Import, export: &Export) -> bool {
    match &import.version {
        Some(version) => export.version.as_ref() == Some(version) || export.version.is_none(),
        None => export.default,
    }
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callgraph::fixture;
    use crate::elf::assembler::assert_text;

    /// Builds the process of `fixture` and prints each function that does something: the
    /// functions its calls bind to, the syscalls it issues in address order (`N via wrapper`
    /// through a wrapper call), `wrapper argK` when its number is an argument, and `unknown` sites.
    fn check(fixture: &str, expect: &str) {
        let (store, process) = fixture::process(fixture);
        let program = Program::build(&store, &process);
        let mut out = String::new();
        for node in (0..program.function_count()).map(NodeIndex::new) {
            let mut facts = Vec::new();
            let mut callees: Vec<String> = program
                .graph
                .edges(node)
                .filter(|edge| matches!(edge.weight(), Edge::Call { .. }))
                .map(|edge| program.label(edge.target()))
                .collect();
            callees.reverse();
            if !callees.is_empty() {
                facts.push(format!("-> {}", callees.join(" ")));
            }
            let mut issues = program.issues[node.index()].clone();
            issues.sort_by_key(|issue| (issue.at, issue.number));
            for issue in &issues {
                facts.push(if issue.via_wrapper {
                    format!("{} via wrapper", issue.number)
                } else {
                    issue.number.to_string()
                });
            }
            if let Some((loc, _)) = program.wrapper[node.index()] {
                facts.push(format!("wrapper {loc}"));
            }
            for unknown in &program.unknown[node.index()] {
                facts.push(format!("unknown: {}", unknown.reason.as_str()));
            }
            if !facts.is_empty() {
                out.push_str(&format!("{}: {}\n", program.label(node), facts.join("; ")));
            }
        }
        assert_text(&out, expect);
    }

    #[test]
    fn symbols_bind_in_load_order_with_versions() {
        // The executable's `malloc` interposes libc's, even for libc's own calls through the
        // symbol; `strlen` binds to the first library defining it; an unversioned `read` binds
        // to the default version, `read@V1` to the old one.
        check(
            "
/app exe
  main: call read; call read@V1; call malloc; call strlen
  malloc: syscall 9
/lib/libfast.so so
  strlen: syscall 100
/lib/libc.so.6 so
  read@@V2: syscall 0
  read_v1=read@V1: syscall 17
  malloc: syscall 12
  strlen: syscall 101
  free: call @malloc
",
            "
app!main: -> libc.so.6!read libc.so.6!read_v1 app!malloc libfast.so!strlen
app!malloc: 9
libfast.so!strlen: 100
libc.so.6!read: 0
libc.so.6!read_v1: 17
libc.so.6!malloc: 12
libc.so.6!strlen: 101
libc.so.6!free: -> app!malloc
",
        );
    }

    #[test]
    fn dlopened_files_see_the_global_scope_but_not_the_reverse() {
        check(
            "
/app exe
  main: call helper; call write
/lib/libc.so.6 so
  write: syscall 1
/lib/plugin.so so dlopen
  plugin_init: call helper; call write
/lib/libhelper.so so dlopen
  helper: syscall 2
",
            "
app!main: -> libc.so.6!write
libc.so.6!write: 1
plugin.so!plugin_init: -> libhelper.so!helper libc.so.6!write
libhelper.so!helper: 2
",
        );
    }

    #[test]
    fn wrappers_resolve_at_their_callers() {
        // `raw` passes its second argument on as `syscall`'s number, so it is a wrapper too;
        // `seventh` takes the number on the stack; the last call's number is not known.
        check(
            "
/app exe
  main: call syscall(arg1=39); call raw(arg2=60,231); call seventh(arg7=15); call syscall
  raw: call syscall(arg1=arg2)
  seventh: syscall arg7
/lib/libc.so.6 so
  syscall: syscall arg1
",
            "
app!main: -> libc.so.6!syscall app!raw app!seventh libc.so.6!syscall; 39 via wrapper; 60 via wrapper; 231 via wrapper; 15 via wrapper; unknown: wrapper called with a non-constant number
app!raw: -> libc.so.6!syscall; wrapper argument 2
app!seventh: wrapper argument 7 (stack)
libc.so.6!syscall: wrapper argument 1
",
        );
    }

    #[test]
    fn an_ifunc_resolver_calls_what_it_returns() {
        check(
            "
/app exe
  main: call memcpy
/lib/libc.so.6 so
  memcpy ifunc: takes memcpy_avx; takes memcpy_sse
  .memcpy_avx: syscall 1
  .memcpy_sse: syscall 2
",
            "
app!main: -> libc.so.6!memcpy
libc.so.6!memcpy: -> libc.so.6!memcpy_avx libc.so.6!memcpy_sse
libc.so.6!memcpy_avx: 1
libc.so.6!memcpy_sse: 2
",
        );
    }
}
