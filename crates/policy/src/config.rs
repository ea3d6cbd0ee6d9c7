//! Configuration: reads the `KEEPALIVE_*` variables (and libkeepalive's names) from the
//! environment and from the system file `/etc/keepalive-shim.conf`, validates each one, and
//! records where every effective value came from and what was wrong with the rest.
//!
//! The preload library calls [`from_process`] once at load time, the command-line tool's `check`
//! calls the same code, and unit tests call [`load`] (variables only) or [`load_system`] (file
//! text, variables, secure mode). It needs only `core`, `alloc` and a few libc calls (the file,
//! `getauxval`), so the `no_std` library and the command-line tool decide with the same code.
//!
//! Precedence, per setting: the environment (our name, then libkeepalive's), then the file (the
//! same), then the default. Under secure execution (`AT_SECURE`: a setuid, setgid or
//! capability-raising program) the environment belongs to the caller and is not read at all.

use crate::rules::{self, Rules};
use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ffi::CStr;
use core::fmt;

/// Every variable this project reads.
pub const IDLE: &str = "KEEPALIVE_IDLE";
pub const INTERVAL: &str = "KEEPALIVE_INTERVAL";
pub const COUNT: &str = "KEEPALIVE_COUNT";
pub const USER_TIMEOUT: &str = "KEEPALIVE_USER_TIMEOUT";
pub const ENABLE: &str = "KEEPALIVE_ENABLE";
pub const FORCE: &str = "KEEPALIVE_FORCE";
pub const LOG: &str = "KEEPALIVE_LOG";
pub const STRICT: &str = "KEEPALIVE_STRICT";
pub const EXCLUDE: &str = "KEEPALIVE_EXCLUDE";
pub const INCLUDE: &str = "KEEPALIVE_INCLUDE";
/// Names starting with this belong to the command-line tool and the tests
/// (`KEEPALIVE_SHIM_LIBRARY`, `KEEPALIVE_SHIM_TEST_LIBRARY`): never settings, never unknown.
pub const SHIM_PREFIX: &str = "KEEPALIVE_SHIM_";
/// Read by `keepalive-shim run` to find the library; the library ignores it.
pub const SHIM_LIBRARY: &str = "KEEPALIVE_SHIM_LIBRARY";

/// libkeepalive's names, honoured where the matching `KEEPALIVE_*` variable is unset.
pub const ALIAS_IDLE: &str = "KEEPIDLE";
pub const ALIAS_INTERVAL: &str = "KEEPINTVL";
pub const ALIAS_COUNT: &str = "KEEPCNT";
pub const ALIAS_ENABLE: &str = "KEEPALIVE";
pub const ALIASES: [&str; 4] = [ALIAS_IDLE, ALIAS_INTERVAL, ALIAS_COUNT, ALIAS_ENABLE];

/// The settings' names, in the order the settings table lists them.
pub const KNOWN: [&str; 10] = [
    IDLE,
    INTERVAL,
    COUNT,
    USER_TIMEOUT,
    ENABLE,
    FORCE,
    LOG,
    STRICT,
    EXCLUDE,
    INCLUDE,
];

/// The system-wide configuration file.
pub const SYSTEM_FILE: &str = "/etc/keepalive-shim.conf";
const SYSTEM_FILE_C: &CStr = c"/etc/keepalive-shim.conf";
/// A larger file is ignored (with a warning).
pub const FILE_MAX: usize = 64 * 1024;

/// The kernel's ranges (`man 7 tcp`): anything outside them is EINVAL.
pub const SECONDS_MAX: u32 = 32767;
pub const COUNT_MAX: u32 = 127;
pub const USER_TIMEOUT_MAX_MS: u32 = i32::MAX as u32;

pub const ACCEPT_SECONDS: &str = "whole seconds from 1 to 32767 (like 30, 90s, 2m)";
pub const ACCEPT_COUNT: &str = "a whole number from 1 to 127";
pub const ACCEPT_USER_TIMEOUT: &str = "a duration from 0 to 2147483647ms (like 60, 45s, 1500ms, \
     2m, 1h; 0 keeps the kernel's default)";
pub const ACCEPT_BOOL: &str = "one of 1/0, true/false, on/off, yes/no";
pub const ACCEPT_LOG: &str = "one of off, warn, debug";
pub use crate::rules::ACCEPT_RULE;

/// How much the library writes to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off = 0,
    Warn = 1,
    Debug = 2,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Warn => "warn",
            LogLevel::Debug => "debug",
        }
    }
}

/// The effective settings: what the hooks apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub idle_s: u32,
    pub interval_s: u32,
    pub count: u32,
    /// `TCP_USER_TIMEOUT` in milliseconds; 0 is the kernel's default (no user timeout).
    pub user_timeout_ms: u32,
    /// `user_timeout_ms` was given (`KEEPALIVE_USER_TIMEOUT`, valid), not derived from idle,
    /// interval and count. See [`crate::options::user_timeout_for`].
    pub user_timeout_explicit: bool,
    pub force: bool,
    pub log: LogLevel,
    pub strict: bool,
    /// `KEEPALIVE_EXCLUDE`: destinations left as the program made them.
    pub exclude: Rules,
    /// `KEEPALIVE_INCLUDE`: when not empty, the only destinations configured.
    pub include: Rules,
}

pub const DEFAULT: Settings = Settings {
    enabled: true,
    idle_s: 30,
    interval_s: 10,
    count: 3,
    user_timeout_ms: 60_000,
    user_timeout_explicit: false,
    force: false,
    log: LogLevel::Warn,
    strict: false,
    exclude: Rules::EMPTY,
    include: Rules::EMPTY,
};

impl Default for Settings {
    fn default() -> Self {
        DEFAULT
    }
}

