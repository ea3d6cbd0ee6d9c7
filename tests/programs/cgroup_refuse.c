/* cgroup_refuse CGROUP_DIR PORT: attaches to the cgroup (v2) at CGROUP_DIR a cgroup/connect4 BPF
 * program that refuses (EPERM) every IPv4 connect() to PORT of the sockets of that cgroup, and
 * exits (the attachment stays until the cgroup is removed). For cli/tests/supervise_trace.rs:
 * a socket belongs to the cgroup of the task that made it. Raw bpf() calls: no libbpf. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int bpf(int cmd, union bpf_attr *attr) {
    return (int)syscall(SYS_bpf, cmd, attr, sizeof *attr);
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int port = htons(atoi(argv[2]));
    struct bpf_insn prog[] = {
        /* r2 = ctx->user_port */
        {.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = 2, .src_reg = 1,
         .off = offsetof(struct bpf_sock_addr, user_port)},
        /* r0 = 1 (allow) */
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 1},
        /* if r2 != port goto exit */
        {.code = BPF_JMP | BPF_JNE | BPF_K, .dst_reg = 2, .off = 1, .imm = port},
        /* r0 = 0 (refuse) */
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    static char log[4096];
    union bpf_attr load;
    memset(&load, 0, sizeof load);
    load.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
    load.expected_attach_type = BPF_CGROUP_INET4_CONNECT;
    load.insns = (unsigned long)prog;
    load.insn_cnt = sizeof prog / sizeof prog[0];
    load.license = (unsigned long)"GPL";
    load.log_buf = (unsigned long)log;
    load.log_size = sizeof log;
    load.log_level = 1;
    int fd = bpf(BPF_PROG_LOAD, &load);
    if (fd < 0) {
        fprintf(stderr, "BPF_PROG_LOAD: %s\n%s\n", strerror(errno), log);
        return 1;
    }
    int cg = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (cg < 0) {
        perror(argv[1]);
        return 1;
    }
    union bpf_attr attach;
    memset(&attach, 0, sizeof attach);
    attach.target_fd = cg;
    attach.attach_bpf_fd = fd;
    attach.attach_type = BPF_CGROUP_INET4_CONNECT;
    if (bpf(BPF_PROG_ATTACH, &attach) != 0) {
        perror("BPF_PROG_ATTACH");
        return 1;
    }
    return 0;
}
