//! Running a program root does not trust (a program of an image's tree, a library about to be
//! preloaded into every program) so that it can do nothing root could: chrooted (through a
//! descriptor of the tree, never its path again), in PID, network, IPC and UTS namespaces of its
//! own when the kernel allows (it can see, signal and reach no other process or socket, and
//! killing it kills all it started), as another user with no groups, no capabilities and
//! `no_new_privs` (setuid bits and file capabilities do nothing), with no descriptor but an
//! empty standard input and one pipe for its standard output and error, CPU, memory and core
//! limits, and a deadline. What it writes is read up to a cap. Nothing of the tree is opened on
//! its behalf (not even its `/dev/null`, which a tree may lack or fake).
//!
//! Between `clone` and `execve` the child makes raw system calls only: the C library's own
//! wrappers (`setuid` and friends) would try to reach the parent's other threads, which the
//! child does not have.

use libc::c_long;
use std::ffi::{CStr, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// What to run, and how confined.
pub struct Confined<'a> {
    /// The program's path (inside the tree when `chroot` is given).
    pub program: &'a CStr,
    /// Its arguments, the first being its name.
    pub args: &'a [&'a CStr],
    /// Its whole environment (`NAME=VALUE`).
    pub env: &'a [&'a CStr],
    /// The tree to chroot into, by a descriptor of its top.
    pub chroot: Option<BorrowedFd<'a>>,
    /// The user and group to run as (no supplementary groups); `None`: this process's.
    pub user: Option<(u32, u32)>,
    /// Whether a failure to become `user` stops the run (else it runs as this process's user).
    pub must_drop: bool,
    /// Killed (with everything it started) after this long.
    pub timeout: Duration,
    /// Bytes of output (standard output and error) kept; the rest is read and dropped.
    pub stderr_cap: usize,
    /// Its address-space limit, in bytes.
    pub memory: u64,
    /// Whether to try namespaces of its own (else a session of its own only).
    pub isolate: bool,
}

/// How it ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Its standard output and error, up to the cap.
    pub stderr: Vec<u8>,
    /// More was written than the cap.
    pub truncated: bool,
    /// It ran in namespaces of its own.
    pub isolated: bool,
    /// It ran as the user asked for.
    pub dropped: bool,
}

fn check(ret: c_long) -> io::Result<c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A descriptor at 3 or above (so that the child's dup3 onto 0, 1, 2 never clobbers it).
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fd is open; F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(r)?, high(w)?))
}

/// What the child needs, made before the clone (the child allocates nothing).
struct Plan<'a> {
    program: *const c_char,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    stdin: RawFd,
    stderr: RawFd,
    report: RawFd,
    chroot: Option<RawFd>,
    user: Option<(u32, u32)>,
    must_drop: bool,
    isolated: bool,
    cpu_seconds: u64,
    memory: u64,
    nofile: u64,
    _borrow: std::marker::PhantomData<&'a ()>,
}

/// Runs `c` to its end or its deadline.
pub fn run(c: &Confined<'_>) -> io::Result<Ended> {
    // An empty standard input: a pipe whose writing end is closed before the child starts.
    let (stdin, stdin_w) = pipe()?;
    drop(stdin_w);
    let (err_r, err_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let mut argv: Vec<*const c_char> = c.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = c.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: a zeroed rlimit is a valid buffer for getrlimit to fill.
    let mut nofile: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: nofile is live and writable.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) };
    let mut plan = Plan {
        program: c.program.as_ptr(),
        argv,
        envp,
        stdin: stdin.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: report_w.as_raw_fd(),
        chroot: c.chroot.map(|fd| fd.as_raw_fd()),
        user: c.user,
        must_drop: c.must_drop,
        isolated: true,
        cpu_seconds: c.timeout.as_secs().max(1),
        memory: c.memory,
        nofile: (nofile.rlim_cur as u64).min(1 << 20),
        _borrow: std::marker::PhantomData,
    };
    let namespaces =
        libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let mut pid = if c.isolate {
        clone(namespaces, &plan)
    } else {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    };
    if let Err(e) = &pid
        && matches!(
            e.raw_os_error(),
            Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS | libc::ENOMEM)
        )
    {
        // Not root, or inside a container whose seccomp profile forbids namespaces: the rest
        // of the confinement still holds; the child gets a session of its own instead.
        plan.isolated = false;
        pid = clone(0, &plan);
    }
    let pid = pid?;
    drop(err_w);
    drop(report_w);
    drop(stdin);
    let result = watch(pid, &plan, err_r, report_r, c);
    drop(plan);
    result
}

