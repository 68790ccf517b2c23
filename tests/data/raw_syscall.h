/*
 * Raw syscalls for the tracer's test programs, built with `gcc -static -nostdlib`: no libc and no
 * dynamic loader, so the only syscalls a program makes are the ones it spells out with these.
 */
#ifndef RAW_SYSCALL_H
#define RAW_SYSCALL_H

#include <sys/syscall.h>

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return r;
}

static long sys0(long n) { return sys6(n, 0, 0, 0, 0, 0, 0); }

/* A 32-bit syscall from a 64-bit process: numbered with the i386 table. */
static long compat0(long n) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n) : "memory");
    return r;
}

/* The phase marker: noinline and global, so it has a symbol a uprobe can find. */
__attribute__((noinline)) void serve(void) { __asm__ volatile(""); }

#endif
