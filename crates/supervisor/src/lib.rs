//! `keepalive-shim run --mode seccomp`: a seccomp user-notification supervisor that gives the
//! TCP sockets of any program (statically linked, Go, anything a preload library cannot enter)
//! the configured keepalive options, and of every program it starts.
//!
//! The tool forks. The child installs a filter (`filter.rs`) with a listener
//! (`SECCOMP_FILTER_FLAG_NEW_LISTENER`), hands the listener to the parent over a socket pair
//! (`SCM_RIGHTS`), makes one trapped call as a probe that the whole path works, and `exec`s the
//! command. The filter is inherited across fork and exec, so the one supervisor covers the whole
//! tree. The parent is the supervisor: it answers the trapped calls (`serve.rs`) until no
//! process carrying the filter is left (the listener reports `POLLHUP`), as a child subreaper
//! reaps every orphan of the tree, forwards the signals it receives to the command, and exits
//! as the command did. That makes it a correct container entrypoint (PID 1) too.

mod counters;
mod filter;
mod identity;
pub mod kernel;
mod notify;
mod serve;

pub use filter::Trap;

use keepalive_shim_policy::config::Settings;
use keepalive_shim_sys::say;
use notify::Listener;
use serve::Server;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

/// The capability's bit number (`linux/capability.h`).
const CAP_SYS_ADMIN: u32 = 21;

/// How long the child may take to install its filter and make its probe call.
const HANDSHAKE_MS: libc::c_int = 10_000;

/// What `run` starts under the supervisor.
pub struct Plan<'a> {
    /// The executable, found as `execvp` would.
    pub path: &'a Path,
    /// The command as given: `argv[0]` stays what the person typed.
    pub argv: &'a [OsString],
    /// The program's whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub settings: Settings,
    pub trap: Trap,
    /// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` where the kernel has it (6.6).
    pub sync_wake_up: bool,
}

/// Whether this process may install a seccomp filter without `no_new_privs`:
/// `CAP_SYS_ADMIN` in its user namespace. Then setuid programs in the tree keep their
/// privileges; without it, `no_new_privs` is set and they run without them.
pub fn privileged() -> bool {
    keepalive_shim_sys::proc::Status::read("self")
        .ok()
        .and_then(|s| s.hex("CapEff"))
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Why the child could not set up the filter, for the person: what to do instead.
fn refusal(errno: i32) -> String {
    let e = io::Error::from_raw_os_error(errno);
    match errno {
        libc::EBUSY => format!(
            "another seccomp supervisor already watches this process ({e}: a filter with a \
             listener is installed, for example by an outer `keepalive-shim run --mode seccomp` \
             or a container runtime), and the kernel allows only one: run this command with \
             --mode preload, or start keepalive-shim outside that supervisor"
        ),
        libc::EPERM | libc::EACCES | libc::ENOSYS => format!(
            "seccomp() is not allowed here ({e}: a seccomp profile or a security policy forbids \
             it, or the kernel has no seccomp filters): run this command with --mode preload \
             (dynamically linked programs), or allow seccomp() for it"
        ),
        libc::EINVAL => format!(
            "this kernel does not offer seccomp user notification ({e}; Linux 5.0 brought it, \
             and the supervisor needs 5.6): run this command with --mode preload"
        ),
        _ => format!("cannot install the seccomp filter: {e}"),
    }
}

/// Runs the plan's command under the supervisor; returns (or dies) as the command did. `Err`
/// says why the supervisor cannot work here; then nothing was run.
pub fn run(plan: Plan) -> Result<ExitCode, String> {
    let name = plan.argv[0].to_string_lossy().into_owned();
    let exec = Exec::new(&plan).ok_or("an argument or a variable holds a NUL byte")?;
    let filter = filter::program(plan.trap, true);
    let setup = ChildSetup {
        no_new_privs: !privileged(),
        // `KEEPALIVE_SHIM_NO_KILLABLE_RECV=1` takes the path of kernels before 5.19, to test
        // and measure it.
        flags: if std::env::var_os("KEEPALIVE_SHIM_NO_KILLABLE_RECV").is_some_and(|v| v == "1") {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        } else {
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        },
        prog: libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        },
        trap: plan.trap,
    };
    let signals = Signals::block().map_err(|e| format!("cannot set up signal handling: {e}"))?;
    let (ours, theirs) = socket_pair().map_err(|e| format!("cannot make a socket pair: {e}"))?;
    // Orphans of the tree become this process's children, so they are reaped here and the
    // listener sees them go.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SAFETY: fork in a single-threaded process; the child runs only system calls on data
    // prepared above until it execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ours);
        // SAFETY: the child side of the fork, with everything it touches prepared before it.
        unsafe { child(theirs.as_raw_fd(), &setup, &signals.old, &exec) };
    }
    drop(theirs);
    let mut sup = Supervisor {
        child: pid,
        status: None,
        signals,
        handshake: Some(ours),
    };
    let mut server = match sup.start(&plan) {
        Ok(server) => server,
        Err(message) => {
            sup.kill_and_reap();
            // SAFETY: prctl with integer arguments: this process is no subreaper any more.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
            return Err(message);
        }
    };
    quiet_stdio();
    sup.serve(&mut server, &name);
    Ok(finish(sup.status.unwrap_or(0)))
}

