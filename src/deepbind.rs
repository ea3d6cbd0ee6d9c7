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

#[cfg(not(test))]
use crate::config::LogLevel;
use crate::log;
use core::ffi::{CStr, c_char, c_int, c_void};
use core::fmt;
#[cfg(not(test))]
use core::sync::atomic::AtomicBool;
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::dl_phdr_info;

/// glibc's `RTLD_DEEPBIND` (musl has none).
#[cfg(not(test))]
pub const RTLD_DEEPBIND: c_int = 0x8;

/// One hooked function: its name, this library's hook, and the function behind it (`real.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Hooked {
    pub name: &'static CStr,
    pub hook: usize,
    pub real: usize,
}

impl Hooked {
    pub const fn new(name: &'static CStr, hook: usize, real: usize) -> Hooked {
        Hooked { name, hook, real }
    }
}

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

fn page_size() -> usize {
    // SAFETY: getauxval has no preconditions.
    let page = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
    if page.is_power_of_two() { page } else { 4096 }
}

/// A C string's bytes for a log line.
struct Text<'a>(&'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{fffd}")?;
            }
        }
        Ok(())
    }
}

// --- walking the loaded objects ------------------------------------------------------------------

/// An object as `dl_iterate_phdr` reports it: load address and name pointer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Identity {
    addr: usize,
    name: usize,
}

impl Identity {
    fn of(info: &dl_phdr_info) -> Identity {
        Identity {
            addr: info.dlpi_addr as usize,
            name: info.dlpi_name as usize,
        }
    }
}

