//! Files as root-side code must touch them when the folders belong to someone else: every path
//! resolved inside a tree (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, Linux 5.6; a
//! walk of our own, one component at a time and never letting the kernel follow a link, where
//! `openat2` is missing), folders made with `mkdirat` and opened without following a link, files
//! written so that a reader sees the old content or the new and never a part (a new file made
//! with `O_CREAT | O_EXCL | O_NOFOLLOW` beside the old one, `fsync`, `renameat` in the folder's
//! descriptor, `fsync` of the folder), files read only when regular, not a link, and not larger
//! than a cap, and an exclusive lock on a folder while a file in it is read and replaced.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How many links one resolution may follow (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// What `fstat` says of a file: the fields the checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

impl Stat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    /// The permission bits (with setuid, setgid and sticky).
    pub fn perms(&self) -> u32 {
        self.mode & 0o7777
    }
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `fstat` of any descriptor (an `O_PATH` one included).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the borrow, st is a live, writable stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(Stat {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        dev: st.st_dev,
        ino: st.st_ino,
        size: u64::try_from(st.st_size).unwrap_or(0),
    })
}

/// `openat(dir, name, flags)` with `O_CLOEXEC` (and `mode` when creating).
fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: dir is open for the borrow and name is NUL-terminated.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: the descriptor was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `open_how` of `openat2` (linux/openat2.h): libc's is non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Whether this kernel (and any seccomp filter around us) has `openat2`: Linux 5.6. Asked once.
fn have_openat2() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(
        || match raw_openat2(libc::AT_FDCWD, c"/", libc::O_PATH, 0) {
            Ok(_) => true,
            // ENOSYS: an older kernel; EPERM: a seccomp filter that does not know it.
            Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
        },
    )
}

