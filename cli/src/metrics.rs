//! `keepalive-shim metrics --listen ADDR:PORT`: serves `/metrics` in Prometheus' text format,
//! from the processes of this node that have the preload library loaded (the counters each copy
//! of the library keeps, src/counters.rs) and from their network namespaces (the kernel's
//! `TcpExt: TCPAbortOnTimeout`, once per namespace). Also the reading both this and `inspect`
//! use: finding the library in `/proc/PID/maps`, its exported `keepalive_shim_counters` in the
//! file's `.dynsym`, and the block at that address with `process_vm_readv`.
//!
//! Bounded work per scrape: one pass over `/proc`, reading each process's `maps` (a text search
//! for the library's name); only the processes whose maps mention it are read further (the ELF
//! symbol, cached per file; one `process_vm_readv`; their namespace's netstat, once per
//! namespace). At most `--max-processes` process series (by lowest PID) and as many namespaces;
//! the rest is counted in `keepalive_shim_processes_not_shown`. One scrape at a time; two
//! connections served at once, eight waiting, any more closed; five seconds to send a request.
//!
//! Why no HTTP or metrics crate: `tiny_http` starts a thread for every connection it holds, with
//! no read timeout, so idle clients grow an exporter that should stay small; `prometheus-client`
//! models live metric objects in a registry, where these are snapshots read from other
//! processes at each scrape, and brings a derive macro's dependency tree for what is fifty lines
//! of formatting here. The request is parsed with `httparse` (the parser hyper uses, no
//! dependencies of its own); the rest is `std::net`.

use crate::say;
use keepalive_shim_policy::options::{N, OPTIONS};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Serve Prometheus metrics: what keepalive-shim did in each process that has the library
/// loaded, and the connections the kernel ended after a timeout in their network namespaces.
///
/// Nothing listens unless asked: the address is required. Only `GET` and `HEAD` of `/metrics`
/// are answered; every other path gets 404. Run it as root to see every process.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim metrics --listen 127.0.0.1:9877\n  \
    keepalive-shim metrics --listen [::]:9877 --max-processes 200\n  \
    curl -s http://127.0.0.1:9877/metrics")]
pub struct Args {
    /// The address and port to listen on (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// At most this many processes get series of their own (those with the lowest PIDs); the
    /// others are counted in keepalive_shim_processes_not_shown{reason="over_cap"}, and so are
    /// network namespaces beyond as many.
    #[arg(long, default_value_t = 500, value_name = "N")]
    max_processes: usize,
}

// --- The library's block (src/counters.rs) ---------------------------------------------------

/// The block's first 8 bytes, and the layout read here (crates/policy/src/counts.rs).
use keepalive_shim_policy::counts::{self, LIBRARY_MAGIC as MAGIC, VERSION};
/// The exported symbol that names the block.
const SYMBOL: &[u8] = b"keepalive_shim_counters";
/// Magic, version, length.
const HEADER: usize = 16;
/// The counters of version 1 (crates/policy/src/counts.rs).
const LIBRARY_COUNTERS: usize = counts::LEN;
/// A block is never read beyond this.
const MAX_BLOCK: usize = HEADER + 8 * 256;
/// A library file larger than this is not parsed.
const MAX_ELF: u64 = 64 << 20;

/// What one copy of the library counted in its process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub sockets_configured: u64,
    pub connections_configured: u64,
    pub connections_excluded: u64,
    /// By option, in the order of `OPTIONS`.
    pub options_left_to_program: [u64; N],
    pub options_refused: [u64; N],
}

impl Counts {
    /// From a block of version 1 (`values` has at least [`LIBRARY_COUNTERS`] counters).
    fn from_v1(values: &[u64]) -> Counts {
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        Counts {
            sockets_configured: at(counts::SOCKETS_CONFIGURED),
            connections_configured: at(counts::CONNECTIONS_CONFIGURED),
            connections_excluded: at(counts::CONNECTIONS_EXCLUDED),
            options_left_to_program: std::array::from_fn(|i| {
                at(counts::OPTIONS_LEFT_TO_PROGRAM + i)
            }),
            options_refused: std::array::from_fn(|i| at(counts::OPTIONS_REFUSED + i)),
        }
    }

    fn add(&mut self, other: &Counts) {
        self.sockets_configured += other.sockets_configured;
        self.connections_configured += other.connections_configured;
        self.connections_excluded += other.connections_excluded;
        for i in 0..N {
            self.options_left_to_program[i] += other.options_left_to_program[i];
            self.options_refused[i] += other.options_refused[i];
        }
    }

    /// The counters under the keys `inspect --json` uses: the metric names without
    /// `keepalive_shim_` and `_total`, the per-option ones as objects keyed by option.
    pub fn json(&self) -> serde_json::Map<String, Value> {
        let by_option = |v: &[u64; N]| {
            Value::Object(
                OPTIONS
                    .iter()
                    .zip(v)
                    .map(|(o, n)| (o.label.to_owned(), Value::from(*n)))
                    .collect(),
            )
        };
        let mut map = serde_json::Map::new();
        map.insert("sockets_configured".into(), self.sockets_configured.into());
        map.insert(
            "connections_configured".into(),
            self.connections_configured.into(),
        );
        map.insert(
            "connections_excluded".into(),
            self.connections_excluded.into(),
        );
        map.insert(
            "options_left_to_program".into(),
            by_option(&self.options_left_to_program),
        );
        map.insert("options_refused".into(), by_option(&self.options_refused));
        map
    }
}

