//! Where the values come from: the environment (straight from `environ`), the system file
//! `/etc/keepalive-shim.conf` (read safely, then split into its lines' settings), and secure
//! execution (`AT_SECURE`), under which the environment is not read; [`from_process`],
//! [`load`] and [`load_system`] gather them and hand them to `resolve.rs`.

use super::names::{ALIASES, SHIM_PREFIX, closest_known, near_miss, setting_name};
use super::report::{FileUse, Loaded, Problem, escape};
use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::CStr;

pub use super::names::SYSTEM_FILE;
const SYSTEM_FILE_C: &CStr = c"/etc/keepalive-shim.conf";
/// A larger file is ignored (with a warning).
pub const FILE_MAX: usize = 64 * 1024;

/// [`SYSTEM_FILE`] as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemFile {
    Absent,
    /// Its bytes: a regular file owned by root and writable by nobody else.
    Text(Vec<u8>),
    /// Present and not to be used, with the reason.
    Ignored(String),
    /// Present, and this process may not read it (EACCES: a file only root may read): not
    /// reported to the program (a non-root program cannot have it), only by `check`.
    Unreadable(String),
}

/// Whether the loader runs this process in secure mode (`AT_SECURE`: setuid, setgid, or file
/// capabilities): its environment then belongs to a less privileged caller.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector; an unknown type returns 0.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Reads [`SYSTEM_FILE`] (see [`read_file`]).
pub fn read_system_file() -> SystemFile {
    read_file(SYSTEM_FILE_C)
}

/// Reads a configuration file: opened without following a symbolic link (and without blocking
/// on a FIFO), used only when it is a regular file owned by root, not writable by group or
/// others, and at most [`FILE_MAX`] bytes. A missing file is `Absent`.
///
/// Raw system calls (`openat`, `fstat`, `read`, `close`), not libc's functions: a preloaded
/// library's `close` (ours included, should the library ever hook it) is not entered from the
/// constructor, and glibc 2.33's `fstat@GLIBC_2.33` would raise the C library the preload
/// library needs.
pub fn read_file(path: &CStr) -> SystemFile {
    let flags =
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    // SAFETY: path is a NUL-terminated string; openat with AT_FDCWD resolves it like open().
    let fd = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, 0) };
    if fd < 0 {
        return match errno() {
            libc::ENOENT | libc::ENOTDIR => SystemFile::Absent,
            libc::ELOOP => SystemFile::Ignored("it is a symbolic link (not followed)".to_owned()),
            e @ (libc::EACCES | libc::EPERM) => {
                SystemFile::Unreadable(format!("it cannot be opened ({})", errno_text(e)))
            }
            e => SystemFile::Ignored(format!("it cannot be opened ({})", errno_text(e))),
        };
    }
    let fd = fd as libc::c_int;
    let result = read_open_file(fd);
    // SAFETY: fd is ours, opened above, and closed once.
    unsafe { libc::syscall(libc::SYS_close, fd) };
    result
}

fn read_open_file(fd: libc::c_int) -> SystemFile {
    // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fd is open and st is a live, writable stat (on x86_64 and aarch64, libc's
    // `struct stat` is the kernel's).
    if unsafe { libc::syscall(libc::SYS_fstat, fd, &raw mut st) } != 0 {
        return SystemFile::Ignored(format!("fstat failed ({})", errno_text(errno())));
    }
    if let Err(reason) = judge_file(st.st_mode, st.st_uid, st.st_size) {
        return SystemFile::Ignored(reason);
    }
    // One byte more than allowed, to tell a file at the limit from a longer one.
    let size = usize::try_from(st.st_size)
        .unwrap_or(FILE_MAX)
        .min(FILE_MAX);
    let mut text = alloc::vec![0_u8; size + 1];
    let mut len = 0;
    loop {
        if len == text.len() {
            if len > FILE_MAX {
                return SystemFile::Ignored(too_large());
            }
            // It grew since fstat.
            text.resize((len * 2).min(FILE_MAX + 1), 0);
        }
        let Some(room) = text.get_mut(len..) else {
            break;
        };
        // SAFETY: the pointer and length describe the writable tail of `text`.
        let n = unsafe { libc::syscall(libc::SYS_read, fd, room.as_mut_ptr(), room.len()) };
        if n == 0 {
            break;
        }
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                e => return SystemFile::Ignored(format!("it cannot be read ({})", errno_text(e))),
            }
        }
        len += n as usize;
    }
    text.truncate(len);
    SystemFile::Text(text)
}

