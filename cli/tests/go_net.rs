//! Go's own `net` package tests pass the same under `keepalive-shim run --mode seccomp` as
//! without it: the test binary (`go test -c net` with `CGO_ENABLED=0`, a statically linked Go
//! program that no preload library reaches, built once and kept in `target/go-nettest/`) runs
//! `-test.short -test.v` bare and under the supervisor, and the lists of passed, failed and
//! skipped tests (subtests included) must be the same. `-test.short` skips what needs the
//! outside network; as root both runs are also in a network namespace of their own with only
//! loopback, so nothing leaves the machine. The suite runs under the supervisor twice: at the
//! default log level, and at `--log debug`, whose lines show that the supervisor made the
//! test's TCP sockets. A test that differs once is run again,
//! alone, bare and supervised: only a difference that repeats fails.
//!
//! Without Go (Debian's golang-go; scripts/test.sh installs it) it is skipped with a message,
//! except under `CI=true`, where that is a failure.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// How long one run of the suite may take before it is killed (it takes about 10 s here).
const LIMIT: Duration = Duration::from_secs(150);

/// `go` with its caches in `target/`, building without cgo.
fn go(args: &[&str]) -> Command {
    let mut cmd = Command::new("go");
    cmd.args(args)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .env("GOCACHE", root().join("target/go-cache"))
        .env("GOPATH", root().join("target/go-path"));
    cmd
}

/// The test binary of the `net` package, built when missing or built by another Go; and the
/// package's source folder, where it must run (its `testdata`).
fn nettest() -> Option<(PathBuf, PathBuf)> {
    let Ok(version) = go(&["version"]).output() else {
        return unavailable(
            "go is not installed (Debian's golang-go; scripts/test.sh installs it)",
        );
    };
    let version = text(&version.stdout);
    let goroot = text(&output_ok(&mut go(&["env", "GOROOT"])).stdout)
        .trim()
        .to_owned();
    let dir = root().join("target/go-nettest");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("nettest");
    let stamp = dir.join("built-by");
    let wanted = format!("{version}{goroot}\n");
    if !exe.is_file() || std::fs::read_to_string(&stamp).ok().as_deref() != Some(&wanted) {
        let t0 = Instant::now();
        let built = dir.join("nettest.new");
        output_ok(go(&["test", "-c", "-o"]).arg(&built).arg("net"));
        std::fs::rename(&built, &exe).unwrap();
        std::fs::write(&stamp, &wanted).unwrap();
        eprintln!("go test -c net: {:.1} s", t0.elapsed().as_secs_f64());
    }
    Some((exe, Path::new(&goroot).join("src/net")))
}

