//! What the supervisor does with each trapped call: it observes the call, asks the policy's
//! decision (`keepalive_shim_policy::decide`, the same function the preload library and fleet
//! mode use) with what the socket's options read back say of it, and applies the plan. Every
//! choice of which call to handle is made from the registers the kernel captured (the domain,
//! type and protocol of `socket()`; the descriptor of `connect()`/`listen()`; the level and
//! option name of `setsockopt()`).
//!
//! - `socket()` (socket trap): a TCP socket is made here with the same arguments, in the
//!   program's network namespace and with the calling thread's filesystem uid, gid and
//!   supplementary groups (`identity.rs`), given the five options, and installed in the program.
//!   Where the kernel has `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (5.19) the installation is
//!   `ADDFD` without `SEND`, then this process closes its copy, then the answer gives the number:
//!   the program's copy is the only one from the moment it returns, so its `close()` is the
//!   last (an `SO_LINGER` reset leaves at once, a lingering close waits in the program, never
//!   here). Without the flag, `ADDFD` + `SEND` in one step (a signal between two steps would leave
//!   a descriptor the program does not know), and this process's copy is closed by another thread
//!   (a lingering socket's last close blocks). Where the thread's cgroup or LSM label differs
//!   from this process's (which a socket made here would carry instead), and anything else, the
//!   call runs as the program made it.
//! - `connect()`/`listen()` (connect trap): a copy of the descriptor is taken (`pidfd_getfd`);
//!   a TCP socket gets the plan for a connect (or listen), then the call runs
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//! - `setsockopt()` of one of the five options (both traps): the program's value is read from
//!   its memory (4 bytes, `process_vm_readv`; only the program's own threads could change it
//!   meanwhile, and only the user timeout computed from it would then differ), the plan for the
//!   program setting it is applied to a copy of the socket first (the user timeout that follows
//!   the program's keepalive; on a socket not configured yet, ours for the rest), then the
//!   program's own call runs and sets its value, with its own result. With `KEEPALIVE_FORCE`,
//!   on a TCP socket the call returns success without changing anything, so the configured
//!   values stand.

use super::counters::Counters;
use super::filter::Trap;
use super::identity::{self, Context, Creds};
use super::notify::{Call, Listener};
use keepalive_shim_policy::config::{LogLevel, Settings};
use keepalive_shim_policy::decide::{self, Defaults, Event, KERNEL_DEFAULTS, Known, Plan};
use keepalive_shim_policy::options::{OPTIONS, is_tcp, option_index};
use keepalive_shim_policy::show::{Made, Outcome, Refused, Sets};
use libc::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use keepalive_shim_sys::pidfd::PIDFD_THREAD;
use keepalive_shim_sys::proc::{self, namespace_inode};

/// What went wrong in a way the person running the program should know (said once each).
#[derive(Debug)]
pub enum Trouble {
    /// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SEND` is refused (before 5.14).
    NoAddFd(io::Error),
    /// The program's descriptors cannot be taken (`pidfd_open`/`pidfd_getfd`).
    NoTake(io::Error),
    /// Under the socket trap, a socket cannot be taken or the program's value read when it sets
    /// its own keepalive: the user timeout does not follow it.
    NoFollow(io::Error),
    /// A socket cannot be made in the program's network namespace.
    Netns(io::Error),
    /// A socket made here would not carry the program's identity (its cgroup or LSM label, or a
    /// uid this process cannot take): the program makes it, and it keeps the kernel's values.
    Identity(&'static str),
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::NoAddFd(e) => write!(
                f,
                "this kernel refuses SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND \
                 ({e}; Linux 5.14 brought it): use --trap connect"
            ),
            Trouble::NoTake(e) => write!(
                f,
                "cannot take the program's sockets with pidfd_open/pidfd_getfd ({e}; under \
                 Docker's default seccomp profile pidfd_getfd needs CAP_SYS_PTRACE): use \
                 --trap socket (Linux 5.14)"
            ),
            Trouble::NoFollow(e) => write!(
                f,
                "cannot take the program's sockets or read its values with pidfd_getfd and \
                 process_vm_readv ({e}; under Docker's default seccomp profile they need \
                 CAP_SYS_PTRACE): when a program sets its own keepalive, the user timeout stays \
                 ours instead of following it"
            ),
            Trouble::Netns(e) => write!(
                f,
                "cannot enter a network namespace the program created ({e}): its TCP sockets \
                 there are left as the kernel makes them"
            ),
            Trouble::Identity(what) => write!(
                f,
                "a program's thread runs with {what} than this supervisor, which a socket made \
                 here would not carry: the program makes those TCP sockets itself, and they are \
                 left as the kernel makes them (run the supervisor in the program's cgroup and \
                 security context, or use --mode preload)"
            ),
        }
    }
}