/// Calls `f` for every loaded object of our namespace until it returns true.
fn each_object<F: FnMut(&dl_phdr_info) -> bool>(mut f: F) {
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
fn last_object() -> Option<Identity> {
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
fn in_c_library(addresses: &[usize; MAX_HOOKED]) -> [bool; MAX_HOOKED] {
    let mut libc = [false; MAX_HOOKED];
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
                inside = [false; MAX_HOOKED];
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
fn in_main_namespace(caller: usize) -> bool {
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
fn loaded(name: &[u8]) -> bool {
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

/// The `PT_LOAD` segments of an object.
fn segments(info: &dl_phdr_info) -> impl Iterator<Item = Segment> + '_ {
    let base = info.dlpi_addr as usize;
    let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: the loader's program headers of a mapped object, `dlpi_phnum` of them.
        unsafe { core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    headers
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD)
        .filter_map(move |p| {
            let start = base.checked_add(p.p_vaddr as usize)?;
            let end = start.checked_add(p.p_memsz as usize)?;
            Some(Segment {
                start,
                end,
                flags: p.p_flags,
            })
        })
}

// --- one object's dynamic section ----------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
mod types {
    pub const ABS64: u32 = 1; // R_X86_64_64
    pub const GLOB_DAT: u32 = 6;
    pub const JUMP_SLOT: u32 = 7;
}
#[cfg(target_arch = "aarch64")]
mod types {
    pub const ABS64: u32 = 257; // R_AARCH64_ABS64
    pub const GLOB_DAT: u32 = 1025;
    pub const JUMP_SLOT: u32 = 1026;
}
use types::{ABS64, GLOB_DAT, JUMP_SLOT};

const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_RELAENT: i64 = 9;
const DT_STRSZ: i64 = 10;
const DT_SYMENT: i64 = 11;
const DT_SONAME: i64 = 14;
const DT_PLTREL: i64 = 20;
const DT_JMPREL: i64 = 23;
const DT_RELACOUNT: i64 = 0x6fff_fff9;

const PF_W: u32 = 2;
const PF_R: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct Dyn {
    tag: i64,
    val: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Rela {
    offset: u64,
    info: u64,
    addend: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Sym {
    name: u32,
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

/// Hooked names at most (the table `hooks.rs` makes from the list in `hooked.rs`).
#[cfg(not(test))]
pub(crate) const MAX_HOOKED: usize = 16;
/// `PT_LOAD` segments remembered per object (linkers make 2 to 5).
const MAX_SEGMENTS: usize = 16;
/// Objects one `dlopen` may bring in that the pass follows; beyond, they are reported.
const MAX_RUN: usize = 128;

#[derive(Clone, Copy, Default, Debug)]
struct Segment {
    start: usize,
    end: usize,
    flags: u32,
}

/// One object's memory and the tables of its dynamic section, as absolute addresses, each
/// checked to lie in a readable segment.
struct Object {
    base: usize,
    name: *const c_char,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
    /// The pages glibc made read-only after relocation: `[start, end)`, empty if none.
    relro: (usize, usize),
    strings: Strings,
    symtab: usize,
    /// `DT_JMPREL`, `DT_PLTRELSZ` (0 without), if `DT_PLTREL` says `DT_RELA`.
    jmprel: (usize, usize),
    /// `DT_RELA`, `DT_RELASZ`, and `DT_RELACOUNT` (the leading relative relocations to skip).
    rela: (usize, usize, usize),
    soname: Option<usize>,
}

impl Object {
    /// Reads an object's segments and dynamic section; `None` without a usable one (the vDSO's
    /// has no relocations either way).
    ///
    /// # Safety
    /// `info` is a record `dl_iterate_phdr` passed to its callback, used only during it.
    unsafe fn new(info: &dl_phdr_info, page: usize) -> Option<Object> {
        let base = info.dlpi_addr as usize;
        let mut object = Object {
            base,
            name: info.dlpi_name,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: 0,
            relro: (0, 0),
            strings: Strings::EMPTY,
            symtab: 0,
            jmprel: (0, 0),
            rela: (0, 0, 0),
            soname: None,
        };
        for (slot, segment) in object.segments.iter_mut().zip(segments(info)) {
            *slot = segment;
            object.count += 1;
        }
        let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: as in `segments`.
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        for p in headers {
            let start = base.wrapping_add(p.p_vaddr as usize);
            let end = start.wrapping_add(p.p_memsz as usize);
            if p.p_type == libc::PT_DYNAMIC {
                (object.strings.dynamic, object.strings.dynamic_end) = (start, end);
            } else if p.p_type == libc::PT_GNU_RELRO {
                // As glibc's _dl_protect_relro: both ends rounded down to a page.
                object.relro = (start & !(page - 1), end & !(page - 1));
            }
        }
        let (dynamic, dynamic_end) = (object.strings.dynamic, object.strings.dynamic_end);
        if dynamic == 0 || !object.readable(dynamic, size_of::<Dyn>()) {
            return None;
        }
        let (mut strtab, mut symtab, mut jmprel, mut rela) = (0u64, 0u64, 0u64, 0u64);
        let (mut pltrelsz, mut pltrel, mut relasz, mut relacount) = (0usize, 0u64, 0usize, 0usize);
        let (mut strsz, mut soname) = (0usize, None);
        let mut at = dynamic;
        while at.saturating_add(size_of::<Dyn>()) <= dynamic_end {
            let d: Dyn = object.read(at)?;
            let val = d.val as usize;
            match d.tag {
                DT_NULL => break,
                DT_STRTAB => strtab = d.val,
                DT_SYMTAB => symtab = d.val,
                DT_STRSZ => strsz = val,
                DT_JMPREL => jmprel = d.val,
                DT_PLTRELSZ => pltrelsz = val,
                DT_PLTREL => pltrel = d.val,
                DT_RELA => rela = d.val,
                DT_RELASZ => relasz = val,
                DT_RELACOUNT => relacount = val,
                DT_SONAME => soname = Some(val),
                // Another layout than the one this walk reads: not this object.
                DT_RELAENT if val != size_of::<Rela>() => return None,
                DT_SYMENT if val != size_of::<Sym>() => return None,
                _ => {}
            }
            at += size_of::<Dyn>();
        }
        // glibc stores these as absolute addresses (it relocates a writable dynamic section in
        // place), musl and a read-only dynamic section (the vDSO's) keep the link-time ones:
        // whichever of the two lies in the object's own segments, decided once on DT_STRTAB.
        let relocated = if base == 0 {
            true
        } else {
            let strtab = strtab as usize;
            match (
                object.inside(strtab),
                object.inside(strtab.wrapping_add(base)),
            ) {
                (true, false) => true,
                (false, true) => false,
                _ => return None,
            }
        };
        let absolute = |v: u64| {
            if relocated {
                v as usize
            } else {
                (v as usize).wrapping_add(base)
            }
        };
        // Every entry up to DT_NULL was read above, and the string table is checked now: what
        // `Strings` relies on.
        object.strings.strtab = absolute(strtab);
        object.strings.strsz = strsz;
        object.symtab = absolute(symtab);
        object.soname = soname;
        if !object.readable(object.strings.strtab, strsz) || symtab == 0 {
            return None;
        }
        if pltrel == DT_RELA as u64 && jmprel != 0 && object.readable(absolute(jmprel), pltrelsz) {
            object.jmprel = (absolute(jmprel), pltrelsz);
        }
        if rela != 0 && object.readable(absolute(rela), relasz) {
            object.rela = (absolute(rela), relasz, relacount);
        }
        Some(object)
    }

    fn segment(&self, addr: usize, len: usize) -> Option<&Segment> {
        let end = addr.checked_add(len)?;
        self.segments
            .iter()
            .take(self.count)
            .find(|s| s.start <= addr && end <= s.end)
    }

    fn inside(&self, addr: usize) -> bool {
        self.segment(addr, 1).is_some()
    }

    fn readable(&self, addr: usize, len: usize) -> bool {
        self.segment(addr, len).is_some_and(|s| s.flags & PF_R != 0)
    }

    fn writable(&self, addr: usize, len: usize) -> bool {
        self.segment(addr, len).is_some_and(|s| s.flags & PF_W != 0)
    }

    /// A `T` at `addr`, if it lies in a readable segment.
    fn read<T: Copy>(&self, addr: usize) -> Option<T> {
        if !self.readable(addr, size_of::<T>()) {
            return None;
        }
        // SAFETY: the bytes lie in a mapped, readable segment of a live object.
        Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
    }

    /// The names the object answers to: its `DT_SONAME`, its path and its file name.
    fn names(&self) -> impl Iterator<Item = &[u8]> {
        let path: &[u8] = if self.name.is_null() {
            b""
        } else {
            // SAFETY: the loader's NUL-terminated name of a live object.
            unsafe { CStr::from_ptr(self.name) }.to_bytes()
        };
        let file = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        self.soname
            .and_then(|o| self.strings.string(o))
            .into_iter()
            .chain([path, file])
            .filter(|n| !n.is_empty())
    }

    fn path(&self) -> Text<'_> {
        let path = if self.name.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader's NUL-terminated name of a live object.
            unsafe { CStr::from_ptr(self.name) }.to_bytes()
        };
        Text(if path.is_empty() {
            b"the program"
        } else {
            path
        })
    }
}

/// Where an object's names are: its dynamic section and string table. Made by `Object::new`
/// only after every dynamic entry up to `DT_NULL` and the whole string table were found
/// readable; used only while the object stays mapped (during one `dl_iterate_phdr`).
#[derive(Clone, Copy)]
struct Strings {
    dynamic: usize,
    dynamic_end: usize,
    strtab: usize,
    strsz: usize,
}

impl Strings {
    const EMPTY: Strings = Strings {
        dynamic: 0,
        dynamic_end: 0,
        strtab: 0,
        strsz: 0,
    };

    /// The string at `offset` in the string table, without its NUL.
    fn string(&self, offset: usize) -> Option<&[u8]> {
        if self.strtab == 0 || offset >= self.strsz {
            return None;
        }
        // SAFETY: inside the string table, checked readable (see the type's documentation).
        let rest = unsafe {
            core::slice::from_raw_parts((self.strtab + offset) as *const u8, self.strsz - offset)
        };
        let len = rest.iter().position(|&b| b == 0)?;
        rest.get(..len)
    }

    /// The names in the `DT_NEEDED` entries.
    fn needed(&self) -> impl Iterator<Item = &[u8]> {
        let count = self.dynamic_end.saturating_sub(self.dynamic) / size_of::<Dyn>();
        (0..count)
            .map(move |i| {
                // SAFETY: entries up to DT_NULL were read (and so found readable) by
                // `Object::new`; `take_while` stops at DT_NULL.
                unsafe {
                    core::ptr::read_unaligned((self.dynamic + i * size_of::<Dyn>()) as *const Dyn)
                }
            })
            .take_while(|d| d.tag != DT_NULL)
            .filter(|d| d.tag == DT_NEEDED)
            .filter_map(|d| self.string(d.val as usize))
    }
}

// --- the pass ------------------------------------------------------------------------------------

/// What the pass does with an object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// Relocated before this `dlopen`: slots bound to the C library's function.
    Old,
    /// Loaded by this `dlopen`: those slots, and lazy PLT slots.
    Ours,
    /// Possibly still being relocated by another thread: left alone.
    Skip,
}

/// Per table entry, what the loaded library's own scope finds for the name (0: nothing), and
/// whether that is the C library's.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub found: &'a [usize],
    pub libc: &'a [bool],
}

/// One pass over the loaded objects, after a `dlopen` of `new` (or, in unit tests, none).
pub struct Pass<'a> {
    table: &'a [Hooked],
    scope: Scope<'a>,
    new: Option<Identity>,
    marker: Option<Identity>,
    page: usize,
    /// False: count what would be written, write nothing (unit tests).
    write: bool,
    /// Whether to look at objects relocated before this load, too.
    sweep: bool,
    /// The first bytes of the table's names, as a bit set.
    firsts: u128,
    /// Objects came in behind this load's own, not looked at now.
    pub later: bool,
    before_new: bool,
    seen_marker: bool,
    in_run: bool,
    /// The string tables of the objects of this load met so far.
    run_dynamic: [Strings; MAX_RUN],
    run_len: usize,
    pub objects: u32,
    pub patched: u32,
    pub failed: u32,
    pub reason: Option<&'static str>,
}

impl<'a> Pass<'a> {
    pub fn new(
        table: &'a [Hooked],
        scope: Scope<'a>,
        new: Option<Identity>,
        marker: Option<Identity>,
        page: usize,
        write: bool,
        sweep: bool,
    ) -> Pass<'a> {
        Pass {
            table,
            scope,
            new,
            marker,
            page,
            write,
            sweep,
            firsts: table
                .iter()
                .filter_map(|h| h.name.to_bytes().first())
                .filter(|&&b| b < 128)
                .fold(0, |set, &b| set | 1u128 << b),
            later: false,
            before_new: true,
            seen_marker: false,
            in_run: false,
            run_dynamic: [Strings::EMPTY; MAX_RUN],
            run_len: 0,
            objects: 0,
            patched: 0,
            failed: 0,
            reason: None,
        }
    }

    /// Walks every loaded object once.
    pub fn run(&mut self) {
        each_object(|info| {
            self.visit(info);
            false
        });
    }

    fn visit(&mut self, info: &dl_phdr_info) {
        let page = self.page;
        // SAFETY: a record of dl_iterate_phdr, used during its callback only.
        let parse = || unsafe { Object::new(info, page) };
        let mut object = None;
        let class = self.classify(Identity::of(info), |pass| {
            object = parse();
            object.as_ref().is_some_and(|o| pass.needed_by_run(o))
        });
        if class == Class::Skip || class == Class::Old && !self.sweep {
            return;
        }
        let Some(object) = object.or_else(parse) else {
            return;
        };
        if class == Class::Ours {
            self.remember(&object);
        }
        self.cover(&object, class == Class::Ours);
    }

    /// Old: in the list before the marker and before the loaded object, so relocated before
    /// this `dlopen` began. Ours: the loaded object, if it came after the marker (new), and the
    /// objects right behind it that the objects before them need. Skip: the rest, which another
    /// thread may have loaded since and may still be relocating (or, between the marker and the
    /// loaded object, loaded while this `dlopen` waited: finished, but told apart from the
    /// others only by the position of an object that may be gone).
    ///
    /// `needed` says whether the run so far needs the object (asked only in the run).
    fn classify(&mut self, id: Identity, needed: impl FnOnce(&Self) -> bool) -> Class {
        let class = if self.before_new && Some(id) == self.new {
            self.before_new = false;
            self.in_run = self.seen_marker;
            if self.in_run { Class::Ours } else { Class::Old }
        } else if !self.before_new {
            if self.in_run && !needed(self) {
                // Loaded since by another thread, or by this load's constructors.
                self.in_run = false;
                self.later = true;
            }
            if self.in_run {
                Class::Ours
            } else {
                Class::Skip
            }
        } else if self.seen_marker {
            Class::Skip
        } else {
            Class::Old
        };
        if Some(id) == self.marker {
            self.seen_marker = true;
        }
        class
    }

    fn remember(&mut self, object: &Object) {
        if let Some(entry) = self.run_dynamic.get_mut(self.run_len) {
            *entry = object.strings;
            self.run_len += 1;
        } else if self.reason.is_none() {
            // The objects behind it cannot be recognised as this load's any more.
            self.failed += 1;
            self.reason = Some("too many libraries loaded at once");
        }
    }

    /// Whether an object of the run so far names `object` in a `DT_NEEDED` entry.
    fn needed_by_run(&self, object: &Object) -> bool {
        self.run_dynamic
            .get(..self.run_len)
            .unwrap_or_default()
            .iter()
            .any(|earlier| {
                earlier
                    .needed()
                    .any(|needed| object.names().any(|name| name == needed))
            })
    }

    /// Re-points the object's slots; `ours`: it was loaded by this `dlopen`.
    fn cover(&mut self, object: &Object, ours: bool) {
        let mut state = Slots::default();
        let (jmprel, pltrelsz) = object.jmprel;
        self.scan(object, jmprel, pltrelsz, 0, ours, &mut state);
        let (rela, relasz, relacount) = object.rela;
        self.scan(object, rela, relasz, relacount, ours, &mut state);
        if state.unprotected {
            let (start, end) = object.relro;
            // SAFETY: the same pages, read-only again as glibc left them.
            if unsafe { protect(start, end - start, libc::PROT_READ) }.is_err() {
                log::debug!("{}: its RELRO pages stay writable", object.path());
            }
        }
        if state.patched > 0 {
            self.objects += 1;
            self.patched += state.patched;
            log::debug!(
                "RTLD_DEEPBIND: {}: {} references redirected to keepalive-shim",
                object.path(),
                state.patched
            );
        }
        if state.failed > 0 {
            self.failed += state.failed;
            self.reason
                .get_or_insert("mprotect refused to make their relocations writable");
            log::debug!(
                "RTLD_DEEPBIND: {}: {} references could not be redirected: mprotect refused",
                object.path(),
                state.failed
            );
        }
    }

    /// One relocation table, `size` bytes at `table`, the first `skip` entries relative ones.
    fn scan(
        &mut self,
        object: &Object,
        table: usize,
        size: usize,
        skip: usize,
        ours: bool,
        state: &mut Slots,
    ) {
        let count = size / size_of::<Rela>();
        for i in skip.min(count)..count {
            // SAFETY: the table was checked readable as a whole by `Object::new`.
            let r = unsafe {
                core::ptr::read_unaligned((table + i * size_of::<Rela>()) as *const Rela)
            };
            let kind = (r.info & 0xffff_ffff) as u32;
            let symbol = (r.info >> 32) as usize;
            let plt = kind == JUMP_SLOT;
            if symbol == 0 || !(plt || (kind == GLOB_DAT || kind == ABS64) && r.addend == 0) {
                continue;
            }
            let Some(sym) = symbol
                .checked_mul(size_of::<Sym>())
                .and_then(|o| object.symtab.checked_add(o))
                .and_then(|a| object.read::<Sym>(a))
            else {
                continue;
            };
            // Defined by the object itself: its own business (libc, an interposer).
            if sym.shndx != 0 {
                continue;
            }
            let Some(index) = self.hooked(object, sym.name as usize) else {
                continue;
            };
            let slot = object.base.wrapping_add(r.offset as usize);
            if !slot.is_multiple_of(size_of::<usize>())
                || !object.writable(slot, size_of::<usize>())
            {
                continue;
            }
            self.patch(object, slot, index, plt && ours, state);
        }
    }

    /// The table entry named by the symbol name at `offset`, if any. The hot spot of a pass:
    /// compares in place, after a look at the first byte.
    fn hooked(&self, object: &Object, offset: usize) -> Option<usize> {
        let strings = &object.strings;
        let left = strings.strsz.checked_sub(offset)?;
        if strings.strtab == 0 || left == 0 {
            return None;
        }
        let at = (strings.strtab + offset) as *const u8;
        // SAFETY: inside the string table, checked readable by `Object::new`.
        let first = unsafe { at.read() };
        if first >= 128 || self.firsts & (1u128 << first) == 0 {
            return None;
        }
        self.table.iter().position(|h| {
            let name = h.name.to_bytes_with_nul();
            // SAFETY: `name.len()` bytes from `at` stay inside the string table.
            name.len() <= left && unsafe { core::slice::from_raw_parts(at, name.len()) } == name
        })
    }

    fn patch(&mut self, object: &Object, slot: usize, index: usize, lazy: bool, s: &mut Slots) {
        let Some(h) = self.table.get(index) else {
            return;
        };
        let found = self.scope.found.get(index).copied().unwrap_or(0);
        let found_libc = found != 0 && self.scope.libc.get(index).copied().unwrap_or(false);
        // The C library's function of this name: real.rs's, or the loaded library's scope's.
        let is_libc = |v: usize| v != 0 && (v == h.real || found_libc && v == found);
        // SAFETY: an aligned word in a writable segment of a live object; loads never fault.
        let cell = unsafe { &*(slot as *const AtomicUsize) };
        let value = cell.load(Ordering::Acquire);
        let wanted =
            value != h.hook && (is_libc(value) || lazy && object.inside(value) && is_libc(found));
        if !wanted {
            return;
        }
        if !self.write {
            s.patched += 1;
            return;
        }
        let (start, end) = object.relro;
        if start <= slot && slot < end && !s.unprotected {
            // SAFETY: pages of this object's RELRO range, which only the loader writes, and
            // only while relocating it, which is over (see the module's documentation).
            if s.refused
                || unsafe { protect(start, end - start, libc::PROT_READ | libc::PROT_WRITE) }
                    .is_err()
            {
                s.refused = true;
                s.failed += 1;
                return;
            }
            s.unprotected = true;
        }
        // A thread resolving the same lazy entry right now may store first: then its value
        // stands if it is not the real function, and is replaced if it is.
        let mut current = value;
        for _ in 0..2 {
            match cell.compare_exchange(current, h.hook, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    s.patched += 1;
                    return;
                }
                Err(now) if is_libc(now) => current = now,
                Err(_) => return,
            }
        }
    }
}

