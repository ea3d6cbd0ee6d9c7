//! The system packages of `scripts/dist.sh` (the `.deb` and the `.rpm`) through their whole
//! lifecycle in a copy of the Debian bullseye tree (`scripts/rootfs.sh`; an overlay, so the
//! cache stays as it is): installed (`dpkg -i` chrooted; `rpm --root` with Debian's rpm, whose
//! scriptlets run chrooted), a program without `LD_PRELOAD` untouched, `keepalive-shim system
//! enable`, python3, a C client, `/bin/sh`, a setuid program and `su` run with the options,
//! `system disable`, removal and purge: `/etc/ld.so.preload` ends as it was before, byte for
//! byte (with a line of the site's own, and with no file at all), and nothing of the package is
//! left. Right after installing, every command of the tool as a user types it (`run` with python3,
//! a C client and a static one, `check -- python3`, `inspect`, `metrics`, `system status`;
//! `tests/common/layout.rs`), from each package and from the archive unpacked in `/opt`. Also:
//! what `enable` refuses (nothing written), an upgrade under running programs (one that does not
//! load refused; `cp` over the library kills them), and the packages' metadata (`dpkg-deb -I`,
//! `rpm -qpi`, their file lists and scripts, lintian).
//!
//! Needs root and target/dist (`scripts/dist.sh`, which also installs rpm and lintian): without,
//! each test is skipped with a message, except under CI=true, where it fails.

mod common;

use common::layout::{Layout, PYTHON_CLIENT};
use common::rootfs::{TreeCopy, gcc};
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const LIB: &str = "/usr/lib/keepalive-shim/libkeepalive_shim.so";
/// The package's own file of the library, under a name of its own: the post-installation script
/// puts a copy at [`LIB`] once it is proven to load.
const PACKAGED_LIB: &str = concat!(
    "/usr/lib/keepalive-shim/",
    env!("CARGO_PKG_VERSION"),
    "/libkeepalive_shim.so"
);
const TOOL: &str = "/usr/bin/keepalive-shim";
const UNIT: &str = "/usr/lib/systemd/system/keepalive-shim-fleet.service";
const DOC: &str = "/usr/share/doc/keepalive-shim";
const PRELOAD: &str = "/etc/ld.so.preload";
const STATE: &str = "/var/lib/keepalive-shim";
/// A site's own `/etc/ld.so.preload`: a comment and a harmless library, no final newline.
const SITE_PRELOAD: &[u8] = b"# the site's own preload list\n/lib/x86_64-linux-gnu/libdl.so.2";
/// `nobody`.
const NOBODY: u32 = 65534;
/// options_client.c linked statically (the host's gcc), in the tree.
const STATIC_CLIENT: &str = "/tmp/options_client_static";

/// Prints how long a test took, when it ends (also on failure).
struct Timer(&'static str, Instant);

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("{}: {:.1} s", self.0, self.1.elapsed().as_secs_f64());
    }
}

fn timer(test: &'static str) -> Timer {
    Timer(test, Instant::now())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Deb,
    Rpm,
}

/// The package file of `kind` for `arch` (`x86_64` or `aarch64`).
fn package(dist: &Path, kind: Kind, arch: &str) -> PathBuf {
    dist.join(match (kind, arch) {
        (Kind::Deb, "x86_64") => format!("keepalive-shim_{VERSION}_amd64.deb"),
        (Kind::Deb, _) => format!("keepalive-shim_{VERSION}_arm64.deb"),
        (Kind::Rpm, _) => format!("keepalive-shim-{VERSION}-1.{arch}.rpm"),
    })
}

/// target/dist with its four packages, or why not (root, the tools).
fn dist(kind: Option<Kind>) -> Option<PathBuf> {
    if !is_root() {
        return unavailable("the package tests need root (chroot, dpkg, rpm --root)");
    }
    let dir = root().join("target/dist");
    for k in [Kind::Deb, Kind::Rpm] {
        for arch in ["x86_64", "aarch64"] {
            let file = package(&dir, k, arch);
            if !file.is_file() {
                return unavailable(&format!(
                    "{} is missing: run scripts/dist.sh",
                    file.display()
                ));
            }
        }
    }
    let hint = "Debian's rpm; scripts/dist.sh installs it";
    if kind != Some(Kind::Deb) && !have("rpm", hint) {
        return None;
    }
    Some(dir)
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()))
}

