/* early_hooks.so: another preload library whose constructor reaches keepalive-shim's hooks
 * before keepalive-shim's own constructor has run. Built and preloaded by tests/stress_*.rs with
 * LD_PRELOAD=libkeepalive_shim.so:early_hooks.so — glibc runs the constructors of preloaded
 * libraries in the reverse of their LD_PRELOAD order, so this one runs first, while its calls to
 * socket() and connect() still go to keepalive-shim, which comes first in the search order.
 *
 * The constructor writes "early_hooks: constructor starts" to stderr, starts a thread that makes
 * EARLY_HOOKS_ROUNDS (default 100) TCP sockets with socket() and connect()s them, and meanwhile
 * connect()s a socket made by the raw system call (so connect() is its first hook) and then one
 * made with socket(). Whichever thread reaches the library first loads its configuration; the
 * other may pass through untouched while that load is in progress. The destructor joins the
 * thread and prints one JSON object on stdout: each socket's five options classed as "kernel"
 * (those of a fresh raw socket), "ours" (the library's defaults) or "other". */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

enum { KERNEL, OURS, OTHER, CLASSES };
static const int ours[5] = {1, 30, 10, 3, 60000};
static int kernel[5];
static struct sockaddr_in peer;
static int listener = -1;
static pthread_t thread;
static int thread_started;
static int rounds = 100;
static long thread_after_socket[CLASSES], thread_after_connect[CLASSES], thread_errors;
static int raw_after_connect = -1, raw_connect_rc = -1, main_after_socket = -1,
           main_after_connect = -1, main_connect_rc = -1;

static void read_five(int fd, int out[5]) {
    static const int what[5][2] = {{SOL_SOCKET, SO_KEEPALIVE},
                                   {IPPROTO_TCP, TCP_KEEPIDLE},
                                   {IPPROTO_TCP, TCP_KEEPINTVL},
                                   {IPPROTO_TCP, TCP_KEEPCNT},
                                   {IPPROTO_TCP, TCP_USER_TIMEOUT}};
    for (int i = 0; i < 5; i++) {
        int v = -1;
        socklen_t len = sizeof v;
        if (getsockopt(fd, what[i][0], what[i][1], &v, &len)) v = -errno;
        out[i] = v;
    }
}

static int classify(int fd) {
    int v[5];
    read_five(fd, v);
    if (!memcmp(v, kernel, sizeof v)) return KERNEL;
    if (!memcmp(v, ours, sizeof v)) return OURS;
    return OTHER;
}

static void *early_thread(void *unused) {
    (void)unused;
    for (int i = 0; i < rounds; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            thread_errors++;
            continue;
        }
        thread_after_socket[classify(fd)]++;
        if (connect(fd, (struct sockaddr *)&peer, sizeof peer)) thread_errors++;
        thread_after_connect[classify(fd)]++;
        close(fd);
    }
    return NULL;
}

static void say(const char *s) {
    ssize_t n = write(2, s, strlen(s));
    (void)n;
}

__attribute__((constructor)) static void early_constructor(void) {
    say("early_hooks: constructor starts\n");
    const char *r = getenv("EARLY_HOOKS_ROUNDS");
    if (r) rounds = atoi(r);
    /* Everything before the race by raw system calls, which the library cannot see. */
    int probe = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    read_five(probe, kernel);
    close(probe);
    listener = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof peer;
    if (listener < 0 || bind(listener, (struct sockaddr *)&peer, len) || listen(listener, 4096) ||
        getsockname(listener, (struct sockaddr *)&peer, &len)) {
        say("early_hooks: no listener\n");
        _exit(3);
    }
    thread_started = pthread_create(&thread, NULL, early_thread, NULL) == 0;
    /* connect() as the first hook: a TCP socket socket() never saw. */
    int raw = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    raw_connect_rc = connect(raw, (struct sockaddr *)&peer, sizeof peer);
    raw_after_connect = classify(raw);
    close(raw);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    main_after_socket = classify(fd);
    main_connect_rc = connect(fd, (struct sockaddr *)&peer, sizeof peer);
    main_after_connect = classify(fd);
    close(fd);
}

__attribute__((destructor)) static void early_destructor(void) {
    if (thread_started) pthread_join(thread, NULL);
    char out[1024];
    int n = snprintf(out, sizeof out,
                     "{\"thread_started\":%d,\"rounds\":%d,\"thread_errors\":%ld,"
                     "\"thread_after_socket\":{\"kernel\":%ld,\"ours\":%ld,\"other\":%ld},"
                     "\"thread_after_connect\":{\"kernel\":%ld,\"ours\":%ld,\"other\":%ld},"
                     "\"raw_connect_rc\":%d,\"raw_after_connect\":%d,"
                     "\"main_after_socket\":%d,\"main_connect_rc\":%d,\"main_after_connect\":%d}\n",
                     thread_started, rounds, thread_errors, thread_after_socket[KERNEL],
                     thread_after_socket[OURS], thread_after_socket[OTHER],
                     thread_after_connect[KERNEL], thread_after_connect[OURS],
                     thread_after_connect[OTHER], raw_connect_rc, raw_after_connect,
                     main_after_socket, main_connect_rc, main_after_connect);
    ssize_t w = write(1, out, (size_t)n);
    (void)w;
}
