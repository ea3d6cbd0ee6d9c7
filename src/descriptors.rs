//! What the library knows of each descriptor of the process: whether it is a TCP socket, whether
//! the library configured it, and which of the five options the program set on it itself.
//!
//! One byte per descriptor number in a static table, read and written with relaxed atomics (no
//! lock, no allocation, no system call). What a byte says belongs to the socket, not to the
//! number: `close()`, `close_range()` and `dup2()`/`dup3()` onto a number forget it before the
//! number can be reused, and every way of duplicating a descriptor (`dup`, `dup2`, `dup3`,
//! `F_DUPFD`) copies it, since the copy is the same socket. A number the library never saw
//! (accepted, received with `SCM_RIGHTS`, inherited, made by a raw system call) reads as
//! unseen, and the hooks then ask the kernel.
//!
//! The table has [`TABLE_LEN`] entries, the kernel's default `fs.nr_open`: no process can have a
//! descriptor beyond it unless root raised that limit. Beyond it nothing is remembered, and the
//! hooks take the conservative path (see `sockets.rs`). The limit can be lowered for tests with
//! `KEEPALIVE_SHIM_TEST_TABLE_LIMIT` (it only ever makes the library remember less), so the
//! beyond-the-table path runs in real programs on machines whose descriptors stop far below it.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use keepalive_shim_policy::decide::{ALL, Known};
use keepalive_shim_policy::options::N;
use libc::c_int;

/// Descriptor numbers remembered: `fs.nr_open`'s default, 2^20. 1 MiB of zero pages, of which
/// only the pages of numbers in use are ever touched.
pub const TABLE_LEN: usize = 1 << 20;

static TABLE: [AtomicU8; TABLE_LEN] = [const { AtomicU8::new(0) }; TABLE_LEN];
/// Numbers at or above this are not remembered (normally [`TABLE_LEN`]).
static LIMIT: AtomicUsize = AtomicUsize::new(TABLE_LEN);
/// One more than the highest number ever written: `close_range()` scans no further.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// What the library knows of one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State(u8);

/// What kind of descriptor it is, as far as the library knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Never seen since it was opened: ask the kernel.
    Unseen,
    /// A TCP socket (IPv4 or IPv6).
    Tcp,
    /// Anything else: UDP, UNIX, raw, a file.
    Other,
}

const KIND_MASK: u8 = 0b11;
const TCP: u8 = 1;
const OTHER: u8 = 2;
/// The library set its options on this socket.
const CONFIGURED: u8 = 1 << 2;
/// Bits 3..=7: the program set option `i` of `options::OPTIONS` itself.
const OWN_SHIFT: u8 = 3;

impl State {
    pub const UNSEEN: State = State(0);
    /// A TCP socket the library has not configured.
    pub const TCP: State = State(TCP);
    /// A TCP socket the library configured, on which the program has set nothing yet.
    pub const CONFIGURED_TCP: State = State(TCP | CONFIGURED);
    pub const OTHER: State = State(OTHER);
    /// A TCP socket the library leaves alone, as if the program had set all five options: one
    /// whose destination the rules exclude, or that had keepalive on before the library saw it.
    pub const LEFT_ALONE: State = State(TCP | (ALL << OWN_SHIFT));

    pub fn kind(self) -> Kind {
        match self.0 & KIND_MASK {
            TCP => Kind::Tcp,
            OTHER => Kind::Other,
            _ => Kind::Unseen,
        }
    }

    pub fn configured(self) -> bool {
        self.0 & CONFIGURED != 0
    }

    pub fn with_configured(self, configured: bool) -> State {
        if configured {
            State(self.0 | CONFIGURED)
        } else {
            State(self.0 & !CONFIGURED)
        }
    }

    /// Whether the program set option `index` (of `options::OPTIONS`) itself.
    pub fn own(self, index: usize) -> bool {
        index < N && self.0 & (1 << (OWN_SHIFT as usize + index)) != 0
    }

    pub fn with_own(self, index: usize) -> State {
        if index < N {
            State(self.0 | (1 << (OWN_SHIFT as usize + index)))
        } else {
            self
        }
    }
}

impl State {
    /// What the policy's decision knows of this TCP socket.
    pub fn known(self) -> Known {
        let own = self.0 >> OWN_SHIFT;
        Known {
            configured: self.configured(),
            own,
            left_alone: own == ALL && !self.configured(),
        }
    }

    /// The state of a TCP socket of which `known` is known.
    pub fn from_known(known: Known) -> State {
        if known.left_alone {
            return State::LEFT_ALONE;
        }
        State(TCP | (known.own & ALL) << OWN_SHIFT).with_configured(known.configured)
    }
}

fn slot(fd: c_int) -> Option<&'static AtomicU8> {
    let i = usize::try_from(fd).ok()?;
    if i < LIMIT.load(Ordering::Relaxed) {
        TABLE.get(i)
    } else {
        None
    }
}

/// What is known of `fd`; `None` when its number is beyond the table.
#[inline]
pub fn get(fd: c_int) -> Option<State> {
    slot(fd).map(|s| State(s.load(Ordering::Relaxed)))
}