/// Runs `cmd`, which must exit 0: its stdout.
fn ok(what: &str, cmd: Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The C programs, built once against bullseye's glibc: options_client (the five options of a
/// connected socket) and secure_probe (the same, with AT_SECURE and the uids; installed setuid).
fn clients() -> &'static [PathBuf; 2] {
    static BUILT: OnceLock<[PathBuf; 2]> = OnceLock::new();
    BUILT.get_or_init(|| {
        ["options_client", "secure_probe"].map(|name| {
            let out = scratch().join(format!("bullseye-{name}"));
            gcc(&[
                "-O2".as_ref(),
                "-Wall".as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
                program(&format!("{name}.c")).as_os_str(),
            ]);
            out
        })
    })
}

/// A copy of the bullseye tree with the clients in /tmp (secure_probe setuid root, and
/// options_client built static too) and, when given, the site's own /etc/ld.so.preload.
struct Machine {
    tree: TreeCopy,
}

impl Machine {
    fn new(name: &str, preload: Option<&[u8]>) -> Option<Machine> {
        let [client, secure] = clients();
        let tree = TreeCopy::new(name)?;
        std::fs::copy(client, tree.host("/tmp/options_client")).unwrap();
        std::fs::copy(secure, tree.host("/tmp/secure_probe")).unwrap();
        set_mode(&tree.host("/tmp/secure_probe"), 0o4755);
        let static_client = build_c("options_client.c", &["-O2", "-static"]);
        std::fs::copy(static_client, tree.host(STATIC_CLIENT)).unwrap();
        if let Some(text) = preload {
            std::fs::write(tree.host(PRELOAD), text).unwrap();
        }
        Some(Machine { tree })
    }

    fn host(&self, path: &str) -> PathBuf {
        self.tree.host(path)
    }

    fn preload(&self) -> Option<Vec<u8>> {
        std::fs::read(self.host(PRELOAD)).ok()
    }

