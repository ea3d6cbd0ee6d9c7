//! The shipped library where users run it: in an old glibc (Debian bullseye, glibc 2.31, by
//! chroot into the tree of `scripts/rootfs.sh`) and in real containers (a private Docker daemon,
//! `scripts/dockerd.sh`): the init-container image of `scripts/dist.sh` (an archive in
//! target/dist, loaded with `docker load`), the image of `examples/docker/Dockerfile` (which
//! copies its files from that image) and the commands of `docs/image-check.md` run on it as
//! printed, the dead-peer seed scenario with that image's unmodified entrypoint in the lab of
//! `scripts/lab.sh`, and the Kubernetes pattern of `examples/kubernetes/` (the init container
//! copies the library into a shared volume). Every command of the tool (`run` with python3 and a
//! static program, `check -- python3`, `inspect`, `metrics`, `system status`;
//! `tests/common/layout.rs`) runs inside two images: the example image (the tool in
//! /usr/local/bin, the library in /usr/local/lib) and one holding the init-container image's own
//! /usr/bin/keepalive-shim and /usr/lib/keepalive-shim/. Every test runs the same program with
//! and without the library. They need root (and, the first time, the Debian mirror) and target/dist
//! (`scripts/dist.sh`): without, they are skipped, except under `CI=true`. Containers get no
//! network but `--network none`, plus the lab's link in the seed scenario.

mod common;

use common::docker::{BASE_IMAGE, Container, Docker, docker};
use common::lab::{FAST_KEEPALIVE, Lab};
use common::layout::Layout;
use common::rootfs::{Chroot, glibc_versions};
use common::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image of `examples/docker/Dockerfile` with the library under test.
const EXAMPLE_IMAGE: &str = "keepalive-shim/example:test";
/// The init-container image's tag, as `scripts/dist.sh` writes it.
use common::docker::SHIPPED_IMAGE as INIT_IMAGE;
/// The init-container image with the library under test in place of the shipped one: what the
/// example image copies its files from.
const UNDER_TEST_IMAGE: &str = "keepalive-shim/under-test:test";
/// The bullseye image with the init-container image's /usr copied in: its own layout,
/// /usr/bin/keepalive-shim and /usr/lib/keepalive-shim/libkeepalive_shim.so.
const INIT_LAYOUT_IMAGE: &str = "keepalive-shim/init-layout:test";

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

/// The build context of the example image, made once per test process: `app/` with the seed
/// client and the probes (also mounted into the Kubernetes pattern's application).
fn context() -> &'static Path {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        let context = root().join("target/docker/context");
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(context.join("app")).unwrap();
        for name in ["client.py", "probe.py", "requests_options.py"] {
            std::fs::copy(program(name), context.join("app").join(name)).unwrap();
        }
        context
    })
}

