//! What fleet mode and the seccomp supervisor count, proved on the real kernel.
//!
//! - Fleet mode, scraped by a real Prometheus (tests/common/prometheus.rs) in the dead-peer lab:
//!   `fleet attach --cgroup CG --metrics 127.0.0.1:PORT` (foreground) on a cgroup of this
//!   test's own; static clients (tests/programs/fleet_client.c, `-static`) in it and in the
//!   lab's client namespace open connections to the silent server, and one to a listener on
//!   the client's own loopback; then the server's link is cut. The idle ones are ended by the
//!   keepalive timer, which a BPF program sees only as a change from ESTABLISHED to CLOSE
//!   (`keepalive_shim_connections_aborted_total`); the ones that send a request after the cut
//!   are ended by `tcp_write_timeout()` (the user timeout with data unacknowledged), which
//!   `BPF_SOCK_OPS_RTO_CB` reports exactly (`keepalive_shim_connections_timed_out_total`,
//!   `timer="retransmission"`). Prometheus' HTTP API must show the configured count risen by
//!   exactly the connections made and each ended count by exactly its connections, within the
//!   bound plus one scrape interval; the kernel's own `TCPAbortOnTimeout` of the namespace rises
//!   by both together, and `fleet status --json` shows the same counts.
//! - The supervisor: a static client under `keepalive-shim run --mode seccomp` (three of them,
//!   started by one shell, under one supervisor) making one TCP socket each: `inspect --json` of
//!   one of them shows its supervisor's `sockets_configured` at exactly 3.
//!
//! - Per pod: two child cgroups named as the kubelet names pods' cgroups, three connections of
//!   one cut in the lab, two of the other untouched: 3 and 0 aborted, 3 and 2 configured, by
//!   path and pod UID in `fleet status --json` and on the endpoint; the removed one folded.
//!
//! Root (and cgroup v2, the lab, Debian's prometheus) or skipped with a message.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::cgroup::{ChildCgroup, TestCgroup};
use common::lab::{FAST_KEEPALIVE, Lab, SERVER4};
use common::prometheus::{FRESH_S, Killed, Prometheus, SCRAPE_S, SLACK_S, scrape};
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");
/// `FAST_KEEPALIVE`: a silent peer is noticed 2 + 1 x 2 = 4 s after the cut at the latest, and
/// the user timeout that follows (4 s) ends a request unacknowledged after as long.
const BOUND_S: f64 = 4.0;
/// Idle connections to the silent server (cut: the keepalive timer ends them), connections that
/// send after the cut (the retransmission timer ends them), and to the client's loopback (kept).
const IDLE: usize = 3;
const SENDING: usize = 2;
const KEPT: usize = 1;

/// The static client, built once per test process.
fn client() -> &'static Path {
    build_c("fleet_client.c", &["-static", "-O2", "-Wall"])
}

