//! `keepalive-shim check`: reads the configuration (the system file and the environment) with the
//! library's own code and shows the effective settings, where each came from, the destination
//! rules, what a program in secure execution would get, every warning the library would print,
//! how long a dead peer would take to be noticed, and the user-timeout rule for programs that
//! set their own keepalive.

use crate::library;
use crate::reach::{self, Mode};
use keepalive_shim_policy::config::{self, EX_CONFIG, FileUse, Loaded, Origin};
use keepalive_shim_policy::options::user_timeout_for;
use keepalive_shim_supervisor::{Trap, kernel};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check the configuration in this environment before deploying it.
///
/// Exit status 0 when it is valid, 78 when the library would reject something in strict mode.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim check\n  \
    KEEPALIVE_IDLE=2m KEEPALIVE_USER_TIMEOUT=3m keepalive-shim check\n  \
    env -i KEEPIDLE=60 keepalive-shim check    # a libkeepalive user's environment\n  \
    keepalive-shim check -- ./static-client    # which mode `run` would give it, and why")]
pub struct Args {
    /// A command: say which mode `keepalive-shim run` would give it, and why.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<std::ffi::OsString>,
}

/// Everything `check` says, gathered before a line is printed.
struct Check {
    /// The configuration as the library would read it here.
    loaded: Loaded,
    /// What a setuid program would read (the file alone).
    secure: Loaded,
    /// The library `run` would preload, or why there is none to preload.
    library: Result<PathBuf, String>,
    fleet: String,
    /// Which mode `run` gives the command, and why.
    mode: (String, Option<Mode>),
    /// What the socket trap changes that the program could see, when it would run under it.
    trace: Option<String>,
}

impl Check {
    fn gather(args: &Args) -> Check {
        // The same reading as the library's constructor, and what a setuid program would read.
        let loaded = config::from_process();
        let secure = config::load_system(
            &config::read_system_file(),
            std::iter::empty::<(&str, &str)>(),
            true,
        );
        let mode = reach::check_section(&args.command, &loaded.settings);
        let trace = (mode.1 == Some(Mode::Seccomp)
            && kernel::choose(kernel::running()) == Ok(Trap::Socket))
        .then(|| kernel::trace_section(kernel::running()));
        Check {
            library: library::for_preload(),
            fleet: keepalive_shim_fleet::check_section(&loaded.settings),
            mode,
            trace,
            loaded,
            secure,
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let preloads = self.mode.1 != Some(Mode::Seccomp);
        match &self.library {
            Ok(path) if preloads => {
                let _ = writeln!(
                    out,
                    "Library: `keepalive-shim run` preloads {}.\n",
                    path.display()
                );
            }
            Err(why) if preloads => {
                let _ = writeln!(
                    out,
                    "Warning: {why}: `keepalive-shim run` cannot preload the library here.\n"
                );
            }
            _ => {}
        }
        out.push_str(&report(&self.loaded, &self.secure));
        out.push('\n');
        out.push_str(&self.fleet);
        out.push('\n');
        out.push_str(&self.mode.0);
        if let Some(trace) = &self.trace {
            out.push_str(trace);
        }
        out
    }
}

pub fn main(args: Args) -> ExitCode {
    let check = Check::gather(&args);
    keepalive_shim_sys::output::write_all(1, check.text().as_bytes());
    if check.loaded.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_CONFIG as u8)
    }
}

