//! Reads of one process that may never return, kept from holding the reader: what a process shows
//! can block the thread that reads it (its `maps` behind a memory-map lock held across a page
//! fault that a FUSE server or a userfaultfd never answers; a counters' address in such a
//! mapping, which `process_vm_readv` waits on). Each read runs on a worker thread and is waited
//! for up to a deadline; a process whose read overruns it is "stuck": the worker is left to it,
//! a new one takes the next process, and the stuck process is skipped (counted) until its read
//! returns, when its worker ends. At most [`MAX_STUCK`] workers are left waiting at once; beyond,
//! every process is skipped as stuck. node_exporter's filesystem collector treats a hanging
//! `statfs` the same way.

use crate::process::{Found, Limits, Reader, Supervisor};
use std::collections::HashSet;
use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Workers left waiting on stuck reads, at most.
pub const MAX_STUCK: usize = 32;

/// The read did not return within its deadline, or the process is still stuck from before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stuck;

enum Job {
    Read(i32),
    SupervisorAbove(i32),
}

enum Outcome {
    Read(io::Result<Found>),
    SupervisorAbove(Option<Supervisor>),
}

struct Worker {
    jobs: Sender<Job>,
    done: Receiver<Outcome>,
}

/// A [`Reader`] on a worker thread, each read with a deadline.
pub struct Guarded {
    limits: Limits,
    worker: Option<Worker>,
    /// The processes whose reads have not returned, each with a worker waiting on it.
    stuck: Arc<Mutex<HashSet<i32>>>,
}

impl Default for Guarded {
    fn default() -> Guarded {
        Guarded::new(Limits::default())
    }
}

impl Guarded {
    pub fn new(limits: Limits) -> Guarded {
        Guarded {
            limits,
            worker: None,
            stuck: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// How many processes are stuck now.
    pub fn stuck(&self) -> usize {
        self.stuck.lock().map_or(0, |s| s.len())
    }

    /// [`Reader::read`] of `pid`, waited for at most `deadline`.
    pub fn read(&mut self, pid: i32, deadline: Duration) -> Result<io::Result<Found>, Stuck> {
        match self.call(pid, Job::Read(pid), deadline)? {
            Outcome::Read(found) => Ok(found),
            Outcome::SupervisorAbove(_) => Err(Stuck),
        }
    }

    /// [`Reader::supervisor_above`] `pid`, waited for at most `deadline`.
    pub fn supervisor_above(
        &mut self,
        pid: i32,
        deadline: Duration,
    ) -> Result<Option<Supervisor>, Stuck> {
        match self.call(pid, Job::SupervisorAbove(pid), deadline)? {
            Outcome::SupervisorAbove(s) => Ok(s),
            Outcome::Read(_) => Err(Stuck),
        }
    }

    fn call(&mut self, pid: i32, job: Job, deadline: Duration) -> Result<Outcome, Stuck> {
        {
            let stuck = self.stuck.lock().map_err(|_| Stuck)?;
            if stuck.contains(&pid) || (self.worker.is_none() && stuck.len() >= MAX_STUCK) {
                return Err(Stuck);
            }
        }
        if self.worker.is_none() {
            self.worker = Some(self.spawn().ok_or(Stuck)?);
        }
        let worker = self.worker.as_ref().ok_or(Stuck)?;
        if worker.jobs.send(job).is_err() {
            self.worker = None;
            return Err(Stuck);
        }
        match worker.done.recv_timeout(deadline) {
            Ok(outcome) => Ok(outcome),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                // The worker is left to its read; it ends when the read returns.
                if let Ok(mut stuck) = self.stuck.lock() {
                    stuck.insert(pid);
                }
                self.worker = None;
                Err(Stuck)
            }
        }
    }

    fn spawn(&self) -> Option<Worker> {
        let (jobs, inbox) = channel::<Job>();
        let (outbox, done) = channel::<Outcome>();
        let stuck = Arc::clone(&self.stuck);
        let mut reader = Reader::new(self.limits);
        std::thread::Builder::new()
            .name("keepalive-shim-reader".into())
            .spawn(move || {
                for job in inbox {
                    let (pid, outcome) = match job {
                        Job::Read(pid) => (pid, Outcome::Read(reader.read(pid))),
                        Job::SupervisorAbove(pid) => {
                            (pid, Outcome::SupervisorAbove(reader.supervisor_above(pid)))
                        }
                    };
                    if outbox.send(outcome).is_err() {
                        // Abandoned while this read was stuck: it has returned; forget it.
                        if let Ok(mut stuck) = stuck.lock() {
                            stuck.remove(&pid);
                        }
                        return;
                    }
                }
            })
            .ok()?;
        Some(Worker { jobs, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_return_through_the_worker() {
        let mut g = Guarded::default();
        let me = std::process::id() as i32;
        let found = g.read(me, Duration::from_secs(10)).unwrap().unwrap();
        assert!(found.library.is_none());
        assert!(matches!(
            g.supervisor_above(me, Duration::from_secs(10)),
            Ok(None)
        ));
        assert_eq!(g.stuck(), 0);
    }
}