    /// `program ARGS` chrooted, as root.
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = self.tree.command(None, program);
        cmd.args(args);
        cmd
    }

    /// The installed tool, run on the host with `--root` (never on this machine's own /etc).
    fn tool(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.host(TOOL));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .args(args)
            .arg("--root")
            .arg(&self.tree.path);
        run(cmd)
    }

    fn install(&self, kind: Kind, file: &Path) {
        match kind {
            Kind::Deb => {
                std::fs::copy(file, self.host("/tmp/keepalive-shim.deb")).unwrap();
                ok(
                    "dpkg -i",
                    self.cmd("dpkg", &["-i", "/tmp/keepalive-shim.deb"]),
                );
                std::fs::remove_file(self.host("/tmp/keepalive-shim.deb")).unwrap();
            }
            Kind::Rpm => {
                ok("rpm -i", self.rpm(&["-i", "--nodeps"], Some(file)));
            }
        }
    }

    /// `rpm --root TREE ARGS [FILE]` from the host: Debian's rpm, the scriptlets chrooted.
    fn rpm(&self, args: &[&str], file: Option<&Path>) -> Command {
        let mut cmd = Command::new("rpm");
        cmd.arg("--root").arg(&self.tree.path).args(args);
        if let Some(file) = file {
            cmd.arg(file);
        }
        cmd
    }

    /// Removes the package (its remove scripts run `system disable`); purges a .deb too.
    fn remove(&self, kind: Kind) {
        match kind {
            Kind::Deb => ok("dpkg -r", self.cmd("dpkg", &["-r", "keepalive-shim"])),
            Kind::Rpm => ok("rpm -e", self.rpm(&["-e", "keepalive-shim"], None)),
        };
    }

    fn purge(&self) {
        ok(
            "dpkg --purge",
            self.cmd("dpkg", &["--purge", "keepalive-shim"]),
        );
    }

    /// The five options the C client (as `uid`), or python3, printed; exit 0, stderr empty.
    fn five(&self, what: &str, program: &str, uid: Option<u32>) -> serde_json::Value {
        let mut cmd = if program == "python3" {
            let mut cmd = self.tree.command(uid, "/usr/bin/python3");
            cmd.args(["-c", PYTHON_CLIENT]);
            cmd
        } else {
            self.tree.command(uid, program)
        };
        cmd.env("KEEPALIVE_IDLE", "45"); // ignored in secure execution
        let out = run(cmd);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{what}: {}: {stderr}", out.status);
        assert!(stderr.is_empty(), "{what}: unexpected stderr: {stderr}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", text(&out.stdout)))
    }

    /// Every program of the checks, without the library.
    fn untouched(&self, when: &str) {
        let client = self.five(when, "/tmp/options_client", None);
        assert_eq!(five(&client), KERNEL, "C client {when}");
        let python = self.five(when, "python3", None);
        assert_eq!(five(&python), KERNEL, "python3 {when}");
        let secure = self.five(when, "/tmp/secure_probe", Some(NOBODY));
        assert_eq!(five(&secure), KERNEL, "setuid program {when}");
    }

    /// With /etc/ld.so.preload naming the library: python3, the C client, /bin/sh, a setuid
    /// program run by nobody (secure execution: the environment's KEEPALIVE_IDLE=45 ignored)
    /// and su get the options, or run cleanly.
    fn protected(&self) {
        let with_idle = [1, 45, 10, 3, 75_000];
        let client = self.five("C client", "/tmp/options_client", None);
        assert_eq!(five(&client), with_idle, "C client, KEEPALIVE_IDLE=45");
        let python = self.five("python3", "python3", None);
        assert_eq!(five(&python), with_idle, "python3, KEEPALIVE_IDLE=45");
        let secure = self.five("setuid program", "/tmp/secure_probe", Some(NOBODY));
        assert_eq!(
            (&secure["secure"], &secure["uid"], &secure["euid"]),
            (&1.into(), &NOBODY.into(), &0.into()),
            "the setuid program runs in secure execution: {secure}"
        );
        assert_eq!(
            five(&secure),
            OURS,
            "setuid program (the file alone counts)"
        );
        for (program, args, uid) in [
            ("/bin/sh", &["-c", "echo ran; exit 0"][..], None),
            ("/bin/su", &["--version"][..], Some(NOBODY)),
        ] {
            let out = run({
                let mut cmd = self.tree.command(uid, program);
                cmd.args(args);
                cmd
            });
            assert!(
                out.status.success() && out.stderr.is_empty() && !out.stdout.is_empty(),
                "{program} {args:?} with the library on: {}: {}",
                out.status,
                text(&out.stderr)
            );
        }
    }

    /// With the library on, a system file holding strict mode and a typo (issue 18's one typo
    /// that stopped the machine): `/bin/sh`, python3 and a setuid program still run, with a
    /// warning that names the typo and why strict mode is not honoured there, and
    /// `keepalive-shim check` says what is wrong (exit 78). The file is removed after.
    fn survives_a_typo_in_strict_mode(&self) {
        let conf = self.host("/etc/keepalive-shim.conf");
        std::fs::write(&conf, "KEEPALIVE_STRICT=1\nKEEPALIVE_IDEL=30\n").unwrap();
        set_mode(&conf, 0o644);
        for (program, args, uid) in [
            ("/bin/sh", &["-c", "echo ran"][..], None),
            ("python3", &["-c", "print('ran')"][..], None),
            ("/tmp/secure_probe", &[][..], Some(NOBODY)),
        ] {
            let out = run({
                let mut cmd = self.tree.command(uid, program);
                cmd.args(args);
                cmd
            });
            let err = text(&out.stderr);
            assert!(
                out.status.success() && !out.stdout.is_empty(),
                "{program} with a typo and strict mode in the system file: {}: {err}",
                out.status
            );
            for needle in ["KEEPALIVE_IDEL", "KEEPALIVE_STRICT is not honoured"] {
                assert!(err.contains(needle), "{program}: {needle}: {err}");
            }
        }
        let out = run(self.cmd(TOOL, &["check"]));
        let said = text(&out.stdout);
        assert_eq!(out.status.code(), Some(78), "check: {said}{}", stderr(&out));
        assert!(said.contains("KEEPALIVE_IDEL"), "check: {said}");
        std::fs::remove_file(&conf).unwrap();
    }

    /// Every command of the tool at `tool` (a path or a name on PATH), which must find the
    /// library at `library`, chrooted with /proc mounted, as a user runs them on this machine
    /// (`tests/common/layout.rs`).
    fn every_command(&self, what: &str, tool: &str, library: &str) {
        let exec = |args: &[&str]| {
            let mut cmd = self.tree.command_with_proc(args[0]);
            cmd.args(&args[1..]);
            cmd
        };
        Layout {
            what,
            tool,
            library,
            static_client: STATIC_CLIENT,
            dynamic_client: Some("/tmp/options_client"),
            exec: &exec,
        }
        .every_command();
    }

    /// Paths of the tree (not /proc, /sys, /dev, /tmp, nor the package managers' own records).
    fn paths(&self) -> BTreeSet<PathBuf> {
        const SKIP: [&str; 9] = [
            "proc",
            "sys",
            "dev",
            "tmp",
            "var/lib/dpkg",
            "var/lib/rpm",
            "var/log",
            "var/cache",
            "var/tmp",
        ];
        let mut out = BTreeSet::new();
        let mut stack = vec![self.tree.path.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let rel = path.strip_prefix(&self.tree.path).unwrap().to_path_buf();
                if SKIP.iter().any(|s| rel == Path::new(s)) {
                    continue;
                }
                if entry.file_type().unwrap().is_dir() {
                    stack.push(path);
                }
                out.insert(rel);
            }
        }
        out
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn assert_same_paths(before: &BTreeSet<PathBuf>, after: &BTreeSet<PathBuf>, when: &str) {
    let added: Vec<_> = after.difference(before).collect();
    let gone: Vec<_> = before.difference(after).collect();
    assert!(
        added.is_empty() && gone.is_empty(),
        "{when}: left behind {added:?}, removed {gone:?}"
    );
}

