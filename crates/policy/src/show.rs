//! The words of the debug lines that say what a plan did to a socket, written once for every
//! mechanism that applies plans (the preload library's `KEEPALIVE_LOG=debug` lines, and the
//! seccomp supervisor's): the same plan, refused the same way, prints the same text. Only
//! `core::fmt`, no allocation: the library formats these into a stack buffer inside a hook.
//!
//! Each type is one part of a line, after the mechanism's own prefix (`fd 5: `, `pid 7: fd 5: `):
//! [`Made`] after `socket()`, [`Outcome`] after a `connect()`, `listen()` or `accept()` that was
//! decided, [`Sets`] after the program set one of the options, [`SetRefused`] when the kernel
//! refused the program's own call. [`Applied`] and [`Errno`] are their pieces.

use crate::decide::{ALL, Known, Plan, Reason, label};
use crate::options::{N, OPTIONS, USER_TIMEOUT};
use core::fmt;
use libc::c_int;

/// The options the kernel refused when a plan was applied, as a mask over [`OPTIONS`], and the
/// errno of the last refusal (0: not known, and then not shown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub mask: u8,
    pub errno: c_int,
}

impl Refused {
    pub const NONE: Refused = Refused { mask: 0, errno: 0 };

    pub fn any(self) -> bool {
        self.mask != 0
    }
}

/// The new TCP socket's line: `new TCP socket (IPv4): SO_KEEPALIVE=1 TCP_KEEPIDLE=30 …`.
pub struct Made<'a> {
    pub ipv6: bool,
    /// The plan for `Event::Made`.
    pub plan: &'a Plan,
    pub refused: Refused,
}

impl fmt::Display for Made<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "new TCP socket ({}): {}",
            if self.ipv6 { "IPv6" } else { "IPv4" },
            Applied::of(self.plan, self.refused)
        )
    }
}

/// What a decided `connect()` (or `listen()`, or `accept()` from a listener nobody watched) did:
/// the plan's reason, and what was set.
pub struct Outcome<'a> {
    pub plan: &'a Plan,
    /// What was known of the socket before the plan.
    pub known: Known,
    pub refused: Refused,
}

impl fmt::Display for Outcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let applied = Applied::of(self.plan, self.refused);
        match self.plan.reason {
            Reason::Excluded if self.plan.is_empty() => write!(
                f,
                "{}; left as it is (the library had set nothing on it)",
                Reason::Excluded
            ),
            Reason::Excluded => write!(
                f,
                "{}; back to the kernel's defaults: {applied}",
                Reason::Excluded
            ),
            Reason::Forced if self.known.configured => {
                write!(f, "applied again (KEEPALIVE_FORCE): {applied}")
            }
            Reason::Late | Reason::Forced => {
                write!(
                    f,
                    "a TCP socket not made by socket(), configured: {applied}"
                )
            }
            other => write!(f, "{other}"),
        }
    }
}

/// The program set option `index` itself (and the kernel took it): its value as read back
/// (`theirs`, shown when known), and what the plan for `Event::Set(index)` did about it.
pub struct Sets<'a> {
    pub index: usize,
    pub theirs: Option<c_int>,
    pub plan: &'a Plan,
    pub refused: Refused,
}

impl fmt::Display for Sets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the program sets ")?;
        f.write_str(label(self.index))?;
        if let Some(v) = self.theirs {
            write!(f, "={v}")?;
        }
        f.write_str("; ")?;
        let plan = self.plan;
        let refused = self.refused;
        match plan.reason {
            Reason::Forced => {
                // Ours again: the value the plan sets for the option.
                let ours = plan.set.get(self.index).copied().flatten().unwrap_or(0);
                if refused.any() {
                    write!(
                        f,
                        "its value stands: the kernel refused ours, {ours}{}",
                        Because(refused.errno)
                    )
                } else {
                    write!(f, "set back to {ours} (KEEPALIVE_FORCE)")
                }
            }
            Reason::Follows => {
                let ms = plan.set[USER_TIMEOUT].unwrap_or(0);
                f.write_str("its value stands, and ")?;
                if refused.any() {
                    write!(
                        f,
                        "TCP_USER_TIMEOUT could not follow it: the kernel refused {ms}ms{}",
                        Because(refused.errno)
                    )
                } else {
                    write!(
                        f,
                        "TCP_USER_TIMEOUT is now {ms}ms, following the keepalive in effect"
                    )
                }
            }
            _ if plan.is_empty() => f.write_str("its value stands"),
            _ => write!(
                f,
                "its value stands; a TCP socket not configured yet: {}",
                Applied::of(plan, refused)
            ),
        }
    }
}

/// The kernel refused the program's own `setsockopt()` of option `index`.
pub struct SetRefused {
    pub index: usize,
    pub errno: c_int,
}

