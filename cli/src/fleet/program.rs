//! The fleet programs, written from the same [`Settings`] the preload library uses: the five
//! options and their values from `options::OPTIONS` and `options::values`, the user timeout
//! that follows a program's own keepalive as `options::user_timeout_for` computes it, and the
//! destination rules of `KEEPALIVE_EXCLUDE`/`KEEPALIVE_INCLUDE`.
//!
//! - [`sock_ops`]: a `BPF_PROG_TYPE_SOCK_OPS` program. On `BPF_SOCK_OPS_TCP_CONNECT_CB` (an
//!   outgoing connection, before its SYN) and `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB` (a
//!   connection a listener accepted) it reads each option back with `bpf_getsockopt`, keeps what
//!   the program set itself (unless `KEEPALIVE_FORCE`), sets the rest, and gives the user
//!   timeout that follows the keepalive in effect. Destination rules are matched at connect.
//! - [`setsockopt`]: a `BPF_CGROUP_SETSOCKOPT` program, for what only a hook on `setsockopt()`
//!   can do: with FORCE, a program's own value for one of the five becomes ours (a value the
//!   kernel would refuse passes through, to fail as it would); without FORCE, a program that
//!   sets its own idle, interval or count after the connection was configured (node does, after
//!   connecting) gets the user timeout that follows it, as the library does.
//!
//! The two share what they know of a socket through a socket-storage map ([`MARK_CONFIGURED`],
//! [`MARK_EXCLUDED`], [`MARK_OWN_USER_TIMEOUT`]), the library's per-descriptor state.
//!
//! What tells a program's own value from the kernel's default, in a socket read back: keepalive
//! on (the default is off), a user timeout other than 0, and an idle, interval or count other
//! than the kernel's defaults (7200 s, 75 s, 9) and the node's `net.ipv4.tcp_keepalive_*`
//! ([`Defaults`]). [`decide`] is that policy as a plain function; the tests run the generated
//! instructions ([`super::interp`]) against it.

use super::insn::*;
use keepalive_shim_policy::config::Settings;
use keepalive_shim_policy::options::{OPTIONS, values};
use keepalive_shim_policy::rules::Rule;
// The policy written as a plain function (`decide`), and the unit tests that compare the
// generated program with it, take destinations and parse addresses.
#[cfg(test)]
use keepalive_shim_policy::rules::Destination;
#[cfg(test)]
use std::net::{Ipv4Addr, Ipv6Addr};

/// Indexes in `OPTIONS`.
pub const KEEPALIVE: usize = 0;
pub const IDLE: usize = 1;
pub const INTERVAL: usize = 2;
pub const COUNT: usize = 3;
pub const USER_TIMEOUT: usize = 4;

/// Kernel helpers (`enum bpf_func_id`).
pub const HELPER_SETSOCKOPT: i32 = 49;
pub const HELPER_GETSOCKOPT: i32 = 57;
pub const HELPER_SK_STORAGE_GET: i32 = 107;
const SK_STORAGE_GET_F_CREATE: i32 = 1;

/// `enum bpf_sock_ops_cb` values the program acts on.
pub const TCP_CONNECT_CB: i32 = 3;
pub const PASSIVE_ESTABLISHED_CB: i32 = 5;

/// Offsets in `struct bpf_sock_ops` (include/uapi/linux/bpf.h).
pub mod sock_ops_ctx {
    pub const OP: i16 = 0;
    pub const FAMILY: i16 = 20;
    pub const REMOTE_IP4: i16 = 24;
    pub const REMOTE_IP6: i16 = 32;
    pub const REMOTE_PORT: i16 = 64;
    pub const SK: i16 = 184;
}

/// Offsets in `struct bpf_sockopt`.
pub mod sockopt_ctx {
    pub const SK: i16 = 0;
    pub const OPTVAL: i16 = 8;
    pub const OPTVAL_END: i16 = 16;
    pub const LEVEL: i16 = 24;
    pub const OPTNAME: i16 = 28;
    pub const OPTLEN: i16 = 32;
}

/// Offsets in `struct bpf_sock`.
pub mod sock {
    pub const FAMILY: i16 = 4;
    pub const TYPE: i16 = 8;
    pub const PROTOCOL: i16 = 12;
}

/// Marks kept per socket (one byte of socket storage).
pub const MARK_CONFIGURED: u8 = 1;
pub const MARK_EXCLUDED: u8 = 2;
pub const MARK_OWN_USER_TIMEOUT: u8 = 4;

/// The value `bpf_setsockopt` is given (4 bytes).
const SLOT_SET: i16 = -4;
/// Where option `i` is read back: -8, -12, -16, -20, -24.
const fn slot(i: usize) -> i16 {
    -8 - 4 * i as i16
}
/// The remote address as four 32-bit words (IPv4 as IPv4-mapped IPv6), -40 to -25.
const SLOT_ADDR: i16 = -40;

