//! The fleet programs, written from the same [`Settings`] the preload library uses, each an
//! instance of the one decision every mechanism takes (`keepalive_shim_policy::decide`): the
//! options and their values from `options::OPTIONS` and `options::values`, what is known of a
//! socket as `decide::Known`, and at every event the plan `decide::decide` gives.
//!
//! - [`sock_ops`]: a `BPF_PROG_TYPE_SOCK_OPS` program, for `Event::Connect` (on
//!   `BPF_SOCK_OPS_TCP_CONNECT_CB`, before the SYN; the destination rules are matched there)
//!   and `Event::Accepted` (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`). What it knows of the socket
//!   is what the programs recorded in its storage byte; of a socket they recorded nothing of,
//!   what the socket itself shows: where the kernel's BTF gives the offsets (btf.rs), its raw
//!   option fields, all at zero on a socket nobody set one of the five on (a fresh socket, the
//!   common case: configured with five `bpf_setsockopt` and nothing else); otherwise the options
//!   read back with `bpf_getsockopt`, told apart as `Known::from_kernel` does, and recorded.
//!   Then the plan: ours for every option the program did not choose, the user timeout
//!   following its own keepalive; nothing on a socket already configured; all of ours with
//!   `KEEPALIVE_FORCE`; and for a destination the rules exclude, back to the node's defaults
//!   where we had set ours.
//! - [`setsockopt`]: a `BPF_CGROUP_SETSOCKOPT` program, for `Event::Set`: it runs before the
//!   kernel applies a program's `setsockopt()` of one of the options, so it sees a program's own
//!   choice even when its value equals the kernel's default (an explicit `SO_KEEPALIVE=0`, a
//!   `TCP_USER_TIMEOUT=0`) and records it. On a socket not configured yet (before `connect()`)
//!   it configures it there and then, as the decision says (every other option ours, the user
//!   timeout following); on a configured one, the program's own idle, interval or count gives
//!   the user timeout that follows them. A socket without a record that is connected or
//!   accepted is one sock_ops configured fresh (`Known::CONFIGURED`); one that is not (or
//!   listens) is as the kernel made it. With FORCE, the program's value becomes ours (a value
//!   the kernel would refuse passes through, to fail as it would). A value the kernel refuses
//!   is no event. A call for any other option passes after two comparisons.
//!
//! The two share what is known of a socket through a socket-storage map: one byte, the
//! options the program chose (bit `i` for option `i`, as `Known::own`), [`MARK_CONFIGURED`]
//! and [`MARK_EXCLUDED`] (left alone), made only where there is something to record (a fresh
//! connection has none: making one was most of what fleet mode cost per connection).
//!
//! Both count, by the connection's own cgroup, in a per-CPU hash from a cgroup's ID to its u64
//! counters (`COUNT_*`): looked up (added at the cgroup's first event, or [`OTHER_KEY`]'s entry
//! when the map is full), then one atomic add (`BPF_ATOMIC | BPF_ADD`) on this CPU's copy.
//! sock_ops reads the socket's cgroup (`sk_cgrp_data.cgroup->kn->id`, set when the socket was
//! made) through `bpf_skc_to_tcp_sock`, in every context, softirq included; the setsockopt
//! program, which cannot, takes the calling process's. Counted: connections configured
//! (outgoing at `TCP_CONNECT_CB`, accepted at `PASSIVE_ESTABLISHED_CB`), excluded by the rules,
//! options the program chose itself and kept (once per socket and option, as the library counts
//! them), and how the connections it configured ended, as far as a BPF program can tell: on
//! each configured connection sock_ops enables `BPF_SOCK_OPS_RTO_CB` and
//! `BPF_SOCK_OPS_STATE_CB` (the flags already set kept); `RTO_CB` with `args[2]` (expired) = 1
//! is `tcp_write_timeout()` ending the connection (retransmissions, the user timeout with data
//! unacknowledged, SYN retries): counted as timed out, and its `STATE_CB` turned off so the
//! close that follows is not counted again; a `STATE_CB` from ESTABLISHED or CLOSE_WAIT straight
//! to CLOSE is counted as aborted: the keepalive timer's abort, which has no callback of its
//! own, but also an RST received or an abortive close, which no sock_ops field tells apart from
//! it. An orderly close (to FIN_WAIT1 or LAST_ACK) turns the state callback off, so the state
//! changes after it cost nothing.
//!
//! With `KEEPALIVE_USER_TIMEOUT=0` and no FORCE there is no setsockopt program (a user timeout
//! to follow is 0 anyway): sock_ops alone reads back at connect, so a program's own value equal
//! to the kernel's default, set before `connect()`, is then taken as nobody's.

use super::btf::Layout;
use super::insn::*;
use keepalive_shim_policy::config::Settings;
use keepalive_shim_policy::decide::{ALL, Defaults, KERNEL_DEFAULTS};
use keepalive_shim_policy::options::{
    COUNT, IDLE, INTERVAL, KEEPALIVE, N, OPTIONS, USER_TIMEOUT, values,
};
use keepalive_shim_policy::rules::Rule;

