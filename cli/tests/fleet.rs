//! Fleet mode on the real kernel: `keepalive-shim fleet attach` gives a BPF program to a cgroup
//! v2 this test makes (a uniquely named child of the unified hierarchy, removed at the end), and
//! processes are put into it between fork and exec. Each test compares the same program inside
//! the cgroup and outside it:
//! - a statically linked C client (no preload library can reach it), python3, and the server
//!   side (a connection a listener in the cgroup accepted) get the options; a process outside
//!   is untouched;
//! - a program's own settings stand (before connect; after connect the user timeout follows
//!   them); with FORCE ours win; a destination the rules exclude is left alone;
//! - attaching again takes over without a gap (a program connecting every 2 ms during the
//!   swap sees no bare socket) and the first attachment's exit detaches nothing; a pinned
//!   attachment outlives the command until `fleet detach`, and a foreground attachment ends
//!   with its process;
//! - the dead-peer lab (`scripts/lab.sh`): the idle, unacknowledged and connect cases with the
//!   static client in the lab's client namespace and in the cgroup end within the bound, and
//!   are still blocked at three times the bound outside it.
//!
//! They need root (and cgroup v2): without, they are skipped with a message, except under
//! `CI=true`, where that is a failure.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::cgroup::{TestCgroup, unified};

use common::lab::{FAST_KEEPALIVE, Lab, SERVER4, USER_TIMEOUT_3S};
use common::*;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// `keepalive-shim ARGS` with a clean environment plus `vars`.
fn cli(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = command(false, CLI);
    cmd.args(args).envs(vars.iter().copied());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run keepalive-shim")
}

/// The static client, built once per test process.
fn client() -> &'static Path {
    build_c("fleet_client.c", &["-static", "-O2", "-Wall"])
}

/// A cgroup made for one test (tests/common/cgroup.rs), with the fleet commands these tests run
/// on it.
struct Cgroup(TestCgroup);

impl std::ops::Deref for Cgroup {
    type Target = TestCgroup;
    fn deref(&self) -> &TestCgroup {
        &self.0
    }
}

impl Cgroup {
    fn new() -> Option<Cgroup> {
        TestCgroup::new(Path::new(CLI)).map(Cgroup)
    }

    /// `fleet attach --cgroup THIS` in the foreground, with `vars`, once it runs.
    fn attach(&self, vars: &[(&str, &str)]) -> Background {
        let bg = Background::spawn(cli(&["fleet", "attach", "--cgroup", self.arg()], vars));
        bg.expect("running in the foreground", Duration::from_secs(20));
        bg
    }

    /// `fleet status --json --cgroup THIS`.
    fn status(&self) -> Vec<Value> {
        let out = run(cli(
            &["fleet", "status", "--json", "--cgroup", self.arg()],
            &[],
        ));
        assert!(out.status.success(), "{}", text(&out.stderr));
        match serde_json::from_slice(&out.stdout).expect("JSON") {
            Value::Array(rows) => rows,
            v => panic!("not an array: {v}"),
        }
    }
}

/// The five options a client printed, after checking it exited 0.
fn five_of(out: &Output) -> [i64; 5] {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        text(&out.stderr)
    );
    let line = text(&out.stdout);
    let json: Value = serde_json::from_str(line.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    five(&json)
}

/// A loopback listener that accepts and holds connections, in the test process (outside any
/// test cgroup).
fn listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// `fleet_client options 127.0.0.1 PORT OWN...`, inside `cg` or not.
fn options(cg: Option<&Cgroup>, port: u16, own: &[&str]) -> [i64; 5] {
    let mut cmd = command(false, client());
    cmd.args(["options", "127.0.0.1", &port.to_string()])
        .args(own);
    if let Some(cg) = cg {
        cg.enter(&mut cmd);
    }
    five_of(&cmd.output().unwrap())
}

#[test]
fn a_static_client_in_the_cgroup_gets_the_options_and_one_outside_does_not() {
    let Some(cg) = Cgroup::new() else { return };
    let _attached = cg.attach(&[]);
    let (_l, port) = listener();
    assert_eq!(options(Some(&cg), port, &[]), OURS);
    assert_eq!(options(None, port, &[]), KERNEL);
    // Its settings as attached, and only ours on this cgroup.
    let rows = cg.status();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["relation"] == "this cgroup"));
    assert_eq!(rows[0]["settings"]["idle_s"], 30);
}

