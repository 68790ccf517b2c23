//! Reachability for one phase: a breadth-first worklist over the call graph with RTA-style
//! liveness of address-taken functions.
//!
//! A function reached by an indirect call must be *live* (some reached code, or some live data,
//! holds its address) and must consume no more arguments than the call site prepares (the hub
//! rule). Data objects become live when reached code refers to them and pass liveness on to what
//! they point to. Breadth-first order gives every reached function a shortest parent chain,
//! which is the witness path reports show.

use std::collections::{HashSet, VecDeque};

use petgraph::Direction;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef as _;

use super::graph::{Edge, HUBS, Issue, Node, Program, Unknown};
use crate::elf::{ArgLoc, Continuation};

/// How a node was first reached.
#[derive(Clone, Debug)]
pub enum Via {
    Root(String),
    Call {
        from: NodeIndex,
    },
    /// Through an indirect call site in `from` (the hub's member was live).
    Indirect {
        from: NodeIndex,
        at: u64,
    },
    /// Its address was taken by `from` after a compatible indirect call was already reached.
    Taken {
        from: NodeIndex,
    },
    /// Called by `from` through a pointer loaded from the file's fixed data at `table`.
    Loaded {
        from: NodeIndex,
        table: u64,
    },
    /// Passed to `from` as an argument that `from` calls at `at`.
    Passed {
        from: NodeIndex,
        at: u64,
    },
}

/// What to start a phase from.
#[derive(Default)]
pub struct Roots {
    pub functions: Vec<(NodeIndex, String)>,
    /// Parts of functions: what runs after a call returns (`at` is the call).
    pub continuations: Vec<(NodeIndex, Continuation, u64, String)>,
    /// Address-taken functions and pointer-bearing data already live (pointers stored in an
    /// earlier phase, data `dlsym` hands out); what the data points to is live with it.
    pub live: Vec<NodeIndex>,
    /// Hubs to open from the start (an asynchronous entry whose target is not known).
    pub hubs_up_to: Option<u8>,
}

pub struct Reach {
    pub via: Vec<Option<Via>>,
    /// Functions reached, in breadth-first order.
    pub order: Vec<NodeIndex>,
    pub live: Vec<bool>,
    /// The continuation ranges of functions reached only in part.
    pub partial: Vec<Option<Vec<(u64, u64)>>>,
    /// Per file: the most arguments an indirect call reached in it prepares.
    hub_level: Vec<Option<u8>>,
    /// The most over all files, for functions every file may hold.
    any_level: Option<u8>,
    /// Indirect calls through the calling function's own argument, resolved to what the callers
    /// reached so far pass: looked at again whenever the queue runs dry, for later callers.
    argument_calls: Vec<(NodeIndex, u64)>,
}

impl Reach {
    /// The syscall numbers a reached function issues in the part that was reached.
    pub fn issues<'p>(&'p self, program: &'p Program<'_>, node: NodeIndex) -> impl Iterator<Item = &'p Issue> + 'p {
        program.issues[node.index()].iter().filter(move |issue| self.covers(node, issue.at))
    }

    pub fn unknowns<'p>(&'p self, program: &'p Program<'_>, node: NodeIndex) -> impl Iterator<Item = &'p Unknown> + 'p {
        program.unknown[node.index()].iter().filter(move |unknown| self.covers(node, unknown.at))
    }

    fn covers(&self, node: NodeIndex, at: u64) -> bool {
        match &self.partial[node.index()] {
            None => true,
            Some(ranges) => ranges.iter().any(|&(start, end)| (start..end).contains(&at)),
        }
    }

    /// Root → … → `node`, as node labels.
    pub fn path(&self, program: &Program<'_>, node: NodeIndex) -> Vec<String> {
        let mut path = Vec::new();
        let mut current = Some(node);
        while let Some(at) = current {
            let label = program.label(at);
            current = match &self.via[at.index()] {
                Some(Via::Root(reason)) => {
                    path.push(format!("{label} ({reason})"));
                    None
                }
                Some(Via::Call { from, .. }) => {
                    path.push(label);
                    Some(*from)
                }
                Some(Via::Indirect { from, at }) => {
                    path.push(format!("{label} (indirect call at {at:#x})"));
                    Some(*from)
                }
                Some(Via::Taken { from }) => {
                    path.push(format!("{label} (address taken, called indirectly)"));
                    Some(*from)
                }
                Some(Via::Loaded { from, table }) => {
                    path.push(format!("{label} (loaded from table {table:#x})"));
                    Some(*from)
                }
                Some(Via::Passed { from, at }) => {
                    path.push(format!("{label} (passed as an argument, called at {at:#x})"));
                    Some(*from)
                }
                None => None,
            };
            if path.len() > program.graph.node_count() {
                break;
            }
        }
        path.reverse();
        path
    }
}