pub struct Server {
    pub listener: Listener,
    trap: Trap,
    settings: Settings,
    /// A fresh TCP socket's values here: what a socket has when nobody set an option.
    defaults: Defaults,
    /// This process's network namespace: its inode, and a descriptor to come back to it.
    netns: (u64, OwnedFd),
    /// The TCP sockets this process held when it started (inodes): the tree inherited them
    /// unconfigured, so `KEEPALIVE_FORCE` does not hold the program's calls on them.
    inherited: Vec<u64>,
    /// The program's thread can no longer be interrupted between the receive and the answer
    /// (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`): the socket trap answers in two steps.
    killable: bool,
    /// This thread's own credentials and context, to compare the program's with.
    mine: Creds,
    context: Context,
    /// What was last read of each calling thread (a fixed table, by thread id).
    seen: Vec<Option<identity::Seen>>,
    /// This process's cgroup v2 id, where its cgroups are the unified hierarchy alone and the
    /// kernel gives a thread's with `PIDFD_GET_INFO` (6.13): then one ioctl per `socket()`
    /// compares a caller's cgroup, not a read of `/proc/TID/cgroup`.
    cgroup_id: Option<u64>,
    /// An LSM answers for this process (`/proc/self/attr/current` is readable).
    labels: bool,
    /// The thread closing this process's copies of sockets (without `killable` only).
    closer: Option<mpsc::Sender<OwnedFd>>,
    /// `PIDFD_THREAD` works here.
    thread_pidfds: bool,
    said: [bool; 5],
    me: u32,
    /// No debug lines, nothing counted (the start-up probe).
    pub quiet: bool,
    /// What it did, readable from outside (`counters.rs`).
    counters: Counters,
}

