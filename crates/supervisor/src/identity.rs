//! The identity a socket takes from the task that makes it, and how the socket trap gives the
//! program's own to the sockets it makes for it. The kernel stamps a new socket with the creating
//! thread's filesystem uid and gid (`sk_uid`: netfilter's `owner` match, `ip rule uidrange`;
//! the file's credentials: `--gid-owner --suppl-groups`), its cgroup (cgroup BPF programs,
//! `net_cls`, socket-memory accounting) and its LSM label. The uid, gid and supplementary groups
//! are this thread's to take for the moment of the `socket()` (`setfsuid`, `setfsgid` and the raw
//! `setgroups` system call act on the calling thread only); the cgroup and the label are not:
//! where they differ from this process's, the socket trap lets the program make its socket itself.
//! Everything is read from `/proc/TID/` files anyone may read (no ptrace right needed).

use keepalive_shim_sys::proc::Status;
use std::io;

/// A thread's filesystem credentials, as `/proc/TID/status` shows them in the reader's user
/// namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
}

/// The 4th field (the filesystem id) of a `Uid:`/`Gid:` line's value.
fn fourth(value: &str) -> Option<u32> {
    value.split_whitespace().nth(3)?.parse().ok()
}

/// The credentials a `/proc/TID/status` file shows.
pub fn parse_status(status: &Status) -> Option<Creds> {
    let groups = status
        .field("Groups")?
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    Some(Creds {
        fsuid: fourth(status.field("Uid")?)?,
        fsgid: fourth(status.field("Gid")?)?,
        groups,
    })
}

/// The credentials of thread `tid` (`thread-self` for this one).
pub fn creds(tid: &str) -> io::Result<Creds> {
    parse_status(&Status::read(tid)?).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}

/// What of a task's identity this thread cannot take: its cgroups (`/proc/TID/cgroup`, every
/// hierarchy) and its LSM label (`/proc/TID/attr/current`; `None` where no LSM answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub cgroup: String,
    pub label: Option<String>,
}

/// The label of thread `tid`, where an LSM gives one.
pub fn label(tid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/attr/current"))
        .ok()
        .map(|l| l.trim_end_matches(['\n', '\0']).to_owned())
}

/// The context of thread `tid`; its label only when `labels` (an LSM answered for this process).
pub fn context(tid: &str, labels: bool) -> io::Result<Context> {
    let mut buf = [0u8; CGROUP_MAX];
    let cgroup = read_small(&format!("/proc/{tid}/cgroup\0"), &mut buf)?;
    Ok(Context {
        cgroup: String::from_utf8_lossy(cgroup).into_owned(),
        label: if labels { label(tid) } else { None },
    })
}

/// `struct pidfd_info` as of Linux 6.13 (`PIDFD_INFO_SIZE_VER0`, 64 bytes): what
/// `PIDFD_GET_INFO` fills.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    spare0: u32,
}

/// `PIDFD_INFO_CGROUPID`, and `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_INFO_CGROUPID: u64 = 1 << 2;
const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
use keepalive_shim_sys::pidfd::PIDFD_THREAD;
use keepalive_shim_sys::proc::read_small;

/// The cgroup v2 id of thread `tid` (`PIDFD_GET_INFO`, Linux 6.13): one ioctl on a pidfd, where
/// reading `/proc/TID/cgroup` makes the kernel write a path per hierarchy. `Err` on a kernel
/// without it (ENOTTY, EINVAL) or for a thread that is gone.
pub fn cgroup_id(tid: i32) -> io::Result<u64> {
    let pidfd = keepalive_shim_sys::pidfd::open(tid, PIDFD_THREAD)?;
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CGROUPID,
        ..PidfdInfo::default()
    };
    // SAFETY: `info` is a valid, writable struct pidfd_info of the size the request names.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            // glibc takes an unsigned long, musl an int: the same bits either way.
            PIDFD_GET_INFO as libc::Ioctl,
            &raw mut info,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if info.mask & PIDFD_INFO_CGROUPID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOTTY));
    }
    Ok(info.cgroupid)
}

/// Whether `cgroup` (this process's `/proc/self/cgroup`) is the unified hierarchy alone
/// (`0::PATH`): then a thread's cgroup v2 id says all its `/proc/TID/cgroup` would.
pub fn unified_only(cgroup: &str) -> bool {
    let mut lines = cgroup.lines();
    matches!((lines.next(), lines.next()), (Some(l), None) if l.starts_with("0::"))
}

/// The most of a `/proc/TID/cgroup` file compared (every hierarchy of a hybrid layout fits).
const CGROUP_MAX: usize = 4096;

/// Whether thread `tid`'s cgroups (every hierarchy) are `mine`, byte for byte: read at every
/// trapped `socket()`, with raw calls into a stack buffer and no allocation (about 9 µs of the
/// kernel's, which writes every hierarchy's path).
pub fn same_cgroup(tid: i32, mine: &str) -> io::Result<bool> {
    let mut path = [0u8; 32];
    let mut w = &mut path[..];
    std::io::Write::write_fmt(&mut w, format_args!("/proc/{tid}/cgroup\0"))?;
    let len = 32 - w.len();
    let path = std::str::from_utf8(&path[..len])
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = [0u8; CGROUP_MAX];
    Ok(read_small(path, &mut buf)? == mine.as_bytes())
}

