//! Deciding and applying: which sockets get keepalive, the five options set on them, and whose
//! value wins when the program sets its own. The hooks in `hooks.rs` call one function of this
//! module each; everything here can be called from a unit test without preloading anything.
//!
//! The rules, in the order a socket meets them:
//! - `socket()` makes a TCP socket: the five options are set at once, so listeners and the
//!   connections they accept have them too.
//! - The program sets one of the five itself: its value stands (with `KEEPALIVE_FORCE`, ours is
//!   set again). If it set idle, interval or count and not the user timeout, the user timeout is
//!   changed to follow the keepalive now in effect (`options::user_timeout_for`), so the library
//!   never makes the program notice a dead peer later than its own keepalive would.
//! - `connect()`: a destination the rules exclude gets back the kernel's defaults for every
//!   option the program did not set itself; a TCP socket that `socket()` never saw gets the
//!   options now, unless it already has keepalive on (whoever turned it on chose its values).
//!
//! What is known of each descriptor is in `descriptors.rs`. The common paths decide from it with
//! atomic loads and no system call: `connect()` on a socket `socket()` configured, and every call
//! on a UDP or UNIX socket.

use crate::config::LogLevel;
use crate::config::Settings;
use crate::descriptors::{self, Kind, State};
use crate::errno;
use crate::log::{self, debug};
use crate::real;
use core::fmt;
use keepalive_shim_policy::options::{
    COUNT, IDLE, INTERVAL, KEEPALIVE, OPTIONS, USER_TIMEOUT, is_tcp, option_index,
    user_timeout_in_effect, values,
};
use keepalive_shim_policy::rules::Destination;
use libc::{c_int, c_uint, sockaddr, socklen_t};

/// Every option, as a bit mask over [`OPTIONS`].
const ALL: u8 = 0b1_1111;

/// Asks the kernel whether `fd` is a TCP socket (for descriptors `socket()` never returned).
pub fn fd_is_tcp(fd: c_int) -> bool {
    let domain = real::get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
    let ty = real::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE);
    let protocol = real::get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL);
    matches!((domain, ty, protocol), (Ok(d), Ok(t), Ok(p)) if is_tcp(d, t, p))
}

/// The settings in force, or `None` when keepalive-shim is disabled or not yet loaded.
fn active() -> Option<&'static Settings> {
    crate::init::settings().filter(|s| s.enabled)
}

/// The options a kernel refused, as a mask over [`OPTIONS`], and the errno of the last refusal
/// (kept here because the caller puts the program's errno back before any debug line is
/// written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub mask: u8,
    pub errno: c_int,
}

impl Refused {
    pub const NONE: Refused = Refused { mask: 0, errno: 0 };

    pub fn any(self) -> bool {
        self.mask != 0
    }
}

/// Sets the options of `mask` (bits over [`OPTIONS`]) to `values` on `fd`. A failure (EPERM
/// under seccomp, ENOPROTOOPT on an old kernel) leaves the socket as it was for that option.
/// Returns what was refused; `errno` is then changed, and is the caller's to keep.
#[inline(always)]
fn apply_masked(fd: c_int, mask: u8, values: &[c_int; 5]) -> Refused {
    let set = real::setsockopt_fn();
    let mut refused = Refused::NONE;
    for (i, opt) in OPTIONS.iter().enumerate() {
        if mask & (1 << i) != 0 && !real::set_int_via(set, fd, opt.level, opt.name, values[i]) {
            refused.mask |= 1 << i;
            refused.errno = errno::get();
        }
    }
    refused
}

/// Sets all five options of `s` on `fd`; what the kernel refused.
pub fn apply(fd: c_int, s: &Settings) -> Refused {
    apply_masked(fd, ALL, &values(s))
}

/// What is known of `fd`: the table's entry, or, for a number beyond the table, what the kernel
/// says now.
fn state_of(fd: c_int, s: &Settings) -> State {
    descriptors::get(fd).unwrap_or_else(|| state_from_kernel(fd, s))
}

/// A descriptor's state read from the kernel, for numbers the table cannot hold: an option whose
/// value is the configured one is taken to be the library's, any other the program's, so the
/// library never overrides a choice it cannot remember.
fn state_from_kernel(fd: c_int, s: &Settings) -> State {
    if !fd_is_tcp(fd) {
        return State::OTHER;
    }
    let ours = values(s);
    let mut state = State::CONFIGURED_TCP;
    for (i, opt) in OPTIONS.iter().enumerate() {
        let same = match real::get_int(fd, opt.level, opt.name) {
            Ok(v) if i == KEEPALIVE => (v != 0) == (ours[i] != 0),
            Ok(v) => v == ours[i],
            Err(_) => false,
        };
        if !same {
            state = state.with_own(i);
        }
    }
    if state.own(KEEPALIVE) {
        state = state.with_configured(false);
    }
    state
}