/// `docker build -q -f DOCKERFILE ARGS... -t TAG CONTEXT`, then the dangling images removed.
fn build(docker: &'static Docker, dockerfile: &Path, args: &[&str], tag: &str, context: &Path) {
    let mut all = vec![
        OsStr::new("build"),
        OsStr::new("-q"),
        OsStr::new("-f"),
        dockerfile.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    all.extend([OsStr::new("-t"), OsStr::new(tag), context.as_os_str()]);
    docker.ok(&all);
    docker.ok(&["image", "prune", "-f"]);
}

/// `examples/docker/Dockerfile` built once per test process on the bullseye image, as printed
/// but for its two build arguments: BASE, and KEEPALIVE_SHIM, the init-container image with
/// the library under test (`target/release`) in place of the shipped one; the tool is the
/// shipped one (static: it runs in bullseye). `None`: skipped (no target/dist).
fn example_image(docker: &'static Docker) -> Option<&'static str> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let built = *BUILT.get_or_init(|| {
        let Some(init) = docker.shipped_image() else {
            return false;
        };
        let t0 = Instant::now();
        let dockerfile = root().join("examples/docker/Dockerfile");
        let recipe = std::fs::read_to_string(&dockerfile).unwrap();
        let default = format!("ARG KEEPALIVE_SHIM={INIT_IMAGE}\n");
        assert!(
            recipe.contains(&default),
            "{}: the default image is not this version's: no {default:?}",
            dockerfile.display()
        );
        let overlay = root().join("target/docker/under-test");
        let _ = std::fs::remove_dir_all(&overlay);
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::copy(library(), overlay.join("libkeepalive_shim.so")).unwrap();
        std::fs::write(
            overlay.join("Dockerfile"),
            format!("FROM {init}\nCOPY libkeepalive_shim.so /usr/lib/keepalive-shim/\n"),
        )
        .unwrap();
        build(
            docker,
            &overlay.join("Dockerfile"),
            &[],
            UNDER_TEST_IMAGE,
            &overlay,
        );
        let base = format!("BASE={BASE_IMAGE}");
        let shim = format!("KEEPALIVE_SHIM={UNDER_TEST_IMAGE}");
        build(
            docker,
            &dockerfile,
            &["--build-arg", &base, "--build-arg", &shim],
            EXAMPLE_IMAGE,
            context(),
        );
        eprintln!(
            "docker: built {EXAMPLE_IMAGE} in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        true
    });
    built.then_some(EXAMPLE_IMAGE)
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
    let Some(image) = example_image(docker) else {
        return;
    };
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
    let Some(image) = example_image(docker) else {
        return;
    };
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

/// The init-container image alone: its tool runs (static, in an image without a C library), and
/// its default command, without the volume mounted, in a read-only root as the pod specs give
/// it, fails naming the folder and writes nothing. (The image holds /keepalive-shim, 0777 as an
/// emptyDir, so that a Docker volume mounted there is writable by its non-root user: without a
/// volume and with a writable root, the copy lands in the container's own layer.)
#[test]
fn init_image_runs_the_tool_and_wants_its_volume() {
    let _t = Timer::new("init_image_runs_the_tool_and_wants_its_volume");
    let Some(docker) = docker() else { return };
    let Some(image) = docker.shipped_image() else {
        return;
    };
    let out = docker.run("version", &["--network", "none", image, "--version"]);
    assert!(out.status.success(), "--version: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        concat!("keepalive-shim ", env!("CARGO_PKG_VERSION"), "\n")
    );
    let out = docker.run("no-volume", &["--network", "none", "--read-only", image]);
    assert_eq!(out.status.code(), Some(1), "without a volume");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/keepalive-shim/libkeepalive_shim.so")
            && stderr.contains("Read-only file system")
            && stderr.contains("nothing written"),
        "without a volume: {stderr}"
    );
    assert_eq!(text(&out.stdout), "", "without a volume");
}

/// The Kubernetes pattern of `examples/kubernetes/deployment.yaml`, played with docker: the
/// init container, from the image loaded from target/dist with its default command (and, as in
/// the manifest, no capability, no privilege escalation, a read-only root filesystem), copies
/// the library into a volume (the emptyDir); the application's container, from an image without
/// the library, preloads it from there.
#[test]
fn kubernetes_pattern_init_container_and_shared_volume() {
    let _t = Timer::new("kubernetes_pattern_init_container_and_shared_volume");
    let manifest = std::fs::read_to_string(root().join("examples/kubernetes/deployment.yaml"))
        .expect("examples/kubernetes/deployment.yaml");
    // The manifest's image, paths and variable are the ones played here.
    for needle in [
        "emptyDir: {}",
        &format!("image: {INIT_IMAGE}\n          imagePullPolicy: IfNotPresent\n"),
        "readOnlyRootFilesystem: true",
        "drop: [\"ALL\"]",
        "mountPath: /keepalive-shim",
        "name: LD_PRELOAD\n              value: /keepalive-shim/libkeepalive_shim.so",
    ] {
        assert!(manifest.contains(needle), "the manifest lacks {needle:?}");
    }
    assert!(
        !manifest.contains("command:") && !manifest.contains("args:"),
        "the init container runs the image's default command"
    );
    let Some(docker) = docker() else { return };
    let Some(image) = docker.shipped_image() else {
        return;
    };
    let volume = docker.volume("emptydir");
    let mount = format!("{}:/keepalive-shim", volume.name);

    let init = docker.run(
        "init",
        &[
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &mount,
            image,
        ],
    );
    assert!(
        init.status.success() && init.stderr.is_empty(),
        "init container: {}: {}",
        init.status,
        text(&init.stderr)
    );
    assert_eq!(text(&init.stdout), "/keepalive-shim/libkeepalive_shim.so\n");

    // The application: the plain bullseye image (no library in it) with the programs mounted.
    let programs = format!(
        "type=bind,source={},target=/app,readonly",
        context().join("app").display()
    );
    let read_only = format!("{mount}:ro");
    // The file in the volume: the shipped library, 0644, and nothing else there.
    let out = docker.run(
        "look",
        &[
            "--network",
            "none",
            "-v",
            &read_only,
            BASE_IMAGE,
            "sh",
            "-c",
            "ls -A /keepalive-shim; stat -c %a /keepalive-shim/libkeepalive_shim.so; \
             sha256sum </keepalive-shim/libkeepalive_shim.so",
        ],
    );
    let archive = common::docker::shipped_image_archive().unwrap();
    let shipped = archive.parent().unwrap().join(format!(
        "keepalive-shim-{}-x86_64-linux/libkeepalive_shim.so",
        env!("CARGO_PKG_VERSION")
    ));
    let sha = text(&output_ok(Command::new("sha256sum").arg(&shipped)).stdout);
    let sha = sha.split_whitespace().next().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("libkeepalive_shim.so\n644\n{sha}  -\n"),
        "the volume: {}",
        text(&out.stderr)
    );
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

/// One command of `docs/image-check.md` and what its comment says it shows.
struct Printed {
    command: String,
    /// `# prints: TEXT`: stdout is exactly TEXT and a newline.
    prints: Option<String>,
    /// `# shows: A, B`: each item begins a line of stdout (spaces collapsed).
    shows: Vec<String>,
}

/// The commands of the first ```sh block of `docs/image-check.md`, each followed by one comment
/// line: `# prints: …` or `# shows: …`.
fn printed_commands() -> Vec<Printed> {
    let doc =
        std::fs::read_to_string(root().join("docs/image-check.md")).expect("docs/image-check.md");
    let block = doc
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .expect("a ```sh block in docs/image-check.md");
    let mut commands: Vec<Printed> = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(text) = line.strip_prefix("# prints: ") {
            let last = commands.last_mut().expect("a command before its comment");
            assert!(last.prints.is_none() && last.shows.is_empty(), "{line}");
            last.prints = Some(text.to_owned());
        } else if let Some(items) = line.strip_prefix("# shows: ") {
            let last = commands.last_mut().expect("a command before its comment");
            assert!(last.prints.is_none() && last.shows.is_empty(), "{line}");
            last.shows = items.split(", ").map(str::to_owned).collect();
        } else {
            assert!(!line.starts_with('#'), "an unknown comment: {line}");
            assert!(
                line.starts_with("docker run "),
                "not a docker command: {line}"
            );
            commands.push(Printed {
                command: line.to_owned(),
                prints: None,
                shows: Vec::new(),
            });
        }
    }
    for printed in &commands {
        assert!(
            printed.prints.is_some() || !printed.shows.is_empty(),
            "no `# prints:` or `# shows:` after {}",
            printed.command
        );
    }
    commands
}

/// The commands of `docs/image-check.md`, run as printed by `sh -c` on the example image (only
/// `IMAGE` and the private daemon's `-H` filled in; Debian's docker client first on PATH): each
/// exits 0 and shows what its comment says.
#[test]
fn image_check_commands_work_as_printed() {
    let _t = Timer::new("image_check_commands_work_as_printed");
    let commands = printed_commands();
    assert!(
        commands.len() >= 3,
        "the check, with and without the library"
    );
    let Some(docker) = docker() else { return };
    let Some(image) = example_image(docker) else {
        return;
    };
    for printed in &commands {
        assert_eq!(
            printed.command.matches(" IMAGE ").count(),
            1,
            "{}",
            printed.command
        );
        let line = printed
            .command
            .replacen("docker ", &format!("docker -H {} ", docker.host()), 1)
            .replacen(" IMAGE ", &format!(" {image} "), 1);
        let mut cmd = command(false, "/bin/sh");
        cmd.env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .args(["-c", &line]);
        let out = output(cmd);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{}: {}: {stderr}{stdout}",
            printed.command,
            out.status
        );
        if let Some(expected) = &printed.prints {
            assert_eq!(stdout, format!("{expected}\n"), "{}", printed.command);
        }
        let collapsed: Vec<String> = stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        for item in &printed.shows {
            assert!(
                collapsed.iter().any(|l| l.starts_with(item.as_str())),
                "{}: no line begins with {item:?}:\n{stdout}",
                printed.command
            );
        }
    }
}