/// The whole lifecycle of `kind` on a machine whose /etc/ld.so.preload is `before`.
fn lifecycle(test: &'static str, kind: Kind, before: Option<&[u8]>) {
    let _t = timer(test);
    let Some(dist) = dist(Some(kind)) else { return };
    let Some(m) = Machine::new(test, before) else {
        return;
    };
    if kind == Kind::Rpm {
        ok("rpm --initdb", m.rpm(&["--initdb"], None));
    }
    let paths = m.paths();
    let as_before = |when: &str| {
        assert_eq!(
            m.preload().as_deref(),
            before,
            "{PRELOAD} {when} (as it was before the package)"
        )
    };

    m.install(kind, &package(&dist, kind, "x86_64"));
    as_before("after installing");
    assert!(
        std::fs::read(m.host(LIB)).unwrap() == std::fs::read(library()).unwrap(),
        "the installed {LIB} is not the tested library"
    );
    for file in [TOOL, UNIT] {
        assert!(m.host(file).is_file(), "{file} is not installed");
    }
    m.untouched("after installing");
    if before.is_none() {
        // Every command, as a user types it right after installing (`keepalive-shim run --
        // python3` exited 78 from the packages before the tool had one finder of the library).
        let what = match kind {
            Kind::Deb => "the .deb",
            Kind::Rpm => "the .rpm",
        };
        m.every_command(what, "keepalive-shim", LIB);
    }

    // Inside the machine, as its administrator would: off.
    let status = run(m.cmd(TOOL, &["system", "status"]));
    assert_eq!(
        status.status.code(),
        Some(3),
        "status while off: {status:?}"
    );

    let out = m.tool(&["system", "enable"]);
    assert!(out.status.success(), "system enable: {}", stderr(&out));
    let on = [LIB.as_bytes(), b"\n", before.unwrap_or_default()].concat();
    assert_eq!(m.preload(), Some(on.clone()), "{PRELOAD} after enable");
    let out = m.tool(&["system", "enable"]);
    assert!(out.status.success(), "enable again: {}", stderr(&out));
    assert_eq!(m.preload(), Some(on.clone()), "enable twice writes once");
    let status = run(m.cmd(TOOL, &["system", "status"]));
    let said = text(&status.stdout);
    assert!(
        status.status.success()
            && said.starts_with("on:")
            && said.contains(&format!("{LIB} loads")),
        "status while on: {said}{}",
        stderr(&status)
    );

    m.protected();
    m.survives_a_typo_in_strict_mode();

    let out = m.tool(&["system", "disable"]);
    assert!(out.status.success(), "system disable: {}", stderr(&out));
    as_before("after disable");
    assert!(!m.host(STATE).exists(), "{STATE} is left after disable");
    m.untouched("after disable");

    // Removed while on: the remove script switches it off.
    let out = m.tool(&["system", "enable"]);
    assert!(
        out.status.success(),
        "system enable again: {}",
        stderr(&out)
    );
    m.remove(kind);
    as_before("after removing the package while on");
    assert!(!m.host(TOOL).exists(), "{TOOL} is left after removal");
    m.untouched("after removing the package");
    if kind == Kind::Deb {
        m.purge();
        as_before("after purge");
    }
    assert_same_paths(&paths, &m.paths(), "after removal and purge");
}

