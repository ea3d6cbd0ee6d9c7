//! Real clients (curl, wget) with and without the library, read from outside the process the way
//! an operator would: the keepalive timer that `ss -tnop` shows on each connection.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The keepalive timer `ss` shows on `pid`'s connection to `port`: `Some(seconds left)`, or
/// `None` when the connection has no keepalive timer. Waits for the connection to appear.
fn keepalive_timer(pid: u32, port: u16) -> Option<u64> {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        let out = Command::new("ss")
            .args(["-tnopH", "state", "established"])
            .arg(format!("( dport = :{port} )"))
            .output()
            .expect("ss from iproute2");
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| l.contains(&format!("pid={pid},"))) {
            return parse_keepalive(line);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no connection of pid {pid} to port {port} appeared");
}

/// Runs `argv` against a silent server with and without the library, and returns the keepalive
/// timer of each run's connection.
fn timer_of(argv: &[&str], preload: bool, vars: &[(&str, &str)], port: u16) -> Option<u64> {
    let url = format!("http://127.0.0.1:{port}/");
    let mut cmd = command(preload, argv[0]);
    cmd.args(&argv[1..]).arg(&url).envs(vars.iter().copied());
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = Background::spawn(cmd);
    let timer = keepalive_timer(child.child.id(), port);
    assert!(
        child.running(),
        "{argv:?} should still be waiting for the silent server"
    );
    timer
}

#[test]
fn parse_ss_timers() {
    assert_eq!(parse_keepalive("x timer:(keepalive,18sec,0)"), Some(18));
    assert_eq!(parse_keepalive("x timer:(keepalive,1min18sec,0)"), Some(78));
    assert_eq!(parse_keepalive("x timer:(keepalive,900ms,0)"), Some(0));
    assert_eq!(parse_keepalive("x users:((\"wget\",pid=1,fd=4))"), None);
}

#[test]
fn curl_keeps_its_own_keepalive_unless_forced() {
    let (_server, port) = server("silent");
    let curl = ["curl", "-s"];
    let idle = [("KEEPALIVE_IDLE", "20")];
    let without = timer_of(&curl, false, &idle, port).expect("curl sets its own keepalive");
    assert!((55..=60).contains(&without), "curl's own 60 s: {without}");
    let with = timer_of(&curl, true, &idle, port).expect("keepalive");
    assert!(
        (55..=60).contains(&with),
        "curl's own 60 s must stand: {with}"
    );
    let forced = [("KEEPALIVE_IDLE", "20"), ("KEEPALIVE_FORCE", "1")];
    let forced = timer_of(&curl, true, &forced, port).expect("keepalive");
    assert!((15..=20).contains(&forced), "with FORCE ours: {forced}");
}

#[test]
fn wget_has_no_keepalive_of_its_own_and_gets_ours() {
    let (_server, port) = server("silent");
    let wget = ["wget", "-q", "-O", "/dev/null", "--tries=1"];
    let idle = [("KEEPALIVE_IDLE", "20")];
    assert_eq!(
        timer_of(&wget, false, &idle, port),
        None,
        "wget alone: no keepalive"
    );
    let with = timer_of(&wget, true, &idle, port).expect("keepalive from the library");
    assert!((15..=20).contains(&with), "ours: {with}");
}
