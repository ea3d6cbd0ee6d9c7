/* A TCP client for the portability tests (tests/portable.rs): makes a loopback listener, connects
 * a socket to it and prints that socket's five keepalive options as one line of JSON:
 *   {"keepalive":0,"idle":7200,"interval":75,"count":9,"user_timeout":0}
 * Built with musl-gcc (a dynamically linked musl program) and with aarch64-linux-gnu-gcc (run
 * under qemu-aarch64). It links the C library only, no -ldl: a preloaded library must bring its
 * own dependencies. Exits 1 with a message on stderr when a call fails. */
#include "five_options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "options_client: %s: %s\n", what, strerror(errno));
        _exit(1);
    }
}

int main(void) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    check(listener >= 0, "socket (listener)");
    check(bind(listener, (struct sockaddr *)&addr, sizeof addr) == 0, "bind");
    check(listen(listener, 1) == 0, "listen");
    check(getsockname(listener, (struct sockaddr *)&addr, &len) == 0, "getsockname");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    check(fd >= 0, "socket");
    check(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect");

    int values[FIVE];
    int failed = five_read(fd, values);
    check(failed < 0, failed < 0 ? "" : FIVE_LABELS[failed]);
    five_print_values(NULL, values);
    close(fd);
    close(listener);
    return 0;
}
