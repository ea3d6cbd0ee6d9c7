//! The shipped library where users run it: in an old glibc (Debian bullseye, glibc 2.31, by
//! chroot into the tree of `scripts/rootfs.sh`) and in real containers (a private Docker daemon,
//! `scripts/dockerd.sh`): the image of `examples/docker/Dockerfile`, the dead-peer seed scenario
//! with that image's unmodified entrypoint in the lab of `scripts/lab.sh`, and the Kubernetes
//! pattern of `examples/kubernetes/` (an init container copies the library into a shared
//! volume). Every test runs the same program with and without the library. They need root (and,
//! the first time, the Debian mirror): without, they are skipped, except under `CI=true`.
//! Containers get no network but `--network none`, plus the lab's link in the seed scenario.

mod common;

use common::docker::{BASE_IMAGE, Container, Docker, docker};
use common::lab::{FAST_KEEPALIVE, Lab};
use common::rootfs::{Chroot, glibc_versions};
use common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image of `examples/docker/Dockerfile` with the library under test.
const EXAMPLE_IMAGE: &str = "keepalive-shim/example:test";

const BOUND: f64 = 4.0;

/// Prints how long a test took, when it ends (also on failure).
struct Timer(&'static str, Instant);

impl Timer {
    fn new(test: &'static str) -> Timer {
        Timer(test, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("{}: {:.1} s", self.0, self.1.elapsed().as_secs_f64());
    }
}

/// The five options a program printed as JSON, after checking that it exited 0 with nothing on
/// stderr (a library that fails to load says so there).
fn five_of(what: &str, out: &Output) -> [i64; 5] {
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{what}: {}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{what}: unexpected stderr: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", text(&out.stdout)));
    five(&json)
}

fn output(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()))
}

// ---- Debian bullseye (glibc 2.31), chroot ----

/// The seed client's stack (python3 3.9 and requests from bullseye) against a server on
/// loopback: the options of the connection requests made.
#[test]
fn bullseye_requests_connection_gets_the_options() {
    let _t = Timer::new("bullseye_requests_connection_gets_the_options");
    let Some(chroot) = Chroot::new() else { return };
    chroot.copy_program("probe.py");
    chroot.copy_program("requests_options.py");
    let (_server, port) = server("http");
    let url = format!("http://127.0.0.1:{port}/");
    let run = |preload| {
        let mut cmd = chroot.command(preload, "/usr/bin/python3");
        cmd.arg(chroot.inside("requests_options.py")).arg(&url);
        output(cmd)
    };
    assert_eq!(five_of("python3 without the library", &run(false)), KERNEL);
    assert_eq!(five_of("python3 with the library", &run(true)), OURS);
}

/// dash, the `/bin/sh` of Debian, starts with the library preloaded and exits 0 with nothing on
/// stderr; `getconf` (glibc's) reports the old glibc, with and without.
#[test]
fn bullseye_dash_starts_and_exits_cleanly() {
    let _t = Timer::new("bullseye_dash_starts_and_exits_cleanly");
    let Some(chroot) = Chroot::new() else { return };
    let sh = std::fs::read_link(chroot.tree().join("bin/sh")).expect("/bin/sh is a link");
    assert_eq!(sh, Path::new("dash"), "/bin/sh in bullseye");
    for preload in [false, true] {
        let mut cmd = chroot.command(preload, "/bin/sh");
        cmd.args(["-c", "getconf GNU_LIBC_VERSION; exit 0"]);
        let out = output(cmd);
        let what = if preload { "with" } else { "without" };
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "sh -c {what} the library: {}: {}",
            out.status,
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "glibc 2.31\n", "{what} the library");
    }
}

/// A C client (`tests/programs/options_client.c`) built by the host's gcc against bullseye's
/// glibc (needing at most GLIBC_2.31): the options of its connected socket.
#[test]
fn bullseye_c_client_gets_the_options() {
    let _t = Timer::new("bullseye_c_client_gets_the_options");
    let Some(chroot) = Chroot::new() else { return };
    chroot.gcc("options_client.c", "options_client");
    let versions = glibc_versions(&chroot.host("options_client"));
    let newest = *versions.last().expect("a dynamically linked program");
    assert!(newest <= [2, 31], "the C client needs GLIBC {newest:?}");
    let run = |preload| output(chroot.command(preload, chroot.inside("options_client")));
    assert_eq!(five_of("C client without the library", &run(false)), KERNEL);
    assert_eq!(five_of("C client with the library", &run(true)), OURS);
}

