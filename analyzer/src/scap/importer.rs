//! The normalizer: takes blocks in file order, pairs enter and exit events per thread, keeps the
//! machine state (`state`) current and counts each syscall into its container's aggregate.
//!
//! Both generations of captures go through the same path. With enter/exit pairs (libs ≤ 0.21)
//! the enter is held per thread until its exit (`type + 1`, same thread) arrives, and arguments
//! old exits lack are read from it. Exit-only captures (libs ≥ 0.22) carry everything in the
//! exit. A syscall is counted on its exit; an enter is counted on its own only when no exit can
//! follow it: another enter on the thread, the thread's end, or the end of the capture
//! (`exit_group`, or a call still blocked when recording stopped).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::aggregate::{ContainerAgg, Seen};
use super::args::{self, EventArgs};
use super::block::{Batch, BlockKind, Item, check_section_header, describe};
use super::containers::{self, ContainerMeta};
use super::error::{BlockName, Problem, ScapError};
use super::event::{Event, STATE_ONLY};
use super::kinds::{self, Action};
use super::marker::Plan;
use super::names::{self, GENERIC_E, GENERIC_X, Sys};
use super::proclist::{self, FdEntry, ProcEntry};
use super::state::{EnterArgs, FdFile, IdMap, Pending, Process, Thread, resolve};
use super::tables::EVENT_TYPES;

/// `PPM_O_CLOEXEC`: the `PPM_O_*` encoding of open flags, not Linux's `O_CLOEXEC`.
const PPM_O_CLOEXEC: u64 = 1 << 12;
/// `PPM_PROT_EXEC`.
const PPM_PROT_EXEC: u64 = 4;
/// `PPM_CL_CLONE_THREAD`.
const PPM_CL_CLONE_THREAD: u64 = 1 << 13;
/// `PPM_EXVAT_AT_EMPTY_PATH`.
const PPM_EXVAT_AT_EMPTY_PATH: i64 = 1;
/// `F_DUPFD` and `F_DUPFD_CLOEXEC` in `PPM_FCNTL_*` numbering.
const PPM_FCNTL_F_DUPFD: i64 = 1;
const PPM_FCNTL_F_DUPFD_CLOEXEC: i64 = 26;
/// close_range's `CLOSE_RANGE_CLOEXEC` (the driver passes the kernel's flag bits through).
const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
/// The host's slot in the container list.
pub const HOST: u32 = 0;

/// What the reader met besides syscalls, for the report.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events decoded (all types).
    pub events: u64,
    /// Events of types newer than these tables, by type.
    pub unknown_types: BTreeMap<u16, u64>,
    /// Blocks of unknown types, skipped by their length.
    pub unknown_blocks: u64,
    /// `DROP_E`/`DROP_X` events: the driver discarded events in a sampling window.
    pub drops: u64,
    /// Threads that appeared with no process-list entry and no clone.
    pub unknown_threads: u64,
    /// Events a capture filter rejected but kept for state (counted like the others).
    pub state_only: u64,
    /// Executable mappings of an fd whose file the capture never named.
    pub exec_maps_unknown_fd: u64,
    /// Section headers (more than one: concatenated captures).
    pub sections: u32,
}

/// Which containers a read counts the syscalls of. Everything else — threads, processes, their
/// files, containers and their metadata — is followed either way, so a focused read gives the
/// container it counts exactly the trace a full read gives it; it only skips counting the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Focus {
    All,
    /// One container: its 12- or 64-hex id, or `host`.
    Container(String),
}

impl Focus {
    /// The focus for a `--container` choice. A 12- or 64-hex id, or `host`, is known before
    /// reading; a name only from the capture's metadata, so a name (or no choice) counts all.
    pub fn of(wanted: Option<&str>) -> Focus {
        match wanted {
            Some(id)
                if id == "host" || matches!(id.len(), 12 | 64) && id.bytes().all(|byte| byte.is_ascii_hexdigit()) =>
            {
                Focus::Container(id.to_owned())
            }
            _ => Focus::All,
        }
    }

    fn counts(&self, id: &str, full_id: Option<&str>) -> bool {
        match self {
            Focus::All => true,
            Focus::Container(wanted) => wanted == id || full_id == Some(wanted.as_str()),
        }
    }
}

pub struct Importer {
    pub plan: Plan,
    pub focus: Focus,
    threads: IdMap<u64, Thread>,
    processes: IdMap<u64, Process>,
    pub containers: Vec<ContainerAgg>,
    /// Per container: are its syscalls counted (see [`Focus`])?
    counted: Vec<bool>,
    by_full_id: HashMap<Vec<u8>, u32>,
    /// cgroups lists already matched: clone and exec exits repeat the same few.
    by_cgroups: HashMap<Vec<u8>, u32>,
    pub meta: HashMap<String, ContainerMeta>,
    /// The event types read (the syscalls and the meta events), by type.
    pub seen_types: Box<[bool]>,
    pub stats: Stats,
}

impl Importer {
    pub fn new(plan: Plan, focus: Focus) -> Importer {
        Importer {
            plan,
            threads: IdMap::default(),
            processes: IdMap::default(),
            containers: vec![ContainerAgg::new("host".to_owned(), None)],
            counted: vec![focus.counts("host", None)],
            focus,
            by_full_id: HashMap::new(),
            by_cgroups: HashMap::new(),
            meta: HashMap::new(),
            seen_types: vec![false; EVENT_TYPES.len()].into(),
            stats: Stats::default(),
        }
    }

