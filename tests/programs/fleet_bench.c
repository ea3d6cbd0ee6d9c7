/* The cost of fleet mode per connection, for scripts/fleet-bench.sh: this process moves itself
 * between cgroups, one with nothing attached and one or more with keepalive-shim's programs
 * attached (several builds or settings at once, measured in the same run), and in each times
 * blocks of loopback connections (socket, connect, accept, close both ends: both ends are in
 * the cgroup, so the sock_ops program runs for the connect and for the accept, as for a client
 * and a server on one node) and blocks of setsockopt calls (the setsockopt program runs on
 * every one). Within a round every cgroup gets one block of each, in an order that rotates
 * from round to round, so all sides see the same machine.
 *
 *   fleet_bench ROUNDS CONNECTS SETSOCKOPTS DETACHED_PROCS ATTACHED_PROCS...
 *
 * The *_PROCS arguments are the cgroups' cgroup.procs files. Prints one line per round and
 * kind: "connect NS NS..." and "setsockopt NS NS..." (nanoseconds per operation, the detached
 * cgroup first, then the attached ones in the order given). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIDES 8

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fleet_bench: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void join(int procs) {
    check(write(procs, "0", 1) == 1, "join cgroup");
}

/* ns per connection: a listener made in this cgroup, N connections accepted and closed. */
static double connects(int n) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    check(l >= 0, "socket");
    check(bind(l, (struct sockaddr *)&addr, sizeof addr) == 0, "bind");
    check(listen(l, 128) == 0, "listen");
    check(getsockname(l, (struct sockaddr *)&addr, &len) == 0, "getsockname");
    double t0 = now();
    for (int i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        check(c >= 0, "socket");
        check(connect(c, (struct sockaddr *)&addr, sizeof addr) == 0, "connect");
        int a = accept(l, NULL, NULL);
        check(a >= 0, "accept");
        /* RST instead of FIN/TIME_WAIT, so thousands of connections leave no ports behind. */
        struct linger lg = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c);
        close(a);
    }
    double per = (now() - t0) / n;
    close(l);
    return per;
}

/* ns per setsockopt(TCP_NODELAY) on a TCP socket: a call the setsockopt program inspects and
 * lets through. */
static double setsockopts(int n) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    check(s >= 0, "socket");
    int one = 1;
    double t0 = now();
    for (int i = 0; i < n; i++)
        check(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "setsockopt");
    double per = (now() - t0) / n;
    close(s);
    return per;
}

int main(int argc, char **argv) {
    if (argc < 6 || argc - 4 > MAX_SIDES) {
        fprintf(stderr, "usage: fleet_bench ROUNDS CONNECTS SETSOCKOPTS DETACHED_PROCS "
                        "ATTACHED_PROCS... (at most %d cgroups)\n", MAX_SIDES);
        return 2;
    }
    int rounds = atoi(argv[1]), n = atoi(argv[2]), m = atoi(argv[3]);
    int sides = argc - 4;
    int procs[MAX_SIDES];
    for (int i = 0; i < sides; i++) {
        procs[i] = open(argv[4 + i], O_WRONLY | O_CLOEXEC);
        check(procs[i] >= 0, argv[4 + i]);
    }
    /* Warm-up on every side. */
    for (int i = 0; i < sides; i++) {
        join(procs[i]);
        connects(n / 4 + 1);
        setsockopts(m / 4 + 1);
    }
    for (int r = 0; r < rounds; r++) {
        double c[MAX_SIDES], s[MAX_SIDES];
        /* Rotate which side goes first, and reverse the order every other round. */
        for (int k = 0; k < sides; k++) {
            int i = (r / 2 + k) % sides;
            if (r % 2)
                i = sides - 1 - i;
            join(procs[i]);
            c[i] = connects(n);
            s[i] = setsockopts(m);
        }
        printf("connect");
        for (int i = 0; i < sides; i++)
            printf(" %.0f", c[i]);
        printf("\nsetsockopt");
        for (int i = 0; i < sides; i++)
            printf(" %.1f", s[i]);
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
