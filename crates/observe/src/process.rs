//! What one process shows of keepalive-shim: the copies of the library it has loaded and what each
//! counted, and whether it is a seccomp supervisor (its block). Everything comes from one pass
//! over its `maps`, a line at a time, and reads of its memory of a length chosen here.
//!
//! Nothing is opened by the name a process shows: the name in `maps` is what the kernel printed
//! (a newline in a file name prints as `\012`, a mount can put another file at that path), so
//! - the library's block is found through its locator, a named anonymous mapping
//!   (`[anon:keepalive-shim-counters]`, Linux 5.17) that holds the block's address: one bounded
//!   read of the locator, one of the block, magic, version and length checked;
//! - where the kernel cannot name mappings, through the mapped file itself, opened by
//!   `/proc/PID/map_files/START-END` (the very file mapped; root only), refused unless it is a
//!   regular file with the device and inode `maps` showed, read to at most [`Limits::max_elf`]
//!   bytes, its symbol found in one pass (`keepalive_shim_sys::elf`);
//! - a supervisor's block is found by its memfd's name and read at that address.
//!
//! A process can forge all of it: what it publishes is its own account of itself.

use crate::counts::{Counts, HEADER, MAX_BLOCK};
use keepalive_shim_policy::counts::{
    LIBRARY_MAGIC, LOCATOR_LEN, LOCATOR_MAPS_NAME, SUPERVISOR_MAGIC, SUPERVISOR_MEMFD,
    parse_locator,
};
use keepalive_shim_sys::{elf, proc, remote};
use std::collections::HashMap;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;

/// A page: a locator's size.
const PAGE: u64 = 4096;

/// The exported symbol that names the library's block (for libraries without a locator).
const SYMBOL: &[u8] = b"keepalive_shim_counters";

/// How much of one process is read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Lines of `maps` read (the kernel's default `vm.max_map_count` is 65,530).
    pub max_lines: usize,
    /// Copies of the library read per process; more are only counted.
    pub max_copies: usize,
    /// Bytes of a mapped library file read (the library is about 140 kB).
    pub max_elf: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_lines: 65_536,
            max_copies: 4,
            max_elf: 2 << 20,
        }
    }
}

/// How a copy's counters were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Its locator, a named anonymous mapping.
    Locator,
    /// The mapped library file's dynamic symbol (kernels before 5.17).
    File,
}

/// One copy of the library mapped in a process, and what it counted (or why that cannot be read).
#[derive(Clone, Debug)]
pub struct LibraryCopy {
    /// What `maps` shows: the locator's name, or the mapped file's name as the kernel printed it.
    pub name: String,
    pub via: Via,
    pub counts: Result<Counts, String>,
}

/// A process that has the library loaded.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: i32,
    /// Its command name, as bytes made text (anything not UTF-8 replaced, never a reason to
    /// skip it).
    pub command: String,
    /// The inode of its network namespace.
    pub netns: Option<u64>,
    pub copies: Vec<LibraryCopy>,
    /// Copies beyond [`Limits::max_copies`], not read.
    pub more_copies: usize,
}

impl Process {
    /// The counts of every copy read, added up (only the first copy acts, the others stay at
    /// zero), saturating; `None` when none could be read.
    pub fn total(&self) -> Option<Counts> {
        let mut read = self.copies.iter().filter_map(|c| c.counts.as_ref().ok());
        let mut total = *read.next()?;
        for c in read {
            total.add(c);
        }
        Some(total)
    }
}

/// A seccomp supervisor (`keepalive-shim run --mode seccomp`) and what it counted for its tree.
#[derive(Clone, Debug)]
pub struct Supervisor {
    pub pid: i32,
    pub command: String,
    pub netns: Option<u64>,
    pub counts: Result<Counts, String>,
}

/// What one pass over a process's maps found.
#[derive(Debug, Default)]
pub struct Found {
    /// The library's copies (`None`: it has none).
    pub library: Option<Process>,
    /// What it counted, when it is a seccomp supervisor.
    pub supervisor: Option<Supervisor>,
    /// `maps` had more lines than [`Limits::max_lines`]: the rest was not read.
    pub maps_capped: bool,
}

