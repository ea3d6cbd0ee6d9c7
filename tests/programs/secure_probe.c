/* For tests/secure.rs: connects a TCP socket to a listener of its own on 127.0.0.1 and prints,
 * as one JSON object, whether the loader runs it in secure mode (AT_SECURE), its real and
 * effective uid, and the five options of the connected socket. Installed setuid root, it is what
 * a privileged program run by an unprivileged user looks like to a preload library. Exits 1 on
 * any failing call. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

static int option(int fd, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    if (getsockopt(fd, level, name, &value, &len) != 0) {
        perror("getsockopt");
        return -1;
    }
    return value;
}

int main(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int srv = socket(AF_INET, SOCK_STREAM, 0);
    if (srv < 0 || bind(srv, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(srv, 1) != 0
        || getsockname(srv, (struct sockaddr *)&addr, &len) != 0) {
        perror("listener");
        return 1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }
    printf("{\"secure\": %lu, \"uid\": %d, \"euid\": %d, \"keepalive\": %d, \"idle\": %d, "
           "\"interval\": %d, \"count\": %d, \"user_timeout\": %d}\n",
           getauxval(AT_SECURE), (int)getuid(), (int)geteuid(),
           option(fd, SOL_SOCKET, SO_KEEPALIVE), option(fd, IPPROTO_TCP, TCP_KEEPIDLE),
           option(fd, IPPROTO_TCP, TCP_KEEPINTVL), option(fd, IPPROTO_TCP, TCP_KEEPCNT),
           option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT));
    return 0;
}
