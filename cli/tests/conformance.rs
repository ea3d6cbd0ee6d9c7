//! The conformance table (`crates/policy/src/cases.rs`) under the command-line tool's mechanisms:
//! every row run on real sockets by the one client (`tests/programs/conformance.c`, built here
//! with `gcc -static`, which no preload library reaches) under `keepalive-shim run --mode
//! seccomp --trap socket`, under `--trap connect`, and in a cgroup v2 of its own with
//! `keepalive-shim fleet attach` running on it (the row's settings in the environment of `run`
//! and of `fleet attach`); each must give `row.expected(m)`. The same client bare must give what
//! the kernel alone gives (the row's own options over the kernel's defaults), the check that it
//! does what the row says. Each test reports every mismatching row at once. The library runs
//! the same rows in `tests/conformance.rs`.
//!
//! Fleet mode needs root and cgroup v2: without, that test is skipped with a message, except
//! under `CI=true`, where that is a failure. Its cgroups (`kas-conf-PID-N`, one per distinct
//! set of settings in the table) are removed at the end, also when the test fails.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use keepalive_shim_policy::cases::{CASES, Case, Mechanism};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// How long one run of the client may take before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// The client, statically linked.
fn client() -> &'static Path {
    build_c("conformance.c", &["-static", "-O2", "-Wall", "-Wextra"])
}

/// `[i32; 5]` of the table as the `[i64; 5]` of `five()`.
fn wide(v: [i32; 5]) -> [i64; 5] {
    v.map(i64::from)
}

/// Runs `cmd` (the client, or the tool starting it) in a process group of its own, killed if it
/// takes longer than `RUN_LIMIT`: the five values the client printed last, or what went wrong.
fn five_from(mut cmd: Command) -> Result<[i64; 5], String> {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("run {cmd:?}: {e}"))?;
    let end = Instant::now() + RUN_LIMIT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > end {
            // SAFETY: kill with integer arguments, on the process group this function made.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("still running after {RUN_LIMIT:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = text(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: {}{stdout}",
            out.status,
            stderr(&out).trim_end()
        ));
    }
    let line = stdout.lines().last().unwrap_or("");
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {stdout:?}"))?;
    Ok(five(&json))
}

/// The client for `case`, bare (a clean environment: no `KEEPALIVE_*`, no `LD_PRELOAD`).
fn bare(case: &Case) -> Command {
    let mut cmd = command(false, client());
    cmd.args(case.args());
    cmd
}

/// The client for `case` under `keepalive-shim run --mode seccomp --trap TRAP`, the row's
/// settings in the environment of `run`.
fn under_run(trap: &str, case: &Case) -> Command {
    let mut cmd = command(false, CLI);
    cmd.args(["run", "--mode", "seccomp", "--trap", trap, "--"])
        .arg(client())
        .args(case.args())
        .envs(case.env.iter().copied());
    cmd
}

/// The outcome of one row under one mechanism, as the failure message and the matrix say it.
struct Cell {
    name: &'static str,
    expected: [i64; 5],
    got: Result<[i64; 5], String>,
}

impl Cell {
    fn passed(&self) -> bool {
        self.got.as_ref() == Ok(&self.expected)
    }
}

/// Prints one line per row (`pass`, or what it got) and fails with every mismatching row.
fn report(what: &str, cells: &[Cell], t0: Instant) {
    for cell in cells {
        let verdict = match &cell.got {
            _ if cell.passed() => "pass".to_string(),
            Ok(v) => format!("FAIL got {v:?} (expected {:?})", cell.expected),
            Err(e) => format!("FAIL {e}"),
        };
        eprintln!("{what:<20} {:<62} {verdict}", cell.name);
    }
    eprintln!(
        "{what}: {} rows in {:.2} s",
        cells.len(),
        t0.elapsed().as_secs_f64()
    );
    let failures: Vec<String> = cells
        .iter()
        .filter(|c| !c.passed())
        .map(|c| {
            let got = match &c.got {
                Ok(v) => format!("{v:?}"),
                Err(e) => e.clone(),
            };
            format!("{}: expected {:?}, got {got}", c.name, c.expected)
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} rows failed:\n{}",
        failures.len(),
        cells.len(),
        failures.join("\n")
    );
}

