/* The cost of fleet mode per connection, for scripts/fleet-bench.sh: this process moves itself
 * between two cgroups, one with keepalive-shim's programs attached and one without, and in each
 * times blocks of loopback connections (socket, connect, accept, close both ends: both ends are
 * in the cgroup, so the sock_ops program runs twice per connection, as for a client and a server
 * on one node) and blocks of setsockopt calls (the setsockopt program runs on every one).
 * Blocks alternate, so both sides see the same machine; each round gives the ratio of the two.
 *
 *   fleet_bench ON_PROCS OFF_PROCS ROUNDS CONNECTS SETSOCKOPTS
 *
 * ON_PROCS and OFF_PROCS are the cgroups' cgroup.procs files. Prints one line per round and
 * kind: "connect ON_NS OFF_NS" and "setsockopt ON_NS OFF_NS" (nanoseconds per operation). */
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
    if (argc != 6) {
        fprintf(stderr, "usage: fleet_bench ON_PROCS OFF_PROCS ROUNDS CONNECTS SETSOCKOPTS\n");
        return 2;
    }
    int on = open(argv[1], O_WRONLY | O_CLOEXEC), off = open(argv[2], O_WRONLY | O_CLOEXEC);
    check(on >= 0 && off >= 0, "open cgroup.procs");
    int rounds = atoi(argv[3]), n = atoi(argv[4]), m = atoi(argv[5]);
    /* Warm-up on both sides. */
    join(on);
    connects(n / 4 + 1);
    join(off);
    connects(n / 4 + 1);
    for (int r = 0; r < rounds; r++) {
        /* Alternate which side goes first. */
        double c_on, c_off, s_on, s_off;
        if (r % 2 == 0) {
            join(on); c_on = connects(n); s_on = setsockopts(m);
            join(off); c_off = connects(n); s_off = setsockopts(m);
        } else {
            join(off); c_off = connects(n); s_off = setsockopts(m);
            join(on); c_on = connects(n); s_on = setsockopts(m);
        }
        printf("connect %.0f %.0f\nsetsockopt %.1f %.1f\n", c_on, c_off, s_on, s_off);
        fflush(stdout);
    }
    return 0;
}
