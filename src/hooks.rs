//! The exported `extern "C"` functions that `LD_PRELOAD` puts in front of libc's. Each one calls
//! the real function and one function of the logic in `sockets.rs`, and nothing else.
//!
//! `socket`, `connect`, `setsockopt` and `accept`/`accept4` do the work. `close`, `close_range`, `closefrom`, `dup`, `dup2`,
//! `dup3` and `fcntl` (for `F_DUPFD`) only keep the descriptor table of `descriptors.rs` true to
//! the sockets behind the numbers: forgotten before a number can be reused, copied to a
//! duplicate.

use crate::{real, sockets};
use libc::{c_int, c_uint, c_void, sockaddr, socklen_t};

/// `socket(2)`, then keepalive options on a new TCP socket.
///
/// # Safety
/// Same contract as libc's `socket()`; called by the program in place of it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's socket().
    let fd = unsafe { real::socket(domain, ty, protocol) };
    sockets::after_socket(fd, domain, ty, protocol);
    fd
}

/// Keepalive options on a TCP socket that `socket()` did not configure (or again, with FORCE;
/// or taken off again, for a destination the rules exclude), then `connect(2)`; its result and
/// errno are returned untouched.
///
/// # Safety
/// Same contract as libc's `connect()`. The library itself never dereferences `addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    sockets::before_connect(fd, addr, len);
    // SAFETY: the caller's arguments, passed on unchanged to libc's connect().
    unsafe { real::connect(fd, addr, len) }
}

/// `setsockopt(2)`; then, for one of the five options on a TCP socket, what follows from the
/// program's choice (the user timeout that follows its keepalive, or ours again under FORCE).
///
/// # Safety
/// Same contract as libc's `setsockopt()`. The library itself never dereferences `value`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    let before = sockets::before_setsockopt(fd, level, name);
    // SAFETY: the caller's arguments, passed on unchanged to libc's setsockopt().
    let rc = unsafe { real::setsockopt(fd, level, name, value, len) };
    sockets::after_setsockopt(fd, level, name, rc, before);
    rc
}

/// `accept(2)`; the accepted socket inherited the listener's options, and is known as it is.
///
/// # Safety
/// Same contract as libc's `accept()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's accept().
    let new = unsafe { real::accept(fd, addr, len) };
    sockets::after_accept(fd, new);
    new
}

/// `accept4(2)`: as `accept`, with flags.
///
/// # Safety
/// Same contract as libc's `accept4()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's accept4().
    let new = unsafe { real::accept4(fd, addr, len, flags) };
    sockets::after_accept(fd, new);
    new
}

/// `close(2)`, after forgetting what the library knew of the number.
///
/// # Safety
/// Same contract as libc's `close()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    sockets::before_close(fd);
    // SAFETY: the caller's argument, passed on unchanged to libc's close().
    unsafe { real::close(fd) }
}

/// `close_range(2)`, after forgetting the numbers it closes.
///
/// # Safety
/// Same contract as libc's `close_range()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    sockets::before_close_range(first, last, flags);
    // SAFETY: the caller's arguments, passed on unchanged to libc's close_range().
    unsafe { real::close_range(first, last, flags) }
}

/// `closefrom(3)`, after forgetting every number from `first` on.
///
/// # Safety
/// Same contract as libc's `closefrom()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(first: c_int) {
    sockets::before_closefrom(first);
    // SAFETY: the caller's argument, passed on unchanged to libc's closefrom().
    unsafe { real::closefrom(first) }
}

/// `dup(2)`; the new number is the same socket.
///
/// # Safety
/// Same contract as libc's `dup()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the caller's argument, passed on unchanged to libc's dup().
    let new = unsafe { real::dup(fd) };
    sockets::after_dup(fd, new);
    new
}

/// `dup2(2)`: `to` is closed and becomes the same socket as `from`.
///
/// # Safety
/// Same contract as libc's `dup2()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(from: c_int, to: c_int) -> c_int {
    sockets::before_dup_onto(from, to);
    // SAFETY: the caller's arguments, passed on unchanged to libc's dup2().
    let new = unsafe { real::dup2(from, to) };
    sockets::after_dup(from, new);
    new
}

