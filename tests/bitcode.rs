//! `seccomp-refine bitcode`: C programs compiled by clang-19 to whole-program bitcode here, analysed
//! by the real binary, with the exact functions, library calls and syscall sites of each phase.
//!
//! The programs are built the way `cargo xtask bitcode` builds nginx and redis: every file with
//! `-O2 -Xclang -disable-llvm-passes` (so member accesses keep their struct types), linked with
//! llvm-link, then `opt -passes=mem2reg`. Each program is shaped so that a coarser analysis would
//! give a different answer: a function with the right type whose address is taken but never
//! stored where the call loads from, a table nobody reads, a field written from a parameter.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{output, seccomp_refine, stderr, stdout};

/// A small server: a handler table, callbacks in struct fields, a signal handler, a thread, an
/// exit handler, inline asm, and a serving loop that returns into `main`.
pub const SERVER: &str = r#"
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

struct route { const char *name; int (*run)(int fd); };
static int on_get(int fd) { return (int)write(fd, "get\n", 4); }
static int on_put(int fd) { return (int)syscall(SYS_fsync, fd); }
static const struct route routes[] = { { "GET", on_get }, { "PUT", on_put } };

/* Same type as the routes, address taken, never put in the table: only type-based
   resolution would reach it. */
static int on_admin(int fd) { return (int)syscall(SYS_reboot, fd, 0, 0, 0); }

struct conn {
    int fd;
    void (*on_read)(struct conn *);
    void (*on_close)(struct conn *);
};
static void read_request(struct conn *c) { routes[c->fd & 1].run(c->fd); }
static void close_conn(struct conn *c) { close(c->fd); }
/* Same type as the callbacks, never stored into a connection. */
static void drop_conn(struct conn *c) { syscall(SYS_shutdown, c->fd, 2); }

static volatile sig_atomic_t stop;
static void on_term(int sig) { stop = sig; syscall(SYS_getppid); }
static void *ticker(void *arg) { syscall(SYS_gettid); return arg; }
static void goodbye(void) { syscall(SYS_sync); }

static long raw_getpid(void) {
    long pid;
    __asm__ volatile("syscall" : "=a"(pid) : "a"(39L) : "rcx", "r11", "memory");
    return pid;
}

void keep(void *p) { (void)p; }

void serve(struct conn *c) {
    while (!stop) {
        c->on_read(c);
        if (raw_getpid() < 0) break;
    }
    c->on_close(c);
}

int main(void) {
    struct conn c = { .fd = 1 };
    pthread_t thread;
    signal(SIGTERM, on_term);
    atexit(goodbye);
    pthread_create(&thread, NULL, ticker, NULL);
    syscall(SYS_umask, 022);
    keep(on_admin);
    keep(drop_conn);
    c.on_read = read_request;
    c.on_close = close_conn;
    serve(&c);
    syscall(SYS_fdatasync, c.fd);
    return 0;
}
"#;

/// Dispatch by tables, a syscall wrapper, a library callback, and a field written from a
/// parameter (which holds what the callers pass).
const PLUGINS: &str = r#"
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef long (*op_fn)(long);
static long op_a(long x) { return syscall(SYS_getuid) + x; }
static long op_b(long x) { return syscall(SYS_getgid) + x; }
static long op_c(long x) { return syscall(SYS_geteuid) + x; }
static long op_d(long x) { return syscall(SYS_getpgrp) + x; }
static op_fn table[] = { op_a, op_b };
/* Referenced by no code: its functions never become callable. */
op_fn spare[] = { op_c };

static long my_syscall(long number) { return syscall(number); }
static int by_value(const void *a, const void *b) { syscall(SYS_getegid); return *(const int *)a - *(const int *)b; }

struct ops { int id; op_fn op; };
static void set_op(struct ops *o, op_fn f) { o->op = f; }

int main(int argc, char **argv) {
    int v[2] = { argc, 1 };
    struct ops o = { 0, 0 };
    long r = table[argc & 1](1);
    my_syscall(SYS_getpid);
    qsort(v, 2, sizeof v[0], by_value);
    set_op(&o, op_d);
    return (int)(r + o.op(2) + (argv != 0));
}
"#;

