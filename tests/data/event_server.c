/* An unknown server for `auto` (tests/tracer.rs): no name of it is known anywhere. It listens,
 * then, like nginx's workers testing EPOLLRDHUP, waits once during set-up on an epoll that is
 * ready at once, then runs its event loop: `serve` calls `handle_events` in a loop, which waits
 * (100 ms, no client ever comes) for 3 s. Built without frame pointers, so only .eh_frame can
 * unwind it. The serving entry found from the stack must be `handle_events`, called by `serve`. */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile int iterations;

__attribute__((noinline, noclone)) static int set_up(int *listener) {
    *listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (*listener < 0 || bind(*listener, (struct sockaddr *)&address, sizeof address) || listen(*listener, 8)) exit(2);
    int epfd = epoll_create1(0), ready = eventfd(1, 0);
    struct epoll_event event = {.events = EPOLLIN};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ready, &event);
    /* A set-up wait after listen that returns at once: not the event loop. */
    if (epoll_wait(epfd, &event, 1, 5000) != 1) exit(3);
    epoll_ctl(epfd, EPOLL_CTL_DEL, ready, NULL);
    close(ready);
    event.events = EPOLLIN;
    epoll_ctl(epfd, EPOLL_CTL_ADD, *listener, &event);
    return epfd;
}

__attribute__((noinline, noclone)) static void handle_events(int epfd) {
    struct epoll_event events[8];
    int n = epoll_wait(epfd, events, 8, 100);
    for (int i = 0; i < n; i++) close(accept(events[i].data.fd, NULL, NULL));
    iterations++;
}

__attribute__((noinline, noclone)) static void serve(int epfd) {
    while (iterations < 30) handle_events(epfd);
}

int main(void) {
    int listener;
    int epfd = set_up(&listener);
    serve(epfd);
    return 0;
}
