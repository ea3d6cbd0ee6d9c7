//! Helpers shared by the integration tests: where the built library and the test programs are,
//! and running a real program with and without the library preloaded.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The library under test: `target/release/libkeepalive_shim.so`, the very file the README's
/// commands (`cargo build --release`, `cargo run --release -- run …`) and `scripts/dist.sh` give
/// a user. It is built here with that same command (a no-op when `scripts/test.sh` already did),
/// so no test ever preloads a variant built only for tests. `KEEPALIVE_SHIM_TEST_LIBRARY` names
/// another build to test instead.
pub fn library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("KEEPALIVE_SHIM_TEST_LIBRARY") {
            return PathBuf::from(path);
        }
        let root = root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root)
            .args(["build", "--quiet", "--release"])
            .status()
            .expect("run cargo build --release");
        assert!(status.success(), "cargo build --release failed");
        root.join("target/release/libkeepalive_shim.so")
    })
}

/// What the library exports, sorted: the hooks that do the work (`socket`, `connect`,
/// `setsockopt`), those that keep its descriptor table true to the sockets (`close`,
/// `close_range`, `dup`, `dup2`, `dup3`, `fcntl`, `fcntl64`), `dlopen` (for libraries loaded with
/// `RTLD_DEEPBIND`, src/deepbind.rs), and the marker by which two copies in one process find each
/// other (`keepalive_shim_copy`). Nothing else.
pub const EXPORTS: &[&str] = &[
    "close",
    "close_range",
    "connect",
    "dlopen",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "keepalive_shim_copy",
    "setsockopt",
    "socket",
];

/// The workspace root (this file is shared by the library's tests and the CLI package's).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("scripts/lab.sh").is_file())
        .expect("workspace root with scripts/lab.sh")
}

pub fn program(name: &str) -> PathBuf {
    root().join("tests/programs").join(name)
}

/// The real Python interpreter, not a wrapper script such as pyenv's shim (which would run the
/// library's constructor in a dozen processes and print each warning a dozen times).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 on PATH");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A command with no `KEEPALIVE_*`, libkeepalive or `LD_PRELOAD` variable inherited from the
/// test's own environment; `preload` adds the library.
pub fn command(preload: bool, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        // KEEPALIVE_*, and libkeepalive's KEEPIDLE, KEEPINTVL, KEEPCNT, KEEPALIVE.
        if n.starts_with("KEEP") || n == "LD_PRELOAD" {
            cmd.env_remove(&name);
        }
    }
    if preload {
        cmd.env("LD_PRELOAD", library());
    }
    cmd
}

/// `python3 tests/programs/probe.py CASE` with the given variables.
pub fn probe(preload: bool, case: &str, vars: &[(&str, &str)]) -> Output {
    let mut cmd = command(preload, python());
    cmd.arg(program("probe.py"))
        .arg(case)
        .envs(vars.iter().copied());
    cmd.output().expect("run probe.py")
}

/// The probe's JSON, after checking it exited 0 with nothing on stderr.
pub fn probe_json(preload: bool, case: &str, vars: &[(&str, &str)]) -> serde_json::Value {
    let out = probe(preload, case, vars);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "probe {case} failed: {stderr}");
    assert!(
        stderr.is_empty(),
        "unexpected stderr from probe {case}: {stderr}"
    );
    serde_json::from_slice(&out.stdout).expect("probe prints JSON")
}

/// The five options as `[keepalive, idle, interval, count, user_timeout]`.
pub fn five(v: &serde_json::Value) -> [i64; 5] {
    ["keepalive", "idle", "interval", "count", "user_timeout"].map(|k| {
        v[k].as_i64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    })
}

/// The kernel's defaults on a fresh socket: keepalive off, 7200 s, 75 s, 9, no user timeout.
pub const KERNEL: [i64; 5] = [0, 7200, 75, 9, 0];
/// This library's defaults.
pub const OURS: [i64; 5] = [1, 30, 10, 3, 60_000];

/// A background process whose stdout lines can be awaited; killed when dropped.
pub struct Background {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Background {
        cmd.stdout(Stdio::piped()).stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background { child, lines }
    }

    /// The next stdout line that starts with `prefix`, waiting at most `timeout`.
    pub fn expect(&self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line starting with {prefix:?} within {timeout:?}"),
            }
        }
    }

    /// Writes a line to its stdin.
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().unwrap();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server from `tests/programs/server.py` on loopback, and its port.
pub fn server(mode: &str) -> (Background, u16) {
    let mut cmd = command(false, python());
    cmd.arg(program("server.py")).args(["--mode", mode]);
    let server = Background::spawn(cmd);
    let line = server.expect("listening", Duration::from_secs(10));
    let port = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    (server, port)
}

pub mod docker;
pub mod lab;
pub mod rootfs;
