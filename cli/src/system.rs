//! `keepalive-shim system enable|disable|status`: switches the library on and off machine-wide
//! through `/etc/ld.so.preload`, the file glibc's loader reads for every dynamically linked
//! program (setuid ones included).
//!
//! - `enable` puts the library's path on a line of its own at the top of the file (the library
//!   goes first, as `run` puts it first in `LD_PRELOAD`), idempotently and atomically: a
//!   temporary file in the same folder, `fsync`, `rename`, `fsync` of the folder, under a lock
//!   on that folder. Every other byte of the file stays as it was. Before anything is written it
//!   refuses a path the loader would split or misread (a space, tab, newline, `:`, `#` or `$`,
//!   or not absolute), a library file or folder that someone other than root could change, a
//!   configuration with a problem, and a library that does not load: the probe, `true` started
//!   with `LD_PRELOAD` set to exactly that path, must exit 0 and the loader must report that it
//!   called the library's constructor (`LD_DEBUG=files`), with no loader error.
//! - `disable` removes every line that names one file called `libkeepalive_shim.so` and nothing
//!   else (whatever its folder: a line naming a copy that the package removal is about to
//!   delete would make every program print a loader error), and nothing more. When the file
//!   ends up empty and `enable` created it (the state file
//!   `/var/lib/keepalive-shim/ld.so.preload.created` says so: the loader accepts `#` comments,
//!   but a marker in the file would be a second line of ours there), the file is removed. A
//!   line that names the library among other entries is left alone and reported: exit 1.
//! - `status` says whether it is on, on which line of which file, and whether that file loads
//!   (the same probe). Exit 0: on and loads; 1: on and does not load; 3: off.
//!
//! `--root DIR` works on `DIR/etc/ld.so.preload` (and `DIR/etc/keepalive-shim.conf`, and
//! `DIR/var/lib/keepalive-shim/`), with the probe run chrooted into DIR.
//!
//! `keepalive-shim copy-library DIR` (a command of its own, here for the library lookup it
//! shares with `enable`) copies the library into a folder, atomically: the default command of
//! the init-container image (`scripts/dist.sh`), which has no `cp`.

use crate::config;
use crate::say;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The library's file name.
const LIBRARY: &str = "libkeepalive_shim.so";
/// Where the packages install the library.
pub const INSTALLED: &str = "/usr/lib/keepalive-shim/libkeepalive_shim.so";
/// The loader's machine-wide preload list.
const PRELOAD: &str = "/etc/ld.so.preload";
/// Present while `/etc/ld.so.preload` is a file that `enable` created.
const STATE_DIR: &str = "/var/lib/keepalive-shim";
const CREATED: &str = "/var/lib/keepalive-shim/ld.so.preload.created";
/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// `status`: the library is off (the LSB's "program is not running").
const EXIT_OFF: u8 = 3;

/// Switch the library on or off for every program of this machine (/etc/ld.so.preload).
///
/// Installing a package changes nothing; `system enable` is the one step that makes every
/// dynamically linked program (setuid ones included) load the library. `status` says whether
/// it is on and whether the file named there loads.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    sudo keepalive-shim system enable\n  \
    sudo keepalive-shim system enable --library /opt/keepalive-shim/libkeepalive_shim.so\n  \
    keepalive-shim system status\n  \
    sudo keepalive-shim system disable\n  \
    sudo keepalive-shim system enable --root /mnt/image    # an image's tree, probed by chroot")]
pub struct Args {
    #[command(subcommand)]
    command: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Add the library to /etc/ld.so.preload, after proving that it loads.
    ///
    /// The path is written on a line of its own at the top of the file; the rest of the file is
    /// kept byte for byte, and nothing is written when the line is already there. Refused (nothing
    /// written) when the path is not absolute or has a character the loader splits or reads
    /// specially (space, tab, newline, ':', '#', '$'), when root does not alone control the file
    /// and its folders, when the configuration (the environment and /etc/keepalive-shim.conf) has
    /// a problem, or when `true` started with LD_PRELOAD set to that path fails or does not run
    /// the library's constructor.
    Enable(EnableArgs),
    /// Remove the library from /etc/ld.so.preload.
    ///
    /// Removes every line naming one file called libkeepalive_shim.so and nothing else, whatever its folder. The file is removed when it ends
    /// up empty and `enable` created it. Exit 1 when a line naming it among other entries remains.
    Disable(RootArg),
    /// Say whether the library is on, and whether the file named there loads.
    ///
    /// Which line of which file names it, and the probe's verdict for each. Exit 0: on and loads; 1: on and does not load; 3: off.
    Status(RootArg),
}