/// One object's counts during a pass.
#[derive(Default)]
struct Slots {
    patched: u32,
    failed: u32,
    /// Its RELRO pages are writable now, to be made read-only again.
    unprotected: bool,
    /// `mprotect` refused to make them writable: not asked again.
    refused: bool,
}

/// `mprotect(2)` through the system call (no import).
///
/// # Safety
/// Changes the protection of whole pages: the caller owns what that does to their contents.
unsafe fn protect(start: usize, len: usize, prot: c_int) -> Result<(), c_int> {
    // SAFETY: the caller's contract.
    let rc = unsafe { libc::syscall(libc::SYS_mprotect, start, len, prot) };
    if rc == 0 {
        Ok(())
    } else {
        Err(crate::errno::get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Scope<'static> = Scope {
        found: &[0],
        libc: &[false],
    };

    /// `dlsym(RTLD_DEFAULT, name)`.
    fn default(name: &CStr) -> usize {
        // SAFETY: a NUL-terminated name.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
    }

    #[test]
    fn every_exported_hook_is_in_the_list() {
        let hooks = include_str!("hooks.rs");
        let list = include_str!("hooked.rs");
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

    #[test]
    fn the_walk_finds_this_programs_bindings_to_libc() {
        // The test program calls libc's close through its GOT: a dry pass finds those slots
        // bound to the real function, as it would in a library bound past the hooks.
        let table = [Hooked::new(c"close", 1, default(c"close"))];
        let mut pass = Pass::new(&table, NONE, None, None, page_size(), false, true);
        pass.run();
        assert!(pass.patched >= 1, "no slot of close found");
        assert_eq!(pass.failed, 0);
        // A name no object imports finds nothing.
        let table = [Hooked::new(c"keepalive_shim_none", 1, 2)];
        let mut pass = Pass::new(&table, NONE, None, None, page_size(), false, true);
        pass.run();
        assert_eq!(pass.patched, 0);
    }

    #[inline(never)]
    extern "C" fn fake_getppid() -> libc::pid_t {
        -42
    }

    #[test]
    fn a_slot_is_rewritten_through_relro_and_back() {
        let real = default(c"getppid");
        let hook = fake_getppid as *const () as usize;
        // SAFETY: getppid has no preconditions.
        let before = unsafe { libc::getppid() };
        assert!(before > 0);
        let table = [Hooked::new(c"getppid", hook, real)];
        let mut pass = Pass::new(&table, NONE, None, None, page_size(), true, true);
        pass.run();
        assert!(pass.patched >= 1, "getppid's slot was not rewritten");
        assert_eq!(pass.failed, 0);
        // SAFETY: as above; the call now goes through the rewritten slot.
        let after = unsafe { core::hint::black_box(libc::getppid)() };
        // Back again, for the rest of the process.
        let table = [Hooked::new(c"getppid", real, hook)];
        let mut undo = Pass::new(&table, NONE, None, None, page_size(), true, true);
        undo.run();
        assert_eq!(undo.patched, pass.patched);
        assert_eq!(after, -42);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getppid() }, before);
    }

    #[test]
    fn objects_after_the_marker_are_left_alone_unless_loaded_by_this_dlopen() {
        let table = [Hooked::new(c"x", 1, 2)];
        let a = Identity { addr: 1, name: 1 };
        let b = Identity { addr: 2, name: 2 };
        let n = Identity { addr: 3, name: 3 };
        let later = Identity { addr: 4, name: 4 };
        // [a, b=marker, n, later]: n is this load's, `later` (no DT_NEEDED link) is not.
        let mut pass = Pass::new(&table, NONE, Some(n), Some(b), 4096, false, true);
        assert_eq!(pass.classify(a, |_| false), Class::Old);
        assert_eq!(pass.classify(b, |_| false), Class::Old);
        assert_eq!(pass.classify(n, |_| false), Class::Ours);
        assert_eq!(pass.classify(later, |_| false), Class::Skip);
        // [a, n, b=marker, later]: n was loaded before; what follows it is left alone, since
        // whether the marker is still ahead or gone cannot be told on the way.
        let mut pass = Pass::new(&table, NONE, Some(n), Some(b), 4096, false, true);
        assert_eq!(pass.classify(a, |_| false), Class::Old);
        assert_eq!(pass.classify(n, |_| false), Class::Old);
        assert_eq!(pass.classify(b, |_| false), Class::Skip);
        assert_eq!(pass.classify(later, |_| false), Class::Skip);
        // [a, b=marker, t2, n]: t2 came in while this dlopen waited; not told apart from a
        // later load without the marker, so left alone too.
        let t2 = later;
        let mut pass = Pass::new(&table, NONE, Some(n), Some(b), 4096, false, true);
        assert_eq!(pass.classify(a, |_| false), Class::Old);
        assert_eq!(pass.classify(b, |_| false), Class::Old);
        assert_eq!(pass.classify(t2, |_| false), Class::Skip);
        assert_eq!(pass.classify(n, |_| false), Class::Ours);
        // The marker is gone (closed meanwhile): what comes before the loaded object is old, the
        // loaded object is not taken for this load's, and nothing after it is touched.
        let gone = Identity { addr: 9, name: 9 };
        let mut pass = Pass::new(&table, NONE, Some(n), Some(gone), 4096, false, true);
        assert_eq!(pass.classify(a, |_| false), Class::Old);
        assert_eq!(pass.classify(n, |_| false), Class::Old);
        assert_eq!(pass.classify(later, |_| false), Class::Skip);
    }

    #[test]
    fn names_print_lossily() {
        assert_eq!(format!("{}", Text(b"/a/b.so")), "/a/b.so");
        assert_eq!(format!("{}", Text(b"a\xffb")), "a\u{fffd}b");
    }
}