/// A mapping worth a closer look.
#[derive(Clone, Debug)]
struct Candidate {
    start: u64,
    end: u64,
    dev: (u32, u32),
    inode: u64,
    /// The name `maps` printed (lossy: a name that is not UTF-8 is never opened by name).
    name: String,
}

/// A symbol looked up in a library file, by (device, inode, size, modification time).
type SymbolCache = HashMap<(u64, u64, u64, i64), Result<elf::Symbol, String>>;

/// Reads processes' counters; keeps only a small cache of library files' symbols between reads.
#[derive(Default)]
pub struct Reader {
    pub limits: Limits,
    symbols: SymbolCache,
}

impl Reader {
    pub fn new(limits: Limits) -> Reader {
        Reader {
            limits,
            symbols: HashMap::new(),
        }
    }

    /// One pass over `pid`'s maps: its copies of the library, with what each counted, and its
    /// supervisor block. An error: the process is gone or its maps cannot be read.
    pub fn read(&mut self, pid: i32) -> io::Result<Found> {
        let limits = self.limits;
        let (mut locators, mut files) = (Vec::new(), Vec::new());
        let (mut more_locators, mut more_files) = (0usize, 0usize);
        let mut supervisor_block = None;
        let (_, maps_capped) = proc::maps(pid, limits.max_lines, |m| {
            if m.name == LOCATOR_MAPS_NAME.as_bytes() {
                more_locators += locator_pages(m.start, m.end, limits.max_copies, &mut locators);
            } else if is_supervisor_block(m) {
                supervisor_block.get_or_insert(m.start);
            } else if m.offset == 0 && m.inode != 0 && looks_like_library(m.name) {
                let c = Candidate {
                    start: m.start,
                    end: m.end,
                    dev: m.dev,
                    inode: m.inode,
                    name: String::from_utf8_lossy(m.name).into_owned(),
                };
                let seen = files
                    .iter()
                    .any(|f: &Candidate| (f.dev, f.inode) == (c.dev, c.inode));
                if seen {
                } else if files.len() < limits.max_copies {
                    files.push(c);
                } else {
                    more_files += 1;
                }
            }
            ControlFlow::Continue(())
        })?;
        let mut found = Found {
            library: None,
            supervisor: supervisor_block.map(|at| supervisor_at_block(pid, at)),
            maps_capped,
        };
        // A library with a locator publishes through it; file names are looked at only where no
        // copy has one (a library from before locators, or a kernel that cannot name mappings).
        let copies: Vec<LibraryCopy> = if !locators.is_empty() {
            locators
                .iter()
                .map(|&at| LibraryCopy {
                    name: LOCATOR_MAPS_NAME.to_owned(),
                    via: Via::Locator,
                    counts: read_located(pid, at),
                })
                .collect()
        } else {
            files
                .iter()
                .map(|c| LibraryCopy {
                    name: c.name.clone(),
                    via: Via::File,
                    counts: self.read_from_file(pid, c),
                })
                .collect()
        };
        if copies.is_empty() {
            return Ok(found);
        }
        found.library = Some(Process {
            pid,
            command: command(pid),
            netns: proc::netns(pid),
            more_copies: if locators.is_empty() {
                more_files
            } else {
                more_locators
            },
            copies,
        });
        Ok(found)
    }

