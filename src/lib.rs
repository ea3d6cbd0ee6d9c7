//! keepalive-shim: an `LD_PRELOAD` library that gives every TCP connection of an unmodified,
//! dynamically linked program `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT` and
//! `TCP_USER_TIMEOUT`, configured by `KEEPALIVE_*` environment variables.
//!
//! Layout: `hooks` (the exported detours, thin), `sockets` (deciding and applying the options),
//! `descriptors` (what is known of each descriptor), `deepbind` (libraries loaded with
//! `RTLD_DEEPBIND`), `copies` (two copies in one process), `log` (stderr lines without
//! allocation), `init` (the load-time constructor), `locator` (where another process finds the
//! counters), `preloaded` (whether the program's own `LD_PRELOAD` names this copy's file),
//! `real` (libc's functions behind the hooks), `errno`, `heap` (the host's malloc as the
//! allocator of the `no_std` build). The configuration and the rules every mechanism shares
//! are in the `keepalive-shim-policy` crate.

// The shipped library (built with panic = "abort") is no_std: std's panic machinery alone (a
// backtrace symbolizer) was over half of its size. cargo builds the crate with unwinding for test
// harnesses, where std stays.
#![cfg_attr(panic = "abort", no_std)]

extern crate alloc;

// The configuration and socket policy, shared with the command-line tool.
use keepalive_shim_policy::config;
pub mod copies;
// What the library did, counted, for `keepalive-shim inspect` and `metrics`.
pub mod counters;
pub mod descriptors;
// Libraries loaded with RTLD_DEEPBIND, reached through the `dlopen` hook (glibc, x86_64 and
// aarch64: the hook is a naked function in assembly).
#[cfg(all(
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod deepbind;
mod errno;
#[cfg(panic = "abort")]
mod heap;
mod hooked;
// The detours are left out of unit-test builds so the test binary does not interpose on itself.
#[cfg(not(test))]
mod hooks;
mod init;
// Where another process finds the counters: a named anonymous page (left out of unit-test
// builds, which do not link as the library).
#[cfg(not(test))]
mod locator;
pub mod log;
// Whether the program's own LD_PRELOAD gave it this copy, by the file's device and inode.
mod preloaded;
mod quiet;
mod real;
pub mod sockets;

// The precompiled `core` and `alloc` in Rust's sysroot are built to unwind: their landing pads
// name `rust_eh_personality` (which std would define) and end in `_Unwind_Resume` (libgcc_s).
// Left undefined, they make every program fail to start under LD_BIND_NOW. This library never
// unwinds, so the personality routine only has to say "no handler, keep going"
// (_URC_CONTINUE_UNWIND = 8), should a foreign unwind (a thread cancelled in connect()) pass
// through such a frame; it then never enters a landing pad, so `_Unwind_Resume` is unreachable
// and aborts. Both are defined in assembly to make them hidden: exported, they would replace the
// real ones of any Rust extension module or C++ library in the host process.
#[cfg(all(panic = "abort", target_arch = "x86_64"))]
core::arch::global_asm!(
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality, @function",
    "rust_eh_personality:",
    "mov eax, 8",
    "ret",
    ".globl _Unwind_Resume",
    ".hidden _Unwind_Resume",
    ".type _Unwind_Resume, @function",
    "_Unwind_Resume:",
    "jmp abort@PLT",
);
#[cfg(all(panic = "abort", target_arch = "aarch64"))]
core::arch::global_asm!(
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality, %function",
    "rust_eh_personality:",
    "mov w0, #8",
    "ret",
    ".globl _Unwind_Resume",
    ".hidden _Unwind_Resume",
    ".type _Unwind_Resume, %function",
    "_Unwind_Resume:",
    "b abort",
);

/// A panic cannot happen on any hook path; should one happen anyway, end the process rather than
/// return garbage to the program.
#[cfg(panic = "abort")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
