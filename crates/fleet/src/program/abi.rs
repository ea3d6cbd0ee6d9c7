//! What the kernel defines that the programs use: helper numbers, sock_ops callbacks and their
//! flags, TCP states, and the offsets of the contexts the programs read (`struct bpf_sock_ops`,
//! `struct bpf_sockopt`, `struct bpf_sock`), all from include/uapi/linux/bpf.h and
//! include/net/tcp_states.h, stable across kernels.

/// Kernel helpers (`enum bpf_func_id`).
pub const HELPER_SETSOCKOPT: i32 = 49;
pub const HELPER_GETSOCKOPT: i32 = 57;
pub const HELPER_SK_STORAGE_GET: i32 = 107;
pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
pub const HELPER_MAP_UPDATE_ELEM: i32 = 2;
pub const HELPER_SOCK_OPS_CB_FLAGS_SET: i32 = 59;
pub const HELPER_GET_CURRENT_CGROUP_ID: i32 = 80;
pub const HELPER_SKC_TO_TCP_SOCK: i32 = 137;
pub const SK_STORAGE_GET_F_CREATE: i32 = 1;
/// `BPF_NOEXIST`: an update that only adds.
pub const NOEXIST: i32 = 1;

/// `enum bpf_sock_ops_cb` values the program acts on.
pub const TCP_CONNECT_CB: i32 = 3;
pub const PASSIVE_ESTABLISHED_CB: i32 = 5;
pub const RTO_CB: i32 = 8;
pub const STATE_CB: i32 = 10;
/// `BPF_SOCK_OPS_RTO_CB_FLAG`, `BPF_SOCK_OPS_STATE_CB_FLAG`.
pub const RTO_CB_FLAG: i32 = 1;
pub const STATE_CB_FLAG: i32 = 4;
/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_FIN_WAIT1: i32 = 4;
#[cfg(test)]
pub const TCP_FIN_WAIT2: i32 = 5;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LAST_ACK: i32 = 9;
pub const TCP_LISTEN: i32 = 10;

/// Offsets in `struct bpf_sock_ops` (include/uapi/linux/bpf.h).
pub mod sock_ops_ctx {
    pub const OP: i16 = 0;
    pub const ARGS0: i16 = 4;
    pub const ARGS1: i16 = 8;
    pub const ARGS2: i16 = 12;
    pub const FAMILY: i16 = 20;
    pub const CB_FLAGS: i16 = 84;
    pub const REMOTE_IP4: i16 = 24;
    pub const REMOTE_IP6: i16 = 32;
    pub const REMOTE_PORT: i16 = 64;
    pub const SK: i16 = 184;
}

/// Offsets in `struct bpf_sockopt`.
pub mod sockopt_ctx {
    pub const SK: i16 = 0;
    pub const OPTVAL: i16 = 8;
    pub const OPTVAL_END: i16 = 16;
    pub const LEVEL: i16 = 24;
    pub const OPTNAME: i16 = 28;
    pub const OPTLEN: i16 = 32;
}

/// Offsets in `struct bpf_sock`.
pub mod sock {
    pub const FAMILY: i16 = 4;
    pub const TYPE: i16 = 8;
    pub const PROTOCOL: i16 = 12;
    pub const STATE: i16 = 72;
}