/// Every command of the tool inside a container of `image`, whose tool must find the library
/// at `library` (`tests/common/layout.rs`): one container (`--network none`, the image's
/// `LD_PRELOAD` emptied so that each program runs without the library unless under `run`),
/// each command a `docker exec` in it, as a user types it there. `inspect` and `metrics` read
/// other processes (`pidfd_getfd`, `process_vm_readv`), which Docker's default seccomp profile
/// allows with CAP_SYS_PTRACE only; and `metrics` finds the library's counters through
/// `/proc/PID/map_files`, which needs CAP_SYS_ADMIN (until the library publishes a locator
/// mapping, Linux 5.17): the container gets both, as a user's would for these two commands.
/// From the node, as root, they need nothing added.
fn every_command_in(docker: &'static Docker, what: &str, image: &str, library: &str) {
    let dir = scratch().join(docker.name("layout"));
    std::fs::create_dir_all(&dir).unwrap();
    let client = build_c("options_client.c", &["-O2", "-static"]);
    let _ = std::fs::copy(client, dir.join("options_client_static"));
    let mount = format!("type=bind,source={},target=/ka,readonly", dir.display());
    let container = docker.container("layout");
    let label = docker.label();
    docker.ok(&[
        "run",
        "-d",
        "--name",
        &container.name,
        "--label",
        &label,
        "--network",
        "none",
        "--cap-add",
        "SYS_PTRACE",
        "--cap-add",
        "SYS_ADMIN",
        "-e",
        "LD_PRELOAD=",
        "--mount",
        &mount,
        "--entrypoint",
        "sleep",
        image,
        "infinity",
    ]);
    let exec = |args: &[&str]| {
        let mut cmd = docker.cmd();
        cmd.args(["exec", "-i", &container.name]).args(args);
        cmd
    };
    Layout {
        what,
        tool: "keepalive-shim",
        library,
        static_client: "/ka/options_client_static",
        dynamic_client: None,
        exec: &exec,
    }
    .every_command();
}

