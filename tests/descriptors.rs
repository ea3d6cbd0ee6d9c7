//! Exact on every descriptor: a C program (tests/programs/fd_cases.c) reuses descriptor numbers,
//! passes sockets with SCM_RIGHTS, duplicates them every way there is, goes far up the table,
//! passes every bad argument, and closes its stderr; each case runs with and without the library,
//! and under FORCE and debug logging, and the outcomes are compared.

mod common;

use common::*;
use serde_json::Value;

/// `fd_cases ARGS` with or without the library and the given variables: its JSON.
fn run(preload: bool, vars: &[(&str, &str)], args: &[&str]) -> Value {
    let out = command(preload, build_c("fd_cases.c", &["-O2", "-Wall"]))
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("run fd_cases");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fd_cases {args:?} {vars:?} (preload {preload}) failed: {:?} {stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

const FORCE: (&str, &str) = ("KEEPALIVE_FORCE", "1");
const DEBUG: (&str, &str) = ("KEEPALIVE_LOG", "debug");
/// Remember no descriptor at or above 100: the beyond-the-table path, reachable here.
const SMALL_TABLE: (&str, &str) = ("KEEPALIVE_SHIM_TEST_TABLE_LIMIT", "100");

#[test]
fn a_tcp_socket_on_a_reused_number_is_configured_whatever_the_number_held_before() {
    for case in ["reused_number", "scm_rights"] {
        let without = run(false, &[], &[case]);
        let with = run(true, &[], &[case]);
        let key = if case == "scm_rights" {
            "received"
        } else {
            "tcp_on_old_udp_number"
        };
        assert_eq!(five(&without[key]), KERNEL, "{case} without the library");
        assert_eq!(five(&with[key]), OURS, "{case} with the library");
        let forced = run(true, &[FORCE], &[case]);
        assert_eq!(five(&forced[key]), OURS, "{case} with FORCE");
    }
    let with = run(true, &[], &["scm_rights"]);
    assert_eq!(
        with["same_number"], true,
        "the received socket reused the number"
    );
}

#[test]
fn a_programs_opt_out_survives_every_kind_of_duplicate() {
    let kinds = ["dup", "dup2", "dup3", "f_dupfd", "f_dupfd_cloexec"];
    for (args, vars) in [
        (&["opt_out_on_duplicates"][..], &[][..]),
        (&["opt_out_on_high_duplicates", "15000"][..], &[][..]),
        (
            &["opt_out_on_high_duplicates", "200"][..],
            &[SMALL_TABLE][..],
        ),
    ] {
        let without = run(false, vars, args);
        let with = run(true, vars, args);
        for kind in kinds {
            assert_eq!(
                five(&without[kind]),
                [0, 7200, 75, 9, 0],
                "{args:?} {kind} without"
            );
            assert_eq!(
                five(&with[kind]),
                [0, 30, 10, 3, 60_000],
                "{args:?} {kind}: keepalive stays off, the rest is ours"
            );
        }
        if args.len() > 1 {
            assert!(with["dup2_fd"].as_i64().unwrap() >= 200, "{with}");
        }
        let forced = run(true, &[&[FORCE][..], vars].concat(), args);
        for kind in kinds {
            assert_eq!(
                five(&forced[kind]),
                OURS,
                "{args:?} {kind}: FORCE keeps ours"
            );
        }
    }
}

#[test]
fn high_descriptors_get_the_options_and_keep_the_programs_own() {
    for (high, vars) in [("15000", &[][..]), ("200", &[SMALL_TABLE][..])] {
        let without = run(false, vars, &["high_descriptor", high]);
        let with = run(true, vars, &["high_descriptor", high]);
        assert_eq!(without["fd"].as_i64(), high.parse().ok(), "{without}");
        assert_eq!(five(&without["high"]), KERNEL, "{high}");
        assert_eq!(five(&without["high_own_idle"]), [0, 7, 75, 9, 0], "{high}");
        assert_eq!(five(&with["high"]), OURS, "{high}");
        // The program's idle stands; the user timeout follows it: 7 + 10 x 3 s.
        assert_eq!(
            five(&with["high_own_idle"]),
            [1, 7, 10, 3, 37_000],
            "{high}"
        );
    }
}

#[test]
fn every_bad_argument_gets_the_kernels_answer_and_nothing_crashes() {
    let bare = run(false, &[], &["errnos"]);
    for (name, call) in bare.as_object().unwrap() {
        // SO_KEEPALIVE is a socket-level option: the kernel takes it on a UNIX socket too.
        let rc = if name == "keepalive_on_unix" { 0 } else { -1 };
        assert_eq!(call["rc"], rc, "{name}: {bare}");
    }
    for vars in [&[][..], &[FORCE][..], &[DEBUG][..], &[FORCE, DEBUG][..]] {
        let with = run(true, vars, &["errnos"]);
        assert_eq!(with, bare, "with the library and {vars:?}");
    }
    // A UDP socket on the number of a closed TCP socket: TCP options fail as on any UDP socket.
    let bare = run(false, &[], &["stale_tcp_mark"]);
    assert_eq!(bare["keepidle_on_udp"]["errno"], libc::ENOPROTOOPT);
    for vars in [&[][..], &[FORCE][..]] {
        assert_eq!(run(true, vars, &["stale_tcp_mark"]), bare, "{vars:?}");
    }
}

#[test]
fn nothing_is_written_to_a_descriptor_2_that_is_no_longer_stderr() {
    let bare = run(false, &[], &["closed_stderr"]);
    assert_eq!(bare["fd"], 2, "the socket took number 2");
    assert_eq!(bare["peer_received"], 2, "only the program's own bytes");
    let with = run(true, &[DEBUG], &["closed_stderr"]);
    assert_eq!(with, bare, "debug lines must not reach the connection");
}
