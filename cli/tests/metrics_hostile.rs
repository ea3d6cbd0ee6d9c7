//! `keepalive-shim metrics` and `inspect`, run as root, against what an unprivileged user shows
//! them (issue 22): each attack is made by `nobody` with `tests/programs/hostile.c`, and the real
//! daemon must answer every scrape within a second with its memory under 50 MB, and `inspect`
//! must finish.
//!
//! - a mapped file whose printed name is not its name (a newline prints as `\012`), the printed
//!   name made a FIFO (which would hang a reader) or a link to `/dev/zero` (which would grow it
//!   until the OOM killer came);
//! - a crafted "library" whose symbol names never end (a quadratic lookup costs seconds);
//! - twenty sparse 64 MiB files named like the library, mapped by one process;
//! - one process with 60,000 mappings;
//! - command names with terminal escapes and bytes that are not UTF-8;
//! - 2,000 processes with the library: every one counted, a new one shown, `inspect --all` in
//!   seconds.
//!
//! Needs root (the daemon reads every process; `nobody` makes the attacks): skipped elsewhere,
//! except under CI=true.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::prometheus::{Killed, metrics_endpoint, scrape};
use common::*;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");
const NOBODY: u32 = 65534;
/// Every scrape answers within this, during every attack.
const SCRAPE_BOUND: Duration = Duration::from_secs(1);
/// The daemon's peak resident memory stays under this.
const MEMORY_BOUND_KB: u64 = 50 * 1024;

/// A folder of the attacker's (`nobody`'s) own under /tmp, removed when dropped.
struct Den(PathBuf);

impl Den {
    fn new(name: &str) -> Den {
        let dir = std::env::temp_dir().join(format!("kas-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Den(dir)
    }

    fn path(&self, name: &[u8]) -> PathBuf {
        self.0.join(OsStr::from_bytes(name))
    }
}

impl Drop for Den {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Root and the tools: or why not.
fn ready() -> Option<()> {
    if !is_root() {
        return unavailable(
            "the hostile-process tests need root (a daemon that reads every process)",
        );
    }
    if !have("setpriv", "util-linux") {
        return None;
    }
    Some(())
}

/// `cmd` started with its stdout piped, once it printed "ready".
fn started_ready(cmd: &mut Command) -> Killed {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n", "{cmd:?} did not get ready");
    Killed(child)
}

/// `hostile ARGS…` as `nobody`, started and ready (it printed "ready").
fn attacker(args: &[&OsStr], preload: Option<&Path>) -> Killed {
    let hostile = build_c("hostile.c", &["-O2"]);
    let mut cmd = Command::new(hostile);
    cmd.args(args)
        .env_remove("LD_PRELOAD")
        .stderr(Stdio::inherit());
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    started_ready(as_nobody(&mut cmd))
}

/// The library, where `nobody` can read it: copied once, whole, before any test preloads it
/// (tests run in parallel).
fn library_for_nobody() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let copy = std::env::temp_dir().join(format!("kas-hostile-{}-lib", std::process::id()));
        std::fs::create_dir_all(&copy).unwrap();
        let lib = copy.join("libkeepalive_shim.so");
        std::fs::copy(library(), &lib).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
        lib
    })
    .clone()
}

/// `keepalive-shim metrics` as root on a free loopback port.
struct Daemon {
    child: Killed,
    addr: String,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let (child, addr) = metrics_endpoint(CLI, args);
        Daemon { child, addr }
    }

    /// One scrape: how long it took and the text.
    fn scrape(&self) -> (Duration, String) {
        let t0 = Instant::now();
        let text = scrape(&self.addr);
        (t0.elapsed(), text)
    }

    /// Three scrapes, each within the bound; the last one's text.
    fn scrapes_within_bound(&self, what: &str) -> String {
        let mut last = String::new();
        let mut worst = Duration::ZERO;
        for _ in 0..3 {
            let (took, text) = self.scrape();
            worst = worst.max(took);
            assert!(
                took < SCRAPE_BOUND,
                "{what}: a scrape took {took:?}\n{text}"
            );
            assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text}");
            last = text;
        }
        let peak = self.peak_kb();
        assert!(
            peak < MEMORY_BOUND_KB,
            "{what}: the daemon's peak memory is {peak} kB"
        );
        eprintln!(
            "{what}: scrapes within {SCRAPE_BOUND:?} (the slowest {worst:.2?}), peak memory {peak} kB"
        );
        last
    }

    /// The daemon's peak resident memory (VmHWM), in kB.
    fn peak_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
}

