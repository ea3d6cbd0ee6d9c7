/* A TCP client and server for the fleet-mode tests (cli/tests/fleet.rs), built with gcc -static
 * so that no preload library can reach it: whatever keepalive its sockets get, a BPF program in
 * its cgroup gave them.
 *
 *   fleet_client options HOST PORT [OWN...]  connect, print the socket's five options as JSON
 *   fleet_client accept HOST PORT            listen (port 0: any), print "listening PORT", accept
 *                                            one connection, print its options as JSON
 *   fleet_client idle HOST PORT              connect, send a request, print "connected", wait
 *                                            for an answer; print "result ERRNO"
 *   fleet_client send HOST PORT              connect, print "connected", wait for "go" on stdin,
 *                                            send a request, wait for an answer; "result ERRNO"
 *   fleet_client connect HOST PORT           connect; print "result ERRNO SECONDS"
 *   fleet_client loop HOST PORT              listen on HOST (PORT ignored) and, every 2 ms until
 *                                            "stop" on stdin (at most 60 s), connect to itself,
 *                                            accept, read both sockets' options, close both;
 *                                            print "looping" first, then "sockets N bare M"
 *                                            (M: keepalive off or no user timeout) and the
 *                                            first bare socket's options as JSON
 *
 * OWN, the program's own settings: --keepalive N, --idle N, --interval N, --count N,
 * --user-timeout MS (set before connect()), --after-idle N (set after connect(), as node does).
 * Options are printed as {"keepalive":1,"idle":30,"interval":10,"count":3,"user_timeout":60000}.
 * HOST is an IPv4 or IPv6 address. A failing call other than the awaited one exits 1. */
#include "five_options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fleet_client: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

/* The flags of the five, in the order of five_options.h. */
static const char *FLAGS[FIVE] = {"--keepalive", "--idle", "--interval", "--count",
                                  "--user-timeout"};

static void print_options(int fd) {
    int values[FIVE];
    check(five_read(fd, values) < 0, "getsockopt");
    five_print_values(NULL, values);
}

static void set(int fd, int i, int value) {
    check(setsockopt(fd, FIVE_LEVELS[i], FIVE_NAMES[i], &value, sizeof value) == 0, FLAGS[i]);
}

/* The address HOST PORT, as IPv4 or IPv6. */
static socklen_t address(const char *host, const char *port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(atoi(port));
        return sizeof *v4;
    }
    check(inet_pton(AF_INET6, host, &v6->sin6_addr) == 1, "address");
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(atoi(port));
    return sizeof *v6;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *error_name(int e) {
    switch (e) {
    case 0: return "none";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    default: return "other";
    }
}

/* Waits for an answer: prints "result ERRNO" when the connection fails (or closes). */
static int await_answer(int fd) {
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
    }
    printf("result %s\n", n == 0 ? "eof" : error_name(errno));
    fflush(stdout);
    return 0;
}

/* The loop of "loop": a connection to itself every 2 ms while a swap happens elsewhere. */
static int loop(const char *host) {
    struct sockaddr_storage ss;
    socklen_t len = address(host, "0", &ss);
    int l = socket(ss.ss_family, SOCK_STREAM, 0);
    check(l >= 0, "socket");
    check(bind(l, (struct sockaddr *)&ss, len) == 0, "bind");
    check(listen(l, 16) == 0, "listen");
    check(getsockname(l, (struct sockaddr *)&ss, &len) == 0, "getsockname");
    printf("looping\n");
    fflush(stdout);
    long sockets = 0, bare = 0;
    int first_bare[FIVE] = {0};
    double t0 = now();
    for (;;) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        if (poll(&in, 1, 2) > 0 || now() - t0 > 60)
            break;
        int c = socket(ss.ss_family, SOCK_STREAM, 0);
        check(c >= 0, "socket");
        check(connect(c, (struct sockaddr *)&ss, len) == 0, "connect");
        int a = accept(l, NULL, NULL);
        check(a >= 0, "accept");
        int both[2] = {c, a};
        for (int k = 0; k < 2; k++) {
            int values[FIVE];
            check(five_read(both[k], values) < 0, "getsockopt");
            sockets++;
            if (values[0] == 0 || values[4] == 0) {
                if (bare++ == 0)
                    memcpy(first_bare, values, sizeof values);
            }
            /* RST instead of TIME_WAIT: thousands of connections leave no ports behind. */
            struct linger lg = {1, 0};
            setsockopt(both[k], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(both[k]);
        }
    }
    printf("sockets %ld bare %ld\n", sockets, bare);
    five_print_values(NULL, first_bare);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: fleet_client MODE HOST PORT [OWN...]\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "loop") == 0)
        return loop(argv[2]);
    struct sockaddr_storage ss;
    socklen_t len = address(argv[2], argv[3], &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    check(fd >= 0, "socket");
    int after_idle = 0;
    for (int a = 4; a + 1 < argc; a += 2) {
        if (strcmp(argv[a], "--after-idle") == 0) {
            after_idle = atoi(argv[a + 1]);
            continue;
        }
        int known = 0;
        for (int i = 0; i < 5; i++) {
            if (strcmp(argv[a], FLAGS[i]) == 0) {
                set(fd, i, atoi(argv[a + 1]));
                known = 1;
            }
        }
        if (!known) {
            fprintf(stderr, "fleet_client: unknown option %s\n", argv[a]);
            return 2;
        }
    }
    if (strcmp(mode, "accept") == 0) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        check(bind(fd, (struct sockaddr *)&ss, len) == 0, "bind");
        check(listen(fd, 4) == 0, "listen");
        check(getsockname(fd, (struct sockaddr *)&ss, &len) == 0, "getsockname");
        int port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                 : ((struct sockaddr_in6 *)&ss)->sin6_port);
        printf("listening %d\n", port);
        fflush(stdout);
        int conn = accept(fd, NULL, NULL);
        check(conn >= 0, "accept");
        print_options(conn);
        return 0;
    }
    if (strcmp(mode, "connect") == 0) {
        double t0 = now();
        int rc = connect(fd, (struct sockaddr *)&ss, len);
        printf("result %s %.2f\n", rc == 0 ? "none" : error_name(errno), now() - t0);
        fflush(stdout);
        return 0;
    }
    check(connect(fd, (struct sockaddr *)&ss, len) == 0, "connect");
    if (after_idle)
        set(fd, 1, after_idle);
    static const char request[] = "GET / HTTP/1.1\r\nHost: lab\r\n\r\n";
    if (strcmp(mode, "options") == 0) {
        print_options(fd);
        return 0;
    }
    if (strcmp(mode, "idle") == 0) {
        check(send(fd, request, sizeof request - 1, 0) > 0, "send");
        printf("connected\n");
        fflush(stdout);
        return await_answer(fd);
    }
    if (strcmp(mode, "send") == 0) {
        printf("connected\n");
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin))
            return 1;
        check(send(fd, request, sizeof request - 1, 0) > 0, "send");
        return await_answer(fd);
    }
    fprintf(stderr, "fleet_client: unknown mode %s\n", mode);
    return 2;
}
