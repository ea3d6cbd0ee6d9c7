//! The decision every mechanism takes: what one socket gets now. A pure function (no system
//! call, no allocation) from the settings, an event (a socket made, a `connect()`, a `listen()`,
//! a socket accepted, the program setting one of the options) and what is known of the socket, to
//! a [`Plan`]: the value to set for each option (or none), what is known of the socket next, and
//! a reason for the debug line.
//!
//! The rule, in one sentence: every TCP socket gets the configured options except those the
//! program chose itself, and while the user timeout is not the program's own it follows the
//! keepalive in effect ([`user_timeout_in_effect`]), so no program notices a dead peer later than
//! its own settings promise; `KEEPALIVE_FORCE` sets ours over the program's, and a destination
//! the rules exclude gets back what it had without us.
//!
//! What is known ([`Known`]) comes two ways, and both end here:
//! - watched from the program's calls (the preload library's descriptor table): exact;
//! - read back from the kernel ([`Known::from_kernel`]): the supervisor, fleet mode, and the
//!   library for a descriptor it never saw (accepted, inherited, received, beyond its table).
//!   A value equal to ours is taken as ours, one equal to a fresh socket's as nobody's, any other
//!   as the program's; a user timeout equal to the one that follows the values in effect is ours.

use crate::config::Settings;
use crate::options::{
    COUNT, IDLE, INTERVAL, KEEPALIVE, N, OPTIONS, USER_TIMEOUT, user_timeout_in_effect, values,
};
use crate::rules::Destination;
use core::fmt;
use libc::c_int;

/// Every option, as a bit mask over [`OPTIONS`].
pub const ALL: u8 = (1 << N) - 1;
/// Idle, interval and count: the options the user timeout follows.
const KEEPALIVE_TIMES: u8 = 1 << IDLE | 1 << INTERVAL | 1 << COUNT;

/// A fresh TCP socket's options when no sysctl changed them: keepalive off, 7200 s idle, 75 s
/// interval, 9 probes, no user timeout (`TCP_KEEPALIVE_TIME`, `_INTVL`, `_PROBES`).
pub const KERNEL_DEFAULTS: [c_int; N] = [0, 7200, 75, 9, 0];

/// What a socket has without keepalive-shim: the kernel's built-in defaults, and this network
/// namespace's (`net.ipv4.tcp_keepalive_*`, read from a fresh socket or the sysctls) where they
/// differ. A value equal to either is nobody's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub fresh: [c_int; N],
}

impl Defaults {
    pub const KERNEL: Defaults = Defaults {
        fresh: KERNEL_DEFAULTS,
    };

    /// Whether `v` is what option `i` has when nobody set it.
    pub fn is_default(&self, i: usize, v: c_int) -> bool {
        v == self.fresh[i] || v == KERNEL_DEFAULTS[i]
    }
}

/// What is known of one TCP socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// keepalive-shim set its options on it: where not the program's own, its values are ours.
    pub configured: bool,
    /// The options the program chose itself, as a mask over [`OPTIONS`].
    pub own: u8,
    /// Nothing is set on it again: a destination the rules exclude, or a socket on which the
    /// kernel refused every option.
    pub left_alone: bool,
}

impl Known {
    /// A TCP socket nobody configured.
    pub const FRESH: Known = Known {
        configured: false,
        own: 0,
        left_alone: false,
    };
    /// A TCP socket keepalive-shim configured, on which the program has set nothing.
    pub const CONFIGURED: Known = Known {
        configured: true,
        own: 0,
        left_alone: false,
    };
    /// Left as the program made it.
    pub const LEFT_ALONE: Known = Known {
        configured: false,
        own: ALL,
        left_alone: true,
    };

    pub fn is_own(self, i: usize) -> bool {
        self.own & (1 << i) != 0
    }

