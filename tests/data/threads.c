/* A multi-threaded stand-in server for `enforce`: three threads wait while the main thread
 * "serves" by calling serve() in a loop (the phase marker). With an argument, thread 1 first
 * installs a filter of its own (allow everything), so its filter chain diverges from the
 * others' and a TSYNC from the main thread fails naming it. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void own_filter(void) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {.len = 1, .filter = allow};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static void *waiter(void *diverge) {
    if (diverge)
        own_filter();
    for (;;)
        pause();
    return NULL;
}

__attribute__((noinline)) void serve(void) { usleep(50000); }

int main(int argc, char **argv) {
    (void)argv;
    pthread_t threads[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&threads[i], NULL, waiter, (void *)(long)(argc > 1 && i == 1));
    /* The diverging filter is in place before serving starts. */
    sleep(1);
    for (;;)
        serve();
}
