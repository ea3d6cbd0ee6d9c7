//! The exported `extern "C"` functions that `LD_PRELOAD` puts in front of libc's. Each one calls
//! the real function and one function of the logic in `sockets.rs`, and nothing else.

use crate::{real, sockets};
use libc::{c_int, c_void, sockaddr, socklen_t};

/// `socket(2)`, then keepalive options on a new TCP socket.
///
/// # Safety
/// Same contract as libc's `socket()`; called by the program in place of it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's socket().
    let fd = unsafe { real::socket(domain, ty, protocol) };
    sockets::after_socket(fd, domain, ty, protocol);
    fd
}

/// Keepalive options on a TCP socket that `socket()` did not configure (or again, with FORCE),
/// then `connect(2)`; its result and errno are returned untouched.
///
/// # Safety
/// Same contract as libc's `connect()`: `addr` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's address, read only to name the peer in debug lines.
    unsafe { sockets::before_connect(fd, addr, len) };
    // SAFETY: the caller's arguments, passed on unchanged to libc's connect().
    unsafe { real::connect(fd, addr, len) }
}

/// `setsockopt(2)`, except that with `KEEPALIVE_FORCE` the program's own keepalive options on a
/// TCP socket are answered without changing the configured values.
///
/// # Safety
/// Same contract as libc's `setsockopt()`: `value` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller's arguments, read as setsockopt would read them.
    match unsafe { sockets::on_setsockopt(fd, level, name, value, len) } {
        Some(rc) => rc,
        // SAFETY: the caller's arguments, passed on unchanged to libc's setsockopt().
        None => unsafe { real::setsockopt(fd, level, name, value, len) },
    }
}
