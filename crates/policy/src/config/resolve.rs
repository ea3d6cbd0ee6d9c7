//! Precedence: for each setting, the environment (our name, then libkeepalive's), then the file
//! (the same), then the default; an invalid value is a problem and the next one stands. Ends in
//! the [`Loaded`] result, with every value's origin and every problem in order.

use super::names::*;
use super::report::{FileUse, Loaded, Origin, Origins, Problem, escape};
use super::source::{Env, SYSTEM_FILE};
use super::values::*;
use crate::rules::{self, Rules};
use crate::settings::{DEFAULT, Settings, derived_user_timeout_ms};
use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A value found for a setting.
struct Found<'a> {
    value: &'a str,
    variable: &'static str,
    origin: Origin,
    line: Option<u32>,
}

impl Env {
    /// The environment's value of `name`: the first one, as with glibc's getenv().
    fn env_get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn file_get(&self, name: &str) -> Option<(&str, u32)> {
        self.file
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, line)| (v.as_str(), *line))
    }

    /// The environment's value (ours, then the alias), then the file's (the same).
    fn candidates(
        &self,
        name: &'static str,
        alias: Option<&'static str>,
    ) -> [Option<Found<'_>>; 2] {
        let from_env = self
            .env_get(name)
            .map(|value| Found {
                value,
                variable: name,
                origin: Origin::Variable(name),
                line: None,
            })
            .or_else(|| {
                let alias = alias?;
                self.env_get(alias).map(|value| Found {
                    value,
                    variable: alias,
                    origin: Origin::Alias(alias),
                    line: None,
                })
            });
        let from_file = [Some(name), alias].into_iter().flatten().find_map(|n| {
            self.file_get(n).map(|(value, line)| Found {
                value,
                variable: n,
                origin: Origin::File { variable: n, line },
                line: Some(line),
            })
        });
        [from_env, from_file]
    }

    fn report(&mut self, line: Option<u32>, problem: Problem) {
        self.problems.push(match line {
            Some(line) => Problem::InFile {
                line,
                problem: Box::new(problem),
            },
            None => problem,
        });
    }

    /// Looks up `name` (and `alias`) in the environment, then in the file, and parses what it
    /// finds; an invalid value is recorded as a problem, and what would apply without it (the
    /// file's value, or the default) stands.
    fn setting<T: Copy>(
        &mut self,
        name: &'static str,
        alias: Option<&'static str>,
        parse: fn(&str) -> Option<T>,
        accepted: &'static str,
        default: T,
        show: fn(T) -> String,
    ) -> (T, Origin) {
        let mut bad = Vec::new();
        let mut result = None;
        for found in self.candidates(name, alias).into_iter().flatten() {
            match parse(found.value) {
                Some(parsed) => {
                    result = Some((parsed, found.origin));
                    break;
                }
                None => bad.push((found.line, found.variable, escape(found.value))),
            }
        }
        let (value, origin) = result.unwrap_or((default, Origin::Default));
        for (line, variable, text) in bad {
            let fallback = match origin {
                Origin::File { line, .. } => format!("{} ({SYSTEM_FILE}:{line})", show(value)),
                _ => show(value),
            };
            self.report(
                line,
                Problem::Invalid {
                    variable,
                    value: text,
                    accepted,
                    fallback,
                },
            );
        }
        (value, origin)
    }

    /// A destination list: each bad entry is a problem, the good ones apply. The environment's
    /// list replaces the file's (an empty one too), unless none of its entries is valid.
    fn list(&mut self, name: &'static str) -> (Rules, Origin) {
        let mut tried = Vec::new();
        let mut result = None;
        for found in self.candidates(name, None).into_iter().flatten() {
            let parsed = rules::parse_list(found.value);
            let usable = !parsed.rules.is_empty() || parsed.bad.is_empty();
            tried.push((found.line, parsed.bad, parsed.dropped));
            if usable {
                result = Some((parsed.rules, found.origin));
                break;
            }
        }
        for (line, bad, dropped) in tried {
            for entry in bad {
                self.report(
                    line,
                    Problem::BadEntry {
                        variable: name,
                        entry: escape(&entry),
                        accepted: ACCEPT_RULE,
                    },
                );
            }
            if dropped > 0 {
                self.report(
                    line,
                    Problem::TooMany {
                        variable: name,
                        dropped,
                    },
                );
            }
        }
        result.unwrap_or((Rules::EMPTY, Origin::Default))
    }

    pub(super) fn resolve(mut self) -> Loaded {
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
        let (mut strict, mut strict_origin) =
            self.setting(STRICT, None, parse_bool, ACCEPT_BOOL, d.strict, show_bool);
        if strict && matches!(strict_origin, Origin::File { .. }) {
            // Strict mode stops a program before main: from the system file, every program.
            self.problems.push(Problem::StrictInFile);
            (strict, strict_origin) = (d.strict, Origin::Default);
        }
        let (exclude, exclude_origin) = self.list(EXCLUDE);
        let (include, include_origin) = self.list(INCLUDE);

        let mut unknown: Vec<String> = self
            .vars
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("KEEPALIVE_") && !KNOWN.contains(n))
            .map(escape)
            .chain(self.near.iter().cloned())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let unknown = unknown.into_iter().map(|n| Problem::Unknown {
            closest: closest_known(&n),
            variable: n,
        });
        let mut problems = core::mem::take(&mut self.problems);
        problems.extend(unknown);
        problems.append(&mut self.file_problems);
        problems.sort_by_key(|p| match p {
            Problem::FileIgnored { .. } => 0,
            _ => 1,
        });

        Loaded {
            settings: Settings {
                enabled,
                idle_s,
                interval_s,
                count,
                user_timeout_ms,
                user_timeout_explicit: user_timeout.explicit(),
                force,
                log,
                strict,
                exclude,
                include,
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
                exclude: exclude_origin,
                include: include_origin,
            },
            problems,
            secure: false,
            file: FileUse::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{messages, with, with_file};
    use crate::config::*;
    use alloc::string::{String, ToString};
    use alloc::vec;

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
             45s, 1500ms, 2m, 1h; 0 keeps the kernel's default); using 4s (idle + interval * count)"
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
    fn the_first_of_duplicate_environment_entries_wins_as_with_getenv() {
        let loaded = with(&[(IDLE, "40"), (IDLE, "50"), (IDLE, "bad")]);
        assert_eq!(loaded.settings.idle_s, 40);
        assert!(loaded.problems.is_empty(), "later copies are not read");
        let loaded = with(&[(IDLE, "bad"), (IDLE, "50")]);
        assert_eq!(loaded.settings.idle_s, 30, "the first is the one in effect");
        assert_eq!(loaded.problems.len(), 1);
    }

    #[test]
    fn destination_lists_keep_their_good_entries_and_name_each_bad_one() {
        let loaded = with(&[
            (EXCLUDE, "10.0.0.0/8, :5432 db.internal 300.1.1.1"),
            (INCLUDE, "fd00::/8"),
        ]);
        let s = loaded.settings;
        assert_eq!(s.exclude.to_string(), "10.0.0.0/8, :5432");
        assert_eq!(s.include.to_string(), "fd00::/8");
        assert_eq!(loaded.origins.exclude, Origin::Variable(EXCLUDE));
        assert_eq!(loaded.origins.include, Origin::Variable(INCLUDE));
        let text = messages(&loaded);
        assert_eq!(text.len(), 2, "{text:?}");
        assert_eq!(
            text[0],
            format!(
                "KEEPALIVE_EXCLUDE entry \"db.internal\" is not {ACCEPT_RULE}; that entry is ignored"
            )
        );
        assert!(text[1].starts_with("KEEPALIVE_EXCLUDE entry \"300.1.1.1\" is not an IP address"));
        assert!(!loaded.rejected());
        // Strict refuses, with the same sentence minus what is done instead.
        let strict = with(&[(STRICT, "1"), (EXCLUDE, "db.internal")]);
        assert!(strict.rejected());
        assert_eq!(
            strict.problems[0].strict_message(),
            format!("KEEPALIVE_EXCLUDE entry \"db.internal\" is not {ACCEPT_RULE}")
        );
        // Unset, empty or all bad: no rules.
        let none = with(&[]);
        assert!(none.settings.exclude.is_empty() && none.settings.include.is_empty());
        assert_eq!(none.origins.exclude, Origin::Default);
        assert!(with(&[(INCLUDE, "")]).problems.is_empty());
        assert!(with(&[(INCLUDE, "nope")]).settings.include.is_empty());
        // An entry with a control character is shown escaped.
        let loaded = with(&[(EXCLUDE, "a\u{1b}b")]);
        assert!(loaded.problems[0].to_string().contains("\"a\\u{1b}b\""));
    }

    #[test]
    fn too_many_entries_is_a_problem_naming_the_variable() {
        let mut list = String::new();
        for i in 0..35 {
            list.push_str(&format!("10.9.{i}.0/24,"));
        }
        let loaded = with(&[(INCLUDE, &list)]);
        assert_eq!(loaded.settings.include.len(), crate::rules::MAX_RULES);
        assert_eq!(
            messages(&loaded),
            ["KEEPALIVE_INCLUDE has more than 32 entries; the last 3 are ignored"]
        );
        assert!(with(&[(INCLUDE, &list), (STRICT, "yes")]).rejected());
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let text = "KEEPALIVE_IDLE=45\nKEEPALIVE_EXCLUDE=10.0.0.0/8\nKEEPALIVE_USER_TIMEOUT=5s\n";
        let loaded = with_file(text, &[(IDLE, "5"), (EXCLUDE, ":22")]);
        assert_eq!(loaded.settings.idle_s, 5);
        assert_eq!(loaded.origins.idle, Origin::Variable(IDLE));
        assert_eq!(
            loaded.settings.exclude.to_string(),
            ":22",
            "replaced, not merged"
        );
        assert_eq!(loaded.settings.user_timeout_ms, 5000);
        // libkeepalive's name in the environment is the environment too.
        assert_eq!(with_file(text, &[(ALIAS_IDLE, "6")]).settings.idle_s, 6);
        // An empty list in the environment clears the file's.
        let cleared = with_file(text, &[(EXCLUDE, "")]);
        assert!(cleared.settings.exclude.is_empty());
        assert_eq!(cleared.origins.exclude, Origin::Variable(EXCLUDE));
        // An invalid environment value falls back to the file's, and says so.
        let loaded = with_file(text, &[(IDLE, "abc"), (EXCLUDE, "nowhere")]);
        assert_eq!(loaded.settings.idle_s, 45);
        assert_eq!(loaded.settings.exclude.to_string(), "10.0.0.0/8");
        assert_eq!(
            messages(&loaded)[0],
            "KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); \
             using 45s (/etc/keepalive-shim.conf:1)"
        );
    }
}

