//! keepalive-shim's policy: the configuration (read from the environment, validated, with the
//! origin of every value and every problem found) and the socket options it gives TCP
//! connections. Plain `no_std` Rust (`core` and `alloc`), so the preload library keeps its size
//! and the command-line tool decides with exactly the same code.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod options;
