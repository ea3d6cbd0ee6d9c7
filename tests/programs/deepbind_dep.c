/* libdeepdep.so, a dependency of deepbind_lib.so (tests/deepbind.rs): it makes a TCP socket the
 * way libcurl does under PHP's curl extension, from a library that came in with one loaded with
 * RTLD_DEEPBIND, so its calls to socket() and close() bind to libc, past LD_PRELOAD. Linked with
 * -z now, so its PLT slots lie in its read-only RELRO pages. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

/* The five options of socket `fd` into `out`: keepalive, idle, interval, count, user timeout. */
void deep_read_options(int fd, int out[5]) {
    static const int where[5][2] = {
        {SOL_SOCKET, SO_KEEPALIVE}, {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL},
        {IPPROTO_TCP, TCP_KEEPCNT}, {IPPROTO_TCP, TCP_USER_TIMEOUT}};
    for (int i = 0; i < 5; i++) {
        socklen_t len = sizeof out[i];
        out[i] = -1;
        getsockopt(fd, where[i][0], where[i][1], &out[i], &len);
    }
}

/* A new TCP socket's options; 0, or -1 when socket() fails. */
int deep_dep_options(int out[5]) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    deep_read_options(fd, out);
    close(fd);
    return 0;
}
