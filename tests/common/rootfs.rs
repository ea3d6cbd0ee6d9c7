//! An old glibc for the tests: the Debian bullseye tree (glibc 2.31, Python 3.9) that
//! `scripts/rootfs.sh` makes once and caches under `target/rootfs/`, and programs run chrooted
//! into it, each test with a folder of its own there (removed when the test ends, also on
//! failure).

use super::{is_root, library, root, unavailable};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

pub fn rootfs_sh() -> Command {
    Command::new(root().join("scripts/rootfs.sh"))
}

/// The bullseye tree, made by `scripts/rootfs.sh` on first use (once per test process; the
/// script itself reuses its cache), or why it cannot be had.
pub fn rootfs() -> Result<&'static Path, String> {
    static TREE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TREE.get_or_init(|| {
        if !is_root() {
            return Err("the bullseye tree needs root (debootstrap, chroot)".into());
        }
        let t0 = Instant::now();
        let out = rootfs_sh()
            .output()
            .map_err(|e| format!("cannot run scripts/rootfs.sh: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        if !out.status.success() {
            return Err(format!("scripts/rootfs.sh failed: {stderr}"));
        }
        eprintln!(
            "rootfs: scripts/rootfs.sh took {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let path = rootfs_sh().arg("path").output().unwrap().stdout;
        Ok(PathBuf::from(String::from_utf8(path).unwrap().trim()))
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// A folder of this test's own in the bullseye tree, `/tmp/kas-PID-N` seen from inside, holding
/// a copy of the library; removed when dropped.
pub struct Chroot {
    tree: &'static Path,
    /// The folder as seen from inside the tree.
    pub dir: PathBuf,
}

impl Chroot {
    pub fn new() -> Option<Chroot> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let tree = match rootfs() {
            Ok(tree) => tree,
            Err(why) => return unavailable(&why),
        };
        SWEEP.call_once(|| sweep(tree));
        let dir = PathBuf::from(format!(
            "/tmp/kas-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let chroot = Chroot { tree, dir };
        std::fs::create_dir_all(chroot.host(""))
            .unwrap_or_else(|e| panic!("{}: {e}", chroot.host("").display()));
        std::fs::copy(library(), chroot.host("libkeepalive_shim.so")).expect("copy the library");
        Some(chroot)
    }

    /// The whole tree, on the host.
    pub fn tree(&self) -> &Path {
        self.tree
    }

    /// `name` in this test's folder, as seen from inside the tree.
    pub fn inside(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `name` in this test's folder, as seen from the host.
    pub fn host(&self, name: &str) -> PathBuf {
        self.tree
            .join(self.dir.strip_prefix("/").unwrap())
            .join(name)
    }

    /// Copies `tests/programs/NAME` into this test's folder.
    pub fn copy_program(&self, name: &str) {
        std::fs::copy(super::program(name), self.host(name))
            .unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }

    /// `program` (a path inside the tree) run chrooted into the tree, with only `PATH` in its
    /// environment, plus `LD_PRELOAD` naming this test's copy of the library if `preload`.
    pub fn command(&self, preload: bool, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .current_dir("/");
        if preload {
            cmd.env("LD_PRELOAD", self.inside("libkeepalive_shim.so"));
        }
        let tree = CString::new(self.tree.as_os_str().as_bytes()).unwrap();
        // SAFETY: chroot and chdir are async-signal-safe, and the closure allocates nothing (the
        // path was made before the fork).
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(tree.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// `rootfs.sh gcc`: builds `tests/programs/SOURCE` with the host's gcc against the tree's
    /// glibc into this test's folder, as `output`.
    pub fn gcc(&self, source: &str, output: &str) {
        gcc(&[
            "-O2".as_ref(),
            "-Wall".as_ref(),
            "-o".as_ref(),
            self.host(output).as_os_str(),
            super::program(source).as_os_str(),
        ]);
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.host(""));
    }
}

/// `rootfs.sh gcc ARGS`: the host's gcc against the tree's glibc, which must succeed.
pub fn gcc(args: &[&OsStr]) {
    super::output_ok(rootfs_sh().arg("gcc").args(args));
}

/// Removes the folders of test processes that are gone (a run killed before it cleaned up).
fn sweep(tree: &Path) {
    let Ok(entries) = std::fs::read_dir(tree.join("tmp")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("kas-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The glibc symbol versions a binary needs, as `[major, minor]`, newest last.
pub fn glibc_versions(binary: &Path) -> Vec<[u32; 2]> {
    let out: Output = Command::new("readelf")
        .arg("-V")
        .arg(binary)
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut versions: Vec<[u32; 2]> = text
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some([parts.next()??, parts.next()??])
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// A copy of the whole bullseye tree that a test may change (install packages, write `/etc`):
/// an overlay mount (the cache is its lower layer and stays as it is; about 10 ms), or, where
/// overlayfs cannot be mounted, `cp -a` (about 3 s). In `scratch()`; unmounted and removed when
/// dropped.
pub struct TreeCopy {
    base: PathBuf,
    /// The tree, on the host.
    pub path: PathBuf,
    mounted: bool,
}

impl TreeCopy {
    pub fn new(name: &str) -> Option<TreeCopy> {
        let lower = match rootfs() {
            Ok(tree) => tree,
            Err(why) => return unavailable(&why),
        };
        let base = super::scratch().join(name);
        let _ = std::fs::remove_dir_all(&base);
        let path = base.join("tree");
        for dir in ["upper", "work", "tree"] {
            std::fs::create_dir_all(base.join(dir)).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        let mounted = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&path)
            .output()
            .is_ok_and(|out| out.status.success());
        if !mounted {
            std::fs::remove_dir(&path).unwrap();
            super::output_ok(Command::new("cp").arg("-a").arg(lower).arg(&path));
        }
        Some(TreeCopy {
            base,
            path,
            mounted,
        })
    }

    /// `path` (absolute, inside the tree) on the host.
    pub fn host(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.path.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// `program` run chrooted into the copy with only `PATH` in its environment; as `uid` (and
    /// its group, no supplementary groups) when given.
    pub fn command(&self, uid: Option<u32>, program: impl AsRef<OsStr>) -> Command {
        self.chrooted(uid, program, false)
    }

    /// `program` run chrooted into the copy as root, as on a booted machine: with `/proc`
    /// mounted, in a private mount namespace of its own (entered between fork and exec, gone
    /// with the last process in it), so that nothing is mounted on the host or left behind.
    /// What needs it: the tool finds itself through `/proc/self/exe`, and `inspect`, `metrics`
    /// and the supervisor read other processes there.
    pub fn command_with_proc(&self, program: impl AsRef<OsStr>) -> Command {
        self.chrooted(None, program, true)
    }

    fn chrooted(&self, uid: Option<u32>, program: impl AsRef<OsStr>, proc: bool) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .current_dir("/");
        let tree = CString::new(self.path.as_os_str().as_bytes()).unwrap();
        let proc_dir = CString::new(self.host("/proc").as_os_str().as_bytes()).unwrap();
        // SAFETY: unshare, mount, chroot, chdir, setgroups, setgid and setuid are
        // async-signal-safe, and the closure allocates nothing (the paths were made before the
        // fork).
        unsafe {
            cmd.pre_exec(move || {
                if proc {
                    let private = libc::MS_REC | libc::MS_PRIVATE;
                    let null = std::ptr::null();
                    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    // After the first mount nothing mounted propagates back to the host's
                    // namespace.
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(c"none".as_ptr(), c"/".as_ptr(), null, private, null.cast())
                            != 0
                        || libc::mount(
                            c"proc".as_ptr(),
                            proc_dir.as_ptr(),
                            c"proc".as_ptr(),
                            flags,
                            null.cast(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::chroot(tree.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(uid) = uid
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for TreeCopy {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
