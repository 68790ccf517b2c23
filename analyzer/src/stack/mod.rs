//! The serving entry of any server, found from the stack of its first wait: `auto`'s tracer
//! copies the registers and user stack of the first accept-family or epoll wait after `listen`,
//! `unwind` turns them into frames with the mapped files' `.eh_frame`, and [`derive`] picks the
//! entry from the frames with the files' static summaries.
//!
//! The rule: walking outward from the wait, the first frame of the application (the executable
//! or a library that is not part of the C runtime: libc, ld.so, libgcc, libstdc++) whose call
//! lies inside a loop of its function (the code after the call can come back to it), where the
//! function it calls is the application's too. The function called there is the serving entry,
//! the looping function its caller whose code after the call serves. For nginx that is
//! `ngx_process_events_and_timers` called by the (static) worker cycle; for redis
//! `aeProcessEvents` called by `aeMain`.
//!
//! Why the innermost loop, not the outermost: the loops further out are set-up loops (nginx's
//! master starts its workers in a `for` over the worker count, and the worker's whole stack
//! descends from it), while the innermost loop around the wait is the event loop, entered once
//! per event batch. Why the called function, not the looping one: the looping function's prologue
//! is still set-up (nginx's worker cycle drops privileges before its loop), while the called
//! function is entered only once that is done, on every iteration — the point where a
//! per-process switch (the `symbol:` marker, `seccomp-refine enforce`) is both early and safe.
//! For redis the hand-written table named `aeMain` instead: its first call comes right before the
//! first `aeProcessEvents`, with nothing in between but the loop's condition, so both switch at the
//! same moment, and the static serving sets from either are the same (117 syscalls, Debian 12).
//! A callee in the C runtime does not count: an application loop retrying `epoll_wait` on
//! `EINTR` loops around the wait itself, not around the event loop.
//!
//! IO: none; the caller reads `/proc/PID/maps` and the files.

pub mod unwind;

use crate::elf::{self, ModuleSummary, Ref};
use crate::trace::{FunctionRef, ServingEntry};

pub use unwind::{Frame, Mapping, Registers, executable_mappings, file_offset, symbol_offset, unwind};

/// Files of the C runtime and the loader, by the start of their file name: a loop in them is
/// not the application's, and an entry in them would be every program's.
const SYSTEM_LIBRARIES: &[&str] = &[
    "libc.so",
    "libc-",
    "ld-linux",
    "ld64.so",
    "libpthread",
    "libdl.so",
    "librt.so",
    "libm.so",
    "libgcc_s",
    "libstdc++",
];

/// Whether `path` is one of the application's own files (not the C runtime or the loader).
pub fn is_application(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !SYSTEM_LIBRARIES.iter().any(|prefix| name.starts_with(prefix))
}

/// The serving entry for `frames` (innermost first, from [`unwind`]), with `summaries[i]` the
/// static summary of `mappings[i]` where it could be made; `found_at` says where the stack was
/// taken. `Err` says why no entry was found.
pub fn derive(
    frames: &[Frame],
    mappings: &[Mapping<'_>],
    summaries: &[Option<&ModuleSummary>],
    found_at: &str,
) -> Result<ServingEntry, String> {
    let function = |frame: &Frame, index: usize| -> Option<FunctionRef> {
        let summary = summaries[frame.mapping]?;
        let at = if index == 0 { frame.addr } else { frame.addr - 1 };
        let function = summary.function_at(at)?;
        Some(reference(summary, function, &mappings[frame.mapping].path))
    };
    let stack: Vec<String> = frames
        .iter()
        .enumerate()
        .map(|(index, frame)| {
            let file = mappings[frame.mapping].path.rsplit('/').next().unwrap_or_default();
            match function(frame, index) {
                Some(function) => format!("{file}!{}+{:#x}", function.function, frame.addr - function.address),
                None => format!("{file}+{:#x}", frame.addr),
            }
        })
        .collect();
    for index in 1..frames.len() {
        let (frame, callee) = (&frames[index], &frames[index - 1]);
        let (path, callee_path) = (&mappings[frame.mapping].path, &mappings[callee.mapping].path);
        if !is_application(path) || !is_application(callee_path) {
            continue;
        }
        let Some(summary) = summaries[frame.mapping] else { continue };
        let Some(looping) = summary.function_at(frame.addr - 1) else { continue };
        let bytes = mappings[frame.mapping].bytes;
        let Ok(Some(call_at)) = elf::call_returning_to(bytes, summary, looping, frame.addr) else { continue };
        let in_loop = elf::continuation(bytes, summary, looping, call_at).is_ok_and(|after| after.contains(call_at));
        if !in_loop {
            continue;
        }
        // The function the loop calls: the call's own target — one of this file's functions, or
        // an import the callee's file defines — rather than the callee frame's function, which
        // may be one the target tail-called (libapr's `apr_pollset_poll` jumps to its backend).
        let target = summary.functions[looping as usize].calls.iter().find(|call| call.at == call_at && !call.tail);
        let direct = target.and_then(|call| match call.target {
            Ref::Fn(target) => Some(reference(summary, target, path)),
            Ref::Import(import) => {
                let name = &summary.imports[import as usize].name;
                let defining = summaries[callee.mapping]?;
                Some(reference(defining, defining.function_named(name)?, callee_path))
            }
            Ref::Object(_) => None,
        });
        let Some(entry) = direct.or_else(|| function(callee, index - 1)) else { continue };
        return Ok(ServingEntry {
            entry,
            callers: vec![reference(summary, looping, path)],
            found_at: found_at.to_owned(),
            stack,
            program: None,
        });
    }
    Err(format!(
        "no function of the application calls another inside a loop around {found_at} (stack: {})",
        if stack.is_empty() { "not unwound".to_owned() } else { stack.join(" ← ") }
    ))
}

fn reference(summary: &ModuleSummary, function: u32, binary: &str) -> FunctionRef {
    FunctionRef {
        function: summary.function_label(function),
        binary: binary.to_owned(),
        address: summary.functions[function as usize].addr,
    }
}

#[cfg(test)]
mod tests;
