//! The values: how each kind is parsed (durations, counts, booleans, the log level), what each
//! accepts (for the messages), and how an effective value is shown.

use crate::settings::{COUNT_MAX, LogLevel, SECONDS_MAX, USER_TIMEOUT_MAX_MS};
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;

pub const ACCEPT_SECONDS: &str = "whole seconds from 1 to 32767 (like 30, 90s, 2m)";
pub const ACCEPT_COUNT: &str = "a whole number from 1 to 127";
pub const ACCEPT_USER_TIMEOUT: &str = "a duration from 0 to 2147483647ms (like 60, 45s, 1500ms, \
     2m, 1h; 0 keeps the kernel's default)";
pub const ACCEPT_BOOL: &str = "one of 1/0, true/false, on/off, yes/no";
pub const ACCEPT_LOG: &str = "one of off, warn, debug";
pub use crate::rules::ACCEPT_RULE;

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

/// Milliseconds from 0 to `i32::MAX`: a bare number is seconds; suffixes `ms`, `s`, `m`, `h`.
pub fn parse_user_timeout_ms(s: &str) -> Option<u32> {
    let (number, suffix) = split_number(s)?;
    let unit = match suffix {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LOG;
    use crate::config::testing::with;

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
            ("1h", 3_600_000),
            ("596h", 596 * 3_600_000),
        ] {
            assert_eq!(parse_user_timeout_ms(text), Some(ms), "{text}");
        }
        for text in [
            "2147483648ms",
            "2147484s",
            "-1",
            "597h",
            "1H",
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
    fn log_levels() {
        assert_eq!(with(&[(LOG, "off")]).settings.log, LogLevel::Off);
        assert_eq!(with(&[(LOG, "Warn")]).settings.log, LogLevel::Warn);
        assert_eq!(with(&[(LOG, "verbose")]).settings.log, LogLevel::Warn);
    }
}
