//! Observing and applying: each hook in `hooks.rs` calls one function of this module, which
//! tells the policy's decision (`keepalive_shim_policy::decide`) what happened and what is known
//! of the socket, then applies the plan it returns with the least work. Nothing here decides
//! whose value wins; everything here can be called from a unit test without preloading anything.
//!
//! What is known of each descriptor is in `descriptors.rs`, watched from the program's calls. A
//! number the table never saw (accepted, inherited, received, made by a raw system call) or
//! cannot hold (beyond its length) is read back from the kernel instead
//! (`Known::from_kernel`), as the supervisor and fleet mode do. The common paths decide from the
//! table with atomic loads and no system call: `connect()` on a socket `socket()` configured,
//! and every call on a UDP or UNIX socket.
//!
//! The debug lines' words for what a plan did are the policy crate's (`show.rs`), shared with the
//! seccomp supervisor; only the destination (`Peer`, read from the program's memory) is
//! formatted here.

use crate::config::LogLevel;
use crate::config::Settings;
use crate::counters;
use crate::descriptors::{self, Kind, State};
use crate::errno;
use crate::log::{self, debug};
use crate::real;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use keepalive_shim_policy::decide::{
    self, ALL, Defaults, Event, KERNEL_DEFAULTS, Known, Plan, Reason,
};
use keepalive_shim_policy::options::{N, OPTIONS, is_tcp, option_index, values};
use keepalive_shim_policy::rules::Destination;
use keepalive_shim_policy::show::{Made, Outcome, Refused, SetRefused, Sets};
use libc::{c_int, c_uint, sockaddr, socklen_t};

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

