//! `keepalive-shim run`: sets the `KEEPALIVE_*` variables from options and starts the command
//! with the keepalive options on every TCP socket: through the preload library (`LD_PRELOAD`,
//! then `exec`), through the seccomp supervisor (`supervise/`) for programs the library cannot
//! enter, or both; `--mode auto` (the default) chooses from the command's executable.

use crate::library;
use crate::reach::{self, Kind, Mode};
use keepalive_shim_policy::config::{self, EX_CONFIG};
use keepalive_shim_supervisor::{self as supervise, Plan, Trap, kernel};
use keepalive_shim_sys::output::printable;
use keepalive_shim_sys::{proc, say};
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

/// Set by `run` for the command it supervises: the supervisor's PID. A nested `run` that sees
/// it (and is under that supervisor's filter) is covered already: the kernel allows one
/// listener in a filter stack, so a second supervisor could not start anyway.
const SUPERVISED: &str = "KEEPALIVE_SHIM_SUPERVISED";

/// Run a program with keepalive on every TCP connection.
///
/// Options set the matching KEEPALIVE_* variables; where one is not given, the environment's own
/// value is used. The library is found where KEEPALIVE_SHIM_LIBRARY says, else next to this
/// executable (an archive, a checkout), in ../lib/keepalive-shim/ (the packages, the image),
/// in ../lib/, or in /usr/lib/keepalive-shim/.
///
/// Modes: `preload` puts the library in LD_PRELOAD and execs the command (same PID). `seccomp`
/// starts the command under a seccomp supervisor that configures every TCP socket of every
/// program it starts, statically linked and Go programs included (Linux 5.6, 5.14 for the
/// socket trap; the command becomes this process's child; destination rules cannot apply).
/// `both` does both. `auto` (the default) looks at the command's executable alone: preload
/// when it is dynamically linked, seccomp when it is statically linked or a Go program. A
/// wrapper script that later execs a static binary therefore gets preload only, and that binary
/// nothing: use `--mode both` (or `--mode seccomp`) to cover the whole tree.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim run -- python3 tool.py\n  \
    keepalive-shim run --idle 20s --interval 5s --count 3 -- wget https://example.internal/big.iso\n  \
    keepalive-shim run --force --log debug -- node client.js\n  \
    keepalive-shim run -- ./static-client           # auto: the seccomp supervisor\n  \
    keepalive-shim run --mode both -- ./start.sh    # a script that execs static binaries\n  \
    ENTRYPOINT [\"/usr/local/bin/keepalive-shim\", \"run\", \"--\", \"/app/server\"]")]
pub struct Args {
    /// How to reach the program: auto, preload, seccomp or both (see above).
    #[arg(long, value_enum, default_value = "auto")]
    mode: Mode,
    /// Under the supervisor, which call to trap: socket (make and configure each TCP socket;
    /// Linux 5.14; works under Docker's default seccomp profile), connect (configure the socket
    /// at connect() and listen(); Linux 5.6; needs the right to take the program's
    /// descriptors, CAP_SYS_PTRACE in a container), or auto (socket where the kernel has it).
    #[arg(long, value_parser = ["auto", "socket", "connect"], default_value = "auto")]
    trap: String,
    /// Do not ask for SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (for measurements).
    #[arg(long, hide = true)]
    no_sync_wake_up: bool,
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
    /// Refuse to run a program that the chosen mode cannot reach (with --mode auto: neither the
    /// library nor the supervisor), and exit with status 78 on any invalid setting
    /// (KEEPALIVE_STRICT=1).
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
    let program = args.command[0].to_string_lossy().into_owned();
    let Some(path) = reach::resolve(&program) else {
        say!("{program}: command not found");
        return ExitCode::from(127);
    };
    let obstacles = reach::obstacles(&path);
    let privileged = supervise::privileged();
    let (mode, why) = reach::choose(args.mode, &obstacles, privileged);
    let flags = [
        (config::IDLE, args.idle.clone()),
        (config::INTERVAL, args.interval.clone()),
        (config::COUNT, args.count.clone()),
        (config::USER_TIMEOUT, args.user_timeout.clone()),
        (config::LOG, args.log.clone()),
        (config::FORCE, args.force.then(|| "1".to_owned())),
        (config::STRICT, args.strict.then(|| "1".to_owned())),
    ];
    let flags: Vec<(&str, String)> = flags
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();