// ---- Docker ----

/// `examples/docker/Dockerfile` built once per test process on the bullseye image, from a
/// context holding the library under test and `app/` (the seed client and the probes).
fn example_image(docker: &'static Docker) -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let t0 = Instant::now();
        let context = root().join("target/docker/context");
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(context.join("app")).unwrap();
        std::fs::copy(library(), context.join("libkeepalive_shim.so")).unwrap();
        for name in ["client.py", "probe.py", "requests_options.py"] {
            std::fs::copy(program(name), context.join("app").join(name)).unwrap();
        }
        let dockerfile = root().join("examples/docker/Dockerfile");
        let base = format!("BASE={BASE_IMAGE}");
        docker.ok(&[
            OsStr::new("build"),
            OsStr::new("-q"),
            OsStr::new("-f"),
            dockerfile.as_os_str(),
            OsStr::new("--build-arg"),
            OsStr::new(&base),
            OsStr::new("-t"),
            OsStr::new(EXAMPLE_IMAGE),
            context.as_os_str(),
        ]);
        docker.ok(&["image", "prune", "-f"]);
        eprintln!(
            "docker: built {EXAMPLE_IMAGE} in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    });
    EXAMPLE_IMAGE
}

/// `-e LD_PRELOAD=` (the same image without the library) unless `preload`.
fn preload_env(preload: bool) -> &'static [&'static str] {
    if preload { &[] } else { &["-e", "LD_PRELOAD="] }
}

fn with_or_without(preload: bool) -> &'static str {
    if preload { "with" } else { "without" }
}

/// The example image, `--network none`: the seed client's own connection (to a server in the
/// same container, on loopback) gets the options, the entrypoint runs the seed client cleanly,
/// and a program's exit status comes through.
#[test]
fn docker_example_image() {
    let _t = Timer::new("docker_example_image");
    let Some(docker) = docker() else { return };
    let image = example_image(docker);
    for (preload, expected) in [(true, OURS), (false, KERNEL)] {
        let what = with_or_without(preload);
        let mut args = vec!["--network", "none"];
        args.extend(preload_env(preload));
        let probe = [&args[..], &["--entrypoint", "python3", image]].concat();
        let out = docker.run(what, &[&probe[..], &["/app/requests_options.py"]].concat());
        assert_eq!(
            five_of(&format!("container {what} the library"), &out),
            expected
        );

        // The image's own entrypoint, the seed client, to a port where nobody listens.
        let out = docker.run(what, &[&args[..], &[image, "http://127.0.0.1:9/"]].concat());
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && stderr.is_empty(),
            "entrypoint {what} the library: {}: {stderr}",
            out.status
        );
        assert!(
            stdout.starts_with("result ConnectionError "),
            "entrypoint {what} the library: {stdout}"
        );

        let out = docker.run(what, &[&probe[..], &["/app/probe.py", "echo"]].concat());
        assert_eq!(out.status.code(), Some(3), "exit status {what} the library");
        assert_eq!(text(&out.stdout), "stdout of the program True\n");
        assert_eq!(text(&out.stderr), "", "stderr {what} the library");
    }
}

