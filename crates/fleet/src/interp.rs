//! A small BPF interpreter for the unit tests: it runs the generated programs on a model socket
//! (options, socket storage, the `bpf_sock` fields, the callback flags, the kernel's `struct
//! tcp_sock` as far as the programs read it through `bpf_skc_to_tcp_sock`, its cgroup, the
//! per-cgroup counts map) with model helpers (`bpf_getsockopt`, `bpf_setsockopt`,
//! `bpf_sk_storage_get`, `bpf_map_lookup_elem` and `bpf_map_update_elem` of the counts map,
//! `bpf_sock_ops_cb_flags_set`, `bpf_skc_to_tcp_sock`, `bpf_get_current_cgroup_id`), and the
//! atomic add, so every branch of the generators is checked for
//! what it does, not only for how it looks. Only the instructions the generators emit are
//! known; anything else panics. The kernel's verifier is the other half of the proof, in
//! `cli/tests/fleet.rs`.

use super::btf::{CgroupPath, Layout, RawOptions};
use super::insn::*;
use super::program::{
    COUNTERS, HELPER_GET_CURRENT_CGROUP_ID, HELPER_GETSOCKOPT, HELPER_MAP_LOOKUP_ELEM,
    HELPER_MAP_UPDATE_ELEM, HELPER_SETSOCKOPT, HELPER_SK_STORAGE_GET, HELPER_SKC_TO_TCP_SOCK,
    HELPER_SOCK_OPS_CB_FLAGS_SET, OTHER_KEY, sock, sock_ops_ctx, sockopt_ctx,
};
use keepalive_shim_policy::decide::KERNEL_DEFAULTS;
use keepalive_shim_policy::options::{
    COUNT, IDLE, INTERVAL, KEEPALIVE, N, USER_TIMEOUT, option_index,
};
use keepalive_shim_policy::rules::Destination;

/// The layout the tests give the programs (this era's x86_64 offsets; any would do).
pub const LAYOUT: Layout = Layout {
    cgroup: Some(CgroupPath {
        sk_cgroup: 672,
        cgroup_kn: 256,
        kn_id: 96,
    }),
    raw: Some(RawOptions {
        sk_flags: 96,
        keepopen: 3,
        keepalive_time: 2220,
        keepalive_intvl: 2224,
        keepalive_probes: 1917,
        user_timeout: 1292,
    }),
};
/// The kernel's HZ in the model: `keepalive_time` and `keepalive_intvl` are jiffies.
const HZ: i32 = 250;

/// A socket as the helpers see it.
#[derive(Clone, Debug)]
pub struct Sock {
    /// The options, as `bpf_getsockopt` reads them.
    pub opts: [i32; N],
    /// `bpf_getsockopt` calls made.
    pub gets: usize,
    /// `bpf_setsockopt` calls made, in order: option index and value.
    pub sets: Vec<(usize, i32)>,
    /// The socket-storage byte, once created.
    pub mark: Option<u8>,
    /// False: `bpf_getsockopt` fails for these options (kernels before 6.1), zeroing the buffer.
    pub readable: bool,
    /// 0: from the destination (IPv4 when it is IPv4-mapped).
    pub family: i32,
    pub ty: i32,
    pub protocol: i32,
    /// `optlen` in the setsockopt context after the program ran.
    pub optlen_out: Option<i32>,
    /// The counts map (the attachment's, here one socket's share of it): cgroup ID and its
    /// counters, [`OTHER_KEY`] first, as `fleet attach` makes it.
    pub counts: Vec<(u64, [u64; COUNTERS])>,
    /// How many entries the counts map takes, [`OTHER_KEY`]'s included.
    pub capacity: usize,
    /// `bpf_sock_ops_cb_flags`, as the last `bpf_sock_ops_cb_flags_set` left it.
    pub cb_flags: u32,
    /// The sock_ops callback's `args`.
    pub args: [u32; 4],
    /// The options someone set on it (bit `i`): the raw fields of the others are 0.
    pub touched: u8,
    /// `bpf_sock`'s `state`: `TCP_CLOSE` until it connects or is accepted.
    pub state: i32,
    /// The socket's cgroup (its `sk_cgrp_data`), and the calling process's.
    pub cgroup: u64,
    pub current_cgroup: u64,
    /// What the programs are told of the kernel's layout ([`LAYOUT`] unless a test says).
    pub layout: Layout,
}