/// One copy of the library mapped in a process, and what it counted (or why that cannot be
/// read).
#[derive(Clone, Debug)]
pub struct LibraryCopy {
    pub path: String,
    pub counts: Result<Counts, String>,
}

/// A process that has the library loaded.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: i32,
    pub command: String,
    /// The inode of its network namespace.
    pub netns: Option<u64>,
    pub copies: Vec<LibraryCopy>,
}

impl Process {
    /// The counts of every copy read, added up (only the first copy acts, the others stay at
    /// zero); `None` when none could be read.
    pub fn total(&self) -> Option<Counts> {
        let mut read = self.copies.iter().filter_map(|c| c.counts.as_ref().ok());
        let mut total = *read.next()?;
        for c in read {
            total.add(c);
        }
        Some(total)
    }
}

/// A library file's `keepalive_shim_counters`: the symbol's value and size, and the virtual
/// address of the file's first loadable segment (the load bias is the mapping's start less it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Symbol {
    value: u64,
    size: u64,
    first_load: u64,
}

/// Reads processes' counters; keeps what it learnt of each library file between scrapes.
#[derive(Default)]
pub struct Reader {
    /// By (device, inode, size, mtime) of the file.
    symbols: HashMap<(u64, u64, u64, i64), Result<Symbol, String>>,
    maps: Vec<u8>,
    /// Where the last maps read (by [`Reader::process`]) showed a supervisor's block.
    supervisor_block: Option<u64>,
}

/// A mapped file whose name says it is the library.
#[derive(Debug, PartialEq, Eq)]
struct Mapped {
    path: String,
    /// The mapping of file offset 0: start and end.
    start: u64,
    end: u64,
}

impl Reader {
    /// The copies of the library `pid` has mapped, with what each counted; `Ok(None)` when it
    /// has none. An error: the process is gone or its maps cannot be read.
    pub fn process(&mut self, pid: i32) -> io::Result<Option<Process>> {
        self.maps.clear();
        self.supervisor_block = None;
        std::fs::File::open(format!("/proc/{pid}/maps"))?.read_to_end(&mut self.maps)?;
        let text = String::from_utf8_lossy(&self.maps);
        self.supervisor_block = supervisor_block(&text);
        if !text.contains("keepalive_shim") {
            return Ok(None);
        }
        let mapped = mapped_libraries(&text);
        if mapped.is_empty() {
            return Ok(None);
        }
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_owned())?;
        let copies = mapped
            .into_iter()
            .map(|m| {
                let counts = self.counts(pid, &m);
                LibraryCopy {
                    path: m.path,
                    counts,
                }
            })
            .collect();
        Ok(Some(Process {
            pid,
            command,
            netns: netns_of(pid),
            copies,
        }))
    }

    fn counts(&mut self, pid: i32, m: &Mapped) -> Result<Counts, String> {
        let symbol = self.symbol(pid, m)?;
        let bias = m.start.wrapping_sub(symbol.first_load & !0xfff);
        let len = (symbol.size as usize).clamp(HEADER, MAX_BLOCK);
        let block = read_remote(pid, bias.wrapping_add(symbol.value), len).map_err(|e| match e
            .raw_os_error()
        {
            Some(libc::ESRCH) => "the process exited during the read".to_owned(),
            Some(libc::EPERM) => "permission denied (run as root or as its user)".to_owned(),
            _ => format!("cannot read its counters: {e}"),
        })?;
        parse_block(&block)
    }

    fn symbol(&mut self, pid: i32, m: &Mapped) -> Result<Symbol, String> {
        let file = open_mapped(pid, m).map_err(|e| format!("cannot open the library: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat the library: {e}"))?;
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        if let Some(found) = self.symbols.get(&key) {
            return found.clone();
        }
        let found = if meta.size() > MAX_ELF {
            Err("the library file is too large to be the library".to_owned())
        } else {
            let mut bytes = Vec::new();
            match (&file).read_to_end(&mut bytes) {
                Ok(_) => find_symbol(&bytes),
                Err(e) => Err(format!("cannot read the library: {e}")),
            }
        };
        if self.symbols.len() >= 256 {
            self.symbols.clear();
        }
        self.symbols.insert(key, found.clone());
        found
    }
}

