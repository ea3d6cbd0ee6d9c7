//! `keepalive-shim system` against trees an unprivileged user prepared, as that user would try
//! it (issue 22): links in the tree that point at the host's files (a linked `etc`, state folder
//! and state file), a library reached through a folder that user owns, a tree whose `true`
//! records who ran it, and the smaller points: another entry's loader error, `enable` then
//! `disable` on a file that already named the library, and `check` as a user who cannot read the
//! system file.
//!
//! Each tree is a minimal root filesystem made from this machine's own files (`true`, its loader
//! and C library, `libdl`, the loader cache) and the library under test, in `scratch()`. Every
//! command runs in a private mount namespace whose `/etc` is an overlay with an upper layer of the
//! test's own: whatever the code under test did to "the host's `/etc`" lands there and is checked,
//! and the machine's real `/etc` never changes (also checked).
//!
//! Needs root (chroot, setuid, mount namespaces): skipped otherwise, except under `CI=true`.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");
const LIB: &str = "/usr/lib/keepalive-shim/libkeepalive_shim.so";
const NOBODY: u32 = 65534;

/// A folder of this test's own in `scratch()`.
fn folder(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch().join(format!(
        "system-{name}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// Copies `from` to `to` (inside a tree), making its folders, mode 0755.
fn copy_in(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// A minimal tree: this machine's `true` with its loader and libraries, `libdl`, the loader's
/// cache, a world-writable `/tmp`, and the library under test at [`LIB`]; all root's.
fn tree(name: &str) -> Option<PathBuf> {
    if !is_root() {
        return unavailable("the system --root tests need root (chroot, setuid, namespaces)");
    }
    let base = folder(name);
    let t = base.join("tree");
    std::fs::create_dir(&t).unwrap();
    let ldd = output_ok(Command::new("ldd").arg("/bin/true"));
    let mut files: Vec<PathBuf> = text(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    for extra in ["/etc/ld.so.cache", "/bin/true"] {
        files.push(PathBuf::from(extra));
    }
    // libdl.so.2 where the C library is.
    let libc = files
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == "libc.so.6"))
        .cloned()
        .expect("true needs libc.so.6");
    files.push(libc.with_file_name("libdl.so.2"));
    for file in files {
        let inside = t.join(file.strip_prefix("/").unwrap());
        copy_in(&file, &inside);
    }
    copy_in(library(), &t.join(LIB.trim_start_matches('/')));
    std::fs::create_dir_all(t.join("etc")).unwrap();
    // Folders 0755 whatever the umask; /tmp open to all, as usual.
    output_ok(
        Command::new("find")
            .arg(&t)
            .args(["-type", "d", "-exec", "chmod", "0755", "{}", "+"]),
    );
    std::fs::create_dir_all(t.join("tmp")).unwrap();
    set_mode(&t.join("tmp"), 0o1777);
    Some(t)
}

/// `keepalive-shim ARGS` as root, in a private mount namespace whose `/etc` has `upper` laid
/// over it (see the module's notes).
fn tool(upper: &Path, args: &[&str]) -> Output {
    let work = upper.with_extension("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new(CLI);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(args);
    overlay_etc(&mut cmd, upper, &work);
    cmd.output().expect("run keepalive-shim")
}

/// `sh -c SCRIPT` as uid 65534 (no groups): what an unprivileged user can do.
fn as_nobody(script: &str) -> Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    common::as_nobody(&mut cmd);
    let out = cmd.output().expect("run sh as nobody");
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        stderr(&out)
    );
    out
}

/// The host's own files that no test may change.
fn host_files() -> Vec<Option<Vec<u8>>> {
    ["/etc/ld.so.preload", "/etc/keepalive-shim.conf"]
        .iter()
        .map(|p| std::fs::read(p).ok())
        .collect()
}

fn says(out: &Output, what: &str) -> String {
    format!(
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        stderr(out)
    )
}

/// Every file under `dir` with its bytes, mode and owner (links as their text).
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let meta = std::fs::symlink_metadata(&at).unwrap();
        let bytes = if meta.file_type().is_symlink() {
            std::fs::read_link(&at)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if meta.is_file() {
            std::fs::read(&at).unwrap()
        } else {
            let mut names: Vec<_> = std::fs::read_dir(&at)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            stack.extend(names);
            Vec::new()
        };
        out.push((at, meta.mode(), meta.uid(), bytes));
    }
    out.sort();
    out
}

/// The state folder, state file and `etc` of a tree are links an unprivileged user made to the
/// host's files: `enable`, `status` and `disable --root` change nothing outside the tree (the
/// host's `/etc/ld.so.preload`, seen through the overlay, a root-only folder and a file of the
/// host's), and still work on the tree where its own links stay inside it.
#[test]
fn links_in_the_tree_never_reach_the_host() {
    let Some(t) = tree("links") else { return };
    let base = t.parent().unwrap().to_path_buf();
    let host_before = host_files();
    // The "host" things the links aim at: a folder only root may enter, a file of root's, and
    // the host's /etc/ld.so.preload (in the overlay's view: a line naming the library, which a
    // `disable` that followed the link would remove).
    let victim_dir = base.join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    set_mode(&victim_dir, 0o700);
    let victim_file = base.join("victim-file");
    std::fs::write(&victim_file, b"the host's file\n").unwrap();
    set_mode(&victim_file, 0o600);
    let upper = base.join("etc-upper");
    std::fs::create_dir(&upper).unwrap();
    let host_preload = format!("{LIB}\n/lib/site.so\n");
    std::fs::write(upper.join("ld.so.preload"), &host_preload).unwrap();
    let upper_before = snapshot(&upper);
    let victims_before = (snapshot(&victim_dir), snapshot(&victim_file));

    // The user owns /var/lib of the tree (its state folder's parent) and fills it with links.
    std::fs::create_dir_all(t.join("var/lib")).unwrap();
    chown(&t.join("var/lib"), NOBODY);
    let check_unchanged = |when: &str| {
        assert_eq!(snapshot(&upper), upper_before, "the host's /etc {when}");
        assert_eq!(
            (snapshot(&victim_dir), snapshot(&victim_file)),
            victims_before,
            "the host's folder and file {when}"
        );
        assert_eq!(host_files(), host_before, "this machine's own /etc {when}");
    };
    let root = t.to_str().unwrap();

    // 1. The state folder is a link to a root-only folder of the host.
    as_nobody(&format!(
        "ln -s {} {root}/var/lib/keepalive-shim",
        victim_dir.display()
    ));
    let out = tool(&upper, &["system", "enable", "--root", root]);
    check_unchanged("after enable with a linked state folder");
    assert!(
        !out.status.success() && stderr(&out).contains("nothing written"),
        "{}",
        says(&out, "enable with a linked state folder")
    );
    assert!(!t.join("etc/ld.so.preload").exists());

    // 2. The state folder is the user's, and a state file a link to a file of the host's: as
    // the record, refused (it is not read through a link); as the marker, replaced by ours.
    as_nobody(&format!(
        "rm {root}/var/lib/keepalive-shim && mkdir {root}/var/lib/keepalive-shim && \
         ln -s {v} {root}/var/lib/keepalive-shim/ld.so.preload.added",
        v = victim_file.display()
    ));
    let out = tool(&upper, &["system", "enable", "--root", root]);
    check_unchanged("after enable with a linked record");
    assert!(
        !out.status.success() && stderr(&out).contains("symbolic link"),
        "{}",
        says(&out, "enable with a linked record")
    );
    as_nobody(&format!(
        "rm {root}/var/lib/keepalive-shim/ld.so.preload.added && \
         ln -s {v} {root}/var/lib/keepalive-shim/ld.so.preload.created",
        v = victim_file.display()
    ));
    let out = tool(&upper, &["system", "enable", "--root", root]);
    check_unchanged("after enable with linked state files");
    assert!(out.status.success(), "{}", says(&out, "enable"));
    assert_eq!(
        std::fs::read(t.join("etc/ld.so.preload")).unwrap(),
        format!("{LIB}\n").as_bytes(),
        "the tree's own file"
    );
    let out = tool(&upper, &["system", "status", "--root", root]);
    assert!(
        out.status.success() && text(&out.stdout).contains(&format!("{LIB} loads")),
        "{}",
        says(&out, "status")
    );
    let out = tool(&upper, &["system", "disable", "--root", root]);
    check_unchanged("after disable");
    assert!(out.status.success(), "{}", says(&out, "disable"));
    assert!(!t.join("etc/ld.so.preload").exists(), "enable made it");

    // 3. The tree's etc is a link to the host's /etc (an image that ships `etc -> /etc`).
    std::fs::remove_dir_all(t.join("etc")).unwrap();
    symlink("/etc", t.join("etc")).unwrap();
    for args in [
        &["system", "enable", "--root", root][..],
        &["system", "disable", "--root", root],
        &["system", "disable", "--all", "--root", root],
        &["system", "status", "--root", root],
    ] {
        let out = tool(&upper, args);
        check_unchanged(&format!("after {args:?} with etc -> /etc"));
        assert!(
            !out.status.success(),
            "{}",
            says(&out, &format!("{args:?} with etc -> /etc"))
        );
    }
}

/// `--library` names a link, in a folder of root's, to a library in a folder an unprivileged
/// user owns: that user could swap the file every program loads (shown: they can), so `enable`
/// refuses, naming the folder, and writes nothing. The same library reached through folders
/// only root controls is accepted, and the resolved path is what is written.
#[test]
fn a_library_in_a_users_folder_is_refused_even_through_a_link() {
    let Some(t) = tree("swappable") else { return };
    let base = t.parent().unwrap().to_path_buf();
    let upper = base.join("etc-upper");
    std::fs::create_dir(&upper).unwrap();
    let user_dir = t.join("home/user");
    std::fs::create_dir_all(&user_dir).unwrap();
    chown(&user_dir, NOBODY);
    copy_in(library(), &user_dir.join("libkeepalive_shim.so"));
    std::fs::create_dir_all(t.join("opt/ka")).unwrap();
    symlink(
        "../../home/user/libkeepalive_shim.so",
        t.join("opt/ka/libkeepalive_shim.so"),
    )
    .unwrap();
    // The user can replace the (root-owned) file in their folder at will.
    as_nobody(&format!(
        "cp {d}/libkeepalive_shim.so {d}/mine && mv -f {d}/mine {d}/libkeepalive_shim.so && \
         cp {lib} {d}/x && rm {d}/x",
        d = user_dir.display(),
        lib = library().display()
    ));
    std::os::unix::fs::chown(user_dir.join("libkeepalive_shim.so"), Some(0), Some(0)).unwrap();
    let root = t.to_str().unwrap();
    let out = tool(
        &upper,
        &[
            "system",
            "enable",
            "--root",
            root,
            "--library",
            "/opt/ka/libkeepalive_shim.so",
        ],
    );
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("home/user is owned by uid 65534, not root")
            && err.contains("nothing written"),
        "{}",
        says(&out, "enable through a link into the user's folder")
    );
    assert!(!t.join("etc/ld.so.preload").exists(), "nothing written");

    // The same through a link into root's own folders: accepted, written resolved.
    symlink(LIB, t.join("opt/ka/root-link.so")).unwrap();
    let out = tool(
        &upper,
        &[
            "system",
            "enable",
            "--root",
            root,
            "--library",
            "/opt/ka/root-link.so",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        says(&out, "enable through root's link")
    );
    assert_eq!(
        std::fs::read(t.join("etc/ld.so.preload")).unwrap(),
        format!("{LIB}\n").as_bytes()
    );
    assert!(snapshot(&upper).len() == 1, "nothing in the host's /etc");
}

const MARKER_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) {
    FILE *f = fopen("/tmp/ran-as", "w");
    if (f) {
        fprintf(f, "%u %u %u %d\n", getuid(), geteuid(), getgid(), getgroups(0, NULL));
        fclose(f);
    }
    return 0;
}
"#;

