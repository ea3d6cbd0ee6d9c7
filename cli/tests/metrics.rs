//! `keepalive-shim metrics` scraped by a real Prometheus (Debian's `prometheus` package, started
//! here on loopback with a scrape configuration of this test's own, one scrape a second, stopped
//! by PID when the test ends, also when it fails), in the dead-peer lab: a preloaded client in
//! the client namespace opens connections to a silent server and one to a listener on its own
//! loopback, then the server's link is cut. Prometheus' HTTP API must show the configured count
//! risen by exactly the connections made and the timed-out count (the client namespace's
//! `TcpExt: TCPAbortOnTimeout`) risen by exactly the connections cut, within the library's bound
//! (idle 2 s + interval 1 s x 2 probes) plus one scrape interval; `inspect --json` must show the
//! same counts. The endpoint runs in the test's (host) namespace and reads the client's
//! namespace through `/proc/PID/net/netstat` of the client process.
//!
//! Also, without root: `inspect` reads each of two copies of the library in one process, and
//! says what it cannot read (a library of another layout version, one without counters); the
//! endpoint answers `GET`/`HEAD` of `/metrics` only, and nothing listens unless an address is
//! given.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::lab::{FAST_KEEPALIVE, Lab, SERVER4};
use common::prometheus::{FRESH_S, Killed, Prometheus, SCRAPE_S, SLACK_S, http, metrics_endpoint};
use common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");
/// `FAST_KEEPALIVE`: a silent peer is noticed 2 + 1 x 2 = 4 s after the cut at the latest.
const BOUND_S: f64 = 4.0;
/// Connections to the silent server (cut), and to a listener on the client's loopback (not).
const CUT: usize = 3;
const KEPT: usize = 1;

/// `keepalive-shim metrics --listen 127.0.0.1:0` and the address it serves.
fn endpoint() -> (Killed, String) {
    metrics_endpoint(CLI, &[])
}

/// The record `inspect --json PID` prints for the process.
fn inspected(pid: u32) -> Value {
    let out = output_ok(command(false, CLI).args(["inspect", "--json", &pid.to_string()]));
    let all: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    all.as_array()
        .expect("an array")
        .iter()
        .find(|r| r["kind"] == "process" && r["pid"] == pid)
        .unwrap_or_else(|| panic!("no process record in {all}"))
        .clone()
}

/// The client: waits for a line on stdin, then connects to each HOST:PORT of its arguments,
/// prints `connected`, and holds the connections, sending nothing.
const CLIENT: &str = "\
import socket, sys, time
print('ready', flush=True)
sys.stdin.readline()
held = [socket.create_connection((h, int(p))) for h, p in (a.rsplit(':', 1) for a in sys.argv[1:])]
print('connected', flush=True)
time.sleep(3600)
";

