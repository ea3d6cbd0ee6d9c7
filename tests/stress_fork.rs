//! Stress: threads × fork × exec (`tests/programs/stress_fork.c`): worker threads loop over TCP,
//! UDP and UNIX sockets while the main thread forks, execs and posix_spawns; every TCP socket has
//! the library's options with it and the kernel's without, nothing hangs, and debug lines from
//! many threads at once each arrive whole.
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn threads_forks_and_execs_hang_nothing_and_every_tcp_socket_is_configured() {
    let _turn = one_at_a_time();
    let prog = build("stress_fork.c", false);
    let (threads, iterations, forks) = pick((4, 20_000, 300), (8, 100_000, 3_000));
    let args = [threads, iterations, forks].map(|n| n.to_string());
    let deadline = Duration::from_secs(pick(60, 600));
    let without = run(command(false, prog).args(&args), deadline).ok("without the library");
    let with = run(command(true, prog).args(&args), deadline).ok("with the library");
    let (a, b) = (without.json(), with.json());
    eprintln!(
        "threads x fork x exec: {threads} threads x {iterations} iterations, {forks} forks \
         ({} while the threads ran): {} ms without, {} ms with the library",
        b["forks_during_work"], a["elapsed_ms"], b["elapsed_ms"]
    );
    assert!(with.stderr.is_empty(), "{}", with.stderr);
    // The program's own results are the same both ways.
    for key in [
        "tcp",
        "raw_tcp",
        "connect_errors",
        "opt_outs",
        "opt_outs_kept",
        "udp",
        "udp_keepalive",
        "udp_errors",
        "unix",
        "unix_keepalive",
        "unix_errors",
        "child_failures",
    ] {
        assert_eq!(a[key], b[key], "{key}: without {a}\nwith {b}");
    }
    let n = |v: &Value, k: &str| v[k].as_i64().unwrap();
    let tcp = n(&a, "tcp");
    let raw = n(&a, "raw_tcp");
    let connected = tcp - n(&a, "opt_outs");
    assert!(tcp > 0 && raw > 0, "{a}");
    assert_eq!(n(&a, "connect_errors"), 0, "{a}");
    assert_eq!(n(&a, "child_failures"), 0, "{a}");
    assert_eq!(n(&a, "opt_outs_kept"), n(&a, "opt_outs"), "opt-outs stand");
    for (key, total) in [
        ("tcp_after_socket", tcp),
        ("tcp_after_connect", connected),
        ("raw_tcp_after_connect", raw),
    ] {
        assert_eq!(classes(&a[key]), [total, 0, 0], "{key} without the library");
        assert_eq!(classes(&b[key]), [0, total, 0], "{key} with the library");
    }
    let per_kind = [(forks + 2) / 3, (forks + 1) / 3, forks / 3];
    let fork_children = per_kind[0] + per_kind[1];
    for (key, total) in [
        ("fork_child", fork_children),
        ("exec_child", per_kind[0]),
        ("spawned", per_kind[2]),
    ] {
        assert_eq!(classes(&a[key]), [total, 0, 0], "{key} without the library");
        assert_eq!(classes(&b[key]), [0, total, 0], "{key} with the library");
    }
    assert!(
        n(&b, "forks_during_work") > 0,
        "no fork overlapped the threads"
    );

    // With debug logging every thread writes lines at once: each must arrive whole.
    let small = ["2", "2000", "30"];
    let debug = run(
        command(true, prog)
            .args(small)
            .env("KEEPALIVE_LOG", "debug"),
        deadline,
    )
    .ok("with debug logging");
    let lines: Vec<&str> = debug.stderr.lines().collect();
    assert!(lines.len() > 1000, "{} debug lines", lines.len());
    for line in &lines {
        let whole = line.starts_with("keepalive-shim[")
            && line.contains("]: fd ")
            && line.matches("keepalive-shim[").count() == 1;
        assert!(whole, "a torn or interleaved line: {line:?}");
    }
    let d = debug.json();
    assert_eq!(
        classes(&d["tcp_after_connect"])[1],
        n(&d, "tcp") - n(&d, "opt_outs")
    );
}
