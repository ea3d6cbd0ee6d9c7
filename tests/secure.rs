//! Secure execution and the system file, the way system-wide installs meet them: the library
//! listed in `/etc/ld.so.preload`, a setuid-root C program (`tests/programs/secure_probe.c`)
//! run by an unprivileged user (uid 65534), and `/etc/keepalive-shim.conf`. Under `AT_SECURE`
//! the caller's environment must not steer or stop the program; only the root-owned file counts.
//!
//! Never the machine's real files: each run enters a private mount namespace of its own between
//! fork and exec, lays an overlay over `/etc` whose upper layer holds this run's `ld.so.preload`
//! and `keepalive-shim.conf`, drops to uid 65534, and execs the program. Nothing else runs in
//! that namespace, and it disappears with the program. Every test checks that the host's
//! `/etc/ld.so.preload` and `/etc/keepalive-shim.conf` are what they were before.
//!
//! Needs root (mount namespaces, setuid files): skipped otherwise, except under `CI=true`.

mod common;

use common::{
    KERNEL, OURS, build_c, command, five, is_root, library, overlay_etc, stderr, unavailable,
};
use serde_json::Value;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

const NOBODY: u32 = 65534;
const HOST_FILES: [&str; 2] = ["/etc/ld.so.preload", "/etc/keepalive-shim.conf"];

/// The host's own files, as they are now (`None`: absent).
fn host_files() -> Vec<Option<Vec<u8>>> {
    HOST_FILES.iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Whether setuid programs run from `dir` (a `nosuid` mount ignores the bit).
fn allows_setuid(dir: &Path) -> bool {
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid buffer; path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statvfs(path.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_NOSUID == 0 }
}

/// The two programs, built once: `probe-setuid` (root, mode 4755) and `probe` (mode 0755), in a
/// directory uid 65534 can reach on a filesystem that honours setuid; `None` when skipped.
struct Programs {
    dir: PathBuf,
    setuid: PathBuf,
    plain: PathBuf,
}

fn programs() -> Option<&'static Programs> {
    static PROGRAMS: OnceLock<Option<Programs>> = OnceLock::new();
    PROGRAMS
        .get_or_init(|| {
            if !is_root() {
                return unavailable(
                    "the secure-execution tests: setuid programs and mount namespaces need root",
                );
            }
            let base = [
                std::env::temp_dir(),
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
            ]
            .into_iter()
            .find(|d| allows_setuid(d));
            let Some(base) = base else {
                return unavailable(
                    "the secure-execution tests: no temporary directory on a filesystem that \
                     allows setuid",
                );
            };
            sweep(&base);
            let dir = base.join(format!("kas-secure-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let plain = dir.join("probe");
            std::fs::copy(build_c("secure_probe.c", &["-O2", "-Wall"]), &plain).unwrap();
            let setuid = dir.join("probe-setuid");
            std::fs::copy(&plain, &setuid).unwrap();
            std::os::unix::fs::chown(&setuid, Some(0), Some(0)).unwrap();
            std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
            std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
            Some(Programs { dir, setuid, plain })
        })
        .as_ref()
}

/// Removes the directories of earlier runs whose process is gone (the programs are built once per
/// run and kept until it ends).
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("kas-secure-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A file for the overlay's upper layer of `/etc`: name, content, owner, mode.
#[derive(Clone, Copy)]
struct EtcFile<'a> {
    name: &'a str,
    text: &'a str,
    uid: u32,
    mode: u32,
}

/// `/etc/ld.so.preload` naming the library under test.
fn preload_file() -> EtcFile<'static> {
    static LINE: OnceLock<String> = OnceLock::new();
    let text = LINE.get_or_init(|| format!("{}\n", library().display()));
    EtcFile {
        name: "ld.so.preload",
        text,
        uid: 0,
        mode: 0o644,
    }
}

/// `/etc/keepalive-shim.conf` with `text`, root's and mode 0644 unless said otherwise.
fn conf(text: &str) -> EtcFile<'_> {
    EtcFile {
        name: "keepalive-shim.conf",
        text,
        uid: 0,
        mode: 0o644,
    }
}

