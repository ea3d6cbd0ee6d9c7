//! A scrape (and fleet mode's counts) in Prometheus' text format.
//!
//! Series per process while there are at most `series` of them; beyond that, every process's
//! counts are added up per network namespace and command (no `pid` label), so a process started
//! later is always counted somewhere instead of never shown, and the number of series stays
//! bounded (beyond `series` commands, the rest fold into `command="(other)"`).

use crate::counts::Counts;
use crate::fleet::FleetSeries;
use crate::scrape::Scrape;
use keepalive_shim_policy::options::{N, OPTIONS};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One metric family of the text format.
pub struct Family<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: &'a str,
    /// Labels (`{…}` or nothing) and value.
    pub samples: Vec<(String, String)>,
}

/// `keepalive_shim_build_info{version="…"} 1`: every endpoint of the tool serves it.
pub fn build_info() -> Family<'static> {
    Family {
        name: "keepalive_shim_build_info",
        help: "The keepalive-shim serving these metrics: its version.",
        kind: "gauge",
        samples: vec![(
            labels(&[("version", env!("CARGO_PKG_VERSION"))]),
            "1".to_owned(),
        )],
    }
}

/// `families` in the text format: for each, its `# HELP` and `# TYPE` lines and its samples.
pub fn text(families: &[Family<'_>]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\\', "\\\\"));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (l, v) in &f.samples {
            let _ = writeln!(out, "{}{l} {v}", f.name);
        }
    }
    out
}

