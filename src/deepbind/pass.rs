//! The pass: one walk over the loaded objects after a `RTLD_DEEPBIND` load, telling which
//! objects it may write and re-pointing their relocation slots of hooked names to the hooks.

use super::elf::{ABS64, GLOB_DAT, JUMP_SLOT, Object, Rela, Strings, Sym};
use super::objects::{Identity, each_object};
use crate::log;
use core::ffi::{CStr, c_int};
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::dl_phdr_info;

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

/// Hooked names at most (the table `hooks.rs` makes from the list in `hooked.rs`).
#[cfg(not(test))]
pub(crate) const MAX_HOOKED: usize = 16;

/// Objects one `dlopen` may bring in that the pass follows; beyond, they are reported.
pub(super) const MAX_RUN: usize = 128;

/// What the pass does with an object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Class {
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
pub(super) struct Scope<'a> {
    pub found: &'a [usize],
    pub libc: &'a [bool],
}

/// One pass over the loaded objects, after a `dlopen` of `new` (or, in unit tests, none).
pub(super) struct Pass<'a> {
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
            if s.refused || {
                // SAFETY: pages of this object's RELRO range, which only the loader writes, and
                // only while relocating it, which is over (see the module's documentation).
                unsafe { protect(start, end - start, libc::PROT_READ | libc::PROT_WRITE) }
            }
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
pub(super) struct Slots {
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
pub(super) unsafe fn protect(start: usize, len: usize, prot: c_int) -> Result<(), c_int> {
    // SAFETY: the caller's contract.
    let rc = unsafe { libc::syscall(libc::SYS_mprotect, start, len, prot as libc::c_long) };
    if rc == 0 {
        Ok(())
    } else {
        Err(crate::errno::get())
    }
}

#[cfg(test)]
mod tests {
    use super::super::objects::page_size;
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
}
