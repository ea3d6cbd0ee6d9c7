//! What reading the configuration reports: the [`Loaded`] result, the [`Origin`] of every
//! effective value, every [`Problem`] found and its sentence (as a warning, and for strict mode),
//! and the escaping that keeps a message on one line.

use super::names::{ALIASES, SYSTEM_FILE};
use crate::rules;
use crate::settings::Settings;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Where one effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// Computed from idle, interval and count (the user timeout only).
    Derived,
    /// An environment variable of ours.
    Variable(&'static str),
    /// One of libkeepalive's names, in the environment.
    Alias(&'static str),
    /// A line of [`SYSTEM_FILE`], and the name it used.
    File {
        variable: &'static str,
        line: u32,
    },
}

impl Origin {
    /// Given by the person (environment or file), not a default or derived value.
    pub fn explicit(self) -> bool {
        !matches!(self, Origin::Default | Origin::Derived)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived => f.write_str("derived: idle + interval * count"),
            Origin::Variable(name) => write!(f, "{name}"),
            Origin::Alias(name) => write!(f, "{name} (libkeepalive's name)"),
            Origin::File { variable, line } if ALIASES.contains(variable) => {
                write!(f, "{SYSTEM_FILE}:{line} ({variable}, libkeepalive's name)")
            }
            Origin::File { line, .. } => write!(f, "{SYSTEM_FILE}:{line}"),
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
    pub exclude: Origin,
    pub include: Origin,
}

/// Something wrong with the configuration: one per variable, entry, or line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A value that does not parse or is out of range; `fallback` is what is used instead.
    Invalid {
        variable: &'static str,
        value: String,
        accepted: &'static str,
        fallback: String,
    },
    /// A name that looks like one of ours but is not (the name escaped for one line).
    Unknown {
        variable: String,
        closest: &'static str,
    },
    /// One entry of a destination list that does not parse; the others still apply.
    BadEntry {
        variable: &'static str,
        entry: String,
        accepted: &'static str,
    },
    /// A destination list with more than [`rules::MAX_RULES`] entries: `dropped` are ignored.
    TooMany {
        variable: &'static str,
        dropped: usize,
    },
    /// A line of the file that is not `NAME=VALUE`, a comment or blank.
    Syntax { text: String },
    /// A setting named a second time in the file: the first stands.
    Duplicate {
        variable: &'static str,
        first_line: u32,
    },
    /// The whole file is ignored, for `reason`.
    FileIgnored { reason: String },
    /// `problem`, found on line `line` of the file.
    InFile { line: u32, problem: Box<Problem> },
    /// `KEEPALIVE_STRICT` on in the file: not honoured (strict mode there could stop every
    /// program on the machine).
    StrictInFile,
}

impl Problem {
    /// The variable (or file) the problem is about.
    pub fn variable(&self) -> &str {
        match self {
            Problem::Invalid { variable, .. }
            | Problem::BadEntry { variable, .. }
            | Problem::TooMany { variable, .. }
            | Problem::Duplicate { variable, .. } => variable,
            Problem::StrictInFile => super::STRICT,
            Problem::Unknown { variable, .. } => variable,
            Problem::Syntax { .. } | Problem::FileIgnored { .. } => SYSTEM_FILE,
            Problem::InFile { problem, .. } => problem.variable(),
        }
    }

    /// The sentence for strict mode: the same problem, without what would have been done instead.
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
            Problem::BadEntry {
                variable,
                entry,
                accepted,
            } => format!("{variable} entry \"{entry}\" is not {accepted}"),
            Problem::TooMany { variable, .. } => {
                format!("{variable} has more than {} entries", rules::MAX_RULES)
            }
            Problem::Syntax { text } => {
                format!("\"{text}\" is not NAME=VALUE, a # comment or a blank line")
            }
            Problem::Duplicate {
                variable,
                first_line,
            } => format!("{variable} is set again (first on line {first_line})"),
            Problem::FileIgnored { reason } => format!("{SYSTEM_FILE} is not usable: {reason}"),
            Problem::InFile { line, problem } => {
                format!("{SYSTEM_FILE}:{line}: {}", problem.strict_message())
            }
            Problem::StrictInFile => format!(
                "{} is not honoured in {SYSTEM_FILE}: from there strict mode could stop every \
                 program on the machine; set it in the environment of the programs that want it",
                super::STRICT
            ),
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
            Problem::BadEntry { .. } => {
                write!(f, "{}; that entry is ignored", self.strict_message())
            }
            Problem::TooMany { variable, dropped } => write!(
                f,
                "{variable} has more than {} entries; the last {dropped} are ignored",
                rules::MAX_RULES
            ),
            Problem::Syntax { .. } | Problem::Duplicate { .. } => {
                write!(f, "{}; this line is ignored", self.strict_message())
            }
            Problem::FileIgnored { reason } => write!(f, "{SYSTEM_FILE} is ignored: {reason}"),
            Problem::InFile { line, problem } => write!(f, "{SYSTEM_FILE}:{line}: {problem}"),
            Problem::StrictInFile => f.write_str(&self.strict_message()),
        }
    }
}

