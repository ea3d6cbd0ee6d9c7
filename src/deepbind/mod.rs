//! Libraries loaded with `RTLD_DEEPBIND` (PHP loads every extension so): made to call the hooks.
//!
//! `dlopen(path, RTLD_DEEPBIND)` makes the library it loads, and the libraries that come in with
//! it, look up their symbols among themselves before the global scope. libc is one of them, so
//! libcurl under PHP's curl extension binds `socket`, `connect` and `setsockopt` straight to libc,
//! past `LD_PRELOAD`, and its connections would keep the kernel's defaults.
//!
//! The `dlopen` hook (a naked function in `hooks.rs`) jumps to the real `dlopen` for every
//! call but one kind, so glibc still sees the program's return address, from which it takes the
//! caller's namespace, the RUNPATH a bare name is searched along and what `$ORIGIN` means. The one
//! kind is an `RTLD_DEEPBIND` load of a path (a name with a `/` and no `$`) by code of the main
//! namespace, on glibc: for such a call glibc consults the caller for nothing (`dl_open_worker`
//! looks for the caller only for a `$`, a bare name or an unknown namespace), so [`open`] can call
//! the real `dlopen` itself. When it has returned, a pass over the loaded objects
//! (`dl_iterate_phdr`) re-points the relocations of the hooked names to the hooks, as PLT-hooking
//! libraries do.
//!
//! Which slots are written: those of a relocation (`JUMP_SLOT`, `GLOB_DAT`, or an absolute word
//! without addend) naming a hooked function that the object itself leaves undefined, and only
//! - when the slot holds the C library's function of that name (the object was bound past the
//!   hooks): the one `real.rs` resolved, or the one the loaded library's own scope finds
//!   (`dlsym(handle, name)`) if that one is defined by `libc.so.*` or `libpthread.so.*` (before
//!   glibc 2.34, libpthread defines `connect`, `close`, `fcntl` too, and comes first for the
//!   program while the loaded library sees only libc), or
//! - for a `JUMP_SLOT` of an object that this very `dlopen` loaded, when the slot still points into
//!   the object (a lazy PLT entry not resolved yet) and the loaded library's own scope, where such
//!   an entry resolves, finds one of those.
//!
//! A slot holding anything else (another interposer's function, an earlier load's binding) is left
//! as it is. Objects that define the name (libc, this library, another interposer) are never
//! touched. Objects loaded before are covered too when a slot shows they were bound past the hooks
//! (an earlier `RTLD_DEEPBIND` load that could not be followed).
//!
//! Safety of the writes. Everything happens inside `dl_iterate_phdr`'s callback, which glibc runs
//! holding its `dl_load_write_lock`: no object can be unmapped meanwhile (`dlclose` unmaps under
//! that lock), and two passes never overlap, so two threads never flip the protection of one page.
//! Only objects whose relocation is finished are written: those loaded before this `dlopen` began
//! (glibc serialises `dlopen`s, so it only started once every earlier one had finished), and the
//! objects it loaded itself — the library, then, contiguous behind it in the list, each dependency
//! named by a `DT_NEEDED` entry of an object before it. An object another thread loaded since is
//! left alone. Every address read is first checked to lie in a readable segment of its object.
//! A slot is one aligned word, replaced with a compare-and-swap: a thread calling through it at the
//! same moment calls either the real function or the hook, both right. In the pages glibc made
//! read-only after relocation (`PT_GNU_RELRO`), the pages are made writable around the writes and
//! read-only again; where `mprotect` refuses, the slot stays as it was and that is reported. No
//! lookup (`dlsym`) happens inside the callback: it would take `dl_load_lock` while holding
//! `dl_load_write_lock`, the opposite order of `dlopen`'s.
//!
//! Said once per process at `warn`: a `RTLD_DEEPBIND` load that cannot be followed (a bare name, a
//! `$` token, a caller outside the main namespace) and a slot that could not be written. At
//! `debug`: each object covered, with how many slots, and the cost of each pass.
//!
//! By layer, each leaning only on those below it: this file, the two entry points of the hook and
//! what they say; `pass.rs`, the pass (which objects it may write, and the writes);
//! `objects.rs`, the loader's list of objects (`dl_iterate_phdr`) and the questions asked of it;
//! `elf.rs`, one object's dynamic section read in place.