/// Runs `program` as uid 65534 with `vars` (and no other `KEEPALIVE_*` or `LD_PRELOAD`), in a
/// private mount namespace where `/etc` has `files` laid over it.
fn run_as_nobody(
    programs: &Programs,
    program: &Path,
    files: &[EtcFile],
    vars: &[(&str, &str)],
) -> Output {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let before = host_files();
    let layer = programs
        .dir
        .join(format!("etc-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let (upper, work) = (layer.join("upper"), layer.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in files {
        let path = upper.join(file.name);
        std::fs::write(&path, file.text).unwrap();
        std::os::unix::fs::chown(&path, Some(file.uid), Some(0)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode)).unwrap();
    }
    let mut cmd = command(false, program);
    cmd.envs(vars.iter().copied());
    overlay_etc(&mut cmd, &upper, &work);
    // SAFETY: between fork and exec, after the mounts of overlay_etc (closures run in the order
    // they were added), the closure makes only system calls (setgroups, setresgid, setresuid); it
    // allocates nothing. The child is single-threaded, so glibc's set*id broadcast has no other
    // thread to signal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .expect("run the probe in a private mount namespace");
    let _ = std::fs::remove_dir_all(&layer);
    assert_eq!(
        host_files(),
        before,
        "the host's /etc/ld.so.preload or /etc/keepalive-shim.conf changed"
    );
    out
}

/// The probe's JSON, after checking it exited 0.
fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the probe prints JSON")
}

#[test]
fn the_setuid_probe_runs_in_secure_mode_and_the_library_reaches_it_only_through_ld_so_preload() {
    let Some(p) = programs() else { return };
    // Without the library: the kernel's values, in secure mode, as root.
    let bare = json(&run_as_nobody(p, &p.setuid, &[], &[]));
    assert_eq!(
        (
            bare["secure"].as_i64(),
            bare["uid"].as_i64(),
            bare["euid"].as_i64()
        ),
        (Some(1), Some(65534), Some(0))
    );
    assert_eq!(five(&bare), KERNEL);
    // LD_PRELOAD from the caller does not reach a setuid program (the loader's secure mode).
    let ld_preload = library().to_str().unwrap();
    let out = run_as_nobody(p, &p.setuid, &[], &[("LD_PRELOAD", ld_preload)]);
    assert_eq!(five(&json(&out)), KERNEL);
    // /etc/ld.so.preload does: the library's defaults.
    let out = run_as_nobody(p, &p.setuid, &[preload_file()], &[]);
    assert_eq!(five(&json(&out)), OURS);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // The plain copy run by the same user is not in secure mode.
    let plain = json(&run_as_nobody(p, &p.plain, &[preload_file()], &[]));
    assert_eq!(
        (plain["secure"].as_i64(), plain["euid"].as_i64()),
        (Some(0), Some(65534))
    );
    assert_eq!(five(&plain), OURS);
}

#[test]
fn in_secure_mode_the_callers_environment_does_not_steer_the_program() {
    let Some(p) = programs() else { return };
    let vars = [
        ("KEEPALIVE_IDLE", "5"),
        ("KEEPALIVE_USER_TIMEOUT", "1ms"),
        ("KEEPIDLE", "7"),
    ];
    // Not secure: the environment applies (the control).
    let plain = run_as_nobody(p, &p.plain, &[preload_file()], &vars);
    assert_eq!(five(&json(&plain)), [1, 5, 10, 3, 1]);
    // Secure: the library's defaults, and not a word about the environment.
    let secure = run_as_nobody(p, &p.setuid, &[preload_file()], &vars);
    assert_eq!(five(&json(&secure)), OURS);
    assert!(secure.stderr.is_empty(), "{}", stderr(&secure));
    // Nor can it switch the library off.
    let off = run_as_nobody(
        p,
        &p.setuid,
        &[preload_file()],
        &[("KEEPALIVE_ENABLE", "0"), ("KEEPALIVE", "off")],
    );
    assert_eq!(five(&json(&off)), OURS);
}