#[test]
fn python_client_and_accepted_connections_in_the_cgroup_get_the_options() {
    let Some(cg) = Cgroup::new() else { return };
    let _attached = cg.attach(&[("KEEPALIVE_IDLE", "45")]);
    let probe = |inside: bool| {
        let mut cmd = command(false, python());
        cmd.arg(program("probe.py")).arg("sockets");
        if inside {
            cg.enter(&mut cmd);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let inside = probe(true);
    let ours = [1, 45, 10, 3, 75_000];
    assert_eq!(five(&inside["ipv4_connected"]), ours);
    // Connections a listener in the cgroup accepted: the server side.
    assert_eq!(five(&inside["accepted"]), ours);
    // Fleet mode acts at connect and accept: a socket not yet connected is as the kernel made it.
    assert_eq!(five(&inside["ipv4"]), KERNEL);
    let outside = probe(false);
    assert_eq!(five(&outside["ipv4_connected"]), KERNEL);
    assert_eq!(five(&outside["accepted"]), KERNEL);
}

#[test]
fn a_static_server_in_the_cgroup_configures_what_it_accepts_from_outside() {
    let Some(cg) = Cgroup::new() else { return };
    let _attached = cg.attach(&[]);
    for host in ["127.0.0.1", "::1"] {
        let mut cmd = command(false, client());
        cmd.args(["accept", host, "0"]);
        cg.enter(&mut cmd);
        let server = Background::spawn(cmd);
        let line = server.expect("listening", Duration::from_secs(10));
        let port = line.split_whitespace().nth(1).unwrap().to_string();
        // The client is outside the cgroup: its own socket stays as the kernel made it.
        let mut outside = command(false, client());
        outside.args(["options", host, &port]);
        assert_eq!(five_of(&outside.output().unwrap()), KERNEL, "{host}");
        let accepted = server.expect("{", Duration::from_secs(10));
        let json: Value = serde_json::from_str(&accepted).unwrap();
        assert_eq!(five(&json), OURS, "accepted over {host}");
    }
}

#[test]
fn a_programs_own_settings_stand_and_the_user_timeout_follows_them() {
    let Some(cg) = Cgroup::new() else { return };
    let _attached = cg.attach(&[]);
    let (_l, port) = listener();
    // curl: keepalive on, 60 s idle and interval, before connect; the count is ours, and the
    // user timeout follows: 60 + 60 × 3 = 240 s.
    let curl = ["--keepalive", "1", "--idle", "60", "--interval", "60"];
    assert_eq!(options(Some(&cg), port, &curl), [1, 60, 60, 3, 240_000]);
    // Its own user timeout stands.
    let own_ut = ["--user-timeout", "5000"];
    assert_eq!(options(Some(&cg), port, &own_ut), [1, 30, 10, 3, 5000]);
    // node: a 1 s idle after connecting (the setsockopt program): 1 + 10 × 3 = 31 s.
    let node = ["--after-idle", "1"];
    assert_eq!(options(Some(&cg), port, &node), [1, 1, 10, 3, 31_000]);
    // Outside, the program's own values only.
    assert_eq!(options(None, port, &curl), [1, 60, 60, 9, 0]);
}

#[test]
fn force_makes_ours_win_before_and_after_connect() {
    let Some(cg) = Cgroup::new() else { return };
    let _attached = cg.attach(&[("KEEPALIVE_FORCE", "1")]);
    let (_l, port) = listener();
    let own = [
        "--keepalive",
        "0",
        "--idle",
        "100",
        "--user-timeout",
        "5000",
        "--after-idle",
        "1",
    ];
    assert_eq!(options(Some(&cg), port, &own), OURS);
    assert_eq!(options(None, port, &own), [0, 1, 75, 9, 5000]);
    // A value the kernel refuses still fails, as without the program.
    let mut bad = command(false, client());
    bad.args(["options", "127.0.0.1", &port.to_string(), "--idle", "0"]);
    cg.enter(&mut bad);
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--idle: Invalid argument"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_destination_the_rules_exclude_is_left_alone() {
    let Some(cg) = Cgroup::new() else { return };
    let (_excluded, excluded_port) = listener();
    let (_other, other_port) = listener();
    let rule = format!(":{excluded_port}");
    let _attached = cg.attach(&[("KEEPALIVE_EXCLUDE", &rule)]);
    assert_eq!(options(Some(&cg), excluded_port, &[]), KERNEL);
    // Left alone means left alone: the user timeout does not follow its own keepalive either.
    assert_eq!(
        options(Some(&cg), excluded_port, &["--after-idle", "1"]),
        [0, 1, 75, 9, 0]
    );
    assert_eq!(options(Some(&cg), other_port, &[]), OURS);
    let include = format!("127.0.0.2/32,:{other_port}");
    drop(_attached);
    let _attached = cg.attach(&[("KEEPALIVE_INCLUDE", &include)]);
    assert_eq!(options(Some(&cg), other_port, &[]), OURS);
    assert_eq!(options(Some(&cg), excluded_port, &[]), KERNEL);
}

/// `SIGTERM` to a background command.
fn terminate(bg: &Background) {
    // SAFETY: kill with a valid signal on a child this test started and has not reaped.
    unsafe { libc::kill(bg.child.id() as i32, libc::SIGTERM) };
}

/// A rolling update with a surge, as the DaemonSet does it: while a program in the cgroup
/// connects to itself every 2 ms and reads each socket's options (both ends in the cgroup), a
/// second `fleet attach` takes over from the first, then the first is stopped. Not one socket
/// goes bare; the links stay the same (their programs replaced in place), the first lets go of
/// them and waits to be stopped, and its exit detaches nothing; the second's end ends it all.
#[test]
fn attaching_again_takes_over_without_a_gap_and_the_first_detaches_nothing() {
    let Some(cg) = Cgroup::new() else { return };
    let (_l, port) = listener();
    let first = cg.attach(&[("KEEPALIVE_IDLE", "20")]);
    let links: Vec<Value> = cg.status().iter().map(|r| r["link_id"].clone()).collect();
    let mut looping = {
        let mut cmd = command(false, client());
        cmd.args(["loop", "127.0.0.1", "0"]);
        cg.enter(&mut cmd);
        Background::spawn(cmd)
    };
    looping.expect("looping", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let second = cg.attach(&[("KEEPALIVE_IDLE", "40")]);
    first.expect("the attachment to", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let mut first = first;
    terminate(&first);
    let status = first.exit_within("the first attachment, stopped", Instant::now(), 10.0);
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_millis(300));
    looping.say("stop");
    let line = looping.expect("sockets", Duration::from_secs(10));
    let bare = looping.expect("{", Duration::from_secs(5));
    let words: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(words.len(), 2, "{line}");
    assert_eq!(words[1], 0, "{line}: the first bare one: {bare}");
    assert!(words[0] >= 200, "{line}: too few to tell");
    // The same links, one per hook, now the second's.
    let rows = cg.status();
    assert_eq!(
        rows.len(),
        2,
        "one program per hook, never stacked: {rows:?}"
    );
    assert_eq!(
        rows.iter()
            .map(|r| r["link_id"].clone())
            .collect::<Vec<_>>(),
        links
    );
    assert!(rows.iter().all(|r| r["settings"]["idle_s"] == 40));
    assert_eq!(options(Some(&cg), port, &[])[1], 40);
    drop(second);
    // Killed (SIGKILL, as by the test's Drop): the kernel releases its links.
    let t0 = Instant::now();
    while !cg.status().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cg.status().is_empty());
    assert_eq!(options(Some(&cg), port, &[]), KERNEL);
}

/// A private bpf file system at a unique directory, unmounted and removed when dropped.
struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    fn new() -> Bpffs {
        let dir = root().join(format!("target/fleet-test/bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t bpf");
        Bpffs { dir }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_pinned_attachment_stays_until_detached_and_is_replaced_in_place() {
    let Some(cg) = Cgroup::new() else { return };
    let bpffs = Bpffs::new();
    let pin = bpffs.dir.join("keepalive");
    let pin_arg = pin.to_str().unwrap();
    let (_l, port) = listener();
    let attach = |vars: &[(&str, &str)]| {
        let out = run(cli(
            &["fleet", "attach", "--cgroup", cg.arg(), "--pin", pin_arg],
            vars,
        ));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let said = attach(&[]);
    assert!(said.contains("pinned under"), "{said}");
    assert!(pin.join("sock_ops").exists() && pin.join("setsockopt").exists());
    // The command has exited; the programs are still attached.
    assert_eq!(options(Some(&cg), port, &[]), OURS);
    let links: Vec<Value> = cg.status().iter().map(|r| r["link_id"].clone()).collect();
    // Again, with other settings: the same links, new programs.
    attach(&[("KEEPALIVE_IDLE", "25")]);
    let rows = cg.status();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows.iter()
            .map(|r| r["link_id"].clone())
            .collect::<Vec<_>>(),
        links
    );
    assert_eq!(options(Some(&cg), port, &[])[1], 25);
    // KEEPALIVE_USER_TIMEOUT=0 needs no setsockopt program: its pin goes.
    attach(&[("KEEPALIVE_USER_TIMEOUT", "0")]);
    assert!(!pin.join("setsockopt").exists());
    assert_eq!(cg.status().len(), 1);
    let out = run(cli(&["fleet", "detach", "--pin", pin_arg], &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!pin.exists());
    assert!(cg.status().is_empty());
    assert_eq!(options(Some(&cg), port, &[]), KERNEL);
}

#[test]
fn refusals_say_what_is_wrong() {
    if !is_root() {
        unavailable::<()>("fleet mode needs root");
        return;
    }
    let out = run(cli(&["fleet", "attach", "--cgroup", "/tmp"], &[]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/tmp is not a cgroup v2 directory; cgroup v2 is mounted at"),
        "{}",
        text(&out.stderr)
    );
    if Path::new("/sys/fs/cgroup/memory").exists() {
        let out = run(cli(
            &["fleet", "attach", "--cgroup", "/sys/fs/cgroup/memory"],
            &[],
        ));
        assert!(
            text(&out.stderr).contains("is a cgroup v1 hierarchy; fleet mode needs cgroup v2"),
            "{}",
            text(&out.stderr)
        );
    }
    // Without privileges (uid 65534, no capabilities).
    let mut cmd = cli(&["fleet", "status"], &[]);
    cmd.uid(65534).gid(65534);
    let out = run(cmd);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("fleet mode needs root with CAP_SYS_ADMIN"),
        "{}",
        text(&out.stderr)
    );
    // Strict mode with a problem: nothing attached.
    let Some(cg) = Cgroup::new() else { return };
    let out = run(cli(
        &["fleet", "attach", "--cgroup", cg.arg()],
        &[("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDLE", "soon")],
    ));
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(cg.status().is_empty());
}

#[test]
fn check_shows_what_would_be_attached() {
    let out = run(cli(&["check"], &[("KEEPALIVE_FORCE", "1")]));
    let said = text(&out.stdout);
    assert!(said.contains("Fleet mode (keepalive-shim fleet attach --cgroup PATH) would attach:"));
    assert!(
        said.contains("a program's own value for any of the five becomes ours"),
        "{said}"
    );
    let out = run(cli(&["check"], &[("KEEPALIVE_USER_TIMEOUT", "0")]));
    assert!(text(&out.stdout).contains("no setsockopt program"));
}

// ---- the dead-peer lab ----

/// The static client `args` in the lab's client namespace, in `cg` when given.
fn lab_client(lab: &Lab, cg: Option<&Cgroup>, args: &[&str]) -> Background {
    let mut cmd = lab.command('c', false, client());
    cmd.args(args);
    if let Some(cg) = cg {
        cg.enter(&mut cmd);
    }
    Background::spawn(cmd)
}

#[test]
fn lab_a_silent_server_is_noticed_after_idle_plus_probes() {
    let Some(cg) = Cgroup::new() else { return };
    let Some(lab) = Lab::new() else { return };
    let _attached = cg.attach(&FAST_KEEPALIVE);
    let server = lab.server("silent", 8080);
    let args = ["idle", SERVER4, "8080"];
    let mut with = lab_client(&lab, Some(&cg), &args);
    let mut without = lab_client(&lab, None, &args);
    with.expect("connected", Duration::from_secs(10));
    without.expect("connected", Duration::from_secs(10));
    server.expect_from(
        "request",
        &mut [("in the cgroup", &mut with), ("outside", &mut without)],
        Duration::from_secs(10),
    );
    let t0 = lab.cut("server");
    let what = "fleet: silent server";
    let (line, seconds) = with.expect_timed(what, "result", t0, 10.0);
    assert_eq!(line, "result ETIMEDOUT");
    assert_within(what, seconds, 4.0);
    assert_still_blocked(
        &format!("{what}, outside the cgroup"),
        &mut without,
        t0,
        12.0,
    );
}

#[test]
fn lab_an_unacknowledged_request_fails_after_the_user_timeout() {
    let Some(cg) = Cgroup::new() else { return };
    let Some(lab) = Lab::new() else { return };
    let _attached = cg.attach(&USER_TIMEOUT_3S);
    let _server = lab.server("http", 8080);
    let args = ["send", SERVER4, "8080"];
    let mut with = lab_client(&lab, Some(&cg), &args);
    let mut without = lab_client(&lab, None, &args);
    with.expect("connected", Duration::from_secs(10));
    without.expect("connected", Duration::from_secs(10));
    lab.cut("server");
    with.say("go");
    without.say("go");
    let t0 = Instant::now();
    let what = "fleet: unacknowledged request";
    let (line, seconds) = with.expect_timed(what, "result", t0, 10.0);
    assert_eq!(line, "result ETIMEDOUT");
    assert_within(what, seconds, 3.0);
    assert_still_blocked(
        &format!("{what}, outside the cgroup"),
        &mut without,
        t0,
        9.0,
    );
}

#[test]
fn lab_connecting_to_a_cut_server_fails_after_the_user_timeout() {
    let Some(cg) = Cgroup::new() else { return };
    let Some(lab) = Lab::new() else { return };
    let _attached = cg.attach(&USER_TIMEOUT_3S);
    lab.cut("server");
    let args = ["connect", SERVER4, "8080"];
    let t0 = Instant::now();
    let with = lab_client(&lab, Some(&cg), &args);
    let mut without = lab_client(&lab, None, &args);
    let what = "fleet: connect to a cut server";
    let (line, _) = with.expect_timed(what, "result", t0, 10.0);
    assert!(line.starts_with("result ETIMEDOUT "), "{line}");
    assert_within(what, seconds_in(&line), 3.0);
    assert_still_blocked(
        &format!("{what}, outside the cgroup"),
        &mut without,
        t0,
        9.0,
    );
}

// ---- a container of the tests' own Docker daemon ----

/// A container's cgroup in the unified hierarchy, from its first process's `/proc/PID/cgroup`
/// (`0::/docker/ID`); `None` when the runtime left it at the root.
fn container_cgroup(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    (path != "/").then(|| unified().map(|u| u.join(path.trim_start_matches('/'))))?
}

/// Docker's part of a Kubernetes pod: a sandbox container (`--network none`) holds the network
/// namespace, into which the lab's client link is moved; two containers join it. The program is
/// attached to one container's cgroup (made by the tests' private daemon for this test): the
/// static client inside it notices the dead server within the bound, the same client in the
/// other container is still blocked at three times the bound.
#[test]
fn docker_a_static_client_in_a_containers_cgroup_is_covered() {
    use common::docker::{BASE_IMAGE, docker};
    if !is_root() {
        unavailable::<()>("fleet mode needs root");
        return;
    }
    let Some(docker) = docker() else { return };
    let Some(lab) = Lab::new() else { return };
    let server = lab.server("silent", 8080);
    let label = docker.label();
    let mount = format!("{}:/fleet_client:ro", client().display());
    // The lab's client link goes into the sandbox's namespace, configured as lab.sh did.
    let sandbox = docker.sandbox(&lab, &[BASE_IMAGE, "sleep", "600"]);
    let app = |role: &str| {
        let c = docker.container(role);
        let network = format!("container:{}", sandbox.name);
        docker.ok(&[
            "run",
            "-d",
            "--name",
            &c.name,
            "--label",
            &label,
            "--network",
            &network,
            "-v",
            &mount,
            BASE_IMAGE,
            "sleep",
            "600",
        ]);
        c
    };
    let with = app("with");
    let without = app("without");
    let Some(path) = container_cgroup(docker.pid(&with.name)) else {
        unavailable::<()>(
            "the container runtime puts containers in no cgroup of the unified hierarchy",
        );
        return;
    };
    let attached = Background::spawn(cli(
        &["fleet", "attach", "--cgroup", path.to_str().unwrap()],
        &FAST_KEEPALIVE,
    ));
    attached.expect("running in the foreground", Duration::from_secs(20));
    let exec = |c: &str| {
        let mut cmd = docker.cmd();
        cmd.args(["exec", c, "/fleet_client", "idle", SERVER4, "8080"]);
        Background::spawn(cmd)
    };
    let mut inside = exec(&with.name);
    let mut outside = exec(&without.name);
    inside.expect("connected", Duration::from_secs(20));
    outside.expect("connected", Duration::from_secs(20));
    server.expect_from(
        "request",
        &mut [("inside", &mut inside), ("outside", &mut outside)],
        Duration::from_secs(10),
    );
    let t0 = lab.cut("server");
    let what = "fleet in a container";
    let (line, seconds) = inside.expect_timed(what, "result", t0, 10.0);
    assert_eq!(line, "result ETIMEDOUT");
    assert_within(what, seconds, 4.0);
    assert_still_blocked(
        &format!("{what}, outside the cgroup"),
        &mut outside,
        t0,
        12.0,
    );
    drop(attached);
}