/// Kernel helpers (`enum bpf_func_id`).
pub const HELPER_SETSOCKOPT: i32 = 49;
pub const HELPER_GETSOCKOPT: i32 = 57;
pub const HELPER_SK_STORAGE_GET: i32 = 107;
pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
pub const HELPER_MAP_UPDATE_ELEM: i32 = 2;
pub const HELPER_SOCK_OPS_CB_FLAGS_SET: i32 = 59;
pub const HELPER_GET_CURRENT_CGROUP_ID: i32 = 80;
pub const HELPER_SKC_TO_TCP_SOCK: i32 = 137;
const SK_STORAGE_GET_F_CREATE: i32 = 1;
/// `BPF_NOEXIST`: an update that only adds.
const NOEXIST: i32 = 1;

/// `enum bpf_sock_ops_cb` values the program acts on.
pub const TCP_CONNECT_CB: i32 = 3;
pub const PASSIVE_ESTABLISHED_CB: i32 = 5;
pub const RTO_CB: i32 = 8;
pub const STATE_CB: i32 = 10;
/// `BPF_SOCK_OPS_RTO_CB_FLAG`, `BPF_SOCK_OPS_STATE_CB_FLAG`.
pub const RTO_CB_FLAG: i32 = 1;
pub const STATE_CB_FLAG: i32 = 4;
/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_FIN_WAIT1: i32 = 4;
#[cfg(test)]
pub const TCP_FIN_WAIT2: i32 = 5;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_LAST_ACK: i32 = 9;
pub const TCP_LISTEN: i32 = 10;

/// The counters, by index in the counts map's one value (u64 each).
pub const COUNT_CONNECTIONS_CONFIGURED: usize = 0;
pub const COUNT_ACCEPTED_CONFIGURED: usize = 1;
pub const COUNT_EXCLUDED: usize = 2;
/// One per option, in the order of `OPTIONS`.
pub const COUNT_LEFT_TO_PROGRAM: usize = 3;
pub const COUNT_TIMED_OUT: usize = COUNT_LEFT_TO_PROGRAM + N;
pub const COUNT_ABORTED: usize = COUNT_TIMED_OUT + 1;
pub const COUNTERS: usize = COUNT_ABORTED + 1;

/// The counts map's key where what did not fit is counted: the map was full when a cgroup's
/// first event came (no cgroup has this ID). Made by `fleet attach`, with the map.
pub const OTHER_KEY: u64 = u64::MAX;
/// The key where the counts of cgroups that are gone are folded, by whoever reads the map (no
/// program writes it).
pub const GONE_KEY: u64 = u64::MAX - 1;

/// Offsets in `struct bpf_sock_ops` (include/uapi/linux/bpf.h).
pub mod sock_ops_ctx {
    pub const OP: i16 = 0;
    pub const ARGS0: i16 = 4;
    pub const ARGS1: i16 = 8;
    pub const ARGS2: i16 = 12;
    pub const FAMILY: i16 = 20;
    pub const CB_FLAGS: i16 = 84;
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
    pub const STATE: i16 = 72;
}

/// The storage byte: the options the program chose itself, bit `i` for option `i` (the
/// policy's `Known::own`), below these two.
pub const MARK_OWN: u8 = ALL;
/// keepalive-shim configured the socket (`Known::configured`).
pub const MARK_CONFIGURED: u8 = 1 << N;
/// Left as the program made it: a destination the rules exclude (`Known::LEFT_ALONE`).
pub const MARK_EXCLUDED: u8 = 1 << (N + 1);
const _: () = assert!(N + 2 <= 8, "the marks fit one byte");

/// Idle, interval and count, the options the user timeout follows, as a mask.
const TIMES: u8 = 1 << IDLE | 1 << INTERVAL | 1 << COUNT;

const fn bit(i: usize) -> i32 {
    1 << i
}

const fn is_time(i: usize) -> bool {
    TIMES & (1 << i) != 0
}

/// The value `bpf_setsockopt` is given (4 bytes).
const SLOT_SET: i16 = -4;
/// Where option `i` is read back: -8, -12, -16, -20, -24.
const fn slot(i: usize) -> i16 {
    -8 - 4 * i as i16
}
/// The remote address as four 32-bit words (IPv4 as IPv4-mapped IPv6), -40 to -25.
const SLOT_ADDR: i16 = -40;
const _: () = assert!(slot(N - 1) > SLOT_ADDR + 12, "the slots do not overlap");
/// The counts map's key: the cgroup's ID (8 bytes).
const SLOT_CGROUP: i16 = -48;
/// The counters of this event's cgroup, once looked up: a pointer into the counts map, or 0.
const SLOT_COUNTERS: i16 = -56;
/// A zeroed value, to add a cgroup to the counts map.
const SLOT_ZERO: i16 = SLOT_COUNTERS - 8 * COUNTERS as i16;
const _: () = assert!(SLOT_ADDR - 4 >= SLOT_CGROUP + 4, "the slots do not overlap");
const _: () = assert!(SLOT_ZERO >= -512, "the stack is 512 bytes");

/// The largest optval the setsockopt program looks at; a longer one (no option of ours is) is
/// handed back untouched, as the kernel wants for anything beyond a page.
const OPTLEN_MAX: i32 = 4096;

/// What a socket has on this node without keepalive-shim: the kernel's defaults, with this
/// network namespace's `net.ipv4.tcp_keepalive_{time,intvl,probes}` for idle, interval and
/// count (a sysctl that cannot be read keeps the kernel's value). The kernel's own defaults
/// count as nobody's choice too (`Defaults::is_default`).
pub fn node_defaults() -> Defaults {
    let read = |name: &str| -> Option<i32> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut fresh = KERNEL_DEFAULTS;
    for (i, name) in [
        (IDLE, "tcp_keepalive_time"),
        (INTERVAL, "tcp_keepalive_intvl"),
        (COUNT, "tcp_keepalive_probes"),
    ] {
        if let Some(v) = read(name) {
            fresh[i] = v;
        }
    }
    Defaults { fresh }
}

