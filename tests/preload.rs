//! The preload library in a real program: python3 makes its sockets the usual ways and reads them
//! back with getsockopt; every case runs the same program with and without the library.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_library_loads_with_every_symbol_resolved_and_exports_only_the_hooks() {
    // LD_BIND_NOW resolves every symbol at load time: an undefined one fails the start.
    let bound = command(true, "/bin/true")
        .env("LD_BIND_NOW", "1")
        .output()
        .unwrap();
    assert!(
        bound.status.success(),
        "{}",
        String::from_utf8_lossy(&bound.stderr)
    );
    assert!(bound.stderr.is_empty());
    let nm = std::process::Command::new("nm")
        .args(["-D", "--defined-only", "--format=just-symbols"])
        .arg(library())
        .output()
        .expect("nm from binutils");
    let mut exported: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    exported.sort();
    assert_eq!(exported, EXPORTS);
}

#[test]
fn every_tcp_socket_gets_the_defaults_and_nothing_else_is_touched() {
    let without = probe_json(false, "sockets", &[]);
    let with = probe_json(true, "sockets", &[]);
    for kind in [
        "ipv4",
        "ipv4_connected",
        "ipv6_nonblock",
        "explicit_tcp",
        "accepted",
        "listener",
    ] {
        assert_eq!(five(&without[kind]), KERNEL, "{kind} without the library");
        assert_eq!(five(&with[kind]), OURS, "{kind} with the library");
    }
    for kind in ["udp", "udp_connected", "unix"] {
        assert_eq!(
            with[kind], without[kind],
            "{kind} must pass through untouched"
        );
        assert_eq!(with[kind]["keepalive"], 0, "{kind}");
    }
}

/// Environment variables given to a run.
type Vars = &'static [(&'static str, &'static str)];

/// libfaketime-style table: variables, and the five values a TCP socket then has.
#[test]
fn each_variable_and_its_visible_effect() {
    let cases: &[(Vars, [i64; 5])] = &[
        (&[], OURS),
        (&[("KEEPALIVE_IDLE", "45")], [1, 45, 10, 3, 75_000]),
        (&[("KEEPALIVE_IDLE", "2m")], [1, 120, 10, 3, 150_000]),
        (&[("KEEPALIVE_INTERVAL", "90s")], [1, 30, 90, 3, 300_000]),
        (&[("KEEPALIVE_COUNT", "7")], [1, 30, 10, 7, 100_000]),
        (
            &[("KEEPALIVE_USER_TIMEOUT", "1500ms")],
            [1, 30, 10, 3, 1500],
        ),
        (&[("KEEPALIVE_USER_TIMEOUT", "2m")], [1, 30, 10, 3, 120_000]),
        (&[("KEEPALIVE_USER_TIMEOUT", "0")], [1, 30, 10, 3, 0]),
        (&[("KEEPALIVE_ENABLE", "off")], KERNEL),
        (&[("KEEPALIVE_ENABLE", "No")], KERNEL),
        (&[("KEEPALIVE_ENABLE", "YES")], OURS),
        // libkeepalive's names, where ours are unset.
        (
            &[("KEEPIDLE", "20"), ("KEEPINTVL", "5"), ("KEEPCNT", "4")],
            [1, 20, 5, 4, 40_000],
        ),
        (&[("KEEPALIVE", "off")], KERNEL),
        (
            &[("KEEPIDLE", "20"), ("KEEPALIVE_IDLE", "25")],
            [1, 25, 10, 3, 55_000],
        ),
    ];
    let without = five(&probe_json(false, "sockets", &[])["ipv4_connected"]);
    assert_eq!(without, KERNEL);
    for (vars, expected) in cases {
        let with = probe_json(true, "sockets", vars);
        assert_eq!(five(&with["ipv4_connected"]), *expected, "{vars:?}");
        assert_eq!(five(&with["ipv6_nonblock"]), *expected, "{vars:?} (IPv6)");
    }
}

#[test]
fn a_programs_own_settings_win_by_default() {
    let own = [1, 100, 20, 5, 1234];
    let without = probe_json(false, "own-options", &[]);
    let with = probe_json(true, "own-options", &[]);
    for out in [&without, &with] {
        assert_eq!(five(&out["before_connect"]), own);
        assert_eq!(five(&out["after_connect"]), own);
        assert_eq!(five(&out["after_own_idle_1"]), [1, 1, 20, 5, 1234]);
        assert_eq!(out["invalid_own_idle"], "EINVAL");
    }
}

#[test]
fn force_keeps_the_configured_values_for_the_life_of_the_connection() {
    let with = probe_json(true, "own-options", &[("KEEPALIVE_FORCE", "1")]);
    assert_eq!(
        five(&with["before_connect"]),
        OURS,
        "own values before connect are answered"
    );
    assert_eq!(five(&with["after_connect"]), OURS);
    assert_eq!(
        five(&with["after_own_idle_1"]),
        OURS,
        "Node-style idle after connect"
    );
    // An invalid value still fails as the kernel would fail it.
    assert_eq!(with["invalid_own_idle"], "EINVAL");
    // Without FORCE the same program keeps its own (tested above); without the library too.
    let without = probe_json(false, "own-options", &[("KEEPALIVE_FORCE", "1")]);
    assert_eq!(five(&without["after_own_idle_1"]), [1, 1, 20, 5, 1234]);
}