    /// Imports the blocks of one batch, in order; stops at the first block that cannot be read.
    pub fn on_batch(&mut self, batch: &Batch) -> Result<(), ScapError> {
        for item in &batch.items {
            match *item {
                Item::Event { at, count, layout, wide } => {
                    self.on_event(&Event::checked(batch.event_body(at), layout, count, wide));
                }
                Item::Skipped(count) => self.stats.events += u64::from(count),
                Item::UnknownType(kind) => {
                    self.stats.events += 1;
                    *self.stats.unknown_types.entry(kind).or_default() += 1;
                }
                Item::Block { at } => {
                    let (id, body, offset) = batch.block(at);
                    let (kind, name) = describe(id);
                    self.on_block(kind, body)
                        .map_err(|problem| ScapError::new(offset, BlockName { name, id: Some(id) }, problem))?;
                }
            }
        }
        Ok(())
    }

    /// A block other than an event.
    fn on_block(&mut self, kind: BlockKind, body: &[u8]) -> Result<(), Problem> {
        match kind {
            BlockKind::Section => {
                check_section_header(body)?;
                if self.stats.sections > 0 {
                    // A new section describes its machine afresh; what was counted stays.
                    self.flush_pending();
                    self.threads.clear();
                    self.processes.clear();
                }
                self.stats.sections += 1;
            }
            BlockKind::ProcList(version) => {
                proclist::process_list(body, version, |entry| self.seed_thread(&entry)).map_err(Problem::Corrupt)?;
            }
            BlockKind::FdList { v2 } => {
                proclist::fd_list(body, v2, |tid, entry| self.seed_fd(tid, &entry)).map_err(Problem::Corrupt)?;
            }
            BlockKind::Event(_) => unreachable!("the framer hands events on as events"),
            BlockKind::MachineInfo | BlockKind::Ignored => {}
            BlockKind::Unknown => self.stats.unknown_blocks += 1,
        }
        Ok(())
    }

    /// Counts the enters still waiting for an exit: the capture (or its section) ended.
    pub fn flush_pending(&mut self) {
        let waiting: Vec<(Actor, Pending)> =
            self.threads.values_mut().filter_map(|thread| Some((Actor::of(thread), thread.pending.take()?))).collect();
        for (actor, pending) in waiting {
            self.count_orphan(actor, pending);
        }
    }

    /// Counts an enter no exit followed, in the container its thread was in at the time.
    fn count_orphan(&mut self, actor: Actor, orphan: Pending) {
        self.count(Actor { container: orphan.container, ..actor }, orphan.sys, orphan.ts, Seen::EnterOnly, None);
    }

    fn seed_thread(&mut self, entry: &ProcEntry<'_>) {
        let container = self.container_of(entry.cgroups).unwrap_or(HOST);
        self.threads.insert(entry.tid, Thread { announce: true, ..Thread::new(entry.pid, container) });
        let process = self.processes.entry(entry.pid).or_insert_with(|| Process::new(container));
        process.threads += 1;
        if entry.tid != entry.pid {
            return;
        }
        process.container = container;
        process.cwd = Rc::from(entry.cwd);
        process.comm = Rc::from(String::from_utf8_lossy(entry.comm).as_ref());
        process.vpid = entry.vpid;
        // PL V7+ has the executable's path; before, argv[0] is a path only when absolute.
        let path = if entry.exepath.is_empty() { entry.exe } else { entry.exepath };
        process.running_before = Some(path.starts_with(b"/").then(|| Rc::from(String::from_utf8_lossy(path).as_ref())));
        if entry.vpid == 1 {
            self.containers[container as usize].command = command_line(entry.exe, entry.args);
        }
    }

    fn seed_fd(&mut self, tid: u64, entry: &FdEntry<'_>) {
        let pid = self.threads.get(&tid).map_or(tid, |thread| thread.pid);
        if let (Some(process), Some(path)) = (self.processes.get_mut(&pid), entry.path) {
            let cloexec = u64::from(entry.flags) & PPM_O_CLOEXEC != 0;
            process.fds.insert(entry.fd, FdFile { path: Rc::from(path), cloexec });
        }
    }

    /// The container a cgroups list puts a thread in (`None` when the list is empty).
    fn container_of(&mut self, cgroups: &[u8]) -> Option<u32> {
        if cgroups.is_empty() {
            return None;
        }
        if let Some(&index) = self.by_cgroups.get(cgroups) {
            return Some(index);
        }
        let index = match containers::container_id(cgroups) {
            None => HOST,
            Some(id) => match self.by_full_id.get(id) {
                Some(&index) => index,
                None => {
                    let index = self.containers.len() as u32;
                    let full_id = String::from_utf8_lossy(id).into_owned();
                    self.counted.push(self.focus.counts(&full_id[..12], Some(&full_id)));
                    self.containers.push(ContainerAgg::new(full_id[..12].to_owned(), Some(full_id)));
                    self.by_full_id.insert(id.to_vec(), index);
                    index
                }
            },
        };
        // Bounded: a capture of a busy machine may see many distinct lists over time.
        if self.by_cgroups.len() >= 4096 {
            self.by_cgroups.clear();
        }
        self.by_cgroups.insert(cgroups.to_vec(), index);
        Some(index)
    }

