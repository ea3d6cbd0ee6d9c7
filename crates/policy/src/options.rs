//! The five socket options this project manages, their kernel ranges and the values a
//! configuration gives them, and which `socket()` arguments make a TCP socket: the facts every
//! mechanism (the preload library, the command-line tool) decides from.

use crate::config::{Settings, derived_user_timeout_ms};
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

/// How many options this project manages: the length of [`OPTIONS`], the one place the number
/// is written (the array's type makes the compiler hold the two together).
pub const N: usize = 5;

/// The five options, in the order they are applied.
pub const OPTIONS: [Opt; N] = [
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
pub fn values(s: &Settings) -> [c_int; N] {
    [
        1,
        s.idle_s as c_int,
        s.interval_s as c_int,
        s.count as c_int,
        s.user_timeout_ms as c_int,
    ]
}

/// The user timeout (milliseconds) for a socket whose keepalive values in effect are `idle_s`,
/// `interval_s` and `count`, at least one of them the program's own: the bound those values
/// imply, idle + interval × count (capped like [`derived_user_timeout_ms`]), so that the
/// library never makes the program notice a dead peer later than its own keepalive would; with
/// an explicit `KEEPALIVE_USER_TIMEOUT`, the smaller of that value and the bound (an explicit 0
/// stays 0: the kernel's default, no user timeout).
///
/// Only for that case: with all three of the library's values in effect the user timeout is
/// `s.user_timeout_ms`, an explicit value standing as given even when longer than their bound.
pub fn user_timeout_for(s: &Settings, idle_s: u32, interval_s: u32, count: u32) -> u32 {
    let bound = derived_user_timeout_ms(idle_s, interval_s, count);
    if s.user_timeout_explicit {
        s.user_timeout_ms.min(bound)
    } else {
        bound
    }
}

/// The positions in [`OPTIONS`].
pub const KEEPALIVE: usize = 0;
pub const IDLE: usize = 1;
pub const INTERVAL: usize = 2;
pub const COUNT: usize = 3;
pub const USER_TIMEOUT: usize = 4;

/// The user timeout to set on a socket on which the program set the options of `own` (a mask
/// over [`OPTIONS`]) itself, `theirs` holding their values (the rest is not read): the
/// configured one when the program set none of idle, interval and count, otherwise
/// [`user_timeout_for`] over the values in effect, the program's where it set them and the
/// configured ones elsewhere. Every mechanism (the preload library, the seccomp supervisor, the
/// fleet program's specification) decides the user timeout with this function.
pub fn user_timeout_in_effect(s: &Settings, own: u8, theirs: &[c_int; N]) -> c_int {
    let ours = values(s);
    let is_own = |i: usize| own & (1 << i) != 0;
    if !(is_own(IDLE) || is_own(INTERVAL) || is_own(COUNT)) {
        return ours[USER_TIMEOUT];
    }
    let in_effect =
        |i: usize| u32::try_from(if is_own(i) { theirs[i] } else { ours[i] }).unwrap_or(0);
    let ms = user_timeout_for(s, in_effect(IDLE), in_effect(INTERVAL), in_effect(COUNT));
    c_int::try_from(ms).unwrap_or(c_int::MAX)
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

    fn explicit(ms: u32) -> Settings {
        Settings {
            user_timeout_ms: ms,
            user_timeout_explicit: true,
            ..crate::config::DEFAULT
        }
    }

    #[test]
    fn the_user_timeout_follows_the_programs_own_keepalive() {
        let d = crate::config::DEFAULT;
        // node sets 1 s / 1 s / 10 after connect; redis-cli 15 s / 5 s / 3.
        assert_eq!(user_timeout_for(&d, 1, 1, 10), 11_000);
        assert_eq!(user_timeout_for(&d, 15, 5, 3), 30_000);
        // A program whose values bound detection later than ours gets that later bound too:
        // the user timeout then never cuts its keepalive short.
        assert_eq!(user_timeout_for(&d, 60, 60, 9), 600_000);
        // Our own values give our own user timeout.
        assert_eq!(user_timeout_for(&d, 30, 10, 3), d.user_timeout_ms);
        // The kernel's largest values: capped, not wrapped.
        assert_eq!(user_timeout_for(&d, 32767, 32767, 127), i32::MAX as u32);
    }

    #[test]
    fn an_explicit_user_timeout_applies_when_it_is_shorter() {
        assert_eq!(user_timeout_for(&explicit(3000), 1, 1, 10), 3000);
        assert_eq!(user_timeout_for(&explicit(120_000), 1, 1, 10), 11_000);
        assert_eq!(user_timeout_for(&explicit(11_000), 1, 1, 10), 11_000);
        // 0 leaves the kernel's default, whatever the program's values.
        assert_eq!(user_timeout_for(&explicit(0), 1, 1, 10), 0);
        // From the parser: KEEPALIVE_USER_TIMEOUT marks it explicit; idle alone does not.
        let loaded = crate::config::load([("KEEPALIVE_USER_TIMEOUT", "3s")]);
        assert!(loaded.settings.user_timeout_explicit);
        assert_eq!(user_timeout_for(&loaded.settings, 1, 1, 10), 3000);
        let loaded = crate::config::load([("KEEPALIVE_IDLE", "5")]);
        assert!(!loaded.settings.user_timeout_explicit);
        assert_eq!(user_timeout_for(&loaded.settings, 1, 1, 10), 11_000);
        // An invalid explicit value is not explicit: the derived one stands.
        let loaded = crate::config::load([("KEEPALIVE_USER_TIMEOUT", "soon")]);
        assert!(!loaded.settings.user_timeout_explicit);
    }

    #[test]
    fn the_user_timeout_in_effect_follows_only_the_programs_own_keepalive() {
        let s = crate::config::DEFAULT;
        let node = [1, 1, 1, 10, 0];
        assert_eq!(
            user_timeout_in_effect(&s, 0, &node),
            60_000,
            "nothing own: ours"
        );
        let keepalive_only = 1 << KEEPALIVE;
        assert_eq!(user_timeout_in_effect(&s, keepalive_only, &node), 60_000);
        let all = 1 << IDLE | 1 << INTERVAL | 1 << COUNT;
        assert_eq!(
            user_timeout_in_effect(&s, all, &node),
            11_000,
            "node's bound"
        );
        let idle = [0, 5, 75, 9, 0];
        assert_eq!(
            user_timeout_in_effect(&s, 1 << IDLE, &idle),
            35_000,
            "5 + 10 x 3"
        );
    }
}
