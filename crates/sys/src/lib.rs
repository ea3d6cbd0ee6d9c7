//! keepalive-shim's floor of system calls: everything the tool and its engines ask of Linux,
//! written once. No decisions (those are the policy crate's) and no sentences for users (those are
//! the commands'): each function does one system thing and returns what it found or the error.
//!
//! What another process shows (its `/proc` files, its memory, the files it maps) is read here
//! bounded: a fixed cap on bytes and lines, nothing followed that the reader did not choose.

pub mod elf;
pub mod fs;
pub mod kernel;
pub mod output;
pub mod pidfd;
pub mod proc;
pub mod remote;
pub mod sandbox;
pub mod sockopt;
