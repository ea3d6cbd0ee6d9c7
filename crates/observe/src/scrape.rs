//! One node-wide scrape: every process's copies of the library and every supervisor, and the
//! kernel's timeout count of each of their network namespaces, read within a budget of time and
//! memory. What the budget leaves out is counted with its reason, and the next scrape starts
//! where this one ran out of time, so no process is left out for good.

use crate::counts::Counts;
use crate::guard::Guarded;
use crate::process::{Process, Supervisor};
use keepalive_shim_sys::proc;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What one scrape may spend.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Reading stops after this long; the processes not reached are counted.
    pub time: Duration,
    /// Processes with a series of their own; beyond, one series per command (see
    /// `prometheus.rs`). Also the most network namespaces and supervisors shown.
    pub series: usize,
    /// The most processes kept in one scrape at all (memory): beyond, only counted.
    pub processes: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            time: Duration::from_millis(800),
            series: 500,
            processes: 50_000,
        }
    }
}

/// A network namespace of processes that have the library.
#[derive(Debug, Default, Clone, Copy)]
pub struct Namespace {
    pub timed_out: Option<u64>,
    pub processes: usize,
}

/// What a scrape left out, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Processes with the library whose counters could not be read (another layout version, no
    /// counters, a failed read).
    pub no_counters: usize,
    /// Processes whose maps could not be read (permission).
    pub unreadable: usize,
    /// Processes not reached before the time budget ran out.
    pub out_of_time: usize,
    /// Processes whose maps had more lines than read.
    pub maps_capped: usize,
    /// Processes whose reads did not return in time (`guard.rs`), now or since an earlier
    /// scrape.
    pub stuck: usize,
    /// Copies of the library beyond the per-process cap.
    pub copies: usize,
    /// Processes, supervisors or namespaces beyond the memory cap, counted only.
    pub over_cap: usize,
}

/// One scrape's findings.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Processes with the library and counters read, with their totals, by PID.
    pub processes: Vec<(Process, Counts)>,
    pub supervisors: Vec<Supervisor>,
    pub namespaces: BTreeMap<u64, Namespace>,
    pub skipped: Skipped,
    pub seconds: f64,
}

/// The longest one process's read is waited for.
const PER_PROCESS: Duration = Duration::from_millis(500);

/// Scrapes the node, again and again, with the little it keeps between scrapes: the reader's
/// symbol cache, the processes whose reads are stuck, and where the last scrape ran out of time.
#[derive(Default)]
pub struct Scraper {
    pub reader: Guarded,
    /// The first PID of the next scrape (0: from the start).
    next: i32,
}

impl Scraper {
    /// One scrape within `budget`.
    pub fn scrape(&mut self, budget: Budget) -> Scrape {
        let t0 = Instant::now();
        let mut out = Scrape::default();
        let me = std::process::id() as i32;
        let pids = proc::pids();
        let from = pids.partition_point(|&p| p < self.next);
        self.next = 0;
        let order = pids[from..].iter().chain(&pids[..from]).copied();
        let total = pids.len();
        for (done, pid) in order.enumerate() {
            if t0.elapsed() >= budget.time {
                out.skipped.out_of_time = total - done;
                self.next = pid;
                break;
            }
            let left = budget.time.saturating_sub(t0.elapsed());
            let found = match self
                .reader
                .read(pid, left.clamp(Duration::from_millis(50), PER_PROCESS))
            {
                Ok(Ok(found)) => found,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied && pid != me => {
                    out.skipped.unreadable += 1;
                    continue;
                }
                // Gone since /proc was listed.
                Ok(Err(_)) => continue,
                Err(_) => {
                    out.skipped.stuck += 1;
                    continue;
                }
            };
            out.skipped.maps_capped += usize::from(found.maps_capped);
            if let Some(supervisor) = found.supervisor {
                if out.supervisors.len() < budget.series {
                    out.supervisors.push(supervisor);
                } else {
                    out.skipped.over_cap += 1;
                }
            }
            let Some(found) = found.library else { continue };
            out.skipped.copies += found.more_copies;
            if let Some(ns) = found.netns
                && (out.namespaces.len() < budget.series || out.namespaces.contains_key(&ns))
            {
                let entry = out.namespaces.entry(ns).or_default();
                entry.processes += 1;
                if entry.timed_out.is_none() {
                    entry.timed_out = proc::aborts_on_timeout(pid).ok();
                }
            }
            match found.total() {
                None => out.skipped.no_counters += 1,
                Some(_) if out.processes.len() >= budget.processes => out.skipped.over_cap += 1,
                Some(total) => out.processes.push((found, total)),
            }
        }
        out.processes.sort_by_key(|(p, _)| p.pid);
        out.supervisors.sort_by_key(|s| s.pid);
        out.seconds = t0.elapsed().as_secs_f64();
        out
    }
}
