//! The seccomp filter the supervised tree runs under: a classic BPF program over
//! `struct seccomp_data` that sends only the trapped system calls to the supervisor
//! (`SECCOMP_RET_USER_NOTIF`) and allows everything else.
//!
//! Its shape keeps the kernel's per-syscall action cache (Linux 5.11) working: for every system
//! call number but the trapped ones, the program reads only `arch` and `nr` and returns
//! `SECCOMP_RET_ALLOW`, so the kernel proves it constant and later calls of that number skip the
//! filter entirely. Arguments are read only on the trapped numbers' own paths: `socket()` (the
//! domain and the type, so UDP, UNIX and every other socket never reach the supervisor) and
//! `setsockopt()` (the level and the option name, so only the five options this project manages
//! are trapped). Those numbers alone lose the cache.

use libc::c_int;

/// `AUDIT_ARCH_*` of the architecture this tool is built for (`linux/audit.h`).
#[cfg(target_arch = "x86_64")]
pub const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const ARCH: u32 = 0xC000_00B7;

/// `SECCOMP_RET_ALLOW`, `SECCOMP_RET_USER_NOTIF`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// Which calls go to the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// `socket()` for `AF_INET`/`AF_INET6` stream sockets: the supervisor makes the socket,
    /// configures it and installs it as the call's result (`SECCOMP_ADDFD_FLAG_SEND`, 5.14).
    Socket,
    /// `connect()` and `listen()`: the supervisor takes a copy of the socket (`pidfd_getfd`,
    /// 5.6), configures it, and lets the call run (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Connect,
}

impl Trap {
    pub fn name(self) -> &'static str {
        match self {
            Trap::Socket => "socket",
            Trap::Connect => "connect",
        }
    }
}

// Classic BPF opcodes (linux/bpf_common.h): BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
// BPF_ALU|BPF_AND|BPF_K, BPF_RET|BPF_K.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// The low 32 bits of argument `i` (little-endian: x86_64 and aarch64). The kernel reads an
/// `int` argument from those bits only, and so does the supervisor.
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

