/* A preload library for the tests: counts calls to the malloc family and to pthread locks made
 * while armed, so a test can prove that a loop of hooked socket calls makes none. Preload it
 * before keepalive-shim: LD_PRELOAD=count_calls.so:libkeepalive_shim.so. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile int armed;
static volatile long allocations, locks;

void count_calls_arm(int on) { armed = on; }
long count_calls_allocations(void) { return allocations; }
long count_calls_locks(void) { return locks; }

void *malloc(size_t n) { if (armed) allocations++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (armed) allocations++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (armed) allocations++; return __libc_realloc(p, n); }
void free(void *p) { if (armed && p) allocations++; __libc_free(p); }
int posix_memalign(void **out, size_t align, size_t n) {
    if (armed) allocations++;
    *out = __libc_memalign(align, n);
    return *out ? 0 : 12;
}

/* The real lock functions, found once. */
#include <dlfcn.h>
typedef int (*lock_fn)(void *);
static lock_fn real(const char *name) { return (lock_fn)dlsym(RTLD_NEXT, name); }
int pthread_mutex_lock(pthread_mutex_t *m) {
    static lock_fn f; if (!f) f = real("pthread_mutex_lock");
    if (armed) locks++;
    return f(m);
}
int pthread_rwlock_rdlock(pthread_rwlock_t *l) {
    static lock_fn f; if (!f) f = real("pthread_rwlock_rdlock");
    if (armed) locks++;
    return f(l);
}
int pthread_rwlock_wrlock(pthread_rwlock_t *l) {
    static lock_fn f; if (!f) f = real("pthread_rwlock_wrlock");
    if (armed) locks++;
    return f(l);
}
