//! Where another process finds the library's counters without opening a file: the locator page
//! (`src/locator.rs`, layout in `crates/policy/src/counts.rs`). A Python program that makes one
//! TCP socket runs with and without the library, and the test reads it from outside as
//! `keepalive-shim inspect` would: its `/proc/PID/maps`, then its memory with
//! `process_vm_readv`, checking the locator and the block it points at (magic, version, number
//! of counters, the socket counted).
//!
//! Where the kernel names anonymous mappings (Linux 5.17 with `CONFIG_ANON_VMA_NAME`), each copy
//! of the library shows one page named `[anon:keepalive-shim-counters]`; where it cannot, there
//! is none, and no page with a locator is left behind either. Which of the two this kernel does
//! is probed first, and both are asserted. So that what the page holds is checked on every
//! kernel, the same program also runs under a seccomp filter that makes the naming call return 0
//! without doing anything (`tests/programs/vma_name_filter.c pretend`): the page stays, unnamed,
//! and is found by its magic instead; and under one that refuses it (`refuse`): none stays.

mod common;

use common::*;
use keepalive_shim_policy::counts::{
    self, BLOCK_HEADER_LEN, BLOCK_SIZE, LEN, LIBRARY_MAGIC, LOCATOR_LEN, LOCATOR_MAGIC,
    LOCATOR_MAPS_NAME, VERSION, parse_locator,
};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PAGE: u64 = 4096;

/// Makes one TCP socket (the library counts it), optionally forks, says `ready PID` (and the
/// child `child PID`), says whether keepalive is on, and waits for its stdin to close. Each line
/// is one `write` (parent and child share the pipe).
const PROGRAM: &str = r#"
import os, socket, sys
def say(*words):
    os.write(1, (" ".join(map(str, words)) + "\n").encode())
s = socket.socket()
say("keepalive", s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
if "fork" in sys.argv and os.fork() == 0:
    say("child", os.getpid())
    sys.stdin.read()
    os._exit(0)
say("ready", os.getpid())
sys.stdin.read()
"#;

/// Whether this kernel names anonymous mappings: tried on a page of the test's own.
fn kernel_names_anonymous_mappings() -> bool {
    // SAFETY: a new private anonymous page, named, then unmapped; nothing else is touched.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            PAGE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let named = libc::prctl(
            libc::PR_SET_VMA,
            libc::PR_SET_VMA_ANON_NAME as libc::c_ulong,
            page as libc::c_ulong,
            PAGE as libc::c_ulong,
            c"kas-probe".as_ptr(),
        ) == 0;
        libc::munmap(page, PAGE as usize);
        eprintln!("this kernel names anonymous mappings: {named}");
        named
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug)]
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    path: String,
}

fn maps(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(6, ' ').collect();
            let (start, end) = fields[0].split_once('-').unwrap();
            Mapping {
                start: u64::from_str_radix(start, 16).unwrap(),
                end: u64::from_str_radix(end, 16).unwrap(),
                perms: fields[1].to_string(),
                path: fields.get(5).map_or("", |p| p.trim_start()).to_string(),
            }
        })
        .collect()
}

/// `len` bytes of `pid`'s memory at `addr`, read through the kernel.
fn read(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `out`, writable; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(out)
}

/// The locators found by name: the first bytes of each page of every mapping named
/// `[anon:keepalive-shim-counters]` (adjacent pages of the same name are one mapping).
fn named(pid: u32) -> Vec<(u64, Vec<u8>)> {
    let mut found = Vec::new();
    for m in maps(pid).iter().filter(|m| m.path == LOCATOR_MAPS_NAME) {
        assert_eq!(
            m.perms, "r--p",
            "a locator is a private read-only page: {m:?}"
        );
        for page in (m.start..m.end).step_by(PAGE as usize) {
            found.push((page, read(pid, page, LOCATOR_LEN).expect("read a locator")));
        }
    }
    found
}

