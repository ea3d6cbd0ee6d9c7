//! What the stress and fault suites (`tests/stress_*.rs`, one scenario each; issue 10) share:
//! building their C programs, running a program to the end under a deadline in a process group
//! of its own (a hang is a failure: the group is killed), and reading what it printed.
//!
//! Each suite runs the same program with and without the library (the shipped release build,
//! [`super::library`]) and compares what the program saw. A default run takes well under a
//! minute on 2 cores; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variants (more threads,
//! iterations, forks and runs, longer load). Missing tools (valgrind, redis-server,
//! redis-benchmark, ss; `scripts/test.sh` installs them) skip a case with a message, except
//! under `CI=true`, where they fail it. Figures are printed (see them with
//! `cargo test --test stress_fork -- --nocapture`, and so on).

use super::build_c;
use serde_json::Value;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The long variants: `KEEPALIVE_SHIM_STRESS_LONG=1`.
pub fn long() -> bool {
    std::env::var("KEEPALIVE_SHIM_STRESS_LONG").as_deref() == Ok("1")
}

/// One of two figures, by mode.
pub fn pick<T>(quick: T, long_variant: T) -> T {
    if long() { long_variant } else { quick }
}

/// The cases take turns, so that none of them skews another's figures (the load test's above
/// all) on a 2-core machine.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the tools come from, for `have`.
pub const TEST_SH: &str = "scripts/test.sh installs it";

/// Builds `tests/programs/SOURCE` with gcc, once: a program, or with `shared` a library.
pub fn build(source: &str, shared: bool) -> &'static Path {
    let kind: &[&str] = if shared { &["-shared", "-fPIC"] } else { &[] };
    build_c(
        source,
        &[&["-O2", "-g", "-Wall", "-pthread"], kind, &["-ldl"]].concat(),
    )
}

/// What a program did: its exit status, output, process id and running time.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub pid: u32,
    pub took: Duration,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {}", self.stdout, self.stderr))
    }

    /// The JSON line of stdout that has `key`.
    pub fn json_line(&self, key: &str) -> Value {
        let line = self
            .stdout
            .lines()
            .find(|l| l.contains(&format!("\"{key}\"")))
            .unwrap_or_else(|| panic!("no line with {key}: {:?} {}", self.stdout, self.stderr));
        serde_json::from_str(line).unwrap()
    }

    pub fn ok(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "{what}: {:?}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The stderr lines that are not the library's own.
    pub fn foreign_stderr(&self) -> Vec<&str> {
        let prefix = format!("keepalive-shim[{}]: ", self.pid);
        self.stderr
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .collect()
    }
}

/// Runs `cmd` to the end in a process group of its own, with stdin closed; past `deadline` the
/// whole group is killed and the test fails: a hang is a failure. The group is killed at the
/// end in any case, so that nothing it left behind outlives the test.
pub fn run(cmd: &mut Command, deadline: Duration) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    // The program and its arguments, without the environment (which can be 100 k variables).
    let what = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id();
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let kill_group = || {
        // SAFETY: kill() with the negated id of the process group this test made for the child
        // (process_group(0) above): it signals only processes this test started.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            kill_group();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("{what} hung: killed after {deadline:?}\nstderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    kill_group();
    Run {
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        pid,
        took,
    }
}

/// The stderr lines of the library in `run`: each must be whole, with this process's prefix.
pub fn library_lines(run: &Run) -> Vec<String> {
    let prefix = format!("keepalive-shim[{}]: ", run.pid);
    run.stderr
        .lines()
        .filter(|l| l.starts_with("keepalive-shim["))
        .map(|l| {
            assert!(l.starts_with(&prefix), "a line of another process: {l:?}");
            l[prefix.len()..].to_owned()
        })
        .collect()
}

/// Environment variables given to a run.
pub type Vars<'a> = &'a [(&'a str, &'a str)];

pub fn classes(v: &Value) -> [i64; 3] {
    ["kernel", "ours", "other"].map(|k| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}")))
}
