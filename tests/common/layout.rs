//! Every command of the tool from one install layout, run as a user runs it right after
//! installing: `run` with a dynamically linked program (python3, and a C client where given) and
//! with a statically linked one (the supervisor), `check -- python3`, `inspect PID` of a program
//! under the library, one scrape of `metrics` on 127.0.0.1, and `system status`. Each program
//! also runs without the tool, so each check can fail. The layout is anything that runs a
//! command inside it: a chroot into the bullseye tree where a package or an archive was
//! installed (`tests/packages.rs`), or a container of an image (`tests/containers.rs`).

use super::{KERNEL, OURS, five, inspected_five, text};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A python3 client: the five options of a connected loopback socket, as JSON.
pub const PYTHON_CLIENT: &str = "import json, socket
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
c = socket.create_connection(s.getsockname())
T = socket.IPPROTO_TCP
print(json.dumps(dict(keepalive=c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    idle=c.getsockopt(T, socket.TCP_KEEPIDLE), interval=c.getsockopt(T, socket.TCP_KEEPINTVL),
    count=c.getsockopt(T, socket.TCP_KEEPCNT), user_timeout=c.getsockopt(T, 18))))";

/// A python3 program that holds one connection (to its own listener, never accepted: one
/// established socket in its descriptor table) until its stdin closes; first it prints its PID,
/// the connection's local port and its five options, as JSON.
const HOLDER: &str = "import json, os, socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
c = socket.create_connection(s.getsockname())
T = socket.IPPROTO_TCP
print(json.dumps(dict(pid=os.getpid(), port=c.getsockname()[1],
    keepalive=c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    idle=c.getsockopt(T, socket.TCP_KEEPIDLE), interval=c.getsockopt(T, socket.TCP_KEEPINTVL),
    count=c.getsockopt(T, socket.TCP_KEEPCNT), user_timeout=c.getsockopt(T, 18))), flush=True)
sys.stdin.read()";

/// One GET with python3's own library: the body, on stdout.
const SCRAPE: &str = "import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())";

/// One installed layout of the tool and the library, and how to run a command in it.
pub struct Layout<'a> {
    /// What it is, for messages (`the .deb`, `the archive in /opt`).
    pub what: &'a str,
    /// The tool as a user types it there: a path, or a name on `PATH`.
    pub tool: &'a str,
    /// The library the tool must find there, as `check` names it (every link resolved).
    pub library: &'a str,
    /// A statically linked `tests/programs/options_client.c` there.
    pub static_client: &'a str,
    /// The same client linked dynamically against that system's C library, if there is one.
    pub dynamic_client: Option<&'a str>,
    /// `PROGRAM ARGS…` run there, as root, with no `KEEPALIVE_*` or `LD_PRELOAD` variable.
    pub exec: &'a dyn Fn(&[&str]) -> Command,
}

