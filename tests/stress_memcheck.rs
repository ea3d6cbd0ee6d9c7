//! Stress: valgrind memcheck is clean on C clients (`options_client.c`, `fd_cases.c`,
//! `stress_fork.c`) and on python3 with the library preloaded: no error of the library's own,
//! and as many errors as without it.
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use std::path::Path;
use std::time::Duration;

/// What memcheck said of one run: the run, its error count, and each report, as
/// `(passes through the library, the report without the library's frames or any address)`.
struct Memcheck {
    run: Run,
    errors: u64,
    reports: Vec<(bool, String)>,
}

impl Memcheck {
    /// The reports that pass through the library and that the run without it does not have:
    /// the library's own errors. (A program's own bad pointer, passed on by a hook to libc, is
    /// reported in both runs, the library's frame the only difference.)
    fn library_errors(&self, without: &Memcheck) -> Vec<&str> {
        self.reports
            .iter()
            .filter(|(ours, text)| *ours && !without.reports.iter().any(|(_, t)| t == text))
            .map(|(_, text)| text.as_str())
            .collect()
    }
}

/// `valgrind --tool=memcheck` (definite leaks counted as errors) over `program`.
fn memcheck(preload: bool, program: &Path, args: &[&str], vars: &[(&str, &str)]) -> Memcheck {
    let mut cmd = command(preload, "valgrind");
    cmd.args([
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
        "--child-silent-after-fork=yes",
        "--num-callers=30",
    ])
    .arg(program)
    .args(args)
    .envs(vars.iter().copied());
    let run = run(&mut cmd, Duration::from_secs(pick(180, 900)));
    let errors = run
        .stderr
        .lines()
        .find_map(|l| l.split("ERROR SUMMARY: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ERROR SUMMARY: {}", run.stderr));
    // Each report is a block of "==PID== " lines ended by an empty one; a frame reads
    // "at 0xADDR: function (file)" or "by 0xADDR: …".
    let mut reports = Vec::new();
    let (mut ours, mut block) = (false, String::new());
    // Only valgrind's own lines: the program's and the library's are interleaved with them.
    for line in run.stderr.lines().filter(|l| l.starts_with("==")) {
        let body = line.splitn(3, "==").nth(2).unwrap_or_default().trim();
        if body.is_empty() {
            if !block.is_empty() {
                reports.push((ours, std::mem::take(&mut block)));
            }
            ours = false;
        } else if body.contains("keepalive_shim") {
            ours = true;
        } else {
            let frame = body
                .split_once(": ")
                .filter(|(at, _)| at.starts_with("at 0x") || at.starts_with("by 0x"))
                .map_or(body, |(_, rest)| rest);
            block += frame;
            block.push('\n');
        }
    }
    Memcheck {
        run,
        errors,
        reports,
    }
}

#[test]
fn valgrind_memcheck_finds_nothing_in_the_library() {
    if !have("valgrind", TEST_SH) {
        return;
    }
    let _turn = one_at_a_time();
    let client = build("options_client.c", false);
    let fd_cases = build("fd_cases.c", false);
    let stress = build("stress_fork.c", false);
    let debug = [("KEEPALIVE_LOG", "debug")];
    let force = [("KEEPALIVE_FORCE", "1")];
    let cases: Vec<(&str, &Path, Vec<&str>, Vars)> = vec![
        ("options_client", client, vec![], &[]),
        ("options_client, debug", client, vec![], &debug),
        (
            "fd_cases reused_number",
            fd_cases,
            vec!["reused_number"],
            &[],
        ),
        (
            "fd_cases opt_out_on_duplicates, FORCE",
            fd_cases,
            vec!["opt_out_on_duplicates"],
            &force,
        ),
        ("fd_cases errnos, FORCE", fd_cases, vec!["errnos"], &force),
        ("fd_cases errnos, debug", fd_cases, vec!["errnos"], &debug),
        (
            "stress_fork (threads, fork, exec)",
            stress,
            pick(vec!["2", "400", "6"], vec!["4", "5000", "60"]),
            &[],
        ),
    ];
    // Debian's python3 runs clean under valgrind; another build (pyenv's) reports errors of its
    // own, which must then be the same without the library.
    let debian_python = Path::new("/usr/bin/python3");
    let py = if debian_python.exists() {
        debian_python
    } else {
        python()
    };
    let py_script = "import socket\n\
                     l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
                     c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n\
                     c.sendall(b'ping'); assert a.recv(4) == b'ping'\n\
                     print(c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))";
    let mut report = Vec::new();
    for (name, program, args, vars) in &cases {
        let bare = memcheck(false, program, args, vars);
        let with = memcheck(true, program, args, vars);
        let ours = with.library_errors(&bare);
        assert!(
            ours.is_empty(),
            "{name}: errors of the library:\n{}",
            ours.join("\n")
        );
        // fd_cases errnos passes bad pointers on purpose: valgrind reports those calls of the
        // program's own, the same number with and without the library.
        assert_eq!(with.errors, bare.errors, "{name}: {}", with.run.stderr);
        let code = with.run.status.code();
        assert_eq!(code, bare.run.status.code(), "{name}: {}", with.run.stderr);
        if !name.contains("errnos") {
            assert_eq!(with.errors, 0, "{name}: {}", with.run.stderr);
            assert_eq!(code, Some(0), "{name}: {}", with.run.stderr);
        }
        report.push(format!(
            "{name}: {} errors, as without ({:?})",
            with.errors, with.run.took
        ));
    }
    let bare = memcheck(false, py, &["-c", py_script], &[]);
    let with = memcheck(true, py, &["-c", py_script], &[]);
    let ours = with.library_errors(&bare);
    assert!(
        ours.is_empty(),
        "python3: errors of the library:\n{}",
        ours.join("\n")
    );
    assert_eq!(
        with.errors,
        bare.errors,
        "python3 ({}): {}",
        py.display(),
        with.run.stderr
    );
    assert_eq!(
        (bare.run.stdout.trim(), with.run.stdout.trim()),
        ("0", "1"),
        "{}",
        with.run.stderr
    );
    report.push(format!(
        "{}: {} errors, as without ({:?})",
        py.display(),
        with.errors,
        with.run.took
    ));
    eprintln!("valgrind memcheck with the library: {}", report.join("; "));
}
