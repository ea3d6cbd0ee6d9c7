//! What keepalive-shim counts, written once for every mechanism that counts and every reader:
//! the layout of the counter block (its version, the counters' indices, how many there are) and
//! the rule of what applying a plan adds. The library (`src/counters.rs`) and the supervisor
//! (`crates/supervisor/src/counters.rs`) keep their blocks in this layout, each with a magic of its
//! own; `keepalive-shim inspect` and `metrics` read them by it (`crates/observe`).
//!
//! A counter added later goes at the end (the length grows, the version stays: a reader takes the
//! first counters it knows); a changed meaning or order takes a new version.
//!
//! The block: [`LIBRARY_MAGIC`] (or [`SUPERVISOR_MAGIC`]), [`VERSION`] (u32), the number of
//! counters (u32), then the counters (u64 each), little-endian on the machines this runs on:
//! [`BLOCK_HEADER_LEN`] + 8 × [`LEN`] = [`BLOCK_SIZE`] bytes.
//!
//! The locator: where another process finds the library's block without opening any file. The
//! library's constructor maps one private anonymous page, named with `PR_SET_VMA_ANON_NAME`
//! (Linux 5.17), so that `/proc/PID/maps` shows it as [`LOCATOR_MAPS_NAME`], and writes into it,
//! little-endian: [`LOCATOR_MAGIC`] (u64), [`LOCATOR_VERSION`] (u32), the locator's length in
//! bytes (u32, [`LOCATOR_LEN`]), the address of that copy's block (u64) and the block's size in
//! bytes (u64), at the `LOCATOR_*_AT` offsets; [`locator`] writes it, [`parse_locator`] reads
//! it. One per copy of the library in a process, at the start of a page of its own; the kernel
//! shows adjacent pages of the same name as one mapping, so a reader looks at the start of each
//! page of every mapping of that name. A forked child keeps its parent's, an `exec` starts over. Where the kernel cannot name the page, there is none, and a reader falls back to
//! the library file. A process can forge both the locator and its block: what they say is that
//! process's own account, bounded by the checks of [`parse_locator`], nothing more.

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

/// The block's header: magic (u64), version (u32), number of counters (u32).
pub const BLOCK_HEADER_LEN: usize = 16;
/// The size of a block of version 1 with [`LEN`] counters.
pub const BLOCK_SIZE: usize = BLOCK_HEADER_LEN + 8 * LEN;
/// The largest block a reader accepts from a locator (a page: room for 510 counters).
pub const BLOCK_SIZE_MAX: u64 = 4096;

/// The name the library gives its locator's page (`PR_SET_VMA_ANON_NAME`).
pub const LOCATOR_NAME: &core::ffi::CStr = c"keepalive-shim-counters";
/// That page's name as `/proc/PID/maps` shows it, in the path column.
pub const LOCATOR_MAPS_NAME: &str = "[anon:keepalive-shim-counters]";
/// The locator's first 8 bytes: "KASHLOCR" in memory.
pub const LOCATOR_MAGIC: u64 = u64::from_le_bytes(*b"KASHLOCR");
/// The locator's layout below.
pub const LOCATOR_VERSION: u32 = 1;
/// The locator's length in bytes (version 1); a field added later goes at the end.
pub const LOCATOR_LEN: usize = 32;
/// Offsets in the locator: magic (u64), version (u32), length (u32), the block's address (u64),
/// the block's size (u64).
pub const LOCATOR_MAGIC_AT: usize = 0;
pub const LOCATOR_VERSION_AT: usize = 8;
pub const LOCATOR_LEN_AT: usize = 12;
pub const LOCATOR_BLOCK_AT: usize = 16;
pub const LOCATOR_SIZE_AT: usize = 24;