/// The tree's `true` writes who ran it: `enable --root` (and `status`) run it as nobody with
/// no groups, never as root; chrooted as root, the same program writes `0 0 0`.
#[test]
fn the_probe_never_runs_the_trees_code_as_root() {
    let Some(t) = tree("probe") else { return };
    let base = t.parent().unwrap().to_path_buf();
    let upper = base.join("etc-upper");
    std::fs::create_dir(&upper).unwrap();
    let source = base.join("marker.c");
    std::fs::write(&source, MARKER_C).unwrap();
    output_ok(
        Command::new("gcc")
            .arg("-O2")
            .arg("-o")
            .arg(t.join("bin/true"))
            .arg(&source),
    );
    let marker = t.join("tmp/ran-as");
    let root = t.to_str().unwrap();

    // The program tells the truth: chrooted as root, it says root.
    let mut cmd = Command::new("chroot");
    cmd.arg(&t).arg("/bin/true");
    output_ok(&mut cmd);
    let ran = std::fs::read_to_string(&marker).unwrap();
    assert!(ran.starts_with("0 0 0 "), "chrooted as root: {ran}");
    std::fs::remove_file(&marker).unwrap();

    for args in [
        &["system", "enable", "--root", root][..],
        &["system", "status", "--root", root],
    ] {
        let out = tool(&upper, args);
        assert!(out.status.success(), "{}", says(&out, &format!("{args:?}")));
        let ran = std::fs::read_to_string(&marker).unwrap_or_default();
        assert_eq!(
            ran,
            format!("{NOBODY} {NOBODY} {NOBODY} 0\n"),
            "{args:?}: who ran the tree's true"
        );
        assert_eq!(std::fs::metadata(&marker).unwrap().uid(), NOBODY);
        std::fs::remove_file(&marker).unwrap();
    }
}

