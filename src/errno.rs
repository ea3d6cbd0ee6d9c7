//! `errno`: read it, and keep the caller's value across the library's own system calls, so every
//! hooked call returns exactly what the real call returned (a non-blocking `connect()` keeps its
//! EINPROGRESS even when a `setsockopt` of ours failed in between).

use libc::c_int;

fn location() -> *mut c_int {
    // SAFETY: glibc and musl both export __errno_location; it returns this thread's errno slot.
    unsafe { libc::__errno_location() }
}

pub fn get() -> c_int {
    // SAFETY: the slot is valid for the life of the thread.
    unsafe { *location() }
}

pub fn set(value: c_int) {
    // SAFETY: the slot is valid for the life of the thread.
    unsafe { *location() = value }
}

/// Saves `errno` when made and puts it back when dropped.
pub struct Saved(c_int);

impl Saved {
    pub fn now() -> Self {
        Saved(get())
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        set(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_errno_comes_back() {
        set(libc::EINPROGRESS);
        {
            let _saved = Saved::now();
            set(libc::EBADF);
        }
        assert_eq!(get(), libc::EINPROGRESS);
    }
}
