/* deepbind_lib.so (tests/deepbind.rs), the plugin loaded with RTLD_DEEPBIND: makes TCP sockets
 * itself, through its PLT (socket) and through a function pointer in its read-only data (an
 * absolute relocation in RELRO), and through libdeepdep.so, which it needs. Reports the five
 * options of each. */
#include <sys/socket.h>
#include <unistd.h>

void deep_read_options(int fd, int out[5]);
int deep_dep_options(int out[5]);

static int (*const make_socket)(int, int, int) = socket;

static int options_of(int fd, int out[5]) {
    if (fd < 0)
        return -1;
    deep_read_options(fd, out);
    close(fd);
    return 0;
}

/* Through the PLT. */
int deep_own_options(int out[5]) { return options_of(socket(AF_INET, SOCK_STREAM, 0), out); }

/* Through the pointer; `volatile` keeps the compiler from calling socket directly. */
int deep_pointer_options(int out[5]) {
    int (*const volatile *make)(int, int, int) = &make_socket;
    return options_of((*make)(AF_INET, SOCK_STREAM, 0), out);
}

/* Through the dependency. */
int deep_dep(int out[5]) { return deep_dep_options(out); }
