//! What fleet mode counted, per attachment: the values read from an attachment's BPF map, in the
//! shape the metrics and `fleet status` show them.

use keepalive_shim_policy::options::N;
use serde_json::{Value, json};

/// What fleet mode counted in one attachment's BPF map, for one cgroup or all of them
/// (the fleet programs' `COUNT_*`).
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
        json!({
            "connections_configured": self.connections_configured,
            "accepted_connections_configured": self.accepted_configured,
            "connections_excluded": self.connections_excluded,
            "options_left_to_program": crate::counts::by_option(&self.options_left_to_program),
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

/// Where the fleet counts of a scrape come from (`fleet attach --metrics`).
pub type FleetSource = Box<dyn Fn() -> Vec<FleetSeries> + Send + Sync>;