/// `idle + interval × count`, in milliseconds, capped at the kernel's maximum user timeout.
pub fn derived_user_timeout_ms(idle_s: u32, interval_s: u32, count: u32) -> u32 {
    let seconds = u64::from(idle_s) + u64::from(interval_s) * u64::from(count);
    (seconds * 1000).min(u64::from(USER_TIMEOUT_MAX_MS)) as u32
}

/// Where one effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// Computed from idle, interval and count (the user timeout only).
    Derived,
    /// An environment variable of ours.
    Variable(&'static str),
    /// One of libkeepalive's names, in the environment.
    Alias(&'static str),
    /// A line of [`SYSTEM_FILE`], and the name it used.
    File {
        variable: &'static str,
        line: u32,
    },
}

impl Origin {
    /// Given by the person (environment or file), not a default or derived value.
    pub fn explicit(self) -> bool {
        !matches!(self, Origin::Default | Origin::Derived)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived => f.write_str("derived: idle + interval * count"),
            Origin::Variable(name) => write!(f, "{name}"),
            Origin::Alias(name) => write!(f, "{name} (libkeepalive's name)"),
            Origin::File { variable, line } if ALIASES.contains(variable) => {
                write!(f, "{SYSTEM_FILE}:{line} ({variable}, libkeepalive's name)")
            }
            Origin::File { line, .. } => write!(f, "{SYSTEM_FILE}:{line}"),
        }
    }
}

/// The origin of each field of [`Settings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origins {
    pub enabled: Origin,
    pub idle: Origin,
    pub interval: Origin,
    pub count: Origin,
    pub user_timeout: Origin,
    pub force: Origin,
    pub log: Origin,
    pub strict: Origin,
    pub exclude: Origin,
    pub include: Origin,
}

/// Something wrong with the configuration: one per variable, entry, or line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A value that does not parse or is out of range; `fallback` is what is used instead.
    Invalid {
        variable: &'static str,
        value: String,
        accepted: &'static str,
        fallback: String,
    },
    /// A name that looks like one of ours but is not (the name escaped for one line).
    Unknown {
        variable: String,
        closest: &'static str,
    },
    /// One entry of a destination list that does not parse; the others still apply.
    BadEntry {
        variable: &'static str,
        entry: String,
        accepted: &'static str,
    },
    /// A destination list with more than [`rules::MAX_RULES`] entries: `dropped` are ignored.
    TooMany {
        variable: &'static str,
        dropped: usize,
    },
    /// A line of the file that is not `NAME=VALUE`, a comment or blank.
    Syntax { text: String },
    /// A setting named a second time in the file: the first stands.
    Duplicate {
        variable: &'static str,
        first_line: u32,
    },
    /// The whole file is ignored, for `reason`.
    FileIgnored { reason: String },
    /// `problem`, found on line `line` of the file.
    InFile { line: u32, problem: Box<Problem> },
}

impl Problem {
    /// The variable (or file) the problem is about.
    pub fn variable(&self) -> &str {
        match self {
            Problem::Invalid { variable, .. }
            | Problem::BadEntry { variable, .. }
            | Problem::TooMany { variable, .. }
            | Problem::Duplicate { variable, .. } => variable,
            Problem::Unknown { variable, .. } => variable,
            Problem::Syntax { .. } | Problem::FileIgnored { .. } => SYSTEM_FILE,
            Problem::InFile { problem, .. } => problem.variable(),
        }
    }

    /// The sentence for strict mode: the same problem, without what would have been done instead.
    pub fn strict_message(&self) -> String {
        match self {
            Problem::Invalid {
                variable,
                value,
                accepted,
                ..
            } => format!("{variable}=\"{value}\" is not {accepted}"),
            Problem::Unknown { variable, closest } => {
                format!("{variable} is not a known setting (did you mean {closest}?)")
            }
            Problem::BadEntry {
                variable,
                entry,
                accepted,
            } => format!("{variable} entry \"{entry}\" is not {accepted}"),
            Problem::TooMany { variable, .. } => {
                format!("{variable} has more than {} entries", rules::MAX_RULES)
            }
            Problem::Syntax { text } => {
                format!("\"{text}\" is not NAME=VALUE, a # comment or a blank line")
            }
            Problem::Duplicate {
                variable,
                first_line,
            } => format!("{variable} is set again (first on line {first_line})"),
            Problem::FileIgnored { reason } => format!("{SYSTEM_FILE} is not usable: {reason}"),
            Problem::InFile { line, problem } => {
                format!("{SYSTEM_FILE}:{line}: {}", problem.strict_message())
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Invalid {
                variable,
                value,
                accepted,
                fallback,
            } => write!(
                f,
                "{variable}=\"{value}\" is not {accepted}; using {fallback}"
            ),
            Problem::Unknown { variable, closest } => write!(
                f,
                "{variable} is not a known setting (did you mean {closest}?); ignored"
            ),
            Problem::BadEntry { .. } => {
                write!(f, "{}; that entry is ignored", self.strict_message())
            }
            Problem::TooMany { variable, dropped } => write!(
                f,
                "{variable} has more than {} entries; the last {dropped} are ignored",
                rules::MAX_RULES
            ),
            Problem::Syntax { .. } | Problem::Duplicate { .. } => {
                write!(f, "{}; this line is ignored", self.strict_message())
            }
            Problem::FileIgnored { reason } => write!(f, "{SYSTEM_FILE} is ignored: {reason}"),
            Problem::InFile { line, problem } => write!(f, "{SYSTEM_FILE}:{line}: {problem}"),
        }
    }
}

/// What became of [`SYSTEM_FILE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileUse {
    /// There is no such file.
    Absent,
    /// Read; its valid settings apply where the environment does not set them.
    Read,
    /// Present but not used (a [`Problem::FileIgnored`] says why).
    Ignored,
}

