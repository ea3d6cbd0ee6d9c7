//! The kernel's own type information (BTF, `/sys/kernel/btf/vmlinux`), read for the few offsets
//! the sock_ops program needs to look into a socket through `bpf_skc_to_tcp_sock` (Linux 5.9):
//! the socket's own cgroup (`sk->sk_cgrp_data.cgroup->kn->id`, which no helper gives a sock_ops
//! program: `bpf_sk_cgroup_id` is refused there), and whether a program ever set one of the five
//! options (the raw fields a fresh socket has at zero), so a fresh connection is configured
//! without five `bpf_getsockopt` calls. Each offset comes from the running kernel's types, as
//! libbpf's CO-RE relocations do; a kernel without BTF, or whose types differ from what is
//! expected, gets `None` and the programs fall back to what every kernel has.
//!
//! The file is the kernel's, but it is parsed as untrusted input all the same: bounded in size,
//! every offset checked, nothing followed that does not fit.

use std::io::Read;

/// Where the running kernel keeps what the programs read, as offsets in `struct tcp_sock` (and
/// the structures its pointers lead to), each small enough for an instruction's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The socket's cgroup: `struct tcp_sock` → `sk_cgrp_data.cgroup` (a pointer), `struct
    /// cgroup` → `kn` (a pointer), `struct kernfs_node` → `id` (u64, the cgroup's ID: its
    /// directory's inode number on cgroup v2). `None`: counted by the attached cgroup alone.
    pub cgroup: Option<CgroupPath>,
    /// The raw fields of the five options. `None`: read back with `bpf_getsockopt`.
    pub raw: Option<RawOptions>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupPath {
    pub sk_cgroup: i16,
    pub cgroup_kn: i16,
    pub kn_id: i16,
}

/// Offsets in `struct tcp_sock` of what a fresh socket has at zero: `sk_flags` (8 bytes, bit
/// `keepopen` is `SOCK_KEEPOPEN`), `keepalive_time` and `keepalive_intvl` (4 bytes, jiffies,
/// 0 until set), `keepalive_probes` (1 byte), `icsk_user_timeout` (4 bytes, ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOptions {
    pub sk_flags: i16,
    pub keepopen: u8,
    pub keepalive_time: i16,
    pub keepalive_intvl: i16,
    pub keepalive_probes: i16,
    pub user_timeout: i16,
}

impl Layout {
    /// Neither: what a kernel without BTF gets.
    pub const NONE: Layout = Layout {
        cgroup: None,
        raw: None,
    };
}

/// The largest type file read (vmlinux's is a few MiB).
const MAX_SIZE: u64 = 64 << 20;

/// The running kernel's layout, or [`Layout::NONE`] when it has no BTF or its types are not
/// what is expected.
pub fn kernel_layout() -> Layout {
    let Ok(file) = std::fs::File::open("/sys/kernel/btf/vmlinux") else {
        return Layout::NONE;
    };
    let mut data = Vec::new();
    if file.take(MAX_SIZE).read_to_end(&mut data).is_err() {
        return Layout::NONE;
    }
    match Btf::parse(&data) {
        Some(btf) => btf.layout(),
        None => Layout::NONE,
    }
}

// Kinds (include/uapi/linux/btf.h).
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

#[derive(Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// In bits; `None` for a bitfield.
    bit_offset: Option<u32>,
}

#[derive(Debug)]
struct Type {
    kind: u32,
    name: u32,
    /// Size for INT, STRUCT, UNION, ENUM; the referenced type for PTR, TYPEDEF and modifiers.
    size_or_type: u32,
    members: Vec<Member>,
    /// ENUM: (name, value).
    values: Vec<(u32, i64)>,
}