/// The files of `maps` whose name has `keepalive_shim` and `.so` in it (the library is
/// `libkeepalive_shim.so` wherever it is installed), with their offset-0 mapping.
fn mapped_libraries(maps: &str) -> Vec<Mapped> {
    let mut out: Vec<Mapped> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.find('/').map(|i| &line[i..]) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or("");
        if !name.contains("keepalive_shim") || !name.contains(".so") {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(_perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(0)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        if !out.iter().any(|m| m.path == path) {
            out.push(Mapped {
                path: path.to_owned(),
                start,
                end,
            });
        }
    }
    out
}

/// The mapped file, through the process's root (its mount namespace), or, for a file deleted
/// since it was mapped, through `map_files` (root only).
fn open_mapped(pid: i32, m: &Mapped) -> io::Result<std::fs::File> {
    let deleted = m.path.strip_suffix(" (deleted)");
    if deleted.is_none()
        && let Ok(f) = std::fs::File::open(format!("/proc/{pid}/root{}", m.path))
    {
        return Ok(f);
    }
    std::fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
}

/// `keepalive_shim_counters` in the `.dynsym` of an ELF64 little-endian file (x86_64, aarch64).
fn find_symbol(elf: &[u8]) -> Result<Symbol, String> {
    let bad = || "not a 64-bit little-endian ELF file".to_owned();
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(bad());
    }
    // The first PT_LOAD's address.
    let (phoff, phentsize, phnum) = (
        u64_at(0x20).ok_or_else(bad)? as usize,
        u16_at(0x36).ok_or_else(bad)? as usize,
        u16_at(0x38).ok_or_else(bad)? as usize,
    );
    let first_load = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&p| u32_at(p) == Some(1))
        .and_then(|p| u64_at(p + 0x10))
        .ok_or_else(bad)?;
    let (shoff, shentsize, shnum) = (
        u64_at(0x28).ok_or_else(bad)? as usize,
        u16_at(0x3a).ok_or_else(bad)? as usize,
        u16_at(0x3c).ok_or_else(bad)? as usize,
    );
    let section = |i: usize| {
        let s = shoff.checked_add(i.checked_mul(shentsize)?)?;
        // type, offset, size, link, entry size
        Some((
            u32_at(s + 4)?,
            u64_at(s + 0x18)? as usize,
            u64_at(s + 0x20)? as usize,
            u32_at(s + 0x28)? as usize,
            u64_at(s + 0x38)? as usize,
        ))
    };
    const SHT_DYNSYM: u32 = 11;
    let (_, symoff, symsize, link, entsize) = (0..shnum)
        .filter_map(section)
        .find(|s| s.0 == SHT_DYNSYM)
        .ok_or("the library has no dynamic symbol table")?;
    let (_, stroff, strsize, _, _) = section(link).ok_or_else(bad)?;
    let strtab = elf
        .get(stroff..stroff.saturating_add(strsize))
        .ok_or_else(bad)?;
    let entsize = if entsize == 0 { 24 } else { entsize };
    for i in 0..symsize / entsize {
        let sym = symoff + i * entsize;
        let (Some(name), Some(shndx), Some(value), Some(size)) = (
            u32_at(sym),
            u16_at(sym + 6),
            u64_at(sym + 8),
            u64_at(sym + 16),
        ) else {
            break;
        };
        let name = strtab.get(name as usize..).unwrap_or(&[]);
        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
        if name == SYMBOL && shndx != 0 {
            return Ok(Symbol {
                value,
                size,
                first_load,
            });
        }
    }
    Err(
        "this library publishes no counters (a keepalive-shim from before they were \
         counted)"
            .to_owned(),
    )
}

/// `len` bytes at `addr` in process `pid`.
fn read_remote(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, writable for `len` bytes; the kernel checks `remote`
    // against the other process's memory and fails (EFAULT) rather than touch anything else.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The counters of a block read from a process.
fn parse_block(block: &[u8]) -> Result<Counts, String> {
    parse_block_of(block, MAGIC)
}

/// The counters of a block that starts with `magic` (the library's, or a supervisor's: the
/// same layout).
fn parse_block_of(block: &[u8], magic: u64) -> Result<Counts, String> {
    let word = |o: usize| Some(u64::from_le_bytes(block.get(o..o + 8)?.try_into().ok()?));
    let half = |o: usize| Some(u32::from_le_bytes(block.get(o..o + 4)?.try_into().ok()?));
    if word(0) != Some(magic) {
        return Err("no counters at the address the library publishes".to_owned());
    }
    let version = half(8).unwrap_or(0);
    if version != VERSION {
        return Err(format!(
            "counters of layout version {version}, which this keepalive-shim does not read \
             (it reads version {VERSION}): a library of another version"
        ));
    }
    let len = half(12).unwrap_or(0) as usize;
    let values: Vec<u64> = (0..len).map_while(|i| word(HEADER + 8 * i)).collect();
    if values.len() < LIBRARY_COUNTERS {
        return Err(format!(
            "{} counters where version {VERSION} has {LIBRARY_COUNTERS}",
            values.len()
        ));
    }
    Ok(Counts::from_v1(&values))
}

// --- A supervisor's block (cli/src/supervise/counters.rs) --------------------------------------

/// The start of the supervisor's counter block in `maps` (its memfd's mapping), if any.
fn supervisor_block(maps: &str) -> Option<u64> {
    let name = format!("/memfd:{}", crate::supervise::counters::NAME);
    let line = maps.lines().find(|l| l.contains(&name))?;
    let (start, _) = line.split_once('-')?;
    u64::from_str_radix(start, 16).ok()
}

/// A seccomp supervisor (`keepalive-shim run --mode seccomp`) and what it counted.
#[derive(Clone, Debug)]
pub struct Supervisor {
    pub pid: i32,
    pub command: String,
    pub netns: Option<u64>,
    pub counts: Result<Counts, String>,
}

/// The counters of the block at `at` in supervisor `pid`.
fn supervisor_counts(pid: i32, at: u64) -> Result<Counts, String> {
    let len = HEADER + 8 * LIBRARY_COUNTERS;
    let block = read_remote(pid, at, len).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => "the supervisor exited during the read".to_owned(),
        Some(libc::EPERM) => "permission denied (run as root or as its user)".to_owned(),
        _ => format!("cannot read its counters: {e}"),
    })?;
    parse_block_of(&block, crate::supervise::counters::MAGIC)
}