fn too_large() -> String {
    format!("it is larger than {FILE_MAX} bytes")
}

/// The file's type, owner and permissions as the rules want them, or why not.
pub fn judge_file(mode: libc::mode_t, uid: libc::uid_t, size: libc::off_t) -> Result<(), String> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err("it is not a regular file".to_owned());
    }
    if uid != 0 {
        return Err(format!("it is owned by uid {uid}, not root"));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {:04o})",
            mode & 0o7777
        ));
    }
    if size > FILE_MAX as libc::off_t {
        return Err(too_large());
    }
    Ok(())
}

fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() }
}

fn errno_text(e: libc::c_int) -> String {
    let name = match e {
        libc::EACCES => "permission denied",
        libc::EPERM => "operation not permitted",
        libc::EIO => "input/output error",
        libc::EISDIR => "is a directory",
        libc::EMFILE | libc::ENFILE => "too many open files",
        libc::ENOMEM => "out of memory",
        _ => return format!("errno {e}"),
    };
    format!("errno {e}, {name}")
}

/// The configuration of this process, read once at load time: [`SYSTEM_FILE`], and the
/// environment straight from `environ` (no lock, no copy of other programs' variables) unless
/// the process runs in secure mode. Non-UTF-8 variables of other programs are skipped; a
/// non-UTF-8 value of one of ours is reported as invalid.
pub fn from_process() -> Loaded {
    let secure = secure_execution();
    let file = match read_system_file() {
        // Only root may read it: nothing of it is meant for this program.
        SystemFile::Unreadable(_) => SystemFile::Absent,
        file => file,
    };
    if secure {
        return load_system(&file, core::iter::empty::<(&[u8], &[u8])>(), true);
    }
    load_system(&file, environment(), false)
}

/// The environment's entries (`NAME=VALUE`), in order, straight from `environ`, without
/// allocating: what the configuration, and the library's test-only table limit, read.
pub fn environ_entries() -> impl Iterator<Item = &'static [u8]> {
    unsafe extern "C" {
        static environ: *const *const core::ffi::c_char;
    }
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings, set up before any
    // constructor runs; it is only read, and only at start-up, while nothing changes it.
    let mut at = unsafe { environ };
    core::iter::from_fn(move || {
        // SAFETY: as above: `at` walks the array up to its NULL entry and no further.
        unsafe {
            if at.is_null() || (*at).is_null() {
                return None;
            }
            let entry = CStr::from_ptr(*at).to_bytes();
            at = at.add(1);
            Some(entry)
        }
    })
}

/// The environment's entries as `(name, value)` bytes, in order.
fn environment() -> Vec<(&'static [u8], &'static [u8])> {
    environ_entries()
        .filter_map(|entry| {
            let split = entry.iter().position(|&b| b == b'=')?;
            Some((&entry[..split], &entry[split + 1..]))
        })
        .collect()
}

/// Reads the given variables, as `(name, value)` bytes, as if they were the environment, with
/// no file and not in secure mode.
pub fn load<I, K, V>(vars: I) -> Loaded
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    load_system(&SystemFile::Absent, vars, false)
}

/// Reads `file` (what [`read_system_file`] found) and the variables; with `secure`, the
/// variables are not looked at.
pub fn load_system<I, K, V>(file: &SystemFile, vars: I, secure: bool) -> Loaded
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut env = Env::default();
    let file_use = match file {
        SystemFile::Absent => FileUse::Absent,
        SystemFile::Text(text) => {
            env.read_file(text);
            FileUse::Read
        }
        SystemFile::Ignored(reason) | SystemFile::Unreadable(reason) => {
            env.problems.push(Problem::FileIgnored {
                reason: reason.clone(),
            });
            FileUse::Ignored
        }
    };
    if !secure {
        for (name, value) in vars {
            env.add_variable(name.as_ref(), value.as_ref());
        }
    }
    let mut loaded = env.resolve();
    loaded.secure = secure;
    loaded.file = file_use;
    loaded
}