/// Runs the worklist from `roots`.
pub fn reach(program: &Program<'_>, roots: Roots) -> Reach {
    let nodes = program.graph.node_count();
    let mut state = Reach {
        via: vec![None; nodes],
        order: Vec::new(),
        live: vec![false; nodes],
        partial: vec![None; nodes],
        hub_level: vec![None; program.modules.len()],
        any_level: None,
        argument_calls: Vec::new(),
    };
    let mut queue: VecDeque<NodeIndex> = VecDeque::new();
    // Live from the start, and so is what live data points to.
    let mut live = roots.live;
    while let Some(node) = live.pop() {
        if !std::mem::replace(&mut state.live[node.index()], true) && !program.is_function(node) {
            live.extend(program.graph.neighbors(node));
        }
    }
    for (node, ranges, at, reason) in roots.continuations {
        if state.via[node.index()].is_none() {
            state.via[node.index()] = Some(Via::Root(format!("{reason}, after the call at {at:#x} returns")));
            state.partial[node.index()] = Some(ranges.ranges);
            queue.push_back(node);
        }
    }
    for (node, reason) in roots.functions {
        visit_root(&mut state, &mut queue, node, reason);
    }
    if let Some(level) = roots.hubs_up_to {
        let root = queue.front().copied();
        for module in 0..program.modules.len() as u16 {
            open_hubs(program, &mut state, &mut queue, module, level, root, 0);
        }
    }
    loop {
        while let Some(node) = queue.pop_front() {
            if program.is_function(node) {
                state.order.push(node);
            }
            expand(program, &mut state, &mut queue, node);
        }
        for (node, at) in std::mem::take(&mut state.argument_calls) {
            indirect_call(program, &mut state, &mut queue, node, at);
        }
        if queue.is_empty() {
            return state;
        }
    }
}

fn visit_root(state: &mut Reach, queue: &mut VecDeque<NodeIndex>, node: NodeIndex, reason: String) {
    let whole = state.partial[node.index()].take().is_some();
    if state.via[node.index()].is_none() || whole {
        state.via[node.index()] = Some(Via::Root(reason));
        queue.push_back(node);
    }
}

fn push(state: &mut Reach, queue: &mut VecDeque<NodeIndex>, node: NodeIndex, via: Via) {
    if state.via[node.index()].is_none() {
        state.via[node.index()] = Some(via);
        queue.push_back(node);
    } else if state.partial[node.index()].is_some() {
        // Reached in full now, not only after some call returns.
        state.partial[node.index()] = None;
        queue.push_back(node);
    }
}

fn expand(program: &Program<'_>, state: &mut Reach, queue: &mut VecDeque<NodeIndex>, node: NodeIndex) {
    let partial = state.partial[node.index()].clone();
    let inside = |at: u64| partial.as_ref().is_none_or(|ranges| ranges.iter().any(|&(s, e)| (s..e).contains(&at)));
    let edges: Vec<(NodeIndex, Edge)> = program.graph.edges(node).map(|edge| (edge.target(), *edge.weight())).collect();
    for (target, edge) in edges {
        match edge {
            Edge::Call { at, call } if call == u32::MAX || inside(at) => {
                let via = match loaded_from(program, node, call) {
                    Some(table) => Via::Loaded { from: node, table },
                    None => Via::Call { from: node },
                };
                push(state, queue, target, via)
            }
            Edge::Call { .. } => {}
            Edge::Takes { .. } | Edge::Points => make_live(program, state, queue, target, node),
            Edge::Indirect { at } if inside(at) => indirect_call(program, state, queue, node, at),
            Edge::Indirect { .. } | Edge::Member => {}
        }
    }
}

