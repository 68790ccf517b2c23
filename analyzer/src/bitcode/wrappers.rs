//! Syscall wrappers: functions whose parameter becomes the syscall number.
//!
//! libc's `syscall(long number, …)` is the seed; an application function that passes its own
//! parameter on to a wrapper (or binds it to the syscall register of an inline `syscall`) is a
//! wrapper too. Call sites of wrappers are syscall sites: the constant argument there is the
//! number. The relation is found by a fixpoint over direct calls, a few levels deep.

use super::program::{FnId, Item, Number, Program};

/// libc functions whose argument `k` is the syscall number.
const LIBRARY_WRAPPERS: &[(&str, u32)] = &[("syscall", 0)];

/// Wrapper chains deeper than this are not followed (glibc's own deepest chain needs 3).
const MAX_DEPTH: usize = 6;

/// For each function, the parameter that carries the syscall number, if it is a wrapper.
pub fn syscall_wrappers(program: &Program) -> Vec<Option<u32>> {
    let mut wrapper = vec![None; program.functions.len()];
    for &(name, param) in LIBRARY_WRAPPERS {
        if let Some(id) = program.function_id(name).filter(|&id| program.function(id).body.is_none()) {
            wrapper[id as usize] = Some(param);
        }
    }
    for site in &program.asm_sites {
        if let Number::Param(param) = site.number {
            wrapper[site.function as usize] = Some(param);
        }
    }
    for _ in 0..MAX_DEPTH {
        let mut changed = false;
        for (id, function) in program.functions.iter().enumerate() {
            let Some(body) = &function.body else { continue };
            if wrapper[id].is_some() {
                continue;
            }
            if let Some(param) = body.items.iter().find_map(|item| forwarded_param(item, &wrapper)) {
                wrapper[id] = Some(param);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    wrapper
}

/// The caller's parameter that `item` passes as a wrapper's number, if it does.
fn forwarded_param(item: &Item, wrapper: &[Option<u32>]) -> Option<u32> {
    let Item::Call { callee, args } = item else { return None };
    match args.get(wrapper[*callee as usize]? as usize)? {
        Number::Param(param) => Some(*param),
        _ => None,
    }
}

/// Whether `callee` is a library wrapper resolved at its call sites (so its library summary,
/// which knows no number, is not used).
pub fn is_library_wrapper(program: &Program, callee: FnId) -> bool {
    let function = program.function(callee);
    function.body.is_none() && LIBRARY_WRAPPERS.iter().any(|&(name, _)| name == function.name)
}