impl fmt::Display for SetRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the program's {} was refused by the kernel{}; nothing changed",
            label(self.index),
            Because(self.errno)
        )
    }
}

/// Option values set: `NAME=VALUE` for each set and not refused, what the rest are, then what
/// the kernel refused.
pub struct Applied {
    pub values: [c_int; N],
    /// The options set, as a mask over [`OPTIONS`].
    pub mask: u8,
    pub refused: Refused,
}

impl Applied {
    /// What applying `plan` set, the kernel having refused `refused`.
    pub fn of(plan: &Plan, refused: Refused) -> Applied {
        Applied {
            values: plan.set.map(|v| v.unwrap_or(0)),
            mask: plan.mask(),
            refused,
        }
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (i, opt) in OPTIONS.iter().enumerate() {
            if self.mask & !self.refused.mask & (1 << i) == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let unit = if i == USER_TIMEOUT { "ms" } else { "" };
            write!(f, "{}={}{unit}", opt.label, self.values[i])?;
        }
        if first {
            f.write_str("nothing set")?;
        }
        if self.mask & ALL != ALL && self.mask != 0 {
            f.write_str(" (the program's own values for the rest)")?;
        }
        if self.refused.any() {
            f.write_str("; the kernel refused")?;
            for (i, opt) in OPTIONS.iter().enumerate() {
                if self.refused.mask & (1 << i) != 0 {
                    write!(f, " {}", opt.label)?;
                }
            }
            write!(
                f,
                "{}: the socket works without",
                Because(self.refused.errno)
            )?;
        }
        Ok(())
    }
}

/// An errno value by name where it is one a socket option call gives (`errno 95` otherwise).
pub struct Errno(pub c_int);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::EACCES => "EACCES",
            libc::EBADF => "EBADF",
            libc::EFAULT => "EFAULT",
            libc::EINVAL => "EINVAL",
            libc::ENOTSOCK => "ENOTSOCK",
            libc::ENOPROTOOPT => "ENOPROTOOPT",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOSYS => "ENOSYS",
            other => return write!(f, "errno {other}"),
        };
        f.write_str(name)
    }
}

/// ` (EPERM)`, or nothing for an errno that is not known (0).
struct Because(c_int);

impl fmt::Display for Because {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, " ({})", Errno(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT, load};
    use crate::decide::{Defaults, Event, decide};
    use crate::options::{IDLE, KEEPALIVE};
    use crate::rules::Destination;

    const D: Defaults = Defaults::KERNEL;
    const EPERM: Refused = Refused {
        mask: 1 << USER_TIMEOUT,
        errno: libc::EPERM,
    };

    fn read(i: usize) -> c_int {
        [1, 60, 60, 3, 0][i]
    }

    #[test]
    fn a_new_socket() {
        let plan = decide(&DEFAULT, Event::Made, Known::FRESH, &D, read);
        let line = |ipv6, refused| {
            Made {
                ipv6,
                plan: &plan,
                refused,
            }
            .to_string()
        };
        assert_eq!(
            line(false, Refused::NONE),
            "new TCP socket (IPv4): SO_KEEPALIVE=1 TCP_KEEPIDLE=30 TCP_KEEPINTVL=10 \
             TCP_KEEPCNT=3 TCP_USER_TIMEOUT=60000ms"
        );
        assert_eq!(
            line(true, EPERM),
            "new TCP socket (IPv6): SO_KEEPALIVE=1 TCP_KEEPIDLE=30 TCP_KEEPINTVL=10 \
             TCP_KEEPCNT=3; the kernel refused TCP_USER_TIMEOUT (EPERM): the socket works without"
        );
        let all = Refused {
            mask: ALL,
            errno: 12345,
        };
        assert_eq!(
            line(false, all),
            "new TCP socket (IPv4): nothing set; the kernel refused SO_KEEPALIVE TCP_KEEPIDLE \
             TCP_KEEPINTVL TCP_KEEPCNT TCP_USER_TIMEOUT (errno 12345): the socket works without"
        );
    }

