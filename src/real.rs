//! The real libc functions behind the hooks, found with `dlsym(RTLD_NEXT, …)`.
//!
//! Inside this library the hooked names (`socket`, `connect`, `close`, …) resolve to our own
//! exports, so the library never calls them by name. Each pointer is resolved at load time by the
//! constructor (or by the first hook that runs before it), without a lock: racing threads store the
//! same value. A pointer to this library's own hook of that name, or no pointer at all, is refused
//! and the raw system call is used instead, so a hook can neither recurse nor panic.

use core::ffi::{CStr, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{c_int, c_long, c_uint, sockaddr, socklen_t};

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

/// Declares one real function: its slot, its resolver, a wrapper with the C signature, and the
/// raw system call used when libc has none (or `dlsym` hands back this library's own hook).
macro_rules! real {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*) via $getter:ident: $ty:ident, $slot:ident,
     $cname:literal, $sys:ident = $nr:expr) => {
        pub type $ty = unsafe extern "C" fn($($t),*) -> c_int;
        static $slot: AtomicUsize = AtomicUsize::new(0);

        /// The real function as a pointer, for a caller that makes several calls.
        pub fn $getter() -> $ty {
            #[cfg(not(test))]
            let own = crate::hooks::$name as *const () as usize;
            // Unit-test builds have no exports, so nothing to refuse.
            #[cfg(test)]
            let own = 0;
            let f = resolve(&$slot, $cname, own, $sys as *const () as usize);
            // SAFETY: `f` is libc's function of this name or the raw-syscall fallback below,
            // both of this type.
            unsafe { core::mem::transmute::<usize, $ty>(f) }
        }

        $(#[$doc])*
        ///
        /// # Safety
        /// The contract of the C function of the same name.
        // Unit-test builds leave out the hooks, the only callers of some of these.
        #[cfg_attr(test, allow(dead_code))]
        pub unsafe fn $name($($arg: $t),*) -> c_int {
            // SAFETY: the caller's contract is the C function's.
            unsafe { $getter()($($arg),*) }
        }

        unsafe extern "C" fn $sys($($arg: $t),*) -> c_int {
            // SAFETY: the raw system call takes the same arguments as the C function.
            unsafe { libc::syscall($nr, $($arg as c_long),*) as c_int }
        }
    };
}

real!(
    /// libc's `socket()`.
    socket(domain: c_int, ty: c_int, protocol: c_int) via socket_fn: SocketFn, SOCKET,
    c"socket", sys_socket = libc::SYS_socket
);
real!(
    /// libc's `connect()`.
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) via connect_fn: ConnectFn, CONNECT,
    c"connect", sys_connect = libc::SYS_connect
);
real!(
    /// libc's `setsockopt()`.
    setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t)
    via setsockopt_fn: SetsockoptFn, SETSOCKOPT, c"setsockopt", sys_setsockopt = libc::SYS_setsockopt
);
real!(
    /// libc's `close()`.
    close(fd: c_int) via close_fn: CloseFn, CLOSE, c"close", sys_close = libc::SYS_close
);
real!(
    /// libc's `close_range()` (glibc 2.34; older C libraries have none: the system call).
    close_range(first: c_uint, last: c_uint, flags: c_int) via close_range_fn: CloseRangeFn,
    CLOSE_RANGE, c"close_range", sys_close_range = libc::SYS_close_range
);
real!(
    /// libc's `dup()`.
    dup(fd: c_int) via dup_fn: DupFn, DUP, c"dup", sys_dup = libc::SYS_dup
);
real!(
    /// libc's `dup2()` (aarch64 has no dup2 system call: the fallback is dup3 without flags, which
    /// differs only when both numbers are equal).
    dup2(from: c_int, to: c_int) via dup2_fn: Dup2Fn, DUP2, c"dup2", sys_dup2 = SYS_DUP2
);
real!(
    /// libc's `dup3()`.
    dup3(from: c_int, to: c_int, flags: c_int) via dup3_fn: Dup3Fn, DUP3, c"dup3",
    sys_dup3 = libc::SYS_dup3
);
real!(
    /// libc's `fcntl()`, called with its third argument as a machine word: on x86_64 and aarch64
    /// an integer or pointer variadic argument travels in the same register as a fixed one.
    fcntl(fd: c_int, cmd: c_int, arg: usize) via fcntl_fn: FcntlFn, FCNTL, c"fcntl",
    sys_fcntl = libc::SYS_fcntl
);
real!(
    /// libc's `fcntl64()` (glibc 2.28; the name programs built with 64-bit file offsets call).
    fcntl64(fd: c_int, cmd: c_int, arg: usize) via fcntl64_fn: Fcntl64Fn, FCNTL64, c"fcntl64",
    sys_fcntl64 = libc::SYS_fcntl
);