/// Map file descriptors the programs name.
#[derive(Clone, Copy, Debug)]
pub struct Maps {
    /// The info map (settings as text, for `fleet status`): referenced so it lives as long as
    /// the program, and is found from it.
    pub info: i32,
    /// The socket-storage map both programs share, when [`needs_storage`].
    pub storage: Option<i32>,
    /// The counts map both programs update: a per-CPU hash from a cgroup's ID to its
    /// counters (`COUNT_*`), with [`OTHER_KEY`] for what does not fit; none: nothing counted.
    pub counts: Option<i32>,
}

/// What the programs know of where they run: the kernel's layout (offsets read from its BTF)
/// and the attached cgroup's ID, under which everything is counted when the kernel cannot say
/// a socket's own cgroup.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub layout: Layout,
    pub cgroup: u64,
}

/// Whether a setsockopt program is attached: with FORCE always; without, unless
/// `KEEPALIVE_USER_TIMEOUT=0` (no user timeout to follow a program's keepalive); never when
/// keepalive-shim is disabled.
pub fn needs_setsockopt(s: &Settings) -> bool {
    s.enabled && (s.force || !(s.user_timeout_explicit && s.user_timeout_ms == 0))
}

/// Whether the programs keep per-socket marks: the setsockopt program records what the program
/// chose (without FORCE), and which sockets the rules left alone.
pub fn needs_storage(s: &Settings) -> bool {
    needs_setsockopt(s) && (!s.force || s.has_rules())
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

/// Sets option `i` to `value` (an immediate), through `holder` (context or socket); for idle,
/// interval and count, its slot then holds the value in effect, for the user timeout.
fn set_imm(a: &mut Asm, holder: Reg, i: usize, value: i32) {
    a.push(st_w(R10, SLOT_SET, value as u32));
    a.push(mov64_reg(R1, holder));
    call_setsockopt(a, i);
    if is_time(i) {
        a.push(st_w(R10, slot(i), value as u32));
    }
}

/// [`set_imm`] unless option `i` is the program's own (its bit in `R7`).
fn set_unless_own(a: &mut Asm, holder: Reg, i: usize, value: i32) {
    let own = a.label();
    a.jump(jset_imm(R7, bit(i)), own);
    set_imm(a, holder, i, value);
    a.bind(own);
}

/// `bpf_getsockopt(holder, …)` of option `i` into its slot (zeroed by the kernel on failure);
/// `R0` is 0 when it was read.
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
/// `i32::MAX`, and no more than an explicit `KEEPALIVE_USER_TIMEOUT`. Uses `R0`, `R1`, `R5`
/// only.
fn user_timeout_in_r1(a: &mut Asm, s: &Settings) {
    a.push(ldx_w(R1, R10, slot(IDLE)));
    a.push(mul64_imm(R1, 1000));
    a.push(ldx_w(R0, R10, slot(INTERVAL)));
    a.push(mul64_imm(R0, 1000));
    a.push(ldx_w(R5, R10, slot(COUNT)));
    a.push(mul64_reg(R0, R5));
    a.push(add64_reg(R1, R0));
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

/// `R1` = `options::user_timeout_in_effect` for the program's own options in `own` (a
/// register; the slots holding the idle, interval and count in effect): the configured user
/// timeout when none of the three is its own, else the one that follows them. Uses `R0`, `R1`,
/// `R5`.
fn user_timeout_in_effect_in_r1(a: &mut Asm, s: &Settings, own: Reg) {
    let done = a.label();
    a.push(mov32_imm(R1, values(s)[USER_TIMEOUT] as u32));
    a.push(mov64_reg(R5, own));
    a.push(and32_imm(R5, u32::from(TIMES)));
    a.jump(jeq_imm(R5, 0), done);
    user_timeout_in_r1(a, s);
    a.bind(done);
}

/// Sets the user timeout to `R1`, through `holder`.
fn set_user_timeout_from_r1(a: &mut Asm, holder: Reg) {
    a.push(stx_w(R10, SLOT_SET, R1));
    a.push(mov64_reg(R1, holder));
    call_setsockopt(a, USER_TIMEOUT);
}

/// `R0` = the counts map's entry for the key in `SLOT_CGROUP`. Clobbers `R1`–`R5`.
fn lookup_key(a: &mut Asm, map: i32) {
    a.push_all(ld_map_fd(R1, map));
    a.push(mov64_reg(R2, R10));
    a.push(add64_imm(R2, i32::from(SLOT_CGROUP)));
    a.push(call(HELPER_MAP_LOOKUP_ELEM));
}

/// `SLOT_COUNTERS` = the counters of the cgroup whose ID is in `SLOT_CGROUP`: its entry, added
/// (zeroed, `BPF_NOEXIST`) at its first event, or [`OTHER_KEY`]'s when the map is full; 0 when
/// there is none. Each counter is then one atomic add on this CPU's copy ([`count`]). Clobbers
/// `R0`–`R5`.
fn counters_of_key(a: &mut Asm, map: i32) {
    let found = a.label();
    lookup_key(a, map);
    a.jump(jne_imm(R0, 0), found);
    for i in 0..COUNTERS {
        a.push(st_dw(R10, SLOT_ZERO + 8 * i as i16, 0));
    }
    a.push_all(ld_map_fd(R1, map));
    a.push(mov64_reg(R2, R10));
    a.push(add64_imm(R2, i32::from(SLOT_CGROUP)));
    a.push(mov64_reg(R3, R10));
    a.push(add64_imm(R3, i32::from(SLOT_ZERO)));
    a.push(mov64_imm(R4, NOEXIST));
    a.push(call(HELPER_MAP_UPDATE_ELEM));
    lookup_key(a, map);
    a.jump(jne_imm(R0, 0), found);
    // Full: what does not fit is counted under OTHER_KEY (u64::MAX, -1 sign-extended).
    const _: () = assert!(OTHER_KEY == u64::MAX);
    a.push(st_dw(R10, SLOT_CGROUP, -1));
    lookup_key(a, map);
    a.bind(found);
    a.push(stx_dw(R10, SLOT_COUNTERS, R0));
}

/// `SLOT_COUNTERS` = the counters of the sock_ops socket's own cgroup (`R6` the context): its
/// ID read through `bpf_skc_to_tcp_sock` at the offsets of [`Layout::cgroup`], or the attached
/// cgroup's when the kernel cannot say. Clobbers `R0`–`R5`.
fn socket_counters(a: &mut Asm, map: i32, target: Target) {
    a.push_all(ld_imm64(R1, target.cgroup));
    a.push(stx_dw(R10, SLOT_CGROUP, R1));
    if let Some(c) = target.layout.cgroup {
        let done = a.label();
        a.push(ldx_dw(R1, R6, sock_ops_ctx::SK));
        a.jump(jeq_imm(R1, 0), done);
        a.push(call(HELPER_SKC_TO_TCP_SOCK));
        a.jump(jeq_imm(R0, 0), done);
        a.push(ldx_dw(R1, R0, c.sk_cgroup));
        a.push(ldx_dw(R1, R1, c.cgroup_kn));
        a.push(ldx_dw(R1, R1, c.kn_id));
        a.jump(jeq_imm(R1, 0), done);
        a.push(stx_dw(R10, SLOT_CGROUP, R1));
        a.bind(done);
    }
    counters_of_key(a, map);
}

/// `SLOT_COUNTERS` = the counters of the calling process's cgroup (the setsockopt program runs
/// in the process that calls `setsockopt()`; no helper there reaches the socket's own), or the
/// attached cgroup's. Clobbers `R0`–`R5`.
fn current_counters(a: &mut Asm, map: i32, target: Target) {
    if target.layout.cgroup.is_some() {
        a.push(call(HELPER_GET_CURRENT_CGROUP_ID));
        a.push(stx_dw(R10, SLOT_CGROUP, R0));
    } else {
        a.push_all(ld_imm64(R1, target.cgroup));
        a.push(stx_dw(R10, SLOT_CGROUP, R1));
    }
    counters_of_key(a, map);
}

/// Adds one to counter `index` of the counters in `SLOT_COUNTERS` (none: nothing). Clobbers
/// `R1`, `R2`.
fn count(a: &mut Asm, index: usize) {
    let skip = a.label();
    a.push(ldx_dw(R1, R10, SLOT_COUNTERS));
    a.jump(jeq_imm(R1, 0), skip);
    a.push(mov64_imm(R2, 1));
    a.push(atomic_add64(R1, (8 * index) as i16, R2));
    a.bind(skip);
}

/// `bpf_sock_ops_cb_flags_set(ctx, flags)` with the socket's flags (`R6` the context) and
/// `or` added, `and_not` removed.
fn cb_flags(a: &mut Asm, or: i32, and_not: i32) {
    a.push(mov64_reg(R1, R6));
    a.push(ldx_w(R2, R6, sock_ops_ctx::CB_FLAGS));
    if or != 0 {
        a.push(or64_imm(R2, or));
    }
    if and_not != 0 {
        a.push(and32_imm(R2, !(and_not as u32)));
    }
    a.push(call(HELPER_SOCK_OPS_CB_FLAGS_SET));
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

/// The sock_ops program for `s`, `defaults` being what a socket has without us on this node
/// ([`node_defaults`]). Registers: `R6` the context, `R7` the program's own options (a mask),
/// `R8` [`MARK_CONFIGURED`] when the socket is configured (else 0), `R9` the socket's storage
/// (or 0: a socket the programs have recorded nothing of has none, and gets none unless the
/// rules leave it alone).
pub fn sock_ops(s: &Settings, defaults: &Defaults, maps: Maps, target: Target) -> Vec<Insn> {
    use sock_ops_ctx::*;
    // The marks are kept when what is known of a socket matters: always but under FORCE
    // without rules.
    let storage = maps.storage.filter(|_| !s.force || s.has_rules());
    let mut a = Asm::new();
    let out = a.label();

    a.push(mov64_reg(R6, R1));
    // Ties the info map to the program: `fleet status` finds the settings through it.
    a.push_all(ld_map_fd(R1, maps.info));
    if s.enabled {
        let ours = values(s);
        let event = a.label();
        let configure = a.label();
        let excluded = a.label();
        let (rto, state) = (a.label(), a.label());
        a.push(ldx_w(R2, R6, OP));
        a.jump(jeq_imm(R2, PASSIVE_ESTABLISHED_CB), event);
        if maps.counts.is_some() {
            a.jump(jeq_imm(R2, STATE_CB), state);
            a.jump(jeq_imm(R2, RTO_CB), rto);
        }
        a.jump(jne_imm(R2, TCP_CONNECT_CB), out);
        a.bind(event);

        // Its counters first: the paths of what follows then share one lookup's outcome.
        if let Some(map) = maps.counts {
            socket_counters(&mut a, map, target);
        }
        // What is known of the socket: needed unless FORCE sets ours whatever it is.
        if !s.force || s.has_rules() {
            known(&mut a, s, defaults, storage, target.layout, out);
        }

        // An outgoing connection: the destination rules.
        if s.has_rules() {
            a.push(ldx_w(R2, R6, OP));
            a.jump(jne_imm(R2, TCP_CONNECT_CB), configure);
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
            for (i, v) in ours.into_iter().enumerate() {
                set_imm(&mut a, R6, i, v);
            }
            if storage.is_some() {
                a.push(mov64_imm(R7, 0));
                a.push(mov64_imm(R8, i32::from(MARK_CONFIGURED)));
                write_mark(&mut a);
            }
        } else {
            let marked = a.label();
            // Already configured: nothing to do.
            a.jump(jne_imm(R8, 0), marked);
            if maps.counts.is_some() {
                // The program's own options, read back, that stand: counted once, here (a
                // socket marked configured had them counted by the setsockopt program).
                for i in 0..N {
                    let not_own = a.label();
                    a.push(mov64_reg(R1, R7));
                    a.push(and32_imm(R1, bit(i) as u32));
                    a.jump(jeq_imm(R1, 0), not_own);
                    count(&mut a, COUNT_LEFT_TO_PROGRAM + i);
                    a.bind(not_own);
                }
            }
            // Ours for every option the program did not choose; the user timeout follows its
            // own keepalive.
            for i in [IDLE, INTERVAL, COUNT, KEEPALIVE] {
                set_unless_own(&mut a, R6, i, ours[i]);
            }
            let own_user_timeout = a.label();
            a.jump(jset_imm(R7, bit(USER_TIMEOUT)), own_user_timeout);
            user_timeout_in_effect_in_r1(&mut a, s, R7);
            set_user_timeout_from_r1(&mut a, R6);
            a.bind(own_user_timeout);
            a.push(mov64_imm(R8, i32::from(MARK_CONFIGURED)));
            a.bind(marked);
            if storage.is_some() {
                write_mark(&mut a);
            }
        }
        if maps.counts.is_some() {
            // How it ends: the retransmission timer's expiry and the state changes.
            cb_flags(&mut a, RTO_CB_FLAG | STATE_CB_FLAG, 0);
            let accepted = a.label();
            let counted = a.label();
            a.push(ldx_w(R2, R6, OP));
            a.jump(jne_imm(R2, TCP_CONNECT_CB), accepted);
            count(&mut a, COUNT_CONNECTIONS_CONFIGURED);
            a.jump(ja(), counted);
            a.bind(accepted);
            count(&mut a, COUNT_ACCEPTED_CONFIGURED);
            a.bind(counted);
        }
        a.jump(ja(), out);

        a.bind(excluded);
        if s.has_rules() {
            // Back to what it had without us, where we had set ours.
            let untouched = a.label();
            a.jump(jeq_imm(R8, 0), untouched);
            for i in 0..N {
                set_unless_own(&mut a, R6, i, defaults.fresh[i]);
            }
            a.bind(untouched);
            if let Some(map) = storage {
                // Left alone from now on, also by the setsockopt program: marked.
                let have = a.label();
                a.jump(jne_imm(R9, 0), have);
                a.push(ldx_dw(R2, R6, SK));
                a.jump(jeq_imm(R2, 0), have);
                storage_get(&mut a, map, true);
                a.push(mov64_reg(R9, R0));
                a.bind(have);
                a.push(mov64_imm(R7, 0));
                a.push(mov64_imm(R8, i32::from(MARK_EXCLUDED)));
                write_mark(&mut a);
            }
            if maps.counts.is_some() {
                count(&mut a, COUNT_EXCLUDED);
                a.jump(ja(), out);
            }
        }
        if let Some(map) = maps.counts {
            // The retransmission timer expired (`tcp_write_timeout()`, right before
            // `tcp_write_err()`): timed out; the close that follows is not counted again.
            a.bind(rto);
            a.push(ldx_w(R2, R6, ARGS2));
            a.jump(jne_imm(R2, 1), out);
            socket_counters(&mut a, map, target);
            count(&mut a, COUNT_TIMED_OUT);
            cb_flags(&mut a, 0, STATE_CB_FLAG);
            a.jump(ja(), out);
            // Straight from ESTABLISHED or CLOSE_WAIT to CLOSE: aborted (a keepalive timeout,
            // an RST, an abortive close). An orderly close starts with FIN_WAIT1 or LAST_ACK:
            // the state changes after it are of no interest, and their callbacks are turned
            // off there.
            a.bind(state);
            let aborted = a.label();
            let orderly = a.label();
            let not_closed = a.label();
            a.push(ldx_w(R2, R6, ARGS0));
            a.push(ldx_w(R3, R6, ARGS1));
            a.jump(jne_imm(R3, TCP_CLOSE), not_closed);
            a.jump(jeq_imm(R2, TCP_ESTABLISHED), aborted);
            a.jump(jne_imm(R2, TCP_CLOSE_WAIT), out);
            a.bind(aborted);
            socket_counters(&mut a, map, target);
            count(&mut a, COUNT_ABORTED);
            a.jump(ja(), out);
            a.bind(not_closed);
            a.jump(jeq_imm(R3, TCP_FIN_WAIT1), orderly);
            a.jump(jne_imm(R3, TCP_LAST_ACK), out);
            a.bind(orderly);
            cb_flags(&mut a, 0, STATE_CB_FLAG);
        }
    }

    a.bind(out);
    a.push(mov64_imm(R0, 1));
    a.push(exit());
    a.finish()
}

/// `R7`, `R8` (and `R9`) = what is known of the socket: its marks when the programs recorded
/// any (jumping to `out` when it is left alone), else what its options say of it. Those are
/// read back with `bpf_getsockopt` unless the kernel's layout shows, in the socket itself, that
/// nobody ever set one of them: then it is a fresh socket, as reading back would say.
fn known(
    a: &mut Asm,
    s: &Settings,
    defaults: &Defaults,
    storage: Option<i32>,
    layout: Layout,
    out: Label,
) {
    let read_back = a.label();
    let done = a.label();
    a.push(mov64_imm(R9, 0));
    if let Some(map) = storage {
        a.push(ldx_dw(R2, R6, sock_ops_ctx::SK));
        a.jump(jeq_imm(R2, 0), read_back);
        storage_get(a, map, false);
        a.push(mov64_reg(R9, R0));
        a.jump(jeq_imm(R9, 0), read_back);
        a.push(ldx_b(R1, R9, 0));
        a.jump(jset_imm(R1, i32::from(MARK_EXCLUDED)), out);
        a.push(mov64_reg(R8, R1));
        a.push(and32_imm(R8, u32::from(MARK_CONFIGURED)));
        a.jump(jeq_imm(R8, 0), read_back);
        a.push(mov64_reg(R7, R1));
        a.push(and32_imm(R7, u32::from(MARK_OWN)));
        a.jump(ja(), done);
    }
    a.bind(read_back);
    if let Some(raw) = layout.raw {
        let set = a.label();
        a.push(ldx_dw(R1, R6, sock_ops_ctx::SK));
        a.jump(jeq_imm(R1, 0), set);
        a.push(call(HELPER_SKC_TO_TCP_SOCK));
        a.jump(jeq_imm(R0, 0), set);
        a.push(ldx_dw(R1, R0, raw.sk_flags));
        a.jump(jset_imm(R1, 1 << raw.keepopen), set);
        a.push(ldx_w(R1, R0, raw.keepalive_time));
        a.jump(jne_imm(R1, 0), set);
        a.push(ldx_w(R1, R0, raw.keepalive_intvl));
        a.jump(jne_imm(R1, 0), set);
        a.push(ldx_b(R1, R0, raw.keepalive_probes));
        a.jump(jne_imm(R1, 0), set);
        a.push(ldx_w(R1, R0, raw.user_timeout));
        a.jump(jne_imm(R1, 0), set);
        // Nobody set any of the five: `Known::FRESH`.
        a.push(mov64_imm(R7, 0));
        a.push(mov64_imm(R8, 0));
        a.jump(ja(), done);
        a.bind(set);
    }
    read_back_known(a, s, defaults, R6);
    if let Some(map) = storage {
        // Read back: what it says is recorded, for the setsockopt program (a fresh socket
        // needs no record: connected, it is configured with nothing of its own).
        let have = a.label();
        a.jump(jne_imm(R9, 0), have);
        a.push(ldx_dw(R2, R6, sock_ops_ctx::SK));
        a.jump(jeq_imm(R2, 0), have);
        storage_get(a, map, true);
        a.push(mov64_reg(R9, R0));
        a.bind(have);
    }
    a.bind(done);
}

/// `R7`, `R8` = `Known::from_kernel` of the five options read back through `holder` (the
/// context or the socket) into their slots.
fn read_back_known(a: &mut Asm, s: &Settings, defaults: &Defaults, holder: Reg) {
    for i in 0..N {
        get_into_slot(a, holder, i);
        // Unreadable (kernels before 6.1): as a fresh socket has it.
        let read = a.label();
        a.jump(jeq_imm(R0, 0), read);
        a.push(st_w(R10, slot(i), defaults.fresh[i] as u32));
        a.bind(read);
    }
    from_kernel(a, s, defaults);
}

/// Jumps to `to` when `R1` is a value option `i` has when nobody set it
/// (`Defaults::is_default`).
fn jump_if_default(a: &mut Asm, defaults: &Defaults, i: usize, to: Label) {
    a.jump(jeq_imm(R1, defaults.fresh[i]), to);
    if KERNEL_DEFAULTS[i] != defaults.fresh[i] {
        a.jump(jeq_imm(R1, KERNEL_DEFAULTS[i]), to);
    }
}

/// `Known::from_kernel` of the values in the slots: `R7` = the program's own options, `R8` =
/// [`MARK_CONFIGURED`] when the values show ours (else 0). No calls: `R2` holds the idle,
/// interval and count that differ from ours, `R3` those that differ from a default, `R4`
/// whether one of ours shows.
fn from_kernel(a: &mut Asm, s: &Settings, defaults: &Defaults) {
    let ours = values(s);
    a.push(mov64_imm(R2, 0));
    a.push(mov64_imm(R3, 0));
    a.push(mov64_imm(R4, 0));
    for i in [IDLE, INTERVAL, COUNT] {
        let default = a.label();
        let not_ours = a.label();
        let next = a.label();
        a.push(ldx_w(R1, R10, slot(i)));
        jump_if_default(a, defaults, i, default);
        a.push(or64_imm(R3, bit(i)));
        a.jump(jne_imm(R1, ours[i]), not_ours);
        // Ours, and no fresh socket has it: evidence.
        a.push(mov64_imm(R4, 1));
        a.jump(ja(), next);
        a.bind(default);
        a.jump(jeq_imm(R1, ours[i]), next);
        a.bind(not_ours);
        a.push(or64_imm(R2, bit(i)));
        a.bind(next);
    }
    // R1 = the user timeout we would have set over these values.
    user_timeout_in_effect_in_r1(a, s, R2);
    let configured = a.label();
    let not_configured = a.label();
    let done = a.label();
    a.jump(jne_imm(R4, 0), configured);
    a.push(ldx_w(R0, R10, slot(USER_TIMEOUT)));
    a.jump(jeq_imm(R0, 0), not_configured);
    a.jump(jne_reg(R0, R1), not_configured);

    a.bind(configured);
    {
        // Ours where the value is ours; the user timeout ours when it follows. SO_KEEPALIVE
        // is the program's either way: off, it turned ours off; on, it may have turned it on
        // itself, and a keepalive someone may have asked for is never turned off.
        a.push(mov64_reg(R7, R2));
        a.push(or64_imm(R7, bit(KEEPALIVE)));
        let ut = a.label();
        a.push(ldx_w(R0, R10, slot(USER_TIMEOUT)));
        a.jump(jeq_reg(R0, R1), ut);
        a.push(or64_imm(R7, bit(USER_TIMEOUT)));
        a.bind(ut);
        a.push(mov64_imm(R8, i32::from(MARK_CONFIGURED)));
        a.jump(ja(), done);
    }

    a.bind(not_configured);
    {
        // The program's where the value is not a default.
        a.push(mov64_reg(R7, R3));
        for i in [KEEPALIVE, USER_TIMEOUT] {
            let default = a.label();
            a.push(ldx_w(R1, R10, slot(i)));
            jump_if_default(a, defaults, i, default);
            a.push(or64_imm(R7, bit(i)));
            a.bind(default);
        }
        a.push(mov64_imm(R8, 0));
    }
    a.bind(done);
}

/// The socket's storage byte (in `R9`, if any) = `R8 | R7`.
fn write_mark(a: &mut Asm) {
    let skip = a.label();
    a.jump(jeq_imm(R9, 0), skip);
    a.push(or64_reg(R8, R7));
    a.push(stx_b(R9, 0, R8));
    a.bind(skip);
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

// ---- the setsockopt program ----

/// The setsockopt program for `s` (see the module's documentation), or `None` when it would
/// have nothing to do ([`needs_setsockopt`]). Registers: `R6` the context, `R7` the socket,
/// `R8` the option's value, `R9` the socket's storage.
pub fn setsockopt(s: &Settings, maps: Maps, target: Target) -> Option<Vec<Insn>> {
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
    // Which of the options, by level and name, from OPTIONS; anything else passes.
    let bodies: Vec<Label> = (0..N).map(|_| a.label()).collect();
    for (i, &body) in bodies.iter().enumerate() {
        let next = a.label();
        a.jump(jne_imm(R2, OPTIONS[i].level), next);
        a.jump(jeq_imm(R3, OPTIONS[i].name), body);
        a.bind(next);
    }
    a.jump(ja(), pass);

    for (i, &body) in bodies.iter().enumerate() {
        a.bind(body);
        tcp_socket_and_value(&mut a, pass);
        // A value the kernel refuses fails as it would, and changes nothing.
        in_range_or(&mut a, i, pass);
        if s.force {
            let replace = a.label();
            if let Some(map) = maps.storage {
                a.push(mov64_reg(R2, R7));
                storage_get(&mut a, map, true);
                a.push(mov64_reg(R9, R0));
                a.jump(jeq_imm(R9, 0), replace);
                // A connection the rules left alone keeps what its program sets.
                a.push(ldx_b(R1, R9, 0));
                a.jump(jset_imm(R1, i32::from(MARK_EXCLUDED)), pass);
                a.push(mov64_imm(R1, i32::from(MARK_CONFIGURED)));
                a.push(stx_b(R9, 0, R1));
            }
            a.bind(replace);
            // Ours instead; the kernel then sets it, and the call succeeds.
            a.push(mov32_imm(R1, ours[i] as u32));
            a.push(stx_w(R8, 0, R1));
            a.jump(ja(), done);
        } else {
            let map = maps.storage.expect("storage without FORCE");
            let configured = a.label();
            a.push(mov64_reg(R2, R7));
            storage_get(&mut a, map, true);
            a.push(mov64_reg(R9, R0));
            a.jump(jeq_imm(R9, 0), pass);
            a.push(ldx_b(R1, R9, 0));
            a.jump(jset_imm(R1, i32::from(MARK_EXCLUDED)), pass);
            a.jump(jset_imm(R1, i32::from(MARK_CONFIGURED)), configured);
            // No mark: sock_ops configured every socket that connected or was accepted (a
            // fresh one without a mark: nothing of its own); one not connected, or listening,
            // is as the kernel made it.
            let not_connected = a.label();
            a.push(ldx_w(R2, R7, sock::STATE));
            a.jump(jeq_imm(R2, TCP_CLOSE), not_connected);
            a.jump(jeq_imm(R2, TCP_LISTEN), not_connected);
            a.push(or64_imm(R1, i32::from(MARK_CONFIGURED)));
            a.push(stx_b(R9, 0, R1));
            a.bind(not_connected);
            a.bind(configured);
            if is_time(i) {
                // The program's value, for the user timeout that follows it.
                a.push(ldx_w(R2, R8, 0));
                a.push(stx_w(R10, slot(i), R2));
            }
            own_choice(&mut a, s, i, maps.counts, target, pass);
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
/// (`OPTIONS[i].min..=max`): the kernel then refuses it with the program's own errno. Leaves
/// the value in `R1`.
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

/// Without FORCE, the program chose option `i` (`Event::Set(i)`), on a socket not left alone
/// whose mark is in `R1` and in its storage (`R9`; the socket in `R7`; for idle, interval and
/// count, the program's value in its slot, and the values read back of the others of its own).
/// Not configured yet: configured now, ours for every other option not its own, and the user
/// timeout following. Configured: the option is marked the program's, and its own idle,
/// interval or count gives the user timeout that follows them (unless the user timeout is its
/// own too).
fn own_choice(
    a: &mut Asm,
    s: &Settings,
    i: usize,
    counts: Option<i32>,
    target: Target,
    pass: Label,
) {
    let ours = values(s);
    let fresh = a.label();
    a.push(mov64_reg(R2, R1));
    a.push(and32_imm(R2, u32::from(MARK_CONFIGURED)));
    a.jump(jeq_imm(R2, 0), fresh);

    if let Some(map) = counts {
        // Counted once per socket and option.
        let known = a.label();
        a.jump(jset_imm(R1, bit(i)), known);
        current_counters(a, map, target);
        count(a, COUNT_LEFT_TO_PROGRAM + i);
        a.push(ldx_b(R1, R9, 0));
        a.bind(known);
    }
    a.push(or64_imm(R1, bit(i)));
    a.push(stx_b(R9, 0, R1));
    if is_time(i) {
        a.jump(jset_imm(R1, bit(USER_TIMEOUT)), pass);
        // The others in effect, as the socket has them.
        for other in [IDLE, INTERVAL, COUNT].into_iter().filter(|&o| o != i) {
            get_into_slot(a, R7, other);
            a.jump(jne_imm(R0, 0), pass);
        }
        user_timeout_in_r1(a, s);
        set_user_timeout_from_r1(a, R7);
    }
    a.jump(ja(), pass);

    a.bind(fresh);
    if let Some(map) = counts {
        let known = a.label();
        a.jump(jset_imm(R1, bit(i)), known);
        current_counters(a, map, target);
        count(a, COUNT_LEFT_TO_PROGRAM + i);
        a.bind(known);
    }
    a.push(ldx_b(R1, R9, 0));
    a.push(or64_imm(R1, i32::from(MARK_CONFIGURED) | bit(i)));
    a.push(stx_b(R9, 0, R1));
    for other in [IDLE, INTERVAL, COUNT, KEEPALIVE]
        .into_iter()
        .filter(|&o| o != i)
    {
        let own = a.label();
        a.push(ldx_b(R1, R9, 0));
        a.jump(jset_imm(R1, bit(other)), own);
        set_imm(a, R7, other, ours[other]);
        a.bind(own);
    }
    if i != USER_TIMEOUT {
        let own = a.label();
        a.push(ldx_b(R2, R9, 0));
        a.jump(jset_imm(R2, bit(USER_TIMEOUT)), own);
        user_timeout_in_effect_in_r1(a, s, R2);
        set_user_timeout_from_r1(a, R7);
        a.bind(own);
    }
    a.jump(ja(), pass);
}

#[cfg(test)]
mod tests {
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
        f.sock.layout = crate::fleet::btf::Layout::NONE;
        f.ops = sock_ops(
            &DEFAULT,
            &D,
            MAPS_STORAGE,
            Target {
                layout: crate::fleet::btf::Layout::NONE,
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
        let flags = |old: i32, new: i32| {
            callback(&DEFAULT, STATE_CB, [old as u32, new as u32, 0, 0]).cb_flags
        };
        let both = (RTO_CB_FLAG | STATE_CB_FLAG) as u32;
        // This end closes first (FIN_WAIT1), or the peer did and this end now does (LAST_ACK):
        // no abort can follow that the counts would take.
        assert_eq!(flags(TCP_ESTABLISHED, TCP_FIN_WAIT1), RTO_CB_FLAG as u32);
        assert_eq!(flags(TCP_CLOSE_WAIT, TCP_LAST_ACK), RTO_CB_FLAG as u32);
        // The peer closed: a keepalive abort can still come from CLOSE_WAIT.
        assert_eq!(flags(TCP_ESTABLISHED, TCP_CLOSE_WAIT), both);
        assert_eq!(flags(2, TCP_ESTABLISHED), both);
    }
}