/// The user timeout for a socket in `state` under `s` (`options::user_timeout_in_effect`),
/// reading from the socket only the values the program set itself.
fn user_timeout(fd: c_int, s: &Settings, state: State) -> c_int {
    let own = ALL & !not_own(state);
    let mut theirs = [0; 5];
    if own & (1 << IDLE | 1 << INTERVAL | 1 << COUNT) != 0 {
        for i in [IDLE, INTERVAL, COUNT] {
            if own & (1 << i) != 0 {
                let v = real::get_int(fd, OPTIONS[i].level, OPTIONS[i].name);
                theirs[i] = v.unwrap_or(values(s)[i]);
            }
        }
    }
    user_timeout_in_effect(s, own, &theirs)
}

/// The options the program did not set itself, as a mask over [`OPTIONS`].
fn not_own(state: State) -> u8 {
    (0..5)
        .filter(|&i| !state.own(i))
        .fold(0, |m, i| m | (1 << i))
}

/// After the real `socket()`: configures a new TCP socket; remembers what every other one is.
#[inline]
pub fn after_socket(fd: c_int, domain: c_int, ty: c_int, protocol: c_int) {
    if fd < 0 {
        return;
    }
    if !is_tcp(domain, ty, protocol) {
        descriptors::set(fd, State::OTHER);
        return;
    }
    let Some(s) = active() else {
        descriptors::set(fd, State::TCP);
        return;
    };
    let saved = errno::get();
    let failed = apply(fd, s);
    if failed.any() {
        errno::set(saved);
    }
    // A socket on which the kernel refused every option (a seccomp filter) is left alone from
    // here on: nothing about it is the library's.
    let state = if failed.mask == ALL {
        State::LEFT_ALONE
    } else {
        State::CONFIGURED_TCP
    };
    descriptors::set(fd, state);
    debug!(
        "fd {fd}: new TCP socket ({}): {}",
        if domain == libc::AF_INET6 {
            "IPv6"
        } else {
            "IPv4"
        },
        Applied {
            values: values(s),
            mask: ALL,
            failed,
        }
    );
}

/// Before the real `connect()`. A destination the rules exclude gets back the kernel's defaults
/// for every option the program did not set itself. A TCP socket not configured yet (made by a
/// raw system call, inherited, received) gets the options now unless it already has keepalive
/// on; with FORCE every TCP socket gets them again. `addr` is read through the kernel, never
/// directly, and only when there are destination rules or debug lines to write.
pub fn before_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) {
    let Some(s) = active() else { return };
    let quick = descriptors::get(fd);
    if quick == Some(State::OTHER)
        || (quick.is_some_and(State::configured) && !s.force && !s.has_rules())
    {
        if quick != Some(State::OTHER) {
            debug!(
                "fd {fd}: connecting to {}; options were set at socket()",
                Peer::read(addr, len)
            );
        }
        return;
    }
    let _errno = errno::Saved::now();
    connect_slow(fd, s, addr, len);
}

