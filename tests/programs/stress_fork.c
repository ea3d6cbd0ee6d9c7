/* stress_fork: threads x fork x exec, the shape of socket_wrapper's fork-with-threads deadlock
 * test. Run by tests/stress_*.rs with and without the library preloaded; prints one JSON object.
 *
 *   stress_fork THREADS ITERATIONS FORKS
 *
 * THREADS worker threads each loop ITERATIONS times over TCP (socket, setsockopt, dup, connect to
 * a loopback listener, close; some made by the raw system call, some turning keepalive off),
 * UDP (socket, connect, close) and UNIX stream sockets (socket, connect to an abstract listener,
 * close), reading the options back with getsockopt. Meanwhile the main thread makes FORKS
 * children, one after another: a third fork and exec this program again ("exec-child", which
 * makes and connects a TCP socket of its own), a third fork and make sockets in the child only,
 * a third are started with posix_spawn. A child reports what its sockets had in its exit status
 * (16 + 3 x the forked child's class + the exec'd program's class).
 *
 * Each TCP socket's five options are classed as "kernel" (those of a socket made by the raw
 * system call at start: the namespace's defaults), "ours" (the library's defaults: keepalive on,
 * 30 s, 10 s, 3, 60000 ms) or "other" (anything else: a half-configured socket). A lock held
 * across fork() by the library would hang a child; a crash or a wrong errno shows in the counts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

extern char **environ;

enum { KERNEL, OURS, OTHER, CLASSES };
static const int ours[5] = {1, 30, 10, 3, 60000};
static int kernel[5];

static struct sockaddr_in tcp_peer;
static struct sockaddr_un unix_peer;
static socklen_t unix_peer_len;
static int tcp_listener = -1, unix_listener = -1;
static volatile int stop_accepting;
static int iterations;
static volatile int workers_running;

struct counts {
    long tcp, raw_tcp, connect_errors, opt_outs, opt_outs_kept;
    long after_socket[CLASSES], after_connect[CLASSES], raw_after_connect[CLASSES];
    long udp, udp_keepalive, udp_errors, unix_, unix_keepalive, unix_errors;
};

static void die(const char *what) {
    perror(what);
    exit(2);
}

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

static int keepalive_of(int fd) {
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len)) return -errno;
    return v;
}

static int set_int(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

/* Accepts and closes every connection on both listeners until told to stop. */
static void *acceptor(void *unused) {
    (void)unused;
    struct pollfd p[2] = {{tcp_listener, POLLIN, 0}, {unix_listener, POLLIN, 0}};
    while (!stop_accepting) {
        if (poll(p, 2, 50) <= 0) continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & POLLIN)) continue;
            int a = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (a >= 0) close(a);
        }
    }
    return NULL;
}

static void tcp_round(struct counts *c, int j) {
    int raw = j % 8 == 5;
    int fd = raw ? (int)syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)
                 : socket(AF_INET, SOCK_STREAM | (j & 1 ? SOCK_CLOEXEC : 0), 0);
    if (fd < 0) die("socket tcp");
    if (raw) c->raw_tcp++;
    else {
        c->tcp++;
        c->after_socket[classify(fd)]++;
    }
    int opt_out = !raw && j % 5 == 4;
    if (set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1)) die("TCP_NODELAY");
    if (opt_out) {
        c->opt_outs++;
        if (set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 0)) die("SO_KEEPALIVE 0");
    }
    if (j % 7 == 3) { /* connect through a duplicate, the original closed */
        int d = dup(fd);
        if (d < 0) die("dup");
        close(fd);
        fd = d;
    }
    if (connect(fd, (struct sockaddr *)&tcp_peer, sizeof tcp_peer)) {
        c->connect_errors++;
    } else if (opt_out) {
        c->opt_outs_kept += keepalive_of(fd) == 0;
    } else if (raw) {
        c->raw_after_connect[classify(fd)]++;
    } else {
        c->after_connect[classify(fd)]++;
    }
    close(fd);
}

