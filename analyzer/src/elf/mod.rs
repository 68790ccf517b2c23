//! Static analysis of one x86-64 ELF file into a [`ModuleSummary`]: its functions, the syscalls
//! each one issues (numbers recovered by value analysis, wrappers such as `syscall()` recognised
//! by the argument their number comes from), its calls, its function pointers and its
//! pointer-bearing data.
//!
//! This module owns ELF loading (`object`, including packed RELR relocations), function starts
//! (`.eh_frame` via `gimli`, symbols), PLT/GOT import mapping, symbol versions, `DT_NEEDED`/
//! `RUNPATH`/`PT_INTERP`, init/fini arrays, IFUNC, recursive-descent decoding (`iced-x86`) and
//! the per-function value analysis, plus the build-id keyed summary cache. It does no linking:
//! references to other files stay symbolic until `callgraph` resolves them like the loader.
//! It reads bytes given to it and does no other IO (the cache aside).

#[cfg(test)]
pub(crate) mod assembler;
mod cache;
mod cfg;
mod data;
mod funcs;
mod image;
mod module;
mod plt;
mod relocs;
mod summary;
mod values;

pub use cache::{Cache, default_cache_dir};
pub use module::{Continuation, call_returning_to, continuation};
pub use summary::{
    ArgLoc, ArgValue, Call, DataObject, Export, FORMAT, Function, Import, IndirectSite, ModuleKind, ModuleSummary,
    Reason, Ref, Site, SiteNumber,
};

/// Why a file could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("unsupported ELF: {0}")]
    Unsupported(String),
    #[error("malformed ELF: {0}")]
    Malformed(String),
}

/// Analyses an ELF file's bytes.
pub fn analyze(bytes: &[u8]) -> Result<ModuleSummary, ElfError> {
    let _pages = SmallPages::new();
    module::analyze(bytes)
}

/// Files being analysed, and whether transparent huge pages were off before the first began.
static ANALYSING: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// Transparent huge pages off for the process while any file is analysed, as they were before
/// once the last analysis ends. The allocator asks for huge pages, and where the host's memory
/// is fragmented the kernel compacts memory at a fault to make one: a cold analysis of nginx's
/// files interleaved with `objdump` spent 0.03–0.5 s in the kernel with them (median 0.26 s of
/// 0.74 s), 0.07–0.12 s without (0.10 of 0.58 s). Loading cached summaries keeps them: it
/// allocates in a few large pieces.
struct SmallPages;

impl SmallPages {
    fn new() -> SmallPages {
        let mut analysing = ANALYSING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if analysing.0 == 0 {
            // SAFETY: these prctl options read and set a flag of this process, nothing else.
            analysing.1 = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } == 1;
            // A kernel without the option keeps huge pages: only slower.
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        }
        analysing.0 += 1;
        SmallPages
    }
}

impl Drop for SmallPages {
    fn drop(&mut self) {
        let mut analysing = ANALYSING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        analysing.0 -= 1;
        if analysing.0 == 0 && !analysing.1 {
            // SAFETY: as in `new`.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
        }
    }
}

/// What the loader needs from a file before anything is analysed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependencies {
    pub kind: ModuleKind,
    pub soname: Option<String>,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// Reads the dynamic section and `PT_INTERP` only (cheap: no decoding).
pub fn dependencies(bytes: &[u8]) -> Result<Dependencies, ElfError> {
    let image = image::Image::parse(bytes)?;
    let dynamic = &image.dynamic;
    Ok(Dependencies {
        kind: image.kind,
        soname: dynamic.soname.clone(),
        interp: image.interp(),
        needed: dynamic.needed.clone(),
        rpath: dynamic.rpath.clone(),
        runpath: dynamic.runpath.clone(),
    })
}

/// The NUL-terminated string at `addr` in the file's loaded sections.
pub fn string_at(bytes: &[u8], addr: u64) -> Option<String> {
    image::Image::parse(bytes).ok()?.cstr_at(addr)
}

/// The key summaries are cached under: the GNU build-id, or a digest of the bytes.
pub fn identity(bytes: &[u8]) -> Result<String, ElfError> {
    let image = image::Image::parse(bytes)?;
    Ok(match image.build_id() {
        Some(id) => id,
        None => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(bytes);
            format!("sha256:{}", digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
        }
    })
}

/// Functions that register code to run later, by symbol name, with the argument (0-based) that
/// names it: `main` for `__libc_start_main`, signal handlers, thread start routines, exit
/// handlers.
pub const REGISTRARS: &[(&str, u8)] = &[
    ("__libc_start_main", 0),
    ("sigaction", 1),
    ("__sigaction", 1),
    ("__libc_sigaction", 1),
    ("signal", 1),
    ("ssignal", 1),
    ("bsd_signal", 1),
    ("sysv_signal", 1),
    ("__sysv_signal", 1),
    ("sigset", 1),
    ("pthread_create", 2),
    ("atexit", 0),
    ("__cxa_atexit", 0),
    ("on_exit", 0),
    ("at_quick_exit", 0),
    ("__cxa_at_quick_exit", 0),
    ("__cxa_thread_atexit_impl", 0),
];

/// Functions that never return, by symbol name. Calls to them end a path: the bytes after such a
/// call are often the next function, or padding.
pub const NORETURN: &[&str] = &[
    "exit",
    "_exit",
    "_Exit",
    "abort",
    "quick_exit",
    "__stack_chk_fail",
    "__stack_chk_fail_local",
    "__assert_fail",
    "__assert_perror_fail",
    "__fortify_fail",
    "__chk_fail",
    "__libc_fatal",
    "__libc_start_main",
    "longjmp",
    "_longjmp",
    "siglongjmp",
    "__longjmp_chk",
    "pthread_exit",
    "err",
    "errx",
    "verr",
    "verrx",
    "__cxa_throw",
    "__cxa_rethrow",
    "_Unwind_Resume",
    "_ZSt9terminatev",
];
