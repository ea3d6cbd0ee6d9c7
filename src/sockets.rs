//! Deciding and applying: which sockets get keepalive, the five options set on them, and whose
//! value wins when the program sets its own. The hooks in `hooks.rs` call one function of this
//! module each; everything here can be called from a unit test without preloading anything.
//!
//! A table of what `socket()` made of each descriptor (TCP, something else, or not seen) lets the
//! common paths decide with two atomic loads and no system call: `connect()` on a socket that
//! `socket()` already configured, and every call on a UDP or UNIX socket.

use crate::config::Settings;
use crate::errno;
use crate::log::debug;
use crate::real;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use keepalive_shim_policy::options::{OPTIONS, is_tcp, option_index, values};
use libc::{c_int, c_void, sockaddr, socklen_t};

/// Asks the kernel whether `fd` is a TCP socket (for descriptors `socket()` never returned).
pub fn fd_is_tcp(fd: c_int) -> bool {
    let domain = real::get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    let ty = real::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE);
    let protocol = real::get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL);
    matches!((domain, ty, protocol), (Ok(d), Ok(t), Ok(p)) if is_tcp(d, t, p))
}

/// What `socket()` made of a descriptor, as far as this library saw.
const UNSEEN: u8 = 0;
const TCP: u8 = 1;
const OTHER: u8 = 2;
/// Descriptors tracked; higher ones are always asked of the kernel.
const TRACKED: usize = 1 << 16;
static SEEN: [AtomicU8; TRACKED] = [const { AtomicU8::new(UNSEEN) }; TRACKED];

fn seen(fd: c_int) -> u8 {
    match usize::try_from(fd) {
        Ok(i) if i < TRACKED => SEEN[i].load(Ordering::Relaxed),
        _ => UNSEEN,
    }
}

fn mark(fd: c_int, what: u8) {
    if let Ok(i) = usize::try_from(fd) {
        if i < TRACKED {
            SEEN[i].store(what, Ordering::Relaxed);
        }
    }
}

/// The settings in force, or `None` when keepalive-shim is disabled or not yet loaded.
fn active() -> Option<&'static Settings> {
    crate::init::settings().filter(|s| s.enabled)
}

static FAILURE_LOGGED: [AtomicBool; 5] = [const { AtomicBool::new(false) }; 5];

/// Sets the five options on `fd`. A failure (EPERM under seccomp, ENOPROTOOPT on an old kernel)
/// leaves the socket as it was for that option and is logged once per option per process, at
/// debug. Returns how many options failed; `errno` is then changed, and is the caller's to keep.
#[inline(always)]
pub fn apply(fd: c_int, s: &Settings) -> usize {
    let set = real::setsockopt_fn();
    let values = values(s);
    let mut failed = 0;
    for i in 0..OPTIONS.len() {
        let (opt, value) = (&OPTIONS[i], values[i]);
        if !real::set_int_via(set, fd, opt.level, opt.name, value) {
            failed += 1;
            apply_failed(fd, i, value);
        }
    }
    failed
}

#[cold]
fn apply_failed(fd: c_int, i: usize, value: c_int) {
    let err = errno::get();
    if !FAILURE_LOGGED[i].swap(true, Ordering::Relaxed) {
        debug!(
            "fd {fd}: setsockopt {}={value} failed: {}; the socket works without it \
             (said once per process)",
            OPTIONS[i].label,
            Errno(err)
        );
    }
}

/// After the real `socket()`: configures a new TCP socket; remembers what every other one is.
#[inline]
pub fn after_socket(fd: c_int, domain: c_int, ty: c_int, protocol: c_int) {
    if fd < 0 {
        return;
    }
    if !is_tcp(domain, ty, protocol) {
        mark(fd, OTHER);
        return;
    }
    let Some(s) = active() else { return };
    let saved = errno::get();
    if apply(fd, s) != 0 {
        errno::set(saved);
    }
    mark(fd, TCP);
    debug!(
        "fd {fd}: new TCP socket ({}): {}",
        if domain == libc::AF_INET6 {
            "IPv6"
        } else {
            "IPv4"
        },
        Values(s)
    );
}

