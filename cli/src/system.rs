//! `keepalive-shim system enable|disable|status|install-library`: switches the library on and
//! off machine-wide through `/etc/ld.so.preload`, the file glibc's loader reads for every
//! dynamically linked program (setuid ones included), and replaces the installed library under
//! running programs safely.
//!
//! - `enable` puts the library's path on a line of its own at the top of the file (the library
//!   goes first, as `run` puts it first in `LD_PRELOAD`), idempotently and atomically, under a
//!   lock on the folder. Every other byte of the file stays as it was. Before anything is written
//!   it refuses a path the loader would split or misread, a library that is not, once every link
//!   is followed, a regular file in folders only root controls (the *resolved* path is checked
//!   and written: a link into a folder another user owns would let that user swap what every
//!   program loads), a configuration with a problem, and a library that does not load: the
//!   probe, `true` started with `LD_PRELOAD` set to exactly that path, must exit 0 and the
//!   loader must report that it called the library's constructor (`LD_DEBUG=files`). Another
//!   entry of the file that the loader cannot preload (a stale path, Windows line ends, a
//!   byte-order mark) is reported as that entry's, not held against ours. What `enable` added is
//!   recorded in `/var/lib/keepalive-shim/` (the line, and whether it created the file).
//! - `disable` removes the lines `enable` recorded and nothing else, so that enable then disable
//!   gives the file back byte for byte, also when the site's file already named the library.
//!   Without a record (the line was written by hand), or with `--all` (the package removal: a
//!   line naming a file about to be deleted would make every program print a loader error), it
//!   removes every line that names one file called `libkeepalive_shim.so` and nothing else. The
//!   file is removed when it ends up empty and `enable` created it. A line that names the library
//!   among other entries is left alone and reported: exit 1.
//! - `status` says whether it is on, on which line of which file, and whether that file loads
//!   (the same probe). Exit 0: on and loads; 1: on and does not load; 3: off.
//! - `install-library FILE` puts FILE at `/usr/lib/keepalive-shim/libkeepalive_shim.so` (the path
//!   `enable` writes by default) after proving that it loads: a copy beside it, probed, then
//!   renamed over it. Running programs keep the file they mapped (writing over a mapped library,
//!   as `cp` does, kills them with SIGBUS), and a library that does not load never reaches the
//!   name every program loads. The packages' post-install script runs it.
//!
//! `--root DIR` works on the tree DIR as if it were `/`: every path is resolved inside it
//! (`openat2` with `RESOLVE_IN_ROOT`, or a walk of our own on kernels before 5.6: see
//! `keepalive_shim_sys::fs`), files are made with `O_EXCL | O_NOFOLLOW` and renamed in their
//! folder's descriptor, folders made with `mkdirat`; a link in the tree, absolute or not, never
//! reaches the host. The probe never runs code with root's privileges: chrooted into the tree
//! (through its descriptor), as `nobody` with no groups, no capabilities and `no_new_privs`, in
//! namespaces of its own where the kernel allows, with limits and a deadline
//! (`keepalive_shim_sys::sandbox`). Without `--root` the probe runs the same way, without the
//! chroot: as `nobody` it also proves that programs of every user can read the library.

use crate::library;
use crate::preload_file::{PRELOAD, add, named, remove, unfit};
use keepalive_shim_policy::config;
use keepalive_shim_policy::preload::LIBRARY_NAME as LIBRARY;
use keepalive_shim_sys::fs::{Dir, Stat, Tree};
use keepalive_shim_sys::output::out;
use keepalive_shim_sys::sandbox::{self, Confined};
use keepalive_shim_sys::say;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `enable` recorded, under the tree's `/var/lib`.
const STATE_DIR: &str = "/var/lib/keepalive-shim";
/// Present while `/etc/ld.so.preload` is a file that `enable` created.
const CREATED: &str = "ld.so.preload.created";
/// The paths `enable` added to `/etc/ld.so.preload`, one a line (present, maybe empty, once
/// `enable` has run: empty when the file already named the library).
const ADDED: &str = "ld.so.preload.added";
/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// Who the probe runs as: `nobody` (the kernel's overflow uid and gid).
const PROBE_USER: (u32, u32) = (65534, 65534);
/// The probe's address-space limit.
const PROBE_MEMORY: u64 = 1 << 30;
/// The loader's report kept from the probe (`true` writes about 2 kB).
const PROBE_REPORT_MAX: usize = 256 * 1024;
/// The largest `/etc/ld.so.preload` (and state file) read: the loader's list is a few lines.
const TEXT_MAX: usize = 1 << 20;
/// The largest library `install-library` copies (ours is 140 kB).
const LIBRARY_MAX: usize = 64 << 20;
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
    sudo keepalive-shim system enable --root /mnt/image    # an image's tree, probed chrooted\n  \
    sudo keepalive-shim system install-library ./libkeepalive_shim.so   # replace it safely")]