#[inline(never)]
fn connect_slow(fd: c_int, s: &Settings, addr: *const sockaddr, len: socklen_t) {
    let mut state = state_of(fd, s);
    if state.kind() == Kind::Unseen {
        if !fd_is_tcp(fd) {
            descriptors::set(fd, State::OTHER);
            return;
        }
        state = State::TCP;
        if !s.force
            && matches!(real::get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), Ok(v) if v != 0)
        {
            // Someone turned keepalive on before this process saw the socket: theirs, all five.
            descriptors::set(fd, State::LEFT_ALONE);
            debug!(
                "fd {fd}: connecting to {}; a TCP socket not made by socket() that already has \
                 keepalive on: its own settings kept",
                Peer::read(addr, len)
            );
            return;
        }
    }
    if state.kind() != Kind::Tcp {
        return;
    }
    // The address is copied only for what needs it: the rules, and debug lines.
    let peer = if s.has_rules() || log::enabled(LogLevel::Debug) {
        Peer::read(addr, len)
    } else {
        Peer::UNREAD
    };
    if s.has_rules() && peer.destination().is_some_and(|d| !s.touches(&d)) {
        exclude(fd, state, &peer);
        return;
    }
    if state.configured() && !s.force {
        debug!("fd {fd}: connecting to {peer}; options were set at socket()");
        return;
    }
    if state == State::LEFT_ALONE && !s.force {
        debug!(
            "fd {fd}: connecting to {peer}; left as it is (the program's own settings, or none \
             the kernel would take)"
        );
        return;
    }
    let (mask, failed, vals) = if s.force {
        (ALL, apply(fd, s), values(s))
    } else {
        let mut vals = values(s);
        vals[USER_TIMEOUT] = user_timeout(fd, s, state);
        let mask = not_own(state);
        (mask, apply_masked(fd, mask, &vals), vals)
    };
    let was_configured = state.configured();
    descriptors::set(fd, state.with_configured(true));
    debug!(
        "fd {fd}: connecting to {peer}; {} {}",
        if was_configured {
            "applied again (KEEPALIVE_FORCE):"
        } else {
            "a TCP socket not made by socket(), configured:"
        },
        Applied {
            values: vals,
            mask,
            failed
        }
    );
}

/// A connection the destination rules leave alone: every option the library set goes back to
/// what the socket had without it, and the socket is marked so nothing is set on it again.
#[cold]
fn exclude(fd: c_int, state: State, peer: &Peer) {
    let mut mask = 0;
    let mut failed = Refused::NONE;
    let mut defaults = [0; 5];
    if state.configured() {
        mask = not_own(state);
        defaults = kernel_defaults();
        failed = apply_masked(fd, mask, &defaults);
    }
    descriptors::set(fd, State::LEFT_ALONE);
    debug!(
        "fd {fd}: connecting to {peer}: a destination the rules exclude; {}",
        Restored {
            values: defaults,
            mask,
            failed
        }
    );
}

/// What a new TCP socket has without this library: keepalive off, no user timeout, and the
/// network namespace's idle, interval and count, read from a socket made for the purpose.
fn kernel_defaults() -> [c_int; 5] {
    let mut defaults = [0, 7200, 75, 9, 0];
    // SAFETY: a plain socket call with constant arguments, through libc's function (not the hook).
    let probe = unsafe { real::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if probe >= 0 {
        for i in [IDLE, INTERVAL, COUNT] {
            if let Ok(v) = real::get_int(probe, OPTIONS[i].level, OPTIONS[i].name) {
                defaults[i] = v;
            }
        }
        // SAFETY: closing the socket made just above.
        unsafe { real::close(probe) };
    }
    defaults
}

/// After the real `setsockopt()`. Nothing to do unless it set one of the five options on a TCP
/// socket: then the option is the program's from now on; with FORCE ours is set again; and when
/// the program set its own idle, interval or count, the user timeout follows the keepalive in
/// effect (unless the program set the user timeout too). `errno` is kept.
#[inline]
pub fn after_setsockopt(fd: c_int, level: c_int, name: c_int, rc: c_int) {
    let Some(index) = option_index(level, name) else {
        return;
    };
    let Some(s) = active() else { return };
    setsockopt_slow(fd, s, index, rc);
}

#[inline(never)]
fn setsockopt_slow(fd: c_int, s: &Settings, index: usize, rc: c_int) {
    let label = OPTIONS[index].label;
    let _errno = errno::Saved::now();
    if rc != 0 {
        debug!(
            "fd {fd}: the program's {label} was refused by the kernel ({}); nothing changed",
            Errno(errno::get())
        );
        return;
    }
    let mut state = state_of(fd, s);
    if state.kind() == Kind::Unseen {
        if !fd_is_tcp(fd) {
            descriptors::set(fd, State::OTHER);
            return;
        }
        state = State::TCP;
    }
    if state.kind() != Kind::Tcp {
        return;
    }
    if state == State::LEFT_ALONE {
        return;
    }
    // The program's value, for the debug lines only: read before FORCE replaces it, and not
    // at all (no system call) when no debug line will be written.
    let theirs = Shown(if log::enabled(LogLevel::Debug) {
        real::get_int(fd, OPTIONS[index].level, OPTIONS[index].name)
    } else {
        Err(0)
    });
    if s.force {
        let ours = values(s)[index];
        let outcome = real::set_int(fd, OPTIONS[index].level, OPTIONS[index].name, ours);
        debug!(
            "fd {fd}: the program sets {label}{theirs}; {}",
            SetBack(ours, outcome)
        );
        return;
    }
    state = state.with_own(index);
    descriptors::set(fd, state);
    let follows =
        state.configured() && !state.own(USER_TIMEOUT) && matches!(index, IDLE | INTERVAL | COUNT);
    if !follows {
        debug!("fd {fd}: the program sets {label}{theirs}; its value stands");
        return;
    }
    let ut = user_timeout(fd, s, state);
    let outcome = real::set_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ut);
    debug!(
        "fd {fd}: the program sets {label}{theirs}; its value stands, and {}",
        Following(ut, outcome)
    );
}

