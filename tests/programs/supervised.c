/* supervised: a statically linked client for the seccomp supervisor's tests
 * (cli/tests/supervise.rs), built with gcc -static, which no preload library reaches. Each mode
 * prints what it saw as lines on stdout, flushed; the five options as
 * {"keepalive":1,"idle":30,"interval":10,"count":3,"user_timeout":60000}.
 *
 *   hold HOST PORT        connect, print `connected OPTIONS`, wait for stdin to close
 *   self                  connect to a loopback listener of its own, print `connected OPTIONS`,
 *                         wait for a signal (a container's entrypoint with no network)
 *   own HOST PORT         the same, setting its own TCP_KEEPIDLE=100 right after socket()
 *   storm T F N           a loopback listener; F forked processes plus this one, each with T
 *                         threads making N connections; prints {"sockets":..,"configured":..}
 *                         (configured: SO_KEEPALIVE on and the expected idle, KEEPALIVE_IDLE's
 *                         number or 30)
 *   signals N MODE [connect]
 *                         a 50 us interval timer whose SIGALRM handler has SA_RESTART
 *                         (MODE restart) or not (norestart); N socket() calls (or socket() +
 *                         connect() to a loopback listener); prints the counts of EINTR, other
 *                         errors, sockets and configured sockets, and descriptors leaked
 *   daemon HOST PORT      forks a daemon (setsid) and exits 3 at once; the daemon waits until
 *                         its parent is gone, connects, prints `daemon OPTIONS`, waits 1.5 s and
 *                         exits 0
 *   after-kill HOST PORT  connects, prints `connected OPTIONS`; then for each line on stdin
 *                         tries a new TCP socket, a new UDP socket and a write on the
 *                         connection, and prints `tcp RESULT udp RESULT write RESULT`
 *   get HOST PORT         an HTTP GET with no timeout to a server that never answers; prints
 *                         `sent`, then `result ok|ERRNO SECONDS` when the read ends
 *   session HOST PORT     one HTTP GET answered (`first-done`), waits for a line on stdin, a
 *                         second GET on the same connection; prints `result ok|ERRNO SECONDS`
 */
#define _GNU_SOURCE
#include "five_options.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    printf("error %s %s\n", what, strerror(errno));
    fflush(stdout);
    _exit(1);
}

static int option(int fd, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    if (getsockopt(fd, level, name, &value, &len) != 0)
        return -1;
    return value;
}

/* `PREFIX OPTIONS`; an option getsockopt cannot read is -1. */
static void print_options(const char *prefix, int fd) {
    five_print(prefix, fd);
}

static struct sockaddr_storage address(const char *host, const char *port, socklen_t *len) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(atoi(port));
        *len = sizeof *in4;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(atoi(port));
        *len = sizeof *in6;
    } else {
        errno = EINVAL;
        die("address");
    }
    return ss;
}

static int dial(const char *host, const char *port, int own_idle) {
    socklen_t len;
    struct sockaddr_storage ss = address(host, port, &len);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (own_idle) {
        int idle = own_idle;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0)
            die("setsockopt");
    }
    if (connect(fd, (struct sockaddr *)&ss, len) != 0)
        die("connect");
    return fd;
}

static void wait_for_stdin_to_close(void) {
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- storm ---- */

static struct sockaddr_in loopback;
static int expected_idle = 30;

static int listener(void) {
    memset(&loopback, 0, sizeof loopback);
    loopback.sin_family = AF_INET;
    loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof loopback;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&loopback, sizeof loopback) != 0 || listen(l, 4096) != 0 ||
        getsockname(l, (struct sockaddr *)&loopback, &len) != 0)
        die("listener");
    return l;
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

struct counts {
    long sockets, configured, failed;
};

static void *connector(void *arg) {
    long n = (long)arg;
    struct counts *c = calloc(1, sizeof *c);
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&loopback, sizeof loopback) != 0) {
            c->failed++;
            if (fd >= 0)
                close(fd);
            continue;
        }
        c->sockets++;
        if (option(fd, SOL_SOCKET, SO_KEEPALIVE) == 1 &&
            option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == expected_idle)
            c->configured++;
        close(fd);
    }
    return c;
}

static struct counts threads(int t, long n) {
    pthread_t ids[64];
    struct counts total = {0, 0, 0};
    for (int i = 0; i < t; i++)
        pthread_create(&ids[i], NULL, connector, (void *)n);
    for (int i = 0; i < t; i++) {
        struct counts *c;
        pthread_join(ids[i], (void **)&c);
        total.sockets += c->sockets;
        total.configured += c->configured;
        total.failed += c->failed;
        free(c);
    }
    return total;
}

static int storm(int t, int f, long n) {
    const char *idle = getenv("EXPECTED_IDLE");
    if (idle)
        expected_idle = atoi(idle);
    int l = listener();
    int pipefd[2];
    if (pipe(pipefd) != 0)
        die("pipe");
    /* Fork first (a fork with threads running copies only the caller), then the threads. */
    for (int i = 0; i < f; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            struct counts c = threads(t, n);
            if (write(pipefd[1], &c, sizeof c) != sizeof c)
                _exit(2);
            _exit(0);
        }
    }
    pthread_t acc;
    pthread_create(&acc, NULL, acceptor, &l);
    struct counts total = threads(t, n);
    for (int i = 0; i < f; i++) {
        struct counts c;
        if (read(pipefd[0], &c, sizeof c) != sizeof c)
            die("read");
        total.sockets += c.sockets;
        total.configured += c.configured;
        total.failed += c.failed;
    }
    while (wait(NULL) > 0) {
    }
    printf("{\"sockets\":%ld,\"configured\":%ld,\"failed\":%ld}\n", total.sockets, total.configured,
           total.failed);
    return 0;
}