/// Sets the options of `mask` (bits over [`OPTIONS`]) to `values` on `fd`. A failure (EPERM
/// under seccomp, ENOPROTOOPT on an old kernel) leaves the socket as it was for that option.
/// Returns what was refused; `errno` is then changed, and is the caller's to keep.
#[inline(always)]
fn apply_masked(fd: c_int, mask: u8, values: &[c_int; N]) -> Refused {
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

/// Applies `plan` to `fd`; what the kernel refused.
#[inline(always)]
fn apply_plan(fd: c_int, plan: &Plan) -> Refused {
    apply_masked(fd, plan.mask(), &plan.set.map(|v| v.unwrap_or(0)))
}

/// Sets all five options of `s` on `fd`; what the kernel refused.
pub fn apply(fd: c_int, s: &Settings) -> Refused {
    apply_masked(fd, ALL, &values(s))
}

/// Option `i` of `fd` now (ours where it cannot be read), for the decision's `read`.
fn read_option(fd: c_int, s: &Settings) -> impl FnMut(usize) -> c_int {
    move |i| real::get_int(fd, OPTIONS[i].level, OPTIONS[i].name).unwrap_or(values(s)[i])
}

/// All five options of `fd` now (a fresh socket's where one cannot be read).
fn read_all(fd: c_int) -> [c_int; N] {
    core::array::from_fn(|i| {
        real::get_int(fd, OPTIONS[i].level, OPTIONS[i].name).unwrap_or(KERNEL_DEFAULTS[i])
    })
}

/// This network namespace's fresh-socket values, read once from a socket made for the purpose
/// (racing threads store the same values; no lock).
static FRESH: [AtomicI32; N] = [const { AtomicI32::new(0) }; N];
static FRESH_READ: AtomicBool = AtomicBool::new(false);

/// What a TCP socket has here without this library: keepalive off, no user timeout, and the
/// network namespace's idle, interval and count.
fn namespace_defaults() -> Defaults {
    if !FRESH_READ.load(Ordering::Relaxed) {
        let mut fresh = KERNEL_DEFAULTS;
        // SAFETY: a plain socket call with constant arguments, through libc's function (not
        // the hook).
        let probe =
            unsafe { real::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if probe >= 0 {
            fresh = read_all(probe);
            // SAFETY: closing the socket made just above.
            unsafe { real::close(probe) };
        }
        for (slot, v) in FRESH.iter().zip(fresh) {
            slot.store(v, Ordering::Relaxed);
        }
        FRESH_READ.store(true, Ordering::Relaxed);
    }
    Defaults {
        fresh: core::array::from_fn(|i| FRESH[i].load(Ordering::Relaxed)),
    }
}

/// What is known of `fd` if it is a TCP socket: the table's entry, or what its options read
/// back say for a number the table never saw or cannot hold. `None`: not a TCP socket (and
/// remembered as such).
fn known_of(fd: c_int, s: &Settings) -> Option<Known> {
    match descriptors::get(fd) {
        Some(state) if state.kind() == Kind::Tcp => Some(state.known()),
        Some(state) if state.kind() == Kind::Other => None,
        _ if !fd_is_tcp(fd) => {
            descriptors::set(fd, State::OTHER);
            None
        }
        _ => Some(Known::from_kernel(&read_all(fd), &namespace_defaults(), s)),
    }
}

/// Remembers what `plan` leaves known of `fd`; a socket on which the kernel refused every
/// option (a seccomp filter) is left alone from here on: nothing about it is the library's.
fn remember(fd: c_int, plan: &Plan, failed: Refused) {
    let state = if plan.mask() == ALL && failed.mask == ALL {
        State::LEFT_ALONE
    } else {
        State::from_known(plan.next)
    };
    descriptors::set(fd, state);
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
    let plan = decide::decide(s, Event::Made, Known::FRESH, &Defaults::KERNEL, |_| 0);
    let failed = apply_plan(fd, &plan);
    if failed.any() {
        errno::set(saved);
    }
    remember(fd, &plan, failed);
    counters::applied(Event::Made, Known::FRESH, &plan, failed.mask);
    debug!(
        "fd {fd}: {}",
        Made {
            ipv6: domain == libc::AF_INET6,
            plan: &plan,
            refused: failed,
        }
    );
}

/// Before the real `connect()`: the decision for a connect to `addr`, applied. `addr` is read
/// through the kernel, never directly, and only when there are destination rules or debug
/// lines to write.
pub fn before_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) {
    let Some(s) = active() else { return };
    let quick = descriptors::get(fd);
    if quick == Some(State::OTHER) {
        return;
    }
    if let Some(state) = quick
        && state.kind() == Kind::Tcp
        && decide::settled(s, state.known())
    {
        if !state.known().left_alone {
            counters::add(counters::CONNECTIONS_CONFIGURED);
        }
        debug!(
            "fd {fd}: connecting to {}; {}",
            Peer::read(addr, len),
            if state.known().left_alone {
                Reason::LeftAlone
            } else {
                Reason::AlreadyConfigured
            }
        );
        return;
    }
    let _errno = errno::Saved::now();
    connect_slow(fd, s, addr, len);
}

#[inline(never)]
fn connect_slow(fd: c_int, s: &Settings, addr: *const sockaddr, len: socklen_t) {
    let Some(known) = known_of(fd, s) else {
        return;
    };
    // The address is copied only for what needs it: the rules, and debug lines.
    let peer = if s.has_rules() || log::enabled(LogLevel::Debug) {
        Peer::read(addr, len)
    } else {
        Peer::UNREAD
    };
    let dest = peer.destination();
    let event = Event::Connect(dest.as_ref());
    let mut plan = decide::decide(s, event, known, &Defaults::KERNEL, read_option(fd, s));
    if plan.reason == Reason::Excluded && !plan.is_empty() {
        // Back to what the socket had without us: this namespace's values, read only here.
        plan = decide::decide(s, event, known, &namespace_defaults(), read_option(fd, s));
    }
    let failed = apply_plan(fd, &plan);
    remember(fd, &plan, failed);
    counters::applied(event, known, &plan, failed.mask);
    debug!(
        "fd {fd}: connecting to {peer}; {}",
        Outcome {
            plan: &plan,
            known,
            refused: failed,
        }
    );
}

/// What was known of a socket before the program's `setsockopt()` of one of the five options,
/// for a number the table does not know (read back before the call, so the program's value is
/// told from what it replaced). `None` otherwise: the table knows, or it is not one of ours.
#[derive(Clone, Copy)]
pub struct Before(Option<Known>);

/// Before the real `setsockopt()`: only for one of the five options on a number the table
/// does not know, what is known of it now.
#[inline]
pub fn before_setsockopt(fd: c_int, level: c_int, name: c_int) -> Before {
    if option_index(level, name).is_none() {
        return Before(None);
    }
    match descriptors::get(fd) {
        Some(state) if state != State::UNSEEN => Before(None),
        _ => before_slow(fd),
    }
}

#[cold]
fn before_slow(fd: c_int) -> Before {
    let Some(s) = active() else {
        return Before(None);
    };
    let _errno = errno::Saved::now();
    Before(known_of(fd, s))
}

/// After the real `setsockopt()`. Nothing to do unless it set one of the five options on a TCP
/// socket: then the decision for the program's choice (its value stands, and the user timeout
/// follows its keepalive; or ours again under FORCE) is applied. `errno` is kept.
#[inline]
pub fn after_setsockopt(fd: c_int, level: c_int, name: c_int, rc: c_int, before: Before) {
    let Some(index) = option_index(level, name) else {
        return;
    };
    let Some(s) = active() else { return };
    setsockopt_slow(fd, s, index, rc, before);
}

#[inline(never)]
fn setsockopt_slow(fd: c_int, s: &Settings, index: usize, rc: c_int, before: Before) {
    let _errno = errno::Saved::now();
    if rc != 0 {
        debug!(
            "fd {fd}: {}",
            SetRefused {
                index,
                errno: errno::get()
            }
        );
        return;
    }
    let known = match (descriptors::get(fd), before.0) {
        (Some(state), _) if state.kind() == Kind::Tcp => state.known(),
        (_, Some(known)) => known,
        _ => return,
    };
    if known.left_alone {
        return;
    }
    // The program's value, for the debug lines only: read before FORCE replaces it, and not
    // at all (no system call) when no debug line will be written.
    let theirs = if log::enabled(LogLevel::Debug) {
        real::get_int(fd, OPTIONS[index].level, OPTIONS[index].name).ok()
    } else {
        None
    };
    let plan = decide::decide(
        s,
        Event::Set(index),
        known,
        &Defaults::KERNEL,
        read_option(fd, s),
    );
    let failed = apply_plan(fd, &plan);
    remember(fd, &plan, failed);
    counters::applied(Event::Set(index), known, &plan, failed.mask);
    debug!(
        "fd {fd}: {}",
        Sets {
            index,
            theirs,
            plan: &plan,
            refused: failed,
        }
    );
}

/// After the real `accept()`/`accept4()`: the accepted socket inherited the listener's options,
/// so it is what the listener is (the table's entry, copied: two atomic operations). A listener
/// the library never saw (inherited from systemd's socket activation or another exec'd parent,
/// made by a raw system call) gives an accepted socket whose options are read back and decided
/// once, like any socket met late. `errno` is kept.
#[inline]
pub fn after_accept(listener: c_int, fd: c_int) {
    if fd < 0 {
        return;
    }
    match descriptors::get(listener) {
        Some(state) if state.kind() == Kind::Other => descriptors::set(fd, State::OTHER),
        Some(state) if state.kind() == Kind::Tcp => descriptors::set(fd, state),
        _ => accept_slow(fd),
    }
}

#[cold]
#[inline(never)]
fn accept_slow(fd: c_int) {
    let Some(s) = active() else {
        descriptors::forget(fd);
        return;
    };
    let _errno = errno::Saved::now();
    let Some(known) = known_of(fd, s) else {
        return;
    };
    let plan = decide::decide(
        s,
        Event::Accepted,
        known,
        &Defaults::KERNEL,
        read_option(fd, s),
    );
    let failed = apply_plan(fd, &plan);
    remember(fd, &plan, failed);
    counters::applied(Event::Accepted, known, &plan, failed.mask);
    debug!(
        "fd {fd}: accepted from a listener the library never saw; {}",
        Outcome {
            plan: &plan,
            known,
            refused: failed,
        }
    );
}

/// `closefrom()`: as `close()` for every number from `first` on.
pub fn before_closefrom(first: c_int) {
    if let Ok(first) = u32::try_from(first) {
        descriptors::forget_range(first, u32::MAX);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT;
    use keepalive_shim_policy::options::{IDLE, INTERVAL, USER_TIMEOUT};

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
        // A number beyond the table: nothing remembered, so the kernel is asked, before the
        // program's call (as `before_setsockopt` does), so its value is told from ours.
        let far = descriptors::TABLE_LEN as c_int + 1;
        assert_eq!(descriptors::get(far), None);
        let known = Known::from_kernel(&read_all(fd), &namespace_defaults(), &s);
        assert!(known.configured && !known.is_own(IDLE) && !known.is_own(INTERVAL));
        real::set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5).unwrap();
        let plan = decide::decide(
            &s,
            Event::Set(IDLE),
            known,
            &Defaults::KERNEL,
            read_option(fd, &s),
        );
        assert_eq!(plan.set[USER_TIMEOUT], Some(35_000), "5 + 10 x 3 s");
        close(fd);
    }

    #[test]
    fn namespace_defaults_are_a_fresh_sockets() {
        let d = namespace_defaults();
        let fd = tcp_socket(libc::AF_INET, libc::SOCK_STREAM);
        assert_eq!(read_all(fd), d.fresh);
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
