//! Link settings of the preload library that `#[link]` cannot express: its NEEDED entries.
//!
//! The library must name the C library it needs, or a program that does not itself link what the
//! library uses fails to start with it preloaded (`undefined symbol: dlsym`). On glibc it needs
//! `libc.so.6`, and `libdl.so.2`, where glibc before 2.34 keeps `dlsym` (src/real.rs binds that
//! old version). Both are named with `--no-as-needed`: on a glibc of 2.34 or later nothing
//! resolves from `libdl.so.2` at link time, and the linker would otherwise drop it. musl's loader
//! provides both names from itself.
//!
//! And a second, local name for the exported counter block, `keepalive_shim_counters_of_this_copy`
//! (`--defsym`): inside a shared library a reference to its own exported symbol binds to the
//! first definition in the process, which is another copy's when two copies are loaded. The
//! defined name is not exported (rustc's version script makes every name it does not export
//! local), so a reference to it is this copy's block (src/locator.rs).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--defsym=keepalive_shim_counters_of_this_copy=keepalive_shim_counters"
        );
    }
    if os == "linux" && env == "gnu" {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--push-state,--no-as-needed,-lc,-l:libdl.so.2,--pop-state"
        );
    }
}
