//! After load, no hook path allocates or takes a lock: a loop of socket(), setsockopt(),
//! connect() and close() on TCP, UDP and UNIX sockets, in a C program, with a preloaded counter
//! of malloc-family and pthread lock calls armed around the loop (tests/programs/count_calls.c).

mod common;

use common::*;

/// `(allocations, locks)` counted during the loop.
fn count(with_library: bool, mode: &str, vars: &[(&str, &str)]) -> (u64, u64) {
    let counter = build_c("count_calls.c", &["-O2", "-shared", "-fPIC", "-ldl"]);
    let driver = build_c("hook_loop.c", &["-O2", "-ldl"]);
    let mut preload = counter.as_os_str().to_owned();
    if with_library {
        preload.push(":");
        preload.push(library());
    }
    let out = output_ok(
        command(false, driver)
            .arg(mode)
            .env("LD_PRELOAD", preload)
            .envs(vars.iter().copied()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{text}");
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

#[test]
fn the_counter_counts() {
    let (allocations, _) = count(true, "control", &[]);
    assert!(allocations >= 2, "strdup + free while armed: {allocations}");
}

#[test]
fn no_hook_path_allocates_or_locks() {
    assert_eq!(
        count(false, "plain", &[]),
        (0, 0),
        "the loop itself, without the library"
    );
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("plain", &[]),
        ("plain", &[("KEEPALIVE_FORCE", "1")]),
        ("plain", &[("KEEPALIVE_LOG", "debug")]),
        ("raw", &[]),
        ("raw", &[("KEEPALIVE_FORCE", "1")]),
        ("plain", &[("KEEPALIVE_ENABLE", "off")]),
    ];
    for (mode, vars) in cases {
        let mut cmd_vars = vars.to_vec();
        if vars.iter().any(|(k, _)| *k == "KEEPALIVE_LOG") {
            // Debug lines go to stderr, which the test captures and ignores.
            cmd_vars.push(("KEEPALIVE_IDLE", "30"));
        }
        assert_eq!(count(true, mode, &cmd_vars), (0, 0), "{mode} {vars:?}");
    }
}
