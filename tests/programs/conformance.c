/* conformance: the one client of the conformance table (crates/policy/src/cases.rs), run by
 * tests/conformance.rs (built dynamically, under the preload library) and
 * cli/tests/conformance.rs (built -static, under the seccomp supervisor and in fleet mode).
 *
 *   conformance SHAPE HOST [b:I=V...] [a:I=V...]
 *
 * It makes a listener on HOST:0 (socket, bind, listen), then by SHAPE:
 *   connect  socket() through libc, the b: options, connect() to the listener, the a: options;
 *            the connected socket's options are printed
 *   raw      the same with the socket made by syscall(SYS_socket, ...), past libc
 *   accept   a client socket connects to the listener, accept(); the b: options and then the
 *            a: options are set on the accepted socket, whose options are printed
 *   raw-accept  the same with the listener made by syscall(SYS_socket, ...), as a listener
 *            inherited from systemd's socket activation is one the library never saw
 * I is an index into the five (0 SO_KEEPALIVE, 1 TCP_KEEPIDLE, 2 TCP_KEEPINTVL, 3 TCP_KEEPCNT,
 * 4 TCP_USER_TIMEOUT), V its value; every setsockopt goes through libc. The five are printed as
 * one line of JSON (five_options.h) and it exits 0; a failing call prints what failed on
 * stderr and exits 1; bad arguments exit 2. HOST is an IPv4 or IPv6 address. */
#define _GNU_SOURCE
#include "five_options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "conformance: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

static void usage(const char *why) {
    fprintf(stderr, "conformance: %s\nusage: conformance connect|raw|accept|raw-accept HOST [b:I=V...] "
                    "[a:I=V...]\n", why);
    exit(2);
}

/* Sets the options of `argv` whose prefix is `when` ('b' or 'a') on `fd`, in order. */
static void set_options(int fd, char when, int argc, char **argv) {
    for (int a = 3; a < argc; a++) {
        const char *arg = argv[a];
        if (!(arg[0] == 'b' || arg[0] == 'a') || arg[1] != ':')
            usage("an option is b:I=V or a:I=V");
        if (arg[0] != when)
            continue;
        char *end;
        long i = strtol(arg + 2, &end, 10);
        if (end == arg + 2 || *end != '=' || i < 0 || i >= FIVE)
            usage("an option's index is 0 to 4");
        const char *v = end + 1;
        long value = strtol(v, &end, 10);
        if (end == v || *end)
            usage("an option's value is a number");
        int n = (int)value;
        char what[64];
        snprintf(what, sizeof what, "setsockopt %s=%d (%c:)", FIVE_LABELS[i], n, when);
        check(setsockopt(fd, FIVE_LEVELS[i], FIVE_NAMES[i], &n, sizeof n) == 0, what);
    }
}

int main(int argc, char **argv) {
    if (argc < 3)
        usage("too few arguments");
    const char *shape = argv[1];
    int raw = strcmp(shape, "raw") == 0;
    int raw_listener = strcmp(shape, "raw-accept") == 0;
    int accepting = strcmp(shape, "accept") == 0 || raw_listener;
    if (!raw && !accepting && strcmp(shape, "connect") != 0)
        usage("unknown shape");

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, argv[2], &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, argv[2], &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        len = sizeof *v6;
    } else {
        usage("HOST is not an IPv4 or IPv6 address");
    }
    int family = ss.ss_family;

    int listener = raw_listener ? (int)syscall(SYS_socket, family, SOCK_STREAM, 0)
                                : socket(family, SOCK_STREAM, 0);
    check(listener >= 0, "socket (listener)");
    check(bind(listener, (struct sockaddr *)&ss, len) == 0, "bind (listener)");
    check(listen(listener, 4) == 0, "listen");
    check(getsockname(listener, (struct sockaddr *)&ss, &len) == 0, "getsockname (listener)");

    int fd = raw ? (int)syscall(SYS_socket, family, SOCK_STREAM, 0)
                 : socket(family, SOCK_STREAM, 0);
    check(fd >= 0, raw ? "syscall(SYS_socket)" : "socket");
    int measured = fd;
    if (accepting) {
        check(connect(fd, (struct sockaddr *)&ss, len) == 0, "connect");
        measured = accept(listener, NULL, NULL);
        check(measured >= 0, "accept");
        set_options(measured, 'b', argc, argv);
        set_options(measured, 'a', argc, argv);
    } else {
        set_options(fd, 'b', argc, argv);
        check(connect(fd, (struct sockaddr *)&ss, len) == 0, "connect");
        set_options(fd, 'a', argc, argv);
    }

    int values[FIVE];
    int failed = five_read(measured, values);
    if (failed >= 0) {
        char what[64];
        snprintf(what, sizeof what, "getsockopt %s", FIVE_LABELS[failed]);
        check(0, what);
    }
    five_print_values(NULL, values);
    if (measured != fd)
        close(measured);
    close(fd);
    close(listener);
    return 0;
}