/// Callbacks in struct fields that signature matching cannot tell apart: six live functions of
/// one type `void (int)`. Each call reads a field (of a nested struct, set by a global initializer
/// or through a setter's parameter) or a parameter, and reaches exactly what was put there; only
/// the call through a pointer whose address went to external code, and the one through a library's
/// result, fall back to the type.
const CALLBACKS: &str = r#"
#include <sys/syscall.h>
#include <unistd.h>

typedef void (*handler_fn)(int);
struct timer { int id; handler_fn on_fire; };
struct io { handler_fn on_read; handler_fn on_write; };
struct loop { struct timer timer; struct io io; };

static void fire(int fd) { syscall(SYS_getuid, fd); }
static void on_read(int fd) { syscall(SYS_getgid, fd); }
static void on_write(int fd) { syscall(SYS_geteuid, fd); }
static void done(int fd) { syscall(SYS_getppid, fd); }
/* Address taken, never stored where a call reads: only the type fallbacks reach them. */
static void stale(int fd) { syscall(SYS_getegid, fd); }
static void hooked(int fd) { syscall(SYS_getpgrp, fd); }

/* A nested struct's field set by the initializer. */
static struct loop main_loop = { .io = { .on_read = on_read } };
struct hook { handler_fn fn; };
static struct hook hook = { hooked };

static void set_timer(struct timer *t, handler_fn f) { t->on_fire = f; }
static void set_writer(struct io *io, handler_fn f) { io->on_write = f; }
static void run(handler_fn f, int fd) { f(fd); }

void keep(void *p) { (void)p; }
extern handler_fn pick(int);
extern void lend(handler_fn *slot);

void serve(struct loop *l, int fd) {
    l->timer.on_fire(fd);
    l->io.on_read(fd);
    l->io.on_write(fd);
    run(done, fd);
}

void watch(int fd) { hook.fn(fd); }

int main(int argc, char **argv) {
    keep(stale);
    set_timer(&main_loop.timer, fire);
    set_writer(&main_loop.io, on_write);
    lend(&hook.fn);
    pick(argc)(argc);
    serve(&main_loop, argc + (argv != 0));
    return 0;
}
"#;

/// One generic slot that holds a handler in one object and data in another — what a linked
/// program's merged struct types look like. What `VALUE` stores into the data object decides
/// whether the call through the slot stays sharp: data proven by the callee's returns keeps the
/// slot clean; a result that may be a function pollutes it, and the call falls back to the type.
const RETURNS: &str = r#"
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef void (*handler_fn)(int);
struct slot { void *value; };

static void on_read(int fd) { syscall(SYS_getuid, fd); }
/* Address taken, never stored into a slot: only the type fallback reaches it. */
static void stale(int fd) { syscall(SYS_getegid, fd); }

void keep(void *p) { (void)p; }
extern void *lookup(const char *name);
extern void lend(void **slot);

static void *pool_alloc(unsigned long size) {
    void *p;
    if (posix_memalign(&p, 16, size) != 0)
        p = 0;
    return p;
}
static void *aligned(void *p) { return (void *)(((unsigned long)p + 15) & ~15UL); }
static void *same(void *p) { return p; }
static void *found(void) { return lookup("handler"); }
static void *borrowed(void) {
    void *p = 0;
    lend(&p);
    return p;
}

void serve(struct slot *s, int fd) { ((handler_fn)s->value)(fd); }

int main(int argc, char **argv) {
    keep(stale);
    struct slot *handler = malloc(sizeof *handler);
    struct slot *data = malloc(sizeof *data);
    handler->value = on_read;
    data->value = VALUE;
    serve(handler, argc + (argv != 0));
    return 0;
}
"#;

/// A handler table whose address goes to a library function. `QUALIFIER` decides whether the
/// library could write into it: a `const` table is read-only, so calls through it reach its
/// entries; a writable one may hold anything afterwards, and the call falls back to the type.
const TABLE: &str = r#"
#include <sys/syscall.h>
#include <unistd.h>

typedef void (*handler_fn)(int);
static void first(int fd) { syscall(SYS_getuid, fd); }
static void second(int fd) { syscall(SYS_getgid, fd); }
/* Address taken, in no table: only the type fallback reaches it. */
static void stale(int fd) { syscall(SYS_getegid, fd); }

