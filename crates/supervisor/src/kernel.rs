//! What the running kernel offers the supervisor, from its release number (`uname`): the
//! features each trap needs, with the Linux version that brought each one. The release number
//! only chooses and explains; the supervisor still checks each feature when it first uses it
//! (a distribution kernel may carry a backport, or a policy may forbid a call).

use super::filter::Trap;

/// This kernel's `(major, minor)`, or `None` when `uname` says something unexpected.
pub fn running() -> Option<(u32, u32)> {
    keepalive_shim_sys::kernel::version()
}

/// The oldest kernel each trap works on: `SECCOMP_ADDFD_FLAG_SEND` (5.14) for the socket trap;
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (5.5) and `pidfd_getfd` (5.6) for the connect trap.
pub fn minimum(trap: Trap) -> (u32, u32) {
    match trap {
        Trap::Socket => (5, 14),
        Trap::Connect => (5, 6),
    }
}

/// The trap `auto` chooses on a kernel of `version`: the socket trap where the kernel has it
/// (it needs no right over the program's processes, so it works in a container with Docker's
/// default seccomp profile, and it sees every TCP socket, listeners included, at the moment it is
/// made), else the connect trap. `Err` says why neither works.
pub fn choose(version: Option<(u32, u32)>) -> Result<Trap, String> {
    let Some(v) = version else {
        // An unreadable release: try the socket trap, whose first use checks the kernel.
        return Ok(Trap::Socket);
    };
    if v >= minimum(Trap::Socket) {
        Ok(Trap::Socket)
    } else if v >= minimum(Trap::Connect) {
        Ok(Trap::Connect)
    } else {
        Err(format!(
            "this kernel is Linux {}.{}; the seccomp supervisor needs Linux 5.6 or later \
             (5.14 for its socket trap)",
            v.0, v.1
        ))
    }
}

/// Whether `trap` can work on a kernel of `version`; `Err` says why not.
pub fn supports(version: Option<(u32, u32)>, trap: Trap) -> Result<(), String> {
    let (major, minor) = minimum(trap);
    match version {
        Some(v) if v < (major, minor) => Err(format!(
            "this kernel is Linux {}.{}; --trap {} needs Linux {major}.{minor} or later",
            v.0,
            v.1,
            trap.name()
        )),
        _ => Ok(()),
    }
}

/// What the socket trap changes that a program or the machine's rules could see, on a kernel of
/// `version`: `keepalive-shim check -- COMMAND`'s lines about it.
pub fn trace_section(version: Option<(u32, u32)>) -> String {
    let close = match version {
        Some(v) if v < (5, 19) => format!(
            "  Close: this kernel (Linux {}.{}) lacks SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV \
             (5.19): the supervisor installs each socket and answers in one step \
             (SECCOMP_ADDFD_FLAG_SEND) and closes its own copy just after, on another thread. \
             A program that closes a socket at once may see its close() return before the last \
             copy is closed: the RST of an SO_LINGER {{1,0}} close leaves up to a few ms late \
             (measured on 6.18 without the flag: 283 of 2,000 late, up to 5 ms), and a \
             lingering close may return early. A signal during a trapped socket() makes it \
             return EINTR to a handler without SA_RESTART (most of the calls under a 50 µs timer).",
            v.0, v.1
        ),
        _ => "  Close: the supervisor closes its copy of each socket before the program's \
              socket() returns (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, Linux 5.19): the \
              program's close() is the last, as without it (an SO_LINGER reset leaves at once, a \
              lingering close waits in the program). A signal can still interrupt a trapped \
              socket() before the supervisor has received the call (EINTR to a handler without \
              SA_RESTART: about 3 % of the calls under a 50 µs timer here, none bare)."
            .to_owned(),
    };
    format!(
        "{close}\n  Identity: each socket is made with the calling thread's filesystem uid, gid \
         and supplementary groups, in its network namespace (owner matches, ip rule uidrange \
         see the program). A thread in another cgroup or with another LSM label than the \
         supervisor's makes its TCP sockets itself: those keep the kernel's values (said at \
         warn once). Under --force, a setsockopt() of the five options on any TCP socket of the \
         tree but those is answered without change.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_the_socket_trap_and_refuses_old_kernels() {
        assert_eq!(choose(Some((6, 18))), Ok(Trap::Socket));
        assert_eq!(choose(Some((5, 14))), Ok(Trap::Socket));
        assert_eq!(choose(Some((5, 10))), Ok(Trap::Connect));
        let old = choose(Some((5, 4))).unwrap_err();
        assert!(
            old.contains("Linux 5.4") && old.contains("5.6 or later"),
            "{old}"
        );
        assert!(supports(Some((5, 10)), Trap::Socket).is_err());
        assert!(supports(Some((5, 10)), Trap::Connect).is_ok());
        assert!(supports(None, Trap::Socket).is_ok());
    }
}