/// The result of reading the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub settings: Settings,
    pub origins: Origins,
    pub problems: Vec<Problem>,
    /// Secure execution: the environment was not read.
    pub secure: bool,
    pub file: FileUse,
}

impl Loaded {
    /// Strict mode is on and something is wrong: the library exits with [`EX_CONFIG`].
    pub fn rejected(&self) -> bool {
        self.settings.strict && !self.problems.is_empty()
    }
}

/// `sysexits.h`: configuration error.
pub const EX_CONFIG: i32 = 78;

/// [`SYSTEM_FILE`] as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemFile {
    Absent,
    /// Its bytes: a regular file owned by root and writable by nobody else.
    Text(Vec<u8>),
    /// Present and not to be used, with the reason.
    Ignored(String),
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
    let file = read_system_file();
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
        SystemFile::Ignored(reason) => {
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

/// A setting's name as written, if it is one (ours or libkeepalive's).
fn setting_name(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .chain(ALIASES.iter())
        .copied()
        .find(|k| *k == name)
}

/// Uppercase, without underscores: `keep_alive_idle` and `KEEPALIVEIDLE` are `KEEPALIVEIDLE`.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A variable of someone else's that is almost one of ours: a known name in another case or
/// with other underscores (`keepalive_idle`, `KEEP_ALIVE_IDLE`, `KEEPALIVEIDLE`), or any name
/// that starts with `KEEPALIVE_` or `KEEP_ALIVE_` in another case. The tool's own
/// `KEEPALIVE_SHIM_*`, in any spelling, is not.
fn near_miss(name: &str) -> bool {
    // Every near miss starts with KEEP in some case: test that first, without allocating, since
    // this runs on every variable of every process's environment at load time.
    if !name
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"KEEP"))
    {
        return false;
    }
    let n = normalise(name);
    if n.starts_with("KEEPALIVESHIM") {
        return false;
    }
    let upper = name.to_ascii_uppercase();
    KNOWN.iter().any(|k| normalise(k) == n)
        || upper.starts_with("KEEPALIVE_")
        || upper.starts_with("KEEP_ALIVE_")
}

#[derive(Default)]
struct Env {
    /// Our own variables from the environment, in order, as `(name, value)`; a non-UTF-8 value
    /// arrives with U+FFFD in it, which no parser accepts.
    vars: Vec<(String, String)>,
    /// Names from the environment that are nearly ours (escaped), for the warnings.
    near: Vec<String>,
    /// The file's settings: `(name, value, line)`, the first of each name only.
    file: Vec<(&'static str, String, u32)>,
    /// The file's line problems (syntax, unknown names, duplicates), in line order.
    file_problems: Vec<Problem>,
    problems: Vec<Problem>,
}

/// A value found for a setting.
struct Found<'a> {
    value: &'a str,
    variable: &'static str,
    origin: Origin,
    line: Option<u32>,
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