#[derive(clap::Args)]
struct EnableArgs {
    /// The library to preload [default: KEEPALIVE_SHIM_LIBRARY, else the library next to this
    /// executable (., ../lib/keepalive-shim/, ../lib/), else /usr/lib/keepalive-shim/].
    #[arg(long, value_name = "PATH")]
    library: Option<PathBuf>,
    #[command(flatten)]
    root: RootArg,
}

#[derive(clap::Args)]
struct RootArg {
    /// Work on DIR/etc/ld.so.preload; the probe runs chrooted into DIR.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    match args.command {
        Action::Enable(args) => enable(&args),
        Action::Disable(args) => disable(&Root::new(args.root)),
        Action::Status(args) => status(&Root::new(args.root)),
    }
}

/// Copy the library into a folder, atomically: for an init container's shared volume.
///
/// Writes DIR/libkeepalive_shim.so (mode 0644) through a temporary file in DIR and a rename, so
/// a program starting meanwhile sees the old file or the new one, never a part; then prints
/// that path. DIR must exist (the volume's mount point: a missing one is a mistake in the pod's
/// spec, not a folder to make), and the path must be one LD_PRELOAD can carry (no space or
/// ':'). The default command of the keepalive-shim image, which has no `cp`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim copy-library /keepalive-shim    # the image's default command\n  \
    LD_PRELOAD=$(keepalive-shim copy-library /opt/ka) myapp")]
pub struct CopyLibraryArgs {
    /// The folder to copy the library into; it must exist.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The library to copy [default: KEEPALIVE_SHIM_LIBRARY, else the library next to this
    /// executable (., ../lib/keepalive-shim/, ../lib/), else /usr/lib/keepalive-shim/].
    #[arg(long, value_name = "PATH")]
    library: Option<PathBuf>,
}

pub fn copy_library(args: CopyLibraryArgs) -> ExitCode {
    let source = match args.library {
        Some(path) => path,
        None => match default_library(&Root::new(None)) {
            Ok(path) => path,
            Err(e) => return fail(format_args!("copy-library: {e}; nothing written")),
        },
    };
    match copy_into(&source, &args.dir) {
        Ok(path) => {
            crate::output::out(format_args!("{}", path.display()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format_args!("copy-library: {e}; nothing written")),
    }
}

/// Copies the library `source` to `dir/libkeepalive_shim.so` (see [`CopyLibraryArgs`]); the
/// absolute path written.
fn copy_into(source: &Path, dir: &Path) -> Result<PathBuf, String> {
    let bytes = fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Err(format!("{} is not an ELF file", source.display()));
    }
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a folder", dir.display())),
        Err(e) => {
            return Err(format!(
                "{}: {e} (mount the shared volume there, or make the folder first)",
                dir.display()
            ));
        }
    }
    let target = dir.join(LIBRARY);
    if let Some(why) = unfit(target.as_os_str().as_bytes()) {
        return Err(why);
    }
    write_new(&target, &bytes, 0o644, None)
        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    Ok(target)
}

/// Puts `bytes` at `path` with `mode` (and `owner`, uid and gid, when given): a new file beside it
/// (never followed if it is a link), written, `fsync`ed, renamed over `path`, and the folder
/// `fsync`ed.
fn write_new(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .unwrap_or(OsStr::new("tmp"))
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.keepalive-shim-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

// ---- the file's lines: pure functions ----

/// One entry of the loader's list: split on what glibc's rtld splits `/etc/ld.so.preload` on
/// (space, tab, newline, ':'), after cutting `#` comments to the end of their line.
fn entries(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let line = match line.iter().position(|&b| b == b'#') {
        Some(at) => &line[..at],
        None => line,
    };
    line.split(|b| matches!(b, b' ' | b'\t' | b'\n' | b':'))
        .filter(|e| !e.is_empty())
}

/// The file's lines, each with its `\n` (the last one may have none).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split_inclusive(|&b| b == b'\n')
}

