//! What the supervisor did, counted, readable from outside: the TCP sockets it configured,
//! the `connect()` calls on sockets that carry its options (connect trap), the options the
//! program chose itself and kept, and the options the kernel refused, for the whole tree it
//! supervises.
//!
//! One small fixed block (the library's layout, src/counters.rs, with a magic of its own):
//! [`MAGIC`], [`VERSION`], the number of counters, then the counters by the library's indices.
//! It lives in a memfd named [`NAME`] mapped into this process (the descriptor is closed once
//! mapped), so `/proc/SUPERVISOR/maps` names it (`/memfd:keepalive-shim-supervisor-counters
//! (deleted)`) and `keepalive-shim inspect` and `metrics` read it at that address with
//! `process_vm_readv`, as they read the library's. No growth per socket: counting is one relaxed
//! atomic add.

use keepalive_shim_policy::counts::{LEN, SUPERVISOR_MAGIC as MAGIC, VERSION};
use keepalive_shim_policy::decide::{Event, Known, Plan};
use std::sync::atomic::{AtomicU64, Ordering};

/// The memfd's name, as `/proc/PID/maps` shows it after `/memfd:`.
pub use keepalive_shim_policy::counts::SUPERVISOR_MEMFD as NAME;

#[repr(C)]
struct Block {
    magic: u64,
    version: u32,
    len: u32,
    values: [AtomicU64; LEN],
}

/// The supervisor's counters.
pub struct Counters {
    block: &'static Block,
}

impl Counters {
    /// The block in a named memfd; where that cannot be made (no memfd, no memory), one in this
    /// process's heap, counted but not found from outside.
    pub fn new() -> Counters {
        let block = shared().unwrap_or_else(|| {
            Box::leak(Box::new(Block {
                magic: 0,
                version: 0,
                len: 0,
                values: [const { AtomicU64::new(0) }; LEN],
            }))
        });
        Counters { block }
    }

    /// Adds one to counter `i`.
    #[inline(always)]
    pub fn add(&self, i: usize) {
        if let Some(c) = self.block.values.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counter `i` now.
    #[cfg(test)]
    pub fn get(&self, i: usize) -> u64 {
        self.block
            .values
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts what applying `plan` (the decision for `event` on a TCP socket of which `before`
    /// was known) did, the kernel having refused the options of `refused`: the rule every
    /// mechanism counts by (`counts::counted`).
    pub fn applied(&self, event: Event<'_>, before: Known, plan: &Plan, refused: u8) {
        keepalive_shim_policy::counts::counted(event, before, plan, refused, |i| self.add(i));
    }
}

/// The block in a memfd named [`NAME`], mapped shared and writable; `None` when it cannot be.
fn shared() -> Option<&'static Block> {
    let size = std::mem::size_of::<Block>();
    let name = std::ffi::CString::new(NAME).ok()?;
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is the memfd just made, owned here and closed below.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: ftruncate on a descriptor this function owns.
    if unsafe { libc::ftruncate(raw, size as libc::off_t) } != 0 {
        return None;
    }
    // SAFETY: a new shared mapping of the whole memfd (zero-filled, `size` bytes), never
    // unmapped: the reference below lives as long as the process.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            raw,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return None;
    }
    let block = at.cast::<Block>();
    // SAFETY: `block` is page-aligned, `size` bytes, writable, zeroed (all-zero is a valid
    // Block: atomics at 0); the header is written before any other thread sees the block.
    unsafe {
        (&raw mut (*block).magic).write(MAGIC);
        (&raw mut (*block).version).write(VERSION);
        (&raw mut (*block).len).write(LEN as u32);
        Some(&*block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_shim_policy::counts::SOCKETS_CONFIGURED;
    use keepalive_shim_policy::options::N;

    #[test]
    fn the_block_is_found_by_its_name_and_has_the_librarys_layout() {
        assert_eq!(std::mem::offset_of!(Block, values), 16);
        assert_eq!(LEN, 3 + 2 * N);
        let c = Counters::new();
        assert_eq!(c.block.magic, MAGIC);
        c.add(SOCKETS_CONFIGURED);
        c.add(LEN + 1); // ignored
        assert_eq!(c.get(SOCKETS_CONFIGURED), 1);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps.contains(&format!("/memfd:{NAME}")), "{maps}");
    }
}