impl Sock {
    pub fn new(opts: [i32; N]) -> Sock {
        Sock {
            opts,
            gets: 0,
            sets: Vec::new(),
            mark: None,
            readable: true,
            family: 0,
            ty: libc::SOCK_STREAM,
            protocol: libc::IPPROTO_TCP,
            optlen_out: None,
            counts: vec![(OTHER_KEY, [0; COUNTERS])],
            capacity: 16,
            cb_flags: 0,
            args: [0; 4],
            touched: (0..N)
                .filter(|&i| opts[i] != KERNEL_DEFAULTS[i])
                .fold(0, |m, i| m | 1 << i),
            state: 7,
            cgroup: 1000,
            current_cgroup: 1000,
            layout: LAYOUT,
        }
    }

    /// The counters of cgroup `id` (zero when it has none).
    pub fn counts_of(&self, id: u64) -> [u64; COUNTERS] {
        self.counts
            .iter()
            .find(|(k, _)| *k == id)
            .map_or([0; COUNTERS], |(_, c)| *c)
    }

    /// What a load of `size` bytes at `off` in its `struct tcp_sock` reads, by the layout.
    fn tcp_sock(&self, off: i16, size: usize) -> u64 {
        let touched = |i: usize| self.touched & (1 << i) != 0;
        if let Some(c) = self.layout.cgroup
            && off == c.sk_cgroup
        {
            assert_eq!(size, 8);
            return ptr(MEM_CGROUP, 0);
        }
        let raw = self
            .layout
            .raw
            .expect("a raw field read with a layout that has them");
        match off {
            o if o == raw.sk_flags && size == 8 => {
                u64::from(self.opts[KEEPALIVE] != 0) << raw.keepopen
            }
            o if o == raw.keepalive_time && size == 4 && touched(IDLE) => {
                (self.opts[IDLE] * HZ) as u64
            }
            o if o == raw.keepalive_intvl && size == 4 && touched(INTERVAL) => {
                (self.opts[INTERVAL] * HZ) as u64
            }
            o if o == raw.keepalive_probes && size == 1 && touched(COUNT) => {
                self.opts[COUNT] as u64
            }
            o if o == raw.user_timeout && size == 4 => self.opts[USER_TIMEOUT] as u32 as u64,
            o if [
                raw.keepalive_time,
                raw.keepalive_intvl,
                raw.keepalive_probes,
            ]
            .contains(&o) =>
            {
                0
            }
            _ => panic!("a load of {size} bytes at {off} in tcp_sock: no such field"),
        }
    }
}

const MEM_CTX: u64 = 1;
const MEM_STACK: u64 = 2;
const MEM_OPTVAL: u64 = 3;
const MEM_STORAGE: u64 = 4;
const MEM_SK: u64 = 5;
const MEM_MAP: u64 = 6;
const MEM_COUNTS: u64 = 7;
const MEM_TCP_SOCK: u64 = 8;
const MEM_CGROUP: u64 = 9;
const MEM_KN: u64 = 10;
const MEM_STACK_SIZE: usize = 512;

fn ptr(region: u64, off: usize) -> u64 {
    (region << 32) | off as u64
}

/// One run's memory.
pub struct Run<'s> {
    ctx: Vec<u8>,
    stack: Vec<u8>,
    optval: Vec<u8>,
    sk: Vec<u8>,
    sock: &'s mut Sock,
}

