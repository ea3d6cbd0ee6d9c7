//! Configuration: reads the `KEEPALIVE_*` variables (and libkeepalive's names), validates each one,
//! and records where every effective value came from and what was wrong with the rest.
//!
//! Plain Rust with no I/O beyond reading the environment: the preload library calls [`from_env`]
//! once at load time, the command-line tool's `check` calls the same function, and unit tests call
//! [`load`] with a list of variables. It needs only `core` and `alloc`, so the `no_std` library
//! and the command-line tool use the same code.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Every variable this project reads, with what the command-line tool adds.
pub const IDLE: &str = "KEEPALIVE_IDLE";
pub const INTERVAL: &str = "KEEPALIVE_INTERVAL";
pub const COUNT: &str = "KEEPALIVE_COUNT";
pub const USER_TIMEOUT: &str = "KEEPALIVE_USER_TIMEOUT";
pub const ENABLE: &str = "KEEPALIVE_ENABLE";
pub const FORCE: &str = "KEEPALIVE_FORCE";
pub const LOG: &str = "KEEPALIVE_LOG";
pub const STRICT: &str = "KEEPALIVE_STRICT";
/// Read by `keepalive-shim run` to find the library; the library only knows the name.
pub const SHIM_LIBRARY: &str = "KEEPALIVE_SHIM_LIBRARY";

/// libkeepalive's names, honoured where the matching `KEEPALIVE_*` variable is unset.
pub const ALIAS_IDLE: &str = "KEEPIDLE";
pub const ALIAS_INTERVAL: &str = "KEEPINTVL";
pub const ALIAS_COUNT: &str = "KEEPCNT";
pub const ALIAS_ENABLE: &str = "KEEPALIVE";

/// The known `KEEPALIVE_*` names, in the order the settings table lists them.
pub const KNOWN: [&str; 9] = [
    IDLE,
    INTERVAL,
    COUNT,
    USER_TIMEOUT,
    ENABLE,
    FORCE,
    LOG,
    STRICT,
    SHIM_LIBRARY,
];

/// The kernel's ranges (`man 7 tcp`): anything outside them is EINVAL.
pub const SECONDS_MAX: u32 = 32767;
pub const COUNT_MAX: u32 = 127;
pub const USER_TIMEOUT_MAX_MS: u32 = i32::MAX as u32;

pub const ACCEPT_SECONDS: &str = "whole seconds from 1 to 32767 (like 30, 90s, 2m)";
pub const ACCEPT_COUNT: &str = "a whole number from 1 to 127";
pub const ACCEPT_USER_TIMEOUT: &str =
    "a duration from 0 to 2147483647ms (like 60, 45s, 1500ms, 2m; 0 keeps the kernel's default)";
pub const ACCEPT_BOOL: &str = "one of 1/0, true/false, on/off, yes/no";
pub const ACCEPT_LOG: &str = "one of off, warn, debug";

/// How much the library writes to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off = 0,
    Warn = 1,
    Debug = 2,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Warn => "warn",
            LogLevel::Debug => "debug",
        }
    }
}

/// The effective settings: what the hooks apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub idle_s: u32,
    pub interval_s: u32,
    pub count: u32,
    /// `TCP_USER_TIMEOUT` in milliseconds; 0 is the kernel's default (no user timeout).
    pub user_timeout_ms: u32,
    pub force: bool,
    pub log: LogLevel,
    pub strict: bool,
}

pub const DEFAULT: Settings = Settings {
    enabled: true,
    idle_s: 30,
    interval_s: 10,
    count: 3,
    user_timeout_ms: 60_000,
    force: false,
    log: LogLevel::Warn,
    strict: false,
};

impl Default for Settings {
    fn default() -> Self {
        DEFAULT
    }
}

/// `idle + interval × count`, in milliseconds, capped at the kernel's maximum user timeout.
pub fn derived_user_timeout_ms(idle_s: u32, interval_s: u32, count: u32) -> u32 {
    let seconds = u64::from(idle_s) + u64::from(interval_s) * u64::from(count);
    (seconds * 1000).min(u64::from(USER_TIMEOUT_MAX_MS)) as u32
}

