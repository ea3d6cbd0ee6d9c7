//! Load time: the constructor that resolves the real functions and reads the configuration once
//! (`config::from_process`: the system file, and the environment unless the loader runs the
//! process in secure mode), and the read-only access the hooks use afterwards.
//!
//! The hooks never block: they read the published settings with one atomic load. A hook that
//! runs before the constructor (from another library's constructor) loads the configuration
//! itself if no other thread is doing so, and otherwise passes its call through untouched rather
//! than wait.
//!
//! The settings are published once, by whichever thread wins `LOADING`: a write-once cell of our
//! own (the library is `no_std`, so std's `OnceLock` is not available, and its `get_or_init`
//! would block anyway).

use crate::config::{self, LogLevel, Settings};
use crate::{log, real};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Settings written once, then only read.
struct Published {
    ready: AtomicBool,
    value: UnsafeCell<Settings>,
}

// SAFETY: `value` is written only by the one thread that won `LOADING`, before `ready` is set
// with Release; readers read it only after seeing `ready` with Acquire.
unsafe impl Sync for Published {}

static SETTINGS: Published = Published {
    ready: AtomicBool::new(false),
    value: UnsafeCell::new(config::DEFAULT),
};
static LOADING: AtomicBool = AtomicBool::new(false);

fn published() -> Option<&'static Settings> {
    // SAFETY: see `impl Sync for Published`: once ready, the value never changes again.
    SETTINGS
        .ready
        .load(Ordering::Acquire)
        .then(|| unsafe { &*SETTINGS.value.get() })
}

/// The settings in force; `None` only while another thread is still reading them at load time.
#[inline]
pub fn settings() -> Option<&'static Settings> {
    published().or_else(|| {
        load();
        published()
    })
}

/// Reads the configuration (`/etc/keepalive-shim.conf`, and the environment unless the process
/// runs in secure mode), reports its problems and publishes the settings, once per process.
/// In strict mode a problem ends the process with status 78 before `main` runs, if the
/// program's own `LD_PRELOAD` gave it the library (named this very file): never through
/// `/etc/ld.so.preload`.
pub fn load() {
    if LOADING.swap(true, Ordering::AcqRel) {
        return;
    }
    real::resolve_all();
    log::capture_stderr();
    crate::descriptors::limit_from_env();
    let loaded = config::from_process();
    log::set_level(loaded.settings.log);
    if loaded.secure {
        log::debug!(
            "secure execution (setuid, setgid or capabilities): the environment is ignored; only {} counts",
            config::SYSTEM_FILE
        );
    }
    if loaded.rejected() && !given_by_environment() {
        // Loaded from /etc/ld.so.preload (or needed by another library), not by this program's
        // own LD_PRELOAD: strict mode would stop programs that never asked for it, `ls` and
        // `sudo` among them. It runs on, saying so.
        if log::enabled(LogLevel::Warn) {
            for problem in &loaded.problems {
                log::line(format_args!("{problem}"));
            }
            log::line(format_args!(
                "KEEPALIVE_STRICT is on, but this program's LD_PRELOAD does not name the library \
                 (it came from /etc/ld.so.preload): strict mode stops only programs given the \
                 library by their own environment; running on"
            ));
        }
    } else if loaded.rejected() {
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
    // At the default level a wrapper's many processes report a problem once: the first of
    // them, whose parent does not carry the same configuration (`quiet.rs`). `debug` says all.
    if !loaded.rejected()
        && log::enabled(LogLevel::Warn)
        && !loaded.problems.is_empty()
        && (log::enabled(LogLevel::Debug) || loaded.secure || !crate::quiet::parent_said_it())
    {
        for problem in &loaded.problems {
            log::line(format_args!("{problem}"));
        }
    }
    // SAFETY: only the thread that won LOADING gets here, and no reader looks before `ready`.
    unsafe { *SETTINGS.value.get() = crate::copies::settings_for_this_copy(loaded.settings) };
    SETTINGS.ready.store(true, Ordering::Release);
    #[cfg(not(test))]
    crate::locator::publish();
}

/// Whether this process's own `LD_PRELOAD` names this copy's file (its first occurrence counts,
/// as with `getenv`): by device and inode (`preloaded.rs`).
fn given_by_environment() -> bool {
    config::environ_entries()
        .find_map(|entry| entry.strip_prefix(b"LD_PRELOAD="))
        .is_some_and(crate::preloaded::names_this_copy)
}

#[cfg(not(test))]
extern "C" fn constructor() {
    load();
    wait_for_another_loader();
}

/// When a thread started by an earlier constructor reached a hook first, it is the one loading
/// the configuration, and `load` returned at once: the program's `main` would start, and its
/// first sockets pass through, before the settings are published. The constructor (never a
/// hook) waits for them, a bounded time: 100 µs at a time, 200 ms at most, so a loader that
/// cannot finish (its thread blocked on the loader's lock, which a `dlopen` holds while this
/// constructor runs) never hangs the program.
#[cfg(not(test))]
fn wait_for_another_loader() {
    for _ in 0..2000 {
        if published().is_some() {
            return;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000,
        };
        // SAFETY: nanosleep reads `pause` and writes nothing (no remainder asked for); the
        // system call, not an import.
        unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &raw const pause,
                core::ptr::null_mut::<libc::timespec>(),
            )
        };
    }
}

/// Runs [`constructor`] when the dynamic loader maps the library, before the program's `main`.
#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = constructor;
