//! The exported `extern "C"` functions that `LD_PRELOAD` puts in front of libc's. Each one calls
//! the real function and one function of the logic in `sockets.rs`, and nothing else.
//!
//! `socket`, `connect` and `setsockopt` do the work. `close`, `close_range`, `dup`, `dup2`,
//! `dup3` and `fcntl` (for `F_DUPFD`) only keep the descriptor table of `descriptors.rs` true to
//! the sockets behind the numbers: forgotten before a number can be reused, copied to a
//! duplicate.

use crate::{real, sockets};
use libc::{c_int, c_uint, c_void, sockaddr, socklen_t};

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

/// Keepalive options on a TCP socket that `socket()` did not configure (or again, with FORCE;
/// or taken off again, for a destination the rules exclude), then `connect(2)`; its result and
/// errno are returned untouched.
///
/// # Safety
/// Same contract as libc's `connect()`. The library itself never dereferences `addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    sockets::before_connect(fd, addr, len);
    // SAFETY: the caller's arguments, passed on unchanged to libc's connect().
    unsafe { real::connect(fd, addr, len) }
}

/// `setsockopt(2)`; then, for one of the five options on a TCP socket, what follows from the
/// program's choice (the user timeout that follows its keepalive, or ours again under FORCE).
///
/// # Safety
/// Same contract as libc's `setsockopt()`. The library itself never dereferences `value`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's setsockopt().
    let rc = unsafe { real::setsockopt(fd, level, name, value, len) };
    sockets::after_setsockopt(fd, level, name, rc);
    rc
}

/// `close(2)`, after forgetting what the library knew of the number.
///
/// # Safety
/// Same contract as libc's `close()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    sockets::before_close(fd);
    // SAFETY: the caller's argument, passed on unchanged to libc's close().
    unsafe { real::close(fd) }
}

/// `close_range(2)`, after forgetting the numbers it closes.
///
/// # Safety
/// Same contract as libc's `close_range()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    sockets::before_close_range(first, last, flags);
    // SAFETY: the caller's arguments, passed on unchanged to libc's close_range().
    unsafe { real::close_range(first, last, flags) }
}

/// `dup(2)`; the new number is the same socket.
///
/// # Safety
/// Same contract as libc's `dup()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the caller's argument, passed on unchanged to libc's dup().
    let new = unsafe { real::dup(fd) };
    sockets::after_dup(fd, new);
    new
}

/// `dup2(2)`: `to` is closed and becomes the same socket as `from`.
///
/// # Safety
/// Same contract as libc's `dup2()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(from: c_int, to: c_int) -> c_int {
    sockets::before_dup_onto(from, to);
    // SAFETY: the caller's arguments, passed on unchanged to libc's dup2().
    let new = unsafe { real::dup2(from, to) };
    sockets::after_dup(from, new);
    new
}

/// `dup3(2)`: as `dup2`, with flags.
///
/// # Safety
/// Same contract as libc's `dup3()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(from: c_int, to: c_int, flags: c_int) -> c_int {
    sockets::before_dup_onto(from, to);
    // SAFETY: the caller's arguments, passed on unchanged to libc's dup3().
    let new = unsafe { real::dup3(from, to, flags) };
    sockets::after_dup(from, new);
    new
}

/// `fcntl(2)`; `F_DUPFD` and `F_DUPFD_CLOEXEC` make a duplicate. Declared with a fixed third
/// argument: on x86_64 and aarch64 a variadic integer or pointer argument arrives in the same
/// register, and is passed on unchanged.
///
/// # Safety
/// Same contract as libc's `fcntl()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's fcntl().
    let rc = unsafe { real::fcntl(fd, cmd, arg) };
    sockets::after_fcntl(fd, cmd, rc);
    rc
}

/// `fcntl64()`: glibc's name for `fcntl` in programs built with 64-bit file offsets.
///
/// # Safety
/// Same contract as libc's `fcntl64()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's fcntl64().
    let rc = unsafe { real::fcntl64(fd, cmd, arg) };
    sockets::after_fcntl(fd, cmd, rc);
    rc
}