    /// The environment's value of `name`: the first one, as with glibc's getenv().
    fn env_get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn file_get(&self, name: &str) -> Option<(&str, u32)> {
        self.file
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, line)| (v.as_str(), *line))
    }

    /// The environment's value (ours, then the alias), then the file's (the same).
    fn candidates(
        &self,
        name: &'static str,
        alias: Option<&'static str>,
    ) -> [Option<Found<'_>>; 2] {
        let from_env = self
            .env_get(name)
            .map(|value| Found {
                value,
                variable: name,
                origin: Origin::Variable(name),
                line: None,
            })
            .or_else(|| {
                let alias = alias?;
                self.env_get(alias).map(|value| Found {
                    value,
                    variable: alias,
                    origin: Origin::Alias(alias),
                    line: None,
                })
            });
        let from_file = [Some(name), alias].into_iter().flatten().find_map(|n| {
            self.file_get(n).map(|(value, line)| Found {
                value,
                variable: n,
                origin: Origin::File { variable: n, line },
                line: Some(line),
            })
        });
        [from_env, from_file]
    }

    fn report(&mut self, line: Option<u32>, problem: Problem) {
        self.problems.push(match line {
            Some(line) => Problem::InFile {
                line,
                problem: Box::new(problem),
            },
            None => problem,
        });
    }

    /// Looks up `name` (and `alias`) in the environment, then in the file, and parses what it
    /// finds; an invalid value is recorded as a problem, and what would apply without it (the
    /// file's value, or the default) stands.
    fn setting<T: Copy>(
        &mut self,
        name: &'static str,
        alias: Option<&'static str>,
        parse: fn(&str) -> Option<T>,
        accepted: &'static str,
        default: T,
        show: fn(T) -> String,
    ) -> (T, Origin) {
        let mut bad = Vec::new();
        let mut result = None;
        for found in self.candidates(name, alias).into_iter().flatten() {
            match parse(found.value) {
                Some(parsed) => {
                    result = Some((parsed, found.origin));
                    break;
                }
                None => bad.push((found.line, found.variable, escape(found.value))),
            }
        }
        let (value, origin) = result.unwrap_or((default, Origin::Default));
        for (line, variable, text) in bad {
            let fallback = match origin {
                Origin::File { line, .. } => format!("{} ({SYSTEM_FILE}:{line})", show(value)),
                _ => show(value),
            };
            self.report(
                line,
                Problem::Invalid {
                    variable,
                    value: text,
                    accepted,
                    fallback,
                },
            );
        }
        (value, origin)
    }

    /// A destination list: each bad entry is a problem, the good ones apply. The environment's
    /// list replaces the file's (an empty one too), unless none of its entries is valid.
    fn list(&mut self, name: &'static str) -> (Rules, Origin) {
        let mut tried = Vec::new();
        let mut result = None;
        for found in self.candidates(name, None).into_iter().flatten() {
            let parsed = rules::parse_list(found.value);
            let usable = !parsed.rules.is_empty() || parsed.bad.is_empty();
            tried.push((found.line, parsed.bad, parsed.dropped));
            if usable {
                result = Some((parsed.rules, found.origin));
                break;
            }
        }
        for (line, bad, dropped) in tried {
            for entry in bad {
                self.report(
                    line,
                    Problem::BadEntry {
                        variable: name,
                        entry: escape(&entry),
                        accepted: ACCEPT_RULE,
                    },
                );
            }
            if dropped > 0 {
                self.report(
                    line,
                    Problem::TooMany {
                        variable: name,
                        dropped,
                    },
                );
            }
        }
        result.unwrap_or((Rules::EMPTY, Origin::Default))
    }

    fn resolve(mut self) -> Loaded {
        let d = DEFAULT;
        let (idle_s, idle) = self.setting(
            IDLE,
            Some(ALIAS_IDLE),
            parse_seconds,
            ACCEPT_SECONDS,
            d.idle_s,
            show_seconds,
        );
        let (interval_s, interval) = self.setting(
            INTERVAL,
            Some(ALIAS_INTERVAL),
            parse_seconds,
            ACCEPT_SECONDS,
            d.interval_s,
            show_seconds,
        );
        let (count, count_origin) = self.setting(
            COUNT,
            Some(ALIAS_COUNT),
            parse_count,
            ACCEPT_COUNT,
            d.count,
            |n| n.to_string(),
        );
        // The user timeout's default follows the values in effect, so an explicit idle moves it.
        let derived = derived_user_timeout_ms(idle_s, interval_s, count);
        let (user_timeout_ms, mut user_timeout) = self.setting(
            USER_TIMEOUT,
            None,
            parse_user_timeout_ms,
            ACCEPT_USER_TIMEOUT,
            derived,
            |ms| format!("{} (idle + interval * count)", show_ms(ms)),
        );
        if user_timeout == Origin::Default {
            user_timeout = Origin::Derived;
        }
        let (enabled, enabled_origin) = self.setting(
            ENABLE,
            Some(ALIAS_ENABLE),
            parse_bool,
            ACCEPT_BOOL,
            d.enabled,
            show_bool,
        );
        let (force, force_origin) =
            self.setting(FORCE, None, parse_bool, ACCEPT_BOOL, d.force, show_bool);
        let (log, log_origin) = self.setting(LOG, None, parse_log, ACCEPT_LOG, d.log, |l| {
            l.name().to_owned()
        });
        let (strict, strict_origin) =
            self.setting(STRICT, None, parse_bool, ACCEPT_BOOL, d.strict, show_bool);
        let (exclude, exclude_origin) = self.list(EXCLUDE);
        let (include, include_origin) = self.list(INCLUDE);

        let mut unknown: Vec<String> = self
            .vars
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("KEEPALIVE_") && !KNOWN.contains(n))
            .map(escape)
            .chain(self.near.iter().cloned())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let unknown = unknown.into_iter().map(|n| Problem::Unknown {
            closest: closest_known(&n),
            variable: n,
        });
        let mut problems = core::mem::take(&mut self.problems);
        problems.extend(unknown);
        problems.append(&mut self.file_problems);
        problems.sort_by_key(|p| match p {
            Problem::FileIgnored { .. } => 0,
            _ => 1,
        });

        Loaded {
            settings: Settings {
                enabled,
                idle_s,
                interval_s,
                count,
                user_timeout_ms,
                user_timeout_explicit: user_timeout.explicit(),
                force,
                log,
                strict,
                exclude,
                include,
            },
            origins: Origins {
                enabled: enabled_origin,
                idle,
                interval,
                count: count_origin,
                user_timeout,
                force: force_origin,
                log: log_origin,
                strict: strict_origin,
                exclude: exclude_origin,
                include: include_origin,
            },
            problems,
            secure: false,
            file: FileUse::Absent,
        }
    }
}

/// Splits `"90s"` into `(90, "s")`; `None` without leading ASCII digits or when they overflow.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = s[..digits].parse::<u64>().ok()?;
    Some((number, &s[digits..]))
}

/// Whole seconds from 1 to 32767: a bare number is seconds; suffixes `s`, `m`, `h`.
pub fn parse_seconds(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    let unit = match suffix {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    let seconds = number.checked_mul(unit)?;
    (1..=u64::from(SECONDS_MAX))
        .contains(&seconds)
        .then_some(seconds as u32)
}

/// A whole number from 1 to 127.
pub fn parse_count(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    (suffix.is_empty() && (1..=u64::from(COUNT_MAX)).contains(&number)).then_some(number as u32)
}

/// Milliseconds from 0 to `i32::MAX`: a bare number is seconds; suffixes `ms`, `s`, `m`, `h`.
pub fn parse_user_timeout_ms(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    let unit = match suffix {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    let ms = number.checked_mul(unit)?;
    (ms <= u64::from(USER_TIMEOUT_MAX_MS)).then_some(ms as u32)
}

/// `1/0`, `true/false`, `on/off`, `yes/no`, in any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// `off`, `warn`, `debug`, in any case.
pub fn parse_log(s: &str) -> Option<LogLevel> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Some(LogLevel::Off),
        "warn" => Some(LogLevel::Warn),
        "debug" => Some(LogLevel::Debug),
        _ => None,
    }
}

pub fn show_seconds(s: u32) -> String {
    format!("{s}s")
}

