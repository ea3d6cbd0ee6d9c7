/* five_options.h: the five socket options keepalive-shim manages, read back from a descriptor
 * with getsockopt and printed as the one line of JSON every test program prints and
 * tests/common/mod.rs `five()` parses:
 *   {"keepalive":1,"idle":30,"interval":10,"count":3,"user_timeout":60000}
 * Shared by the C test programs (the .c files of tests/programs) so that there is one format.
 * Header only: everything in it is static. */
#ifndef KEEPALIVE_SHIM_FIVE_OPTIONS_H
#define KEEPALIVE_SHIM_FIVE_OPTIONS_H

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif

/* The five, in the order of crates/policy/src/options.rs OPTIONS (the index a:I=V names). */
enum { FIVE = 5 };
static const int FIVE_LEVELS[FIVE] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP,
                                      IPPROTO_TCP};
static const int FIVE_NAMES[FIVE] = {SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT,
                                     TCP_USER_TIMEOUT};
static const char *const FIVE_LABELS[FIVE] = {"SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL",
                                              "TCP_KEEPCNT", "TCP_USER_TIMEOUT"};
static const char *const FIVE_KEYS[FIVE] = {"keepalive", "idle", "interval", "count",
                                            "user_timeout"};

/* Reads the five options of `fd` into `values`; one that getsockopt cannot read is -1. Returns
 * the index of the first that failed (errno from its getsockopt), or -1 when all were read. */
static inline int five_read(int fd, int values[FIVE]) {
    int failed = -1;
    for (int i = 0; i < FIVE; i++) {
        int value = -1;
        socklen_t len = sizeof value;
        if (getsockopt(fd, FIVE_LEVELS[i], FIVE_NAMES[i], &value, &len) != 0) {
            value = -1;
            if (failed < 0)
                failed = i;
        }
        values[i] = value;
    }
    return failed;
}

/* Prints `values` as `PREFIX {"keepalive":..,"user_timeout":..}` and a newline (no prefix and
 * no space when `prefix` is NULL) on stdout, and flushes it. */
static inline void five_print_values(const char *prefix, const int values[FIVE]) {
    if (prefix)
        printf("%s ", prefix);
    printf("{");
    for (int i = 0; i < FIVE; i++)
        printf("%s\"%s\":%d", i ? "," : "", FIVE_KEYS[i], values[i]);
    printf("}\n");
    fflush(stdout);
}

/* Reads and prints the five options of `fd` (see five_print_values); returns what five_read
 * returns, after printing: -1 when all were read, else the index of the first that failed. */
static inline int five_print(const char *prefix, int fd) {
    int values[FIVE];
    int failed = five_read(fd, values);
    five_print_values(prefix, values);
    return failed;
}

#endif