fn raw_openat2(dir: RawFd, path: &CStr, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: path is NUL-terminated and `how` is a live open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A folder tree that code running as root works in without leaving it: `/` itself, or an
/// image's root given by `--root`. Every path is absolute as seen inside the tree.
pub struct Tree {
    root: OwnedFd,
    dir: PathBuf,
    /// Resolve with the walk of our own even where `openat2` works (the tests of the fallback).
    walk_only: bool,
}

impl Tree {
    /// The tree whose top is `dir` (followed if a link: the caller named it).
    pub fn open(dir: &Path) -> io::Result<Tree> {
        let path = cstr(dir.as_os_str().as_bytes())?;
        // SAFETY: path is NUL-terminated.
        let fd = check(unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Tree {
            // SAFETY: the descriptor was just opened and is owned by nothing else.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            dir: dir.to_path_buf(),
            walk_only: false,
        })
    }

    /// The same tree, always resolved by the walk of our own (as on kernels without `openat2`).
    pub fn without_openat2(mut self) -> Tree {
        self.walk_only = true;
        self
    }

    /// The descriptor of the tree's top (for `fchdir` + `chroot(".")`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// `path` (inside the tree) as it is shown to a person: `/etc/x`, or `DIR/etc/x`.
    pub fn show(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.dir.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Opens `path` with `flags`, resolved inside the tree: links followed as if the tree were
    /// `/` (an absolute link starts again at the tree's top, `..` stops there), magic links of
    /// `/proc` refused. `openat2` where the kernel has it, else [`Tree::walk`].
    pub fn open_in(&self, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        if !self.walk_only && have_openat2() {
            let c = cstr(path.as_os_str().as_bytes())?;
            let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
            let mut tries = 0;
            loop {
                match raw_openat2(self.root.as_raw_fd(), &c, flags, resolve) {
                    // A rename elsewhere in the tree during the resolution: the kernel asks to
                    // try again rather than risk leaving the tree.
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 16 => tries += 1,
                    other => return other,
                }
            }
        }
        let (parent, name) = self.walk(path, true)?;
        match name {
            None => openat(parent.as_fd(), c".", flags, 0),
            Some(name) => openat(
                parent.as_fd(),
                &cstr(name.as_bytes())?,
                flags | libc::O_NOFOLLOW,
                0,
            ),
        }
    }

    /// The folder `path` inside the tree, opened for reading, locking and making files in it.
    pub fn dir(&self, path: &Path) -> io::Result<Dir> {
        let fd = self.open_in(path, libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(Dir { fd })
    }

    /// The folder `path` inside the tree, made where missing (each level with `mkdirat` in its
    /// parent's descriptor, `mode`, root's): like `mkdir -p`, without ever leaving the tree.
    pub fn make_dirs(&self, path: &Path, mode: u32) -> io::Result<Dir> {
        let mut at = PathBuf::from("/");
        let mut dir = self.dir(&at)?;
        for name in path.iter().filter(|c| *c != OsStr::new("/")) {
            at.push(name);
            dir = match self.dir(&at) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let made = dir.make_dir(name, mode)?;
                    // Re-resolve: the name just made is what the next level hangs from.
                    let dir = self.dir(&at)?;
                    if made {
                        // SAFETY: the descriptor is open; fchmod sets what the umask took.
                        check(unsafe { libc::fchmod(dir.fd.as_raw_fd(), mode) })?;
                    }
                    dir
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    /// `path` with every link inside the tree followed and `.`/`..` taken out: the name the
    /// loader, chrooted into the tree, would reach the same file by.
    pub fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let mut stack: Vec<OsString> = Vec::new();
        let (_, name) = self.walk_names(path, true, &mut stack)?;
        let mut out = PathBuf::from("/");
        for n in stack.iter().chain(name.as_ref()) {
            out.push(n);
        }
        Ok(out)
    }

    /// The tree's top and each component of `path` (already resolved: no link may be on the way;
    /// a link is the error `ELOOP`), with what `fstat` says of each, top first. Each is opened
    /// from its parent's descriptor without following anything, so what is checked is what a
    /// resolution of `path` reaches.
    pub fn chain(&self, path: &Path) -> io::Result<Vec<(PathBuf, Stat)>> {
        let mut out = vec![(self.show("/"), fstat(self.root.as_fd())?)];
        let mut fd = openat(self.root.as_fd(), c".", libc::O_PATH, 0)?;
        let mut at = PathBuf::from("/");
        for name in path.iter().filter(|c| *c != OsStr::new("/")) {
            if name == OsStr::new("..") || name == OsStr::new(".") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a resolved path",
                ));
            }
            let next = openat(
                fd.as_fd(),
                &cstr(name.as_bytes())?,
                libc::O_PATH | libc::O_NOFOLLOW,
                0,
            )?;
            at.push(name);
            let st = fstat(next.as_fd())?;
            if st.is_symlink() {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            out.push((self.show(&at), st));
            fd = next;
        }
        Ok(out)
    }

    /// The resolution of our own, for kernels without `openat2` (and for [`Tree::resolve`]):
    /// one component at a time, each opened with `O_PATH | O_NOFOLLOW` from the descriptor of the
    /// folder before it; a link's text read with `readlinkat` and resolved the same way (from the
    /// tree's top when absolute); `..` taken back along the descriptors already held, never
    /// asked of the kernel, and never above the top. The kernel never follows a link or a `..`,
    /// so nothing outside the tree is reached. Returns the last folder's descriptor and the last
    /// name (`None` for the top itself); with `follow_last` a final link is followed too.
    fn walk(&self, path: &Path, follow_last: bool) -> io::Result<(OwnedFd, Option<OsString>)> {
        let mut stack = Vec::new();
        self.walk_names(path, follow_last, &mut stack)
    }

    fn walk_names(
        &self,
        path: &Path,
        follow_last: bool,
        names: &mut Vec<OsString>,
    ) -> io::Result<(OwnedFd, Option<OsString>)> {
        let top = || openat(self.root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0);
        let mut fds: Vec<OwnedFd> = vec![top()?];
        names.clear();
        let mut todo: Vec<OsString> = components(path.as_os_str().as_bytes());
        todo.reverse();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                if fds.len() > 1 {
                    fds.pop();
                    names.pop();
                }
                continue;
            }
            let last = todo.is_empty();
            let parent = fds.last().expect("the top stays").as_fd();
            let fd = match openat(
                parent,
                &cstr(name.as_bytes())?,
                libc::O_PATH | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(fd) => fd,
                Err(e) if last && e.kind() == io::ErrorKind::NotFound => {
                    // The last name may be one about to be made.
                    let parent = fds.pop().expect("the top stays");
                    return Ok((parent, Some(name)));
                }
                Err(e) => return Err(e),
            };
            let st = fstat(fd.as_fd())?;
            if st.is_symlink() && (!last || follow_last) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = readlink(fd.as_fd())?;
                if target.first() == Some(&b'/') {
                    fds.truncate(1);
                    names.clear();
                }
                let mut more = components(&target);
                more.reverse();
                todo.extend(more);
                continue;
            }
            if last {
                let parent = fds.pop().expect("the top stays");
                return Ok((parent, Some(name)));
            }
            if !st.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            fds.push(fd);
            names.push(name);
        }
        // The path ended on a folder (or was the top): that folder itself.
        let fd = fds.pop().expect("the top stays");
        let name = names.pop();
        match name {
            None => Ok((fd, None)),
            Some(name) => {
                let parent = fds.pop().expect("the top stays");
                Ok((parent, Some(name)))
            }
        }
    }
}