/// A loopback port free now (taken back just before the endpoint binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `TcpExt: TCPAbortOnTimeout` of `pid`'s network namespace.
fn aborts_on_timeout(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/netstat")).unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next().unwrap();
    let values = lines.next().unwrap();
    let i = names
        .split_whitespace()
        .position(|n| n == "TCPAbortOnTimeout")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// `fleet attach --cgroup CG --metrics 127.0.0.1:PORT` with the lab's fast keepalive, in the
/// foreground and attached, and the address it serves.
fn attach_serving(cg: &TestCgroup) -> (Background, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let attach = Background::spawn({
        let mut cmd = command(false, CLI);
        cmd.args(["fleet", "attach", "--cgroup", cg.arg(), "--metrics", &addr])
            .envs(FAST_KEEPALIVE);
        cmd
    });
    attach.expect("running in the foreground", Duration::from_secs(20));
    (attach, addr)
}

/// `fleet status --json --cgroup CG`: the counts of its attachment.
fn status_counts(cg: &TestCgroup) -> Value {
    let out =
        output_ok(command(false, CLI).args(["fleet", "status", "--json", "--cgroup", cg.arg()]));
    let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = rows.as_array().expect("an array");
    assert!(!rows.is_empty(), "nothing attached: {rows:?}");
    // Both hooks of the attachment show the one map.
    assert!(
        rows.iter().all(|r| r["counts"] == rows[0]["counts"]),
        "{rows:?}"
    );
    rows[0]["counts"].clone()
}

#[test]
fn prometheus_sees_what_fleet_mode_configured_and_how_those_connections_ended() {
    let Some(cg) = TestCgroup::new(Path::new(CLI)) else {
        return;
    };
    let Some(lab) = Lab::new() else { return };
    if !have(
        "prometheus",
        "Debian's prometheus; scripts/test.sh installs it",
    ) || !have("curl", "scripts/test.sh installs it")
    {
        return;
    }
    let (server, _local) = lab.silent_peers();

    let (_attach, addr) = attach_serving(&cg);
    let prometheus = Prometheus::start(&addr);
    // The attachment's total: its series by cgroup (here the attached one, and the entry for
    // what did not fit) added up.
    let sel = |name: &str, extra: &str| {
        format!(
            "sum({name}{{mechanism=\"fleet\",cgroup=\"{}\"{extra}}})",
            cg.arg()
        )
    };
    let configured = sel(
        "keepalive_shim_connections_configured_total",
        ",direction=\"outgoing\"",
    );
    let accepted = sel(
        "keepalive_shim_connections_configured_total",
        ",direction=\"accepted\"",
    );
    let timed_out = sel("keepalive_shim_connections_timed_out_total", "");
    let aborted = sel("keepalive_shim_connections_aborted_total", "");
    prometheus.until(&configured, 0.0, 15.0);
    prometheus.until(&aborted, 0.0, 5.0);
    prometheus.until(&timed_out, 0.0, 5.0);

    let spawn = |args: &[&str]| {
        let mut cmd = lab.command('c', false, client());
        cmd.args(args);
        cg.enter(&mut cmd);
        Background::spawn(cmd)
    };
    let mut idle: Vec<Background> = (0..IDLE)
        .map(|_| spawn(&["idle", SERVER4, "8080"]))
        .collect();
    let mut sending: Vec<Background> = (0..SENDING)
        .map(|_| spawn(&["send", SERVER4, "8080"]))
        .collect();
    let kept: Vec<Background> = (0..KEPT)
        .map(|_| spawn(&["idle", "127.0.0.1", "8081"]))
        .collect();
    for c in idle.iter().chain(&sending).chain(&kept) {
        c.expect("connected", Duration::from_secs(10));
    }
    for _ in 0..IDLE {
        server.expect("request", Duration::from_secs(10));
    }
    let netns_of = idle[0].child.id();
    let kernel_before = aborts_on_timeout(netns_of);
    let made = (IDLE + SENDING + KEPT) as f64;
    let took = prometheus.until(&configured, made, 3.0 * SCRAPE_S + 2.0);
    eprintln!("configured: {made} in Prometheus {took:.2} s after the connections were made");
    assert_eq!(
        prometheus.query(&accepted),
        Some(0.0),
        "the servers are outside the cgroup"
    );

    let t_cut = lab.cut("server");
    for c in &mut sending {
        c.say("go");
    }
    // Prometheus scrapes every SCRAPE_S, and the endpoint answers from a scrape up to FRESH_S
    // old (a flood of requests costs one scrape a second).
    let late = BOUND_S + SCRAPE_S + FRESH_S;
    // A loaded machine (CI: 2 cores, tests in parallel) may start a scrape late: SLACK_S.
    let took_aborted = prometheus.until(&aborted, IDLE as f64, late + 2.0);
    prometheus.until(&timed_out, SENDING as f64, late + 2.0);
    let since_cut = t_cut.elapsed().as_secs_f64();
    eprintln!(
        "aborted (keepalive): {IDLE} in Prometheus {took_aborted:.2} s after the cut; timed out \
         (retransmissions, user timeout): {SENDING} {since_cut:.2} s after the cut (bound \
         {BOUND_S} s + one scrape, {SCRAPE_S} s, + the endpoint's reuse of a scrape, {FRESH_S} s)"
    );
    assert!(
        took_aborted <= late + SLACK_S,
        "{took_aborted:.2} s: later than the bound, one scrape interval and the endpoint's reuse"
    );
    assert!(
        since_cut <= late + SLACK_S + 1.0,
        "{since_cut:.2} s: later than the bound, one scrape interval and the endpoint's reuse \
         (the sends start after the cut)"
    );
    for c in idle.iter_mut().chain(sending.iter_mut()) {
        let line = c.expect("result", Duration::from_secs(5));
        assert_eq!(line, "result ETIMEDOUT");
    }
    // Exactly: nothing more ends (the loopback connection lives), nothing else counts, and the
    // kernel's own count of timeouts in the namespace agrees with both together.
    std::thread::sleep(Duration::from_secs_f64(2.0 * SCRAPE_S));
    assert_eq!(prometheus.query(&aborted), Some(IDLE as f64));
    assert_eq!(prometheus.query(&timed_out), Some(SENDING as f64));
    assert_eq!(prometheus.query(&configured), Some(made));
    assert_eq!(
        aborts_on_timeout(kept[0].child.id()) - kernel_before,
        (IDLE + SENDING) as u64,
        "TCPAbortOnTimeout of the client's namespace"
    );
    let counts = status_counts(&cg);
    assert_eq!(
        counts["connections_configured"],
        IDLE + SENDING + KEPT,
        "{counts}"
    );
    assert_eq!(counts["connections_aborted"], IDLE, "{counts}");
    assert_eq!(counts["connections_timed_out"], SENDING, "{counts}");
    assert_eq!(counts["connections_excluded"], 0, "{counts}");
    drop(kept);
}

#[test]
fn inspect_shows_what_the_supervisor_configured_for_its_tree() {
    if !runs("cc") {
        unavailable::<()>("no C compiler");
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let client = client().to_str().unwrap().to_owned();
    // Three static clients, one socket each, under one supervisor; each holds its connection.
    let script = format!("for i in 1 2 3; do {client} idle 127.0.0.1 {port} & done; wait",);
    let mut run = command(false, CLI);
    run.args(["run", "--mode", "seccomp", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let run = Killed(run.spawn().expect("keepalive-shim run"));
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, _) = l.accept().unwrap();
        held.push(s);
    }
    // A client of the tree: a child of the shell, the supervisor's grandchild.
    let supervisor = run.0.id();
    let children = |of: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{of}/task/{of}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let pid = children(supervisor).into_iter().flat_map(children).next();
    let pid = pid.expect("a client of the tree");
    let out = output_ok(command(false, CLI).args(["inspect", "--json", &pid.to_string()]));
    let all: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    let record = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "process" && r["pid"] == pid)
        .unwrap_or_else(|| panic!("no process record in {all}"))
        .clone();
    let sup = &record["supervisor"];
    assert_eq!(sup["pid"], supervisor, "{record}");
    assert_eq!(sup["sockets_configured"], 3, "{record}");
    // The socket trap sees no connect(); the clients set no option of their own.
    assert_eq!(sup["connections_configured"], 0, "{record}");
    assert!(
        sup["options_refused"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == 0),
        "{record}"
    );
    // The text form says it too.
    let out = output_ok(command(false, CLI).args(["inspect", &pid.to_string()]));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("under the seccomp supervisor {supervisor}")),
        "{shown}"
    );
    drop(held);
    drop(run);
}