/// Seconds with up to one decimal: `60`, `4.5`.
fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The settings table's rows: name, value, origin.
fn rows(loaded: &Loaded) -> [(&'static str, String, Origin); 8] {
    let s = &loaded.settings;
    let o = &loaded.origins;
    [
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
    ]
}

/// `, not VARIABLE="VALUE" (rejected)` for each invalid value of `variable` (the environment's and
/// the file's), so a fallback to the default never hides what was written.
fn rejected_values(loaded: &Loaded, variable: &str) -> String {
    use keepalive_shim_policy::config::Problem;
    let mut out = String::new();
    for problem in &loaded.problems {
        let (line, inner) = match problem {
            Problem::InFile { line, problem } => (Some(*line), problem.as_ref()),
            other => (None, other),
        };
        if let Problem::Invalid {
            variable: v, value, ..
        } = inner
            && *v == variable
        {
            let at = line.map_or(String::new(), |l| format!(" on line {l} of the file"));
            let _ = write!(out, ", not {v}=\"{value}\"{at} (rejected)");
        }
    }
    out
}

/// Why the system file is unusable to a program in secure execution when this process found it
/// absent: the library's reader calls a file this user may not read absent
/// (`SystemFile::Unreadable`), while the secure view, read straight from the file, reports it.
fn unreadable(secure: &Loaded) -> Option<&str> {
    if secure.file != FileUse::Ignored {
        return None;
    }
    secure.problems.iter().find_map(|p| match p {
        keepalive_shim_policy::config::Problem::FileIgnored { reason } => Some(reason.as_str()),
        _ => None,
    })
}

/// The report for `loaded` (this process's configuration); `secure` is what a program in secure
/// execution would get (the file alone).
pub fn report(loaded: &Loaded, secure: &Loaded) -> String {
    let s = &loaded.settings;
    let rows = rows(loaded);
    let mut out = String::new();
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
    let _ = writeln!(out, "{:<14}{:<width$}  from", "setting", "value");
    let variables = [
        config::IDLE,
        config::INTERVAL,
        config::COUNT,
        config::USER_TIMEOUT,
        config::ENABLE,
        config::FORCE,
        config::LOG,
        config::STRICT,
    ];
    for ((name, value, origin), variable) in rows.iter().zip(variables) {
        let rejected = rejected_values(loaded, variable);
        let _ = writeln!(out, "{name:<14}{value:<width$}  {origin}{rejected}");
    }

    out.push('\n');
    destinations(&mut out, loaded);

    out.push('\n');
    let file = config::SYSTEM_FILE;
    let _ = match loaded.file {
        FileUse::Absent => match unreadable(secure) {
            // The library treats a file this user cannot read as absent (nothing in it is meant
            // for this user's programs); `check` says that it is there.
            Some(reason) => writeln!(
                out,
                "System file {file}: present, but this user cannot read it ({reason}): this \
                 user's programs run as if it were absent; root's and setuid programs read it \
                 (`sudo keepalive-shim check` shows its settings)."
            ),
            None => writeln!(out, "System file {file}: not present."),
        },
        FileUse::Read if loaded.secure => writeln!(out, "System file {file}: read."),
        FileUse::Read => writeln!(
            out,
            "System file {file}: read (the environment wins over it, setting by setting)."
        ),
        FileUse::Ignored => writeln!(out, "System file {file}: ignored (see the warning below)."),
    };
    if loaded.secure {
        let _ = writeln!(
            out,
            "This process runs in secure mode (setuid, setgid or file capabilities): the \
             environment was ignored; only {file} counts."
        );
    } else {
        let _ = writeln!(
            out,
            "In secure execution (setuid, setgid or file capabilities) the library ignores the \
             environment: only {file} counts."
        );
        let differ: Vec<String> = rows
            .iter()
            .zip(self::rows(secure))
            .filter(|(ours, theirs)| ours.1 != theirs.1)
            .map(|(_, (name, value, origin))| format!("{name} {value} ({origin})"))
            .chain(
                [
                    (
                        "exclude",
                        s.exclude,
                        secure.settings.exclude,
                        secure.origins.exclude,
                    ),
                    (
                        "include",
                        s.include,
                        secure.settings.include,
                        secure.origins.include,
                    ),
                ]
                .into_iter()
                .filter(|(_, ours, theirs, _)| ours != theirs)
                .map(|(name, _, theirs, origin)| format!("{name} {theirs} ({origin})")),
            )
            .collect();
        if !differ.is_empty() {
            let _ = writeln!(
                out,
                "  A program in secure execution gets: {}.",
                differ.join(", ")
            );
        }
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
        return out;
    }
    let _ = writeln!(
        out,
        "A program that sets its own keepalive options keeps them (KEEPALIVE_FORCE=1 overrides)."
    );
    let node = secs(u64::from(user_timeout_for(s, 1, 1, 10)));
    if !s.user_timeout_explicit {
        let _ = writeln!(
            out,
            "A program that sets its own idle, interval or count gets a user timeout of its own \
             idle + interval x count (node's 1 s / 1 s / 10: {node}), so it never notices a dead \
             peer later than without the library."
        );
    } else if s.user_timeout_ms == 0 {
        let _ = writeln!(
            out,
            "KEEPALIVE_USER_TIMEOUT is 0: no socket gets a user timeout from the library, \
             whatever keepalive the program sets."
        );
    } else {
        let _ = writeln!(
            out,
            "A program that sets its own idle, interval or count gets a user timeout of its own \
             idle + interval x count, or KEEPALIVE_USER_TIMEOUT ({}) when that is shorter \
             (node's 1 s / 1 s / 10: {node}).",
            secs(u64::from(s.user_timeout_ms))
        );
    }
    out
}

/// Which connections get the options: the destination rules and where they came from.
fn destinations(out: &mut String, loaded: &Loaded) {
    let s = &loaded.settings;
    let o = &loaded.origins;
    if !s.has_rules() {
        let _ = writeln!(
            out,
            "Destinations: every TCP connection is configured (no KEEPALIVE_EXCLUDE or \
             KEEPALIVE_INCLUDE rule)."
        );
        return;
    }
    let _ = writeln!(out, "Destinations (decided at connect()):");
    if s.include.is_empty() {
        let _ = writeln!(out, "  configured:  every destination not left alone");
    } else {
        let _ = writeln!(
            out,
            "  configured:  only {}, unless left alone  ({})",
            s.include, o.include
        );
    }
    if !s.exclude.is_empty() {
        let wins = if s.include.is_empty() {
            ""
        } else {
            "; it wins over KEEPALIVE_INCLUDE"
        };
        let _ = writeln!(out, "  left alone:  {}  ({}{wins})", s.exclude, o.exclude);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::SystemFile;

    const NO_VARS: [(&str, &str); 0] = [];

    /// The report for `vars` with `file` (`None`: no file), as a non-secure program sees it.
    fn report_for(file: Option<&str>, vars: &[(&str, &str)]) -> String {
        let file = match file {
            Some(text) => SystemFile::Text(text.as_bytes().to_vec()),
            None => SystemFile::Absent,
        };
        let loaded = config::load_system(&file, vars.iter().copied(), false);
        let secure = config::load_system(&file, NO_VARS, true);
        report(&loaded, &secure)
    }

    #[test]
    fn a_system_file_this_user_cannot_read_is_not_called_absent() {
        let unreadable = SystemFile::Unreadable("it cannot be opened (errno 13)".into());
        // As `Check::gather` reads them: the library's view (unreadable: absent) and the file's.
        let loaded = config::load_system(&SystemFile::Absent, NO_VARS, false);
        let secure = config::load_system(&unreadable, NO_VARS, true);
        let text = report(&loaded, &secure);
        assert!(
            text.contains(
                "System file /etc/keepalive-shim.conf: present, but this user cannot read it \
                 (it cannot be opened (errno 13))"
            ),
            "{text}"
        );
        assert!(!text.contains("not present"), "{text}");
    }

    #[test]
    fn the_defaults_read_as_a_table() {
        let text = report_for(None, &[]);
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
        assert!(
            text.contains("Destinations: every TCP connection is configured"),
            "{text}"
        );
        assert!(
            text.contains("System file /etc/keepalive-shim.conf: not present."),
            "{text}"
        );
        assert!(
            text.contains(
                "In secure execution (setuid, setgid or file capabilities) the library ignores \
                 the environment: only /etc/keepalive-shim.conf counts."
            ),
            "{text}"
        );
        assert!(
            !text.contains("A program in secure execution gets"),
            "{text}"
        );
        assert!(
            text.contains(
                "A program that sets its own idle, interval or count gets a user timeout of its \
                 own idle + interval x count (node's 1 s / 1 s / 10: 11 s)"
            ),
            "{text}"
        );
    }

    #[test]
    fn no_user_timeout_is_spelled_out() {
        let text = report_for(None, &[("KEEPALIVE_USER_TIMEOUT", "0")]);
        assert!(text.contains("about 15 minutes"), "{text}");
        assert!(
            text.contains("KEEPALIVE_USER_TIMEOUT is 0: no socket gets a user timeout"),
            "{text}"
        );
    }

    #[test]
    fn an_explicit_user_timeout_is_the_cap_of_a_programs_own() {
        let text = report_for(None, &[("KEEPALIVE_USER_TIMEOUT", "3s")]);
        assert!(
            text.contains(
                "or KEEPALIVE_USER_TIMEOUT (3 s) when that is shorter (node's 1 s / 1 s / 10: 3 s)"
            ),
            "{text}"
        );
        let forced = report_for(None, &[("KEEPALIVE_FORCE", "1")]);
        assert!(
            forced.contains("KEEPALIVE_FORCE is on: these values win over the program's own."),
            "{forced}"
        );
        assert!(!forced.contains("its own idle + interval"), "{forced}");
    }

    #[test]
    fn destination_rules_are_shown_with_their_origin() {
        let text = report_for(
            Some("KEEPALIVE_INCLUDE=10.0.0.0/8\n"),
            &[("KEEPALIVE_EXCLUDE", ":5432 [fd00::]/8:22")],
        );
        assert!(
            text.contains("Destinations (decided at connect()):"),
            "{text}"
        );
        assert!(
            text.contains(
                "  configured:  only 10.0.0.0/8, unless left alone  (/etc/keepalive-shim.conf:1)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  left alone:  :5432, [fd00::]/8:22  (KEEPALIVE_EXCLUDE; it wins over \
                 KEEPALIVE_INCLUDE)"
            ),
            "{text}"
        );
        // What a setuid program would get instead: the file's rules only.
        assert!(
            text.contains("A program in secure execution gets: exclude none (default)."),
            "{text}"
        );
        let exclude_only = report_for(None, &[("KEEPALIVE_EXCLUDE", "192.0.2.1")]);
        assert!(
            exclude_only.contains("  configured:  every destination not left alone"),
            "{exclude_only}"
        );
        assert!(
            exclude_only.contains("  left alone:  192.0.2.1  (KEEPALIVE_EXCLUDE)\n"),
            "{exclude_only}"
        );
    }

    #[test]
    fn the_files_settings_show_their_line_and_secure_mode_what_differs() {
        let file = "# site defaults\nKEEPALIVE_IDLE=45\nKEEPALIVE_COUNT=zero\n";
        let text = report_for(Some(file), &[("KEEPALIVE_INTERVAL", "5")]);
        assert!(
            text.contains("idle          45s    /etc/keepalive-shim.conf:2"),
            "{text}"
        );
        assert!(
            text.contains("interval      5s     KEEPALIVE_INTERVAL"),
            "{text}"
        );
        assert!(
            text.contains(
                "System file /etc/keepalive-shim.conf: read (the environment wins over it, \
                 setting by setting)."
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "A program in secure execution gets: interval 10s (default), user timeout 75s \
                 (derived: idle + interval * count)."
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "warning: /etc/keepalive-shim.conf:3: KEEPALIVE_COUNT=\"zero\" is not a whole \
                 number from 1 to 127; using 3"
            ),
            "{text}"
        );
        // An unusable file, and a process that is itself in secure mode.
        let ignored = SystemFile::Ignored("it is owned by uid 1000, not root".into());
        let loaded = config::load_system(&ignored, [("KEEPALIVE_IDLE", "5")], false);
        let secure = config::load_system(&ignored, NO_VARS, true);
        let text = report(&loaded, &secure);
        assert!(
            text.contains("System file /etc/keepalive-shim.conf: ignored (see the warning below)."),
            "{text}"
        );
        assert!(
            text.contains(
                "warning: /etc/keepalive-shim.conf is ignored: it is owned by uid 1000, not root"
            ),
            "{text}"
        );
        let text = report(&secure, &secure);
        assert!(text.contains("This process runs in secure mode"), "{text}");
    }
}