/// The pages of unnamed anonymous mappings that start with the locator's magic.
fn unnamed_with_magic(pid: u32) -> Vec<(u64, Vec<u8>)> {
    let mut found = Vec::new();
    for m in maps(pid)
        .iter()
        .filter(|m| m.path.is_empty() && m.perms.starts_with('r'))
    {
        let mut at = m.start;
        while at < m.end {
            let chunk = (m.end - at).min(1 << 20);
            let Some(bytes) = read(pid, at, chunk as usize) else {
                break;
            };
            for (i, page) in bytes.chunks(PAGE as usize).enumerate() {
                if page[..8] == LOCATOR_MAGIC.to_le_bytes() {
                    found.push((at + i as u64 * PAGE, page[..LOCATOR_LEN].to_vec()));
                }
            }
            at += chunk;
        }
    }
    found
}

/// Checks the block a locator points at: in a writable mapping of `file`, with the library's
/// magic, version and number of counters; its counters.
fn block(pid: u32, locator: &[u8], file: &Path) -> [u64; LEN] {
    let (addr, size) = parse_locator(locator).expect("a valid locator");
    assert_eq!(size, BLOCK_SIZE as u64);
    let inside = maps(pid)
        .into_iter()
        .find(|m| m.start <= addr && addr + size <= m.end)
        .expect("the block lies in a mapping");
    assert_eq!(
        Path::new(&inside.path),
        file,
        "the block is in that copy's own data: {inside:?}"
    );
    assert!(inside.perms.starts_with("rw"), "{inside:?}");
    let bytes = read(pid, addr, size as usize).expect("read the block");
    assert_eq!(bytes[..8], LIBRARY_MAGIC.to_le_bytes());
    assert_eq!(bytes[8..12], VERSION.to_le_bytes());
    assert_eq!(bytes[12..16], (LEN as u32).to_le_bytes());
    std::array::from_fn(|i| {
        let at = BLOCK_HEADER_LEN + 8 * i;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    })
}

/// The program, started with `ld_preload` (none: without the library), under the filter
/// `filter` if any, until it is ready: the background process, its pid (and with `fork` its
/// child's), and whether keepalive is on on its socket.
struct Started {
    _bg: Background,
    pid: u32,
    child: Option<u32>,
    keepalive: u32,
}

fn start(ld_preload: Option<OsString>, filter: Option<&str>, fork: bool) -> Started {
    let mut cmd = match filter {
        Some(mode) => {
            let mut cmd = command(false, build_c("vma_name_filter.c", &["-O2", "-Wall"]));
            cmd.arg(mode).arg(python());
            cmd
        }
        None => command(false, python()),
    };
    cmd.args(["-c", PROGRAM]);
    if fork {
        cmd.arg("fork");
    }
    if let Some(value) = ld_preload {
        cmd.env("LD_PRELOAD", value);
    }
    let bg = Background::spawn(cmd);
    let (mut pid, mut child, mut keepalive) = (None, None, None);
    while pid.is_none() || keepalive.is_none() || (fork && child.is_none()) {
        let line = bg.expect("", Duration::from_secs(20));
        let mut words = line.split_whitespace();
        let (Some(what), Some(n)) = (words.next(), words.next().and_then(|n| n.parse().ok()))
        else {
            continue;
        };
        match what {
            "ready" => pid = Some(n),
            "child" => child = Some(n),
            "keepalive" => keepalive = Some(n),
            _ => {}
        }
    }
    Started {
        _bg: bg,
        pid: pid.unwrap(),
        child,
        keepalive: keepalive.unwrap(),
    }
}

fn preload(files: &[&Path]) -> Option<OsString> {
    let mut value = OsString::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            value.push(":");
        }
        value.push(f);
    }
    Some(value)
}

/// A second copy of the library, under another name (made once, whole, then renamed into place:
/// a test running beside must never map a half-written file).
fn copy() -> &'static Path {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let copy = scratch().join("copy-of-libkeepalive_shim.so");
        let partial = scratch().join("copy-of-libkeepalive_shim.so.partial");
        std::fs::copy(library(), &partial).unwrap();
        std::fs::rename(&partial, &copy).unwrap();
        copy
    })
}