    fn on_event(&mut self, event: &Event<'_>) {
        self.stats.events += 1;
        self.seen_types[usize::from(event.kind)] = true;
        if event.dump_flags & STATE_ONLY != 0 {
            self.stats.state_only += 1;
        }
        let action = kinds::action(event.kind);
        if action.has(Action::SYSCALL) {
            return self.syscall(event, action);
        }
        match event.kind {
            kinds::DROP_E | kinds::DROP_X => self.stats.drops += 1,
            kinds::CONTAINER_E => {
                if let Some(id) = event.text(0) {
                    self.add_meta(containers::meta(id, event.text(2), event.text(3)));
                }
            }
            kinds::CONTAINER_JSON_E | kinds::CONTAINER_JSON_2_E => {
                if let Some(meta) = event.param(0).and_then(containers::parse_json) {
                    self.add_meta(meta);
                }
            }
            kinds::ASYNCEVENT_E if event.text(1) == Some(b"container") => {
                if let Some(meta) = event.param(2).and_then(containers::parse_json) {
                    self.add_meta(meta);
                }
            }
            kinds::PROCEXIT_E | kinds::PROCEXIT_1_E => self.thread_exit(event.tid),
            _ => {}
        }
    }

    fn add_meta(&mut self, meta: ContainerMeta) {
        self.meta.insert(meta.id.clone(), meta);
    }