/// The largest optval the setsockopt program looks at; a longer one (no option of ours is) is
/// handed back untouched, as the kernel wants for anything beyond a page.
const OPTLEN_MAX: i32 = 4096;

/// Values of idle, interval and count that mean "not set by the program": the kernel's
/// built-in defaults, and the node's sysctls where they differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub idle: Vec<u32>,
    pub interval: Vec<u32>,
    pub count: Vec<u32>,
}

impl Defaults {
    /// The kernel's own: 7200 s, 75 s, 9 probes (`TCP_KEEPALIVE_TIME`, `_INTVL`, `_PROBES`).
    pub fn kernel() -> Defaults {
        Defaults {
            idle: vec![7200],
            interval: vec![75],
            count: vec![9],
        }
    }

    /// The kernel's, and this network namespace's `net.ipv4.tcp_keepalive_*` where they differ.
    pub fn of_this_node() -> Defaults {
        let mut d = Defaults::kernel();
        let read = |name: &str| -> Option<u32> {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        for (list, name) in [
            (&mut d.idle, "tcp_keepalive_time"),
            (&mut d.interval, "tcp_keepalive_intvl"),
            (&mut d.count, "tcp_keepalive_probes"),
        ] {
            if let Some(v) = read(name).filter(|v| !list.contains(v)) {
                list.push(v);
            }
        }
        d
    }

    fn of(&self, i: usize) -> &[u32] {
        match i {
            IDLE => &self.idle,
            INTERVAL => &self.interval,
            COUNT => &self.count,
            _ => &[],
        }
    }
}

/// Map file descriptors the programs name.
#[derive(Clone, Copy, Debug)]
pub struct Maps {
    /// The info map (settings as text, for `fleet status`): referenced so it lives as long as
    /// the program, and is found from it.
    pub info: i32,
    /// The socket-storage map both programs share, when [`needs_storage`].
    pub storage: Option<i32>,
}

/// Whether a setsockopt program has anything to do: with FORCE always; without, unless
/// `KEEPALIVE_USER_TIMEOUT=0` (no user timeout to follow a program's keepalive).
pub fn needs_setsockopt(s: &Settings) -> bool {
    s.force || !(s.user_timeout_explicit && s.user_timeout_ms == 0)
}

/// Whether the programs keep per-socket marks: the setsockopt program needs to know which
/// sockets were configured (without FORCE) or left alone by the rules.
pub fn needs_storage(s: &Settings) -> bool {
    needs_setsockopt(s) && (!s.force || s.has_rules())
}

// ---- the policy, as a plain function ----

/// What a socket ends up with: `before` is what `bpf_getsockopt` reads back (`None` for an
/// option it cannot read, as on kernels before 6.1), `dest` the destination of an outgoing
/// connection (`None` for an accepted one: the rules apply at connect, as in the library).
/// `None` as a whole: the connection is left alone (a destination the rules exclude).
#[cfg(test)]
pub fn decide(
    s: &Settings,
    defaults: &Defaults,
    before: [Option<i32>; 5],
    dest: Option<&Destination>,
) -> Option<[i32; 5]> {
    if dest.is_some_and(|d| !s.touches(d)) {
        return None;
    }
    let ours = values(s);
    if s.force {
        return Some(ours);
    }
    let read = before.map(|v| v.unwrap_or(0));
    let mut after = read;
    if read[KEEPALIVE] == 0 {
        after[KEEPALIVE] = 1;
    }
    let mut own = 0u8;
    for i in [IDLE, INTERVAL, COUNT] {
        let v = read[i];
        if v == 0 || defaults.of(i).iter().any(|&d| d as i32 == v) {
            after[i] = ours[i];
        } else {
            own |= 1 << i;
        }
    }
    if read[USER_TIMEOUT] == 0 {
        after[USER_TIMEOUT] = keepalive_shim_policy::options::user_timeout_in_effect(s, own, &read);
    }
    Some(after)
}

// ---- destination rules ----

/// A rule as the program matches it: the range's first address (IPv4 as IPv4-mapped), its
/// prefix length over 128 bits, and the port (0: any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleParts {
    pub net: [u8; 16],
    pub bits: u8,
    pub port: u16,
}

/// The parts of `rule`, as the policy crate holds them.
pub fn rule_parts(rule: &Rule) -> RuleParts {
    let (net, bits, port) = rule.parts();
    RuleParts { net, bits, port }
}

/// How `struct bpf_sock_ops`'s `remote_port` reads for `port`: the kernel loads the 16-bit
/// network-order port and, on little-endian machines, shifts it into the upper half.
pub fn sock_ops_port(port: u16) -> u32 {
    let raw = u32::from(u16::from_ne_bytes(port.to_be_bytes()));
    if cfg!(target_endian = "little") {
        raw << 16
    } else {
        raw
    }
}