/// What became of [`SYSTEM_FILE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileUse {
    /// There is no such file.
    Absent,
    /// Read; its valid settings apply where the environment does not set them.
    Read,
    /// Present but not used (a [`Problem::FileIgnored`] says why).
    Ignored,
}

/// The result of reading the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub settings: Settings,
    pub origins: Origins,
    pub problems: Vec<Problem>,
    /// Secure execution: the environment was not read.
    pub secure: bool,
    pub file: FileUse,
}

impl Loaded {
    /// Strict mode is on and something is wrong: the library exits with [`EX_CONFIG`].
    pub fn rejected(&self) -> bool {
        self.settings.strict && !self.problems.is_empty()
    }
}

/// `sysexits.h`: configuration error.
pub const EX_CONFIG: i32 = 78;

/// Text as it may be shown between double quotes on one line: control characters, quotes and
/// backslashes escaped (`\n`, `\u{1b}`, `\"`).
pub fn escape(value: &str) -> String {
    value.chars().flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{messages, with, with_file};
    use crate::config::*;

    #[test]
    fn values_are_shown_escaped_on_one_line() {
        let loaded = with(&[(COUNT, "3\n\"x\"")]);
        assert_eq!(
            loaded.problems[0].to_string(),
            "KEEPALIVE_COUNT=\"3\\n\\\"x\\\"\" is not a whole number from 1 to 127; using 3"
        );
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
    fn problems_in_the_file_name_the_file_and_the_line() {
        let text = "KEEPALIVE_COUNT=3\nKEEPALIVE_INTERVAL=7\nKEEPALIVE_IDLE=abc\njust words\nKEEPALIVE_IDEL=5\nKEEPALIVE_INTERVAL=9\nSOMETHING=1\nKEEPALIVE_EXCLUDE=:5432 nowhere\n";
        let loaded = with_file(text, &[]);
        assert_eq!(
            messages(&loaded),
            [
                "/etc/keepalive-shim.conf:3: KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m); using 30s",
                &format!(
                    "/etc/keepalive-shim.conf:8: KEEPALIVE_EXCLUDE entry \"nowhere\" is not {ACCEPT_RULE}; that entry is ignored"
                ),
                "/etc/keepalive-shim.conf:4: \"just words\" is not NAME=VALUE, a # comment or a blank line; this line is ignored",
                "/etc/keepalive-shim.conf:5: KEEPALIVE_IDEL is not a known setting (did you mean KEEPALIVE_IDLE?); ignored",
                "/etc/keepalive-shim.conf:6: KEEPALIVE_INTERVAL is set again (first on line 2); this line is ignored",
                "/etc/keepalive-shim.conf:7: SOMETHING is not a known setting (did you mean KEEPALIVE_LOG?); ignored",
            ]
        );
        assert_eq!(loaded.settings.interval_s, 7, "the first line stands");
        assert_eq!(loaded.problems[0].variable(), IDLE);
        assert_eq!(
            loaded.problems[0].strict_message(),
            "/etc/keepalive-shim.conf:3: KEEPALIVE_IDLE=\"abc\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m)"
        );
        // The file cannot turn strict mode on, not even for its own problems.
        assert!(!with_file("KEEPALIVE_STRICT=1\nKEEPALIVE_IDLE=abc\n", &[]).rejected());
        // Non-UTF-8 in the file crashes nothing.
        let loaded = load_system(
            &SystemFile::Text(b"KEEPALIVE_IDLE=3\xff\n\xfe=1\n".to_vec()),
            core::iter::empty::<(&str, &str)>(),
            false,
        );
        assert_eq!(loaded.settings.idle_s, 30);
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
    }

    #[test]
    fn an_unusable_file_is_one_warning_and_nothing_else() {
        let loaded = load_system(
            &SystemFile::Ignored("it is owned by uid 1000, not root".into()),
            [(IDLE, "5")],
            false,
        );
        assert_eq!(loaded.file, FileUse::Ignored);
        assert_eq!(loaded.settings.idle_s, 5);
        assert_eq!(
            messages(&loaded),
            ["/etc/keepalive-shim.conf is ignored: it is owned by uid 1000, not root"]
        );
        assert_eq!(loaded.problems[0].variable(), SYSTEM_FILE);
        assert_eq!(with(&[]).file, FileUse::Absent);
    }
}
