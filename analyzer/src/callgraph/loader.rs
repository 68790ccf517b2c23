//! Which files make up each process, found the way `ld.so` finds them: the executable, then
//! `DT_NEEDED` breadth-first (`DT_RPATH`, `DT_RUNPATH` with `$ORIGIN`, `/etc/ld.so.conf`, the
//! default directories), skipping files of the wrong class. Libraries the trace saw mapped but
//! no `DT_NEEDED` closure contains were `dlopen`ed. Once every file is found, their summaries are
//! made (from the cache, or analysed) on the thread pool, the largest file first.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc;

use crate::docker::rootfs::Rootfs;
use crate::elf::{self, Cache, ElfError, ModuleSummary};

/// One file of the container, analysed.
pub struct Module {
    /// The canonical path inside the container.
    pub path: String,
    pub summary: ModuleSummary,
    pub bytes: Vec<u8>,
    pub cached: bool,
}

/// One program as the loader lays it out.
pub struct Process {
    /// The path the trace (or the user) gave.
    pub name: String,
    pub exe: usize,
    /// Global scope in load order: the executable, then `DT_NEEDED` breadth-first.
    pub scope: Vec<usize>,
    /// Mapped without being in the scope: `dlopen`ed, in the order seen.
    pub dlopened: Vec<usize>,
    pub interp: Option<usize>,
}

/// Every analysed file, by index.
#[derive(Default)]
pub struct Store {
    pub modules: Vec<Module>,
}

impl Drop for Store {
    /// Freeing every summary and file takes the caller a tenth of a warm analysis: it is done on
    /// the thread pool instead, and not at all when the process ends first.
    fn drop(&mut self) {
        let modules = std::mem::take(&mut self.modules);
        rayon::spawn(move || drop(modules));
    }
}

/// A file found for the loader.
struct Found {
    path: String,
    bytes: Arc<Vec<u8>>,
    deps: elf::Dependencies,
}

/// A summary as the cache gives it: whether it was cached, and a cache write error to report.
type Summarised = Result<(ModuleSummary, bool, Option<std::io::Error>), ElfError>;

/// Lays out the processes of `executables` (container paths), with `mapped` the libraries a trace
/// saw. Problems that do not stop the analysis are appended to `warnings`.
pub(crate) fn load(
    rootfs: &Rootfs,
    cache: &Cache,
    executables: &[String],
    mapped: &[String],
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Store, Vec<Process>)> {
    let (sender, summaries) = mpsc::channel::<(usize, Summarised)>();
    let mut loader = Loader { rootfs, files: Vec::new(), by_path: HashMap::new(), conf_dirs: conf_dirs(rootfs) };
    let layouts = lay_out(&mut loader, executables, mapped, warnings);
    let files = loader.files;
    // Largest file first: a thread waiting inside one file's parallel loop takes up whole other
    // files, and a large one taken up last finishes alone (libcrypto after everything else).
    let mut by_size: Vec<usize> = (0..files.len()).collect();
    by_size.sort_by_key(|&index| std::cmp::Reverse(files[index].bytes.len()));
    // The scope returns once every summary started in it is made.
    rayon::in_place_scope(|scope| {
        for index in by_size {
            let (sender, bytes) = (sender.clone(), files[index].bytes.clone());
            // The receiver outlives the scope.
            scope.spawn(move |_| drop(sender.send((index, cache.summary(&bytes)))));
        }
    });
    drop(sender);
    let mut made: Vec<Option<Summarised>> = files.iter().map(|_| None).collect();
    for (index, summary) in summaries {
        made[index] = Some(summary);
    }
    let store = collect(files, made, warnings)?;
    Ok((store, layouts))
}

/// The processes of `executables`, each with what it `dlopen`ed of `mapped`.
fn lay_out(
    loader: &mut Loader<'_>,
    executables: &[String],
    mapped: &[String],
    warnings: &mut Vec<String>,
) -> Vec<Process> {
    let mut mapped_paths = Vec::new();
    for path in mapped {
        match loader.file(path) {
            Ok(index) => mapped_paths.push(index),
            Err(err) => warnings.push(format!("mapped library {path} is not analysed: {err:#}")),
        }
    }
    let mut layouts = Vec::new();
    for name in executables {
        match loader.process(name, warnings) {
            Ok(layout) => layouts.push(layout),
            Err(err) => warnings.push(format!("{name} is not analysed: {err:#}")),
        }
    }
    let in_scope: HashSet<usize> = layouts.iter().flat_map(|layout: &Process| layout.scope.iter().copied()).collect();
    for layout in &mut layouts {
        let mut dlopened: Vec<usize> = mapped_paths.iter().copied().filter(|index| !in_scope.contains(index)).collect();
        let closure = loader.closure(&dlopened, layout.exe, warnings);
        for index in closure {
            if !in_scope.contains(&index) && !dlopened.contains(&index) {
                dlopened.push(index);
            }
        }
        layout.dlopened = dlopened;
    }
    layouts
}