impl Reader {
    /// `pid` if it is a supervisor (its maps show the block), with what it counted.
    pub fn supervisor(&mut self, pid: i32) -> Option<Supervisor> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let at = supervisor_block(&text)?;
        Some(supervisor_at(pid, at))
    }

    /// The supervisor of `pid`: the one `KEEPALIVE_SHIM_SUPERVISED` in its environment names
    /// when that is an ancestor, else the nearest ancestor (or itself) with a supervisor's
    /// block; `None` when it runs under none.
    pub fn supervisor_of(&mut self, pid: i32) -> Option<Supervisor> {
        if let Some(itself) = self.supervisor(pid) {
            return Some(itself);
        }
        // Under no seccomp filter: under no supervisor (and no walk up the tree).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let filters = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .and_then(|n| n.trim().parse::<u32>().ok());
        if filters == Some(0) {
            return None;
        }
        let ancestors = ancestors(pid);
        let named = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| {
                env.split(|&b| b == 0)
                    .find_map(|v| v.strip_prefix(b"KEEPALIVE_SHIM_SUPERVISED="))
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<i32>().ok())
            })
            .filter(|p| ancestors.contains(p));
        if let Some(found) = named.and_then(|p| self.supervisor(p)) {
            return Some(found);
        }
        ancestors.into_iter().find_map(|p| self.supervisor(p))
    }
}

fn supervisor_at(pid: i32, at: u64) -> Supervisor {
    Supervisor {
        pid,
        command: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default(),
        netns: netns_of(pid),
        counts: supervisor_counts(pid, at),
    }
}

/// The parents of `pid`, nearest first (at most 64, not PID 0).
fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut at = pid;
    while out.len() < 64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{at}/stat")) else {
            break;
        };
        // After the command, in parentheses (which may hold spaces): state, then the parent.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
        else {
            break;
        };
        if ppid <= 0 || out.contains(&ppid) {
            break;
        }
        out.push(ppid);
        at = ppid;
    }
    out
}

/// A supervisor's record for `inspect --json`: its PID and its counters under the metrics'
/// keys.
pub fn supervisor_json(s: &Supervisor) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("pid".into(), s.pid.into());
    map.insert("command".into(), s.command.clone().into());
    match &s.counts {
        Ok(c) => {
            map.extend(c.json());
            // The supervisor applies no destination rules.
            map.remove("connections_excluded");
        }
        Err(e) => {
            map.insert("error".into(), e.clone().into());
        }
    }
    Value::Object(map)
}

/// The inode of `pid`'s network namespace.
pub fn netns_of(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// `TcpExt: TCPAbortOnTimeout` of `pid`'s network namespace (`/proc/PID/net/netstat` shows the
/// namespace of the process).
pub fn aborts_on_timeout(pid: i32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/netstat"))?;
    netstat_value(&text, "TcpExt:", "TCPAbortOnTimeout").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no TcpExt: TCPAbortOnTimeout in netstat",
        )
    })
}

/// A value of `/proc/net/netstat`: a line of names after `prefix`, then a line of values.
fn netstat_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let i = names.split_whitespace().position(|n| n == name);
        if let Some(i) = i {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// What `TCPAbortOnTimeout` counts, for people.
pub const TIMED_OUT_MEANS: &str = "connections the kernel ended after a timeout (TcpExt \
    TCPAbortOnTimeout): every program in the network namespace, with or without keepalive-shim; \
    keepalive probes unanswered, the user timeout, or retransmissions exhausted; since the \
    namespace was made";

/// The PIDs in /proc, sorted.
pub fn all_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

// --- One scrape ------------------------------------------------------------------------------

/// A network namespace of processes that have the library.
#[derive(Debug, Default)]
struct Namespace {
    timed_out: Option<u64>,
    processes: usize,
}

/// What fleet mode counted in one attachment's BPF map, for one cgroup or all of them
/// (cli/src/fleet/program/mod.rs, `COUNT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Outgoing connections (`connect()`, at `BPF_SOCK_OPS_TCP_CONNECT_CB`) that carry the
    /// options.
    pub connections_configured: u64,
    /// Accepted connections (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`) that carry them.
    pub accepted_configured: u64,
    pub connections_excluded: u64,
    pub options_left_to_program: [u64; N],
    /// `BPF_SOCK_OPS_RTO_CB` with `expired`: `tcp_write_timeout()` ended the connection.
    pub timed_out: u64,
    /// `BPF_SOCK_OPS_STATE_CB` from ESTABLISHED or CLOSE_WAIT straight to CLOSE, with no
    /// retransmission-timer expiry before it.
    pub aborted: u64,
}

