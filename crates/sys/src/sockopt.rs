//! `int` socket options, one and all five of the option table at once, and whether a descriptor
//! is a TCP socket, asked of the kernel.

use keepalive_shim_policy::options::{N, OPTIONS, is_tcp};
use libc::c_int;
use std::io;
use std::os::fd::RawFd;

/// Reads one `int` option of `fd`.
pub fn get_int(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes during the call.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets one `int` option of `fd`; true on success.
pub fn set_int(fd: RawFd, level: c_int, name: c_int, value: c_int) -> bool {
    // SAFETY: value is a valid int for the call's duration.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// The five options of `fd`, in the order of [`OPTIONS`].
pub fn options(fd: RawFd) -> io::Result<[c_int; N]> {
    let mut out = [0; N];
    for (slot, opt) in out.iter_mut().zip(OPTIONS.iter()) {
        *slot = get_int(fd, opt.level, opt.name)?;
    }
    Ok(out)
}

/// Whether `fd` is a TCP socket, asked of the kernel.
pub fn fd_is_tcp(fd: RawFd) -> bool {
    let d = get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    let t = get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE);
    let p = get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL);
    matches!((d, t, p), (Ok(d), Ok(t), Ok(p)) if is_tcp(d, t, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    #[test]
    fn options_of_a_fresh_tcp_socket() {
        // SAFETY: socket has no memory arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a new descriptor owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        assert!(fd_is_tcp(fd.as_raw_fd()));
        assert!(set_int(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            42
        ));
        assert_eq!(options(fd.as_raw_fd()).unwrap()[1], 42);
        // SAFETY: socket has no memory arguments.
        let udp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a new descriptor owned here.
        let udp = unsafe { OwnedFd::from_raw_fd(udp) };
        assert!(!fd_is_tcp(udp.as_raw_fd()));
    }
}