void keep(void *p) { (void)p; }
extern void show(const void *table);

static QUALIFIER handler_fn table[] = { first, second };

void serve(int i, int fd) { table[i & 1](fd); }

int main(int argc, char **argv) {
    keep(stale);
    show(table);
    serve(argc, argc + (argv != 0));
    return 0;
}
"#;

/// A handler field whose address goes to a function of the program. `CALL` decides whether that
/// function may write a function into it: clearing, testing and passing it on to such a function
/// leave the field's writes understood; storing what a library returned (directly or through
/// another function) may put any function there, and the call falls back to the type.
const SLOTS: &str = r#"
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef void (*handler_fn)(int);
struct conn { int fd; handler_fn on_read; };

static void on_read(int fd) { syscall(SYS_getuid, fd); }
/* Address taken, never stored into a field: only the type fallback reaches it. */
static void stale(int fd) { syscall(SYS_getegid, fd); }

void keep(void *p) { (void)p; }
extern handler_fn pick(int);

static void clear(handler_fn *slot) { *slot = 0; }
static int is_set(handler_fn *slot) { return *slot != 0; }
static void reset(handler_fn *slot) { clear(slot); }
static void install(handler_fn *slot, int i) { *slot = pick(i); }
static void relay(handler_fn *slot, int i) { install(slot, i); }

void serve(struct conn *c) { c->on_read(c->fd); }

int main(int argc, char **argv) {
    keep(stale);
    struct conn *c = malloc(sizeof *c);
    c->fd = argc + (argv != 0);
    c->on_read = on_read;
    CALL;
    serve(c);
    return 0;
}
"#;

/// Two files whose structs have one layout, `{ ptr, ptr }`, which llvm-link merges into one IR
/// type: the connection's handler and the buffer's end pointer become one IR field. The buffer's
/// end is written with what a library returns (BUFFER_WRITE), which may be any function.
pub const MERGED_CONN: &str = r#"
#include <sys/syscall.h>
#include <unistd.h>

struct conn { void *data; void (*on_read)(struct conn *); };
void *make_buffer(void);
void keep(void *p) { (void)p; }

static void on_read(struct conn *c) { (void)c; syscall(SYS_getppid); }
/* Same type as the handler, address taken, never stored into a connection. */
static void stale(struct conn *c) { (void)c; syscall(SYS_getuid); }

__attribute__((noinline)) void serve(struct conn *c) { c->on_read(c); }

int main(void) {
    struct conn c = { 0, on_read };
    keep(stale);
    keep(make_buffer());
    serve(&c);
    return 0;
}
"#;

pub const MERGED_BUFFER: &str = r#"
#include <stdlib.h>

struct buf { void *start; void *end; };
/* Another view of the same memory: a union member's accesses may touch any member. */
struct shape { void *data; void (*on_read)(void *); };
union view { struct buf buf; struct shape shape; };
void *lookup(const char *name);

void *make_buffer(void) {
    struct buf *b = malloc(sizeof *b);
    b->start = 0;
    BUFFER_WRITE;
    return b;
}
"#;

/// Why bitcode cannot be built or analysed here, if it cannot.
pub fn toolchain_missing() -> Option<String> {
    if !cfg!(feature = "bitcode") {
        return Some("seccomp-refine was built without the `bitcode` feature".to_owned());
    }
    ["clang-19", "llvm-link-19", "opt-19"].iter().find_map(|tool| {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|out| out.status.success());
        (!found).then(|| format!("{tool} is missing (apt-get install clang-19 llvm-19)"))
    })
}

pub fn run_tool(cmd: &mut Command) {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", stderr(&out));
}

/// Compiles `source` the way `cargo xtask bitcode` compiles an application.
pub fn compile(dir: &Path, name: &str, source: &str) -> PathBuf {
    compile_files(dir, name, &[source])
}

