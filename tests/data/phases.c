/*
 * A program whose every syscall is known, for the tracer's exact-set tests.
 *
 * Only raw syscalls (raw_syscall.h), plus one `int $0x80`, a 32-bit compat getpid. LIBPATH is a
 * file it maps executable; REPEAT is how often (the overflow test maps it thousands of times).
 *
 *   init:    execve (by the tracer's child), getpid, getuid, compat getpid, openat, mmap, munmap, close
 *   serving: getppid, getgid, exit_group      (after `serve`, the marker function)
 */
#include "raw_syscall.h"

#define O_RDONLY 0
#define PROT_READ 1
#define PROT_EXEC 4
#define MAP_PRIVATE 2
#define AT_FDCWD -100

void _start(void) {
    sys0(SYS_getpid);
    sys0(SYS_getuid);
    compat0(20); /* getpid in the i386 table */
    long fd = sys6(SYS_openat, AT_FDCWD, (long)LIBPATH, O_RDONLY, 0, 0, 0);
    for (int i = 0; i < REPEAT; i++) {
        long at = sys6(SYS_mmap, 0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
        sys6(SYS_munmap, at, 4096, 0, 0, 0, 0);
    }
    sys6(SYS_close, fd, 0, 0, 0, 0, 0);
    serve();
    sys0(SYS_getppid);
    sys0(SYS_getgid);
    sys0(SYS_exit_group);
    for (;;) {
    }
}
