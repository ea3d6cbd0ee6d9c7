//! Stress: `dlopen` of the library into a program that has it preloaded, and two copies
//! preloaded from two paths (`tests/programs/dlopen_copy.c`): each TCP socket is configured
//! exactly once, and the second copy stands aside.
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use std::ffi::{OsStr, OsString};
use std::time::Duration;

#[test]
fn dlopen_and_a_second_copy_configure_each_socket_exactly_once() {
    let _turn = one_at_a_time();
    let prog = build("dlopen_copy.c", false);
    let copy = scratch().join("copy-of-libkeepalive_shim.so");
    std::fs::copy(library(), &copy).unwrap();
    let lib = library().as_os_str().to_owned();
    let both = |a: &OsStr, b: &OsStr| {
        let mut p = a.to_owned();
        p.push(":");
        p.push(b);
        p
    };
    let copy_os = copy.as_os_str().to_owned();
    // (LD_PRELOAD, arguments, second copy loaded, the program's own sockets configured)
    let cases: Vec<(OsString, Vec<&OsStr>, bool, bool)> = vec![
        (lib.clone(), vec!["global".as_ref(), &lib], false, true),
        (lib.clone(), vec!["global".as_ref(), &copy_os], true, true),
        (lib.clone(), vec!["local".as_ref(), &copy_os], true, true),
        (lib.clone(), vec!["direct".as_ref(), &copy_os], true, true),
        (both(&lib, &copy_os), vec!["none".as_ref()], true, true),
        (both(&copy_os, &lib), vec!["none".as_ref()], true, true),
        (OsString::new(), vec!["direct".as_ref(), &lib], false, false),
    ];
    for (lp, args, second, configured) in &cases {
        let r = run(
            command(false, prog)
                .env("LD_PRELOAD", lp)
                .env("KEEPALIVE_LOG", "debug")
                .args(args),
            Duration::from_secs(20),
        )
        .ok("dlopen_copy");
        let what = format!("LD_PRELOAD={lp:?} {args:?}");
        let lines = library_lines(&r);
        let v = r.json();
        let clients = v["clients"].as_array().unwrap();
        let mut fds: Vec<i64> = clients.iter().map(|c| c["fd"].as_i64().unwrap()).collect();
        for (i, c) in clients.iter().enumerate() {
            let direct = args[0] == "direct" && i == clients.len() - 1;
            let expected = if *configured || direct { OURS } else { KERNEL };
            let got: Vec<i64> = c["five"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            assert_eq!(got, expected, "{what}: {c}");
        }
        if *configured {
            fds.push(v["listener"].as_i64().unwrap());
        } else {
            fds.retain(|&fd| fd == clients.last().unwrap()["fd"].as_i64().unwrap());
        }
        for fd in fds {
            let tag = format!("fd {fd}: ");
            let configurations = lines
                .iter()
                .filter(|l| {
                    l.starts_with(&tag)
                        && (l.contains("new TCP socket")
                            || l.contains("configured:")
                            || l.contains("applied again"))
                })
                .count();
            assert_eq!(
                configurations, 1,
                "{what}: fd {fd} configured {configurations} times:\n{}",
                r.stderr
            );
        }
        let mut sorted = lines.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            lines.len(),
            "{what}: a line twice:\n{}",
            r.stderr
        );
        let passive = lines.iter().filter(|l| l.contains("another copy")).count();
        assert_eq!(passive, usize::from(*second), "{what}:\n{}", r.stderr);
        assert!(r.foreign_stderr().is_empty(), "{what}: {}", r.stderr);
    }
    eprintln!(
        "dlopen and two copies: {} arrangements, one configuration per socket",
        cases.len()
    );
}