/// Compiles each source as its own file and links them, as `cargo xtask bitcode` does.
pub fn compile_files(dir: &Path, name: &str, sources: &[&str]) -> PathBuf {
    let mut objects = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        let c = dir.join(format!("{name}.{index}.c"));
        std::fs::write(&c, source).unwrap();
        let object = dir.join(format!("{name}.{index}.o.bc"));
        run_tool(
            Command::new("clang-19")
                .args(["-O2", "-Xclang", "-disable-llvm-passes", "-g0", "-emit-llvm", "-c"])
                .arg(&c)
                .arg("-o")
                .arg(&object),
        );
        objects.push(object);
    }
    let linked = dir.join(format!("{name}.linked.bc"));
    let bitcode = dir.join(format!("{name}.bc"));
    run_tool(Command::new("llvm-link-19").args(&objects).arg("-o").arg(&linked));
    run_tool(Command::new("opt-19").args(["-passes=mem2reg"]).arg(&linked).arg("-o").arg(&bitcode));
    bitcode
}

fn analyse(bitcode: &Path, extra: &[&str]) -> Value {
    let out = output(seccomp_refine().arg("bitcode").arg(bitcode).arg("--json").args(extra));
    assert!(out.status.success(), "seccomp-refine bitcode failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("--json prints JSON")
}

fn keys(value: &Value) -> Vec<&str> {
    value.as_object().expect("an object").keys().map(String::as_str).collect()
}

fn names(value: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = value.as_array().expect("an array").iter().map(|name| name.as_str().unwrap()).collect();
    names.sort_unstable();
    names
}

#[test]
fn server_phases_follow_fields_handlers_and_the_serving_loop() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let analysis = analyse(&compile(dir.path(), "server", SERVER), &["--serving-entry", "serve"]);
    let (init, serving) = (&analysis["init"], &analysis["serving"]);

    let handlers = ["close_conn", "goodbye", "on_get", "on_put", "on_term", "read_request", "ticker"];
    let mut init_functions = vec!["keep", "main", "raw_getpid", "serve"];
    init_functions.extend(handlers);
    init_functions.sort_unstable();
    assert_eq!(names(&init["functions"]), init_functions, "init functions");
    // `main` is only partly in serving: the code after `serve` returns (its fdatasync).
    let mut serving_functions = vec!["raw_getpid", "serve"];
    serving_functions.extend(handlers);
    serving_functions.sort_unstable();
    assert_eq!(names(&serving["functions"]), serving_functions, "serving functions");

    assert_eq!(keys(&init["syscalls"]), ["fdatasync", "fsync", "getpid", "getppid", "gettid", "sync", "umask"]);
    assert_eq!(keys(&serving["syscalls"]), ["fdatasync", "fsync", "getpid", "getppid", "gettid", "sync"]);
    assert_eq!(keys(&init["externals"]), ["atexit", "close", "pthread_create", "signal", "write"]);
    assert_eq!(keys(&serving["externals"]), ["close", "write"]);
    let async_roots = serde_json::json!({
        "goodbye": "exit handler", "on_term": "signal handler", "ticker": "thread start routine"
    });
    assert_eq!(init["async_roots"], async_roots);
    assert_eq!(serving["async_roots"], async_roots);
    assert_eq!(
        serving["asm_sites"],
        serde_json::json!([{ "function": "raw_getpid", "text": "syscall", "syscall": "getpid" }])
    );
    assert_eq!(serving["unresolved"], serde_json::json!([]));
    // The two callbacks and the route table are read through fields; none falls back to types.
    assert_eq!(serving["indirect"], serde_json::json!({ "sites": 3, "via_field": 3, "via_type": 0, "targets": 4 }));
    let witness: Vec<&str> =
        serving["syscalls"]["fsync"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(witness, ["serve (serving entry)", "read_request (indirect)", "on_put (indirect)", "syscall(74)"]);
}

#[test]
fn plugins_resolve_tables_wrappers_callbacks_and_setter_parameters() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let analysis = analyse(&compile(dir.path(), "plugins", PLUGINS), &["--serving-entry", "main"]);
    let init = &analysis["init"];
    assert_eq!(names(&init["functions"]), ["by_value", "main", "my_syscall", "op_a", "op_b", "op_d", "set_op"]);
    assert_eq!(keys(&init["syscalls"]), ["getegid", "getgid", "getpgrp", "getpid", "getuid"]);
    assert_eq!(init["syscalls"]["getpid"].as_array().unwrap().last().unwrap(), "my_syscall(39)");
    assert_eq!(keys(&init["externals"]), ["qsort"]);
    assert_eq!(init["async_roots"], serde_json::json!({ "by_value": "library callback" }));
    // `table[i]` reads the table's two entries; `o.op` was written from `set_op`'s parameter, which
    // its one caller passes op_d for — op_a and op_b have the type but were never put there, and
    // op_c's table nothing reads.
    assert_eq!(init["indirect"], serde_json::json!({ "sites": 2, "via_field": 2, "via_type": 0, "targets": 3 }));
    assert_eq!(analysis["serving"]["functions"], init["functions"]);
}