#[test]
fn deb_lifecycle_without_a_preload_file() {
    lifecycle("deb_lifecycle_without_a_preload_file", Kind::Deb, None);
}

#[test]
fn deb_lifecycle_keeps_the_sites_own_preload_line() {
    lifecycle(
        "deb_lifecycle_keeps_the_sites_own_preload_line",
        Kind::Deb,
        Some(SITE_PRELOAD),
    );
}

#[test]
fn rpm_lifecycle_without_a_preload_file() {
    lifecycle("rpm_lifecycle_without_a_preload_file", Kind::Rpm, None);
}

#[test]
fn rpm_lifecycle_keeps_the_sites_own_preload_line() {
    lifecycle(
        "rpm_lifecycle_keeps_the_sites_own_preload_line",
        Kind::Rpm,
        Some(SITE_PRELOAD),
    );
}

/// The archive as a user installs it by hand: unpacked in /opt, the tool linked into
/// /usr/local/bin (on PATH); every command finds the library next to the tool's real file.
#[test]
fn archive_in_opt_every_command() {
    let _t = timer("archive_in_opt_every_command");
    // The archives come with the packages (and need no rpm).
    let Some(dist) = dist(Some(Kind::Deb)) else {
        return;
    };
    let Some(m) = Machine::new("archive_in_opt", None) else {
        return;
    };
    let name = format!("keepalive-shim-{VERSION}-x86_64-linux");
    std::fs::copy(
        dist.join(format!("{name}.tar.gz")),
        m.host("/tmp/keepalive-shim.tar.gz"),
    )
    .unwrap();
    ok(
        "tar -xzf",
        m.cmd("tar", &["-xzf", "/tmp/keepalive-shim.tar.gz", "-C", "/opt"]),
    );
    let folder = format!("/opt/{name}");
    ok(
        "ln -s",
        m.cmd(
            "ln",
            &["-s", &format!("{folder}/keepalive-shim"), "/usr/local/bin/"],
        ),
    );
    let lib = format!("{folder}/libkeepalive_shim.so");
    assert!(
        std::fs::read(m.host(&lib)).unwrap() == std::fs::read(library()).unwrap(),
        "the archive's library is not the tested one"
    );
    m.every_command("the archive in /opt", "keepalive-shim", &lib);
}

