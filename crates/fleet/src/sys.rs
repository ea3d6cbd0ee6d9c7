//! The `bpf()` system call, for what fleet mode needs and no more: load a program (with the
//! verifier's log on refusal), make maps (an array for the settings, a socket storage with the
//! smallest BTF the kernel asks of one), attach with `BPF_LINK_CREATE`, replace with
//! `BPF_LINK_UPDATE`, detach, pin, and look around (`BPF_PROG_QUERY`, the ID iterators,
//! `BPF_OBJ_GET_INFO_BY_FD`). Each command's attribute is a `#[repr(C)]` struct laid out as in
//! `union bpf_attr` (include/uapi/linux/bpf.h); the kernel accepts a prefix of the union and
//! zero for everything after it.

use super::insn::{Insn, bytes};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

// Commands (enum bpf_cmd).
const MAP_CREATE: i32 = 0;
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const MAP_DELETE_ELEM: i32 = 3;
const MAP_GET_NEXT_KEY: i32 = 4;
const PROG_LOAD: i32 = 5;
const OBJ_PIN: i32 = 6;
const OBJ_GET: i32 = 7;
const PROG_DETACH: i32 = 9;
const PROG_GET_FD_BY_ID: i32 = 13;
const MAP_GET_FD_BY_ID: i32 = 14;
const OBJ_GET_INFO_BY_FD: i32 = 15;
const PROG_QUERY: i32 = 16;
const BTF_LOAD: i32 = 18;
const MAP_FREEZE: i32 = 22;
const LINK_CREATE: i32 = 28;
const LINK_UPDATE: i32 = 29;
const LINK_GET_FD_BY_ID: i32 = 30;
const LINK_GET_NEXT_ID: i32 = 31;
const LINK_DETACH: i32 = 34;

/// Program types and attach types this tool uses.
pub const PROG_TYPE_SOCK_OPS: u32 = 13;
pub const PROG_TYPE_CGROUP_SOCKOPT: u32 = 25;
pub const ATTACH_CGROUP_SOCK_OPS: u32 = 3;
pub const ATTACH_CGROUP_SETSOCKOPT: u32 = 22;

const MAP_TYPE_ARRAY: u32 = 2;
pub const MAP_TYPE_PERCPU_HASH: u32 = 5;
const MAP_TYPE_SK_STORAGE: u32 = 24;
const F_NO_PREALLOC: u32 = 1;
const F_RDONLY_PROG: u32 = 1 << 7;
const F_REPLACE: u32 = 1 << 2;
pub const LINK_TYPE_CGROUP: u32 = 3;

/// The kernel's name limit (`BPF_OBJ_NAME_LEN`, with the NUL).
const NAME_LEN: usize = 16;

