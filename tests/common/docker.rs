//! Real containers for the tests: the private Docker daemon of `scripts/dockerd.sh` (its own
//! socket and data under `target/docker/`, never the machine's), started once per test process
//! and stopped by its PID when the process exits, also after a failed test; the bullseye image
//! imported from `scripts/rootfs.sh`'s tarball; and guards that remove each container and volume
//! when a test ends.

use super::lab::Lab;
use super::rootfs::rootfs;
use super::{command, is_root, root, unavailable};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The image imported from the bullseye tarball (`dockerd.sh import`).
pub const BASE_IMAGE: &str = "keepalive-shim/bullseye:latest";
/// The label on every container and volume a test makes, with the test process's PID.
const LABEL: &str = "keepalive-shim.test";

pub struct Docker {
    /// `-H` for the client: `unix://…/target/docker/docker.sock` (as in `dockerd.sh`).
    host: String,
    /// Held for the life of the process: one test process at a time uses the daemon.
    _lock: File,
}

fn dockerd_sh() -> Command {
    Command::new(root().join("scripts/dockerd.sh"))
}

/// Runs `dockerd.sh ARG`, returning its stderr as the error.
fn dockerd_sh_ok(arg: &str) -> Result<(), String> {
    let out = dockerd_sh()
        .arg(arg)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run scripts/dockerd.sh: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("dockerd.sh {arg} failed: {stderr}"))
    }
}

extern "C" fn stop_daemon() {
    let _ = dockerd_sh().arg("stop").status();
}

/// The private daemon with the bullseye image in it, started on first use, or `None` after
/// saying why it cannot be had (see `unavailable`).
pub fn docker() -> Option<&'static Docker> {
    static DOCKER: OnceLock<Result<Docker, String>> = OnceLock::new();
    match DOCKER.get_or_init(start) {
        Ok(docker) => Some(docker),
        Err(why) => unavailable(why),
    }
}

fn start() -> Result<Docker, String> {
    if !is_root() {
        return Err("a Docker daemon needs root".into());
    }
    let state = root().join("target/docker");
    std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let lock = File::create(state.join(".lock")).map_err(|e| e.to_string())?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("flock: {}", std::io::Error::last_os_error()));
    }
    // Stops the daemon when the test process exits, whatever the tests' outcome (the test
    // harness ends with exit(), which runs atexit handlers); a daemon shared by tests running
    // in parallel outlives each of them. Registered first: a start that fails half-way is
    // stopped too (`dockerd.sh stop` does nothing when no daemon runs).
    // SAFETY: stop_daemon is a plain function that may run at exit.
    unsafe { libc::atexit(stop_daemon) };
    let t0 = Instant::now();
    dockerd_sh_ok("start")?;
    eprintln!("docker: daemon up in {:.1} s", t0.elapsed().as_secs_f64());
    let docker = Docker {
        host: format!("unix://{}", state.join("docker.sock").display()),
        _lock: lock,
    };
    docker.sweep();
    rootfs()?;
    let t0 = Instant::now();
    dockerd_sh_ok("import")?;
    eprintln!(
        "docker: image {BASE_IMAGE} ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(docker)
}

