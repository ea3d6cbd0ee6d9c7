//! Every `/proc` reader, once: the process list, a process's status fields, parent, command
//! name, environment variable, network namespace and its TCP tables and netstat counters, its
//! socket descriptors, and its memory maps line by line.
//!
//! Each reader is bounded: small files are read into a fixed cap, `maps` and the TCP tables a
//! line at a time through a fixed buffer (a process with 60,000 mappings costs no more memory
//! than one with ten), and a line longer than any the kernel writes is skipped, not grown into.
//! Names are returned as bytes: what a process calls itself is not text to trust.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::os::unix::fs::OpenOptionsExt;

/// The most of a small `/proc` file (`status`, `stat`, `comm`, `cgroup`) that is read.
pub const SMALL: usize = 64 << 10;
/// The most of a process's environment searched for one variable.
pub const ENVIRON_MAX: usize = 4 << 20;
/// A line of `maps` or a TCP table longer than this is skipped (the kernel's are a path, at most
/// `PATH_MAX`, and a hundred bytes of fields).
pub const LINE_MAX: usize = 8 << 10;

/// Opens a `/proc` file for reading: never a controlling terminal, never left to a child.
fn open(path: &str) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
}

/// At most `cap` bytes of `path`.
pub fn read_capped(path: &str, cap: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open(path)?.take(cap as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// The contents of a small file (`path` NUL-terminated) read into `buf` with raw calls and no
/// allocation; a file that fills the buffer is an error (EFBIG: it might go on).
pub fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    if !path.ends_with('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `path` ends in NUL; a plain read-only open.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0;
    let result = loop {
        // SAFETY: the rest of `buf` is valid for writes.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n < 0 {
            break Err(io::Error::last_os_error());
        }
        if n == 0 {
            break Ok(len);
        }
        len += n as usize;
        if len == buf.len() {
            break Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
    };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    result.map(|len| &buf[..len])
}

/// The process ids in `/proc`, sorted.
pub fn pids() -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&pid: &i32| pid > 0)
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Whether process `pid` still exists.
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A process's command name (`comm`: at most 16 bytes, any bytes but NUL), without its newline.
pub fn comm(pid: i32) -> io::Result<Vec<u8>> {
    let mut name = read_capped(&format!("/proc/{pid}/comm"), 64)?;
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    Ok(name)
}

/// A `/proc/…/status` file: `Name:\tvalue` lines.
pub struct Status(String);

impl Status {
    /// `/proc/WHO/status`, where WHO is a pid, a tid, `self` or `thread-self`.
    pub fn read(who: &str) -> io::Result<Status> {
        let bytes = read_capped(&format!("/proc/{who}/status"), SMALL)?;
        Ok(Status(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Of text already read (tests, and callers that read the file their own way).
    pub fn parse(text: &str) -> Status {
        Status(text.to_owned())
    }

    /// The value of field `name` (without its colon), trimmed.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            Some(rest.trim())
        })
    }

    /// A numeric field.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.field(name)?.parse().ok()
    }

    /// A hexadecimal field (`CapEff`, `SigBlk`).
    pub fn hex(&self, name: &str) -> Option<u64> {
        u64::from_str_radix(self.field(name)?, 16).ok()
    }
}

/// The parent of `pid`, from `/proc/PID/stat` (after the command in parentheses, which may hold
/// anything: the last `)` ends it).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = read_capped(&format!("/proc/{pid}/stat"), SMALL).ok()?;
    let at = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[at + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The ancestors of `pid`, nearest first, at most `max`, stopping at PID 1's parent (0) or a
/// loop.
pub fn ancestors(pid: i32, max: usize) -> Vec<i32> {
    let mut out = Vec::new();
    let mut at = pid;
    while out.len() < max {
        let Some(ppid) = parent(at) else { break };
        if ppid <= 0 || out.contains(&ppid) {
            break;
        }
        out.push(ppid);
        at = ppid;
    }
    out
}

/// The value of variable `name` in the environment `pid` started with (at most
/// [`ENVIRON_MAX`] bytes of it searched).
pub fn environ_var(pid: i32, name: &[u8]) -> Option<Vec<u8>> {
    let env = read_capped(&format!("/proc/{pid}/environ"), ENVIRON_MAX).ok()?;
    env.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name)?.strip_prefix(b"=")?;
        Some(value.to_vec())
    })
}

/// The inode of the namespace a `/proc/…/ns/…` link names (`net:[INODE]`), read from the link:
/// half the cost of a stat of the namespace.
pub fn namespace_inode(link: &str) -> io::Result<u64> {
    let target = std::fs::read_link(link)?;
    target
        .to_str()
        .and_then(|t| {
            let (_, rest) = t.split_once(":[")?;
            rest.strip_suffix(']')?.parse().ok()
        })
        .map_or_else(
            || std::fs::metadata(link).map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
            Ok,
        )
}