/// The locator of a block of `size` bytes at `address`.
pub const fn locator(address: u64, size: u64) -> [u8; LOCATOR_LEN] {
    let mut out = [0u8; LOCATOR_LEN];
    let fields: [(usize, &[u8]); 5] = [
        (LOCATOR_MAGIC_AT, &LOCATOR_MAGIC.to_le_bytes()),
        (LOCATOR_VERSION_AT, &LOCATOR_VERSION.to_le_bytes()),
        (LOCATOR_LEN_AT, &(LOCATOR_LEN as u32).to_le_bytes()),
        (LOCATOR_BLOCK_AT, &address.to_le_bytes()),
        (LOCATOR_SIZE_AT, &size.to_le_bytes()),
    ];
    let mut f = 0;
    while f < fields.len() {
        let (at, bytes) = fields[f];
        let mut i = 0;
        while i < bytes.len() {
            out[at + i] = bytes[i];
            i += 1;
        }
        f += 1;
    }
    out
}

/// The block's address and size from the first bytes of a locator's page, read from another
/// process: `None` unless the magic and version are right, the length covers every field of
/// version 1 and no more than a page, and the block is aligned, of a size from a block's header
/// to [`BLOCK_SIZE_MAX`], and does not wrap the address space. What the block then holds is to
/// be checked as a block (magic, version, number of counters within its size).
pub fn parse_locator(bytes: &[u8]) -> Option<(u64, u64)> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    if u64_at(LOCATOR_MAGIC_AT)? != LOCATOR_MAGIC || u32_at(LOCATOR_VERSION_AT)? != LOCATOR_VERSION
    {
        return None;
    }
    let len = u32_at(LOCATOR_LEN_AT)? as usize;
    if !(LOCATOR_LEN..=4096).contains(&len) {
        return None;
    }
    let address = u64_at(LOCATOR_BLOCK_AT)?;
    let size = u64_at(LOCATOR_SIZE_AT)?;
    let fits = (BLOCK_HEADER_LEN as u64..=BLOCK_SIZE_MAX).contains(&size)
        && address != 0
        && address % 8 == 0
        && address.checked_add(size).is_some();
    fits.then_some((address, size))
}

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
        assert_eq!(BLOCK_SIZE, 120);
    }

    #[test]
    fn a_locator_reads_back_as_written() {
        let bytes = locator(0x7f00_1234_5678, BLOCK_SIZE as u64);
        assert_eq!(&bytes[..8], b"KASHLOCR");
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        assert_eq!(bytes[12..16], 32u32.to_le_bytes());
        assert_eq!(
            parse_locator(&bytes),
            Some((0x7f00_1234_5678, BLOCK_SIZE as u64))
        );
        // The rest of the page (zeros) after it changes nothing.
        let mut page = [0u8; 4096];
        page[..LOCATOR_LEN].copy_from_slice(&bytes);
        assert_eq!(parse_locator(&page), parse_locator(&bytes));
        assert_eq!(
            LOCATOR_MAPS_NAME,
            format!("[anon:{}]", LOCATOR_NAME.to_str().unwrap())
        );
    }

    #[test]
    fn a_locator_out_of_its_bounds_is_refused() {
        let good = locator(0x1000, BLOCK_SIZE as u64);
        let with = |at: usize, field: &[u8]| {
            let mut b = good;
            b[at..at + field.len()].copy_from_slice(field);
            parse_locator(&b)
        };
        assert_eq!(with(0, b"KASHCTRS"), None, "another magic");
        assert_eq!(with(LOCATOR_VERSION_AT, &2u32.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_LEN_AT, &31u32.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_LEN_AT, &u32::MAX.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_BLOCK_AT, &0u64.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_BLOCK_AT, &0x1001u64.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_BLOCK_AT, &u64::MAX.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_SIZE_AT, &8u64.to_le_bytes()), None);
        assert_eq!(with(LOCATOR_SIZE_AT, &(1u64 << 40).to_le_bytes()), None);
        assert_eq!(
            with(LOCATOR_BLOCK_AT, &(u64::MAX - 7).to_le_bytes()),
            None,
            "wraps"
        );
        // A later version 1 locator, longer, still reads.
        assert!(with(LOCATOR_LEN_AT, &40u32.to_le_bytes()).is_some());
        for short in 0..LOCATOR_LEN {
            assert_eq!(parse_locator(&good[..short]), None, "{short} bytes");
        }
    }
}
