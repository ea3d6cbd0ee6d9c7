/* dlopen_copy: a program that loads keepalive-shim itself, as a program bundling the library
 * might, while the library (or a copy of it at another path) may already be preloaded. Run by
 * tests/stress_*.rs with KEEPALIVE_LOG=debug, which counts the library's configuration lines per
 * descriptor: each TCP socket must be configured exactly once, by one copy.
 *
 *   dlopen_copy none               make the sockets, load nothing
 *   dlopen_copy global PATH        dlopen(PATH, RTLD_NOW | RTLD_GLOBAL) first
 *   dlopen_copy local PATH         dlopen(PATH, RTLD_LAZY | RTLD_LOCAL) first
 *   dlopen_copy direct PATH        dlopen(PATH, RTLD_NOW | RTLD_LOCAL), then also make one socket
 *                                  through that copy's own socket(), found with dlsym
 *
 * Makes a loopback listener and CLIENTS (3) TCP sockets with socket(), connects each, keeps
 * every descriptor open (so no number is reused) and prints one JSON object: the descriptors
 * and the five options of each connected socket, [keepalive, idle, interval, count, timeout]. */
#define _GNU_SOURCE
#include <dlfcn.h>
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

#define CLIENTS 3

static void die(const char *what) {
    fprintf(stderr, "dlopen_copy: %s: %s\n", what, strerror(errno));
    _exit(2);
}

static void print_five(int fd) {
    static const int what[5][2] = {{SOL_SOCKET, SO_KEEPALIVE},
                                   {IPPROTO_TCP, TCP_KEEPIDLE},
                                   {IPPROTO_TCP, TCP_KEEPINTVL},
                                   {IPPROTO_TCP, TCP_KEEPCNT},
                                   {IPPROTO_TCP, TCP_USER_TIMEOUT}};
    printf("{\"fd\":%d,\"five\":[", fd);
    for (int i = 0; i < 5; i++) {
        int v = -1;
        socklen_t len = sizeof v;
        if (getsockopt(fd, what[i][0], what[i][1], &v, &len)) v = -errno;
        printf("%s%d", i ? "," : "", v);
    }
    printf("]}");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dlopen_copy none|global|local|direct [PATH]\n");
        return 2;
    }
    const char *mode = argv[1];
    void *handle = NULL;
    if (strcmp(mode, "none")) {
        if (argc < 3) die("no path");
        int flags = !strcmp(mode, "global") ? RTLD_NOW | RTLD_GLOBAL
                    : !strcmp(mode, "local") ? RTLD_LAZY | RTLD_LOCAL
                                             : RTLD_NOW | RTLD_LOCAL;
        handle = dlopen(argv[2], flags);
        if (!handle) {
            fprintf(stderr, "dlopen_copy: %s\n", dlerror());
            return 2;
        }
    }
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof peer;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&peer, len) || listen(l, 16) ||
        getsockname(l, (struct sockaddr *)&peer, &len))
        die("listener");
    int fds[CLIENTS + 1];
    int n = 0;
    for (; n < CLIENTS; n++) {
        fds[n] = socket(AF_INET, n == 1 ? SOCK_STREAM | SOCK_CLOEXEC : SOCK_STREAM, 0);
        if (fds[n] < 0 || connect(fds[n], (struct sockaddr *)&peer, sizeof peer)) die("client");
    }
    if (!strcmp(mode, "direct")) {
        int (*copy_socket)(int, int, int) = (int (*)(int, int, int))dlsym(handle, "socket");
        if (!copy_socket) die("dlsym socket");
        fds[n] = copy_socket(AF_INET, SOCK_STREAM, 0);
        if (fds[n] < 0 || connect(fds[n], (struct sockaddr *)&peer, sizeof peer)) die("direct");
        n++;
    }
    printf("{\"listener\":%d,\"clients\":[", l);
    for (int i = 0; i < n; i++) {
        if (i) printf(",");
        print_five(fds[i]);
    }
    printf("]}\n");
    return 0;
}
