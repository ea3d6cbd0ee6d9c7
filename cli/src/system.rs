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

use crate::library;
use crate::preload_file::{PRELOAD, add, named, remove, unfit};
use keepalive_shim_policy::config;
use keepalive_shim_policy::preload::LIBRARY_NAME as LIBRARY;
use keepalive_shim_sys::fs::{lock, read_if_present, remove_synced, replace};
use keepalive_shim_sys::say;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

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
    match &root.dir {
        None => library::find(),
        Some(dir) => library::find_in(dir),
    }
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
        keepalive_shim_sys::output::out(format_args!(
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
    keepalive_shim_sys::output::out(format_args!(
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
            keepalive_shim_sys::output::out(format_args!(
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
        keepalive_shim_sys::output::out(format_args!(
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
        keepalive_shim_sys::output::out(format_args!(
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
            keepalive_shim_sys::output::out(format_args!("off: there is no {}", path.display()));
            return ExitCode::from(EXIT_OFF);
        }
        Err(e) => return fail(format_args!("system status: {}: {e}", path.display())),
    };
    let named = named(&old);
    if named.is_empty() {
        keepalive_shim_sys::output::out(format_args!(
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
    keepalive_shim_sys::output::write_all(1, out.as_bytes());
    if all_load {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_needs_exit_0_and_the_constructor() {
        let lib: &[u8] = b"/usr/lib/keepalive-shim/libkeepalive_shim.so";
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
