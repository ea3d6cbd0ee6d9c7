/* env_abuse: an environment no exec could carry, handed to keepalive-shim's constructor. The
 * kernel limits one environment string to 128 KiB and all of them to a quarter of the stack
 * limit, so this program builds the environment in its own memory (replacing `environ`) and
 * then dlopen()s the library, whose constructor reads `environ` as it would at start-up. Run by
 * tests/stress_*.rs with and without a library path.
 *
 *   env_abuse none|PATH [VARIABLES]
 *
 * The environment: VARIABLES (default 100000) ordinary variables; a 1 MiB value of someone
 * else's; a 1 MiB value of KEEPALIVE_IDLE; non-UTF-8 names and values, ours and others';
 * control characters and an escape sequence in a value of ours; a KEEPALIVE_* name with a
 * newline and a forged log line in it; an entry without '='; an empty entry; KEEPALIVE_COUNT
 * twice (4, then 5: the first counts, as with getenv). Then a TCP socket is made and connected
 * through the library's own socket() and connect() (found with dlsym; libc's without a path),
 * and one JSON object is printed: the process id and the five options of that socket. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

extern char **environ;

static void die(const char *what) {
    fprintf(stderr, "env_abuse: %s: %s\n", what, strerror(errno));
    exit(2);
}

static char *huge(const char *name, char fill) {
    size_t n = strlen(name), size = 1 << 20;
    char *s = malloc(n + size + 1);
    if (!s) die("malloc");
    memcpy(s, name, n);
    memset(s + n, fill, size);
    s[n + size] = 0;
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: env_abuse none|PATH [VARIABLES]\n");
        return 2;
    }
    long count = argc > 2 ? atol(argv[2]) : 100000;
    static char *special[] = {
        "PATH=/usr/bin:/bin",
        NULL, /* 1 MiB of someone else's */
        NULL, /* 1 MiB of KEEPALIVE_IDLE */
        "KEEPALIVE_COUNT=4",
        "KEEPALIVE_COUNT=5",
        "KEEPALIVE_INTERVAL=\xff\xfe\x80",
        "KEEPALIVE_USER_TIMEOUT=5\x1b[31m\r\t\x01s",
        "KEEPALIVE_X\nkeepalive-shim[1]: FORGED=1",
        "KEEPALIVE_\xc3\x28=1",
        "NOT_UTF8_\xff\xfe=\xc0\xaf",
        "CONTROL=\x1b]0;title\x07\n\r",
        "NO_EQUALS_SIGN",
        "",
        "=starts_with_equals",
    };
    size_t nspecial = sizeof special / sizeof special[0];
    special[1] = huge("SOMEONE_ELSES_HUGE=", 'x');
    special[2] = huge("KEEPALIVE_IDLE=", '9');
    char **env = calloc((size_t)count + nspecial + 1, sizeof *env);
    if (!env) die("calloc");
    size_t at = 0;
    for (size_t i = 0; i < nspecial; i++) env[at++] = special[i];
    for (long i = 0; i < count; i++) {
        char *v = malloc(48);
        if (!v) die("malloc");
        snprintf(v, 48, "STRESS_%06ld=%ld", i, i);
        env[at++] = v;
    }
    env[at] = NULL;
    environ = env;

    int (*make)(int, int, int) = socket;
    int (*join)(int, const struct sockaddr *, socklen_t) = connect;
    if (strcmp(argv[1], "none")) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "env_abuse: %s\n", dlerror());
            return 2;
        }
        make = (int (*)(int, int, int))dlsym(h, "socket");
        join = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(h, "connect");
        if (!make || !join) die("dlsym");
    }

    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof peer;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&peer, len) || listen(l, 4) ||
        getsockname(l, (struct sockaddr *)&peer, &len))
        die("listener");
    int fd = make(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || join(fd, (struct sockaddr *)&peer, sizeof peer)) die("client");
    static const int what[5][2] = {{SOL_SOCKET, SO_KEEPALIVE},
                                   {IPPROTO_TCP, TCP_KEEPIDLE},
                                   {IPPROTO_TCP, TCP_KEEPINTVL},
                                   {IPPROTO_TCP, TCP_KEEPCNT},
                                   {IPPROTO_TCP, TCP_USER_TIMEOUT}};
    printf("{\"pid\":%d,\"variables\":%zu,\"five\":[", (int)getpid(), at);
    for (int i = 0; i < 5; i++) {
        int v = -1;
        socklen_t vlen = sizeof v;
        if (getsockopt(fd, what[i][0], what[i][1], &v, &vlen)) v = -errno;
        printf("%s%d", i ? "," : "", v);
    }
    printf("]}\n");
    return 0;
}