fn clone(namespaces: libc::c_int, plan: &Plan<'_>) -> io::Result<libc::pid_t> {
    let flags = (namespaces | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: clone without CLONE_VM and with no new stack behaves as fork: the child gets a
    // copy of this address space and runs `child`, which makes raw system calls only and never
    // returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    let pid = check(pid)?;
    if pid == 0 {
        // SAFETY: in the new child, as described above.
        unsafe { child(plan) }
    }
    Ok(pid as libc::pid_t)
}

/// The child's side, from the clone to `execve`.
///
/// # Safety
///
/// Only in the child of [`clone`]: it makes raw system calls and ends the process.
unsafe fn child(p: &Plan<'_>) -> ! {
    // SAFETY: raw system calls on descriptors and pointers the plan holds, alive in this copy of
    // the parent's memory; each failure ends the child with the step's errno reported.
    unsafe {
        let fail = |step: u32| fail(p.report, step);
        let sys = |ret: c_long, step: u32| {
            if ret < 0 {
                fail(step);
            }
        };
        sys(libc::syscall(libc::SYS_dup3, p.stdin, 0, 0), 1);
        sys(libc::syscall(libc::SYS_dup3, p.stderr, 1, 0), 1);
        sys(libc::syscall(libc::SYS_dup3, p.stderr, 2, 0), 1);
        if !p.isolated {
            // Its own session and process group: the deadline kills the group.
            libc::syscall(libc::SYS_setsid);
        }
        if let Some(root) = p.chroot {
            sys(libc::syscall(libc::SYS_fchdir, root), 2);
            sys(libc::syscall(libc::SYS_chroot, c".".as_ptr()), 2);
        }
        sys(libc::syscall(libc::SYS_chdir, c"/".as_ptr()), 2);
        // Every descriptor above 2 closes at exec (the report pipe too, which says it worked).
        let all = libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if all < 0 {
            for fd in 3..p.nofile as i32 {
                libc::syscall(
                    libc::SYS_fcntl,
                    fd,
                    libc::F_SETFD,
                    libc::FD_CLOEXEC as c_long,
                );
            }
        }
        if let Some((uid, gid)) = p.user {
            let dropped = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
                >= 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) >= 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) >= 0;
            if !dropped && p.must_drop {
                fail(3);
            }
        }
        // prctl's arguments are `unsigned long`, the unused ones required to be 0: each goes as
        // a full machine word (`syscall` is variadic; an `int` leaves the upper half undefined).
        let (zero, one): (c_long, c_long) = (0, 1);
        sys(
            libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_NO_NEW_PRIVS,
                one,
                zero,
                zero,
                zero,
            ),
            4,
        );
        // Set after the change of user (which clears it): it dies with us.
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as c_long,
            zero,
            zero,
            zero,
        );
        for (resource, limit) in [
            (libc::RLIMIT_CPU, p.cpu_seconds),
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_AS, p.memory),
        ] {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            sys(
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    resource,
                    &lim as *const libc::rlimit,
                    std::ptr::null_mut::<libc::rlimit>(),
                ),
                5,
            );
        }
        libc::syscall(
            libc::SYS_execve,
            p.program,
            p.argv.as_ptr(),
            p.envp.as_ptr(),
        );
        fail(6)
    }
}

/// Writes which step failed and its errno to `report`, and ends the child.
///
/// # Safety
///
/// Only in the child of [`clone`].
unsafe fn fail(report: RawFd, step: u32) -> ! {
    // SAFETY: errno is this thread's; the message is a live array written with a raw call.
    unsafe {
        let errno = *libc::__errno_location();
        let msg = [step, errno as u32];
        libc::syscall(
            libc::SYS_write,
            report,
            msg.as_ptr(),
            std::mem::size_of_val(&msg),
        );
        libc::_exit(127)
    }
}