/// What the sources hold, before precedence (`resolve.rs`) picks each setting's value.
#[derive(Default)]
pub(super) struct Env {
    /// Our own variables from the environment, in order, as `(name, value)`; a non-UTF-8 value
    /// arrives with U+FFFD in it, which no parser accepts.
    pub(super) vars: Vec<(String, String)>,
    /// Names from the environment that are nearly ours (escaped), for the warnings.
    pub(super) near: Vec<String>,
    /// The file's settings: `(name, value, line)`, the first of each name only.
    pub(super) file: Vec<(&'static str, String, u32)>,
    /// The file's line problems (syntax, unknown names, duplicates), in line order.
    pub(super) file_problems: Vec<Problem>,
    pub(super) problems: Vec<Problem>,
}

impl Env {
    fn add_variable(&mut self, name: &[u8], value: &[u8]) {
        let name = match core::str::from_utf8(name) {
            Ok(name) => name,
            Err(_) => {
                let lossy = String::from_utf8_lossy(name);
                if near_miss(&lossy) {
                    self.near.push(escape(&lossy));
                }
                return;
            }
        };
        if name.starts_with(SHIM_PREFIX) {
            return;
        }
        if name.starts_with("KEEPALIVE_") || ALIASES.contains(&name) {
            let value = String::from_utf8_lossy(value).into_owned();
            self.vars.push((name.to_owned(), value));
        } else if near_miss(name) {
            self.near.push(escape(name));
        }
    }

    /// Reads the file's lines: `NAME=VALUE`, `#` comments, blank lines, whitespace trimmed.
    fn read_file(&mut self, text: &[u8]) {
        // A UTF-8 byte-order mark (editors on other systems write one) is no part of a name.
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        for (number, line) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = u32::try_from(number + 1).unwrap_or(u32::MAX);
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let mut at = |problem| {
                self.file_problems.push(Problem::InFile {
                    line: line_no,
                    problem: Box::new(problem),
                })
            };
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                at(Problem::Syntax {
                    text: escape(&String::from_utf8_lossy(line)),
                });
                continue;
            };
            let (name, value) = (line[..eq].trim_ascii(), line[eq + 1..].trim_ascii());
            let name = String::from_utf8_lossy(name);
            if name.starts_with(SHIM_PREFIX) {
                continue;
            }
            let Some(known) = setting_name(&name) else {
                at(Problem::Unknown {
                    variable: escape(&name),
                    closest: closest_known(&name),
                });
                continue;
            };
            if let Some((_, _, first_line)) = self.file.iter().find(|(n, _, _)| *n == known) {
                let first_line = *first_line;
                at(Problem::Duplicate {
                    variable: known,
                    first_line,
                });
                continue;
            }
            let value = String::from_utf8_lossy(value).into_owned();
            self.file.push((known, value, line_no));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{file, with_file};
    use crate::config::*;
    use alloc::vec;

    #[test]
    fn non_utf8_values_never_crash() {
        let bad: &[u8] = b"3\xff";
        let loaded = load([
            (&b"SOMETHING_ELSE"[..], bad),
            (&b"\xfeX"[..], bad),
            (IDLE.as_bytes(), bad),
        ]);
        assert_eq!(loaded.settings.idle_s, 30);
        assert_eq!(loaded.problems.len(), 1);
        assert_eq!(loaded.problems[0].variable(), IDLE);
    }

    #[test]
    fn the_file_gives_settings_with_their_line() {
        let text = "# system-wide keepalive\n\n  KEEPALIVE_IDLE = 45  \r\nKEEPCNT=4\n\t# indented comment\nKEEPALIVE_EXCLUDE=10.0.0.0/8 :5432\nKEEPALIVE_USER_TIMEOUT=1h\n";
        let loaded = with_file(text, &[]);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.file, FileUse::Read);
        let s = loaded.settings;
        assert_eq!((s.idle_s, s.count, s.user_timeout_ms), (45, 4, 3_600_000));
        assert!(s.user_timeout_explicit);
        assert_eq!(s.exclude.to_string(), "10.0.0.0/8, :5432");
        let o = loaded.origins;
        assert_eq!(
            o.idle,
            Origin::File {
                variable: IDLE,
                line: 3
            }
        );
        assert_eq!(o.idle.to_string(), "/etc/keepalive-shim.conf:3");
        assert_eq!(
            o.count.to_string(),
            "/etc/keepalive-shim.conf:4 (KEEPCNT, libkeepalive's name)"
        );
        assert_eq!(o.exclude.to_string(), "/etc/keepalive-shim.conf:6");
        assert_eq!(o.interval, Origin::Default);
    }

