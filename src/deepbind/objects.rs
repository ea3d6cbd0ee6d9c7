//! The loaded objects, as the loader lists them (`dl_iterate_phdr`): walking them, telling them
//! apart, and the questions the entry points ask of them.

#[cfg(not(test))]
use super::elf::Object;
#[cfg(not(test))]
use super::elf::segments;
use core::ffi::{c_int, c_void};
use libc::dl_phdr_info;

/// An object as `dl_iterate_phdr` reports it: load address and name pointer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Identity {
    pub(super) addr: usize,
    pub(super) name: usize,
}

impl Identity {
    pub(super) fn of(info: &dl_phdr_info) -> Identity {
        Identity {
            addr: info.dlpi_addr as usize,
            name: info.dlpi_name as usize,
        }
    }
}

/// Calls `f` for every loaded object of our namespace until it returns true.
pub(super) fn each_object<F: FnMut(&dl_phdr_info) -> bool>(mut f: F) {
    unsafe extern "C" fn visit<F: FnMut(&dl_phdr_info) -> bool>(
        info: *mut dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `F` passed below, alive for the call; `info` is glibc's record.
        let (f, info) = unsafe { (&mut *data.cast::<F>(), &*info) };
        c_int::from(f(info))
    }
    // SAFETY: the callback matches the C signature and `f` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit::<F>), (&raw mut f).cast()) };
}

/// The last object in the list now: everything up to it is fully relocated by the time a
/// `dlopen` started after this returns.
#[cfg(not(test))]
pub(super) fn last_object() -> Option<Identity> {
    let mut last = None;
    each_object(|info| {
        last = Some(Identity::of(info));
        false
    });
    last
}

/// For each address, whether it lies in the C library: an object whose `DT_SONAME` is
/// `libc.so.*` or `libpthread.so.*`.
#[cfg(not(test))]
pub(super) fn in_c_library<const N: usize>(addresses: &[usize; N]) -> [bool; N] {
    let mut libc = [false; N];
    each_object(|info| {
        let mut inside =
            addresses.map(|a| a != 0 && segments(info).any(|s| s.start <= a && a < s.end));
        if inside.contains(&true) {
            // SAFETY: the loader's records, valid during the callback.
            let object = unsafe { Object::new(info, page_size()) };
            let soname = object
                .as_ref()
                .and_then(|o| o.soname.and_then(|n| o.strings.string(n)));
            let ours = soname
                .is_some_and(|n| n.starts_with(b"libc.so.") || n.starts_with(b"libpthread.so."));
            if !ours {
                inside = [false; N];
            }
            for (flag, inside) in libc.iter_mut().zip(inside) {
                *flag |= inside;
            }
        }
        false
    });
    libc
}

/// Whether `caller` lies in an object of this library's namespace (the only one
/// `dl_iterate_phdr` shows to this library).
#[cfg(not(test))]
pub(super) fn in_main_namespace(caller: usize) -> bool {
    let mut found = false;
    each_object(|info| {
        found = segments(info).any(|s| s.start <= caller && caller < s.end);
        found
    });
    found
}

/// Whether an object is loaded under this bare name as its `DT_SONAME`, which glibc matches
/// before searching (it also matches the names objects were loaded by, which it does not show).
#[cfg(not(test))]
pub(super) fn loaded(name: &[u8]) -> bool {
    let mut found = false;
    each_object(|info| {
        // SAFETY: the loader's records, valid during the callback.
        if let Some(object) = unsafe { Object::new(info, page_size()) } {
            found = object.soname.and_then(|o| object.strings.string(o)) == Some(name);
        }
        found
    });
    found
}

/// The size of a page of memory.
pub(super) fn page_size() -> usize {
    // SAFETY: getauxval has no preconditions.
    let page = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if page.is_power_of_two() { page } else { 4096 }
}