/// `dup3(2)`: as `dup2`, with flags.
///
/// # Safety
/// Same contract as libc's `dup3()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(from: c_int, to: c_int, flags: c_int) -> c_int {
    sockets::before_dup_onto(from, to);
    // SAFETY: the caller's arguments, passed on unchanged to libc's dup3().
    let new = unsafe { real::dup3(from, to, flags) };
    sockets::after_dup(from, new);
    new
}

/// `fcntl(2)`; `F_DUPFD` and `F_DUPFD_CLOEXEC` make a duplicate. Declared with a fixed third
/// argument: on x86_64 and aarch64 a variadic integer or pointer argument arrives in the same
/// register, and is passed on unchanged.
///
/// # Safety
/// Same contract as libc's `fcntl()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's fcntl().
    let rc = unsafe { real::fcntl(fd, cmd, arg) };
    sockets::after_fcntl(fd, cmd, rc);
    rc
}

/// `fcntl64()`: glibc's name for `fcntl` in programs built with 64-bit file offsets.
///
/// # Safety
/// Same contract as libc's `fcntl64()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on unchanged to libc's fcntl64().
    let rc = unsafe { real::fcntl64(fd, cmd, arg) };
    sockets::after_fcntl(fd, cmd, rc);
    rc
}

// --- dlopen -------------------------------------------------------------------------------------

/// `dlopen()`, so that libraries loaded with `RTLD_DEEPBIND` call the hooks too (deepbind.rs).
///
/// glibc's dlopen takes its caller from its return address: the caller's namespace, the
/// RUNPATH/RPATH a bare name is searched along, what `$ORIGIN` means. A hook written as a Rust
/// function would make this library the caller, and a program that opens its plugins by bare name
/// through its own RUNPATH would fail to find them. So the hook is a naked function that leaves
/// the stack as it found it and *jumps* to the real dlopen, which then sees the program's return
/// address: for every call without `RTLD_DEEPBIND` (bit 3 of the flags, tested first) once the
/// real dlopen is resolved, and for every call `deepbind::route` hands back (a bare name, a `$`
/// in the name, a caller outside the main namespace, not glibc). Only an `RTLD_DEEPBIND` load of a
/// path by code of the main namespace goes on to `deepbind::open`, by a jump too, so that it
/// returns to the program itself. (Naked, not `global_asm!`: rustc exports from a cdylib only
/// the symbols it defines itself.)
///
/// # Safety
/// Same contract as libc's `dlopen()`: a file name that is null or a readable NUL-terminated
/// string, and flags.
#[cfg(all(target_env = "gnu", target_arch = "x86_64"))]
#[unsafe(no_mangle)]
// SAFETY: the body is the whole function: it keeps the stack pointer, the arguments and the
// return address as the C calling convention has them, and ends in a jump or a return.
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(file: *const libc::c_char, flags: c_int) -> *mut c_void {
    core::arch::naked_asm!(
        ".cfi_startproc",
        // Without RTLD_DEEPBIND, once the real dlopen is known: straight there.
        "test sil, 8",
        "jnz 2f",
        "mov rax, qword ptr [rip + {slot}]",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        // Otherwise ask `route`, keeping the arguments; the stack is 16-byte aligned at the call.
        "2:",
        "push rdi",
        ".cfi_adjust_cfa_offset 8",
        "push rsi",
        ".cfi_adjust_cfa_offset 8",
        "sub rsp, 8",
        ".cfi_adjust_cfa_offset 8",
        "mov rdx, qword ptr [rsp + 24]",
        "call {route}",
        "add rsp, 8",
        ".cfi_adjust_cfa_offset -8",
        "pop rsi",
        ".cfi_adjust_cfa_offset -8",
        "pop rdi",
        ".cfi_adjust_cfa_offset -8",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        "3:",
        "jmp {open}",
        ".cfi_endproc",
        slot = sym real::DLOPEN,
        route = sym crate::deepbind::route,
        open = sym deepbind_open,
    )
}

