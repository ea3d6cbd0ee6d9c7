//! Libraries loaded with `RTLD_DEEPBIND`, as PHP loads its extensions: the loader binds them, and
//! the libraries they bring in, straight to libc, past `LD_PRELOAD`; the `dlopen` hook re-points
//! those bindings to the library's hooks (src/deepbind.rs). Every case runs the same program with
//! and without the library: a C program and plugin of our own (tests/programs/deepbind_*.c), and
//! PHP's curl extension against a loopback server, read from outside with `keepalive-shim inspect`.
//!
//! The hook must change nothing else about `dlopen`: a plugin found by bare name only through the
//! program's own RUNPATH, or through `$ORIGIN`, still loads with the library preloaded.
//!
//! Without gcc, or php with its curl extension (Debian's php-cli and php-curl), a test is skipped
//! with a message, except under CI=true, where it fails.

mod common;

use common::*;
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The test program and its plugins, built by one compiler, and how to run them.
///   DIR/deepbind_main                RUNPATH $ORIGIN/plugins
///   DIR/plugins/deepbind_lib.so      RUNPATH $ORIGIN, needs libdeepdep.so; -z lazy: its PLT
///                                    slots writable, its pointer to socket in RELRO
///   DIR/plugins/libdeepdep.so        -z now: its PLT slots in read-only RELRO pages
struct Build {
    dir: PathBuf,
    /// The library to preload; `None`: common::library().
    library: Option<PathBuf>,
    /// Run under qemu-aarch64 (a foreign architecture).
    qemu: bool,
}

/// Builds the files of a `Build` with `cc` (a C compiler given these arguments after
/// `-O2 -Wall -Werror`), in order; `out` gives the path of each file, and of `plugins`.
fn build_files(out: impl Fn(&str) -> OsString, cc: impl Fn(&[&OsStr])) {
    let source = |name: &str| program(name).into_os_string();
    let mut plugins = OsString::from("-L");
    plugins.push(out("plugins"));
    let os = OsStr::new;
    cc(&[
        os("-shared"),
        os("-fPIC"),
        os("-Wl,-z,now"),
        os("-o"),
        &out("plugins/libdeepdep.so"),
        &source("deepbind_dep.c"),
    ]);
    cc(&[
        os("-shared"),
        os("-fPIC"),
        os("-o"),
        &out("plugins/deepbind_lib.so"),
        &source("deepbind_lib.c"),
        os("-Wl,-z,lazy"),
        &plugins,
        os("-ldeepdep"),
        os("-Wl,-rpath,$ORIGIN"),
        os("-Wl,--enable-new-dtags"),
    ]);
    cc(&[
        os("-o"),
        &out("deepbind_main"),
        &source("deepbind_main.c"),
        os("-ldl"),
        os("-lpthread"),
        os("-Wl,-rpath,$ORIGIN/plugins"),
        os("-Wl,--enable-new-dtags"),
    ]);
}

/// Builds the programs with `compiler` into a directory of their own.
fn build(compiler: &str, tag: &str) -> PathBuf {
    let dir = scratch().join(format!("deepbind-{tag}"));
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    build_files(
        |name| dir.join(name).into_os_string(),
        |args| {
            output_ok(
                Command::new(compiler)
                    .args(["-O2", "-Wall", "-Werror"])
                    .args(args),
            );
        },
    );
    dir
}

/// Built with the host's gcc, run natively with `target/release/libkeepalive_shim.so`.
fn built() -> Option<&'static Build> {
    static BUILT: OnceLock<Option<Build>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !have("gcc", "Debian's gcc") {
                return None;
            }
            Some(Build {
                dir: build("gcc", "x86_64"),
                library: None,
                qemu: false,
            })
        })
        .as_ref()
}

/// Built with Debian's aarch64 cross gcc, run under qemu-aarch64 with the aarch64 library
/// (`scripts/dist.sh` builds it, and installs both tools).
fn aarch64() -> Option<&'static Build> {
    static BUILT: OnceLock<Option<Build>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let library =
                root().join("target/aarch64-unknown-linux-gnu/release/libkeepalive_shim.so");
            if !runs("aarch64-linux-gnu-gcc") || !runs("qemu-aarch64") || !library.is_file() {
                return unavailable(
                    "aarch64-linux-gnu-gcc, qemu-aarch64 or the aarch64 library is missing \
                     (scripts/dist.sh installs and builds them)",
                );
            }
            Some(Build {
                dir: build("aarch64-linux-gnu-gcc", "aarch64"),
                library: Some(library),
                qemu: true,
            })
        })
        .as_ref()
}