fn setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes an integer and acts on the calling thread only.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

fn setfsgid(gid: u32) -> u32 {
    // SAFETY: setfsgid takes an integer and acts on the calling thread only.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

/// The raw system call: glibc's `setgroups` changes every thread of the process.
fn setgroups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is valid for reads of its length; the call acts on this thread only.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the socket trap last read of one thread: its owner as `stat` of `/proc/TID` shows it
/// (the effective uid and gid, which every setuid call carries into the filesystem ids), its
/// credentials, and when they were read. Its cgroup and label are compared at every call.
#[derive(Clone, Debug)]
pub struct Seen {
    pub tid: i32,
    pub owner: (u32, u32),
    pub creds: Creds,
    pub at: std::time::Instant,
}

/// How many threads [`Seen`] remembers: a fixed table, so memory does not grow with threads.
pub const SEEN: usize = 256;
/// How long a thread's credentials are trusted while its owner is unchanged: a change of its
/// supplementary groups alone (or of its filesystem ids alone, `setfsuid`) shows within this
/// time.
pub const TRUSTED: std::time::Duration = std::time::Duration::from_secs(1);

/// The owner (uid, gid) of `/proc/TID`: one `stat`, no allocation of the file's text.
pub fn owner(tid: i32) -> io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{tid}"))?;
    Ok((meta.uid(), meta.gid()))
}

/// Runs `f` on this thread with filesystem credentials `want` instead of `mine` (its own), and
/// puts them back; with no system call when they are the same. `Err` (and `f` not run) when the kernel does not let this thread take them
/// (no CAP_SETUID/CAP_SETGID): a socket made then would carry the wrong owner.
pub fn as_creds<T>(want: &Creds, mine: &Creds, f: impl FnOnce() -> T) -> io::Result<T> {
    if want == mine {
        return Ok(f());
    }
    let groups = want.groups != mine.groups;
    if groups {
        setgroups(&want.groups)?;
    }
    setfsgid(want.fsgid);
    setfsuid(want.fsuid);
    // An invalid id changes nothing and returns the current one.
    let took = setfsgid(u32::MAX) == want.fsgid && setfsuid(u32::MAX) == want.fsuid;
    let out = took.then(f);
    setfsuid(mine.fsuid);
    setfsgid(mine.fsgid);
    if groups && setgroups(&mine.groups).is_err() {
        // This thread keeps the program's groups: every later socket would carry them.
        keepalive_shim_sys::output::err(format_args!(
            "keepalive-shim[{}]: cannot restore its own supplementary groups: {}",
            std::process::id(),
            io::Error::last_os_error()
        ));
        std::process::abort();
    }
    out.ok_or_else(|| io::Error::from_raw_os_error(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filesystem_ids_are_the_fourth_fields() {
        let status = "Name:\tx\nUmask:\t0022\nState:\tS\nTgid:\t7\nUid:\t0\t1\t2\t65534\n\
                      Gid:\t10\t11\t12\t65533\nFDSize:\t64\nGroups:\t4 24 27 \nNStgid:\t7\n";
        assert_eq!(
            parse_status(&Status::parse(status)),
            Some(Creds {
                fsuid: 65534,
                fsgid: 65533,
                groups: vec![4, 24, 27]
            })
        );
        let none = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(
            parse_status(&Status::parse(none)).unwrap().groups,
            Vec::<u32>::new()
        );
        assert_eq!(parse_status(&Status::parse("Uid:\t0\t0\n")), None);
    }

    #[test]
    fn a_threads_cgroup_id_is_one_ioctl_where_the_kernel_has_it() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        match cgroup_id(me) {
            Ok(id) => {
                assert!(id > 0);
                assert_eq!(cgroup_id(std::process::id() as i32).unwrap(), id);
            }
            // Before Linux 6.13: the file is read instead.
            Err(e) => assert!(matches!(
                e.raw_os_error(),
                Some(libc::ENOTTY | libc::EINVAL)
            )),
        }
        assert!(unified_only("0::/user.slice\n"));
        assert!(!unified_only("1:memory:/\n0::/\n"));
        assert!(!unified_only(""));
    }

    #[test]
    fn this_threads_own_identity_reads_back() {
        let mine = creds("thread-self").unwrap();
        // SAFETY: getuid/getgid take no arguments.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((mine.fsuid, mine.fsgid), (uid, gid));
        assert!(context("thread-self", true).unwrap().cgroup.contains(':'));
        // Taking one's own credentials always works, and changes nothing.
        assert_eq!(as_creds(&mine, &mine, || 7).unwrap(), 7);
        assert_eq!(creds("thread-self").unwrap(), mine);
    }
}
