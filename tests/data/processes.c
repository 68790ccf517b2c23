/*
 * Three processes around the `serve` marker, every syscall known, for the per-process phase test.
 *
 *   main, before serve:  execve (by the tracer's child), pipe2, fork (-> early), getpid
 *   early:               read (blocks until main has passed serve), getegid, exit_group
 *   main, after serve:   getppid, write (wakes early), fork (-> late), wait4 (both children), exit_group
 *   late:                getpgrp, exit_group
 *
 * Under `symbol:serve` only main and late (forked after main hit the marker) serve; early, forked
 * before, stays in init however long it runs after the marker.
 */
#include "raw_syscall.h"

void _start(void) {
    int pipe[2];
    sys6(SYS_pipe2, (long)pipe, 0, 0, 0, 0, 0);
    if (sys0(SYS_fork) == 0) {
        char byte;
        sys6(SYS_read, pipe[0], (long)&byte, 1, 0, 0, 0);
        sys0(SYS_getegid);
        sys6(SYS_exit_group, 0, 0, 0, 0, 0, 0);
    }
    sys0(SYS_getpid);
    serve();
    sys0(SYS_getppid);
    sys6(SYS_write, pipe[1], (long)"x", 1, 0, 0, 0);
    if (sys0(SYS_fork) == 0) {
        sys0(SYS_getpgrp);
        sys6(SYS_exit_group, 0, 0, 0, 0, 0, 0);
    }
    sys6(SYS_wait4, -1, 0, 0, 0, 0, 0);
    sys6(SYS_wait4, -1, 0, 0, 0, 0, 0);
    sys6(SYS_exit_group, 0, 0, 0, 0, 0, 0);
    for (;;) {
    }
}
