//! The product, end to end: a real client (python3 with requests, no timeout) whose server's
//! network goes away fails within the configured bound with the library, and is still blocked at
//! three times that bound without it. Each test builds its own three-namespace lab
//! (`scripts/lab.sh`), cuts the server's own link (or the client's, for the server-side case),
//! and runs the same program with and without the library side by side.

mod common;

use common::lab::{Lab, SERVER4, SERVER6};
use common::*;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

const PORT: &str = "8080";

/// `IDLE=2 INTERVAL=1 COUNT=2`: a silent peer is detected after 2 + 1 × 2 = 4 s.
const FAST_KEEPALIVE: [(&str, &str); 3] = [
    ("KEEPALIVE_IDLE", "2"),
    ("KEEPALIVE_INTERVAL", "1"),
    ("KEEPALIVE_COUNT", "2"),
];
/// A 3 s user timeout, with keepalive far too slow to be the one that fires.
const USER_TIMEOUT_3S: [(&str, &str); 2] =
    [("KEEPALIVE_USER_TIMEOUT", "3s"), ("KEEPALIVE_IDLE", "600")];

/// `tests/programs/NAME ARGS...` run by python3 in the lab's client (`'c'`) or server (`'s'`)
/// namespace.
fn python_in(
    lab: &Lab,
    side: char,
    preload: bool,
    vars: &[(&str, &str)],
    name: &str,
    args: &[&str],
) -> Background {
    let script = program(name);
    let mut argv: Vec<&OsStr> = vec![python().as_os_str(), script.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    lab.spawn(side, preload, vars, &argv)
}

/// `server.py --mode=MODE` on the server's address and `port`, once it listens.
fn serve(
    lab: &Lab,
    preload: bool,
    vars: &[(&str, &str)],
    mode: &str,
    host: &str,
    port: &str,
) -> Background {
    let args = [
        format!("--mode={mode}"),
        format!("--host={host}"),
        format!("--port={port}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = python_in(lab, 's', preload, vars, "server.py", &args);
    server.expect("listening", Duration::from_secs(10));
    server
}

fn url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{PORT}/")
    } else {
        format!("http://{ip}:{PORT}/")
    }
}

/// The line starting with `prefix` that `bg` prints, and the seconds from `t0` until it did.
fn ended(bg: &Background, prefix: &str, t0: Instant, bound: f64) -> (String, f64) {
    let line = bg.expect(prefix, Duration::from_secs_f64(bound + 5.0));
    (line, t0.elapsed().as_secs_f64())
}

/// The bound holds: the error came no earlier than bound − 0.5 s and no later than bound + 2 s.
fn assert_within(what: &str, seconds: f64, bound: f64) {
    eprintln!("{what}: ended after {seconds:.2} s (bound {bound} s)");
    assert!(
        seconds >= bound - 0.5 && seconds <= bound + 2.0,
        "{what}: ended after {seconds:.2} s, outside [{:.1}, {:.1}]",
        bound - 0.5,
        bound + 2.0
    );
}

/// The run without the library is still blocked at `t0 + check` (three times the bound).
fn assert_still_blocked(what: &str, bg: &mut Background, t0: Instant, check: f64) {
    let left = Duration::from_secs_f64(check).saturating_sub(t0.elapsed());
    std::thread::sleep(left);
    assert!(
        bg.running(),
        "{what}: without the library it should still be blocked at {check} s"
    );
    eprintln!("{what}: without the library still blocked at {check} s");
}

/// Cases 1 and 5: `requests.get(url)` with no timeout to a server that accepted and never
/// answers; the server's link is cut.
fn waiting_for_an_answer(server_ip: &str) {
    let Some(lab) = Lab::new() else { return };
    let server = serve(&lab, false, &[], "silent", server_ip, PORT);
    let client = ["get", &url(server_ip)];
    let with = python_in(&lab, 'c', true, &FAST_KEEPALIVE, "client.py", &client);
    let mut without = python_in(&lab, 'c', false, &FAST_KEEPALIVE, "client.py", &client);
    for _ in 0..2 {
        server.expect("request", Duration::from_secs(10));
    }
    lab.cut("server");
    let t0 = Instant::now();
    let (line, seconds) = ended(&with, "result", t0, 4.0);
    assert!(!line.contains(" ok "), "{line}");
    assert_within(
        &format!("waiting for an answer ({server_ip})"),
        seconds,
        4.0,
    );
    assert_still_blocked("waiting for an answer", &mut without, t0, 12.0);
}

#[test]
fn case1_a_request_waiting_for_an_answer_fails_after_idle_plus_probes() {
    waiting_for_an_answer(SERVER4);
}

#[test]
fn case5_the_same_over_ipv6() {
    waiting_for_an_answer(SERVER6);
}

#[test]
fn case2_a_request_never_acknowledged_fails_after_the_user_timeout() {
    let Some(lab) = Lab::new() else { return };
    let _server = serve(&lab, false, &[], "http", SERVER4, PORT);
    let client = ["session", &url(SERVER4)];
    let mut with = python_in(&lab, 'c', true, &USER_TIMEOUT_3S, "client.py", &client);
    let mut without = python_in(&lab, 'c', false, &USER_TIMEOUT_3S, "client.py", &client);
    with.expect("first-done", Duration::from_secs(10));
    without.expect("first-done", Duration::from_secs(10));
    lab.cut("server");
    with.say("go");
    without.say("go");
    let t0 = Instant::now();
    let (line, seconds) = ended(&with, "result", t0, 3.0);
    assert!(!line.contains(" ok "), "{line}");
    assert_within("unacknowledged request", seconds, 3.0);
    assert_still_blocked("unacknowledged request", &mut without, t0, 9.0);
}

#[test]
fn case3_connecting_to_a_peer_that_is_gone_fails_after_the_user_timeout() {
    let Some(lab) = Lab::new() else { return };
    lab.cut("server");
    let client = ["get", &url(SERVER4)];
    let t0 = Instant::now();
    let with = python_in(&lab, 'c', true, &USER_TIMEOUT_3S, "client.py", &client);
    let mut without = python_in(&lab, 'c', false, &USER_TIMEOUT_3S, "client.py", &client);
    let (line, _) = ended(&with, "result", t0, 3.0);
    // The client times its own call, which starts after Python has imported requests.
    let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        line.contains("ConnectionError") || line.contains("ConnectTimeout"),
        "{line}"
    );
    assert_within("connect to a cut server", seconds, 3.0);
    assert_still_blocked("connect to a cut server", &mut without, t0, 9.0);
}

#[test]
fn case4_a_server_notices_its_vanished_client() {
    let Some(lab) = Lab::new() else { return };
    let with = serve(&lab, true, &FAST_KEEPALIVE, "once", SERVER4, "8081");
    let mut without = serve(&lab, false, &FAST_KEEPALIVE, "once", SERVER4, "8082");
    let targets = [format!("{SERVER4}:8081"), format!("{SERVER4}:8082")];
    let hold = ["hold", &targets[0], &targets[1]];
    let _client = python_in(&lab, 'c', false, &[], "client.py", &hold);
    with.expect("accepted", Duration::from_secs(10));
    without.expect("accepted", Duration::from_secs(10));
    lab.cut("client");
    let t0 = Instant::now();
    let (line, seconds) = ended(&with, "error", t0, 4.0);
    assert!(line.contains("TimeoutError"), "{line}");
    assert_within("server side, accepted connection", seconds, 4.0);
    assert_still_blocked("server side, accepted connection", &mut without, t0, 12.0);
}