pub struct Args {
    #[command(subcommand)]
    command: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Add the library to /etc/ld.so.preload, after proving that it loads.
    ///
    /// The path, with every link followed, is written on a line of its own at the top of the
    /// file; the rest of the file is kept byte for byte, and nothing is written when the line is
    /// already there. Refused (nothing written) when the path is not absolute or has a character
    /// the loader splits or reads specially (space, tab, newline, ':', '#', '$'), when root does
    /// not alone control the file and every folder above it, when the configuration (the
    /// environment and /etc/keepalive-shim.conf) has a problem, or when `true`, started as
    /// nobody with LD_PRELOAD set to that path, fails or does not run the library's constructor.
    Enable(EnableArgs),
    /// Remove from /etc/ld.so.preload what `enable` added.
    ///
    /// Removes the lines `enable` added, byte for byte, and nothing else; with --all (or when
    /// `enable` recorded nothing), every line naming one file called libkeepalive_shim.so and
    /// nothing else, whatever its folder. The file is removed when it ends up empty and `enable`
    /// created it. Exit 1 when a line naming it among other entries remains.
    Disable(DisableArgs),
    /// Say whether the library is on, and whether the file named there loads.
    ///
    /// Which line of which file names it, and the probe's verdict for each. Exit 0: on and loads; 1: on and does not load; 3: off.
    Status(RootArg),
    /// Replace /usr/lib/keepalive-shim/libkeepalive_shim.so with FILE, after proving it loads.
    ///
    /// A copy of FILE is made beside the installed library, probed as `enable` probes, and
    /// renamed over it: programs running with the old one keep it (copying over a library that
    /// programs have mapped kills them with SIGBUS), and one that does not load is refused
    /// before any program loads it. The packages' post-install script runs it.
    InstallLibrary(InstallArgs),
}

#[derive(clap::Args)]
struct EnableArgs {
    /// The library to preload [default: KEEPALIVE_SHIM_LIBRARY, else the library next to this
    /// executable (., ../lib/keepalive-shim/, ../lib/), else /usr/lib/keepalive-shim/; with
    /// --root, DIR/usr/lib/keepalive-shim/].
    #[arg(long, value_name = "PATH")]
    library: Option<PathBuf>,
    #[command(flatten)]
    root: RootArg,
}

#[derive(clap::Args)]
struct DisableArgs {
    /// Remove every line naming libkeepalive_shim.so alone, not only those `enable` added.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    root: RootArg,
}

#[derive(clap::Args)]
struct InstallArgs {
    /// The new library (a regular file that only root can change).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    root: RootArg,
}

#[derive(clap::Args)]
struct RootArg {
    /// Work on the tree DIR as if it were /: DIR/etc/ld.so.preload, every link resolved inside
    /// DIR; the probe runs chrooted into DIR, as nobody.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    let (verb, dir) = match &args.command {
        Action::Enable(a) => ("enable", &a.root.root),
        Action::Disable(a) => ("disable", &a.root.root),
        Action::Status(a) => ("status", &a.root),
        Action::InstallLibrary(a) => ("install-library", &a.root.root),
    };
    let root = match Root::open(dir.as_deref()) {
        Ok(root) => root,
        Err(e) => return fail(format_args!("system {verb}: {e}")),
    };
    match args.command {
        Action::Enable(args) => enable(&root, args.library.as_deref()),
        Action::Disable(args) => disable(&root, args.all),
        Action::Status(_) => status(&root),
        Action::InstallLibrary(args) => install_library(&root, &args.file),
    }
}

// ---- the machine (or the tree under --root) ----

/// The tree the command works on: `/`, or `--root DIR`.
struct Root {
    tree: Tree,
    /// `--root` was given.
    given: bool,
}

impl Root {
    fn open(dir: Option<&Path>) -> Result<Root, String> {
        let path = dir.unwrap_or(Path::new("/"));
        let tree = Tree::open(path).map_err(|e| format!("--root {}: {e}", path.display()))?;
        Ok(Root {
            tree,
            given: dir.is_some(),
        })
    }

    /// How a path inside the tree is shown: `/etc/ld.so.preload`, or `DIR/etc/ld.so.preload`.
    fn show(&self, path: impl AsRef<Path>) -> String {
        self.tree.show(path).display().to_string()
    }

