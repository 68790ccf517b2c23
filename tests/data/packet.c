/* A stand-in server for a narrowed serving profile: serve() (the phase marker) opens a TCP socket
 * through libc each time round the loop, a constant the static analysis reads and the trace sees.
 * Once /trigger exists (`/packet trigger` makes it), serve() also runs code the program wrote into
 * memory at start: socket(AF_PACKET, SOCK_RAW) from no site the static analysis can read, never
 * run while traced. The exit status says what happened: 0 when the packet socket was denied with
 * ENOSYS, 2 when it was created, 3 on another error, 4 when the TCP socket was refused. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const unsigned char packet_socket[] = {
    0xb8, 0x29, 0, 0, 0, /* mov eax, 41 (socket) */
    0xbf, 0x11, 0, 0, 0, /* mov edi, 17 (AF_PACKET) */
    0xbe, 0x03, 0, 0, 0, /* mov esi, 3 (SOCK_RAW) */
    0x31, 0xd2,          /* xor edx, edx */
    0x0f, 0x05,          /* syscall */
    0xc3,                /* ret */
};

__attribute__((noinline)) void serve(long (*generated)(void)) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        _exit(4);
    close(fd);
    if (access("/trigger", F_OK) == 0) {
        long result = generated();
        _exit(result == -ENOSYS ? 0 : result >= 0 ? 2 : 3);
    }
    usleep(50000);
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        close(open("/trigger", O_CREAT | O_WRONLY, 0644));
        return 0;
    }
    void *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(code, packet_socket, sizeof packet_socket);
    for (;;)
        serve((long (*)(void))code);
}