impl FleetCounts {
    /// Under the keys `fleet status --json` uses (the metrics' names without the prefix and
    /// `_total`).
    pub fn json(&self) -> Value {
        let by_option: serde_json::Map<String, Value> = OPTIONS
            .iter()
            .zip(&self.options_left_to_program)
            .map(|(o, n)| (o.label.to_owned(), Value::from(*n)))
            .collect();
        json!({
            "connections_configured": self.connections_configured,
            "accepted_connections_configured": self.accepted_configured,
            "connections_excluded": self.connections_excluded,
            "options_left_to_program": by_option,
            "connections_timed_out": self.timed_out,
            "connections_aborted": self.aborted,
        })
    }
}

/// One series of a fleet attachment's counts: by the connection's own cgroup below the
/// attached one, or a folded entry.
#[derive(Clone, Debug)]
pub struct FleetSeries {
    /// The attached cgroup.
    pub cgroup: String,
    /// The connection's cgroup, relative to the attached one (`.`: the attached one itself).
    pub path: Option<String>,
    /// The Kubernetes pod that path names.
    pub pod_uid: Option<String>,
    /// A folded entry instead of a path: `other` (beyond the cap), `gone` (cgroups removed),
    /// `unresolved`.
    pub folded: Option<String>,
    pub counts: FleetCounts,
}

impl FleetSeries {
    /// Its labels, after `mechanism="fleet"`, then `extra`.
    fn labels(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![("mechanism", "fleet"), ("cgroup", self.cgroup.as_str())];
        if let Some(p) = &self.path {
            pairs.push(("path", p));
        }
        if let Some(u) = &self.pod_uid {
            pairs.push(("pod_uid", u));
        }
        if let Some(f) = &self.folded {
            pairs.push(("folded", f));
        }
        pairs.extend_from_slice(extra);
        labels(&pairs)
    }
}

/// Where the fleet counts of a scrape come from (`fleet attach --metrics`).
pub type FleetSource = Box<dyn Fn() -> Vec<FleetSeries> + Send + Sync>;

#[derive(Debug, Default)]
struct Scrape {
    /// Shown, by PID.
    processes: Vec<(Process, Counts)>,
    /// Supervisors shown, by PID.
    supervisors: Vec<Supervisor>,
    fleet: Vec<FleetSeries>,
    namespaces: BTreeMap<u64, Namespace>,
    over_cap: usize,
    no_counters: usize,
    unreadable: usize,
    seconds: f64,
}

fn scrape(reader: &mut Reader, cap: usize) -> Scrape {
    let t0 = Instant::now();
    let mut out = Scrape::default();
    let me = std::process::id() as i32;
    for pid in all_pids() {
        let found = match reader.process(pid) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && pid != me => {
                out.unreadable += 1;
                continue;
            }
            // Gone since /proc was listed.
            Err(_) => continue,
        };
        if let Some(at) = reader.supervisor_block.take() {
            if out.supervisors.len() < cap {
                out.supervisors.push(supervisor_at(pid, at));
            } else {
                out.over_cap += 1;
            }
        }
        let Some(found) = found else { continue };
        if let Some(ns) = found.netns {
            if out.namespaces.len() < cap || out.namespaces.contains_key(&ns) {
                let entry = out.namespaces.entry(ns).or_default();
                entry.processes += 1;
                if entry.timed_out.is_none() {
                    entry.timed_out = aborts_on_timeout(pid).ok();
                }
            }
        }
        match found.total() {
            None => out.no_counters += 1,
            Some(_) if out.processes.len() >= cap => out.over_cap += 1,
            Some(total) => out.processes.push((found, total)),
        }
    }
    out.seconds = t0.elapsed().as_secs_f64();
    out
}

/// One metric family of the text format.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    /// Labels (`{…}` or nothing) and value.
    samples: Vec<(String, String)>,
}

