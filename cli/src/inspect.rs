//! `keepalive-shim inspect`: the keepalive settings of a running process's TCP connections, read
//! from the live sockets (`pidfd_open` + `pidfd_getfd` + `getsockopt`), or, without permission to
//! take them, from what `/proc/PID/net/tcp` shows of each connection's timers. Beside them, for
//! each process that has the library loaded, what each copy of it counted (read from the live
//! process, `metrics.rs`), and the kernel's count of connections ended after a timeout in the
//! process's network namespace.

use crate::say;
use std::collections::HashMap;
use std::fmt::Write;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

/// Show the keepalive settings of a process's TCP connections.
///
/// Options are read from the live sockets, which needs the right to trace the process (root, or
/// its owner); without it, what /proc shows is used: whether a keepalive timer runs, and when it
/// fires.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim inspect 4242\n  \
    keepalive-shim inspect $(pidof python3) --json\n  \
    keepalive-shim inspect --all")]
pub struct Args {
    /// Process IDs to inspect.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pids: Vec<i32>,
    /// Every process with a TCP connection that can be read.
    #[arg(long)]
    all: bool,
    /// One JSON array, for scripts: the connections (`"kind": "connection"`), then a record
    /// per process (`"kind": "process"`) with the library's counters.
    #[arg(long)]
    json: bool,
    /// Read /proc only; never take the process's sockets.
    #[arg(long)]
    proc_only: bool,
}

/// One TCP socket of one process.
#[derive(Debug, Clone)]
struct Connection {
    pid: i32,
    command: String,
    fd: i32,
    local: SocketAddr,
    peer: SocketAddr,
    state: &'static str,
    /// Read from the socket (`Some`), or only inferred from /proc's timer (`None` when unknown).
    keepalive: Option<bool>,
    /// `[idle s, interval s, count, user timeout ms]`, when read from the socket.
    options: Option<[i32; 4]>,
    /// Seconds until the keepalive timer fires, when it runs.
    next_probe_s: Option<f64>,
    /// `"socket"` or `"proc"`.
    source: &'static str,
}

