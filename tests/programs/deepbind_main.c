/* The program of tests/deepbind.rs: dlopen(NAME, FLAGS) for each pair of arguments, the way PHP
 * loads its extensions, then prints the five options of the TCP sockets the first plugin makes,
 * as one JSON object:
 *   {"own": [...], "pointer": [...], "dep": [...], "dlerror": null}
 * (each array: keepalive, idle, interval, count, user timeout). NAME is a path, a bare name
 * found only through this program's RUNPATH ($ORIGIN/plugins), or "$ORIGIN/plugins/..."; FLAGS
 * is a list of now, lazy, deepbind, global joined by '+'. With --reopen each plugin is closed
 * and loaded again once. "dlerror" is what dlerror() says after the successful dlopens: null
 * unless something left a message behind. Exit status 2 when a dlopen fails.
 *
 * With DEEPBIND_THREADS=N in the environment, N threads call the first plugin's
 * deep_own_options in a loop from its load until 50 ms after the last one, while the later
 * loads re-point its slots under them; "calls" and "bad" (results neither the kernel's defaults
 * nor keepalive on) are added to the JSON.
 *
 * With DEEPBIND_DENY_MPROTECT=1, a seccomp filter installed first makes every mprotect() that
 * asks for write access fail with EPERM (as a hardened system might). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

typedef int (*options_fn)(int out[5]);

static int flags_of(const char *spec) {
    int flags = 0;
    if (strstr(spec, "now"))
        flags |= RTLD_NOW;
    if (strstr(spec, "lazy"))
        flags |= RTLD_LAZY;
    if (strstr(spec, "deepbind"))
        flags |= RTLD_DEEPBIND;
    if (strstr(spec, "global"))
        flags |= RTLD_GLOBAL;
    return flags;
}

static void print(const char *key, void *plugin, const char *symbol) {
    options_fn f = (options_fn)dlsym(plugin, symbol);
    int out[5] = {-1, -1, -1, -1, -1};
    if (f == NULL || f(out) != 0)
        printf("\"%s\": null, ", key);
    else
        printf("\"%s\": [%d, %d, %d, %d, %d], ", key, out[0], out[1], out[2], out[3], out[4]);
}

#if defined(__x86_64__)
#define THIS_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH AUDIT_ARCH_AARCH64
#endif

/* mprotect(addr, len, prot) with PROT_WRITE in prot: EPERM; everything else allowed. */
static int deny_writable_mprotect(void) {
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_WRITE, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        perror("seccomp");
        return -1;
    }
    return 0;
}

static atomic_int stop;
static atomic_long calls, bad;

static void *spin(void *f) {
    while (!atomic_load(&stop)) {
        int out[5] = {-1, -1, -1, -1, -1};
        if (((options_fn)f)(out) != 0 || !(out[0] == 0 || out[0] == 1) || out[1] <= 0)
            atomic_fetch_add(&bad, 1);
        atomic_fetch_add(&calls, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *threads_env = getenv("DEEPBIND_THREADS");
    int threads = threads_env ? atoi(threads_env) : 0;
    pthread_t ids[64];
    if (threads > 64)
        threads = 64;
    const char *deny = getenv("DEEPBIND_DENY_MPROTECT");
    if (deny != NULL && strcmp(deny, "1") == 0 && deny_writable_mprotect() != 0)
        return 3;
    int reopen = argc > 1 && strcmp(argv[1], "--reopen") == 0;
    char **arg = argv + 1 + reopen;
    int left = argc - 1 - reopen;
    if (left < 2 || left % 2 != 0) {
        fprintf(stderr, "usage: %s [--reopen] NAME FLAGS [NAME FLAGS]...\n", argv[0]);
        return 64;
    }
    void *first = NULL;
    for (; left > 0; arg += 2, left -= 2) {
        int flags = flags_of(arg[1]);
        void *plugin = dlopen(arg[0], flags);
        if (plugin != NULL && reopen) {
            dlclose(plugin);
            plugin = dlopen(arg[0], flags);
        }
        if (plugin == NULL) {
            fprintf(stderr, "dlopen %s: %s\n", arg[0], dlerror());
            return 2;
        }
        if (first == NULL) {
            first = plugin;
            void *f = dlsym(first, "deep_own_options");
            for (int i = 0; i < threads; i++)
                pthread_create(&ids[i], NULL, spin, f);
        }
    }
    if (threads > 0) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        nanosleep(&pause, NULL);
        atomic_store(&stop, 1);
        for (int i = 0; i < threads; i++)
            pthread_join(ids[i], NULL);
    }
    const char *error = dlerror();
    printf("{");
    print("own", first, "deep_own_options");
    print("pointer", first, "deep_pointer_options");
    print("dep", first, "deep_dep");
    if (threads > 0)
        printf("\"calls\": %ld, \"bad\": %ld, ", atomic_load(&calls), atomic_load(&bad));
    if (error == NULL)
        printf("\"dlerror\": null}\n");
    else
        printf("\"dlerror\": \"%s\"}\n", error);
    return 0;
}