/// What the child needs to `exec`, prepared before the fork (the child must not allocate).
struct Exec {
    path: CString,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
}

impl Exec {
    fn new(plan: &Plan) -> Option<Exec> {
        let path = CString::new(plan.path.as_os_str().as_bytes()).ok()?;
        let args: Vec<CString> = plan
            .argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).ok())
            .collect::<Option<_>>()?;
        let vars: Vec<CString> = plan
            .env
            .iter()
            .map(|(k, v)| {
                let mut entry = k.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                CString::new(entry).ok()
            })
            .collect::<Option<_>>()?;
        let pointers = |list: &[CString]| {
            list.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        Some(Exec {
            path,
            argv: pointers(&args),
            _argv: args,
            envp: pointers(&vars),
            _envp: vars,
        })
    }
}

struct ChildSetup {
    no_new_privs: bool,
    flags: libc::c_ulong,
    prog: libc::sock_fprog,
    trap: Trap,
}

/// Sends `tag` and an errno to the parent.
///
/// # Safety
/// Async-signal-safe: only `send` on a stack buffer.
unsafe fn report(sock: RawFd, tag: u8, errno: i32) {
    let mut msg = [0u8; 5];
    msg[0] = tag;
    msg[1..].copy_from_slice(&errno.to_le_bytes());
    // SAFETY: msg is valid for reads of its length.
    unsafe { libc::send(sock, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The child after the fork: filter, listener to the parent, probe, wait for the go, exec.
///
/// # Safety
/// Only async-signal-safe calls on data prepared before the fork; never returns.
unsafe fn child(sock: RawFd, setup: &ChildSetup, old: &libc::sigset_t, exec: &Exec) -> ! {
    // SAFETY: system calls on valid pointers prepared before the fork.
    unsafe {
        if setup.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            report(sock, b'E', last_errno());
            libc::_exit(126);
        }
        let install = |flags: libc::c_ulong| {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &raw const setup.prog,
            )
        };
        let mut listener = install(setup.flags);
        let mut killable = setup.flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0;
        if listener < 0 && last_errno() == libc::EINVAL {
            // SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is Linux 5.19.
            listener = install(setup.flags & !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
            killable = false;
        }
        if listener < 0 {
            report(sock, b'E', last_errno());
            libc::_exit(126);
        }
        // Whether the program's calls wait killably once received (the two-step answer).
        send_fd(sock, listener as RawFd, killable);
        libc::close(listener as RawFd);
        // The probe: one trapped call, served like every later one.
        match setup.trap {
            Trap::Socket => {
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if s >= 0 {
                    libc::close(s);
                }
            }
            Trap::Connect => {
                libc::connect(sock, std::ptr::null(), 0);
            }
        }
        let mut go = 0u8;
        if libc::recv(sock, (&raw mut go).cast(), 1, 0) != 1 || go != b'G' {
            libc::_exit(126);
        }
        libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
        // Rust's runtime ignores SIGPIPE; an ignored signal would stay ignored across exec.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        let errno = last_errno();
        report(sock, b'X', errno);
        libc::_exit(if errno == libc::ENOENT { 127 } else { 126 });
    }
}

/// Sends descriptor `fd` over `sock` with `SCM_RIGHTS`, tagged `L`, with `killable` (whether
/// the filter has `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`) in the errno field.
///
/// # Safety
/// Async-signal-safe: `sendmsg` on stack buffers.
unsafe fn send_fd(sock: RawFd, fd: RawFd, killable: bool) {
    let mut msg5 = [0u8; 5];
    msg5[0] = b'L';
    msg5[1] = u8::from(killable);
    let mut iov = libc::iovec {
        iov_base: msg5.as_mut_ptr().cast(),
        iov_len: msg5.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; every pointer set points at a live stack buffer.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
    }
}

/// A handshake message: its tag, errno, and a descriptor when one came along.
fn recv_message(sock: RawFd) -> io::Result<Option<(u8, i32, Option<OwnedFd>)>> {
    let mut buf = [0u8; 5];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; its pointers point at live buffers of the given sizes.
    let (n, fd) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fd = None;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
        (n, fd)
    };
    if n == 0 {
        return Ok(None);
    }
    let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Ok(Some((buf[0], errno, fd)))
}

fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is valid for two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits up to `ms` for `fd` to be readable; the `revents`.
fn wait_readable(fd: RawFd, ms: libc::c_int) -> libc::c_short {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc >= 0 || last_errno() != libc::EINTR {
            return if rc > 0 { p.revents } else { 0 };
        }
    }
}