/// `close()` and `dup2()` onto a number: whatever was known of it is forgotten first, before the
/// number can be given to a new descriptor.
#[inline]
pub fn before_close(fd: c_int) {
    descriptors::forget(fd);
}

/// `close_range()`: as `close()` for every number closed (not for `CLOSE_RANGE_CLOEXEC`, which
/// only marks them).
pub fn before_close_range(first: c_uint, last: c_uint, flags: c_int) {
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 && first <= last {
        descriptors::forget_range(first, last);
    }
}

/// `dup2()`/`dup3()` close `to` first, unless it is `from` itself.
#[inline]
pub fn before_dup_onto(from: c_int, to: c_int) {
    if from != to {
        descriptors::forget(to);
    }
}

/// A duplicate was made: the same socket, so the same state.
#[inline]
pub fn after_dup(from: c_int, new: c_int) {
    if new >= 0 && new != from {
        descriptors::copy(from, new);
    }
}

/// `fcntl()`: only `F_DUPFD` and `F_DUPFD_CLOEXEC` matter, as duplicates.
#[inline]
pub fn after_fcntl(fd: c_int, cmd: c_int, rc: c_int) {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        after_dup(fd, rc);
    }
}

/// Option values set, for debug lines: `NAME=VALUE` for each set, then what failed.
struct Applied {
    values: [c_int; 5],
    mask: u8,
    failed: Refused,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (i, opt) in OPTIONS.iter().enumerate() {
            if self.mask & !self.failed.mask & (1 << i) == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let unit = if i == USER_TIMEOUT { "ms" } else { "" };
            write!(f, "{}={}{unit}", opt.label, self.values[i])?;
        }
        if first {
            f.write_str("nothing set")?;
        }
        if self.mask & ALL != ALL && self.mask != 0 {
            f.write_str(" (the program's own values for the rest)")?;
        }
        if self.failed.any() {
            f.write_str("; the kernel refused")?;
            for (i, opt) in OPTIONS.iter().enumerate() {
                if self.failed.mask & (1 << i) != 0 {
                    write!(f, " {}", opt.label)?;
                }
            }
            write!(
                f,
                " ({}): the socket works without",
                Errno(self.failed.errno)
            )?;
        }
        Ok(())
    }
}

/// Options put back to the kernel's defaults, for debug lines.
struct Restored {
    values: [c_int; 5],
    mask: u8,
    failed: Refused,
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask == 0 {
            return f.write_str("left as it is (the library had set nothing on it)");
        }
        write!(
            f,
            "back to the kernel's defaults: {}",
            Applied {
                values: self.values,
                mask: self.mask,
                failed: self.failed
            }
        )
    }
}

/// `=VALUE` of an option value read back from the socket, or nothing when unreadable.
struct Shown(Result<c_int, c_int>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(v) => write!(f, "={v}"),
            Err(_) => Ok(()),
        }
    }
}

/// Ours set again under FORCE, or why not.
struct SetBack(c_int, Result<(), c_int>);

impl fmt::Display for SetBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Ok(()) => write!(f, "set back to {} (KEEPALIVE_FORCE)", self.0),
            Err(e) => write!(
                f,
                "its value stands: the kernel refused ours, {} ({})",
                self.0,
                Errno(e)
            ),
        }
    }
}

/// The user timeout made to follow the program's keepalive, or why not.
struct Following(c_int, Result<(), c_int>);

impl fmt::Display for Following {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Ok(()) => write!(
                f,
                "TCP_USER_TIMEOUT is now {}ms, following the keepalive in effect",
                self.0
            ),
            Err(e) => write!(
                f,
                "TCP_USER_TIMEOUT could not follow it: the kernel refused {}ms ({})",
                self.0,
                Errno(e)
            ),
        }
    }
}