/// Where one effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// Computed from idle, interval and count (the user timeout only).
    Derived,
    Variable(&'static str),
    /// One of libkeepalive's names.
    Alias(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived => f.write_str("derived: idle + interval * count"),
            Origin::Variable(name) => write!(f, "{name}"),
            Origin::Alias(name) => write!(f, "{name} (libkeepalive's name)"),
        }
    }
}

/// The origin of each field of [`Settings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origins {
    pub enabled: Origin,
    pub idle: Origin,
    pub interval: Origin,
    pub count: Origin,
    pub user_timeout: Origin,
    pub force: Origin,
    pub log: Origin,
    pub strict: Origin,
}

/// Something wrong with the environment: one per variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A value that does not parse or is out of range; `fallback` is what is used instead.
    Invalid {
        variable: &'static str,
        value: String,
        accepted: &'static str,
        fallback: String,
    },
    /// A `KEEPALIVE_*` name this project does not know.
    Unknown {
        variable: String,
        closest: &'static str,
    },
}

impl Problem {
    pub fn variable(&self) -> &str {
        match self {
            Problem::Invalid { variable, .. } => variable,
            Problem::Unknown { variable, .. } => variable,
        }
    }

    /// The sentence for strict mode: the same problem, without what would have been used instead.
    pub fn strict_message(&self) -> String {
        match self {
            Problem::Invalid {
                variable,
                value,
                accepted,
                ..
            } => format!("{variable}=\"{value}\" is not {accepted}"),
            Problem::Unknown { variable, closest } => {
                format!("{variable} is not a known setting (did you mean {closest}?)")
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Invalid {
                variable,
                value,
                accepted,
                fallback,
            } => write!(
                f,
                "{variable}=\"{value}\" is not {accepted}; using {fallback}"
            ),
            Problem::Unknown { variable, closest } => write!(
                f,
                "{variable} is not a known setting (did you mean {closest}?); ignored"
            ),
        }
    }
}

/// The result of reading the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub settings: Settings,
    pub origins: Origins,
    pub problems: Vec<Problem>,
}

impl Loaded {
    /// Strict mode is on and something is wrong: the library exits with [`EX_CONFIG`].
    pub fn rejected(&self) -> bool {
        self.settings.strict && !self.problems.is_empty()
    }
}

/// `sysexits.h`: configuration error.
pub const EX_CONFIG: i32 = 78;

/// Reads the process environment straight from `environ` (no lock, no copy of other programs'
/// variables). Non-UTF-8 variables of other programs are skipped; a non-UTF-8 value of one of ours
/// is reported as invalid.
pub fn from_env() -> Loaded {
    unsafe extern "C" {
        static environ: *const *const core::ffi::c_char;
    }
    let mut entries = Vec::new();
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings, set up before any
    // constructor runs; it is only read here.
    unsafe {
        let mut at = environ;
        while !at.is_null() && !(*at).is_null() {
            entries.push(core::ffi::CStr::from_ptr(*at).to_bytes());
            at = at.add(1);
        }
    }
    load(entries.into_iter().filter_map(|entry| {
        let split = entry.iter().position(|&b| b == b'=')?;
        Some((&entry[..split], &entry[split + 1..]))
    }))
}

/// Reads the given variables, as `(name, value)` bytes, as if they were the environment.
pub fn load<I, K, V>(vars: I) -> Loaded
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut env = Env::default();
    for (name, value) in vars {
        let Ok(name) = core::str::from_utf8(name.as_ref()) else {
            continue;
        };
        if name.starts_with("KEEPALIVE_")
            || [ALIAS_IDLE, ALIAS_INTERVAL, ALIAS_COUNT, ALIAS_ENABLE].contains(&name)
        {
            let value = String::from_utf8_lossy(value.as_ref()).into_owned();
            env.vars.push((name.to_owned(), value));
        }
    }
    env.resolve()
}

#[derive(Default)]
struct Env {
    /// Only our own variables, as `(name, value)`; a non-UTF-8 value arrives with U+FFFD in it,
    /// which no parser accepts.
    vars: Vec<(String, String)>,
    problems: Vec<Problem>,
}