/// The signals this process takes through a signalfd: every one a process can catch, but the
/// ones the kernel raises for a fault of this process itself.
struct Signals {
    fd: OwnedFd,
    /// The mask before, which the child restores before `exec`.
    old: libc::sigset_t,
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: restoring this process's signal mask as it was.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

impl Signals {
    fn block() -> io::Result<Signals> {
        // SAFETY: sigset operations on local, initialised sets; signalfd on a valid set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
                libc::SIGSYS,
                libc::SIGABRT,
                libc::SIGPIPE,
                libc::SIGKILL,
                libc::SIGSTOP,
            ] {
                libc::sigdelset(&mut set, sig);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
                old,
            })
        }
    }

    /// The next pending signal.
    fn next(&self) -> Option<libc::signalfd_siginfo> {
        // SAFETY: plain data the kernel fills.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of_val(&info);
        // SAFETY: info is valid for writes of its size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut info).cast(), size) };
        (n == size as isize).then_some(info)
    }
}

/// Standard input and output of the supervisor itself go to /dev/null: the program has its
/// own copies, and a reader of its output sees the end when the program's tree closes it.
/// Standard error stays, for the supervisor's warnings.
fn quiet_stdio() {
    // SAFETY: open, dup2 and close on descriptors of this process.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
}

struct Supervisor {
    /// The direct child: the command.
    child: libc::pid_t,
    /// Its wait status, once reaped.
    status: Option<libc::c_int>,
    signals: Signals,
    /// The parent's end of the socket pair, until the child has exec'd.
    handshake: Option<OwnedFd>,
}

impl Supervisor {
    /// The listener, the probe served, the child told to go: the server, or why not.
    fn start(&mut self, plan: &Plan) -> Result<Server, String> {
        let (fd, killable) = self.handshake_listener()?;
        let listener =
            Listener::new(fd).map_err(|e| format!("cannot use the seccomp listener: {e}"))?;
        if plan.sync_wake_up {
            // Linux 6.6; without it, the usual wake-ups.
            let _ = listener.set_sync_wake_up();
        }
        let mut server = Server::new(listener, plan.trap, plan.settings, killable)
            .map_err(|e| format!("cannot start the supervisor: {e}"))?;
        self.probe(&mut server)?;
        if !self.tell(b'G') {
            return Err("the child went away before running the command".into());
        }
        Ok(server)
    }

    fn tell(&self, byte: u8) -> bool {
        let Some(sock) = &self.handshake else {
            return false;
        };
        // SAFETY: one byte from a stack variable.
        unsafe {
            libc::send(
                sock.as_raw_fd(),
                (&raw const byte).cast(),
                1,
                libc::MSG_NOSIGNAL,
            ) == 1
        }
    }

    /// The listener from the child and whether its filter waits killably once a call is
    /// received, or the refusal to give the person.
    fn handshake_listener(&mut self) -> Result<(OwnedFd, bool), String> {
        let sock = self
            .handshake
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .unwrap_or(-1);
        if wait_readable(sock, HANDSHAKE_MS) == 0 {
            return Err("the child did not install its seccomp filter within 10 s".into());
        }
        match recv_message(sock) {
            Ok(Some((b'L', killable, Some(fd)))) => Ok((fd, killable == 1)),
            Ok(Some((b'E', errno, _))) => Err(refusal(errno)),
            Ok(_) => Err("the child ended before installing its seccomp filter".into()),
            Err(e) => Err(format!("cannot receive the seccomp listener: {e}")),
        }
    }