/// A jump target while the program is assembled.
#[derive(Clone, Copy)]
enum To {
    Next,
    Go(&'static str),
}

enum Ins {
    Load(u32),
    And(u32),
    /// Jump to the first target when the accumulator equals the constant, else to the second.
    Jeq(u32, To, To),
    Ret(u32),
    At(&'static str),
}

/// Assembles `code`, resolving labels into the relative offsets of classic BPF.
fn assemble(code: &[Ins]) -> Vec<libc::sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for ins in code {
        match ins {
            Ins::At(name) => {
                at.insert(*name, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for ins in code {
        let here = out.len();
        let offset = |to: To| -> u8 {
            match to {
                To::Next => 0,
                To::Go(name) => {
                    let target: usize = at[name];
                    let forward = target.checked_sub(here + 1).expect("a forward jump");
                    u8::try_from(forward).expect("a short program")
                }
            }
        };
        let (code, jt, jf, k) = match *ins {
            Ins::At(_) => continue,
            Ins::Load(offset) => (LD_W_ABS, 0, 0, offset),
            Ins::And(k) => (AND_K, 0, 0, k),
            Ins::Jeq(k, t, f) => (JEQ_K, offset(t), offset(f), k),
            Ins::Ret(k) => (RET_K, 0, 0, k),
        };
        out.push(libc::sock_filter { code, jt, jf, k });
    }
    out
}

const fn u(v: c_int) -> u32 {
    v as u32
}

/// The filter for `trap`; with `options`, the program's own `setsockopt()` of the five options
/// is trapped too (so that the user timeout follows a keepalive the program sets itself, and,
/// under `KEEPALIVE_FORCE`, the configured values stand).
pub fn program(trap: Trap, options: bool) -> Vec<libc::sock_filter> {
    use Ins::*;
    use To::*;
    let allow = Go("allow");
    let notify = Go("notify");
    let mut code = vec![Load(ARCH_OFFSET), Jeq(ARCH, Next, allow), Load(NR)];
    match trap {
        Trap::Socket => code.push(Jeq(u(libc::SYS_socket as c_int), Go("socket"), Next)),
        Trap::Connect => {
            code.push(Jeq(u(libc::SYS_connect as c_int), notify, Next));
            code.push(Jeq(u(libc::SYS_listen as c_int), notify, Next));
        }
    }
    if options {
        code.push(Jeq(
            u(libc::SYS_setsockopt as c_int),
            Go("setsockopt"),
            Next,
        ));
    }
    // Every other number (a classic BPF program jumps forward only: each block below ends on
    // the last `allow`).
    code.push(Ret(RET_ALLOW));
    if trap == Trap::Socket {
        code.extend([
            At("socket"),
            Load(arg(0)),
            Jeq(u(libc::AF_INET), Go("type"), Next),
            Jeq(u(libc::AF_INET6), Go("type"), allow),
            At("type"),
            Load(arg(1)),
            // SOCK_TYPE_MASK: the flags (SOCK_NONBLOCK, SOCK_CLOEXEC) are above it.
            And(0xf),
            Jeq(u(libc::SOCK_STREAM), notify, allow),
        ]);
    }
    if options {
        code.extend([
            At("setsockopt"),
            Load(arg(1)),
            Jeq(u(libc::SOL_SOCKET), Go("sol_socket"), Next),
            Jeq(u(libc::IPPROTO_TCP), Go("tcp"), allow),
            At("sol_socket"),
            Load(arg(2)),
            Jeq(u(libc::SO_KEEPALIVE), notify, allow),
            At("tcp"),
            Load(arg(2)),
            Jeq(u(libc::TCP_KEEPIDLE), notify, Next),
            Jeq(u(libc::TCP_KEEPINTVL), notify, Next),
            Jeq(u(libc::TCP_KEEPCNT), notify, Next),
            Jeq(u(libc::TCP_USER_TIMEOUT), notify, allow),
        ]);
    }
    code.extend([
        At("allow"),
        Ret(RET_ALLOW),
        At("notify"),
        Ret(RET_USER_NOTIF),
    ]);
    assemble(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the program returns for `data`, and whether it read an argument on the way:
    /// a classic-BPF interpreter for the four instructions the program uses.
    fn run(prog: &[libc::sock_filter], nr: c_int, arch: u32, args: [u64; 6]) -> (u32, bool) {
        let mut acc = 0u32;
        let mut pc = 0usize;
        let mut read_args = false;
        loop {
            let ins = prog[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    acc = match ins.k {
                        NR => nr as u32,
                        ARCH_OFFSET => arch,
                        k if k >= 16 && (k - 16) % 8 == 0 => {
                            read_args = true;
                            args[((k - 16) / 8) as usize] as u32
                        }
                        k => panic!("unexpected load at {k}"),
                    }
                }
                AND_K => acc &= ins.k,
                JEQ_K => pc += usize::from(if acc == ins.k { ins.jt } else { ins.jf }),
                RET_K => return (ins.k, read_args),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const fn args(a: c_int, b: c_int, c: c_int) -> [u64; 6] {
        [a as u32 as u64, b as u32 as u64, c as u32 as u64, 0, 0, 0]
    }

    #[test]
    fn only_tcp_sockets_are_trapped_in_socket_mode() {
        use libc::*;
        let prog = program(Trap::Socket, false);
        let socket = SYS_socket as c_int;
        let notify = |d, t, p| run(&prog, socket, ARCH, args(d, t, p)).0 == RET_USER_NOTIF;
        assert!(notify(AF_INET, SOCK_STREAM, 0));
        assert!(notify(
            AF_INET6,
            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
            0
        ));
        assert!(notify(AF_INET, SOCK_STREAM, IPPROTO_TCP));
        // MPTCP is trapped too (the protocol is not checked here): the supervisor lets it run.
        assert!(notify(AF_INET, SOCK_STREAM, 262));
        assert!(!notify(AF_INET, SOCK_DGRAM, 0));
        assert!(!notify(AF_UNIX, SOCK_STREAM, 0));
        assert!(!notify(AF_NETLINK, SOCK_RAW, 0));
        assert!(!notify(AF_INET6, SOCK_SEQPACKET, 0));
        // Garbage above the low 32 bits of an int argument is ignored, as the kernel does.
        let mut high = args(AF_INET, SOCK_STREAM, 0);
        high[0] |= 1 << 40;
        assert_eq!(run(&prog, socket, ARCH, high).0, RET_USER_NOTIF);
        // connect is not trapped in this mode, nor any call of another architecture.
        assert_eq!(run(&prog, SYS_connect as c_int, ARCH, [0; 6]).0, RET_ALLOW);
        assert_eq!(
            run(&prog, socket, 0x4000_0003, args(AF_INET, SOCK_STREAM, 0)).0,
            RET_ALLOW
        );
    }

    #[test]
    fn connect_mode_traps_connect_and_listen() {
        let prog = program(Trap::Connect, false);
        for nr in [libc::SYS_connect, libc::SYS_listen] {
            assert_eq!(run(&prog, nr as c_int, ARCH, [3; 6]).0, RET_USER_NOTIF);
        }
        let socket = libc::SYS_socket as c_int;
        let tcp = args(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert_eq!(run(&prog, socket, ARCH, tcp).0, RET_ALLOW);
    }

    #[test]
    fn the_five_options_are_trapped_and_nothing_else() {
        use libc::*;
        let prog = program(Trap::Socket, true);
        let set = SYS_setsockopt as c_int;
        let notify = |level, name| run(&prog, set, ARCH, args(3, level, name)).0 == RET_USER_NOTIF;
        assert!(notify(SOL_SOCKET, SO_KEEPALIVE));
        for name in [TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT] {
            assert!(notify(IPPROTO_TCP, name));
        }
        assert!(!notify(SOL_SOCKET, SO_REUSEADDR));
        assert!(!notify(IPPROTO_TCP, TCP_NODELAY));
        assert!(!notify(IPPROTO_IP, TCP_KEEPIDLE));
        let plain = program(Trap::Socket, false);
        assert_eq!(
            run(&plain, set, ARCH, args(3, SOL_SOCKET, SO_KEEPALIVE)).0,
            RET_ALLOW
        );
    }

    /// The property the kernel's action cache needs: every number but the trapped ones is
    /// allowed after reading only `arch` and `nr` (the kernel's `seccomp_is_const_allow` emulates
    /// the filter in the same way and gives up at the first argument load).
    #[test]
    fn every_untrapped_number_is_a_constant_allow() {
        for (trap, force) in [
            (Trap::Socket, false),
            (Trap::Socket, true),
            (Trap::Connect, false),
            (Trap::Connect, true),
        ] {
            let prog = program(trap, force);
            assert!(prog.len() < 40, "{} instructions", prog.len());
            let mut trapped = Vec::new();
            for nr in 0..600 {
                let (ret, read) = run(&prog, nr, ARCH, [0; 6]);
                if read || ret != RET_ALLOW {
                    trapped.push(nr as libc::c_long);
                }
            }
            let mut expected = match trap {
                Trap::Socket => vec![libc::SYS_socket],
                Trap::Connect => vec![libc::SYS_connect, libc::SYS_listen],
            };
            if force {
                expected.push(libc::SYS_setsockopt);
            }
            expected.sort_unstable();
            assert_eq!(trapped, expected, "{trap:?} force={force}");
        }
    }
}