#[cfg(test)]
mod strict_tests {
    use super::super::testing::{messages, with, with_file};
    use super::*;

    #[test]
    fn strict_mode_in_the_system_file_is_refused_with_a_reason() {
        let loaded = with_file("KEEPALIVE_STRICT=1\nKEEPALIVE_IDEL=30\n", &[]);
        assert!(!loaded.settings.strict, "not honoured from the file");
        assert!(!loaded.rejected(), "nothing stops a program");
        let text = messages(&loaded).join("\n");
        assert!(text.contains("KEEPALIVE_STRICT is not honoured"), "{text}");
        assert!(text.contains("did you mean KEEPALIVE_IDLE?"), "{text}");
        // From the environment it is the program's own choice, and stands.
        let env = with(&[("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDEL", "30")]);
        assert!(env.settings.strict && env.rejected());
        // Off in the file is no problem at all.
        assert!(with_file("KEEPALIVE_STRICT=0\n", &[]).problems.is_empty());
    }

    #[test]
    fn a_byte_order_mark_is_no_part_of_the_first_name() {
        let loaded = with_file("\u{feff}KEEPALIVE_IDLE=45\n", &[]);
        assert!(loaded.problems.is_empty(), "{:?}", messages(&loaded));
        assert_eq!(loaded.settings.idle_s, 45);
    }

    #[test]
    fn a_file_only_root_may_read_is_reported_by_check_only() {
        use super::super::source::{SystemFile, load_system};
        let unreadable = SystemFile::Unreadable("it cannot be opened (EACCES)".into());
        let loaded = load_system(&unreadable, core::iter::empty::<(&str, &str)>(), false);
        assert_eq!(loaded.problems.len(), 1, "what check shows");
        assert_eq!(loaded.file, FileUse::Ignored);
    }
}