    fn syscall(&mut self, event: &Event<'_>, action: Action) {
        let exit = event.is_exit();
        if exit && action.has(Action::INTRODUCES) {
            self.thread_from_exit(event, action);
        }
        let thread = match self.threads.entry(event.tid) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                // Never introduced by the process list or a clone: a host thread, as far as is known.
                self.stats.unknown_threads += 1;
                let process = self.processes.entry(event.tid).or_insert_with(|| Process::new(HOST));
                process.threads += 1;
                entry.insert(Thread::new(event.tid, process.container))
            }
        };
        let actor = Actor::of(thread);
        if action.counts_only() && !self.counted[actor.container as usize] {
            // Not counted, and changing nothing a counted event could see: a pending enter is only
            // ever counted, in this container, and only enters with arguments (never skipped) lend
            // them to their exits.
            thread.pending = None;
            if actor.announce {
                self.announce(actor, event.ts);
            }
            return;
        }
        if !exit {
            let pending = capture_enter(event, actor.container, &mut thread.args);
            if let Some(orphan) = thread.pending.replace(pending) {
                self.count_orphan(actor, orphan);
            }
            return;
        }
        let enter = match thread.pending.take() {
            Some(pending) if pending.kind + 1 == event.kind => Some(pending),
            Some(orphan) => {
                self.count_orphan(actor, orphan);
                None
            }
            None => None,
        };
        let sys = match event.kind {
            GENERIC_X => match names::of_generic(event.unsigned(0), event.unsigned(1)) {
                Sys::Unknown => enter.map_or(Sys::Unknown, |enter| enter.sys),
                sys => sys,
            },
            kind => names::of_event(kind),
        };
        let failed = action.has(Action::RESULT) && event.signed(0).is_some_and(|result| (-4095..0).contains(&result));
        let carried = {
            let args = &self.threads[&event.tid].args;
            args::of(event, enter.filter(|enter| enter.kind == args.kind).map(|_| args))
        };
        let mut actor = actor;
        let mut file = None;
        if action.has(Action::EFFECTS) {
            file = self.effects(event, enter);
            // An exec may have moved the process to another container.
            actor.container = self.threads[&event.tid].container;
        }
        // Counted first, so that a file the marker's own event maps or execs is in its phase.
        self.count(actor, sys, event.ts, Seen::Exit { failed }, carried);
        if let Some(file) = file {
            let aggregate = &mut self.containers[file.container as usize];
            match file.kind {
                FileKind::Executable => aggregate.executable(file.path, event.ts, file.pid, Some(file.comm)),
                FileKind::Library => aggregate.library(file.path, event.ts, file.pid, Some(file.comm)),
            }
        }
    }

    /// A clone or exec exit that introduces a thread, before its syscall is counted.
    fn thread_from_exit(&mut self, event: &Event<'_>, action: Action) {
        if action.has(Action::CLONE) {
            self.clone_exit(event);
        } else if !self.threads.contains_key(&event.tid) {
            // A capture that starts inside an exec: the exit names the process and its parent.
            if let (Some(pid), Some(parent)) = (event.signed(4), event.signed(5)) {
                self.spawn(event.tid, pid as u64, parent as u64, None, None);
            }
        }
    }

    fn count(&mut self, actor: Actor, sys: Sys, ts: u64, seen: Seen, args: Option<EventArgs>) {
        if self.counted[actor.container as usize] {
            self.containers[actor.container as usize].syscall(&self.plan, sys, ts, actor.pid as u32, seen, args);
        }
        if actor.announce {
            self.announce(actor, ts);
        }
    }

    /// A process that was running before the capture counts as exec'd once it does something.
    fn announce(&mut self, actor: Actor, ts: u64) {
        let aggregate = &mut self.containers[actor.container as usize];
        if let Some(process) = self.processes.get_mut(&actor.pid)
            && let Some(path) = process.running_before.take()
        {
            let comm = process.comm.to_string();
            aggregate.preexisting.push((actor.pid as u32, comm.clone()));
            if let Some(path) = path {
                aggregate.executable(path.to_string(), ts, actor.pid as u32, Some(comm));
            }
        }
    }

    fn thread_exit(&mut self, tid: u64) {
        let Some(mut thread) = self.threads.remove(&tid) else { return };
        if let Some(pending) = thread.pending {
            self.count_orphan(Actor::of(&mut thread), pending);
        }
        if let Some(process) = self.processes.get_mut(&thread.pid) {
            process.threads = process.threads.saturating_sub(1);
            if process.threads == 0 {
                self.processes.remove(&thread.pid);
            }
        }
    }

    /// Creates the new thread of a clone-family exit, from whichever side arrives first.
    fn clone_exit(&mut self, event: &Event<'_>) {
        let Some((flags_at, cgroups_at, vpid_at)) = clone_layout(event.kind) else { return };
        let Some(result) = event.signed(0) else { return };
        let container = cgroups_at.and_then(|index| event.param(index)).and_then(|cgroups| self.container_of(cgroups));
        let vpid = vpid_at.and_then(|index| event.signed(index));
        if result == 0 {
            // The child's side: the event's thread is the child, with its own pid and parent.
            let child = event.tid;
            if let Some(thread) = self.threads.get_mut(&child) {
                // Created by the parent's side; the child's cgroups are the authority.
                if let Some(container) = container {
                    thread.container = container;
                    if let Some(process) = self.processes.get_mut(&child) {
                        process.container = container;
                    }
                }
                return;
            }
            let pid = event.signed(4).map_or(child, |pid| pid as u64);
            let parent = event.signed(5).map_or(child, |ptid| ptid as u64);
            self.spawn(child, pid, parent, container, vpid);
        } else if result > 0 && !self.threads.contains_key(&(result as u64)) {
            // The parent's side came first: its parameters describe the parent.
            let child = result as u64;
            let parent_pid = self.threads.get(&event.tid).map_or(event.tid, |thread| thread.pid);
            let shares_pid = event.unsigned(flags_at).is_some_and(|flags| flags & PPM_CL_CLONE_THREAD != 0);
            self.spawn(child, if shares_pid { parent_pid } else { child }, event.tid, None, None);
        }
    }

    fn spawn(&mut self, tid: u64, pid: u64, parent_tid: u64, container: Option<u32>, vpid: Option<i64>) {
        let parent_pid = self.threads.get(&parent_tid).map_or(parent_tid, |thread| thread.pid);
        let parent = self.processes.get(&parent_pid);
        let container = container.or(parent.map(|process| process.container)).unwrap_or(HOST);
        // fork copies the parent's fd table and working directory; a new thread shares them.
        let forked = if self.processes.contains_key(&pid) { None } else { parent.cloned() };
        let process = self.processes.entry(pid).or_insert_with(|| {
            let mut process = forked.unwrap_or_else(|| Process::new(container));
            process.threads = 0;
            process.running_before = None;
            process.container = container;
            process.vpid = vpid.unwrap_or(0);
            process
        });
        process.threads += 1;
        self.threads.insert(tid, Thread::new(pid, container));
    }

    /// What an exit changes besides the count, and the program or library it ran, if any.
    fn effects(&mut self, event: &Event<'_>, enter: Option<Pending>) -> Option<FileUse> {
        let result = event.signed(0)?;
        let thread = self.threads.get_mut(&event.tid).expect("the thread of an event exists");
        let pid = thread.pid;
        let args = std::mem::take(&mut thread.args);
        // The enter's arguments, if this exit's enter was seen and carried any.
        let enter = enter.filter(|enter| enter.kind == args.kind).map(|_| &args);
        let mut file = None;
        match event.kind {
            kind if result >= 0 && kinds::OPEN_XS.contains(&kind) => self.opened(event, enter, pid, result),
            kinds::CLOSE_X if result == 0 => {
                if let (Some(fd), Some(process)) =
                    (event.signed(1).or(enter.and_then(|enter| enter.int(0))), self.processes.get_mut(&pid))
                {
                    process.fds.remove(&fd);
                }
            }
            kinds::CLOSE_RANGE_X if result == 0 => self.close_range(event, pid),
            kinds::DUP_X | kinds::DUP_1_X | kinds::DUP2_X | kinds::DUP3_X if result >= 0 => {
                let cloexec =
                    event.kind == kinds::DUP3_X && event.unsigned(3).is_some_and(|flags| flags & PPM_O_CLOEXEC != 0);
                let old = event.signed(1).or(enter.and_then(|enter| enter.int(0)));
                if let (Some(old), Some(process)) = (old, self.processes.get_mut(&pid)) {
                    process.duplicate(old, result, cloexec);
                }
            }
            kinds::FCNTL_X if result >= 0 => {
                let command = event.signed(2).or(enter.and_then(|enter| enter.int(1)));
                let old = event.signed(1).or(enter.and_then(|enter| enter.int(0)));
                if let (Some(command @ (PPM_FCNTL_F_DUPFD | PPM_FCNTL_F_DUPFD_CLOEXEC)), Some(old), Some(process)) =
                    (command, old, self.processes.get_mut(&pid))
                {
                    process.duplicate(old, result, command == PPM_FCNTL_F_DUPFD_CLOEXEC);
                }
            }
            kinds::MMAP_X | kinds::MMAP2_X if !(-4095..0).contains(&result) => file = self.mapped(event, enter, pid),
            kinds::CHDIR_X if result == 0 => {
                if let (Some(target), Some(process)) = (event.text(1), self.processes.get_mut(&pid)) {
                    process.cwd = Rc::from(resolve(&process.cwd, target));
                }
            }
            kinds::FCHDIR_X if result == 0 => {
                let fd = event.signed(1).or(enter.and_then(|enter| enter.int(0)));
                if let Some(process) = self.processes.get_mut(&pid)
                    && let Some(target) = fd.and_then(|fd| process.fd_path(fd)).cloned()
                {
                    process.cwd = target;
                }
            }
            kind if result == 0 && kinds::EXEC_X.contains(&kind) => file = self.executed(event, enter),
            _ => {}
        }
        if let Some(thread) = self.threads.get_mut(&event.tid) {
            thread.args = args;
        }
        file
    }

    fn opened(&mut self, event: &Event<'_>, enter: Option<&EnterArgs>, pid: u64, fd: i64) {
        let from_enter = |index: usize| enter.and_then(|enter| enter.int(index));
        let enter_path = enter.and_then(EnterArgs::path);
        let (dirfd, name, flags) = match event.kind {
            kinds::OPEN_X => (None, event.text(1).or(enter_path), event.signed(2).or(from_enter(1))),
            kinds::CREAT_X => (None, event.text(1).or(enter_path), None),
            kinds::OPENAT_X => (from_enter(0), enter_path, from_enter(2)),
            kinds::OPEN_BY_HANDLE_AT_X => (None, event.text(3), event.signed(2)),
            _ => (event.signed(1).or(from_enter(0)), event.text(2).or(enter_path), event.signed(3).or(from_enter(2))),
        };
        let (Some(name), Some(process)) = (name, self.processes.get_mut(&pid)) else { return };
        let path = process.resolve_at(dirfd, name);
        let cloexec = flags.is_some_and(|flags| flags as u64 & PPM_O_CLOEXEC != 0);
        process.fds.insert(fd, FdFile { path: Rc::from(path), cloexec });
    }

    fn close_range(&mut self, event: &Event<'_>, pid: u64) {
        let (Some(first), Some(last)) = (event.signed(1), event.unsigned(2)) else { return };
        let Some(process) = self.processes.get_mut(&pid) else { return };
        let in_range = |fd: &i64| *fd >= first && (*fd as u64) <= last;
        if event.unsigned(3).is_some_and(|flags| flags & CLOSE_RANGE_CLOEXEC != 0) {
            process.fds.iter_mut().filter(|(fd, _)| in_range(fd)).for_each(|(_, file)| file.cloexec = true);
        } else {
            process.fds.retain(|fd, _| !in_range(fd));
        }
    }

    /// An mmap with `PROT_EXEC` of a file: a library (or other code) the process runs.
    fn mapped(&mut self, event: &Event<'_>, enter: Option<&EnterArgs>, pid: u64) -> Option<FileUse> {
        let prot = event.unsigned(6).or(enter.and_then(|enter| enter.int(2)).map(|prot| prot as u64))?;
        let fd = event.signed(8).or(enter.and_then(|enter| enter.int(4)))?;
        if prot & PPM_PROT_EXEC == 0 || fd < 0 {
            return None;
        }
        let process = self.processes.get(&pid)?;
        let Some(path) = process.fd_path(fd) else {
            self.stats.exec_maps_unknown_fd += 1;
            return None;
        };
        Some(FileUse {
            kind: FileKind::Library,
            container: process.container,
            path: String::from_utf8_lossy(path).into_owned(),
            pid: pid as u32,
            comm: process.comm.to_string(),
        })
    }

    /// A successful exec: a new program in the process, maybe in a new container.
    fn executed(&mut self, event: &Event<'_>, enter: Option<&EnterArgs>) -> Option<FileUse> {
        let tid = event.tid;
        let pid = event.signed(4).map_or(self.threads[&tid].pid, |pid| pid as u64);
        let has_comm = !matches!(event.kind, 13 | 155 | 173);
        let container = match event.kind {
            231 | 283 | 289 | 293 | kinds::EXECVEAT_X => event.param(14).and_then(|cgroups| self.container_of(cgroups)),
            _ => None,
        };
        let process = self.processes.get_mut(&pid)?;
        if let Some(cwd) = event.text(6) {
            process.cwd = Rc::from(cwd);
        }
        let (path, from_argv0) = exec_path(event, enter, process);
        if let Some(container) = container {
            process.container = container;
        }
        process.comm = match event.text(13).filter(|_| has_comm) {
            Some(comm) => Rc::from(String::from_utf8_lossy(comm).as_ref()),
            None => Rc::from(path.rsplit('/').next().unwrap_or_default()),
        };
        process.fds.retain(|_, file| !file.cloexec);
        process.running_before = None;
        let (container, comm, vpid) = (process.container, process.comm.to_string(), process.vpid);
        if let Some(thread) = self.threads.get_mut(&tid) {
            thread.container = container;
        }
        let aggregate = &mut self.containers[container as usize];
        if from_argv0 {
            aggregate.argv0_only.push(path.clone());
        }
        if vpid == 1 {
            aggregate.command = command_line(event.text(1).unwrap_or_default(), event.param(2).unwrap_or_default());
        }
        Some(FileUse { kind: FileKind::Executable, container, path, pid: pid as u32, comm })
    }
}

