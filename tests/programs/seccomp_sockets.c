/* seccomp_sockets: a program whose seccomp filter makes setsockopt (mode "set"), or setsockopt
 * and getsockopt (mode "both"), fail with EPERM, as container runtimes and sandboxes do. Run by
 * tests/stress_*.rs with and without the library preloaded: every result the program sees must be
 * the same (descriptor numbers, return values, errno, including errno left untouched by calls
 * that succeed). Prints one JSON object.
 *
 *   seccomp_sockets set|both
 *
 * The filter is raw BPF installed with prctl(PR_SET_NO_NEW_PRIVS) and
 * prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): no libseccomp, no privileges. The loopback
 * listener and a refused port are made before it, by the raw system call so that the library
 * configures neither (an accepted socket would otherwise inherit the library's options). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "unsupported architecture"
#endif

/* errno before a call that succeeds: it must come back unchanged. */
#define SENTINEL 4242

static int first = 1;

static void field(const char *name, int rc, int err) {
    printf("%s\"%s\":{\"rc\":%d,\"errno\":%d}", first ? "" : ",", name, rc, err);
    first = 0;
}

static void install_filter(int both) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setsockopt, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, both ? __NR_getsockopt : 0xffffffffu, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0)) {
        perror("seccomp");
        _exit(2);
    }
}

/* A TCP socket's five options, or the negated errno of each read. */
static void five(const char *name, int fd) {
    static const int what[5][2] = {{SOL_SOCKET, SO_KEEPALIVE},
                                   {IPPROTO_TCP, TCP_KEEPIDLE},
                                   {IPPROTO_TCP, TCP_KEEPINTVL},
                                   {IPPROTO_TCP, TCP_KEEPCNT},
                                   {IPPROTO_TCP, TCP_USER_TIMEOUT}};
    printf(",\"%s\":[", name);
    for (int i = 0; i < 5; i++) {
        int v = -1;
        socklen_t len = sizeof v;
        if (getsockopt(fd, what[i][0], what[i][1], &v, &len)) v = -errno;
        printf("%s%d", i ? "," : "", v);
    }
    printf("]");
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "set") && strcmp(argv[1], "both"))) {
        fprintf(stderr, "usage: seccomp_sockets set|both\n");
        return 2;
    }
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in refused = peer;
    socklen_t len = sizeof peer;
    int l = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&peer, len) || listen(l, 16) ||
        getsockname(l, (struct sockaddr *)&peer, &len)) {
        perror("listener");
        return 2;
    }
    /* A port nobody listens on: bound, then closed. */
    int r = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (r < 0 || bind(r, (struct sockaddr *)&refused, len) ||
        getsockname(r, (struct sockaddr *)&refused, &len)) {
        perror("refused port");
        return 2;
    }
    close(r);
    install_filter(!strcmp(argv[1], "both"));

    int v = 45;
    printf("{");
    errno = SENTINEL;
    int t = socket(AF_INET, SOCK_STREAM, 0);
    field("tcp_socket", t, errno);
    errno = SENTINEL;
    int t6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    field("tcp6_socket", t6, errno);
    errno = 0;
    int rc = setsockopt(t, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v);
    field("own_keepidle", rc, rc ? errno : 0);
    errno = 0;
    rc = setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
    field("own_keepalive", rc, rc ? errno : 0);
    errno = 0;
    rc = setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
    field("own_nodelay", rc, rc ? errno : 0);
    errno = SENTINEL;
    rc = connect(t, (struct sockaddr *)&peer, sizeof peer);
    field("connect", rc, errno);
    errno = SENTINEL;
    int a = accept(l, NULL, NULL);
    field("accept", a, errno);
    five("connected_options", t);
    five("accepted_options", a);

    errno = 0;
    int n = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    rc = connect(n, (struct sockaddr *)&peer, sizeof peer);
    field("nonblocking_connect", rc, rc ? errno : 0);
    errno = 0;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    rc = connect(c, (struct sockaddr *)&refused, sizeof refused);
    field("refused_connect", rc, rc ? errno : 0);

    /* A TCP socket socket() never saw: the library can only act in connect(). */
    int raw = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    errno = SENTINEL;
    rc = connect(raw, (struct sockaddr *)&peer, sizeof peer);
    field("raw_connect", rc, errno);
    five("raw_options", raw);

    errno = SENTINEL;
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    field("udp_socket", u, errno);
    errno = SENTINEL;
    rc = connect(u, (struct sockaddr *)&peer, sizeof peer);
    field("udp_connect", rc, errno);
    errno = 0;
    rc = setsockopt(u, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
    field("udp_keepalive", rc, rc ? errno : 0);
    errno = SENTINEL;
    int x = socket(AF_UNIX, SOCK_STREAM, 0);
    field("unix_socket", x, errno);
    /* The next free number: the library opened nothing of its own. */
    errno = SENTINEL;
    int f = open("/dev/null", O_RDONLY);
    field("next_descriptor", f, errno);
    printf("}\n");
    return 0;
}