/// A `connect()` destination, copied out of the program's memory through the kernel (so a bad
/// pointer is reported, not dereferenced), formatted without allocating.
struct Peer {
    bytes: [u8; 128],
    len: usize,
}

impl Peer {
    const UNREAD: Peer = Peer {
        bytes: [0; 128],
        len: 0,
    };

    fn read(addr: *const sockaddr, len: socklen_t) -> Peer {
        let mut peer = Peer {
            bytes: [0; 128],
            len: 0,
        };
        let want = (len as usize).min(peer.bytes.len());
        peer.len = real::copy_from_program(addr.cast(), &mut peer.bytes[..want]);
        peer
    }

    fn destination(&self) -> Option<Destination> {
        Destination::from_sockaddr(self.bytes.get(..self.len)?)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
        let b = &self.bytes;
        if self.len < 2 {
            return f.write_str("(an address the kernel cannot read)");
        }
        let family = c_int::from(u16::from_ne_bytes([b[0], b[1]]));
        let port = u16::from_be_bytes([b[2], b[3]]);
        if family == libc::AF_INET && self.len >= core::mem::size_of::<libc::sockaddr_in>() {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            write!(f, "{}", SocketAddrV4::new(ip, port))
        } else if family == libc::AF_INET6 && self.len >= core::mem::size_of::<libc::sockaddr_in6>()
        {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            write!(
                f,
                "{}",
                SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, scope)
            )
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
            libc::EFAULT => "EFAULT",
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
        unsafe { real::close(fd) };
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
            assert_eq!(apply(fd, &s), Refused::NONE, "no option failed");
            assert_eq!(read_all(fd), [1, 45, 7, 4, 73_000]);
            close(fd);
        }
    }

    #[test]
    fn apply_on_a_udp_socket_fails_softly() {
        // SAFETY: plain socket call with constant arguments.
        let fd = unsafe { real::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        let refused = apply(fd, &DEFAULT);
        assert_eq!(refused.mask, ALL & !1, "all but SO_KEEPALIVE fail on UDP");
        assert_eq!(refused.errno, libc::ENOPROTOOPT);
        assert!(!fd_is_tcp(fd));
        close(fd);
        assert!(!fd_is_tcp(-1));
    }

    #[test]
    fn only_the_masked_options_are_set() {
        let fd = tcp_socket(libc::AF_INET, libc::SOCK_STREAM);
        let failed = apply_masked(fd, 1 << IDLE | 1 << USER_TIMEOUT, &[1, 45, 7, 4, 9_000]);
        assert_eq!(failed, Refused::NONE);
        assert_eq!(read_all(fd), [0, 45, 75, 9, 9_000]);
        close(fd);
    }

    #[test]
    fn beyond_the_table_the_kernel_tells_what_is_ours() {
        let fd = tcp_socket(libc::AF_INET, libc::SOCK_STREAM);
        let s = DEFAULT;
        apply(fd, &s);
        real::set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5).unwrap();
        // A number beyond the table: nothing remembered, so the kernel is asked.
        let far = descriptors::TABLE_LEN as c_int + 1;
        assert_eq!(descriptors::get(far), None);
        let state = state_from_kernel(fd, &s);
        assert!(state.configured() && state.own(IDLE) && !state.own(INTERVAL));
        assert_eq!(user_timeout(fd, &s, state), 35_000, "5 + 10 x 3 s");
        close(fd);
    }

    #[test]
    fn kernel_defaults_are_the_namespaces() {
        let d = kernel_defaults();
        let fd = tcp_socket(libc::AF_INET, libc::SOCK_STREAM);
        assert_eq!(read_all(fd), d);
        close(fd);
    }

    #[test]
    fn peers_are_read_through_the_kernel_and_formatted_without_allocation() {
        use crate::log::Line;
        use core::fmt::Write;
        // SAFETY: a zeroed sockaddr_in is valid.
        let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from(core::net::Ipv4Addr::new(10, 0, 0, 2)).to_be();
        let len = core::mem::size_of::<libc::sockaddr_in>() as socklen_t;
        let peer = Peer::read((&raw const sin).cast(), len);
        let mut line = Line::new();
        let _ = write!(line, "{peer}");
        assert_eq!(line.as_bytes(), b"10.0.0.2:8080");
        for bad in [core::ptr::null(), 16 as *const sockaddr] {
            let mut line = Line::new();
            let _ = write!(line, "{}", Peer::read(bad, len));
            assert_eq!(line.as_bytes(), b"(an address the kernel cannot read)");
        }
    }
}
