//! The counter block's locator: a private anonymous page named `keepalive-shim-counters`
//! (`PR_SET_VMA_ANON_NAME`, Linux 5.17) that tells another process where this copy's counter
//! block is, so that `keepalive-shim inspect` and `metrics` find it in `/proc/PID/maps` by that
//! name and read it with `process_vm_readv`, without opening any file a process can name. The
//! layout (magic, version, length, the block's address and size) is the policy crate's
//! (`counts.rs`).
//!
//! Made once per copy, at load, with raw system calls (no allocation, no lock, `errno` kept):
//! mapped, written, made read-only, then named, so a reader that finds the name finds the
//! content. Where the kernel cannot name it (before 5.17, without `CONFIG_ANON_VMA_NAME`, a
//! seccomp policy that refuses `prctl`), the page is unmapped again and nothing else changes:
//! readers fall back to the library file. The live counters stay in the static block; only this
//! page is new. A forked child keeps the page (and its name); an `exec` starts over.

use crate::counters::Counters;
use keepalive_shim_policy::counts::{LOCATOR_LEN, LOCATOR_NAME, locator};
use libc::c_long;

/// The page's length (the kernel rounds a mapping up to whole pages).
const PAGE: usize = 4096;

// This copy's block, by a name the linker binds inside this library (build.rs): the exported
// `keepalive_shim_counters`, referenced by name here, would be the first copy's in a process
// that has two.
unsafe extern "C" {
    static keepalive_shim_counters_of_this_copy: Counters;
}

/// Maps, writes and names the locator of this copy's counter block; nothing where the kernel
/// cannot name it.
pub fn publish() {
    let _errno = crate::errno::Saved::now();
    let block = &raw const keepalive_shim_counters_of_this_copy;
    let bytes = locator(block as u64, core::mem::size_of::<Counters>() as u64);
    // Every argument as a full machine word: `syscall` is variadic, and an `int` passed for a
    // `long` parameter leaves the upper half of its register undefined.
    // SAFETY: a new private anonymous mapping at an address the kernel chooses; nothing else is
    // touched.
    let page = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            0 as c_long,
            PAGE as c_long,
            (libc::PROT_READ | libc::PROT_WRITE) as c_long,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as c_long,
            -1 as c_long,
            0 as c_long,
        )
    };
    if page == -1 || page == 0 {
        return;
    }
    let page = page as usize;
    // SAFETY: the page was just mapped readable and writable, PAGE bytes, LOCATOR_LEN of them
    // written; nothing else refers to it yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), page as *mut u8, LOCATOR_LEN) };
    // SAFETY: read-only from now on: the page is this module's alone.
    unsafe { libc::syscall(libc::SYS_mprotect, page, PAGE, libc::PROT_READ as c_long) };
    // SAFETY: names the mapping made above; the name is a NUL-terminated constant the kernel
    // copies.
    let named = unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_VMA as c_long,
            libc::PR_SET_VMA_ANON_NAME as c_long,
            page,
            PAGE,
            LOCATOR_NAME.as_ptr(),
        )
    };
    if named != 0 {
        // SAFETY: unmaps the page mapped above, which nothing refers to.
        unsafe { libc::syscall(libc::SYS_munmap, page, PAGE) };
    }
}