/// The mask and network of word `w` (0–3) of `parts`, as the program's 32-bit loads of the
/// network-order address see them; `None` when the prefix does not reach that word.
fn word(parts: &RuleParts, w: usize) -> Option<(u32, u32)> {
    let bits = u32::from(parts.bits).saturating_sub(32 * w as u32).min(32);
    if bits == 0 {
        return None;
    }
    let mask_be: u32 = if bits == 32 { !0 } else { !(!0u32 >> bits) };
    let mask = u32::from_ne_bytes(mask_be.to_be_bytes());
    let net_bytes: [u8; 4] = parts.net[4 * w..4 * w + 4].try_into().ok()?;
    Some((mask, u32::from_ne_bytes(net_bytes) & mask))
}

// ---- code shared by both programs ----

/// `bpf_setsockopt(ctx_or_sk, level, name, &value, 4)` for option `i`, with the value already
/// in the `SLOT_SET` slot; `R1` must hold the context or socket.
fn call_setsockopt(a: &mut Asm, i: usize) {
    let o = &OPTIONS[i];
    a.push(mov64_imm(R2, o.level));
    a.push(mov64_imm(R3, o.name));
    a.push(mov64_reg(R4, R10));
    a.push(add64_imm(R4, i32::from(SLOT_SET)));
    a.push(mov64_imm(R5, 4));
    a.push(call(HELPER_SETSOCKOPT));
}

/// Sets option `i` to `value` (an immediate), through `holder` (context or socket).
fn set_imm(a: &mut Asm, holder: Reg, i: usize, value: i32) {
    a.push(st_w(R10, SLOT_SET, value as u32));
    a.push(mov64_reg(R1, holder));
    call_setsockopt(a, i);
}

/// `bpf_getsockopt(holder, …)` of option `i` into its slot (zeroed by the kernel on failure).
fn get_into_slot(a: &mut Asm, holder: Reg, i: usize) {
    let o = &OPTIONS[i];
    a.push(mov64_reg(R1, holder));
    a.push(mov64_imm(R2, o.level));
    a.push(mov64_imm(R3, o.name));
    a.push(mov64_reg(R4, R10));
    a.push(add64_imm(R4, i32::from(slot(i))));
    a.push(mov64_imm(R5, 4));
    a.push(call(HELPER_GETSOCKOPT));
}

/// `R1` = the user timeout for the idle, interval and count in their slots:
/// `options::user_timeout_for` — idle + interval × count in milliseconds, capped at
/// `i32::MAX`, and no more than an explicit `KEEPALIVE_USER_TIMEOUT`.
fn user_timeout_in_r1(a: &mut Asm, s: &Settings) {
    a.push(ldx_w(R1, R10, slot(IDLE)));
    a.push(mul64_imm(R1, 1000));
    a.push(ldx_w(R2, R10, slot(INTERVAL)));
    a.push(mul64_imm(R2, 1000));
    a.push(ldx_w(R3, R10, slot(COUNT)));
    a.push(mul64_reg(R2, R3));
    a.push(add64_reg(R1, R2));
    let within = a.label();
    a.jump(jlt_imm(R1, i32::MAX), within);
    a.push(mov32_imm(R1, i32::MAX as u32));
    a.bind(within);
    if s.user_timeout_explicit {
        let shorter = a.label();
        a.jump(jlt_imm(R1, s.user_timeout_ms as i32), shorter);
        a.push(mov32_imm(R1, s.user_timeout_ms));
        a.bind(shorter);
    }
}

/// `R0` = this socket's storage (or 0): `bpf_sk_storage_get(map, sk, NULL, flags)`, `sk` in
/// `R2` and not null.
fn storage_get(a: &mut Asm, map: i32, create: bool) {
    a.push_all(ld_map_fd(R1, map));
    a.push(mov64_imm(R3, 0));
    a.push(mov64_imm(
        R4,
        if create { SK_STORAGE_GET_F_CREATE } else { 0 },
    ));
    a.push(call(HELPER_SK_STORAGE_GET));
}

// ---- the sock_ops program ----

