//! A cgroup v2 made for one test (`kas-cg-PID-N` under the unified hierarchy), the one helper
//! every fleet-mode test uses: processes are put into it between fork and exec; when dropped,
//! whatever keepalive-shim attached to it is detached (`fleet detach --cgroup`), the processes
//! left in it are killed, and it is removed, also when the test fails. The cgroups of earlier
//! runs whose process is gone (a killed run) are swept once per test process.

use super::{command, is_root, unavailable};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The first cgroup v2 mount (`/sys/fs/cgroup/unified` in a hybrid layout).
pub fn unified() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

pub struct TestCgroup {
    pub path: PathBuf,
    /// The keepalive-shim that detaches from it.
    cli: PathBuf,
}

impl TestCgroup {
    /// A new cgroup, or `None` (`unavailable`) without root or cgroup v2.
    pub fn new(cli: &Path) -> Option<TestCgroup> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        static SWEEP: std::sync::Once = std::sync::Once::new();
        if !is_root() {
            return unavailable("fleet mode needs root");
        }
        let Some(base) = unified() else {
            return unavailable("fleet mode: no cgroup v2 hierarchy is mounted");
        };
        SWEEP.call_once(|| sweep(&base, cli));
        let path = base.join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = std::fs::create_dir(&path) {
            return unavailable(&format!("fleet mode: cannot make {}: {e}", path.display()));
        }
        Some(TestCgroup {
            path,
            cli: cli.to_owned(),
        })
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// `cmd` will run in this cgroup (see [`enter`]).
    pub fn enter(&self, cmd: &mut Command) {
        enter(&self.path, cmd);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove(&self.path, &self.cli);
    }
}

/// A child cgroup of a test cgroup (as the kubelet makes a pod's below `kubepods`), for processes
/// put in it between fork and exec; its processes killed and it removed by [`ChildCgroup::remove`]
/// or when dropped (before its parent, which holds the attachment).
pub struct ChildCgroup {
    pub path: PathBuf,
}

impl ChildCgroup {
    pub fn new(parent: &TestCgroup, name: &str) -> ChildCgroup {
        let path = parent.path.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ChildCgroup { path }
    }

    /// `cmd` will run in this cgroup (see [`enter`]).
    pub fn enter(&self, cmd: &mut Command) {
        enter(&self.path, cmd);
    }

    /// Kills what is in it and removes it.
    pub fn remove(&self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `cmd` will run in cgroup `path`: between fork and exec the child writes "0" (itself) to
/// `cgroup.procs`.
fn enter(path: &Path, cmd: &mut Command) {
    let procs = File::options()
        .write(true)
        .open(path.join("cgroup.procs"))
        .expect("open cgroup.procs");
    // SAFETY: write is async-signal-safe, and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The names of the test cgroups: `kas-cg-PID-N`.
const PREFIX: &str = "kas-cg-";

/// Detaches keepalive-shim from `path`, kills what is left in it and removes it.
fn remove(path: &Path, cli: &Path) {
    let _ = command(false, cli)
        .args(["fleet", "detach", "--cgroup", path.to_str().unwrap()])
        .output();
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    for _ in 0..50 {
        if std::fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("warning: could not remove {}", path.display());
}

/// Removes the test cgroups of earlier runs whose process is gone (a killed run).
fn sweep(base: &Path, cli: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            remove(&entry.path(), cli);
        }
    }
}