    /// What the option values `now` of a TCP socket say of it, for a mechanism that did not
    /// watch its calls. Configured when it shows one of our values that no fresh socket has
    /// (an idle, interval or count equal to ours, or the user timeout that follows the values in
    /// effect); then an option whose value differs from ours is the program's. Not configured:
    /// an option whose value differs from a fresh socket's is the program's.
    ///
    /// What cannot be told apart: a program's value equal to ours or to the kernel's default
    /// (the same number either way, except that a user timeout is then followed); on a
    /// configured socket, whether keepalive is on by the program's choice or ours (taken as the
    /// program's); and, on a socket not yet configured, a program's explicit `SO_KEEPALIVE=0`
    /// or `TCP_USER_TIMEOUT=0`.
    pub fn from_kernel(now: &[c_int; N], defaults: &Defaults, s: &Settings) -> Known {
        let ours = values(s);
        let mut times_not_ours = 0u8;
        let mut times_not_default = 0u8;
        let mut evidence = false;
        for i in [IDLE, INTERVAL, COUNT] {
            let default = defaults.is_default(i, now[i]);
            if now[i] != ours[i] {
                times_not_ours |= 1 << i;
            } else if !default {
                evidence = true;
            }
            if !default {
                times_not_default |= 1 << i;
            }
        }
        // The user timeout we would have set over these values.
        let follows = |own: u8| user_timeout_in_effect(s, own, now);
        if !evidence && now[USER_TIMEOUT] != 0 && now[USER_TIMEOUT] == follows(times_not_ours) {
            evidence = true;
        }
        if evidence {
            // SO_KEEPALIVE read back on a configured socket is the program's either way: off, it
            // turned ours off; on, it may have turned it on itself (ours is on too), and a
            // keepalive someone may have asked for is never turned off (an excluded
            // destination keeps it).
            let mut own = times_not_ours | 1 << KEEPALIVE;
            if now[USER_TIMEOUT] != follows(own) {
                own |= 1 << USER_TIMEOUT;
            }
            return Known {
                configured: true,
                own,
                left_alone: false,
            };
        }
        let mut own = times_not_default;
        if !defaults.is_default(KEEPALIVE, now[KEEPALIVE]) {
            own |= 1 << KEEPALIVE;
        }
        if !defaults.is_default(USER_TIMEOUT, now[USER_TIMEOUT]) {
            own |= 1 << USER_TIMEOUT;
        }
        Known {
            configured: false,
            own,
            left_alone: false,
        }
    }
}

/// What happened to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `socket()` made it.
    Made,
    /// It is about to connect to `Some(destination)`, or to an address that is not IPv4/IPv6
    /// or could not be read (`None`: the rules cannot match it).
    Connect(Option<&'a Destination>),
    /// It is about to listen: the connections it accepts inherit its options.
    Listen,
    /// A listener accepted it (it inherited the listener's options).
    Accepted,
    /// The program set option `i` (of [`OPTIONS`]) itself, and the kernel took it; the value
    /// reads back as the program's.
    Set(usize),
}

/// Why a plan is what it is, for the debug line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// keepalive-shim is disabled (`KEEPALIVE_ENABLE=0`).
    Disabled,
    /// A new socket: all the options.
    New,
    /// Already configured: nothing more to do.
    AlreadyConfigured,
    /// Met for the first time configured: ours where the program chose nothing.
    Late,
    /// `KEEPALIVE_FORCE`: ours over the program's.
    Forced,
    /// A destination the rules exclude: back to what it had without us.
    Excluded,
    /// Left alone earlier (an excluded destination, or every option refused).
    LeftAlone,
    /// The program's value stands.
    OwnStands,
    /// The program's value stands, and the user timeout follows the keepalive now in effect.
    Follows,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Disabled => "disabled (KEEPALIVE_ENABLE=0)",
            Reason::New => "a new TCP socket",
            Reason::AlreadyConfigured => "options were set at socket()",
            Reason::Late => "a TCP socket not configured yet",
            Reason::Forced => "KEEPALIVE_FORCE",
            Reason::Excluded => "a destination the rules exclude",
            Reason::LeftAlone => "left as the program made it",
            Reason::OwnStands => "its value stands",
            Reason::Follows => {
                "its value stands, and the user timeout follows the keepalive in effect"
            }
        })
    }
}

/// The decision for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The value to set for each option; `None`: leave it as it is.
    pub set: [Option<c_int>; N],
    /// What is known of the socket once the plan is applied (and the program's call made).
    pub next: Known,
    pub reason: Reason,
}

impl Plan {
    fn nothing(known: Known, reason: Reason) -> Plan {
        Plan {
            set: [None; N],
            next: known,
            reason,
        }
    }

    /// The options the plan sets, as a mask over [`OPTIONS`].
    pub fn mask(&self) -> u8 {
        (0..N)
            .filter(|&i| self.set[i].is_some())
            .fold(0, |m, i| m | 1 << i)
    }

