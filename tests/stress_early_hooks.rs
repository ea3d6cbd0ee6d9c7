//! Stress: hooks before the constructor (`tests/programs/early_hooks.c`): another preloaded
//! library, whose constructor glibc runs first, calls socket() and connect() and starts a thread
//! that does too: configured or passed through whole, never half, never a crash or a deadlock.
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

#[test]
fn hooks_called_before_the_constructor_configure_or_pass_through_whole() {
    let _turn = one_at_a_time();
    let early = build("early_hooks.c", true);
    let client = build("options_client.c", false);
    let runs = pick(20, 200);
    let deadline = Duration::from_secs(20);
    let preload = |first: &Path, second: &Path| {
        let mut p = first.as_os_str().to_owned();
        p.push(":");
        p.push(second);
        p
    };
    // An unknown variable makes the library print a warning when it loads: before or after the
    // early library's first line tells whose constructor ran first.
    let unknown = ("KEEPALIVE_INTERVALL", "5");
    let early_line = "early_hooks: constructor starts";
    let mut hook_first = None;
    for (order, lp) in [
        ("keepalive-shim:early_hooks", preload(library(), early)),
        ("early_hooks:keepalive-shim", preload(early, library())),
    ] {
        let mut tally = [[0i64; 3]; 2];
        let mut passed_through = 0;
        let mut took = Duration::ZERO;
        let mut early_first = 0;
        for _ in 0..runs {
            let r = run(
                command(false, client)
                    .env("LD_PRELOAD", &lp)
                    .envs([unknown]),
                deadline,
            )
            .ok(order);
            took += r.took;
            let first = r.stderr.lines().next().unwrap_or_default();
            let ours = r
                .stderr
                .lines()
                .position(|l| l.contains("KEEPALIVE_INTERVALL"))
                .expect("the warning");
            let theirs = r.stderr.lines().position(|l| l == early_line).unwrap();
            if theirs < ours {
                early_first += 1;
            }
            assert_eq!(library_lines(&r).len(), 1, "one warning: {}", r.stderr);
            assert!(
                first == early_line || first.contains("KEEPALIVE_INTERVALL"),
                "{}",
                r.stderr
            );
            let e = r.json_line("thread_started");
            assert_eq!(e["thread_started"], 1, "{e}");
            assert_eq!(e["thread_errors"], 0, "{e}");
            assert_eq!(e["raw_connect_rc"], 0, "{e}");
            assert_eq!(e["main_connect_rc"], 0, "{e}");
            for (i, key) in ["thread_after_socket", "thread_after_connect"]
                .iter()
                .enumerate()
            {
                let c = classes(&e[key]);
                assert_eq!(c[2], 0, "a half-configured socket: {key} {e}");
                for k in 0..3 {
                    tally[i][k] += c[k];
                }
            }
            for key in [
                "raw_after_connect",
                "main_after_socket",
                "main_after_connect",
            ] {
                let class = e[key].as_i64().unwrap();
                assert!(class == 0 || class == 1, "{key} half-configured: {e}");
                passed_through += i64::from(class == 0);
            }
            // The program's own socket, long after every constructor: configured.
            let own: Value = r.json_line("keepalive");
            assert_eq!(five(&own), OURS, "{order}");
        }
        eprintln!(
            "hooks before the constructor, LD_PRELOAD order {order}: {runs} runs in {took:?}, \
             the early library's constructor first in {early_first}; thread sockets after \
             socket() kernel/ours/other {:?}, after connect() {:?}; constructor's own sockets \
             passed through {passed_through} of {}",
            tally[0],
            tally[1],
            3 * runs
        );
        assert!(
            early_first == 0 || early_first == runs,
            "the constructor order changed between runs"
        );
        if early_first == runs {
            hook_first = Some(order);
            assert!(tally[1][1] > 0, "no socket was configured by an early hook");
        }
    }
    let order =
        hook_first.expect("in neither LD_PRELOAD order did a hook run before the constructor");
    eprintln!("glibc ran the constructor of the library listed last first: {order}");

    // Without the library nothing changes.
    let r = run(command(false, client).env("LD_PRELOAD", early), deadline).ok("early alone");
    let e = r.json_line("thread_started");
    assert_eq!(
        classes(&e["thread_after_connect"])[0],
        e["rounds"].as_i64().unwrap()
    );
    assert_eq!(five(&r.json_line("keepalive")), KERNEL);
}