/// The site's file already named the library: `enable` adds nothing, and `disable` gives the
/// file back byte for byte (the line the site wrote stays); without a prior `enable` (nothing
/// recorded), `disable` takes it out as before.
#[test]
fn enable_then_disable_is_byte_for_byte_when_the_site_already_named_it() {
    let Some(t) = tree("named") else { return };
    let upper = t.parent().unwrap().join("etc-upper");
    std::fs::create_dir(&upper).unwrap();
    let root = t.to_str().unwrap();
    let site = format!("# the site's list\n{LIB}\n");
    let preload = t.join("etc/ld.so.preload");
    std::fs::write(&preload, &site).unwrap();
    let out = tool(&upper, &["system", "enable", "--root", root]);
    assert!(
        out.status.success() && text(&out.stdout).contains("already on"),
        "{}",
        says(&out, "enable")
    );
    let out = tool(&upper, &["system", "disable", "--root", root]);
    assert!(out.status.success(), "{}", says(&out, "disable"));
    assert_eq!(
        std::fs::read_to_string(&preload).unwrap(),
        site,
        "byte for byte"
    );
    assert!(
        !t.join("var/lib/keepalive-shim").exists(),
        "the record is gone"
    );
    // No enable recorded anything now: disable takes the line out.
    let out = tool(&upper, &["system", "disable", "--root", root]);
    assert!(out.status.success(), "{}", says(&out, "disable again"));
    assert_eq!(
        std::fs::read_to_string(&preload).unwrap(),
        "# the site's list\n"
    );
}

