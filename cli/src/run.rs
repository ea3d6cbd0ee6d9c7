//! `keepalive-shim run`: sets the `KEEPALIVE_*` variables from options, adds the library to
//! `LD_PRELOAD`, tells the person when the program is out of the library's reach, and `exec`s it.

use crate::config::{self, EX_CONFIG};
use crate::{reach, say};
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The library's file name.
const LIBRARY: &str = "libkeepalive_shim.so";

/// Run a program with the library preloaded.
///
/// Options set the matching KEEPALIVE_* variables; where one is not given, the environment's own
/// value is used. The library is found next to this executable, in ../lib/, or where
/// KEEPALIVE_SHIM_LIBRARY says.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim run -- python3 tool.py\n  \
    keepalive-shim run --idle 20s --interval 5s --count 3 -- wget https://example.internal/big.iso\n  \
    keepalive-shim run --force --log debug -- node client.js")]
pub struct Args {
    /// Seconds of silence before the first probe (KEEPALIVE_IDLE): 1-32767, suffixes s, m, h.
    #[arg(long, value_parser = seconds)]
    idle: Option<String>,
    /// Seconds between probes (KEEPALIVE_INTERVAL): 1-32767, suffixes s, m, h.
    #[arg(long, value_parser = seconds)]
    interval: Option<String>,
    /// Unanswered probes before the connection fails (KEEPALIVE_COUNT): 1-127.
    #[arg(long, value_parser = count)]
    count: Option<String>,
    /// How long sent data may stay unacknowledged (KEEPALIVE_USER_TIMEOUT): suffixes ms, s, m, h;
    /// 0 keeps the kernel's default.
    #[arg(long, value_parser = user_timeout)]
    user_timeout: Option<String>,
    /// The configured values win over the program's own (KEEPALIVE_FORCE=1).
    #[arg(long)]
    force: bool,
    /// off, warn or debug (KEEPALIVE_LOG).
    #[arg(long, value_parser = ["off", "warn", "debug"])]
    log: Option<String>,
    /// Refuse to run a program the library cannot reach, and make the library exit with status
    /// 78 on any invalid setting (KEEPALIVE_STRICT=1).
    #[arg(long)]
    strict: bool,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

fn checked(value: &str, ok: bool, accepted: &str) -> Result<String, String> {
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!("\"{value}\" is not {accepted}"))
    }
}

fn seconds(v: &str) -> Result<String, String> {
    checked(
        v,
        config::parse_seconds(v).is_some(),
        config::ACCEPT_SECONDS,
    )
}

fn count(v: &str) -> Result<String, String> {
    checked(v, config::parse_count(v).is_some(), config::ACCEPT_COUNT)
}

fn user_timeout(v: &str) -> Result<String, String> {
    checked(
        v,
        config::parse_user_timeout_ms(v).is_some(),
        config::ACCEPT_USER_TIMEOUT,
    )
}

pub fn main(args: Args) -> ExitCode {
    let library = match find_library() {
        Ok(path) => path,
        Err(message) => {
            say!("{message}");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    let program = args.command[0].to_string_lossy().into_owned();
    let Some(path) = reach::resolve(&program) else {
        say!("{program}: command not found");
        return ExitCode::from(127);
    };
    let obstacles = reach::obstacles(&path);
    for obstacle in &obstacles {
        say!("warning: {obstacle}");
    }
    if args.strict && !obstacles.is_empty() {
        say!("--strict: not running {program}, which the library cannot reach");
        return ExitCode::from(EX_CONFIG as u8);
    }

    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    let flags = [
        (config::IDLE, args.idle),
        (config::INTERVAL, args.interval),
        (config::COUNT, args.count),
        (config::USER_TIMEOUT, args.user_timeout),
        (config::LOG, args.log),
        (config::FORCE, args.force.then(|| "1".to_owned())),
        (config::STRICT, args.strict.then(|| "1".to_owned())),
    ];
    for (name, value) in flags {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    cmd.env(
        "LD_PRELOAD",
        with_library(std::env::var_os("LD_PRELOAD").as_deref(), &library),
    );
    let error = cmd.exec();
    say!("cannot run {program}: {error}");
    ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// `LD_PRELOAD` with the library first (outermost, so its options are set last and win over
/// another preload library's), keeping every entry already there, and not adding it twice.
pub fn with_library(current: Option<&OsStr>, library: &Path) -> OsString {
    let mut entries: Vec<OsString> = vec![library.as_os_str().to_owned()];
    if let Some(current) = current {
        let text = current.to_string_lossy();
        for entry in text.split([':', ' ']).filter(|e| !e.is_empty()) {
            if Path::new(entry) != library {
                entries.push(entry.into());
            }
        }
    }
    entries.join(OsStr::new(":"))
}

/// The library: `KEEPALIVE_SHIM_LIBRARY` when set, else next to this executable, else in
/// `../lib/` from it. The error says where it looked.
fn find_library() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(config::SHIM_LIBRARY) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{}={} does not name a file",
                config::SHIM_LIBRARY,
                path.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [dir.join(LIBRARY), dir.join("../lib").join(LIBRARY)];
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(std::fs::canonicalize(candidate).unwrap_or_else(|_| candidate.clone()));
        }
    }
    Err(format!(
        "cannot find {LIBRARY}: looked in {} and {}; set {} to its path",
        candidates[0].display(),
        candidates[1].display(),
        config::SHIM_LIBRARY
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_goes_first_and_nothing_is_lost_or_doubled() {
        let lib = Path::new("/opt/ka/libkeepalive_shim.so");
        assert_eq!(with_library(None, lib), "/opt/ka/libkeepalive_shim.so");
        assert_eq!(
            with_library(
                Some(OsStr::new("/a.so /b.so:/opt/ka/libkeepalive_shim.so")),
                lib
            ),
            "/opt/ka/libkeepalive_shim.so:/a.so:/b.so"
        );
        assert_eq!(
            with_library(Some(OsStr::new("")), lib),
            "/opt/ka/libkeepalive_shim.so"
        );
    }

    #[test]
    fn options_are_validated_like_the_library_does() {
        assert!(seconds("20s").is_ok());
        assert_eq!(
            seconds("0").unwrap_err(),
            "\"0\" is not whole seconds from 1 to 32767 (like 30, 90s, 2m)"
        );
        assert!(count("128").is_err());
        assert!(user_timeout("1500ms").is_ok());
    }
}