/// The inode of `pid`'s network namespace.
pub fn netns(pid: i32) -> Option<u64> {
    namespace_inode(&format!("/proc/{pid}/ns/net")).ok()
}

/// A value of `/proc/net/netstat`: a line of names after `prefix`, then a line of values.
pub fn netstat_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == name) {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// `TcpExt: TCPAbortOnTimeout` of `pid`'s network namespace (`/proc/PID/net/netstat` shows the
/// namespace of the process).
pub fn aborts_on_timeout(pid: i32) -> io::Result<u64> {
    let text = read_capped(&format!("/proc/{pid}/net/netstat"), SMALL)?;
    netstat_value(
        &String::from_utf8_lossy(&text),
        "TcpExt:",
        "TCPAbortOnTimeout",
    )
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no TcpExt: TCPAbortOnTimeout in netstat",
        )
    })
}

/// The socket descriptors of `pid`: socket inode → descriptor number.
pub fn socket_fds(pid: i32) -> io::Result<HashMap<u64, i32>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let fd = entry.file_name().to_str().and_then(|f| f.parse().ok());
        if let Some(fd) = fd
            && let Some(inode) = socket_inode(pid, fd)
        {
            out.insert(inode, fd);
        }
    }
    Ok(out)
}

/// The inode of the socket that is descriptor `fd` of `pid` (or of thread `pid`); `None` when it
/// is no socket (or is gone).
pub fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Calls `each` with every line of `file` (without its newline), through one fixed buffer: a line
/// longer than [`LINE_MAX`] is skipped, and `each` can stop early. How many lines were read.
pub fn lines(
    mut file: impl Read,
    mut each: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<usize> {
    let mut buf = vec![0u8; LINE_MAX];
    let (mut len, mut count, mut skipping) = (0usize, 0usize, false);
    loop {
        let n = match file.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if len > 0 && !skipping {
                count += 1;
                let _ = each(&buf[..len]);
            }
            return Ok(count);
        }
        len += n;
        let mut start = 0;
        while let Some(at) = buf[start..len].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + at];
            start += at + 1;
            if skipping {
                skipping = false;
                continue;
            }
            count += 1;
            if each(line).is_break() {
                return Ok(count);
            }
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if len == buf.len() {
            // No newline in a whole buffer: the rest of this line is skipped.
            skipping = true;
            len = 0;
        }
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a [u8],
    pub offset: u64,
    /// Device as `major:minor`, and inode, of a mapped file (0 for none).
    pub dev: (u32, u32),
    pub inode: u64,
    /// What the kernel printed as the name: a path (newlines escaped as `\012`, so not
    /// necessarily the file's name), `[heap]`, `[anon:NAME]`, or nothing.
    pub name: &'a [u8],
}

impl<'a> Mapping<'a> {
    /// Parses a maps line; `None` for anything not shaped like one.
    pub fn parse(line: &'a [u8]) -> Option<Mapping<'a>> {
        let mut rest = line;
        let mut field = || {
            let start = rest.iter().position(|&b| b != b' ')?;
            rest = &rest[start..];
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            let (f, r) = rest.split_at(end);
            rest = r;
            Some(f)
        };
        let hex = |f: &[u8]| u64::from_str_radix(std::str::from_utf8(f).ok()?, 16).ok();
        let range = field()?;
        let perms = field()?;
        let offset = hex(field()?)?;
        let dev = field()?;
        let inode: u64 = std::str::from_utf8(field()?).ok()?.parse().ok()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let colon = dev.iter().position(|&b| b == b':')?;
        let major = u32::from_str_radix(std::str::from_utf8(&dev[..colon]).ok()?, 16).ok()?;
        let minor = u32::from_str_radix(std::str::from_utf8(&dev[colon + 1..]).ok()?, 16).ok()?;
        let name_at = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        Some(Mapping {
            start: hex(&range[..dash])?,
            end: hex(&range[dash + 1..])?,
            perms,
            offset,
            dev: (major, minor),
            inode,
            name: &rest[name_at..],
        })
    }
}

/// Calls `each` with every mapping of `pid`, a line at a time, at most `max_lines`; how many
/// lines were read, and whether the cap cut it short.
pub fn maps(
    pid: i32,
    max_lines: usize,
    mut each: impl FnMut(&Mapping) -> ControlFlow<()>,
) -> io::Result<(usize, bool)> {
    let file = open(&format!("/proc/{pid}/maps"))?;
    let mut capped = false;
    let mut seen = 0usize;
    let n = lines(file, |line| {
        seen += 1;
        if seen > max_lines {
            capped = true;
            return ControlFlow::Break(());
        }
        match Mapping::parse(line) {
            Some(m) => each(&m),
            None => ControlFlow::Continue(()),
        }
    })?;
    Ok((n.min(max_lines), capped))
}

/// The file process `pid` maps at `start`-`end`, opened through `/proc/PID/map_files` (the very
/// file mapped, whatever its name or where it is now; needs `CAP_CHECKPOINT_RESTORE` or
/// `CAP_SYS_ADMIN`); see [`open_verified`].
pub fn open_mapped(pid: i32, m: &Mapping) -> io::Result<File> {
    open_verified(
        &format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end),
        true,
        m,
    )
}

