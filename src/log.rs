//! Logging: one line per call to stderr with a single `write(2)`, formatted into a stack buffer,
//! so a hook can log without allocating, taking a lock, or changing `errno`.
//!
//! Only to the stderr the program started with: the file behind descriptor 2 is noted when the
//! library loads, and a line is written only while descriptor 2 is still that file and not a
//! socket. A program that closed its stderr would otherwise receive our lines on whatever it
//! opens next as descriptor 2 — a TCP connection, say, or a pipe that kills it with SIGPIPE.

use crate::config::LogLevel;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
/// Device and inode of the program's stderr at load; `STDERR_KNOWN` false: none to write to.
static STDERR_DEV: AtomicU64 = AtomicU64::new(0);
static STDERR_INO: AtomicU64 = AtomicU64::new(0);
static STDERR_KNOWN: AtomicBool = AtomicBool::new(false);

/// Longest line written; a longer one is cut and ends with `...`.
const LINE_MAX: usize = 512;

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

#[inline]
pub fn enabled(level: LogLevel) -> bool {
    level != LogLevel::Off && LEVEL.load(Ordering::Relaxed) >= level as u8
}

/// Logs at `debug`: the arguments are formatted only when debug logging is on, in a function of
/// their own that is never inlined, so a hook's fast path carries no formatting code (and no
/// stack frame for it).
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::config::LogLevel::Debug) {
            $crate::log::cold(move || $crate::log::line(format_args!($($arg)*)));
        }
    };
}
pub(crate) use debug;

/// Runs `f` out of line, marked unlikely.
#[cold]
#[inline(never)]
pub fn cold<F: FnOnce()>(f: F) {
    f()
}

/// A fixed buffer that `core::fmt` writes into; what does not fit is dropped.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Ends the line with a newline, marking a cut line with `...`.
    fn finish(&mut self) {
        const TAIL: &[u8] = b"...\n";
        if self.cut || self.len == LINE_MAX {
            self.len = self.len.min(LINE_MAX - TAIL.len());
            self.buf[self.len..self.len + TAIL.len()].copy_from_slice(TAIL);
            self.len += TAIL.len();
        } else {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LINE_MAX - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self.cut |= n < s.len();
        Ok(())
    }
}

/// What descriptor 2 is now: device and inode, unless it is closed or a socket.
fn stderr_now() -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // The system call, not libc's fstat: glibc 2.33 made that a symbol of its own
    // (`fstat@GLIBC_2.33`), which older C libraries do not have. On x86_64 and aarch64 libc's
    // `struct stat` is the kernel's.
    // SAFETY: `st` is a live, writable stat.
    let rc = unsafe { libc::syscall(libc::SYS_fstat, 2, &raw mut st) };
    if rc != 0 || st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
        return None;
    }
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// Notes the program's stderr; called once, when the library loads.
pub fn capture_stderr() {
    let saved = crate::errno::Saved::now();
    if let Some((dev, ino)) = stderr_now() {
        STDERR_DEV.store(dev, Ordering::Relaxed);
        STDERR_INO.store(ino, Ordering::Relaxed);
        STDERR_KNOWN.store(true, Ordering::Release);
    }
    drop(saved);
}

/// Whether descriptor 2 is still the stderr noted at load.
fn stderr_unchanged() -> bool {
    STDERR_KNOWN.load(Ordering::Acquire)
        && stderr_now().is_some_and(|(dev, ino)| {
            dev == STDERR_DEV.load(Ordering::Relaxed) && ino == STDERR_INO.load(Ordering::Relaxed)
        })
}

/// Formats `keepalive-shim[PID]: MESSAGE` and writes it to fd 2, leaving `errno` as it was;
/// nothing when descriptor 2 is no longer the program's stderr.
pub fn line(args: fmt::Arguments<'_>) {
    let saved = crate::errno::Saved::now();
    if !stderr_unchanged() {
        return;
    }
    let mut out = Line::new();
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    let _ = write!(out, "keepalive-shim[{pid}]: ");
    let _ = out.write_fmt(args);
    out.finish();
    write_all(2, out.as_bytes());
    drop(saved);
}

/// Writes `bytes` to `fd`, retrying on EINTR and short writes; gives up on any other error,
/// since there is nowhere left to report it.
fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[(n as usize).min(bytes.len())..];
        } else if n < 0 && crate::errno::get() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_gate_messages() {
        set_level(LogLevel::Warn);
        assert!(enabled(LogLevel::Warn));
        assert!(!enabled(LogLevel::Debug));
        set_level(LogLevel::Off);
        assert!(!enabled(LogLevel::Warn));
        set_level(LogLevel::Debug);
        assert!(enabled(LogLevel::Warn) && enabled(LogLevel::Debug));
        assert!(!enabled(LogLevel::Off));
        set_level(LogLevel::Warn);
    }

    #[test]
    fn a_long_line_is_cut_and_still_ends_with_a_newline() {
        let mut out = Line::new();
        for _ in 0..100 {
            let _ = out.write_str("0123456789");
        }
        out.finish();
        assert_eq!(out.as_bytes().len(), LINE_MAX);
        assert!(out.as_bytes().ends_with(b"...\n"));
        let mut out = Line::new();
        let _ = write!(out, "fd {} ok", 7);
        out.finish();
        assert_eq!(out.as_bytes(), b"fd 7 ok\n");
    }

    #[test]
    fn a_multibyte_character_cut_in_half_does_not_panic() {
        let mut out = Line::new();
        let _ = out.write_str(&"x".repeat(LINE_MAX - 1));
        let _ = out.write_str("×");
        out.finish();
        assert!(out.as_bytes().ends_with(b"...\n"));
    }
}
