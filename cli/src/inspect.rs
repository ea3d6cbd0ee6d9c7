//! `keepalive-shim inspect`: the keepalive settings of a running process's TCP connections, read
//! from the live sockets (`pidfd_open` + `pidfd_getfd` + `getsockopt`), or, without permission to
//! take them, from what `/proc/PID/net/tcp` shows of each connection's timers (read once per
//! network namespace). Beside them, for each process that has the library loaded, what each copy
//! of it counted (read from the live process by `keepalive_shim_observe`), and the kernel's count
//! of connections ended after a timeout in the process's network namespace. Names a process
//! gives itself are printed with their control characters escaped.

use keepalive_shim_observe::counts::Counts;
use keepalive_shim_observe::guard::Guarded;
use keepalive_shim_observe::process::{Process, Supervisor};
use keepalive_shim_sys::output::printable;
use keepalive_shim_sys::{pidfd, proc, say, sockopt};
use std::collections::HashMap;
use std::fmt::Write;
use std::io::ErrorKind;
use std::net::SocketAddr;
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

/// The longest a read of one process's maps and counters is waited for.
const PER_PROCESS: std::time::Duration = std::time::Duration::from_secs(2);

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
    let mut reader = Guarded::default();
    let mut tables = Tables::default();
    let mut failed = false;
    let mut unreadable = 0;
    let mut fallback_said = false;
    let mut read_any = false;
    for pid in pids {
        let netns = proc::netns(pid);
        match connections(pid, netns, args.proc_only, &mut tables) {
            Ok(Connections {
                list: conns,
                fallback,
                command,
            }) => {
                read_any = true;
                if let Some(reason) = fallback.filter(|_| !args.proc_only)
                    && (explicit || !fallback_said)
                {
                    say!(
                        "cannot take the sockets of process {pid} ({reason}): showing what \
                         /proc shows (keepalive timer on or off, and when it fires)"
                    );
                    fallback_said = true;
                }
                found.extend(conns);
                let mut view = ProcessView::read(&mut reader, pid, command, netns);
                if explicit || matches!(view.library, Ok(Some(_))) || view.supervisor.is_some() {
                    view.timed_out = tables.timed_out(pid, netns);
                    views.push(view);
                }
            }
            Err(message) if explicit => {
                say!("{message}");
                failed = true;
            }
            // A process that exited during the scan is no process to read.
            Err(_) if !proc::exists(pid) => {}
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
        keepalive_shim_sys::output::out(format_args!("{}", json(&found, &views)));
    } else {
        if found.is_empty() {
            if read_any {
                keepalive_shim_sys::output::out(format_args!("no TCP connections"));
            }
        } else {
            keepalive_shim_sys::output::write_all(1, table(&found).as_bytes());
        }
        keepalive_shim_sys::output::write_all(1, counters_text(&views).as_bytes());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn all_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = proc::pids();
    pids.retain(|&pid| pid != me);
    pids
}

/// The TCP tables and the count of connections ended after a timeout of each network namespace
/// met, each read once per namespace (not once per process: a node's thousands of processes share
/// a few namespaces). `netns`: the process's namespace, `None` when it cannot be told.
#[derive(Default)]
struct Tables {
    rows: HashMap<u64, std::rc::Rc<Vec<proc::TcpRow>>>,
    timed_out: HashMap<u64, Option<u64>>,
}

impl Tables {
    fn rows(&mut self, pid: i32, netns: Option<u64>) -> std::rc::Rc<Vec<proc::TcpRow>> {
        let read = || std::rc::Rc::new(proc::tcp_rows(pid));
        match netns {
            Some(ns) => self.rows.entry(ns).or_insert_with(read).clone(),
            None => read(),
        }
    }

    fn timed_out(&mut self, pid: i32, netns: Option<u64>) -> Option<u64> {
        let read = || proc::aborts_on_timeout(pid).ok();
        match netns {
            Some(ns) => *self.timed_out.entry(ns).or_insert_with(read),
            None => read(),
        }
    }
}

/// What the library counted in one process, and its network namespace's count of connections
/// ended after a timeout.
struct ProcessView {
    pid: i32,
    command: Option<String>,
    /// The library's copies (`None`: not loaded), or why the process could not be read.
    library: Result<Option<Process>, String>,
    netns: Option<u64>,
    timed_out: Option<u64>,
    /// The seccomp supervisor it runs under (or is), and what that counted for its tree.
    supervisor: Option<Supervisor>,
}

impl ProcessView {
    /// What the library and a supervisor counted for `pid`; `timed_out` is left for the caller
    /// (read per namespace, and only for the processes shown).
    fn read(reader: &mut Guarded, pid: i32, command: String, netns: Option<u64>) -> ProcessView {
        let stuck = || {
            format!(
                "its memory maps or counters did not answer within {} s (the read waits on \
                 something the process controls): not read",
                PER_PROCESS.as_secs()
            )
        };
        let read = match reader.read(pid, PER_PROCESS) {
            Err(_) => Err(stuck()),
            Ok(read) => read.map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    "the process exited before its counters were read".to_owned()
                }
                ErrorKind::PermissionDenied => {
                    "cannot read its memory maps: permission denied (run as root or as its user)"
                        .to_owned()
                }
                _ => format!("cannot read its memory maps: {e}"),
            }),
        };
        // A supervisor itself shows its block in its own maps, just read; any other process
        // may run under one above it.
        let supervisor = match read.as_ref().map(|found| found.supervisor.clone()) {
            Ok(Some(itself)) => Some(itself),
            _ => reader.supervisor_above(pid, PER_PROCESS).ok().flatten(),
        };
        ProcessView {
            pid,
            command: Some(command),
            library: read.map(|found| found.library),
            netns,
            timed_out: None,
            supervisor,
        }
    }

    fn json(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        let mut record = match &self.library {
            Ok(Some(p)) => process_json(p),
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
                    "counts": keepalive_shim_observe::TIMED_OUT_MEANS,
                }),
            );
            if let Some(sup) = &self.supervisor {
                map.insert("supervisor".into(), supervisor_json(sup));
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
                let _ = writeln!(out, " ({}):", printable(&p.command));
                for copy in &p.copies {
                    let _ = writeln!(out, "  keepalive-shim {}:", printable(&copy.name));
                    match &copy.counts {
                        Err(e) => {
                            let _ = writeln!(out, "    {e}");
                        }
                        Ok(c) => write_counts(&mut out, c, "connect() calls", true),
                    }
                }
                let copies = p.copies.len() + p.more_copies;
                if copies > 1 {
                    let _ = writeln!(
                        out,
                        "  ({copies} copies are loaded: only the first in the loader's order acts; \
                         the others count nothing{})",
                        if p.more_copies > 0 {
                            format!("; {} not read", p.more_copies)
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        if let Some(sup) = &v.supervisor {
            let whose = if sup.pid == v.pid {
                "this process is a seccomp supervisor".to_owned()
            } else {
                format!(
                    "under the seccomp supervisor {} ({})",
                    sup.pid,
                    printable(&sup.command)
                )
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
fn write_counts(out: &mut String, c: &Counts, connect: &str, excluded: bool) {
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

/// A process's TCP connections, why their options were not read from the sockets (when so), and
/// its command name.
struct Connections {
    list: Vec<Connection>,
    fallback: Option<String>,
    command: String,
}

fn connections(
    pid: i32,
    netns: Option<u64>,
    proc_only: bool,
    tables: &mut Tables,
) -> Result<Connections, String> {
    let command = proc::comm(pid)
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => format!("no process {pid}"),
            _ => format!("cannot read process {pid}: {e}"),
        })?;
    let inodes = proc::socket_fds(pid).map_err(|e| match e.kind() {
        ErrorKind::NotFound => format!("no process {pid}"),
        ErrorKind::PermissionDenied => format!(
            "cannot read the descriptors of process {pid} ({}): permission denied \
             (run as root or as the user it runs as)",
            printable(&command)
        ),
        _ => format!("cannot read the descriptors of process {pid}: {e}"),
    })?;
    let rows = if inodes.is_empty() {
        std::rc::Rc::new(Vec::new())
    } else {
        tables.rows(pid, netns)
    };
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
    for row in rows.iter() {
        let Some(&fd) = inodes.get(&row.inode) else {
            continue;
        };
        let mut conn = Connection {
            pid,
            command: command.clone(),
            fd,
            local: row.local,
            peer: row.peer,
            state: row.state_name(),
            keepalive: None,
            options: None,
            next_probe_s: (row.timer == 2).then_some(row.timer_seconds()),
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
                conn.keepalive = infer_keepalive(row);
            }
            None => conn.keepalive = infer_keepalive(row),
        }
        if conn.keepalive == Some(false) {
            conn.next_probe_s = None;
        }
        out.push(conn);
    }
    out.sort_by_key(|c| c.fd);
    Ok(Connections {
        list: out,
        fallback,
        command,
    })
}

/// What /proc's timer says: a keepalive timer means keepalive is on; an idle established
/// connection with no timer has it off; anything else (data in flight, listening) is unknown.
fn infer_keepalive(row: &proc::TcpRow) -> Option<bool> {
    match (row.timer, row.state_name()) {
        (2, "ESTABLISHED") => Some(true),
        (0, "ESTABLISHED") => Some(false),
        _ => None,
    }
}

/// A process's descriptor table, opened with `pidfd_open`.
struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    fn open(pid: i32) -> std::io::Result<PidFd> {
        pidfd::open(pid, 0).map(PidFd)
    }

    /// Takes a copy of the process's descriptor `fd` and reads keepalive and the four values.
    fn options(&self, fd: i32) -> std::io::Result<(bool, [i32; 4])> {
        let ours = pidfd::getfd(&self.0, fd)?;
        let [on, idle, interval, count, user_timeout] =
            sockopt::options(std::os::fd::AsRawFd::as_raw_fd(&ours))?;
        Ok((on != 0, [idle, interval, count, user_timeout]))
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
                printable(&c.command).into_owned(),
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

/// A process's record for `--json`: its counters under the metrics' keys, and each copy's.
fn process_json(p: &Process) -> serde_json::Value {
    use serde_json::{Value, json};
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
            Ok(counts) => json!({"path": c.name, "counters": Value::Object(counts.json())}),
            Err(e) => json!({"path": c.name, "counters": null, "error": e}),
        })
        .collect();
    map.insert("libraries".into(), copies.into());
    if p.more_copies > 0 {
        map.insert("libraries_not_read".into(), p.more_copies.into());
    }
    Value::Object(map)
}

/// A supervisor's record for `--json`: its PID and its counters under the metrics' keys.
fn supervisor_json(s: &Supervisor) -> serde_json::Value {
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
    serde_json::Value::Object(map)
}
