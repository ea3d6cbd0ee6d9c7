/* trace_client: what a program can observe of the seccomp supervisor's socket trap, for
 * cli/tests/supervise_trace.rs, which runs each mode bare and under `keepalive-shim run --mode
 * seccomp` and compares. Built with gcc -static. Each mode prints one JSON line on stdout.
 *
 *   trace_client rst N          N times: a client with SO_LINGER {1,0} connects to a loopback
 *                               listener of its own and closes; right after close() returns,
 *                               the accepted side must already see the reset (ECONNRESET).
 *                               {"n":N,"late":L,"max_late_us":U}
 *   trace_client linger N       N times: SO_LINGER {1,2}, unsent data to a peer that does not
 *                               read, close(); meanwhile a child makes TCP sockets and times them.
 *                               {"close_ms":[...],"max_socket_ms":M}
 *   trace_client connect PORT   connects to 127.0.0.1:PORT: {"connect":"ok"} or the errno name.
 *   trace_client serve PORT     accepts on 127.0.0.1:PORT for ever (closing each connection).
 *   trace_client eintr N USEC   a timer every USEC µs (handler without SA_RESTART) while making
 *                               N TCP sockets: {"n":N,"eintr":E,"other":O,"signals":S}
 *   trace_client sockets N      N TCP sockets, each with setsockopt(TCP_KEEPIDLE, 5) and
 *                               closed; the parent's (the supervisor's) resident memory before
 *                               and after: {"n":N,"before_kb":B,"after_kb":A,"kept":K}
 *   trace_client options        one TCP socket's five options read back:
 *                               {"keepalive":..,"idle":..,"interval":..,"count":..,"user_timeout":..}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void die(const char *what) {
    printf("{\"error\":\"%s: %s\"}\n", what, strerror(errno));
    exit(1);
}

/* A listener on 127.0.0.1 (port 0: any), with receive buffer `rcvbuf` (0: the default). */
static int listener(int port, int rcvbuf, struct sockaddr_in *addr) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0)
        die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf)
        setsockopt(l, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons(port);
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(l, (struct sockaddr *)addr, sizeof *addr) != 0 || listen(l, 128) != 0 ||
        getsockname(l, (struct sockaddr *)addr, &len) != 0)
        die("listener");
    return l;
}

static int rst(long n) {
    struct sockaddr_in addr;
    int l = listener(0, 0, &addr);
    long late = 0;
    long long max_late = 0;
    for (long i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0)
            die("socket");
        struct linger lg = {1, 0};
        if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
            die("SO_LINGER");
        if (connect(c, (struct sockaddr *)&addr, sizeof addr) != 0)
            die("connect");
        int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0)
            die("accept");
        close(c);
        long long t0 = now_us();
        char b;
        ssize_t r = recv(a, &b, 1, MSG_DONTWAIT | MSG_PEEK);
        if (!(r < 0 && errno == ECONNRESET)) {
            late++;
            /* How late: until the reset arrives (at most a second). */
            for (;;) {
                r = recv(a, &b, 1, MSG_DONTWAIT | MSG_PEEK);
                long long t = now_us() - t0;
                if ((r < 0 && errno == ECONNRESET) || t > 1000000) {
                    if (t > max_late)
                        max_late = t;
                    break;
                }
            }
        }
        close(a);
    }
    printf("{\"n\":%ld,\"late\":%ld,\"max_late_us\":%lld}\n", n, late, max_late);
    return 0;
}