    #[test]
    fn outcomes_of_a_connect() {
        let outcome = |s, event, known| {
            let plan = decide(s, event, known, &D, read);
            Outcome {
                plan: &plan,
                known,
                refused: Refused::NONE,
            }
            .to_string()
        };
        let connect = Event::Connect(None);
        assert_eq!(
            outcome(&DEFAULT, connect, Known::CONFIGURED),
            "options were set at socket()"
        );
        assert_eq!(
            outcome(&DEFAULT, connect, Known::FRESH),
            "a TCP socket not made by socket(), configured: SO_KEEPALIVE=1 TCP_KEEPIDLE=30 \
             TCP_KEEPINTVL=10 TCP_KEEPCNT=3 TCP_USER_TIMEOUT=60000ms"
        );
        let own_idle = Known {
            own: 1 << IDLE | 1 << KEEPALIVE,
            ..Known::FRESH
        };
        assert_eq!(
            outcome(&DEFAULT, connect, own_idle),
            "a TCP socket not made by socket(), configured: TCP_KEEPINTVL=10 TCP_KEEPCNT=3 \
             TCP_USER_TIMEOUT=90000ms (the program's own values for the rest)"
        );
        let force = load([("KEEPALIVE_FORCE", "1")]).settings;
        assert!(
            outcome(&force, connect, Known::CONFIGURED)
                .starts_with("applied again (KEEPALIVE_FORCE): SO_KEEPALIVE=1 TCP_KEEPIDLE=30 ")
        );
        let rules = load([("KEEPALIVE_EXCLUDE", "10.0.0.0/8")]).settings;
        let mut sin = [0u8; 16];
        sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sin[4..8].copy_from_slice(&[10, 1, 2, 3]);
        let dest = Destination::from_sockaddr(&sin).unwrap();
        let excluded = Event::Connect(Some(&dest));
        assert_eq!(
            outcome(&rules, excluded, Known::CONFIGURED),
            "a destination the rules exclude; back to the kernel's defaults: SO_KEEPALIVE=0 \
             TCP_KEEPIDLE=7200 TCP_KEEPINTVL=75 TCP_KEEPCNT=9 TCP_USER_TIMEOUT=0ms"
        );
        assert_eq!(
            outcome(&rules, excluded, Known::FRESH),
            "a destination the rules exclude; left as it is (the library had set nothing on it)"
        );
        assert_eq!(
            outcome(&DEFAULT, connect, Known::LEFT_ALONE),
            "left as the program made it"
        );
    }

    #[test]
    fn the_programs_own_choices() {
        let sets = |s, index, known, theirs, refused| {
            let plan = decide(s, Event::Set(index), known, &D, read);
            Sets {
                index,
                theirs,
                plan: &plan,
                refused,
            }
            .to_string()
        };
        assert_eq!(
            sets(&DEFAULT, IDLE, Known::CONFIGURED, Some(60), Refused::NONE),
            "the program sets TCP_KEEPIDLE=60; its value stands, and TCP_USER_TIMEOUT is now \
             90000ms, following the keepalive in effect"
        );
        assert_eq!(
            sets(&DEFAULT, IDLE, Known::CONFIGURED, None, EPERM),
            "the program sets TCP_KEEPIDLE; its value stands, and TCP_USER_TIMEOUT could not \
             follow it: the kernel refused 90000ms (EPERM)"
        );
        assert_eq!(
            sets(
                &DEFAULT,
                KEEPALIVE,
                Known::CONFIGURED,
                Some(0),
                Refused::NONE
            ),
            "the program sets SO_KEEPALIVE=0; its value stands"
        );
        assert_eq!(
            sets(&DEFAULT, USER_TIMEOUT, Known::FRESH, Some(5), Refused::NONE),
            "the program sets TCP_USER_TIMEOUT=5; its value stands; a TCP socket not configured \
             yet: SO_KEEPALIVE=1 TCP_KEEPIDLE=30 TCP_KEEPINTVL=10 TCP_KEEPCNT=3 (the program's \
             own values for the rest)"
        );
        let force = load([("KEEPALIVE_FORCE", "1")]).settings;
        assert_eq!(
            sets(&force, IDLE, Known::CONFIGURED, Some(60), Refused::NONE),
            "the program sets TCP_KEEPIDLE=60; set back to 30 (KEEPALIVE_FORCE)"
        );
        let refused = Refused {
            mask: 1 << IDLE,
            errno: libc::EINVAL,
        };
        assert_eq!(
            sets(&force, IDLE, Known::CONFIGURED, Some(60), refused),
            "the program sets TCP_KEEPIDLE=60; its value stands: the kernel refused ours, 30 \
             (EINVAL)"
        );
        assert_eq!(
            SetRefused {
                index: IDLE,
                errno: libc::EINVAL
            }
            .to_string(),
            "the program's TCP_KEEPIDLE was refused by the kernel (EINVAL); nothing changed"
        );
    }

    #[test]
    fn an_errno_not_known_is_left_out() {
        let plan = decide(&DEFAULT, Event::Made, Known::FRESH, &D, read);
        let refused = Refused {
            mask: 1 << USER_TIMEOUT,
            errno: 0,
        };
        assert!(
            Applied::of(&plan, refused)
                .to_string()
                .ends_with("; the kernel refused TCP_USER_TIMEOUT: the socket works without")
        );
        assert_eq!(Errno(libc::ENOPROTOOPT).to_string(), "ENOPROTOOPT");
        assert_eq!(Errno(95).to_string(), "EOPNOTSUPP");
        assert_eq!(Errno(4242).to_string(), "errno 4242");
    }
}