pub fn main(args: Args) -> ExitCode {
    let (pids, explicit) = if args.all {
        (all_pids(), false)
    } else {
        (args.pids.clone(), true)
    };
    let mut found = Vec::new();
    let mut views = Vec::new();
    let mut reader = crate::metrics::Reader::default();
    let mut failed = false;
    let mut unreadable = 0;
    let mut fallback_said = false;
    let mut read_any = false;
    for pid in pids {
        match connections(pid, args.proc_only) {
            Ok((conns, fallback)) => {
                read_any = true;
                if let Some(reason) = fallback.filter(|_| !args.proc_only) {
                    if explicit || !fallback_said {
                        say!(
                            "cannot take the sockets of process {pid} ({reason}): showing what \
                             /proc shows (keepalive timer on or off, and when it fires)"
                        );
                        fallback_said = true;
                    }
                }
                found.extend(conns);
                let view = ProcessView::read(&mut reader, pid);
                if explicit || matches!(view.library, Ok(Some(_))) || view.supervisor.is_some() {
                    views.push(view);
                }
            }
            Err(message) if explicit => {
                say!("{message}");
                failed = true;
            }
            // A process that exited during the scan is no process to read.
            Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {}
            Err(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        say!(
            "{unreadable} processes could not be read{}",
            if root {
                ""
            } else {
                " (run as root to see them all)"
            }
        );
    }
    if args.json {
        crate::output::out(format_args!("{}", json(&found, &views)));
    } else {
        if found.is_empty() {
            if read_any {
                crate::output::out(format_args!("no TCP connections"));
            }
        } else {
            crate::output::write_all(1, table(&found).as_bytes());
        }
        crate::output::write_all(1, counters_text(&views).as_bytes());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn all_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = crate::metrics::all_pids();
    pids.retain(|&pid| pid != me);
    pids
}

/// What the library counted in one process, and its network namespace's count of connections
/// ended after a timeout.
struct ProcessView {
    pid: i32,
    command: Option<String>,
    /// The library's copies (`None`: not loaded), or why the process could not be read.
    library: Result<Option<crate::metrics::Process>, String>,
    netns: Option<u64>,
    timed_out: Option<u64>,
    /// The seccomp supervisor it runs under (or is), and what that counted for its tree.
    supervisor: Option<crate::metrics::Supervisor>,
}

impl ProcessView {
    fn read(reader: &mut crate::metrics::Reader, pid: i32) -> ProcessView {
        let library = reader.process(pid).map_err(|e| match e.kind() {
            ErrorKind::NotFound => "the process exited before its counters were read".to_owned(),
            ErrorKind::PermissionDenied => {
                "cannot read its memory maps: permission denied (run as root or as its user)"
                    .to_owned()
            }
            _ => format!("cannot read its memory maps: {e}"),
        });
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim_end().to_owned());
        ProcessView {
            pid,
            command,
            library,
            netns: crate::metrics::netns_of(pid),
            timed_out: crate::metrics::aborts_on_timeout(pid).ok(),
            supervisor: reader.supervisor_of(pid),
        }
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let mut record = match &self.library {
            Ok(Some(p)) => crate::metrics::process_json(p),
            Ok(None) => json!({
                "kind": "process", "pid": self.pid, "command": self.command, "libraries": [],
            }),
            Err(e) => json!({
                "kind": "process", "pid": self.pid, "command": self.command, "error": e,
            }),
        };
        if let Value::Object(map) = &mut record {
            map.insert(
                "network_namespace".into(),
                json!({
                    "inode": self.netns,
                    "connections_timed_out": self.timed_out,
                    "counts": crate::metrics::TIMED_OUT_MEANS,
                }),
            );
            if let Some(sup) = &self.supervisor {
                map.insert("supervisor".into(), crate::metrics::supervisor_json(sup));
            }
        }
        record
    }
}

/// The counters of each process, for people.
fn counters_text(views: &[ProcessView]) -> String {
    let mut out = String::new();
    for v in views {
        let _ = write!(out, "\nprocess {}", v.pid);
        match &v.library {
            Err(e) => {
                let _ = writeln!(out, ": {e}");
            }
            Ok(None) => {
                let _ = writeln!(out, ": keepalive-shim is not loaded");
            }
            Ok(Some(p)) => {
                let _ = writeln!(out, " ({}):", p.command);
                for copy in &p.copies {
                    let _ = writeln!(out, "  keepalive-shim {}:", copy.path);
                    match &copy.counts {
                        Err(e) => {
                            let _ = writeln!(out, "    {e}");
                        }
                        Ok(c) => write_counts(&mut out, c, "connect() calls", true),
                    }
                }
                if p.copies.len() > 1 {
                    let _ = writeln!(
                        out,
                        "  ({} copies are loaded: only the first in the loader's order acts; the \
                         others count nothing)",
                        p.copies.len()
                    );
                }
            }
        }
        if let Some(sup) = &v.supervisor {
            let whose = if sup.pid == v.pid {
                "this process is a seccomp supervisor".to_owned()
            } else {
                format!("under the seccomp supervisor {} ({})", sup.pid, sup.command)
            };
            let _ = writeln!(out, "  {whose}, for its whole tree:");
            match &sup.counts {
                Err(e) => {
                    let _ = writeln!(out, "    {e}");
                }
                Ok(c) => write_counts(&mut out, c, "--trap connect", false),
            }
        }
        let netns = v.netns.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let timed_out = v
            .timed_out
            .map_or_else(|| "unreadable".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  network namespace {netns}: {timed_out} connections ended after a timeout \
             (TcpExt TCPAbortOnTimeout: every program in the namespace, with or without \
             keepalive-shim, every kind of timeout, since the namespace was made)"
        );
    }
    out
}

/// The TCP sockets of `pid`, and why its sockets could not be taken, when they could not.
/// The rows of one block of counts (a copy of the library's, or a supervisor's), indented under
/// its heading: `connect` says what the connections counted are; `excluded` whether the
/// destination rules' row is shown (the supervisor applies none).
fn write_counts(out: &mut String, c: &crate::metrics::Counts, connect: &str, excluded: bool) {
    let by_option = |v: &[u64; keepalive_shim_policy::options::N]| {
        let named: Vec<String> = keepalive_shim_policy::options::OPTIONS
            .iter()
            .zip(v)
            .filter(|(_, n)| **n > 0)
            .map(|(o, n)| format!("{} {n}", o.label))
            .collect();
        if named.is_empty() {
            "0".to_owned()
        } else {
            named.join(", ")
        }
    };
    let mut rows = vec![
        (
            "TCP sockets configured".to_owned(),
            c.sockets_configured.to_string(),
        ),
        (
            format!("connections configured ({connect})"),
            c.connections_configured.to_string(),
        ),
    ];
    if excluded {
        rows.push((
            "connections the rules excluded".to_owned(),
            c.connections_excluded.to_string(),
        ));
    }
    rows.push((
        "options left to the program".to_owned(),
        by_option(&c.options_left_to_program),
    ));
    rows.push((
        "options the kernel refused".to_owned(),
        by_option(&c.options_refused),
    ));
    for (what, value) in rows {
        let _ = writeln!(out, "    {what:<42} {value}");
    }
}

fn connections(pid: i32, proc_only: bool) -> Result<(Vec<Connection>, Option<String>), String> {
    let base = format!("/proc/{pid}");
    let command = std::fs::read_to_string(format!("{base}/comm"))
        .map(|c| c.trim_end().to_owned())
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => format!("no process {pid}"),
            _ => format!("cannot read process {pid}: {e}"),
        })?;
    let fds = std::fs::read_dir(format!("{base}/fd")).map_err(|e| match e.kind() {
        ErrorKind::NotFound => format!("no process {pid}"),
        ErrorKind::PermissionDenied => format!(
            "cannot read the descriptors of process {pid} ({command}): permission denied \
             (run as root or as the user it runs as)"
        ),
        _ => format!("cannot read the descriptors of process {pid}: {e}"),
    })?;
    // Socket inode → descriptor.
    let mut inodes = HashMap::new();
    for entry in fds.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        let fd = entry
            .file_name()
            .to_str()
            .and_then(|f| f.parse::<i32>().ok());
        if let (Some(inode), Some(fd)) = (inode, fd) {
            inodes.insert(inode, fd);
        }
    }
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("{base}/net/{table}")).unwrap_or_default();
        rows.extend(text.lines().skip(1).filter_map(parse_proc_line));
    }
    let mut out = Vec::new();
    let mut fallback = None;
    let pidfd = if proc_only || inodes.is_empty() {
        None
    } else {
        match PidFd::open(pid) {
            Ok(p) => Some(p),
            Err(e) => {
                fallback = Some(e.to_string());
                None
            }
        }
    };
    for row in rows {
        let Some(&fd) = inodes.get(&row.inode) else {
            continue;
        };
        let mut conn = Connection {
            pid,
            command: command.clone(),
            fd,
            local: row.local,
            peer: row.peer,
            state: row.state,
            keepalive: None,
            options: None,
            next_probe_s: (row.timer == 2).then_some(row.timer_s),
            source: "proc",
        };
        let read = pidfd.as_ref().map(|p| p.options(fd));
        match read {
            Some(Ok((on, options))) => {
                conn.keepalive = Some(on);
                conn.options = Some(options);
                conn.source = "socket";
            }
            Some(Err(e)) => {
                fallback.get_or_insert_with(|| e.to_string());
                conn.keepalive = infer_keepalive(&row);
            }
            None => conn.keepalive = infer_keepalive(&row),
        }
        if conn.keepalive == Some(false) {
            conn.next_probe_s = None;
        }
        out.push(conn);
    }
    out.sort_by_key(|c| c.fd);
    Ok((out, fallback))
}