#[test]
fn callbacks_reach_what_their_fields_and_parameters_hold_and_fall_back_to_types_when_they_escape() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let bitcode = compile(dir.path(), "callbacks", CALLBACKS);
    let analysis = analyse(&bitcode, &["--serving-entry", "serve"]);
    let serving = &analysis["serving"];
    // Signature matching would reach all six `void (int)` functions from each of the four calls.
    assert_eq!(names(&serving["functions"]), ["done", "fire", "on_read", "on_write", "run", "serve"]);
    assert_eq!(keys(&serving["syscalls"]), ["geteuid", "getgid", "getppid", "getuid"]);
    assert_eq!(serving["indirect"], serde_json::json!({ "sites": 4, "via_field": 4, "via_type": 0, "targets": 4 }));
    let witness: Vec<&str> =
        serving["syscalls"]["getppid"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(witness, ["serve (serving entry)", "run", "done (indirect)", "syscall(110)"]);

    // In init, `pick`'s result may be any live `void (int)`: every one of them runs.
    let init = &analysis["init"];
    let mut everything = vec![
        "done",
        "fire",
        "hooked",
        "keep",
        "main",
        "on_read",
        "on_write",
        "run",
        "serve",
        "set_timer",
        "set_writer",
    ];
    everything.push("stale");
    everything.sort_unstable();
    assert_eq!(names(&init["functions"]), everything);
    assert_eq!(keys(&init["externals"]), ["lend", "pick"]);

    // `hook.fn`'s address went to `lend`, which may store anything there: a type fallback.
    let watched = analyse(&bitcode, &["--serving-entry", "watch"]);
    let watched = &watched["serving"];
    assert_eq!(names(&watched["functions"]), ["done", "fire", "hooked", "on_read", "on_write", "stale", "watch"]);
    assert_eq!(watched["indirect"]["via_type"], 1);
}

#[test]
fn call_results_proven_to_be_data_keep_the_field_they_are_stored_into_sharp() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let sharp = ["on_read", "serve"].as_slice();
    let by_type = ["on_read", "serve", "stale"].as_slice();
    let cases: &[(&str, &[&str])] = &[
        // A library allocator, an allocator written in the program (through `posix_memalign`'s
        // result slot), pointer alignment through integers, a parameter handed back.
        ("malloc(64)", sharp),
        ("pool_alloc(64)", sharp),
        ("aligned(pool_alloc(64))", sharp),
        ("same(pool_alloc(64))", sharp),
        // What a library returns may be a function, also through a function of the program, a
        // stack slot a library wrote, or a parameter that was passed a function.
        ("lookup(\"handler\")", by_type),
        ("found()", by_type),
        ("borrowed()", by_type),
        ("same((void *)stale)", by_type),
    ];
    for (index, (value, expected)) in cases.iter().enumerate() {
        let source = RETURNS.replace("VALUE", value);
        let bitcode = compile(dir.path(), &format!("returns{index}"), &source);
        let analysis = analyse(&bitcode, &["--serving-entry", "serve"]);
        assert_eq!(names(&analysis["serving"]["functions"]), *expected, "data->value = {value}");
    }
}

#[test]
fn a_read_only_table_stays_sharp_when_its_address_escapes() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] =
        &[("const", &["first", "second", "serve"]), ("", &["first", "second", "serve", "stale"])];
    for (index, (qualifier, expected)) in cases.iter().enumerate() {
        let bitcode = compile(dir.path(), &format!("table{index}"), &TABLE.replace("QUALIFIER", qualifier));
        let analysis = analyse(&bitcode, &["--serving-entry", "serve"]);
        assert_eq!(names(&analysis["serving"]["functions"]), *expected, "table qualifier `{qualifier}`");
    }
}