    #[test]
    fn secure_execution_ignores_the_environment_entirely() {
        let env = [
            (IDLE, "5"),
            (STRICT, "1"),
            (COUNT, "bad"),
            ("KEEPALIVE_TYPO", "1"),
            ("keep_alive_idle", "1"),
            (ALIAS_ENABLE, "off"),
            (USER_TIMEOUT, "1ms"),
        ];
        let run = |file: &SystemFile| load_system(file, env.iter().map(|(k, v)| (*k, *v)), true);
        let loaded = run(&SystemFile::Absent);
        assert_eq!(loaded.settings, DEFAULT);
        assert!(loaded.problems.is_empty(), "not even warnings");
        assert!(loaded.secure && !loaded.rejected());
        // Only the file counts; strict mode is never the file's to set.
        let loaded = run(&file("KEEPALIVE_IDLE=45\n"));
        assert_eq!(loaded.settings.idle_s, 45);
        assert_eq!(loaded.settings.user_timeout_ms, 75_000);
        assert!(!run(&file("KEEPALIVE_STRICT=1\nKEEPALIVE_COUNT=0\n")).rejected());
        // The same environment outside secure mode does apply.
        let open = load_system(
            &SystemFile::Absent,
            env.iter().map(|(k, v)| (*k, *v)),
            false,
        );
        assert!(!open.secure && open.rejected());
    }

    #[test]
    fn only_a_regular_root_file_writable_by_root_alone_is_used() {
        let reg = libc::S_IFREG;
        assert_eq!(judge_file(reg | 0o644, 0, 100), Ok(()));
        assert_eq!(judge_file(reg | 0o600, 0, 100), Ok(()));
        assert_eq!(judge_file(reg | 0o4755, 0, FILE_MAX as i64), Ok(()));
        for (mode, uid, size, reason) in [
            (libc::S_IFDIR | 0o755, 0, 0, "it is not a regular file"),
            (libc::S_IFIFO | 0o644, 0, 0, "it is not a regular file"),
            (reg | 0o644, 1000, 0, "it is owned by uid 1000, not root"),
            (
                reg | 0o664,
                0,
                0,
                "it is writable by group or others (mode 0664)",
            ),
            (
                reg | 0o646,
                0,
                0,
                "it is writable by group or others (mode 0646)",
            ),
            (
                reg | 0o644,
                0,
                FILE_MAX as i64 + 1,
                "it is larger than 65536 bytes",
            ),
        ] {
            assert_eq!(judge_file(mode, uid, size), Err(reason.into()), "{mode:o}");
        }
    }

    #[test]
    fn reading_files_from_disk() {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("kas-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = |name: &str| CString::new(dir.join(name).as_os_str().as_bytes()).unwrap();
        assert_eq!(read_file(&c("missing")), SystemFile::Absent);
        assert_eq!(read_file(c"/nonexistent-dir/x.conf"), SystemFile::Absent);
        std::fs::write(dir.join("conf"), "KEEPALIVE_IDLE=45\n").unwrap();
        std::os::unix::fs::symlink(dir.join("conf"), dir.join("link")).unwrap();
        assert_eq!(
            read_file(&c("link")),
            SystemFile::Ignored("it is a symbolic link (not followed)".into())
        );
        // A FIFO neither blocks nor is read.
        let fifo = c("fifo");
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert_eq!(
            read_file(&fifo),
            SystemFile::Ignored("it is not a regular file".into())
        );
        use std::os::unix::fs::PermissionsExt;
        let set_mode = |name: &str, mode| {
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set_mode("conf", 0o644);
        // SAFETY: geteuid has no preconditions.
        let mut owner = unsafe { libc::geteuid() };
        if owner == 0 {
            assert_eq!(
                read_file(&c("conf")),
                SystemFile::Text(b"KEEPALIVE_IDLE=45\n".to_vec())
            );
            set_mode("conf", 0o664);
            assert_eq!(
                read_file(&c("conf")),
                SystemFile::Ignored("it is writable by group or others (mode 0664)".into())
            );
            std::fs::write(dir.join("big"), vec![b'#'; FILE_MAX + 1]).unwrap();
            set_mode("big", 0o644);
            assert_eq!(
                read_file(&c("big")),
                SystemFile::Ignored("it is larger than 65536 bytes".into())
            );
            std::fs::write(dir.join("full"), vec![b'#'; FILE_MAX]).unwrap();
            set_mode("full", 0o644);
            assert!(matches!(read_file(&c("full")), SystemFile::Text(t) if t.len() == FILE_MAX));
            owner = 65534;
            std::os::unix::fs::chown(dir.join("conf"), Some(owner), None).unwrap();
            set_mode("conf", 0o644);
        }
        assert_eq!(
            read_file(&c("conf")),
            SystemFile::Ignored(format!("it is owned by uid {owner}, not root"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn this_process_is_not_in_secure_mode() {
        assert!(!secure_execution());
        let loaded = from_process();
        assert!(!loaded.secure);
    }
}