/// Before the real `connect()`: a TCP socket that never went through `socket()` (raw system
/// call, inherited) gets the options here unless it already has keepalive on; with FORCE every
/// TCP socket gets them again, over whatever the program set since.
///
/// # Safety
/// `addr` is what the program passed to `connect()`; it is read only when debug logging is on.
pub unsafe fn before_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) {
    let Some(s) = active() else { return };
    let what = seen(fd);
    if what == OTHER {
        return;
    }
    let peer = Peer { addr, len };
    if what == TCP && !s.force {
        debug!("fd {fd}: connecting to {peer}; options were set at socket()");
        return;
    }
    let _errno = errno::Saved::now();
    if what == UNSEEN {
        if !fd_is_tcp(fd) {
            mark(fd, OTHER);
            return;
        }
        mark(fd, TCP);
        let on = real::get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE);
        if !s.force && matches!(on, Ok(v) if v != 0) {
            debug!(
                "fd {fd}: connecting to {peer}; a TCP socket not made by socket() that already \
                 has keepalive on: its own settings kept"
            );
            return;
        }
    }
    apply(fd, s);
    debug!(
        "fd {fd}: connecting to {peer}; {} {}",
        if what == TCP {
            "applied again (KEEPALIVE_FORCE):"
        } else {
            "a TCP socket not made by socket(), configured:"
        },
        Values(s)
    );
}

/// The program's own `setsockopt()`. `None`: pass the call through. `Some(rc)`: return `rc`
/// (with `errno` set as the kernel would) without passing it on.
///
/// Without FORCE every call passes through: the program's value wins. With FORCE a call for one
/// of the five options on a TCP socket is checked as the kernel would check it (length, pointer,
/// range) and then answered by setting the configured value again, so the fd's validity is the
/// kernel's to judge and the option keeps the configured value.
///
/// # Safety
/// `value` is what the program passed: when not null it points to `len` readable bytes.
pub unsafe fn on_setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> Option<c_int> {
    let index = option_index(level, name)?;
    let s = active()?;
    let what = seen(fd);
    if what == OTHER {
        return None;
    }
    let opt = OPTIONS[index];
    if !s.force {
        if what == TCP {
            debug!(
                "fd {fd}: the program sets {}{}; its value stands (KEEPALIVE_FORCE=1 keeps ours)",
                opt.label,
                // SAFETY: the caller's contract: value points to len readable bytes.
                Shown(unsafe { read_int(value, len) })
            );
        }
        return None;
    }
    if what == UNSEEN {
        let _errno = errno::Saved::now();
        if !fd_is_tcp(fd) {
            mark(fd, OTHER);
            return None;
        }
        mark(fd, TCP);
    }
    // SAFETY: the caller's contract: value points to len readable bytes.
    let theirs = match unsafe { read_int(value, len) } {
        Ok(v) if (opt.min..=opt.max).contains(&v) => v,
        Ok(_) => return Some(fail(libc::EINVAL)),
        Err(err) => return Some(fail(err)),
    };
    let ours = values(s)[index];
    match real::set_int(fd, opt.level, opt.name, ours) {
        Ok(()) => {
            debug!(
                "fd {fd}: the program sets {}={theirs}; kept {ours} (KEEPALIVE_FORCE)",
                opt.label
            );
            Some(0)
        }
        Err(err) => Some(fail(err)),
    }
}

fn fail(err: c_int) -> c_int {
    errno::set(err);
    -1
}

/// Reads an `int` option value the way the kernel does: EINVAL when shorter than an int, EFAULT
/// when there is no buffer.
///
/// # Safety
/// When not null, `value` points to `len` readable bytes.
unsafe fn read_int(value: *const c_void, len: socklen_t) -> Result<c_int, c_int> {
    if (len as usize) < core::mem::size_of::<c_int>() {
        return Err(libc::EINVAL);
    }
    if value.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: non-null and at least an int long, by the caller's contract; alignment not assumed.
    Ok(unsafe { value.cast::<c_int>().read_unaligned() })
}

/// The configured values, for debug lines.
struct Values<'a>(&'a Settings);

impl fmt::Display for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(
            f,
            "SO_KEEPALIVE=1 TCP_KEEPIDLE={} TCP_KEEPINTVL={} TCP_KEEPCNT={} TCP_USER_TIMEOUT={}ms",
            s.idle_s, s.interval_s, s.count, s.user_timeout_ms
        )
    }
}

/// `=VALUE` of an option value as the program passed it, or nothing when unreadable.
struct Shown(Result<c_int, c_int>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "={v}"),
            Err(_) => Ok(()),
        }
    }
}