use keepalive_shim_sys::sockopt::{fd_is_tcp, options as current, set_int as set};

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Applies `plan` to `fd` (a copy of the program's socket), but option `skip` (the program's
/// own call sets it); the options the kernel refused, and why.
fn apply(fd: RawFd, plan: &Plan, skip: Option<usize>) -> Refused {
    let mut refused = Refused::NONE;
    for (i, opt) in OPTIONS.iter().enumerate() {
        if let Some(v) = plan.set[i]
            && skip != Some(i)
            && !set(fd, opt.level, opt.name, v)
        {
            refused.mask |= 1 << i;
            refused.errno = errno(&io::Error::last_os_error());
        }
    }
    refused
}

impl Server {
    pub fn new(
        listener: Listener,
        trap: Trap,
        settings: Settings,
        killable: bool,
    ) -> io::Result<Server> {
        // SAFETY: socket has no memory arguments.
        let probe =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        let fresh = if probe < 0 {
            KERNEL_DEFAULTS
        } else {
            // SAFETY: probe is a descriptor this function just made.
            let probe = unsafe { OwnedFd::from_raw_fd(probe) };
            current(probe.as_raw_fd()).unwrap_or(KERNEL_DEFAULTS)
        };
        let ns = std::fs::File::open("/proc/self/ns/net")?;
        let ino = std::os::unix::fs::MetadataExt::ino(&ns.metadata()?);
        Ok(Server {
            listener,
            trap,
            settings,
            defaults: Defaults { fresh },
            netns: (ino, ns.into()),
            inherited: inherited_tcp(),
            killable,
            mine: identity::creds("thread-self")?,
            labels: identity::label("thread-self").is_some(),
            context: identity::context("thread-self", true)?,
            seen: vec![None; identity::SEEN],
            cgroup_id: {
                let mine = identity::context("thread-self", false)?;
                identity::unified_only(&mine.cgroup)
                    .then(|| identity::cgroup_id(std::process::id() as i32).ok())
                    .flatten()
            },
            closer: None,
            thread_pidfds: true,
            said: [false; 5],
            me: std::process::id(),
            quiet: false,
            counters: Counters::new(),
        })
    }

    fn debug(&self, line: std::fmt::Arguments) {
        if self.settings.log >= LogLevel::Debug && !self.quiet {
            keepalive_shim_sys::output::err(format_args!("keepalive-shim[{}]: {line}", self.me));
        }
    }

    /// Says `trouble` once (at `warn`), unless it is the start-up probe's, which the caller says.
    fn warn(&mut self, trouble: &Trouble) {
        let i = match trouble {
            Trouble::NoAddFd(_) => 0,
            Trouble::NoTake(_) => 1,
            Trouble::Netns(_) => 2,
            Trouble::NoFollow(_) => 3,
            Trouble::Identity(_) => 4,
        };
        if !self.said[i] && self.settings.log >= LogLevel::Warn {
            keepalive_shim_sys::output::err(format_args!(
                "keepalive-shim[{}]: warning: {trouble}",
                self.me
            ));
        }
        self.said[i] = true;
    }

    /// Handles one trapped call. `Err` is a trouble the person should hear of: the call was
    /// answered anyway (as the kernel alone would have), and the caller says it, once.
    pub fn handle(&mut self, call: &Call) -> Result<(), Trouble> {
        if call.arch != super::filter::ARCH {
            // The filter traps this architecture's calls only.
            let _ = self.listener.proceed(call.id);
            Ok(())
        } else if call.nr == libc::SYS_socket && self.trap == Trap::Socket {
            self.on_socket(call)
        } else if (call.nr == libc::SYS_connect || call.nr == libc::SYS_listen)
            && self.trap == Trap::Connect
        {
            self.on_connect(call)
        } else if call.nr == libc::SYS_setsockopt {
            self.on_setsockopt(call)
        } else {
            let _ = self.listener.proceed(call.id);
            Ok(())
        }
    }

    /// Like [`Server::handle`], saying a trouble once.
    pub fn serve(&mut self, call: &Call) {
        if let Err(trouble) = self.handle(call) {
            self.warn(&trouble);
        }
    }

    fn on_socket(&mut self, call: &Call) -> Result<(), Trouble> {
        let (domain, ty, protocol) = (call.int(0), call.int(1), call.int(2));
        if !is_tcp(domain, ty, protocol) {
            let _ = self.listener.proceed(call.id);
            return Ok(());
        }
        let tid = call.tid.to_string();
        // Who the calling thread is: a socket made here takes this thread's identity, so it
        // must first take the caller's (or leave the socket to the caller). Its credentials are
        // read again only when its owner changed or what was read is older than `TRUSTED` (one
        // stat otherwise); its cgroup and label at every call, since a thread can move into
        // another cgroup and exec under the same id in no time.
        let Ok(owner) = identity::owner(call.tid) else {
            // The thread is gone (the call with it), or its files cannot be read: its own
            // socket(), whatever happens to it, is the kernel's.
            let _ = self.listener.proceed(call.id);
            return Ok(());
        };
        let slot = call.tid.unsigned_abs() as usize % identity::SEEN;
        let cached = self.seen[slot]
            .as_ref()
            .filter(|seen| {
                seen.tid == call.tid && seen.owner == owner && seen.at.elapsed() < identity::TRUSTED
            })
            .map(|seen| seen.creds.clone());
        // The common case: credentials known, no LSM label to compare, and the thread's cgroups
        // byte for byte this process's (read at every call: a thread can move and exec).
        if let Some(creds) = &cached
            && !self.labels
            && match self.cgroup_id {
                Some(mine) => identity::cgroup_id(call.tid).is_ok_and(|theirs| theirs == mine),
                None => identity::same_cgroup(call.tid, &self.context.cgroup).unwrap_or(false),
            }
        {
            let creds = creds.clone();
            return self.make_for(call, &tid, creds, domain, ty, protocol);
        }
        let who = match cached {
            Some(creds) => Ok(creds),
            None => identity::creds(&tid),
        }
        .and_then(|creds| {
            let context = identity::context(&tid, self.labels)?;
            Ok((creds, context))
        });
        let (creds, context) = match who {
            Ok(who) => who,
            Err(_) => {
                let _ = self.listener.proceed(call.id);
                return Ok(());
            }
        };
        self.seen[slot] = Some(identity::Seen {
            tid: call.tid,
            owner,
            creds: creds.clone(),
            at: std::time::Instant::now(),
        });
        if context != self.context {
            // This process may have moved (with the whole tree): read its own again.
            if let Ok(now) = identity::context("thread-self", self.labels) {
                self.cgroup_id = self
                    .cgroup_id
                    .and_then(|_| identity::cgroup_id(std::process::id() as i32).ok());
                self.context = now;
            }
            if context != self.context {
                let what = if context.cgroup != self.context.cgroup {
                    "another cgroup"
                } else {
                    "another LSM label"
                };
                self.debug(format_args!(
                    "pid {}: TCP socket left to the program: it runs with {what}",
                    call.tid
                ));
                let _ = self.listener.proceed(call.id);
                return Err(Trouble::Identity(what));
            }
        }
        self.make_for(call, &tid, creds, domain, ty, protocol)
    }

    /// Makes the socket of `call` with `creds` (the caller's) in the caller's network namespace,
    /// configures it and installs it in the program.
    fn make_for(
        &mut self,
        call: &Call,
        tid: &str,
        creds: Creds,
        domain: c_int,
        ty: c_int,
        protocol: c_int,
    ) -> Result<(), Trouble> {
        // What was read was about the caller only if its call is still pending (a thread that
        // died may have left its number to another).
        if !self.listener.valid(call.id) {
            return Ok(());
        }
        // Made here, the socket would belong to this process's network namespace: it must be
        // the calling thread's.
        let theirs = namespace_inode(&format!("/proc/{tid}/ns/net"));
        let made = identity::as_creds(&creds, &self.mine, || match theirs {
            Ok(ino) if ino == self.netns.0 => Ok(make(domain, ty, protocol)),
            Ok(_) => self.make_in(call.tid, domain, ty, protocol),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(e),
            // Not allowed to look: a namespace it could not have entered without that right.
            Err(_) => Ok(make(domain, ty, protocol)),
        });
        let made = match made {
            Ok(Ok(made)) => made,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                // The thread is gone: the call with it.
                let _ = self.listener.proceed(call.id);
                return Ok(());
            }
            Ok(Err(e)) => {
                let _ = self.listener.proceed(call.id);
                return Err(Trouble::Netns(e));
            }
            Err(_) => {
                let _ = self.listener.proceed(call.id);
                return Err(Trouble::Identity("another user or group id"));
            }
        };
        let fd = match made {
            Ok(fd) => fd,
            Err(e) => {
                let _ = self.listener.fail(call.id, errno(&e));
                return Ok(());
            }
        };
        // A socket nobody has set an option on: the decision every mechanism takes at socket().
        let plan = decide::decide(
            &self.settings,
            Event::Made,
            Known::FRESH,
            &self.defaults,
            |i| self.defaults.fresh[i],
        );
        let failed = apply(fd.as_raw_fd(), &plan, None);
        let cloexec = ty & libc::SOCK_CLOEXEC != 0;
        let installed = if self.killable {
            // Two steps: the program's thread, woken by the ADDFD, now waits for the answer
            // killably: only a fatal signal can end the call, and then the descriptor goes with
            // the process. This copy is closed before the answer: the program's is the last.
            // It is a new socket nobody has used, whose close never blocks.
            let number = self
                .listener
                .install(call.id, fd.as_raw_fd(), cloexec, false);
            drop(fd);
            number.and_then(|n| self.listener.succeed(call.id, i64::from(n)).map(|()| n))
        } else {
            let number = self
                .listener
                .install(call.id, fd.as_raw_fd(), cloexec, true);
            // The program runs on with the socket, and may close it (even lingering) before this
            // copy is: its last close must not block the thread answering the tree's calls.
            self.close_later(fd);
            number
        };
        match installed {
            Ok(number) => {
                if !self.quiet {
                    self.counters
                        .applied(Event::Made, Known::FRESH, &plan, failed.mask);
                }
                self.debug(format_args!(
                    "pid {}: fd {number}: {}{}",
                    call.tid,
                    Made {
                        ipv6: domain == libc::AF_INET6,
                        plan: &plan,
                        refused: failed,
                    },
                    if creds == self.mine {
                        String::new()
                    } else {
                        format!("; made as uid {} gid {}", creds.fsuid, creds.fsgid)
                    },
                ));
                Ok(())
            }
            // The call was interrupted or its thread killed: nothing was installed, or what was
            // went with the process.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = self.listener.fail(call.id, libc::ENOSYS);
                Err(Trouble::NoAddFd(e))
            }
            // The program could not take it (EMFILE at its descriptor limit): the error the call
            // itself would have returned.
            Err(e) => {
                let _ = self.listener.fail(call.id, errno(&e));
                Ok(())
            }
        }
    }

    /// Closes `fd` on the closing thread (started at the first), or here when it cannot start.
    fn close_later(&mut self, fd: OwnedFd) {
        if self.closer.is_none() {
            let (tx, rx) = mpsc::channel::<OwnedFd>();
            let started = std::thread::Builder::new()
                .name("closer".into())
                .stack_size(64 * 1024)
                .spawn(move || rx.into_iter().for_each(drop));
            if started.is_ok() {
                self.closer = Some(tx);
            }
        }
        match &self.closer {
            Some(tx) => {
                if let Err(mpsc::SendError(fd)) = tx.send(fd) {
                    drop(fd);
                }
            }
            None => drop(fd),
        }
    }

    /// Makes the socket inside the network namespace of thread `tid`, and comes back.
    fn make_in(
        &self,
        tid: i32,
        domain: c_int,
        ty: c_int,
        protocol: c_int,
    ) -> io::Result<io::Result<OwnedFd>> {
        let ns = std::fs::File::open(format!("/proc/{tid}/ns/net"))?;
        // SAFETY: setns on a namespace descriptor; this thread alone changes namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let made = make(domain, ty, protocol);
        // SAFETY: back to the namespace this process started in.
        if unsafe { libc::setns(self.netns.1.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // Every later socket would be made in the wrong place: better to stop here.
            keepalive_shim_sys::output::err(format_args!(
                "keepalive-shim[{}]: cannot return to its own network namespace: {}",
                self.me,
                io::Error::last_os_error()
            ));
            std::process::abort();
        }
        Ok(made)
    }

    /// A copy of descriptor `fd` of thread `tid`, whose call `id` is pending.
    fn take(&mut self, tid: i32, id: u64, fd: c_int) -> io::Result<OwnedFd> {
        let pidfd = self.pidfd(tid)?;
        // The thread may have died and its number been reused between the notification and
        // pidfd_open: if the call is still pending, the pidfd is the caller's.
        if !self.listener.valid(id) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        keepalive_shim_sys::pidfd::getfd(&pidfd, fd)
    }

    /// A pidfd for thread `tid`: `PIDFD_THREAD` where the kernel has it (6.9), else one for its
    /// thread group (whose leader shares the descriptor table of an ordinary thread).
    fn pidfd(&mut self, tid: i32) -> io::Result<OwnedFd> {
        let open = keepalive_shim_sys::pidfd::open;
        if self.thread_pidfds {
            match open(tid, PIDFD_THREAD) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.thread_pidfds = false,
                other => return other,
            }
        }
        match open(tid, 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => open(tgid(tid)?, 0),
            other => other,
        }
    }

    fn on_connect(&mut self, call: &Call) -> Result<(), Trouble> {
        let fd = call.int(0);
        let copy = match self.take(call.tid, call.id, fd) {
            Ok(copy) => copy,
            Err(e) => {
                let _ = self.listener.proceed(call.id);
                return match e.raw_os_error() {
                    Some(libc::EPERM | libc::EACCES | libc::ENOSYS) => Err(Trouble::NoTake(e)),
                    _ => Ok(()),
                };
            }
        };
        let raw = copy.as_raw_fd();
        if fd_is_tcp(raw)
            && let Ok(now) = current(raw)
        {
            let known = Known::from_kernel(&now, &self.defaults, &self.settings);
            let event = if call.nr == libc::SYS_listen {
                Event::Listen
            } else {
                // The destination is in the program's memory: the supervisor applies no rules.
                Event::Connect(None)
            };
            let plan = decide::decide(&self.settings, event, known, &self.defaults, |i| now[i]);
            let failed = apply(raw, &plan, None);
            if !self.quiet {
                self.counters.applied(event, known, &plan, failed.mask);
            }
            self.debug(format_args!(
                "pid {}: fd {fd}: {}; {}",
                call.tid,
                if call.nr == libc::SYS_listen {
                    "listen"
                } else {
                    "connect"
                },
                Outcome {
                    plan: &plan,
                    known,
                    refused: failed,
                }
            ));
        }
        drop(copy);
        let _ = self.listener.proceed(call.id);
        Ok(())
    }

    fn on_setsockopt(&mut self, call: &Call) -> Result<(), Trouble> {
        let (fd, level, name) = (call.int(0), call.int(1), call.int(2));
        // A buffer too short for an int is the kernel's EINVAL to give.
        let long_enough = call.args[4] as u32 as usize >= std::mem::size_of::<c_int>();
        let Some(index) = option_index(level, name).filter(|_| long_enough) else {
            let _ = self.listener.proceed(call.id);
            return Ok(());
        };
        if self.settings.force {
            return self.on_setsockopt_forced(call, index);
        }
        let copy = match self.take(call.tid, call.id, fd) {
            Ok(copy) => copy,
            Err(e) => {
                let _ = self.listener.proceed(call.id);
                return match e.raw_os_error() {
                    Some(libc::EPERM | libc::EACCES | libc::ENOSYS) => Err(Trouble::NoFollow(e)),
                    _ => Ok(()),
                };
            }
        };
        let raw = copy.as_raw_fd();
        let opt = &OPTIONS[index];
        let outcome = (|| {
            if !fd_is_tcp(raw) {
                return Ok(None);
            }
            let now = current(raw)?;
            let value = keepalive_shim_sys::remote::read_int(call.tid, call.args[3])?;
            if value < opt.min || value > opt.max {
                // The kernel refuses it, with the program's own errno: nothing follows.
                return Ok(None);
            }
            let known = Known::from_kernel(&now, &self.defaults, &self.settings);
            let mut after = now;
            after[index] = value;
            let event = Event::Set(index);
            let plan = decide::decide(&self.settings, event, known, &self.defaults, |i| after[i]);
            // Before the program's call, which sets its own value itself.
            let failed = apply(raw, &plan, Some(index));
            Ok::<_, io::Error>(Some((plan, value, failed, known)))
        })();
        drop(copy);
        let _ = self.listener.proceed(call.id);
        match outcome {
            Ok(Some((plan, value, failed, known))) => {
                if !self.quiet {
                    self.counters
                        .applied(Event::Set(index), known, &plan, failed.mask);
                }
                self.debug(format_args!(
                    "pid {}: fd {fd}: {}",
                    call.tid,
                    Sets {
                        index,
                        theirs: Some(value),
                        plan: &plan,
                        refused: failed,
                    }
                ));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                Err(Trouble::NoFollow(e))
            }
            Err(_) => Ok(()),
        }
    }

    /// `KEEPALIVE_FORCE`: on a TCP socket this supervisor configured, the program's call returns
    /// success without changing anything (the plan: ours again for that option), so the
    /// configured values stand; anything else runs.
    fn on_setsockopt_forced(&mut self, call: &Call, index: usize) -> Result<(), Trouble> {
        let ours = match self.trap {
            // Every TCP socket the socket trap saw was made and configured here, but those of a
            // thread with another identity (it made its own) and those inherited from before.
            // Nothing is remembered per socket: its protocol is read from /proc.
            Trap::Socket => {
                let fd = call.int(0);
                let tid = call.tid.to_string();
                tcp_protocol(call.tid, fd)
                    && (self.inherited.is_empty()
                        || proc::socket_inode(call.tid, fd)
                            .is_some_and(|i| !self.inherited.contains(&i)))
                    && identity::context(&tid, self.labels).is_ok_and(|c| c == self.context)
            }
            Trap::Connect => self
                .take(call.tid, call.id, call.int(0))
                .is_ok_and(|copy| fd_is_tcp(copy.as_raw_fd())),
        } && self.listener.valid(call.id);
        if ours {
            // The program's call is not made: ours stands, which is what the plan for its call
            // on a configured socket under FORCE says.
            let plan = decide::decide(
                &self.settings,
                Event::Set(index),
                Known::CONFIGURED,
                &self.defaults,
                |i| self.defaults.fresh[i],
            );
            self.debug(format_args!(
                "pid {}: fd {}: {}",
                call.tid,
                call.int(0),
                Sets {
                    index,
                    theirs: None,
                    plan: &plan,
                    refused: Refused::NONE,
                }
            ));
            let _ = self.listener.succeed(call.id, 0);
        } else {
            let _ = self.listener.proceed(call.id);
        }
        Ok(())
    }
}