impl Env {
    fn get(&self, name: &str) -> Option<&str> {
        // The last one wins, as with getenv() on an environment that names a variable twice.
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Looks up `name`, then `alias`, and parses what it finds; an invalid value is recorded as a
    /// problem and the default stands.
    fn setting<T: Copy>(
        &mut self,
        name: &'static str,
        alias: Option<&'static str>,
        parse: fn(&str) -> Option<T>,
        accepted: &'static str,
        default: T,
        show: fn(T) -> String,
    ) -> (T, Origin) {
        let found = match (self.get(name), alias) {
            (Some(value), _) => Some((name, Origin::Variable(name), value)),
            (None, Some(alias)) => self.get(alias).map(|v| (alias, Origin::Alias(alias), v)),
            (None, None) => None,
        };
        let Some((variable, origin, value)) = found else {
            return (default, Origin::Default);
        };
        match parse(value) {
            Some(parsed) => (parsed, origin),
            None => {
                let value = escape(value);
                self.problems.push(Problem::Invalid {
                    variable,
                    value,
                    accepted,
                    fallback: show(default),
                });
                (default, Origin::Default)
            }
        }
    }

    fn resolve(mut self) -> Loaded {
        let d = DEFAULT;
        let (idle_s, idle) = self.setting(
            IDLE,
            Some(ALIAS_IDLE),
            parse_seconds,
            ACCEPT_SECONDS,
            d.idle_s,
            show_seconds,
        );
        let (interval_s, interval) = self.setting(
            INTERVAL,
            Some(ALIAS_INTERVAL),
            parse_seconds,
            ACCEPT_SECONDS,
            d.interval_s,
            show_seconds,
        );
        let (count, count_origin) = self.setting(
            COUNT,
            Some(ALIAS_COUNT),
            parse_count,
            ACCEPT_COUNT,
            d.count,
            |n| n.to_string(),
        );
        // The user timeout's default follows the values in effect, so an explicit idle moves it.
        let derived = derived_user_timeout_ms(idle_s, interval_s, count);
        let (user_timeout_ms, mut user_timeout) = self.setting(
            USER_TIMEOUT,
            None,
            parse_user_timeout_ms,
            ACCEPT_USER_TIMEOUT,
            derived,
            |ms| format!("{} (idle + interval * count)", show_ms(ms)),
        );
        if user_timeout == Origin::Default {
            user_timeout = Origin::Derived;
        }
        let (enabled, enabled_origin) = self.setting(
            ENABLE,
            Some(ALIAS_ENABLE),
            parse_bool,
            ACCEPT_BOOL,
            d.enabled,
            show_bool,
        );
        let (force, force_origin) =
            self.setting(FORCE, None, parse_bool, ACCEPT_BOOL, d.force, show_bool);
        let (log, log_origin) = self.setting(LOG, None, parse_log, ACCEPT_LOG, d.log, |l| {
            l.name().to_owned()
        });
        let (strict, strict_origin) =
            self.setting(STRICT, None, parse_bool, ACCEPT_BOOL, d.strict, show_bool);

        let mut unknown: Vec<&str> = self
            .vars
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("KEEPALIVE_") && !KNOWN.contains(n))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let unknown: Vec<Problem> = unknown
            .into_iter()
            .map(|n| Problem::Unknown {
                variable: n.to_owned(),
                closest: closest_known(n),
            })
            .collect();
        self.problems.extend(unknown);

        Loaded {
            settings: Settings {
                enabled,
                idle_s,
                interval_s,
                count,
                user_timeout_ms,
                force,
                log,
                strict,
            },
            origins: Origins {
                enabled: enabled_origin,
                idle,
                interval,
                count: count_origin,
                user_timeout,
                force: force_origin,
                log: log_origin,
                strict: strict_origin,
            },
            problems: self.problems,
        }
    }
}

/// Splits `"90s"` into `(90, "s")`; `None` without leading ASCII digits or when they overflow.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = s[..digits].parse::<u64>().ok()?;
    Some((number, &s[digits..]))
}

