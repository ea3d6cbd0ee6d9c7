//! What the library did in this process, counted: TCP sockets it configured, connections that
//! went out with its options, connections the destination rules excluded, options the program
//! set itself and kept, options the kernel refused.
//!
//! The counters are relaxed atomics in one static block (no allocation, no lock, no system
//! call: one `lock add` on the paths that count), published under the exported symbol
//! [`keepalive_shim_counters`] so another process can find and read them with
//! `process_vm_readv`: through the locator page `locator.rs` names `keepalive-shim-counters`
//! (found in `/proc/PID/maps` by that name, no file opened), or, where the kernel cannot name it,
//! by the symbol's value in the `.dynsym` of the library file `/proc/PID/maps` shows.
//!
//! The layout is fixed (`repr(C)`): [`MAGIC`], [`VERSION`], the number of counters that follow,
//! then the counters, by the indices below. A counter added later goes at the end (`len` grows,
//! the version stays: a reader takes the first counters it knows); a changed meaning or order
//! takes a new version; the layout and what is counted are written once, in the policy crate
//! (`counts.rs`), which the command-line tool reads them by. Each copy of the library in a process has its own block; only the first
//! copy acts (`copies.rs`), so the others stay at zero.

use core::sync::atomic::{AtomicU64, Ordering};
use keepalive_shim_policy::counts::{self, LIBRARY_MAGIC as MAGIC};
pub use keepalive_shim_policy::counts::{
    CONNECTIONS_CONFIGURED, CONNECTIONS_EXCLUDED, LEN, OPTIONS_LEFT_TO_PROGRAM, OPTIONS_REFUSED,
    SOCKETS_CONFIGURED, VERSION,
};
use keepalive_shim_policy::decide::{Event, Known, Plan};

/// The published block.
#[repr(C)]
pub struct Counters {
    pub magic: u64,
    pub version: u32,
    /// How many counters follow.
    pub len: u32,
    pub values: [AtomicU64; LEN],
}

/// This copy's counters, found by name from outside the process.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static keepalive_shim_counters: Counters = Counters {
    magic: MAGIC,
    version: VERSION,
    len: LEN as u32,
    values: [const { AtomicU64::new(0) }; LEN],
};

/// Adds one to counter `i` (an index above; any other is ignored, never a panic).
#[inline(always)]
pub fn add(i: usize) {
    if let Some(c) = keepalive_shim_counters.values.get(i) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counter `i` now, 0 for an index beyond the block (for tests and debug lines).
pub fn get(i: usize) -> u64 {
    keepalive_shim_counters
        .values
        .get(i)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Counts what applying `plan` (the decision for `event` on a TCP socket of which `before` was
/// known) did, the kernel having refused the options of `refused` (the rule: `counts::counted`).
#[inline]
pub fn applied(event: Event<'_>, before: Known, plan: &Plan, refused: u8) {
    counts::counted(event, before, plan, refused, add);
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_shim_policy::config::DEFAULT;
    use keepalive_shim_policy::decide::{Defaults, decide};
    use keepalive_shim_policy::options::{IDLE, USER_TIMEOUT};

    /// The counters are process-wide and tests run in threads: each test looks at what it adds.
    fn delta(f: impl FnOnce()) -> [u64; LEN] {
        let before: [u64; LEN] = core::array::from_fn(get);
        f();
        core::array::from_fn(|i| get(i) - before[i])
    }

    #[test]
    fn the_block_has_the_published_layout() {
        assert_eq!(core::mem::offset_of!(Counters, version), 8);
        assert_eq!(core::mem::offset_of!(Counters, len), 12);
        assert_eq!(core::mem::offset_of!(Counters, values), 16);
        assert_eq!(core::mem::size_of::<Counters>(), counts::BLOCK_SIZE);
        assert_eq!(keepalive_shim_counters.magic, MAGIC);
        assert_eq!(keepalive_shim_counters.len as usize, LEN);
        assert_eq!(LEN, 13);
    }

    #[test]
    fn plans_are_counted_by_what_they_did() {
        let s = DEFAULT;
        let d = Defaults::KERNEL;
        let made = decide(&s, Event::Made, Known::FRESH, &d, |_| 0);
        // Counted in parallel with other tests: only lower bounds are exact here.
        let added = delta(|| applied(Event::Made, Known::FRESH, &made, 0));
        assert!(added[SOCKETS_CONFIGURED] >= 1);
        let connect = decide(&s, Event::Connect(None), Known::CONFIGURED, &d, |_| 0);
        let added = delta(|| applied(Event::Connect(None), Known::CONFIGURED, &connect, 0));
        assert!(added[CONNECTIONS_CONFIGURED] >= 1);
        let set = decide(&s, Event::Set(IDLE), Known::CONFIGURED, &d, |_| 60);
        let added = delta(|| applied(Event::Set(IDLE), Known::CONFIGURED, &set, 1 << USER_TIMEOUT));
        assert!(added[OPTIONS_LEFT_TO_PROGRAM + IDLE] >= 1);
        assert!(added[OPTIONS_REFUSED + USER_TIMEOUT] >= 1);
        add(LEN + 7); // ignored
        assert_eq!(get(LEN + 7), 0);
    }
}