struct Loader<'a> {
    rootfs: &'a Rootfs,
    files: Vec<Found>,
    by_path: HashMap<String, usize>,
    conf_dirs: Vec<String>,
}

impl Loader<'_> {
    /// Reads and indexes the ELF file at `path`.
    fn file(&mut self, path: &str) -> anyhow::Result<usize> {
        let canonical = self.rootfs.resolve(path)?;
        if let Some(&index) = self.by_path.get(&canonical) {
            return Ok(index);
        }
        let (canonical, bytes) = self.rootfs.read(&canonical)?;
        let deps = elf::dependencies(&bytes).map_err(|err| anyhow::anyhow!("{canonical}: {err}"))?;
        let index = self.files.len();
        let bytes = Arc::new(bytes);
        self.files.push(Found { path: canonical.clone(), bytes, deps });
        self.by_path.insert(canonical, index);
        Ok(index)
    }

    /// The executable at `name` (through a script's `#!` interpreter) and its global scope.
    fn process(&mut self, name: &str, warnings: &mut Vec<String>) -> anyhow::Result<Process> {
        let exe = match self.file(name) {
            Ok(index) => index,
            Err(err) => match self.interpreter_of(name) {
                Some(interpreter) => {
                    warnings.push(format!("{name} is a script; its interpreter {interpreter} is analysed instead"));
                    self.file(&interpreter)?
                }
                None => return Err(err),
            },
        };
        let scope = self.closure(&[exe], exe, warnings);
        let interp = match self.files[exe].deps.interp.clone() {
            Some(interp) => match self.file(&interp) {
                Ok(index) => Some(index),
                Err(err) => {
                    warnings.push(format!("{}: interpreter {interp} not found: {err:#}", self.files[exe].path));
                    None
                }
            },
            None => None,
        };
        let mut scope = scope;
        if let Some(interp) = interp.filter(|interp| !scope.contains(interp)) {
            scope.push(interp);
        }
        Ok(Process { name: name.to_owned(), exe, scope, dlopened: Vec::new(), interp })
    }

    fn interpreter_of(&self, path: &str) -> Option<String> {
        let (_, bytes) = self.rootfs.read(path).ok()?;
        let line = bytes.strip_prefix(b"#!")?.split(|&byte| byte == b'\n').next()?;
        let text = String::from_utf8_lossy(line);
        text.split_whitespace().next().map(str::to_owned)
    }

    /// `roots` and everything they need, breadth-first, each file once.
    fn closure(&mut self, roots: &[usize], exe: usize, warnings: &mut Vec<String>) -> Vec<usize> {
        let mut order: Vec<usize> = roots.to_vec();
        let mut queue: VecDeque<usize> = roots.iter().copied().collect();
        while let Some(index) = queue.pop_front() {
            for name in self.files[index].deps.needed.clone() {
                match self.search(&name, index, exe) {
                    Some(found) if !order.contains(&found) => {
                        order.push(found);
                        queue.push_back(found);
                    }
                    Some(_) => {}
                    None => warnings.push(format!("{}: needed library {name} not found", self.files[index].path)),
                }
            }
        }
        order
    }

    /// Where `ld.so` would find `name` for the file `requester` of a process running `exe`.
    fn search(&mut self, name: &str, requester: usize, exe: usize) -> Option<usize> {
        if name.contains('/') {
            return self.file(name).ok();
        }
        if let Some(&index) = self.files.iter().position(|file| file.deps.soname.as_deref() == Some(name)).as_ref() {
            return Some(index);
        }
        let origin = |file: &Found| file.path.rsplit_once('/').map_or("/".to_owned(), |(dir, _)| dir.to_owned());
        let (req, exe_file) = (&self.files[requester], &self.files[exe]);
        let mut dirs: Vec<String> = Vec::new();
        if req.deps.runpath.is_empty() {
            dirs.extend(req.deps.rpath.iter().map(|dir| expand(dir, &origin(req))));
            if exe_file.deps.runpath.is_empty() && requester != exe {
                dirs.extend(exe_file.deps.rpath.iter().map(|dir| expand(dir, &origin(exe_file))));
            }
        }
        dirs.extend(req.deps.runpath.iter().map(|dir| expand(dir, &origin(req))));
        dirs.extend(self.conf_dirs.iter().cloned());
        dirs.extend(DEFAULT_DIRS.iter().map(|&dir| dir.to_owned()));
        for dir in dirs {
            let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
            if !self.rootfs.is_file(&candidate) {
                continue;
            }
            // A 32-bit or foreign library of the same name is skipped, as the loader does.
            if let Ok(index) = self.file(&candidate) {
                return Some(index);
            }
        }
        None
    }
}