/// Remembers `state` for `fd` (nothing beyond the table).
#[inline]
pub fn set(fd: c_int, state: State) {
    if let Some(s) = slot(fd) {
        s.store(state.0, Ordering::Relaxed);
        // A plain load first: the locked read-modify-write only when the mark rises, which is
        // rare, instead of on every socket().
        let end = fd as usize + 1;
        if HIGH.load(Ordering::Relaxed) < end {
            HIGH.fetch_max(end, Ordering::Relaxed);
        }
    }
}

/// Forgets `fd`: it is being closed, or replaced by `dup2()`. Writes only when there is something
/// to forget, so closing files never dirties the table's pages.
#[inline]
pub fn forget(fd: c_int) {
    if let Some(s) = slot(fd)
        && s.load(Ordering::Relaxed) != 0
    {
        s.store(0, Ordering::Relaxed);
    }
}

/// Forgets every number from `first` to `last`, both included (`close_range()`).
pub fn forget_range(first: u32, last: u32) {
    let end = (last as usize)
        .saturating_add(1)
        .min(HIGH.load(Ordering::Relaxed))
        .min(LIMIT.load(Ordering::Relaxed));
    for s in TABLE.get(first as usize..end).unwrap_or_default() {
        if s.load(Ordering::Relaxed) != 0 {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// `to` is now a duplicate of `from`: the same socket, so the same state.
#[inline]
pub fn copy(from: c_int, to: c_int) {
    match get(from) {
        Some(state) if state != State::UNSEEN => set(to, state),
        _ => forget(to),
    }
}

/// Remembers nothing at or above `limit` (tests: see the module's documentation).
pub fn set_limit(limit: usize) {
    LIMIT.store(limit.min(TABLE_LEN), Ordering::Relaxed);
}

/// The variable that lowers the table's limit for tests.
const TEST_LIMIT: &[u8] = b"KEEPALIVE_SHIM_TEST_TABLE_LIMIT=";

/// Applies `KEEPALIVE_SHIM_TEST_TABLE_LIMIT` from the environment, once at load; ignored in
/// secure mode (a setuid program's environment belongs to its caller). Its first occurrence
/// counts, as with `getenv`.
pub fn limit_from_env() {
    if crate::config::secure_execution() {
        return;
    }
    let value = crate::config::environ_entries().find_map(|entry| entry.strip_prefix(TEST_LIMIT));
    if let Some(limit) = value.and_then(parse_limit) {
        set_limit(limit);
    }
}

fn parse_limit(value: &[u8]) -> Option<usize> {
    core::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_carry_kind_configuration_and_the_programs_own_options() {
        assert_eq!(State::UNSEEN.kind(), Kind::Unseen);
        assert_eq!(State::OTHER.kind(), Kind::Other);
        let s = State::CONFIGURED_TCP;
        assert_eq!(s.kind(), Kind::Tcp);
        assert!(s.configured());
        assert!((0..N).all(|i| !s.own(i)));
        let s = s.with_own(1).with_own(4);
        assert!(s.own(1) && s.own(4) && !s.own(0) && !s.own(2) && !s.own(3));
        assert_eq!(s.kind(), Kind::Tcp);
        assert!(!s.with_configured(false).configured());
        assert!(s.with_configured(false).own(4));
        assert_eq!(s.with_own(9), s, "no such option: unchanged");
        let alone = (0..N).fold(State::TCP, |st, i| st.with_own(i));
        assert_eq!(alone, State::LEFT_ALONE);
        for known in [Known::FRESH, Known::CONFIGURED, Known::LEFT_ALONE] {
            assert_eq!(State::from_known(known).known(), known);
        }
        let own = Known {
            own: 0b1_0010,
            ..Known::CONFIGURED
        };
        assert_eq!(State::from_known(own).known(), own);
        assert!(!s.own(9));
    }

    #[test]
    fn the_table_remembers_forgets_and_copies() {
        let (a, b) = (40_000, 40_001);
        assert_eq!(get(a), Some(State::UNSEEN));
        set(a, State::CONFIGURED_TCP.with_own(0));
        copy(a, b);
        assert_eq!(get(b), get(a));
        forget(a);
        assert_eq!(get(a), Some(State::UNSEEN));
        copy(a, b);
        assert_eq!(
            get(b),
            Some(State::UNSEEN),
            "a copy of an unseen number is unseen"
        );
        set(a, State::OTHER);
        set(b, State::TCP);
        forget_range(40_000, u32::MAX);
        assert_eq!((get(a), get(b)), (Some(State::UNSEEN), Some(State::UNSEEN)));
    }

    #[test]
    fn the_test_limit_parses_whole_numbers_only() {
        assert_eq!(parse_limit(b"100"), Some(100));
        assert_eq!(parse_limit(b"-1"), None);
        assert_eq!(parse_limit(b"1e3"), None);
        assert_eq!(parse_limit(b"\xff"), None);
    }

    #[test]
    fn numbers_beyond_the_table_are_never_out_of_bounds() {
        assert_eq!(get(-1), None);
        assert_eq!(get(TABLE_LEN as c_int), None);
        set(TABLE_LEN as c_int, State::TCP);
        forget(c_int::MAX);
        forget_range(u32::MAX - 1, u32::MAX);
        assert_eq!(get(TABLE_LEN as c_int - 1), Some(State::UNSEEN));
    }
}
