//! The setsockopt program: a program's own choice of one of the five options, recorded, and
//! what follows from it (see the module above).

use super::*;

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