/// A path's components, without empty ones and `.`.
fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// The text of the link `fd` (opened with `O_PATH | O_NOFOLLOW`).
fn readlink(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0_u8; libc::PATH_MAX as usize + 1];
    // SAFETY: fd is open, "" names the link itself, buf is live and writable for its length.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// A folder held open: files in it are read, written, removed and locked through its
/// descriptor, by a name of one component, never following a link.
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// The folder at `path` (resolved as usual: the caller chose it).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: c is NUL-terminated.
        let fd = check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        Ok(Dir {
            // SAFETY: the descriptor was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn stat_self(&self) -> io::Result<Stat> {
        fstat(self.fd.as_fd())
    }

    fn name(name: impl AsRef<OsStr>) -> io::Result<CString> {
        let name = name.as_ref().as_bytes();
        if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a name in a folder",
            ));
        }
        cstr(name)
    }

    /// What `name` is, without following it: `None` when there is nothing by that name.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Stat>> {
        match openat(
            self.fd.as_fd(),
            &Self::name(name)?,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => fstat(fd.as_fd()).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The contents of `name`: `None` when there is none; an error when it is a link (never
    /// followed), not a regular file (never a FIFO waited on), or larger than `max` bytes.
    pub fn read(&self, name: impl AsRef<OsStr>, max: usize) -> io::Result<Option<Vec<u8>>> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = match openat(self.fd.as_fd(), &Self::name(name)?, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(io::Error::other(
                    "it is a symbolic link (not followed; not replaced)",
                ));
            }
            Err(e) => return Err(e),
        };
        if !fstat(fd.as_fd())?.is_file() {
            return Err(io::Error::other("it is not a regular file"));
        }
        let mut file = std::fs::File::from(fd);
        let mut out = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(&mut file, max as u64 + 1), &mut out)?;
        if out.len() > max {
            return Err(io::Error::other(format!("it is larger than {max} bytes")));
        }
        Ok(Some(out))
    }

    /// Puts `bytes` at `name` with `mode` (and `owner`, uid and gid, when given): a new file made
    /// beside it (`O_CREAT | O_EXCL | O_NOFOLLOW`), written, `fsync`ed, renamed over `name` in
    /// this folder (a link by that name is replaced, never followed), and the folder `fsync`ed.
    pub fn write(
        &self,
        name: impl AsRef<OsStr>,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let name = name.as_ref();
        let target = Self::name(name)?;
        let tmp = Self::name(format!(
            ".{}.keepalive-shim-{}",
            name.to_string_lossy(),
            std::process::id()
        ))?;
        // A leftover of a killed run of this process id.
        // SAFETY: the descriptor is open and tmp is NUL-terminated.
        unsafe { libc::unlinkat(self.fd.as_raw_fd(), tmp.as_ptr(), 0) };
        let result = (|| {
            let fd = openat(
                self.fd.as_fd(),
                &tmp,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )?;
            let mut file = std::fs::File::from(fd);
            io::Write::write_all(&mut file, bytes)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
            // SAFETY: the descriptor is open.
            check(unsafe { libc::fchmod(file.as_raw_fd(), mode) })?;
            file.sync_all()?;
            self.rename_c(&tmp, &target)
        })();
        if result.is_err() {
            // SAFETY: as above.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), tmp.as_ptr(), 0) };
        }
        result
    }

    /// Replaces `name` with `bytes` as [`Dir::write`] does, keeping the old regular file's mode
    /// and owner (else 0644, this process's).
    pub fn replace(&self, name: impl AsRef<OsStr>, bytes: &[u8]) -> io::Result<()> {
        let name = name.as_ref();
        let old = self.stat(name)?.filter(Stat::is_file);
        let mode = old.map_or(0o644, |s| s.perms());
        self.write(name, bytes, mode, old.map(|s| (s.uid, s.gid)))
    }

    /// Removes `name` (not a folder) and syncs the folder: `false` when there was none.
    pub fn remove(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        let name = Self::name(name)?;
        // SAFETY: the descriptor is open and name is NUL-terminated.
        match check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) }) {
            Ok(_) => self.sync().map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the empty folder `name`: `false` when it is missing or not empty.
    pub fn remove_dir(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        let name = Self::name(name)?;
        // SAFETY: the descriptor is open and name is NUL-terminated.
        match check(unsafe {
            libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR)
        }) {
            Ok(_) => self.sync().map(|()| true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTEMPTY | libc::EEXIST)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the folder `name` with `mode`: `false` when something by that name exists.
    pub fn make_dir(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<bool> {
        let name = Self::name(name)?;
        // SAFETY: the descriptor is open and name is NUL-terminated.
        match check(unsafe { libc::mkdirat(self.fd.as_raw_fd(), name.as_ptr(), mode) }) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renames `from` to `to` in this folder (replacing `to`, never following a link by either
    /// name) and syncs the folder.
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        self.rename_c(&Self::name(from)?, &Self::name(to)?)
    }

    fn rename_c(&self, from: &CStr, to: &CStr) -> io::Result<()> {
        // SAFETY: both names are NUL-terminated and relative to our open folder.
        check(unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                from.as_ptr(),
                self.fd.as_raw_fd(),
                to.as_ptr(),
            )
        })?;
        self.sync()
    }

    /// Takes an exclusive lock on this folder (waiting for another holder), held while this
    /// `Dir` is.
    pub fn lock(&self) -> io::Result<()> {
        // SAFETY: flock on a descriptor we own; the lock goes with the descriptor.
        check(unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_EX) }).map(|_| ())
    }

    fn sync(&self) -> io::Result<()> {
        // SAFETY: the descriptor is open.
        check(unsafe { libc::fsync(self.fd.as_raw_fd()) }).map(|_| ())
    }
}