/// The file process `pid` maps, opened by the name `maps` printed, inside the process's root
/// (`/proc/PID/root`), without following a link at the end; see [`open_verified`]. For readers
/// without the right to `map_files` (a user reading its own processes): the name may not be the
/// file's (a newline prints as `\012`; a mount may put another file there), which the check
/// refuses.
pub fn open_mapped_by_name(pid: i32, m: &Mapping) -> io::Result<File> {
    let name = std::str::from_utf8(m.name)
        .ok()
        .filter(|n| n.starts_with('/'))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no path to open"))?;
    open_verified(&format!("/proc/{pid}/root{name}"), false, m)
}

/// Opens `path` only as the regular file with the device and inode `m` shows: first with
/// `O_PATH` (nothing of the file's own is run: a FIFO cannot block, a device sees no open; a
/// link at the end is not followed unless `follow`, which the magic links of `map_files`
/// need), checked, then reopened for reading through that descriptor, and checked again.
fn open_verified(path: &str, follow: bool, m: &Mapping) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let same = |meta: &std::fs::Metadata| {
        let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
        meta.file_type().is_file() && meta.ino() == m.inode && dev == m.dev
    };
    let refused = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the mapped file is not the regular file its maps line names",
        )
    };
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let handle = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | nofollow)
        .open(path)?;
    if !same(&handle.metadata()?) {
        return Err(refused());
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    if !same(&file.metadata()?) {
        return Err(refused());
    }
    Ok(file)
}

/// A TCP table row (`/proc/PID/net/tcp` or `tcp6`).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The kernel's state number (1 ESTABLISHED … 11 CLOSING).
    pub state: u8,
    /// 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe.
    pub timer: u8,
    /// Clock ticks until the timer fires.
    pub timer_ticks: u64,
    pub inode: u64,
}

impl TcpRow {
    /// Parses one line of a TCP table; `None` for the header or garbage.
    pub fn parse(line: &str) -> Option<TcpRow> {
        let f: Vec<&str> = line.split_whitespace().take(10).collect();
        let (timer, when) = f.get(5)?.split_once(':')?;
        Some(TcpRow {
            local: parse_addr(f.get(1)?)?,
            peer: parse_addr(f.get(2)?)?,
            state: u8::from_str_radix(f.get(3)?, 16).ok()?,
            timer: u8::from_str_radix(timer, 16).ok()?,
            timer_ticks: u64::from_str_radix(when, 16).ok()?,
            inode: f.get(9)?.parse().ok()?,
        })
    }

    /// The state's name, as `ss` prints it.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            0x01 => "ESTABLISHED",
            0x02 => "SYN_SENT",
            0x03 => "SYN_RECV",
            0x04 => "FIN_WAIT1",
            0x05 => "FIN_WAIT2",
            0x06 => "TIME_WAIT",
            0x07 => "CLOSE",
            0x08 => "CLOSE_WAIT",
            0x09 => "LAST_ACK",
            0x0A => "LISTEN",
            0x0B => "CLOSING",
            _ => "UNKNOWN",
        }
    }

    /// Seconds until the timer fires.
    pub fn timer_seconds(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.timer_ticks as f64 / ticks
    }
}

