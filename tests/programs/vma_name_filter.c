/* vma_name_filter: runs a command under a seccomp filter that answers prctl(PR_SET_VMA, ...)
 * itself, for tests/locator.rs:
 *
 *   vma_name_filter refuse  COMMAND [ARG...]   fails it with EINVAL, as a kernel without
 *                                              CONFIG_ANON_VMA_NAME (or before 5.17) does, or
 *                                              a seccomp policy that refuses it;
 *   vma_name_filter pretend COMMAND [ARG...]   returns 0 without naming anything, so the page
 *                                              the library wrote stays, unnamed, and a test can
 *                                              read what it holds on any kernel.
 *
 * Every other system call, and prctl with any other option, runs as usual. The filter is raw BPF
 * installed with prctl(PR_SET_NO_NEW_PRIVS) and seccomp(SECCOMP_SET_MODE_FILTER): no
 * libseccomp, no privileges; exec keeps it. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "unsupported architecture"
#endif

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "refuse") != 0 && strcmp(argv[1], "pretend") != 0)) {
        fprintf(stderr, "usage: vma_name_filter refuse|pretend COMMAND [ARG...]\n");
        return 2;
    }
    unsigned int answer = SECCOMP_RET_ERRNO | (strcmp(argv[1], "refuse") == 0 ? EINVAL : 0);
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* The option, the low half of the first argument (little-endian). */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_VMA, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, answer),
    };
    struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("vma_name_filter: seccomp");
        return 1;
    }
    execvp(argv[2], argv + 2);
    perror("vma_name_filter: exec");
    return 127;
}
