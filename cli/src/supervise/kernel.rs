//! What the running kernel offers the supervisor, from its release number (`uname`): the
//! features each trap needs, with the Linux version that brought each one. The release number
//! only chooses and explains; the supervisor still checks each feature when it first uses it
//! (a distribution kernel may carry a backport, or a policy may forbid a call).

use super::filter::Trap;

/// This kernel's `(major, minor)`, or `None` when `uname` says something unexpected.
pub fn running() -> Option<(u32, u32)> {
    crate::os::kernel()
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