/// The trusted directories glibc searches last on x86-64.
const DEFAULT_DIRS: &[&str] =
    &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/// `$ORIGIN`, `$LIB` and `$PLATFORM` as Debian's x86-64 loader expands them.
fn expand(dir: &str, origin: &str) -> String {
    dir.replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${LIB}", "lib/x86_64-linux-gnu")
        .replace("$LIB", "lib/x86_64-linux-gnu")
        .replace("${PLATFORM}", "x86_64")
        .replace("$PLATFORM", "x86_64")
}

/// Directories from the container's `/etc/ld.so.conf` and its `include`s.
fn conf_dirs(rootfs: &Rootfs) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut files = vec!["/etc/ld.so.conf".to_owned()];
    let mut seen = HashSet::new();
    while let Some(file) = files.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let Ok((_, bytes)) = rootfs.read(&file) else { continue };
        for line in String::from_utf8_lossy(&bytes).lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
                files.extend(glob(rootfs, pattern).into_iter().rev());
            } else if line.starts_with('/') {
                dirs.push(line.to_owned());
            }
        }
    }
    dirs
}

/// `DIR/PREFIX*SUFFIX` patterns, as `ld.so.conf` uses them.
fn glob(rootfs: &Rootfs, pattern: &str) -> Vec<String> {
    let Some((dir, file)) = pattern.rsplit_once('/') else { return Vec::new() };
    let (prefix, suffix) = file.split_once('*').unwrap_or((file, ""));
    let exact = !file.contains('*');
    rootfs
        .list(dir)
        .into_iter()
        .filter(|name| if exact { name == file } else { name.starts_with(prefix) && name.ends_with(suffix) })
        .map(|name| format!("{dir}/{name}"))
        .collect()
}