impl Layout<'_> {
    fn output(&self, args: &[&str]) -> Output {
        (self.exec)(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: run {args:?}: {e}", self.what))
    }

    /// The five options a client printed, after checking that it exited 0 with nothing on
    /// stderr (`run` says nothing where stderr is not a terminal, and neither may the library).
    fn five_of(&self, args: &[&str]) -> [i64; 5] {
        let out = self.output(args);
        let err = text(&out.stderr);
        let what = self.what;
        assert!(
            out.status.success(),
            "{what}: {args:?}: {}: {err}",
            out.status
        );
        assert!(err.is_empty(), "{what}: {args:?}: stderr: {err}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{what}: {args:?}: not JSON ({e}): {}{err}",
                text(&out.stdout)
            )
        });
        five(&json)
    }

    /// `PROGRAM ARGS…` in the background, its stdout's lines awaited.
    fn background(&self, args: &[&str]) -> super::Background {
        let mut cmd = (self.exec)(args);
        cmd.stderr(Stdio::piped());
        super::Background::spawn(cmd)
    }

    /// Every command, each also run without the tool where that means anything.
    pub fn every_command(&self) {
        let t0 = Instant::now();
        let what = self.what;
        let tool = self.tool;

        // run with a dynamically linked program: the library, found in this layout.
        let python = ["python3", "-c", PYTHON_CLIENT];
        assert_eq!(self.five_of(&python), KERNEL, "{what}: python3");
        let under_run = [&[tool, "run", "--"][..], &python].concat();
        assert_eq!(
            self.five_of(&under_run),
            OURS,
            "{what}: keepalive-shim run -- python3"
        );
        if let Some(client) = self.dynamic_client {
            assert_eq!(self.five_of(&[client]), KERNEL, "{what}: {client}");
            assert_eq!(
                self.five_of(&[tool, "run", "--", client]),
                OURS,
                "{what}: keepalive-shim run -- {client}"
            );
        }

        // run with a statically linked program: the supervisor.
        let client = self.static_client;
        assert_eq!(self.five_of(&[client]), KERNEL, "{what}: {client}");
        assert_eq!(
            self.five_of(&[tool, "run", "--", client]),
            OURS,
            "{what}: keepalive-shim run -- {client} (static)"
        );

        // check -- python3: valid, and it names the library run would preload.
        let out = self.output(&[tool, "check", "--", "python3"]);
        let said = text(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: check -- python3: {}: {said}{}",
            out.status,
            text(&out.stderr)
        );
        let names = format!("Library: `keepalive-shim run` preloads {}.", self.library);
        assert!(
            said.contains(&names),
            "{what}: check -- python3: no {names:?} in:\n{said}"
        );

        // inspect and metrics: one program held under run, the same without.
        let mut with =
            self.background(&[&[tool, "run", "--"][..], &["python3", "-c", HOLDER]].concat());
        let mut without = self.background(&["python3", "-c", HOLDER]);
        let held = |bg: &super::Background, how: &str| -> serde_json::Value {
            let line = bg.expect("{", Duration::from_secs(20));
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {how}: {e}: {line}"))
        };
        let (ours, plain) = (held(&with, "held under run"), held(&without, "held bare"));
        assert_eq!(five(&ours), OURS, "{what}: the held connection under run");
        assert_eq!(five(&plain), KERNEL, "{what}: the held connection without");
        for (held, expected) in [(&ours, OURS), (&plain, KERNEL)] {
            let pid = held["pid"].to_string();
            let out = self.output(&[tool, "inspect", "--json", &pid]);
            let listed: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "{what}: inspect --json {pid}: {e}: {}{}",
                        text(&out.stdout),
                        text(&out.stderr)
                    )
                });
            let port = held["port"].as_i64().unwrap();
            let conn = listed
                .as_array()
                .unwrap()
                .iter()
                .find(|c| {
                    c["local"]
                        .as_str()
                        .is_some_and(|l| l.ends_with(&format!(":{port}")))
                })
                .unwrap_or_else(|| {
                    panic!("{what}: inspect {pid}: no connection from port {port}: {listed}")
                });
            assert_eq!(conn["source"], "socket", "{what}: inspect {pid}: {conn}");
            assert_eq!(
                inspected_five(conn),
                expected,
                "{what}: inspect {pid}: {conn}"
            );
        }

        let server = self.background(&[
            "sh",
            "-c",
            "exec \"$0\" metrics --listen 127.0.0.1:0 2>&1",
            tool,
        ]);
        let line = server.expect("keepalive-shim: serving ", Duration::from_secs(10));
        let url = line.rsplit(' ').next().unwrap().to_owned();
        let out = self.output(&["python3", "-c", SCRAPE, &url]);
        let scraped = text(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: GET {url}: {}{scraped}",
            text(&out.stderr)
        );
        let (pid, bare) = (&ours["pid"], &plain["pid"]);
        let counted = scraped
            .lines()
            .filter(|l| {
                l.starts_with("keepalive_shim_connections_configured_total{mechanism=\"library\"")
            })
            .filter(|l| l.contains(&format!("pid=\"{pid}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .next();
        assert!(
            counted.is_some_and(|n| n >= 1),
            "{what}: metrics shows no configured connection of pid {pid}:\n{scraped}"
        );
        assert!(
            !scraped.contains(&format!("pid=\"{bare}\"")),
            "{what}: metrics shows pid {bare}, which has no library:\n{scraped}"
        );
        drop(server);
        for bg in [&mut with, &mut without] {
            assert!(bg.running(), "{what}: a held program ended early");
        }
        drop((with, without));

        // system status: off (nothing in /etc/ld.so.preload), exit 3.
        let out = self.output(&[tool, "system", "status"]);
        let said = text(&out.stdout);
        assert!(
            out.status.code() == Some(3) && said.starts_with("off"),
            "{what}: system status: {}: {said}{}",
            out.status,
            text(&out.stderr)
        );
        eprintln!(
            "{what}: every command in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
}
