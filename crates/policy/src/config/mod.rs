//! Configuration: reads the `KEEPALIVE_*` variables (and libkeepalive's names) from the
//! environment and from the system file `/etc/keepalive-shim.conf`, validates each one, and
//! records where every effective value came from and what was wrong with the rest.
//!
//! The preload library calls [`from_process`] once at load time, the command-line tool's `check`
//! calls the same code, and unit tests call [`load`] (variables only) or [`load_system`] (file
//! text, variables, secure mode). It needs only `core`, `alloc` and a few libc calls (the file,
//! `getauxval`), so the `no_std` library and the command-line tool decide with the same code.
//!
//! Precedence, per setting: the environment (our name, then libkeepalive's), then the file (the
//! same), then the default. Under secure execution (`AT_SECURE`: a setuid, setgid or
//! capability-raising program) the environment belongs to the caller and is not read at all.
//!
//! Where each part lives: `names.rs` (the variables' names, libkeepalive's aliases, the near
//! misses and "did you mean"), `source.rs` (the environment, the file, secure execution),
//! `resolve.rs` (precedence), `values.rs` (parsing and showing each kind of value), `report.rs`
//! (origins, problems and their sentences). The [`Settings`] themselves are in
//! [`crate::settings`]; everything is re-exported here, so callers name `config::X` alone.

mod names;
mod report;
mod resolve;
mod source;
mod values;

pub use crate::settings::{
    COUNT_MAX, DEFAULT, LogLevel, SECONDS_MAX, Settings, USER_TIMEOUT_MAX_MS,
    derived_user_timeout_ms, idle_detection_ms,
};
pub use names::{
    ALIAS_COUNT, ALIAS_ENABLE, ALIAS_IDLE, ALIAS_INTERVAL, ALIASES, COUNT, ENABLE, EXCLUDE, FORCE,
    IDLE, INCLUDE, INTERVAL, KNOWN, LOG, SHIM_LIBRARY, SHIM_PREFIX, STRICT, USER_TIMEOUT,
};
pub use report::{EX_CONFIG, FileUse, Loaded, Origin, Origins, Problem, escape};
pub use source::{
    FILE_MAX, SYSTEM_FILE, SystemFile, environ_entries, from_process, judge_file, load,
    load_system, read_file, read_system_file, secure_execution,
};
pub use values::{
    ACCEPT_BOOL, ACCEPT_COUNT, ACCEPT_LOG, ACCEPT_RULE, ACCEPT_SECONDS, ACCEPT_USER_TIMEOUT,
    parse_bool, parse_count, parse_log, parse_seconds, parse_user_timeout_ms, show_bool, show_ms,
    show_seconds,
};

/// What the submodules' tests share: loading given variables and file text.
#[cfg(test)]
mod testing {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    pub(super) fn with(vars: &[(&str, &str)]) -> Loaded {
        load(vars.iter().map(|(k, v)| (*k, *v)))
    }

    pub(super) fn file(text: &str) -> SystemFile {
        SystemFile::Text(text.as_bytes().to_vec())
    }

    pub(super) fn with_file(text: &str, vars: &[(&str, &str)]) -> Loaded {
        load_system(&file(text), vars.iter().map(|(k, v)| (*k, *v)), false)
    }

    pub(super) fn messages(loaded: &Loaded) -> Vec<String> {
        loaded.problems.iter().map(ToString::to_string).collect()
    }
}
