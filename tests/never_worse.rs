//! Never worse than without the library: real clients that make their own keepalive choices
//! (node, redis-cli, psql), run with and without the library side by side in the dead-peer lab
//! (`scripts/lab.sh`), and compared with themselves.
//!
//! - node `http.get` (node sets 1 s / 1 s / 10 after connecting) and redis-cli `BLPOP` (15 s /
//!   5 s / 3) notice a cut server no later with the library's defaults than without it, because
//!   the user timeout follows the keepalive in effect; with `KEEPALIVE_FORCE=1` and fast values
//!   they notice it sooner.
//! - node's request sent into a dead link is bounded by the user timeout that follows node's own
//!   keepalive (1 + 1 × 10 = 11 s); without the library it is still retrying at three times that.
//! - A server (`tests/programs/server.py`) that sets its own keepalive (1 s / 1 s / 2) on the
//!   socket it accepted notices a dead client no later with the library's defaults than without
//!   (before the user timeout followed keepalive set on accepted sockets, it was still blocked at
//!   15 s); a server that sets nothing notices it after 2 + 1 × 2 = 4 s with the library and
//!   `KEEPALIVE_IDLE=2 KEEPALIVE_INTERVAL=1 KEEPALIVE_COUNT=2`, and is still blocked at three
//!   times that without.
//! - psql with `keepalives=0` (libpq then makes no keepalive call at all) gets keepalive from the
//!   library, and has it off again with `KEEPALIVE_EXCLUDE` naming its server, while another
//!   connection of the same process, to another port, keeps the library's options. Read from
//!   outside: the keepalive timer `ss -tnop` shows in the client's namespace, and the five options
//!   `keepalive-shim inspect --json` reads from the live sockets.
//!
//! Each test builds its own lab and needs root, node, redis-server/redis-cli or psql
//! (`scripts/test.sh` installs them): without, it is skipped, except under `CI=true`.

mod common;

use common::lab::{
    FAST_KEEPALIVE, Lab, OWN_KEEPALIVE_1_1_2, SERVER4, once_ended, own_keepalive_timed_out,
};
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `KEEPALIVE_FORCE=1` with idle 2 s, interval 1 s, count 2: a silent peer after 4 s, whatever
/// the program sets.
const FORCED_FAST: [(&str, &str); 4] = [
    ("KEEPALIVE_FORCE", "1"),
    ("KEEPALIVE_IDLE", "2"),
    ("KEEPALIVE_INTERVAL", "1"),
    ("KEEPALIVE_COUNT", "2"),
];

/// Where the tools come from, for `have`.
const TEST_SH: &str = "scripts/test.sh installs it";

/// `node tests/programs/node_get.js MODE http://10.77.0.2:PORT/` in the client namespace.
fn node(lab: &Lab, preload: bool, vars: &[(&str, &str)], mode: &str, port: u16) -> Background {
    let script = program("node_get.js");
    let url = format!("http://{SERVER4}:{port}/");
    let argv = [
        OsStr::new("node"),
        script.as_os_str(),
        OsStr::new(mode),
        OsStr::new(&url),
    ];
    lab.spawn('c', preload, vars, &argv)
}

/// The seconds from `t0` until `bg` (the client `what`) exits, and how it ended (status and
/// stderr); waits at most `within` seconds.
fn exited(what: &str, bg: &mut Background, t0: Instant, within: f64) -> (f64, String) {
    let status = bg.exit_within(what, t0, within);
    let seconds = t0.elapsed().as_secs_f64();
    let mut stderr = String::new();
    if let Some(mut err) = bg.child.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut stderr);
    }
    (seconds, format!("{status}: {}", stderr.trim()))
}