    /// The tree's `/etc`.
    fn etc(&self) -> io::Result<Dir> {
        self.tree.dir(Path::new("/etc"))
    }

    /// The state folder, when there is one.
    fn state(&self) -> io::Result<Option<Dir>> {
        match self.tree.dir(Path::new(STATE_DIR)) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The file name of `/etc/ld.so.preload` in `/etc`.
fn preload_name() -> &'static OsStr {
    Path::new(PRELOAD).file_name().expect("a file name")
}

/// The library `enable` writes when no `--library` is given.
fn default_library(root: &Root) -> Result<PathBuf, String> {
    if root.given {
        Ok(PathBuf::from(library::INSTALLED))
    } else {
        library::find()
    }
}

/// `path` as the loader will open it: every link followed inside the tree, and the file and
/// each folder on the resolved path (the tree's top included) root's and writable by no one
/// else, checked through descriptors opened without following anything. The library runs in
/// every program, setuid ones included: whoever could change any of them could put code there.
fn checked_library(root: &Root, path: &Path) -> Result<PathBuf, String> {
    let resolved = root
        .tree
        .resolve(path)
        .map_err(|e| format!("{}: {e}", root.show(path)))?;
    let chain = root
        .tree
        .chain(&resolved)
        .map_err(|e| format!("{}: {e}", root.show(&resolved)))?;
    let via = if resolved == path {
        String::new()
    } else {
        format!(" ({} resolves to {})", path.display(), resolved.display())
    };
    if let Some((shown, st)) = chain.last()
        && !st.is_file()
    {
        return Err(format!("{} is not a regular file{via}", shown.display()));
    }
    for (shown, st) in chain.iter().rev() {
        root_only(shown, st, &via)?;
    }
    Ok(resolved)
}

/// Whether `st` is root's and writable by no one else.
fn root_only(shown: &Path, st: &Stat, via: &str) -> Result<(), String> {
    if st.uid != 0 {
        return Err(format!(
            "{} is owned by uid {}, not root: whoever owns it could put code into every \
             program, setuid ones included{via}",
            shown.display(),
            st.uid
        ));
    }
    if st.perms() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:04o}): they could put code into every \
             program, setuid ones included{via}",
            shown.display(),
            st.perms()
        ));
    }
    Ok(())
}

/// The tree's `/etc/keepalive-shim.conf` as the library would find it, read inside the tree
/// (never following a link, bounded, judged by the library's own rules).
fn system_file_in(root: &Root) -> config::SystemFile {
    use config::SystemFile;
    let conf = Path::new(config::SYSTEM_FILE);
    let name = conf.file_name().expect("a file name");
    let etc = match root.etc() {
        Ok(etc) => etc,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return SystemFile::Absent,
        Err(e) => return SystemFile::Ignored(format!("its folder cannot be opened ({e})")),
    };
    let st = match etc.stat(name) {
        Ok(None) => return SystemFile::Absent,
        Ok(Some(st)) => st,
        Err(e) => return SystemFile::Ignored(format!("it cannot be opened ({e})")),
    };
    if st.is_symlink() {
        return SystemFile::Ignored("it is a symbolic link (not followed)".to_owned());
    }
    let size = i64::try_from(st.size).unwrap_or(i64::MAX);
    if let Err(reason) = config::judge_file(st.mode, st.uid, size) {
        return SystemFile::Ignored(reason);
    }
    match etc.read(name, config::FILE_MAX) {
        Ok(Some(text)) => SystemFile::Text(text),
        Ok(None) => SystemFile::Absent,
        Err(e) => SystemFile::Ignored(format!("it cannot be read ({e})")),
    }
}

/// The configuration every program would read: this environment and the tree's system file.
fn configuration_problems(root: &Root) -> Vec<String> {
    let loaded = if root.given {
        let vars: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        config::load_system(&system_file_in(root), vars, false)
    } else {
        config::from_process()
    };
    loaded.problems.iter().map(ToString::to_string).collect()
}