fn name(text: &str) -> [u8; NAME_LEN] {
    let mut out = [0; NAME_LEN];
    let n = text.len().min(NAME_LEN - 1);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// `bpf(cmd, attr, sizeof attr)`: a new descriptor or 0 on success.
fn bpf<T>(cmd: i32, attr: &mut T) -> io::Result<i32> {
    loop {
        // SAFETY: attr is a live, initialised #[repr(C)] value of the layout the kernel expects
        // for `cmd` (a prefix of union bpf_attr), and its size is passed with it; any pointer
        // inside it points to memory that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T as *mut libc::c_void,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if rc >= 0 {
            return Ok(rc as i32);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

fn fd(raw: i32) -> OwnedFd {
    // SAFETY: raw is a descriptor the kernel just returned to this process, owned by no one else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// A refusal to load, with the verifier's log.
#[derive(Debug)]
pub struct LoadError {
    pub error: io::Error,
    pub log: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the kernel refused the program: {}", self.error)?;
        if !self.log.trim().is_empty() {
            write!(f, "\nverifier log:\n{}", self.log.trim_end())?;
        }
        Ok(())
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// What a loaded program reports of itself.
pub struct Loaded {
    pub fd: OwnedFd,
    /// The verifier's statistics line ("processed N insns …"), when asked for.
    pub stats: Option<String>,
}

/// Loads `insns` as a program of `prog_type` named `name`. On refusal, loads it again with the
/// verifier's log on, so the error carries the log. `stats`: ask the verifier for its
/// statistics line (log level 4) even on success.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    prog_name: &str,
    insns: &[Insn],
    stats: bool,
) -> Result<Loaded, LoadError> {
    let code = bytes(insns);
    // The programs are the project's (MIT OR Apache-2.0); MIT lets them be offered under the
    // GPL too, and the kernel lets only a GPL-compatible program read its structures through
    // BTF (the socket's cgroup, and its raw option fields: program/sock_ops.rs).
    let license = c"Dual MIT/GPL";
    let attempt = |log_level: u32, log: &mut Vec<u8>| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: code.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size: if log_level == 0 { 0 } else { log.len() as u32 },
            log_buf: if log_level == 0 {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name(prog_name),
            expected_attach_type,
            ..Default::default()
        };
        bpf(PROG_LOAD, &mut attr)
    };
    let text = |log: &[u8]| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        String::from_utf8_lossy(&log[..end]).into_owned()
    };
    let mut log = vec![0u8; if stats { 64 * 1024 } else { 0 }];
    match attempt(if stats { 4 } else { 0 }, &mut log) {
        Ok(raw) => {
            let stats = stats.then(|| {
                text(&log)
                    .lines()
                    .filter(|l| l.starts_with("processed"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            Ok(Loaded { fd: fd(raw), stats })
        }
        Err(error) => {
            let mut log = vec![0u8; 4 << 20];
            let _ = attempt(1, &mut log);
            Err(LoadError {
                error,
                log: text(&log),
            })
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; NAME_LEN],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct FdAttr {
    fd: u32,
}

/// A one-entry array holding `value` (zero-padded to `size`), read-only to programs and frozen
/// (no one can change it afterwards): the settings a program was made from.
pub fn info_map(map_name: &str, value: &[u8], size: usize) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: size as u32,
        max_entries: 1,
        map_flags: F_RDONLY_PROG,
        map_name: name(map_name),
        ..Default::default()
    };
    let map = fd(bpf(MAP_CREATE, &mut attr)?);
    let mut padded = value.to_vec();
    padded.resize(size, 0);
    let key = 0u32;
    let mut elem = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: padded.as_ptr() as u64,
        ..Default::default()
    };
    bpf(MAP_UPDATE_ELEM, &mut elem)?;
    let mut freeze = FdAttr {
        fd: map.as_raw_fd() as u32,
    };
    bpf(MAP_FREEZE, &mut freeze)?;
    Ok(map)
}

/// The value of entry 0 of the array map `map`, `size` bytes.
pub fn map_lookup(map: RawFd, size: usize) -> io::Result<Vec<u8>> {
    let key = 0u32;
    let mut value = vec![0u8; size];
    let mut elem = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(MAP_LOOKUP_ELEM, &mut elem)?;
    Ok(value)
}

/// The CPUs a per-CPU map holds a value for (`/sys/devices/system/cpu/possible`, as
/// `libbpf_num_possible_cpus`): the highest listed, plus one.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("possible CPUs: {text:?}"),
        )
    };
    let mut most = None;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next().ok_or_else(bad)?;
        let n: usize = last.parse().map_err(|_| bad())?;
        most = most.max(Some(n));
    }
    match most {
        Some(n) if n < 65536 => Ok(n + 1),
        _ => Err(bad()),
    }
}

/// A per-CPU hash from a u64 key to `size` bytes (the programs' counters by cgroup), at most
/// `entries` keys, allocated as they come (`BPF_F_NO_PREALLOC`), with `first` in it (zeroed).
pub fn counts_map(map_name: &str, size: usize, entries: u32, first: u64) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: MAP_TYPE_PERCPU_HASH,
        key_size: 8,
        value_size: size as u32,
        max_entries: entries,
        map_flags: F_NO_PREALLOC,
        map_name: name(map_name),
        ..Default::default()
    };
    let map = fd(bpf(MAP_CREATE, &mut attr)?);
    let zero = vec![0u8; size * possible_cpus()?];
    map_update(map.as_raw_fd(), first, &zero)?;
    Ok(map)
}

/// What a map is (`struct bpf_map_info`: type 0, key_size 8, value_size 12, max_entries 16,
/// map_flags 20, name 24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub name: String,
}

pub fn map_info(map: RawFd) -> io::Result<MapInfo> {
    let mut buf = vec![0u8; 88];
    info(map, &mut buf)?;
    let raw = &buf[24..24 + NAME_LEN];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    Ok(MapInfo {
        map_type: u32_at(&buf, 0),
        key_size: u32_at(&buf, 8),
        value_size: u32_at(&buf, 12),
        max_entries: u32_at(&buf, 16),
        name: String::from_utf8_lossy(&raw[..end]).into_owned(),
    })
}

