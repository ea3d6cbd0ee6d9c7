//! One loaded object's ELF dynamic section, read in place: its segments, string and symbol
//! tables, relocation tables and names, every address checked to lie in a readable segment.

use core::ffi::{CStr, c_char};
use core::fmt;
use libc::dl_phdr_info;

/// The `PT_LOAD` segments of an object.
pub(super) fn segments(info: &dl_phdr_info) -> impl Iterator<Item = Segment> + '_ {
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

/// A C string's bytes for a log line.
pub(super) struct Text<'a>(pub(super) &'a [u8]);

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
pub(super) use types::{ABS64, GLOB_DAT, JUMP_SLOT};

pub(super) const DT_NULL: i64 = 0;
pub(super) const DT_NEEDED: i64 = 1;
pub(super) const DT_PLTRELSZ: i64 = 2;
pub(super) const DT_STRTAB: i64 = 5;
pub(super) const DT_SYMTAB: i64 = 6;
pub(super) const DT_RELA: i64 = 7;
pub(super) const DT_RELASZ: i64 = 8;
pub(super) const DT_RELAENT: i64 = 9;
pub(super) const DT_STRSZ: i64 = 10;
pub(super) const DT_SYMENT: i64 = 11;
pub(super) const DT_SONAME: i64 = 14;
pub(super) const DT_PLTREL: i64 = 20;
pub(super) const DT_JMPREL: i64 = 23;
pub(super) const DT_RELACOUNT: i64 = 0x6fff_fff9;

pub(super) const PF_W: u32 = 2;
pub(super) const PF_R: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Dyn {
    pub(super) tag: i64,
    pub(super) val: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Rela {
    pub(super) offset: u64,
    pub(super) info: u64,
    pub(super) addend: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Sym {
    pub(super) name: u32,
    pub(super) info: u8,
    pub(super) other: u8,
    pub(super) shndx: u16,
    pub(super) value: u64,
    pub(super) size: u64,
}

/// `PT_LOAD` segments remembered per object (linkers make 2 to 5).
pub(super) const MAX_SEGMENTS: usize = 16;

#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Segment {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) flags: u32,
}

/// One object's memory and the tables of its dynamic section, as absolute addresses, each
/// checked to lie in a readable segment.
pub(super) struct Object {
    pub(super) base: usize,
    pub(super) name: *const c_char,
    pub(super) segments: [Segment; MAX_SEGMENTS],
    pub(super) count: usize,
    /// The pages glibc made read-only after relocation: `[start, end)`, empty if none.
    pub(super) relro: (usize, usize),
    pub(super) strings: Strings,
    pub(super) symtab: usize,
    /// `DT_JMPREL`, `DT_PLTRELSZ` (0 without), if `DT_PLTREL` says `DT_RELA`.
    pub(super) jmprel: (usize, usize),
    /// `DT_RELA`, `DT_RELASZ`, and `DT_RELACOUNT` (the leading relative relocations to skip).
    pub(super) rela: (usize, usize, usize),
    pub(super) soname: Option<usize>,
}

impl Object {
    /// Reads an object's segments and dynamic section; `None` without a usable one (the vDSO's
    /// has no relocations either way).
    ///
    /// # Safety
    /// `info` is a record `dl_iterate_phdr` passed to its callback, used only during it.
    pub(super) unsafe fn new(info: &dl_phdr_info, page: usize) -> Option<Object> {
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

    pub(super) fn segment(&self, addr: usize, len: usize) -> Option<&Segment> {
        let end = addr.checked_add(len)?;
        self.segments
            .iter()
            .take(self.count)
            .find(|s| s.start <= addr && end <= s.end)
    }

    pub(super) fn inside(&self, addr: usize) -> bool {
        self.segment(addr, 1).is_some()
    }

    pub(super) fn readable(&self, addr: usize, len: usize) -> bool {
        self.segment(addr, len).is_some_and(|s| s.flags & PF_R != 0)
    }

    pub(super) fn writable(&self, addr: usize, len: usize) -> bool {
        self.segment(addr, len).is_some_and(|s| s.flags & PF_W != 0)
    }

    /// A `T` at `addr`, if it lies in a readable segment.
    pub(super) fn read<T: Copy>(&self, addr: usize) -> Option<T> {
        if !self.readable(addr, size_of::<T>()) {
            return None;
        }
        // SAFETY: the bytes lie in a mapped, readable segment of a live object.
        Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
    }

    /// The names the object answers to: its `DT_SONAME`, its path and its file name.
    pub(super) fn names(&self) -> impl Iterator<Item = &[u8]> {
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

    pub(super) fn path(&self) -> Text<'_> {
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
pub(super) struct Strings {
    pub(super) dynamic: usize,
    pub(super) dynamic_end: usize,
    pub(super) strtab: usize,
    pub(super) strsz: usize,
}

impl Strings {
    pub(super) const EMPTY: Strings = Strings {
        dynamic: 0,
        dynamic_end: 0,
        strtab: 0,
        strsz: 0,
    };

    /// The string at `offset` in the string table, without its NUL.
    pub(super) fn string(&self, offset: usize) -> Option<&[u8]> {
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
    pub(super) fn needed(&self) -> impl Iterator<Item = &[u8]> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_lossily() {
        assert_eq!(format!("{}", Text(b"/a/b.so")), "/a/b.so");
        assert_eq!(format!("{}", Text(b"a\xffb")), "a\u{fffd}b");
    }
}
