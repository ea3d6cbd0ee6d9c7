//! Helpers shared by the integration tests: where the built library and the test programs are,
//! and running a real program with and without the library preloaded.
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
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
/// `close_range`, `closefrom`, `dup`, `dup2`, `dup3`, `fcntl`, `fcntl64`), `dlopen` (for libraries loaded with
/// `RTLD_DEEPBIND`, src/deepbind.rs), the marker by which two copies in one process find each
/// other (`keepalive_shim_copy`), and the block of counters that `keepalive-shim inspect` and
/// `metrics` read from outside the process (`keepalive_shim_counters`, src/counters.rs, a data
/// symbol). Nothing else.
pub const EXPORTS: &[&str] = &[
    "accept",
    "accept4",
    "close",
    "close_range",
    "closefrom",
    "connect",
    "dlopen",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "keepalive_shim_copy",
    "keepalive_shim_counters",
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

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A prerequisite missing here (root, a tool, a kernel feature): `None` after saying why, except
/// under `CI=true` (which runs as root with every tool `scripts/test.sh` and `scripts/dist.sh`
/// install), where it fails the test.
pub fn unavailable<T>(why: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("required under CI=true: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// `cmd` will run as `nobody` (uid and gid 65534, no supplementary groups): between fork and
/// exec, after any `pre_exec` set before.
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    // SAFETY: setgroups, setgid and setuid are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Whether `tool --version` runs and succeeds.
pub fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether `tool` runs (see `runs`); when not, the test is `unavailable`: `tool` is missing, and
/// `hint` says where it comes from (`"Debian's qemu-user; scripts/dist.sh installs it"`).
pub fn have(tool: &str, hint: &str) -> bool {
    let found = runs(tool);
    if !found {
        unavailable::<()>(&format!("{tool} is missing ({hint})"));
    }
    found
}

/// A folder of this test process's own, `kas-PID` in cargo's folder for tests' files
/// (`target/tmp`); the folders of earlier test processes that are gone are removed first.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("kas-")
                .and_then(|p| p.parse::<u32>().ok())
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = parent.join(format!("kas-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        dir
    })
}

/// `tests/programs/SOURCE` built by gcc with `args` (`-O2`, `-static`, `-shared -fPIC`, `-ldl`,
/// …; given after the source, so libraries link): the output, in `scratch()`, built once per
/// test process and set of arguments.
pub fn build_c(source: &str, args: &[&str]) -> &'static Path {
    build_with("gcc", source, args)
}

/// `build_c` with another C compiler (`musl-gcc`, `aarch64-linux-gnu-gcc`).
pub fn build_with(compiler: &str, source: &str, args: &[&str]) -> &'static Path {
    // One cell a build, leaked: each lives as long as the process anyway.
    type Built = Vec<(Vec<String>, &'static OnceLock<PathBuf>)>;
    static BUILT: Mutex<Built> = Mutex::new(Vec::new());
    let key: Vec<String> = [compiler, source]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    // The list is held only to find this build's cell: other programs build in parallel, and
    // a test waiting for this one waits on the cell.
    let (n, cell) = {
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        let n = match built.iter().position(|(k, _)| *k == key) {
            Some(n) => n,
            None => {
                built.push((key, Box::leak(Box::default())));
                built.len() - 1
            }
        };
        (n, built[n].1)
    };
    cell.get_or_init(|| {
        let stem = source.trim_end_matches(".c");
        let suffix = if args.contains(&"-shared") { ".so" } else { "" };
        let out = scratch().join(format!("{stem}-{n}{suffix}"));
        let built = Command::new(compiler)
            .arg("-o")
            .arg(&out)
            .arg(program(source))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
        let stderr = stderr(&built);
        assert!(
            built.status.success(),
            "{compiler} {source} {args:?}: {stderr}"
        );
        eprint!("{stderr}");
        out
    })
}

/// Runs `cmd` to its end, which must succeed: its output.
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", stderr(&out));
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
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

/// The kernel's defaults on a fresh socket: keepalive off, 7200 s, 75 s, 9, no user timeout
/// (the policy's one constant, widened).
pub const KERNEL: [i64; 5] = {
    let k = keepalive_shim_policy::decide::KERNEL_DEFAULTS;
    [
        k[0] as i64,
        k[1] as i64,
        k[2] as i64,
        k[3] as i64,
        k[4] as i64,
    ]
};
/// This library's defaults.
pub const OURS: [i64; 5] = [1, 30, 10, 3, 60_000];

/// `[keepalive, idle, interval, count, user_timeout]` of one connection as
/// `keepalive-shim inspect --json` prints it, read from the socket (`"source": "socket"`).
pub fn inspected_five(c: &serde_json::Value) -> [i64; 5] {
    let keepalive = c["keepalive"]
        .as_bool()
        .unwrap_or_else(|| panic!("keepalive in {c}"));
    let int = |k: &str| c[k].as_i64().unwrap_or_else(|| panic!("{k} in {c}"));
    [
        i64::from(keepalive),
        int("idle_s"),
        int("interval_s"),
        int("count"),
        int("user_timeout_ms"),
    ]
}

/// The `keepalive-shim` tool that `cargo build --release` builds beside the library (it may not
/// be there: `KEEPALIVE_SHIM_TEST_LIBRARY` can name a library built elsewhere).
pub fn tool_beside_library() -> PathBuf {
    library()
        .parent()
        .unwrap_or(Path::new("."))
        .join("keepalive-shim")
}

/// The keepalive timer in a line of `ss -o`, in whole seconds: `timer:(keepalive,29sec,0)` → 29,
/// `timer:(keepalive,1min18sec,0)` → 78, `900ms` → 0; `None` without a keepalive timer.
pub fn parse_keepalive(line: &str) -> Option<u64> {
    let spec = line.split("timer:(keepalive,").nth(1)?.split(',').next()?;
    let mut seconds = 0;
    let mut number = 0;
    let mut unit = String::new();
    for c in spec.chars().chain(std::iter::once('0')) {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                seconds += match unit.as_str() {
                    "min" => number * 60,
                    "sec" => number,
                    _ => 0, // ms
                };
                number = 0;
                unit.clear();
            }
            number = number * 10 + u64::from(c.to_digit(10).unwrap());
        } else {
            unit.push(c);
        }
    }
    Some(seconds)
}