    if mode != Mode::Preload {
        match supervised(&args, &path, (mode, &why), &flags, &obstacles, privileged) {
            Ok(code) => return code,
            Err(message) if args.mode == Mode::Auto && !args.strict => {
                // auto chose the supervisor, which cannot work here: the library, as before.
                say!("warning: {message}; running {program} without the supervisor");
            }
            Err(message) => {
                say!("{message}; not running {program}");
                return ExitCode::from(EX_CONFIG as u8);
            }
        }
    }

    let library = match library::for_preload() {
        Ok(path) => path,
        Err(message) => {
            say!("{message}");
            return ExitCode::from(EX_CONFIG as u8);
        }
    };
    for obstacle in &obstacles {
        say!("warning: {obstacle}");
    }
    if args.strict && !obstacles.is_empty() {
        say!("--strict: not running {program}, which the library cannot reach ({why})");
        return ExitCode::from(EX_CONFIG as u8);
    }

    notice(
        &program,
        || configuration(&environment_with(&flags)).settings,
        Mode::Preload,
    );
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    for (name, value) in &flags {
        cmd.env(name, value);
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

/// The trap `--trap` names on this kernel, or why it cannot work.
pub fn trap_for(requested: &str, version: Option<(u32, u32)>) -> Result<Trap, String> {
    match requested {
        "socket" => kernel::supports(version, Trap::Socket).map(|()| Trap::Socket),
        "connect" => kernel::supports(version, Trap::Connect).map(|()| Trap::Connect),
        _ => kernel::choose(version),
    }
}

/// Runs the command under the supervisor (with the library too in `both`). `Err`: it cannot
/// work here, and nothing was run.
fn supervised(
    args: &Args,
    path: &Path,
    (mode, why): (Mode, &str),
    flags: &[(&str, String)],
    obstacles: &[reach::Obstacle],
    privileged: bool,
) -> Result<ExitCode, String> {
    let program = &args.command[0];
    let trap = trap_for(&args.trap, kernel::running())?;
    // The supervisor's configuration: the environment with the options applied, read by the
    // library's own code.
    let mut vars = environment_with(flags);
    let set = |vars: &mut Vec<(OsString, OsString)>, name: &str, value: OsString| {
        vars.retain(|(k, _)| k != name);
        vars.push((name.into(), value));
    };
    let loaded = configuration(&vars);
    let s = loaded.settings;
    let warn = s.log >= config::LogLevel::Warn;
    if s.log >= config::LogLevel::Debug {
        say!("{}: {why}", program.to_string_lossy());
    }
    if mode == Mode::Seccomp && warn {
        // The library would say these in each process; here the supervisor says them, once.
        for problem in &loaded.problems {
            say!("warning: {problem}");
        }
    }
    if mode == Mode::Seccomp && loaded.rejected() {
        say!(
            "KEEPALIVE_STRICT: not running {}",
            program.to_string_lossy()
        );
        return Ok(ExitCode::from(EX_CONFIG as u8));
    }
    if !s.enabled {
        // Nothing to do: the command runs as it is (with the library in `both`, which is off).
        notice(&program.to_string_lossy(), || s, mode);
        return Ok(exec_plain(args, mode, flags));
    }
    if args.mode == Mode::Auto
        && let Some(outer) = covered()
    {
        // Inside a supervised tree: the outer supervisor already configures every TCP socket
        // of this command (and a second listener would get EBUSY). `auto` runs the command
        // under it as it is; an explicit `--mode seccomp|both` still refuses (EBUSY), since
        // the settings asked for here could not apply.
        if s.log >= config::LogLevel::Debug {
            say!(
                "{}: covered by the supervisor of pid {outer} (an outer `keepalive-shim run`): \
                 no second supervisor",
                program.to_string_lossy()
            );
        }
        let given: Vec<&str> = flags
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| ![config::LOG, config::STRICT].contains(name))
            .collect();
        if warn && !given.is_empty() {
            say!(
                "warning: {} runs under the supervisor of pid {outer}, whose settings the sockets \
                 it makes get: {} given here do not apply to them",
                program.to_string_lossy(),
                given.join(", ")
            );
        }
        return Ok(exec_plain(args, mode, flags));
    }
    if s.has_rules() && warn {
        say!(
            "warning: destination rules (KEEPALIVE_EXCLUDE, KEEPALIVE_INCLUDE) cannot apply under \
             the seccomp supervisor, which decides from the system call's registers and never \
             reads the program's memory, where connect()'s destination is: every TCP socket of \
             the programs {} is configured",
            if mode == Mode::Both {
                "the library cannot enter"
            } else {
                "it reaches"
            }
        );
    }
    if let Some(o) = obstacles.iter().find(|o| o.kind == Kind::Architecture) {
        say!(
            "warning: {o}, and the supervisor's filter sees only this architecture's system \
             calls: its sockets get nothing"
        );
        if args.strict {
            say!("--strict: not running {}", program.to_string_lossy());
            return Ok(ExitCode::from(EX_CONFIG as u8));
        }
    }
    if !privileged && warn {
        for o in obstacles.iter().filter(|o| o.kind == Kind::Setid) {
            say!(
                "warning: {}: under the seccomp supervisor it runs without that privilege \
                 (no_new_privs, needed without CAP_SYS_ADMIN), and so does every setuid program \
                 it starts",
                o.message.split(':').next().unwrap_or_default()
            );
        }
    }
    if mode == Mode::Both {
        let library = library::for_preload()?;
        set(
            &mut vars,
            "LD_PRELOAD",
            with_library(std::env::var_os("LD_PRELOAD").as_deref(), &library),
        );
    } else {
        // The program's environment stays its own: the supervisor holds the configuration.
        vars = std::env::vars_os().collect();
    }
    // This process becomes the supervisor (the command its child): a nested `run` knows it is
    // covered.
    set(&mut vars, SUPERVISED, std::process::id().to_string().into());
    notice(&program.to_string_lossy(), || s, mode);
    supervise::run(Plan {
        path,
        argv: &args.command,
        env: vars,
        settings: s,
        trap,
        sync_wake_up: !args.no_sync_wake_up,
    })
}

/// One line on stderr saying what the program's connections get, so that a person who types
/// `run` sees that it works: only when stderr is a terminal and the log level is not off.
/// Pipes, scripts and log collectors get nothing from it: the program's stderr stays its own.
/// The one line `run` says on a terminal; `settings` is asked for only there.
fn notice(program: &str, settings: impl FnOnce() -> config::Settings, mode: Mode) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return;
    }
    if let Some(line) = notice_text(&printable(program), &settings(), mode) {
        say!("{line}");
    }
}

