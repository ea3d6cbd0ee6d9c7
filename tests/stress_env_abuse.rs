//! Stress: environment abuse: 100 k variables, non-UTF-8, control characters, a 1 MiB value
//! (`tests/programs/env_abuse.c`, in-process, since exec limits one string to 128 KiB), a
//! KEEPALIVE_* name with a newline: programs start and end as without the library, with at most
//! one whole stderr line per problem.
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use serde_json::Value;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// Our variables that are each one problem, for the exec'd programs.
fn planted_problems() -> Vec<(OsString, OsString)> {
    // One string of the environment can be at most 128 KiB (MAX_ARG_STRLEN) with its NUL.
    let big = "9".repeat(128 * 1024 - 64);
    vec![
        ("KEEPALIVE_IDLE".into(), big.into()),
        (
            "KEEPALIVE_INTERVAL".into(),
            OsString::from_vec(b"\xff\xfe\x80".to_vec()),
        ),
        ("KEEPALIVE_USER_TIMEOUT".into(), "5\x1b[31m\r\t\x01s".into()),
        ("KEEPALIVE_X\nkeepalive-shim[1]: FORGED".into(), "1".into()),
        (
            OsString::from_vec(b"KEEPALIVE_\xc3\x28".to_vec()),
            "1".into(),
        ),
    ]
}

/// Other people's variables: many, non-UTF-8, control characters, a huge value.
fn foreign_abuse(count: usize) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = (0..count)
        .map(|i| (format!("STRESS_{i:06}").into(), i.to_string().into()))
        .collect();
    vars.push((
        OsString::from_vec(b"NOT_UTF8_\xff\xfe".to_vec()),
        OsString::from_vec(b"\xc0\xaf".to_vec()),
    ));
    vars.push(("CONTROL".into(), "\x1b]0;title\x07\n\r".into()));
    vars.push((
        "SOMEONE_ELSES_HUGE".into(),
        "x".repeat(128 * 1024 - 64).into(),
    ));
    vars
}

/// The library's stderr lines are at most one per planted problem, each whole and prefixed with
/// this process's id; nothing else is on stderr; no injected newline split a line.
fn check_problem_lines(r: &Run, problems: usize, what: &str) {
    let lines = library_lines(r);
    assert!(
        lines.len() <= problems,
        "{what}: {} lines for {problems} problems:\n{}",
        lines.len(),
        r.stderr
    );
    assert!(!lines.is_empty(), "{what}: no problem reported");
    assert!(
        r.foreign_stderr().is_empty(),
        "{what}: a line split or foreign:\n{}",
        r.stderr
    );
    for line in r.stderr.lines() {
        assert!(line.len() <= 512, "{what}: a line of {} bytes", line.len());
    }
}

#[test]
fn an_abusive_environment_starts_every_program_as_without_the_library() {
    let _turn = one_at_a_time();
    let count = pick(100_000, 400_000);
    let deadline = Duration::from_secs(60);

    // In-process: 1 MiB values, duplicates, entries without '=' (no exec could carry them).
    let abuse = build("env_abuse.c", false);
    let without = run(
        command(false, abuse).args(["none", &count.to_string()]),
        deadline,
    )
    .ok("env_abuse none");
    let with = run(
        command(false, abuse).args([library().as_os_str(), count.to_string().as_ref()]),
        deadline,
    )
    .ok("env_abuse with the library");
    assert!(without.stderr.is_empty(), "{}", without.stderr);
    assert_eq!(five(&json_five(&without.json())), KERNEL);
    // Idle, interval and user timeout invalid: defaults; count 4 (the first of 4 and 5);
    // the user timeout derived: 30 + 10 x 4 s.
    assert_eq!(five(&json_five(&with.json())), [1, 30, 10, 4, 70_000]);
    check_problem_lines(&with, 5, "env_abuse");
    eprintln!(
        "environment abuse in-process ({} variables, two 1 MiB values): {:?} without, {:?} \
         with the library; {} stderr lines",
        with.json()["variables"],
        without.took,
        with.took,
        library_lines(&with).len()
    );

    // Through exec: as much as the kernel lets through, to /bin/true, a C client and python3.
    let client = build("options_client.c", false);
    let py = "import os, socket, json\n\
              l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
              c = socket.create_connection(l.getsockname())\n\
              print(json.dumps({'variables': len(os.environb) - (b'LD_PRELOAD' in os.environb), \
              'not_utf8': b'NOT_UTF8_\\xff\\xfe' in os.environb, \
              'keepalive': c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}))";
    let make = |name: &str, preload: bool| match name {
        "options_client" => command(preload, client),
        "python3" => {
            let mut c = command(preload, python());
            c.args(["-c", py]);
            c
        }
        _ => command(preload, name),
    };
    let planted = planted_problems();
    // The kernel takes at most 6 MiB of arguments and environment: 100 k variables in any mode.
    let foreign = foreign_abuse(count.min(100_000));
    for name in ["/bin/true", "options_client", "python3"] {
        let mut results = Vec::new();
        for preload in [false, true] {
            let mut cmd = make(name, preload);
            cmd.envs(foreign.iter().cloned())
                .envs(planted.iter().cloned());
            // SAFETY: getrlimit and setrlimit are plain system calls (no allocation, no lock),
            // safe between fork and exec, and change only the child's own limits.
            // A larger stack limit raises the kernel's limit on the environment's total size
            // (a quarter of it, at most 6 MiB), so that 100 k variables fit.
            unsafe {
                cmd.pre_exec(|| {
                    let mut r = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_STACK, &mut r) == 0 {
                        r.rlim_cur = r.rlim_max.min(64 << 20);
                        let _ = libc::setrlimit(libc::RLIMIT_STACK, &r);
                    }
                    Ok(())
                });
            }
            let r = run(&mut cmd, deadline);
            if preload {
                check_problem_lines(&r, planted.len(), name);
            } else {
                assert!(
                    r.stderr.is_empty(),
                    "{name} without the library: {}",
                    r.stderr
                );
            }
            results.push(r);
        }
        let (a, b) = (&results[0], &results[1]);
        assert_eq!(a.status.code(), Some(0), "{name}: {}", a.stderr);
        assert_eq!(a.status.code(), b.status.code(), "{name}: {}", b.stderr);
        match name {
            "options_client" => {
                assert_eq!(five(&a.json()), KERNEL);
                assert_eq!(
                    five(&b.json()),
                    OURS,
                    "invalid values fall back to the defaults"
                );
            }
            "python3" => {
                let (x, y) = (a.json(), b.json());
                assert_eq!(x["variables"], y["variables"]);
                assert!(x["variables"].as_u64().unwrap() > foreign.len() as u64);
                assert_eq!(x["not_utf8"], true);
                assert_eq!((&x["keepalive"], &y["keepalive"]), (&0.into(), &1.into()));
            }
            _ => assert_eq!(a.stdout, b.stdout),
        }
        eprintln!(
            "environment abuse through exec, {name}: {:?} without, {:?} with the library, {} \
             stderr lines for {} planted problems",
            a.took,
            b.took,
            library_lines(b).len(),
            planted.len()
        );
    }
}

/// env_abuse prints `"five":[…]`; `common::five` reads named fields.
fn json_five(v: &Value) -> Value {
    let f = v["five"].as_array().unwrap();
    serde_json::json!({"keepalive": f[0], "idle": f[1], "interval": f[2], "count": f[3],
                       "user_timeout": f[4]})
}
