/* socket_cost: the time of one TCP socket() call, for scripts/bench-supervise.sh, which runs it
 * bare and under `keepalive-shim run --mode seccomp` (the socket trap: the supervisor makes each
 * TCP socket, sets the options and installs it) in alternation. Built with gcc -static, as the
 * programs the supervisor is for.
 *
 *   socket_cost N
 *
 * Makes N/10 sockets to warm up, then times N calls of socket(AF_INET, SOCK_STREAM, 0) (each
 * socket closed, untimed, before the next) and prints the median, the 90th and the 99th
 * percentiles and the largest, in nanoseconds, as one JSON line:
 * {"calls":N,"median":..,"p90":..,"p99":..,"max":..}. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    if (n < 100) {
        fprintf(stderr, "usage: socket_cost N (N >= 100)\n");
        return 2;
    }
    long long *t = malloc(sizeof *t * n);
    if (t == NULL)
        return 1;
    long warm = n / 10;
    for (long i = 0; i < warm + n; i++) {
        long long t0 = ns();
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        long long t1 = ns();
        if (fd < 0) {
            perror("socket");
            return 1;
        }
        close(fd);
        if (i >= warm)
            t[i - warm] = t1 - t0;
    }
    qsort(t, n, sizeof *t, cmp);
    printf("{\"calls\":%ld,\"median\":%lld,\"p90\":%lld,\"p99\":%lld,\"max\":%lld}\n", n, t[n / 2],
           t[n * 9 / 10], t[n * 99 / 100], t[n - 1]);
    return 0;
}