/// A program exec'd or a file mapped executable, to record once its syscall is counted.
struct FileUse {
    kind: FileKind,
    container: u32,
    path: String,
    pid: u32,
    comm: String,
}

enum FileKind {
    Executable,
    Library,
}

/// The thread a syscall is counted for.
#[derive(Clone, Copy)]
struct Actor {
    container: u32,
    pid: u64,
    /// The thread came from the process list and has not been counted before.
    announce: bool,
}

impl Actor {
    fn of(thread: &mut Thread) -> Actor {
        Actor { container: thread.container, pid: thread.pid, announce: std::mem::take(&mut thread.announce) }
    }
}

/// The pending enter, and the arguments old exits lack into `args` for the types that have them.
fn capture_enter(event: &Event<'_>, container: u32, args: &mut EnterArgs) -> Pending {
    let sys = match event.kind {
        GENERIC_E => names::of_generic(event.unsigned(0), event.unsigned(1)),
        kind => names::of_event(kind),
    };
    let pending = Pending { kind: event.kind, ts: event.ts, sys, container };
    let (ints, path_at) = match event.kind {
        kinds::OPEN_E | kinds::CREAT_E | kinds::EXECVE_18_E | kinds::EXECVE_19_E => (2, Some(0)),
        kinds::OPENAT_E | kinds::OPENAT_2_E | kinds::OPENAT2_E | kinds::EXECVEAT_E => (3, Some(1)),
        kinds::MMAP_E | kinds::MMAP2_E => (5, None),
        kinds::CLOSE_E
        | kinds::FCHDIR_E
        | kinds::DUP_E
        | kinds::DUP_1_E
        | kinds::DUP2_E
        | kinds::DUP3_E
        | kinds::FCNTL_E
        | kinds::KILL_E
        | kinds::IOCTL_2_E => (2, None),
        kinds::SOCKET_E | kinds::TGKILL_E | kinds::IOCTL_3_E | kinds::MPROTECT_E => (3, None),
        _ => return pending,
    };
    args.kind = event.kind;
    for (index, slot) in args.ints.iter_mut().enumerate() {
        *slot = if index < ints { event.signed(index) } else { None };
    }
    args.path.clear();
    if let Some(text) = path_at.and_then(|index| event.text(index)) {
        args.path.extend_from_slice(text);
    }
    pending
}

