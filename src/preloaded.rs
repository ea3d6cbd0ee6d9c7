//! Whether this process's own `LD_PRELOAD` gave it this copy of the library (strict mode stops
//! only such a program, never one that got the library from `/etc/ld.so.preload`): decided by
//! the file, not by its name. This copy's file is the one the loader recorded for the object
//! this code lies in (`dl_iterate_phdr`), and an entry names it when its device and inode are
//! that file's. A program whose `LD_PRELOAD` names some other file called
//! `libkeepalive_shim.so` was not given this copy by it; one whose `LD_PRELOAD` names this file
//! under another name (a link, a copy's path in a package) was.
//!
//! An entry without a `/` is looked for by the loader along its library path, which only the
//! loader knows: it names this copy when it is this copy's file name. Where this copy's file
//! cannot be told (its path gone since it was loaded), no entry names it: strict mode then warns
//! rather than stops.
//!
//! Asked once, at load, and only when strict mode would stop the program: raw system calls
//! (`newfstatat`: glibc's `stat` functions are versioned symbols newer than 2.17), paths copied
//! into stack buffers, no allocation.

use keepalive_shim_policy::preload::entries;

/// Longest path handled (the kernel's `PATH_MAX`).
const PATH_MAX: usize = 4096;

/// A file: device and inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// A path as a NUL-terminated string in a stack buffer.
struct CPath {
    bytes: [u8; PATH_MAX],
    len: usize,
}

impl CPath {
    /// `path` with its NUL; `None` when empty, too long, or holding a NUL.
    fn new(path: &[u8]) -> Option<CPath> {
        if path.is_empty() || path.len() >= PATH_MAX || path.contains(&0) {
            return None;
        }
        let mut out = CPath {
            bytes: [0; PATH_MAX],
            len: path.len(),
        };
        out.bytes[..path.len()].copy_from_slice(path);
        Some(out)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The last component.
    fn file_name(&self) -> &[u8] {
        let path = self.as_bytes();
        path.rsplit(|&b| b == b'/').next().unwrap_or(path)
    }

    /// The file at this path, links followed as the loader follows them.
    fn file(&self) -> Option<FileId> {
        // SAFETY: a zeroed stat is a valid buffer for the kernel to fill.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: a NUL-terminated path in `bytes` and a live, writable stat, which on x86_64
        // and aarch64 is the kernel's layout.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_newfstatat,
                libc::AT_FDCWD as libc::c_long,
                self.bytes.as_ptr(),
                &raw mut st,
                0 as libc::c_long,
            )
        };
        (rc == 0).then_some(FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        })
    }
}

// The linker's symbol for this object's own ELF header (as in `real.rs`): an address inside
// this copy, whichever copy this is.
unsafe extern "C" {
    static __ehdr_start: u8;
}

/// This copy's file as the loader recorded it: the path of the loaded object whose segments
/// hold this copy's ELF header.
fn own_path() -> Option<CPath> {
    struct Search {
        inside: usize,
        found: Option<CPath>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Search` below, alive for the call; `info` is the loader's
        // record of a loaded object, valid during the callback.
        let (search, info) = unsafe { (&mut *data.cast::<Search>(), &*info) };
        let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: the loader's `dlpi_phnum` program headers of that object.
            unsafe { core::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let base = info.dlpi_addr as usize;
        let ours = headers.iter().any(|p| {
            let start = base.wrapping_add(p.p_vaddr as usize);
            p.p_type == libc::PT_LOAD
                && start <= search.inside
                && search.inside - start < p.p_memsz as usize
        });
        if !ours {
            return 0;
        }
        if !info.dlpi_name.is_null() {
            // SAFETY: the loader's NUL-terminated name of a loaded object.
            let name = unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) };
            search.found = CPath::new(name.to_bytes());
        }
        1
    }
    let mut search = Search {
        inside: &raw const __ehdr_start as usize,
        found: None,
    };
    // SAFETY: the callback has the C signature and `search` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
    search.found
}

/// Whether `ld_preload` (the value of this process's `LD_PRELOAD`) names this copy's file.
pub fn names_this_copy(ld_preload: &[u8]) -> bool {
    let Some(own) = own_path() else {
        return false;
    };
    let Some(file) = own.file() else {
        return false;
    };
    entries(ld_preload).any(|entry| {
        if entry.contains(&b'/') {
            CPath::new(entry).and_then(|p| p.file()) == Some(file)
        } else {
            entry == own.file_name()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_told_by_device_and_inode() {
        let exe = std::env::current_exe().unwrap();
        let path = CPath::new(exe.as_os_str().as_encoded_bytes()).unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            path.file(),
            Some(FileId {
                dev: meta.dev(),
                ino: meta.ino()
            })
        );
        assert_eq!(CPath::new(b"/nonexistent/x.so").unwrap().file(), None);
        assert!(CPath::new(b"").is_none());
        assert!(CPath::new(b"a\0b").is_none());
        assert!(CPath::new(&[b'a'; PATH_MAX]).is_none());
        assert_eq!(CPath::new(b"/a/b/c.so").unwrap().file_name(), b"c.so");
    }

    #[test]
    fn this_test_programs_own_file_is_found_among_the_loaded_objects() {
        // In a test build the code lies in the test program itself, whose loader name is empty:
        // no path, so nothing names it.
        let own = own_path();
        assert!(own.is_none_or(|p| !p.as_bytes().is_empty()));
        let exe = std::env::current_exe().unwrap();
        assert!(!names_this_copy(exe.as_os_str().as_encoded_bytes()));
    }
}