/// `"` `\` and newlines escaped, for a label value.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn render(s: &Scrape) -> String {
    let netns_label = |n: Option<u64>| n.map_or_else(String::new, |n| n.to_string());
    // The library's processes and the supervisors: (mechanism, netns, pid, command), counts.
    let rows: Vec<([String; 4], &Counts)> = s
        .processes
        .iter()
        .map(|(p, c)| {
            (
                [
                    "library".to_owned(),
                    netns_label(p.netns),
                    p.pid.to_string(),
                    p.command.clone(),
                ],
                c,
            )
        })
        .chain(s.supervisors.iter().filter_map(|sup| {
            Some((
                [
                    "supervisor".to_owned(),
                    netns_label(sup.netns),
                    sup.pid.to_string(),
                    sup.command.clone(),
                ],
                sup.counts.as_ref().ok()?,
            ))
        }))
        .collect();
    let row_labels = |r: &[String; 4], extra: Option<(&str, &str)>| {
        let mut pairs = vec![
            ("mechanism", r[0].as_str()),
            ("netns", r[1].as_str()),
            ("pid", r[2].as_str()),
            ("command", r[3].as_str()),
        ];
        pairs.extend(extra);
        labels(&pairs)
    };
    let per_process = |name, help, value: &dyn Fn(&Counts) -> u64| Family {
        name,
        help,
        kind: "counter",
        samples: rows
            .iter()
            .map(|(r, c)| (row_labels(r, None), value(c).to_string()))
            .collect(),
    };
    let per_option = |name, help, value: &dyn Fn(&Counts) -> [u64; N]| Family {
        name,
        help,
        kind: "counter",
        samples: rows
            .iter()
            .flat_map(|(r, c)| {
                let v = value(c);
                OPTIONS
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (row_labels(r, Some(("option", o.label))), v[i].to_string()))
                    .collect::<Vec<_>>()
            })
            .collect(),
    };
    let mut families = vec![
        per_process(
            "keepalive_shim_sockets_configured_total",
            "TCP sockets on which keepalive-shim set its options, counted by the preload library \
             in each process and by each seccomp supervisor for its whole tree \
             (mechanism=\"supervisor\"), once per socket.",
            &|c| c.sockets_configured,
        ),
        per_process(
            "keepalive_shim_connections_configured_total",
            "connect() calls on TCP sockets that carry keepalive-shim's options, counted by the \
             preload library in each process (accepted connections are not counted) and by the \
             seccomp supervisor under --trap connect; in fleet mode, per attachment, outgoing \
             and accepted connections (direction label).",
            &|c| c.connections_configured,
        ),
        per_process(
            "keepalive_shim_connections_excluded_total",
            "connect() calls to a destination the rules exclude (KEEPALIVE_EXCLUDE, or not in \
             KEEPALIVE_INCLUDE): the socket got back what it had without keepalive-shim.",
            &|c| c.connections_excluded,
        ),
        per_option(
            "keepalive_shim_options_left_to_program_total",
            "Options the program set itself on a socket and keepalive-shim kept (not under \
             KEEPALIVE_FORCE), once per socket and option.",
            &|c| c.options_left_to_program,
        ),
        per_option(
            "keepalive_shim_options_refused_total",
            "Options the kernel refused when keepalive-shim set them (a seccomp filter, an old \
             kernel); the socket works without them.",
            &|c| c.options_refused,
        ),
        Family {
            name: "keepalive_shim_connections_timed_out_total",
            help: "Connections the kernel ended after a timeout in this network namespace \
                   (TcpExt TCPAbortOnTimeout): every program in it, with or without \
                   keepalive-shim; keepalive probes unanswered, the user timeout, or \
                   retransmissions exhausted; since the namespace was made. Shown for the \
                   namespaces of processes that have the library. In fleet mode \
                   (mechanism=\"fleet\", timer=\"retransmission\"): the connections of the \
                   attachment that tcp_write_timeout() ended (BPF_SOCK_OPS_RTO_CB, expired): \
                   retransmissions or the user timeout with data unacknowledged, or SYN retries; \
                   exact; keepalive aborts are in keepalive_shim_connections_aborted_total.",
            kind: "counter",
            samples: s
                .namespaces
                .iter()
                .filter_map(|(ns, n)| {
                    Some((
                        labels(&[("netns", &ns.to_string())]),
                        n.timed_out?.to_string(),
                    ))
                })
                .collect(),
        },
        Family {
            name: "keepalive_shim_processes",
            help: "Processes that have the keepalive-shim library loaded, by network namespace.",
            kind: "gauge",
            samples: s
                .namespaces
                .iter()
                .map(|(ns, n)| {
                    (
                        labels(&[("netns", &ns.to_string())]),
                        n.processes.to_string(),
                    )
                })
                .collect(),
        },
        Family {
            name: "keepalive_shim_processes_not_shown",
            help: "Processes without series of their own: over_cap (beyond --max-processes, by \
                   PID), no_counters (a library without counters, of another layout version, or \
                   whose counters could not be read), unreadable (their memory maps could not \
                   be read: run as root).",
            kind: "gauge",
            samples: [
                ("over_cap", s.over_cap),
                ("no_counters", s.no_counters),
                ("unreadable", s.unreadable),
            ]
            .iter()
            .map(|(r, n)| (labels(&[("reason", r)]), n.to_string()))
            .collect(),
        },
        Family {
            name: "keepalive_shim_scrape_duration_seconds",
            help: "How long this scrape took to read /proc.",
            kind: "gauge",
            samples: vec![(String::new(), format!("{:.6}", s.seconds))],
        },
    ];
    if !s.fleet.is_empty() {
        add_fleet(&mut families, &s.fleet);
    }
    let mut out = String::new();
    for f in &families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\\', "\\\\"));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (l, v) in &f.samples {
            let _ = writeln!(out, "{}{l} {v}", f.name);
        }
    }
    out
}

/// Fleet mode's series, by attachment (`mechanism="fleet"`, its cgroup), into the families of
/// the same names, and the family only fleet mode has.
fn add_fleet(families: &mut Vec<Family<'_>>, fleet: &[FleetSeries]) {
    let mut push = |name: &str, l: String, v: u64| {
        if let Some(f) = families.iter_mut().find(|f| f.name == name) {
            f.samples.push((l, v.to_string()));
        }
    };
    for f in fleet {
        let c = &f.counts;
        let at = |extra: &[(&str, &str)]| f.labels(extra);
        push(
            "keepalive_shim_connections_configured_total",
            at(&[("direction", "outgoing")]),
            c.connections_configured,
        );
        push(
            "keepalive_shim_connections_configured_total",
            at(&[("direction", "accepted")]),
            c.accepted_configured,
        );
        push(
            "keepalive_shim_connections_excluded_total",
            at(&[]),
            c.connections_excluded,
        );
        for (i, o) in OPTIONS.iter().enumerate() {
            push(
                "keepalive_shim_options_left_to_program_total",
                at(&[("option", o.label)]),
                c.options_left_to_program[i],
            );
        }
        push(
            "keepalive_shim_connections_timed_out_total",
            at(&[("timer", "retransmission")]),
            c.timed_out,
        );
    }
    let at = families
        .iter()
        .position(|f| f.name == "keepalive_shim_processes")
        .unwrap_or(families.len());
    families.insert(
        at,
        Family {
            name: "keepalive_shim_connections_aborted_total",
            help: "Fleet mode: connections keepalive-shim configured that went from ESTABLISHED \
                   or CLOSE_WAIT straight to CLOSE with no retransmission timeout before \
                   (BPF_SOCK_OPS_STATE_CB): the keepalive timer's abort (probes unanswered, or \
                   the user timeout reached while probing), and also an RST received, the \
                   program's own abortive close (SO_LINGER 0) or a zero-window probe timeout, \
                   which a BPF program cannot tell apart from it.",
            kind: "counter",
            samples: fleet
                .iter()
                .map(|f| (f.labels(&[]), f.counts.aborted.to_string()))
                .collect(),
        },
    );
}