/// `"` `\` and newlines escaped, for a label value.
pub fn escape_label(v: &str) -> String {
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

/// `{k="v",…}`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// What a row of the per-process families is: its labels and its counts.
struct Row {
    labels: Vec<(&'static str, String)>,
    counts: Counts,
}

/// The library's rows: per process, or per namespace and command beyond `series` processes.
fn library_rows(s: &Scrape, series: usize) -> (Vec<Row>, usize) {
    let netns = |n: Option<u64>| n.map_or_else(String::new, |n| n.to_string());
    if s.processes.len() <= series {
        let rows = s
            .processes
            .iter()
            .map(|(p, c)| Row {
                labels: vec![
                    ("mechanism", "library".to_owned()),
                    ("netns", netns(p.netns)),
                    ("pid", p.pid.to_string()),
                    ("command", p.command.clone()),
                ],
                counts: *c,
            })
            .collect();
        return (rows, 0);
    }
    let mut groups: BTreeMap<(String, String), Counts> = BTreeMap::new();
    for (p, c) in &s.processes {
        let mut key = (netns(p.netns), p.command.clone());
        if groups.len() >= series && !groups.contains_key(&key) {
            key.1 = "(other)".to_owned();
        }
        groups.entry(key).or_default().add(c);
    }
    let rows = groups
        .into_iter()
        .map(|((ns, command), counts)| Row {
            labels: vec![
                ("mechanism", "library".to_owned()),
                ("netns", ns),
                ("command", command),
            ],
            counts,
        })
        .collect();
    (rows, s.processes.len())
}

/// The text for scrape `s`, fleet mode's series `fleet`, with at most `series` process series.
pub fn render(s: &Scrape, fleet: &[FleetSeries], series: usize) -> String {
    let (mut rows, aggregated) = library_rows(s, series);
    let netns = |n: Option<u64>| n.map_or_else(String::new, |n| n.to_string());
    rows.extend(s.supervisors.iter().filter_map(|sup| {
        Some(Row {
            labels: vec![
                ("mechanism", "supervisor".to_owned()),
                ("netns", netns(sup.netns)),
                ("pid", sup.pid.to_string()),
                ("command", sup.command.clone()),
            ],
            counts: *sup.counts.as_ref().ok()?,
        })
    }));
    let row_labels = |r: &Row, extra: Option<(&str, &str)>| {
        let mut pairs: Vec<(&str, &str)> = r.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.extend(extra);
        labels(&pairs)
    };
    let per_process = |name, help, value: &dyn Fn(&Counts) -> u64| Family {
        name,
        help,
        kind: "counter",
        samples: rows
            .iter()
            .map(|r| (row_labels(r, None), value(&r.counts).to_string()))
            .collect(),
    };
    let per_option = |name, help, value: &dyn Fn(&Counts) -> [u64; N]| Family {
        name,
        help,
        kind: "counter",
        samples: rows
            .iter()
            .flat_map(|r| {
                let v = value(&r.counts);
                OPTIONS
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (row_labels(r, Some(("option", o.label))), v[i].to_string()))
                    .collect::<Vec<_>>()
            })
            .collect(),
    };
    let mut families = vec![
        build_info(),
        per_process(
            "keepalive_shim_sockets_configured_total",
            "TCP sockets on which keepalive-shim set its options, counted by the preload library \
             in each process and by each seccomp supervisor for its whole tree \
             (mechanism=\"supervisor\"), once per socket. Self-reported: read from the process's \
             own memory, which that process can forge.",
            &|c| c.sockets_configured,
        ),
        per_process(
            "keepalive_shim_connections_configured_total",
            "connect() calls on TCP sockets that carry keepalive-shim's options, counted by the \
             preload library in each process (accepted connections are not counted) and by the \
             seccomp supervisor under --trap connect; in fleet mode, per attachment, outgoing \
             and accepted connections (direction label). Self-reported by processes.",
            &|c| c.connections_configured,
        ),
        per_process(
            "keepalive_shim_connections_excluded_total",
            "connect() calls to a destination the rules exclude (KEEPALIVE_EXCLUDE, or not in \
             KEEPALIVE_INCLUDE): the socket got back what it had without keepalive-shim. \
             Self-reported by processes.",
            &|c| c.connections_excluded,
        ),
        per_option(
            "keepalive_shim_options_left_to_program_total",
            "Options the program set itself on a socket and keepalive-shim kept (not under \
             KEEPALIVE_FORCE), once per socket and option. Self-reported by processes.",
            &|c| c.options_left_to_program,
        ),
        per_option(
            "keepalive_shim_options_refused_total",
            "Options the kernel refused when keepalive-shim set them (a seccomp filter, an old \
             kernel); the socket works without them. Self-reported by processes.",
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
            name: "keepalive_shim_processes_aggregated",
            help: "Processes whose counts are shown added up per network namespace and command \
                   (series without a pid label), because more processes have the library than \
                   --max-processes: 0 while every process has series of its own.",
            kind: "gauge",
            samples: vec![(String::new(), aggregated.to_string())],
        },
        Family {
            name: "keepalive_shim_processes_not_shown",
            help: "Processes in no series: no_counters (a library without counters, of another \
                   layout version, or whose counters could not be read), unreadable (their \
                   memory maps could not be read: run as root), out_of_time (not reached before \
                   the scrape's time budget ran out; the next scrape starts with them), stuck \
                   (a read of the process did not return within half a second: its memory maps \
                   or counters wait on something it controls; skipped until that read returns), \
                   over_cap (beyond the most processes one scrape keeps).",
            kind: "gauge",
            samples: [
                ("no_counters", s.skipped.no_counters),
                ("unreadable", s.skipped.unreadable),
                ("out_of_time", s.skipped.out_of_time),
                ("stuck", s.skipped.stuck),
                ("over_cap", s.skipped.over_cap),
            ]
            .iter()
            .map(|(r, n)| (labels(&[("reason", r)]), n.to_string()))
            .collect(),
        },
        Family {
            name: "keepalive_shim_scrape_skipped",
            help: "What this scrape read less of than a process showed: maps_lines (processes \
                   whose memory maps had more lines than are read), copies (copies of the library \
                   in one process beyond the few read).",
            kind: "gauge",
            samples: [
                ("maps_lines", s.skipped.maps_capped),
                ("copies", s.skipped.copies),
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
    if !fleet.is_empty() {
        add_fleet(&mut families, fleet);
    }
    text(&families)
}

/// A fleet series' labels: `mechanism="fleet"`, its attachment's cgroup, the connection's cgroup
/// path (or the folded entry) and pod UID, then `extra`.
fn fleet_labels(f: &FleetSeries, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![("mechanism", "fleet"), ("cgroup", f.cgroup.as_str())];
    if let Some(p) = &f.path {
        pairs.push(("path", p));
    }
    if let Some(u) = &f.pod_uid {
        pairs.push(("pod_uid", u));
    }
    if let Some(folded) = &f.folded {
        pairs.push(("folded", folded));
    }
    pairs.extend_from_slice(extra);
    labels(&pairs)
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
        let at = |extra: &[(&str, &str)]| fleet_labels(f, extra);
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
                .map(|f| (fleet_labels(f, &[]), f.counts.aborted.to_string()))
                .collect(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;
    use crate::scrape::Namespace;

    fn process(pid: i32, command: &str, sockets: u64) -> (Process, Counts) {
        (
            Process {
                pid,
                command: command.into(),
                netns: Some(4026531840),
                copies: vec![],
                more_copies: 0,
            },
            Counts {
                sockets_configured: sockets,
                connections_configured: 2,
                ..Counts::default()
            },
        )
    }

    #[test]
    fn the_text_format_escapes_and_types() {
        let mut s = Scrape::default();
        s.processes.push(process(42, "we\"ird\\", 3));
        s.namespaces.insert(
            4026531840,
            Namespace {
                timed_out: Some(9),
                processes: 1,
            },
        );
        let text = render(&s, &[], 500);
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
        assert!(text.contains("keepalive_shim_build_info{version=\""));
        assert!(text.contains("keepalive_shim_processes_aggregated 0\n"));
    }

    #[test]
    fn beyond_the_cap_every_process_is_counted_per_command() {
        let mut s = Scrape::default();
        for pid in 1..=5 {
            s.processes.push(process(pid, "python3", 1));
        }
        s.processes.push(process(9999, "node", 7));
        s.processes.push(process(10000, "curl", 1));
        let text = render(&s, &[], 2);
        assert!(text.contains(
            "keepalive_shim_sockets_configured_total{mechanism=\"library\",\
             netns=\"4026531840\",command=\"python3\"} 5\n"
        ));
        // The newest process is counted, folded with those beyond the cap of commands.
        assert!(text.contains("command=\"(other)\"} 1\n"), "{text}");
        assert!(text.contains("keepalive_shim_processes_aggregated 7\n"));
        assert!(!text.contains("pid=\""));
    }
}