/// Whole seconds from 1 to 32767: a bare number is seconds; suffixes `s`, `m`, `h`.
pub fn parse_seconds(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    let unit = match suffix {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    let seconds = number.checked_mul(unit)?;
    (1..=u64::from(SECONDS_MAX))
        .contains(&seconds)
        .then_some(seconds as u32)
}

/// A whole number from 1 to 127.
pub fn parse_count(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    (suffix.is_empty() && (1..=u64::from(COUNT_MAX)).contains(&number)).then_some(number as u32)
}

/// Milliseconds from 0 to `i32::MAX`: a bare number is seconds; suffixes `ms`, `s`, `m`.
pub fn parse_user_timeout_ms(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    let unit = match suffix {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        _ => return None,
    };
    let ms = number.checked_mul(unit)?;
    (ms <= u64::from(USER_TIMEOUT_MAX_MS)).then_some(ms as u32)
}

/// `1/0`, `true/false`, `on/off`, `yes/no`, in any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// `off`, `warn`, `debug`, in any case.
pub fn parse_log(s: &str) -> Option<LogLevel> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Some(LogLevel::Off),
        "warn" => Some(LogLevel::Warn),
        "debug" => Some(LogLevel::Debug),
        _ => None,
    }
}

pub fn show_seconds(s: u32) -> String {
    format!("{s}s")
}

