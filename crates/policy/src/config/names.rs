//! The variables' names: ours, libkeepalive's aliases, the tool's own `KEEPALIVE_SHIM_*`, and
//! the names that are nearly ours, with the known name each most likely meant ("did you mean").

use alloc::string::String;
use alloc::vec::Vec;

/// The system-wide configuration file.
pub const SYSTEM_FILE: &str = "/etc/keepalive-shim.conf";

/// Every variable this project reads.
pub const IDLE: &str = "KEEPALIVE_IDLE";
pub const INTERVAL: &str = "KEEPALIVE_INTERVAL";
pub const COUNT: &str = "KEEPALIVE_COUNT";
pub const USER_TIMEOUT: &str = "KEEPALIVE_USER_TIMEOUT";
pub const ENABLE: &str = "KEEPALIVE_ENABLE";
pub const FORCE: &str = "KEEPALIVE_FORCE";
pub const LOG: &str = "KEEPALIVE_LOG";
pub const STRICT: &str = "KEEPALIVE_STRICT";
pub const EXCLUDE: &str = "KEEPALIVE_EXCLUDE";
pub const INCLUDE: &str = "KEEPALIVE_INCLUDE";
/// Names starting with this belong to the command-line tool and the tests
/// (`KEEPALIVE_SHIM_LIBRARY`, `KEEPALIVE_SHIM_TEST_LIBRARY`): never settings, never unknown.
pub const SHIM_PREFIX: &str = "KEEPALIVE_SHIM_";
/// Read by `keepalive-shim run` to find the library; the library ignores it.
pub const SHIM_LIBRARY: &str = "KEEPALIVE_SHIM_LIBRARY";

/// libkeepalive's names, honoured where the matching `KEEPALIVE_*` variable is unset.
pub const ALIAS_IDLE: &str = "KEEPIDLE";
pub const ALIAS_INTERVAL: &str = "KEEPINTVL";
pub const ALIAS_COUNT: &str = "KEEPCNT";
pub const ALIAS_ENABLE: &str = "KEEPALIVE";
pub const ALIASES: [&str; 4] = [ALIAS_IDLE, ALIAS_INTERVAL, ALIAS_COUNT, ALIAS_ENABLE];

/// The settings' names, in the order the settings table lists them.
pub const KNOWN: [&str; 10] = [
    IDLE,
    INTERVAL,
    COUNT,
    USER_TIMEOUT,
    ENABLE,
    FORCE,
    LOG,
    STRICT,
    EXCLUDE,
    INCLUDE,
];

/// A setting's name as written, if it is one (ours or libkeepalive's).
pub(super) fn setting_name(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .chain(ALIASES.iter())
        .copied()
        .find(|k| *k == name)
}

/// Uppercase, without underscores: `keep_alive_idle` and `KEEPALIVEIDLE` are `KEEPALIVEIDLE`.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A variable of someone else's that is almost one of ours: a known name in another case or
/// with other underscores (`keepalive_idle`, `KEEP_ALIVE_IDLE`, `KEEPALIVEIDLE`), or any name
/// that starts with `KEEPALIVE_` or `KEEP_ALIVE_` in another case. The tool's own
/// `KEEPALIVE_SHIM_*`, in any spelling, is not.
pub(super) fn near_miss(name: &str) -> bool {
    // Every near miss starts with KEEP in some case: test that first, without allocating, since
    // this runs on every variable of every process's environment at load time.
    if !name
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"KEEP"))
    {
        return false;
    }
    let n = normalise(name);
    if n.starts_with("KEEPALIVESHIM") {
        return false;
    }
    let upper = name.to_ascii_uppercase();
    KNOWN.iter().any(|k| normalise(k) == n)
        || upper.starts_with("KEEPALIVE_")
        || upper.starts_with("KEEP_ALIVE_")
}

