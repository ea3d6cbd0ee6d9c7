//! The product, end to end: a real client (python3 with requests, no timeout) whose server's
//! network goes away fails within the configured bound with the library, and is still blocked at
//! three times that bound without it. Each test builds its own three-namespace lab
//! (`scripts/lab.sh`), cuts the server's own link (or the client's, for the server-side case),
//! and runs the same program with and without the library side by side.

mod common;

use common::lab::{FAST_KEEPALIVE, Lab, SERVER4, SERVER6, USER_TIMEOUT_3S};
use common::*;
use std::time::{Duration, Instant};

const PORT: u16 = 8080;

fn url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{PORT}/")
    } else {
        format!("http://{ip}:{PORT}/")
    }
}

/// Cases 1 and 5: `requests.get(url)` with no timeout to a server that accepted and never
/// answers; the server's link is cut.
fn waiting_for_an_answer(server_ip: &str) {
    let Some(lab) = Lab::new() else { return };
    let server = lab.serve(false, &[], "silent", server_ip, PORT);
    let client = ["get", &url(server_ip)];
    let mut with = lab.python('c', true, &FAST_KEEPALIVE, "client.py", &client);
    let mut without = lab.python('c', false, &FAST_KEEPALIVE, "client.py", &client);
    server.expect_from(
        "request",
        &mut [("with the library", &mut with), ("without", &mut without)],
        Duration::from_secs(10),
    );
    let t0 = lab.cut("server");
    let what = format!("waiting for an answer ({server_ip})");
    let (line, seconds) = with.expect_timed(&what, "result", t0, 4.0 + 5.0);
    assert!(!line.contains(" ok "), "{line}");
    assert_within(&what, seconds, 4.0);
    assert_still_blocked(
        "waiting for an answer, without the library",
        &mut without,
        t0,
        12.0,
    );
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
    let _server = lab.server("http", PORT);
    let client = ["session", &url(SERVER4)];
    let mut with = lab.python('c', true, &USER_TIMEOUT_3S, "client.py", &client);
    let mut without = lab.python('c', false, &USER_TIMEOUT_3S, "client.py", &client);
    with.expect("first-done", Duration::from_secs(10));
    without.expect("first-done", Duration::from_secs(10));
    lab.cut("server");
    with.say("go");
    without.say("go");
    let t0 = Instant::now();
    let what = "unacknowledged request";
    let (line, seconds) = with.expect_timed(what, "result", t0, 3.0 + 5.0);
    assert!(!line.contains(" ok "), "{line}");
    assert_within(what, seconds, 3.0);
    assert_still_blocked(
        "unacknowledged request, without the library",
        &mut without,
        t0,
        9.0,
    );
}

#[test]
fn case3_connecting_to_a_peer_that_is_gone_fails_after_the_user_timeout() {
    let Some(lab) = Lab::new() else { return };
    lab.cut("server");
    let client = ["get", &url(SERVER4)];
    let t0 = Instant::now();
    let with = lab.python('c', true, &USER_TIMEOUT_3S, "client.py", &client);
    let mut without = lab.python('c', false, &USER_TIMEOUT_3S, "client.py", &client);
    let what = "connect to a cut server";
    let (line, _) = with.expect_timed(what, "result", t0, 3.0 + 5.0);
    // The client times its own call, which starts after Python has imported requests.
    let seconds = seconds_in(&line);
    assert!(
        line.contains("ConnectionError") || line.contains("ConnectTimeout"),
        "{line}"
    );
    assert_within(what, seconds, 3.0);
    assert_still_blocked(
        "connect to a cut server, without the library",
        &mut without,
        t0,
        9.0,
    );
}

#[test]
fn case4_a_server_notices_its_vanished_client() {
    let Some(lab) = Lab::new() else { return };
    let with = lab.serve(true, &FAST_KEEPALIVE, "once", SERVER4, 8081);
    let mut without = lab.serve(false, &FAST_KEEPALIVE, "once", SERVER4, 8082);
    let targets = [format!("{SERVER4}:8081"), format!("{SERVER4}:8082")];
    let hold = ["hold", &targets[0], &targets[1]];
    let _client = lab.python('c', false, &[], "client.py", &hold);
    with.expect("accepted", Duration::from_secs(10));
    without.expect("accepted", Duration::from_secs(10));
    let t0 = lab.cut("client");
    let what = "server side, accepted connection";
    let (line, seconds) = with.expect_timed(what, "error", t0, 4.0 + 5.0);
    assert!(line.contains("TimeoutError"), "{line}");
    assert_within(what, seconds, 4.0);
    assert_still_blocked(
        "server side, accepted connection, without the library",
        &mut without,
        t0,
        12.0,
    );
}