/// Starts `true` (the tree's, chrooted into the tree with `--root`) as `nobody`, confined (see
/// the module's notes), with `LD_PRELOAD` set to exactly `library` and the loader's
/// `LD_DEBUG=files` report: `Ok` (with notes on other entries of `/etc/ld.so.preload` that the
/// loader could not preload) when it exits 0 and the loader called the library's constructor,
/// with no loader error of ours.
fn probe(root: &Root, library: &[u8]) -> Result<Vec<String>, String> {
    let program = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| {
            root.tree
                .open_in(Path::new(p), libc::O_PATH)
                .ok()
                .and_then(|fd| keepalive_shim_sys::fs::fstat(std::os::fd::AsFd::as_fd(&fd)).ok())
                .is_some_and(|st| st.is_file())
        })
        .ok_or_else(|| format!("no {} to probe with", root.show("/bin/true")))?;
    // SAFETY: geteuid has no preconditions.
    let am_root = unsafe { libc::geteuid() } == 0;
    if root.given && !am_root {
        return Err(format!(
            "probing inside {} needs root (it runs chrooted)",
            root.show("/")
        ));
    }
    let path = CString::new(program).expect("no NUL");
    let preload = CString::new([b"LD_PRELOAD=", library].concat())
        .map_err(|_| "the library path has a NUL byte".to_owned())?;
    let args = [path.as_c_str()];
    let env = [
        c"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        preload.as_c_str(),
        c"LD_DEBUG=files",
    ];
    let ended = sandbox::run(&Confined {
        program: &path,
        args: &args,
        env: &env,
        chroot: root.given.then(|| root.tree.fd()),
        user: am_root.then_some(PROBE_USER),
        // In a tree of someone else's, never as root; on this machine's own `true`, as nobody
        // where this user namespace has one, else as ourselves.
        must_drop: root.given,
        timeout: PROBE_TIMEOUT,
        stderr_cap: PROBE_REPORT_MAX,
        memory: PROBE_MEMORY,
        isolate: true,
    })
    .map_err(|e| format!("cannot start {program}: {e}"))?;
    if ended.timed_out {
        return Err(format!(
            "{program} with it preloaded did not end within {} s",
            PROBE_TIMEOUT.as_secs()
        ));
    }
    judge_probe(program, library, ended.code, ended.signal, &ended.stderr)
}

/// One loader error: `ERROR: ld.so: object 'NAME' from SOURCE cannot be preloaded (WHY):
/// ignored.`, as (NAME, SOURCE, WHY).
fn loader_error(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    const HEAD: &[u8] = b"ERROR: ld.so: object '";
    const MID: &[u8] = b" cannot be preloaded";
    let at = line.windows(HEAD.len()).position(|w| w == HEAD)?;
    let rest = &line[at + HEAD.len()..];
    let mid = rest.windows(MID.len()).rposition(|w| w == MID)?;
    let (named, tail) = (&rest[..mid], &rest[mid + MID.len()..]);
    let from = named.windows(7).rposition(|w| w == b"' from ")?;
    let (name, source) = (&named[..from], &named[from + 7..]);
    let why = tail
        .strip_prefix(b" (")
        .and_then(|t| t.iter().rposition(|&b| b == b')').map(|end| &t[..end]))
        .unwrap_or(b"");
    Some((name, source, why))
}