/// The known name an unknown one most likely meant: the same name spelled otherwise; else, among
/// the known names containing one of its distinctive words (`KEEPALIVE_TIMEOUT` →
/// `KEEPALIVE_USER_TIMEOUT`), or else among all, the nearest by edit distance (ties: the first
/// in [`KNOWN`]).
pub(super) fn closest_known(name: &str) -> &'static str {
    let n = normalise(name);
    let words: Vec<String> = name
        .split('_')
        .map(str::to_ascii_uppercase)
        .filter(|w| w.len() >= 3 && !["KEEP", "ALIVE", "KEEPALIVE"].contains(&w.as_str()))
        .collect();
    let containing: Vec<&'static str> = KNOWN
        .iter()
        .copied()
        .filter(|k| {
            let rest = normalise(&k["KEEPALIVE_".len()..]);
            words.iter().any(|w| rest.contains(w.as_str()))
        })
        .collect();
    let pool: &[&'static str] = if containing.is_empty() {
        &KNOWN
    } else {
        &containing
    };
    pool.iter()
        .copied()
        .min_by_key(|known| edit_distance(&n, &normalise(known)))
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

#[cfg(test)]
mod tests {
    use crate::config::testing::{with, with_file};
    use crate::config::*;
    use alloc::vec;

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
    fn the_tools_own_names_are_never_unknown() {
        for name in [
            SHIM_LIBRARY,
            "KEEPALIVE_SHIM_TEST_LIBRARY",
            "KEEPALIVE_SHIM_ANYTHING",
            "keepalive_shim_library",
        ] {
            let loaded = with(&[(name, "/x.so")]);
            assert!(loaded.problems.is_empty(), "{name}: {:?}", loaded.problems);
        }
        // In the file too.
        assert!(
            with_file("KEEPALIVE_SHIM_LIBRARY=/x.so\n", &[])
                .problems
                .is_empty()
        );
    }

    #[test]
    fn near_misses_are_unknown_with_the_name_they_meant() {
        for (name, meant) in [
            ("KEEP_ALIVE_IDLE", IDLE),
            ("KEEPALIVEIDLE", IDLE),
            ("keepalive_idle", IDLE),
            ("Keepalive_Interval", INTERVAL),
            ("keep_alive_count", COUNT),
            ("KEEPALIVEUSERTIMEOUT", USER_TIMEOUT),
            ("KEEPALIVE_TIMEOUT", USER_TIMEOUT),
            ("keepalive_timeout", USER_TIMEOUT),
            ("KEEPALIVE_USER_TIMEOUTS", USER_TIMEOUT),
            ("KEEPALIVE_INTERVALL", INTERVAL),
            ("KEEPALIVE_IDEL", IDLE),
            ("KEEPALIVE_ENABLED", ENABLE),
            ("KEEPALIVE_EXCLUDES", EXCLUDE),
            ("KEEPALIVE_INCLUDED", INCLUDE),
            ("KEEPALIVE_DEBUG", LOG),
        ] {
            let loaded = with(&[(name, "5")]);
            assert_eq!(
                loaded.problems,
                vec![Problem::Unknown {
                    variable: name.into(),
                    closest: meant
                }],
                "{name}"
            );
            assert_eq!(
                loaded.problems[0].to_string(),
                format!("{name} is not a known setting (did you mean {meant}?); ignored")
            );
        }
        // Other programs' names that merely start alike are theirs.
        for name in [
            "KEEPALIVED_CONFIG",
            "keepalive",
            "KEEPALIVES",
            "KEEP",
            "keepidle",
        ] {
            assert!(with(&[(name, "1")]).problems.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_names_are_escaped_like_values() {
        let loaded = with(&[("KEEPALIVE_X\nkeepalive-shim[1]: forged\u{1b}[2J", "1")]);
        let message = loaded.problems[0].to_string();
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.starts_with(
                "KEEPALIVE_X\\nkeepalive-shim[1]: forged\\u{1b}[2J is not a known setting"
            ),
            "{message}"
        );
        assert!(!message.contains('\u{1b}'));
        let strict = loaded.problems[0].strict_message();
        assert!(
            !strict.contains('\n') && !strict.contains('\u{1b}'),
            "{strict}"
        );
        // A near miss and a name in the file too.
        let loaded = with(&[("keepalive_\nidle", "1")]);
        assert!(
            loaded.problems[0]
                .to_string()
                .starts_with("keepalive_\\nidle ")
        );
        let loaded = with_file("KEEPALIVE_\u{1b}X=1\n", &[]);
        assert!(!loaded.problems[0].to_string().contains('\u{1b}'));
    }
}
