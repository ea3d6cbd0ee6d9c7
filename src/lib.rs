//! keepalive-shim: an `LD_PRELOAD` library that gives every TCP connection of an unmodified,
//! dynamically linked program `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT` and
//! `TCP_USER_TIMEOUT`, configured by `KEEPALIVE_*` environment variables.
//!
//! Layout: `hooks` (the exported detours, thin), `sockets` (deciding and applying the options),
//! `config` (parsing and validation), `log` (stderr lines without allocation), `init` (the
//! load-time constructor), `real` (libc's functions behind the hooks), `errno`.

pub mod config;
mod errno;
// The detours are left out of unit-test builds so the test binary does not interpose on itself.
#[cfg(not(test))]
mod hooks;
mod init;
pub mod log;
mod real;
pub mod sockets;