// --- The endpoint ----------------------------------------------------------------------------

/// Connections served at once, and waiting.
const WORKERS: usize = 2;
const QUEUE: usize = 8;
/// To send a whole request, and to take the answer.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// The largest request head read.
const MAX_REQUEST: usize = 8192;

pub fn main(args: Args) -> ExitCode {
    let listener = match listen(args.listen) {
        Ok(l) => l,
        Err(message) => {
            say!("{message}");
            return ExitCode::FAILURE;
        }
    };
    serve_forever(listener, args.max_processes, None);
    ExitCode::SUCCESS
}

/// The listening socket for `addr`, said on stderr (`serving http://ADDR/metrics`), or why not.
pub fn listen(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    say!("serving http://{bound}/metrics");
    Ok(listener)
}

/// Serves `/metrics` on `listener` until it fails: the processes with the library, the
/// supervisors, and, when given, fleet mode's counts from `fleet`.
pub fn serve_forever(listener: TcpListener, cap: usize, fleet: Option<FleetSource>) {
    let reader = Arc::new(Mutex::new(Reader::default()));
    let fleet = Arc::new(fleet);
    let (tx, rx) = mpsc::sync_channel::<TcpStream>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..WORKERS {
        let rx = Arc::clone(&rx);
        let reader = Arc::clone(&reader);
        let fleet = Arc::clone(&fleet);
        std::thread::spawn(move || {
            loop {
                let next = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(stream) => serve(stream, &reader, cap, fleet.as_ref().as_ref()),
                    Err(_) => return,
                }
            }
        });
    }
    for stream in listener.incoming() {
        match stream {
            // A full queue: the connection is closed (dropped) at once.
            Ok(stream) => drop(tx.try_send(stream)),
            // Out of descriptors, or the like: not a busy loop.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// The request in `head` (a complete request head), answered how.
fn route(method: &str, path: &str) -> Asked {
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Asked::MethodNotAllowed,
    };
    if path.split('?').next() == Some("/metrics") {
        Asked::Metrics { head }
    } else {
        Asked::NotFound
    }
}

/// Reads one request head from `stream`: what it asks, or `None` when the client went away or
/// took too long.
fn read_request(stream: &mut TcpStream) -> Option<Asked> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = stream.read(&mut buf[len..]).ok()?;
        if n == 0 {
            return None;
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return Some(route(req.method.unwrap_or(""), req.path.unwrap_or("")));
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return Some(Asked::Bad),
        }
    }
}

fn serve(mut stream: TcpStream, reader: &Mutex<Reader>, cap: usize, fleet: Option<&FleetSource>) {
    let _ = stream.set_write_timeout(Some(REQUEST_TIME));
    let Some(asked) = read_request(&mut stream) else {
        return;
    };
    let (status, extra, body, head) = match asked {
        Asked::Metrics { head } => {
            let text = match reader.lock() {
                Ok(mut r) => {
                    let mut s = scrape(&mut r, cap);
                    if let Some(read) = fleet {
                        s.fleet = read();
                    }
                    render(&s)
                }
                Err(_) => String::new(),
            };
            ("200 OK", "", text, head)
        }
        Asked::NotFound => (
            "404 Not Found",
            "",
            "keepalive-shim serves /metrics only\n".to_owned(),
            false,
        ),
        Asked::MethodNotAllowed => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "GET or HEAD only\n".to_owned(),
            false,
        ),
        Asked::Bad => ("400 Bad Request", "", "bad request\n".to_owned(), false),
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        response.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&response);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Let the client read the answer before the close (a close with unread data would reset).
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read(&mut [0u8; 512]);
}

