//! `keepalive-shim run` with the seccomp supervisor, against programs no preload library reaches:
//! a statically linked C client (`tests/programs/supervised.c`, built here with `gcc -static`),
//! Debian's `busybox-static` wget, and a Go HTTP client built here with `CGO_ENABLED=0`
//! (`tests/programs/go_client.go`). Every test runs the same program with and without `run` and
//! compares what each sees: the options read back from the live sockets with
//! `keepalive-shim inspect`, a dead peer in the lab of `scripts/lab.sh`, threads and forks, a
//! daemon that outlives the command, signals during trapped calls, the supervisor killed, the
//! exit status, the refusals, and a Docker container with Docker's default seccomp profile.
//! In the lab, two dynamically linked programs under `run --mode seccomp` too: a Python server
//! (`tests/programs/server.py`) that sets its own keepalive on the socket it accepted, and node,
//! which sets its own after connect(): the user timeout follows what each set, as with the
//! library.
//! A missing tool or root is a skip with a message, and a failure under `CI=true`.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::lab::{
    FAST_KEEPALIVE, Lab, OWN_KEEPALIVE_1_1_2, SERVER4, USER_TIMEOUT_3S, own_keepalive_timed_out,
};
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// `tests/programs/supervised.c`, statically linked.
fn static_client() -> &'static Path {
    build_c("supervised.c", &["-static", "-O2", "-pthread"])
}

/// `tests/programs/go_client.go` built with Debian's golang-go, `CGO_ENABLED=0`; the Go build
/// cache is kept in `target/go-cache`.
fn go_client() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| {
        if Command::new("go").arg("version").output().is_err() {
            return unavailable(
                "go is not installed (Debian's golang-go; scripts/test.sh installs it)",
            );
        }
        let exe = scratch().join("go_client");
        let t0 = Instant::now();
        output_ok(
            Command::new("go")
                .args(["build", "-o"])
                .arg(&exe)
                .arg(program("go_client.go"))
                .env("CGO_ENABLED", "0")
                .env("GO111MODULE", "off")
                .env("GOCACHE", root().join("target/go-cache"))
                .env("GOPATH", root().join("target/go-path")),
        );
        eprintln!("go build: {:.1} s", t0.elapsed().as_secs_f64());
        Some(exe)
    })
    .as_deref()
}