/* ---- signals ---- */

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) {
    (void)sig;
    ticks++;
}

static int count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int signals(long n, int restart, int with_connect) {
    int l = -1;
    pthread_t acc;
    if (with_connect) {
        l = listener();
        pthread_create(&acc, NULL, acceptor, &l);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    /* Only this thread takes the timer's signals. */
    int before = count_fds();
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);
    long eintr = 0, other = 0, ok = 0, configured = 0, retried_ok = 0;
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            if (errno == EINTR)
                eintr++;
            else
                other++;
            continue;
        }
        if (with_connect) {
            int rc = connect(fd, (struct sockaddr *)&loopback, sizeof loopback);
            if (rc != 0 && errno == EINTR) {
                eintr++;
                /* Without the supervisor an interrupted connect goes on connecting; trapped,
                 * it never started: either way the retry must end connected. */
                do {
                    rc = connect(fd, (struct sockaddr *)&loopback, sizeof loopback);
                } while (rc != 0 && (errno == EINTR || errno == EALREADY));
                if (rc == 0 || errno == EISCONN)
                    retried_ok++;
                rc = 0;
            }
            if (rc != 0) {
                other++;
                close(fd);
                continue;
            }
        }
        ok++;
        if (option(fd, SOL_SOCKET, SO_KEEPALIVE) == 1)
            configured++;
        close(fd);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    int after = count_fds();
    printf("{\"calls\":%ld,\"eintr\":%ld,\"other\":%ld,\"ok\":%ld,\"configured\":%ld,"
           "\"retried_ok\":%ld,\"ticks\":%ld,\"leaked\":%d}\n",
           n, eintr, other, ok, configured, retried_ok, (long)ticks, after - before);
    return 0;
}

/* ---- daemon ---- */

static int daemon_mode(const char *host, const char *port) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid > 0) {
        printf("parent exiting\n");
        fflush(stdout);
        _exit(3);
    }
    setsid();
    while (getppid() == parent)
        usleep(10000);
    usleep(300000);
    int fd = dial(host, port, 0);
    print_options("daemon", fd);
    usleep(1500000);
    close(fd);
    return 0;
}

/* ---- after-kill ---- */

static const char *outcome(int rc) {
    static char buf[4][64];
    static int i;
    char *b = buf[i++ % 4];
    if (rc >= 0)
        snprintf(b, 64, "ok");
    else
        snprintf(b, 64, "%s", strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    return b;
}

static int after_kill(const char *host, const char *port) {
    int fd = dial(host, port, 0);
    print_options("connected", fd);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        int t = socket(AF_INET, SOCK_STREAM, 0);
        const char *tcp = outcome(t);
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        const char *udp = outcome(u);
        const char *w = outcome(write(fd, "ping\n", 5) == 5 ? 0 : -1);
        printf("tcp %s udp %s write %s\n", tcp, udp, w);
        fflush(stdout);
        if (t >= 0)
            close(t);
        if (u >= 0)
            close(u);
    }
    return 0;
}

/* ---- HTTP ---- */

static const char request[] = "GET / HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n";

/* Reads one response of server.py's http mode (its body ends with "ok\n"); 0 or an errno. */
static int response(int fd) {
    char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r < 0)
            return errno;
        if (r == 0)
            return ECONNRESET;
        have += r;
        buf[have] = 0;
        if (strstr(buf, "\r\n\r\nok\n"))
            return 0;
    }
}

static void result(int err, double start) {
    printf("result %s %.2f\n", err == 0 ? "ok" : strerrorname_np(err), now() - start);
    fflush(stdout);
}

static int get(const char *host, const char *port) {
    int fd = dial(host, port, 0);
    if (write(fd, request, sizeof request - 1) < 0)
        die("write");
    printf("sent\n");
    fflush(stdout);
    double start = now();
    result(response(fd), start);
    return 0;
}

static int session(const char *host, const char *port) {
    int fd = dial(host, port, 0);
    if (write(fd, request, sizeof request - 1) < 0 || response(fd) != 0)
        die("first request");
    printf("first-done\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    double start = now();
    int err = write(fd, request, sizeof request - 1) < 0 ? errno : response(fd);
    result(err, start);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "hold") == 0) {
        int fd = dial(argv[2], argv[3], 0);
        print_options("connected", fd);
        wait_for_stdin_to_close();
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "own") == 0) {
        int fd = dial(argv[2], argv[3], 100);
        print_options("connected", fd);
        wait_for_stdin_to_close();
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "self") == 0) {
        int l = listener();
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&loopback, sizeof loopback) != 0)
            die("connect");
        print_options("connected", fd);
        for (;;)
            pause();
        close(l);
    }
    if (argc >= 5 && strcmp(argv[1], "storm") == 0)
        return storm(atoi(argv[2]), atoi(argv[3]), atol(argv[4]));
    if (argc >= 4 && strcmp(argv[1], "signals") == 0)
        return signals(atol(argv[2]), strcmp(argv[3], "restart") == 0,
                       argc >= 5 && strcmp(argv[4], "connect") == 0);
    if (argc >= 4 && strcmp(argv[1], "daemon") == 0)
        return daemon_mode(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "after-kill") == 0)
        return after_kill(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "get") == 0)
        return get(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "session") == 0)
        return session(argv[2], argv[3]);
    fprintf(stderr, "usage: supervised hold|self|own|storm|signals|daemon|after-kill|get|session ...\n");
    return 2;
}
