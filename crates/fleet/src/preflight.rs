//! What must hold before anything is loaded, each with a message that says what to do: the
//! kernel's version, the privileges, that the path is a cgroup v2 directory, and that a pin
//! path is on a bpf file system.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The oldest kernel fleet mode runs on: `bpf_setsockopt` for all five options from sock_ops
/// and `BPF_LINK_DETACH` arrived in 5.9.
pub const MINIMUM: (u32, u32) = (5, 9);
/// From 6.1 `bpf_getsockopt` reads these options back, so a program's own settings are seen.
pub const READ_BACK: (u32, u32) = (6, 1);

/// The running kernel's version (major, minor), from `uname`.
pub fn kernel() -> io::Result<(u32, u32)> {
    let release = keepalive_shim_sys::kernel::release()?;
    parse_release(&release).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("kernel release {release:?}"),
        )
    })
}

pub use keepalive_shim_sys::kernel::parse_release;

/// Why this kernel cannot run fleet mode with `force` (or `None`).
pub fn kernel_problem(version: (u32, u32), force: bool) -> Option<String> {
    let (major, minor) = version;
    if version < MINIMUM {
        return Some(format!(
            "Linux {major}.{minor} is too old for fleet mode: it needs {}.{} or later \
             (bpf_setsockopt of SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and \
             TCP_USER_TIMEOUT from a sock_ops program, and BPF_LINK_DETACH); use the preload \
             library (keepalive-shim run) on this machine",
            MINIMUM.0, MINIMUM.1
        ));
    }
    if version < READ_BACK && !force {
        return Some(format!(
            "on Linux {major}.{minor} a BPF program cannot read these options back \
             (bpf_getsockopt can from {}.{}), so it could not leave a program's own keepalive \
             and user timeout alone; set KEEPALIVE_FORCE=1 to attach anyway, giving every \
             connection ours",
            READ_BACK.0, READ_BACK.1
        ));
    }
    None
}

/// Capabilities in effect, from `/proc/self/status`.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

const CAP_SYS_ADMIN: u32 = 21;

/// Loading a sock_ops program needs `CAP_BPF` and `CAP_NET_ADMIN`, attaching to a cgroup
/// `CAP_NET_ADMIN`; but finding what is attached (the ID iterators and `…_GET_FD_BY_ID`, to
/// replace keepalive-shim's earlier attachment rather than stack on it, and for `status`) needs
/// `CAP_SYS_ADMIN`, which implies the other two for BPF.
pub fn privileges() -> Result<(), String> {
    let caps = effective_caps().unwrap_or(0);
    if caps & (1 << CAP_SYS_ADMIN) != 0 {
        return Ok(());
    }
    Err(
        "fleet mode needs root with CAP_SYS_ADMIN (to load and attach BPF programs, and to \
         find keepalive-shim's earlier attachments so that attaching replaces them); in a \
         container, add CAP_SYS_ADMIN, CAP_BPF and CAP_NET_ADMIN"
            .to_string(),
    )
}

/// Before 5.11 BPF memory counts against `RLIMIT_MEMLOCK` (often 64 KiB): raise it, as libbpf
/// does. Later kernels charge the memory cgroup instead.
pub fn raise_memlock(version: (u32, u32)) {
    if version >= (5, 11) {
        return;
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a live rlimit; failing leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a zeroed statfs is a valid buffer for statfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a live, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Where cgroup v2 is mounted, from `/proc/self/mountinfo`.
pub fn cgroup2_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .collect()
}

/// An open cgroup v2 directory.
pub struct Cgroup {
    pub dir: File,
    pub path: PathBuf,
    /// Its ID, as links report it: the directory's inode number.
    pub id: u64,
}

/// Opens `path` as a cgroup v2 directory, or says why it is not one.
pub fn cgroup(path: &Path) -> Result<Cgroup, String> {
    let hint = || match cgroup2_mounts().first() {
        Some(m) => format!("cgroup v2 is mounted at {}", m.display()),
        None => "no cgroup v2 hierarchy is mounted on this machine".to_string(),
    };
    let kind = statfs_type(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if kind == CGROUP_SUPER_MAGIC {
        return Err(format!(
            "{} is a cgroup v1 hierarchy; fleet mode needs cgroup v2 ({})",
            path.display(),
            hint()
        ));
    }
    if kind != CGROUP2_SUPER_MAGIC {
        let also = if kind == TMPFS_MAGIC {
            " (the cgroup v1 layout's tmpfs)"
        } else {
            ""
        };
        return Err(format!(
            "{} is not a cgroup v2 directory{also}; {}",
            path.display(),
            hint()
        ));
    }
    let dir = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = dir
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Cgroup {
        id: meta.ino(),
        path,
        dir,
    })
}

impl Cgroup {
    pub fn fd(&self) -> i32 {
        self.dir.as_raw_fd()
    }

    /// The cgroups above this one, nearest first, as (ID, path), up to the hierarchy's root:
    /// programs attached to them run for this cgroup's sockets too.
    pub fn ancestors(&self) -> Vec<(u64, PathBuf)> {
        let mut out = Vec::new();
        let mut at = self.path.parent();
        while let Some(dir) = at {
            if statfs_type(dir).ok() != Some(CGROUP2_SUPER_MAGIC) {
                break;
            }
            if let Ok(meta) = std::fs::metadata(dir) {
                out.push((meta.ino(), dir.to_path_buf()));
            }
            at = dir.parent();
        }
        out
    }
}

/// Whether `dir` (or, when it does not exist yet, its parent) is on a bpf file system.
pub fn bpffs(dir: &Path) -> Result<(), String> {
    let probe = if dir.exists() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    match statfs_type(probe) {
        Ok(BPF_FS_MAGIC) => Ok(()),
        Ok(_) => Err(format!(
            "{} is not on a bpf file system; mount one first (mount -t bpf bpf /sys/fs/bpf) \
             and pin under it",
            dir.display()
        )),
        Err(e) => Err(format!("{}: {e}", probe.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_kernels_get_a_clear_refusal() {
        let too_old = kernel_problem((5, 4), true).unwrap();
        assert!(too_old.contains("Linux 5.4 is too old for fleet mode: it needs 5.9"));
        let no_read_back = kernel_problem((5, 15), false).unwrap();
        assert!(no_read_back.contains("set KEEPALIVE_FORCE=1 to attach anyway"));
        assert_eq!(kernel_problem((5, 15), true), None);
        assert_eq!(kernel_problem((6, 1), false), None);
    }
}
