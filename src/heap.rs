//! The global allocator of the `no_std` library: the host program's own `malloc`, so the library
//! brings no allocator of its own. Only the load-time constructor allocates.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

struct Malloc;

/// `malloc` guarantees this alignment on every 64-bit glibc and musl target.
const MALLOC_ALIGN: usize = 16;

// SAFETY: every pointer returned comes from malloc/posix_memalign/realloc with at least the
// layout's size and alignment, and is released with free.
unsafe impl GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: malloc accepts any size; null signals failure to the caller.
            unsafe { libc::malloc(layout.size()) }.cast()
        } else {
            let mut out: *mut c_void = core::ptr::null_mut();
            // SAFETY: the alignment is a power of two and a multiple of the pointer size.
            let rc = unsafe { libc::posix_memalign(&mut out, layout.align(), layout.size()) };
            if rc == 0 {
                out.cast()
            } else {
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: ptr came from alloc or realloc above.
        unsafe { libc::free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: ptr came from malloc (alignment within malloc's own).
            unsafe { libc::realloc(ptr.cast(), new_size) }.cast()
        } else {
            // SAFETY: the default moves the data to a new allocation with the right alignment.
            let new =
                unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
            if !new.is_null() {
                // SAFETY: both blocks are at least min(old, new) bytes and do not overlap.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
            }
            new
        }
    }
}

#[global_allocator]
static MALLOC: Malloc = Malloc;