/// The site's file has entries the loader cannot preload (Windows line ends, a byte-order mark,
/// a file that is gone): the probe of our library passes, each of those errors is reported as
/// that entry's, and enable then disable is byte for byte. A library of ours that does not load
/// is still refused, as ours.
#[test]
fn another_entrys_loader_error_is_that_entrys() {
    let Some(t) = tree("others") else { return };
    let upper = t.parent().unwrap().join("etc-upper");
    std::fs::create_dir(&upper).unwrap();
    let root = t.to_str().unwrap();
    let site: &[u8] =
        b"\xef\xbb\xbf/opt/site/first.so\r\n# a comment\r\n/opt/site/gone.so\r\n/lib/missing.so\n";
    let preload = t.join("etc/ld.so.preload");
    std::fs::write(&preload, site).unwrap();
    let out = tool(&upper, &["system", "enable", "--root", root]);
    let err = stderr(&out);
    assert!(out.status.success(), "{}", says(&out, "enable"));
    for needle in [
        "'\\u{feff}/opt/site/first.so\\r'",
        "byte-order mark",
        "'/opt/site/gone.so\\r'",
        "Windows line ends",
        "'/lib/missing.so'",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert_eq!(
        std::fs::read(&preload).unwrap(),
        [format!("{LIB}\n").as_bytes(), site].concat()
    );
    let out = tool(&upper, &["system", "disable", "--root", root]);
    assert!(out.status.success(), "{}", says(&out, "disable"));
    assert_eq!(std::fs::read(&preload).unwrap(), site, "byte for byte");

    // Ours broken (cut short): refused, as ours, with the same site file.
    let broken = t.join("opt/broken/libkeepalive_shim.so");
    copy_in(library(), &broken);
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..4096]).unwrap();
    let out = tool(
        &upper,
        &[
            "system",
            "enable",
            "--root",
            root,
            "--library",
            "/opt/broken/libkeepalive_shim.so",
        ],
    );
    assert!(
        !out.status.success()
            && stderr(&out).contains("/opt/broken/libkeepalive_shim.so does not load"),
        "{}",
        says(&out, "enable a broken library")
    );
    assert_eq!(std::fs::read(&preload).unwrap(), site);
}

/// `check` run by a user who cannot read a root-only (0600) `/etc/keepalive-shim.conf` says it
/// is there and cannot be read, not "not present"; the same file readable (0644) is read.
#[test]
fn check_says_a_system_file_it_cannot_read_exists() {
    if !is_root() {
        unavailable::<()>("the unreadable system file test needs root (mount namespaces)");
        return;
    }
    for (mode, says_what) in [
        (0o600, "present, but this user cannot read it"),
        (0o644, "System file /etc/keepalive-shim.conf: read"),
    ] {
        let base = folder("check");
        let upper = base.join("etc-upper");
        let work = base.join("etc-work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let conf = upper.join("keepalive-shim.conf");
        std::fs::write(&conf, "KEEPALIVE_IDLE=45\n").unwrap();
        set_mode(&conf, mode);
        let mut cmd = Command::new(CLI);
        cmd.arg("check").env_clear().env("PATH", "/usr/bin:/bin");
        overlay_etc(&mut cmd, &upper, &work);
        common::as_nobody(&mut cmd);
        let out = cmd.output().unwrap();
        let said = text(&out.stdout);
        assert!(
            out.status.success() && said.contains(says_what) && !said.contains("not present"),
            "mode {mode:o}: {}",
            says(&out, "check")
        );
    }
}
