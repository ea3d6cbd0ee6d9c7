//! The programs run in the interpreter (`interp.rs`), step by step against `decide()`: every
//! row of the conformance table, and each behaviour on its own.

use super::super::btf::Layout;
use super::super::interp::{LAYOUT, Run, Sock};
use super::*;
use keepalive_shim_policy::cases::{CASES, Mechanism, Shape};
use keepalive_shim_policy::config::{self, DEFAULT};
use keepalive_shim_policy::decide::{Event, Known, Plan, Reason, after, decide};
use keepalive_shim_policy::options::user_timeout_for;
use keepalive_shim_policy::rules::Destination;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAPS: Maps = Maps {
    info: 3,
    storage: None,
    counts: Some(5),
};
const MAPS_STORAGE: Maps = Maps {
    info: 3,
    storage: Some(4),
    counts: Some(5),
};
/// A fresh socket as `bpf_getsockopt` reads it: keepalive off, the kernel's defaults, no
/// user timeout.
const FRESH: [i32; N] = KERNEL_DEFAULTS;
const OURS: [i32; N] = [1, 30, 10, 3, 60_000];
const D: Defaults = Defaults::KERNEL;
/// The attached cgroup, and the one the model sockets are in (`Sock::new`).
const ATTACHED: u64 = 1;
const CG: u64 = 1000;
const TARGET: Target = Target {
    layout: LAYOUT,
    cgroup: ATTACHED,
};

fn settings(vars: &[(&str, &str)]) -> Settings {
    let loaded = config::load(vars.iter().copied());
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.settings
}

fn v4(a: &str, port: u16) -> Destination {
    Destination {
        ip: a.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped().octets(),
        port,
    }
}

fn v6(a: &str, port: u16) -> Destination {
    Destination {
        ip: a.parse::<Ipv6Addr>().unwrap().octets(),
        port,
    }
}

/// The storage byte that records `k`.
fn mark_of(k: Known) -> u8 {
    if k.left_alone {
        MARK_EXCLUDED
    } else if k.configured {
        MARK_CONFIGURED | k.own
    } else {
        k.own
    }
}

/// Fleet mode on one socket: the generated programs run in the interpreter at each event,
/// as the kernel runs them, and each event's effect is checked against the policy's plan
/// for it (`decide` over what fleet mode knows then, applied with `decide::after`), and the
/// socket's storage byte against what the plan says is known next.
struct Fleet<'s> {
    s: &'s Settings,
    d: Defaults,
    storage: bool,
    ops: Vec<Insn>,
    sso: Option<Vec<Insn>>,
    sock: Sock,
    /// What the programs have recorded of the socket, by the policy (with storage).
    known: Option<Known>,
    name: &'s str,
}