    /// Whether the plan sets nothing.
    pub fn is_empty(&self) -> bool {
        self.mask() == 0
    }
}

/// Whether a `connect()` on a socket of which `known` is known needs no decision at all (the
/// library's common path: configured at `socket()`, no rules, no FORCE): [`decide`] would plan
/// nothing for it.
#[inline]
pub fn settled(s: &Settings, known: Known) -> bool {
    !s.enabled || known.left_alone || (known.configured && !s.force && !s.has_rules())
}

/// The decision for `event` on a TCP socket of which `known` is known. `read(i)` gives option
/// `i`'s value now (after the program's call, for [`Event::Set`]); it is asked only for the
/// program's own idle, interval and count, when the user timeout is to follow them, so the
/// library makes no system call it does not need. `defaults` are what the socket had without us
/// (for an excluded destination).
#[inline]
pub fn decide(
    s: &Settings,
    event: Event<'_>,
    known: Known,
    defaults: &Defaults,
    mut read: impl FnMut(usize) -> c_int,
) -> Plan {
    if !s.enabled {
        return Plan::nothing(known, Reason::Disabled);
    }
    if known.left_alone {
        return Plan::nothing(known, Reason::LeftAlone);
    }
    let ours = values(s);
    match event {
        Event::Made => Plan {
            set: ours.map(Some),
            next: Known::CONFIGURED,
            reason: Reason::New,
        },
        Event::Connect(Some(dest)) if s.has_rules() && !s.touches(dest) => {
            let mut set = [None; N];
            if known.configured {
                for (i, slot) in set.iter_mut().enumerate() {
                    if !known.is_own(i) {
                        *slot = Some(defaults.fresh[i]);
                    }
                }
            }
            Plan {
                set,
                next: Known::LEFT_ALONE,
                reason: Reason::Excluded,
            }
        }
        Event::Connect(_) | Event::Listen | Event::Accepted => {
            if s.force {
                return Plan {
                    set: ours.map(Some),
                    next: Known::CONFIGURED,
                    reason: Reason::Forced,
                };
            }
            if known.configured {
                return Plan::nothing(known, Reason::AlreadyConfigured);
            }
            configure(s, known, &mut read, Reason::Late)
        }
        Event::Set(i) if i < N => {
            if s.force {
                let mut set = [None; N];
                set[i] = Some(ours[i]);
                return Plan {
                    set,
                    next: Known::CONFIGURED,
                    reason: Reason::Forced,
                };
            }
            let known = Known {
                own: known.own | 1 << i,
                ..known
            };
            if !known.configured {
                // The first of the program's choices on a socket nobody configured yet (a
                // mechanism that meets it before connect()): configured now, so that what the
                // program chose is told from what we set from here on.
                return configure(s, known, &mut read, Reason::OwnStands);
            }
            if KEEPALIVE_TIMES & 1 << i != 0 && !known.is_own(USER_TIMEOUT) {
                let mut set = [None; N];
                set[USER_TIMEOUT] = Some(follow(s, known.own, &mut read));
                return Plan {
                    set,
                    next: known,
                    reason: Reason::Follows,
                };
            }
            Plan::nothing(known, Reason::OwnStands)
        }
        Event::Set(_) => Plan::nothing(known, Reason::OwnStands),
    }
}

/// Ours for every option the program did not choose, the user timeout following the program's
/// keepalive.
fn configure(
    s: &Settings,
    known: Known,
    read: &mut impl FnMut(usize) -> c_int,
    reason: Reason,
) -> Plan {
    let ours = values(s);
    let mut set = [None; N];
    for (i, slot) in set.iter_mut().enumerate() {
        if !known.is_own(i) {
            *slot = Some(ours[i]);
        }
    }
    if !known.is_own(USER_TIMEOUT) {
        set[USER_TIMEOUT] = Some(follow(s, known.own, read));
    }
    Plan {
        set,
        next: Known {
            configured: true,
            ..known
        },
        reason,
    }
}

/// The user timeout over the keepalive in effect: the program's own idle, interval and count
/// (read), ours for the rest.
fn follow(s: &Settings, own: u8, read: &mut impl FnMut(usize) -> c_int) -> c_int {
    let mut theirs = [0; N];
    if own & KEEPALIVE_TIMES != 0 {
        for i in [IDLE, INTERVAL, COUNT] {
            if own & 1 << i != 0 {
                theirs[i] = read(i);
            }
        }
    }
    user_timeout_in_effect(s, own, &theirs)
}