#[test]
fn in_secure_mode_the_callers_environment_cannot_stop_the_program() {
    let Some(p) = programs() else { return };
    let vars = [
        ("KEEPALIVE_STRICT", "1"),
        ("KEEPALIVE_IDLE", "abc"),
        ("KEEPALIVE_TYPO", "1"),
        ("KEEPALIVE_LOG", "debug"),
    ];
    // Not secure, the library in its own LD_PRELOAD: strict mode stops it before main (the
    // control).
    let lib = library().to_str().unwrap();
    let given = [&vars[..], &[("LD_PRELOAD", lib)]].concat();
    let plain = run_as_nobody(p, &p.plain, &[], &given);
    assert_eq!(plain.status.code(), Some(78), "{}", stderr(&plain));
    assert!(plain.stdout.is_empty());
    // Not secure, the library from /etc/ld.so.preload only: strict mode never stops a program
    // that did not ask for the library; it runs on, saying why.
    let machine = run_as_nobody(p, &p.plain, &[preload_file()], &vars);
    assert_eq!(machine.status.code(), Some(0), "{}", stderr(&machine));
    assert!(
        stderr(&machine)
            .contains("strict mode stops only programs given the library by their own environment"),
        "{}",
        stderr(&machine)
    );
    // Secure: it runs, with the defaults, and nothing on stderr (not even debug lines).
    let secure = run_as_nobody(p, &p.setuid, &[preload_file()], &vars);
    assert_eq!(secure.status.code(), Some(0), "{}", stderr(&secure));
    assert_eq!(five(&json(&secure)), OURS);
    assert!(secure.stderr.is_empty(), "{}", stderr(&secure));
}

#[test]
fn in_secure_mode_only_the_root_file_counts() {
    let Some(p) = programs() else { return };
    let file = conf("# site-wide\nKEEPALIVE_IDLE=45\n");
    let out = run_as_nobody(
        p,
        &p.setuid,
        &[preload_file(), file],
        &[("KEEPALIVE_IDLE", "5")],
    );
    assert_eq!(five(&json(&out)), [1, 45, 10, 3, 75_000]);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // Strict mode in the file is not honoured (it would stop every program on the machine):
    // the program runs, and the warnings name the file's line and why strict is refused.
    let strict = conf("KEEPALIVE_STRICT=1\nKEEPALIVE_COUNT=0\n");
    let out = run_as_nobody(p, &p.setuid, &[preload_file(), strict], &[]);
    assert_eq!(five(&json(&out)), OURS);
    for needle in [
        "/etc/keepalive-shim.conf:2: KEEPALIVE_COUNT=\"0\" is not a whole number from 1 to 127",
        "KEEPALIVE_STRICT is not honoured in /etc/keepalive-shim.conf",
    ] {
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
    // A problem in the file is a warning naming the file and the line; the rest applies.
    let bad = conf("KEEPALIVE_IDLE=45\nKEEPALIVE_INTERVAL=soon\n");
    let out = run_as_nobody(p, &p.setuid, &[preload_file(), bad], &[]);
    assert_eq!(five(&json(&out)), [1, 45, 10, 3, 75_000]);
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(
            "]: /etc/keepalive-shim.conf:2: KEEPALIVE_INTERVAL=\"soon\" is not whole seconds"
        ),
        "{text}"
    );
}

#[test]
fn a_file_anyone_but_root_could_write_is_ignored_with_one_warning() {
    let Some(p) = programs() else { return };
    let text = "KEEPALIVE_IDLE=45\n";
    for (uid, mode, reason) in [
        (NOBODY, 0o644, "it is owned by uid 65534, not root"),
        (0, 0o664, "it is writable by group or others (mode 0664)"),
        (0, 0o646, "it is writable by group or others (mode 0646)"),
    ] {
        let file = EtcFile {
            uid,
            mode,
            ..conf(text)
        };
        for program in [&p.setuid, &p.plain] {
            let out = run_as_nobody(p, program, &[preload_file(), file], &[]);
            assert_eq!(five(&json(&out)), OURS, "{reason}");
            let warning = stderr(&out);
            assert_eq!(warning.lines().count(), 1, "{warning}");
            assert!(
                warning.contains(&format!("]: /etc/keepalive-shim.conf is ignored: {reason}")),
                "{warning}"
            );
        }
    }
    // A root file with mode 0600 is valid, and read by the setuid program (euid 0).
    let private = EtcFile {
        mode: 0o600,
        ..conf(text)
    };
    let out = run_as_nobody(p, &p.setuid, &[preload_file(), private], &[]);
    assert_eq!(five(&json(&out)), [1, 45, 10, 3, 75_000]);
}