/// Marks `target` live; a live function joins the calls its hub is open for, a live object
/// passes liveness on.
fn make_live(
    program: &Program<'_>,
    state: &mut Reach,
    queue: &mut VecDeque<NodeIndex>,
    target: NodeIndex,
    from: NodeIndex,
) {
    if std::mem::replace(&mut state.live[target.index()], true) {
        return;
    }
    match program.graph[target] {
        Node::Function { module, .. } => {
            let level = if program.shared(target) { state.any_level } else { state.hub_level[module as usize] };
            if level.is_some_and(|level| program.args(target) <= level) {
                push(state, queue, target, Via::Taken { from });
            }
        }
        Node::Object { .. } => {
            if state.via[target.index()].is_none() {
                state.via[target.index()] = Some(Via::Taken { from });
            }
            let pointees: Vec<NodeIndex> = program.graph.neighbors(target).collect();
            for pointee in pointees {
                make_live(program, state, queue, pointee, target);
            }
        }
        Node::Hub(_) => {}
    }
}

/// `node`'s indirect call at `at`: to what its callers pass, when it calls through its own
/// argument and they are all known (kept for another look as more callers are reached), else
/// to its hub — also when a caller reached since passes what the analysis lost.
fn indirect_call(program: &Program<'_>, state: &mut Reach, queue: &mut VecDeque<NodeIndex>, node: NodeIndex, at: u64) {
    match passed_functions(program, state, node, at) {
        Some(functions) => {
            state.argument_calls.push((node, at));
            for function in functions {
                push(state, queue, function, Via::Passed { from: node, at });
            }
        }
        None => open_site_hub(program, state, queue, node, at),
    }
}

/// Opens the hub of `node`'s indirect call at `at`.
fn open_site_hub(program: &Program<'_>, state: &mut Reach, queue: &mut VecDeque<NodeIndex>, node: NodeIndex, at: u64) {
    let Some(module) = program.module_of(node) else { return };
    let hubs = program.graph.edges(node).filter(|edge| edge.weight() == &Edge::Indirect { at });
    let levels: Vec<u8> = hubs
        .filter_map(|edge| match program.graph[edge.target()] {
            Node::Hub(args) => Some(args),
            _ => None,
        })
        .collect();
    for args in levels {
        open_hubs(program, state, queue, module, args, Some(node), at);
    }
}

/// An indirect call in file `module` preparing `args` arguments can reach every live function
/// consuming no more: the file's own, and those shared with every file.
fn open_hubs(
    program: &Program<'_>,
    state: &mut Reach,
    queue: &mut VecDeque<NodeIndex>,
    module: u16,
    args: u8,
    from: Option<NodeIndex>,
    at: u64,
) {
    let args = args.min(HUBS as u8 - 1);
    let old = state.hub_level[module as usize];
    if old.is_some_and(|level| level >= args) {
        return;
    }
    state.hub_level[module as usize] = Some(args);
    state.any_level = state.any_level.max(Some(args));
    let first = old.map_or(0, |level| level + 1);
    for hub in first..=args {
        let members: Vec<NodeIndex> = program
            .graph
            .neighbors(program.hub(hub))
            .filter(|&member| state.live[member.index()])
            .filter(|&member| program.module_of(member) == Some(module) || program.shared(member))
            .collect();
        for member in members {
            let via = match from {
                Some(from) => Via::Indirect { from, at },
                None => Via::Root("asynchronous entry with an unknown target".into()),
            };
            push(state, queue, member, via);
        }
    }
}

