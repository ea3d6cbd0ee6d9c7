//! The command-line tool against real processes: `run` with python3 and a statically linked C
//! program, `check` against what the library itself prints (and against a system file, in a
//! private mount namespace), `inspect` on python3 and curl with and without the library, and its
//! errors for a missing PID and another user's process; what `run` says on a terminal (a
//! pseudo-terminal) and in a pipe.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

/// `keepalive-shim ARGS` with a clean environment, the library under test named by
/// `KEEPALIVE_SHIM_LIBRARY`.
fn cli(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = command(false, CLI);
    cmd.args(args).envs(vars.iter().copied());
    cmd.env("KEEPALIVE_SHIM_LIBRARY", library());
    cmd
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn run_preloads_the_library_with_the_options_given() {
    let probe = program("probe.py");
    let probe = probe.to_str().unwrap();
    let python = python().to_str().unwrap();
    let without = json_of(
        &command(false, python)
            .args([probe, "sockets"])
            .output()
            .unwrap(),
    );
    assert_eq!(five(&without["ipv4_connected"]), KERNEL);
    let out = cli(
        &["run", "--idle", "45", "--", python, probe, "sockets"],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(
        five(&json_of(&out)["ipv4_connected"]),
        [1, 45, 10, 3, 75_000]
    );
    // Where an option is not given, the environment's value stands.
    let out = cli(
        &[
            "run",
            "--idle",
            "45",
            "--user-timeout",
            "1500ms",
            "--",
            python,
            probe,
            "sockets",
        ],
        &[("KEEPALIVE_COUNT", "7")],
    )
    .output()
    .unwrap();
    assert_eq!(five(&json_of(&out)["ipv4_connected"]), [1, 45, 10, 7, 1500]);
    // --force reaches the library: a program's own values no longer win.
    let out = cli(&["run", "--force", "--", python, probe, "own-options"], &[])
        .output()
        .unwrap();
    assert_eq!(five(&json_of(&out)["after_own_idle_1"]), OURS);
}

#[test]
fn run_keeps_what_ld_preload_already_had() {
    let out = cli(
        &["run", "--", "sh", "-c", "echo \"$LD_PRELOAD\""],
        &[("LD_PRELOAD", "libc.so.6")],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = format!("{}:libc.so.6\n", library().display());
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn run_rejects_bad_options_before_running_anything() {
    let out = cli(
        &["run", "--idle", "0", "--", "touch", "/nonexistent/x"],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("'--idle <IDLE>': \"0\" is not whole seconds from 1 to 32767"));
    let out = cli(&["run", "--", "no-such-program-here"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("no-such-program-here: command not found"));
}

/// `cmd` run with its stderr on a new pseudo-terminal, as in a person's shell, stdout a pipe:
/// its exit status, its stdout, and what it wrote on the terminal (`\r\n` read as `\n`).
fn on_a_terminal(cmd: &mut Command) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: posix_openpt has no preconditions; the descriptor it returns is owned here.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(
        master >= 0,
        "posix_openpt: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `master` is a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `master` is an open pseudo-terminal master; `name` is writable for its length.
    let ok = unsafe {
        libc::grantpt(master.as_raw_fd()) == 0
            && libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ok, "pseudo-terminal: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path.to_str().unwrap())
        .expect("open the terminal");
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(terminal.try_clone().unwrap())
        .output()
        .expect("run");
    // The terminal is still open here (`terminal`): what was written waits, unread, in the
    // master; read it without blocking.
    // SAFETY: fcntl on a descriptor owned here.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut master = std::fs::File::from(master);
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        said.extend_from_slice(&buf[..n]);
    }
    drop(terminal);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&said).replace("\r\n", "\n"),
    )
}

/// On a terminal, `run` says in one line what every connection gets, and by which mechanism,
/// before the program's own stderr; with `KEEPALIVE_LOG=off`, and wherever stderr is not a
/// terminal (a pipe, a log file), it says nothing and the program's stderr is its own.
#[test]
fn run_says_what_it_does_on_a_terminal_and_nothing_in_a_pipe() {
    let own = ["sh", "-c", "echo mine >&2"];
    let (status, _, said) = on_a_terminal(&mut cli(&[&["run", "--"][..], &own].concat(), &[]));
    assert!(status.success(), "{said}");
    assert_eq!(
        said,
        "keepalive-shim: sh: every TCP connection gets keepalive 30 s + 10 s x 3 and a 60 s user \
         timeout (the preload library)\nmine\n"
    );
    let (_, _, said) = on_a_terminal(&mut cli(
        &[&["run", "--idle", "45", "--"][..], &own].concat(),
        &[],
    ));
    assert_eq!(
        said,
        "keepalive-shim: sh: every TCP connection gets keepalive 45 s + 10 s x 3 and a 75 s user \
         timeout (the preload library)\nmine\n"
    );
    let (_, _, said) = on_a_terminal(&mut cli(
        &[&["run", "--"][..], &own].concat(),
        &[("KEEPALIVE_LOG", "off")],
    ));
    assert_eq!(said, "mine\n", "KEEPALIVE_LOG=off");
    let out = cli(&[&["run", "--"][..], &own].concat(), &[])
        .output()
        .unwrap();
    assert_eq!(stderr(&out), "mine\n", "stderr a pipe");

    // A static program: the supervisor.
    let dir = tempdir("notice");
    let stat = c_program(&dir, true);
    let (status, stdout, said) =
        on_a_terminal(&mut cli(&["run", "--", stat.to_str().unwrap()], &[]));
    assert_eq!(
        (status.code(), stdout.as_str()),
        (Some(7), "hi\n"),
        "{said}"
    );
    assert_eq!(
        said,
        format!(
            "keepalive-shim: {}: every TCP connection gets keepalive 30 s + 10 s x 3 and a 60 s \
             user timeout (the seccomp supervisor)\n",
            stat.display()
        )
    );
}

#[test]
fn run_says_where_it_looked_for_the_library() {
    let dir = tempdir("lonely");
    let lonely = dir.join("keepalive-shim");
    std::fs::copy(CLI, &lonely).unwrap();
    let out = output_of_fresh(command(false, &lonely).args(["run", "--", "true"]));
    assert_eq!(out.status.code(), Some(78));
    let text = stderr(&out);
    assert!(
        text.contains(&format!("looked in {}/libkeepalive_shim.so", dir.display())),
        "{text}"
    );
    assert!(text.contains("../lib/libkeepalive_shim.so"), "{text}");
    assert!(text.contains("set KEEPALIVE_SHIM_LIBRARY"), "{text}");
    // Next to the executable, it is found without the variable.
    std::fs::copy(library(), dir.join("libkeepalive_shim.so")).unwrap();
    let out = output_of_fresh(command(false, &lonely).args(["run", "--", "true"]));
    assert!(out.status.success(), "{}", stderr(&out));
    // A variable naming nothing is an error that names it.
    let out = cli(&["run", "--", "true"], &[])
        .env("KEEPALIVE_SHIM_LIBRARY", "/nope.so")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("KEEPALIVE_SHIM_LIBRARY=/nope.so does not name a file"));
}

/// Runs a binary this test has just written. Another test thread that forks while the copy's
/// write descriptor is open holds it until its exec, and our exec then fails with ETXTBSY: retry.
fn output_of_fresh(cmd: &mut Command) -> Output {
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.expect("run"),
        }
    }
    panic!("still ETXTBSY after 2 s");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A C program that prints `hi` and exits 7, built static or dynamic with gcc.
fn c_program(dir: &Path, static_: bool) -> PathBuf {
    c_program_with(
        dir,
        if static_ { "hi-static" } else { "hi-dynamic" },
        static_,
        "",
    )
}

/// The same program with `extra` C source added, as `name`.
fn c_program_with(dir: &Path, name: &str, static_: bool, extra: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(
        &src,
        format!("#include <stdio.h>\n{extra}\nint main(void) {{ puts(\"hi\"); return 7; }}\n"),
    )
    .unwrap();
    let exe = dir.join(name);
    let mut gcc = Command::new("gcc");
    if static_ {
        gcc.arg("-static");
    }
    let status = gcc.arg("-o").arg(&exe).arg(&src).status().expect("gcc");
    assert!(status.success());
    exe
}

#[test]
fn run_warns_about_a_static_program_and_refuses_it_when_strict() {
    let dir = tempdir("static");
    let (stat, dynamic) = (c_program(&dir, true), c_program(&dir, false));
    let (stat, dynamic) = (stat.to_str().unwrap(), dynamic.to_str().unwrap());
    let out = cli(&["run", "--mode", "preload", "--", stat], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "it runs anyway");
    assert_eq!(out.stdout, b"hi\n");
    assert!(
        stderr(&out).contains("is statically linked (no program interpreter)"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["run", "--mode", "preload", "--strict", "--", stat], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(out.stdout.is_empty(), "not run");
    // The same program linked dynamically: no warning.
    let out = cli(&["run", "--strict", "--", dynamic], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn run_warns_about_go_and_setuid_programs() {
    let dir = tempdir("go-setuid");
    // What Go's linker writes into every Go binary: a .go.buildinfo section.
    let go = c_program_with(
        &dir,
        "hi-go",
        false,
        "__attribute__((used, section(\".go.buildinfo\"))) static const char info[] = \"go\";",
    );
    let out = cli(
        &["run", "--mode", "preload", "--", go.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(stderr(&out).contains("is a Go program"), "{}", stderr(&out));

    if !is_root() {
        unavailable::<()>("the setuid case: giving a file to another user needs root");
        return;
    }
    let setuid = c_program_with(&dir, "hi-setuid", false, "");
    std::os::unix::fs::chown(&setuid, Some(65534), Some(65534)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = cli(
        &[
            "run",
            "--mode",
            "preload",
            "--strict",
            "--",
            setuid.to_str().unwrap(),
        ],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("is setuid: the loader ignores LD_PRELOAD"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_prints_the_settings_and_the_same_warnings_as_the_library() {
    let out = cli(&["check"], &[]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("idle          30s"), "{text}");
    assert!(
        text.contains("on an idle connection (silent peer):    after 60 s"),
        "{text}"
    );

    let vars = [("KEEPALIVE_INTERVAL", "10x"), ("KEEPIDLE", "20")];
    let out = cli(&["check"], &vars).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("idle          20s    KEEPIDLE (libkeepalive's name)"),
        "{text}"
    );
    // The library, loaded into a real program with the same environment, says the same thing.
    let library_says = probe(true, "echo", &vars);
    let line = stderr(&library_says);
    let message = line.trim_end().split_once("]: ").unwrap().1;
    assert!(
        text.contains(&format!("warning: {message}")),
        "{text}\nvs {message}"
    );
}

/// check's warnings, and the library's lines (without their `keepalive-shim[PID]: ` prefix) for
/// the same environment in a real program.
fn warnings_of_check_and_library(vars: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let out = cli(&["check"], vars).output().unwrap();
    let check: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("warning: ").map(str::to_owned))
        .collect();
    let library = stderr(&probe(true, "echo", vars))
        .lines()
        .map(|l| l.split_once("]: ").expect("a library line").1.to_owned())
        .collect();
    (check, library)
}

#[test]
fn check_shows_destination_rules_and_each_bad_entry_as_the_library_does() {
    let vars = [(
        "KEEPALIVE_EXCLUDE",
        "10.0.0.0/8, :5432 db.internal [fd00::]/8:22",
    )];
    let out = cli(&["check"], &vars).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Destinations (decided at connect()):"),
        "{text}"
    );
    assert!(
        text.contains("  left alone:  10.0.0.0/8, :5432, [fd00::]/8:22  (KEEPALIVE_EXCLUDE)"),
        "{text}"
    );
    let (check, library) = warnings_of_check_and_library(&vars);
    assert_eq!(check.len(), 1, "{text}");
    assert!(
        check[0].starts_with("KEEPALIVE_EXCLUDE entry \"db.internal\" is not an IP address"),
        "{check:?}"
    );
    assert_eq!(check, library);
    // No rule: every connection.
    let out = cli(&["check"], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Destinations: every TCP connection is configured"),
        "{text}"
    );
}

#[test]
fn check_reports_near_misses_with_the_name_meant_and_never_the_tools_own_names() {
    let vars = [
        ("KEEP_ALIVE_IDLE", "5"),
        ("KEEPALIVE_TIMEOUT", "3"),
        ("KEEPALIVE_SHIM_TEST_LIBRARY", "/x.so"),
    ];
    let (check, library) = warnings_of_check_and_library(&vars);
    assert_eq!(
        check,
        [
            "KEEPALIVE_TIMEOUT is not a known setting (did you mean KEEPALIVE_USER_TIMEOUT?); ignored",
            "KEEP_ALIVE_IDLE is not a known setting (did you mean KEEPALIVE_IDLE?); ignored",
        ]
    );
    assert_eq!(check, library);
    // KEEPALIVE_SHIM_LIBRARY, which cli() always sets, is never a warning either.
    let out = cli(&["check"], &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_unknown_name_with_a_newline_and_escape_bytes_stays_one_escaped_line() {
    let name = "KEEPALIVE_X\nkeepalive-shim[1]: forged\u{1b}[2J";
    let library = probe(true, "echo", &[(name, "1")]);
    let text = stderr(&library);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(
        text.contains(
            "]: KEEPALIVE_X\\nkeepalive-shim[1]: forged\\u{1b}[2J is not a known setting"
        ),
        "{text:?}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let (check, library) = warnings_of_check_and_library(&[(name, "1")]);
    assert_eq!(check, library);
}

#[test]
fn check_states_the_user_timeout_rule_and_what_secure_mode_ignores() {
    let out = cli(&["check"], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "A program that sets its own idle, interval or count gets a user timeout of its own \
             idle + interval x count (node's 1 s / 1 s / 10: 11 s)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "In secure execution (setuid, setgid or file capabilities) the library ignores the \
             environment: only /etc/keepalive-shim.conf counts."
        ),
        "{text}"
    );
    let vars = [("KEEPALIVE_USER_TIMEOUT", "3s"), ("KEEPALIVE_IDLE", "1h")];
    let out = cli(&["check"], &vars).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "or KEEPALIVE_USER_TIMEOUT (3 s) when that is shorter (node's 1 s / 1 s / 10: 3 s)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  A program in secure execution gets: idle 30s (default), user timeout 60s \
             (derived: idle + interval * count)."
        ),
        "{text}"
    );
}

/// `keepalive-shim check` with `vars`, in a private mount namespace whose `/etc` has an overlay
/// holding `conf` as `/etc/keepalive-shim.conf` (root's, mode 0644); the host's `/etc` is never
/// touched. `None` when not root.
fn check_with_system_file(conf: &str, vars: &[(&str, &str)]) -> Option<Output> {
    if !is_root() {
        return unavailable("the system-file check: a private mount namespace needs root");
    }
    let host = std::fs::read("/etc/keepalive-shim.conf").ok();
    let dir = tempdir("system-file");
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(upper.join("keepalive-shim.conf"), conf).unwrap();
    let mut cmd = cli(&["check"], vars);
    overlay_etc(&mut cmd, &upper, &work);
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        std::fs::read("/etc/keepalive-shim.conf").ok(),
        host,
        "the host's file changed"
    );
    Some(out)
}

#[test]
fn check_shows_the_system_files_settings_with_their_lines() {
    let conf = "# site-wide\nKEEPALIVE_IDLE=45\nKEEPALIVE_COUNT=lots\nKEEPALIVE_EXCLUDE=:5432\n";
    let Some(out) = check_with_system_file(conf, &[("KEEPALIVE_INTERVAL", "5")]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("idle          45s    /etc/keepalive-shim.conf:2"),
        "{text}"
    );
    assert!(
        text.contains("interval      5s     KEEPALIVE_INTERVAL"),
        "{text}"
    );
    assert!(
        text.contains("  left alone:  :5432  (/etc/keepalive-shim.conf:4)"),
        "{text}"
    );
    assert!(
        text.contains("System file /etc/keepalive-shim.conf: read (the environment wins over it"),
        "{text}"
    );
    assert!(
        text.contains(
            "warning: /etc/keepalive-shim.conf:3: KEEPALIVE_COUNT=\"lots\" is not a whole number \
             from 1 to 127; using 3"
        ),
        "{text}"
    );
    assert!(
        text.contains("  A program in secure execution gets: interval 10s (default),"),
        "{text}"
    );
}

/// A client holding a connection to a silent server, under `run` or not.
fn holder(port: u16, under_run: bool) -> Background {
    let target = format!("127.0.0.1:{port}");
    let client = program("client.py");
    let args = [client.to_str().unwrap(), "hold", &target];
    let cmd = if under_run {
        let mut cmd = cli(&["run", "--"], &[]);
        cmd.arg(python()).args(args);
        cmd
    } else {
        let mut cmd = command(false, python());
        cmd.args(args);
        cmd
    };
    let bg = Background::spawn(cmd);
    bg.expect("connected", Duration::from_secs(10));
    bg
}

/// The one established connection `inspect --json` shows for `pid`, waiting for it to appear
/// (curl connects a moment after it starts).
fn inspect(pid: u32, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--json"];
    args.extend_from_slice(extra);
    let pid = pid.to_string();
    args.push(&pid);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let items = json_of(&cli(&args, &[]).output().unwrap());
        let items = items.as_array().unwrap();
        let established: Vec<&Value> = items
            .iter()
            .filter(|c| c["state"] == "ESTABLISHED")
            .collect();
        if established.len() == 1 || std::time::Instant::now() > end {
            assert_eq!(established.len(), 1, "{items:?}");
            return established[0].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn inspect_reads_live_sockets_of_programs_with_and_without_the_library() {
    let (_server, port) = server("silent");
    let with = holder(port, true);
    let without = holder(port, false);
    let mut curl = command(false, "curl");
    curl.args(["-s", &format!("http://127.0.0.1:{port}/")])
        .stdout(Stdio::null());
    let curl = Background::spawn(curl);

    let ours = inspect(with.child.id(), &[]);
    assert_eq!(ours["source"], "socket");
    assert_eq!(ours["keepalive"], true);
    assert_eq!(
        [
            &ours["idle_s"],
            &ours["interval_s"],
            &ours["count"],
            &ours["user_timeout_ms"]
        ],
        [30, 10, 3, 60_000]
    );
    let next = ours["next_probe_s"].as_f64().unwrap();
    assert!(next > 0.0 && next <= 30.0, "{next}");
    assert_eq!(ours["peer"], format!("127.0.0.1:{port}"));

    let plain = inspect(without.child.id(), &[]);
    assert_eq!(plain["keepalive"], false);
    assert_eq!(plain["idle_s"], 7200);
    assert!(plain["next_probe_s"].is_null());

    // curl's own keepalive, read from outside: 60 s idle and interval.
    let theirs = inspect(curl.child.id(), &[]);
    assert_eq!(
        [
            &theirs["keepalive"],
            &theirs["idle_s"],
            &theirs["interval_s"]
        ],
        [&Value::from(true), &60.into(), &60.into()]
    );

    // From /proc only: the timer tells keepalive on or off, the values are unknown.
    let proc_ours = inspect(with.child.id(), &["--proc-only"]);
    assert_eq!(
        (
            proc_ours["source"].as_str(),
            proc_ours["keepalive"].as_bool()
        ),
        (Some("proc"), Some(true))
    );
    assert!(proc_ours["idle_s"].is_null());
    let proc_plain = inspect(without.child.id(), &["--proc-only"]);
    assert_eq!(proc_plain["keepalive"], false);

    // The table for people has the same facts.
    let out = cli(&["inspect", &with.child.id().to_string()], &[])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("PID "), "{text}");
    assert!(text.contains("ESTABLISHED  on         30s"), "{text}");
}

#[test]
fn inspect_errors_are_clear() {
    let out = cli(&["inspect", "999999999"], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no process 999999999"),
        "{}",
        stderr(&out)
    );

    if !is_root() {
        unavailable::<()>("the other-user case: switching user needs root");
        return;
    }
    // This (root) process, inspected by user nobody: its descriptors are not readable.
    let mut cmd = cli(&["inspect", &std::process::id().to_string()], &[]);
    as_nobody(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("permission denied (run as root or as the user it runs as)"),
        "{text}"
    );
}