/// The example image (`examples/docker/Dockerfile`: the tool in /usr/local/bin, the library in
/// /usr/local/lib): every command.
#[test]
fn docker_example_image_every_command() {
    let _t = Timer::new("docker_example_image_every_command");
    let Some(docker) = docker() else { return };
    let Some(image) = example_image(docker) else {
        return;
    };
    every_command_in(
        docker,
        "the example image",
        image,
        "/usr/local/lib/libkeepalive_shim.so",
    );
}

/// The init-container image's own layout (/usr/bin/keepalive-shim, and the library in
/// /usr/lib/keepalive-shim/, as the packages install them), copied whole into the bullseye
/// image: every command. Before the tool had one finder of the library, `run` exited 78 here.
#[test]
fn docker_init_image_layout_every_command() {
    let _t = Timer::new("docker_init_image_layout_every_command");
    let Some(docker) = docker() else { return };
    let Some(init) = docker.shipped_image() else {
        return;
    };
    let context = root().join("target/docker/init-layout");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {init} AS shim\nFROM {BASE_IMAGE}\nCOPY --from=shim /usr/ /usr/\n"),
    )
    .unwrap();
    build(
        docker,
        &context.join("Dockerfile"),
        &[],
        INIT_LAYOUT_IMAGE,
        &context,
    );
    every_command_in(
        docker,
        "the init image's layout",
        INIT_LAYOUT_IMAGE,
        "/usr/lib/keepalive-shim/libkeepalive_shim.so",
    );
}