/// The functions an indirect call at `at` in `node` can reach when it calls through `node`'s own
/// argument: what `node`'s callers reached so far pass there, following arguments passed on
/// from their own callers. `None` (the call reaches its hub) when some way into one of those
/// functions is not a direct call whose arguments are recorded — a root, an address taken, an
/// IFUNC — or some caller passes a value the analysis lost. What a registrar registers counts
/// where the phases root it. A constant that is no function's address cannot be called without
/// a fault, and counts for nothing.
fn passed_functions(program: &Program<'_>, state: &Reach, node: NodeIndex, at: u64) -> Option<Vec<NodeIndex>> {
    let mut pending = vec![(node, program.called_argument(node, at)?)];
    let mut seen = HashSet::new();
    let mut functions = Vec::new();
    while let Some((callee, loc)) = pending.pop() {
        if !seen.insert((callee, loc)) {
            continue;
        }
        if matches!(state.via[callee.index()], Some(Via::Root(_))) {
            return None;
        }
        if registrar_argument(program, callee) == Some(loc) {
            // A handler, thread or `main` handed to a registrar: the phases root it where it
            // runs (`main` in init alone), not wherever the registrar's code calls it.
            continue;
        }
        for edge in program.graph.edges_directed(callee, Direction::Incoming) {
            let Edge::Call { call, .. } = *edge.weight() else { return None };
            let caller = edge.source();
            let passed = program.call(caller, call)?;
            if state.via[caller.index()].is_none() || !state.covers(caller, passed.at) {
                // Not run (yet) in this phase.
                continue;
            }
            let value = passed.passes(loc);
            let pointers: Vec<NodeIndex> = match loc {
                ArgLoc::Reg(k) if passed.opaque_args & (1 << k) != 0 => return None,
                ArgLoc::Reg(k) => passed
                    .fn_args
                    .iter()
                    .filter(|(arg, _)| *arg == k)
                    .filter_map(|&(_, pointer)| program.resolve(program.module_of(caller)?, pointer))
                    .filter(|&pointer| program.is_function(pointer))
                    .collect(),
                ArgLoc::Stack(_) => Vec::new(),
            };
            let passes_on = value.and_then(|value| value.forwarded);
            let constants = value.is_some_and(|value| !value.consts.is_empty());
            if pointers.is_empty() && passes_on.is_none() && !constants {
                return None;
            }
            functions.extend(pointers);
            pending.extend(passes_on.map(|loc| (caller, loc)));
        }
    }
    functions.sort_unstable();
    functions.dedup();
    Some(functions)
}

/// The argument through which `node`, when it is one of [`crate::elf::REGISTRARS`], registers a
/// function.
fn registrar_argument(program: &Program<'_>, node: NodeIndex) -> Option<ArgLoc> {
    let Node::Function { module, index } = program.graph[node] else { return None };
    let name = program.module(module).summary.functions[index as usize].name.as_deref()?;
    let &(_, arg) = crate::elf::REGISTRARS.iter().find(|(registrar, _)| *registrar == name)?;
    Some(ArgLoc::Reg(arg))
}

/// The fixed data the `call`-th call of `node` loads its target from, if it does.
fn loaded_from(program: &Program<'_>, node: NodeIndex, call: u32) -> Option<u64> {
    program.call(node, call)?.through
}

#[cfg(test)]
mod tests {
    use crate::callgraph::fixture;
    use crate::callgraph::graph::Program;
    use crate::callgraph::phases;
    use crate::elf::assembler::assert_text;

    /// Reaches from the init roots of `fixture`'s process (entry point, `main`, init arrays) and
    /// prints each syscall number reached with its witness path.
    fn check(fixture: &str, expect: &str) {
        let (store, process) = fixture::process(fixture);
        let program = Program::build(&store, &process);
        let reach = super::reach(&program, phases::init_roots(&program));
        assert_text(&fixture::witnesses(&phases::collect(&program, &reach)), expect);
    }

    #[test]
    fn witness_paths_are_shortest() {
        check(
            "
/app exe entry=_start
  _start: call setup; call write
  setup: call log
  log: call write
  write: syscall 1
  unused: syscall 2
",
            "1: app!_start (entry point) > app!write",
        );
    }