/// A `connect()` destination, formatted without allocating.
struct Peer {
    addr: *const sockaddr,
    len: socklen_t,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
        let len = self.len as usize;
        if self.addr.is_null() || len < core::mem::size_of::<libc::sa_family_t>() {
            return f.write_str("(no address)");
        }
        // SAFETY: non-null and long enough for the family field, by connect()'s contract.
        let family = c_int::from(unsafe { (*self.addr).sa_family });
        if family == libc::AF_INET && len >= core::mem::size_of::<libc::sockaddr_in>() {
            // SAFETY: the family and length say this is a sockaddr_in.
            let sin = unsafe { self.addr.cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            write!(f, "{}", SocketAddrV4::new(ip, u16::from_be(sin.sin_port)))
        } else if family == libc::AF_INET6 && len >= core::mem::size_of::<libc::sockaddr_in6>() {
            // SAFETY: the family and length say this is a sockaddr_in6.
            let sin6 = unsafe { self.addr.cast::<libc::sockaddr_in6>().read_unaligned() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            write!(f, "{}", SocketAddrV6::new(ip, port, 0, sin6.sin6_scope_id))
        } else {
            write!(f, "(address family {family})")
        }
    }
}

/// An errno value by name where it is one a socket option call gives.
struct Errno(c_int);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::EACCES => "EACCES",
            libc::EBADF => "EBADF",
            libc::EINVAL => "EINVAL",
            libc::ENOTSOCK => "ENOTSOCK",
            libc::ENOPROTOOPT => "ENOPROTOOPT",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOSYS => "ENOSYS",
            other => return write!(f, "errno {other}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT;

    fn tcp_socket(domain: c_int, ty: c_int) -> c_int {
        // SAFETY: plain socket call with constant arguments.
        let fd = unsafe { real::socket(domain, ty, 0) };
        assert!(fd >= 0);
        fd
    }

    fn close(fd: c_int) {
        // SAFETY: closing a descriptor this test made.
        unsafe { libc::close(fd) };
    }

    fn read_all(fd: c_int) -> [c_int; 5] {
        OPTIONS.map(|o| real::get_int(fd, o.level, o.name).unwrap())
    }

    #[test]
    fn apply_sets_all_five() {
        let mut s = DEFAULT;
        (s.idle_s, s.interval_s, s.count, s.user_timeout_ms) = (45, 7, 4, 73_000);
        for domain in [libc::AF_INET, libc::AF_INET6] {
            let fd = tcp_socket(domain, libc::SOCK_STREAM);
            assert_eq!(read_all(fd)[0], 0, "keepalive is off on a fresh socket");
            assert_eq!(apply(fd, &s), 0, "no option failed");
            assert_eq!(read_all(fd), [1, 45, 7, 4, 73_000]);
            close(fd);
        }
    }

    #[test]
    fn apply_on_a_udp_socket_fails_softly() {
        // SAFETY: plain socket call with constant arguments.
        let fd = unsafe { real::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(apply(fd, &DEFAULT) > 0, "TCP options fail on UDP");
        assert!(!fd_is_tcp(fd));
        close(fd);
        assert!(!fd_is_tcp(-1));
    }

    #[test]
    fn read_int_checks_like_the_kernel() {
        let v: c_int = 9;
        // SAFETY: a live int and its size, or invalid on purpose with no read.
        unsafe {
            assert_eq!(read_int((&raw const v).cast(), 4), Ok(9));
            assert_eq!(read_int((&raw const v).cast(), 2), Err(libc::EINVAL));
            assert_eq!(read_int(core::ptr::null(), 4), Err(libc::EFAULT));
        }
    }

    #[test]
    fn peers_are_formatted_without_allocation() {
        use crate::log::Line;
        use core::fmt::Write;
        // SAFETY: a zeroed sockaddr_in is valid.
        let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from(core::net::Ipv4Addr::new(10, 0, 0, 2)).to_be();
        let peer = Peer {
            addr: (&raw const sin).cast(),
            len: core::mem::size_of::<libc::sockaddr_in>() as socklen_t,
        };
        let mut line = Line::new();
        let _ = write!(line, "{peer}");
        assert_eq!(line.as_bytes(), b"10.0.0.2:8080");
        let none = Peer {
            addr: core::ptr::null(),
            len: 0,
        };
        let mut line = Line::new();
        let _ = write!(line, "{none}");
        assert_eq!(line.as_bytes(), b"(no address)");
    }

    #[test]
    fn the_descriptor_table_remembers_and_forgets() {
        let fd = 60_000;
        assert_eq!(seen(fd), UNSEEN);
        mark(fd, TCP);
        assert_eq!(seen(fd), TCP);
        mark(fd, OTHER);
        assert_eq!(seen(fd), OTHER);
        mark(fd, UNSEEN);
        // Out of the table: always unseen, never out of bounds.
        mark(TRACKED as c_int, TCP);
        assert_eq!(seen(TRACKED as c_int), UNSEEN);
        assert_eq!(seen(-1), UNSEEN);
    }
}