mod elf;
mod objects;
mod pass;

#[cfg(not(test))]
pub(crate) use pass::{Hooked, MAX_HOOKED};

// Everything but the unit tests of the layers below is the hook's, left out of test builds.
#[cfg(not(test))]
use {
    crate::config::LogLevel,
    crate::log,
    core::ffi::{CStr, c_char, c_int, c_void},
    core::fmt,
    core::sync::atomic::{AtomicBool, Ordering},
    elf::Text,
    objects::{Identity, in_c_library, in_main_namespace, last_object, loaded, page_size},
    pass::{Pass, Scope},
};

/// glibc's `RTLD_DEEPBIND` (musl has none).
#[cfg(not(test))]
pub const RTLD_DEEPBIND: c_int = 0x8;

/// Whether the one warning of this module was written already.
#[cfg(not(test))]
static WARNED: AtomicBool = AtomicBool::new(false);

/// Whether some library may have been bound past the hooks without a pass that followed it (a
/// `RTLD_DEEPBIND` load this module could not follow, objects behind a load's own): from then on
/// every pass also looks at every object loaded before it. Until then a pass looks only at what
/// its own `dlopen` loaded, which keeps it cheap for a program loading many libraries.
#[cfg(not(test))]
static SWEEP: AtomicBool = AtomicBool::new(false);

// --- the two entry points of the hook ------------------------------------------------------

/// Where the `dlopen` trampoline goes with the program's arguments: the address of the real
/// `dlopen` (resolved here if the constructor has not run yet), to be jumped to with the program's
/// return address intact, or 0 for [`open`].
///
/// # Safety
/// Called only by the trampoline, with `dlopen`'s arguments and the caller's return address.
/// `file` is read as a C string, as the real `dlopen` reads it right after: a pointer it could
/// not read would crash the program in `dlopen` anyway.
#[cfg(not(test))]
pub(crate) unsafe extern "C" fn route(file: *const c_char, flags: c_int, caller: usize) -> usize {
    let real = crate::real::dlopen_fn() as usize;
    if flags & RTLD_DEEPBIND == 0 || file.is_null() || !crate::real::is_glibc() {
        return real;
    }
    // SAFETY: see the function's contract: a NUL-terminated string that dlopen reads next.
    let name = unsafe { CStr::from_ptr(file) }.to_bytes();
    let why = if !name.contains(&b'/') {
        if loaded(name) {
            // Already loaded: the load binds nothing anew.
            return real;
        }
        "by a bare name, which only the calling object can resolve"
    } else if name.contains(&b'$') {
        "through a dynamic string token such as $ORIGIN, which only the calling object can expand"
    } else if !in_main_namespace(caller) {
        "by code outside the libraries of the main namespace"
    } else {
        return 0;
    };
    SWEEP.store(true, Ordering::Relaxed);
    warn_once(format_args!(
        "{} is loaded with RTLD_DEEPBIND {why}: keepalive-shim cannot redirect the calls of the \
         libraries it brings in, and connections they make may not get keepalive",
        Text(name)
    ));
    real
}

/// `dlopen(file, flags)` for an `RTLD_DEEPBIND` load of a path, then the pass that re-points the
/// hooked names of what it loaded. The handle, the `dlerror()` state and `errno` are the real
/// `dlopen`'s.
///
/// # Safety
/// The contract of `dlopen()`; reached only through [`route`] and the `dlopen` hook's jump to
/// `hooks.rs`, which gives its `table`, with a non-null `file`.
#[cfg(not(test))]
pub(crate) unsafe fn open(file: *const c_char, flags: c_int, table: &[Hooked]) -> *mut c_void {
    let real = crate::real::dlopen_fn();
    let marker = last_object();
    // SAFETY: the program's arguments, passed on unchanged.
    let handle = unsafe { real(file, flags) };
    if !handle.is_null() {
        let saved = crate::errno::Saved::now();
        cover(handle, marker, file, table);
        drop(saved);
    }
    handle
}