#[test]
fn prometheus_sees_the_connections_configured_and_the_dead_ones_the_kernel_ended() {
    let Some(lab) = Lab::new() else { return };
    if !have(
        "prometheus",
        "Debian's prometheus; scripts/test.sh installs it",
    ) || !have("curl", "scripts/test.sh installs it")
    {
        return;
    }
    let (server, _local) = lab.silent_peers();
    let (_endpoint, addr) = endpoint();
    let prometheus = Prometheus::start(&addr);

    let mut targets = vec![format!("{SERVER4}:8080"); CUT];
    targets.extend(vec!["127.0.0.1:8081".to_owned(); KEPT]);
    let mut argv: Vec<&OsStr> = vec![python().as_os_str(), OsStr::new("-c"), OsStr::new(CLIENT)];
    argv.extend(targets.iter().map(OsStr::new));
    let mut client = lab.spawn('c', true, &FAST_KEEPALIVE, &argv);
    client.expect("ready", Duration::from_secs(10));
    let pid = client.child.id();
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let netns = netns.to_string_lossy();
    let inode = netns.trim_start_matches("net:[").trim_end_matches(']');
    let configured = format!("keepalive_shim_connections_configured_total{{pid=\"{pid}\"}}");
    let sockets = format!("keepalive_shim_sockets_configured_total{{pid=\"{pid}\"}}");
    let timed_out = format!("keepalive_shim_connections_timed_out_total{{netns=\"{inode}\"}}");

    // Before: the process is scraped with nothing counted yet, in a namespace just made.
    prometheus.until(&configured, 0.0, 15.0);
    prometheus.until(&timed_out, 0.0, 5.0);
    let before = inspected(pid);
    assert_eq!(before["connections_configured"], 0, "{before}");
    assert_eq!(before["network_namespace"]["connections_timed_out"], 0);

    client.say("go");
    client.expect("connected", Duration::from_secs(10));
    for _ in 0..CUT {
        server.expect("accepted", Duration::from_secs(10));
    }
    let made = (CUT + KEPT) as f64;
    let took = prometheus.until(&configured, made, 3.0 * SCRAPE_S + 2.0);
    eprintln!("configured: {made} in Prometheus {took:.2} s after the connections were made");
    assert_eq!(prometheus.query(&sockets), Some(made));
    let after = inspected(pid);
    assert_eq!(after["connections_configured"], CUT + KEPT, "{after}");
    assert_eq!(after["sockets_configured"], CUT + KEPT, "{after}");
    assert_eq!(after["connections_excluded"], 0, "{after}");

    lab.cut("server");
    let t_cut = Instant::now();
    // The endpoint answers from a scrape up to FRESH_S old (a flood of requests costs one
    // scrape a second), and Prometheus scrapes every SCRAPE_S.
    let took = prometheus.until(&timed_out, CUT as f64, BOUND_S + SCRAPE_S + FRESH_S + 2.0);
    eprintln!(
        "timed out: {CUT} in Prometheus {took:.2} s after the cut (bound {BOUND_S} s + one \
         scrape, {SCRAPE_S} s, + the endpoint's reuse of a scrape, {FRESH_S} s)"
    );
    assert!(
        took <= BOUND_S + SCRAPE_S + FRESH_S + SLACK_S,
        "{took:.2} s: later than the bound, one scrape interval and the endpoint's reuse (and \
         the query's own time)"
    );
    // Exactly: nothing more times out (the loopback connection lives), nothing else counts.
    std::thread::sleep(Duration::from_secs_f64(2.0 * SCRAPE_S));
    assert_eq!(prometheus.query(&timed_out), Some(CUT as f64));
    assert_eq!(prometheus.query(&configured), Some(made));
    let ended = inspected(pid);
    assert_eq!(
        ended["network_namespace"]["connections_timed_out"], CUT,
        "{ended}"
    );
    assert_eq!(ended["connections_configured"], CUT + KEPT, "{ended}");
    assert!(t_cut.elapsed() < Duration::from_secs(30));
    drop(client);
}