/// The parent's side: the report of the steps before exec, the standard error, the end.
fn watch(
    pid: libc::pid_t,
    plan: &Plan<'_>,
    err: OwnedFd,
    report: OwnedFd,
    c: &Confined<'_>,
) -> io::Result<Ended> {
    let mut ended = Ended {
        code: None,
        signal: None,
        timed_out: false,
        stderr: Vec::new(),
        truncated: false,
        isolated: plan.isolated,
        dropped: c.user.is_some(),
    };
    // The report pipe closes at exec (or carries why the child stopped before it).
    let mut msg = [0u8; 8];
    let mut got = 0;
    loop {
        // SAFETY: the descriptor is open and msg is writable from `got` on.
        let n = unsafe {
            libc::read(
                report.as_raw_fd(),
                msg[got..].as_mut_ptr().cast(),
                msg.len() - got,
            )
        };
        if n > 0 {
            got += n as usize;
            if got == msg.len() {
                break;
            }
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    if got == msg.len() {
        let step = u32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
        let mut status = 0;
        // SAFETY: pid is our child; status is writable.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let what = match step {
            1 => "setting up its standard streams",
            2 => "entering the tree (chroot)",
            3 => "dropping to an unprivileged user",
            4 => "setting no_new_privs",
            5 => "setting its limits",
            _ => "starting it",
        };
        let e = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    let deadline = Instant::now() + c.timeout;
    let mut status = 0;
    let mut open = true;
    let mut exited: Option<Instant> = None;
    let mut buf = [0u8; 4096];
    loop {
        if exited.is_none() {
            // SAFETY: pid is our child; status is writable.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                exited = Some(Instant::now());
            } else if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if !open {
            if exited.is_some() {
                break;
            }
        } else {
            let mut pfd = libc::pollfd {
                fd: err.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is one live pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, 20) };
            if ready > 0 {
                // SAFETY: the descriptor is open and buf is writable for its length.
                let n = unsafe { libc::read(err.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    let n = n as usize;
                    let room = c.stderr_cap.saturating_sub(ended.stderr.len());
                    ended.stderr.extend_from_slice(&buf[..n.min(room)]);
                    ended.truncated |= n > room;
                } else if n == 0 {
                    open = false;
                }
            }
        }
        if exited.is_none() && !open {
            // SAFETY: pfd-less wait: a short sleep while the child ends.
            unsafe { libc::usleep(5_000) };
        }
        let now = Instant::now();
        // Out of time: the child itself, or what it left holding the pipe after it ended.
        let late = now >= deadline
            || exited.is_some_and(|at| now.duration_since(at) > Duration::from_secs(1));
        if late {
            if exited.is_none() {
                ended.timed_out = true;
            }
            let target = if plan.isolated { pid } else { -pid };
            // SAFETY: kill has no memory preconditions; pid (or its group) is ours.
            unsafe { libc::kill(target, libc::SIGKILL) };
            if exited.is_none() {
                // SAFETY: as above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
            }
            break;
        }
    }
    if !ended.timed_out {
        if libc::WIFEXITED(status) {
            ended.code = Some(libc::WEXITSTATUS(status));
        } else if libc::WIFSIGNALED(status) {
            ended.signal = Some(libc::WTERMSIG(status));
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c script` confined, its stderr capped at 16 bytes (a PID fits).
    fn sh(script: &CStr, timeout: Duration, isolate: bool) -> io::Result<Ended> {
        let args = [c"sh", c"-c", script];
        run(&Confined {
            program: c"/bin/sh",
            args: &args,
            env: &[c"PATH=/usr/bin:/bin"],
            chroot: None,
            user: None,
            must_drop: false,
            timeout,
            stderr_cap: 16,
            memory: 1 << 30,
            isolate,
        })
    }

    #[test]
    fn stderr_is_capped_and_the_status_kept() {
        let ended = sh(
            c"echo 0123456789abcdefXYZ >&2; exit 3",
            Duration::from_secs(10),
            true,
        )
        .unwrap();
        assert_eq!(ended.code, Some(3));
        assert_eq!(ended.stderr, b"0123456789abcdef");
        assert!(ended.truncated);
    }

    #[test]
    fn the_deadline_kills_it_and_what_it_started() {
        for isolate in [true, false] {
            let t0 = Instant::now();
            let ended = sh(
                c"sleep 30 & echo $! >&2; sleep 30",
                Duration::from_millis(500),
                isolate,
            )
            .unwrap();
            assert!(ended.timed_out, "{ended:?}");
            assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
            if !ended.isolated {
                // The background sleep, in the killed process group, is gone too.
                let pid = String::from_utf8_lossy(&ended.stderr).trim().to_owned();
                std::thread::sleep(Duration::from_millis(200));
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                assert!(stat.is_empty() || stat.contains(") Z "), "{pid}: {stat}");
            }
        }
    }

    #[test]
    fn as_root_it_runs_as_nobody_alone_and_without_privileges() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let args = [
            c"sh",
            c"-c",
            c"echo $(id -u) $(grep -E '^(NoNewPrivs|CapEff)' /proc/self/status | tr -s '\t\n' '  ')$$ >&2",
        ];
        let ended = run(&Confined {
            program: c"/bin/sh",
            args: &args,
            env: &[c"PATH=/usr/bin:/bin"],
            chroot: None,
            user: Some((65534, 65534)),
            must_drop: true,
            timeout: Duration::from_secs(10),
            stderr_cap: 4096,
            memory: 1 << 30,
            isolate: true,
        })
        .unwrap();
        let said = String::from_utf8_lossy(&ended.stderr);
        assert!(ended.isolated, "as root: namespaces of its own");
        assert_eq!(
            said.trim(),
            "65534 CapEff: 0000000000000000 NoNewPrivs: 1 1",
            "uid, no_new_privs, no capabilities, pid 1 of its own namespace"
        );
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error() {
        let args = [c"nothing"];
        let err = run(&Confined {
            program: c"/nonexistent/program",
            args: &args,
            env: &[],
            chroot: None,
            user: None,
            must_drop: false,
            timeout: Duration::from_secs(5),
            stderr_cap: 16,
            memory: 1 << 30,
            isolate: true,
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }
}