/// `60000` → `60s`, `1500` → `1500ms`, `0` → `0 (the kernel's default)`.
pub fn show_ms(ms: u32) -> String {
    match ms {
        0 => "0 (the kernel's default)".to_owned(),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

pub fn show_bool(b: bool) -> String {
    if b { "on" } else { "off" }.to_owned()
}

/// Text as it may be shown between double quotes on one line: control characters, quotes and
/// backslashes escaped (`\n`, `\u{1b}`, `\"`).
pub fn escape(value: &str) -> String {
    value.chars().flat_map(char::escape_debug).collect()
}

/// The known name an unknown one most likely meant: the same name spelled otherwise; else, among
/// the known names containing one of its distinctive words (`KEEPALIVE_TIMEOUT` →
/// `KEEPALIVE_USER_TIMEOUT`), or else among all, the nearest by edit distance (ties: the first
/// in [`KNOWN`]).
fn closest_known(name: &str) -> &'static str {
    let n = normalise(name);
    let words: Vec<String> = name
        .split('_')
        .map(str::to_ascii_uppercase)
        .filter(|w| w.len() >= 3 && !["KEEP", "ALIVE", "KEEPALIVE"].contains(&w.as_str()))
        .collect();
    let containing: Vec<&'static str> = KNOWN
        .iter()
        .copied()
        .filter(|k| {
            let rest = normalise(&k["KEEPALIVE_".len()..]);
            words.iter().any(|w| rest.contains(w.as_str()))
        })
        .collect();
    let pool: &[&'static str] = if containing.is_empty() {
        &KNOWN
    } else {
        &containing
    };
    pool.iter()
        .copied()
        .min_by_key(|known| edit_distance(&n, &normalise(known)))
        .unwrap_or(IDLE)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// How long until a dead peer is detected, in milliseconds, by the kernel's rules
/// (`tcp_keepalive_timer`): with a user timeout the keepalive timer ignores the count and aborts at
/// the first probe interval at or after the user timeout, with at least one probe out.
pub fn idle_detection_ms(s: &Settings) -> u64 {
    let idle = u64::from(s.idle_s) * 1000;
    let interval = u64::from(s.interval_s) * 1000;
    let user_timeout = u64::from(s.user_timeout_ms);
    if user_timeout == 0 {
        return idle + interval * u64::from(s.count);
    }
    let probes = user_timeout.saturating_sub(idle).div_ceil(interval).max(1);
    idle + interval * probes
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn with(vars: &[(&str, &str)]) -> Loaded {
        load(vars.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn defaults_with_an_empty_environment() {
        let loaded = with(&[]);
        assert_eq!(loaded.settings, DEFAULT);
        assert!(loaded.problems.is_empty());
        assert_eq!(loaded.origins.idle, Origin::Default);
        assert_eq!(loaded.origins.user_timeout, Origin::Derived);
        assert_eq!(DEFAULT.user_timeout_ms, derived_user_timeout_ms(30, 10, 3));
    }

    #[test]
    fn every_variable_of_the_table() {
        let loaded = with(&[
            (IDLE, "2m"),
            (INTERVAL, "15s"),
            (COUNT, "5"),
            (USER_TIMEOUT, "1500ms"),
            (ENABLE, "YES"),
            (FORCE, "On"),
            (LOG, "DEBUG"),
            (STRICT, "true"),
        ]);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let s = loaded.settings;
        assert_eq!(
            (s.idle_s, s.interval_s, s.count, s.user_timeout_ms),
            (120, 15, 5, 1500)
        );
        assert!(s.enabled && s.force && s.strict);
        assert_eq!(s.log, LogLevel::Debug);
        assert_eq!(loaded.origins.idle, Origin::Variable(IDLE));
        assert_eq!(loaded.origins.user_timeout, Origin::Variable(USER_TIMEOUT));
    }

    #[test]
    fn seconds_accept_bare_numbers_and_suffixes() {
        for (text, seconds) in [
            ("1", 1),
            ("30", 30),
            ("90s", 90),
            ("2m", 120),
            ("1h", 3600),
            ("32767", 32767),
            ("007", 7),
        ] {
            assert_eq!(parse_seconds(text), Some(seconds), "{text}");
        }
    }

    #[test]
    fn every_class_of_bad_seconds_is_rejected() {
        for text in [
            "abc",                     // not a number
            "0",                       // zero
            "-5",                      // negative
            "32768",                   // over the range
            "10h",                     // over the range through its suffix
            "99999999999999999999999", // overflowing u64
            "18446744073709551615h",   // overflowing the multiplication
            "",                        // empty
            "0.5",                     // sub-second
            "500ms",                   // sub-second through a suffix we do not take here
            "30x",                     // unknown suffix
            "30S",                     // suffixes are lower case
            " 30",                     // surrounding spaces
            "30 ",
            "+30",
            "3 0",
        ] {
            assert_eq!(parse_seconds(text), None, "{text:?}");
        }
    }

    #[test]
    fn count_range() {
        assert_eq!(parse_count("1"), Some(1));
        assert_eq!(parse_count("127"), Some(127));
        for text in [
            "0",
            "128",
            "-1",
            "3s",
            "",
            " 3",
            "x",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_count(text), None, "{text:?}");
        }
    }

    #[test]
    fn user_timeout_units_and_range() {
        for (text, ms) in [
            ("0", 0),
            ("60", 60_000),
            ("45s", 45_000),
            ("1500ms", 1500),
            ("2m", 120_000),
            ("2147483647ms", i32::MAX as u32),
            ("1h", 3_600_000),
            ("596h", 596 * 3_600_000),
        ] {
            assert_eq!(parse_user_timeout_ms(text), Some(ms), "{text}");
        }
        for text in [
            "2147483648ms",
            "2147484s",
            "-1",
            "597h",
            "1H",
            "1.5s",
            "",
            "5 s",
            "x",
        ] {
            assert_eq!(parse_user_timeout_ms(text), None, "{text:?}");
        }
    }

    #[test]
    fn booleans_in_every_spelling() {
        for t in ["1", "true", "TRUE", "on", "On", "yes", "YeS"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for t in ["0", "false", "False", "off", "OFF", "no", "No"] {
            assert_eq!(parse_bool(t), Some(false), "{t}");
        }
        for t in ["", "2", "y", "enable", " on"] {
            assert_eq!(parse_bool(t), None, "{t:?}");
        }
    }

    #[test]
    fn derived_user_timeout_follows_the_values_in_effect() {
        let loaded = with(&[(IDLE, "2"), (INTERVAL, "1"), (COUNT, "2")]);
        assert_eq!(loaded.settings.user_timeout_ms, 4000);
        assert_eq!(loaded.origins.user_timeout, Origin::Derived);
        // An invalid explicit value falls back to the derived one, not to 60 s.
        let loaded = with(&[
            (IDLE, "2"),
            (INTERVAL, "1"),
            (COUNT, "2"),
            (USER_TIMEOUT, "soon"),
        ]);
        assert_eq!(loaded.settings.user_timeout_ms, 4000);
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_USER_TIMEOUT=\"soon\" is not a duration from 0 to 2147483647ms (like 60, \
             45s, 1500ms, 2m, 1h; 0 keeps the kernel's default); using 4s (idle + interval * count)"
        );
        // The largest values overflow the kernel's user timeout range: capped, not wrapped.
        assert_eq!(derived_user_timeout_ms(32767, 32767, 127), i32::MAX as u32);
    }

    #[test]
    fn an_invalid_value_falls_back_to_its_default_alone() {
        let loaded = with(&[(IDLE, "abc"), (INTERVAL, "5")]);
        assert_eq!(loaded.settings.idle_s, 30);
        assert_eq!(loaded.settings.interval_s, 5);
        assert!(loaded.settings.enabled, "keepalive stays on");
        assert_eq!(
            loaded.problems,
            vec![Problem::Invalid {
                variable: IDLE,
                value: "abc".into(),
                accepted: ACCEPT_SECONDS,
                fallback: "30s".into()
            }]
        );
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); using 30s"
        );
        assert!(!loaded.rejected(), "not strict");
    }

    #[test]
    fn values_are_shown_escaped_on_one_line() {
        let loaded = with(&[(COUNT, "3\n\"x\"")]);
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_COUNT=\"3\\n\\\"x\\\"\" is not a whole number from 1 to 127; using 3"
        );
    }

    #[test]
    fn libkeepalive_names_where_ours_are_unset() {
        let loaded = with(&[
            (ALIAS_IDLE, "40"),
            (ALIAS_INTERVAL, "7"),
            (ALIAS_COUNT, "4"),
        ]);
        let s = loaded.settings;
        assert_eq!((s.idle_s, s.interval_s, s.count), (40, 7, 4));
        assert_eq!(s.user_timeout_ms, 68_000);
        assert_eq!(loaded.origins.idle, Origin::Alias(ALIAS_IDLE));
        assert!(!with(&[(ALIAS_ENABLE, "off")]).settings.enabled);
        // Ours win over libkeepalive's.
        let loaded = with(&[(ALIAS_IDLE, "40"), (IDLE, "50")]);
        assert_eq!(loaded.settings.idle_s, 50);
        assert_eq!(loaded.origins.idle, Origin::Variable(IDLE));
        // A bad alias value is named by its own name.
        let loaded = with(&[(ALIAS_COUNT, "lots")]);
        assert_eq!(loaded.problems[0].variable(), ALIAS_COUNT);
    }

    #[test]
    fn unknown_names_get_the_closest_known_one() {
        let loaded = with(&[("KEEPALIVE_INTERVALL", "5"), ("KEEPALIVE_IDEL", "5")]);
        let messages: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "KEEPALIVE_IDEL is not a known setting (did you mean KEEPALIVE_IDLE?); ignored",
                "KEEPALIVE_INTERVALL is not a known setting (did you mean KEEPALIVE_INTERVAL?); ignored",
            ]
        );
        assert!(with(&[(SHIM_LIBRARY, "/x.so")]).problems.is_empty());
    }

    #[test]
    fn strict_rejects_invalid_and_unknown() {
        assert!(with(&[(STRICT, "1"), (IDLE, "0")]).rejected());
        assert!(with(&[(STRICT, "1"), ("KEEPALIVE_TYPO", "1")]).rejected());
        assert!(!with(&[(STRICT, "1"), (IDLE, "10")]).rejected());
        let loaded = with(&[(STRICT, "1"), (IDLE, "0")]);
        assert_eq!(
            loaded.problems[0].strict_message(),
            "KEEPALIVE_IDLE=\"0\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m)"
        );
    }

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
    fn log_levels() {
        assert_eq!(with(&[(LOG, "off")]).settings.log, LogLevel::Off);
        assert_eq!(with(&[(LOG, "Warn")]).settings.log, LogLevel::Warn);
        assert_eq!(with(&[(LOG, "verbose")]).settings.log, LogLevel::Warn);
    }

    #[test]
    fn detection_times_follow_the_kernel() {
        let mut s = DEFAULT;
        assert_eq!(idle_detection_ms(&s), 60_000);
        (s.idle_s, s.interval_s, s.count, s.user_timeout_ms) = (2, 1, 2, 4000);
        assert_eq!(idle_detection_ms(&s), 4000);
        // Without a user timeout: idle + interval * count.
        s.user_timeout_ms = 0;
        assert_eq!(idle_detection_ms(&s), 4000);
        // A user timeout shorter than the idle time still needs one probe out.
        (s.idle_s, s.user_timeout_ms) = (30, 3000);
        assert_eq!(idle_detection_ms(&s), 31_000);
        // A long user timeout overrides the count.
        (s.idle_s, s.interval_s, s.count, s.user_timeout_ms) = (10, 10, 3, 95_000);
        assert_eq!(idle_detection_ms(&s), 100_000);
    }

    fn file(text: &str) -> SystemFile {
        SystemFile::Text(text.as_bytes().to_vec())
    }

    fn with_file(text: &str, vars: &[(&str, &str)]) -> Loaded {
        load_system(&file(text), vars.iter().map(|(k, v)| (*k, *v)), false)
    }

    fn messages(loaded: &Loaded) -> Vec<String> {
        loaded.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_first_of_duplicate_environment_entries_wins_as_with_getenv() {
        let loaded = with(&[(IDLE, "40"), (IDLE, "50"), (IDLE, "bad")]);
        assert_eq!(loaded.settings.idle_s, 40);
        assert!(loaded.problems.is_empty(), "later copies are not read");
        let loaded = with(&[(IDLE, "bad"), (IDLE, "50")]);
        assert_eq!(loaded.settings.idle_s, 30, "the first is the one in effect");
        assert_eq!(loaded.problems.len(), 1);
    }

    #[test]
    fn the_tools_own_names_are_never_unknown() {
        for name in [
            SHIM_LIBRARY,
            "KEEPALIVE_SHIM_TEST_LIBRARY",
            "KEEPALIVE_SHIM_ANYTHING",
            "keepalive_shim_library",
        ] {
            let loaded = with(&[(name, "/x.so")]);
            assert!(loaded.problems.is_empty(), "{name}: {:?}", loaded.problems);
        }
        // In the file too.
        assert!(
            with_file("KEEPALIVE_SHIM_LIBRARY=/x.so\n", &[])
                .problems
                .is_empty()
        );
    }

    #[test]
    fn near_misses_are_unknown_with_the_name_they_meant() {
        for (name, meant) in [
            ("KEEP_ALIVE_IDLE", IDLE),
            ("KEEPALIVEIDLE", IDLE),
            ("keepalive_idle", IDLE),
            ("Keepalive_Interval", INTERVAL),
            ("keep_alive_count", COUNT),
            ("KEEPALIVEUSERTIMEOUT", USER_TIMEOUT),
            ("KEEPALIVE_TIMEOUT", USER_TIMEOUT),
            ("keepalive_timeout", USER_TIMEOUT),
            ("KEEPALIVE_USER_TIMEOUTS", USER_TIMEOUT),
            ("KEEPALIVE_INTERVALL", INTERVAL),
            ("KEEPALIVE_IDEL", IDLE),
            ("KEEPALIVE_ENABLED", ENABLE),
            ("KEEPALIVE_EXCLUDES", EXCLUDE),
            ("KEEPALIVE_INCLUDED", INCLUDE),
            ("KEEPALIVE_DEBUG", LOG),
        ] {
            let loaded = with(&[(name, "5")]);
            assert_eq!(
                loaded.problems,
                vec![Problem::Unknown {
                    variable: name.into(),
                    closest: meant
                }],
                "{name}"
            );
            assert_eq!(
                loaded.problems[0].to_string(),
                format!("{name} is not a known setting (did you mean {meant}?); ignored")
            );
        }
        // Other programs' names that merely start alike are theirs.
        for name in [
            "KEEPALIVED_CONFIG",
            "keepalive",
            "KEEPALIVES",
            "KEEP",
            "keepidle",
        ] {
            assert!(with(&[(name, "1")]).problems.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_names_are_escaped_like_values() {
        let loaded = with(&[("KEEPALIVE_X\nkeepalive-shim[1]: forged\u{1b}[2J", "1")]);
        let message = loaded.problems[0].to_string();
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.starts_with(
                "KEEPALIVE_X\\nkeepalive-shim[1]: forged\\u{1b}[2J is not a known setting"
            ),
            "{message}"
        );
        assert!(!message.contains('\u{1b}'));
        let strict = loaded.problems[0].strict_message();
        assert!(
            !strict.contains('\n') && !strict.contains('\u{1b}'),
            "{strict}"
        );
        // A near miss and a name in the file too.
        let loaded = with(&[("keepalive_\nidle", "1")]);
        assert!(
            loaded.problems[0]
                .to_string()
                .starts_with("keepalive_\\nidle ")
        );
        let loaded = with_file("KEEPALIVE_\u{1b}X=1\n", &[]);
        assert!(!loaded.problems[0].to_string().contains('\u{1b}'));
    }

    #[test]
    fn destination_lists_keep_their_good_entries_and_name_each_bad_one() {
        let loaded = with(&[
            (EXCLUDE, "10.0.0.0/8, :5432 db.internal 300.1.1.1"),
            (INCLUDE, "fd00::/8"),
        ]);
        let s = loaded.settings;
        assert_eq!(s.exclude.to_string(), "10.0.0.0/8, :5432");
        assert_eq!(s.include.to_string(), "fd00::/8");
        assert_eq!(loaded.origins.exclude, Origin::Variable(EXCLUDE));
        assert_eq!(loaded.origins.include, Origin::Variable(INCLUDE));
        let text = messages(&loaded);
        assert_eq!(text.len(), 2, "{text:?}");
        assert_eq!(
            text[0],
            format!(
                "KEEPALIVE_EXCLUDE entry \"db.internal\" is not {ACCEPT_RULE}; that entry is ignored"
            )
        );
        assert!(text[1].starts_with("KEEPALIVE_EXCLUDE entry \"300.1.1.1\" is not an IP address"));
        assert!(!loaded.rejected());
        // Strict refuses, with the same sentence minus what is done instead.
        let strict = with(&[(STRICT, "1"), (EXCLUDE, "db.internal")]);
        assert!(strict.rejected());
        assert_eq!(
            strict.problems[0].strict_message(),
            format!("KEEPALIVE_EXCLUDE entry \"db.internal\" is not {ACCEPT_RULE}")
        );
        // Unset, empty or all bad: no rules.
        let none = with(&[]);
        assert!(none.settings.exclude.is_empty() && none.settings.include.is_empty());
        assert_eq!(none.origins.exclude, Origin::Default);
        assert!(with(&[(INCLUDE, "")]).problems.is_empty());
        assert!(with(&[(INCLUDE, "nope")]).settings.include.is_empty());
        // An entry with a control character is shown escaped.
        let loaded = with(&[(EXCLUDE, "a\u{1b}b")]);
        assert!(loaded.problems[0].to_string().contains("\"a\\u{1b}b\""));
    }

    #[test]
    fn too_many_entries_is_a_problem_naming_the_variable() {
        let mut list = String::new();
        for i in 0..35 {
            list.push_str(&format!("10.9.{i}.0/24,"));
        }
        let loaded = with(&[(INCLUDE, &list)]);
        assert_eq!(loaded.settings.include.len(), crate::rules::MAX_RULES);
        assert_eq!(
            messages(&loaded),
            ["KEEPALIVE_INCLUDE has more than 32 entries; the last 3 are ignored"]
        );
        assert!(with(&[(INCLUDE, &list), (STRICT, "yes")]).rejected());
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
    fn problems_in_the_file_name_the_file_and_the_line() {
        let text = "KEEPALIVE_COUNT=3\nKEEPALIVE_INTERVAL=7\nKEEPALIVE_IDLE=abc\njust words\nKEEPALIVE_IDEL=5\nKEEPALIVE_INTERVAL=9\nSOMETHING=1\nKEEPALIVE_EXCLUDE=:5432 nowhere\n";
        let loaded = with_file(text, &[]);
        assert_eq!(
            messages(&loaded),
            [
                "/etc/keepalive-shim.conf:3: KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); using 30s",
                &format!(
                    "/etc/keepalive-shim.conf:8: KEEPALIVE_EXCLUDE entry \"nowhere\" is not {ACCEPT_RULE}; that entry is ignored"
                ),
                "/etc/keepalive-shim.conf:4: \"just words\" is not NAME=VALUE, a # comment or a blank line; this line is ignored",
                "/etc/keepalive-shim.conf:5: KEEPALIVE_IDEL is not a known setting (did you mean KEEPALIVE_IDLE?); ignored",
                "/etc/keepalive-shim.conf:6: KEEPALIVE_INTERVAL is set again (first on line 2); this line is ignored",
                "/etc/keepalive-shim.conf:7: SOMETHING is not a known setting (did you mean KEEPALIVE_LOG?); ignored",
            ]
        );
        assert_eq!(loaded.settings.interval_s, 7, "the first line stands");
        assert_eq!(loaded.problems[0].variable(), IDLE);
        assert_eq!(
            loaded.problems[0].strict_message(),
            "/etc/keepalive-shim.conf:3: KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m)"
        );
        // The file may make strict mode refuse its own problems.
        assert!(with_file("KEEPALIVE_STRICT=1\nKEEPALIVE_IDLE=abc\n", &[]).rejected());
        // Non-UTF-8 in the file crashes nothing.
        let loaded = load_system(
            &SystemFile::Text(b"KEEPALIVE_IDLE=3\xff\n\xfe=1\n".to_vec()),
            core::iter::empty::<(&str, &str)>(),
            false,
        );
        assert_eq!(loaded.settings.idle_s, 30);
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let text = "KEEPALIVE_IDLE=45\nKEEPALIVE_EXCLUDE=10.0.0.0/8\nKEEPALIVE_USER_TIMEOUT=5s\n";
        let loaded = with_file(text, &[(IDLE, "5"), (EXCLUDE, ":22")]);
        assert_eq!(loaded.settings.idle_s, 5);
        assert_eq!(loaded.origins.idle, Origin::Variable(IDLE));
        assert_eq!(
            loaded.settings.exclude.to_string(),
            ":22",
            "replaced, not merged"
        );
        assert_eq!(loaded.settings.user_timeout_ms, 5000);
        // libkeepalive's name in the environment is the environment too.
        assert_eq!(with_file(text, &[(ALIAS_IDLE, "6")]).settings.idle_s, 6);
        // An empty list in the environment clears the file's.
        let cleared = with_file(text, &[(EXCLUDE, "")]);
        assert!(cleared.settings.exclude.is_empty());
        assert_eq!(cleared.origins.exclude, Origin::Variable(EXCLUDE));
        // An invalid environment value falls back to the file's, and says so.
        let loaded = with_file(text, &[(IDLE, "abc"), (EXCLUDE, "nowhere")]);
        assert_eq!(loaded.settings.idle_s, 45);
        assert_eq!(loaded.settings.exclude.to_string(), "10.0.0.0/8");
        assert_eq!(
            messages(&loaded)[0],
            "KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); \
             using 45s (/etc/keepalive-shim.conf:1)"
        );
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
        // Only the file counts, strict mode included.
        let loaded = run(&file("KEEPALIVE_IDLE=45\n"));
        assert_eq!(loaded.settings.idle_s, 45);
        assert_eq!(loaded.settings.user_timeout_ms, 75_000);
        assert!(run(&file("KEEPALIVE_STRICT=1\nKEEPALIVE_COUNT=0\n")).rejected());
        // The same environment outside secure mode does apply.
        let open = load_system(
            &SystemFile::Absent,
            env.iter().map(|(k, v)| (*k, *v)),
            false,
        );
        assert!(!open.secure && open.rejected());
    }

    #[test]
    fn an_unusable_file_is_one_warning_and_nothing_else() {
        let loaded = load_system(
            &SystemFile::Ignored("it is owned by uid 1000, not root".into()),
            [(IDLE, "5")],
            false,
        );
        assert_eq!(loaded.file, FileUse::Ignored);
        assert_eq!(loaded.settings.idle_s, 5);
        assert_eq!(
            messages(&loaded),
            ["/etc/keepalive-shim.conf is ignored: it is owned by uid 1000, not root"]
        );
        assert_eq!(loaded.problems[0].variable(), SYSTEM_FILE);
        assert_eq!(with(&[]).file, FileUse::Absent);
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