/// Whether `line` names one file called libkeepalive_shim.so and nothing else: a line of ours.
fn ours(line: &[u8]) -> Option<&[u8]> {
    let mut it = entries(line);
    let only = it.next()?;
    (it.next().is_none() && is_library(only)).then_some(only)
}

fn is_library(entry: &[u8]) -> bool {
    entry.rsplit(|&b| b == b'/').next() == Some(LIBRARY.as_bytes())
}

/// The text with `path` added: `None` when the loader already reads `path` from it (on any
/// line). Otherwise `path` and a newline go first and every byte of `text` follows unchanged,
/// so that [`remove`] gives back exactly `text`.
pub fn add(text: &[u8], path: &[u8]) -> Option<Vec<u8>> {
    if lines(text).any(|line| entries(line).any(|e| e == path)) {
        return None;
    }
    let mut out = Vec::with_capacity(path.len() + 1 + text.len());
    out.extend_from_slice(path);
    out.push(b'\n');
    out.extend_from_slice(text);
    Some(out)
}

/// What [`remove`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    /// The text without our lines; every other line byte for byte.
    pub text: Vec<u8>,
    /// The paths of the lines removed.
    pub paths: Vec<Vec<u8>>,
    /// Lines (numbered from 1) that name the library among other entries: kept.
    pub mixed: Vec<usize>,
}

/// The text without the lines of ours (see [`ours`]).
pub fn remove(text: &[u8]) -> Removed {
    let mut out = Removed {
        text: Vec::with_capacity(text.len()),
        paths: Vec::new(),
        mixed: Vec::new(),
    };
    for (n, line) in lines(text).enumerate() {
        if let Some(path) = ours(line) {
            out.paths.push(path.to_vec());
        } else {
            if entries(line).any(is_library) {
                out.mixed.push(n + 1);
            }
            out.text.extend_from_slice(line);
        }
    }
    out
}

/// Every entry naming the library: (line number from 1, path).
fn named(text: &[u8]) -> Vec<(usize, Vec<u8>)> {
    lines(text)
        .enumerate()
        .flat_map(|(n, line)| {
            entries(line)
                .filter(|e| is_library(e))
                .map(move |e| (n + 1, e.to_vec()))
        })
        .collect()
}

/// Why `path` cannot go in `/etc/ld.so.preload`, naming the character.
pub fn unfit(path: &[u8]) -> Option<String> {
    let shown = String::from_utf8_lossy(path);
    let shown = shown.escape_debug();
    if path.first() != Some(&b'/') {
        return Some(format!(
            "the library path \"{shown}\" is not absolute: the loader would look for it \
             relative to each program's working directory"
        ));
    }
    for (at, &b) in path.iter().enumerate() {
        let what = match b {
            b' ' => "a space",
            b'\t' => "a tab",
            b'\n' => "a newline",
            b':' => "a ':'",
            b'#' => "a '#' (the loader reads the rest of the line as a comment)",
            b'$' => "a '$' (the loader expands $LIB, $PLATFORM and $ORIGIN)",
            0..0x20 | 0x7f => "a control character",
            _ => continue,
        };
        return Some(format!(
            "the library path \"{shown}\" has {what} at byte {at}: the loader splits \
             {PRELOAD} and LD_PRELOAD on spaces, tabs, newlines and ':', and would load \
             nothing; install the library under a path without them"
        ));
    }
    None
}

// ---- the machine (or the tree under --root) ----

/// The tree the command works on: `/`, or `--root DIR`.
struct Root {
    dir: Option<PathBuf>,
}

impl Root {
    fn new(dir: Option<PathBuf>) -> Root {
        Root { dir }
    }

    /// `path` (absolute, as seen inside the tree) as seen from here.
    fn host(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match &self.dir {
            None => path.to_path_buf(),
            Some(dir) => dir.join(path.strip_prefix("/").unwrap_or(path)),
        }
    }

