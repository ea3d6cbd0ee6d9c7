//! The real libc functions behind the hooks, found with `dlsym(RTLD_NEXT, …)`.
//!
//! Inside this library the names `socket`, `connect` and `setsockopt` resolve to our own exports,
//! so the library never calls them by name. Each pointer is resolved at load time by the
//! constructor (or by the first hook that runs before it), without a lock: racing threads store the
//! same value. A pointer to this library's own hook of that name, or no pointer at all, is refused
//! and the raw system call is used instead, so a hook can neither recurse nor panic.

use core::ffi::{CStr, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{c_int, c_long, sockaddr, socklen_t};

// `dlsym` bound to its oldest version. Linked against glibc 2.34 or later, a plain reference
// binds to `dlsym@GLIBC_2.34`, and every program of an older distribution then refuses to start
// with the library preloaded. glibc keeps the original `dlsym@GLIBC_2.2.5` (x86_64) and
// `dlsym@GLIBC_2.17` (aarch64, its first version) as compatibility symbols with the same
// behaviour; older glibc defines them in libdl.so.2, which build.rs therefore makes a NEEDED
// entry. musl's loader ignores symbol versions. `.symver` rewrites only references made in the
// same assembly, so the versioned call sits in a one-instruction hidden trampoline.
#[cfg(all(target_env = "gnu", target_arch = "x86_64"))]
core::arch::global_asm!(
    ".symver keepalive_shim_versioned_dlsym, dlsym@GLIBC_2.2.5",
    ".globl keepalive_shim_dlsym",
    ".hidden keepalive_shim_dlsym",
    ".type keepalive_shim_dlsym, @function",
    "keepalive_shim_dlsym:",
    "jmp keepalive_shim_versioned_dlsym@PLT",
);
#[cfg(all(target_env = "gnu", target_arch = "aarch64"))]
core::arch::global_asm!(
    ".symver keepalive_shim_versioned_dlsym, dlsym@GLIBC_2.17",
    ".globl keepalive_shim_dlsym",
    ".hidden keepalive_shim_dlsym",
    ".type keepalive_shim_dlsym, %function",
    "keepalive_shim_dlsym:",
    "b keepalive_shim_versioned_dlsym",
);
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
unsafe extern "C" {
    #[link_name = "keepalive_shim_dlsym"]
    fn dlsym(handle: *mut c_void, name: *const libc::c_char) -> *mut c_void;
}
#[cfg(not(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
use libc::dlsym;

type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type ConnectFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
pub type SetsockoptFn =
    unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;

static SOCKET: AtomicUsize = AtomicUsize::new(0);
static CONNECT: AtomicUsize = AtomicUsize::new(0);
static SETSOCKOPT: AtomicUsize = AtomicUsize::new(0);

/// Resolves every real function now; called from the load-time constructor.
pub fn resolve_all() {
    socket_fn();
    connect_fn();
    setsockopt_fn();
}

/// This library's own export of each name: what `dlsym` must never hand back. (Unit-test builds
/// have no exports, so nothing to refuse.)
#[cfg(not(test))]
mod own {
    pub fn socket() -> usize {
        crate::hooks::socket as *const () as usize
    }
    pub fn connect() -> usize {
        crate::hooks::connect as *const () as usize
    }
    pub fn setsockopt() -> usize {
        crate::hooks::setsockopt as *const () as usize
    }
}
#[cfg(test)]
mod own {
    pub fn socket() -> usize {
        0
    }
    pub fn connect() -> usize {
        0
    }
    pub fn setsockopt() -> usize {
        0
    }
}

#[inline]
fn resolve(slot: &AtomicUsize, name: &CStr, own: fn() -> usize, fallback: usize) -> usize {
    let current = slot.load(Ordering::Acquire);
    if current != 0 {
        return current;
    }
    resolve_now(slot, name, own(), fallback)
}

#[cold]
fn resolve_now(slot: &AtomicUsize, name: &CStr, own: usize, fallback: usize) -> usize {
    // SAFETY: dlsym takes a valid NUL-terminated name; RTLD_NEXT asks for the next object's symbol.
    let found = unsafe { dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    let chosen = choose(found, own, fallback);
    slot.store(chosen, Ordering::Release);
    chosen
}

/// What `dlsym` found, unless it found nothing or our own hook.
fn choose(found: usize, own: usize, fallback: usize) -> usize {
    if found == 0 || found == own {
        fallback
    } else {
        found
    }
}

fn socket_fn() -> SocketFn {
    let f = resolve(
        &SOCKET,
        c"socket",
        own::socket,
        sys_socket as *const () as usize,
    );
    // SAFETY: `f` is libc's socket or sys_socket, both of type SocketFn.
    unsafe { core::mem::transmute::<usize, SocketFn>(f) }
}

fn connect_fn() -> ConnectFn {
    let f = resolve(
        &CONNECT,
        c"connect",
        own::connect,
        sys_connect as *const () as usize,
    );
    // SAFETY: `f` is libc's connect or sys_connect, both of type ConnectFn.
    unsafe { core::mem::transmute::<usize, ConnectFn>(f) }
}

/// libc's `setsockopt()` as a function pointer, for a caller that makes several calls.
pub fn setsockopt_fn() -> SetsockoptFn {
    let f = resolve(
        &SETSOCKOPT,
        c"setsockopt",
        own::setsockopt,
        sys_setsockopt as *const () as usize,
    );
    // SAFETY: `f` is libc's setsockopt or sys_setsockopt, both of type SetsockoptFn.
    unsafe { core::mem::transmute::<usize, SetsockoptFn>(f) }
}

/// libc's `socket()`.
///
/// # Safety
/// As for `socket(2)`.
pub unsafe fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller's contract is socket(2)'s.
    unsafe { socket_fn()(domain, ty, protocol) }
}

/// libc's `connect()`.
///
/// # Safety
/// As for `connect(2)`: `addr` points to `len` readable bytes.
pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's contract is connect(2)'s.
    unsafe { connect_fn()(fd, addr, len) }
}

