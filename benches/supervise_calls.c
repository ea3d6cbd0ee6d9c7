/* supervise_calls: per-call time of the system calls the seccomp supervisor traps (and of some it
 * does not), for scripts/bench-supervise.sh, which runs it with and without
 * `keepalive-shim run --mode seccomp` in alternation. Built with gcc -static, as the programs
 * the supervisor is for.
 *
 *   supervise_calls MODE N [CPU]
 *
 * MODE: socket (TCP socket() + close()), mptcp (an MPTCP socket(): trapped, and let through at
 * once by the supervisor: the bare round trip), udp (UDP socket() + close(): the filter reads its
 * arguments and allows it), connect (socket() + connect() to a loopback listener + close(), an
 * accepting thread on the other side), getpid (a call the filter allows from its per-number
 * cache), setsockopt (TCP_KEEPIDLE on one socket: trapped only with KEEPALIVE_FORCE).
 * CPU pins this process to that CPU first. Prints the median and the 10th/90th percentiles of
 * N timed calls in nanoseconds as one JSON line; the first N/10 calls warm up and are not
 * counted. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in loopback;

static long long ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void *acceptor(void *arg) {
    int l = *(int *)arg;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c >= 0)
            close(c);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: supervise_calls socket|mptcp|udp|connect|getpid|setsockopt N [CPU]\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    if (argc > 3) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(argv[3]), &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            perror("sched_setaffinity");
            return 1;
        }
    }
    int l = -1, fixed = -1;
    if (strcmp(mode, "connect") == 0) {
        loopback.sin_family = AF_INET;
        loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof loopback;
        l = socket(AF_INET, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&loopback, sizeof loopback) != 0 || listen(l, 4096) != 0 ||
            getsockname(l, (struct sockaddr *)&loopback, &len) != 0) {
            perror("listener");
            return 1;
        }
        pthread_t t;
        pthread_create(&t, NULL, acceptor, &l);
    }
    if (strcmp(mode, "setsockopt") == 0)
        fixed = socket(AF_INET, SOCK_STREAM, 0);
    long warm = n / 10;
    long long *t = malloc(sizeof *t * n);
    for (long i = 0; i < warm + n; i++) {
        long long t0, t1;
        if (strcmp(mode, "socket") == 0 || strcmp(mode, "udp") == 0 || strcmp(mode, "mptcp") == 0) {
            int type = mode[0] == 'u' ? SOCK_DGRAM : SOCK_STREAM;
            int protocol = mode[0] == 'm' ? 262 : 0;
            t0 = ns();
            int fd = socket(AF_INET, type, protocol);
            t1 = ns();
            close(fd);
        } else if (strcmp(mode, "connect") == 0) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            t0 = ns();
            if (connect(fd, (struct sockaddr *)&loopback, sizeof loopback) != 0) {
                perror("connect");
                return 1;
            }
            t1 = ns();
            close(fd);
        } else if (strcmp(mode, "getpid") == 0) {
            t0 = ns();
            syscall(SYS_getpid);
            t1 = ns();
        } else {
            int v = 30;
            t0 = ns();
            setsockopt(fixed, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v);
            t1 = ns();
        }
        if (i >= warm)
            t[i - warm] = t1 - t0;
    }
    qsort(t, n, sizeof *t, cmp);
    printf("{\"mode\":\"%s\",\"calls\":%ld,\"p10\":%lld,\"median\":%lld,\"p90\":%lld}\n", mode, n,
           t[n / 10], t[n / 2], t[n * 9 / 10]);
    return 0;
}