    /// How a path inside the tree is shown: `/etc/ld.so.preload`, or `DIR/etc/ld.so.preload`.
    fn show(&self, path: impl AsRef<Path>) -> String {
        self.host(path).display().to_string()
    }
}

/// The library `enable` writes when no `--library` is given.
fn default_library(root: &Root) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(config::SHIM_LIBRARY) {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = Vec::new();
    if root.dir.is_none()
        && let Ok(exe) = std::env::current_exe()
    {
        let dir = exe.parent().unwrap_or(Path::new("/"));
        for sub in [".", "../lib/keepalive-shim", "../lib"] {
            candidates.push(dir.join(sub).join(LIBRARY));
        }
    }
    candidates.push(PathBuf::from(INSTALLED));
    for candidate in &candidates {
        if root.host(candidate).is_file() {
            return Ok(match root.dir {
                None => fs::canonicalize(candidate).unwrap_or_else(|_| candidate.clone()),
                Some(_) => candidate.clone(),
            });
        }
    }
    let list: Vec<String> = candidates.iter().map(|c| root.show(c)).collect();
    Err(format!(
        "cannot find {LIBRARY}: looked at {}; give --library PATH",
        list.join(", ")
    ))
}

/// The file and each folder above it must be root's and writable by no one else: the library
/// runs in every program, setuid ones included.
fn root_controls(root: &Root, path: &Path) -> Result<(), String> {
    let file = root.host(path);
    let meta = fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    for at in path.ancestors() {
        let host = root.host(at);
        let meta = fs::metadata(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != 0 {
            return Err(format!(
                "{} is owned by uid {}, not root: whoever owns it could put code into every \
                 program, setuid ones included",
                host.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 {
            return Err(format!(
                "{} is writable by group or others (mode {mode:04o}): they could put code into \
                 every program, setuid ones included",
                host.display()
            ));
        }
    }
    Ok(())
}

/// The configuration every program would read: this environment and the tree's system file.
fn configuration_problems(root: &Root) -> Vec<String> {
    let loaded = match &root.dir {
        None => config::from_process(),
        Some(_) => {
            let file = CString::new(root.host(config::SYSTEM_FILE).into_os_string().into_vec())
                .map(|path| config::read_file(&path))
                .unwrap_or(config::SystemFile::Absent);
            let vars: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
                .map(|(k, v)| (k.into_vec(), v.into_vec()))
                .collect();
            config::load_system(&file, vars, false)
        }
    };
    loaded.problems.iter().map(ToString::to_string).collect()
}

/// Starts `true` inside the tree with `LD_PRELOAD` set to exactly `library` (and the loader's
/// `LD_DEBUG=files` report): `Ok` when it exits 0 and the loader called the library's
/// constructor, with no loader error.
fn probe(root: &Root, library: &[u8]) -> Result<(), String> {
    let program = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| root.host(p).is_file())
        .ok_or_else(|| format!("no {} to probe with", root.show("/bin/true")))?;
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LD_PRELOAD", OsStr::from_bytes(library))
        .env("LD_DEBUG", "files")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = &root.dir {
        let dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| "the --root path has a NUL byte".to_owned())?;
        // SAFETY: chroot and chdir are async-signal-safe, and the closure allocates nothing
        // (the path was made before the fork).
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(dir.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    // The report is small; read it to the end (the child exits), within the time allowed.
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let t0 = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if t0.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} with it preloaded did not end within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let report = reader.join().unwrap_or_default();
    judge_probe(program, library, status.code(), &report)
}

/// The probe's verdict from its exit status and the loader's report on stderr.
fn judge_probe(
    program: &str,
    library: &[u8],
    code: Option<i32>,
    report: &[u8],
) -> Result<(), String> {
    let report = String::from_utf8_lossy(report);
    // The loader's own lines are "PID:\tmessage"; anything else is the library's or an error.
    let other: Vec<&str> = report
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.split_once(':')
                .is_some_and(|(pid, _)| pid.bytes().all(|b| b.is_ascii_digit()) && !pid.is_empty())
        })
        .collect();
    let what = || {
        if other.is_empty() {
            String::new()
        } else {
            format!(": {}", other.join(" / "))
        }
    };
    if code != Some(0) {
        let code = code.map_or("a signal".to_owned(), |c| format!("status {c}"));
        return Err(format!(
            "{program} with it preloaded ended with {code}{}",
            what()
        ));
    }
    if report.contains("ERROR: ld.so") || report.contains("cannot be preloaded") {
        return Err(format!("the loader could not preload it{}", what()));
    }
    let init = format!("calling init: {}", String::from_utf8_lossy(library));
    if !report.lines().any(|l| l.trim_end().ends_with(&init)) {
        return Err(format!(
            "the loader did not run its constructor in {program}{}",
            what()
        ));
    }
    Ok(())
}

fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(io::Error::other(
                "it is a symbolic link (not replaced; edit the file it points to)",
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(io::Error::other("it is not a regular file"));
        }
        Ok(_) => {}
    }
    fs::read(path).map(Some)
}

