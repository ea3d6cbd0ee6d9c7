//! Whether this process's configuration warnings were already printed by its parent: a program
//! started through a wrapper (pyenv's `python3` shim, `sh -c`, `make`) is many processes, each
//! loading the library and reading the same configuration, and one bad variable would otherwise
//! be reported by every one of them (35 lines from 18 processes of one pyenv command). A process
//! stays quiet when its parent has the library mapped and was started with the same
//! `KEEPALIVE_*` (and libkeepalive's) variables: the parent read the same configuration, and
//! said it. Asked only when there is something to warn about, with raw system calls, at load.

use alloc::format;
use alloc::vec::Vec;

/// The most of a `/proc` file read (maps of a large program, an environment).
const READ_MAX: usize = 4 << 20;

/// The whole of `/proc/PID/NAME`, or `None`.
fn read_proc(pid: i32, name: &str) -> Option<Vec<u8>> {
    let path = format!("/proc/{pid}/{name}\0");
    // SAFETY: a NUL-terminated path; the flags ask for a plain read-only open.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = fd as libc::c_int;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let ok = loop {
        // SAFETY: `chunk` is valid for writes of its length.
        let n = unsafe { libc::syscall(libc::SYS_read, fd, chunk.as_mut_ptr(), chunk.len()) };
        if n < 0 {
            break false;
        }
        if n == 0 {
            break true;
        }
        out.extend_from_slice(&chunk[..n as usize]);
        if out.len() > READ_MAX {
            break false;
        }
    };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    ok.then_some(out)
}

/// The entries of an environment that configure keepalive-shim, in order.
fn ours<'a>(entries: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    entries
        .filter(|e| {
            e.starts_with(b"KEEPALIVE")
                || e.starts_with(b"KEEPIDLE=")
                || e.starts_with(b"KEEPINTVL=")
                || e.starts_with(b"KEEPCNT=")
        })
        .filter(|e| !e.starts_with(b"KEEPALIVE_SHIM_"))
        .collect()
}

/// Whether the parent process has the library mapped and was started with the same settings of
/// ours in its environment as this process has now.
pub fn parent_said_it() -> bool {
    // SAFETY: getppid has no preconditions; the system call, not libc's (one import fewer).
    let parent = unsafe { libc::syscall(libc::SYS_getppid) } as i32;
    if parent <= 1 {
        return false;
    }
    let Some(maps) = read_proc(parent, "maps") else {
        return false;
    };
    if !maps.windows(14).any(|w| w == b"keepalive_shim") {
        return false;
    }
    let Some(environ) = read_proc(parent, "environ") else {
        return false;
    };
    let theirs = ours(environ.split(|&b| b == 0).filter(|e| !e.is_empty()));
    let mine = ours(crate::config::environ_entries());
    theirs == mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_variables_are_compared() {
        let env: [&[u8]; 6] = [
            b"PATH=/bin",
            b"KEEPALIVE_IDLE=abc",
            b"KEEPALIVE_SHIM_LIBRARY=/x",
            b"KEEPIDLE=5",
            b"HOME=/root",
            b"KEEPALIVEX=1",
        ];
        let got = ours(env.into_iter());
        assert_eq!(
            got,
            [&b"KEEPALIVE_IDLE=abc"[..], b"KEEPIDLE=5", b"KEEPALIVEX=1"]
        );
    }

    #[test]
    fn this_process_reads_its_own_files() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        assert!(read_proc(me, "maps").is_some_and(|m| !m.is_empty()));
        assert!(read_proc(me, "no-such-file").is_none());
    }
}