/// The key after `key` in a hash map keyed by u64 (the first with `None`); `None` at the end.
pub fn map_next_key(map: RawFd, key: Option<u64>) -> io::Result<Option<u64>> {
    let mut next = 0u64;
    let mut elem = MapElemAttr {
        map_fd: map as u32,
        key: key.as_ref().map_or(0, |k| k as *const u64 as u64),
        value: &mut next as *mut u64 as u64,
        ..Default::default()
    };
    match bpf(MAP_GET_NEXT_KEY, &mut elem) {
        Ok(_) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The value at u64 `key` (`size` bytes: for a per-CPU map, every CPU's, one after another);
/// `None` when there is none.
pub fn map_lookup_key(map: RawFd, key: u64, size: usize) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; size];
    let mut elem = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u64 as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(MAP_LOOKUP_ELEM, &mut elem) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets u64 `key` to `value` (every CPU's, for a per-CPU map).
pub fn map_update(map: RawFd, key: u64, value: &[u8]) -> io::Result<()> {
    let mut elem = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u64 as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf(MAP_UPDATE_ELEM, &mut elem).map(drop)
}

/// Removes u64 `key`.
pub fn map_delete(map: RawFd, key: u64) -> io::Result<()> {
    let mut elem = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u64 as u64,
        ..Default::default()
    };
    bpf(MAP_DELETE_ELEM, &mut elem).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
}

/// The smallest BTF a socket-storage map accepts: one type, `int` (id 1), for key and value.
fn int_btf() -> Vec<u8> {
    let strings = b"\0int\0";
    let mut types = Vec::new();
    // struct btf_type { name_off, info (kind INT = 1 << 24), size } + the INT encoding:
    // signed (1 << 24), offset 0, 32 bits.
    for word in [1u32, 1 << 24, 4, (1 << 24) | 32] {
        types.extend_from_slice(&word.to_ne_bytes());
    }
    let mut btf = Vec::new();
    btf.extend_from_slice(&0xeb9f_u16.to_ne_bytes()); // magic
    btf.push(1); // version
    btf.push(0); // flags
    btf.extend_from_slice(&24u32.to_ne_bytes()); // hdr_len
    btf.extend_from_slice(&0u32.to_ne_bytes()); // type_off
    btf.extend_from_slice(&(types.len() as u32).to_ne_bytes()); // type_len
    btf.extend_from_slice(&(types.len() as u32).to_ne_bytes()); // str_off
    btf.extend_from_slice(&(strings.len() as u32).to_ne_bytes()); // str_len
    btf.extend_from_slice(&types);
    btf.extend_from_slice(strings);
    btf
}

/// A socket-storage map of one `int` per socket (`BPF_MAP_TYPE_SK_STORAGE`, Linux 5.2).
pub fn storage_map(map_name: &str) -> io::Result<OwnedFd> {
    let btf = int_btf();
    let mut load = BtfLoadAttr {
        btf: btf.as_ptr() as u64,
        btf_size: btf.len() as u32,
        ..Default::default()
    };
    let btf_fd = fd(bpf(BTF_LOAD, &mut load)?);
    let mut attr = MapCreateAttr {
        map_type: MAP_TYPE_SK_STORAGE,
        key_size: 4,
        value_size: 4,
        max_entries: 0,
        map_flags: F_NO_PREALLOC,
        map_name: name(map_name),
        btf_fd: btf_fd.as_raw_fd() as u32,
        btf_key_type_id: 1,
        btf_value_type_id: 1,
        ..Default::default()
    };
    Ok(fd(bpf(MAP_CREATE, &mut attr)?))
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Attaches `prog` to the cgroup open as `cgroup` with a link (Linux 5.7): the program stays
/// attached while the link is open or pinned, and the kernel stacks it with others.
pub fn link_create(prog: RawFd, cgroup: RawFd, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog as u32,
        target_fd: cgroup as u32,
        attach_type,
        flags: 0,
    };
    Ok(fd(bpf(LINK_CREATE, &mut attr)?))
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Replaces the program of `link` with `new`, atomically, if it still runs `old`.
pub fn link_update(link: RawFd, new: RawFd, old: RawFd) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link as u32,
        new_prog_fd: new as u32,
        flags: F_REPLACE,
        old_prog_fd: old as u32,
    };
    bpf(LINK_UPDATE, &mut attr).map(drop)
}

/// Detaches `link` (Linux 5.9): it stays open but attached to nothing.
pub fn link_detach(link: RawFd) -> io::Result<()> {
    let mut attr = FdAttr { fd: link as u32 };
    bpf(LINK_DETACH, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct ProgDetachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Detaches a program attached without a link (`BPF_PROG_ATTACH`).
pub fn prog_detach(prog: RawFd, cgroup: RawFd, attach_type: u32) -> io::Result<()> {
    let mut attr = ProgDetachAttr {
        target_fd: cgroup as u32,
        attach_bpf_fd: prog as u32,
        attach_type,
        attach_flags: 0,
    };
    bpf(PROG_DETACH, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn c_path(path: &OsStr) -> io::Result<CString> {
    CString::new(path.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Pins `obj` at `path` (on a bpf file system).
pub fn obj_pin(obj: RawFd, path: &OsStr) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: obj as u32,
        file_flags: 0,
    };
    bpf(OBJ_PIN, &mut attr).map(drop)
}

/// Opens what is pinned at `path`.
pub fn obj_get(path: &OsStr) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..Default::default()
    };
    Ok(fd(bpf(OBJ_GET, &mut attr)?))
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// The IDs of the programs attached to the cgroup `cgroup` itself for `attach_type`.
pub fn prog_query(cgroup: RawFd, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = ProgQueryAttr {
        target_fd: cgroup as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn next_ids(cmd: i32) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut attr = IdAttr::default();
    while bpf(cmd, &mut attr).is_ok() {
        ids.push(attr.next_id);
        attr.id = attr.next_id;
    }
    ids
}

/// Every link's ID on the machine.
pub fn link_ids() -> Vec<u32> {
    next_ids(LINK_GET_NEXT_ID)
}

fn by_id(cmd: i32, id: u32) -> io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    Ok(fd(bpf(cmd, &mut attr)?))
}

pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    by_id(PROG_GET_FD_BY_ID, id)
}

pub fn link_by_id(id: u32) -> io::Result<OwnedFd> {
    by_id(LINK_GET_FD_BY_ID, id)
}

pub fn map_by_id(id: u32) -> io::Result<OwnedFd> {
    by_id(MAP_GET_FD_BY_ID, id)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn info(obj: RawFd, buf: &mut [u8]) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: obj as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}

/// What `struct bpf_prog_info` says of a program.
#[derive(Clone, Debug)]
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
    /// Instructions after the verifier's rewriting.
    pub xlated_insns: u32,
    pub map_ids: Vec<u32>,
}

pub fn prog_info(prog: RawFd) -> io::Result<ProgInfo> {
    // Offsets in struct bpf_prog_info: id 4, xlated_prog_len 20, nr_map_ids 52,
    // map_ids 56, name 64.
    let mut map_ids = vec![0u32; 16];
    let mut buf = vec![0u8; 232];
    buf[52..56].copy_from_slice(&(map_ids.len() as u32).to_ne_bytes());
    buf[56..64].copy_from_slice(&(map_ids.as_mut_ptr() as u64).to_ne_bytes());
    info(prog, &mut buf)?;
    let n = (u32_at(&buf, 52) as usize).min(map_ids.len());
    map_ids.truncate(n);
    let raw_name = &buf[64..64 + NAME_LEN];
    let end = raw_name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    Ok(ProgInfo {
        id: u32_at(&buf, 4),
        xlated_insns: u32_at(&buf, 20) / 8,
        name: String::from_utf8_lossy(&raw_name[..end]).into_owned(),
        map_ids,
    })
}

/// What `struct bpf_link_info` says of a link.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// For a cgroup link: the cgroup's ID (its directory's inode number), 0 once detached.
    pub cgroup_id: u64,
    pub attach_type: u32,
}

pub fn link_info(link: RawFd) -> io::Result<LinkInfo> {
    let mut buf = vec![0u8; 48];
    info(link, &mut buf)?;
    Ok(LinkInfo {
        link_type: u32_at(&buf, 0),
        id: u32_at(&buf, 4),
        prog_id: u32_at(&buf, 8),
        cgroup_id: u64_at(&buf, 16),
        attach_type: u32_at(&buf, 24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_layouts_match_union_bpf_attr() {
        // Offsets from include/uapi/linux/bpf.h, as a C compiler lays them out.
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, btf_value_type_id), 56);
        assert_eq!(std::mem::offset_of!(MapElemAttr, value), 16);
        assert_eq!(std::mem::offset_of!(ProgQueryAttr, prog_cnt), 24);
        assert_eq!(std::mem::offset_of!(BtfLoadAttr, btf_size), 16);
    }

    #[test]
    fn names_are_cut_to_the_kernels_limit() {
        assert_eq!(&name("kas_setsockopt")[..15], b"kas_setsockopt\0");
        assert_eq!(name("a_name_longer_than_sixteen")[15], 0);
    }
}