#[test]
fn a_field_address_passed_to_a_function_that_writes_no_function_stays_sharp() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let sharp = ["on_read", "serve"].as_slice();
    let by_type = ["on_read", "serve", "stale"].as_slice();
    let cases: &[(&str, &[&str])] = &[
        ("clear(&c->on_read)", sharp),
        ("c->fd += is_set(&c->on_read)", sharp),
        ("reset(&c->on_read)", sharp),
        ("install(&c->on_read, argc)", by_type),
        ("relay(&c->on_read, argc)", by_type),
    ];
    for (index, (call, expected)) in cases.iter().enumerate() {
        let bitcode = compile(dir.path(), &format!("slots{index}"), &SLOTS.replace("CALL", call));
        let analysis = analyse(&bitcode, &["--serving-entry", "serve"]);
        assert_eq!(names(&analysis["serving"]["functions"]), *expected, "{call}");
    }
}

#[test]
fn a_handler_stays_sharp_when_the_linker_merges_its_struct_with_a_polluted_one() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let sharp = ["on_read", "serve"].as_slice();
    let by_type = ["on_read", "serve", "stale"].as_slice();
    let cases: &[(&str, &[&str])] = &[
        // The loads and stores name their C structs (TBAA): the buffer's end is not the handler.
        ("b->end = lookup(\"end\")", sharp),
        // A union member access may alias any member of the same layout, and a store through a
        // plain `void **` names no struct: both stay on the merged field.
        ("((union view *)b)->buf.end = lookup(\"end\")", by_type),
        ("*(void **)&b->end = lookup(\"end\")", by_type),
    ];
    for (index, (write, expected)) in cases.iter().enumerate() {
        let buffer = MERGED_BUFFER.replace("BUFFER_WRITE", write);
        let bitcode = compile_files(dir.path(), &format!("merged{index}"), &[MERGED_CONN, &buffer]);
        let analysis = analyse(&bitcode, &["--serving-entry", "serve"]);
        assert_eq!(names(&analysis["serving"]["functions"]), *expected, "{write}");
    }
}

/// Rewrites the producer `LLVM19.…` in the identification block to `LLVM21.…`: the digits are
/// 6-bit characters ('1' = 53, '9' = 61, '2' = 54) packed least significant bit first.
fn claim_llvm_21(mut bitcode: Vec<u8>) -> Vec<u8> {
    let bit = |bytes: &[u8], at: usize| u16::from(bytes[at / 8] >> (at % 8) & 1);
    let (nineteen, twenty_one) = (53 | 61 << 6, 54 | 53 << 6);
    let at = (32..40 * 8)
        .find(|&start| (0..12).map(|i| bit(&bitcode, start + i) << i).sum::<u16>() == nineteen)
        .expect("clang-19 writes its version into the identification block");
    for i in 0..12 {
        let (byte, mask) = ((at + i) / 8, 1 << ((at + i) % 8));
        if twenty_one >> i & 1 == 1 { bitcode[byte] |= mask } else { bitcode[byte] &= !mask }
    }
    bitcode
}