#[test]
fn the_endpoint_serves_metrics_only_and_only_where_asked() {
    let (_endpoint, addr) = endpoint();
    let ok = http(
        &addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{ok}"
    );
    assert!(ok.contains("# TYPE keepalive_shim_connections_timed_out_total counter\n"));
    assert!(ok.contains("# TYPE keepalive_shim_connections_configured_total counter\n"));
    let head = http(
        &addr,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let other = http(
        &addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    let post = http(
        &addr,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let junk = http(&addr, "\x01\x02 nonsense\r\n\r\n");
    assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    // No address, no listening: the command refuses to start.
    let out = command(false, CLI).arg("metrics").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
}

/// A copy of the library at `scratch()/NAME/libkeepalive_shim.so`, its bytes changed by `patch`.
fn library_copy(name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = std::fs::read(library()).unwrap();
    patch(&mut bytes);
    let path = dir.join("libkeepalive_shim.so");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Where `needle` is in `bytes`, which must hold it exactly once.
fn only(bytes: &[u8], needle: &[u8]) -> usize {
    let at: Vec<usize> = (0..bytes.len().saturating_sub(needle.len()))
        .filter(|&i| bytes[i..].starts_with(needle))
        .collect();
    assert_eq!(
        at.len(),
        1,
        "{:?} found {} times",
        String::from_utf8_lossy(needle),
        at.len()
    );
    at[0]
}

/// python3 with `preload` as LD_PRELOAD, connected to `port` on loopback and holding it.
fn holder(preload: &str, port: u16) -> Background {
    let mut cmd = command(false, python());
    cmd.env("LD_PRELOAD", preload).args([
        "-c",
        &format!(
            "import socket, time\ns = socket.create_connection(('127.0.0.1', {port}))\n\
             print('connected', flush=True)\ntime.sleep(600)"
        ),
    ]);
    let bg = Background::spawn(cmd);
    bg.expect("connected", Duration::from_secs(10));
    bg
}

#[test]
fn inspect_reads_each_copy_and_says_what_it_cannot_read() {
    let (_server, port) = server("silent");
    let a = library_copy("copy-a", |_| {});
    let b = library_copy("copy-b", |_| {});
    // The block's version (after the magic) changed: a library of another layout version.
    let other = library_copy("other-version", |bytes| {
        let at = only(bytes, b"KASHCTRS") + 8;
        bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    });
    // A shared library of that name without the symbol: one that publishes no counters, as a
    // keepalive-shim from before them.
    let older = scratch().join("no-counters/libkeepalive_shim.so");
    std::fs::create_dir_all(older.parent().unwrap()).unwrap();
    let mut gcc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-x", "c", "-", "-o"])
        .arg(&older)
        .stdin(Stdio::piped())
        .spawn()
        .expect("gcc");
    gcc.stdin
        .take()
        .unwrap()
        .write_all(b"int keepalive_shim_before_counters = 1;\n")
        .unwrap();
    assert!(gcc.wait().unwrap().success());
    let two = holder(&format!("{}:{}", a.display(), b.display()), port);
    let record = inspected(two.child.id());
    let copies = record["libraries"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{record}");
    // In the order of their addresses; the first loaded (a) acts, the other passes through.
    let copy = |lib: &PathBuf| {
        copies
            .iter()
            .find(|c| c["path"] == lib.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {} in {record}", lib.display()))
    };
    assert_eq!(
        copy(&a)["counters"]["connections_configured"],
        1,
        "{record}"
    );
    assert_eq!(
        copy(&b)["counters"]["connections_configured"],
        0,
        "the second copy is passive"
    );
    assert_eq!(record["connections_configured"], 1, "{record}");
    assert_eq!(record["sockets_configured"], 1, "{record}");

    for (lib, says) in [
        (&other, "counters of layout version 99"),
        (&older, "publishes no counters"),
    ] {
        let p = holder(lib.to_str().unwrap(), port);
        let record = inspected(p.child.id());
        let copy = &record["libraries"][0];
        assert!(copy["counters"].is_null(), "{record}");
        assert!(copy["error"].as_str().unwrap().contains(says), "{record}");
        assert!(record.get("sockets_configured").is_none(), "{record}");
        // The table says it too, and the live socket is still shown.
        let out = output_ok(command(false, CLI).args(["inspect", &p.child.id().to_string()]));
        let text = text(&out.stdout);
        assert!(
            text.contains(says) && text.contains("ESTABLISHED"),
            "{text}"
        );
    }

    // The endpoint adds the copies up.
    let (_endpoint, addr) = endpoint();
    let scrape = http(&addr, "GET /metrics HTTP/1.1\r\n\r\n");
    let line = format!("pid=\"{}\",command=\"python3\"}} 1", two.child.id());
    assert!(
        scrape.lines().any(
            |l| l.starts_with("keepalive_shim_connections_configured_total{") && l.ends_with(&line)
        ),
        "{scrape}"
    );
}