/// Where the flags, cgroups and vpid of a clone-family exit are, by event type.
fn clone_layout(kind: u16) -> Option<(usize, Option<usize>, Option<usize>)> {
    match kind {
        15 => Some((8, None, None)),
        157 | 183 | 185 => Some((13, None, None)),
        217 | 219 | 221 => Some((14, None, None)),
        223 | 225 | 227 | 335 => Some((15, Some(14), Some(19))),
        _ => None,
    }
}

/// The executable of a successful exec, in libsinsp's order of preference, and whether it is
/// only argv[0] (old drivers record no path at all).
fn exec_path(event: &Event<'_>, enter: Option<&EnterArgs>, process: &Process) -> (String, bool) {
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let trusted = match event.kind {
        kinds::EXECVE_19_X | kinds::EXECVEAT_X => event.text(27),
        _ => None,
    };
    let filename = if event.kind == kinds::EXECVE_19_X { event.text(30) } else { None };
    if let Some(path) = trusted.or(filename) {
        return (lossy(&resolve(&process.cwd, path)), false);
    }
    match enter {
        Some(enter) if matches!(enter.kind, kinds::EXECVE_18_E | kinds::EXECVE_19_E) && enter.path().is_some() => {
            return (lossy(&resolve(&process.cwd, &enter.path)), false);
        }
        Some(enter) if enter.kind == kinds::EXECVEAT_E => {
            let dirfd = enter.int(0);
            if enter.int(2).is_some_and(|flags| flags & PPM_EXVAT_AT_EMPTY_PATH != 0) {
                if let Some(path) = dirfd.and_then(|fd| process.fd_path(fd)) {
                    return (lossy(path), false);
                }
            } else if let Some(path) = enter.path() {
                return (lossy(&process.resolve_at(dirfd, path)), false);
            }
        }
        _ => {}
    }
    (lossy(event.text(1).unwrap_or(b"<unknown>")), true)
}