/// Process records for `inspect --json`: its counters under the metrics' keys.
pub fn process_json(p: &Process) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("kind".into(), "process".into());
    map.insert("pid".into(), p.pid.into());
    map.insert("command".into(), p.command.clone().into());
    if let Some(total) = p.total() {
        map.extend(total.json());
    }
    let copies: Vec<Value> = p
        .copies
        .iter()
        .map(|c| match &c.counts {
            Ok(counts) => json!({"path": c.path, "counters": Value::Object(counts.json())}),
            Err(e) => json!({"path": c.path, "counters": null, "error": e}),
        })
        .collect();
    map.insert("libraries".into(), copies.into());
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_name_the_library_copies() {
        let maps = "\
7f0000000000-7f0000001000 r--p 00000000 08:01 1234 /opt/ka/libkeepalive_shim.so
7f0000001000-7f0000005000 r-xp 00001000 08:01 1234 /opt/ka/libkeepalive_shim.so
7f0000010000-7f0000011000 r--p 00000000 08:01 99 /tmp/copy two/libkeepalive_shim.so (deleted)
7f0000020000-7f0000021000 r--p 00000000 08:01 5 /usr/lib/libc.so.6
7f0000030000-7f0000031000 rw-p 00000000 00:00 0 [heap]
";
        let found = mapped_libraries(maps);
        assert_eq!(
            found,
            vec![
                Mapped {
                    path: "/opt/ka/libkeepalive_shim.so".into(),
                    start: 0x7f0000000000,
                    end: 0x7f0000001000
                },
                Mapped {
                    path: "/tmp/copy two/libkeepalive_shim.so (deleted)".into(),
                    start: 0x7f0000010000,
                    end: 0x7f0000011000
                },
            ]
        );
    }

    #[test]
    fn blocks_are_read_by_magic_and_version() {
        let mut block = Vec::new();
        block.extend_from_slice(&MAGIC.to_le_bytes());
        block.extend_from_slice(&VERSION.to_le_bytes());
        block.extend_from_slice(&(LIBRARY_COUNTERS as u32).to_le_bytes());
        for i in 0..LIBRARY_COUNTERS as u64 {
            block.extend_from_slice(&(i + 1).to_le_bytes());
        }
        let c = parse_block(&block).unwrap();
        assert_eq!(
            (
                c.sockets_configured,
                c.connections_configured,
                c.connections_excluded
            ),
            (1, 2, 3)
        );
        assert_eq!(c.options_left_to_program, [4, 5, 6, 7, 8]);
        assert_eq!(c.options_refused, [9, 10, 11, 12, 13]);
        let mut other = block.clone();
        other[8] = 2;
        assert!(parse_block(&other).unwrap_err().contains("version 2"));
        assert!(
            parse_block(&block[..20])
                .unwrap_err()
                .contains("counters where")
        );
        assert!(parse_block(&[0; 16]).unwrap_err().contains("no counters"));
    }

    #[test]
    fn netstat_gives_tcp_abort_on_timeout() {
        let text = "TcpExt: SyncookiesSent TCPAbortOnTimeout TCPAbortOnLinger\n\
                    TcpExt: 0 7 0\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(netstat_value(text, "TcpExt:", "TCPAbortOnTimeout"), Some(7));
        assert_eq!(netstat_value(text, "TcpExt:", "Nothing"), None);
        let me = std::process::id() as i32;
        assert!(aborts_on_timeout(me).is_ok());
        assert!(netns_of(me).is_some());
    }

    #[test]
    fn the_library_in_this_workspace_publishes_its_counters() {
        let lib = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/release/libkeepalive_shim.so"
        );
        let Ok(bytes) = std::fs::read(lib) else {
            eprintln!("skipped: {lib} not built");
            return;
        };
        let s = find_symbol(&bytes).unwrap();
        assert_eq!(s.size as usize, HEADER + 8 * LIBRARY_COUNTERS);
        assert_eq!(s.first_load, 0);
        assert!(find_symbol(b"\x7fELF\x01\x01").is_err());
    }

    #[test]
    fn a_process_gone_is_an_error_not_a_panic() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let e = read_remote(pid, 0x1000, HEADER).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        let e = Reader::default().process(pid).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn requests_are_routed() {
        assert_eq!(route("GET", "/metrics"), Asked::Metrics { head: false });
        assert_eq!(route("HEAD", "/metrics?x=1"), Asked::Metrics { head: true });
        assert_eq!(route("GET", "/"), Asked::NotFound);
        assert_eq!(route("GET", "/metricsx"), Asked::NotFound);
        assert_eq!(route("POST", "/metrics"), Asked::MethodNotAllowed);
    }

    #[test]
    fn the_text_format_escapes_and_types() {
        let p = Process {
            pid: 42,
            command: "we\"ird\\".into(),
            netns: Some(4026531840),
            copies: vec![],
        };
        let counts = Counts {
            sockets_configured: 3,
            connections_configured: 2,
            ..Counts::default()
        };
        let mut s = Scrape::default();
        s.processes.push((p, counts));
        s.namespaces.insert(
            4026531840,
            Namespace {
                timed_out: Some(9),
                processes: 1,
            },
        );
        let text = render(&s);
        assert!(text.contains(
            "keepalive_shim_connections_configured_total{mechanism=\"library\",\
             netns=\"4026531840\",pid=\"42\",command=\"we\\\"ird\\\\\"} 2\n"
        ));
        assert!(
            text.contains("keepalive_shim_connections_timed_out_total{netns=\"4026531840\"} 9\n")
        );
        assert!(text.contains("# TYPE keepalive_shim_connections_timed_out_total counter\n"));
        assert!(text.contains("option=\"TCP_USER_TIMEOUT\"} 0\n"));
        assert!(text.contains("keepalive_shim_processes_not_shown{reason=\"over_cap\"} 0\n"));
    }
}