/// A silent server (accepts, reads the request, never answers); node's `http.get` without the
/// library, with its defaults, and with FORCE and fast values; the server's link is cut once all
/// three requests arrived. Node's own 1 s / 1 s / 10 notices it after about 11 s: the library's
/// defaults must not make that later (before the user timeout followed the keepalive in effect,
/// it took 60 s); the forced fast values make it 4 s.
#[test]
fn node_http_get_notices_a_silent_dead_server_no_later_with_the_library() {
    let Some(lab) = Lab::new() else { return };
    if !have("node", TEST_SH) {
        return;
    }
    let server = lab.server("silent", 8080);
    let mut without = node(&lab, false, &[], "get", 8080);
    let mut defaults = node(&lab, true, &[], "get", 8080);
    let mut forced = node(&lab, true, &FORCED_FAST, "get", 8080);
    server.expect_from(
        "request",
        &mut [
            ("node without the library", &mut without),
            ("node, library defaults", &mut defaults),
            ("node, FORCE", &mut forced),
        ],
        Duration::from_secs(10),
    );
    let t0 = lab.cut("server");
    let (line, forced_s) = forced.expect_timed("node, FORCE 2/1/2", "result", t0, 10.0);
    assert!(line.contains("ETIMEDOUT"), "forced: {line}");
    let (line, without_s) = without.expect_timed("node, without the library", "result", t0, 20.0);
    assert!(line.contains("ETIMEDOUT"), "without: {line}");
    let (line, defaults_s) = defaults.expect_timed("node, library defaults", "result", t0, 20.0);
    assert!(line.contains("ETIMEDOUT"), "with defaults: {line}");
    assert_between("node http.get, without the library", without_s, 9.0, 14.0);
    assert_between("node http.get, library defaults", defaults_s, 9.0, 14.0);
    assert_between("node http.get, FORCE 2/1/2", forced_s, 3.0, 6.0);
    assert!(
        defaults_s <= without_s + 1.5,
        "with the library {defaults_s:.2} s, later than without it ({without_s:.2} s)"
    );
    assert!(
        forced_s + 3.0 <= without_s,
        "forced {forced_s:.2} s should beat node's own {without_s:.2} s"
    );
}

/// node sends a request on a pooled keep-alive connection after the server's link was cut: no
/// keepalive probe runs while the request is unacknowledged, so only a user timeout ends it.
/// With the library's defaults it is the one node's keepalive implies (1 + 1 × 10 = 11 s); with
/// an explicit `KEEPALIVE_USER_TIMEOUT=5s`, the smaller of the two; without the library the
/// kernel retries for about 15 minutes.
#[test]
fn node_request_into_a_dead_link_is_bounded_by_the_user_timeout_its_keepalive_implies() {
    let Some(lab) = Lab::new() else { return };
    if !have("node", TEST_SH) {
        return;
    }
    let _server = lab.server("http", 8080);
    let mut without = node(&lab, false, &[], "session", 8080);
    let mut defaults = node(&lab, true, &[], "session", 8080);
    let five = [("KEEPALIVE_USER_TIMEOUT", "5s")];
    let mut explicit = node(&lab, true, &five, "session", 8080);
    for client in [&without, &defaults, &explicit] {
        client.expect("first-done", Duration::from_secs(10));
    }
    let t0 = lab.cut("server");
    for client in [&mut defaults, &mut explicit, &mut without] {
        client.say("go");
    }
    let (line, explicit_s) =
        explicit.expect_timed("node, KEEPALIVE_USER_TIMEOUT=5s", "result", t0, 12.0);
    assert!(line.contains("ETIMEDOUT"), "explicit 5 s: {line}");
    let (line, defaults_s) = defaults.expect_timed("node, library defaults", "result", t0, 18.0);
    assert!(line.contains("ETIMEDOUT"), "with defaults: {line}");
    assert_between(
        "node, request never acknowledged, KEEPALIVE_USER_TIMEOUT=5s",
        explicit_s,
        4.5,
        7.0,
    );
    assert_between(
        "node, request never acknowledged, library defaults",
        defaults_s,
        10.5,
        13.0,
    );
    assert_still_blocked(
        "node, request never acknowledged, without the library",
        &mut without,
        t0,
        33.0,
    );
}

/// redis-server in the server's namespace, on 10.77.0.2:6379, with a private directory that is
/// removed afterwards.
struct Redis {
    _server: Background,
    dir: PathBuf,
}

