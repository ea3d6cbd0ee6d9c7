//! Load time: the constructor that resolves the real functions and reads the configuration once,
//! and the read-only access the hooks use afterwards.
//!
//! The hooks never block: they read a `OnceLock` with `get()`, an atomic load. A hook that runs
//! before the constructor (from another library's constructor) loads the configuration itself if
//! no other thread is doing so, and otherwise passes its call through untouched rather than wait.

use crate::config::{self, LogLevel, Settings};
use crate::{log, real};
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static LOADING: AtomicBool = AtomicBool::new(false);

/// The settings in force; `None` only while another thread is still reading them at load time.
#[inline]
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get().or_else(|| {
        load();
        SETTINGS.get()
    })
}

/// Reads the environment, reports its problems and publishes the settings, once per process.
/// In strict mode a problem ends the process with status 78 before `main` runs.
pub fn load() {
    if LOADING.swap(true, Ordering::AcqRel) {
        return;
    }
    real::resolve_all();
    let loaded = config::from_env();
    log::set_level(loaded.settings.log);
    if loaded.rejected() {
        for problem in &loaded.problems {
            log::line(format_args!("{}", problem.strict_message()));
        }
        log::line(format_args!(
            "KEEPALIVE_STRICT is on: exiting with status {} (EX_CONFIG)",
            config::EX_CONFIG
        ));
        // SAFETY: _exit ends the process at once, without running atexit handlers of a program
        // whose main has not started.
        unsafe { libc::_exit(config::EX_CONFIG) };
    }
    if log::enabled(LogLevel::Warn) {
        for problem in &loaded.problems {
            log::line(format_args!("{problem}"));
        }
    }
    let _ = SETTINGS.set(loaded.settings);
}

#[cfg(not(test))]
extern "C" fn constructor() {
    load();
}

/// Runs [`constructor`] when the dynamic loader maps the library, before the program's `main`.
#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = constructor;