/// This process's environment with the options given in their place: what the library (and
/// the supervisor) read the configuration from.
fn environment_with(flags: &[(&str, String)]) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !flags.iter().any(|(name, _)| k == name))
        .collect();
    vars.extend(flags.iter().map(|(k, v)| (k.into(), v.into())));
    vars
}

/// The configuration `vars` and the system file give, read by the library's own code.
fn configuration(vars: &[(OsString, OsString)]) -> config::Loaded {
    config::load_system(
        &config::read_system_file(),
        vars.iter()
            .map(|(k, v)| (k.as_encoded_bytes(), v.as_encoded_bytes())),
        false,
    )
}

/// The notice's text for these settings (`None` when the log level is off).
fn notice_text(program: &str, s: &config::Settings, mode: Mode) -> Option<String> {
    if s.log < config::LogLevel::Warn {
        return None;
    }
    if !s.enabled {
        return Some(format!(
            "{program}: KEEPALIVE_ENABLE is off: its connections are left as they are"
        ));
    }
    let how = match mode {
        Mode::Seccomp => "the seccomp supervisor",
        Mode::Both => "the preload library and the seccomp supervisor",
        _ => "the preload library",
    };
    let which = if s.has_rules() && mode != Mode::Seccomp {
        "every TCP connection that KEEPALIVE_EXCLUDE and KEEPALIVE_INCLUDE do not leave alone"
    } else {
        "every TCP connection"
    };
    let user_timeout = match s.user_timeout_ms {
        0 => "no user timeout (KEEPALIVE_USER_TIMEOUT=0)".to_owned(),
        ms if ms % 1000 == 0 => format!("a {} s user timeout", ms / 1000),
        ms => format!("a {ms} ms user timeout"),
    };
    let force = if s.force {
        ", over the program's own settings"
    } else {
        ""
    };
    Some(format!(
        "{program}: {which} gets keepalive {} s + {} s x {} and {user_timeout}{force} ({how})",
        s.idle_s, s.interval_s, s.count
    ))
}