/// Whether the runs get a network namespace of their own (root, with unshare and ip).
fn own_netns() -> bool {
    is_root()
        && Command::new("unshare")
            .args(["--net", "--", "ip", "link", "set", "lo", "up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// `argv` in the package folder `dir`, in a fresh network namespace with loopback up when
/// `netns`, in a process group of its own; its output, killed after `LIMIT`.
fn run_in(dir: &Path, netns: bool, argv: &[&OsStr]) -> Output {
    let mut cmd = if netns {
        let mut cmd = command(false, "unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ]);
        cmd.args(argv);
        cmd
    } else {
        let mut cmd = command(false, argv[0]);
        cmd.args(&argv[1..]);
        cmd
    };
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().expect("spawn the test binary");
    let group = child.id() as i32;
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if stop.recv_timeout(LIMIT).is_err() {
            eprintln!("still running after {LIMIT:?}: killed");
        }
        // SAFETY: kill with integer arguments, on the group this test made (whatever of it is
        // left, also when it ended).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("wait");
    let _ = done.send(());
    killer.join().unwrap();
    out
}

/// Each test's outcome (`PASS`, `FAIL`, `SKIP`), by name, subtests included, from `-test.v`.
fn outcomes(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("--- ")?;
            let (outcome, rest) = rest.split_once(": ")?;
            let name = rest.split(" (").next()?.trim();
            ["PASS", "FAIL", "SKIP"]
                .contains(&outcome)
                .then(|| (name.to_owned(), outcome.to_owned()))
        })
        .collect()
}

struct Suite {
    exe: PathBuf,
    dir: PathBuf,
    netns: bool,
}

impl Suite {
    /// `-test.short -test.v` with `-test.run PATTERN`, bare (`run`: None) or under
    /// `keepalive-shim run --mode seccomp RUN --`: the outcomes, the output, and the
    /// supervisor's debug lines.
    fn run(
        &self,
        run: Option<&[&str]>,
        pattern: &str,
    ) -> (BTreeMap<String, String>, Output, usize) {
        let exe = self.exe.as_os_str();
        let flags = [
            "-test.short",
            "-test.v",
            "-test.count=1",
            "-test.timeout=120s",
            "-test.run",
            pattern,
        ];
        let mut argv: Vec<&OsStr> = Vec::new();
        if let Some(options) = run {
            argv.extend(["run", "--mode", "seccomp"].map(OsStr::new));
            argv.extend(options.iter().map(OsStr::new));
            argv.push(OsStr::new("--"));
            argv.insert(0, OsStr::new(CLI));
        }
        argv.push(exe);
        argv.extend(flags.map(OsStr::new));
        let t0 = Instant::now();
        let out = run_in(&self.dir, self.netns, &argv);
        let found = outcomes(&text(&out.stdout));
        let said = text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("keepalive-shim["))
            .count();
        let count = |o: &str| found.values().filter(|v| *v == o).count();
        eprintln!(
            "{} {pattern}: {}, {:.1} s: {} passed, {} failed, {} skipped; {said} debug lines",
            match run {
                None => "bare".to_owned(),
                Some(options) => format!("run --mode seccomp {}", options.join(" ")),
            },
            out.status,
            t0.elapsed().as_secs_f64(),
            count("PASS"),
            count("FAIL"),
            count("SKIP"),
        );
        (found, out, said)
    }
}

/// What differs between `a` and `b`: name, outcome in `a`, outcome in `b`.
fn differences(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let none = String::from("(not run)");
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| a.get(*n) != b.get(*n))
        .map(|n| {
            (
                n.clone(),
                a.get(n).unwrap_or(&none).clone(),
                b.get(n).unwrap_or(&none).clone(),
            )
        })
        .collect()
}

/// The output of the failing tests (their `=== RUN` to the next `=== RUN`), for a failure.
fn failing_output(stdout: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("=== RUN   ") {
            keep = names.iter().any(|n| name.trim() == *n);
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn gos_net_tests_pass_the_same_under_the_supervisor() {
    let Some((exe, dir)) = nettest() else { return };
    let netns = own_netns();
    if !netns {
        unavailable::<()>(
            "Go's tests beyond -test.short: a network namespace of their own needs root, unshare and ip",
        );
    }
    let suite = Suite { exe, dir, netns };
    let (bare, bare_out, _) = suite.run(None, ".");
    let passed = bare.values().filter(|v| *v == "PASS").count();
    assert!(
        passed >= 100,
        "only {passed} tests passed bare: {}{}",
        text(&bare_out.stdout),
        stderr(&bare_out)
    );
    let mut real = Vec::new();
    for options in [&[][..], &["--log", "debug"][..]] {
        let (supervised, sup_out, said) = suite.run(Some(options), ".");
        if !options.is_empty() {
            // The supervisor made the test's TCP sockets (a debug line each).
            assert!(
                said >= 100,
                "{said} debug lines of the supervisor: {}",
                stderr(&sup_out)
            );
        }
        let diffs = differences(&bare, &supervised);
        for (name, a, b) in &diffs {
            eprintln!("differs once: {name}: bare {a}, under run {options:?} {b}");
        }
        // Again, each differing top-level test alone, both ways: what differs again is real.
        let mut tops: Vec<&str> = diffs
            .iter()
            .map(|(n, _, _)| n.split('/').next().unwrap())
            .collect();
        tops.dedup();
        for top in tops {
            let pattern = format!("^{top}$");
            let (a, _, _) = suite.run(None, &pattern);
            let (b, b_out, _) = suite.run(Some(options), &pattern);
            let again = differences(&a, &b);
            if !again.is_empty() {
                real.push(format!(
                    "under run {options:?}: {again:?}\n{}",
                    failing_output(&text(&b_out.stdout), &[top])
                ));
            }
        }
        // And the binary's own verdict, when nothing differed.
        if diffs.is_empty() {
            assert_eq!(
                bare_out.status.code(),
                sup_out.status.code(),
                "{options:?}: {}",
                stderr(&sup_out)
            );
        }
    }
    assert!(
        real.is_empty(),
        "Go's net tests differ under the supervisor:\n{}",
        real.join("\n")
    );
}
