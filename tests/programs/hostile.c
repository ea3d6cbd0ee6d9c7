/* What an unprivileged user can show a root-side reader (issue 22's attacks), one mode each:
 *
 *   hostile map PATH...        maps each file (read-only, private, from offset 0), then waits
 *   hostile maps N             makes N separate mappings (alternating protections: none merge)
 *   hostile files PREFIX N     makes N one-byte files PREFIX.0 … and maps each: N mappings of N
 *                              different files, all named like PREFIX
 *   hostile name NAME          renames itself (prctl PR_SET_NAME: any bytes but NUL), then waits
 *   hostile stuck FILE         maps the first 64 KiB of FILE and, right after it, a page that a
 *                              userfaultfd owns and never fills: a read of that page (a counters'
 *                              address 0x10000 into the library, as FILE's symbol says) waits for
 *                              ever. Needs root (or vm.unprivileged_userfaultfd): FUSE gives an
 *                              unprivileged user the same where /dev/fuse is open to all.
 *
 * It prints "ready" once everything is in place, and waits until killed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *arg) {
    fprintf(stderr, "hostile: %s %s: ", what, arg);
    perror("");
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: hostile map PATH... | maps N | name NAME\n");
        return 2;
    }
    if (strcmp(argv[1], "map") == 0) {
        for (int i = 2; i < argc; i++) {
            int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return fail("open", argv[i]);
            struct stat st;
            if (fstat(fd, &st) != 0)
                return fail("fstat", argv[i]);
            size_t len = st.st_size > 0 ? (size_t)st.st_size : 4096;
            if (mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
                return fail("mmap", argv[i]);
            close(fd);
        }
    } else if (strcmp(argv[1], "maps") == 0) {
        long n = atol(argv[2]);
        long page = sysconf(_SC_PAGESIZE);
        char *at = mmap(NULL, (size_t)(n * page), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (at == MAP_FAILED)
            return fail("mmap", argv[2]);
        /* Every other page read-only: neighbours with other protections never merge. */
        for (long i = 1; i < n; i += 2)
            if (mprotect(at + i * page, (size_t)page, PROT_READ) != 0)
                return fail("mprotect", argv[2]);
    } else if (strcmp(argv[1], "files") == 0 && argc == 4) {
        long n = atol(argv[3]);
        char path[4096];
        for (long i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s.%ld", argv[2], i);
            int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0 || write(fd, "x", 1) != 1)
                return fail("create", path);
            if (mmap(NULL, 1, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
                return fail("mmap", path);
            close(fd);
        }
    } else if (strcmp(argv[1], "stuck") == 0) {
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return fail("open", argv[2]);
        /* Reserve the range, then put the file and the trap page in it. */
        char *at = mmap(NULL, 0x11000, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (at == MAP_FAILED)
            return fail("mmap", "reserve");
        if (mmap(at, 0x10000, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED)
            return fail("mmap", argv[2]);
        char *trap = mmap(at + 0x10000, 0x1000, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (trap == MAP_FAILED)
            return fail("mmap", "trap");
        int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
        if (uffd < 0)
            return fail("userfaultfd", "");
        struct uffdio_api api = {.api = UFFD_API};
        if (ioctl(uffd, UFFDIO_API, &api) != 0)
            return fail("UFFDIO_API", "");
        struct uffdio_register reg = {
            .range = {.start = (unsigned long)trap, .len = 0x1000},
            .mode = UFFDIO_REGISTER_MODE_MISSING,
        };
        if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
            return fail("UFFDIO_REGISTER", "");
    } else if (strcmp(argv[1], "name") == 0) {
        if (prctl(PR_SET_NAME, argv[2], 0, 0, 0) != 0)
            return fail("prctl", argv[2]);
    } else {
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}