impl Redis {
    fn start(lab: &Lab) -> Redis {
        let dir = std::env::temp_dir().join(format!("never-worse-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = lab.command('s', false, "redis-server");
        cmd.args(["--bind", SERVER4, "--port", "6379", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(&dir);
        let redis = Redis {
            _server: Background::spawn(cmd),
            dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while redis.cli(lab, &["PING"]).trim() != "PONG" {
            assert!(Instant::now() < end, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// `redis-cli -h 10.77.0.2 ARGS…` from the server's namespace: its stdout.
    fn cli(&self, lab: &Lab, args: &[&str]) -> String {
        let out = lab
            .command('s', false, "redis-cli")
            .args(["-h", SERVER4])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many clients the server has blocked in BLPOP.
    fn blocked(&self, lab: &Lab) -> usize {
        self.cli(lab, &["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains("cmd=blpop"))
            .count()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -h 10.77.0.2 BLPOP somekey 0` in the client namespace; stderr kept for the report.
fn redis_cli(lab: &Lab, preload: bool, vars: &[(&str, &str)]) -> Background {
    let mut cmd = lab.command('c', preload, "redis-cli");
    cmd.args(["-h", SERVER4, "BLPOP", "somekey", "0"])
        .envs(vars.iter().copied())
        .stderr(Stdio::piped());
    Background::spawn(cmd)
}

/// redis-cli blocked in `BLPOP` (it sets 15 s / 5 s / 3 after connecting): the library's
/// defaults must not make it notice the cut server later than it does by itself (before the user
/// timeout followed the keepalive in effect, about 60 s); FORCE with fast values makes it 4 s.
#[test]
fn redis_cli_blpop_notices_a_dead_server_no_later_with_the_library() {
    let Some(lab) = Lab::new() else { return };
    if !have("redis-server", TEST_SH) || !have("redis-cli", TEST_SH) {
        return;
    }
    let redis = Redis::start(&lab);
    let mut without = redis_cli(&lab, false, &[]);
    let mut defaults = redis_cli(&lab, true, &[]);
    let mut forced = redis_cli(&lab, true, &FORCED_FAST);
    let end = Instant::now() + Duration::from_secs(10);
    while redis.blocked(&lab) < 3 {
        assert!(Instant::now() < end, "the three redis-cli never blocked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = lab.cut("server");
    let (forced_s, how) = exited("redis-cli, FORCE 2/1/2", &mut forced, t0, 10.0);
    eprintln!("redis-cli, FORCE 2/1/2: {how}");
    let (without_s, how) = exited("redis-cli, without the library", &mut without, t0, 40.0);
    eprintln!("redis-cli, without the library: {how}");
    let (defaults_s, how) = exited("redis-cli, library defaults", &mut defaults, t0, 40.0);
    eprintln!("redis-cli, library defaults: {how}");
    // 15 + 5 × 3 = 30 s after the last answer, which came shortly before the cut.
    assert_between(
        "redis-cli BLPOP, without the library",
        without_s,
        20.0,
        33.0,
    );
    assert_between("redis-cli BLPOP, library defaults", defaults_s, 20.0, 33.0);
    assert_between("redis-cli BLPOP, FORCE 2/1/2", forced_s, 2.0, 6.0);
    assert!(
        defaults_s <= without_s + 2.0,
        "with the library {defaults_s:.2} s, later than without it ({without_s:.2} s)"
    );
    assert!(
        forced_s + 5.0 <= without_s,
        "forced {forced_s:.2} s should beat redis-cli's own {without_s:.2} s"
    );
}

/// What `ss -tnop` in the client's namespace shows for `pid`'s connection to the server's `port`:
/// `Some(seconds until the next keepalive probe)`, or `None` without a keepalive timer. Waits
/// until the connection is established and has nothing unacknowledged in flight.
fn keepalive_timer(lab: &Lab, pid: u32, port: u16) -> Option<u64> {
    let peer = format!("{SERVER4}:{port}");
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let out = lab
            .command('c', false, "ss")
            .args(["-tnopH", "state", "established"])
            .output()
            .expect("ss from iproute2");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| {
            l.contains(&format!("pid={pid},")) && l.split_whitespace().nth(3) == Some(&peer)
        });
        if let Some(line) = line.filter(|l| !l.contains("timer:(on,")) {
            eprintln!("ss: {line}");
            return parse_keepalive(line);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no established connection of pid {pid} to {peer}");
}

#[test]
fn parse_ss_timers() {
    assert_eq!(parse_keepalive("x timer:(keepalive,29sec,0)"), Some(29));
    assert_eq!(parse_keepalive("x timer:(keepalive,1min18sec,0)"), Some(78));
    assert_eq!(parse_keepalive("x timer:(keepalive,900ms,0)"), Some(0));
    assert_eq!(parse_keepalive("x users:((\"psql\",pid=1,fd=3))"), None);
}

/// The five options of `pid`'s connection to the server's `port`, read from the live socket by
/// `keepalive-shim inspect --json`: `[keepalive, idle, interval, count, user_timeout]`.
fn options(tool: &Path, pid: u32, port: u16) -> [i64; 5] {
    let out = output_ok(
        Command::new(tool)
            .args(["inspect", "--json"])
            .arg(pid.to_string()),
    );
    let all: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    let peer = format!("{SERVER4}:{port}");
    let conn = all
        .as_array()
        .expect("an array")
        .iter()
        .find(|c| c["peer"] == peer.as_str())
        .unwrap_or_else(|| panic!("no connection to {peer} in {all}"));
    assert_eq!(conn["source"], "socket", "read from the socket: {conn}");
    inspected_five(conn)
}

/// `psql "host=10.77.0.2 port=PORT … keepalives=0"` in the client namespace: libpq connects,
/// sends its first packet and waits for the (silent) server's reply, holding the connection.
fn psql(lab: &Lab, preload: bool, vars: &[(&str, &str)], port: u16) -> Background {
    let conninfo =
        format!("host={SERVER4} port={port} dbname=x user=x keepalives=0 connect_timeout=0");
    let mut cmd = lab.command('c', preload, "psql");
    cmd.arg(conninfo).envs(vars.iter().copied());
    Background::spawn(cmd)
}

/// psql's `keepalives=0` makes no system call the library could see. Without the library: no
/// keepalive. With it and no rules: keepalive on (the library cannot tell the choice from no
/// choice). With `KEEPALIVE_EXCLUDE` naming the server: off again, the socket exactly as without
/// the library, while a connection elsewhere (psql to another port, and the second connection of
/// one python process holding both) gets the library's options.
#[test]
fn psql_keepalives_0_with_an_exclusion_keeps_keepalive_off_while_other_connections_get_it() {
    let Some(lab) = Lab::new() else { return };
    if !have("psql", TEST_SH) {
        return;
    }
    const DB: u16 = 5432;
    const OTHER: u16 = 5433;
    let _db = lab.server("silent", DB);
    let _other = lab.server("silent", OTHER);
    let rule = format!("{SERVER4}:{DB}");
    let exclude = [("KEEPALIVE_EXCLUDE", rule.as_str())];

    let without = psql(&lab, false, &[], DB);
    let with = psql(&lab, true, &[], DB);
    let excluded = psql(&lab, true, &exclude, DB);
    let elsewhere = psql(&lab, true, &exclude, OTHER);
    let targets = [format!("{SERVER4}:{DB}"), format!("{SERVER4}:{OTHER}")];
    let hold = ["hold", &targets[0], &targets[1]];
    let both = lab.python('c', true, &exclude, "client.py", &hold);
    both.expect("connected", Duration::from_secs(10));

    let pid = |bg: &Background| bg.child.id();
    assert_eq!(
        keepalive_timer(&lab, pid(&without), DB),
        None,
        "psql keepalives=0 without the library: no keepalive"
    );
    let timer = keepalive_timer(&lab, pid(&with), DB).expect("the library turns keepalive on");
    assert!(timer <= 30, "the library's 30 s idle: {timer}");
    assert_eq!(
        keepalive_timer(&lab, pid(&excluded), DB),
        None,
        "KEEPALIVE_EXCLUDE={rule}: keepalive off again"
    );
    let timer = keepalive_timer(&lab, pid(&elsewhere), OTHER)
        .expect("psql to another port, same exclusion: keepalive on");
    assert!(timer <= 30, "the library's 30 s idle: {timer}");
    assert_eq!(
        keepalive_timer(&lab, pid(&both), DB),
        None,
        "one process, its connection to the excluded {rule}: keepalive off"
    );
    let timer = keepalive_timer(&lab, pid(&both), OTHER)
        .expect("one process, its connection to another port: keepalive on");
    assert!(timer <= 30, "the library's 30 s idle: {timer}");

    // The same, from the live sockets: excluded means exactly what the program had without the
    // library, not merely keepalive off.
    let tool = tool_beside_library();
    if !tool.is_file() {
        unavailable::<()>(&format!(
            "{} is missing (KEEPALIVE_SHIM_TEST_LIBRARY names a library built without the tool): \
             the options not read from the sockets",
            tool.display()
        ));
        return;
    }
    let alone = options(&tool, pid(&without), DB);
    assert_eq!(alone, KERNEL, "psql without the library");
    assert_eq!(options(&tool, pid(&with), DB), OURS, "psql, no rules");
    assert_eq!(options(&tool, pid(&excluded), DB), alone, "psql, excluded");
    assert_eq!(
        options(&tool, pid(&elsewhere), OTHER),
        OURS,
        "psql, elsewhere"
    );
    assert_eq!(options(&tool, pid(&both), DB), alone, "python, excluded");
    assert_eq!(options(&tool, pid(&both), OTHER), OURS, "python, elsewhere");
    eprintln!("psql keepalives=0: without {alone:?}, excluded {alone:?}, elsewhere {OURS:?}");
}

/// A server that sets its own keepalive (1 s / 1 s / 2) on the socket it accepted, 2 s after
/// accepting it, once the client's link is already cut: without the library it fails with
/// ETIMEDOUT about 2 s after setting them (T0); with the library's defaults no later than
/// T0 + 1 s, because the user timeout follows the keepalive the server set (1 + 1 × 2 = 3 s).
/// Before it did on accepted sockets, the library's 60 s user timeout held it past 15 s.
#[test]
fn server_keepalive_set_on_an_accepted_socket_notices_a_dead_client_no_later_with_the_library() {
    let Some(lab) = Lab::new() else { return };
    let without = lab.serve_once(false, &[], 8081, &OWN_KEEPALIVE_1_1_2);
    let with = lab.serve_once(true, &[], 8082, &OWN_KEEPALIVE_1_1_2);
    let _clients = [lab.hold(8081), lab.hold(8082)];
    for server in [&without, &with] {
        server.expect("accepted", Duration::from_secs(10));
    }
    // Both servers are still settling: the keepalive they set is set on a dead link.
    lab.cut("client");
    let (ut_without, t0) =
        own_keepalive_timed_out("server.py 1/1/2, without the library", &without, 20.0);
    let (ut_with, with_s) =
        own_keepalive_timed_out("server.py 1/1/2, library defaults", &with, 20.0);
    eprintln!(
        "accepted socket, own keepalive 1/1/2: without the library {t0:.2} s \
         (user timeout {ut_without} ms), with it {with_s:.2} s (user timeout {ut_with} ms)"
    );
    assert_eq!(ut_without, 0, "without the library, no user timeout");
    assert_between("server.py 1/1/2, without the library", t0, 1.5, 3.5);
    assert!(
        with_s <= t0 + 1.0,
        "with the library {with_s:.2} s (user timeout {ut_with} ms), later than T0 + 1 s \
         ({t0:.2} s without it)"
    );
}

/// A server that sets no keepalive of its own (`server.py --mode once`): with the library and
/// `FAST_KEEPALIVE` (2 s / 1 s / 2) in its environment it notices the dead client 4 s after the
/// last thing it heard (the accept) and no later than 5 s; without the library it is still
/// blocked at three times that.
#[test]
fn server_that_sets_nothing_notices_a_dead_client_with_the_library_only() {
    let Some(lab) = Lab::new() else { return };
    let mut without = lab.serve_once(false, &FAST_KEEPALIVE, 8081, &[]);
    let with = lab.serve_once(true, &FAST_KEEPALIVE, 8082, &[]);
    let _clients = [lab.hold(8081), lab.hold(8082)];
    for server in [&without, &with] {
        server.expect("accepted", Duration::from_secs(10));
    }
    let t0 = lab.cut("client");
    let with_s = once_ended("server.py, library, FAST_KEEPALIVE", &with, None, 10.0);
    assert_between(
        "server.py, library, FAST_KEEPALIVE (seconds since accept)",
        with_s,
        3.5,
        5.0,
    );
    assert_still_blocked(
        "server.py, without the library, FAST_KEEPALIVE",
        &mut without,
        t0,
        12.0,
    );
}