/// Puts `bytes` at `path` with `mode` (and `owner`) as [`Dir::write`] does, in the folder `path`
/// names (resolved as usual: the caller chose it).
pub fn write_new(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let dir = Dir::open(path.parent().unwrap_or(Path::new("/")))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    dir.write(name, bytes, mode, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kas-sys-fs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_is_replaced_whole_and_links_are_not_followed() {
        let dir = folder("replace");
        let path = dir.join("file");
        let d = Dir::open(&dir).unwrap();
        assert_eq!(d.read("file", 100).unwrap(), None);
        write_new(&path, b"one", 0o640, None).unwrap();
        assert_eq!(d.read("file", 100).unwrap().unwrap(), b"one");
        d.replace("file", b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert!(d.read("file", 2).is_err(), "larger than the cap");
        // A link is neither read nor written through: the rename replaces the link itself.
        let victim = dir.join("victim");
        fs::write(&victim, b"victim").unwrap();
        symlink(&victim, dir.join("link")).unwrap();
        assert!(d.read("link", 100).is_err());
        d.replace("link", b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"victim");
        assert!(fs::symlink_metadata(dir.join("link")).unwrap().is_file());
        d.lock().unwrap();
        assert!(d.remove("file").unwrap());
        assert!(!d.remove("file").unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A tree with absolute and relative links that point out of it, for both resolutions.
    fn hostile_tree(name: &str) -> (PathBuf, PathBuf) {
        let base = folder(name);
        let outside = base.join("outside");
        let tree = base.join("tree");
        fs::create_dir_all(outside.join("etc")).unwrap();
        fs::write(outside.join("etc/secret"), b"host").unwrap();
        fs::create_dir_all(tree.join("real/etc")).unwrap();
        fs::write(tree.join("real/etc/secret"), b"tree").unwrap();
        // Absolute: means the tree's /real inside the tree, the host's outside it.
        symlink(&outside, tree.join("abs")).unwrap();
        symlink("/real", tree.join("inside")).unwrap();
        // Relative, climbing above the top.
        symlink("../../../../../../outside", tree.join("up")).unwrap();
        symlink("self", tree.join("self")).unwrap();
        (base, tree)
    }

    fn read_in(t: &Tree, path: &str) -> io::Result<Vec<u8>> {
        let fd = t.open_in(Path::new(path), libc::O_RDONLY)?;
        let mut out = Vec::new();
        io::Read::read_to_end(&mut fs::File::from(fd), &mut out)?;
        Ok(out)
    }

    #[test]
    fn nothing_resolves_outside_the_tree_with_or_without_openat2() {
        let (base, tree) = hostile_tree("tree");
        for walk_only in [false, true] {
            let mut t = Tree::open(&tree).unwrap();
            if walk_only {
                t = t.without_openat2();
            }
            assert_eq!(read_in(&t, "/inside/etc/secret").unwrap(), b"tree");
            assert_eq!(read_in(&t, "/../../real/etc/secret").unwrap(), b"tree");
            // The host's file is never reached: the absolute link means a path in the tree.
            let host = base.join("outside").join("etc/secret");
            let through_abs = format!("/abs{}", host.display());
            assert!(read_in(&t, &through_abs).is_err(), "walk_only {walk_only}");
            assert!(
                read_in(&t, "/up/etc/secret").is_err(),
                "walk_only {walk_only}"
            );
            assert!(read_in(&t, "/self/x").is_err());
            assert_eq!(
                t.resolve(Path::new("/inside/etc/../etc/./secret")).unwrap(),
                Path::new("/real/etc/secret")
            );
            assert_eq!(t.resolve(Path::new("/")).unwrap(), Path::new("/"));
            assert_eq!(t.resolve(Path::new("/inside")).unwrap(), Path::new("/real"));
            // A name about to be made resolves to where it would be made.
            assert_eq!(
                t.resolve(Path::new("/inside/etc/new")).unwrap(),
                Path::new("/real/etc/new")
            );
            let chain = t.chain(Path::new("/real/etc/secret")).unwrap();
            assert_eq!(chain.len(), 4);
            assert!(chain[3].1.is_file() && chain[1].1.is_dir());
            assert!(
                t.chain(Path::new("/inside/etc")).is_err(),
                "a link on the way"
            );
            let made = t.make_dirs(Path::new("/inside/var/lib/x"), 0o755).unwrap();
            assert_eq!(made.stat_self().unwrap().perms(), 0o755);
            assert!(tree.join("real/var/lib/x").is_dir());
            fs::remove_dir_all(tree.join("real/var")).unwrap();
        }
        fs::remove_dir_all(&base).unwrap();
    }
}
