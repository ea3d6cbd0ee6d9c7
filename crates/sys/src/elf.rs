//! The one ELF reader, over the `object` crate's bounds-checked parsing: what an executable is
//! (class, machine, program interpreter, a Go build) and where a shared library's dynamic symbol
//! is. Every name is compared by a bounded slice of its string table, never by scanning for the
//! next NUL: a crafted file whose strings never end costs one pass over its symbols, not one
//! pass over the file per symbol.

use object::Endianness;
use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable, Sym};

/// What matters here of an ELF file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Elf {
    pub class64: bool,
    /// `e_machine`: 62 for x86_64, 183 for aarch64.
    pub machine: u16,
    /// `PT_INTERP`: the dynamic loader; `None` for a statically linked program.
    pub interpreter: Option<String>,
    /// A Go build: a `.go.buildinfo` or `.note.go.buildid` section.
    pub go: bool,
}

/// `e_machine` of x86_64 and aarch64.
pub const X86_64: u16 = elf::EM_X86_64.0;
pub const AARCH64: u16 = elf::EM_AARCH64.0;

/// `e_machine` of the architecture this program is built for.
#[cfg(target_arch = "aarch64")]
pub const HOST_MACHINE: u16 = AARCH64;
#[cfg(not(target_arch = "aarch64"))]
pub const HOST_MACHINE: u16 = X86_64;

/// A machine's name, for people.
pub fn machine_name(machine: u16) -> String {
    match machine {
        62 => "x86_64".to_owned(),
        183 => "aarch64".to_owned(),
        3 => "i386".to_owned(),
        40 => "32-bit ARM".to_owned(),
        other => format!("ELF machine {other}"),
    }
}

/// Whether `table[offset..]` starts with `name` followed by a NUL: one bounded comparison.
fn name_is(table: &[u8], offset: u32, name: &[u8]) -> bool {
    let start = offset as usize;
    table
        .get(start..start.saturating_add(name.len() + 1))
        .is_some_and(|s| &s[..name.len()] == name && s[name.len()] == 0)
}

/// The raw bytes of section `index` (an empty slice for a bad index).
fn section_bytes<'d, H: FileHeader<Endian = Endianness>>(
    sections: &SectionTable<'d, H, &'d [u8]>,
    endian: Endianness,
    data: &'d [u8],
    index: usize,
) -> &'d [u8] {
    sections
        .section(object::SectionIndex(index))
        .ok()
        .and_then(|s| s.data(endian, data).ok())
        .unwrap_or_default()
}

fn describe<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Option<Elf> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut out = Elf {
        class64: header.is_class_64(),
        machine: header.e_machine(endian).0,
        ..Elf::default()
    };
    if let Ok(phdrs) = header.program_headers(endian, data) {
        for ph in phdrs {
            if let Ok(Some(interp)) = ph.interpreter(endian, data) {
                out.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
            }
        }
    }
    if let Ok(sections) = header.sections(endian, data) {
        let names = header
            .shstrndx(endian, data)
            .map(|i| section_bytes(&sections, endian, data, i as usize))
            .unwrap_or_default();
        out.go = sections.iter().any(|s| {
            let at = s.sh_name(endian);
            name_is(names, at, b".go.buildinfo") || name_is(names, at, b".note.go.buildid")
        });
    }
    Some(out)
}

impl Elf {
    /// Parses an ELF file of either class and byte order. `None` when `bytes` is not one, or its
    /// header is truncated; a damaged part further in is left out, never a panic.
    pub fn parse(bytes: &[u8]) -> Option<Elf> {
        match object::FileKind::parse(bytes).ok()? {
            object::FileKind::Elf32 => describe::<FileHeader32<Endianness>>(bytes),
            object::FileKind::Elf64 => describe::<FileHeader64<Endianness>>(bytes),
            _ => None,
        }
    }
}

/// A dynamic symbol of a shared library: its value and size, and the virtual address of the
/// file's first loadable segment (a mapping's load bias is the address of offset 0 less its page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub value: u64,
    pub size: u64,
    pub first_load: u64,
}

