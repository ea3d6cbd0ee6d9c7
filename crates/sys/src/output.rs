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

/// Prints `keepalive-shim: MESSAGE` to stderr; a failing stderr is no panic.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::err(format_args!("keepalive-shim: {}", format_args!($($arg)*)))
    };
}

fn line(fd: libc::c_int, args: fmt::Arguments) {
    let mut text = String::new();
    let _ = text.write_fmt(args);
    text.push('\n');
    write_all(fd, text.as_bytes());
}

/// `text` with its control characters (C0, DEL, C1) and Unicode's direction overrides escaped:
/// for names a process gives itself, which a terminal would otherwise obey (a colour, a cursor
/// move, a forged line).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = match u32::from(c) {
                n if n < 0x100 => write!(out, "\\x{n:02x}"),
                n => write!(out, "\\u{{{n:x}}}"),
            };
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_without_their_control_characters() {
        assert_eq!(printable("python3"), "python3");
        assert_eq!(
            printable("x\x1b[31mred\nforged"),
            "x\\x1b[31mred\\x0aforged"
        );
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(printable("caf\u{e9}"), "caf\u{e9}");
    }

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