/// `fleet status --json --cgroup CG`: the attachment's counts by cgroup, as (path or folded
/// name, its counts).
fn by_cgroup(cg: &TestCgroup) -> Vec<(String, Value)> {
    let out =
        output_ok(command(false, CLI).args(["fleet", "status", "--json", "--cgroup", cg.arg()]));
    let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = rows[0]["by_cgroup"].as_array().cloned().unwrap_or_default();
    list.into_iter()
        .map(|c| {
            let name = c["path"]
                .as_str()
                .or(c["folded"].as_str())
                .unwrap_or("?")
                .to_owned();
            (name, c)
        })
        .collect()
}

/// Per pod, exact: an attachment on a cgroup with two child cgroups named as a kubelet with the
/// systemd driver names pods' cgroups. Three static clients in the first hold idle connections
/// to the lab's silent server, whose link is then cut; two in the second hold connections to a
/// listener on their own loopback, untouched. After the keepalive bound, the first shows 3
/// configured and 3 aborted, the second 2 and 0, in `fleet status --json` and on the metrics
/// endpoint (with each pod's UID); once the second cgroup is removed, its series is gone and
/// its counts are folded into the attachment's "gone" entry.
#[test]
fn per_pod_counts_are_exact_in_the_dead_peer_lab() {
    const CUT: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const KEPT: &str = "11111111-2222-3333-4444-555555555555";
    let Some(cg) = TestCgroup::new(Path::new(CLI)) else {
        return;
    };
    let Some(lab) = Lab::new() else { return };
    let slice = |uid: &str| format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
    let (cut_name, kept_name) = (slice(CUT), slice(KEPT));
    let cut_cg = ChildCgroup::new(&cg, &cut_name);
    let kept_cg = ChildCgroup::new(&cg, &kept_name);
    let (server, local) = lab.silent_peers();
    let (_attach, addr) = attach_serving(&cg);
    let spawn = |child: &ChildCgroup, host: &str, port: &str| {
        let mut cmd = lab.command('c', false, client());
        cmd.args(["idle", host, port]);
        child.enter(&mut cmd);
        Background::spawn(cmd)
    };
    let mut cut: Vec<Background> = (0..3).map(|_| spawn(&cut_cg, SERVER4, "8080")).collect();
    let kept: Vec<Background> = (0..2)
        .map(|_| spawn(&kept_cg, "127.0.0.1", "8081"))
        .collect();
    for c in cut.iter().chain(&kept) {
        c.expect("connected", Duration::from_secs(10));
    }
    for _ in 0..3 {
        server.expect("request", Duration::from_secs(10));
    }
    let t_cut = lab.cut("server");
    for c in &mut cut {
        let line = c.expect("result", Duration::from_secs(10));
        assert_eq!(line, "result ETIMEDOUT");
    }
    eprintln!(
        "the cut pod's 3 connections ended {:.2} s after the cut",
        t_cut.elapsed().as_secs_f64()
    );
    let n = |list: &[(String, Value)], name: &str, key: &str| {
        list.iter()
            .find(|(p, _)| p == name)
            .map(|(_, c)| c["counts"][key].as_u64().unwrap_or(0))
    };
    let list = by_cgroup(&cg);
    eprintln!("{list:?}");
    assert_eq!(
        n(&list, &cut_name, "connections_configured"),
        Some(3),
        "{list:?}"
    );
    assert_eq!(
        n(&list, &cut_name, "connections_aborted"),
        Some(3),
        "{list:?}"
    );
    assert_eq!(
        n(&list, &cut_name, "connections_timed_out"),
        Some(0),
        "{list:?}"
    );
    assert_eq!(
        n(&list, &kept_name, "connections_configured"),
        Some(2),
        "{list:?}"
    );
    assert_eq!(
        n(&list, &kept_name, "connections_aborted"),
        Some(0),
        "{list:?}"
    );
    let pod = |name: &str| {
        list.iter()
            .find(|(p, _)| p == name)
            .and_then(|(_, c)| c["pod_uid"].as_str().map(str::to_owned))
    };
    assert_eq!(pod(&cut_name).as_deref(), Some(CUT));
    assert_eq!(pod(&kept_name).as_deref(), Some(KEPT));
    // The same on the endpoint, with the path and the pod's UID as labels.
    let text = scrape(&addr);
    let series = |name: &str, path: &str, uid: &str| {
        format!(
            "{name}{{mechanism=\"fleet\",cgroup=\"{}\",path=\"{path}\",pod_uid=\"{uid}\"}}",
            cg.arg()
        )
    };
    for (line, value) in [
        (
            series("keepalive_shim_connections_aborted_total", &cut_name, CUT),
            3,
        ),
        (
            series("keepalive_shim_connections_aborted_total", &kept_name, KEPT),
            0,
        ),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{line} {value}")),
            "{line} {value} not in:\n{text}"
        );
    }
    // The kept pod goes: its series with it, its counts folded into "gone".
    drop(kept);
    kept_cg.remove();
    let list = by_cgroup(&cg);
    assert_eq!(
        n(&list, &kept_name, "connections_configured"),
        None,
        "{list:?}"
    );
    assert_eq!(
        n(&list, "gone", "connections_configured"),
        Some(2),
        "{list:?}"
    );
    assert_eq!(
        n(&list, &cut_name, "connections_aborted"),
        Some(3),
        "{list:?}"
    );
    drop(local);
}