/// The sock_ops program for `s`. Registers: `R6` the context, `R7` whether the program set
/// any of idle, interval, count itself, `R8` the socket's mark.
pub fn sock_ops(s: &Settings, defaults: &Defaults, maps: Maps) -> Vec<Insn> {
    use sock_ops_ctx::*;
    let mut a = Asm::new();
    let configure = a.label();
    let excluded = a.label();
    let out = a.label();

    a.push(mov64_reg(R6, R1));
    // Ties the info map to the program: `fleet status` finds the settings through it.
    a.push_all(ld_map_fd(R1, maps.info));
    a.push(ldx_w(R2, R6, OP));
    a.jump(jeq_imm(R2, PASSIVE_ESTABLISHED_CB), configure);
    a.jump(jne_imm(R2, TCP_CONNECT_CB), out);

    // An outgoing connection: the destination rules first.
    if s.has_rules() {
        remote_address(&mut a);
        for rule in s.exclude.as_slice() {
            match_rule(&mut a, &rule_parts(rule), excluded);
        }
        if !s.include.is_empty() {
            for rule in s.include.as_slice() {
                match_rule(&mut a, &rule_parts(rule), configure);
            }
            a.jump(ja(), excluded);
        }
    }

    a.bind(configure);
    if s.force {
        for (i, v) in values(s).into_iter().enumerate() {
            set_imm(&mut a, R6, i, v);
        }
    } else {
        keep_own(&mut a, s, defaults);
        if let Some(map) = maps.storage {
            mark(&mut a, map);
        }
    }
    a.jump(ja(), out);

    a.bind(excluded);
    if let (true, Some(map)) = (s.has_rules(), maps.storage) {
        a.push(mov64_imm(R8, i32::from(MARK_EXCLUDED)));
        mark(&mut a, map);
    }

    a.bind(out);
    a.push(mov64_imm(R0, 1));
    a.push(exit());
    a.finish()
}

