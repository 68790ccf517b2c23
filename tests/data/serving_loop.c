/* A stand-in server for the stack unwinder's unit test (analyzer/src/stack/tests.rs), shaped
 * like nginx: main starts its workers in a loop, a worker cycle loops around its per-iteration
 * function, which waits. At its first wait it writes its own registers (ip sp bp bx r12 r13 r14
 * r15, as the tracer copies them at the wait's syscall) to ARG.regs, its stack from the stack
 * pointer up (at most 16 KiB) to ARG.stack and /proc/self/maps to ARG.maps. Built with
 * -O2 -fomit-frame-pointer, so only .eh_frame can unwind it. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *out;
static volatile int rounds;

static void write_file(const char *suffix, const void *bytes, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", out, suffix);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, bytes, len) != (ssize_t)len) exit(2);
    close(fd);
}

/* The end of the [stack] mapping holding sp, so the copy does not run past it. */
static uint64_t stack_end(const char *maps, uint64_t sp) {
    for (const char *line = maps; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start <= sp && sp < end) return end;
    }
    exit(3);
}

__attribute__((noinline, noclone)) static void dump(const uint64_t *regs) {
    static char maps[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY);
    ssize_t len = 0, got;
    while ((got = read(fd, maps + len, sizeof maps - 1 - len)) > 0) len += got;
    close(fd);
    maps[len] = 0;
    uint64_t sp = regs[1], end = stack_end(maps, sp);
    size_t copy = end - sp < 16384 ? end - sp : 16384;
    write_file("regs", regs, 8 * sizeof *regs);
    write_file("stack", (const void *)sp, copy);
    write_file("maps", maps, len);
}

__attribute__((noinline, noclone)) static void wait_for_events(void) {
    static int dumped;
    uint64_t regs[8];
    __asm__ volatile("lea 0(%%rip), %%rax\n\t"
                     "mov %%rax, 0(%0)\n\t"
                     "mov %%rsp, 8(%0)\n\t"
                     "mov %%rbp, 16(%0)\n\t"
                     "mov %%rbx, 24(%0)\n\t"
                     "mov %%r12, 32(%0)\n\t"
                     "mov %%r13, 40(%0)\n\t"
                     "mov %%r14, 48(%0)\n\t"
                     "mov %%r15, 56(%0)\n\t"
                     :
                     : "r"(regs)
                     : "rax", "memory");
    if (!dumped++) dump(regs);
    rounds++;
}

__attribute__((noinline, noclone)) void process_events(void) {
    wait_for_events();
    rounds += 2;
}

__attribute__((noinline, noclone)) static void worker_cycle(void) {
    for (;;) {
        process_events();
        if (rounds > 6) return;
    }
}

__attribute__((noinline, noclone)) static void start_workers(int n) {
    for (int i = 0; i < n; i++) worker_cycle();
}

int main(int argc, char **argv) {
    if (argc != 2) return 1;
    out = argv[1];
    start_workers(rounds + 1);
    return 0;
}
