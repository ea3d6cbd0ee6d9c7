/* fd_cases: what a program sees of its sockets when descriptor numbers are reused, duplicated,
 * passed around or far up the table, and what every bad argument returns. Run by
 * tests/descriptors.rs with and without the library preloaded; prints one JSON object.
 *
 *   fd_cases CASE
 *
 * Cases that read options print {"keepalive":..,"idle":..,"interval":..,"count":..,
 * "user_timeout":..} of the socket the case is about; errno cases print {"rc":..,"errno":..}
 * for each call. A loopback listener made here is the peer of every connect(). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_in peer;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void listener(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0) die("socket");
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof peer;
    if (bind(l, (struct sockaddr *)&peer, len) || listen(l, 64) ||
        getsockname(l, (struct sockaddr *)&peer, &len))
        die("listen");
    /* Keep it out of the way of the numbers the cases reuse. */
    if (dup2(l, 1000) < 0) die("dup2 listener");
    close(l);
}

static int raw_socket(int domain, int type) {
    return (int)syscall(SYS_socket, domain, type, 0);
}

static int get(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len)) return -errno;
    return v;
}

static void print_options(const char *label, int fd) {
    printf("\"%s\":{\"keepalive\":%d,\"idle\":%d,\"interval\":%d,\"count\":%d,\"user_timeout\":%d}",
           label, get(fd, SOL_SOCKET, SO_KEEPALIVE), get(fd, IPPROTO_TCP, TCP_KEEPIDLE),
           get(fd, IPPROTO_TCP, TCP_KEEPINTVL), get(fd, IPPROTO_TCP, TCP_KEEPCNT),
           get(fd, IPPROTO_TCP, TCP_USER_TIMEOUT));
}

static void do_connect(int fd) {
    if (connect(fd, (struct sockaddr *)&peer, sizeof peer)) die("connect");
}

static int set_int(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

/* A TCP socket that never went through socket(): made by the raw system call, at the number a
 * closed socket of another kind had. */
static void reused_number(void) {
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    close(u);
    int t = raw_socket(AF_INET, SOCK_STREAM);
    if (t != u) die("number not reused");
    do_connect(t);
    printf("{");
    print_options("tcp_on_old_udp_number", t);
    printf("}\n");
}

/* The same, received over a UNIX socket with SCM_RIGHTS. */
static void scm_rights(void) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair)) die("socketpair");
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    int t = raw_socket(AF_INET, SOCK_STREAM);
    close(u);
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    char control[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &t, sizeof t);
    if (sendmsg(pair[0], &msg, 0) != 1) die("sendmsg");
    close(t);
    if (recvmsg(pair[1], &msg, 0) != 1) die("recvmsg");
    int got;
    memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof got);
    do_connect(got);
    printf("{\"same_number\":%s,", got == u ? "true" : "false");
    print_options("received", got);
    printf("}\n");
}

/* The program turns keepalive off, duplicates the socket each way there is, and connects the
 * duplicate: keepalive must stay off. */
static void opt_out_on_duplicates(int high) {
    struct rlimit r;
    if (high && !getrlimit(RLIMIT_NOFILE, &r)) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
    printf("{");
    const char *how[] = {"dup", "dup2", "dup3", "f_dupfd", "f_dupfd_cloexec"};
    for (int i = 0; i < 5; i++) {
        int t = socket(AF_INET, SOCK_STREAM, 0);
        if (set_int(t, SOL_SOCKET, SO_KEEPALIVE, 0)) die("setsockopt");
        int target = high ? high + i : 500 + i;
        int d;
        switch (i) {
        case 0: d = dup(t); break;
        case 1: d = dup2(t, target); break;
        case 2: d = dup3(t, target, O_CLOEXEC); break;
        case 3: d = fcntl(t, F_DUPFD, target); break;
        default: d = fcntl(t, F_DUPFD_CLOEXEC, target); break;
        }
        if (d < 0) die(how[i]);
        close(t);
        do_connect(d);
        printf("%s\"%s_fd\":%d,", i ? "," : "", how[i], d);
        print_options(how[i], d);
        close(d);
    }
    printf("}\n");
}

/* A high descriptor, as servers with many connections have: the library's options, and the
 * program's own choice respected. */
