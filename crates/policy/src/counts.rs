//! What keepalive-shim counts, written once for every mechanism that counts and every reader:
//! the layout of the counter block (its version, the counters' indices, how many there are) and
//! the rule of what applying a plan adds. The library (`src/counters.rs`) and the supervisor
//! (`cli/src/supervise/counters.rs`) keep their blocks in this layout, each with a magic of its
//! own; `keepalive-shim inspect` and `metrics` read them by it (`cli/src/metrics.rs`).
//!
//! A counter added later goes at the end (the length grows, the version stays: a reader takes the
//! first counters it knows); a changed meaning or order takes a new version.

use crate::decide::{ALL, Event, Known, Plan, Reason};
use crate::options::N;

/// The layout below.
pub const VERSION: u32 = 1;
/// The library's block's first 8 bytes: "KASHCTRS" in memory.
pub const LIBRARY_MAGIC: u64 = u64::from_le_bytes(*b"KASHCTRS");
/// The supervisor's: "KASHSUPV".
pub const SUPERVISOR_MAGIC: u64 = u64::from_le_bytes(*b"KASHSUPV");
/// The name of the memfd the supervisor keeps its block in, as `/proc/PID/maps` shows it after
/// `/memfd:`.
pub const SUPERVISOR_MEMFD: &str = "keepalive-shim-supervisor-counters";

/// TCP sockets on which the options were set (once per socket: where it was first met).
pub const SOCKETS_CONFIGURED: usize = 0;
/// `connect()` calls on a TCP socket that carries the options.
pub const CONNECTIONS_CONFIGURED: usize = 1;
/// `connect()` calls to a destination the rules exclude (`KEEPALIVE_EXCLUDE`, or not in
/// `KEEPALIVE_INCLUDE`): the socket got back what it had without keepalive-shim.
pub const CONNECTIONS_EXCLUDED: usize = 2;
/// One per option, in the order of `OPTIONS`: the options the program set itself on a socket,
/// whose value was kept (not under `KEEPALIVE_FORCE`), once per socket and option.
pub const OPTIONS_LEFT_TO_PROGRAM: usize = 3;
/// One per option, in the order of `OPTIONS`: the options the kernel refused.
pub const OPTIONS_REFUSED: usize = OPTIONS_LEFT_TO_PROGRAM + N;
/// How many counters version 1 has.
pub const LEN: usize = OPTIONS_REFUSED + N;

/// What applying `plan` (the decision for `event` on a TCP socket of which `before` was known)
/// counts, the kernel having refused the options of `refused` (a mask over `OPTIONS`): `add` is
/// called with each counter's index.
#[inline(always)]
pub fn counted(
    event: Event<'_>,
    before: Known,
    plan: &Plan,
    refused: u8,
    mut add: impl FnMut(usize),
) {
    // Every option refused leaves the socket alone, not configured.
    let every_option_refused = plan.mask() == ALL && refused == ALL;
    let configured = plan.next.configured && !plan.next.left_alone && !every_option_refused;
    if configured && !before.configured {
        add(SOCKETS_CONFIGURED);
    }
    match event {
        Event::Connect(_) if plan.reason == Reason::Excluded => add(CONNECTIONS_EXCLUDED),
        Event::Connect(_) if configured => add(CONNECTIONS_CONFIGURED),
        Event::Set(i) if plan.reason != Reason::Forced && !before.is_own(i) => {
            add(OPTIONS_LEFT_TO_PROGRAM + i)
        }
        _ => {}
    }
    if refused != 0 {
        for i in 0..N {
            if refused & (1 << i) != 0 {
                add(OPTIONS_REFUSED + i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_has_three_then_two_per_option() {
        assert_eq!(LEN, 3 + 2 * N);
        assert_ne!(LIBRARY_MAGIC, SUPERVISOR_MAGIC);
    }
}
