//! Two copies of the library in one process (preloaded from two paths, or preloaded and then
//! `dlopen`ed by a program that bundles it): only the first in the loader's search order acts.
//! Otherwise each TCP socket would get the options twice (ten `setsockopt` calls) and every
//! debug line would be written twice, with the second copy describing sockets the first already
//! configured.
//!
//! Each copy exports [`keepalive_shim_copy`], which returns the address of a static private to
//! that copy. At load, `dlsym(RTLD_DEFAULT, …)` finds the function of the copy that comes first;
//! a copy whose own static is not what that function returns stays passive: its hooks pass every
//! call through. (Comparing the addresses of an exported static would not do: inside a shared
//! library a reference to its own exported symbol binds to the first definition too.)

use crate::config::Settings;
use core::ffi::c_void;

/// Private to this copy: its address identifies the copy.
static THIS_COPY: u8 = 0;

/// The address that identifies this copy of the library.
///
/// # Safety
/// None: it takes no arguments and only returns an address.
#[unsafe(no_mangle)]
pub extern "C" fn keepalive_shim_copy() -> *const c_void {
    (&raw const THIS_COPY).cast()
}

/// Whether this copy is the first one the loader finds, and so the one that acts.
pub fn first() -> bool {
    first_copy().is_none_or(|first| first == keepalive_shim_copy())
}

/// The identity of the first copy in the search order, if `dlsym` finds one.
fn first_copy() -> Option<*const c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a valid NUL-terminated name only looks the name up.
    let f = unsafe { crate::real::dlsym_default(c"keepalive_shim_copy".as_ptr()) };
    if f.is_null() {
        return None;
    }
    // SAFETY: the symbol of that name is a copy of `keepalive_shim_copy`, of this type.
    let f = unsafe { core::mem::transmute::<*mut c_void, extern "C" fn() -> *const c_void>(f) };
    Some(f())
}

/// The settings this copy publishes: `settings`, or, when another copy comes first, the same
/// with the library disabled (said at debug).
pub fn settings_for_this_copy(mut settings: Settings) -> Settings {
    if settings.enabled && !first() {
        settings.enabled = false;
        crate::log::debug!(
            "another copy of keepalive-shim is loaded ahead of this one, at {:p}: this copy \
             passes every call through",
            first_copy().unwrap_or(core::ptr::null())
        );
    }
    settings
}