impl Docker {
    /// The docker client on this daemon (Debian's, the daemon's version, without BuildKit),
    /// with no `KEEPALIVE_*` or `LD_PRELOAD` variable of the test's environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = command(false, "/usr/bin/docker");
        cmd.env("DOCKER_BUILDKIT", "0").args(["-H", &self.host]);
        cmd
    }

    /// The client's `-H` value for this daemon: `unix://…/target/docker/docker.sock`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `docker ARGS`, which must succeed; its stdout, trimmed.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.cmd().args(args).output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {:?}: {}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A name unique to this process and use, `kas-PID-N-ROLE`, for a container or a volume.
    pub fn name(&self, role: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!(
            "kas-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `docker run --name NAME --label … ARGS` to its end, the container removed afterwards.
    pub fn run(&'static self, role: &str, args: &[&str]) -> Output {
        let container = self.container(role);
        let out = self
            .cmd()
            .args(["run", "--name", &container.name])
            .args(["--label", &self.label()])
            .args(args)
            .output()
            .expect("run docker run");
        drop(container);
        out
    }

    /// A guard for a container of that name, to be made by the caller (`docker run --name`).
    pub fn container(&'static self, role: &str) -> Container {
        Container {
            docker: self,
            name: self.name(role),
        }
    }

    /// `--label` for `docker run` and `docker volume create`: marks what a test made.
    pub fn label(&self) -> String {
        format!("{LABEL}={}", std::process::id())
    }

    /// A new volume (what Kubernetes calls an emptyDir), removed when dropped.
    pub fn volume(&'static self, role: &str) -> Volume {
        let name = self.name(role);
        self.ok(&["volume", "create", "--label", &self.label(), &name]);
        Volume { docker: self, name }
    }

    /// The PID of a running container's first process, whose namespaces are the container's.
    pub fn pid(&self, container: &str) -> u32 {
        self.ok(&["inspect", "-f", "{{.State.Pid}}", container])
            .parse()
            .expect("a PID")
    }

    /// A pod's sandbox, as Kubernetes makes one: a container started with `--network none`
    /// that holds the network namespace, into which the lab's client link is moved
    /// (`Lab::move_client_link`); the pod's containers join it (`--network container:NAME`).
    /// `run`: the image and its command, options before them.
    pub fn sandbox(&'static self, lab: &Lab, run: &[&str]) -> Container {
        let sandbox = self.container("sandbox");
        let label = self.label();
        let network_none = [
            "run",
            "-d",
            "--name",
            &sandbox.name,
            "--label",
            &label,
            "--network",
            "none",
        ];
        self.ok(&[&network_none[..], run].concat());
        lab.move_client_link(self.pid(&sandbox.name));
        sandbox
    }

    pub fn running(&self, container: &str) -> bool {
        self.ok(&["inspect", "-f", "{{.State.Running}}", container]) == "true"
    }

    /// Removes the containers and volumes of earlier test processes (a run that was killed
    /// before it cleaned up). This process holds the daemon's lock, so no other is running.
    fn sweep(&self) {
        let filter = format!("label={LABEL}");
        let list = |what: &[&str]| {
            let out = self.cmd().args(what).output().expect("docker");
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let containers = list(&["ps", "-aq", "--filter", &filter]);
        if !containers.is_empty() {
            let _ = self
                .cmd()
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let volumes = list(&["volume", "ls", "-q", "--filter", &filter]);
        if !volumes.is_empty() {
            let _ = self
                .cmd()
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
    }
}

/// A container, removed (with its anonymous volumes) when dropped, also when a test fails.
pub struct Container {
    docker: &'static Docker,
    pub name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .docker
            .cmd()
            .args(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A volume, removed when dropped (after the containers using it: declare it first).
pub struct Volume {
    docker: &'static Docker,
    pub name: String,
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = self
            .docker
            .cmd()
            .args(["volume", "rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The image `scripts/dist.sh` makes, as its archive names it: `keepalive-shim:VERSION`.
pub const SHIPPED_IMAGE: &str = concat!("keepalive-shim:", env!("CARGO_PKG_VERSION"));

/// target/dist/keepalive-shim-image_VERSION.tar, or `None` (`unavailable`) when
/// `scripts/dist.sh` has not made it.
pub fn shipped_image_archive() -> Option<std::path::PathBuf> {
    let archive = root().join(format!(
        "target/dist/keepalive-shim-image_{}.tar",
        env!("CARGO_PKG_VERSION")
    ));
    if archive.is_file() {
        Some(archive)
    } else {
        unavailable(&format!(
            "{} is missing: run scripts/dist.sh",
            archive.display()
        ))
    }
}

impl Docker {
    /// The shipped image, loaded once per test process with `docker load` from target/dist, or
    /// `None` (`unavailable`) without the archive: one image, the host's (amd64), under
    /// [`SHIPPED_IMAGE`] (a second image under the tag would print a second "Loaded image" line),
    /// and its ID the digest of the config the archive's manifest.json names (the daemon made
    /// nothing of its own).
    pub fn shipped_image(&'static self) -> Option<&'static str> {
        static LOADED: OnceLock<bool> = OnceLock::new();
        let loaded = *LOADED.get_or_init(|| {
            let Some(archive) = shipped_image_archive() else {
                return false;
            };
            let t0 = Instant::now();
            let out = self.ok(&[OsStr::new("load"), OsStr::new("-i"), archive.as_os_str()]);
            let loaded: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("Loaded image"))
                .collect();
            assert_eq!(
                loaded,
                [format!("Loaded image: {SHIPPED_IMAGE}")],
                "docker load: {out}"
            );
            let manifest = super::output_ok(
                std::process::Command::new("tar")
                    .arg("-xOf")
                    .arg(&archive)
                    .arg("manifest.json"),
            )
            .stdout;
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
            let config = manifest[0]["Config"].as_str().unwrap();
            let id = self.ok(&["image", "inspect", "-f", "{{.Id}}", SHIPPED_IMAGE]);
            assert_eq!(
                id,
                config.replace("blobs/sha256/", "sha256:"),
                "the loaded image's ID"
            );
            let platform = self.ok(&[
                "image",
                "inspect",
                "-f",
                "{{.Os}}/{{.Architecture}}",
                SHIPPED_IMAGE,
            ]);
            assert_eq!(platform, "linux/amd64", "the loaded image's platform");
            eprintln!(
                "docker: loaded {SHIPPED_IMAGE} in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            true
        });
        loaded.then_some(SHIPPED_IMAGE)
    }
}
