/* A TCP client for the portability tests (tests/portable.rs): makes a loopback listener, connects
 * a socket to it and prints that socket's five keepalive options as one line of JSON:
 *   {"keepalive":0,"idle":7200,"interval":75,"count":9,"user_timeout":0}
 * Built with musl-gcc (a dynamically linked musl program) and with aarch64-linux-gnu-gcc (run
 * under qemu-aarch64). It links the C library only, no -ldl: a preloaded library must bring its
 * own dependencies. Exits 1 with a message on stderr when a call fails. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "options_client: %s: %s\n", what, strerror(errno));
        _exit(1);
    }
}

static int option(int fd, int level, int name, const char *what) {
    int value = -1;
    socklen_t len = sizeof value;
    check(getsockopt(fd, level, name, &value, &len) == 0, what);
    return value;
}

int main(void) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    check(listener >= 0, "socket (listener)");
    check(bind(listener, (struct sockaddr *)&addr, sizeof addr) == 0, "bind");
    check(listen(listener, 1) == 0, "listen");
    check(getsockname(listener, (struct sockaddr *)&addr, &len) == 0, "getsockname");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    check(fd >= 0, "socket");
    check(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect");

    printf("{\"keepalive\":%d,\"idle\":%d,\"interval\":%d,\"count\":%d,\"user_timeout\":%d}\n",
           option(fd, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"),
           option(fd, IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"),
           option(fd, IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"),
           option(fd, IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"),
           option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"));
    close(fd);
    close(listener);
    return 0;
}