/// What /proc's timer says: a keepalive timer means keepalive is on; an idle established
/// connection with no timer has it off; anything else (data in flight, listening) is unknown.
fn infer_keepalive(row: &ProcRow) -> Option<bool> {
    match (row.timer, row.state) {
        (2, "ESTABLISHED") => Some(true),
        (0, "ESTABLISHED") => Some(false),
        _ => None,
    }
}

/// A process's descriptor table, opened with `pidfd_open`.
struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    fn open(pid: i32) -> std::io::Result<PidFd> {
        crate::os::pidfd_open(pid, 0).map(PidFd)
    }

    /// Takes a copy of the process's descriptor `fd` and reads keepalive and the four values.
    fn options(&self, fd: i32) -> std::io::Result<(bool, [i32; 4])> {
        let ours = crate::os::pidfd_getfd(&self.0, fd)?;
        let [on, idle, interval, count, user_timeout] =
            crate::os::options(std::os::fd::AsRawFd::as_raw_fd(&ours))?;
        Ok((on != 0, [idle, interval, count, user_timeout]))
    }
}

/// One line of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Debug, PartialEq)]
struct ProcRow {
    local: SocketAddr,
    peer: SocketAddr,
    state: &'static str,
    /// 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe.
    timer: u8,
    timer_s: f64,
    inode: u64,
}