/// A name or message from the loader (or a hostile tree), shown with its odd characters
/// escaped: a carriage return as `\r`, a byte-order mark as `\u{feff}`, escapes harmless.
fn escaped(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// What is likely wrong with another entry the loader could not preload.
fn entry_hint(name: &[u8]) -> String {
    let mut why = Vec::new();
    if name.starts_with("\u{feff}".as_bytes()) {
        why.push("it starts with a byte-order mark");
    }
    if name.ends_with(b"\r") {
        why.push("it ends with a carriage return: the file has Windows line ends");
    }
    if why.is_empty() {
        return String::new();
    }
    format!(
        " ({}; the loader reads that as part of the name)",
        why.join(", and ")
    )
}

/// The probe's verdict from how it ended and the loader's report on stderr: `Ok` with notes on
/// other entries the loader could not preload (each is that entry's error: every program prints
/// it already), or why ours does not load.
fn judge_probe(
    program: &str,
    library: &[u8],
    code: Option<i32>,
    signal: Option<i32>,
    report: &[u8],
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let mut ours = None;
    let mut other = Vec::new();
    for line in report.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if let Some((name, source, why)) = loader_error(line) {
            if name == library {
                ours = Some(escaped(why));
            } else {
                notes.push(format!(
                    "{} names '{}', which the loader cannot preload ({}){}: every program \
                     started prints this error, with or without keepalive-shim; fix or remove \
                     that entry",
                    escaped(source),
                    escaped(name),
                    escaped(why),
                    entry_hint(name)
                ));
            }
            continue;
        }
        // The loader's own lines are "PID:\tmessage"; anything else is the program's or an error.
        let text = String::from_utf8_lossy(line);
        let loaders = text
            .trim_start()
            .split_once(':')
            .is_some_and(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if !loaders && other.len() < 8 {
            other.push(escaped(line));
        }
    }
    let what = || {
        if other.is_empty() {
            String::new()
        } else {
            format!(": {}", other.join(" / "))
        }
    };
    if let Some(why) = ours {
        return Err(format!("the loader could not preload it ({why}){}", what()));
    }
    let init = [b"calling init: ".as_slice(), library].concat();
    let constructed = report
        .split(|&b| b == b'\n')
        .any(|l| l.trim_ascii_end().ends_with(&init));
    if code != Some(0) {
        let how = match (code, signal) {
            (Some(c), _) => format!("status {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "an unknown status".to_owned(),
        };
        let after = if constructed {
            " (after its constructor ran)"
        } else {
            ""
        };
        return Err(format!(
            "{program} with it preloaded ended with {how}{after}{}",
            what()
        ));
    }
    if !constructed {
        return Err(format!(
            "the loader did not run its constructor in {program}{}",
            what()
        ));
    }
    Ok(notes)
}

/// The paths `enable` recorded: `None` when it recorded nothing (it never ran here).
fn recorded(state: Option<&Dir>) -> io::Result<Option<Vec<Vec<u8>>>> {
    let Some(state) = state else { return Ok(None) };
    Ok(state.read(ADDED, TEXT_MAX)?.map(|text| {
        text.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }))
}

/// Forgets what `enable` recorded, and the state folder once empty.
fn unmark(root: &Root, state: Option<&Dir>) -> io::Result<()> {
    let Some(state) = state else { return Ok(()) };
    state.remove(CREATED)?;
    state.remove(ADDED)?;
    let parent = Path::new(STATE_DIR).parent().expect("a parent");
    let name = Path::new(STATE_DIR).file_name().expect("a name");
    root.tree.dir(parent)?.remove_dir(name)?;
    Ok(())
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    say!("{message}");
    ExitCode::FAILURE
}

// ---- the commands ----

fn enable(root: &Root, library: Option<&Path>) -> ExitCode {
    let given = match library {
        Some(path) => path.to_path_buf(),
        None => match default_library(root) {
            Ok(path) => path,
            Err(e) => return fail(format_args!("system enable: {e}; nothing written")),
        },
    };
    if let Some(why) = unfit(given.as_os_str().as_bytes()) {
        return fail(format_args!("system enable: {why}; nothing written"));
    }
    let resolved = match checked_library(root, &given) {
        Ok(path) => path,
        Err(why) => return fail(format_args!("system enable: {why}; nothing written")),
    };
    let bytes = resolved.as_os_str().as_bytes();
    if let Some(why) = unfit(bytes) {
        return fail(format_args!(
            "system enable: {} resolves to {}: {why}; nothing written",
            given.display(),
            resolved.display()
        ));
    }
    let problems = configuration_problems(root);
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
    match probe(root, bytes) {
        Ok(notes) => {
            for note in notes {
                say!("system enable: note: {note}");
            }
        }
        Err(why) => {
            return fail(format_args!(
                "system enable: {} does not load: {why}; nothing written",
                root.show(&resolved)
            ));
        }
    }

    let path = root.show(PRELOAD);
    let etc = match root.etc().and_then(|etc| etc.lock().map(|()| etc)) {
        Ok(etc) => etc,
        Err(e) => return fail(format_args!("system enable: {}: {e}", root.show("/etc"))),
    };
    let old = match etc.read(preload_name(), TEXT_MAX) {
        Ok(old) => old,
        Err(e) => return fail(format_args!("system enable: {path}: {e}; nothing written")),
    };
    let state = match root.tree.make_dirs(Path::new(STATE_DIR), 0o755) {
        Ok(state) => state,
        Err(e) => {
            return fail(format_args!(
                "system enable: {}: {e}; nothing written",
                root.show(STATE_DIR)
            ));
        }
    };
    let before = match state.read(ADDED, TEXT_MAX) {
        Ok(before) => before,
        Err(e) => {
            return fail(format_args!(
                "system enable: {}/{ADDED}: {e}; nothing written",
                root.show(STATE_DIR)
            ));
        }
    };
    let Some(text) = add(old.as_deref().unwrap_or_default(), bytes) else {
        // Already named (by hand, or by an earlier enable): `disable` must leave such a line
        // as it found it, so an empty record says that this enable added nothing.
        if before.is_none()
            && let Err(e) = state.write(ADDED, b"", 0o644, None)
        {
            say!("system enable: {}/{ADDED}: {e}", root.show(STATE_DIR));
        }
        out(format_args!(
            "keepalive-shim is already on: {path} names {} (it loads)",
            resolved.display()
        ));
        return ExitCode::SUCCESS;
    };
    let record = [before.as_deref().unwrap_or_default(), bytes, b"\n"].concat();
    let marked = (|| {
        if old.is_none() {
            state.write(
                CREATED,
                format!(
                    "{PRELOAD} was created by `keepalive-shim system enable`; `system disable` \
                     removes it when it holds nothing else.\n"
                )
                .as_bytes(),
                0o644,
                None,
            )?;
        }
        state.write(ADDED, &record, 0o644, None)
    })();
    let written = marked.and_then(|()| etc.replace(preload_name(), &text));
    if let Err(e) = written {
        // Put the record back as it was.
        let _ = match &before {
            Some(before) => state.write(ADDED, before, 0o644, None),
            None => state.remove(ADDED).map(|_| ()),
        };
        if old.is_none() {
            let _ = state.remove(CREATED);
        }
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (run as root)"
        } else {
            ""
        };
        return fail(format_args!(
            "system enable: cannot write {path}: {e}{hint}"
        ));
    }
    let via = if resolved == given {
        String::new()
    } else {
        format!(" (the file {} resolves to)", given.display())
    };
    out(format_args!(
        "keepalive-shim is on: {path} names {}{via}; programs started from now on load it \
         (running ones are unchanged); `keepalive-shim system disable` switches it off",
        resolved.display()
    ));
    ExitCode::SUCCESS
}

fn disable(root: &Root, all: bool) -> ExitCode {
    let path = root.show(PRELOAD);
    let etc = match root.etc() {
        Ok(etc) => etc,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            out(format_args!("keepalive-shim is off: there is no {path}"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(format_args!("system disable: {}: {e}", root.show("/etc"))),
    };
    if let Err(e) = etc.lock() {
        return fail(format_args!("system disable: {}: {e}", root.show("/etc")));
    }
    let state = match root.state() {
        Ok(state) => state,
        Err(e) => {
            return fail(format_args!(
                "system disable: {}: {e}",
                root.show(STATE_DIR)
            ));
        }
    };
    let old = match etc.read(preload_name(), TEXT_MAX) {
        Ok(Some(old)) => old,
        Ok(None) => {
            let _ = unmark(root, state.as_ref());
            out(format_args!("keepalive-shim is off: there is no {path}"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(format_args!("system disable: {path}: {e}")),
    };
    // With --all the record does not matter (nor can a bad one stop the removal).
    let record = if all {
        None
    } else {
        match recorded(state.as_ref()) {
            Ok(record) => record,
            Err(e) => {
                return fail(format_args!(
                    "system disable: {}/{ADDED}: {e}",
                    root.show(STATE_DIR)
                ));
            }
        }
    };
    let removed = remove(&old, record.as_deref());
    let created = state
        .as_ref()
        .is_some_and(|s| s.stat(CREATED).ok().flatten().is_some());
    let write = if removed.paths.is_empty() {
        Ok(())
    } else if removed.text.is_empty() && created {
        etc.remove(preload_name()).map(|_| ())
    } else {
        etc.replace(preload_name(), &removed.text)
    };
    if let Err(e) = write {
        return fail(format_args!("system disable: cannot write {path}: {e}"));
    }
    // Without a record every line of ours went: a line kept names the library among others.
    if record.is_none() && !removed.kept.is_empty() {
        for line in &removed.kept {
            say!(
                "system disable: {path} line {line} names {LIBRARY} among other entries: left as \
                 it is; edit that line by hand"
            );
        }
        return ExitCode::FAILURE;
    }
    if let Err(e) = unmark(root, state.as_ref()) {
        say!("system disable: {}: {e}", root.show(STATE_DIR));
    }
    let kept = if removed.kept.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = removed.kept.iter().map(ToString::to_string).collect();
        format!(
            "; {LIBRARY} stays named on line {} of {path}, which `system enable` did not add \
             (`system disable --all` removes it too)",
            lines.join(", ")
        )
    };
    if removed.paths.is_empty() {
        let state = if removed.kept.is_empty() {
            "off"
        } else {
            "left on"
        };
        out(format_args!(
            "keepalive-shim is {state}: nothing of `system enable`'s to remove from {path}; \
             nothing changed{kept}"
        ));
    } else {
        let paths: Vec<String> = removed.paths.iter().map(|p| escaped(p)).collect();
        let what = if removed.text.is_empty() && created {
            "removed it (it held nothing else, and `system enable` had created it)".to_owned()
        } else {
            "kept every other line".to_owned()
        };
        out(format_args!(
            "keepalive-shim is off: removed {} from {path}; {what}; programs started from now on \
             do not load it{kept}",
            paths.join(", ")
        ));
    }
    ExitCode::SUCCESS
}

fn status(root: &Root) -> ExitCode {
    let path = root.show(PRELOAD);
    let old = match root
        .etc()
        .and_then(|etc| etc.read(preload_name(), TEXT_MAX))
    {
        Ok(Some(old)) => old,
        Ok(None) => {
            out(format_args!("off: there is no {path}"));
            return ExitCode::from(EXIT_OFF);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            out(format_args!("off: there is no {path}"));
            return ExitCode::from(EXIT_OFF);
        }
        Err(e) => return fail(format_args!("system status: {path}: {e}")),
    };
    let named = named(&old);
    if named.is_empty() {
        out(format_args!("off: {path} does not name {LIBRARY}"));
        return ExitCode::from(EXIT_OFF);
    }
    let mut all_load = true;
    let mut text = String::from("on:");
    let mut notes = Vec::new();
    for (line, library) in &named {
        let verdict = match probe(root, library) {
            Ok(found) => {
                for note in found {
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
                "loads".to_owned()
            }
            Err(why) => {
                all_load = false;
                format!("does NOT load: {why}")
            }
        };
        text.push_str(&format!(
            "\n  {path} line {line}: {} {verdict}",
            escaped(library)
        ));
    }
    for note in notes {
        text.push_str(&format!("\n  note: {note}"));
    }
    text.push('\n');
    keepalive_shim_sys::output::write_all(1, text.as_bytes());
    if all_load {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn install_library(root: &Root, file: &Path) -> ExitCode {
    let target = Path::new(library::INSTALLED);
    let shown_target = root.show(target);
    let refuse = |why: String| {
        fail(format_args!(
            "system install-library: {why}; {shown_target} is unchanged"
        ))
    };
    // The source is read by root and becomes what every program loads: only root may change it.
    let source = if file.is_absolute() {
        match checked_library(root, file) {
            Ok(path) => path,
            Err(why) => return refuse(why),
        }
    } else {
        return refuse(format!("{} is not an absolute path", file.display()));
    };
    let bytes = match root
        .tree
        .open_in(
            &source,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        )
        .and_then(|fd| {
            let mut out = Vec::new();
            io::Read::read_to_end(
                &mut io::Read::take(std::fs::File::from(fd), LIBRARY_MAX as u64 + 1),
                &mut out,
            )
            .map(|_| out)
        }) {
        Ok(bytes) if bytes.len() > LIBRARY_MAX => {
            return refuse(format!(
                "{} is larger than {LIBRARY_MAX} bytes",
                root.show(&source)
            ));
        }
        Ok(bytes) if !bytes.starts_with(b"\x7fELF") => {
            return refuse(format!("{} is not an ELF file", root.show(&source)));
        }
        Ok(bytes) => bytes,
        Err(e) => return refuse(format!("{}: {e}", root.show(&source))),
    };
    let folder = target.parent().expect("a folder");
    let name = target.file_name().expect("a name");
    let dir = match root.tree.make_dirs(folder, 0o755) {
        Ok(dir) => dir,
        Err(e) => return refuse(format!("{}: {e}", root.show(folder))),
    };
    let resolved = match root.tree.resolve(folder) {
        Ok(path) => path,
        Err(e) => return refuse(format!("{}: {e}", root.show(folder))),
    };
    if let Err(why) = root
        .tree
        .chain(&resolved)
        .map_err(|e| format!("{}: {e}", root.show(&resolved)))
        .and_then(|chain| {
            chain
                .iter()
                .try_for_each(|(shown, st)| root_only(shown, st, ""))
        })
    {
        return refuse(why);
    }
    // The copy gets a name of its own beside the target: what is probed is the very file that
    // is then renamed into place.
    let staging = format!(".{LIBRARY}.new-{}", std::process::id());
    if let Err(e) = dir.write(&staging, &bytes, 0o644, Some((0, 0))) {
        return refuse(format!(
            "cannot write {}/{staging}: {e}",
            root.show(&resolved)
        ));
    }
    let staged = resolved.join(&staging);
    let verdict = probe(root, staged.as_os_str().as_bytes());
    let notes = match verdict {
        Ok(notes) => notes,
        Err(why) => {
            let _ = dir.remove(&staging);
            return refuse(format!(
                "{} does not load: {why}; nothing was replaced",
                root.show(&source)
            ));
        }
    };
    for note in notes {
        say!("system install-library: note: {note}");
    }
    let same = dir
        .read(name, LIBRARY_MAX)
        .ok()
        .flatten()
        .is_some_and(|old| old == bytes);
    let done = if same {
        dir.remove(&staging).map(|_| ())
    } else {
        dir.rename(&staging, name)
    };
    if let Err(e) = done {
        let _ = dir.remove(&staging);
        return refuse(format!("cannot rename into {shown_target}: {e}"));
    }
    if same {
        out(format_args!(
            "{shown_target} already holds {}, byte for byte (it loads); nothing replaced",
            root.show(&source)
        ));
        return ExitCode::SUCCESS;
    }
    let on = root
        .etc()
        .and_then(|etc| etc.read(preload_name(), TEXT_MAX))
        .ok()
        .flatten()
        .is_some_and(|text| {
            named(&text)
                .iter()
                .any(|(_, p)| p == target.as_os_str().as_bytes())
        });
    let effect = if on {
        "programs started from now on load it (/etc/ld.so.preload names it); running ones keep \
         the file they loaded"
    } else {
        "running programs keep the file they loaded"
    };
    out(format_args!(
        "installed {} as {shown_target} (it loads); {effect}",
        root.show(&source)
    ));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &[u8] = b"/usr/lib/keepalive-shim/libkeepalive_shim.so";

    #[test]
    fn the_probe_needs_exit_0_and_the_constructor() {
        let init = b"      12:\tcalling init: /usr/lib/keepalive-shim/libkeepalive_shim.so\n";
        assert_eq!(
            judge_probe("/bin/true", LIB, Some(0), None, init),
            Ok(vec![])
        );
        let why = judge_probe(
            "/bin/true",
            LIB,
            Some(78),
            None,
            b"KEEPALIVE_STRICT is on\n",
        )
        .unwrap_err();
        assert!(
            why.contains("status 78") && why.contains("KEEPALIVE_STRICT"),
            "{why}"
        );
        let error = b"ERROR: ld.so: object '/usr/lib/keepalive-shim/libkeepalive_shim.so' from \
            LD_PRELOAD cannot be preloaded (invalid ELF header): ignored.\n";
        let why = judge_probe("/bin/true", LIB, Some(0), None, error).unwrap_err();
        assert!(
            why.contains("could not preload it (invalid ELF header)"),
            "{why}"
        );
        let why = judge_probe(
            "/bin/true",
            LIB,
            Some(0),
            None,
            b"      12:\tcalling init: /lib/libc.so.6\n",
        )
        .unwrap_err();
        assert!(why.contains("constructor"), "{why}");
        let why = judge_probe("/bin/true", LIB, None, Some(7), init).unwrap_err();
        assert!(
            why.contains("signal 7 (after its constructor ran)"),
            "{why}"
        );
    }

    #[test]
    fn another_entrys_loader_error_is_that_entrys() {
        let report = [
            &b"ERROR: ld.so: object '/lib/x.so\r' from /etc/ld.so.preload cannot be preloaded \
               (cannot open shared object file): ignored.\n"[..],
            "ERROR: ld.so: object '\u{feff}/lib/y.so' from /etc/ld.so.preload cannot be \
             preloaded (cannot open shared object file): ignored.\n"
                .as_bytes(),
            b"ERROR: ld.so: object '/opt/gone.so' from /etc/ld.so.preload cannot be preloaded \
              (cannot open shared object file): ignored.\n",
            b"      12:\tcalling init: /usr/lib/keepalive-shim/libkeepalive_shim.so\n",
        ]
        .concat();
        let notes = judge_probe("/bin/true", LIB, Some(0), None, &report).unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes[0].contains("'/lib/x.so\\r'") && notes[0].contains("Windows line ends"),
            "{}",
            notes[0]
        );
        assert!(
            notes[1].contains("'\\u{feff}/lib/y.so'") && notes[1].contains("byte-order mark"),
            "{}",
            notes[1]
        );
        assert!(
            notes[2].contains("'/opt/gone.so'") && notes[2].contains("cannot open shared object"),
            "{}",
            notes[2]
        );
        // Ours failing as well is still ours.
        let ours = [
            &report[..],
            b"ERROR: ld.so: object '/usr/lib/keepalive-shim/libkeepalive_shim.so' from \
              LD_PRELOAD cannot be preloaded (wrong ELF class: ELFCLASS32): ignored.\n",
        ]
        .concat();
        let why = judge_probe("/bin/true", LIB, Some(0), None, &ours).unwrap_err();
        assert!(why.contains("wrong ELF class"), "{why}");
    }

    #[test]
    fn odd_output_is_escaped() {
        let why =
            judge_probe("/bin/true", LIB, Some(1), None, b"\x1b[31mred\x1b[0m\n").unwrap_err();
        assert!(
            !why.contains('\x1b') && why.contains("\\u{1b}[31mred"),
            "{why}"
        );
    }
}
