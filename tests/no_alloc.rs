//! After load, no hook path allocates or takes a lock: a loop of socket(), setsockopt(),
//! connect() and close() on TCP, UDP and UNIX sockets, in a C program, with a preloaded counter
//! of malloc-family and pthread lock calls armed around the loop (tests/programs/count_calls.c).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Builds the counter library and the loop program with gcc, once.
fn built() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kas-no-alloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let counter = dir.join("count_calls.so");
        let driver = dir.join("hook_loop");
        let gcc = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("gcc").args(args).status().expect("gcc");
            assert!(status.success(), "gcc {args:?}");
        };
        gcc(&[
            "-O2".as_ref(),
            "-shared".as_ref(),
            "-fPIC".as_ref(),
            "-o".as_ref(),
            counter.as_os_str(),
            program("count_calls.c").as_os_str(),
            "-ldl".as_ref(),
        ]);
        gcc(&[
            "-O2".as_ref(),
            "-o".as_ref(),
            driver.as_os_str(),
            program("hook_loop.c").as_os_str(),
            "-ldl".as_ref(),
        ]);
        (counter, driver)
    })
}

/// `(allocations, locks)` counted during the loop.
fn count(with_library: bool, mode: &str, vars: &[(&str, &str)]) -> (u64, u64) {
    let (counter, driver) = built();
    let mut preload = counter.as_os_str().to_owned();
    if with_library {
        preload.push(":");
        preload.push(library());
    }
    let out = command(false, driver)
        .arg(mode)
        .env("LD_PRELOAD", preload)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