    #[test]
    fn an_indirect_call_reaches_live_functions_taking_no_more_arguments_than_it_prepares() {
        // `three` takes three arguments, more than the call prepares; `never_taken` is live
        // nowhere; `on_b` is live through the table `main` refers to.
        check(
            "
/app exe entry=main
  main: takes one; takes three; takes table; call dispatch
  dispatch: icall 2
  one args=1: syscall 1
  three args=3: syscall 3
  never_taken: syscall 4
  on_b args=2: syscall 5
  data table: on_b
",
            "
1: app!main (entry point) > app!dispatch > app!one (indirect call at 0x2001)
5: app!main (entry point) > app!dispatch > app!on_b (indirect call at 0x2001)
",
        );
    }

    #[test]
    fn an_address_taken_after_the_indirect_call_was_reached_joins_it() {
        check(
            "
/app exe entry=main
  main: call caller; call taker
  caller: icall 1
  taker: call deeper
  deeper: takes handler
  handler args=1: syscall 3
",
            "3: app!main (entry point) > app!taker > app!deeper > app!handler (address taken, called indirectly)",
        );
    }

    #[test]
    fn a_call_through_an_argument_reaches_what_callers_pass() {
        // `once` calls its first argument (`pthread_once`'s initialiser): it reaches `init`,
        // passed by `main` and on through `wrapper`, and not `handler`, which the hub of one
        // argument would give it.
        let files = "
/app exe entry=main
  main: takes handler; call once(arg1=&init); call wrapper(arg1=&again)
  wrapper: jmp once(arg1=arg1)
  once args=1: icall 0 arg1
  init: syscall 1
  again: syscall 2
  handler: syscall 3
";
        check(
            files,
            "
1: app!main (entry point) > app!once > app!init (passed as an argument, called at 0x3001)
2: app!main (entry point) > app!once > app!again (passed as an argument, called at 0x3001)
",
        );
        // A caller whose value is lost, `once`'s address taken, or `once` a root: the call reaches
        // its hub, as any indirect call.
        let hub = "3: app!main (entry point) > app!once > app!handler (indirect call at 0x3001)";
        check(&files.replace("call wrapper(arg1=&again)", "call once"), hub);
        // … also when that caller is reached only after the call was resolved, by what it passed
        // until then and by its hub.
        let late = files.replace("call wrapper(arg1=&again)", "call wrapper(arg1=&again); call late")
            + "  late: call later\n  later: call latest\n  latest: call once\n";
        check(
            &late,
            "
1: app!main (entry point) > app!once > app!init (passed as an argument, called at 0x3001)
2: app!main (entry point) > app!once > app!again (passed as an argument, called at 0x3001)
3: app!main (entry point) > app!once > app!handler (indirect call at 0x3001)
",
        );
        check(&files.replace("takes handler;", "takes handler; takes once;"), hub);
        check(
            &files.replace("/app exe entry=main", "/app exe entry=main init=once"),
            "3: app!once (init array of app) > app!handler (indirect call at 0x3001)",
        );
    }

    #[test]
    fn a_library_s_own_pointers_are_called_only_by_that_library() {
        // `callback` is `libx`'s alone: the executable's indirect call cannot reach it, the
        // library's own can. `handler`, an executable function, every file can call. (`run`
        // runs before `dispatch`: edges are followed last added first.)
        let files = "
/app exe entry=main
  main: call dispatch; takes handler; call run
  dispatch: icall 1
  handler args=1: syscall 1
/lib/libx.so so
  run: takes callback
  .callback args=1: syscall 2
";
        check(files, "1: app!main (entry point) > app!dispatch > app!handler (indirect call at 0x2001)");
        // The same when `callback` becomes live after the executable's indirect call was reached.
        check(
            &files.replace("call dispatch; takes handler; call run", "call run; takes handler; call dispatch"),
            "1: app!main (entry point) > app!dispatch > app!handler (indirect call at 0x2001)",
        );
        check(
            &files.replace("run: takes callback", "run: takes callback; icall 1"),
            "
1: app!main (entry point) > libx.so!run > app!handler (indirect call at 0x1002)
2: app!main (entry point) > libx.so!run > libx.so!callback (address taken, called indirectly)
",
        );
    }
}