/// What `system enable` refuses, each time with a message naming the reason and nothing
/// written: a path the loader would split, a file that does not load, a library others could
/// change, a configuration with a typo.
#[test]
fn enable_refuses_and_writes_nothing() {
    let _t = timer("enable_refuses_and_writes_nothing");
    let Some(dist) = dist(Some(Kind::Deb)) else {
        return;
    };
    let Some(m) = Machine::new("enable_refuses", Some(SITE_PRELOAD)) else {
        return;
    };
    m.install(Kind::Deb, &package(&dist, Kind::Deb, "x86_64"));
    let refused = |args: &[&str], says: &str| {
        let out = m.tool(&[&["system", "enable"], args].concat());
        let err = stderr(&out);
        assert!(
            !out.status.success() && err.contains(says) && err.contains("nothing written"),
            "enable {args:?} must be refused saying {says:?}: {}: {err}",
            out.status
        );
        assert_eq!(m.preload().as_deref(), Some(SITE_PRELOAD), "after {args:?}");
        assert!(!m.host(STATE).exists(), "{STATE} after {args:?}");
    };
    for dir in ["/opt/my libs", "/opt/a:b", "/opt/bad", "/opt/open"] {
        std::fs::create_dir_all(m.host(dir)).unwrap();
    }
    std::fs::copy(library(), m.host("/opt/my libs/libkeepalive_shim.so")).unwrap();
    std::fs::copy(library(), m.host("/opt/a:b/libkeepalive_shim.so")).unwrap();
    refused(
        &["--library", "/opt/my libs/libkeepalive_shim.so"],
        "has a space at byte 7",
    );
    refused(&["--library", "/opt/a:b/libkeepalive_shim.so"], "has a ':'");
    refused(&["--library", "libkeepalive_shim.so"], "is not absolute");
    std::fs::write(m.host("/opt/bad/libkeepalive_shim.so"), b"not ELF").unwrap();
    refused(
        &["--library", "/opt/bad/libkeepalive_shim.so"],
        "does not load: the loader could not preload it",
    );
    std::fs::copy(library(), m.host("/opt/open/libkeepalive_shim.so")).unwrap();
    set_mode(&m.host("/opt/open/libkeepalive_shim.so"), 0o666);
    refused(
        &["--library", "/opt/open/libkeepalive_shim.so"],
        "writable by group or others",
    );
    std::fs::write(m.host("/etc/keepalive-shim.conf"), "KEEPALIVE_IDEL=30\n").unwrap();
    refused(&[], "KEEPALIVE_IDEL");
    std::fs::remove_file(m.host("/etc/keepalive-shim.conf")).unwrap();
    let out = m.tool(&["system", "enable"]);
    assert!(out.status.success(), "enable once fixed: {}", stderr(&out));
    m.remove(Kind::Deb);
    assert_eq!(m.preload().as_deref(), Some(SITE_PRELOAD));
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (key, value) = l.trim().split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// The packages' metadata, file lists and scripts, SHA256SUMS, and lintian on the .deb files.
#[test]
fn package_metadata() {
    let _t = timer("package_metadata");
    let Some(dist) = dist(None) else { return };
    let deb_files: BTreeSet<String> = [
        TOOL,
        PACKAGED_LIB,
        UNIT,
        "/usr/share/lintian/overrides/keepalive-shim",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(["README.md", "copyright", "changelog.gz"].map(|f| format!("{DOC}/{f}")))
    .collect();
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    for (arch, deb_arch) in [("x86_64", "amd64"), ("aarch64", "arm64")] {
        let deb = package(&dist, Kind::Deb, arch);
        let info = ok("dpkg-deb -I", {
            let mut cmd = Command::new("dpkg-deb");
            cmd.arg("-I").arg(&deb);
            cmd
        });
        for (name, value) in [
            ("Package", "keepalive-shim"),
            ("Version", VERSION),
            ("Architecture", deb_arch),
            ("Depends", "libc6 (>= 2.17)"),
        ] {
            assert_eq!(field(&info, name), Some(value), "{name} in {info}");
        }
        assert!(field(&info, "Maintainer").is_some(), "{info}");
        assert!(
            info.contains(" prerm") && info.contains(" postrm") && info.contains(" postinst"),
            "scripts: the library put in place after installing, switched off at removal: {info}"
        );
        let list = ok("dpkg-deb -c", {
            let mut cmd = Command::new("dpkg-deb");
            cmd.arg("-c").arg(&deb);
            cmd
        });
        let mut listed = BTreeSet::new();
        for line in list.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[1], "root/root", "owner in {line}");
            let path = f[5].trim_start_matches('.');
            if !f[0].starts_with('d') {
                listed.insert(path.to_owned());
                let mode = if path == TOOL {
                    "-rwxr-xr-x"
                } else {
                    "-rw-r--r--"
                };
                assert_eq!(f[0], mode, "{line}");
            }
        }
        assert_eq!(listed, deb_files, "the files of {}", deb.display());

        let rpm = package(&dist, Kind::Rpm, arch);
        let query = |args: &[&str]| {
            let mut cmd = Command::new("rpm");
            cmd.arg("-qp").args(args).arg(&rpm);
            ok("rpm -qp", cmd)
        };
        let info = query(&["-i"]);
        for (name, value) in [
            ("Name", "keepalive-shim"),
            ("Version", VERSION),
            ("Release", "1"),
            ("Architecture", arch),
            ("License", "MIT OR Apache-2.0"),
        ] {
            assert_eq!(field(&info, name), Some(value), "{name} in {info}");
        }
        let listed: BTreeSet<String> = query(&["-l"]).lines().map(str::to_owned).collect();
        let versioned = Path::new(PACKAGED_LIB).parent().unwrap().to_str().unwrap();
        let expected: BTreeSet<String> = [
            TOOL,
            LIB,
            PACKAGED_LIB,
            versioned,
            UNIT,
            "/usr/lib/keepalive-shim",
            DOC,
        ]
        .iter()
        .map(|f| f.to_string())
        .chain(["README.md", "LICENSE"].map(|f| format!("{DOC}/{f}")))
        .collect();
        assert_eq!(listed, expected, "the files of {}", rpm.display());
        let scripts = query(&["--scripts"]);
        assert!(
            scripts.contains("preuninstall") && scripts.contains("system disable"),
            "{scripts}"
        );
        assert!(
            scripts.contains("postinstall")
                && scripts.contains(&format!("system install-library {PACKAGED_LIB}")),
            "installing puts the library in place, probed: {scripts}"
        );
        for file in [&deb, &rpm] {
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(
                sums.lines().any(|l| l.ends_with(&format!("  {name}"))),
                "SHA256SUMS does not list {name}"
            );
        }
    }
    // The library in the packages is the tested file (SHA256SUMS: the folder's, checked equal
    // to target/release by tests/portable.rs; here against the packages themselves).
    let deb = package(&dist, Kind::Deb, "x86_64");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile \"$0\" | tar -xOf - .{PACKAGED_LIB}"
        ))
        .arg(&deb);
    let out = run(cmd);
    assert!(
        out.stdout == std::fs::read(library()).unwrap(),
        "the library in {} is not the tested one",
        deb.display()
    );

    if !have("lintian", "Debian's lintian; scripts/dist.sh installs it") {
        return;
    }
    let mut cmd = Command::new("lintian");
    // The tags the package carries on purpose are in its own overrides file
    // (packaging/deb/lintian-overrides), with the reasons.
    cmd.args(["--fail-on", "error,warning"])
        .arg(package(&dist, Kind::Deb, "x86_64"))
        .arg(package(&dist, Kind::Deb, "aarch64"));
    let out = run(cmd);
    assert!(
        out.status.success(),
        "lintian: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A copy of the `.deb` `deb` as version `version`, its library (moved to
/// `/usr/lib/keepalive-shim/VERSION/`, where its post-installation script looks) replaced by
/// `library`, at `out`.
fn repack(deb: &Path, version: &str, library: &[u8], out: &Path) {
    let dir = out.with_extension("dir");
    let _ = std::fs::remove_dir_all(&dir);
    let new_lib = dir.join(format!("usr/lib/keepalive-shim/{version}"));
    let old_dir = Path::new(PACKAGED_LIB).parent().unwrap();
    ok("dpkg-deb -R", {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-R").arg(deb).arg(&dir);
        cmd
    });
    std::fs::rename(dir.join(old_dir.strip_prefix("/").unwrap()), &new_lib).unwrap();
    std::fs::write(new_lib.join("libkeepalive_shim.so"), library).unwrap();
    let script = format!(
        "cd \"$0\" && sed -i 's/^Version: .*/Version: {version}/' DEBIAN/control && \
         sed -i 's|{old}/|/usr/lib/keepalive-shim/{version}/|' DEBIAN/postinst && \
         find usr -type f | LC_ALL=C sort | xargs md5sum >DEBIAN/md5sums && \
         dpkg-deb --root-owner-group -Zxz --build . \"$1\" >/dev/null",
        old = old_dir.display()
    );
    ok("repack", {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]).arg(&dir).arg(out);
        cmd
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A python3 that makes a socket (through the library's hooks) for each line it reads, and says
/// so: a long-running program with the library mapped.
const LONG_RUNNING: &str = "import socket, sys
print('ready', flush=True)
for line in sys.stdin:
    socket.socket().close()
    print('alive', flush=True)";

/// Issue 22: an upgrade replaces the library under running programs by rename (a program started
/// before it keeps running and working), an upgrade to a library that does not load is refused
/// before any program loads it (the installed one stays; new programs still get the options),
/// and `cp` over the installed library, which the docs forbid, kills a program that has it
/// mapped (SIGBUS): both in one run.
#[test]
fn deb_upgrade_keeps_running_programs_and_refuses_a_library_that_does_not_load() {
    let _t = timer("deb_upgrade_keeps_running_programs_and_refuses_a_library_that_does_not_load");
    let Some(dist) = dist(Some(Kind::Deb)) else {
        return;
    };
    let Some(m) = Machine::new("deb_upgrade", None) else {
        return;
    };
    m.install(Kind::Deb, &package(&dist, Kind::Deb, "x86_64"));
    let out = m.tool(&["system", "enable"]);
    assert!(out.status.success(), "system enable: {}", stderr(&out));
    let tested = std::fs::read(library()).unwrap();
    // The next version: the same code, another file (bytes after the ELF's end are not loaded).
    let next = [&tested[..], b"\0next version"].concat();
    // A version whose library does not load: cut short.
    let broken = &tested[..4096];
    repack(
        &package(&dist, Kind::Deb, "x86_64"),
        "99.0.1",
        &next,
        &m.host("/tmp/next.deb"),
    );
    repack(
        &package(&dist, Kind::Deb, "x86_64"),
        "99.0.2",
        broken,
        &m.host("/tmp/broken.deb"),
    );
    let long_running = || {
        let mut cmd = m.tree.command(None, "/usr/bin/python3");
        cmd.args(["-c", LONG_RUNNING]);
        let mut p = Background::spawn(cmd);
        p.expect("ready", std::time::Duration::from_secs(20));
        p.say("go");
        p.expect("alive", std::time::Duration::from_secs(20));
        p
    };
    let still_alive = |p: &mut Background, what: &str| {
        p.say("go");
        p.expect("alive", std::time::Duration::from_secs(20));
        assert!(p.running(), "{what}");
    };

    let mut before = long_running();
    ok("dpkg -i next", m.cmd("dpkg", &["-i", "/tmp/next.deb"]));
    assert!(
        std::fs::read(m.host(LIB)).unwrap() == next,
        "{LIB} is the next version's library"
    );
    still_alive(&mut before, "a program started before the upgrade");
    let mut after = long_running();

    let refused = run(m.cmd("dpkg", &["-i", "/tmp/broken.deb"]));
    let said = format!("{}{}", text(&refused.stdout), stderr(&refused));
    assert!(
        !refused.status.success() && said.contains("does not load"),
        "an upgrade to a library that does not load must be refused: {said}"
    );
    assert!(
        std::fs::read(m.host(LIB)).unwrap() == next,
        "{LIB} is unchanged after the refused upgrade"
    );
    let client = m.five("after the refused upgrade", "/tmp/options_client", None);
    assert_eq!(five(&client), [1, 45, 10, 3, 75_000], "a new program");
    still_alive(&mut before, "the first program, after the refused upgrade");
    still_alive(&mut after, "the second program, after the refused upgrade");

    // What the rename spares them: `cp` writes over the file the second program has mapped.
    std::fs::write(m.host("/tmp/broken.so"), broken).unwrap();
    ok("cp over the installed library", {
        let mut cmd = Command::new("cp");
        cmd.arg(m.host("/tmp/broken.so")).arg(m.host(LIB));
        cmd
    });
    after.say("go");
    let status = after.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGBUS),
        "cp over a mapped library kills the program: {status}"
    );
    still_alive(
        &mut before,
        "the first program (its file was renamed away, not written over)",
    );
}
