//! The seccomp listener: receiving notifications and answering them, with the kernel's ioctls.
//! Every notification is received into a buffer zeroed first and sized by the kernel's own
//! report (`SECCOMP_GET_NOTIF_SIZES`), answered once, and checked with
//! `SECCOMP_IOCTL_NOTIF_ID_VALID` wherever something read about its process must still hold.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): wake the other side on the current CPU.
const SYNC_WAKE_UP: libc::c_ulong = 1;

/// Room for a notification as large as a future kernel's (it reports its size).
#[repr(C)]
struct Buffer {
    notif: libc::seccomp_notif,
    _room: [u8; 256],
}

/// One trapped call, as the kernel captured it.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub id: u64,
    /// The calling thread, in the supervisor's PID namespace.
    pub tid: i32,
    pub nr: i64,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Call {
    /// Argument `i` as the kernel reads an `int` argument: its low 32 bits.
    pub fn int(&self, i: usize) -> libc::c_int {
        self.args[i] as u32 as libc::c_int
    }
}

pub struct Listener {
    fd: OwnedFd,
    buffer: Box<Buffer>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Listener {
    pub fn new(fd: OwnedFd) -> io::Result<Listener> {
        // SAFETY: sizes is plain data the kernel fills.
        let mut sizes: libc::seccomp_notif_sizes = unsafe { std::mem::zeroed() };
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes a seccomp_notif_sizes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_GET_NOTIF_SIZES,
                0,
                &raw mut sizes,
            )
        };
        check(rc as libc::c_int)?;
        let size = usize::from(sizes.seccomp_notif);
        if size > std::mem::size_of::<Buffer>() {
            return Err(io::Error::other(format!(
                "the kernel's notifications are {size} bytes, more than this tool knows"
            )));
        }
        Ok(Listener {
            fd,
            // SAFETY: all-zero is a valid Buffer (plain integers).
            buffer: Box::new(unsafe { std::mem::zeroed() }),
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Closes the listener (its number then names /dev/null): every trapped call of the tree
    /// fails with ENOSYS from then on, rather than wait for an answer that will never come.
    pub fn close(&self) {
        // SAFETY: open and dup2 over this listener's own descriptor number.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup3(null, self.raw(), libc::O_CLOEXEC);
                libc::close(null);
            }
        }
    }

    /// Asks the kernel to wake each side on the CPU of the other (Linux 6.6): the program and
    /// the supervisor then hand the CPU to each other instead of waking one on another CPU.
    pub fn set_sync_wake_up(&self) -> io::Result<()> {
        // SAFETY: SET_FLAGS takes its flags as the argument itself.
        check(unsafe {
            libc::ioctl(
                self.raw(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SYNC_WAKE_UP,
            )
        })
        .map(drop)
    }

    /// The next notification; `Ok(None)` when its caller went away before it could be read
    /// (ENOENT) or the wait was interrupted.
    pub fn recv(&mut self) -> io::Result<Option<Call>> {
        // The kernel requires a zeroed buffer (and would reject stale bytes in a later version).
        // SAFETY: buffer is a valid, exclusively borrowed Buffer; zero bytes are valid for it.
        unsafe { std::ptr::write_bytes(&raw mut *self.buffer, 0, 1) };
        // SAFETY: RECV writes at most the size the kernel reported into the buffer.
        let rc = unsafe {
            libc::ioctl(
                self.raw(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &raw mut self.buffer.notif,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT | libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        let n = &self.buffer.notif;
        Ok(Some(Call {
            id: n.id,
            tid: n.pid as i32,
            nr: i64::from(n.data.nr),
            arch: n.data.arch,
            args: n.data.args,
        }))
    }

    fn respond(&self, id: u64, val: i64, error: i32, flags: u32) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: SEND reads one seccomp_notif_resp.
        check(unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const resp) })
            .map(drop)
    }

    /// Lets the call run as the program made it.
    pub fn proceed(&self, id: u64) -> io::Result<()> {
        self.respond(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }

    /// The call returns `-1` with `errno`, without running.
    pub fn fail(&self, id: u64, errno: i32) -> io::Result<()> {
        self.respond(id, 0, -errno, 0)
    }

    /// The call returns `val`, without running.
    pub fn succeed(&self, id: u64, val: i64) -> io::Result<()> {
        self.respond(id, val, 0, 0)
    }

    /// Installs `fd` in the caller's descriptor table (the lowest free number, as the call itself
    /// would choose); returns the number. With `send`, that number is also the call's result, in
    /// one step (`SECCOMP_ADDFD_FLAG_SEND`, Linux 5.14): a program interrupted meanwhile never
    /// gets a descriptor it does not know about, but this process still holds its own copy when
    /// the program runs on. Without `send`, the call stays pending until [`Listener::succeed`]
    /// answers it with the number: safe only where the caller can no longer be interrupted by a
    /// non-fatal signal (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, Linux 5.19).
    pub fn install(&self, id: u64, fd: RawFd, cloexec: bool, send: bool) -> io::Result<i32> {
        let addfd = libc::seccomp_notif_addfd {
            id,
            flags: if send {
                libc::SECCOMP_ADDFD_FLAG_SEND as u32
            } else {
                0
            },
            srcfd: fd as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: ADDFD reads one seccomp_notif_addfd.
        check(unsafe {
            libc::ioctl(
                self.raw(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                &raw const addfd,
            )
        })
    }

    /// Whether the notification is still pending: its thread is still in the call, so what was
    /// read about that thread (through its PID) was about the right one.
    pub fn valid(&self, id: u64) -> bool {
        // SAFETY: ID_VALID reads one u64.
        unsafe {
            libc::ioctl(
                self.raw(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &raw const id,
            ) == 0
        }
    }
}