/// libc's `setsockopt()`.
///
/// # Safety
/// As for `setsockopt(2)`: `value` points to `len` readable bytes.
pub unsafe fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the caller's contract is setsockopt(2)'s.
    unsafe { setsockopt_fn()(fd, level, name, value, len) }
}

/// Sets one `int` option through the real `setsockopt`.
pub fn set_int(fd: c_int, level: c_int, name: c_int, value: c_int) -> Result<(), c_int> {
    if set_int_via(setsockopt_fn(), fd, level, name, value) {
        Ok(())
    } else {
        Err(crate::errno::get())
    }
}

/// Sets one `int` option through `set`, a `setsockopt` resolved once by a caller that sets
/// several; true on success.
#[inline(always)]
pub fn set_int_via(set: SetsockoptFn, fd: c_int, level: c_int, name: c_int, value: c_int) -> bool {
    let len = core::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `value` lives on this stack frame for the duration of the call.
    unsafe { set(fd, level, name, (&raw const value).cast(), len) == 0 }
}

/// Reads one `int` option; `getsockopt` is not hooked, so libc's is called directly.
pub fn get_int(fd: c_int, level: c_int, name: c_int) -> Result<c_int, c_int> {
    let mut value: c_int = 0;
    let mut len = core::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `value` and `len` are valid for writes for the duration of the call.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(crate::errno::get())
    }
}

unsafe extern "C" fn sys_socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the raw system call takes the same arguments as socket(2).
    unsafe {
        libc::syscall(
            libc::SYS_socket,
            domain as c_long,
            ty as c_long,
            protocol as c_long,
        ) as c_int
    }
}

unsafe extern "C" fn sys_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the raw system call takes the same arguments as connect(2).
    unsafe { libc::syscall(libc::SYS_connect, fd as c_long, addr, len as c_long) as c_int }
}

unsafe extern "C" fn sys_setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: the raw system call takes the same arguments as setsockopt(2).
    unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            fd as c_long,
            level as c_long,
            name as c_long,
            value,
            len as c_long,
        ) as c_int
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_libc() {
        resolve_all();
        for slot in [&SOCKET, &CONNECT, &SETSOCKOPT] {
            let f = slot.load(Ordering::Acquire);
            assert_ne!(f, 0);
            assert_ne!(
                f, sys_socket as *const () as usize,
                "found libc's, not the fallback"
            );
        }
    }

    #[test]
    fn our_own_hook_or_nothing_is_refused() {
        assert_eq!(choose(0x1000, 0x2000, 0x3000), 0x1000);
        assert_eq!(
            choose(0x2000, 0x2000, 0x3000),
            0x3000,
            "our own hook: the raw system call"
        );
        assert_eq!(
            choose(0, 0x2000, 0x3000),
            0x3000,
            "nothing found: the raw system call"
        );
    }

    #[test]
    fn real_socket_and_options_work() {
        // SAFETY: plain socket call with constant arguments.
        let fd = unsafe { socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let one: c_int = 1;
        // SAFETY: `one` is a live int of the length given.
        let rc = unsafe {
            setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                4,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(get_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR), Ok(1));
        assert_eq!(set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1), Ok(()));
        assert_eq!(get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), Ok(1));
        assert_eq!(
            set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 0),
            Err(libc::EINVAL)
        );
        // SAFETY: closing the descriptor made above.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn real_connect_reports_errors_in_errno() {
        // SAFETY: plain socket call with constant arguments.
        let fd = unsafe { socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
        // SAFETY: a zeroed sockaddr_in is valid; port 0 on loopback is never listening.
        let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(core::net::Ipv4Addr::LOCALHOST).to_be();
        let len = core::mem::size_of::<libc::sockaddr_in>() as socklen_t;
        // SAFETY: `sin` is a live sockaddr_in of `len` bytes.
        let rc = unsafe { connect(fd, (&raw const sin).cast(), len) };
        assert_eq!(rc, -1);
        let err = crate::errno::get();
        assert!(
            err == libc::ECONNREFUSED || err == libc::EINPROGRESS,
            "{err}"
        );
        // SAFETY: closing the descriptor made above.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn raw_system_call_fallbacks_behave_like_libc() {
        // SAFETY: plain socket call with constant arguments.
        let fd = unsafe { sys_socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let one: c_int = 1;
        // SAFETY: `one` is a live int.
        let rc = unsafe {
            sys_setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_KEEPALIVE,
                (&raw const one).cast(),
                4,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: invalid descriptor on purpose: the call must fail with EBADF, not crash.
        let rc = unsafe { sys_connect(-1, core::ptr::null(), 0) };
        assert_eq!((rc, crate::errno::get()), (-1, libc::EBADF));
        // SAFETY: closing the descriptor made above.
        unsafe { libc::close(fd) };
    }
}