fn parse_proc_line(line: &str) -> Option<ProcRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (timer, when) = f.get(5)?.split_once(':')?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcRow {
        local: parse_addr(f.get(1)?)?,
        peer: parse_addr(f.get(2)?)?,
        state: state_name(u8::from_str_radix(f.get(3)?, 16).ok()?),
        timer: u8::from_str_radix(timer, 16).ok()?,
        timer_s: u64::from_str_radix(when, 16).ok()? as f64 / ticks,
        inode: f.get(9)?.parse().ok()?,
    })
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

fn state_name(code: u8) -> &'static str {
    match code {
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

fn table(conns: &[Connection]) -> String {
    let header = [
        "PID",
        "COMMAND",
        "FD",
        "LOCAL",
        "PEER",
        "STATE",
        "KEEPALIVE",
        "IDLE",
        "INTVL",
        "CNT",
        "USER_TIMEOUT",
        "NEXT_PROBE",
        "FROM",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|c| {
            let [idle, intvl, cnt, ut] = c.options.map_or_else(
                || [dash(), dash(), dash(), dash()],
                |[i, n, k, u]| {
                    [
                        format!("{i}s"),
                        format!("{n}s"),
                        k.to_string(),
                        if u == 0 {
                            "0 (kernel)".to_owned()
                        } else {
                            format!("{u}ms")
                        },
                    ]
                },
            );
            vec![
                c.pid.to_string(),
                c.command.clone(),
                c.fd.to_string(),
                c.local.to_string(),
                c.peer.to_string(),
                c.state.to_owned(),
                match c.keepalive {
                    Some(true) => "on".to_owned(),
                    Some(false) => "off".to_owned(),
                    None => "?".to_owned(),
                },
                idle,
                intvl,
                cnt,
                ut,
                c.next_probe_s.map_or_else(dash, |s| format!("in {s:.1}s")),
                c.source.to_owned(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn json(conns: &[Connection], views: &[ProcessView]) -> String {
    use serde_json::{Value, json};
    let mut items: Vec<Value> = conns
        .iter()
        .map(|c| {
            let [idle, interval, count, user_timeout] = c
                .options
                .map_or([Value::Null, Value::Null, Value::Null, Value::Null], |o| {
                    o.map(Value::from)
                });
            json!({
                "kind": "connection",
                "pid": c.pid,
                "command": c.command,
                "fd": c.fd,
                "local": c.local.to_string(),
                "peer": c.peer.to_string(),
                "state": c.state,
                "keepalive": c.keepalive,
                "idle_s": idle,
                "interval_s": interval,
                "count": count,
                "user_timeout_ms": user_timeout,
                "next_probe_s": c.next_probe_s,
                "source": c.source,
            })
        })
        .collect();
    items.extend(views.iter().map(ProcessView::json));
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse() {
        let v4 = "   0: 0100007F:1F90 0200007F:D431 01 00000000:00000000 02:00000B86 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1";
        let row = parse_proc_line(v4).unwrap();
        assert_eq!(row.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(row.peer, "127.0.0.2:54321".parse().unwrap());
        assert_eq!(
            (row.state, row.timer, row.inode),
            ("ESTABLISHED", 2, 123456)
        );
        assert!((row.timer_s - 29.5).abs() < 0.01);
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1";
        let row = parse_proc_line(v6).unwrap();
        assert_eq!(row.local, "[::1]:8080".parse().unwrap());
        assert_eq!(row.state, "LISTEN");
        let mapped = "   2: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 7 1";
        assert_eq!(
            parse_proc_line(mapped).unwrap().local,
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(parse_proc_line("garbage"), None);
    }
}
