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

/// Declares, from the list in `hooked.rs`, each real function: its type, its slot, its getter
/// (resolving it once), a wrapper with the C signature, and the raw system call used when libc
/// has none (or `dlsym` hands back this library's own hook); then [`resolve_hooked`].
macro_rules! real_functions {
    (system calls { $($(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*) -> $ret:ty
       => $getter:ident: $ty:ident, $slot:ident, $fallback:ident = $nr:expr;)* }
     written in real.rs { $($(#[$cdoc:meta])* $cname:ident($($carg:ident: $ct:ty),*) -> $cret:ty
       => $cgetter:ident: $cty:ident, $cslot:ident, $cfallback:ident;)* }) => {
        $(
            real_functions!(@one $(#[$doc])* $name($($arg: $t),*) -> $ret
                => $getter: $ty, $slot, $fallback);

            unsafe extern "C" fn $fallback($($arg: $t),*) -> $ret {
                // SAFETY: the raw system call takes the same arguments as the C function.
                unsafe { libc::syscall($nr, $($arg as c_long),*) as $ret }
            }
        )*
        $(
            real_functions!(@one $(#[$cdoc])* $cname($($carg: $ct),*) -> $cret
                => $cgetter: $cty, $cslot, $cfallback);
        )*

        /// Resolves every hooked function's real function now.
        fn resolve_hooked() {
            $( $getter(); )*
            $( $cgetter(); )*
        }
    };
    (@one $(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*) -> $ret:ty
       => $getter:ident: $ty:ident, $slot:ident, $fallback:ident) => {
        pub type $ty = unsafe extern "C" fn($($t),*) -> $ret;
        static $slot: AtomicUsize = AtomicUsize::new(0);

        /// The real function as a pointer, for a caller that makes several calls.
        pub fn $getter() -> $ty {
            const NAME: &CStr = match CStr::from_bytes_with_nul(
                concat!(stringify!($name), "\0").as_bytes(),
            ) {
                Ok(name) => name,
                Err(_) => panic!("a name without NUL"),
            };
            let f = resolve(&$slot, NAME, $fallback as *const () as usize);
            // SAFETY: `f` is libc's function of this name or the fallback, both of this type.
            unsafe { core::mem::transmute::<usize, $ty>(f) }
        }

        $(#[$doc])*
        ///
        /// # Safety
        /// The contract of the C function of the same name.
        // Unit-test builds leave out the hooks, the only callers of some of these.
        #[cfg_attr(test, allow(dead_code))]
        pub unsafe fn $name($($arg: $t),*) -> $ret {
            // SAFETY: the caller's contract is the C function's.
            unsafe { $getter()($($arg),*) }
        }
    };
}

crate::hooked::hooked!(real_functions);

/// `closefrom()` where the C library has none (a program that looks the name up at run time
/// finds this library's): the `close_range` system call, or, where the kernel has none (before
/// 5.9), `close` over every number below the descriptor limit.
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
    // SAFETY: prlimit64 on this process (pid 0) reads the limit into rl, valid for writes; the
    // system call, not libc's getrlimit, which would be one more import.
    let got = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            core::ptr::null::<libc::rlimit>(),
            &raw mut rl,
        )
    };
    let limit = if got == 0 {
        rl.rlim_cur.min(1 << 20) as c_uint
    } else {
        1024
    };
    for fd in first..limit {
        // SAFETY: closing a number; one that is not open gives EBADF.
        unsafe { libc::syscall(libc::SYS_close, fd as c_long) };
    }
}

#[cfg(target_arch = "x86_64")]
const SYS_ACCEPT: c_long = libc::SYS_accept;
#[cfg(not(target_arch = "x86_64"))]
const SYS_ACCEPT: c_long = libc::SYS_accept4;

#[cfg(target_arch = "x86_64")]
const SYS_DUP2: c_long = libc::SYS_dup2;
#[cfg(not(target_arch = "x86_64"))]
const SYS_DUP2: c_long = libc::SYS_dup3;

/// Resolves every real function now; called from the load-time constructor.
pub fn resolve_all() {
    resolve_hooked();
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
fn resolve(slot: &AtomicUsize, name: &CStr, fallback: usize) -> usize {
    let current = slot.load(Ordering::Acquire);
    if current != 0 {
        return current;
    }
    resolve_now(slot, name, fallback)
}

#[cold]
fn resolve_now(slot: &AtomicUsize, name: &CStr, fallback: usize) -> usize {
    // SAFETY: dlsym takes a valid NUL-terminated name; RTLD_NEXT asks for the next object's symbol.
    let found = unsafe { dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    let chosen = choose(found, own_span(), fallback);
    slot.store(chosen, Ordering::Release);
    chosen
}

/// What `dlsym` found, unless it found nothing or a function of this library itself (inside
/// `own`, its mapping): our own hook would recurse.
fn choose(found: usize, own: (usize, usize), fallback: usize) -> usize {
    if found == 0 || (own.0..own.1).contains(&found) {
        fallback
    } else {
        found
    }
}

// The linker's symbol for this object's own ELF header, the start of its first loaded segment
// (GNU ld and lld define it, hidden: no dynamic symbol, no import).
unsafe extern "C" {
    static __ehdr_start: u8;
}

/// This library's own mapping, `[start, end)`: from its ELF header to the end of its last
/// loaded segment, read from its program headers in memory. No system call, no lock, no
/// import: what tells a pointer to our own hook from the C library's without naming the hooks.
fn own_span() -> (usize, usize) {
    let base = &raw const __ehdr_start as usize;
    // SAFETY: __ehdr_start is this object's ELF header, mapped read-only with its first loaded
    // segment for the life of the object; the program headers it points at are mapped too
    // (PT_PHDR lies in the first segment, as every linker lays it out).
    unsafe {
        let ehdr = &*(base as *const Ehdr);
        let mut end = base;
        for i in 0..usize::from(ehdr.e_phnum) {
            let at = base + ehdr.e_phoff as usize + i * usize::from(ehdr.e_phentsize);
            let phdr = &*(at as *const Phdr);
            if phdr.p_type == libc::PT_LOAD {
                end = end.max(base + (phdr.p_vaddr + phdr.p_memsz) as usize);
            }
        }
        (base, end)
    }
}

#[cfg(target_pointer_width = "64")]
use libc::{Elf64_Ehdr as Ehdr, Elf64_Phdr as Phdr};

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
    let f = resolve(&DLOPEN, c"dlopen", no_dlopen as *const () as usize);
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
        let own = (0x2000, 0x3000);
        assert_eq!(choose(0x1000, own, 0x9000), 0x1000);
        assert_eq!(
            choose(0x2800, own, 0x9000),
            0x9000,
            "our own hook: the raw system call"
        );
        assert_eq!(
            choose(0, own, 0x9000),
            0x9000,
            "nothing found: the raw system call"
        );
    }

    #[test]
    fn our_own_mapping_holds_our_code_and_not_libcs() {
        let (start, end) = own_span();
        let ours = own_span as *const () as usize;
        assert!(
            (start..end).contains(&ours),
            "{start:#x}..{end:#x} {ours:#x}"
        );
        let libc_socket = lookup_default(c"socket");
        assert!(libc_socket != 0 && !(start..end).contains(&libc_socket));
    }

    fn lookup_default(name: &CStr) -> usize {
        // SAFETY: a NUL-terminated name.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
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