/// Why a symbol was not found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Not a 64-bit ELF file, or its headers are damaged.
    NotElf,
    /// No dynamic symbol table.
    NoDynsym,
    /// The table has no defined symbol of that name.
    NoSymbol,
}

/// The defined dynamic symbol `name` of a 64-bit ELF file, in one pass over `.dynsym`.
pub fn dynamic_symbol(bytes: &[u8], name: &[u8]) -> Result<Symbol, Missing> {
    let header = FileHeader64::<Endianness>::parse(bytes).map_err(|_| Missing::NotElf)?;
    let endian = header.endian().map_err(|_| Missing::NotElf)?;
    let first_load = header
        .program_headers(endian, bytes)
        .map_err(|_| Missing::NotElf)?
        .iter()
        .find(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .map(|ph| ph.p_vaddr(endian))
        .ok_or(Missing::NotElf)?;
    let sections = header
        .sections(endian, bytes)
        .map_err(|_| Missing::NotElf)?;
    let symbols = sections
        .symbols(endian, bytes, elf::SHT_DYNSYM)
        .map_err(|_| Missing::NoDynsym)?;
    if symbols.is_empty() {
        return Err(Missing::NoDynsym);
    }
    let strings = section_bytes(&sections, endian, bytes, symbols.string_section().0);
    symbols
        .symbols()
        .iter()
        .find(|s| s.st_shndx(endian) != elf::SHN_UNDEF && name_is(strings, s.st_name(endian), name))
        .map(|s| Symbol {
            value: s.st_value(endian),
            size: s.st_size(endian),
            first_load,
        })
        .ok_or(Missing::NoSymbol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_test() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn a_dynamic_program_has_an_interpreter() {
        let sh = std::fs::read(std::fs::canonicalize("/bin/sh").unwrap()).unwrap();
        let elf = Elf::parse(&sh).unwrap();
        assert!(elf.class64 && !elf.go);
        assert_eq!(elf.machine, HOST_MACHINE);
        assert!(elf.interpreter.unwrap().contains("ld-linux"));
    }

    #[test]
    fn the_c_librarys_symbols_are_found_by_name() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("libc.so.6");
        let found = dynamic_symbol(&libc, b"socket").unwrap();
        assert!(found.value > 0 && found.size > 0);
        assert_eq!(
            dynamic_symbol(&libc, b"no_such_symbol_here"),
            Err(Missing::NoSymbol)
        );
        // A prefix of a real name is not that name.
        assert_eq!(dynamic_symbol(&libc, b"sock"), Err(Missing::NoSymbol));
        assert_eq!(
            dynamic_symbol(b"\x7fELF\x01\x01", b"x"),
            Err(Missing::NotElf)
        );
    }

    #[test]
    fn garbage_is_not_elf_and_never_panics() {
        assert_eq!(Elf::parse(b""), None);
        assert_eq!(Elf::parse(b"\x7fELF"), None);
        let mut truncated = this_test();
        truncated.truncate(100);
        let _ = Elf::parse(&truncated);
        let _ = dynamic_symbol(&truncated, b"main");
        let mut bogus = vec![0u8; 64];
        bogus[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bogus[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        bogus[0x38] = 5;
        let _ = Elf::parse(&bogus);
    }

    #[test]
    fn mutated_headers_of_a_real_binary_never_panic() {
        let original = std::fs::read("/bin/sh").unwrap();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut bytes = original.clone();
            for _ in 0..4 {
                // Mostly the ELF header and the first program headers, where the offsets are.
                let at = (next() % 0x200) as usize;
                bytes[at] = next() as u8;
            }
            let _ = Elf::parse(&bytes);
            let _ = dynamic_symbol(&bytes, b"main");
        }
    }

    #[test]
    fn names_that_never_end_are_compared_within_bounds() {
        // A string table of one unending name: every symbol points into it.
        let table = vec![b'k'; 1 << 20];
        for offset in 0..100_000u32 {
            assert!(!name_is(&table, offset, b"keepalive_shim_counters"));
        }
        assert!(name_is(b"ab\0cd\0", 3, b"cd"));
        assert!(!name_is(b"ab\0cd", 3, b"cd"));
    }
}
