//! The sock_ops program: what is known of a socket at connect and accept (its marks, its own
//! fields, or its options read back), the destination rules, the plan, and the counting of
//! how a configured connection ends (see the module above).

use super::*;
use keepalive_shim_policy::rules::Rule;

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