/// `closefrom()`'s type: it returns nothing.
pub type ClosefromFn = unsafe extern "C" fn(c_int);
static CLOSEFROM: AtomicUsize = AtomicUsize::new(0);

/// libc's `closefrom()` (glibc 2.34, musl 1.2.4; older C libraries have none, and no program
/// linked against them calls it). Without one (a program that looks the name up at run time
/// finds this library's), the `close_range` system call, or, where the kernel has none (before
/// 5.9), `close` over every number below the descriptor limit.
pub fn closefrom_fn() -> ClosefromFn {
    #[cfg(not(test))]
    let own = crate::hooks::closefrom as *const () as usize;
    #[cfg(test)]
    let own = 0;
    let f = resolve(
        &CLOSEFROM,
        c"closefrom",
        own,
        sys_closefrom as *const () as usize,
    );
    // SAFETY: `f` is libc's closefrom or the fallback below, both of this type.
    unsafe { core::mem::transmute::<usize, ClosefromFn>(f) }
}

unsafe extern "C" fn sys_closefrom(first: c_int) {
    let Ok(first) = c_uint::try_from(first) else {
        return;
    };
    // SAFETY: close_range takes two numbers and flags.
    if unsafe { libc::syscall(libc::SYS_close_range, first, c_uint::MAX, 0) } == 0 {
        return;
    }
    // SAFETY: rl is plain data getrlimit fills.
    let mut rl: libc::rlimit = unsafe { core::mem::zeroed() };
    // SAFETY: rl is valid for writes.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur.min(1 << 20) as c_uint
    } else {
        1024
    };
    for fd in first..limit {
        // SAFETY: closing a number; one that is not open gives EBADF.
        unsafe { libc::syscall(libc::SYS_close, fd as c_long) };
    }
}

/// libc's `closefrom()`.
///
/// # Safety
/// The contract of the C function.
#[cfg_attr(test, allow(dead_code))]
pub unsafe fn closefrom(first: c_int) {
    // SAFETY: the caller's contract is the C function's.
    unsafe { closefrom_fn()(first) }
}

#[cfg(target_arch = "x86_64")]
const SYS_DUP2: c_long = libc::SYS_dup2;
#[cfg(not(target_arch = "x86_64"))]
const SYS_DUP2: c_long = libc::SYS_dup3;

/// Resolves every real function now; called from the load-time constructor.
pub fn resolve_all() {
    socket_fn();
    connect_fn();
    setsockopt_fn();
    close_fn();
    close_range_fn();
    closefrom_fn();
    dup_fn();
    dup2_fn();
    dup3_fn();
    fcntl_fn();
    fcntl64_fn();
    #[cfg(all(
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        dlopen_fn();
        is_glibc();
    }
}

/// `dlsym(RTLD_DEFAULT, name)`: the first definition of `name` in the loader's search order.
///
/// # Safety
/// `name` is a NUL-terminated string.
pub unsafe fn dlsym_default(name: *const libc::c_char) -> *mut c_void {
    // SAFETY: the caller's contract; RTLD_DEFAULT only looks the name up.
    unsafe { dlsym(libc::RTLD_DEFAULT, name) }
}