#[test]
fn a_program_that_turns_keepalive_off_keeps_it_off_unless_forced() {
    let get = |preload, vars: &[(&str, &str)]| {
        five(&probe_json(preload, "opt-out", vars)["after_connect"])[0]
    };
    assert_eq!(get(false, &[]), 0);
    assert_eq!(get(true, &[]), 0, "the program's opt-out stands");
    assert_eq!(
        get(true, &[("KEEPALIVE_FORCE", "on")]),
        1,
        "FORCE overrides it"
    );
}

#[test]
fn a_socket_made_without_socket_gets_the_options_in_connect() {
    let without = probe_json(false, "raw-syscall", &[]);
    let with = probe_json(true, "raw-syscall", &[]);
    assert_eq!(five(&without["after_connect"]), KERNEL);
    assert_eq!(
        five(&with["before_connect"]),
        KERNEL,
        "no hook saw syscall(SYS_socket)"
    );
    assert_eq!(five(&with["after_connect"]), OURS);
}

#[test]
fn connect_returns_exactly_what_libc_returns() {
    let without = probe_json(false, "nonblocking-connect", &[]);
    assert_eq!(without["nonblocking"], "EINPROGRESS");
    assert_eq!(without["refused"], "ECONNREFUSED");
    for vars in [
        &[][..],
        &[("KEEPALIVE_FORCE", "1")],
        &[("KEEPALIVE_LOG", "off")],
    ] {
        assert_eq!(
            probe_json(true, "nonblocking-connect", vars),
            without,
            "{vars:?}"
        );
    }
}

/// Each class of bad value: the program's stdout and exit status are unchanged, and stderr has
/// exactly one line naming the variable, the value and what is accepted.
#[test]
fn bad_values_warn_once_and_change_nothing_else() {
    let cases: &[(&str, &str, &str)] = &[
        ("KEEPALIVE_IDLE", "abc", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_IDLE", "0", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_IDLE", "-5", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_IDLE", "40000", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_IDLE", "99999999999999999999999", "whole seconds"),
        ("KEEPALIVE_IDLE", "", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_IDLE", "500ms", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_IDLE", "0.5", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_INTERVAL", "10x", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_INTERVAL", " 10", "whole seconds from 1 to 32767"),
        ("KEEPALIVE_COUNT", "128", "a whole number from 1 to 127"),
        (
            "KEEPALIVE_USER_TIMEOUT",
            "-1",
            "a duration from 0 to 2147483647ms",
        ),
        (
            "KEEPALIVE_ENABLE",
            "maybe",
            "one of 1/0, true/false, on/off, yes/no",
        ),
        (
            "KEEPALIVE_FORCE",
            "2",
            "one of 1/0, true/false, on/off, yes/no",
        ),
        ("KEEPALIVE_LOG", "loud", "one of off, warn, debug"),
        ("KEEPCNT", "lots", "a whole number from 1 to 127"),
        (
            "KEEPALIVE_INTERVALL",
            "5",
            "did you mean KEEPALIVE_INTERVAL?",
        ),
    ];
    let without = probe(false, "echo", &[]);
    assert_eq!(without.status.code(), Some(3));
    assert!(without.stderr.is_empty());
    for (name, value, accepted) in cases {
        let out = probe(true, "echo", &[(name, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}={value:?}: {stderr}");
        assert_eq!(out.stdout, without.stdout, "{name}={value:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}={value:?}: {stderr}");
        assert!(lines[0].starts_with("keepalive-shim["), "{stderr}");
        assert!(lines[0].contains(name), "{stderr}");
        assert!(
            lines[0].contains(&format!("\"{value}\"")) || value.len() < 2 || name.ends_with('L'),
            "{stderr}"
        );
        assert!(lines[0].contains(accepted), "{stderr}");
    }
}

#[test]
fn an_invalid_setting_falls_back_alone_and_keepalive_stays_on() {
    let out = probe(
        true,
        "sockets",
        &[("KEEPALIVE_IDLE", "abc"), ("KEEPALIVE_COUNT", "5")],
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(five(&v["ipv4_connected"]), [1, 30, 10, 5, 80_000]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .split_once("]: ")
            .unwrap()
            .1,
        "KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); using 30s"
    );
}

#[test]
fn strict_mode_exits_78_before_main() {
    let bad = probe(
        true,
        "echo",
        &[("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDLE", "abc")],
    );
    assert_eq!(bad.status.code(), Some(78));
    assert!(bad.stdout.is_empty(), "main never ran");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("KEEPALIVE_IDLE=\"abc\""), "{stderr}");
    assert!(stderr.contains("exiting with status 78"), "{stderr}");
    let unknown = probe(
        true,
        "echo",
        &[("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDEL", "5")],
    );
    assert_eq!(unknown.status.code(), Some(78));
    // The same variables without the library, and valid ones with it, run the program.
    let without = probe(
        false,
        "echo",
        &[("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDLE", "abc")],
    );
    assert_eq!(without.status.code(), Some(3));
    let good = probe(
        true,
        "echo",
        &[("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDLE", "5")],
    );
    assert_eq!(good.status.code(), Some(3));
    assert!(good.stderr.is_empty());
}

#[test]
fn non_utf8_values_anywhere_crash_nothing() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"3\xff\xfe");
    let run = |preload| {
        let mut cmd = command(preload, python());
        cmd.arg(program("probe.py")).arg("echo");
        cmd.env("SOME_OTHER_TOOL", bad).env("KEEPALIVE_IDLE", bad);
        cmd.output().unwrap()
    };
    let (without, with) = (run(false), run(true));
    assert_eq!(with.status.code(), Some(3));
    assert_eq!(with.stdout, without.stdout);
    let stderr = String::from_utf8_lossy(&with.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("KEEPALIVE_IDLE=\"3\u{fffd}\u{fffd}\""),
        "{stderr}"
    );
}

