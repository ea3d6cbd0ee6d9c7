//! Fleet mode: the library's policy as BPF programs attached to a cgroup v2, so every TCP
//! connection made or accepted in it and its descendants gets keepalive and a user timeout, with
//! no preload: static and Go binaries too. The engine behind `keepalive-shim fleet
//! attach|detach|status` (`cli/src/fleet.rs` holds the command's arguments).
//!
//! - `insn.rs`: the instructions, one named constructor each, and labels for jumps.
//! - `program/`: the programs, generated from the library's `Settings` (`sock_ops.rs`,
//!   `setsockopt.rs`, what they share in `mod.rs`, the kernel's definitions in `abi.rs`).
//! - `btf.rs`: the kernel's type information, for the offsets the sock_ops program reads.
//! - `counts.rs`: what the programs counted, by cgroup (and pod).
//! - `sys.rs`: the `bpf()` system call.
//! - `preflight.rs`: kernel version, privileges, cgroup v2, bpffs.
//! - `lifecycle.rs`: attach (foreground or pinned), replace, detach, status.
//! - `interp.rs` (tests only): runs the generated programs on a model socket.

mod btf;
mod counts;
mod insn;
#[cfg(test)]
mod interp;
mod lifecycle;
mod preflight;
mod program;
mod sys;

pub use lifecycle::{MetricsServer, attach, detach, status};

use keepalive_shim_policy::config::Settings;
use std::fmt::Write;

/// For `keepalive-shim check`: what `fleet attach` would attach with these settings.
pub fn check_section(s: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fleet mode (keepalive-shim fleet attach --cgroup PATH) would attach:"
    );
    if !s.enabled {
        let _ = writeln!(
            out,
            "  nothing: keepalive-shim is disabled (attach refuses)."
        );
        return out;
    }
    let maps = program::Maps {
        info: 0,
        storage: program::needs_storage(s).then_some(0),
        counts: Some(0),
    };
    let defaults = program::node_defaults();
    let target = program::Target {
        layout: btf::kernel_layout(),
        cgroup: 0,
    };
    let ops = program::sock_ops(s, &defaults, maps, target).len();
    let what = if s.force {
        "sets the five options on every connection made or accepted"
    } else {
        "sets the five options on every connection made or accepted, except those the program \
         chose itself (known from the setsockopt program, else read back): a program's own \
         keepalive and user timeout stand, and the user timeout follows its own idle, interval \
         and count"
    };
    let _ = writeln!(out, "  sock_ops program, {ops} instructions: {what}.");
    match program::setsockopt(s, maps, target) {
        Some(p) => {
            let what = if s.force {
                "a program's own value for any of the five becomes ours (KEEPALIVE_FORCE)"
            } else {
                "records the options a program chooses itself (configuring a socket not yet \
                 configured there and then), and a program that sets its own idle, interval or \
                 count gets the user timeout that follows them"
            };
            let _ = writeln!(
                out,
                "  setsockopt program, {} instructions: {what}.",
                p.len()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  no setsockopt program (KEEPALIVE_USER_TIMEOUT=0: nothing to follow; a program's \
                 own value equal to the kernel's default, set before connecting, reads back \
                 as nobody's)."
            );
        }
    }
    if s.has_rules() {
        let _ = writeln!(
            out,
            "  destination rules: honoured at connect ({} exclude, {} include); accepted \
             connections are configured whatever their address, as by the library.",
            s.exclude.len(),
            s.include.len()
        );
    }
    let _ = writeln!(
        out,
        "  not in fleet mode: KEEPALIVE_LOG (no per-connection log; `fleet status` shows what is \
         attached), and sockets made before their process joined the cgroup."
    );
    match preflight::kernel() {
        Ok(v) => {
            if let Some(problem) = preflight::kernel_problem(v, s.force) {
                let _ = writeln!(out, "  warning: {problem}.");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  warning: the kernel's version is unknown ({e}).");
        }
    }
    out
}