/// What a socket ends up with after `plan` over `before`: for tests and for mechanisms that
/// compare.
pub fn after(before: &[c_int; N], plan: &Plan) -> [c_int; N] {
    core::array::from_fn(|i| plan.set[i].unwrap_or(before[i]))
}

/// The label of option `i`, for messages.
pub fn label(i: usize) -> &'static str {
    OPTIONS.get(i).map_or("an option", |o| o.label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT, load};

    const D: Defaults = Defaults::KERNEL;

    /// Runs `events` on a socket whose options start as `start`, the program's own sets
    /// applied as the kernel would; `watched`: the mechanism remembers `Known` between events
    /// (the library), else it reads it back before each (supervisor, fleet).
    fn run(s: &Settings, start: [c_int; N], steps: &[Step], watched: bool) -> [c_int; N] {
        let mut now = start;
        let mut known = if watched {
            Known::FRESH
        } else {
            Known::from_kernel(&now, &D, s)
        };
        for step in steps {
            if !watched {
                known = Known::from_kernel(&now, &D, s);
            }
            let (event, program) = match *step {
                Step::Made => (Event::Made, None),
                Step::Connect => (Event::Connect(None), None),
                Step::Set(i, v) => (Event::Set(i), Some((i, v))),
            };
            if let Some((i, v)) = program {
                now[i] = v;
            }
            let plan = decide(s, event, known, &D, |i| now[i]);
            now = after(&now, &plan);
            known = plan.next;
        }
        now
    }

    #[derive(Clone, Copy)]
    enum Step {
        Made,
        Connect,
        Set(usize, c_int),
    }
    use Step::*;

    #[test]
    fn watched_and_read_back_agree_on_the_common_shapes() {
        let s = DEFAULT;
        let k = KERNEL_DEFAULTS;
        let curl = [Set(KEEPALIVE, 1), Set(IDLE, 60), Set(INTERVAL, 60), Connect];
        let node = [
            Connect,
            Set(KEEPALIVE, 1),
            Set(IDLE, 1),
            Set(INTERVAL, 1),
            Set(COUNT, 10),
        ];
        let cases: [(&str, &[Step], [c_int; N]); 6] = [
            ("fresh", &[Connect], [1, 30, 10, 3, 60_000]),
            ("curl", &curl, [1, 60, 60, 3, 240_000]),
            ("node", &node, [1, 1, 1, 10, 11_000]),
            (
                "own ut",
                &[Set(USER_TIMEOUT, 5000), Connect],
                [1, 30, 10, 3, 5000],
            ),
            (
                "keepalive off",
                &[Set(KEEPALIVE, 0), Connect],
                [0, 30, 10, 3, 60_000],
            ),
            ("ut 0", &[Set(USER_TIMEOUT, 0), Connect], [1, 30, 10, 3, 0]),
        ];
        for (name, steps, want) in cases {
            // The library: socket() is seen, then the steps.
            let mut lib = vec![Made];
            lib.extend_from_slice(steps);
            assert_eq!(run(&s, k, &lib, true), want, "{name}: library");
            // The socket trap: made and configured, then read back at each step.
            assert_eq!(run(&s, k, &lib, false), want, "{name}: socket trap");
            // The connect trap: never saw socket(), reads back at each step.
            assert_eq!(run(&s, k, steps, false), want, "{name}: connect trap");
        }
    }

    #[test]
    fn an_accepted_socket_follows_the_servers_own_keepalive() {
        let s = DEFAULT;
        // Inherited from a configured listener; the server then sets 1/1/2.
        let inherited = [1, 30, 10, 3, 60_000];
        let steps = [
            Set(KEEPALIVE, 1),
            Set(IDLE, 1),
            Set(INTERVAL, 1),
            Set(COUNT, 2),
        ];
        assert_eq!(run(&s, inherited, &steps, false), [1, 1, 1, 2, 3000]);
        // Known inherited exactly (the library copies the listener's state).
        let mut now = inherited;
        let mut known = Known::CONFIGURED;
        for step in steps {
            let Set(i, v) = step else { unreachable!() };
            now[i] = v;
            let plan = decide(&s, Event::Set(i), known, &D, |i| now[i]);
            now = after(&now, &plan);
            known = plan.next;
        }
        assert_eq!(now, [1, 1, 1, 2, 3000]);
        // A server that sets nothing keeps the listener's: ours.
        let plan = decide(
            &s,
            Event::Accepted,
            Known::from_kernel(&inherited, &D, &s),
            &D,
            |_| 0,
        );
        assert!(plan.is_empty());
        assert_eq!(plan.reason, Reason::AlreadyConfigured);
    }

    #[test]
    fn excluded_destinations_get_back_what_they_had() {
        let s = load([("KEEPALIVE_EXCLUDE", "10.0.0.0/8")]).settings;
        let dest = Destination::from_sockaddr(&sockaddr_v4([10, 1, 2, 3], 80)).unwrap();
        let known = Known {
            own: 1 << IDLE,
            ..Known::CONFIGURED
        };
        let plan = decide(&s, Event::Connect(Some(&dest)), known, &D, |_| 0);
        assert_eq!(plan.set, [Some(0), None, Some(75), Some(9), Some(0)]);
        assert_eq!(plan.next, Known::LEFT_ALONE);
        // Left alone from then on, even under FORCE.
        let forced = Settings { force: true, ..s };
        let plan = decide(&forced, Event::Set(COUNT), Known::LEFT_ALONE, &D, |_| 0);
        assert!(plan.is_empty());
        // Read back after the exclusion, a socket looks unconfigured: nothing follows.
        let now = [1, 15, 75, 9, 0];
        let k = Known::from_kernel(&now, &D, &s);
        assert!(!k.configured);
        // An included destination is configured.
        let other = Destination::from_sockaddr(&sockaddr_v4([192, 0, 2, 1], 80)).unwrap();
        let plan = decide(
            &s,
            Event::Connect(Some(&other)),
            Known::CONFIGURED,
            &D,
            |_| 0,
        );
        assert_eq!(plan.reason, Reason::AlreadyConfigured);
    }

    #[test]
    fn force_and_disabled() {
        let forced = Settings {
            force: true,
            ..DEFAULT
        };
        let plan = decide(&forced, Event::Set(IDLE), Known::CONFIGURED, &D, |_| 60);
        assert_eq!(plan.set, [None, Some(30), None, None, None]);
        let plan = decide(&forced, Event::Connect(None), Known::CONFIGURED, &D, |_| 0);
        assert_eq!(plan.set, values(&forced).map(Some));
        let off = Settings {
            enabled: false,
            ..DEFAULT
        };
        assert!(decide(&off, Event::Made, Known::FRESH, &D, |_| 0).is_empty());
    }

    #[test]
    fn read_back_tells_ours_from_the_programs() {
        let s = DEFAULT;
        assert_eq!(Known::from_kernel(&KERNEL_DEFAULTS, &D, &s), Known::FRESH);
        let ours = Known::from_kernel(&[1, 30, 10, 3, 60_000], &D, &s);
        assert!(ours.configured && ours.own == 1 << KEEPALIVE);
        let curl = Known::from_kernel(&[1, 60, 60, 9, 0], &D, &s);
        assert!(!curl.configured);
        assert_eq!(curl.own, 1 << KEEPALIVE | 1 << IDLE | 1 << INTERVAL);
        let own_ut = Known::from_kernel(&[1, 30, 10, 3, 5000], &D, &s);
        assert!(own_ut.configured && own_ut.is_own(USER_TIMEOUT));
        let node_done = Known::from_kernel(&[1, 1, 1, 10, 11_000], &D, &s);
        assert!(node_done.configured && !node_done.is_own(USER_TIMEOUT));
        // A namespace whose sysctls differ: those values are nobody's either.
        let ns = Defaults {
            fresh: [0, 600, 75, 9, 0],
        };
        assert_eq!(
            Known::from_kernel(&[0, 600, 75, 9, 0], &ns, &s),
            Known::FRESH
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        use alloc::string::ToString;
        assert_eq!(
            Reason::Excluded.to_string(),
            "a destination the rules exclude"
        );
        assert_eq!(label(USER_TIMEOUT), "TCP_USER_TIMEOUT");
        assert_eq!(label(N), "an option");
    }

    fn sockaddr_v4(ip: [u8; 4], port: u16) -> alloc::vec::Vec<u8> {
        let mut b = alloc::vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }
}