#[test]
fn bad_bitcode_is_a_one_line_error() {
    require!(toolchain_missing());
    let dir = tempfile::tempdir().unwrap();
    let not_bitcode = dir.path().join("notes.bc");
    std::fs::write(&not_bitcode, "hello").unwrap();
    let bitcode = compile(dir.path(), "plugins", PLUGINS);
    let truncated = dir.path().join("truncated.bc");
    std::fs::write(&truncated, &std::fs::read(&bitcode).unwrap()[..2000]).unwrap();
    let newer = dir.path().join("newer.bc");
    std::fs::write(&newer, claim_llvm_21(std::fs::read(&bitcode).unwrap())).unwrap();
    let cases: [(&Path, &[&str], &str); 5] = [
        (&newer, &[], "was written by LLVM21.1.7, newer than the LLVM 19 this build reads; rebuild it with clang-19"),
        (&not_bitcode, &[], "not LLVM bitcode (no 'BC' 0xC0DE magic)"),
        (&truncated, &[], "LLVM cannot parse"),
        (&dir.path().join("missing.bc"), &[], "cannot read"),
        (&bitcode, &["--serving-entry", "no_such_function"], "serving entry `no_such_function` is not defined"),
    ];
    for (path, extra, expected) in cases {
        let out = output(seccomp_refine().arg("bitcode").arg(path).args(extra));
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {message}", path.display());
        assert!(message.starts_with("seccomp-refine: error: ") && message.contains(expected), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
}

/// Where `cargo xtask bitcode APP` leaves an application's bitcode (`cargo xtask test` builds it
/// first).
pub fn app_bitcode(app: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/bitcode/{app}.bc"))
}

/// Why `app`'s bitcode cannot be analysed here, if it cannot.
pub fn bitcode_missing(app: &str) -> Option<String> {
    toolchain_missing().or_else(|| {
        (!app_bitcode(app).exists()).then(|| format!("target/bitcode/{app}.bc is missing (cargo xtask bitcode {app})"))
    })
}

#[test]
fn nginx_worker_serves_without_process_management() {
    require!(bitcode_missing("nginx"));
    let analysis = analyse(&app_bitcode("nginx"), &[]);
    let (init, serving) = (&analysis["init"], &analysis["serving"]);
    assert_eq!(analysis["serving_entries"], serde_json::json!(["ngx_process_events_and_timers"]));

    let init_externals: Vec<&str> = keys(&init["externals"]);
    let serving_externals: Vec<&str> = keys(&serving["externals"]);
    let init_only: Vec<&str> =
        init_externals.iter().copied().filter(|name| !serving_externals.contains(name)).collect();
    // What the master process does and a worker never does once it serves: daemonise, spawn and
    // signal workers, re-exec the binary, open listening sockets, read the environment — and
    // each worker's own start-up before its first event loop: dropping privileges, CPU
    // affinity, priority and limits.
    assert_eq!(
        init_only,
        [
            "CRYPTO_get_ex_new_index",
            "OPENSSL_init_ssl",
            "OpenSSL_version",
            "chdir",
            "execve",
            "fork",
            "getenv",
            "gethostname",
            "getpagesize",
            "getpid",
            "initgroups",
            "kill",
            "listen",
            "localtime",
            "prctl",
            "sched_setaffinity",
            "setgid",
            "setpriority",
            "setrlimit64",
            "setsid",
            "setuid",
            "sigaddset",
            "sigprocmask",
            "sigsuspend",
            "srandom",
            "sysconf",
            "time",
            "umask",
            "uname",
        ]
    );
    assert!(serving_externals.iter().all(|name| init_externals.contains(name)), "serving calls what init cannot");
    for worker_call in ["accept4", "close", "epoll_ctl", "epoll_wait", "pread64", "recv", "sendfile64", "writev"] {
        assert!(serving_externals.contains(&worker_call), "the worker loop calls {worker_call}");
    }
    let serving_functions = names(&serving["functions"]);
    assert!(serving_functions.iter().all(|name| names(&init["functions"]).contains(name)));
    for handler in ["ngx_epoll_process_events", "ngx_event_accept", "ngx_http_wait_request_handler"] {
        assert!(serving_functions.contains(&handler), "{handler} serves requests");
    }
    for start_up in ["ngx_master_process_cycle", "ngx_worker_process_cycle", "ngx_worker_process_init"] {
        assert!(!serving_functions.contains(&start_up), "{start_up} runs before serving");
    }

    let not_callbacks: serde_json::Map<String, Value> = serving["async_roots"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, kind)| *kind != "library callback")
        .map(|(name, kind)| (name.clone(), kind.clone()))
        .collect();
    assert_eq!(
        Value::Object(not_callbacks),
        serde_json::json!({
            "ngx_signal_handler": "signal handler",
            "ngx_thread_pool_cycle": "thread start routine",
            "ngx_timer_signal_handler": "signal handler",
        })
    );
    // The worker's `capset` (in ngx_worker_process_init) stays in init; `gettid` is logging's.
    assert_eq!(keys(&serving["syscalls"]), ["gettid"]);
    assert_eq!(keys(&init["syscalls"]), ["capset", "gettid"]);
    assert_eq!(
        serving["syscalls"]["gettid"],
        serde_json::json!([
            "ngx_cache_manager_process_cycle (continuation after ngx_process_events_and_timers returns)",
            "ngx_log_error_core",
            "ngx_thread_tid",
            "syscall(186)"
        ])
    );
    assert_eq!(serving["unresolved"], serde_json::json!([]));
}
