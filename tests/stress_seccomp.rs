//! Stress: seccomp making setsockopt (and getsockopt) fail with EPERM
//! (`tests/programs/seccomp_sockets.c`): every result the program sees is the same with the
//! library as without; the refusal is logged only at debug, once per option, with its errno.
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn seccomp_refusing_socket_options_changes_nothing_the_program_sees() {
    let _turn = one_at_a_time();
    let prog = build("seccomp_sockets.c", false);
    let deadline = Duration::from_secs(20);
    for mode in ["set", "both"] {
        let without = run(command(false, prog).arg(mode), deadline).ok(mode);
        let bare = without.json();
        assert_eq!(
            bare["own_keepidle"]["errno"],
            libc::EPERM,
            "the filter works"
        );
        assert_eq!(bare["nonblocking_connect"]["errno"], libc::EINPROGRESS);
        assert_eq!(bare["refused_connect"]["errno"], libc::ECONNREFUSED);
        for vars in [&[][..], &[("KEEPALIVE_FORCE", "1")][..]] {
            let with = run(
                command(true, prog).arg(mode).envs(vars.iter().copied()),
                deadline,
            )
            .ok(mode);
            assert_eq!(with.json(), bare, "{mode} {vars:?}");
            assert!(
                with.stderr.is_empty(),
                "{mode}: nothing at warn: {}",
                with.stderr
            );
        }
        let debug = run(
            command(true, prog).arg(mode).env("KEEPALIVE_LOG", "debug"),
            deadline,
        )
        .ok(mode);
        assert_eq!(debug.json(), bare, "{mode} with debug logging");
        let lines = library_lines(&debug);
        assert!(debug.foreign_stderr().is_empty(), "{}", debug.stderr);
        // Once per option: no line names a refused option twice, no socket has two such lines.
        let mut refusals: HashMap<String, usize> = HashMap::new();
        for line in lines.iter().filter(|l| l.contains("refused")) {
            let fd = line.split(':').next().unwrap().to_owned();
            *refusals.entry(fd).or_default() += 1;
            for opt in [
                "SO_KEEPALIVE",
                "TCP_KEEPIDLE",
                "TCP_KEEPINTVL",
                "TCP_KEEPCNT",
                "TCP_USER_TIMEOUT",
            ] {
                let after = line.split("refused").nth(1).unwrap_or_default();
                assert!(after.matches(opt).count() <= 1, "{line}");
            }
        }
        eprintln!(
            "seccomp {mode}: identical results with and without the library; {} debug lines, \
             refusals logged per socket {refusals:?}",
            lines.len()
        );
    }
}

/// A debug line says what happened: the errno the kernel gave, and no "options were set" where
/// every option was refused.
#[test]
fn seccomp_refusals_are_logged_truthfully_at_debug() {
    let _turn = one_at_a_time();
    let prog = build("seccomp_sockets.c", false);
    let debug = run(
        command(true, prog).arg("set").env("KEEPALIVE_LOG", "debug"),
        Duration::from_secs(20),
    )
    .ok("set");
    let lines = library_lines(&debug);
    let mut refused_fds = Vec::new();
    for line in &lines {
        if line.contains("the kernel refused") {
            assert!(
                line.contains("(EPERM)"),
                "the errno named is not the kernel's: {line}"
            );
            if line.contains("new TCP socket") && line.contains("nothing set") {
                refused_fds.push(line.split(':').next().unwrap().to_owned());
            }
        }
    }
    assert!(!refused_fds.is_empty(), "{}", debug.stderr);
    for fd in &refused_fds {
        for line in lines.iter().filter(|l| l.starts_with(&format!("{fd}:"))) {
            assert!(
                !line.contains("options were set"),
                "claims options were set where every one was refused: {line}"
            );
        }
    }
}