/// `keepalive-shim ARGS` as root, which must end within `bound`: its output.
fn finishes(args: &[&str], bound: Duration) -> (Duration, std::process::Output) {
    let t0 = Instant::now();
    let mut child = Command::new(CLI)
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = out.read_to_end(&mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stdout = reader.join().unwrap();
            let mut stderr = Vec::new();
            let _ = child.stderr.take().unwrap().read_to_end(&mut stderr);
            return (
                t0.elapsed(),
                std::process::Output {
                    status,
                    stdout,
                    stderr,
                },
            );
        }
        if t0.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keepalive-shim {args:?} did not end within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_printed_name_that_is_a_fifo_or_dev_zero_is_never_opened() {
    let Some(()) = ready() else { return };
    let den = Den::new("names");
    // The files mapped: names with a newline, which maps prints as `\012`.
    let fifo_victim = den.path(b"x\nlibkeepalive_shim.so");
    let zero_victim = den.path(b"z\nlibkeepalive_shim.so");
    for file in [&fifo_victim, &zero_victim] {
        std::fs::write(file, vec![0x55u8; 4096]).unwrap();
    }
    // The printed names, made a FIFO and a link to /dev/zero.
    let fifo = den.path(b"x\\012libkeepalive_shim.so");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    std::os::unix::fs::symlink("/dev/zero", den.path(b"z\\012libkeepalive_shim.so")).unwrap();
    let _attacker = attacker(
        &[
            OsStr::new("map"),
            fifo_victim.as_os_str(),
            zero_victim.as_os_str(),
        ],
        None,
    );
    let daemon = Daemon::start(&[]);
    let text = daemon.scrapes_within_bound("printed names made a FIFO and /dev/zero");
    assert!(text.contains("keepalive_shim_processes_not_shown{reason=\"no_counters\"}"));
    let pid = _attacker.0.id().to_string();
    let (took, out) = finishes(&["inspect", &pid], Duration::from_secs(10));
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = common::text(&out.stdout);
    assert!(
        shown.contains("not the regular file") || shown.contains("not a 64-bit ELF"),
        "{shown}"
    );
    let (all, out) = finishes(&["inspect", "--all"], Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("inspect PID: {took:?}; inspect --all: {all:?}");
}

/// A 64-bit ELF file with one loadable segment at 0, a `.dynsym` of `symbols` (name offset,
/// value, size; all defined) and the `.dynstr` `strings`, at least `size` bytes long.
fn elf(strings: &[u8], symbols: &[(u32, u64, u64)], size: usize) -> Vec<u8> {
    let shnum = 4u16; // null, .dynsym, .dynstr, .shstrtab
    let shstr = b"\0.dynsym\0.dynstr\0.shstrtab\0";
    let sym_off = 64 + 56; // the ELF header and one program header
    let sym_len = symbols.len() * 24;
    let str_off = sym_off + sym_len;
    let shstr_off = str_off + strings.len();
    let sh_off = shstr_off + shstr.len();
    let end = sh_off + 64 * shnum as usize;
    let mut b = vec![0u8; end.max(size)];
    let put16 =
        |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    put16(&mut b, 0x10, 3); // ET_DYN
    put16(&mut b, 0x12, 62);
    put32(&mut b, 0x14, 1);
    put64(&mut b, 0x20, 64); // phoff
    put64(&mut b, 0x28, sh_off as u64);
    put16(&mut b, 0x34, 64);
    put16(&mut b, 0x36, 56);
    put16(&mut b, 0x38, 1);
    put16(&mut b, 0x3a, 64);
    put16(&mut b, 0x3c, shnum);
    put16(&mut b, 0x3e, 3);
    // PT_LOAD at 0.
    put32(&mut b, 64, 1);
    put64(&mut b, 64 + 0x20, size as u64);
    put64(&mut b, 64 + 0x28, size as u64);
    for (i, &(name, value, len)) in symbols.iter().enumerate() {
        let at = sym_off + i * 24;
        put32(&mut b, at, name);
        put16(&mut b, at + 6, 1); // defined, in section 1
        put64(&mut b, at + 8, value);
        put64(&mut b, at + 16, len);
    }
    b[str_off..str_off + strings.len()].copy_from_slice(strings);
    b[shstr_off..shstr_off + shstr.len()].copy_from_slice(shstr);
    let section = |b: &mut Vec<u8>,
                   i: usize,
                   name: u32,
                   ty: u32,
                   off: usize,
                   len: usize,
                   link: u32,
                   ent: u64| {
        let at = sh_off + i * 64;
        b[at..at + 4].copy_from_slice(&name.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&ty.to_le_bytes());
        b[at + 0x18..at + 0x20].copy_from_slice(&(off as u64).to_le_bytes());
        b[at + 0x20..at + 0x28].copy_from_slice(&(len as u64).to_le_bytes());
        b[at + 0x28..at + 0x2c].copy_from_slice(&link.to_le_bytes());
        b[at + 0x38..at + 0x40].copy_from_slice(&ent.to_le_bytes());
    };
    section(&mut b, 1, 1, 11, sym_off, sym_len, 2, 24);
    section(&mut b, 2, 9, 3, str_off, strings.len(), 0, 0);
    section(&mut b, 3, 17, 3, shstr_off, shstr.len(), 0, 0);
    b
}

/// A 64-bit ELF file of about `size` bytes whose `.dynsym` has as many symbols as fit, every one
/// named by offset 0 of a `.dynstr` that never ends (no NUL): a lookup that scans each name to
/// its NUL reads the whole table once per symbol.
fn crafted_elf(size: usize) -> Vec<u8> {
    let strings = vec![b'k'; size / 4];
    let symbols = vec![(0, 0, 0); (size - size / 4 - 512) / 24];
    elf(&strings, &symbols, size)
}

#[test]
fn a_crafted_library_and_sparse_files_cost_one_bounded_pass() {
    let Some(()) = ready() else { return };
    let den = Den::new("files");
    let crafted = den.path(b"libkeepalive_shim.so");
    std::fs::write(&crafted, crafted_elf(1 << 20)).unwrap();
    let mut args = vec![
        OsStr::new("map").to_owned(),
        crafted.clone().into_os_string(),
    ];
    let _crafted = attacker(
        &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        None,
    );
    // Twenty sparse 64 MiB files named like the library, in one process.
    args.truncate(1);
    for i in 0..20 {
        let sparse = den.path(format!("libkeepalive_shim.so.{i}").as_bytes());
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        args.push(sparse.into_os_string());
    }
    let sparse = attacker(
        &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        None,
    );
    let daemon = Daemon::start(&[]);
    let text = daemon.scrapes_within_bound("a crafted library and 20 sparse 64 MiB files");
    // The copies beyond the few read per process are counted, not read.
    assert!(
        text.contains("keepalive_shim_scrape_skipped{reason=\"copies\"} 16\n"),
        "{text}"
    );
    let (_, out) = finishes(
        &["inspect", &sparse.0.id().to_string()],
        Duration::from_secs(10),
    );
    assert!(
        common::text(&out.stdout).contains("too large to be the library"),
        "{}",
        common::text(&out.stdout)
    );
}

#[test]
fn sixty_thousand_mappings_cost_no_more_memory_than_ten() {
    let Some(()) = ready() else { return };
    // 60,000 mappings of 60,000 different files, every one named like the library; and 60,000
    // anonymous ones in another process.
    let den = Den::new("many");
    let prefix = den.path(b"libkeepalive_shim.so");
    let files = attacker(
        &[OsStr::new("files"), prefix.as_os_str(), OsStr::new("60000")],
        None,
    );
    let _anonymous = attacker(&[OsStr::new("maps"), OsStr::new("60000")], None);
    let daemon = Daemon::start(&[]);
    let text = daemon.scrapes_within_bound("processes with 60,000 mappings");
    assert!(
        text.contains("keepalive_shim_scrape_skipped{reason=\"copies\"} 59996\n"),
        "{text}"
    );
    let (took, out) = finishes(
        &["inspect", &files.0.id().to_string()],
        Duration::from_secs(10),
    );
    assert!(
        common::text(&out.stdout).contains("59996 not read"),
        "{}",
        common::text(&out.stdout)
    );
    eprintln!("inspect of the process with 60,000 library-named files: {took:?}");
}

#[test]
fn names_a_process_gives_itself_are_escaped_and_never_hide_it() {
    let Some(()) = ready() else { return };
    let lib = library_for_nobody();
    let escapes = attacker(
        &[OsStr::new("name"), OsStr::new("\x1b[2J\nforged")],
        Some(&lib),
    );
    let not_utf8 = attacker(
        &[OsStr::new("name"), OsStr::from_bytes(b"bad\xff\xfename")],
        Some(&lib),
    );
    let (_, out) = finishes(
        &["inspect", &escapes.0.id().to_string()],
        Duration::from_secs(10),
    );
    let shown = common::text(&out.stdout);
    assert!(
        !shown.contains('\x1b'),
        "a terminal escape went through: {shown:?}"
    );
    assert!(shown.contains("\\x1b[2J\\x0aforged"), "{shown}");
    let daemon = Daemon::start(&[]);
    let text = daemon.scrapes_within_bound("odd command names");
    let pid = not_utf8.0.id();
    assert!(
        text.contains(&format!(
            "pid=\"{pid}\",command=\"bad\u{fffd}\u{fffd}name\""
        )),
        "a name that is not UTF-8 hid the process:\n{text}"
    );
}

#[test]
fn thousands_of_processes_are_all_counted_and_inspected_in_seconds() {
    let Some(()) = ready() else { return };
    const SLEEPERS: usize = 2000;
    let hostile = build_c("hostile.c", &["-O2"]);
    let mut sleepers = Vec::with_capacity(SLEEPERS);
    for _ in 0..SLEEPERS {
        let child = Command::new(hostile)
            .args(["name", "kas-sleeper"])
            .env("LD_PRELOAD", library())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a sleeper");
        sleepers.push(Killed(child));
    }
    // All loaded: each has its name.
    let t0 = Instant::now();
    while sleepers.iter().any(|s| {
        std::fs::read_to_string(format!("/proc/{}/comm", s.0.id()))
            .ok()
            .as_deref()
            != Some("kas-sleeper\n")
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "sleepers not started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = Daemon::start(&["--max-processes", "500"]);
    let text = daemon.scrapes_within_bound("2,000 processes with the library");
    let aggregated: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("keepalive_shim_processes_aggregated "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(aggregated >= SLEEPERS, "{aggregated} processes aggregated");
    // A process started now is shown: in its command's series.
    let newcomer = Killed(
        Command::new(hostile)
            .args(["name", "kas-newcomer"])
            .env("LD_PRELOAD", library())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Past the endpoint's reuse of a scrape (a second).
    std::thread::sleep(Duration::from_millis(1200));
    let (_, text) = daemon.scrape();
    assert!(
        text.contains("command=\"kas-newcomer\""),
        "the newcomer is not shown"
    );
    drop(newcomer);
    let (took, out) = finishes(&["inspect", "--all"], Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = common::text(&out.stdout);
    assert!(
        shown.matches("(kas-sleeper):").count() >= SLEEPERS,
        "not every process inspected"
    );
    eprintln!("inspect --all over {SLEEPERS} library processes: {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "inspect --all took {took:?}"
    );
}

#[test]
fn idle_and_slow_clients_and_a_flood_cannot_hold_the_endpoint() {
    let Some(()) = ready() else { return };
    let daemon = Daemon::start(&[]);
    // 100 idle connections and 20 clients sending their request a byte a second.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&daemon.addr).unwrap())
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let addr = daemon.addr.clone();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    return;
                };
                for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*byte]).is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    daemon.scrapes_within_bound("100 idle and 20 slow clients");
    // A flood: 8 clients asking as fast as they can for 2 s. Every answer comes from a scrape at
    // most a second old, so the flood costs a few scrapes, not one each: the bodies (which carry
    // each scrape's own duration) are few.
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (addr, bodies, answered) = (
                daemon.addr.clone(),
                std::sync::Arc::clone(&bodies),
                std::sync::Arc::clone(&answered),
            );
            std::thread::spawn(move || {
                while t0.elapsed() < Duration::from_secs(2) {
                    let text = scrape(&addr);
                    if let Some(at) = text.find("keepalive_shim_scrape_duration_seconds ") {
                        bodies.lock().unwrap().insert(text[at..].to_owned());
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for f in flood {
        f.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in slow {
        let _ = s.join();
    }
    drop(idle);
    let (answered, scrapes) = (
        answered.load(std::sync::atomic::Ordering::Relaxed),
        bodies.lock().unwrap().len(),
    );
    eprintln!("flood: {answered} answers in 2 s from {scrapes} scrapes");
    assert!(answered > 50, "the flood was not answered: {answered}");
    assert!(
        scrapes <= 4,
        "{scrapes} scrapes for {answered} requests in 2 s"
    );
}

#[test]
fn a_read_that_never_returns_holds_neither_the_endpoint_nor_inspect() {
    let Some(()) = ready() else { return };
    // The library's counters, says this file, are 0x10000 into its mapping: the page a
    // userfaultfd owns there is never filled, so a read of it waits for ever.
    let den = Den::new("stuck");
    let lib = den.path(b"libkeepalive_shim.so");
    std::fs::write(
        &lib,
        elf(
            b"\0keepalive_shim_counters\0",
            &[(0, 0, 0), (1, 0x10000, 120)],
            4096,
        ),
    )
    .unwrap();
    // Root: userfaultfd for faults in the kernel's own reads needs it here
    // (vm.unprivileged_userfaultfd is 0); a FUSE file gives any user the same where /dev/fuse
    // is open to all.
    let hostile = build_c("hostile.c", &["-O2"]);
    let stuck = started_ready(
        Command::new(hostile)
            .args([OsStr::new("stuck"), lib.as_os_str()])
            .env_remove("LD_PRELOAD"),
    );
    let daemon = Daemon::start(&[]);
    let text = daemon.scrapes_within_bound("a counters' address that never answers");
    assert!(
        text.contains("keepalive_shim_processes_not_shown{reason=\"stuck\"} 1\n"),
        "{text}"
    );
    let pid = stuck.0.id().to_string();
    let (took, out) = finishes(&["inspect", &pid], Duration::from_secs(10));
    assert!(
        common::text(&out.stdout).contains("did not answer within"),
        "{}",
        common::text(&out.stdout)
    );
    let (all, _) = finishes(&["inspect", "--all"], Duration::from_secs(60));
    eprintln!("inspect PID: {took:?}; inspect --all: {all:?}");
}

#[test]
fn a_user_reads_its_own_processes_counters_by_name_and_never_a_fifo() {
    let Some(()) = ready() else { return };
    // A program of nobody's under the library, with a TCP socket counted.
    let lib = library_for_nobody();
    let python = python();
    // setpriv, not as_nobody: the interpreter may live where only root may look (pyenv's
    // under /root), and setpriv's exec still reaches it.
    let own = started_ready(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(python)
            .args([
                "-c",
                "import socket,sys,time; s=socket.socket(); print('ready', flush=True); \
                 time.sleep(60)",
            ])
            .env("LD_PRELOAD", &lib),
    );
    // Its user, not root: map_files is not its to open; the file at the printed name is, when
    // it is the very file mapped.
    let nobody_runs = |args: &[&str]| {
        as_nobody(Command::new(CLI).args(args).env_remove("LD_PRELOAD"))
            .output()
            .unwrap()
    };
    let out = nobody_runs(&["inspect", "--json", &own.0.id().to_string()]);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let process = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "process")
        .unwrap();
    assert_eq!(process["sockets_configured"], 1, "{process}");
    // A printed name made a FIFO: refused before anything is read, never waited on.
    let den = Den::new("own-fifo");
    let victim = den.path(b"x\nlibkeepalive_shim.so");
    std::fs::write(&victim, vec![0x55u8; 4096]).unwrap();
    let fifo = den.path(b"x\\012libkeepalive_shim.so");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let attacker = attacker(&[OsStr::new("map"), victim.as_os_str()], None);
    let t0 = Instant::now();
    let out = nobody_runs(&["inspect", &attacker.0.id().to_string()]);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        common::text(&out.stdout).contains("not the regular file"),
        "{}",
        common::text(&out.stdout)
    );
}
