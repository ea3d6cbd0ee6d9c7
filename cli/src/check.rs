//! `keepalive-shim check`: reads the environment with the library's own configuration code and
//! shows the effective settings, where each came from, every warning the library would print, and
//! how long a dead peer would take to be noticed.

use crate::config::{self, EX_CONFIG, Loaded, Origin};
use std::fmt::Write;
use std::process::ExitCode;

/// Check the configuration in this environment before deploying it.
///
/// Exit status 0 when it is valid, 78 when the library would reject something in strict mode.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim check\n  \
    KEEPALIVE_IDLE=2m KEEPALIVE_USER_TIMEOUT=3m keepalive-shim check\n  \
    env -i KEEPIDLE=60 keepalive-shim check    # a libkeepalive user's environment")]
pub struct Args {}

pub fn main(_: Args) -> ExitCode {
    let loaded = config::from_env();
    print!("{}", report(&loaded));
    if loaded.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_CONFIG as u8)
    }
}

/// Seconds with up to one decimal: `60`, `4.5`.
fn secs(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

pub fn report(loaded: &Loaded) -> String {
    let s = &loaded.settings;
    let o = &loaded.origins;
    let rows: [(&str, String, Origin); 8] = [
        ("idle", config::show_seconds(s.idle_s), o.idle),
        ("interval", config::show_seconds(s.interval_s), o.interval),
        ("count", s.count.to_string(), o.count),
        (
            "user timeout",
            config::show_ms(s.user_timeout_ms),
            o.user_timeout,
        ),
        ("enabled", config::show_bool(s.enabled), o.enabled),
        ("force", config::show_bool(s.force), o.force),
        ("log", s.log.name().to_owned(), o.log),
        ("strict", config::show_bool(s.strict), o.strict),
    ];
    let mut out = String::new();
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
    let _ = writeln!(out, "{:<14}{:<width$}  from", "setting", "value");
    for (name, value, origin) in &rows {
        let _ = writeln!(out, "{name:<14}{value:<width$}  {origin}");
    }
    if !loaded.problems.is_empty() {
        out.push('\n');
        for problem in &loaded.problems {
            let _ = writeln!(out, "warning: {problem}");
        }
        let _ = writeln!(
            out,
            "(with KEEPALIVE_STRICT=1 the library would refuse to start the program: exit status {EX_CONFIG})"
        );
    }
    out.push('\n');
    if !s.enabled {
        let _ = writeln!(out, "keepalive-shim is disabled: it changes no socket.");
        return out;
    }
    let idle_ms = config::idle_detection_ms(s);
    let how = if s.user_timeout_ms == 0 {
        format!(
            "idle {} s + interval {} s x {} probes",
            s.idle_s, s.interval_s, s.count
        )
    } else if u64::from(s.user_timeout_ms)
        == u64::from(s.idle_s) * 1000 + u64::from(s.interval_s) * 1000 * u64::from(s.count)
    {
        format!(
            "idle {} s + interval {} s x {} probes, the same as the user timeout",
            s.idle_s, s.interval_s, s.count
        )
    } else {
        "the first probe interval at or after the user timeout, with at least one probe out; \
         the count is ignored when a user timeout is set"
            .to_owned()
    };
    let _ = writeln!(out, "A dead peer is noticed:");
    let _ = writeln!(
        out,
        "  on an idle connection (silent peer):    after {} ({how})",
        secs(idle_ms)
    );
    if s.user_timeout_ms == 0 {
        let _ = writeln!(
            out,
            "  with unacknowledged data in flight:     after about 15 minutes (no user timeout: the kernel's tcp_retries2)"
        );
        let _ = writeln!(
            out,
            "  when connecting to a peer that is gone: after about 2 minutes (no user timeout: the kernel's tcp_syn_retries)"
        );
    } else {
        let ut = secs(u64::from(s.user_timeout_ms));
        let _ = writeln!(
            out,
            "  with unacknowledged data in flight:     after {ut} (the user timeout)"
        );
        let _ = writeln!(
            out,
            "  when connecting to a peer that is gone: after {ut} (the user timeout)"
        );
    }
    if s.force {
        let _ = writeln!(
            out,
            "KEEPALIVE_FORCE is on: these values win over the program's own."
        );
    } else {
        let _ = writeln!(
            out,
            "A program that sets its own keepalive options keeps them (KEEPALIVE_FORCE=1 overrides)."
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_read_as_a_table() {
        let text = report(&config::load(std::iter::empty::<(&str, &str)>()));
        assert!(text.contains("idle          30s"), "{text}");
        assert!(
            text.contains("user timeout  60s    derived: idle + interval * count"),
            "{text}"
        );
        assert!(
            text.contains(
                "after 60 s (idle 30 s + interval 10 s x 3 probes, the same as the user timeout)"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_user_timeout_is_spelled_out() {
        let text = report(&config::load([("KEEPALIVE_USER_TIMEOUT", "0")]));
        assert!(text.contains("about 15 minutes"), "{text}");
    }
}