/// The remote address into `SLOT_ADDR` as four network-order words, an IPv4 one as
/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`), as the policy's `Destination` holds it.
fn remote_address(a: &mut Asm) {
    use sock_ops_ctx::*;
    let v6 = a.label();
    let done = a.label();
    a.push(ldx_w(R1, R6, FAMILY));
    a.jump(jne_imm(R1, libc::AF_INET), v6);
    a.push(st_w(R10, SLOT_ADDR, 0));
    a.push(st_w(R10, SLOT_ADDR + 4, 0));
    a.push(st_w(
        R10,
        SLOT_ADDR + 8,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
    ));
    a.push(ldx_w(R1, R6, REMOTE_IP4));
    a.push(stx_w(R10, SLOT_ADDR + 12, R1));
    a.jump(ja(), done);
    a.bind(v6);
    for w in 0..4 {
        a.push(ldx_w(R1, R6, REMOTE_IP6 + 4 * w));
        a.push(stx_w(R10, SLOT_ADDR + 4 * w, R1));
    }
    a.bind(done);
}

/// Jumps to `matched` when the remote address and port are in `rule`; falls through if not.
fn match_rule(a: &mut Asm, rule: &RuleParts, matched: Label) {
    let next = a.label();
    for w in 0..4 {
        if let Some((mask, net)) = word(rule, w) {
            a.push(ldx_w(R1, R10, SLOT_ADDR + 4 * w as i16));
            if mask != !0 {
                a.push(and32_imm(R1, mask));
            }
            a.jump(jne32_imm(R1, net), next);
        }
    }
    if rule.port != 0 {
        a.push(ldx_w(R1, R6, sock_ops_ctx::REMOTE_PORT));
        a.jump(jne32_imm(R1, sock_ops_port(rule.port)), next);
    }
    a.jump(ja(), matched);
    a.bind(next);
}

/// Without FORCE: each option read back; the program's own stands, the rest get ours; the
/// user timeout, when not the program's own, follows its keepalive. Leaves the socket's mark
/// in `R8`.
fn keep_own(a: &mut Asm, s: &Settings, defaults: &Defaults) {
    let ours = values(s);
    a.push(mov64_imm(R7, 0));
    a.push(mov64_imm(R8, i32::from(MARK_CONFIGURED)));

    // SO_KEEPALIVE: on means the program turned it on.
    let keepalive_done = a.label();
    get_into_slot(a, R6, KEEPALIVE);
    a.push(ldx_w(R1, R10, slot(KEEPALIVE)));
    a.jump(jne_imm(R1, 0), keepalive_done);
    set_imm(a, R6, KEEPALIVE, ours[KEEPALIVE]);
    a.bind(keepalive_done);

    // Idle, interval, count: a value other than a default is the program's own.
    for i in [IDLE, INTERVAL, COUNT] {
        let set_ours = a.label();
        let done = a.label();
        get_into_slot(a, R6, i);
        a.push(ldx_w(R1, R10, slot(i)));
        a.jump(jeq_imm(R1, 0), set_ours);
        for &d in defaults.of(i) {
            a.jump(jeq_imm(R1, d as i32), set_ours);
        }
        a.push(mov64_imm(R7, 1));
        a.jump(ja(), done);
        a.bind(set_ours);
        set_imm(a, R6, i, ours[i]);
        // The slot now holds the value in effect, for the user timeout.
        a.push(st_w(R10, slot(i), ours[i] as u32));
        a.bind(done);
    }

    // The user timeout: anything but 0 is the program's own.
    let own = a.label();
    let done = a.label();
    get_into_slot(a, R6, USER_TIMEOUT);
    a.push(ldx_w(R1, R10, slot(USER_TIMEOUT)));
    a.jump(jne_imm(R1, 0), own);
    if !(s.user_timeout_explicit && s.user_timeout_ms == 0) {
        let follow = a.label();
        a.jump(jne_imm(R7, 0), follow);
        set_imm(a, R6, USER_TIMEOUT, ours[USER_TIMEOUT]);
        a.jump(ja(), done);
        a.bind(follow);
        user_timeout_in_r1(a, s);
        a.push(stx_w(R10, SLOT_SET, R1));
        a.push(mov64_reg(R1, R6));
        call_setsockopt(a, USER_TIMEOUT);
    }
    a.jump(ja(), done);
    a.bind(own);
    a.push(mov64_imm(
        R8,
        i32::from(MARK_CONFIGURED | MARK_OWN_USER_TIMEOUT),
    ));
    a.bind(done);
}

/// The socket's storage byte = `R8` (created if need be).
fn mark(a: &mut Asm, map: i32) {
    let skip = a.label();
    a.push(ldx_dw(R2, R6, sock_ops_ctx::SK));
    a.jump(jeq_imm(R2, 0), skip);
    storage_get(a, map, true);
    a.jump(jeq_imm(R0, 0), skip);
    a.push(stx_b(R0, 0, R8));
    a.bind(skip);
}

// ---- the setsockopt program ----

/// The setsockopt program for `s` (see the module's documentation), or `None` when it would
/// have nothing to do ([`needs_setsockopt`]). Registers: `R6` the context, `R7` the socket,
/// `R8` the option's value, `R9` the socket's storage.
pub fn setsockopt(s: &Settings, maps: Maps) -> Option<Vec<Insn>> {
    use sockopt_ctx::*;
    if !needs_setsockopt(s) {
        return None;
    }
    assert_eq!(
        maps.storage.is_some(),
        needs_storage(s),
        "the storage map is given exactly when needed"
    );
    let mut a = Asm::new();
    let pass = a.label();
    let done = a.label();
    let ours = values(s);

    a.push(mov64_reg(R6, R1));
    a.push_all(ld_map_fd(R1, maps.info));
    a.push(ldx_w(R2, R6, LEVEL));
    a.push(ldx_w(R3, R6, OPTNAME));
    // Which of the five, by level and name, from OPTIONS; anything else passes.
    let handled: Vec<usize> = (0..5)
        .filter(|&i| s.force || matches!(i, IDLE | INTERVAL | COUNT | USER_TIMEOUT))
        .collect();
    let bodies: Vec<Label> = handled.iter().map(|_| a.label()).collect();
    for (&i, &body) in handled.iter().zip(&bodies) {
        let next = a.label();
        a.jump(jne_imm(R2, OPTIONS[i].level), next);
        a.jump(jeq_imm(R3, OPTIONS[i].name), body);
        a.bind(next);
    }
    a.jump(ja(), pass);

    for (&i, &body) in handled.iter().zip(&bodies) {
        a.bind(body);
        tcp_socket_and_value(&mut a, pass);
        if let Some(map) = maps.storage {
            a.push(mov64_reg(R2, R7));
            storage_get(&mut a, map, false);
            a.push(mov64_reg(R9, R0));
        }
        if s.force {
            if maps.storage.is_some() {
                // A connection the rules left alone keeps what its program sets.
                let unmarked = a.label();
                a.jump(jeq_imm(R9, 0), unmarked);
                a.push(ldx_b(R1, R9, 0));
                a.jump(jset_imm(R1, i32::from(MARK_EXCLUDED)), pass);
                a.bind(unmarked);
            }
            in_range_or(&mut a, i, pass);
            // Ours instead; the kernel then sets it, and the call succeeds.
            a.push(mov32_imm(R1, ours[i] as u32));
            a.push(stx_w(R8, 0, R1));
            a.jump(ja(), done);
        } else {
            follow(&mut a, s, i, pass);
        }
    }

    a.bind(pass);
    // optlen 0: the kernel uses the program's own buffer, untouched (and an optval longer than
    // a page, which a program cannot see whole, is not refused).
    a.push(mov64_imm(R1, 0));
    a.push(stx_w(R6, OPTLEN, R1));
    a.bind(done);
    a.push(mov64_imm(R0, 1));
    a.push(exit());
    Some(a.finish())
}

/// Passes unless the socket is TCP (IPv4 or IPv6 stream, protocol TCP) and the value is at
/// least 4 bytes long and no longer than a page; then `R7` = the socket, `R8` = optval.
fn tcp_socket_and_value(a: &mut Asm, pass: Label) {
    use sockopt_ctx::*;
    let family_ok = a.label();
    a.push(ldx_dw(R7, R6, SK));
    a.push(ldx_w(R1, R7, sock::FAMILY));
    a.jump(jeq_imm(R1, libc::AF_INET), family_ok);
    a.jump(jne_imm(R1, libc::AF_INET6), pass);
    a.bind(family_ok);
    a.push(ldx_w(R1, R7, sock::TYPE));
    a.jump(jne_imm(R1, libc::SOCK_STREAM), pass);
    a.push(ldx_w(R1, R7, sock::PROTOCOL));
    a.jump(jne_imm(R1, libc::IPPROTO_TCP), pass);
    a.push(ldx_w(R1, R6, OPTLEN));
    a.jump(jlt_imm(R1, 4), pass);
    a.jump(jgt_imm(R1, OPTLEN_MAX), pass);
    a.push(ldx_dw(R8, R6, OPTVAL));
    a.push(ldx_dw(R2, R6, OPTVAL_END));
    a.push(mov64_reg(R1, R8));
    a.push(add64_imm(R1, 4));
    a.jump(jgt_reg(R1, R2), pass);
}

/// Passes when the value at `R8` is outside what the kernel accepts for option `i`
/// (`OPTIONS[i].min..=max`): the kernel then refuses it with the program's own errno.
fn in_range_or(a: &mut Asm, i: usize, pass: Label) {
    let o = &OPTIONS[i];
    a.push(ldx_w(R1, R8, 0));
    if o.min > i32::MIN {
        a.jump(jslt32_imm(R1, o.min), pass);
    }
    if o.max < i32::MAX {
        a.jump(jsgt32_imm(R1, o.max), pass);
    }
}

/// Without FORCE, on a socket the sock_ops program configured and the rules did not exclude:
/// the program's own user timeout is marked as such; its own idle, interval or count gives the
/// user timeout that follows them (unless the user timeout is its own).
fn follow(a: &mut Asm, s: &Settings, i: usize, pass: Label) {
    a.jump(jeq_imm(R9, 0), pass);
    a.push(ldx_b(R1, R9, 0));
    a.jump(jset_imm(R1, i32::from(MARK_EXCLUDED)), pass);
    a.push(mov64_reg(R2, R1));
    a.push(and32_imm(R2, u32::from(MARK_CONFIGURED)));
    a.jump(jeq_imm(R2, 0), pass);
    if i == USER_TIMEOUT {
        a.push(or64_imm(R1, i32::from(MARK_OWN_USER_TIMEOUT)));
        a.push(stx_b(R9, 0, R1));
        a.jump(ja(), pass);
        return;
    }
    a.jump(jset_imm(R1, i32::from(MARK_OWN_USER_TIMEOUT)), pass);
    in_range_or(a, i, pass);
    a.push(stx_w(R10, slot(i), R1));
    for other in [IDLE, INTERVAL, COUNT].into_iter().filter(|&o| o != i) {
        get_into_slot(a, R7, other);
        a.jump(jne_imm(R0, 0), pass);
    }
    user_timeout_in_r1(a, s);
    a.push(stx_w(R10, SLOT_SET, R1));
    a.push(mov64_reg(R1, R7));
    call_setsockopt(a, USER_TIMEOUT);
    a.jump(ja(), pass);
}

#[cfg(test)]
mod tests {
    use super::super::interp::{Run, Sock};
    use super::*;
    use keepalive_shim_policy::config::{self, DEFAULT};
    use keepalive_shim_policy::options::user_timeout_for;

    const MAPS: Maps = Maps {
        info: 3,
        storage: None,
    };
    const MAPS_STORAGE: Maps = Maps {
        info: 3,
        storage: Some(4),
    };
    /// A fresh socket as `bpf_getsockopt` reads it: keepalive off, the kernel's defaults, no
    /// user timeout.
    const FRESH: [i32; 5] = [0, 7200, 75, 9, 0];

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

    /// Runs the sock_ops program for `s` on a socket reading `before`, as an outgoing
    /// connection to `dest` (or an accepted one), and checks the result against [`decide`].
    fn connect(s: &Settings, before: [i32; 5], dest: Option<Destination>) -> Sock {
        let prog = sock_ops(s, &Defaults::kernel(), MAPS_STORAGE);
        let mut sock = Sock::new(before);
        let op = if dest.is_some() {
            TCP_CONNECT_CB
        } else {
            PASSIVE_ESTABLISHED_CB
        };
        let ret = Run::sock_ops(&prog, op, dest, &mut sock);
        assert_eq!(ret, 1);
        let expected = decide(s, &Defaults::kernel(), before.map(Some), dest.as_ref());
        assert_eq!(
            Some(sock.opts),
            expected.or(Some(before)),
            "program and policy disagree"
        );
        sock
    }

    #[test]
    fn other_callbacks_are_left_alone() {
        let prog = sock_ops(&DEFAULT, &Defaults::kernel(), MAPS);
        for op in [0, 1, 2, 4, 6, 7, 10] {
            let mut sock = Sock::new(FRESH);
            assert_eq!(Run::sock_ops(&prog, op, None, &mut sock), 1);
            assert!(sock.sets.is_empty(), "op {op}: {:?}", sock.sets);
            assert_eq!(sock.gets, 0, "op {op}");
        }
    }

    #[test]
    fn a_fresh_connection_gets_all_five() {
        let sock = connect(&DEFAULT, FRESH, Some(v4("10.0.0.1", 80)));
        assert_eq!(sock.opts, [1, 30, 10, 3, 60_000]);
        assert_eq!(sock.mark, Some(MARK_CONFIGURED));
        // Read back first, then set: five reads, five writes.
        assert_eq!(sock.gets, 5);
        assert_eq!(sock.sets.len(), 5);
    }

    #[test]
    fn an_accepted_connection_gets_them_too() {
        let s = settings(&[("KEEPALIVE_IDLE", "20"), ("KEEPALIVE_COUNT", "4")]);
        let sock = connect(&s, FRESH, None);
        assert_eq!(sock.opts, [1, 20, 10, 4, 60_000]);
    }

    #[test]
    fn keepalive_turned_on_by_the_program_stays() {
        // On, with the kernel's timings: the program chose keepalive; the timings are ours.
        let sock = connect(&DEFAULT, [1, 7200, 75, 9, 0], Some(v4("10.0.0.1", 80)));
        assert_eq!(sock.opts, [1, 30, 10, 3, 60_000]);
        assert!(!sock.sets.iter().any(|&(i, _)| i == KEEPALIVE));
    }

    #[test]
    fn a_programs_own_idle_interval_count_stand_and_the_user_timeout_follows() {
        // curl: 60 s / 60 s, count left alone: bound 60 + 60 × 3 = 240 s.
        let sock = connect(&DEFAULT, [1, 60, 60, 9, 0], Some(v4("10.0.0.1", 80)));
        assert_eq!(sock.opts, [1, 60, 60, 3, 240_000]);
        assert_eq!(
            sock.opts[USER_TIMEOUT] as u32,
            user_timeout_for(&DEFAULT, 60, 60, 3)
        );
        // Count alone.
        let sock = connect(&DEFAULT, FRESH.map(|v| if v == 9 { 5 } else { v }), None);
        assert_eq!(sock.opts, [1, 30, 10, 5, 80_000]);
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
        assert!(!sock.sets.iter().any(|&(i, _)| i == USER_TIMEOUT));
    }

    #[test]
    fn a_programs_own_user_timeout_stands_and_is_marked() {
        let sock = connect(&DEFAULT, [0, 7200, 75, 9, 5000], Some(v4("10.0.0.1", 80)));
        assert_eq!(sock.opts, [1, 30, 10, 3, 5000]);
        assert_eq!(sock.mark, Some(MARK_CONFIGURED | MARK_OWN_USER_TIMEOUT));
    }

    #[test]
    fn the_nodes_sysctl_defaults_are_not_a_programs_own() {
        let defaults = Defaults {
            idle: vec![7200, 600],
            interval: vec![75],
            count: vec![9],
        };
        let prog = sock_ops(&DEFAULT, &defaults, MAPS);
        let mut sock = Sock::new([0, 600, 75, 9, 0]);
        Run::sock_ops(&prog, PASSIVE_ESTABLISHED_CB, None, &mut sock);
        assert_eq!(sock.opts, [1, 30, 10, 3, 60_000]);
        assert_eq!(
            decide(&DEFAULT, &defaults, [0, 600, 75, 9, 0].map(Some), None),
            Some(sock.opts)
        );
    }

    #[test]
    fn unreadable_options_count_as_unset() {
        // Kernels before 6.1 refuse bpf_getsockopt of these options: the buffer is zeroed.
        let prog = sock_ops(&DEFAULT, &Defaults::kernel(), MAPS);
        let mut sock = Sock::new([1, 60, 60, 9, 5000]);
        sock.readable = false;
        Run::sock_ops(&prog, PASSIVE_ESTABLISHED_CB, None, &mut sock);
        assert_eq!(sock.opts, [1, 30, 10, 3, 60_000]);
        assert_eq!(
            decide(&DEFAULT, &Defaults::kernel(), [None; 5], None),
            Some(sock.opts)
        );
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
            assert_eq!(sock.opts, [1, 30, 10, 3, 60_000], "{dest}");
        }
        // Accepted connections: the rules are about destinations, decided at connect.
        let sock = connect(&s, FRESH, None);
        assert_eq!(sock.opts, [1, 30, 10, 3, 60_000]);
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
        let prog = sock_ops(&s, &Defaults::kernel(), MAPS);
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
            let prog = sock_ops(&s, &Defaults::kernel(), MAPS);
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
        before: [i32; 5],
        i: usize,
        value: i32,
    ) -> (i32, i32, Sock) {
        let maps = if needs_storage(s) { MAPS_STORAGE } else { MAPS };
        let prog = setsockopt(s, maps).expect("a setsockopt program");
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
        assert!(setsockopt(&s, MAPS).is_none());
        assert!(!needs_storage(&s));
        assert!(setsockopt(&DEFAULT, MAPS_STORAGE).is_some());
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
        }
    }

    #[test]
    fn force_lets_a_value_the_kernel_refuses_fail_as_it_would() {
        let s = settings(&[("KEEPALIVE_FORCE", "1")]);
        for (i, bad) in [(IDLE, 0), (IDLE, 40_000), (COUNT, 128), (USER_TIMEOUT, -1)] {
            let (ret, passed, _) = setsockopt_run(&s, None, FRESH, i, bad);
            assert_eq!((ret, passed), (1, bad), "{} {bad}", OPTIONS[i].label);
        }
    }

    #[test]
    fn force_leaves_excluded_connections_alone() {
        let s = settings(&[("KEEPALIVE_FORCE", "1"), ("KEEPALIVE_EXCLUDE", ":22")]);
        let (_, passed, _) = setsockopt_run(&s, Some(MARK_EXCLUDED), FRESH, IDLE, 5);
        assert_eq!(passed, 5);
        let (_, passed, _) = setsockopt_run(&s, None, FRESH, IDLE, 5);
        assert_eq!(passed, 30);
    }

    #[test]
    fn other_options_and_sockets_pass_untouched() {
        let s = settings(&[("KEEPALIVE_FORCE", "1")]);
        let prog = setsockopt(&s, MAPS).unwrap();
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
        // Too short a value: the kernel's EINVAL, as without the program.
        let (_, passed) = Run::setsockopt(
            &prog,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            &[5, 0],
            &mut sock,
        );
        assert_eq!(passed, [5, 0]);
    }

    #[test]
    fn a_keepalive_set_after_connect_moves_the_user_timeout() {
        // node: 1 s idle after connecting; interval and count ours (10 s × 3): bound 31 s.
        let configured = [1, 30, 10, 3, 60_000];
        let (ret, passed, sock) =
            setsockopt_run(&DEFAULT, Some(MARK_CONFIGURED), configured, IDLE, 1);
        assert_eq!((ret, passed), (1, 1));
        assert_eq!(sock.sets, vec![(USER_TIMEOUT, 31_000)]);
        assert_eq!(31_000, user_timeout_for(&DEFAULT, 1, 10, 3));
        // With an explicit, shorter user timeout, that one.
        let s = settings(&[("KEEPALIVE_USER_TIMEOUT", "20s")]);
        let (_, _, sock) = setsockopt_run(&s, Some(MARK_CONFIGURED), configured, COUNT, 10);
        assert_eq!(sock.sets, vec![(USER_TIMEOUT, 20_000)]);
    }

    #[test]
    fn the_user_timeout_does_not_follow_where_it_should_not() {
        let configured = [1, 30, 10, 3, 60_000];
        for mark in [
            None,                                          // not configured by us
            Some(MARK_EXCLUDED),                           // the rules left it alone
            Some(MARK_CONFIGURED | MARK_OWN_USER_TIMEOUT), // its own user timeout
        ] {
            let (_, passed, sock) = setsockopt_run(&DEFAULT, mark, configured, IDLE, 1);
            assert_eq!(passed, 1);
            assert!(sock.sets.is_empty(), "{mark:?}: {:?}", sock.sets);
        }
        // A value the kernel refuses changes nothing.
        let (_, _, sock) = setsockopt_run(&DEFAULT, Some(MARK_CONFIGURED), configured, IDLE, 0);
        assert!(sock.sets.is_empty());
        // SO_KEEPALIVE passes straight through (no body for it without FORCE).
        let (_, passed, sock) =
            setsockopt_run(&DEFAULT, Some(MARK_CONFIGURED), configured, KEEPALIVE, 0);
        assert_eq!(passed, 0);
        assert!(sock.sets.is_empty());
    }

    #[test]
    fn a_programs_own_user_timeout_after_connect_is_remembered() {
        let (_, passed, sock) =
            setsockopt_run(&DEFAULT, Some(MARK_CONFIGURED), FRESH, USER_TIMEOUT, 7000);
        assert_eq!(passed, 7000);
        assert_eq!(sock.mark, Some(MARK_CONFIGURED | MARK_OWN_USER_TIMEOUT));
        assert!(sock.sets.is_empty());
    }

    #[test]
    fn sizes_stay_small() {
        let n = |s: &Settings| sock_ops(s, &Defaults::of_this_node(), MAPS_STORAGE).len();
        assert!(n(&DEFAULT) < 200, "{}", n(&DEFAULT));
        let s = settings(&[("KEEPALIVE_FORCE", "1")]);
        assert!(n(&s) < 60, "{}", n(&s));
        // 32 + 32 IPv6 rules with ports: the largest, well within the verifier's limits.
        let many: Vec<String> = (0..32)
            .map(|i| format!("[fd{i:02x}::1]/64:{}", 1000 + i))
            .collect();
        let s = settings(&[
            ("KEEPALIVE_EXCLUDE", &many.join(",")),
            ("KEEPALIVE_INCLUDE", &many.join(",")),
        ]);
        assert!(n(&s) < 1200, "{}", n(&s));
    }
}