static void *worker(void *arg) {
    struct counts *c = arg;
    for (int j = 0; j < iterations; j++) {
        switch (j % 4) {
        case 0:
        case 1:
            tcp_round(c, j);
            break;
        case 2: {
            int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (u < 0) die("socket udp");
            c->udp++;
            if (connect(u, (struct sockaddr *)&tcp_peer, sizeof tcp_peer)) c->udp_errors++;
            c->udp_keepalive += keepalive_of(u) != 0;
            close(u);
            break;
        }
        default: {
            int x = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (x < 0) die("socket unix");
            c->unix_++;
            if (connect(x, (struct sockaddr *)&unix_peer, unix_peer_len)) c->unix_errors++;
            c->unix_keepalive += keepalive_of(x) != 0;
            close(x);
        }
        }
    }
    __atomic_sub_fetch(&workers_running, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A TCP socket made and connected here: its class before and after connect, as one digit
 * (0 kernel, 1 ours, 2 other, and 2 whenever the two disagree or a call failed). */
static int one_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return OTHER;
    int before = classify(fd);
    int rc = connect(fd, (struct sockaddr *)&tcp_peer, sizeof tcp_peer);
    int after = classify(fd);
    close(fd);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    int udp_ok = u >= 0 && keepalive_of(u) == 0;
    if (u >= 0) close(u);
    return rc == 0 && before == after && udp_ok ? before : OTHER;
}

static void set_kernel_defaults(void) {
    int raw = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (raw < 0) die("raw socket");
    read_five(raw, kernel);
    close(raw);
}

static void print_classes(const char *label, const long v[CLASSES]) {
    printf("\"%s\":{\"kernel\":%ld,\"ours\":%ld,\"other\":%ld}", label, v[KERNEL], v[OURS],
           v[OTHER]);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "exec-child")) {
        /* The exec'd program: argv[2] is the forked child's class, argv[3] the port. */
        set_kernel_defaults();
        tcp_peer.sin_family = AF_INET;
        tcp_peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        tcp_peer.sin_port = htons((unsigned short)atoi(argv[3]));
        return 16 + 3 * atoi(argv[2]) + one_socket();
    }
    if (argc != 4) {
        fprintf(stderr, "usage: stress_fork THREADS ITERATIONS FORKS\n");
        return 2;
    }
    int threads = atoi(argv[1]), forks = atoi(argv[3]);
    iterations = atoi(argv[2]);
    if (threads < 1 || threads > 64 || iterations < 1 || forks < 0) die("arguments");
    set_kernel_defaults();

    tcp_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tcp_peer.sin_family = AF_INET;
    tcp_peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof tcp_peer;
    if (tcp_listener < 0 || bind(tcp_listener, (struct sockaddr *)&tcp_peer, len) ||
        listen(tcp_listener, 4096) || getsockname(tcp_listener, (struct sockaddr *)&tcp_peer, &len))
        die("tcp listener");
    unix_listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unix_peer.sun_family = AF_UNIX;
    /* An abstract name: nothing on disk to clean up. */
    int n = snprintf(unix_peer.sun_path + 1, sizeof unix_peer.sun_path - 1, "kas-stress-%d",
                     (int)getpid());
    unix_peer_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    if (unix_listener < 0 || bind(unix_listener, (struct sockaddr *)&unix_peer, unix_peer_len) ||
        listen(unix_listener, 4096))
        die("unix listener");

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t acceptor_thread;
    if (pthread_create(&acceptor_thread, NULL, acceptor, NULL)) die("pthread_create");
    pthread_t tid[64];
    struct counts per[64];
    memset(per, 0, sizeof per);
    workers_running = threads;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&tid[i], NULL, worker, &per[i])) die("pthread_create");

    char self[4096];
    ssize_t self_len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (self_len <= 0) die("readlink");
    self[self_len] = 0;
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(tcp_peer.sin_port));

    long fork_class[CLASSES] = {0}, exec_class[CLASSES] = {0}, spawn_class[CLASSES] = {0};
    long child_failures = 0, forks_during_work = 0;
    for (int k = 0; k < forks; k++) {
        pid_t pid;
        forks_during_work += __atomic_load_n(&workers_running, __ATOMIC_SEQ_CST) > 0;
        int how = k % 3;
        if (how == 2) {
            char *args[] = {self, "exec-child", "0", port, NULL};
            int rc = posix_spawn(&pid, self, NULL, NULL, args, environ);
            if (rc) {
                errno = rc;
                die("posix_spawn");
            }
        } else {
            pid = fork();
            if (pid < 0) die("fork");
            if (pid == 0) {
                int mine = one_socket();
                if (how == 1) _exit(16 + 3 * mine);
                char digit[2] = {(char)('0' + mine), 0};
                execl(self, self, "exec-child", digit, port, (char *)NULL);
                _exit(120);
            }
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) die("waitpid");
        int code = WIFEXITED(status) ? WEXITSTATUS(status) - 16 : -1;
        if (code < 0 || code >= 9) {
            child_failures++;
            fprintf(stderr, "child %d (kind %d): status %d\n", (int)pid, how, status);
            continue;
        }
        if (how == 2) {
            spawn_class[code % 3]++;
        } else {
            fork_class[code / 3]++;
            if (how == 0) exec_class[code % 3]++;
        }
        usleep(200);
    }

    struct counts sum;
    memset(&sum, 0, sizeof sum);
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        long *s = (long *)&sum, *p = (long *)&per[i];
        for (size_t f = 0; f < sizeof sum / sizeof(long); f++) s[f] += p[f];
    }
    stop_accepting = 1;
    pthread_join(acceptor_thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;

    printf("{\"threads\":%d,\"iterations\":%d,\"forks\":%d,\"tcp\":%ld,\"raw_tcp\":%ld,", threads,
           iterations, forks, sum.tcp, sum.raw_tcp);
    print_classes("tcp_after_socket", sum.after_socket);
    printf(",");
    print_classes("tcp_after_connect", sum.after_connect);
    printf(",");
    print_classes("raw_tcp_after_connect", sum.raw_after_connect);
    printf(",\"connect_errors\":%ld,\"opt_outs\":%ld,\"opt_outs_kept\":%ld,", sum.connect_errors,
           sum.opt_outs, sum.opt_outs_kept);
    printf("\"udp\":%ld,\"udp_keepalive\":%ld,\"udp_errors\":%ld,", sum.udp, sum.udp_keepalive,
           sum.udp_errors);
    printf("\"unix\":%ld,\"unix_keepalive\":%ld,\"unix_errors\":%ld,", sum.unix_,
           sum.unix_keepalive, sum.unix_errors);
    print_classes("fork_child", fork_class);
    printf(",");
    print_classes("exec_child", exec_class);
    printf(",");
    print_classes("spawned", spawn_class);
    printf(",\"child_failures\":%ld,\"forks_during_work\":%ld,\"elapsed_ms\":%ld}\n",
           child_failures, forks_during_work, ms);
    return 0;
}