/// `deepbind_main ARGS...` with or without the library.
fn run(b: &Build, preload: bool, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let main = b.dir.join("deepbind_main");
    if !b.qemu {
        return command(preload, main)
            .args(args)
            .envs(vars.iter().copied())
            .output()
            .expect("run deepbind_main");
    }
    let library = b
        .library
        .as_deref()
        .unwrap_or(library())
        .display()
        .to_string();
    let mut guest = vars.to_vec();
    if preload {
        guest.insert(0, ("LD_PRELOAD", &library));
    }
    qemu_aarch64(&main, &guest)
        .args(args)
        .output()
        .expect("run qemu-aarch64")
}

/// The program's JSON after checking it exited 0; and its stderr.
fn report(out: &Output) -> (Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "deepbind_main failed: {stderr}");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "deepbind_main printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (json, stderr)
}

/// The options of the plugin's three sockets: its own (PLT), through a pointer in its read-only
/// data, and its dependency's.
fn sockets(v: &Value) -> [[i64; 5]; 3] {
    ["own", "pointer", "dep"].map(|k| {
        let list = v[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} missing in {v}"));
        let values: Vec<i64> = list.iter().map(|x| x.as_i64().unwrap()).collect();
        values.try_into().unwrap()
    })
}

fn plugin(b: &Build) -> String {
    b.dir
        .join("plugins/deepbind_lib.so")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_plugin_loaded_with_rtld_deepbind_and_its_dependency_get_keepalive() {
    let Some(b) = built() else { return };
    let path = plugin(b);
    for flags in [
        "now+deepbind",
        "lazy+deepbind",
        "lazy+deepbind+global",
        "now",
    ] {
        let (without, _) = report(&run(b, false, &[&path, flags], &[]));
        assert_eq!(
            sockets(&without),
            [KERNEL; 3],
            "{flags} without the library"
        );
        let (with, stderr) = report(&run(b, true, &[&path, flags], &[]));
        assert_eq!(sockets(&with), [OURS; 3], "{flags} with the library");
        assert_eq!(stderr, "", "{flags}: nothing to say at warn");
        assert_eq!(
            with["dlerror"],
            Value::Null,
            "{flags}: dlerror() left clean"
        );
    }
    // Closed and loaded again: a new mapping, covered again.
    let (again, _) = report(&run(b, true, &["--reopen", &path, "lazy+deepbind"], &[]));
    assert_eq!(sockets(&again), [OURS; 3], "after dlclose and a new dlopen");
    // LD_BIND_NOW turns the lazy load into an immediate one.
    let (bound, _) = report(&run(
        b,
        true,
        &[&path, "lazy+deepbind"],
        &[("LD_BIND_NOW", "1")],
    ));
    assert_eq!(sockets(&bound), [OURS; 3], "under LD_BIND_NOW");
}

/// What the library fixes is real: the loader binds the plugin's `socket` to libc, past the
/// preloaded library (which is what every socket of it got before the `dlopen` hook: kernel
/// defaults, as the bare-name case below still shows), and the sockets get keepalive anyway.
#[test]
fn the_loader_binds_such_a_plugin_past_the_preload_and_the_hook_re_points_it() {
    let Some(b) = built() else { return };
    let path = plugin(b);
    let (with, stderr) = report(&run(
        b,
        true,
        &[&path, "now+deepbind"],
        &[("LD_DEBUG", "bindings")],
    ));
    let bound_to_libc = |file: &str| {
        stderr.lines().any(|l| {
            l.contains(&format!(
                "binding file {}",
                b.dir.join("plugins").join(file).display()
            )) && l.contains("libc.so.6")
                && l.contains("`socket'")
        })
    };
    assert!(
        bound_to_libc("deepbind_lib.so") && bound_to_libc("libdeepdep.so"),
        "the loader should bind both to libc's socket:\n{stderr}"
    );
    assert_eq!(sockets(&with), [OURS; 3]);
}

#[test]
fn plugins_found_through_the_programs_runpath_or_origin_still_load() {
    let Some(b) = built() else { return };
    // Without RTLD_DEEPBIND the hook only jumps to the real dlopen: the program's RUNPATH
    // ($ORIGIN/plugins) finds the plugin, and it binds to the hooks the ordinary way.
    for flags in ["now", "lazy", "lazy+global"] {
        let (without, _) = report(&run(b, false, &["deepbind_lib.so", flags], &[]));
        assert_eq!(sockets(&without), [KERNEL; 3]);
        let (with, stderr) = report(&run(b, true, &["deepbind_lib.so", flags], &[]));
        assert_eq!(sockets(&with), [OURS; 3], "bare name, {flags}");
        assert_eq!(stderr, "");
    }
    // With RTLD_DEEPBIND, a bare name or $ORIGIN still loads the plugin (the caller is the
    // program), but the library cannot follow it: kernel defaults, and one warning naming it.
    for name in ["deepbind_lib.so", "$ORIGIN/plugins/deepbind_lib.so"] {
        let (without, stderr) = report(&run(b, false, &[name, "now+deepbind"], &[]));
        assert_eq!(sockets(&without), [KERNEL; 3]);
        assert_eq!(stderr, "");
        let (with, stderr) = report(&run(b, true, &[name, "now+deepbind"], &[]));
        assert_eq!(sockets(&with), [KERNEL; 3], "{name}: not followed");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one warning: {stderr}");
        assert!(
            lines[0].contains(&format!("{name} is loaded with RTLD_DEEPBIND"))
                && lines[0].contains("may not get keepalive"),
            "{stderr}"
        );
        let (quiet, stderr) = report(&run(
            b,
            true,
            &[name, "now+deepbind"],
            &[("KEEPALIVE_LOG", "off")],
        ));
        assert_eq!(sockets(&quiet), [KERNEL; 3]);
        assert_eq!(stderr, "", "KEEPALIVE_LOG=off");
    }
    // A later RTLD_DEEPBIND load of a path looks at what was loaded before it too, and covers
    // the plugin the bare name brought in (here the second load finds its dependency loaded).
    let dep = b.dir.join("plugins/libdeepdep.so");
    let (later, stderr) = report(&run(
        b,
        true,
        &[
            "deepbind_lib.so",
            "now+deepbind",
            dep.to_str().unwrap(),
            "now+deepbind",
        ],
        &[],
    ));
    assert_eq!(
        sockets(&later),
        [OURS; 3],
        "covered by the second load's pass"
    );
    assert_eq!(stderr.lines().count(), 1, "still one warning: {stderr}");
}

/// A pass re-points slots that other threads are calling through at that moment: the plugin
/// loaded by bare name (not followed) is covered by the next load's pass while four threads make
/// sockets through it. Every call sees either the real function or the hook.
#[test]
fn slots_are_re_pointed_under_threads_calling_through_them() {
    let Some(b) = built() else { return };
    let dep = b.dir.join("plugins/libdeepdep.so");
    let args = [
        "deepbind_lib.so",
        "now+deepbind",
        dep.to_str().unwrap(),
        "now+deepbind",
    ];
    for _ in 0..5 {
        let (with, _) = report(&run(b, true, &args, &[("DEEPBIND_THREADS", "4")]));
        assert_eq!(sockets(&with), [OURS; 3]);
        assert!(with["calls"].as_i64().unwrap() > 0, "{with}");
        assert_eq!(with["bad"], 0, "{with}");
    }
}

/// The aarch64 hook and pass, under qemu-aarch64: covered with RTLD_DEEPBIND, and a plugin found
/// through the program's RUNPATH still loads.
#[test]
fn on_aarch64_too() {
    let Some(b) = aarch64() else { return };
    let path = plugin(b);
    for flags in ["now+deepbind", "lazy+deepbind"] {
        let (without, _) = report(&run(b, false, &[&path, flags], &[]));
        assert_eq!(
            sockets(&without),
            [KERNEL; 3],
            "{flags} without the library"
        );
        let (with, stderr) = report(&run(b, true, &[&path, flags], &[]));
        assert_eq!(sockets(&with), [OURS; 3], "{flags} with the library");
        assert_eq!(stderr, "");
    }
    let (bare, _) = report(&run(b, true, &["deepbind_lib.so", "lazy"], &[]));
    assert_eq!(sockets(&bare), [OURS; 3]);
    let (deep, stderr) = report(&run(b, true, &["deepbind_lib.so", "now+deepbind"], &[]));
    assert_eq!(sockets(&deep), [KERNEL; 3]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// glibc 2.31 (Debian bullseye, chrooted; tests/common/rootfs.rs): the real `dlopen` is libdl's,
/// and libpthread, which the program links, defines `connect`, `close` and `fcntl` too, so the
/// function the library resolves for those differs from the libc one the plugin is bound to.
/// Both are the C library's: `close` is re-pointed as well (libdeepdep.so: socket and close).
#[test]
fn on_glibc_2_31_too() {
    let Some(chroot) = common::rootfs::Chroot::new() else {
        return;
    };
    std::fs::create_dir_all(chroot.host("plugins")).unwrap();
    build_files(
        |name| chroot.host(name).into_os_string(),
        |args| {
            let flags = ["-O2", "-Wall", "-Werror"].map(OsStr::new);
            common::rootfs::gcc(&[&flags[..], args].concat());
        },
    );
    let path = chroot.inside("plugins/deepbind_lib.so");
    let path = path.to_str().unwrap();
    let run = |preload: bool, args: &[&str], vars: &[(&str, &str)]| {
        chroot
            .command(preload, chroot.inside("deepbind_main"))
            .args(args)
            .envs(vars.iter().copied())
            .output()
            .expect("run deepbind_main in the bullseye tree")
    };
    for flags in ["now+deepbind", "lazy+deepbind"] {
        let (without, _) = report(&run(false, &[path, flags], &[]));
        assert_eq!(
            sockets(&without),
            [KERNEL; 3],
            "{flags} without the library"
        );
        let (with, stderr) = report(&run(true, &[path, flags], &[]));
        assert_eq!(sockets(&with), [OURS; 3], "{flags} with the library");
        assert_eq!(stderr, "");
        assert_eq!(with["dlerror"], Value::Null);
    }
    let (_, stderr) = report(&run(
        true,
        &[path, "now+deepbind"],
        &[("KEEPALIVE_LOG", "debug")],
    ));
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("libdeepdep.so: 2 references redirected")),
        "socket and close of libdeepdep.so:\n{stderr}"
    );
    // A plugin found through the program's RUNPATH still loads. Without /proc in the tree the
    // loader learns the program's $ORIGIN from LD_ORIGIN_PATH.
    let origin = chroot.inside("");
    let origin = [("LD_ORIGIN_PATH", origin.to_str().unwrap())];
    let (bare, _) = report(&run(true, &["deepbind_lib.so", "lazy"], &origin));
    assert_eq!(sockets(&bare), [OURS; 3]);
}

/// Where mprotect refuses write access (a hardened system; here a seccomp filter the program
/// installs), the slots in read-only pages stay as they were, and one warning says so, naming the
/// library loaded. The plugin's own PLT slots are writable anyway and still re-pointed.
#[test]
fn slots_that_cannot_be_made_writable_are_reported() {
    let Some(b) = built() else { return };
    let path = plugin(b);
    let deny = [("DEEPBIND_DENY_MPROTECT", "1")];
    let out = run(b, true, &[&path, "now+deepbind"], &deny);
    if out.status.code() == Some(3) {
        unavailable::<()>("seccomp filters are not available here");
        return;
    }
    let (with, stderr) = report(&out);
    let [own, pointer, dep] = sockets(&with);
    assert_eq!(own, OURS, "its PLT, writable");
    assert_eq!(pointer, KERNEL, "its pointer in read-only data");
    assert_eq!(dep, KERNEL, "libdeepdep.so, -z now: every slot read-only");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one warning: {stderr}");
    assert!(
        lines[0].contains(&format!("{path} was loaded with RTLD_DEEPBIND"))
            && lines[0].contains("mprotect refused")
            && lines[0].contains("do not get keepalive"),
        "{stderr}"
    );
    let (without, _) = report(&run(b, false, &[&path, "now+deepbind"], &deny));
    assert_eq!(sockets(&without), [KERNEL; 3]);
}

#[test]
fn the_debug_log_names_each_library_covered() {
    let Some(b) = built() else { return };
    let path = plugin(b);
    let (_, stderr) = report(&run(
        b,
        true,
        &[&path, "now+deepbind"],
        &[("KEEPALIVE_LOG", "debug")],
    ));
    for file in ["deepbind_lib.so", "libdeepdep.so"] {
        assert!(
            stderr.lines().any(|l| l.contains(file)
                && l.contains("RTLD_DEEPBIND")
                && l.contains("references redirected")),
            "no line for {file}:\n{stderr}"
        );
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&format!("dlopen {path} with RTLD_DEEPBIND"))),
        "no summary line:\n{stderr}"
    );
}