/// `dlopen()`, so that libraries loaded with `RTLD_DEEPBIND` call the hooks too: the aarch64
/// version of the x86_64 one above.
///
/// # Safety
/// Same contract as libc's `dlopen()`.
#[cfg(all(target_env = "gnu", target_arch = "aarch64"))]
#[unsafe(no_mangle)]
// SAFETY: as for the x86_64 version.
#[unsafe(naked)]
pub unsafe extern "C" fn dlopen(file: *const libc::c_char, flags: c_int) -> *mut c_void {
    core::arch::naked_asm!(
        ".cfi_startproc",
        // Without RTLD_DEEPBIND, once the real dlopen is known: straight there (through x16,
        // the register a BTI landing pad accepts an indirect jump from).
        "tbnz w1, #3, 2f",
        "adrp x16, {slot}",
        "ldr x16, [x16, :lo12:{slot}]",
        "cbz x16, 2f",
        "br x16",
        // Otherwise ask `route`, keeping the arguments and the return address (x30).
        "2:",
        "stp x29, x30, [sp, #-32]!",
        ".cfi_def_cfa_offset 32",
        ".cfi_offset x29, -32",
        ".cfi_offset x30, -24",
        "mov x29, sp",
        "stp x0, x1, [sp, #16]",
        "mov x2, x30",
        "bl {route}",
        "mov x16, x0",
        "ldp x0, x1, [sp, #16]",
        "ldp x29, x30, [sp], #32",
        ".cfi_def_cfa_offset 0",
        ".cfi_restore x29",
        ".cfi_restore x30",
        "cbz x16, 3f",
        "br x16",
        "3:",
        "b {open}",
        ".cfi_endproc",
        slot = sym real::DLOPEN,
        route = sym crate::deepbind::route,
        open = sym deepbind_open,
    )
}

/// The address of this library's own `dlopen` hook.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn dlopen_address() -> usize {
    dlopen as *const () as usize
}

/// Builds [`table`] from the list in `hooked.rs`: a listed name without its export in this
/// file does not compile.
macro_rules! deepbind_table {
    (system calls { $($(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*) -> $ret:ty
       => $getter:ident: $ty:ident, $slot:ident, $fallback:ident = $nr:expr;)* }
     written in real.rs { $($(#[$cdoc:meta])* $cname:ident($($carg:ident: $ct:ty),*) -> $cret:ty
       => $cgetter:ident: $cty:ident, $cslot:ident, $cfallback:ident;)* }) => {
        /// How many functions `hooked.rs` lists, and so [`table`]'s length with `dlopen`.
        pub const HOOKED: usize = 0 $(+ { let _ = stringify!($name); 1 })*
            $(+ { let _ = stringify!($cname); 1 })*;

        /// Every hook, by name, with the function behind it: what `deepbind.rs` writes into the
        /// relocations of libraries that bound these names past the hooks. Resolves the real
        /// functions that are not resolved yet.
        #[cfg(all(
            target_env = "gnu",
            any(target_arch = "x86_64", target_arch = "aarch64")
        ))]
        pub fn table() -> [crate::deepbind::Hooked; HOOKED + 1] {
            use crate::deepbind::Hooked;
            // The names as C strings (`stringify!` gives no NUL).
            const fn c(name: &'static str) -> &'static core::ffi::CStr {
                match core::ffi::CStr::from_bytes_with_nul(name.as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("a name without NUL"),
                }
            }
            [
                $(Hooked::new(
                    const { c(concat!(stringify!($name), "\0")) },
                    $name as *const () as usize,
                    real::$getter() as usize,
                ),)*
                $(Hooked::new(
                    const { c(concat!(stringify!($cname), "\0")) },
                    $cname as *const () as usize,
                    real::$cgetter() as usize,
                ),)*
                Hooked::new(c"dlopen", dlopen_address(), real::dlopen_fn() as usize),
            ]
        }
    };
}

crate::hooked::hooked!(deepbind_table);

// The pass's fixed-size arrays hold every name of the table.
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
const _: () = assert!(HOOKED < crate::deepbind::MAX_HOOKED);

/// Where the `dlopen` hook jumps for an `RTLD_DEEPBIND` load of a path: the load, then the pass
/// over what it loaded, with this file's table (so `deepbind.rs` names no hook).
///
/// # Safety
/// The contract of `dlopen()`; reached only from the `dlopen` hook, with a non-null `file`.
#[cfg(all(
    not(test),
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
unsafe extern "C" fn deepbind_open(file: *const libc::c_char, flags: c_int) -> *mut c_void {
    // SAFETY: the caller's contract.
    unsafe { crate::deepbind::open(file, flags, &table()) }
}