/// Every row run by `launch`, against `expected`.
fn every_row(what: &str, launch: impl Fn(&Case) -> Command, expected: impl Fn(&Case) -> [i32; 5]) {
    client();
    let t0 = Instant::now();
    let cells: Vec<Cell> = CASES
        .iter()
        .map(|case| Cell {
            name: case.name,
            expected: wide(expected(case)),
            got: five_from(launch(case)),
        })
        .collect();
    report(what, &cells, t0);
}

#[test]
fn the_static_client_bare_gives_what_the_kernel_alone_gives() {
    every_row("bare", bare, Case::without_shim);
}

#[test]
fn every_row_under_run_trap_socket() {
    every_row(
        Mechanism::SocketTrap.name(),
        |case| under_run("socket", case),
        |case| case.expected(Mechanism::SocketTrap),
    );
}

#[test]
fn every_row_under_run_trap_connect() {
    every_row(
        Mechanism::ConnectTrap.name(),
        |case| under_run("connect", case),
        |case| case.expected(Mechanism::ConnectTrap),
    );
}

#[test]
fn every_row_in_fleet_mode() {
    client();
    let t0 = Instant::now();
    // One cgroup and one attachment per distinct set of settings, in the table's order.
    let mut envs: Vec<&[(&str, &str)]> = Vec::new();
    for case in CASES {
        if !envs.contains(&case.env) {
            envs.push(case.env);
        }
    }
    let mut cells: Vec<(usize, Cell)> = Vec::new();
    for env in envs {
        let Some(cg) = Cgroup::new() else { return };
        // When `fleet attach` refuses (as it does with KEEPALIVE_ENABLE=0), the rows run with
        // nothing attached: what a user who ran that command gets; a mismatch says why.
        let attached = cg.attach(env);
        let refused = attached.as_ref().err().cloned();
        if let Some(why) = &refused {
            eprintln!("{env:?}: {why}; the rows run with nothing attached");
        }
        for (n, case) in CASES.iter().enumerate().filter(|(_, c)| c.env == env) {
            let mut cmd = bare(case);
            cg.enter(&mut cmd);
            let got = five_from(cmd);
            let expected = wide(case.expected(Mechanism::Fleet));
            let got = match (&refused, got) {
                (Some(why), Ok(v)) if v != expected => Err(format!("{v:?} ({why})")),
                (Some(why), Err(e)) => Err(format!("{e} ({why})")),
                (_, got) => got,
            };
            cells.push((
                n,
                Cell {
                    name: case.name,
                    expected,
                    got,
                },
            ));
        }
        // The attachment ends before its cgroup is removed.
        drop(attached);
        drop(cg);
    }
    cells.sort_by_key(|(n, _)| *n);
    let cells: Vec<Cell> = cells.into_iter().map(|(_, c)| c).collect();
    report(Mechanism::Fleet.name(), &cells, t0);
}

// ---- a cgroup of the test's own (tests/common/cgroup.rs) ----

/// A cgroup made for one set of settings, with the attachment these tests make on it.
struct Cgroup(common::cgroup::TestCgroup);

impl std::ops::Deref for Cgroup {
    type Target = common::cgroup::TestCgroup;
    fn deref(&self) -> &common::cgroup::TestCgroup {
        &self.0
    }
}

impl Cgroup {
    fn new() -> Option<Cgroup> {
        common::cgroup::TestCgroup::new(Path::new(CLI)).map(Cgroup)
    }

    /// `fleet attach --cgroup THIS` in the foreground, with `vars`: the running attachment once
    /// it says so, or, when it exits first, its status and what it said on stderr.
    fn attach(&self, vars: &[(&str, &str)]) -> Result<Attachment, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let log = scratch().join(format!(
            "fleet-attach-{}.stderr",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = command(false, CLI);
        cmd.args(["fleet", "attach", "--cgroup", self.arg()])
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create the attachment's log"));
        let mut child = cmd.spawn().expect("run keepalive-shim fleet attach");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let attachment = Attachment(child);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("running in the foreground") => {
                    return Ok(attachment);
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    return Err("fleet attach: not running in the foreground after 20 s".into());
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Its stdout closed: it has exited (or is about to).
        let mut attachment = attachment;
        let status = attachment.0.wait().expect("wait for fleet attach");
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!(
            "fleet attach exited, {status}: {}",
            said.trim_end()
        ))
    }
}

/// A foreground `fleet attach`, killed when dropped (which ends its attachment).
struct Attachment(Child);

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