/// `socket(domain, type, protocol)` here, close-on-exec in this process (the program's copy gets
/// its own flag from the call).
fn make(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory arguments.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a new descriptor owned by this process.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Whether descriptor `fd` of thread `tid` is a TCP socket: the protocol name the socket file
/// gives (`system.sockprotoname`, read through `/proc`, which needs no copy of the descriptor).
fn tcp_protocol(tid: i32, fd: c_int) -> bool {
    let Ok(path) = std::ffi::CString::new(format!("/proc/{tid}/fd/{fd}")) else {
        return false;
    };
    let mut name = [0u8; 16];
    // SAFETY: path is a C string; name is valid for writes of its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            name.as_mut_ptr().cast(),
            name.len(),
        )
    };
    n > 0
        && matches!(
            &name[..n as usize],
            b"TCP\0" | b"TCPv6\0" | b"TCP" | b"TCPv6"
        )
}

/// The inodes of the TCP sockets this process holds: what a tree started now inherits.
fn inherited_tcp() -> Vec<u64> {
    let me = std::process::id() as i32;
    proc::socket_fds(me)
        .unwrap_or_default()
        .into_iter()
        .filter(|&(_, fd)| fd_is_tcp(fd))
        .map(|(inode, _)| inode)
        .collect()
}

/// The thread group of thread `tid`, from `/proc/TID/status`.
fn tgid(tid: i32) -> io::Result<i32> {
    proc::Status::read(&tid.to_string())?
        .number("Tgid")
        .and_then(|t| i32::try_from(t).ok())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
}