impl<'s> Fleet<'s> {
    fn new(s: &'s Settings, start: [i32; N]) -> Fleet<'s> {
        Fleet::with(s, D, start)
    }

    fn with(s: &'s Settings, d: Defaults, start: [i32; N]) -> Fleet<'s> {
        let storage = needs_storage(s);
        let maps = if storage { MAPS_STORAGE } else { MAPS };
        Fleet {
            s,
            d,
            storage,
            ops: sock_ops(s, &d, maps, TARGET),
            sso: setsockopt(s, maps, TARGET),
            sock: Sock::new(start),
            known: None,
            name: "",
        }
    }

    /// What fleet mode knows at an event: what the programs recorded, else what the options
    /// read back say (as a fresh socket's when they cannot be read; a socket nobody set an
    /// option on reads as fresh without reading).
    fn knows(&self, in_sock_ops: bool) -> Known {
        match self.known {
            Some(k) if self.storage && (k.configured || k.left_alone) => k,
            _ if in_sock_ops || !self.storage => {
                let seen = if self.sock.readable {
                    self.sock.opts
                } else {
                    self.d.fresh
                };
                Known::from_kernel(&seen, &self.d, self.s)
            }
            _ => self.unmarked(),
        }
    }

    /// What an unmarked socket is to the setsockopt program: configured by sock_ops, with
    /// nothing of its own, once connected or accepted; as the kernel made it before (or
    /// listening).
    fn unmarked(&self) -> Known {
        if [TCP_CLOSE, TCP_LISTEN].contains(&self.sock.state) {
            Known::FRESH
        } else {
            Known::CONFIGURED
        }
    }

    /// The event's effect (the socket was `before`, with the program's own call made)
    /// against the decision.
    fn check(&mut self, event: Event, known: Known, before: [i32; N]) -> Plan {
        let plan = decide(self.s, event, known, &self.d, |i| before[i]);
        assert_eq!(
            self.sock.opts,
            after(&before, &plan),
            "{}: {event:?}: the program and the decision ({:?} over {known:?}) disagree",
            self.name,
            plan.reason
        );
        match self.sock.mark {
            // No marks kept (no setsockopt program): read back at every event.
            _ if !self.storage => self.known = None,
            // Recorded: exactly what the plan says is known next.
            Some(mark) => {
                assert_eq!(
                    mark,
                    mark_of(plan.next),
                    "{}: {event:?}: the marks",
                    self.name
                );
                self.known = Some(plan.next);
            }
            // FORCE without rules knows nothing of a socket, and needs nothing.
            None if self.s.force => self.known = None,
            // Not recorded: what the next event takes an unmarked socket for, exactly.
            None => {
                assert_eq!(
                    plan.next,
                    self.unmarked(),
                    "{}: {event:?}: unmarked, but not what an unmarked socket is taken for",
                    self.name
                );
                self.known = None;
            }
        }
        plan
    }

    fn sock_ops(&mut self, op: i32, dest: Option<Destination>) -> Plan {
        let known = self.knows(true);
        // Connecting (before the SYN) or accepted (established).
        self.sock.state = if op == TCP_CONNECT_CB {
            2
        } else {
            TCP_ESTABLISHED
        };
        let before = self.sock.opts;
        assert_eq!(Run::sock_ops(&self.ops, op, dest, &mut self.sock), 1);
        let event = match &dest {
            Some(d) => Event::Connect(Some(d)),
            None => Event::Accepted,
        };
        self.check(event, known, before)
    }

    /// `BPF_SOCK_OPS_TCP_CONNECT_CB`, before the SYN: `Event::Connect`.
    fn connect(&mut self, dest: Destination) -> Plan {
        self.sock_ops(TCP_CONNECT_CB, Some(dest))
    }

    /// `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`: `Event::Accepted`.
    fn accepted(&mut self) -> Plan {
        self.sock_ops(PASSIVE_ESTABLISHED_CB, None)
    }

    /// The program's `setsockopt()` of option `i` to a value the kernel takes: the
    /// setsockopt program runs, then the kernel applies what it hands on; `Event::Set(i)`.
    /// Without a setsockopt program nothing sees it (`None`).
    fn set(&mut self, i: usize, v: i32) -> Option<Plan> {
        let o = &OPTIONS[i];
        assert!((o.min..=o.max).contains(&v), "a value the kernel takes");
        let Some(prog) = &self.sso else {
            self.sock.opts[i] = v;
            self.known = None;
            return None;
        };
        let known = self.knows(false);
        let mut before = self.sock.opts;
        before[i] = v;
        let (ret, passed) =
            Run::setsockopt(prog, o.level, o.name, &v.to_ne_bytes(), &mut self.sock);
        assert_eq!(ret, 1, "{}: the call goes on", self.name);
        self.sock.opts[i] = i32::from_ne_bytes(passed[..4].try_into().unwrap());
        Some(self.check(Event::Set(i), known, before))
    }
}

/// The conformance table, as fleet mode meets each row: no `socket()` event (a raw
/// socket is the same), the program's options before `connect()` through the setsockopt
/// program, `connect()` as `TCP_CONNECT_CB`; an accepted socket from a listener fleet mode
/// did not configure, then the program's options on it.
#[test]
fn every_conformance_row_as_fleet_mode_meets_it() {
    for case in CASES {
        let s = config::load(case.env.iter().copied()).settings;
        let mut f = Fleet::new(&s, KERNEL_DEFAULTS);
        f.name = case.name;
        let ip = match case.host.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let dest = Destination { ip, port: 8080 };
        match case.shape {
            Shape::Connect | Shape::Raw => {
                for &(i, v) in case.before {
                    f.set(i, v);
                }
                f.connect(dest);
                for &(i, v) in case.after {
                    f.set(i, v);
                }
            }
            Shape::Accept | Shape::RawAccept => {
                f.accepted();
                for &(i, v) in case.before.iter().chain(case.after) {
                    f.set(i, v);
                }
            }
        }
        assert_eq!(
            f.sock.opts,
            case.expected(Mechanism::Fleet),
            "{}",
            case.name
        );
    }
}

/// Runs the sock_ops program for `s` on a socket reading `before`, as an outgoing
/// connection to `dest` (or an accepted one), checked against the decision.
fn connect(s: &Settings, before: [i32; N], dest: Option<Destination>) -> Sock {
    let mut f = Fleet::new(s, before);
    match dest {
        Some(d) => f.connect(d),
        None => f.accepted(),
    };
    f.sock
}

#[test]
fn other_callbacks_are_left_alone() {
    for s in [DEFAULT, settings(&[("KEEPALIVE_FORCE", "1")])] {
        let prog = sock_ops(&s, &D, MAPS_STORAGE, TARGET);
        for op in [0, 1, 2, 4, 6, 7, 10] {
            let mut sock = Sock::new(FRESH);
            assert_eq!(Run::sock_ops(&prog, op, None, &mut sock), 1);
            assert!(sock.sets.is_empty(), "op {op}: {:?}", sock.sets);
            assert_eq!((sock.gets, sock.mark), (0, None), "op {op}");
        }
    }
}

#[test]
fn disabled_does_nothing() {
    let s = settings(&[("KEEPALIVE_ENABLE", "0")]);
    assert!(setsockopt(&s, MAPS, TARGET).is_none());
    assert!(!needs_storage(&s));
    let sock = connect(&s, FRESH, Some(v4("10.0.0.1", 80)));
    assert_eq!((sock.opts, sock.gets), (FRESH, 0));
}

#[test]
fn a_fresh_connection_gets_all_five() {
    let sock = connect(&DEFAULT, FRESH, Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, OURS);
    // Nobody set an option on it (the socket says so): no read back, no storage, five
    // writes.
    assert_eq!(sock.mark, None);
    assert_eq!(sock.gets, 0);
    assert_eq!(sock.sets.len(), N);
    // Without the kernel's layout: read back first.
    let mut f = Fleet::new(&DEFAULT, FRESH);
    f.sock.layout = crate::btf::Layout::NONE;
    f.ops = sock_ops(
        &DEFAULT,
        &D,
        MAPS_STORAGE,
        Target {
            layout: crate::btf::Layout::NONE,
            cgroup: ATTACHED,
        },
    );
    f.connect(v4("10.0.0.1", 80));
    assert_eq!((f.sock.opts, f.sock.gets), (OURS, N));
}

#[test]
fn an_accepted_connection_gets_them_too() {
    let s = settings(&[("KEEPALIVE_IDLE", "20"), ("KEEPALIVE_COUNT", "4")]);
    let sock = connect(&s, FRESH, None);
    assert_eq!(sock.opts, [1, 20, 10, 4, 60_000]);
}

#[test]
fn one_from_a_configured_listener_is_already_configured() {
    // Inherited from a listener fleet mode configured (a server's SO_KEEPALIVE on it).
    let mut f = Fleet::new(&DEFAULT, OURS);
    let plan = f.accepted();
    assert_eq!(plan.reason, Reason::AlreadyConfigured);
    assert!(f.sock.sets.is_empty());
    // Its own idle then moves the user timeout, which is ours.
    f.set(IDLE, 1);
    assert_eq!(f.sock.opts, [1, 1, 10, 3, 31_000]);
}

#[test]
fn keepalive_turned_on_by_the_program_stays() {
    // On, with the kernel's timings: the program chose keepalive; the timings are ours.
    let sock = connect(&DEFAULT, [1, 7200, 75, 9, 0], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, OURS);
    assert!(!sock.sets.iter().any(|&(i, _)| i == KEEPALIVE));
    // Read back (someone set an option on it): what it said is recorded.
    assert_eq!(sock.mark, Some(MARK_CONFIGURED | 1 << KEEPALIVE));
}

#[test]
fn a_programs_own_idle_interval_count_stand_and_the_user_timeout_follows() {
    // curl, read back: 60 s / 60 s, count ours: bound 60 + 60 × 3 = 240 s.
    let sock = connect(&DEFAULT, [1, 60, 60, 9, 0], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, [1, 60, 60, 3, 240_000]);
    assert_eq!(
        sock.opts[USER_TIMEOUT] as u32,
        user_timeout_for(&DEFAULT, 60, 60, 3)
    );
    // Count alone.
    let sock = connect(&DEFAULT, [0, 7200, 75, 5, 0], None);
    assert_eq!(sock.opts, [1, 30, 10, 5, 80_000]);
    // curl seen by the setsockopt program before connect: the same.
    let mut f = Fleet::new(&DEFAULT, FRESH);
    f.set(KEEPALIVE, 1);
    f.set(IDLE, 60);
    f.set(INTERVAL, 60);
    assert_eq!(
        f.connect(v4("10.0.0.1", 80)).reason,
        Reason::AlreadyConfigured
    );
    assert_eq!(f.sock.opts, [1, 60, 60, 3, 240_000]);
}

#[test]
fn a_socket_configured_elsewhere_is_told_by_its_values() {
    // Ours and the user timeout that follows a program's idle: configured, idle its own.
    let mut f = Fleet::new(&DEFAULT, [1, 1, 10, 3, 31_000]);
    assert_eq!(
        f.connect(v4("10.0.0.1", 80)).reason,
        Reason::AlreadyConfigured
    );
    assert!(f.sock.sets.is_empty());
    // SO_KEEPALIVE read back on a configured socket counts as the program's; the
    // setsockopt program records it once the program sets one of the five.
    f.set(INTERVAL, 5);
    assert_eq!(
        f.sock.mark,
        Some(MARK_CONFIGURED | 1 << IDLE | 1 << KEEPALIVE | 1 << INTERVAL)
    );
    assert_eq!(f.sock.opts, [1, 1, 5, 3, 16_000]);
    // Ours equal to the kernel's defaults: only the user timeout shows they are ours.
    let s = settings(&[
        ("KEEPALIVE_IDLE", "7200"),
        ("KEEPALIVE_INTERVAL", "75"),
        ("KEEPALIVE_COUNT", "9"),
    ]);
    let mut f = Fleet::new(&s, FRESH);
    f.connect(v4("10.0.0.1", 80));
    assert_eq!(f.sock.opts, [1, 7200, 75, 9, 7_875_000]);
    let mut f = Fleet::new(&s, [1, 7200, 75, 9, 7_875_000]);
    assert_eq!(
        f.connect(v4("10.0.0.1", 80)).reason,
        Reason::AlreadyConfigured
    );
}

#[test]
fn an_explicit_user_timeout_caps_the_followed_one() {
    let s = settings(&[("KEEPALIVE_USER_TIMEOUT", "45s")]);
    let sock = connect(&s, [1, 60, 60, 9, 0], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts[USER_TIMEOUT], 45_000);
    let sock = connect(&s, [1, 1, 1, 10, 0], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts[USER_TIMEOUT], 11_000);
    // And stands as given when the program sets no keepalive of its own.
    let sock = connect(&s, FRESH, Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts[USER_TIMEOUT], 45_000);
}

#[test]
fn the_followed_user_timeout_is_capped_like_the_kernels() {
    let sock = connect(&DEFAULT, [1, 32767, 32767, 127, 0], None);
    assert_eq!(sock.opts[USER_TIMEOUT], i32::MAX);
}

#[test]
fn no_user_timeout_when_it_is_zero() {
    let s = settings(&[("KEEPALIVE_USER_TIMEOUT", "0")]);
    let sock = connect(&s, FRESH, Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, [1, 30, 10, 3, 0]);
    let sock = connect(&s, [1, 1, 1, 10, 0], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, [1, 1, 1, 10, 0]);
    // No setsockopt program: nothing to follow, so nothing after connect changes.
    let mut f = Fleet::new(&s, FRESH);
    f.connect(v4("10.0.0.1", 80));
    assert!(f.set(IDLE, 1).is_none());
    assert_eq!(f.sock.opts, [1, 1, 10, 3, 0]);
}

#[test]
fn a_programs_own_user_timeout_stands_and_is_marked() {
    let sock = connect(&DEFAULT, [0, 7200, 75, 9, 5000], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, [1, 30, 10, 3, 5000]);
    assert_eq!(sock.mark, Some(MARK_CONFIGURED | 1 << USER_TIMEOUT));
}

#[test]
fn the_nodes_sysctl_defaults_are_not_a_programs_own() {
    let ns = Defaults {
        fresh: [0, 600, 75, 9, 0],
    };
    let mut f = Fleet::with(&DEFAULT, ns, [0, 600, 75, 9, 0]);
    f.accepted();
    assert_eq!(f.sock.opts, OURS);
    // The kernel's own default is nobody's either.
    let mut f = Fleet::with(&DEFAULT, ns, FRESH);
    f.accepted();
    assert_eq!(f.sock.opts, OURS);
    // An excluded destination gets back the node's, where ours were set.
    let s = settings(&[("KEEPALIVE_EXCLUDE", "10.0.0.0/8")]);
    let mut f = Fleet::with(&s, ns, [0, 600, 75, 9, 0]);
    f.set(COUNT, 5);
    f.connect(v4("10.0.0.1", 80));
    assert_eq!(f.sock.opts, [0, 600, 75, 5, 0]);
}

#[test]
fn unreadable_options_count_as_unset() {
    // Kernels before 6.1 refuse bpf_getsockopt of these options: as a fresh socket.
    let mut f = Fleet::new(&DEFAULT, [1, 60, 60, 9, 5000]);
    f.sock.readable = false;
    f.accepted();
    assert_eq!(f.sock.opts, OURS);
}

#[test]
fn force_sets_all_five_without_reading() {
    let s = settings(&[("KEEPALIVE_FORCE", "1"), ("KEEPALIVE_USER_TIMEOUT", "0")]);
    let sock = connect(&s, [1, 1, 1, 10, 5000], Some(v4("10.0.0.1", 80)));
    assert_eq!(sock.opts, [1, 30, 10, 3, 0]);
    assert_eq!(sock.gets, 0);
    assert_eq!(sock.mark, None);
}

#[test]
fn excluded_destinations_are_left_as_the_program_made_them() {
    let s = settings(&[(
        "KEEPALIVE_EXCLUDE",
        "10.1.0.0/16 :5432 [fd00::]/8:22 192.0.2.7",
    )]);
    for dest in [
        v4("10.1.2.3", 80),
        v4("10.2.0.1", 5432),
        v6("fd12::1", 22),
        v4("192.0.2.7", 443),
    ] {
        let sock = connect(&s, FRESH, Some(dest));
        assert_eq!(sock.opts, FRESH, "{dest}");
        assert_eq!(sock.mark, Some(MARK_EXCLUDED), "{dest}");
    }
    for dest in [
        v4("10.2.0.1", 80),
        v6("fd12::1", 23),
        v6("fe80::1", 22),
        v4("192.0.2.8", 443),
        v4("11.1.2.3", 5433),
    ] {
        let sock = connect(&s, FRESH, Some(dest));
        assert_eq!(sock.opts, OURS, "{dest}");
    }
    // Accepted connections: the rules are about destinations, decided at connect.
    let sock = connect(&s, FRESH, None);
    assert_eq!(sock.opts, OURS);
    // Left alone means left alone: its own keepalive after connect changes nothing more.
    let mut f = Fleet::new(&s, FRESH);
    f.connect(v4("10.1.2.3", 80));
    assert_eq!(f.set(IDLE, 1).unwrap().reason, Reason::LeftAlone);
    assert_eq!(f.sock.opts, [0, 1, 75, 9, 0]);
    // Configured before connect (its own idle), then excluded: back to the defaults
    // where ours were set.
    let mut f = Fleet::new(&s, FRESH);
    f.set(IDLE, 45);
    assert_eq!(f.sock.opts, [1, 45, 10, 3, 75_000]);
    f.connect(v4("10.1.2.3", 80));
    assert_eq!(f.sock.opts, [0, 45, 75, 9, 0]);
}

#[test]
fn include_configures_only_its_destinations_and_exclude_wins() {
    let s = settings(&[
        ("KEEPALIVE_INCLUDE", "10.0.0.0/8 fd00::/8"),
        ("KEEPALIVE_EXCLUDE", "10.9.0.0/16"),
    ]);
    for (dest, configured) in [
        (v4("10.1.2.3", 80), true),
        (v4("10.9.2.3", 80), false),
        (v4("192.168.1.1", 80), false),
        (v6("fd00::5", 80), true),
        (v6("2001:db8::1", 80), false),
    ] {
        let sock = connect(&s, FRESH, Some(dest));
        assert_eq!(sock.opts != FRESH, configured, "{dest}");
    }
    // An IPv4 destination from an IPv6 socket is IPv4-mapped, and matches IPv4 rules.
    let prog = sock_ops(&s, &D, MAPS_STORAGE, TARGET);
    for (dest, configured) in [
        (v6("::ffff:10.1.2.3", 80), true),
        (v6("::ffff:10.9.2.3", 80), false),
    ] {
        let mut sock = Sock::new(FRESH);
        sock.family = libc::AF_INET6;
        Run::sock_ops(&prog, TCP_CONNECT_CB, Some(dest), &mut sock);
        assert_eq!(sock.opts != FRESH, configured, "{dest} from an IPv6 socket");
    }
}

#[test]
fn force_with_rules_keeps_excluded_connections_alone() {
    let s = settings(&[
        ("KEEPALIVE_FORCE", "1"),
        ("KEEPALIVE_EXCLUDE", "10.0.0.0/8"),
    ]);
    let mut f = Fleet::new(&s, FRESH);
    f.set(IDLE, 45);
    assert_eq!(f.sock.opts, [0, 30, 75, 9, 0]);
    f.connect(v4("10.1.2.3", 80));
    assert_eq!(f.sock.opts, FRESH);
    f.set(COUNT, 5);
    assert_eq!(f.sock.opts, [0, 7200, 75, 5, 0]);
    let mut f = Fleet::new(&s, [1, 1, 1, 10, 5000]);
    f.connect(v4("192.0.2.1", 80));
    assert_eq!(f.sock.opts, OURS);
    f.set(COUNT, 5);
    assert_eq!(f.sock.opts, OURS);
}

#[test]
fn every_rule_form_round_trips_through_its_parts() {
    for text in [
        "10.1.2.3",
        "10.0.0.0/8",
        "0.0.0.0/0",
        ":5432",
        "10.0.0.0/8:5432",
        "fd00::5",
        "fd00::/8",
        "::/0",
        "[fd00::5]:5432",
        "[fd00::]/8:5432",
        "10.1.2.3/31:1",
    ] {
        let rule = keepalive_shim_policy::rules::parse_rule(text).unwrap();
        let parts = rule_parts(&rule);
        // Probe the program's view against the policy's over a spread of destinations.
        let s = settings(&[("KEEPALIVE_EXCLUDE", text)]);
        let prog = sock_ops(&s, &D, MAPS_STORAGE, TARGET);
        for dest in [
            v4("10.1.2.3", 5432),
            v4("10.1.2.2", 1),
            v4("10.200.0.1", 5432),
            v4("11.0.0.1", 80),
            v6("fd00::5", 5432),
            v6("fd00::6", 5432),
            v6("fdff::1", 1),
            v6("2001:db8::1", 80),
        ] {
            let mut sock = Sock::new(FRESH);
            Run::sock_ops(&prog, TCP_CONNECT_CB, Some(dest), &mut sock);
            assert_eq!(
                sock.opts == FRESH,
                rule.matches(&dest),
                "{text} ({parts:?}) vs {dest}"
            );
        }
    }
}

#[test]
fn remote_port_reads_as_the_kernel_shifts_it() {
    // 5432 is 0x1538: network order 15 38, read as a little-endian u16 0x3815, shifted.
    if cfg!(target_endian = "little") {
        assert_eq!(sock_ops_port(5432), 0x3815_0000);
    }
}

// ---- the setsockopt program ----

/// Runs the setsockopt program on a TCP socket with `mark`, for option `i` set to `value`;
/// returns the program's result, the value the kernel then sets, and the socket.
fn setsockopt_run(
    s: &Settings,
    mark: Option<u8>,
    before: [i32; N],
    i: usize,
    value: i32,
) -> (i32, i32, Sock) {
    let maps = if needs_storage(s) { MAPS_STORAGE } else { MAPS };
    let prog = setsockopt(s, maps, TARGET).expect("a setsockopt program");
    let mut sock = Sock::new(before);
    sock.mark = mark;
    let (ret, passed) = Run::setsockopt(
        &prog,
        OPTIONS[i].level,
        OPTIONS[i].name,
        &value.to_ne_bytes(),
        &mut sock,
    );
    let v = i32::from_ne_bytes(passed[..4].try_into().unwrap());
    (ret, v, sock)
}

#[test]
fn no_setsockopt_program_when_it_has_nothing_to_do() {
    let s = settings(&[("KEEPALIVE_USER_TIMEOUT", "0")]);
    assert!(setsockopt(&s, MAPS, TARGET).is_none());
    assert!(!needs_storage(&s));
    assert!(setsockopt(&DEFAULT, MAPS_STORAGE, TARGET).is_some());
    let forced = settings(&[("KEEPALIVE_FORCE", "1")]);
    assert!(!needs_storage(&forced));
    let forced_rules = settings(&[("KEEPALIVE_FORCE", "1"), ("KEEPALIVE_EXCLUDE", ":22")]);
    assert!(needs_storage(&forced_rules));
}

#[test]
fn force_replaces_a_programs_own_value_with_ours() {
    let s = settings(&[("KEEPALIVE_FORCE", "1")]);
    for (i, theirs) in [
        (KEEPALIVE, 0),
        (IDLE, 1),
        (INTERVAL, 1),
        (COUNT, 10),
        (USER_TIMEOUT, 0),
    ] {
        let (ret, passed, _) = setsockopt_run(&s, None, FRESH, i, theirs);
        assert_eq!(ret, 1);
        assert_eq!(passed, values(&s)[i], "{}", OPTIONS[i].label);
        let mut f = Fleet::new(&s, FRESH);
        assert_eq!(f.set(i, theirs).unwrap().reason, Reason::Forced);
    }
}

#[test]
fn a_value_the_kernel_refuses_fails_as_it_would_and_changes_nothing() {
    for s in [DEFAULT, settings(&[("KEEPALIVE_FORCE", "1")])] {
        for (i, bad) in [(IDLE, 0), (IDLE, 40_000), (COUNT, 128), (USER_TIMEOUT, -1)] {
            let (ret, passed, sock) = setsockopt_run(&s, None, FRESH, i, bad);
            assert_eq!((ret, passed), (1, bad), "{} {bad}", OPTIONS[i].label);
            assert!(sock.sets.is_empty() && sock.mark.is_none());
        }
    }
}

#[test]
fn force_leaves_excluded_connections_alone() {
    let s = settings(&[("KEEPALIVE_FORCE", "1"), ("KEEPALIVE_EXCLUDE", ":22")]);
    let (_, passed, _) = setsockopt_run(&s, Some(MARK_EXCLUDED), FRESH, IDLE, 5);
    assert_eq!(passed, 5);
    let (_, passed, sock) = setsockopt_run(&s, None, FRESH, IDLE, 5);
    assert_eq!(passed, 30);
    assert_eq!(sock.mark, Some(MARK_CONFIGURED));
}

#[test]
fn other_options_and_sockets_pass_untouched() {
    for s in [DEFAULT, settings(&[("KEEPALIVE_FORCE", "1")])] {
        let maps = if needs_storage(&s) {
            MAPS_STORAGE
        } else {
            MAPS
        };
        let prog = setsockopt(&s, maps, TARGET).unwrap();
        let mut sock = Sock::new(FRESH);
        let (ret, passed) = Run::setsockopt(
            &prog,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &1i32.to_ne_bytes(),
            &mut sock,
        );
        assert_eq!((ret, &passed[..]), (1, &1i32.to_ne_bytes()[..]));
        assert_eq!(
            sock.optlen_out,
            Some(0),
            "optlen 0: the program's own buffer"
        );
        // A UDP socket's SO_KEEPALIVE.
        let mut udp = Sock::new(FRESH);
        udp.ty = libc::SOCK_DGRAM;
        udp.protocol = libc::IPPROTO_UDP;
        let (_, passed) = Run::setsockopt(
            &prog,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            &0i32.to_ne_bytes(),
            &mut udp,
        );
        assert_eq!(passed, 0i32.to_ne_bytes());
        assert!(udp.sets.is_empty() && udp.mark.is_none());
        // Too short a value: the kernel's EINVAL, as without the program.
        let (_, passed) = Run::setsockopt(
            &prog,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            &[5, 0],
            &mut sock,
        );
        assert_eq!(passed, [5, 0]);
        assert!(sock.sets.is_empty() && sock.mark.is_none());
    }
}

#[test]
fn a_programs_choice_before_connect_configures_the_socket_then() {
    // Its own SO_KEEPALIVE=0, which no read back can tell from the kernel's default.
    let mut f = Fleet::new(&DEFAULT, FRESH);
    assert_eq!(f.set(KEEPALIVE, 0).unwrap().reason, Reason::OwnStands);
    assert_eq!(f.sock.opts, [0, 30, 10, 3, 60_000]);
    assert_eq!(f.sock.mark, Some(MARK_CONFIGURED | 1 << KEEPALIVE));
    f.connect(v4("10.0.0.1", 80));
    assert_eq!(f.sock.opts, [0, 30, 10, 3, 60_000]);
    // Its own idle: the user timeout follows it at once.
    let mut f = Fleet::new(&DEFAULT, FRESH);
    f.set(IDLE, 100);
    assert_eq!(f.sock.opts, [1, 100, 10, 3, 130_000]);
}

#[test]
fn a_keepalive_set_after_connect_moves_the_user_timeout() {
    // node: 1 s idle after connecting; interval and count ours (10 s × 3): bound 31 s.
    let (ret, passed, sock) = setsockopt_run(&DEFAULT, Some(MARK_CONFIGURED), OURS, IDLE, 1);
    assert_eq!((ret, passed), (1, 1));
    assert_eq!(sock.sets, vec![(USER_TIMEOUT, 31_000)]);
    assert_eq!(31_000, user_timeout_for(&DEFAULT, 1, 10, 3));
    assert_eq!(sock.mark, Some(MARK_CONFIGURED | 1 << IDLE));
    // With an explicit, shorter user timeout, that one.
    let s = settings(&[("KEEPALIVE_USER_TIMEOUT", "20s")]);
    let mut f = Fleet::new(&s, FRESH);
    f.connect(v4("10.0.0.1", 80));
    f.set(COUNT, 10);
    assert_eq!(f.sock.opts, [1, 30, 10, 10, 20_000]);
}

#[test]
fn the_user_timeout_does_not_follow_where_it_should_not() {
    for mark in [
        MARK_EXCLUDED,                       // the rules left it alone
        MARK_CONFIGURED | 1 << USER_TIMEOUT, // its own user timeout
    ] {
        let (_, passed, sock) = setsockopt_run(&DEFAULT, Some(mark), OURS, IDLE, 1);
        assert_eq!(passed, 1);
        assert!(sock.sets.is_empty(), "{mark:#x}: {:?}", sock.sets);
    }
    // SO_KEEPALIVE on a configured socket: marked, nothing set.
    let (_, passed, sock) = setsockopt_run(&DEFAULT, Some(MARK_CONFIGURED), OURS, KEEPALIVE, 0);
    assert_eq!(passed, 0);
    assert!(sock.sets.is_empty());
    assert_eq!(sock.mark, Some(MARK_CONFIGURED | 1 << KEEPALIVE));
}

#[test]
fn a_programs_own_user_timeout_after_connect_is_remembered() {
    let mut f = Fleet::new(&DEFAULT, FRESH);
    f.connect(v4("10.0.0.1", 80));
    f.set(USER_TIMEOUT, 7000);
    assert_eq!(f.sock.mark, Some(MARK_CONFIGURED | 1 << USER_TIMEOUT));
    f.set(IDLE, 1);
    assert_eq!(f.sock.opts, [1, 1, 10, 3, 7000]);
}

// ---- the counters ----

/// The counters of `sock`'s cgroup that are not 0, by index; nothing is counted under
/// another key.
fn counted(sock: &Sock) -> Vec<(usize, u64)> {
    let mine = sock.counts_of(CG);
    for (key, c) in &sock.counts {
        assert!(
            *key == CG || c.iter().all(|&v| v == 0),
            "counted under {key}: {c:?}"
        );
    }
    (0..COUNTERS)
        .filter(|&i| mine[i] != 0)
        .map(|i| (i, mine[i]))
        .collect()
}

#[test]
fn configured_connections_are_counted_and_watched_for_how_they_end() {
    for s in [
        DEFAULT,
        settings(&[("KEEPALIVE_FORCE", "1")]),
        settings(&[("KEEPALIVE_USER_TIMEOUT", "0")]),
    ] {
        let sock = connect(&s, FRESH, Some(v4("10.0.0.1", 80)));
        assert_eq!(counted(&sock), vec![(COUNT_CONNECTIONS_CONFIGURED, 1)]);
        assert_eq!(sock.cb_flags, (RTO_CB_FLAG | STATE_CB_FLAG) as u32);
        let sock = connect(&s, FRESH, None);
        assert_eq!(counted(&sock), vec![(COUNT_ACCEPTED_CONFIGURED, 1)]);
    }
    // Flags another program set are kept.
    let prog = sock_ops(&DEFAULT, &D, MAPS_STORAGE, TARGET);
    let mut sock = Sock::new(FRESH);
    sock.cb_flags = 8; // BPF_SOCK_OPS_RTT_CB_FLAG
    Run::sock_ops(&prog, TCP_CONNECT_CB, Some(v4("10.0.0.1", 80)), &mut sock);
    assert_eq!(sock.cb_flags, 8 | (RTO_CB_FLAG | STATE_CB_FLAG) as u32);
    // A connect on a socket configured before it (its own idle): counted as a connection,
    // its own idle once.
    let mut f = Fleet::new(&DEFAULT, FRESH);
    f.set(IDLE, 45);
    f.set(IDLE, 50);
    f.connect(v4("10.0.0.1", 80));
    assert_eq!(
        counted(&f.sock),
        vec![
            (COUNT_CONNECTIONS_CONFIGURED, 1),
            (COUNT_LEFT_TO_PROGRAM + IDLE, 1)
        ]
    );
}

#[test]
fn options_left_to_the_program_are_counted_once_per_socket_and_option() {
    // Read back at connect (curl: keepalive on, 60 s / 60 s): three of its own.
    let sock = connect(&DEFAULT, [1, 60, 60, 9, 0], Some(v4("10.0.0.1", 80)));
    assert_eq!(
        counted(&sock),
        vec![
            (COUNT_CONNECTIONS_CONFIGURED, 1),
            (COUNT_LEFT_TO_PROGRAM + KEEPALIVE, 1),
            (COUNT_LEFT_TO_PROGRAM + IDLE, 1),
            (COUNT_LEFT_TO_PROGRAM + INTERVAL, 1),
        ]
    );
    // After connect, through the setsockopt program: each option once however often set.
    let mut f = Fleet::new(&DEFAULT, FRESH);
    f.connect(v4("10.0.0.1", 80));
    f.set(COUNT, 5);
    f.set(COUNT, 6);
    f.set(USER_TIMEOUT, 7000);
    assert_eq!(
        counted(&f.sock),
        vec![
            (COUNT_CONNECTIONS_CONFIGURED, 1),
            (COUNT_LEFT_TO_PROGRAM + COUNT, 1),
            (COUNT_LEFT_TO_PROGRAM + USER_TIMEOUT, 1),
        ]
    );
    // FORCE keeps none of the program's.
    let s = settings(&[("KEEPALIVE_FORCE", "1")]);
    let mut f = Fleet::new(&s, FRESH);
    f.set(IDLE, 45);
    f.connect(v4("10.0.0.1", 80));
    assert_eq!(counted(&f.sock), vec![(COUNT_CONNECTIONS_CONFIGURED, 1)]);
    // Left alone by the rules: not the program's kept by us.
    let s = settings(&[("KEEPALIVE_EXCLUDE", "10.0.0.0/8")]);
    let mut f = Fleet::new(&s, FRESH);
    f.connect(v4("10.1.2.3", 80));
    f.set(IDLE, 1);
    assert_eq!(counted(&f.sock), vec![(COUNT_EXCLUDED, 1)]);
}

#[test]
fn excluded_connections_are_counted_and_not_watched() {
    for s in [
        settings(&[("KEEPALIVE_EXCLUDE", "10.0.0.0/8")]),
        settings(&[("KEEPALIVE_INCLUDE", "192.0.2.0/24")]),
        settings(&[
            ("KEEPALIVE_FORCE", "1"),
            ("KEEPALIVE_EXCLUDE", "10.0.0.0/8"),
        ]),
    ] {
        let sock = connect(&s, FRESH, Some(v4("10.1.2.3", 80)));
        assert_eq!(counted(&sock), vec![(COUNT_EXCLUDED, 1)]);
        assert_eq!(sock.cb_flags, 0);
    }
}

/// Runs the sock_ops program for callback `op` with `args` on a socket watched for how it
/// ends.
fn callback(s: &Settings, op: i32, args: [u32; 4]) -> Sock {
    let prog = sock_ops(s, &D, MAPS_STORAGE, TARGET);
    let mut sock = Sock::new(OURS);
    sock.cb_flags = (RTO_CB_FLAG | STATE_CB_FLAG) as u32;
    sock.args = args;
    assert_eq!(Run::sock_ops(&prog, op, None, &mut sock), 1);
    assert!(sock.sets.is_empty() && sock.gets == 0 && sock.mark.is_none());
    sock
}

#[test]
fn a_retransmission_timeout_is_counted_exactly_once() {
    for s in [DEFAULT, settings(&[("KEEPALIVE_FORCE", "1")])] {
        // A retransmission, not yet the end (expired = 0): nothing.
        let sock = callback(&s, RTO_CB, [3, 800, 0, 0]);
        assert_eq!(counted(&sock), vec![]);
        assert_eq!(sock.cb_flags, (RTO_CB_FLAG | STATE_CB_FLAG) as u32);
        // Expired: timed out, and the close tcp_write_err() makes next is not seen.
        let sock = callback(&s, RTO_CB, [15, 120_000, 1, 0]);
        assert_eq!(counted(&sock), vec![(COUNT_TIMED_OUT, 1)]);
        assert_eq!(sock.cb_flags, RTO_CB_FLAG as u32);
    }
}

#[test]
fn an_abrupt_close_is_counted_and_an_orderly_one_is_not() {
    let state = |old: i32, new: i32| {
        counted(&callback(
            &DEFAULT,
            STATE_CB,
            [old as u32, new as u32, 0, 0],
        ))
    };
    // The keepalive timer's abort (or an RST): ESTABLISHED or CLOSE_WAIT straight to CLOSE.
    assert_eq!(state(TCP_ESTABLISHED, TCP_CLOSE), vec![(COUNT_ABORTED, 1)]);
    assert_eq!(state(TCP_CLOSE_WAIT, TCP_CLOSE), vec![(COUNT_ABORTED, 1)]);
    // Orderly: through FIN_WAIT or LAST_ACK; other changes count nothing.
    assert_eq!(state(TCP_FIN_WAIT2, TCP_CLOSE), vec![]);
    assert_eq!(state(9, TCP_CLOSE), vec![]); // LAST_ACK
    assert_eq!(state(TCP_ESTABLISHED, 4), vec![]); // to FIN_WAIT1
    assert_eq!(state(2, TCP_ESTABLISHED), vec![]); // SYN_SENT to ESTABLISHED
}

#[test]
fn without_a_counts_map_nothing_is_counted_or_watched() {
    let maps = Maps {
        counts: None,
        ..MAPS_STORAGE
    };
    let prog = sock_ops(&DEFAULT, &D, maps, TARGET);
    let mut sock = Sock::new(FRESH);
    Run::sock_ops(&prog, TCP_CONNECT_CB, Some(v4("10.0.0.1", 80)), &mut sock);
    assert_eq!((sock.opts, sock.cb_flags), (OURS, 0));
    assert_eq!(counted(&sock), vec![]);
}

#[test]
fn sizes_stay_small() {
    let n = |s: &Settings| sock_ops(s, &node_defaults(), MAPS_STORAGE, TARGET).len();
    // The read back (5 x 10) behind the check of the socket's own fields, the counting by
    // cgroup (3 places x 40: connections, timed out, aborted), how connections end.
    assert!(n(&DEFAULT) < 480, "{}", n(&DEFAULT));
    let s = settings(&[("KEEPALIVE_FORCE", "1")]);
    // The five set, plus the counting.
    assert!(n(&s) < 260, "{}", n(&s));
    let sso = setsockopt(&DEFAULT, MAPS_STORAGE, TARGET).unwrap().len();
    assert!(sso < 1600, "{sso}");
    // 32 + 32 IPv6 rules with ports: the largest, well within the verifier's limits.
    let many: Vec<String> = (0..32)
        .map(|i| format!("[fd{i:02x}::1]/64:{}", 1000 + i))
        .collect();
    let s = settings(&[
        ("KEEPALIVE_EXCLUDE", &many.join(",")),
        ("KEEPALIVE_INCLUDE", &many.join(",")),
    ]);
    assert!(n(&s) < 1500, "{}", n(&s));
}

#[test]
fn counted_by_the_sockets_own_cgroup_and_under_other_when_the_map_is_full() {
    let prog = sock_ops(&DEFAULT, &D, MAPS_STORAGE, TARGET);
    let connect = |prog: &[Insn], sock: &mut Sock| {
        Run::sock_ops(prog, TCP_CONNECT_CB, Some(v4("10.0.0.1", 80)), sock);
    };
    // Its own cgroup, read from the socket (not the calling process's).
    let mut a = Sock::new(FRESH);
    (a.cgroup, a.current_cgroup) = (2000, 9);
    connect(&prog, &mut a);
    assert_eq!(a.counts_of(2000)[COUNT_CONNECTIONS_CONFIGURED], 1);
    assert_eq!(a.counts_of(9), [0; COUNTERS]);
    // The map full (only OTHER_KEY's entry fits): counted there.
    let mut b = Sock::new(FRESH);
    (b.cgroup, b.capacity) = (3000, 1);
    connect(&prog, &mut b);
    assert_eq!(b.counts_of(OTHER_KEY)[COUNT_CONNECTIONS_CONFIGURED], 1);
    assert_eq!(b.counts.len(), 1);
    // A kernel whose layout is unknown: under the attached cgroup.
    let none = Target {
        layout: Layout::NONE,
        cgroup: ATTACHED,
    };
    let mut c = Sock::new(FRESH);
    c.layout = Layout::NONE;
    connect(&sock_ops(&DEFAULT, &D, MAPS_STORAGE, none), &mut c);
    assert_eq!(c.counts_of(ATTACHED)[COUNT_CONNECTIONS_CONFIGURED], 1);
    assert_eq!(c.opts, OURS);
    // How a connection ends, counted by its cgroup too (in softirq, where the calling
    // process is whoever was interrupted).
    let mut d = Sock::new(OURS);
    (d.cgroup, d.current_cgroup, d.args) = (4000, 9, [15, 120_000, 1, 0]);
    Run::sock_ops(&prog, RTO_CB, None, &mut d);
    assert_eq!(d.counts_of(4000)[COUNT_TIMED_OUT], 1);
    let mut e = Sock::new(OURS);
    (e.cgroup, e.args) = (4000, [TCP_ESTABLISHED as u32, TCP_CLOSE as u32, 0, 0]);
    Run::sock_ops(&prog, STATE_CB, None, &mut e);
    assert_eq!(e.counts_of(4000)[COUNT_ABORTED], 1);
}

#[test]
fn options_left_to_the_program_count_under_the_calling_process_cgroup() {
    let prog = setsockopt(&DEFAULT, MAPS_STORAGE, TARGET).unwrap();
    let mut sock = Sock::new(FRESH);
    (sock.cgroup, sock.current_cgroup) = (1000, 5000);
    let o = &OPTIONS[IDLE];
    Run::setsockopt(&prog, o.level, o.name, &45i32.to_ne_bytes(), &mut sock);
    assert_eq!(sock.counts_of(5000)[COUNT_LEFT_TO_PROGRAM + IDLE], 1);
}

#[test]
fn an_orderly_close_turns_the_state_callback_off() {
    let flags =
        |old: i32, new: i32| callback(&DEFAULT, STATE_CB, [old as u32, new as u32, 0, 0]).cb_flags;
    let both = (RTO_CB_FLAG | STATE_CB_FLAG) as u32;
    // This end closes first (FIN_WAIT1), or the peer did and this end now does (LAST_ACK):
    // no abort can follow that the counts would take.
    assert_eq!(flags(TCP_ESTABLISHED, TCP_FIN_WAIT1), RTO_CB_FLAG as u32);
    assert_eq!(flags(TCP_CLOSE_WAIT, TCP_LAST_ACK), RTO_CB_FLAG as u32);
    // The peer closed: a keepalive abort can still come from CLOSE_WAIT.
    assert_eq!(flags(TCP_ESTABLISHED, TCP_CLOSE_WAIT), both);
    assert_eq!(flags(2, TCP_ESTABLISHED), both);
}