/// The pass after a successful `RTLD_DEEPBIND` load of `file`, whose handle is `handle`.
#[cfg(not(test))]
fn cover(handle: *mut c_void, marker: Option<Identity>, file: *const c_char, table: &[Hooked]) {
    let debug = log::enabled(LogLevel::Debug);
    let started = if debug { now_ns() } else { 0 };
    // Every lookup first: none may happen inside the callback (see the module's documentation).
    let mut scope = [0usize; MAX_HOOKED];
    let mut missing = false;
    for (slot, h) in scope.iter_mut().zip(table.iter()) {
        *slot = crate::real::lookup(handle, h.name);
        missing |= *slot == 0;
    }
    if missing {
        crate::real::clear_dlerror();
    }
    let libc = in_c_library(&scope);
    let sweep = SWEEP.load(Ordering::Relaxed);
    let mut pass = Pass::new(
        table,
        Scope {
            found: &scope,
            libc: &libc,
        },
        loaded_object(handle),
        marker,
        page_size(),
        true,
        sweep,
    );
    pass.run();
    if pass.later {
        // Objects loaded during this load by other means (its constructors' own dlopen), or
        // by another thread: the next pass looks at everything loaded before it.
        SWEEP.store(true, Ordering::Relaxed);
    }
    // SAFETY: `file` is the program's non-null name, read by dlopen already.
    let name = Text(unsafe { CStr::from_ptr(file) }.to_bytes());
    if pass.failed > 0 {
        warn_once(format_args!(
            "{name} was loaded with RTLD_DEEPBIND and {} of the references of its libraries to \
             socket functions could not be redirected ({}): connections they make do not get \
             keepalive",
            pass.failed,
            pass.reason.unwrap_or("unknown")
        ));
    }
    if debug {
        let micros = now_ns().saturating_sub(started) / 1000;
        log::line(format_args!(
            "dlopen {name} with RTLD_DEEPBIND: {} references redirected in {} objects, {} not, \
             {} µs",
            pass.patched, pass.objects, pass.failed, micros
        ));
    }
}

/// The object behind a glibc `dlopen` handle: glibc's handle is its `struct link_map`, whose
/// public head (`<link.h>`) starts with `l_addr` and `l_name`, the `dlpi_addr` and `dlpi_name`
/// that `dl_iterate_phdr` reports for it.
#[cfg(not(test))]
fn loaded_object(handle: *mut c_void) -> Option<Identity> {
    let head = handle.cast::<usize>();
    // SAFETY: a non-null handle glibc's dlopen just returned: its link_map, at least two words.
    let (addr, name) = unsafe { (head.read(), head.add(1).read()) };
    Some(Identity { addr, name })
}

/// Writes the module's one warning, if warnings are on and it was not written yet.
#[cfg(not(test))]
fn warn_once(args: fmt::Arguments<'_>) {
    if log::enabled(LogLevel::Warn) && !WARNED.swap(true, Ordering::Relaxed) {
        log::line(args);
    }
}

/// CLOCK_MONOTONIC in nanoseconds, through the system call (no import for a debug figure).
#[cfg(not(test))]
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec.
    unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_exported_hook_is_in_the_list() {
        let hooks = include_str!("../hooks.rs");
        let list = include_str!("../hooked.rs");
        let exported: Vec<&str> = hooks
            .split("pub unsafe extern \"C\" fn ")
            .skip(1)
            .map(|rest| rest.split('(').next().unwrap())
            .collect();
        assert!(exported.len() >= 12, "{exported:?}");
        for name in exported.into_iter().filter(|&n| n != "dlopen") {
            assert!(
                list.contains(&format!(" {name}(")),
                "{name} is exported by hooks.rs but missing from the list in hooked.rs"
            );
        }
    }
}