#[inline]
fn resolve(slot: &AtomicUsize, name: &CStr, own: usize, fallback: usize) -> usize {
    let current = slot.load(Ordering::Acquire);
    if current != 0 {
        return current;
    }
    resolve_now(slot, name, own, fallback)
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

/// Sets one `int` option through the real `setsockopt` (the unit tests' helper).
#[cfg(test)]
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

/// Copies `out.len()` bytes of this process's memory at `addr` into `out` without ever faulting:
/// the kernel reads them (`process_vm_readv` on ourselves) and says EFAULT where the program
/// passed a pointer it could not read. The program's pointers are never dereferenced directly.
/// Returns how many bytes were copied (0 for a null or unreadable pointer).
pub fn copy_from_program(addr: *const c_void, out: &mut [u8]) -> usize {
    if addr.is_null() || out.is_empty() {
        return 0;
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    let remote = libc::iovec {
        iov_base: addr.cast_mut(),
        iov_len: out.len(),
    };
    // SAFETY: `local` describes `out`, writable; the kernel validates `remote` itself.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    usize::try_from(n).unwrap_or(0)
}

// --- dlopen, for the libraries loaded with RTLD_DEEPBIND (src/deepbind.rs) -------------------

/// `dlopen()`'s type.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub type DlopenFn = unsafe extern "C" fn(*const libc::c_char, c_int) -> *mut c_void;

/// The real `dlopen`, 0 until resolved. The `dlopen` trampoline in `hooks.rs` reads it with one
/// load and jumps to it, so it is a static of its own rather than behind a getter.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub static DLOPEN: AtomicUsize = AtomicUsize::new(0);

/// The real `dlopen`: whatever `dlsym(RTLD_NEXT, "dlopen")` finds, the default version, the one
/// a program linked now binds (`dlopen@GLIBC_2.34` in libc since glibc 2.34, libdl's before;
/// the older `dlopen@GLIBC_2.2.5` of libc is the same function). Without one (no C library
/// would), a `dlopen` that fails.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn dlopen_fn() -> DlopenFn {
    #[cfg(not(test))]
    let own = crate::hooks::dlopen_address();
    #[cfg(test)]
    let own = 0;
    let f = resolve(&DLOPEN, c"dlopen", own, no_dlopen as *const () as usize);
    // SAFETY: `f` is the C library's dlopen or `no_dlopen`, both of this type.
    unsafe { core::mem::transmute::<usize, DlopenFn>(f) }
}

#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
unsafe extern "C" fn no_dlopen(_: *const libc::c_char, _: c_int) -> *mut c_void {
    core::ptr::null_mut()
}

/// `dlsym(handle, name)` as an address, 0 when not found. A failed lookup leaves a message for
/// the program's next `dlerror()`: the caller clears it with [`clear_dlerror`].
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn lookup(handle: *mut c_void, name: &CStr) -> usize {
    // SAFETY: a NUL-terminated name; `handle` is RTLD_DEFAULT, RTLD_NEXT or a live dlopen handle.
    unsafe { dlsym(handle, name.as_ptr()) as usize }
}

#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
static DLERROR: AtomicUsize = AtomicUsize::new(0);

/// Calls the C library's `dlerror()` once, discarding the message a lookup of ours left, so the
/// program's own next `dlerror()` says what it would have said without the library.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn clear_dlerror() {
    let mut f = DLERROR.load(Ordering::Acquire);
    if f == 0 {
        f = lookup(libc::RTLD_NEXT, c"dlerror");
        DLERROR.store(f, Ordering::Release);
    }
    if f != 0 {
        // SAFETY: the C library's dlerror, which takes nothing and returns a string or null.
        let dlerror = unsafe {
            core::mem::transmute::<usize, unsafe extern "C" fn() -> *mut libc::c_char>(f)
        };
        // SAFETY: dlerror has no preconditions.
        unsafe { dlerror() };
    }
}

/// 0 not known yet, 1 glibc, 2 another C library (musl, whose loader has no RTLD_DEEPBIND).
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
static GLIBC: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Whether the process runs on glibc (whose loader `deepbind.rs` relies on): it has
/// `gnu_get_libc_version`. Decided at load, in the constructor, where clearing the failed
/// lookup's message from `dlerror()` can hide nothing of the program's.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn is_glibc() -> bool {
    match GLIBC.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let found = lookup(libc::RTLD_DEFAULT, c"gnu_get_libc_version") != 0;
            if !found {
                clear_dlerror();
            }
            GLIBC.store(if found { 1 } else { 2 }, Ordering::Relaxed);
            found
        }
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
