/* A test program: makes TCP, UDP and UNIX sockets, sets options, connects and closes, in a loop,
 * with the counter of tests/programs/count_calls.c armed around the loop only. Prints
 * "allocations N locks M". With "control" as argument it also allocates once inside the loop
 * window, to show that the counter counts. With "raw" the TCP sockets are made with
 * syscall(SYS_socket), which only the connect() hook sees. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int control = argc > 1 && strcmp(argv[1], "control") == 0;
    int raw = argc > 1 && strcmp(argv[1], "raw") == 0;
    void (*arm)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "count_calls_arm");
    long (*allocations)(void) = (long (*)(void))dlsym(RTLD_DEFAULT, "count_calls_allocations");
    long (*locks)(void) = (long (*)(void))dlsym(RTLD_DEFAULT, "count_calls_locks");
    if (!arm || !allocations || !locks) { fprintf(stderr, "count_calls.so not preloaded\n"); return 2; }

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, len) || listen(listener, 512) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) { perror("listener"); return 2; }

    arm(1);
    for (int i = 0; i < 300; i++) {
        int fd = raw ? (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0)
                     : socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int idle = 45;
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        connect(fd, (struct sockaddr *)&addr, sizeof addr);
        int peer = accept(listener, NULL, NULL);
        struct linger lg = { 1, 0 };
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(peer);
        close(fd);
        int udp = socket(AF_INET, SOCK_DGRAM, 0);
        connect(udp, (struct sockaddr *)&addr, sizeof addr);
        close(udp);
        int unix_fd = socket(AF_UNIX, SOCK_STREAM, 0);
        close(unix_fd);
        if (control && i == 0) free(strdup("x"));
    }
    arm(0);
    printf("allocations %ld locks %ld\n", allocations(), locks());
    return 0;
}