/// The store of every file with its summary, in the order the files were found.
fn collect(files: Vec<Found>, made: Vec<Option<Summarised>>, warnings: &mut Vec<String>) -> anyhow::Result<Store> {
    let mut store = Store::default();
    let mut cache_errors = Vec::new();
    for (found, summary) in files.into_iter().zip(made) {
        let summary = summary.expect("every file found had its summary made in the scope");
        let (summary, cached, cache_error) =
            summary.map_err(|err| anyhow::anyhow!("cannot analyse {}: {err}", found.path))?;
        if let Some(err) = cache_error {
            cache_errors.push(err);
        }
        // The task that made the summary has dropped its reference by now.
        let bytes = Arc::try_unwrap(found.bytes).unwrap_or_else(|shared| shared.as_ref().clone());
        store.modules.push(Module { path: found.path, summary, bytes, cached });
    }
    if let Some(err) = cache_errors.first() {
        warnings.push(format!("the summary cache could not be written ({err}); the next run analyses again"));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::elf::assembler::{self, assert_text};

    /// Links a file at `path` inside `root` (a function `_start` and nothing else), each of
    /// `needed` a file already there whose soname becomes a `DT_NEEDED` entry.
    fn file(root: &Path, path: &str, ld_args: &[&str], needed: &[&str]) {
        let host = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        let mut args: Vec<String> = ld_args.iter().map(|arg| arg.to_string()).collect();
        args.extend(needed.iter().map(|needed| root.join(needed.trim_start_matches('/')).display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = host.file_name().unwrap().to_str().unwrap().to_owned();
        assembler::link_in(host.parent().unwrap(), &name, ".globl _start\n_start: ret\n", &args);
        for leftover in ["s", "o"] {
            std::fs::remove_file(host.with_file_name(format!("{name}.{leftover}"))).unwrap();
        }
    }

    fn library(root: &Path, path: &str, soname: &str, needed: &[&str]) {
        file(root, path, &["-shared", "-soname", soname], needed);
    }

    /// Lays out `executables` with `mapped` (libraries a trace saw) over `root`, and prints each
    /// process's global scope, what it `dlopen`ed, its interpreter, then the warnings.
    fn check(root: &Path, executables: &[&str], mapped: &[&str], expect: &str) {
        let rootfs = Rootfs::dir(root).unwrap();
        let owned = |paths: &[&str]| paths.iter().map(|path| path.to_string()).collect::<Vec<_>>();
        let mut warnings = Vec::new();
        let (store, processes) =
            load(&rootfs, &Cache::disabled(), &owned(executables), &owned(mapped), &mut warnings).unwrap();
        let paths = |indices: &[usize]| indices.iter().map(|&i| store.modules[i].path.clone()).collect::<Vec<_>>();
        let mut out = String::new();
        for process in &processes {
            out.push_str(&format!("{}:\n", process.name));
            out.push_str(&format!("  scope: {}\n", paths(&process.scope).join(" ")));
            out.push_str(&format!("  dlopened: {}\n", paths(&process.dlopened).join(" ")));
            out.push_str(&format!("  interp: {}\n", paths(process.interp.as_slice()).join(" ")));
        }
        for warning in &warnings {
            out.push_str(&format!("warning: {}\n", warning.replace(&root.display().to_string(), "ROOT")));
        }
        assert_text(&out, expect);
    }

    #[test]
    fn libraries_are_found_as_ld_so_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        library(root, "/lib64/ld-linux-x86-64.so.2", "ld-linux-x86-64.so.2", &[]);
        library(root, "/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6", &[]);
        // A 32-bit libc earlier in the search order is skipped.
        std::fs::create_dir_all(root.join("usr/local/lib")).unwrap();
        let i386 = assembler::link("_start: ret\n", &["-m", "elf_i386", "-shared", "-soname", "libc.so.6"]);
        std::fs::write(root.join("usr/local/lib/libc.so.6"), i386).unwrap();
        std::fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
        std::fs::write(root.join("etc/ld.so.conf"), "include /etc/ld.so.conf.d/*.conf\n").unwrap();
        std::fs::write(root.join("etc/ld.so.conf.d/local.conf"), "# local\n/usr/local/lib\n").unwrap();
        library(root, "/usr/local/lib/libconf.so", "libconf.so", &[]);
        // `app` finds its own libraries through DT_RUNPATH, which does not apply to theirs:
        // `libown.so` does not find `libdeep.so` beside it.
        library(root, "/opt/app/lib/libdeep.so", "libdeep.so", &[]);
        library(root, "/opt/app/lib/libown.so", "libown.so", &["/opt/app/lib/libdeep.so"]);
        let interp = ["-dynamic-linker", "/lib64/ld-linux-x86-64.so.2"];
        let runpath = [&interp[..], &["--enable-new-dtags", "-rpath", "$ORIGIN/../lib"]].concat();
        let needed = ["/opt/app/lib/libown.so", "/usr/local/lib/libconf.so", "/lib/x86_64-linux-gnu/libc.so.6"];
        file(root, "/opt/app/bin/app", &runpath, &needed);
        // `old` has a DT_RPATH, which its libraries' dependencies are searched in too.
        library(root, "/opt/old/lib/libolddep.so", "libolddep.so", &[]);
        library(root, "/opt/old/lib/libold.so", "libold.so", &["/opt/old/lib/libolddep.so"]);
        let rpath = [&interp[..], &["--disable-new-dtags", "-rpath", "/opt/old/lib"]].concat();
        file(root, "/opt/old/bin/old", &rpath, &["/opt/old/lib/libold.so", "/lib/x86_64-linux-gnu/libc.so.6"]);
        // What a trace saw mapped beyond the DT_NEEDED closures was dlopen'ed, with what it needs.
        library(root, "/usr/lib/x86_64-linux-gnu/libplugdep.so", "libplugdep.so", &[]);
        library(root, "/usr/lib/x86_64-linux-gnu/plugin.so", "plugin.so", &["/usr/lib/x86_64-linux-gnu/libplugdep.so"]);
        check(
            root,
            &["/opt/app/bin/app", "/opt/old/bin/old"],
            &["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/plugin.so"],
            "
/opt/app/bin/app:
  scope: /opt/app/bin/app /opt/app/lib/libown.so /usr/local/lib/libconf.so /lib/x86_64-linux-gnu/libc.so.6 /lib64/ld-linux-x86-64.so.2
  dlopened: /usr/lib/x86_64-linux-gnu/plugin.so /usr/lib/x86_64-linux-gnu/libplugdep.so
  interp: /lib64/ld-linux-x86-64.so.2
/opt/old/bin/old:
  scope: /opt/old/bin/old /opt/old/lib/libold.so /lib/x86_64-linux-gnu/libc.so.6 /opt/old/lib/libolddep.so /lib64/ld-linux-x86-64.so.2
  dlopened: /usr/lib/x86_64-linux-gnu/plugin.so /usr/lib/x86_64-linux-gnu/libplugdep.so
  interp: /lib64/ld-linux-x86-64.so.2
warning: /opt/app/lib/libown.so: needed library libdeep.so not found
",
        );
    }
}