/// The PID of the supervisor whose filter this process is under, when `run` is nested in a
/// supervised tree: `KEEPALIVE_SHIM_SUPERVISED` names a live ancestor, and this process carries
/// a seccomp filter (`Seccomp_filters:` in /proc/self/status; a container runtime's filter
/// alone has no listener, and then the variable is missing or names no ancestor).
fn covered() -> Option<u32> {
    let pid: i32 = std::env::var(SUPERVISED).ok()?.trim().parse().ok()?;
    if proc::Status::read("self").ok()?.number("Seccomp_filters")? == 0 {
        return None;
    }
    // An ancestor, alive: the supervisor is a subreaper that outlives its whole tree, so every
    // process of the tree stays its descendant; a PID reused by another process is not ours.
    let me = std::process::id() as i32;
    proc::ancestors(me, 4096)
        .contains(&pid)
        .then_some(pid as u32)
}

/// The command with nothing of keepalive-shim in its way (KEEPALIVE_ENABLE off): `exec`, with
/// the variables and the library in `both` as in preload mode.
fn exec_plain(args: &Args, mode: Mode, flags: &[(&str, String)]) -> ExitCode {
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    if mode == Mode::Both {
        for (name, value) in flags {
            cmd.env(name, value);
        }
        if let Ok(library) = library::for_preload() {
            cmd.env(
                "LD_PRELOAD",
                with_library(std::env::var_os("LD_PRELOAD").as_deref(), &library),
            );
        }
    }
    let error = cmd.exec();
    say!("cannot run {}: {error}", args.command[0].to_string_lossy());
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
    fn the_notice_says_what_every_connection_gets() {
        let mut s = config::Settings::default();
        assert_eq!(
            notice_text("python3", &s, Mode::Preload).unwrap(),
            "python3: every TCP connection gets keepalive 30 s + 10 s x 3 and a 60 s user \
             timeout (the preload library)"
        );
        s.user_timeout_ms = 1500;
        s.force = true;
        assert_eq!(
            notice_text("./static", &s, Mode::Seccomp).unwrap(),
            "./static: every TCP connection gets keepalive 30 s + 10 s x 3 and a 1500 ms user \
             timeout, over the program's own settings (the seccomp supervisor)"
        );
        s.enabled = false;
        assert!(
            notice_text("x", &s, Mode::Both)
                .unwrap()
                .contains("KEEPALIVE_ENABLE is off")
        );
        s.log = config::LogLevel::Off;
        assert_eq!(notice_text("x", &s, Mode::Both), None);
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