/// `0100007F:1F90` → 127.0.0.1:8080; IPv6 as four 32-bit words, each in host order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
            .ok()
            .map(u32::to_le_bytes)
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every row of the TCP tables (IPv4 and IPv6) of `pid`'s network namespace.
pub fn tcp_rows(pid: i32) -> Vec<TcpRow> {
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(file) = open(&format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        let _ = lines(file, |line| {
            if let Some(row) = std::str::from_utf8(line).ok().and_then(TcpRow::parse) {
                rows.push(row);
            }
            ControlFlow::Continue(())
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_lines_parse() {
        let v4 = "   0: 0100007F:1F90 0200007F:D431 01 00000000:00000000 02:00000B86 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        let row = TcpRow::parse(v4).unwrap();
        assert_eq!(row.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(row.peer, "127.0.0.2:54321".parse().unwrap());
        assert_eq!(
            (row.state_name(), row.timer, row.inode),
            ("ESTABLISHED", 2, 123456)
        );
        assert_eq!(row.timer_ticks, 0xB86);
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1";
        let row = TcpRow::parse(v6).unwrap();
        assert_eq!(row.local, "[::1]:8080".parse().unwrap());
        assert_eq!(row.state_name(), "LISTEN");
        let mapped = "   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 7 1";
        assert_eq!(
            TcpRow::parse(mapped).unwrap().local,
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(TcpRow::parse("garbage"), None);
    }

    #[test]
    fn maps_lines_parse_with_any_name() {
        let m = Mapping::parse(
            b"7f0000000000-7f0000001000 r--p 00001000 fd:01 1234        /opt/my dir/libx.so (deleted)",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x7f0000000000, 0x7f0000001000, 0x1000)
        );
        assert_eq!((m.dev, m.inode), ((0xfd, 1), 1234));
        assert_eq!(m.name, b"/opt/my dir/libx.so (deleted)");
        let anon =
            Mapping::parse(b"7f00-7f01 rw-p 00000000 00:00 0 [anon:keepalive-shim-counters]")
                .unwrap();
        assert_eq!(anon.name, b"[anon:keepalive-shim-counters]");
        let bare = Mapping::parse(b"7f00-7f01 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(bare.name, b"");
        assert_eq!(Mapping::parse(b"garbage"), None);
        assert_eq!(Mapping::parse(b""), None);
    }

    #[test]
    fn lines_are_read_through_a_fixed_buffer_and_overlong_ones_skipped() {
        let mut text = b"one\ntwo\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', LINE_MAX * 3));
        text.extend_from_slice(b"\nthree\nfour");
        let mut seen = Vec::new();
        let n = lines(&text[..], |l| {
            seen.push(String::from_utf8_lossy(l).into_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, ["one", "two", "three", "four"]);
        assert_eq!(n, 4);
        let mut first = None;
        lines(&b"a\nb\n"[..], |l| {
            first = Some(l.to_vec());
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(first.unwrap(), b"a");
    }

    #[test]
    fn this_process_reads_back() {
        let me = std::process::id() as i32;
        let status = Status::read("self").unwrap();
        assert_eq!(status.number("Pid"), Some(u64::from(std::process::id())));
        assert!(status.hex("CapEff").is_some());
        assert_eq!(parent(me), Some(std::os::unix::process::parent_id() as i32));
        assert!(!ancestors(me, 64).is_empty());
        assert!(netns(me).is_some());
        assert!(aborts_on_timeout(me).is_ok());
        assert!(!comm(me).unwrap().is_empty());
        assert!(pids().contains(&me));
        let mut named = 0;
        let (n, capped) = maps(me, 1 << 20, |m| {
            named += usize::from(!m.name.is_empty());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(n > 0 && named > 0 && !capped);
        let (n, capped) = maps(me, 2, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!((n, capped), (2, true));
        let mut buf = [0u8; 8];
        assert_eq!(
            read_small("/proc/self/status\0", &mut buf)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EFBIG)
        );
    }

    #[test]
    fn netstat_gives_tcp_abort_on_timeout() {
        let text = "TcpExt: SyncookiesSent TCPAbortOnTimeout TCPAbortOnLinger\n\
                    TcpExt: 0 7 0\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(netstat_value(text, "TcpExt:", "TCPAbortOnTimeout"), Some(7));
        assert_eq!(netstat_value(text, "TcpExt:", "Nothing"), None);
    }

    #[test]
    fn a_mapped_file_opens_only_as_itself() {
        // This test binary is mapped; map_files needs root (CAP_SYS_ADMIN): skip elsewhere.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let me = std::process::id() as i32;
        let mut found = None;
        maps(me, 1 << 20, |m| {
            if m.inode != 0 && m.offset == 0 && m.name.starts_with(b"/") {
                found = Some((m.start, m.end, m.dev, m.inode));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        let (start, end, dev, inode) = found.unwrap();
        let m = Mapping {
            start,
            end,
            perms: b"r--p",
            offset: 0,
            dev,
            inode,
            name: b"",
        };
        assert!(open_mapped(me, &m).is_ok());
        let wrong = Mapping {
            inode: inode + 1,
            ..m
        };
        assert!(open_mapped(me, &wrong).is_err());
        // By name: the same file, and refused when the name is another file's.
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        let named = Mapping {
            name: exe.to_str().unwrap().as_bytes(),
            ..m
        };
        let by_name = open_mapped_by_name(me, &named);
        let wrong_name = Mapping {
            name: b"/etc/hostname",
            ..m
        };
        assert!(open_mapped_by_name(me, &wrong_name).is_err());
        let fifo_like = Mapping {
            name: b"/dev/zero",
            ..m
        };
        assert!(open_mapped_by_name(me, &fifo_like).is_err());
        // The first mapping found may be another file than this test (the loader): only when
        // it is this test's own does the name lead to it.
        if let Ok(file) = by_name {
            let meta = file.metadata().unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), inode);
        }
    }
}