    /// `pid` if it is a supervisor (its maps show the block), with what it counted: its maps
    /// scanned up to the block, and nothing of the library read (an ancestor walk asks this of
    /// each ancestor).
    pub fn supervisor(&mut self, pid: i32) -> Option<Supervisor> {
        let mut block = None;
        proc::maps(pid, self.limits.max_lines, |m| {
            if is_supervisor_block(m) {
                block = Some(m.start);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .ok()?;
        block.map(|at| supervisor_at_block(pid, at))
    }

    /// The supervisor `pid` runs under, when it is not one itself ([`Found::supervisor`] of
    /// [`Reader::read`] says that): the one `KEEPALIVE_SHIM_SUPERVISED` in its environment names
    /// when that is an ancestor, else the nearest ancestor with a supervisor's block; `None` when
    /// it runs under none.
    pub fn supervisor_above(&mut self, pid: i32) -> Option<Supervisor> {
        // Under no seccomp filter: under no supervisor (and no walk up the tree).
        let filters = proc::Status::read(&pid.to_string())
            .ok()?
            .number("Seccomp_filters");
        if filters == Some(0) {
            return None;
        }
        let ancestors = proc::ancestors(pid, 64);
        let named = proc::environ_var(pid, b"KEEPALIVE_SHIM_SUPERVISED")
            .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<i32>().ok())
            .filter(|p| ancestors.contains(p));
        if let Some(found) = named.and_then(|p| self.supervisor(p)) {
            return Some(found);
        }
        ancestors.into_iter().find_map(|p| self.supervisor(p))
    }

    /// The counters of a copy found only as a mapped file.
    fn read_from_file(&mut self, pid: i32, c: &Candidate) -> Result<Counts, String> {
        let symbol = self.symbol(pid, c)?;
        let bias = c.start.wrapping_sub(symbol.first_load & !0xfff);
        let len = (symbol.size as usize).clamp(HEADER, MAX_BLOCK);
        let block = remote::read(pid, bias.wrapping_add(symbol.value), len).map_err(read_error)?;
        Counts::parse(&block, LIBRARY_MAGIC)
    }

    fn symbol(&mut self, pid: i32, c: &Candidate) -> Result<elf::Symbol, String> {
        let mapping = proc::Mapping {
            start: c.start,
            end: c.end,
            perms: b"",
            offset: 0,
            dev: c.dev,
            inode: c.inode,
            name: b"",
        };
        // The very file mapped (root); without that right, the file at the name maps printed,
        // taken only if it is the same file.
        let file = proc::open_mapped(pid, &mapping)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => proc::open_mapped_by_name(
                    pid,
                    &proc::Mapping {
                        name: c.name.as_bytes(),
                        ..mapping
                    },
                ),
                _ => Err(e),
            })
            .map_err(|e| format!("cannot open the mapped library file: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat the library: {e}"))?;
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        if let Some(found) = self.symbols.get(&key) {
            return found.clone();
        }
        let found = if meta.size() > self.limits.max_elf as u64 {
            Err("the mapped file is too large to be the library".to_owned())
        } else {
            let mut bytes = Vec::new();
            match file
                .take(self.limits.max_elf as u64)
                .read_to_end(&mut bytes)
            {
                Ok(_) => elf::dynamic_symbol(&bytes, SYMBOL).map_err(|m| match m {
                    elf::Missing::NotElf => "not a 64-bit ELF file".to_owned(),
                    elf::Missing::NoDynsym => "the library has no dynamic symbol table".to_owned(),
                    elf::Missing::NoSymbol => "this library publishes no counters (a \
                         keepalive-shim from before they were counted)"
                        .to_owned(),
                }),
                Err(e) => Err(format!("cannot read the library: {e}")),
            }
        };
        if self.symbols.len() >= 64 {
            self.symbols.clear();
        }
        self.symbols.insert(key, found.clone());
        found
    }
}

/// The locators in a mapping named as the library's: each copy's locator is one page, and two
/// copies' pages side by side show as one mapping, so each page of it is one. Pushed onto `out`
/// up to `cap` in all; how many more there were.
fn locator_pages(start: u64, end: u64, cap: usize, out: &mut Vec<u64>) -> usize {
    let pages = end.saturating_sub(start) / PAGE;
    let room = cap.saturating_sub(out.len()) as u64;
    let taken = pages.min(room);
    out.extend((0..taken).map(|i| start + i * PAGE));
    (pages - taken) as usize
}

/// Whether a name `maps` printed looks like a copy of the library: its last part has
/// `keepalive_shim` and `.so` in it (the library is `libkeepalive_shim.so` wherever installed).
fn looks_like_library(name: &[u8]) -> bool {
    let last = name.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let has = |needle: &[u8]| last.windows(needle.len()).any(|w| w == needle);
    name.first() == Some(&b'/') && has(b"keepalive_shim") && has(b".so")
}

