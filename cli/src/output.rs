//! Writing to stdout and stderr without ever panicking: `println!` and `eprintln!` panic (an
//! abort, with `panic = "abort"`) when the write fails (EPIPE from a closed pipe, ENOSPC from
//! `/dev/full`, a log collector that restarts). The supervisor and a foreground `fleet attach`
//! must outlive their output, so every line goes through [`write_all`], which drops what cannot
//! be written, as the preload library does.

use std::fmt::{self, Write as _};

/// Writes `bytes` to `fd`, retrying after EINTR and short writes; stops quietly at any error.
pub fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length for the duration of the call.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

/// One line (a newline is added) to stderr, in one write where it fits.
pub fn err(args: fmt::Arguments) {
    line(2, args);
}

/// One line (a newline is added) to stdout.
pub fn out(args: fmt::Arguments) {
    line(1, args);
}

fn line(fd: libc::c_int, args: fmt::Arguments) {
    let mut text = String::new();
    let _ = text.write_fmt(args);
    text.push('\n');
    write_all(fd, text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_or_full_output_is_no_panic() {
        let mut fds = [0; 2];
        // SAFETY: fds is valid for two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: closing the read end this test made: writes now fail with EPIPE.
        unsafe { libc::close(fds[0]) };
        // SAFETY: ignoring SIGPIPE, as the Rust runtime does for every program.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        write_all(fds[1], b"lost\n");
        // SAFETY: closing the write end.
        unsafe { libc::close(fds[1]) };
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        write_all(std::os::fd::AsRawFd::as_raw_fd(&full), b"lost too\n");
        write_all(-1, b"nowhere\n");
    }
}
