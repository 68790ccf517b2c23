//! What the tool knows of particular servers, as data: where each one's request loop starts.
//!
//! One table, read by every part that needs a server's serving entry when the user names none:
//! the `auto` phase marker (`trace::live`, `enforce`), the ELF front end (`callgraph::phases`) and
//! the bitcode front end (`bitcode::phases`). No other code names a server's functions; a server
//! is added by adding a row. A server not in the table still works: the user names its serving
//! entry (`--phase-marker symbol:…`, `--serving-entry`).

/// One server's serving entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    /// The server's name, for messages.
    pub name: &'static str,
    /// The function whose first call in a process starts its serving phase: the `auto` marker's
    /// uprobe (per process), and the static analysis's serving entry when none is given.
    pub serving_entry: &'static str,
    /// The callers of `serving_entry` whose code after the call serves too (the rest of the
    /// loop they run it in); empty: every caller.
    pub serving_callers: &'static [&'static str],
    /// How to find `serving_callers` in a binary that has no symbol for them.
    pub callers_spawned: Option<Spawn>,
}

/// A call that hands a serving caller over as a function pointer: `function`'s argument
/// `callback` (counted from 0) when its argument `label_arg` is the string `label`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spawn {
    pub function: &'static str,
    pub callback: u8,
    pub label_arg: u8,
    pub label: &'static str,
}

/// The servers whose serving entry is known, tried in this order.
///
/// nginx serves from a worker's (or the cache manager's) first `ngx_process_events_and_timers`;
/// the worker cycle's prologue (privilege drop, CPU affinity, rlimits) runs before, in init.
/// `ngx_single_process_cycle` also calls it, but only with `master_process off`, where the same
/// loop re-reads the configuration. The worker cycle is `static` (no symbol in Debian's binary):
/// it is the function passed as argument 1 of `ngx_spawn_process(cycle, proc, data, "worker
/// process", respawn)`. redis serves from `aeMain`, which returns into `main`.
pub const KNOWN_SERVERS: &[Server] = &[
    Server {
        name: "nginx",
        serving_entry: "ngx_process_events_and_timers",
        serving_callers: &["ngx_worker_process_cycle", "ngx_cache_manager_process_cycle"],
        callers_spawned: Some(Spawn {
            function: "ngx_spawn_process",
            callback: 1,
            label_arg: 3,
            label: "worker process",
        }),
    },
    Server { name: "redis", serving_entry: "aeMain", serving_callers: &[], callers_spawned: None },
];

/// The known server whose serving entry is `function`.
pub fn serving_entry(function: &str) -> Option<&'static Server> {
    KNOWN_SERVERS.iter().find(|server| server.serving_entry == function)
}

/// The known serving entries, comma-separated, for messages.
pub fn serving_entry_list() -> String {
    KNOWN_SERVERS.iter().map(|server| server.serving_entry).collect::<Vec<_>>().join(", ")
}
