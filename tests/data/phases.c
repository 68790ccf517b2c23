/*
 * A program whose every syscall is known, for the tracer's exact-set tests.
 *
 * Built with `gcc -static -nostdlib`: no libc and no dynamic loader, so nothing runs before
 * `_start` and the only syscalls are the ones below, issued with the `syscall` instruction (and
 * one `int $0x80`, a 32-bit compat getpid). LIBPATH is a file it maps executable; REPEAT is how
 * often (the overflow test maps it thousands of times).
 *
 *   init:    execve (by the tracer's child), getpid, getuid, compat getpid, openat, mmap, munmap, close
 *   serving: getppid, getgid, exit_group      (after `serve`, the marker function)
 */
#include <sys/syscall.h>

#define O_RDONLY 0
#define PROT_READ 1
#define PROT_EXEC 4
#define MAP_PRIVATE 2
#define AT_FDCWD -100

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return r;
}

static long compat0(long n) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n) : "memory");
    return r;
}

/* The phase marker: noinline and global, so it has a symbol a uprobe can find. */
__attribute__((noinline)) void serve(void) { __asm__ volatile(""); }

void _start(void) {
    sys6(SYS_getpid, 0, 0, 0, 0, 0, 0);
    sys6(SYS_getuid, 0, 0, 0, 0, 0, 0);
    compat0(20); /* getpid in the i386 table */
    long fd = sys6(SYS_openat, AT_FDCWD, (long)LIBPATH, O_RDONLY, 0, 0, 0);
    for (int i = 0; i < REPEAT; i++) {
        long at = sys6(SYS_mmap, 0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
        sys6(SYS_munmap, at, 4096, 0, 0, 0, 0);
    }
    sys6(SYS_close, fd, 0, 0, 0, 0, 0);
    serve();
    sys6(SYS_getppid, 0, 0, 0, 0, 0, 0);
    sys6(SYS_getgid, 0, 0, 0, 0, 0, 0);
    sys6(SYS_exit_group, 0, 0, 0, 0, 0, 0);
    for (;;) {
    }
}