/// The block a locator at `at` in `pid` points to.
fn read_located(pid: i32, at: u64) -> Result<Counts, String> {
    let bytes = remote::read(pid, at, LOCATOR_LEN).map_err(read_error)?;
    let (addr, size) = parse_locator(&bytes)
        .ok_or("the counters' locator holds no locator (magic or version differ)")?;
    let len = (size as usize).clamp(HEADER, MAX_BLOCK);
    let block = remote::read(pid, addr, len).map_err(read_error)?;
    Counts::parse(&block, LIBRARY_MAGIC)
}

fn read_error(e: io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ESRCH) => "the process exited during the read".to_owned(),
        Some(libc::EPERM) => "permission denied (run as root or as its user)".to_owned(),
        _ => format!("cannot read its counters: {e}"),
    }
}

/// A process's command name, as text (not UTF-8: replaced; unreadable: empty).
pub fn command(pid: i32) -> String {
    proc::comm(pid)
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_default()
}

/// Supervisor `pid`, its block at `at` read.
/// A supervisor's counter block: its memfd, as `maps` names it.
fn is_supervisor_block(m: &proc::Mapping) -> bool {
    m.name
        .strip_prefix(b"/memfd:")
        .is_some_and(|name| name.starts_with(SUPERVISOR_MEMFD.as_bytes()))
}

fn supervisor_at_block(pid: i32, at: u64) -> Supervisor {
    let counts = remote::read(pid, at, HEADER + 8 * keepalive_shim_policy::counts::LEN)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => "the supervisor exited during the read".to_owned(),
            _ => read_error(e),
        })
        .and_then(|block| Counts::parse(&block, SUPERVISOR_MAGIC));
    Supervisor {
        pid,
        command: command(pid),
        netns: proc::netns(pid),
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_are_told_by_their_last_part() {
        assert!(looks_like_library(b"/opt/ka/libkeepalive_shim.so"));
        assert!(looks_like_library(
            b"/tmp/copy two/libkeepalive_shim.so (deleted)"
        ));
        assert!(!looks_like_library(b"/opt/keepalive_shim/libc.so.6"));
        assert!(!looks_like_library(b"[anon:libkeepalive_shim.so]"));
    }

    #[test]
    fn pages_side_by_side_are_locators_each_up_to_the_cap() {
        let mut out = Vec::new();
        assert_eq!(locator_pages(0x1000, 0x3000, 4, &mut out), 0);
        assert_eq!(out, [0x1000, 0x2000]);
        assert_eq!(locator_pages(0x9000, 0xc000, 4, &mut out), 1);
        assert_eq!(out, [0x1000, 0x2000, 0x9000, 0xa000]);
        assert_eq!(locator_pages(0x9000, 0x8000, 4, &mut out), 0);
    }

    #[test]
    fn a_locator_leads_to_its_block_read_from_outside() {
        use keepalive_shim_policy::counts::{LEN, VERSION, locator};
        let mut block = Vec::new();
        block.extend_from_slice(&LIBRARY_MAGIC.to_le_bytes());
        block.extend_from_slice(&VERSION.to_le_bytes());
        block.extend_from_slice(&(LEN as u32).to_le_bytes());
        for i in 0..LEN as u64 {
            block.extend_from_slice(&(i + 1).to_le_bytes());
        }
        let page = locator(block.as_ptr() as u64, block.len() as u64);
        let me = std::process::id() as i32;
        let counts = read_located(me, page.as_ptr() as u64).unwrap();
        assert_eq!(counts.sockets_configured, 1);
        let mut wrong = page;
        wrong[0] ^= 1;
        assert!(read_located(me, wrong.as_ptr() as u64).is_err());
    }

    #[test]
    fn a_process_without_the_library_has_none_and_a_gone_one_is_an_error() {
        let mut reader = Reader::default();
        let me = std::process::id() as i32;
        let found = reader.read(me).unwrap();
        assert!(found.library.is_none() && found.supervisor.is_none());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(
            reader.read(pid).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