static int linger_close(long n) {
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe");
    long long stop = now_us() + (n * 2 + 2) * 1000000LL;
    pid_t child = fork();
    if (child == 0) {
        /* Another process of the tree: its socket() must never wait for the lingering close. */
        close(fds[0]);
        long long max = 0;
        while (now_us() < stop) {
            long long t0 = now_us();
            int s = socket(AF_INET, SOCK_STREAM, 0);
            long long t = now_us() - t0;
            if (s >= 0)
                close(s);
            if (t > max)
                max = t;
            usleep(2000);
        }
        if (write(fds[1], &max, sizeof max) != sizeof max)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    printf("{\"close_ms\":[");
    for (long i = 0; i < n; i++) {
        struct sockaddr_in addr;
        int l = listener(0, 2048, &addr);
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0)
            die("socket");
        int small = 4096;
        setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        struct linger lg = {1, 2};
        if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
            die("SO_LINGER");
        if (connect(c, (struct sockaddr *)&addr, sizeof addr) != 0)
            die("connect");
        int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0)
            die("accept");
        /* Fill the peer's window and our send buffer: the peer never reads. */
        fcntl(c, F_SETFL, O_NONBLOCK);
        static char junk[65536];
        long long t_fill = now_us();
        while (now_us() - t_fill < 200000) {
            if (send(c, junk, sizeof junk, MSG_NOSIGNAL) < 0 && errno == EAGAIN) {
                usleep(20000);
                if (send(c, junk, sizeof junk, MSG_NOSIGNAL) < 0 && errno == EAGAIN)
                    break;
            }
        }
        fcntl(c, F_SETFL, 0);
        long long t0 = now_us();
        close(c);
        long long ms = (now_us() - t0) / 1000;
        printf("%s%lld", i ? "," : "", ms);
        fflush(stdout);
        close(a);
        close(l);
    }
    long long max = -1;
    if (read(fds[0], &max, sizeof max) != sizeof max)
        max = -1;
    waitpid(child, NULL, 0);
    printf("],\"max_socket_ms\":%lld}\n", max < 0 ? -1 : max / 1000);
    return 0;
}

static int connect_to(int port) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0) {
        printf("{\"connect\":\"socket: %s\"}\n", strerrorname_np(errno));
        return 0;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c, (struct sockaddr *)&addr, sizeof addr) == 0)
        printf("{\"connect\":\"ok\",\"uid\":%d}\n", (int)getuid());
    else
        printf("{\"connect\":\"%s\",\"uid\":%d}\n", strerrorname_np(errno), (int)getuid());
    return 0;
}

static _Noreturn void serve(int port) {
    struct sockaddr_in addr;
    int l = listener(port, 0, &addr);
    printf("{\"listening\":%d}\n", ntohs(addr.sin_port));
    fflush(stdout);
    for (;;) {
        int a = accept(l, NULL, NULL);
        if (a >= 0)
            close(a);
    }
}

static volatile long signals;
static void on_alarm(int sig) {
    (void)sig;
    signals++;
}

static int eintr(long n, long usec) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, usec}, {0, usec}};
    setitimer(ITIMER_REAL, &it, NULL);
    long intr = 0, other = 0;
    for (long i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s >= 0) {
            while (close(s) != 0 && errno == EINTR)
                ;
        } else if (errno == EINTR) {
            intr++;
        } else {
            other++;
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("{\"n\":%ld,\"eintr\":%ld,\"other\":%ld,\"signals\":%ld}\n", n, intr, other, signals);
    return 0;
}

/* VmRSS of process `pid`, in kB. */
static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int sockets(long n) {
    pid_t parent = getppid();
    long kept = 0;
    long before = 0;
    for (long i = 0; i < n; i++) {
        if (i == 1000)
            before = rss_kb(parent);
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            die("socket");
        int idle = 5, got = 0;
        socklen_t len = sizeof got;
        if (setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0)
            die("setsockopt");
        getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &got, &len);
        if (got != idle)
            kept++;
        close(s);
    }
    printf("{\"n\":%ld,\"before_kb\":%ld,\"after_kb\":%ld,\"kept\":%ld}\n", n, before,
           rss_kb(parent), kept);
    return 0;
}

static int options(void) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket");
    int v[5];
    const int level[5] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP};
    const int name[5] = {SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT};
    for (int i = 0; i < 5; i++) {
        socklen_t len = sizeof v[i];
        if (getsockopt(s, level[i], name[i], &v[i], &len) != 0)
            die("getsockopt");
    }
    printf("{\"keepalive\":%d,\"idle\":%d,\"interval\":%d,\"count\":%d,\"user_timeout\":%d}\n",
           v[0], v[1], v[2], v[3], v[4]);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    long a = argc > 2 ? atol(argv[2]) : 0, b = argc > 3 ? atol(argv[3]) : 0;
    int rc = 2;
    if (strcmp(mode, "rst") == 0)
        rc = rst(a);
    else if (strcmp(mode, "linger") == 0)
        rc = linger_close(a);
    else if (strcmp(mode, "connect") == 0)
        rc = connect_to((int)a);
    else if (strcmp(mode, "serve") == 0)
        serve((int)a);
    else if (strcmp(mode, "eintr") == 0)
        rc = eintr(a, b);
    else if (strcmp(mode, "sockets") == 0)
        rc = sockets(a);
    else if (strcmp(mode, "options") == 0)
        rc = options();
    fflush(stdout);
    return rc;
}