/// The seed scenario in containers: the example image's unmodified entrypoint,
/// `requests.get(url)` with no timeout, to a server in the lab that accepted and never answers;
/// then the server's link is cut. With the library the client fails within the bound; the same
/// image without it is still blocked at three times the bound.
///
/// Like a Kubernetes pod: a sandbox container, started with `--network none`, holds the network
/// namespace, into which the lab's client link is moved; both application containers join it
/// (`--network container:SANDBOX`), so each starts with its network already in place.
#[test]
fn docker_seed_scenario_a_dead_server_is_noticed() {
    let _t = Timer::new("docker_seed_scenario_a_dead_server_is_noticed");
    let Some(docker) = docker() else { return };
    let image = example_image(docker);
    let Some(lab) = Lab::new() else { return };
    let server = lab.server("silent", 8080);

    let sandbox = docker.sandbox(
        &lab,
        &[
            "-e",
            "LD_PRELOAD=",
            "--entrypoint",
            "sleep",
            image,
            "infinity",
        ],
    );
    let label = docker.label();
    let network = format!("container:{}", sandbox.name);
    // Created first, then started attached: `docker create` prints the daemon's warning that
    // the host does not forward IPv4 (true, and irrelevant: the lab is one bridge).
    let app = |preload: bool| -> (Container, Background) {
        let container = docker.container(with_or_without(preload));
        let mut args = vec!["create", "--name", &container.name, "--label", &label];
        args.extend(["--network", &network]);
        let vars: Vec<String> = FAST_KEEPALIVE
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        for var in &vars {
            args.extend(["-e", var]);
        }
        args.extend(preload_env(preload));
        args.extend([image, "http://10.77.0.2:8080/"]);
        docker.ok(&args);
        let mut start = docker.cmd();
        start.args(["start", "-a", &container.name]);
        (container, Background::spawn(start))
    };
    let (_with_container, mut with) = app(true);
    let (without_container, mut without) = app(false);
    server.expect_from(
        "request",
        &mut [("with the library", &mut with), ("without", &mut without)],
        Duration::from_secs(20),
    );
    let t0 = lab.cut("server");

    let what = "container with the library";
    let (line, seconds) = with.expect_timed(what, "result", t0, BOUND + 5.0);
    assert!(!line.contains(" ok "), "{line}");
    eprintln!("{what}: `{line}`, {seconds:.2} s after the cut");
    assert_within(what, seconds, BOUND);

    let what = "container without the library";
    assert_still_blocked(what, &mut without, t0, 3.0 * BOUND);
    assert!(
        docker.running(&without_container.name),
        "{what}: should still be blocked at {} s",
        3.0 * BOUND
    );
}

/// The Kubernetes pattern of `examples/kubernetes/deployment.yaml`, played with docker: an init
/// container copies the library into a volume (the emptyDir), and the application's container,
/// from an image without the library, preloads it from there.
#[test]
fn kubernetes_pattern_init_container_and_shared_volume() {
    let _t = Timer::new("kubernetes_pattern_init_container_and_shared_volume");
    let manifest = std::fs::read_to_string(root().join("examples/kubernetes/deployment.yaml"))
        .expect("examples/kubernetes/deployment.yaml");
    // The manifest's paths and variable are the ones played here.
    for needle in [
        "emptyDir: {}",
        r#"command: ["cp", "/usr/local/lib/libkeepalive_shim.so", "/keepalive-shim/"]"#,
        "mountPath: /keepalive-shim",
        "name: LD_PRELOAD\n              value: /keepalive-shim/libkeepalive_shim.so",
    ] {
        assert!(manifest.contains(needle), "the manifest lacks {needle:?}");
    }
    let Some(docker) = docker() else { return };
    let image = example_image(docker);
    let volume = docker.volume("emptydir");
    let mount = format!("{}:/keepalive-shim", volume.name);

    let init = docker.run(
        "init",
        &[
            "--network",
            "none",
            "-e",
            "LD_PRELOAD=",
            "-v",
            &mount,
            "--entrypoint",
            "cp",
            image,
            "/usr/local/lib/libkeepalive_shim.so",
            "/keepalive-shim/",
        ],
    );
    assert!(
        init.status.success(),
        "init container: {}",
        text(&init.stderr)
    );

    // The application: the plain bullseye image (no library in it) with the programs mounted.
    let programs = format!(
        "type=bind,source={},target=/app,readonly",
        root().join("target/docker/context/app").display()
    );
    let read_only = format!("{mount}:ro");
    for (preload, expected) in [(true, OURS), (false, KERNEL)] {
        let what = with_or_without(preload);
        let mut args = vec!["--network", "none", "-v", &read_only, "--mount", &programs];
        if preload {
            args.extend(["-e", "LD_PRELOAD=/keepalive-shim/libkeepalive_shim.so"]);
        }
        args.extend([BASE_IMAGE, "python3", "/app/requests_options.py"]);
        let out = docker.run("app", &args);
        assert_eq!(
            five_of(&format!("application {what} LD_PRELOAD"), &out),
            expected
        );
    }
}