/// argv as a list from argv[0] and the NUL-separated rest.
fn command_line(exe: &[u8], args: &[u8]) -> Vec<String> {
    let rest = args.split(|&byte| byte == 0).filter(|arg| !arg.is_empty());
    std::iter::once(exe).chain(rest).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scap::event::EventLayout;
    use crate::scap::names::{KernelName, kernel_name};
    use crate::scap::testing::{decode, event_body};
    use crate::trace::{MarkerSpec, Phase};

    const V2: EventLayout = EventLayout { v2: true, flags: false, large: false };
    const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn int(value: i64) -> Vec<u8> {
        value.to_le_bytes().to_vec()
    }

    fn text(value: &str) -> Vec<u8> {
        [value.as_bytes(), b"\0"].concat()
    }

    struct Feed {
        importer: Importer,
        ts: u64,
    }

    impl Feed {
        fn new() -> Feed {
            Feed { importer: Importer::new(Plan::new(&MarkerSpec::Auto).unwrap(), Focus::All), ts: 1_000 }
        }

        /// Feeds one event of thread `tid`; empty parameters stand for absent ones.
        fn event(&mut self, kind: u16, tid: u64, params: &[Vec<u8>]) -> &mut Feed {
            self.ts += 10;
            let params: Vec<&[u8]> = params.iter().map(Vec::as_slice).collect();
            let body = event_body(kind, tid, self.ts, &params);
            self.importer.on_event(&decode(&body, V2));
            self
        }

        /// A successful execve of `path` by `tid` (exit-only layout), with optional cgroups.
        fn exec(&mut self, tid: u64, path: &str, cgroups: &str) -> &mut Feed {
            let mut params = vec![int(0), text("prog"), Vec::new(), int(tid as i64), int(tid as i64), int(1)];
            params.resize(14, Vec::new());
            params.push(cgroups.as_bytes().to_vec());
            params.resize(27, Vec::new());
            params.push(text(path));
            self.event(kinds::EXECVE_19_X, tid, &params)
        }

        fn process(&self, pid: u64) -> &Process {
            &self.importer.processes[&pid]
        }

        fn fd(&self, pid: u64, fd: i64) -> Option<(String, bool)> {
            let file = self.process(pid).fds.get(&fd)?;
            Some((String::from_utf8_lossy(&file.path).into_owned(), file.cloexec))
        }

        fn aggregate(&self, id: &str) -> &ContainerAgg {
            self.importer.containers.iter().find(|aggregate| aggregate.id == id).unwrap()
        }

        /// (name, exits, lone enters) per syscall of a container's init phase, by name.
        fn counts(&self, id: &str) -> Vec<(&'static str, u64, u64)> {
            let counters = self.aggregate(id).counters(Phase::Init).unwrap();
            counters
                .iter()
                .map(|(sys, stat)| match kernel_name(sys) {
                    KernelName::Native(name) | KernelName::Compat(name) | KernelName::Not(name) => {
                        (name, stat.exits, stat.enters)
                    }
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        }
    }

    #[test]
    fn fd_tables_follow_open_dup_fcntl_close_and_exec() {
        let mut feed = Feed::new();
        feed.event(kinds::CHDIR_X, 10, &[int(0), text("/opt")]);
        let cloexec = PPM_O_CLOEXEC as i64;
        let openat = |fd: i64, name: &str| vec![int(fd), int(AT_FDCWD_PARAM), text(name), int(cloexec)];
        feed.event(kinds::OPENAT_2_X, 10, &openat(5, "lib/../lib/libfoo.so"));
        assert_eq!(feed.fd(10, 5), Some(("/opt/lib/libfoo.so".into(), true)));
        feed.event(kinds::DUP2_X, 10, &[int(7), int(5), int(7)]);
        feed.event(kinds::FCNTL_X, 10, &[int(9), int(5), int(PPM_FCNTL_F_DUPFD_CLOEXEC), int(0)]);
        assert_eq!(
            (feed.fd(10, 7), feed.fd(10, 9)),
            (Some(("/opt/lib/libfoo.so".into(), false)), Some(("/opt/lib/libfoo.so".into(), true)))
        );
        feed.event(kinds::CLOSE_X, 10, &[int(0), int(5)]);
        assert_eq!(feed.fd(10, 5), None);
        let mmap = |fd: i64, prot: i64| {
            vec![
                int(0x7f00_0000_0000),
                vec![0; 4],
                vec![0; 4],
                vec![0; 4],
                int(0),
                int(4096),
                int(prot),
                int(2),
                int(fd),
                int(0),
            ]
        };
        feed.event(kinds::MMAP_X, 10, &mmap(7, 1)); // read-only: data, not code
        assert!(feed.aggregate("host").libraries.is_empty());
        feed.event(kinds::MMAP_X, 10, &mmap(7, 5));
        feed.exec(10, "/opt/bin/prog", "");
        assert_eq!((feed.fd(10, 7).is_some(), feed.fd(10, 9)), (true, None), "exec closes the close-on-exec fd only");
        feed.event(kinds::MMAP_X, 10, &mmap(9, 5));
        assert_eq!(feed.importer.stats.exec_maps_unknown_fd, 1);
        let host = feed.aggregate("host");
        let libraries: Vec<&str> = host.libraries.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(libraries, ["/opt/lib/libfoo.so"]);
        assert_eq!(host.executables[0].path, "/opt/bin/prog");
        assert_eq!(feed.importer.stats.unknown_threads, 1, "thread 10 was never introduced");
    }

    #[test]
    fn old_exits_take_their_arguments_from_the_enter() {
        let mut feed = Feed::new();
        feed.exec(20, "/bin/cat", "");
        feed.event(kinds::OPENAT_E, 20, &[int(AT_FDCWD_PARAM), text("/lib/libc.so.6"), int(0), int(0)]);
        feed.event(kinds::OPENAT_X, 20, &[int(3)]);
        feed.event(kinds::MMAP_E, 20, &[int(0), int(8192), int(5), int(2), int(3), int(0)]);
        feed.event(kinds::MMAP_X, 20, &[int(0x7f00_0000_0000), vec![0; 4], vec![0; 4], vec![0; 4]]);
        feed.event(kinds::CLOSE_E, 20, &[int(3)]);
        feed.event(kinds::CLOSE_X, 20, &[int(0)]);
        assert_eq!(feed.fd(20, 3), None);
        let libraries: Vec<&str> = feed.aggregate("host").libraries.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(libraries, ["/lib/libc.so.6"]);
        assert_eq!(feed.counts("host"), [("close", 1, 0), ("execve", 1, 0), ("mmap", 1, 0), ("openat", 1, 0)]);
    }

    #[test]
    fn clones_inherit_from_whichever_side_arrives_first() {
        let mut feed = Feed::new();
        let cgroups = format!("cpu=/docker/{CONTAINER}");
        feed.exec(30, "/usr/sbin/nginx", &cgroups);
        feed.event(kinds::OPENAT_2_X, 30, &[int(4), int(AT_FDCWD_PARAM), text("/etc/nginx.conf"), int(0)]);
        // The parent's side first: the child (31) exists before its own exit arrives.
        let mut parent_side = vec![int(31), text("nginx"), Vec::new(), int(30), int(30), int(1)];
        parent_side.resize(15, Vec::new());
        parent_side.push(int(0)); // flags: a new process
        feed.event(223, 30, &parent_side);
        feed.event(kinds::CLOSE_X, 31, &[int(0), int(4)]);
        assert_eq!((feed.fd(30, 4).is_some(), feed.fd(31, 4)), (true, None), "the child closed its copy");
        // The child's side of another clone, first, with the cgroups of another container.
        let other = format!("cpu=/docker/{}", "f".repeat(64));
        let mut child_side = vec![int(0), text("nginx"), Vec::new(), int(32), int(32), int(30)];
        child_side.resize(14, Vec::new());
        child_side.push(other.into_bytes());
        child_side.push(int(0));
        feed.event(223, 32, &child_side);
        assert_eq!(feed.importer.threads[&31].container, feed.importer.threads[&30].container);
        assert_eq!(feed.aggregate("ffffffffffff").events, 1);
        assert_eq!(feed.fd(32, 4), Some(("/etc/nginx.conf".into(), false)), "fork copies the fd table");
        assert_eq!(feed.importer.stats.unknown_threads, 0, "an exec exit introduces its thread");
        assert_eq!(feed.counts("0123456789ab"), [("clone", 1, 0), ("close", 1, 0), ("execve", 1, 0), ("openat", 1, 0)]);
    }

    #[test]
    fn lone_enters_count_when_no_exit_can_follow() {
        let mut feed = Feed::new();
        feed.event(kinds::OPEN_E, 40, &[text("/etc/hosts"), int(0), int(0)]);
        feed.event(kinds::MMAP_E, 40, &[int(0), int(8192), int(3), int(2), int(-1), int(0)]); // OPEN_X lost
        feed.event(GENERIC_E, 40, &[296u16.to_le_bytes().to_vec(), 158u16.to_le_bytes().to_vec()]);
        feed.event(kinds::PROCEXIT_1_E, 40, &[int(0), int(0), vec![0], vec![0], int(0)]);
        feed.event(GENERIC_E, 41, &[0u16.to_le_bytes().to_vec(), 231u16.to_le_bytes().to_vec()]);
        feed.importer.flush_pending();
        assert_eq!(feed.counts("host"), [("arch_prctl", 0, 1), ("exit_group", 0, 1), ("mmap", 0, 1), ("open", 0, 1)]);
        assert!(!feed.importer.threads.contains_key(&40) && !feed.importer.processes.contains_key(&40));
    }

    #[test]
    fn exits_that_carry_narrowable_arguments_keep_their_values_and_those_that_do_not_are_counted_apart() {
        const SOCKET_X: u16 = 19;
        const KILL_X: u16 = 129;
        let u32_param = |value: u32| value.to_le_bytes().to_vec();
        let mut feed = Feed::new();
        let sock_cloexec = 0x80000;
        feed.event(SOCKET_X, 50, &[int(3), u32_param(2), u32_param(1 | sock_cloexec), u32_param(0), u32_param(0)]);
        feed.event(SOCKET_X, 50, &[int(4), u32_param(1), u32_param(2), u32_param(0), u32_param(0)]);
        feed.event(KILL_X, 50, &[int(0), int(1), vec![15]]);
        // An exit as drivers before libs 0.22 wrote it: the signal was in the enter.
        feed.event(KILL_X, 50, &[int(0)]);
        let counters = feed.aggregate("host").counters(Phase::Init).unwrap();
        let socket = counters.args(names::of_event(SOCKET_X)).unwrap();
        assert_eq!(socket.calls, 2);
        assert_eq!(socket.values[&0], [1, 2].into());
        assert_eq!(socket.values[&1], [2, u64::from(1 | sock_cloexec)].into(), "masked when the trace is made");
        let kill = counters.args(names::of_event(KILL_X)).unwrap();
        assert_eq!((kill.calls, kill.values[&1].len()), (1, 1), "one of the two calls carried its signal");
        assert_eq!(feed.counts("host"), [("kill", 2, 0), ("socket", 2, 0)]);
    }

    /// `PPM_AT_FDCWD` as the driver writes it.
    const AT_FDCWD_PARAM: i64 = -100;
}