#[test]
fn outside_secure_mode_the_environment_wins_over_the_file() {
    let Some(p) = programs() else { return };
    let file = || conf("KEEPALIVE_IDLE=45\nKEEPALIVE_COUNT=4\n");
    // The file alone.
    let out = run_as_nobody(p, &p.plain, &[preload_file(), file()], &[]);
    assert_eq!(five(&json(&out)), [1, 45, 10, 4, 85_000]);
    // The environment's idle over the file's; the file's count stays.
    let out = run_as_nobody(
        p,
        &p.plain,
        &[preload_file(), file()],
        &[("KEEPALIVE_IDLE", "5")],
    );
    assert_eq!(five(&json(&out)), [1, 5, 10, 4, 45_000]);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    // The same environment, secure: the file's values.
    let out = run_as_nobody(
        p,
        &p.setuid,
        &[preload_file(), file()],
        &[("KEEPALIVE_IDLE", "5")],
    );
    assert_eq!(five(&json(&out)), [1, 45, 10, 4, 85_000]);
}

/// The machine-wide switch cannot be turned into a machine-wide stop: with the library in
/// `/etc/ld.so.preload` and a system file holding strict mode and a typo, a plain and a setuid
/// program both run, with the defaults; a file only root can read (mode 0600) says nothing to a
/// program that cannot read it.
#[test]
fn no_system_file_stops_the_machine() {
    let Some(p) = programs() else { return };
    let typo = conf("KEEPALIVE_STRICT=1\nKEEPALIVE_IDEL=30\n");
    for program in [&p.plain, &p.setuid] {
        let out = run_as_nobody(p, program, &[preload_file(), typo], &[]);
        assert_eq!(five(&json(&out)), OURS, "{}", program.display());
        let text = stderr(&out);
        assert!(text.contains("did you mean KEEPALIVE_IDLE?"), "{text}");
        assert!(text.contains("KEEPALIVE_STRICT is not honoured"), "{text}");
    }
    let private = EtcFile {
        mode: 0o600,
        ..conf("KEEPALIVE_IDLE=45\n")
    };
    for program in [&p.plain, &p.setuid] {
        let out = run_as_nobody(p, program, &[preload_file(), private], &[]);
        let want = if program == &p.setuid {
            // The setuid program runs as root: it reads the file.
            [1, 45, 10, 3, 75_000]
        } else {
            OURS
        };
        assert_eq!(five(&json(&out)), want, "{}", program.display());
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            program.display(),
            stderr(&out)
        );
    }
}

/// Strict mode stops only a program whose own `LD_PRELOAD` gave it the library, and that is
/// judged by the file (device and inode), not by its name: a program whose `LD_PRELOAD` names
/// another file called `libkeepalive_shim.so`, while the library came from `/etc/ld.so.preload`,
/// runs on; one whose `LD_PRELOAD` names the library under another name is stopped.
#[test]
fn strict_mode_knows_the_library_by_its_file_not_by_its_name() {
    let Some(p) = programs() else { return };
    let vars = [("KEEPALIVE_STRICT", "1"), ("KEEPALIVE_IDLE", "abc")];
    fn with<'a>(vars: &[(&'a str, &'a str)], ld_preload: &'a Path) -> Vec<(&'a str, &'a str)> {
        let mut all = vars.to_vec();
        all.push(("LD_PRELOAD", ld_preload.to_str().unwrap()));
        all
    }
    // Another library (a harmless one of the tests) under the library's file name.
    let other_dir = p.dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    std::fs::set_permissions(&other_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other = other_dir.join("libkeepalive_shim.so");
    std::fs::copy(
        build_c("deepbind_dep.c", &["-O2", "-shared", "-fPIC"]),
        &other,
    )
    .unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The library under another name.
    let renamed = p.dir.join("renamed.so");
    let _ = std::fs::remove_file(&renamed);
    std::os::unix::fs::symlink(library(), &renamed).unwrap();

    // From /etc/ld.so.preload, with LD_PRELOAD naming the other file: runs on, saying why.
    let out = run_as_nobody(p, &p.plain, &[preload_file()], &with(&vars, &other));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(five(&json(&out)), OURS);
    assert!(
        stderr(&out)
            .contains("strict mode stops only programs given the library by their own environment"),
        "{}",
        stderr(&out)
    );
    // LD_PRELOAD naming the library under another name, with or without /etc/ld.so.preload
    // (the loader loads the one file once): stopped before main.
    for files in [&[][..], &[preload_file()][..]] {
        let out = run_as_nobody(p, &p.plain, files, &with(&vars, &renamed));
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains("KEEPALIVE_STRICT is on: exiting with status 78"),
            "{}",
            stderr(&out)
        );
    }
    // And by its own path, as ever.
    let out = run_as_nobody(p, &p.plain, &[], &with(&vars, library()));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}