/// Holds an exclusive lock on the file's folder while the file is read and replaced.
struct Lock {
    _dir: File,
}

fn lock(dir: &Path) -> io::Result<Lock> {
    let file = File::open(dir)?;
    // SAFETY: flock on a descriptor we own; the lock goes with the descriptor.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Lock { _dir: file })
}

/// Replaces `path` with `text`: a new file in the same folder (the old file's mode and owner,
/// else 0644 root), written, `fsync`ed, renamed over `path`, and the folder `fsync`ed.
fn replace(path: &Path, text: &[u8]) -> io::Result<()> {
    let old = fs::metadata(path).ok();
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    write_new(path, text, mode, old.map(|m| (m.uid(), m.gid())))
}

/// Removes `path` and syncs its folder.
fn remove_synced(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// Records that `enable` made the file (the folder made if needed).
fn mark_created(root: &Root) -> io::Result<()> {
    let dir = root.host(STATE_DIR);
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let path = root.host(CREATED);
    let mut file = File::create(&path)?;
    file.write_all(
        format!(
            "{PRELOAD} was created by `keepalive-shim system enable`; `system disable` removes \
             it when it holds nothing else.\n"
        )
        .as_bytes(),
    )?;
    file.sync_all()
}

/// Forgets the state file, and its folder once empty.
fn unmark(root: &Root) -> io::Result<()> {
    match fs::remove_file(root.host(CREATED)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let _ = fs::remove_dir(root.host(STATE_DIR));
    Ok(())
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    say!("{message}");
    ExitCode::FAILURE
}

// ---- the three commands ----

fn enable(args: &EnableArgs) -> ExitCode {
    let root = Root::new(args.root.root.clone());
    let library = match &args.library {
        Some(path) => path.clone(),
        None => match default_library(&root) {
            Ok(path) => path,
            Err(e) => return fail(format_args!("system enable: {e}; nothing written")),
        },
    };
    let bytes = library.as_os_str().as_bytes();
    if let Some(why) = unfit(bytes) {
        return fail(format_args!("system enable: {why}; nothing written"));
    }
    if let Err(why) = root_controls(&root, &library) {
        return fail(format_args!("system enable: {why}; nothing written"));
    }
    let problems = configuration_problems(&root);
    if !problems.is_empty() {
        for problem in &problems {
            say!("{problem}");
        }
        return fail(format_args!(
            "system enable: the configuration has {} problem(s) (above; `keepalive-shim check` \
             shows them all): fix them first; nothing written",
            problems.len()
        ));
    }
    if let Err(why) = probe(&root, bytes) {
        return fail(format_args!(
            "system enable: {} does not load: {why}; nothing written",
            library.display()
        ));
    }

    let path = root.host(PRELOAD);
    let etc = path.parent().unwrap_or(Path::new("/"));
    let _lock = match lock(etc) {
        Ok(lock) => lock,
        Err(e) => return fail(format_args!("system enable: {}: {e}", etc.display())),
    };
    let old = match read_if_present(&path) {
        Ok(old) => old,
        Err(e) => return fail(format_args!("system enable: {}: {e}", path.display())),
    };
    let Some(text) = add(old.as_deref().unwrap_or_default(), bytes) else {
        crate::output::out(format_args!(
            "keepalive-shim is already on: {} names {} (it loads)",
            path.display(),
            library.display()
        ));
        return ExitCode::SUCCESS;
    };
    if old.is_none()
        && let Err(e) = mark_created(&root)
    {
        return fail(format_args!(
            "system enable: {}: {e}; nothing written",
            root.show(CREATED)
        ));
    }
    if let Err(e) = replace(&path, &text) {
        if old.is_none() {
            let _ = unmark(&root);
        }
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (run as root)"
        } else {
            ""
        };
        return fail(format_args!(
            "system enable: cannot write {}: {e}{hint}",
            path.display()
        ));
    }
    crate::output::out(format_args!(
        "keepalive-shim is on: {} names {}; programs started from now on load it (running \
         ones are unchanged); `keepalive-shim system disable` switches it off",
        path.display(),
        library.display()
    ));
    ExitCode::SUCCESS
}

fn disable(root: &Root) -> ExitCode {
    let path = root.host(PRELOAD);
    let etc = path.parent().unwrap_or(Path::new("/"));
    let _lock = match lock(etc) {
        Ok(lock) => lock,
        Err(e) => return fail(format_args!("system disable: {}: {e}", etc.display())),
    };
    let old = match read_if_present(&path) {
        Ok(Some(old)) => old,
        Ok(None) => {
            let _ = unmark(root);
            crate::output::out(format_args!(
                "keepalive-shim is off: there is no {}",
                path.display()
            ));
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(format_args!("system disable: {}: {e}", path.display())),
    };
    let removed = remove(&old);
    let created = root.host(CREATED).exists();
    let write = if removed.paths.is_empty() {
        Ok(())
    } else if removed.text.is_empty() && created {
        remove_synced(&path)
    } else {
        replace(&path, &removed.text)
    };
    if let Err(e) = write {
        return fail(format_args!(
            "system disable: cannot write {}: {e}",
            path.display()
        ));
    }
    for line in &removed.mixed {
        say!(
            "system disable: {} line {line} names {LIBRARY} among other entries: left as it \
             is; edit that line by hand",
            path.display()
        );
    }
    if !removed.mixed.is_empty() {
        return ExitCode::FAILURE;
    }
    if let Err(e) = unmark(root) {
        say!("system disable: {}: {e}", root.show(CREATED));
    }
    if removed.paths.is_empty() {
        crate::output::out(format_args!(
            "keepalive-shim is off: {} does not name {LIBRARY}; nothing changed",
            path.display()
        ));
    } else {
        let paths: Vec<String> = removed.paths.iter().map(|p| shown(p)).collect();
        let what = if removed.text.is_empty() && created {
            "removed it (it held nothing else, and `system enable` had created it)".to_owned()
        } else {
            "kept every other line".to_owned()
        };
        crate::output::out(format_args!(
            "keepalive-shim is off: removed {} from {}; {what}; programs started from now on do \
             not load it",
            paths.join(", "),
            path.display()
        ));
    }
    ExitCode::SUCCESS
}

fn status(root: &Root) -> ExitCode {
    let path = root.host(PRELOAD);
    let old = match read_if_present(&path) {
        Ok(Some(old)) => old,
        Ok(None) => {
            crate::output::out(format_args!("off: there is no {}", path.display()));
            return ExitCode::from(EXIT_OFF);
        }
        Err(e) => return fail(format_args!("system status: {}: {e}", path.display())),
    };
    let named = named(&old);
    if named.is_empty() {
        crate::output::out(format_args!(
            "off: {} does not name {LIBRARY}",
            path.display()
        ));
        return ExitCode::from(EXIT_OFF);
    }
    let mut all_load = true;
    let mut out = String::new();
    out.push_str("on:");
    for (line, library) in &named {
        let verdict = match probe(root, library) {
            Ok(()) => "loads".to_owned(),
            Err(why) => {
                all_load = false;
                format!("does NOT load: {why}")
            }
        };
        out.push_str(&format!(
            "\n  {} line {line}: {} {verdict}",
            path.display(),
            shown(library)
        ));
    }
    out.push('\n');
    crate::output::write_all(1, out.as_bytes());
    if all_load {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    /// Bytes shown as a path, for the messages.
    fn os(bytes: &[u8]) -> OsString {
        OsString::from_vec(bytes.to_vec())
    }

    const LIB: &[u8] = b"/usr/lib/keepalive-shim/libkeepalive_shim.so";

    #[test]
    fn add_puts_the_line_first_and_keeps_every_other_byte() {
        assert_eq!(add(b"", LIB).unwrap(), [LIB, b"\n"].concat());
        let other = b"/opt/other.so\n# a comment\n\n  /lib/x.so:/lib/y.so";
        let added = add(other, LIB).unwrap();
        assert_eq!(added, [LIB, b"\n", other].concat());
        assert!(added.ends_with(other), "every other byte, in order");
    }

    #[test]
    fn add_is_idempotent_wherever_the_loader_reads_the_path() {
        let once = add(b"/opt/other.so\n", LIB).unwrap();
        assert_eq!(add(&once, LIB), None);
        // Already named on a line of its own, or among others: nothing to add.
        assert_eq!(add(&[b"/a.so ", LIB, b" /b.so\n"].concat(), LIB), None);
        assert_eq!(add(&[b"/a.so:", LIB].concat(), LIB), None);
        // In a comment the loader does not read it: added.
        assert!(add(&[b"# ", LIB, b"\n"].concat(), LIB).is_some());
        // Another copy is another path.
        assert!(add(b"/opt/ka/libkeepalive_shim.so\n", LIB).is_some());
    }

    #[test]
    fn remove_undoes_add_byte_for_byte() {
        for before in [
            &b""[..],
            b"\n",
            b"/opt/other.so",
            b"/opt/other.so\n",
            b"# comment\r\n/opt/other.so  \n\n\t/x.so\n",
        ] {
            let added = add(before, LIB).unwrap();
            let removed = remove(&added);
            assert_eq!(removed.text, before, "{:?}", os(before));
            assert_eq!(removed.paths, [LIB.to_vec()]);
            assert!(removed.mixed.is_empty());
            // Removing again changes nothing.
            let again = remove(&removed.text);
            assert_eq!(again.text, before);
            assert!(again.paths.is_empty());
        }
    }

    #[test]
    fn remove_takes_every_line_of_ours_and_nothing_else() {
        let text = b"/a.so\n/opt/ka/libkeepalive_shim.so\n  /usr/lib/libkeepalive_shim.so \t\n\
            /b.so /usr/lib/libkeepalive_shim.so\n# /c/libkeepalive_shim.so\n\
            /d/libkeepalive_shim.so.1\n/e/libkeepalive_shim.so";
        let removed = remove(text);
        assert_eq!(
            removed.text,
            b"/a.so\n/b.so /usr/lib/libkeepalive_shim.so\n# /c/libkeepalive_shim.so\n\
              /d/libkeepalive_shim.so.1\n"
        );
        assert_eq!(
            removed.paths,
            [
                b"/opt/ka/libkeepalive_shim.so".to_vec(),
                b"/usr/lib/libkeepalive_shim.so".to_vec(),
                b"/e/libkeepalive_shim.so".to_vec(),
            ]
        );
        assert_eq!(removed.mixed, [4], "the line with another entry is kept");
    }

    #[test]
    fn a_file_of_ours_alone_ends_up_empty() {
        assert!(remove(&[LIB, b"\n"].concat()).text.is_empty());
        assert!(remove(LIB).text.is_empty());
        assert!(remove(&[LIB, b"\n", LIB, b"\n"].concat()).text.is_empty());
        let removed = remove(b"");
        assert!(removed.text.is_empty() && removed.paths.is_empty());
    }

    #[test]
    fn named_lists_every_entry_the_loader_reads() {
        let text = [
            b"/a.so\n",
            LIB,
            b"\n/b.so:/x/libkeepalive_shim.so # /y/libkeepalive_shim.so\n",
        ]
        .concat();
        assert_eq!(
            named(&text),
            [(2, LIB.to_vec()), (3, b"/x/libkeepalive_shim.so".to_vec())]
        );
    }

    #[test]
    fn unfit_names_the_character() {
        assert_eq!(unfit(LIB), None);
        for (path, what) in [
            (
                &b"/opt/my libs/libkeepalive_shim.so"[..],
                "a space at byte 7",
            ),
            (b"/opt/a:b/libkeepalive_shim.so", "a ':' at byte 6"),
            (b"/opt/a\tb/libkeepalive_shim.so", "a tab at byte 6"),
            (b"/opt/a\nb/libkeepalive_shim.so", "a newline at byte 6"),
            (b"/opt/#/libkeepalive_shim.so", "a '#'"),
            (b"/opt/$LIB/libkeepalive_shim.so", "a '$'"),
            (b"libkeepalive_shim.so", "not absolute"),
            (b"./libkeepalive_shim.so", "not absolute"),
        ] {
            let why = unfit(path).unwrap_or_default();
            assert!(why.contains(what), "{:?}: {why}", os(path));
        }
    }

    /// A new empty folder for one test, removed first if a killed run left it.
    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ks-system-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The folder's entries, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn copy_library_writes_the_file_0644_and_replaces_it() {
        let base = folder("copy");
        let source = base.join("source.so");
        fs::write(&source, b"\x7fELF first").unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o700)).unwrap();
        let volume = base.join("volume");
        fs::create_dir(&volume).unwrap();
        let written = copy_into(&source, &volume).unwrap();
        assert_eq!(written, volume.join(LIBRARY));
        assert_eq!(fs::read(&written).unwrap(), b"\x7fELF first");
        let mode = fs::metadata(&written).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        // Again, with new contents: replaced, nothing else left in the folder.
        fs::write(&source, b"\x7fELF second").unwrap();
        assert_eq!(copy_into(&source, &volume).unwrap(), written);
        assert_eq!(fs::read(&written).unwrap(), b"\x7fELF second");
        assert_eq!(listing(&volume), [LIBRARY]);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn copy_library_refuses_and_writes_nothing() {
        let base = folder("refuse");
        let source = base.join("source.so");
        fs::write(&source, b"\x7fELF").unwrap();
        let why = copy_into(&source, &base.join("missing")).unwrap_err();
        assert!(why.contains("mount the shared volume"), "{why}");
        assert!(
            !base.join("missing").exists(),
            "a missing folder is not made"
        );
        let why = copy_into(&source, &source).unwrap_err();
        assert!(why.contains("is not a folder"), "{why}");
        let spaced = base.join("my volume");
        fs::create_dir(&spaced).unwrap();
        let why = copy_into(&source, &spaced).unwrap_err();
        assert!(why.contains("a space"), "{why}");
        let text = base.join("text.so");
        fs::write(&text, b"not a library").unwrap();
        let volume = base.join("volume");
        fs::create_dir(&volume).unwrap();
        let why = copy_into(&text, &volume).unwrap_err();
        assert!(why.contains("not an ELF file"), "{why}");
        let why = copy_into(&base.join("absent.so"), &volume).unwrap_err();
        assert!(why.contains("absent.so"), "{why}");
        assert!(listing(&volume).is_empty() && listing(&spaced).is_empty());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_probe_needs_exit_0_and_the_constructor() {
        let lib = LIB;
        let init = b"      12:\tcalling init: /usr/lib/keepalive-shim/libkeepalive_shim.so\n";
        assert_eq!(judge_probe("/bin/true", lib, Some(0), init), Ok(()));
        let why = judge_probe("/bin/true", lib, Some(78), b"KEEPALIVE_STRICT is on\n").unwrap_err();
        assert!(
            why.contains("status 78") && why.contains("KEEPALIVE_STRICT"),
            "{why}"
        );
        let error = b"ERROR: ld.so: object '/x/libkeepalive_shim.so' from LD_PRELOAD cannot be \
            preloaded (cannot open shared object file): ignored.\n";
        let why = judge_probe("/bin/true", lib, Some(0), error).unwrap_err();
        assert!(why.contains("could not preload"), "{why}");
        let why = judge_probe(
            "/bin/true",
            lib,
            Some(0),
            b"      12:\tcalling init: /lib/libc.so.6\n",
        )
        .unwrap_err();
        assert!(why.contains("constructor"), "{why}");
    }
}
