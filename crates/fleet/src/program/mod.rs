//! The fleet programs, written from the same [`Settings`] the preload library uses, each an
//! instance of the one decision every mechanism takes (`keepalive_shim_policy::decide`): the
//! options and their values from `options::OPTIONS` and `options::values`, what is known of a
//! socket as `decide::Known`, and at every event the plan `decide::decide` gives.
//!
//! - [`sock_ops`] (`sock_ops.rs`): a `BPF_PROG_TYPE_SOCK_OPS` program, for `Event::Connect` (on
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
//! - [`setsockopt`] (`setsockopt.rs`): a `BPF_CGROUP_SETSOCKOPT` program, for `Event::Set`: it runs
//!   before the kernel applies a program's `setsockopt()` of one of the options, so it sees a
//!   program's own choice even when its value equals the kernel's default (an explicit
//!   `SO_KEEPALIVE=0`, a `TCP_USER_TIMEOUT=0`) and records it. On a socket not configured yet
//!   (before `connect()`) it configures it there and then, as the decision says (every other option
//!   ours, the user timeout following); on a configured one, the program's own idle, interval or
//!   count gives the user timeout that follows them. A socket without a record that is connected or
//!   accepted is one sock_ops configured fresh (`Known::CONFIGURED`); one that is not (or listens)
//!   is as the kernel made it. With FORCE, the program's value becomes ours (a value the kernel
//!   would refuse passes through, to fail as it would). A value the kernel refuses is no event. A
//!   call for any other option passes after two comparisons.
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
//! What the kernel defines (helpers, callbacks, context offsets) is in `abi.rs`; what both
//! programs share (the marks, the counters, the stack slots, the instructions that set, read
//! and count) is here.
//!
//! With `KEEPALIVE_USER_TIMEOUT=0` and no FORCE there is no setsockopt program (a user timeout
//! to follow is 0 anyway): sock_ops alone reads back at connect, so a program's own value equal
//! to the kernel's default, set before `connect()`, is then taken as nobody's.

mod abi;
mod setsockopt;
mod sock_ops;
#[cfg(test)]
mod tests;

pub use abi::*;
pub use setsockopt::setsockopt;
pub use sock_ops::sock_ops;
#[cfg(test)]
pub use sock_ops::{rule_parts, sock_ops_port};

use super::btf::Layout;
use super::insn::*;
use keepalive_shim_policy::config::Settings;
use keepalive_shim_policy::decide::{ALL, Defaults, KERNEL_DEFAULTS};
use keepalive_shim_policy::options::{
    COUNT, IDLE, INTERVAL, KEEPALIVE, N, OPTIONS, USER_TIMEOUT, values,
};

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