impl<'s> Run<'s> {
    fn new(sock: &'s mut Sock) -> Run<'s> {
        Run {
            ctx: vec![0; 256],
            stack: vec![0; MEM_STACK_SIZE],
            optval: Vec::new(),
            sk: vec![0; 80],
            sock,
        }
    }

    fn put(buf: &mut [u8], off: i16, bytes: &[u8]) {
        let off = off as usize;
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// Runs a sock_ops program for callback `op` on a connection to `dest` (no address for an
    /// accepted connection); returns `R0`.
    pub fn sock_ops(prog: &[Insn], op: i32, dest: Option<Destination>, sock: &mut Sock) -> i32 {
        let mut run = Run::new(sock);
        let d = dest.unwrap_or(Destination {
            ip: [0; 16],
            port: 0,
        });
        let family = match run.sock.family {
            0 if d.ipv4().is_some() => libc::AF_INET,
            0 => libc::AF_INET6,
            f => f,
        };
        use sock_ops_ctx::*;
        Run::put(&mut run.ctx, OP, &(op as u32).to_ne_bytes());
        Run::put(&mut run.ctx, FAMILY, &(family as u32).to_ne_bytes());
        Run::put(&mut run.ctx, REMOTE_IP4, &d.ip[12..16]);
        Run::put(&mut run.ctx, REMOTE_IP6, &d.ip);
        let port = super::program::sock_ops_port(d.port);
        Run::put(&mut run.ctx, REMOTE_PORT, &port.to_ne_bytes());
        Run::put(&mut run.ctx, SK, &ptr(MEM_SK, 0).to_ne_bytes());
        let (args, flags) = (run.sock.args, run.sock.cb_flags);
        for (i, arg) in args.iter().enumerate() {
            Run::put(&mut run.ctx, ARGS0 + 4 * i as i16, &arg.to_ne_bytes());
        }
        Run::put(&mut run.ctx, CB_FLAGS, &flags.to_ne_bytes());
        run.fill_sk(family);
        run.exec(prog) as i32
    }

    /// Runs a setsockopt program for `setsockopt(fd, level, name, value, len)`; returns `R0`
    /// and the bytes the kernel then uses (the program's buffer when it left `optlen` at 0).
    pub fn setsockopt(
        prog: &[Insn],
        level: i32,
        name: i32,
        value: &[u8],
        sock: &mut Sock,
    ) -> (i32, Vec<u8>) {
        let mut run = Run::new(sock);
        use sockopt_ctx::*;
        run.optval = value.to_vec();
        Run::put(&mut run.ctx, SK, &ptr(MEM_SK, 0).to_ne_bytes());
        Run::put(&mut run.ctx, OPTVAL, &ptr(MEM_OPTVAL, 0).to_ne_bytes());
        Run::put(
            &mut run.ctx,
            OPTVAL_END,
            &ptr(MEM_OPTVAL, value.len()).to_ne_bytes(),
        );
        Run::put(&mut run.ctx, LEVEL, &level.to_ne_bytes());
        Run::put(&mut run.ctx, OPTNAME, &name.to_ne_bytes());
        Run::put(&mut run.ctx, OPTLEN, &(value.len() as i32).to_ne_bytes());
        let family = if run.sock.family == 0 {
            libc::AF_INET
        } else {
            run.sock.family
        };
        run.fill_sk(family);
        let r0 = run.exec(prog) as i32;
        let at = OPTLEN as usize;
        let optlen = i32::from_ne_bytes(run.ctx[at..at + 4].try_into().unwrap());
        run.sock.optlen_out = Some(optlen);
        let used = if optlen == 0 {
            value.to_vec()
        } else {
            run.optval[..optlen as usize].to_vec()
        };
        (r0, used)
    }

    fn fill_sk(&mut self, family: i32) {
        let (ty, protocol) = (self.sock.ty, self.sock.protocol);
        let state = self.sock.state as u32;
        Run::put(&mut self.sk, sock::STATE, &state.to_ne_bytes());
        Run::put(&mut self.sk, sock::FAMILY, &(family as u32).to_ne_bytes());
        Run::put(&mut self.sk, sock::TYPE, &(ty as u32).to_ne_bytes());
        Run::put(
            &mut self.sk,
            sock::PROTOCOL,
            &(protocol as u32).to_ne_bytes(),
        );
    }

    fn memory(&mut self, addr: u64, size: usize) -> &mut [u8] {
        let region = addr >> 32;
        let off = (addr & 0xffff_ffff) as usize;
        let buf: &mut [u8] = match region {
            MEM_CTX => &mut self.ctx,
            MEM_STACK => &mut self.stack,
            MEM_OPTVAL => &mut self.optval,
            MEM_SK => &mut self.sk,
            _ => panic!("access to {addr:#x}: no such memory"),
        };
        assert!(off + size <= buf.len(), "access beyond region {region}");
        &mut buf[off..off + size]
    }

    /// A counter of the counts map, for an 8-byte access at `addr` (entry by entry, as
    /// [`Run::helper`] hands them out).
    fn counter(&mut self, addr: u64, size: usize) -> &mut u64 {
        let off = (addr & 0xffff_ffff) as usize;
        assert!(size == 8 && off.is_multiple_of(8), "counters are u64s");
        let (entry, i) = (off / 8 / COUNTERS, off / 8 % COUNTERS);
        &mut self.sock.counts[entry].1[i]
    }

    fn load(&mut self, addr: u64, size: usize) -> u64 {
        let off = (addr & 0xffff_ffff) as i16;
        match addr >> 32 {
            MEM_COUNTS => return *self.counter(addr, size),
            MEM_TCP_SOCK => return self.sock.tcp_sock(off, size),
            MEM_CGROUP => {
                let c = self.sock.layout.cgroup.expect("a cgroup path");
                assert_eq!((off, size), (c.cgroup_kn, 8), "cgroup->kn");
                return ptr(MEM_KN, 0);
            }
            MEM_KN => {
                let c = self.sock.layout.cgroup.expect("a cgroup path");
                assert_eq!((off, size), (c.kn_id, 8), "kn->id");
                return self.sock.cgroup;
            }
            _ => {}
        }
        if addr >> 32 == MEM_STORAGE {
            assert_eq!(size, 1, "the storage is one byte");
            return u64::from(self.sock.mark.expect("storage exists"));
        }
        let bytes = self.memory(addr, size);
        let mut full = [0u8; 8];
        full[..size].copy_from_slice(bytes);
        u64::from_le_bytes(full)
    }

    fn store(&mut self, addr: u64, size: usize, value: u64) {
        if addr >> 32 == MEM_COUNTS {
            *self.counter(addr, size) = value;
            return;
        }
        if addr >> 32 == MEM_STORAGE {
            assert_eq!(size, 1, "the storage is one byte");
            self.sock.mark = Some(value as u8);
            return;
        }
        let bytes = value.to_le_bytes();
        self.memory(addr, size).copy_from_slice(&bytes[..size]);
    }

    fn helper(&mut self, id: i32, r: &[u64; 11]) -> u64 {
        match id {
            HELPER_SETSOCKOPT | HELPER_GETSOCKOPT => {
                assert!(
                    matches!(r[1] >> 32, MEM_CTX | MEM_SK),
                    "R1 is the context or socket"
                );
                assert_eq!(r[5], 4, "an int");
                let i = option_index(r[2] as i32, r[3] as i32).expect("one of the five");
                if id == HELPER_SETSOCKOPT {
                    let v = self.load(r[4], 4) as u32 as i32;
                    self.sock.opts[i] = v;
                    self.sock.touched |= 1 << i;
                    self.sock.sets.push((i, v));
                    0
                } else {
                    self.sock.gets += 1;
                    if self.sock.readable {
                        let v = self.sock.opts[i] as u32;
                        self.store(r[4], 4, u64::from(v));
                        0
                    } else {
                        self.store(r[4], 4, 0);
                        (-libc::EINVAL) as u64
                    }
                }
            }
            HELPER_SK_STORAGE_GET => {
                assert_eq!(r[1] >> 32, MEM_MAP, "R1 is a map");
                assert_eq!(r[2] >> 32, MEM_SK, "R2 is the socket");
                if self.sock.mark.is_none() && r[4] & 1 != 0 {
                    self.sock.mark = Some(0);
                }
                if self.sock.mark.is_some() {
                    ptr(MEM_STORAGE, 0)
                } else {
                    0
                }
            }
            HELPER_MAP_LOOKUP_ELEM => {
                assert_eq!(r[1] >> 32, MEM_MAP, "R1 is a map");
                assert_eq!(r[2] >> 32, MEM_STACK, "R2 points at the key");
                let key = self.load(r[2], 8);
                match self.sock.counts.iter().position(|(k, _)| *k == key) {
                    Some(entry) => ptr(MEM_COUNTS, entry * 8 * COUNTERS),
                    None => 0,
                }
            }
            HELPER_MAP_UPDATE_ELEM => {
                assert_eq!(r[1] >> 32, MEM_MAP, "R1 is a map");
                assert_eq!(r[4], 1, "BPF_NOEXIST");
                let key = self.load(r[2], 8);
                let value: [u64; COUNTERS] =
                    std::array::from_fn(|i| self.load(r[3] + 8 * i as u64, 8));
                if self.sock.counts.iter().any(|(k, _)| *k == key) {
                    (-libc::EEXIST) as u64
                } else if self.sock.counts.len() >= self.sock.capacity {
                    (-libc::E2BIG) as u64
                } else {
                    self.sock.counts.push((key, value));
                    0
                }
            }
            HELPER_SKC_TO_TCP_SOCK => {
                assert_eq!(r[1] >> 32, MEM_SK, "R1 is the socket");
                ptr(MEM_TCP_SOCK, 0)
            }
            HELPER_GET_CURRENT_CGROUP_ID => self.sock.current_cgroup,
            HELPER_SOCK_OPS_CB_FLAGS_SET => {
                assert_eq!(r[1] >> 32, MEM_CTX, "R1 is the context");
                self.sock.cb_flags = r[2] as u32;
                0
            }
            _ => panic!("helper {id} is not modelled"),
        }
    }

    fn exec(&mut self, prog: &[Insn]) -> u64 {
        let mut r = [0u64; 11];
        r[1] = ptr(MEM_CTX, 0);
        r[10] = ptr(MEM_STACK, MEM_STACK_SIZE);
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "runaway program");
            let i = prog[pc];
            let (dst, src) = (i.dst() as usize, i.src() as usize);
            let imm64 = i.imm as i64 as u64;
            pc += 1;
            match i.class() {
                ALU64 | ALU => {
                    let operand = if i.code & X != 0 { r[src] } else { imm64 };
                    let a = r[dst];
                    let v = match i.code & 0xf0 {
                        MOV => operand,
                        ADD => a.wrapping_add(operand),
                        MUL => a.wrapping_mul(operand),
                        AND => a & operand,
                        OR => a | operand,
                        LSH => a << (operand & 63),
                        op => panic!("ALU op {op:#x} not modelled"),
                    };
                    r[dst] = if i.class() == ALU { v & 0xffff_ffff } else { v };
                }
                LDX => {
                    let size = size_of(i.code);
                    let addr = r[src].wrapping_add(i.off as i64 as u64);
                    r[dst] = self.load(addr, size);
                }
                STX if i.code & 0xe0 == ATOMIC => {
                    assert_eq!(i.imm, i32::from(ADD), "only the atomic add");
                    assert_eq!(r[dst] >> 32, MEM_COUNTS, "atomic adds to the counters only");
                    let size = size_of(i.code);
                    let addr = r[dst].wrapping_add(i.off as i64 as u64);
                    let v = self.load(addr, size).wrapping_add(r[src]);
                    self.store(addr, size, v);
                }
                STX | ST => {
                    let size = size_of(i.code);
                    let addr = r[dst].wrapping_add(i.off as i64 as u64);
                    let v = if i.class() == STX { r[src] } else { imm64 };
                    self.store(addr, size, v);
                }
                LD => {
                    assert_eq!(i.code, LD | IMM | DW, "only 64-bit immediates");
                    r[dst] = match i.src() {
                        PSEUDO_MAP_FD => ptr(MEM_MAP, i.imm as usize),
                        0 => u64::from(i.imm as u32) | u64::from(prog[pc].imm as u32) << 32,
                        src => panic!("64-bit immediate kind {src} not modelled"),
                    };
                    pc += 1;
                }
                JMP | JMP32 => match i.code & 0xf0 {
                    EXIT => return r[0],
                    CALL => {
                        r[0] = self.helper(i.imm, &r);
                        // R1–R5 are clobbered by a call.
                        for reg in &mut r[1..=5] {
                            *reg = 0xdead_beef_dead_beef;
                        }
                    }
                    op => {
                        let b = if i.code & X != 0 { r[src] } else { imm64 };
                        let a = r[dst];
                        let (a, b, sa, sb) = if i.class() == JMP32 {
                            let (a, b) = (a & 0xffff_ffff, b & 0xffff_ffff);
                            (a, b, a as u32 as i32 as i64, b as u32 as i32 as i64)
                        } else {
                            (a, b, a as i64, b as i64)
                        };
                        let taken = match op {
                            JA => true,
                            JEQ => a == b,
                            JNE => a != b,
                            JGT => a > b,
                            JLT => a < b,
                            JSET => a & b != 0,
                            JSGT => sa > sb,
                            JSLT => sa < sb,
                            _ => panic!("jump op {op:#x} not modelled"),
                        };
                        if taken {
                            pc = (pc as i64 + i64::from(i.off)) as usize;
                        }
                    }
                },
                class => panic!("class {class} not modelled"),
            }
        }
    }
}

fn size_of(code: u8) -> usize {
    match code & 0x18 {
        W => 4,
        H => 2,
        B => 1,
        _ => 8,
    }
}
