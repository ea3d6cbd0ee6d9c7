//! The effective settings: the [`Settings`] value the hooks apply, its [`DEFAULT`], the
//! kernel's ranges for its values, and what follows from it (the derived user timeout, which
//! destinations it touches, how long a dead peer takes to be detected). Where the values come
//! from is [`crate::config`]'s job.

use crate::rules::{Destination, Rules};

/// The kernel's ranges (`man 7 tcp`): anything outside them is EINVAL.
pub const SECONDS_MAX: u32 = 32767;
pub const COUNT_MAX: u32 = 127;
pub const USER_TIMEOUT_MAX_MS: u32 = i32::MAX as u32;

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
    /// `user_timeout_ms` was given (`KEEPALIVE_USER_TIMEOUT`, valid), not derived from idle,
    /// interval and count. See [`crate::options::user_timeout_for`].
    pub user_timeout_explicit: bool,
    pub force: bool,
    pub log: LogLevel,
    pub strict: bool,
    /// `KEEPALIVE_EXCLUDE`: destinations left as the program made them.
    pub exclude: Rules,
    /// `KEEPALIVE_INCLUDE`: when not empty, the only destinations configured.
    pub include: Rules,
}

pub const DEFAULT: Settings = Settings {
    enabled: true,
    idle_s: 30,
    interval_s: 10,
    count: 3,
    user_timeout_ms: 60_000,
    user_timeout_explicit: false,
    force: false,
    log: LogLevel::Warn,
    strict: false,
    exclude: Rules::EMPTY,
    include: Rules::EMPTY,
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

impl Settings {
    /// Whether the library configures a connection to `dest`: it is enabled, `dest` matches no
    /// `KEEPALIVE_EXCLUDE` rule, and, when `KEEPALIVE_INCLUDE` has rules, matches one of them
    /// (the exclusion wins). No allocation, no lock, no panic.
    #[inline]
    pub fn touches(&self, dest: &Destination) -> bool {
        self.enabled
            && !self.exclude.matches(dest)
            && (self.include.is_empty() || self.include.matches(dest))
    }

    /// Whether any destination rule is set: without one, [`Settings::touches`] is just
    /// `enabled`, and `connect()` need not look at the address.
    #[inline]
    pub fn has_rules(&self) -> bool {
        !self.exclude.is_empty() || !self.include.is_empty()
    }
}

/// [`Settings::touches`] as a free function.
#[inline]
pub fn applies(settings: &Settings, dest: &Destination) -> bool {
    settings.touches(dest)
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
    use crate::rules::parse_list;
    use core::net::Ipv4Addr;

    fn v4(a: &str, port: u16) -> Destination {
        let ip: Ipv4Addr = a.parse().unwrap();
        Destination {
            ip: ip.to_ipv6_mapped().octets(),
            port,
        }
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

    #[test]
    fn touches_excludes_first_then_includes() {
        let mut s = DEFAULT;
        let db = v4("10.1.2.3", 5432);
        let web = v4("10.1.2.3", 443);
        let outside = v4("192.0.2.1", 443);
        assert!(!s.has_rules());
        assert!(
            s.touches(&db) && s.touches(&outside),
            "no rules: everything"
        );
        s.exclude = parse_list(":5432").rules;
        assert!(s.has_rules());
        assert!(!s.touches(&db) && s.touches(&web) && s.touches(&outside));
        s.include = parse_list("10.0.0.0/8").rules;
        assert!(!s.touches(&db), "EXCLUDE wins over INCLUDE");
        assert!(s.touches(&web));
        assert!(!s.touches(&outside), "not included");
        assert!(applies(&s, &web));
        s.enabled = false;
        assert!(!s.touches(&web), "disabled: nothing");
    }
}
