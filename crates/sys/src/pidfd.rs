//! pidfds: `pidfd_open` (Linux 5.3; a thread's with `PIDFD_THREAD`, 6.9) and `pidfd_getfd`
//! (5.6), which takes a copy of another process's descriptor.

use libc::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread, not only a thread-group leader.
pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// `pidfd_open(pid, flags)`.
pub fn open(pid: i32, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a new descriptor owned by this process.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// A copy of descriptor `fd` of the process behind `pidfd`.
pub fn getfd(pidfd: &OwnedFd, fd: c_int) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd duplicates the target's descriptor into this process, or fails.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: copy is a new descriptor owned by this process.
        Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_our_own_descriptor_is_the_same_file() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let me = open(std::process::id() as i32, 0).unwrap();
        let copy = getfd(&me, file.as_raw_fd()).unwrap();
        let ino = |fd: RawFd| {
            // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is writable.
            assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
            st.st_ino
        };
        assert_eq!(ino(file.as_raw_fd()), ino(copy.as_raw_fd()));
    }
}
