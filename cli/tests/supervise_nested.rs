//! `keepalive-shim run` nested in a supervised tree: the outer `run --mode seccomp` (or `both`)
//! starts another `keepalive-shim run --mode auto -- STATIC_CLIENT`. The kernel allows one
//! seccomp listener in a filter stack, so the inner one cannot supervise; it is covered by the
//! outer one, knows it (`KEEPALIVE_SHIM_SUPERVISED`, the outer supervisor's PID, an ancestor,
//! and a filter on itself), runs the program under it as it is, says so at `--log debug` only,
//! and warns of nothing. Compared with the same client bare (the kernel's defaults), under one
//! `run` (ours), nested under `run --mode auto` (which preloads the library into the dynamically
//! linked tool and supervises nothing, so the inner one supervises), and with the variable
//! naming a process that supervises nothing.
//! The static client is `tests/programs/supervised.c` built with `gcc -static`.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// `tests/programs/supervised.c`, statically linked.
fn static_client() -> &'static Path {
    build_c("supervised.c", &["-static", "-O2", "-pthread"])
}

/// `keepalive-shim ARGS` with a clean environment (no KEEPALIVE_*, no LD_PRELOAD), the library
/// under test named, in a process group of its own (killed at the end, also on a failure).
fn cli(args: &[&OsStr]) -> Command {
    let mut cmd = command(false, CLI);
    cmd.args(args).env("KEEPALIVE_SHIM_LIBRARY", library());
    cmd.process_group(0);
    cmd
}

/// Runs `cmd` to its end (stdin closed: the client's `hold` returns at once): its output and
/// its PID. Its process group is killed afterwards.
fn run(mut cmd: Command) -> (Output, u32) {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let group = child.id() as i32;
    struct Group(i32);
    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: kill with integer arguments, on the group this test made.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
    let _group = Group(group);
    (child.wait_with_output().expect("wait"), group as u32)
}

/// The options the client printed (`connected JSON`), after checking it exited 0.
fn options(out: &Output) -> [i64; 5] {
    assert!(out.status.success(), "{}: {}", out.status, stderr(out));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("connected "))
        .unwrap_or_else(|| panic!("no `connected` line: {stdout} {}", stderr(out)));
    let json = line.split_once(' ').unwrap().1;
    five(&serde_json::from_str(json).unwrap_or_else(|e| panic!("{line}: {e}")))
}

#[test]
fn a_nested_run_is_covered_by_the_outer_supervisor_and_says_so_at_debug_only() {
    if !Path::new("/proc/self/status").exists() {
        unavailable::<()>("no /proc");
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let client = static_client().as_os_str();
    let cli_path = OsStr::new(CLI);
    let os = OsStr::new;
    let program = [client, os("hold"), os("127.0.0.1"), os(&port)];
    let nested = |outer: &[&str], inner: &[&str]| {
        let mut argv: Vec<&OsStr> = vec![os("run")];
        argv.extend(outer.iter().map(|a| os(a)));
        argv.extend([os("--"), cli_path, os("run")]);
        argv.extend(inner.iter().map(|a| os(a)));
        argv.push(os("--"));
        argv.extend(program);
        let (out, pid) = run(cli(&argv));
        eprintln!(
            "run {outer:?} -- run {inner:?}: {} | {}",
            text(&out.stdout).trim(),
            stderr(&out).trim()
        );
        (out, pid)
    };

    // The references: bare, and under one `run`.
    let (bare, _) = run({
        let mut cmd = command(false, client);
        cmd.args(&program[1..]).process_group(0);
        cmd
    });
    assert_eq!(options(&bare), KERNEL);
    let (single, _) = run(cli(&[&[os("run"), os("--")][..], &program].concat()));
    assert_eq!(options(&single), OURS);
    assert_eq!(stderr(&single), "", "one run warns of nothing");

    for outer in [&["--mode", "seccomp"][..], &["--mode", "both"][..]] {
        // At the default log level: the options, and not a word.
        let (out, _) = nested(outer, &["--mode", "auto"]);
        assert_eq!(options(&out), OURS, "{outer:?}");
        assert_eq!(stderr(&out), "", "{outer:?}: no warning");
        // At debug: covered, by the outer supervisor (the outer `run`'s own process).
        let (out, pid) = nested(outer, &["--mode", "auto", "--log", "debug"]);
        assert_eq!(options(&out), OURS, "{outer:?}");
        let said = stderr(&out);
        assert!(
            said.contains(&format!("covered by the supervisor of pid {pid} ")),
            "{outer:?}: {said}"
        );
        assert!(!said.contains("warning"), "{outer:?}: {said}");
    }

    // The inner run's own options cannot reach the sockets the outer supervisor makes: it
    // warns, and the program gets the outer settings.
    let (out, _) = nested(&["--mode", "seccomp"], &["--idle", "45"]);
    assert_eq!(options(&out), OURS);
    assert!(
        stderr(&out).contains("runs under the supervisor of pid"),
        "{}",
        stderr(&out)
    );

    // An outer `run --mode auto` preloads the library into the (dynamically linked) tool and
    // supervises nothing: the inner one supervises, and is not "covered".
    let (out, _) = nested(&["--mode", "auto"], &["--mode", "auto", "--log", "debug"]);
    assert_eq!(options(&out), OURS);
    assert!(!stderr(&out).contains("covered"), "{}", stderr(&out));

    // The variable alone, naming a live ancestor (this test) that supervises nothing: not
    // covered, the run supervises.
    let me = std::process::id().to_string();
    let mut cmd = cli(&[
        &[os("run"), os("--log"), os("debug"), os("--")][..],
        &program,
    ]
    .concat());
    cmd.env("KEEPALIVE_SHIM_SUPERVISED", &me);
    let (out, _) = run(cmd);
    assert_eq!(options(&out), OURS);
    assert!(!stderr(&out).contains("covered"), "{}", stderr(&out));
    drop(listener);
}
