//! keepalive-shim's policy: the configuration (read from `/etc/keepalive-shim.conf` and the
//! environment, which secure execution ignores; validated, with the origin of every value and
//! every problem found), the socket options it gives TCP connections and the user timeout that
//! follows a program's own keepalive, and the destination rules decided at `connect()`. Plain
//! `no_std` Rust (`core` and `alloc`), so the preload library keeps its size and the
//! command-line tool decides with exactly the same code.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cases;
pub mod config;
pub mod counts;
pub mod decide;
pub mod options;
pub mod preload;
pub mod rules;
pub mod settings;
pub mod show;
