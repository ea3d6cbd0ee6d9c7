//! What the running kernel offers the supervisor, from its release number (`uname`): the
//! features each trap needs, with the Linux version that brought each one. The release number
//! only chooses and explains; the supervisor still checks each feature when it first uses it
//! (a distribution kernel may carry a backport, or a policy may forbid a call).

use super::filter::Trap;

/// `(major, minor)` of a Linux release string such as `6.18.44-fc-v669` or `5.15.0-91-generic`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// This kernel's `(major, minor)`, or `None` when `uname` says something unexpected.
pub fn running() -> Option<(u32, u32)> {
    // SAFETY: utsname is plain data, and uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is valid for writes.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    parse_release(&release.to_string_lossy())
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
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
        assert!(running().is_some());
    }

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
