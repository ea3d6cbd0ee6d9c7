//! The dead-peer lab from the tests' side: `scripts/lab.sh` builds and removes the namespaces;
//! this runs programs inside them and removes the lab when dropped, also when a test fails.

use super::{
    Background, command, is_root, output_ok, program, python, root, seconds_in, text, unavailable,
};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const SERVER4: &str = "10.77.0.2";
pub const SERVER6: &str = "fd77::2";

/// `IDLE=2 INTERVAL=1 COUNT=2`: a silent peer is detected after 2 + 1 × 2 = 4 s.
pub const FAST_KEEPALIVE: [(&str, &str); 3] = [
    ("KEEPALIVE_IDLE", "2"),
    ("KEEPALIVE_INTERVAL", "1"),
    ("KEEPALIVE_COUNT", "2"),
];
/// A 3 s user timeout, with keepalive far too slow to be the one that fires.
pub const USER_TIMEOUT_3S: [(&str, &str); 2] =
    [("KEEPALIVE_USER_TIMEOUT", "3s"), ("KEEPALIVE_IDLE", "600")];

pub struct Lab {
    name: String,
}

fn lab_sh() -> Command {
    Command::new(root().join("scripts/lab.sh"))
}

/// `program` (see `command`) that enters the network namespace of the file `netns`
/// (`/run/netns/NAME`, `/proc/PID/ns/net`) with setns() between fork and exec, so no wrapper
/// process carries the preloaded library.
pub fn in_netns(netns: &str, preload: bool, program: impl AsRef<OsStr>) -> Command {
    let file = File::open(netns).unwrap_or_else(|e| panic!("{netns}: {e}"));
    let mut cmd = command(preload, program);
    // SAFETY: setns is async-signal-safe, and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

impl Lab {
    /// A new lab with a name unique to this process and test, or `None` (`unavailable`) when it
    /// cannot be made.
    pub fn new() -> Option<Lab> {
        match Lab::up() {
            Ok(lab) => Some(lab),
            Err(why) => unavailable(&format!("the dead-peer lab: {why}")),
        }
    }

    fn up() -> Result<Lab, String> {
        static SWEEP: Once = Once::new();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if !is_root() {
            return Err("network namespaces need root".into());
        }
        SWEEP.call_once(|| {
            let _ = lab_sh().arg("sweep").status();
        });
        let name = format!(
            "kas-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match lab_sh().args(["up", &name]).output() {
            Ok(out) if out.status.success() => Ok(Lab { name }),
            Ok(out) => Err(format!(
                "lab.sh up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run lab.sh: {e}")),
        }
    }

    /// `program` to run inside the client (`'c'`) or server (`'s'`) namespace, entered with
    /// setns() between fork and exec, so no wrapper process carries the preloaded library.
    pub fn command(&self, side: char, preload: bool, program: impl AsRef<OsStr>) -> Command {
        in_netns(
            &format!("/run/netns/{}-{side}", self.name),
            preload,
            program,
        )
    }

    pub fn spawn(
        &self,
        side: char,
        preload: bool,
        vars: &[(&str, &str)],
        argv: &[&OsStr],
    ) -> Background {
        let mut cmd = self.command(side, preload, argv[0]);
        cmd.args(&argv[1..]).envs(vars.iter().copied());
        Background::spawn(cmd)
    }

    /// `python3 tests/programs/NAME ARGS...` in the client (`'c'`) or server (`'s'`) namespace.
    pub fn python(
        &self,
        side: char,
        preload: bool,
        vars: &[(&str, &str)],
        name: &str,
        args: &[&str],
    ) -> Background {
        let script = program(name);
        let mut argv: Vec<&OsStr> = vec![python().as_os_str(), script.as_os_str()];
        argv.extend(args.iter().map(OsStr::new));
        self.spawn(side, preload, vars, &argv)
    }

    /// `server.py --mode=MODE` on `host` and `port` in the server namespace, with or without the
    /// library and `vars`, once it listens.
    pub fn serve(
        &self,
        preload: bool,
        vars: &[(&str, &str)],
        mode: &str,
        host: &str,
        port: u16,
    ) -> Background {
        let args = [
            format!("--mode={mode}"),
            format!("--host={host}"),
            format!("--port={port}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = self.python('s', preload, vars, "server.py", &args);
        server.expect("listening", Duration::from_secs(10));
        server
    }

    /// `serve` without the library, on the server's IPv4 address.
    pub fn server(&self, mode: &str, port: u16) -> Background {
        self.serve(false, &[], mode, SERVER4, port)
    }

    /// The two silent peers of the counting tests, both listening: the lab's server on
    /// `SERVER4:8080` (whose link a test cuts) and one on the client namespace's own loopback,
    /// `127.0.0.1:8081` (which no cut reaches).
    pub fn silent_peers(&self) -> (Background, Background) {
        let server = self.server("silent", 8080);
        let local = self.python(
            'c',
            false,
            &[],
            "server.py",
            &["--mode=silent", "--host=127.0.0.1", "--port=8081"],
        );
        local.expect("listening", Duration::from_secs(10));
        (server, local)
    }

    /// The MAC of `eth0` in the client (`'c'`) or server (`'s'`) namespace, as `ip -o link` prints it.
    fn mac(&self, side: char) -> String {
        let mut cmd = self.command(side, false, "ip");
        cmd.args(["-o", "link", "show", "eth0"]);
        let line = text(&output_ok(&mut cmd).stdout);
        let mac = line
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1);
        mac.unwrap_or_else(|| panic!("no MAC in {line}"))
            .to_string()
    }

    /// Moves the client's link (`eth0` of NAME-c) into the network namespace of process `pid` (a
    /// container's) and configures it there as `lab.sh up` did in NAME-c: address 10.77.0.1/24,
    /// up, the server's neighbour entry pinned (the server's entry for the client still holds: the
    /// MAC moves along).
    pub fn move_client_link(&self, pid: u32) {
        let server_mac = self.mac('s');
        let mut cmd = self.command('c', false, "ip");
        cmd.args(["link", "set", "eth0", "netns", &pid.to_string()]);
        output_ok(&mut cmd);
        let netns = format!("/proc/{pid}/ns/net");
        for args in [
            &["addr", "add", "10.77.0.1/24", "dev", "eth0"][..],
            &["link", "set", "eth0", "up"],
            &[
                "neigh",
                "replace",
                SERVER4,
                "lladdr",
                &server_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        ] {
            let mut cmd = in_netns(&netns, false, "ip");
            output_ok(cmd.args(args));
        }
    }

    /// Takes the server's (`"server"`) or the client's (`"client"`) own link down; returns the
    /// instant just before, from which a bound is measured: the kernel's timers run from the
    /// last packet received, before the cut, however long `lab.sh` takes on a loaded machine.
    pub fn cut(&self, side: &str) -> Instant {
        let t0 = Instant::now();
        let status = lab_sh().args(["cut", &self.name, side]).status().unwrap();
        assert!(status.success(), "lab.sh cut {side}");
        t0
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab_sh().args(["down", &self.name]).status();
    }
}

/// `server.py --mode once` arguments for a server that sets its own keepalive on the socket it
/// accepts, 1 s idle, 1 s interval, 2 probes, 2 s after accepting it (so a test can cut the
/// client's link in between): by itself it notices a dead client about 2 s after setting them;
/// a user timeout that follows them is 1 + 1 × 2 = 3 s.
pub const OWN_KEEPALIVE_1_1_2: [&str; 2] = ["--own-keepalive=1,1,2", "--settle=2"];

impl Lab {
    /// `server.py --mode=once` on the server's IPv4 address and `port`, with `args` added (such
    /// as `OWN_KEEPALIVE_1_1_2`), with or without the library and `vars`, once it listens.
    pub fn serve_once(
        &self,
        preload: bool,
        vars: &[(&str, &str)],
        port: u16,
        args: &[&str],
    ) -> Background {
        let mut all = vec![
            "--mode=once".to_string(),
            format!("--host={SERVER4}"),
            format!("--port={port}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let server = self.python('s', preload, vars, "server.py", &all);
        server.expect("listening", Duration::from_secs(10));
        server
    }

    /// `client.py hold` without the library in the client namespace: connects to the server's
    /// `port` and holds the connection, sending nothing, with no keepalive of its own.
    pub fn hold(&self, port: u16) -> Background {
        let target = format!("{SERVER4}:{port}");
        let client = self.python('c', false, &[], "client.py", &["hold", &target]);
        client.expect("connected", Duration::from_secs(10));
        client
    }
}

/// What `server.py --mode once --own-keepalive …` (`what`) printed after `accepted`: its `set`,
/// the `user_timeout MS` the accepted socket had right after, and how its wait ended, which must
/// be `error TimeoutError 110 SECONDS` within `ceiling` seconds. Returns the user timeout and
/// the SECONDS (counted by the server from `set`).
pub fn own_keepalive_timed_out(what: &str, server: &Background, ceiling: f64) -> (i64, f64) {
    server.expect("set", Duration::from_secs(10));
    let line = server.expect("user_timeout", Duration::from_secs(5));
    let user_timeout: i64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {line:?}"));
    eprintln!("{what}: TCP_USER_TIMEOUT {user_timeout} ms right after setting its keepalive");
    let ended = once_ended(what, server, Some(user_timeout), ceiling);
    (user_timeout, ended)
}

/// How `server.py --mode once` (`what`) ended its wait, within `ceiling` seconds: it must be
/// `error TimeoutError 110 SECONDS` (ETIMEDOUT); the SECONDS. `user_timeout` (what the socket
/// had, when the server printed it) is for the failure message.
pub fn once_ended(what: &str, server: &Background, user_timeout: Option<i64>, ceiling: f64) -> f64 {
    eprintln!("{what}: waiting at most {ceiling} s for the wait to end");
    let line = server.expect("", Duration::from_secs_f64(ceiling));
    eprintln!("{what}: `{line}`");
    assert!(
        line.starts_with("error TimeoutError 110 "),
        "{what}: `{line}`, not ETIMEDOUT (user timeout {user_timeout:?} ms)"
    );
    seconds_in(&line)
}
