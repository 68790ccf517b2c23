//! Argument values at reachable syscall sites, for the pairs of `syscalls::args`.
//!
//! A site's argument is what the value analysis found in its register: constants (one, or a
//! few joined from branches) and/or the enclosing function's own argument. An own argument is
//! looked up at every direct call of that function from a function reached in the phase, and so
//! on up (`socket(AF_INET, …)` in nginx → libc's `socket` → the `syscall` instruction). The
//! answer is unknown — the syscall keeps its name-only rule in that phase — as soon as one site's
//! value is: a register the analysis lost, a function entered other than by a direct call (a
//! root, a continuation, an address taken anywhere, an IFUNC target), a caller passing
//! something unknown, or a chain deeper than `MAX_DEPTH`.

use std::collections::{BTreeMap, HashSet};

use petgraph::Direction;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef as _;

use super::graph::{Edge, Issue, Node, Program};
use super::reach::{Reach, Via};
use crate::elf::{ArgValue, Function, SiteNumber};
use crate::syscalls::Arch;
use crate::syscalls::args::{ArgPair, MAX_VALUES, pairs_of};

/// Per argument index: each value allowed (already masked) → the first site that passes it.
pub type ArgValues = BTreeMap<u8, BTreeMap<u64, String>>;

/// Callers followed upwards from a site before its value counts as unknown.
const MAX_DEPTH: usize = 8;

/// Per syscall number of `arch` with pairs: the values every reached site passes, or `None` when
/// some reached site's value is unknown.
pub fn phase_values(program: &Program<'_>, reach: &Reach, arch: Arch) -> BTreeMap<u32, Option<ArgValues>> {
    let mut out: BTreeMap<u32, Option<ArgValues>> = BTreeMap::new();
    for &node in &reach.order {
        for issue in reach.issues(program, node) {
            let Some(name) = arch.name(issue.number).filter(|_| !issue.i386) else { continue };
            let pairs: Vec<&ArgPair> = pairs_of(name).collect();
            if pairs.is_empty() {
                continue;
            }
            let entry = out.entry(issue.number).or_insert_with(|| Some(ArgValues::new()));
            for pair in pairs {
                let found = Tracer { program, reach }.at_issue(node, issue, pair.index);
                match (entry.as_mut(), found) {
                    (Some(values), Some(found)) => {
                        let known = values.entry(pair.index).or_default();
                        for (value, site) in found {
                            known.entry(value & pair.kind.mask()).or_insert(site);
                        }
                        if known.len() > MAX_VALUES {
                            *entry = None;
                        }
                    }
                    _ => *entry = None,
                }
            }
        }
    }
    out
}

struct Tracer<'a, 'p> {
    program: &'a Program<'p>,
    reach: &'a Reach,
}

impl Tracer<'_, '_> {
    /// Argument `index` of the syscall `issue` makes in `node`.
    fn at_issue(&self, node: NodeIndex, issue: &Issue, index: u8) -> Option<Vec<(u64, String)>> {
        let function = self.function(node)?;
        if !issue.via_wrapper {
            let site = function.sites.iter().find(|site| site.at == issue.at)?;
            let value = site.args.iter().find(|(arg, _)| *arg == index).map(|(_, value)| value)?;
            return self.resolve(node, value, &format!("{} at {:#x}", self.program.label(node), issue.at), 0);
        }
        // A call to a wrapper (`syscall(SYS_socket, …)`): the wrapper's site holds the argument,
        // as a constant or as one of the wrapper's own arguments, which this call passes.
        let (call_index, wrapper) = self.program.graph.edges(node).find_map(|edge| match *edge.weight() {
            Edge::Call { at, call } if at == issue.at && call != u32::MAX => Some((call as usize, edge.target())),
            _ => None,
        })?;
        let call = function.calls.get(call_index)?;
        let wrapper_function = self.function(wrapper)?;
        let mut values = Vec::new();
        let forwarding = wrapper_function.sites.iter().filter(|site| matches!(site.number, SiteNumber::Forwarded(_)));
        let mut any = false;
        for site in forwarding {
            any = true;
            let value = site.args.iter().find(|(arg, _)| *arg == index).map(|(_, value)| value)?;
            let at = format!("{} at {:#x}", self.program.label(node), call.at);
            values.extend(value.consts.iter().map(|&constant| (constant, at.clone())));
            if let Some(loc) = value.forwarded {
                values.extend(self.resolve(node, call.passes(loc)?, &at, 0)?);
            }
        }
        any.then_some(values)
    }

    /// The values `value`, seen in `node`, can have: its constants, and for an own argument
    /// whatever every reached direct caller passes.
    fn resolve(&self, node: NodeIndex, value: &ArgValue, at: &str, depth: usize) -> Option<Vec<(u64, String)>> {
        let mut values: Vec<(u64, String)> = value.consts.iter().map(|&constant| (constant, at.to_owned())).collect();
        let Some(loc) = value.forwarded else { return Some(values) };
        let mut seen = HashSet::from([node]);
        let mut pending = vec![(node, loc, depth)];
        while let Some((callee, loc, depth)) = pending.pop() {
            if depth >= MAX_DEPTH || !self.entered_only_by_calls(callee) {
                return None;
            }
            for edge in self.program.graph.edges_directed(callee, Direction::Incoming) {
                let Edge::Call { at, call } = *edge.weight() else { return None };
                let caller = edge.source();
                if self.reach.via[caller.index()].is_none() {
                    continue;
                }
                let call = self.function(caller)?.calls.get(call as usize)?;
                let passed = call.passes(loc)?;
                let site = format!("{} at {at:#x}", self.program.label(caller));
                values.extend(passed.consts.iter().map(|&constant| (constant, site.clone())));
                if let Some(forwarded) = passed.forwarded
                    && seen.insert(caller)
                {
                    pending.push((caller, forwarded, depth + 1));
                }
            }
        }
        Some(values)
    }

    /// Whether every way into `node` in this phase is a direct call from a reached function whose
    /// arguments the call graph records: not a root, not a continuation, no address taken, no
    /// IFUNC resolver's target.
    fn entered_only_by_calls(&self, node: NodeIndex) -> bool {
        let entered = matches!(self.reach.via[node.index()], Some(Via::Call { .. }));
        let whole = self.reach.partial[node.index()].is_none();
        let only_calls = self
            .program
            .graph
            .edges_directed(node, Direction::Incoming)
            .all(|edge| matches!(*edge.weight(), Edge::Call { call, .. } if call != u32::MAX));
        entered && whole && only_calls
    }

    fn function(&self, node: NodeIndex) -> Option<&Function> {
        let Node::Function { module, index } = self.program.graph[node] else { return None };
        self.program.module(module).summary.functions.get(index as usize)
    }
}
