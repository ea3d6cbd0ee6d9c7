//! The conformance table: situations a TCP socket meets and the five option values it must end
//! with, under every mechanism (the preload library, the supervisor's socket and connect traps,
//! fleet mode). One row is one situation; the tests of every mechanism run every row on real
//! sockets (`tests/conformance.rs`, `cli/tests/conformance.rs`) with the same client program
//! (`tests/programs/conformance.c`), so adding a row adds it everywhere. Where a mechanism
//! truly cannot match, the row says so with that mechanism's own expected values and why; the
//! tests assert exactly those, and the README's "Whose settings win" lists them.

use crate::options::{COUNT, IDLE, INTERVAL, KEEPALIVE, N, USER_TIMEOUT};

/// A way keepalive-shim reaches a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `LD_PRELOAD` of the library, a dynamically linked client.
    Library,
    /// `keepalive-shim run --mode seccomp --trap socket`, a static client.
    SocketTrap,
    /// `keepalive-shim run --mode seccomp --trap connect`, a static client.
    ConnectTrap,
    /// `keepalive-shim fleet attach` on the client's cgroup, a static client.
    Fleet,
    /// The library for descriptors beyond its table (where root raised `fs.nr_open`; in the
    /// tests `KEEPALIVE_SHIM_TEST_TABLE_LIMIT=0`): it remembers nothing and reads every socket
    /// back, as the supervisor does, with the destination rules.
    LibraryBeyondTable,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Library,
        Mechanism::SocketTrap,
        Mechanism::ConnectTrap,
        Mechanism::Fleet,
        Mechanism::LibraryBeyondTable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Library => "library",
            Mechanism::SocketTrap => "run --trap socket",
            Mechanism::ConnectTrap => "run --trap connect",
            Mechanism::Fleet => "fleet mode",
            Mechanism::LibraryBeyondTable => "library, beyond its table",
        }
    }
}

/// How the client makes its connection: the client program's first argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `socket()`, the options of `before`, `connect()`, the options of `after`; the values are
    /// read on the connected socket.
    Connect,
    /// As `Connect`, the socket made by a raw `socket` system call, past libc.
    Raw,
    /// A listener (`socket()`, `bind()`, `listen()`), a connection to it, `accept()`; the
    /// options of `after` are set on the accepted socket, whose values are read.
    Accept,
    /// As `Accept`, the listener made by a raw `socket` system call: a listener the library
    /// never saw, as one inherited from systemd's socket activation is.
    RawAccept,
}

impl Shape {
    pub fn arg(self) -> &'static str {
        match self {
            Shape::Connect => "connect",
            Shape::Raw => "raw",
            Shape::Accept => "accept",
            Shape::RawAccept => "raw-accept",
        }
    }
}

/// One situation and what it must give.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    /// The settings, as environment variables (`{PORT}` nowhere: addresses only).
    pub env: &'static [(&'static str, &'static str)],
    pub shape: Shape,
    /// The address the client connects to (its own listener is bound there).
    pub host: &'static str,
    /// The program's own option values set before `connect()`, as (index in `OPTIONS`, value).
    pub before: &'static [(usize, i32)],
    /// Set after `connect()` (or on the accepted socket).
    pub after: &'static [(usize, i32)],
    /// SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT at the end.
    pub expect: [i32; N],
    /// Mechanisms that truly cannot match: their own expected values, and why.
    pub exceptions: &'static [Exception],
}

#[derive(Clone, Copy, Debug)]
pub struct Exception {
    pub mechanism: Mechanism,
    pub expect: [i32; N],
    pub why: &'static str,
}

impl Case {
    /// What `m` must give in this situation.
    pub fn expected(&self, m: Mechanism) -> [i32; N] {
        self.exceptions
            .iter()
            .find(|e| e.mechanism == m)
            .map_or(self.expect, |e| e.expect)
    }

    /// The client program's arguments after the shape: the host, then `b:I=V` and `a:I=V`.
    pub fn args(&self) -> alloc::vec::Vec<alloc::string::String> {
        use alloc::format;
        let mut out = alloc::vec![self.shape.arg().into(), self.host.into()];
        out.extend(self.before.iter().map(|(i, v)| format!("b:{i}={v}")));
        out.extend(self.after.iter().map(|(i, v)| format!("a:{i}={v}")));
        out
    }

    /// What the kernel alone gives in this situation, without keepalive-shim: the program's own
    /// `before` and then `after` values over the kernel's defaults (the bare runs of the
    /// conformance tests, which check that the client does what the row says).
    pub fn without_shim(&self) -> [i32; N] {
        let mut now = KERNEL;
        for &(i, v) in self.before.iter().chain(self.after) {
            now[i] = v;
        }
        now
    }
}

const OURS: [i32; N] = [1, 30, 10, 3, 60_000];
const KERNEL: [i32; N] = crate::decide::KERNEL_DEFAULTS;

const KEEPALIVE_READ_BACK: &str = "read back, keepalive on a configured socket may be the \
     program's own (ours is on too): an excluded destination keeps it on rather than turn off a \
     keepalive the program may have asked for";