#[test]
fn debug_logs_each_socket_and_decision() {
    let out = probe(true, "own-options", &[("KEEPALIVE_LOG", "debug")]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("new TCP socket (IPv4): SO_KEEPALIVE=1 TCP_KEEPIDLE=30"),
        "{stderr}"
    );
    assert!(stderr.contains("connecting to 127.0.0.1:"), "{stderr}");
    assert!(
        stderr.contains("the program sets TCP_KEEPIDLE=100; its value stands"),
        "{stderr}"
    );
    let forced = probe(
        true,
        "own-options",
        &[("KEEPALIVE_LOG", "debug"), ("KEEPALIVE_FORCE", "1")],
    );
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(
        stderr.contains("the program sets TCP_KEEPIDLE=1; set back to 30 (KEEPALIVE_FORCE)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("applied again (KEEPALIVE_FORCE)"),
        "{stderr}"
    );
    // warn (the default) and off print nothing for a valid configuration; off hides warnings.
    assert!(probe(true, "own-options", &[]).stderr.is_empty());
    let quiet = probe(
        true,
        "echo",
        &[("KEEPALIVE_LOG", "off"), ("KEEPALIVE_IDLE", "x")],
    );
    assert!(quiet.stderr.is_empty());
    assert_eq!(quiet.status.code(), Some(3));
}

/// Variables, then the five options of Node's socket, of one with its own idle, and of one with
/// its own user timeout.
type FollowsCase = (Vars, [i64; 5], [i64; 5], [i64; 5]);

/// The user timeout follows the keepalive a program chooses itself, so the library never makes
/// it notice a dead peer later than its own keepalive would: `(variables, node, idle_only,
/// own_timeout)`, each the five options read back by the program.
const USER_TIMEOUT_FOLLOWS: &[FollowsCase] = &[
    // Node's 1 s / 1 s / 10 bound is 11 s; idle 5 with our interval and count, 5 + 10 x 3 s.
    (
        &[],
        [1, 1, 1, 10, 11_000],
        [1, 5, 10, 3, 35_000],
        [1, 1, 10, 3, 1234],
    ),
    // An explicit user timeout shorter than the program's bound stands.
    (
        &[("KEEPALIVE_USER_TIMEOUT", "3s")],
        [1, 1, 1, 10, 3_000],
        [1, 5, 10, 3, 3_000],
        [1, 1, 10, 3, 1234],
    ),
    // A longer one would stretch the program's own keepalive: its bound wins.
    (
        &[("KEEPALIVE_USER_TIMEOUT", "120s")],
        [1, 1, 1, 10, 11_000],
        [1, 5, 10, 3, 35_000],
        [1, 1, 10, 3, 1234],
    ),
    // 0 keeps the kernel's default: no user timeout at all.
    (
        &[("KEEPALIVE_USER_TIMEOUT", "0")],
        [1, 1, 1, 10, 0],
        [1, 5, 10, 3, 0],
        [1, 1, 10, 3, 1234],
    ),
    // FORCE: ours, whatever the program sets.
    (&[("KEEPALIVE_FORCE", "1")], OURS, OURS, OURS),
];

#[test]
fn the_user_timeout_follows_the_keepalive_a_program_chooses() {
    let without = probe_json(false, "own-keepalive", &[]);
    assert_eq!(five(&without["node"]), [1, 1, 1, 10, 0]);
    assert_eq!(five(&without["idle_only"]), [0, 5, 75, 9, 0]);
    assert_eq!(five(&without["own_timeout"]), [0, 1, 75, 9, 1234]);
    for (vars, node, idle_only, own_timeout) in USER_TIMEOUT_FOLLOWS {
        let with = probe_json(true, "own-keepalive", vars);
        assert_eq!(five(&with["node"]), *node, "node, {vars:?}");
        assert_eq!(five(&with["idle_only"]), *idle_only, "idle only, {vars:?}");
        assert_eq!(
            five(&with["own_timeout"]),
            *own_timeout,
            "own timeout, {vars:?}"
        );
    }
}