/// Whether the ELF file at `path` has no program interpreter (`PT_INTERP`): statically linked.
fn statically_linked(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    !(0..count).any(|i| {
        let at = phoff + i * size;
        bytes.get(at..at + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// Debian's busybox-static.
fn busybox() -> Option<PathBuf> {
    let path = PathBuf::from("/bin/busybox");
    if statically_linked(&path) {
        Some(path)
    } else {
        unavailable("/bin/busybox is missing or not statically linked (Debian's busybox-static)")
    }
}

/// `keepalive-shim ARGS` with a clean environment (no KEEPALIVE_*, no LD_PRELOAD), the library
/// under test named, in a process group of its own.
fn cli(args: &[&str]) -> Command {
    let mut cmd = command(false, CLI);
    cmd.args(args).env("KEEPALIVE_SHIM_LIBRARY", library());
    cmd.process_group(0);
    cmd
}

/// `program ARGS` run as it is (`run`: None) or under `keepalive-shim run RUN --`.
fn launch(run: Option<&[&str]>, argv: &[&OsStr]) -> Command {
    match run {
        None => {
            let mut cmd = command(false, argv[0]);
            cmd.args(&argv[1..]).process_group(0);
            cmd
        }
        Some(options) => {
            let mut cmd = cli(&[&["run"], options, &["--"]].concat());
            cmd.args(argv);
            cmd
        }
    }
}

/// A program started by `launch`, with its process group killed when dropped.
struct Tree {
    bg: Background,
    supervised: bool,
}

impl Tree {
    fn spawn(run: Option<&[&str]>, argv: &[&OsStr], vars: &[(&str, &str)]) -> Tree {
        let mut cmd = launch(run, argv);
        cmd.envs(vars.iter().copied());
        Tree {
            bg: Background::spawn(cmd),
            supervised: run.is_some(),
        }
    }

    /// The program's PID: under the supervisor, its child.
    fn program(&self) -> u32 {
        let pid = self.bg.child.id();
        if !self.supervised {
            return pid;
        }
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if let Some(child) = children.split_whitespace().next() {
                return child.parse().unwrap();
            }
            assert!(Instant::now() < end, "the supervisor has no child");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // SAFETY: kill with integer arguments, on the group this test made.
        unsafe { libc::kill(-(self.bg.child.id() as i32), libc::SIGKILL) };
    }
}

/// The options `prefix JSON` printed by the static client.
fn printed(line: &str) -> [i64; 5] {
    let json = line.split_once(' ').expect("prefix JSON").1;
    five(&serde_json::from_str(json).unwrap_or_else(|e| panic!("{line}: {e}")))
}

/// The established connection of `pid` to `port`, read from its live socket by `inspect`.
fn inspected(pid: u32, port: u16) -> [i64; 5] {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = output_ok(&mut cli(&["inspect", "--json", &pid.to_string()]));
        let items: Value = serde_json::from_slice(&out.stdout).unwrap();
        let found: Vec<&Value> = items
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["state"] == "ESTABLISHED"
                    && c["peer"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(&format!(":{port}")))
            })
            .collect();
        if let [c] = found[..] {
            assert_eq!(c["source"], "socket", "{c}");
            return inspected_five(c);
        }
        assert!(
            Instant::now() < end,
            "no single connection to port {port}: {items}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

const AUTO: &[&str] = &[];

// ---- options read back from live sockets ----

#[test]
fn static_client_gets_the_options_under_run_only() {
    let (_server, port) = server("silent");
    let port_s = port.to_string();
    let client = static_client().as_os_str();
    let hold = [client, os("hold"), os("127.0.0.1"), os(&port_s)];
    let own = [client, os("own"), os("127.0.0.1"), os(&port_s)];
    type Case<'a> = (Option<&'a [&'a str]>, &'a [&'a OsStr], [i64; 5]);
    let cases: [Case; 6] = [
        (None, &hold, KERNEL),
        (Some(AUTO), &hold, OURS),
        (Some(&["--trap", "connect"][..]), &hold, OURS),
        (
            Some(&["--idle", "45", "--user-timeout", "1500ms"]),
            &hold,
            [1, 45, 10, 3, 1500],
        ),
        // The program's own idle, set right after socket(), stands, and the user timeout
        // follows it (100 + 10 x 3 s), as under the library; with --force, ours.
        (Some(AUTO), &own, [1, 100, 10, 3, 130_000]),
        (Some(&["--force"][..]), &own, OURS),
    ];
    for (run, argv, expected) in cases {
        let tree = Tree::spawn(run, argv, &[]);
        let line = tree.bg.expect("connected", Duration::from_secs(10));
        assert_eq!(
            printed(&line),
            expected,
            "{run:?} {argv:?}: the program's own view"
        );
        assert_eq!(
            inspected(tree.program(), port),
            expected,
            "{run:?} {argv:?}: inspect"
        );
    }
}

/// A wrapper script that execs a static program: `auto` looks at the script (dynamically
/// linked sh) and preloads the library, which the static program never loads; `--mode both`
/// and `--mode seccomp` cover the whole tree.
#[test]
fn a_wrapper_script_needs_mode_both_for_the_static_program_it_starts() {
    let (_server, port) = server("silent");
    let script = format!(
        "echo wrapper; exec {} hold 127.0.0.1 {port}",
        static_client().display()
    );
    let argv = [os("sh"), os("-c"), os(&script)];
    for (run, expected) in [
        (Some(AUTO), KERNEL),
        (Some(&["--mode", "both"][..]), OURS),
        (Some(&["--mode", "seccomp"][..]), OURS),
    ] {
        let tree = Tree::spawn(run, &argv, &[]);
        let line = tree.bg.expect("connected", Duration::from_secs(10));
        assert_eq!(printed(&line), expected, "{run:?}");
        let program = if run == Some(AUTO) {
            tree.bg.child.id()
        } else {
            tree.program()
        };
        assert_eq!(inspected(program, port), expected, "{run:?}");
    }
}

#[test]
fn busybox_wget_gets_the_options_under_run_only() {
    let Some(busybox) = busybox() else { return };
    let (_server, port) = server("silent");
    let url = format!("http://127.0.0.1:{port}/");
    let argv = [
        busybox.as_os_str(),
        os("wget"),
        os("-q"),
        os("-O"),
        os("/dev/null"),
        os(&url),
    ];
    for (run, expected) in [(None, KERNEL), (Some(AUTO), OURS)] {
        let tree = Tree::spawn(run, &argv, &[]);
        assert_eq!(
            inspected(tree.program(), port),
            expected,
            "wget, run: {run:?}"
        );
    }
}

#[test]
fn go_keeps_its_own_keepalive_and_gets_our_count_and_user_timeout() {
    let Some(go) = go_client() else { return };
    let (_server, port) = server("silent");
    let url = format!("http://127.0.0.1:{port}/");
    let argv = [go.as_os_str(), os("hold"), os(&url)];
    let read = |run: Option<&[&str]>| {
        let tree = Tree::spawn(run, &argv, &[]);
        tree.bg.expect("connected", Duration::from_secs(10));
        inspected(tree.program(), port)
    };
    // Go turns keepalive on itself right after connecting (net/http: 30 s idle and interval),
    // and leaves the count (the kernel's 9) and the user timeout (none) alone.
    let alone = read(None);
    assert_eq!((alone[0], alone[3], alone[4]), (1, 9, 0), "{alone:?}");
    assert!(alone[1] > 0 && alone[2] > 0);
    // Under the supervisor its socket was made with ours; its own values then stand, and the
    // user timeout follows them (idle + interval x our count), as under the library.
    let follows = 1000 * (alone[1] + alone[2] * 3);
    assert_eq!(read(Some(AUTO)), [1, alone[1], alone[2], 3, follows]);
    assert_eq!(
        read(Some(&["--trap", "connect"][..])),
        [1, alone[1], alone[2], 3, follows]
    );
    // With --force, its setsockopt calls succeed and change nothing.
    assert_eq!(read(Some(&["--force"][..])), OURS);
}

/// A program that moves into a network namespace of its own (here `unshare -n`): the
/// supervisor makes its sockets there, not in its own namespace (where a loopback listener and
/// connection would work even with the new namespace's loopback down).
#[test]
fn sockets_are_made_in_the_programs_own_network_namespace() {
    if !is_root() {
        unavailable::<()>("unshare -n needs root");
        return;
    }
    let client = static_client().display().to_string();
    let seccomp: &[&str] = &["--mode", "seccomp"];
    // Loopback down in the new namespace: connecting to 127.0.0.1 fails there (ENETUNREACH),
    // with or without the supervisor.
    for run in [None, Some(seccomp)] {
        let argv = [os("unshare"), os("-n"), os(&client), os("self")];
        let out = launch(run, &argv).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("error connect Network is unreachable"),
            "{run:?}: {text}{}",
            stderr(&out)
        );
    }
    // Loopback up: connected there, configured, and seen there by inspect.
    let script = format!("ip link set lo up && exec {client} self");
    let argv = [os("unshare"), os("-n"), os("sh"), os("-c"), os(&script)];
    let tree = Tree::spawn(Some(seccomp), &argv, &[]);
    let line = tree.bg.expect("connected", Duration::from_secs(10));
    assert_eq!(printed(&line), OURS);
    let program = tree.program();
    let ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        ns(program),
        ns(std::process::id()),
        "a namespace of its own"
    );
    let out = cli(&["inspect", "--json", &program.to_string()])
        .output()
        .unwrap();
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["user_timeout_ms"] == 60_000)
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["LISTEN", "ESTABLISHED"],
        "in its namespace: {items}"
    );
}

// ---- the dead-peer lab ----

/// `argv` in the lab's client namespace, under `run` or not.
fn in_lab(lab: &Lab, run: bool, vars: &[(&str, &str)], argv: &[&OsStr]) -> Background {
    let mut cmd = if run {
        let mut cmd = lab.command('c', false, CLI);
        cmd.args(["run", "--"]).args(argv);
        cmd
    } else {
        let mut cmd = lab.command('c', false, argv[0]);
        cmd.args(&argv[1..]);
        cmd
    };
    cmd.envs(vars.iter().copied()).process_group(0);
    Background::spawn(cmd)
}

/// A request sent into a dead link (never acknowledged) fails after the user timeout under the
/// supervisor, for the static client and for Go; without it both are still blocked at 3x.
#[test]
fn lab_unacknowledged_request_is_bounded_by_the_user_timeout() {
    let Some(lab) = Lab::new() else { return };
    let go = go_client();
    let _server = lab.server("http", 8080);
    let vars = USER_TIMEOUT_3S;
    let url = format!("http://{SERVER4}:8080/");
    let client = static_client().as_os_str();
    let c_argv = [client, os("session"), os(SERVER4), os("8080")];
    let mut clients: Vec<(String, Background)> = Vec::new();
    for run in [true, false] {
        clients.push((
            format!("static, run={run}"),
            in_lab(&lab, run, &vars, &c_argv),
        ));
        if let Some(go) = go {
            let argv = [go.as_os_str(), os("session"), os(&url)];
            clients.push((format!("go, run={run}"), in_lab(&lab, run, &vars, &argv)));
        }
    }
    for (what, c) in &clients {
        eprintln!("{what}: waiting for the first request");
        c.expect("first-done", Duration::from_secs(15));
    }
    lab.cut("server");
    for (_, c) in clients.iter_mut() {
        c.say("go");
    }
    let t0 = Instant::now();
    for (what, c) in clients.iter_mut() {
        if what.ends_with("run=true") {
            let (line, seconds) = c.expect_timed(what, "result", t0, 10.0);
            eprintln!("{what}: `{line}` after {seconds:.2} s (bound 3 s)");
            assert!(!line.contains("result ok"), "{what}: {line}");
            // Go's transport retries an idempotent request once, on a new connection whose
            // connect() the user timeout bounds too: two bounds.
            let attempts = if what.starts_with("go") { 2.0 } else { 1.0 };
            let bound = 2.5..=(3.0 * attempts + 2.0);
            assert!(bound.contains(&seconds), "{what}: {seconds:.2} s");
            assert!(bound.contains(&seconds_in(&line)), "{what}: {line}");
        }
    }
    for (what, c) in clients.iter_mut() {
        if what.ends_with("run=false") {
            assert_still_blocked(what, c, t0, 9.0);
        }
    }
}

/// Waiting for an answer from a silent server whose link is then cut: keepalive notices it
/// after idle + interval x count under the supervisor; without, still blocked at 3x.
#[test]
fn lab_idle_connection_to_a_dead_peer_is_noticed_by_keepalive() {
    let Some(lab) = Lab::new() else { return };
    let _server = lab.server("silent", 8080);
    let vars = FAST_KEEPALIVE;
    let argv = [
        static_client().as_os_str(),
        os("get"),
        os(SERVER4),
        os("8080"),
    ];
    let with = in_lab(&lab, true, &vars, &argv);
    let mut without = in_lab(&lab, false, &vars, &argv);
    with.expect("sent", Duration::from_secs(10));
    without.expect("sent", Duration::from_secs(10));
    // Let the server read the requests (acknowledged: nothing in flight).
    std::thread::sleep(Duration::from_millis(300));
    let t0 = lab.cut("server");
    let what = "static client, idle";
    let (line, seconds) = with.expect_timed(what, "result", t0, 10.0);
    eprintln!("{what}: `{line}` after {seconds:.2} s (bound 4 s)");
    assert!(line.contains("ETIMEDOUT"), "{line}");
    assert_within(what, seconds, 4.0);
    assert_still_blocked(
        "static client, idle, without the supervisor",
        &mut without,
        t0,
        12.0,
    );
}

/// `argv` in the lab's `side` namespace (`'c'` or `'s'`), under `keepalive-shim run --mode
/// seccomp --` (`seccomp`) or as it is, in a process group of its own that is killed when
/// dropped.
fn lab_tree(lab: &Lab, side: char, seccomp: bool, vars: &[(&str, &str)], argv: &[&OsStr]) -> Tree {
    let mut cmd = if seccomp {
        let mut cmd = lab.command(side, false, CLI);
        cmd.args(["run", "--mode", "seccomp", "--"])
            .args(argv)
            .env("KEEPALIVE_SHIM_LIBRARY", library());
        cmd
    } else {
        let mut cmd = lab.command(side, false, argv[0]);
        cmd.args(&argv[1..]);
        cmd
    };
    cmd.envs(vars.iter().copied()).process_group(0);
    Tree {
        bg: Background::spawn(cmd),
        supervised: seccomp,
    }
}

/// A Python server that sets its own keepalive (1 s / 1 s / 2) on the socket it accepted, 2 s
/// after accepting it, once the client's link is already cut. Bare, it fails with ETIMEDOUT
/// about 2 s after setting them (T0); under `run --mode seccomp` no later than T0 + 1 s, because
/// the user timeout the supervisor gives the accepted socket follows the keepalive the server
/// set (1 + 1 × 2 = 3 s) instead of holding it for the default 60 s.
#[test]
fn lab_server_keepalive_set_on_an_accepted_socket_is_followed_under_the_supervisor() {
    let Some(lab) = Lab::new() else { return };
    let script = program("server.py");
    let host = format!("--host={SERVER4}");
    let servers = [
        ("bare", false, "8081"),
        ("run --mode seccomp", true, "8082"),
    ]
    .map(|(what, seccomp, port)| {
        let port = format!("--port={port}");
        let argv = [
            python().as_os_str(),
            script.as_os_str(),
            os("--mode=once"),
            os(&host),
            os(&port),
            os(OWN_KEEPALIVE_1_1_2[0]),
            os(OWN_KEEPALIVE_1_1_2[1]),
        ];
        let tree = lab_tree(&lab, 's', seccomp, &[], &argv);
        eprintln!("server.py 1/1/2, {what}: waiting for `listening`");
        tree.bg.expect("listening", Duration::from_secs(15));
        tree
    });
    let _clients = [lab.hold(8081), lab.hold(8082)];
    for server in &servers {
        server.bg.expect("accepted", Duration::from_secs(10));
    }
    // Both servers are still settling: the keepalive they set is set on a dead link.
    lab.cut("client");
    let [bare, supervised] = &servers;
    let (ut_bare, t0) = own_keepalive_timed_out("server.py 1/1/2, bare", &bare.bg, 20.0);
    let (ut_run, run_s) =
        own_keepalive_timed_out("server.py 1/1/2, run --mode seccomp", &supervised.bg, 20.0);
    eprintln!(
        "accepted socket, own keepalive 1/1/2: bare {t0:.2} s (user timeout {ut_bare} ms), \
         under run --mode seccomp {run_s:.2} s (user timeout {ut_run} ms)"
    );
    assert_eq!(ut_bare, 0, "bare, no user timeout");
    assert!((1.5..=3.5).contains(&t0), "bare: {t0:.2} s, not about 2 s");
    assert!(
        run_s <= t0 + 1.0,
        "under the supervisor {run_s:.2} s (user timeout {ut_run} ms), later than T0 + 1 s \
         ({t0:.2} s bare)"
    );
}

/// node sets its own keepalive (1 s / 1 s / 10) after connect(); a request it then sends on a
/// pooled connection into a dead link is never acknowledged, so only a user timeout ends it.
/// Under `run --mode seccomp` that is the one node's keepalive implies, 1 + 1 × 10 = 11 s, as
/// with the library (tests/never_worse.rs asserts the same window there); bare node is still
/// retrying at three times that.
#[test]
fn lab_node_request_into_a_dead_link_is_bounded_by_its_keepalive_under_the_supervisor() {
    let Some(lab) = Lab::new() else { return };
    if !have("node", "scripts/test.sh installs it") {
        return;
    }
    let _server = lab.server("http", 8080);
    let script = program("node_get.js");
    let url = format!("http://{SERVER4}:8080/");
    let argv = [os("node"), script.as_os_str(), os("session"), os(&url)];
    let mut supervised = lab_tree(&lab, 'c', true, &[], &argv);
    let mut bare = lab_tree(&lab, 'c', false, &[], &argv);
    for (what, client) in [("run --mode seccomp", &supervised), ("bare", &bare)] {
        eprintln!("node, {what}: waiting for the first request");
        client.bg.expect("first-done", Duration::from_secs(15));
    }
    let t0 = lab.cut("server");
    for client in [&mut supervised, &mut bare] {
        client.bg.say("go");
    }
    let what = "node, request never acknowledged, run --mode seccomp";
    let (line, seconds) = supervised.bg.expect_timed(what, "result", t0, 18.0);
    assert!(line.contains("ETIMEDOUT"), "{what}: {line}");
    assert_between(what, seconds, 10.5, 13.0);
    assert_still_blocked(
        "node, request never acknowledged, bare",
        &mut bare.bg,
        t0,
        33.0,
    );
}

// ---- processes ----

/// Threads and forks making connections at once: every one configured, with each trap.
#[test]
fn threads_times_forks_times_connects_are_all_configured() {
    let argv = [
        static_client().as_os_str(),
        os("storm"),
        os("4"),
        os("3"),
        os("200"),
    ];
    let storm = |run: Option<&[&str]>| -> Value {
        let out = launch(run, &argv).output().unwrap();
        assert!(out.status.success(), "{run:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let alone = storm(None);
    assert_eq!(
        (alone["sockets"].as_i64(), alone["configured"].as_i64()),
        (Some(3200), Some(0))
    );
    for run in [AUTO, &["--trap", "connect"][..]] {
        let t0 = Instant::now();
        let counts = storm(Some(run));
        eprintln!("{run:?}: {counts} in {:.2} s", t0.elapsed().as_secs_f64());
        assert_eq!(counts["failed"], 0, "{run:?}: {counts}");
        assert_eq!(counts["sockets"], 3200, "{run:?}: {counts}");
        assert_eq!(counts["configured"], 3200, "{run:?}: {counts}");
    }
}

/// A daemon that outlives the command is still served, and the supervisor stays until it is
/// gone, then exits with the command's status.
#[test]
fn a_daemon_that_outlives_the_command_is_still_served() {
    let (_server, port) = server("silent");
    let port_s = port.to_string();
    let argv = [
        static_client().as_os_str(),
        os("daemon"),
        os("127.0.0.1"),
        os(&port_s),
    ];
    let mut tree = Tree::spawn(Some(AUTO), &argv, &[]);
    let sup = tree.bg.child.id();
    tree.bg.expect("parent exiting", Duration::from_secs(10));
    let daemon = tree.bg.expect("daemon", Duration::from_secs(10));
    // The command exited long ago; its daemon's socket was configured all the same.
    assert_eq!(printed(&daemon), OURS);
    let children = std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap();
    assert_eq!(
        children.split_whitespace().count(),
        1,
        "the daemon, adopted: {children}"
    );
    assert!(
        tree.bg.running(),
        "the supervisor stays while the daemon runs"
    );
    let status = tree.bg.exit_within("the supervisor", Instant::now(), 5.0);
    assert_eq!(status.code(), Some(3), "the command's own status");
}

/// Signals arriving while socket() is held: with SA_RESTART the program sees nothing; without,
/// some calls fail with EINTR (a signal before the supervisor received the call), and every
/// socket returned is configured, none leaked. Without the supervisor, socket() never fails.
#[test]
fn signals_during_held_calls() {
    let client = static_client().as_os_str();
    let go = |run: Option<&[&str]>, mode: &str| -> Value {
        let argv = [client, os("signals"), os("20000"), os(mode)];
        let out = launch(run, &argv).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!("signals {mode}, run {run:?}: {v}");
        v
    };
    for mode in ["restart", "norestart"] {
        let alone = go(None, mode);
        assert_eq!(
            (alone["eintr"].as_i64(), alone["ok"].as_i64()),
            (Some(0), Some(20_000))
        );
        let ours = go(Some(AUTO), mode);
        assert_eq!(ours["other"], 0);
        assert_eq!(
            ours["leaked"], 0,
            "no descriptor installed behind the program's back"
        );
        assert_eq!(ours["configured"], ours["ok"]);
        assert!(
            ours["ticks"].as_i64().unwrap() > 100,
            "the timer ran: {ours}"
        );
        let (eintr, ok) = (
            ours["eintr"].as_i64().unwrap(),
            ours["ok"].as_i64().unwrap(),
        );
        assert_eq!(eintr + ok, 20_000);
        if mode == "restart" {
            assert_eq!(
                eintr, 0,
                "SA_RESTART: the call is restarted, and trapped again"
            );
        }
    }
}

/// The supervisor killed with SIGKILL: the program goes on, its connection too, UDP sockets
/// still work; a new TCP socket fails with ENOSYS (a trapped call with no listener left).
#[test]
fn the_supervisor_killed_leaves_new_tcp_sockets_failing_with_enosys() {
    let (_server, port) = server("silent");
    let port_s = port.to_string();
    let argv = [
        static_client().as_os_str(),
        os("after-kill"),
        os("127.0.0.1"),
        os(&port_s),
    ];
    let mut tree = Tree::spawn(Some(AUTO), &argv, &[]);
    let line = tree.bg.expect("connected", Duration::from_secs(10));
    assert_eq!(printed(&line), OURS);
    let program = tree.program();
    tree.bg.say("try");
    assert_eq!(
        tree.bg.expect("tcp", Duration::from_secs(5)),
        "tcp ok udp ok write ok"
    );
    // SAFETY: kill with integer arguments. (Child::wait would close the program's stdin.)
    unsafe { libc::kill(tree.bg.child.id() as i32, libc::SIGKILL) };
    while tree.bg.child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    tree.bg.say("try");
    assert_eq!(
        tree.bg.expect("tcp", Duration::from_secs(5)),
        "tcp ENOSYS udp ok write ok"
    );
    // The connection made before keeps its options.
    assert_eq!(inspected(program, port), OURS);
    // SAFETY: kill with integer arguments: the orphaned program.
    unsafe { libc::kill(program as i32, libc::SIGKILL) };
}

/// The command's exit status, death by a signal, and a signal sent to the supervisor.
#[test]
fn exit_status_and_signals_pass_through() {
    let seccomp = ["run", "--mode", "seccomp", "--", "sh", "-c"];
    let out = cli(&[&seccomp[..], &["exit 7"]].concat()).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = cli(&[&seccomp[..], &["kill -TERM $$"]].concat())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGTERM),
        "killed by SIGTERM, as the command"
    );
    let script = "trap 'echo got USR1; exit 4' USR1; echo ready; while :; do sleep 0.05; done";
    let mut cmd = cli(&[&seccomp[..], &[script]].concat());
    cmd.stdout(Stdio::piped());
    let mut bg = Background::spawn(cmd);
    bg.expect("ready", Duration::from_secs(10));
    // SAFETY: kill with integer arguments.
    unsafe { libc::kill(bg.child.id() as i32, libc::SIGUSR1) };
    bg.expect("got USR1", Duration::from_secs(5));
    assert_eq!(bg.child.wait().unwrap().code(), Some(4));
}

// ---- refusals and check ----

#[test]
fn it_refuses_clearly_where_it_cannot_work() {
    let dir = scratch();
    let marker = dir.join("ran");
    let touch = ["touch", marker.to_str().unwrap()];
    // Another supervisor already watches the process: EBUSY, nothing run.
    let out = cli(&[
        &[
            "run", "--mode", "seccomp", "--", CLI, "run", "--mode", "seccomp", "--",
        ][..],
        &touch,
    ]
    .concat())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another seccomp supervisor already watches this process"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--mode preload"), "{}", stderr(&out));
    assert!(!marker.exists(), "the command must not run");
    // With --mode auto inside a supervised tree, a static program runs under the outer
    // supervisor, which covers it: no warning (cli/tests/supervise_nested.rs reads the options).
    let out = cli(&[
        "run",
        "--mode",
        "seccomp",
        "--",
        CLI,
        "run",
        "--",
        static_client().to_str().unwrap(),
        "storm",
        "1",
        "0",
        "3",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("without the supervisor"),
        "{}",
        stderr(&out)
    );
    // seccomp() forbidden by a policy (here a filter of this test's own: EPERM).
    let mut cmd = cli(&[&["run", "--mode", "seccomp", "--"][..], &touch].concat());
    let deny = deny_seccomp();
    // SAFETY: between fork and exec, prctl calls on a filter built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: deny.len() as u16,
                filter: deny.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("seccomp() is not allowed here"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the command must not run");
}

/// A filter that makes seccomp() fail with EPERM and allows everything else.
fn deny_seccomp() -> Vec<libc::sock_filter> {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    vec![
        ins(0x20, 0, 0, 0),                                // ld nr
        ins(0x15, 0, 1, libc::SYS_seccomp as u32),         // jeq seccomp
        ins(0x06, 0, 0, 0x0005_0000 | libc::EPERM as u32), // ret ERRNO(EPERM)
        ins(0x06, 0, 0, 0x7fff_0000),                      // ret ALLOW
    ]
}

#[test]
fn check_says_which_mode_a_command_gets_and_why() {
    let client = static_client().to_str().unwrap();
    let out = cli(&["check", "--", client]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Mode for {client}: `keepalive-shim run` (--mode auto) would use the seccomp supervisor: {client} is statically linked"
        )),
        "{text}"
    );
    let out = cli(&["check", "--", "sh"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Mode for sh: `keepalive-shim run` (--mode auto) would use the preload library: it is dynamically linked"), "{text}");
    assert!(text.contains("--mode both covers the whole tree"), "{text}");
    let mut cmd = cli(&["check", "--", client]);
    cmd.env("KEEPALIVE_EXCLUDE", ":5432");
    let text = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
    assert!(text.contains("Destination rules (KEEPALIVE_EXCLUDE, KEEPALIVE_INCLUDE) cannot apply under the supervisor"), "{text}");
    // And run says it at start.
    let mut cmd = cli(&["run", "--", client, "storm", "1", "0", "1"]);
    cmd.env("KEEPALIVE_EXCLUDE", ":5432");
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("warning: destination rules"),
        "{}",
        stderr(&out)
    );
}

// ---- Docker ----

/// The static (musl) tool, built for this test with cargo: the binary a container gets.
fn static_tool() -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "keepalive-shim-cli",
            "--target",
            "x86_64-unknown-linux-musl",
        ])
        .output()
        .expect("cargo");
    if !out.status.success() {
        return unavailable(&format!(
            "cannot build the static tool (rustup target x86_64-unknown-linux-musl; scripts/dist.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Some(root().join("target/x86_64-unknown-linux-musl/release/keepalive-shim"))
}

/// As a container's entrypoint, with Docker's default seccomp profile, no added capability and
/// no network: the options are set (socket trap; the connect trap is refused, saying why), and
/// `docker stop` ends it at once with the status of a SIGTERM.
#[test]
fn docker_entrypoint_with_the_default_seccomp_profile() {
    if !is_root() {
        unavailable::<()>("Docker needs root");
        return;
    }
    let Some(docker) = common::docker::docker() else {
        return;
    };
    let Some(tool) = static_tool() else { return };
    let dir = scratch().join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&tool, dir.join("keepalive-shim")).unwrap();
    std::fs::copy(static_client(), dir.join("supervised")).unwrap();
    let mount = format!("type=bind,source={},target=/ka,readonly", dir.display());
    let image = common::docker::BASE_IMAGE;
    let base = ["--network", "none", "--mount", &mount];
    // One container start each: with and without the supervisor, and the connect trap.
    let once = |entry: &[&str]| -> (String, String) {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--entrypoint", entry[0], image]);
        args.extend(&entry[1..]);
        // `self` waits for a signal: a timeout ends it from inside.
        let out = docker.run("supervise", &args);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (stdout, stderr_) = once(&["timeout", "-s", "KILL", "3", "/ka/supervised", "self"]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("connected"))
        .unwrap_or_else(|| panic!("{stdout}{stderr_}"));
    assert_eq!(printed(line), KERNEL, "without the supervisor");
    let (stdout, stderr_) = once(&[
        "timeout",
        "-s",
        "KILL",
        "3",
        "/ka/keepalive-shim",
        "run",
        "--",
        "/ka/supervised",
        "self",
    ]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("connected"))
        .unwrap_or_else(|| panic!("{stdout}{stderr_}"));
    assert_eq!(
        printed(line),
        OURS,
        "under the supervisor, default profile: {stderr_}"
    );
    let (_, stderr_) = once(&[
        "/ka/keepalive-shim",
        "run",
        "--trap",
        "connect",
        "--",
        "/ka/supervised",
        "self",
    ]);
    assert!(
        stderr_.contains("pidfd_getfd needs CAP_SYS_PTRACE"),
        "{stderr_}"
    );

    // The supervisor as PID 1, stopped by docker stop.
    let container = docker.container("stop");
    let label = docker.label();
    let mut args = vec!["run", "-d", "--name", &container.name, "--label", &label];
    args.extend(base);
    args.extend([
        "--entrypoint",
        "/ka/keepalive-shim",
        image,
        "run",
        "--",
        "/ka/supervised",
        "self",
    ]);
    docker.ok(&args);
    let end = Instant::now() + Duration::from_secs(10);
    while !docker.ok(&["logs", &container.name]).contains("connected") {
        assert!(
            Instant::now() < end,
            "the container's program did not connect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = docker.ok(&["logs", &container.name]);
    assert_eq!(
        printed(logs.lines().find(|l| l.starts_with("connected")).unwrap()),
        OURS
    );
    // From the host: inspect reads the live socket of the supervised program.
    let pid1 = docker.pid(&container.name);
    let children = std::fs::read_to_string(format!("/proc/{pid1}/task/{pid1}/children")).unwrap();
    let program: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let out = cli(&["inspect", "--json", &program.to_string()])
        .output()
        .unwrap();
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["state"] == "ESTABLISHED" && c["user_timeout_ms"] == 60_000),
        "{items}"
    );
    let t0 = Instant::now();
    docker.ok(&["stop", &container.name]);
    let seconds = t0.elapsed().as_secs_f64();
    let code = docker.ok(&["inspect", "-f", "{{.State.ExitCode}}", &container.name]);
    eprintln!("docker stop: {seconds:.2} s, exit code {code}");
    assert_eq!(code, "143", "128 + SIGTERM, the program's death forwarded");
    assert!(
        seconds < 5.0,
        "docker stop took {seconds:.2} s (10 s means it had to SIGKILL)"
    );
}