static void high_descriptor(int high) {
    struct rlimit r;
    if (!getrlimit(RLIMIT_NOFILE, &r)) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int h = dup2(t, high);
    close(t);
    if (h < 0) die("dup2 high");
    /* socket() itself returning a high number: fill the gap below with dup2 first. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int hs = dup2(s, high + 1);
    close(s);
    set_int(hs, IPPROTO_TCP, TCP_KEEPIDLE, 7);
    do_connect(h);
    do_connect(hs);
    printf("{\"fd\":%d,", h);
    print_options("high", h);
    printf(",");
    print_options("high_own_idle", hs);
    printf("}\n");
}

/* A UDP socket at the number of a closed TCP one; the program sets TCP options on it. */
static void stale_tcp_mark(void) {
    int t = socket(AF_INET, SOCK_STREAM, 0);
    close(t);
    int u = raw_socket(AF_INET, SOCK_DGRAM);
    if (u != t) die("number not reused");
    int rc1 = set_int(u, IPPROTO_TCP, TCP_KEEPIDLE, 30);
    int e1 = rc1 ? errno : 0;
    int rc2 = set_int(u, SOL_SOCKET, SO_KEEPALIVE, 1);
    int e2 = rc2 ? errno : 0;
    printf("{\"keepidle_on_udp\":{\"rc\":%d,\"errno\":%d},\"so_keepalive_on_udp\":{\"rc\":%d,"
           "\"errno\":%d},\"udp_keepalive_after\":%d}\n",
           rc1, e1, rc2, e2, get(u, SOL_SOCKET, SO_KEEPALIVE));
}

/* Every bad argument, with the result and errno the program sees. */
static void errnos(void) {
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    int x = socket(AF_UNIX, SOCK_STREAM, 0);
    int file = open("/dev/null", O_RDONLY);
    int v = 30;
    struct {
        const char *name;
        int fd, level, opt;
        const void *value;
        socklen_t len;
    } calls[] = {
        {"bad_fd", 999, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v},
        {"negative_fd", -1, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v},
        {"not_a_socket", file, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v},
        {"short_len", t, IPPROTO_TCP, TCP_KEEPIDLE, &v, 2},
        {"null_value", t, IPPROTO_TCP, TCP_KEEPIDLE, NULL, sizeof v},
        {"bad_pointer", t, IPPROTO_TCP, TCP_KEEPIDLE, (const void *)16, sizeof v},
        {"bad_pointer_keepalive", t, SOL_SOCKET, SO_KEEPALIVE, (const void *)16, sizeof v},
        {"bad_pointer_user_timeout", t, IPPROTO_TCP, TCP_USER_TIMEOUT, (const void *)16, sizeof v},
        {"zero_idle", t, IPPROTO_TCP, TCP_KEEPIDLE, "\0\0\0\0", 4},
        {"huge_count", t, IPPROTO_TCP, TCP_KEEPCNT, "\xff\x00\x00\x00", 4},
        {"negative_user_timeout", t, IPPROTO_TCP, TCP_USER_TIMEOUT, "\xff\xff\xff\xff", 4},
        {"tcp_option_on_udp", u, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v},
        {"tcp_option_on_unix", x, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof v},
        {"keepalive_on_unix", x, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v},
    };
    printf("{");
    for (unsigned i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        errno = 0;
        int rc = setsockopt(calls[i].fd, calls[i].level, calls[i].opt, calls[i].value, calls[i].len);
        printf("%s\"%s\":{\"rc\":%d,\"errno\":%d}", i ? "," : "", calls[i].name, rc, rc ? errno : 0);
    }
    /* connect() with bad arguments, non-blocking so nothing waits. */
    int n = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    errno = 0;
    int rc = connect(n, (const struct sockaddr *)16, sizeof(struct sockaddr_in));
    printf(",\"connect_bad_pointer\":{\"rc\":%d,\"errno\":%d}", rc, rc ? errno : 0);
    errno = 0;
    rc = connect(999, (const struct sockaddr *)&peer, sizeof peer);
    printf(",\"connect_bad_fd\":{\"rc\":%d,\"errno\":%d}", rc, rc ? errno : 0);
    errno = 0;
    rc = connect(n, (const struct sockaddr *)&peer, 3);
    printf(",\"connect_short_len\":{\"rc\":%d,\"errno\":%d}", rc, rc ? errno : 0);
    printf("}\n");
}

/* The program closed its stderr; its next socket gets number 2. Nothing of the library's may
 * reach the peer. Prints how many bytes the peer received before the program's own "ok". */
static void closed_stderr(void) {
    int l = 1000;
    close(2);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    do_connect(t);
    int a = accept(l, NULL, NULL);
    if (write(t, "ok", 2) != 2) die("write");
    char buf[4096];
    ssize_t got = 0, n;
    while (got < 4096 && (n = read(a, buf + got, sizeof buf - got)) > 0) {
        got += n;
        if (got >= 2 && memcmp(buf + got - 2, "ok", 2) == 0) break;
    }
    printf("{\"fd\":%d,\"peer_received\":%zd}\n", t, got);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fd_cases CASE\n");
        return 2;
    }
    listener();
    const char *c = argv[1];
    if (!strcmp(c, "reused_number")) reused_number();
    else if (!strcmp(c, "scm_rights")) scm_rights();
    else if (!strcmp(c, "opt_out_on_duplicates")) opt_out_on_duplicates(0);
    else if (!strcmp(c, "opt_out_on_high_duplicates")) opt_out_on_duplicates(argc > 2 ? atoi(argv[2]) : 15000);
    else if (!strcmp(c, "high_descriptor")) high_descriptor(argc > 2 ? atoi(argv[2]) : 15000);
    else if (!strcmp(c, "stale_tcp_mark")) stale_tcp_mark();
    else if (!strcmp(c, "errnos")) errnos();
    else if (!strcmp(c, "closed_stderr")) closed_stderr();
    else {
        fprintf(stderr, "fd_cases: unknown case %s\n", c);
        return 2;
    }
    return 0;
}