// --- PHP ---------------------------------------------------------------------------------------

/// Whether `php` runs and has its curl extension (Debian's php-cli and php-curl).
fn php_with_curl() -> bool {
    let found = Command::new("php").arg("-m").output().is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "curl")
    });
    if !found {
        unavailable::<()>("php with its curl extension is missing (Debian's php-cli and php-curl)");
    }
    found
}

/// The `keepalive-shim` tool built beside the library by `cargo build --release`.
fn tool() -> Option<PathBuf> {
    let path = tool_beside_library();
    if path.is_file() {
        Some(path)
    } else {
        unavailable(&format!("{} is missing", path.display()))
    }
}

/// `pid`'s connection to `port` as `keepalive-shim inspect --json` reads it from the live
/// socket (or from /proc, without the right to take it). Waits for the connection to appear.
fn connection(tool: &Path, pid: u32, port: u16) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        let out = Command::new(tool)
            .args(["inspect", "--json"])
            .arg(pid.to_string())
            .output()
            .expect("keepalive-shim inspect");
        if let Ok(Value::Array(all)) = serde_json::from_slice::<Value>(&out.stdout) {
            let peer = format!("127.0.0.1:{port}");
            if let Some(c) = all.into_iter().find(|c| c["peer"] == peer.as_str()) {
                return c;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no connection of pid {pid} to port {port} appeared");
}

/// `[keepalive, idle, interval, count, user_timeout]` of an inspected connection, or only
/// whether keepalive is on when it was read from /proc.
fn five_of(c: &Value) -> Option<[i64; 5]> {
    (c["source"] == "socket").then(|| inspected_five(c))
}

/// PHP loads curl.so with RTLD_DEEPBIND, so libcurl's connections kept the kernel's defaults
/// under the library; now they get its settings, and nothing is logged at warn.
#[test]
fn php_curl_connections_get_keepalive_only_with_the_library() {
    if !php_with_curl() {
        return;
    }
    let Some(tool) = tool() else { return };
    let (_server, port) = server("silent");
    let script = format!(
        "$c = curl_init('http://127.0.0.1:{port}/'); curl_setopt($c, CURLOPT_TIMEOUT, 60); \
         echo \"calling\\n\"; curl_exec($c);"
    );
    for preload in [false, true] {
        let mut cmd = command(preload, "php");
        cmd.arg("-r").arg(&script).stderr(Stdio::null());
        let mut php = Background::spawn(cmd);
        php.expect("calling", Duration::from_secs(15));
        let c = connection(&tool, php.child.id(), port);
        assert!(php.running(), "php should still wait for the silent server");
        assert_eq!(c["keepalive"], preload, "keepalive, preload={preload}: {c}");
        if let Some(five) = five_of(&c) {
            assert_eq!(five, if preload { OURS } else { KERNEL }, "{c}");
        }
    }
    // Nothing to say at warn; at debug, libcurl is named among the libraries covered.
    let quick = |vars: &[(&str, &str)]| {
        let out = command(true, "php")
            .args(["-r", "curl_init();"])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(quick(&[]), "");
    let debug = quick(&[("KEEPALIVE_LOG", "debug")]);
    assert!(
        debug
            .lines()
            .any(|l| l.contains("libcurl") && l.contains("references redirected")),
        "{debug}"
    );
}
