//! The operating-system calls the command-line tool makes in several places, written once:
//! `int` socket options over the option table, whether a descriptor is a TCP socket, pidfds
//! (`pidfd_open`, `pidfd_getfd`), and the running kernel's release.

use keepalive_shim_policy::options::{N, OPTIONS, is_tcp};
use libc::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// `pidfd_open(pid, flags)` (Linux 5.3).
pub fn pidfd_open(pid: i32, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a new descriptor owned by this process.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// A copy of descriptor `fd` of the process behind `pidfd` (`pidfd_getfd`, Linux 5.6).
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: c_int) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd duplicates the target's descriptor into this process, or fails.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: copy is a new descriptor owned by this process.
        Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
    }
}

/// `(major, minor)` of a Linux release string such as `6.18.44-fc-v669` or `5.15.0-91-generic`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's release string, from `uname`.
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: utsname is plain data, and uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is valid for writes.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: uname NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

/// The running kernel's `(major, minor)`, or `None` when `uname` says something unexpected.
pub fn kernel() -> Option<(u32, u32)> {
    parse_release(&kernel_release().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
        assert!(kernel().is_some());
    }

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
        let me = pidfd_open(std::process::id() as i32, 0).unwrap();
        let copy = pidfd_getfd(&me, fd.as_raw_fd()).unwrap();
        assert_eq!(
            get_int(copy.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_KEEPIDLE).unwrap(),
            42
        );
    }
}