struct Btf<'a> {
    strings: &'a [u8],
    /// Index = type ID; 0 is `void`.
    types: Vec<Type>,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(d: &'a [u8]) -> Option<Btf<'a>> {
        if d.get(0..2)? != 0xeb9f_u16.to_ne_bytes() {
            return None;
        }
        let hdr_len = u32_at(d, 4)? as usize;
        let (type_off, type_len) = (u32_at(d, 8)? as usize, u32_at(d, 12)? as usize);
        let (str_off, str_len) = (u32_at(d, 16)? as usize, u32_at(d, 20)? as usize);
        let types_at = hdr_len.checked_add(type_off)?;
        let type_data = d.get(types_at..types_at.checked_add(type_len)?)?;
        let strings_at = hdr_len.checked_add(str_off)?;
        let strings = d.get(strings_at..strings_at.checked_add(str_len)?)?;
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            size_or_type: 0,
            members: Vec::new(),
            values: Vec::new(),
        }];
        let mut p = 0usize;
        while p < type_data.len() {
            let name = u32_at(type_data, p)?;
            let info = u32_at(type_data, p + 4)?;
            let size_or_type = u32_at(type_data, p + 8)?;
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 != 0;
            let mut t = Type {
                kind,
                name,
                size_or_type,
                members: Vec::new(),
                values: Vec::new(),
            };
            match kind {
                INT | VAR | DECL_TAG => p += 4,
                ARRAY => p += 12,
                STRUCT | UNION => {
                    for _ in 0..vlen {
                        let (name, ty, off) = (
                            u32_at(type_data, p)?,
                            u32_at(type_data, p + 4)?,
                            u32_at(type_data, p + 8)?,
                        );
                        p += 12;
                        let bit_offset = match kind_flag {
                            true if off >> 24 != 0 => None,
                            true => Some(off & 0xff_ffff),
                            false => Some(off),
                        };
                        t.members.push(Member {
                            name,
                            ty,
                            bit_offset,
                        });
                    }
                }
                ENUM => {
                    for _ in 0..vlen {
                        let v = u32_at(type_data, p + 4)? as i32;
                        t.values.push((u32_at(type_data, p)?, i64::from(v)));
                        p += 8;
                    }
                }
                FUNC_PROTO => p += 8 * vlen,
                DATASEC | ENUM64 => p += 12 * vlen,
                _ => {}
            }
            types.push(t);
        }
        Some(Btf { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Through typedefs and modifiers.
    fn resolve(&self, mut id: u32) -> Option<(u32, &Type)> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = t.size_or_type,
                _ => return Some((id, t)),
            }
        }
        None
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            self.ty(id)
                .is_some_and(|t| t.kind == STRUCT && self.name(t.name) == name.as_bytes())
        })
    }

    /// Member `name` of struct or union `id` (looking into its anonymous members): its byte
    /// offset and its type, resolved.
    fn member(&self, id: u32, name: &str, depth: usize) -> Option<(u32, u32)> {
        let (_, t) = self.resolve(id)?;
        if !matches!(t.kind, STRUCT | UNION) || depth > 8 {
            return None;
        }
        for m in &t.members {
            let Some(bits) = m.bit_offset else {
                continue;
            };
            if self.name(m.name) == name.as_bytes() {
                return (bits % 8 == 0).then_some((bits / 8, self.resolve(m.ty)?.0));
            }
            if m.name == 0
                && let Some((off, ty)) = self.member(m.ty, name, depth + 1)
            {
                return Some((bits / 8 + off, ty));
            }
        }
        None
    }

    /// The byte offset and type of `path` (member names) from struct `root`.
    fn path(&self, root: &str, path: &[&str]) -> Option<(u32, u32)> {
        let mut id = self.struct_named(root)?;
        let mut off = 0;
        for name in path {
            let (o, ty) = self.member(id, name, 0)?;
            off += o;
            id = ty;
        }
        Some((off, id))
    }

    fn kind(&self, id: u32) -> u32 {
        self.ty(id).map_or(0, |t| t.kind)
    }

    /// The size of an INT or ENUM type.
    fn scalar_size(&self, id: u32) -> Option<u32> {
        let t = self.ty(id)?;
        matches!(t.kind, INT | ENUM).then_some(t.size_or_type)
    }

    fn enum_value(&self, name: &str) -> Option<i64> {
        self.types
            .iter()
            .filter(|t| t.kind == ENUM)
            .flat_map(|t| &t.values)
            .find(|(n, _)| self.name(*n) == name.as_bytes())
            .map(|&(_, v)| v)
    }

    /// An offset of a scalar of `size` bytes at `path` in `root`, as an instruction's offset.
    fn scalar(&self, root: &str, path: &[&str], size: u32) -> Option<i16> {
        let (off, ty) = self.path(root, path)?;
        (self.scalar_size(ty)? == size).then_some(())?;
        i16::try_from(off).ok()
    }

    /// An offset of a pointer at `path` in `root`.
    fn pointer(&self, root: &str, path: &[&str]) -> Option<i16> {
        let (off, ty) = self.path(root, path)?;
        (self.kind(ty) == PTR).then_some(())?;
        i16::try_from(off).ok()
    }

    fn layout(&self) -> Layout {
        const SK: [&str; 3] = ["inet_conn", "icsk_inet", "sk"];
        fn in_sock<'a>(field: &[&'a str]) -> Vec<&'a str> {
            SK.iter().chain(field).copied().collect()
        }
        let cgroup = (|| {
            Some(CgroupPath {
                sk_cgroup: self.pointer("tcp_sock", &in_sock(&["sk_cgrp_data", "cgroup"]))?,
                cgroup_kn: self.pointer("cgroup", &["kn"])?,
                kn_id: self.scalar("kernfs_node", &["id"], 8)?,
            })
        })();
        let raw = (|| {
            let keepopen = u8::try_from(self.enum_value("SOCK_KEEPOPEN")?).ok()?;
            (keepopen < 31).then_some(())?;
            Some(RawOptions {
                // `sk_flags` is `__sk_common.skc_flags`.
                sk_flags: self.scalar("tcp_sock", &in_sock(&["__sk_common", "skc_flags"]), 8)?,
                keepopen,
                keepalive_time: self.scalar("tcp_sock", &["keepalive_time"], 4)?,
                keepalive_intvl: self.scalar("tcp_sock", &["keepalive_intvl"], 4)?,
                keepalive_probes: self.scalar("tcp_sock", &["keepalive_probes"], 1)?,
                user_timeout: self.scalar("tcp_sock", &["inet_conn", "icsk_user_timeout"], 4)?,
            })
        })();
        Layout { cgroup, raw }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small BTF blob: `struct inner { int a; long b; }`, `struct outer { int x; struct inner
    /// in; union { int y; int *p; }; }` and an enum.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0long\0inner\0a\0b\0outer\0x\0in\0y\0p\0e\0E1\0".to_vec();
        let at = |s: &str| {
            let needle = format!("\0{s}\0");
            (strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap()
                + 1) as u32
        };
        let mut t = Vec::new();
        let mut word = |w: u32| t.extend_from_slice(&w.to_ne_bytes());
        // 1: int (4 bytes)
        word(at("int"));
        word(INT << 24);
        word(4);
        word(32);
        // 2: long (8 bytes)
        word(at("long"));
        word(INT << 24);
        word(8);
        word(64);
        // 3: struct inner { int a @0; long b @8 }
        word(at("inner"));
        word(STRUCT << 24 | 2);
        word(16);
        for (n, ty, off) in [("a", 1, 0), ("b", 2, 64)] {
            word(at(n));
            word(ty);
            word(off);
        }
        // 4: int *
        word(0);
        word(PTR << 24);
        word(1);
        // 5: anonymous union { int y; int *p; }
        word(0);
        word(UNION << 24 | 2);
        word(8);
        for (n, ty) in [("y", 1), ("p", 4)] {
            word(at(n));
            word(ty);
            word(0);
        }
        // 6: struct outer { int x @0; struct inner in @64; union @192 }
        word(at("outer"));
        word(STRUCT << 24 | 3);
        word(32);
        for (n, ty, off) in [(0, 1, 0), (1, 3, 64), (2, 5, 192)] {
            word(match n {
                0 => at("x"),
                1 => at("in"),
                _ => 0,
            });
            word(ty);
            word(off);
        }
        // 7: enum e { E1 = 3 }
        word(at("e"));
        word(ENUM << 24 | 1);
        word(4);
        word(at("E1"));
        word(3);
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [24, 0, t.len() as u32, t.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn members_are_found_through_nested_and_anonymous_structures() {
        let data = blob();
        let btf = Btf::parse(&data).expect("parses");
        assert_eq!(btf.scalar("outer", &["in", "b"], 8), Some(16));
        assert_eq!(
            btf.scalar("outer", &["in", "b"], 4),
            None,
            "the size is checked"
        );
        assert_eq!(btf.pointer("outer", &["p"]), Some(24));
        assert_eq!(btf.scalar("outer", &["y"], 4), Some(24));
        assert_eq!(btf.pointer("outer", &["y"]), None, "not a pointer");
        assert_eq!(btf.enum_value("E1"), Some(3));
        assert_eq!(btf.scalar("outer", &["nothing"], 4), None);
    }

    #[test]
    fn damaged_data_is_refused_without_a_panic() {
        let data = blob();
        for cut in [0, 3, 10, 24, 40, data.len() - 1] {
            if let Some(btf) = Btf::parse(&data[..cut]) {
                let _ = btf.layout();
            }
        }
        let mut bad = data.clone();
        bad[12] = 0xff; // type_len beyond the file
        assert!(Btf::parse(&bad).is_none());
        assert_eq!(Btf::parse(&data).unwrap().layout(), Layout::NONE);
    }

    #[test]
    fn this_kernels_layout_when_it_has_btf() {
        // Whatever this machine's kernel is, reading it never fails loudly; on a kernel with
        // BTF (the tests' machines) every offset is found.
        let layout = kernel_layout();
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            assert!(
                layout.cgroup.is_some() && layout.raw.is_some(),
                "{layout:?}"
            );
        }
    }
}