/// The number that ends `line` (`result ETIMEDOUT 3.01`): the seconds the program measured.
pub fn seconds_in(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("no seconds at the end of {line:?}: {e}"))
}

/// The bound holds: the error came no earlier than bound − 0.5 s and no later than bound + 2 s.
pub fn assert_within(what: &str, seconds: f64, bound: f64) {
    eprintln!("{what}: ended after {seconds:.2} s (bound {bound} s)");
    assert!(
        seconds >= bound - 0.5 && seconds <= bound + 2.0,
        "{what}: ended after {seconds:.2} s, outside [{:.1}, {:.1}]",
        bound - 0.5,
        bound + 2.0
    );
}

/// `bg` (the program `what`) is still running at `t0 + check` seconds (three times the bound
/// the program it is compared with holds); waits until then.
pub fn assert_still_blocked(what: &str, bg: &mut Background, t0: Instant, check: f64) {
    std::thread::sleep(Duration::from_secs_f64(check).saturating_sub(t0.elapsed()));
    assert!(bg.running(), "{what}: should still be blocked at {check} s");
    eprintln!("{what}: still blocked at {check} s");
}

/// Where Debian's libc6-dev-arm64-cross has the aarch64 loader and C library, for `qemu -L`.
pub const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// `qemu-aarch64` running `program` against Debian's aarch64 glibc, with `vars` set in the
/// guest only (in qemu's own environment, LD_PRELOAD would name an aarch64 file to the x86_64
/// loader of qemu itself).
pub fn qemu_aarch64(program: &Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = command(false, "qemu-aarch64");
    cmd.args(["-L", AARCH64_SYSROOT]);
    for (name, value) in vars {
        cmd.arg("-E").arg(format!("{name}={value}"));
    }
    cmd.arg(program);
    cmd
}

/// `cmd` will run in a private mount namespace of its own (entered between fork and exec, gone
/// with the program), where an overlay lays `upper` over `/etc`; `work` is the overlay's work
/// folder, on the file system of `upper`. The host's `/etc` is never touched.
pub fn overlay_etc(cmd: &mut Command, upper: &Path, work: &Path) {
    let options = CString::new(format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        upper.display(),
        work.display()
    ))
    .unwrap();
    // SAFETY: between fork and exec the closure makes only system calls (unshare, mount) on data
    // prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let private = libc::MS_REC | libc::MS_PRIVATE;
            let null = std::ptr::null();
            // After the first mount nothing mounted propagates back to the host's namespace.
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(c"none".as_ptr(), c"/".as_ptr(), null, private, null.cast()) != 0
                || libc::mount(
                    c"overlay".as_ptr(),
                    c"/etc".as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

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

    /// One line starting with `prefix` per client in `clients`, each within `timeout` of the
    /// last (a server's `request` for every client sent to it). On a timeout the failure says how
    /// many came and what each client was doing: still running, or exited and how.
    pub fn expect_from(
        &self,
        prefix: &str,
        clients: &mut [(&str, &mut Background)],
        timeout: Duration,
    ) {
        for seen in 0..clients.len() {
            let end = Instant::now() + timeout;
            let came = loop {
                let left = end.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(line) if line.starts_with(prefix) => break true,
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            };
            if !came {
                let states: Vec<String> = clients
                    .iter_mut()
                    .map(|(name, bg)| match bg.child.try_wait() {
                        Ok(None) => format!("{name}: still running"),
                        Ok(Some(status)) => format!("{name}: exited, {status}"),
                        Err(e) => format!("{name}: {e}"),
                    })
                    .collect();
                panic!(
                    "{seen} of {} lines starting with {prefix:?}, none more within {timeout:?}; {}",
                    clients.len(),
                    states.join("; ")
                );
            }
        }
    }

    /// `expect` for the program `what`, waiting at most `within` seconds: the line, and the
    /// seconds from `t0` until it came.
    pub fn expect_timed(
        &self,
        what: &str,
        prefix: &str,
        t0: Instant,
        within: f64,
    ) -> (String, f64) {
        // `expect` panics without saying which program: say it first.
        eprintln!("{what}: waiting at most {within} s for {prefix:?}");
        let line = self.expect(prefix, Duration::from_secs_f64(within));
        (line, t0.elapsed().as_secs_f64())
    }

    /// Its exit status, once it exits, at the latest `within` seconds after `t0`.
    pub fn exit_within(&mut self, what: &str, t0: Instant, within: f64) -> ExitStatus {
        let end = t0 + Duration::from_secs_f64(within);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "{what}: still running after {within} s"
            );
            std::thread::sleep(Duration::from_millis(20));
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

/// `seconds` (how long the program `what` took after the cut) lies in `[low, high]`.
pub fn assert_between(what: &str, seconds: f64, low: f64, high: f64) {
    eprintln!("{what}: {seconds:.2} s after the cut");
    assert!(
        (low..=high).contains(&seconds),
        "{what}: {seconds:.2} s after the cut, outside [{low}, {high}]"
    );
}

pub mod cgroup;
pub mod docker;
pub mod lab;
pub mod layout;
pub mod prometheus;
pub mod pss;
pub mod rootfs;
pub mod stress;
