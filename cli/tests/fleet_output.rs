//! A foreground `keepalive-shim fleet attach` outlives its output: with stdout and stderr on
//! `/dev/full` (ENOSPC) and with stdout in a pipe whose reader has closed (EPIPE), the
//! attachment works as with a working stdout (a statically linked client in the cgroup gets the
//! options), the command keeps running until SIGTERM, and then ends with the status it ends
//! with when its output works. `println!` would panic (an abort) at the first line and take the
//! attachment with it.
//!
//! It needs root and cgroup v2: without, it is skipped with a message, except under `CI=true`,
//! where that is a failure.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// `keepalive-shim ARGS` with a clean environment.
fn cli(args: &[&str]) -> Command {
    let mut cmd = command(false, CLI);
    cmd.args(args);
    cmd
}

/// A cgroup of this test (tests/common/cgroup.rs), with what these tests ask of it.
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

    /// How many of keepalive-shim's links `fleet status` shows on this cgroup.
    fn links(&self) -> usize {
        let out = output_ok(&mut cli(&[
            "fleet",
            "status",
            "--json",
            "--cgroup",
            self.arg(),
        ]));
        match serde_json::from_slice(&out.stdout).expect("JSON") {
            Value::Array(rows) => rows.len(),
            v => panic!("not an array: {v}"),
        }
    }

    /// The five options the static client gets on a connection to `port`, run in this cgroup.
    fn client_options(&self, port: u16) -> [i64; 5] {
        let client = build_c("fleet_client.c", &["-static", "-O2", "-Wall"]);
        let mut cmd = command(false, client);
        cmd.args(["options", "127.0.0.1", &port.to_string()]);
        self.enter(&mut cmd);
        let out = output_ok(&mut cmd);
        let line = text(&out.stdout);
        let json: Value = serde_json::from_str(line.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        five(&json)
    }
}

/// A child killed and reaped when dropped (a failing test leaves nothing running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the foreground command's output goes.
#[derive(Clone, Copy, Debug)]
enum Out {
    /// Pipes this test reads.
    Working,
    /// stdout and stderr on /dev/full.
    Full,
    /// stdout in a pipe whose read end is closed; stderr to a file.
    ClosedPipe,
}

/// What one foreground attachment did.
#[derive(Debug)]
struct Seen {
    /// The static client's options while it was attached.
    options: [i64; 5],
    /// Its exit status after SIGTERM.
    status: ExitStatus,
    /// Its stdout and stderr where this test could read them.
    stdout: String,
    stderr: String,
}

fn foreground(cg: &Cgroup, port: u16, out: Out) -> Seen {
    let mut cmd = cli(&["fleet", "attach", "--cgroup", cg.arg()]);
    let stderr_file = scratch().join(format!("fleet-output-{out:?}.stderr"));
    match out {
        Out::Working => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Out::Full => {
            let full = || File::options().write(true).open("/dev/full").unwrap();
            cmd.stdout(full()).stderr(full());
        }
        Out::ClosedPipe => {
            let mut fds = [0; 2];
            // SAFETY: fds is valid for two ints; O_CLOEXEC keeps the read end out of the child.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: pipe2 returned these two descriptors, owned by nothing else.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            drop(read);
            cmd.stdout(write)
                .stderr(File::create(&stderr_file).unwrap());
        }
    }
    let mut child = Killed(cmd.spawn().expect("spawn fleet attach"));
    let end = Instant::now() + Duration::from_secs(20);
    while cg.links() == 0 {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "{out:?}: fleet attach exited before attaching"
        );
        assert!(Instant::now() < end, "{out:?}: not attached within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its lines were written right after attaching: it has had the time to die of them.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "{out:?}: fleet attach ended in the foreground"
    );
    let options = cg.client_options(port);
    // SAFETY: kill with integer arguments, on the child this test started.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < end,
            "{out:?}: still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |pipe: Option<&mut dyn Read>| {
        let mut s = String::new();
        if let Some(p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.0.stdout.as_mut().map(|p| p as &mut dyn Read));
    let mut stderr = read(child.0.stderr.as_mut().map(|p| p as &mut dyn Read));
    if let Out::ClosedPipe = out {
        stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    }
    let _ = std::fs::remove_file(&stderr_file);
    Seen {
        options,
        status,
        stdout,
        stderr,
    }
}

#[test]
fn a_foreground_attachment_outlives_a_full_disk_and_a_closed_pipe() {
    let Some(cg) = Cgroup::new() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Not attached: the kernel's defaults.
    assert_eq!(cg.client_options(port), KERNEL);
    let working = foreground(&cg, port, Out::Working);
    eprintln!("working output: {working:?}");
    assert_eq!(working.options, OURS);
    assert!(working.status.success(), "{working:?}");
    assert!(
        working.stdout.contains("attached to") && working.stdout.contains("detached from"),
        "{working:?}"
    );
    assert_eq!(cg.links(), 0, "detached after SIGTERM");
    for out in [Out::Full, Out::ClosedPipe] {
        let seen = foreground(&cg, port, out);
        eprintln!("{out:?}: {seen:?}");
        assert_eq!(seen.options, working.options, "{out:?}: {seen:?}");
        assert_eq!(
            (seen.status.code(), seen.status.signal()),
            (working.status.code(), working.status.signal()),
            "{out:?}: {seen:?}"
        );
        assert!(!seen.stderr.contains("panicked"), "{out:?}: {seen:?}");
        assert_eq!(cg.links(), 0, "{out:?}: detached after SIGTERM");
        assert_eq!(cg.client_options(port), KERNEL, "{out:?}: after it ended");
    }
    drop(listener);
}