    /// Serves the child's probe call: proof that this kernel and this policy let the whole
    /// path work, before the command runs.
    fn probe(&mut self, server: &mut Server) -> Result<(), String> {
        let revents = wait_readable(server.listener.raw(), HANDSHAKE_MS);
        if revents & libc::POLLIN == 0 {
            return Err("the child's probe call did not reach the supervisor within 10 s".into());
        }
        let call = server
            .listener
            .recv()
            .map_err(|e| format!("cannot receive a seccomp notification: {e}"))?
            .ok_or("the child's probe call went away")?;
        server.quiet = true;
        let handled = server.handle(&call).map_err(|trouble| trouble.to_string());
        server.quiet = false;
        handled
    }

    fn kill_and_reap(&mut self) {
        // SAFETY: signalling and reaping this process's own child.
        unsafe {
            libc::kill(self.child, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(self.child, &mut st, 0);
        }
    }

    /// Answers trapped calls until no filtered process is left and the command has been
    /// reaped; forwards signals and reaps orphans meanwhile.
    fn serve(&mut self, server: &mut Server, name: &str) {
        let mut listening = true;
        while listening || self.status.is_none() {
            let handshake = self.handshake.as_ref().map_or(-1, AsRawFd::as_raw_fd);
            let mut fds = [
                libc::pollfd {
                    fd: if listening { server.listener.raw() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.signals.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: handshake,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: three valid pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
            if rc < 0 {
                continue;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                match server.listener.recv() {
                    Ok(Some(call)) => server.serve(&call),
                    Ok(None) => {}
                    Err(e) => {
                        // Without a working listener every trapped call would wait forever;
                        // closed, they fail with ENOSYS instead.
                        say!("cannot receive seccomp notifications ({e}): stopping the supervisor");
                        server.listener.close();
                        listening = false;
                    }
                }
            } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                listening = false;
            }
            if fds[1].revents & libc::POLLIN != 0 {
                while let Some(info) = self.signals.next() {
                    self.on_signal(&info);
                }
            }
            if fds[2].revents != 0 {
                match recv_message(handshake) {
                    Ok(Some((b'X', errno, _))) => {
                        let e = io::Error::from_raw_os_error(errno);
                        say!("cannot run {name}: {e}");
                    }
                    Ok(Some(_)) => {}
                    // The end: exec succeeded (the child's end was close-on-exec).
                    _ => self.handshake = None,
                }
            }
        }
        self.reap();
    }

    fn on_signal(&mut self, info: &libc::signalfd_siginfo) {
        let sig = info.ssi_signo as libc::c_int;
        if sig == libc::SIGCHLD {
            self.reap();
            return;
        }
        // A terminal's signals (Ctrl-C, Ctrl-Z, a hang-up, a resize) go to its whole foreground
        // process group, the command included: not sent again.
        if info.ssi_code == libc::SI_KERNEL {
            return;
        }
        if sig == libc::SIGCONT && !self.stopped() {
            return;
        }
        self.forward(sig);
    }

    /// Whether the command is stopped (job control).
    fn stopped(&self) -> bool {
        self.status.is_none()
            && std::fs::read_to_string(format!("/proc/{}/stat", self.child))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                .unwrap_or(false)
    }

    /// Sends `sig` to the command; once it is gone, to the processes of the tree left
    /// (this process's children: the orphans it adopted).
    fn forward(&self, sig: libc::c_int) {
        let targets: Vec<libc::pid_t> = if self.status.is_none() {
            vec![self.child]
        } else {
            let me = std::process::id();
            std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        for pid in targets {
            // SAFETY: kill with integer arguments.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Reaps every child that has ended; notes the command's status, and stops this process
    /// when the command is stopped by job control (so that a shell sees the job stop).
    fn reap(&mut self) {
        loop {
            let mut st = 0;
            // SAFETY: waitpid on this process's children.
            let pid = unsafe {
                libc::waitpid(
                    -1,
                    &mut st,
                    libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED,
                )
            };
            if pid <= 0 {
                return;
            }
            if pid != self.child {
                continue;
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                self.status = Some(st);
            } else if libc::WIFSTOPPED(st)
                && matches!(
                    libc::WSTOPSIG(st),
                    libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                )
                && std::process::id() != 1
            {
                // SAFETY: stopping this process; a SIGCONT resumes it here.
                unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
            }
        }
    }
}

/// Exits as the command did: its exit status, or death by the same signal (without a core
/// dump). As PID 1, which no signal of its own can kill, `128 + N`.
fn finish(status: libc::c_int) -> ExitCode {
    if libc::WIFEXITED(status) {
        return ExitCode::from(libc::WEXITSTATUS(status) as u8);
    }
    let sig = libc::WTERMSIG(status);
    if std::process::id() != 1 {
        // SAFETY: resetting this process's own signal state, then signalling itself.
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
    ExitCode::from((128 + sig) as u8)
}
