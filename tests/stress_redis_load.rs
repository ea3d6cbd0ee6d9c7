//! Stress: a real server under load: redis-server driven by redis-benchmark on loopback, with
//! and without the library in alternating runs: every request served, accepted sockets inherit
//! the library's keepalive only with it, throughput within noise (asserted only ≥ 0.8).
//!
//! A hang is a failure; `KEEPALIVE_SHIM_STRESS_LONG=1` runs the long variant; the helpers and the
//! suite's rules are in `tests/common/stress.rs`.

mod common;

use common::stress::*;
use common::*;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on loopback (bound and released: redis binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One RESP command to redis on `port`, and its whole reply as text.
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(req.as_bytes()).unwrap();
    // A bulk string: "$LEN\r\n" then LEN bytes.
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed the connection");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(head) = text.strip_prefix('$') {
            if let Some((len, rest)) = head.split_once("\r\n")
                && rest.len() >= len.parse::<usize>().unwrap()
            {
                return rest.to_owned();
            }
        } else if text.ends_with("\r\n") {
            return text.into_owned();
        }
    }
}

/// A field of `INFO commandstats` for one command: `calls`, `failed_calls`, `rejected_calls`.
fn command_stat(info: &str, command: &str, field: &str) -> u64 {
    let line = info
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .unwrap_or_else(|| panic!("no {command} in {info}"));
    line.split([':', ','])
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .map_or(0, |v| v.parse().unwrap())
}

/// A redis-server on loopback, with or without the library; killed when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    /// Starts redis-server on a free port; tries another port should that one be taken first.
    fn start(preload: bool) -> Redis {
        for _ in 0..3 {
            let port = free_port();
            let dir = scratch().join(format!("redis-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = command(preload, "redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                // No keepalive of redis's own: accepted sockets show what the listener had.
                .args(["--tcp-keepalive", "0", "--maxclients", "1000"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("redis-server");
            let end = Instant::now() + Duration::from_secs(10);
            let mut exited = false;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < end,
                    "redis-server did not listen on {port}"
                );
                if child.try_wait().unwrap().is_some() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let redis = Redis { child, port };
            if !exited {
                // The one listening is this redis-server, not someone else's program.
                let info = redis_command(port, &["INFO", "server"]);
                if info.contains(&format!("process_id:{}\r\n", redis.child.id())) {
                    return redis;
                }
            }
        }
        panic!("redis-server could not listen on a free port in three tries");
    }

    /// Whether the server side of a connection it accepts has the keepalive timer on (ss).
    fn accepted_keepalive(&self) -> bool {
        let conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let local = conn.local_addr().unwrap().port();
        // The server has accepted once it answers.
        assert_eq!(redis_command(self.port, &["PING"]), "+PONG\r\n");
        let out = Command::new("ss")
            .args(["-tnoH", "state", "established"])
            .arg(format!("( sport = :{} and dport = :{local} )", self.port))
            .output()
            .expect("ss");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.trim().is_empty(), "ss found no accepted socket");
        drop(conn);
        text.contains("timer:(keepalive")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SAFETY: kill() of the process group made for this redis-server (process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// redis-benchmark's requests per second for each test of `args`, after checking that every
/// request was served without an error.
fn benchmark(redis: &Redis, preload: bool, args: &[&str], requests: u64) -> Vec<f64> {
    let r = run(
        command(preload, "redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
            .args(["-q", "--csv", "-n", &requests.to_string()])
            .args(args),
        Duration::from_secs(pick(120, 600)),
    )
    .ok("redis-benchmark");
    // With -k 0 it warns that it makes a connection per request; nothing else may be there.
    let unexpected: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("WARNING: Keepalive disabled"))
        .collect();
    assert!(unexpected.is_empty(), "redis-benchmark: {}", r.stderr);
    r.stdout
        .lines()
        .skip(1)
        .map(|l| {
            let rps = l.split(',').nth(1).unwrap().trim_matches('"');
            rps.parse().unwrap_or_else(|_| panic!("{l}"))
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn redis_under_load_serves_every_request_at_the_same_speed() {
    if !have("redis-server", TEST_SH) || !have("redis-benchmark", TEST_SH) {
        return;
    }
    if !have("ss", TEST_SH) {
        return;
    }
    let _turn = one_at_a_time();
    let rounds = pick(4, 8);
    let requests = pick(40_000, 400_000);
    let churn = pick(3_000, 20_000);
    // Per round, the ratio with / without of [kept connections, a new connection per request];
    // the two runs of a round are adjacent in time, and which goes first alternates.
    let mut ratios = [Vec::new(), Vec::new()];
    let start = Instant::now();
    for round in 0..rounds {
        let mut measured = [[0.0; 2]; 2];
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for preload in order {
            let redis = Redis::start(preload);
            assert_eq!(
                redis.accepted_keepalive(),
                preload,
                "the accepted socket inherits the library's keepalive only with it"
            );
            let kept = benchmark(&redis, preload, &["-t", "set,get", "-c", "20"], requests);
            let fresh = benchmark(
                &redis,
                preload,
                &["-t", "ping_mbulk", "-c", "10", "-k", "0"],
                churn,
            );
            let info = redis_command(redis.port, &["INFO", "commandstats"]);
            for cmd in ["set", "get", "ping"] {
                let expected = match cmd {
                    "ping" => churn + 1,
                    _ => requests,
                };
                assert_eq!(command_stat(&info, cmd, "calls"), expected, "{cmd}: {info}");
                assert_eq!(command_stat(&info, cmd, "failed_calls"), 0, "{info}");
                assert_eq!(command_stat(&info, cmd, "rejected_calls"), 0, "{info}");
            }
            let stats = redis_command(redis.port, &["INFO", "stats"]);
            assert!(stats.contains("rejected_connections:0"), "{stats}");
            eprintln!(
                "redis round {round} {}: SET/GET {:.0}/{:.0} rps, new connection per PING {:.0} \
                 rps",
                if preload { "with   " } else { "without" },
                kept[0],
                kept[1],
                fresh[0]
            );
            measured[usize::from(preload)] =
                [kept.iter().sum::<f64>() / kept.len() as f64, fresh[0]];
        }
        for (k, ratio) in ratios.iter_mut().enumerate() {
            ratio.push(measured[1][k] / measured[0][k]);
        }
    }
    let [mut kept, mut fresh] = ratios;
    eprintln!("redis per-round ratios with / without: kept {kept:.3?}, per request {fresh:.3?}");
    let kept_ratio = median(&mut kept);
    let fresh_ratio = median(&mut fresh);
    eprintln!(
        "redis-server + redis-benchmark, {rounds} alternating rounds in {:?}: throughput with / \
         without the library, median of the rounds: kept connections {kept_ratio:.3}, a \
         connection per request {fresh_ratio:.3}",
        start.elapsed()
    );
    assert!(kept_ratio >= 0.8, "kept connections: {kept_ratio:.3}");
    assert!(
        fresh_ratio >= 0.8,
        "connection per request: {fresh_ratio:.3}"
    );
}