const RULES_UNDER_SUPERVISOR: &str = "the supervisor applies no destination rules: the destination \
     is in the program's memory, which may change between a read and the call, and the socket trap \
     never sees connect()";

/// The table.
pub const CASES: &[Case] = &[
    Case {
        name: "a fresh socket",
        env: &[],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: OURS,
        exceptions: &[],
    },
    Case {
        name: "curl: keepalive on, its own idle and interval before connect()",
        env: &[],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[(KEEPALIVE, 1), (IDLE, 60), (INTERVAL, 60)],
        after: &[],
        expect: [1, 60, 60, 3, 240_000],
        exceptions: &[],
    },
    Case {
        name: "node: its own 1/1/10 after connect()",
        env: &[],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[],
        after: &[(KEEPALIVE, 1), (IDLE, 1), (INTERVAL, 1), (COUNT, 10)],
        expect: [1, 1, 1, 10, 11_000],
        exceptions: &[],
    },
    Case {
        name: "its own user timeout",
        env: &[],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[(USER_TIMEOUT, 5000)],
        after: &[],
        expect: [1, 30, 10, 3, 5000],
        exceptions: &[],
    },
    Case {
        name: "its own SO_KEEPALIVE=0",
        env: &[],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[(KEEPALIVE, 0)],
        after: &[],
        expect: [0, 30, 10, 3, 60_000],
        exceptions: &[],
    },
    Case {
        name: "TCP_USER_TIMEOUT=0 set explicitly",
        env: &[],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[(USER_TIMEOUT, 0)],
        after: &[],
        expect: [1, 30, 10, 3, 0],
        exceptions: &[],
    },
    Case {
        name: "an accepted socket, the server sets nothing",
        env: &[],
        shape: Shape::Accept,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: OURS,
        exceptions: &[],
    },
    Case {
        name: "an accepted socket, the server's own 1/1/2",
        env: &[],
        shape: Shape::Accept,
        host: "127.0.0.1",
        before: &[],
        after: &[(KEEPALIVE, 1), (IDLE, 1), (INTERVAL, 1), (COUNT, 2)],
        expect: [1, 1, 1, 2, 3000],
        exceptions: &[],
    },
    Case {
        name: "an accepted socket from a listener never seen (socket activation)",
        env: &[],
        shape: Shape::RawAccept,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: OURS,
        exceptions: &[],
    },
    Case {
        name: "an accepted socket from a listener never seen, the server's own 1/1/2",
        env: &[],
        shape: Shape::RawAccept,
        host: "127.0.0.1",
        before: &[],
        after: &[(KEEPALIVE, 1), (IDLE, 1), (INTERVAL, 1), (COUNT, 2)],
        expect: [1, 1, 1, 2, 3000],
        exceptions: &[],
    },
    Case {
        name: "an excluded destination",
        env: &[("KEEPALIVE_EXCLUDE", "127.0.0.2")],
        shape: Shape::Connect,
        host: "127.0.0.2",
        before: &[(IDLE, 45)],
        after: &[],
        expect: [0, 45, 75, 9, 0],
        exceptions: &[
            Exception {
                mechanism: Mechanism::SocketTrap,
                expect: [1, 45, 10, 3, 75_000],
                why: RULES_UNDER_SUPERVISOR,
            },
            Exception {
                mechanism: Mechanism::ConnectTrap,
                expect: [1, 45, 10, 3, 75_000],
                why: RULES_UNDER_SUPERVISOR,
            },
            Exception {
                mechanism: Mechanism::LibraryBeyondTable,
                expect: [1, 45, 75, 9, 0],
                why: KEEPALIVE_READ_BACK,
            },
        ],
    },
    Case {
        name: "an excluded destination, the program's own keepalive on",
        env: &[("KEEPALIVE_EXCLUDE", "127.0.0.2")],
        shape: Shape::Connect,
        host: "127.0.0.2",
        before: &[(KEEPALIVE, 1)],
        after: &[],
        expect: [1, 7200, 75, 9, 0],
        exceptions: &[
            Exception {
                mechanism: Mechanism::SocketTrap,
                expect: OURS,
                why: RULES_UNDER_SUPERVISOR,
            },
            Exception {
                mechanism: Mechanism::ConnectTrap,
                expect: OURS,
                why: RULES_UNDER_SUPERVISOR,
            },
        ],
    },
    Case {
        name: "an included destination",
        env: &[("KEEPALIVE_INCLUDE", "127.0.0.1")],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: OURS,
        exceptions: &[],
    },
    Case {
        name: "a destination not included",
        env: &[("KEEPALIVE_INCLUDE", "127.0.0.3")],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: KERNEL,
        exceptions: &[
            Exception {
                mechanism: Mechanism::SocketTrap,
                expect: OURS,
                why: RULES_UNDER_SUPERVISOR,
            },
            Exception {
                mechanism: Mechanism::ConnectTrap,
                expect: OURS,
                why: RULES_UNDER_SUPERVISOR,
            },
            Exception {
                mechanism: Mechanism::LibraryBeyondTable,
                expect: [1, 7200, 75, 9, 0],
                why: KEEPALIVE_READ_BACK,
            },
        ],
    },
    Case {
        name: "KEEPALIVE_FORCE over curl's own",
        env: &[("KEEPALIVE_FORCE", "1")],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[(KEEPALIVE, 1), (IDLE, 60), (INTERVAL, 60)],
        after: &[(COUNT, 9)],
        expect: OURS,
        exceptions: &[],
    },
    Case {
        name: "KEEPALIVE_ENABLE=0",
        env: &[("KEEPALIVE_ENABLE", "0")],
        shape: Shape::Connect,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: KERNEL,
        exceptions: &[],
    },
    Case {
        name: "a socket made by a raw system call",
        env: &[],
        shape: Shape::Raw,
        host: "127.0.0.1",
        before: &[],
        after: &[],
        expect: OURS,
        exceptions: &[],
    },
    Case {
        name: "a raw socket with node's 1/1/10 after connect()",
        env: &[],
        shape: Shape::Raw,
        host: "127.0.0.1",
        before: &[],
        after: &[(KEEPALIVE, 1), (IDLE, 1), (INTERVAL, 1), (COUNT, 10)],
        expect: [1, 1, 1, 10, 11_000],
        exceptions: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::decide::{Defaults, Event, Known, after, decide};
    use crate::rules::Destination;

    /// The table against the decision itself, before any real socket, as each mechanism meets
    /// a row: the library watches every call from `socket()` on; the socket trap makes the
    /// socket and reads back at each later call; the connect trap reads back from its first
    /// trapped call on (never `socket()`); fleet mode meets the connection at connect (or
    /// accept) and remembers, per socket, which options the program set. The supervisor applies
    /// no destination rules. A row that contradicts the rule fails here first.
    #[test]
    fn every_row_follows_from_decide() {
        for case in CASES {
            for m in Mechanism::ALL {
                assert_eq!(
                    simulate(case, m),
                    case.expected(m),
                    "{} ({})",
                    case.name,
                    m.name()
                );
            }
        }
    }

    fn simulate(case: &Case, m: Mechanism) -> [i32; N] {
        let mut s = load(case.env.iter().copied()).settings;
        if matches!(m, Mechanism::SocketTrap | Mechanism::ConnectTrap) {
            s.exclude = crate::rules::Rules::EMPTY;
            s.include = crate::rules::Rules::EMPTY;
        }
        let ip: core::net::Ipv4Addr = case.host.parse().unwrap();
        let mut sa = [0u8; 16];
        sa[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sa[4..8].copy_from_slice(&ip.octets());
        let dest = Destination::from_sockaddr(&sa).unwrap();
        let d = Defaults::KERNEL;
        let watched = matches!(m, Mechanism::Library | Mechanism::Fleet);
        let sees_socket = matches!(
            m,
            Mechanism::Library | Mechanism::SocketTrap | Mechanism::LibraryBeyondTable
        ) && !matches!(case.shape, Shape::Raw | Shape::RawAccept);
        let mut now = KERNEL;
        let mut known = Known::FRESH;
        let mut step = |event: Event, set: Option<(usize, i32)>, now: &mut [i32; N]| {
            if !watched {
                known = Known::from_kernel(now, &d, &s);
            }
            if let Some((i, v)) = set {
                now[i] = v;
            }
            if m == Mechanism::Fleet && !known.configured {
                // Fleet mode configures at connect and accept only; before, it marks the
                // program's own options.
                if let Event::Set(i) = event {
                    known.own |= 1 << i;
                    return;
                }
            }
            let plan = decide(&s, event, known, &d, |i| now[i]);
            *now = after(now, &plan);
            known = plan.next;
        };
        if sees_socket {
            step(Event::Made, None, &mut now);
        }
        if matches!(case.shape, Shape::Accept | Shape::RawAccept) {
            if m != Mechanism::Fleet {
                step(Event::Listen, None, &mut now);
            }
            step(Event::Accepted, None, &mut now);
        }
        for &(i, v) in case.before {
            step(Event::Set(i), Some((i, v)), &mut now);
        }
        if !matches!(case.shape, Shape::Accept | Shape::RawAccept) {
            step(Event::Connect(Some(&dest)), None, &mut now);
        }
        for &(i, v) in case.after {
            step(Event::Set(i), Some((i, v)), &mut now);
        }
        now
    }

    #[test]
    fn rows_have_unique_names_and_exceptions_say_why() {
        for (i, a) in CASES.iter().enumerate() {
            assert!(
                CASES[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
            for e in a.exceptions {
                assert!(!e.why.is_empty() && e.expect != a.expect, "{}", a.name);
            }
        }
        assert_eq!(
            CASES[1].args(),
            ["connect", "127.0.0.1", "b:0=1", "b:1=60", "b:2=60"]
        );
    }
}