#[test]
fn a_program_under_the_library_shows_its_locator_by_name_and_one_without_shows_none() {
    let names = kernel_names_anonymous_mappings();
    let without = start(None, None, false);
    let (pid, keepalive) = (without.pid, without.keepalive);
    assert_eq!(keepalive, 0, "without the library");
    assert!(named(pid).is_empty());
    assert!(unnamed_with_magic(pid).is_empty());

    let with = start(preload(&[library()]), None, false);
    let (pid, keepalive) = (with.pid, with.keepalive);
    assert_eq!(keepalive, 1, "with the library");
    let found = named(pid);
    if names {
        assert_eq!(found.len(), 1, "{found:?}");
        let counted = block(pid, &found[0].1, library());
        assert!(counted[counts::SOCKETS_CONFIGURED] >= 1, "{counted:?}");
    } else {
        assert!(found.is_empty());
    }
    // Named or unmapped again: never left behind unnamed.
    assert!(unnamed_with_magic(pid).is_empty());
}

#[test]
fn what_the_page_holds_points_at_the_live_block_of_each_copy() {
    // The naming call answered 0 without naming: the page stays as written, unnamed.
    let both = [library(), copy()].map(Path::to_path_buf);
    let run = start(preload(&[&both[0], &both[1]]), Some("pretend"), false);
    let pid = run.pid;
    assert_eq!(run.keepalive, 1);
    assert!(named(pid).is_empty());
    let mut found = unnamed_with_magic(pid);
    assert_eq!(found.len(), 2, "one locator per copy: {found:?}");
    // Which is which: by the file each block lies in.
    found.sort_by_key(|(_, l)| parse_locator(l).unwrap().0);
    let files: Vec<PathBuf> = found
        .iter()
        .map(|(_, l)| {
            let (addr, _) = parse_locator(l).unwrap();
            let m = maps(pid)
                .into_iter()
                .find(|m| m.start <= addr && addr < m.end)
                .unwrap();
            PathBuf::from(m.path)
        })
        .collect();
    assert_ne!(files[0], files[1], "each copy's own block");
    for ((_, locator), file) in found.iter().zip(&files) {
        let counted = block(pid, locator, file);
        // Only the first copy acts (src/copies.rs): it counted the socket; the other is zero.
        if *file == both[0] {
            assert!(counted[counts::SOCKETS_CONFIGURED] >= 1, "{counted:?}");
        } else {
            assert_eq!(counted, [0; LEN], "{}", file.display());
        }
    }
}

#[test]
fn two_copies_show_two_locators_and_a_forked_child_keeps_its_parents() {
    let names = kernel_names_anonymous_mappings();
    let run = start(preload(&[library(), copy()]), None, true);
    let (pid, child) = (run.pid, run.child.unwrap());
    let parent = named(pid);
    let forked = named(child);
    if names {
        assert_eq!(parent.len(), 2, "{parent:?}");
        let blocks: Vec<u64> = parent
            .iter()
            .map(|(_, l)| parse_locator(l).unwrap().0)
            .collect();
        assert_ne!(blocks[0], blocks[1]);
        assert_eq!(forked, parent, "the child keeps the same pages, named");
    } else {
        assert!(parent.is_empty() && forked.is_empty());
    }
    assert!(unnamed_with_magic(pid).is_empty());
    assert!(unnamed_with_magic(child).is_empty());
}

#[test]
fn where_the_kernel_refuses_the_name_no_page_stays_and_the_program_runs_as_before() {
    let run = start(preload(&[library()]), Some("refuse"), false);
    let pid = run.pid;
    assert_eq!(run.keepalive, 1, "the library works as before");
    assert!(named(pid).is_empty());
    assert!(unnamed_with_magic(pid).is_empty());
}
