//! The one list of the C library functions this library hooks: each one's name, C signature,
//! the names of its real-function slot, getter and type, and what stands in for it where the C
//! library has none (the raw system call, or a function written in `real.rs`). `real.rs` makes
//! the slots and their resolution from it, `hooks.rs` the `RTLD_DEEPBIND` table (the compiler
//! then checks that every entry has its export there); the exports themselves are one
//! declaration each in `hooks.rs`. `dlopen`, a naked function with a slot of its own, is the one
//! hook outside the list.
//!
//! `hooked!` calls the macro it is given with the whole list, once.

/// Calls `$then!` with every hooked function, as
/// `NAME(ARGS) -> RET => GETTER: TYPE, SLOT, FALLBACK [= SYSCALL];`.
macro_rules! hooked {
    ($then:ident) => {
        $then! {
            system calls {
            /// libc's `socket()`.
            socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int
                => socket_fn: SocketFn, SOCKET, sys_socket = libc::SYS_socket;
            /// libc's `connect()`.
            connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
                => connect_fn: ConnectFn, CONNECT, sys_connect = libc::SYS_connect;
            /// libc's `setsockopt()`.
            setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t)
                -> c_int => setsockopt_fn: SetsockoptFn, SETSOCKOPT,
                sys_setsockopt = libc::SYS_setsockopt;
            /// libc's `accept()` (aarch64 has no accept system call: the fallback is accept4
            /// without flags, the same call).
            accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
                => accept_fn: AcceptFn, ACCEPT, sys_accept = SYS_ACCEPT;
            /// libc's `accept4()`.
            accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int
                => accept4_fn: Accept4Fn, ACCEPT4, sys_accept4 = libc::SYS_accept4;
            /// libc's `close()`.
            close(fd: c_int) -> c_int => close_fn: CloseFn, CLOSE, sys_close = libc::SYS_close;
            /// libc's `close_range()` (glibc 2.34; older C libraries have none: the system call).
            close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int
                => close_range_fn: CloseRangeFn, CLOSE_RANGE,
                sys_close_range = libc::SYS_close_range;
            /// libc's `dup()`.
            dup(fd: c_int) -> c_int => dup_fn: DupFn, DUP, sys_dup = libc::SYS_dup;
            /// libc's `dup2()` (aarch64 has no dup2 system call: the fallback is dup3 without
            /// flags, which differs only when both numbers are equal).
            dup2(from: c_int, to: c_int) -> c_int => dup2_fn: Dup2Fn, DUP2, sys_dup2 = SYS_DUP2;
            /// libc's `dup3()`.
            dup3(from: c_int, to: c_int, flags: c_int) -> c_int
                => dup3_fn: Dup3Fn, DUP3, sys_dup3 = libc::SYS_dup3;
            /// libc's `fcntl()`, called with its third argument as a machine word: on x86_64 and
            /// aarch64 an integer or pointer variadic argument travels in the same register as a
            /// fixed one.
            fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int
                => fcntl_fn: FcntlFn, FCNTL, sys_fcntl = libc::SYS_fcntl;
            /// libc's `fcntl64()` (glibc 2.28; the name programs built with 64-bit file offsets
            /// call).
            fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int
                => fcntl64_fn: Fcntl64Fn, FCNTL64, sys_fcntl64 = libc::SYS_fcntl;
            }
            written in real.rs {
            /// libc's `closefrom()` (glibc 2.34, musl 1.2.4; older C libraries have none, and no
            /// program linked against them calls it).
            closefrom(first: c_int) -> () => closefrom_fn: ClosefromFn, CLOSEFROM, sys_closefrom;
            }
        }
    };
}
pub(crate) use hooked;
