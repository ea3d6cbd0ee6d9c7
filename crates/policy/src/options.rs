//! The five socket options this project manages, their kernel ranges and the values a
//! configuration gives them, and which `socket()` arguments make a TCP socket: the facts every
//! mechanism (the preload library, the command-line tool) decides from.

use crate::config::Settings;
use libc::c_int;

/// One socket option this library manages.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    pub level: c_int,
    pub name: c_int,
    pub label: &'static str,
    /// The range the kernel accepts: anything else is EINVAL.
    pub min: c_int,
    pub max: c_int,
}

/// The five options, in the order they are applied.
pub const OPTIONS: [Opt; 5] = [
    Opt {
        level: libc::SOL_SOCKET,
        name: libc::SO_KEEPALIVE,
        label: "SO_KEEPALIVE",
        min: c_int::MIN,
        max: c_int::MAX,
    },
    Opt {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPIDLE,
        label: "TCP_KEEPIDLE",
        min: 1,
        max: crate::config::SECONDS_MAX as c_int,
    },
    Opt {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPINTVL,
        label: "TCP_KEEPINTVL",
        min: 1,
        max: crate::config::SECONDS_MAX as c_int,
    },
    Opt {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_KEEPCNT,
        label: "TCP_KEEPCNT",
        min: 1,
        max: crate::config::COUNT_MAX as c_int,
    },
    Opt {
        level: libc::IPPROTO_TCP,
        name: libc::TCP_USER_TIMEOUT,
        label: "TCP_USER_TIMEOUT",
        min: 0,
        max: c_int::MAX,
    },
];

/// The value of each of [`OPTIONS`] under `s`.
pub fn values(s: &Settings) -> [c_int; 5] {
    [
        1,
        s.idle_s as c_int,
        s.interval_s as c_int,
        s.count as c_int,
        s.user_timeout_ms as c_int,
    ]
}

/// The index in [`OPTIONS`] of `(level, name)`, if it is one of ours.
pub fn option_index(level: c_int, name: c_int) -> Option<usize> {
    OPTIONS
        .iter()
        .position(|o| o.level == level && o.name == name)
}

/// `socket()` arguments that make a TCP socket: IPv4 or IPv6, stream (ignoring `SOCK_NONBLOCK`
/// and `SOCK_CLOEXEC`, which Python always adds), protocol 0 or TCP.
pub fn is_tcp(domain: c_int, ty: c_int, protocol: c_int) -> bool {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && base == libc::SOCK_STREAM
        && (protocol == 0 || protocol == libc::IPPROTO_TCP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_is_recognised_with_flags_and_explicit_protocol() {
        use libc::*;
        assert!(is_tcp(AF_INET, SOCK_STREAM, 0));
        assert!(is_tcp(
            AF_INET6,
            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
            0
        ));
        assert!(is_tcp(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
        for (d, t, p) in [
            (AF_INET, SOCK_DGRAM, 0),
            (AF_UNIX, SOCK_STREAM, 0),
            (AF_INET, SOCK_RAW, IPPROTO_TCP),
            (AF_INET, SOCK_SEQPACKET, 0),
            (AF_INET, SOCK_STREAM, IPPROTO_SCTP),
            (AF_INET, SOCK_STREAM, 262), // IPPROTO_MPTCP
            (AF_NETLINK, SOCK_RAW, 0),
        ] {
            assert!(!is_tcp(d, t, p), "{d} {t} {p}");
        }
    }

    #[test]
    fn every_option_is_found_by_level_and_name() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert_eq!(option_index(o.level, o.name), Some(i), "{}", o.label);
        }
        assert_eq!(option_index(libc::SOL_SOCKET, libc::SO_REUSEADDR), None);
        assert_eq!(values(&crate::config::DEFAULT), [1, 30, 10, 3, 60_000]);
    }
}