/// `60000` → `60s`, `1500` → `1500ms`, `0` → `0 (the kernel's default)`.
pub fn show_ms(ms: u32) -> String {
    match ms {
        0 => "0 (the kernel's default)".to_owned(),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

pub fn show_bool(b: bool) -> String {
    if b { "on" } else { "off" }.to_owned()
}

/// A value as it may be shown between double quotes on one line.
fn escape(value: &str) -> String {
    value.chars().flat_map(char::escape_debug).collect()
}

/// The known name nearest to `name` by edit distance (ties: the first in [`KNOWN`]).
fn closest_known(name: &str) -> &'static str {
    KNOWN
        .iter()
        .copied()
        .min_by_key(|known| edit_distance(name, known))
        .unwrap_or(IDLE)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// How long until a dead peer is detected, in milliseconds, by the kernel's rules
/// (`tcp_keepalive_timer`): with a user timeout the keepalive timer ignores the count and aborts at
/// the first probe interval at or after the user timeout, with at least one probe out.
pub fn idle_detection_ms(s: &Settings) -> u64 {
    let idle = u64::from(s.idle_s) * 1000;
    let interval = u64::from(s.interval_s) * 1000;
    let user_timeout = u64::from(s.user_timeout_ms);
    if user_timeout == 0 {
        return idle + interval * u64::from(s.count);
    }
    let probes = user_timeout.saturating_sub(idle).div_ceil(interval).max(1);
    idle + interval * probes
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn with(vars: &[(&str, &str)]) -> Loaded {
        load(vars.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn defaults_with_an_empty_environment() {
        let loaded = with(&[]);
        assert_eq!(loaded.settings, DEFAULT);
        assert!(loaded.problems.is_empty());
        assert_eq!(loaded.origins.idle, Origin::Default);
        assert_eq!(loaded.origins.user_timeout, Origin::Derived);
        assert_eq!(DEFAULT.user_timeout_ms, derived_user_timeout_ms(30, 10, 3));
    }

    #[test]
    fn every_variable_of_the_table() {
        let loaded = with(&[
            (IDLE, "2m"),
            (INTERVAL, "15s"),
            (COUNT, "5"),
            (USER_TIMEOUT, "1500ms"),
            (ENABLE, "YES"),
            (FORCE, "On"),
            (LOG, "DEBUG"),
            (STRICT, "true"),
        ]);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let s = loaded.settings;
        assert_eq!(
            (s.idle_s, s.interval_s, s.count, s.user_timeout_ms),
            (120, 15, 5, 1500)
        );
        assert!(s.enabled && s.force && s.strict);
        assert_eq!(s.log, LogLevel::Debug);
        assert_eq!(loaded.origins.idle, Origin::Variable(IDLE));
        assert_eq!(loaded.origins.user_timeout, Origin::Variable(USER_TIMEOUT));
    }

    #[test]
    fn seconds_accept_bare_numbers_and_suffixes() {
        for (text, seconds) in [
            ("1", 1),
            ("30", 30),
            ("90s", 90),
            ("2m", 120),
            ("1h", 3600),
            ("32767", 32767),
            ("007", 7),
        ] {
            assert_eq!(parse_seconds(text), Some(seconds), "{text}");
        }
    }

    #[test]
    fn every_class_of_bad_seconds_is_rejected() {
        for text in [
            "abc",                     // not a number
            "0",                       // zero
            "-5",                      // negative
            "32768",                   // over the range
            "10h",                     // over the range through its suffix
            "99999999999999999999999", // overflowing u64
            "18446744073709551615h",   // overflowing the multiplication
            "",                        // empty
            "0.5",                     // sub-second
            "500ms",                   // sub-second through a suffix we do not take here
            "30x",                     // unknown suffix
            "30S",                     // suffixes are lower case
            " 30",                     // surrounding spaces
            "30 ",
            "+30",
            "3 0",
        ] {
            assert_eq!(parse_seconds(text), None, "{text:?}");
        }
    }

    #[test]
    fn count_range() {
        assert_eq!(parse_count("1"), Some(1));
        assert_eq!(parse_count("127"), Some(127));
        for text in [
            "0",
            "128",
            "-1",
            "3s",
            "",
            " 3",
            "x",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_count(text), None, "{text:?}");
        }
    }

    #[test]
    fn user_timeout_units_and_range() {
        for (text, ms) in [
            ("0", 0),
            ("60", 60_000),
            ("45s", 45_000),
            ("1500ms", 1500),
            ("2m", 120_000),
            ("2147483647ms", i32::MAX as u32),
        ] {
            assert_eq!(parse_user_timeout_ms(text), Some(ms), "{text}");
        }
        for text in [
            "2147483648ms",
            "2147484s",
            "-1",
            "1h",
            "1.5s",
            "",
            "5 s",
            "x",
        ] {
            assert_eq!(parse_user_timeout_ms(text), None, "{text:?}");
        }
    }

    #[test]
    fn booleans_in_every_spelling() {
        for t in ["1", "true", "TRUE", "on", "On", "yes", "YeS"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for t in ["0", "false", "False", "off", "OFF", "no", "No"] {
            assert_eq!(parse_bool(t), Some(false), "{t}");
        }
        for t in ["", "2", "y", "enable", " on"] {
            assert_eq!(parse_bool(t), None, "{t:?}");
        }
    }

    #[test]
    fn derived_user_timeout_follows_the_values_in_effect() {
        let loaded = with(&[(IDLE, "2"), (INTERVAL, "1"), (COUNT, "2")]);
        assert_eq!(loaded.settings.user_timeout_ms, 4000);
        assert_eq!(loaded.origins.user_timeout, Origin::Derived);
        // An invalid explicit value falls back to the derived one, not to 60 s.
        let loaded = with(&[
            (IDLE, "2"),
            (INTERVAL, "1"),
            (COUNT, "2"),
            (USER_TIMEOUT, "soon"),
        ]);
        assert_eq!(loaded.settings.user_timeout_ms, 4000);
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_USER_TIMEOUT=\"soon\" is not a duration from 0 to 2147483647ms (like 60, \
             45s, 1500ms, 2m; 0 keeps the kernel's default); using 4s (idle + interval * count)"
        );
        // The largest values overflow the kernel's user timeout range: capped, not wrapped.
        assert_eq!(derived_user_timeout_ms(32767, 32767, 127), i32::MAX as u32);
    }

    #[test]
    fn an_invalid_value_falls_back_to_its_default_alone() {
        let loaded = with(&[(IDLE, "abc"), (INTERVAL, "5")]);
        assert_eq!(loaded.settings.idle_s, 30);
        assert_eq!(loaded.settings.interval_s, 5);
        assert!(loaded.settings.enabled, "keepalive stays on");
        assert_eq!(
            loaded.problems,
            vec![Problem::Invalid {
                variable: IDLE,
                value: "abc".into(),
                accepted: ACCEPT_SECONDS,
                fallback: "30s".into()
            }]
        );
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); using 30s"
        );
        assert!(!loaded.rejected(), "not strict");
    }

    #[test]
    fn values_are_shown_escaped_on_one_line() {
        let loaded = with(&[(COUNT, "3\n\"x\"")]);
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_COUNT=\"3\\n\\\"x\\\"\" is not a whole number from 1 to 127; using 3"
        );
    }

    #[test]
    fn libkeepalive_names_where_ours_are_unset() {
        let loaded = with(&[
            (ALIAS_IDLE, "40"),
            (ALIAS_INTERVAL, "7"),
            (ALIAS_COUNT, "4"),
        ]);
        let s = loaded.settings;
        assert_eq!((s.idle_s, s.interval_s, s.count), (40, 7, 4));
        assert_eq!(s.user_timeout_ms, 68_000);
        assert_eq!(loaded.origins.idle, Origin::Alias(ALIAS_IDLE));
        assert!(!with(&[(ALIAS_ENABLE, "off")]).settings.enabled);
        // Ours win over libkeepalive's.
        let loaded = with(&[(ALIAS_IDLE, "40"), (IDLE, "50")]);
        assert_eq!(loaded.settings.idle_s, 50);
        assert_eq!(loaded.origins.idle, Origin::Variable(IDLE));
        // A bad alias value is named by its own name.
        let loaded = with(&[(ALIAS_COUNT, "lots")]);
        assert_eq!(loaded.problems[0].variable(), ALIAS_COUNT);
    }

    #[test]
    fn unknown_names_get_the_closest_known_one() {
        let loaded = with(&[("KEEPALIVE_INTERVALL", "5"), ("KEEPALIVE_IDEL", "5")]);
        let messages: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "KEEPALIVE_IDEL is not a known setting (did you mean KEEPALIVE_IDLE?); ignored",
                "KEEPALIVE_INTERVALL is not a known setting (did you mean KEEPALIVE_INTERVAL?); ignored",
            ]
        );
        assert!(with(&[(SHIM_LIBRARY, "/x.so")]).problems.is_empty());
    }

    #[test]
    fn strict_rejects_invalid_and_unknown() {
        assert!(with(&[(STRICT, "1"), (IDLE, "0")]).rejected());
        assert!(with(&[(STRICT, "1"), ("KEEPALIVE_TYPO", "1")]).rejected());
        assert!(!with(&[(STRICT, "1"), (IDLE, "10")]).rejected());
        let loaded = with(&[(STRICT, "1"), (IDLE, "0")]);
        assert_eq!(
            loaded.problems[0].strict_message(),
            "KEEPALIVE_IDLE=\"0\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m)"
        );
    }

    #[test]
    fn non_utf8_values_never_crash() {
        let bad: &[u8] = b"3\xff";
        let loaded = load([
            (&b"SOMETHING_ELSE"[..], bad),
            (&b"\xfeX"[..], bad),
            (IDLE.as_bytes(), bad),
        ]);
        assert_eq!(loaded.settings.idle_s, 30);
        assert_eq!(loaded.problems.len(), 1);
        assert_eq!(loaded.problems[0].variable(), IDLE);
    }

    #[test]
    fn log_levels() {
        assert_eq!(with(&[(LOG, "off")]).settings.log, LogLevel::Off);
        assert_eq!(with(&[(LOG, "Warn")]).settings.log, LogLevel::Warn);
        assert_eq!(with(&[(LOG, "verbose")]).settings.log, LogLevel::Warn);
    }

    #[test]
    fn detection_times_follow_the_kernel() {
        let mut s = DEFAULT;
        assert_eq!(idle_detection_ms(&s), 60_000);
        (s.idle_s, s.interval_s, s.count, s.user_timeout_ms) = (2, 1, 2, 4000);
        assert_eq!(idle_detection_ms(&s), 4000);
        // Without a user timeout: idle + interval * count.
        s.user_timeout_ms = 0;
        assert_eq!(idle_detection_ms(&s), 4000);
        // A user timeout shorter than the idle time still needs one probe out.
        (s.idle_s, s.user_timeout_ms) = (30, 3000);
        assert_eq!(idle_detection_ms(&s), 31_000);
        // A long user timeout overrides the count.
        (s.idle_s, s.interval_s, s.count, s.user_timeout_ms) = (10, 10, 3, 95_000);
        assert_eq!(idle_detection_ms(&s), 100_000);
    }
}
