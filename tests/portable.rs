//! The portability gate and its runtime proofs. Every library artifact (the tested
//! `target/release/libkeepalive_shim.so` and each library in `target/dist/*/`, aarch64 included)
//! is checked auditwheel-style with binutils' readelf: what it needs, which glibc versions, what
//! it exports and imports, no RPATH/RUNPATH, no text relocations, no executable stack. The
//! release folder must match what was tested and its SHA256SUMS must verify; the shipped tools
//! must be static and run. Then the same C client (tests/programs/options_client.c) runs as a
//! musl program and as an aarch64 program under qemu-aarch64, with and without the library.
//!
//! `scripts/dist.sh` makes target/dist and installs the tools used here (musl-tools, qemu-user,
//! the aarch64 cross gcc); `scripts/test.sh` runs it first. Without them a test is skipped with a
//! message, except under CI=true, where it fails.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The undefined dynamic symbols a library may have: those that `objdump -T` lists for the
/// x86_64 and aarch64 release builds, and `posix_memalign`, which the allocator (src/heap.rs)
/// calls for an over-aligned layout. `true`: must be weak (optional hooks of the C runtime's
/// startup files; a strong reference to one fails the load where it is missing).
const IMPORTS: &[(&str, bool)] = &[
    ("__cxa_finalize", true),
    ("__gmon_start__", true),
    ("_ITM_deregisterTMCloneTable", true),
    ("_ITM_registerTMCloneTable", true),
    ("abort", false),
    ("malloc", false),
    ("free", false),
    ("posix_memalign", false),
    ("realloc", false),
    ("memcpy", false),
    ("memset", false),
    ("memcmp", false),
    ("bcmp", false),
    ("strlen", false),
    ("__errno_location", false),
    ("getpid", false),
    ("write", false),
    ("dlsym", false),
    ("_exit", false),
    ("syscall", false),
    ("environ", false),
    ("getsockopt", false),
    ("calloc", false),
    // Copies a connect() address through the kernel, never dereferencing the program's pointer.
    ("process_vm_readv", false),
    // AT_SECURE (the loader's secure mode); on aarch64 also the outline atomics of
    // compiler-builtins, reading AT_HWCAP. The aarch64 build references environ under both of
    // glibc's names.
    ("getauxval", false),
    ("__environ", false),
    // The pass over the loaded objects after a RTLD_DEEPBIND load (src/deepbind.rs).
    ("dl_iterate_phdr", false),
];

/// The only libraries a library may need: musl's loader provides both names from itself.
const NEEDED: [&str; 2] = ["libc.so.6", "libdl.so.2"];
/// The newest glibc symbol version allowed: aarch64's first, as old as x86_64 needs.
const NEWEST_GLIBC: [u32; 2] = [2, 17];

const VERSION: &str = env!("CARGO_PKG_VERSION");
const X86_64: &str = "Advanced Micro Devices X86-64";
const AARCH64: &str = "AArch64";
/// The architectures of the release, by the name in the folder's name, with readelf's machine.
const ARCHES: [(&str, &str); 2] = [("x86_64", X86_64), ("aarch64", AARCH64)];

/// Whether `tool` runs (`common::have`): Debian's `package`, which scripts/dist.sh installs.
fn have_from(tool: &str, package: &str) -> bool {
    have(
        tool,
        &format!("Debian's {package}; scripts/dist.sh installs it"),
    )
}

/// target/dist as made by `scripts/dist.sh`.
fn dist() -> Option<PathBuf> {
    let dir = root().join("target/dist");
    if dir.join("SHA256SUMS").is_file() {
        Some(dir)
    } else {
        unavailable(&format!(
            "{} is missing: run scripts/dist.sh",
            dir.display()
        ))
    }
}

/// The release folder of one architecture in target/dist.
fn folder(dist: &Path, arch: &str) -> PathBuf {
    dist.join(format!("keepalive-shim-{VERSION}-{arch}-linux"))
}

fn readelf(args: &[&str], file: &Path) -> String {
    text(&output_ok(Command::new("readelf").args(args).arg(file)).stdout)
}

/// What the gate looks at in one ELF file, as binutils' readelf reports it.
struct Elf {
    machine: String,
    interpreter: Option<String>,
    /// `readelf -d` as text (RPATH, RUNPATH, TEXTREL).
    dynamic: String,
    needed: Vec<String>,
    /// The flags of PT_GNU_STACK (`RW`, `RWE`), if there is one.
    stack: Option<String>,
    /// Defined global and weak dynamic symbols.
    exports: Vec<String>,
    /// Undefined dynamic symbols: name, whether weak.
    imports: Vec<(String, bool)>,
    /// Every symbol version the file requires (`.gnu.version_r` and the symbols' own).
    versions: Vec<String>,
}

impl Elf {
    fn read(file: &Path) -> Elf {
        let header = readelf(&["-hW"], file);
        let machine = header
            .lines()
            .find_map(|l| l.trim().strip_prefix("Machine:"))
            .map(|m| m.trim().to_owned())
            .unwrap_or_default();
        let segments = readelf(&["-lW"], file);
        let interpreter = segments.lines().find_map(|l| {
            let rest = l.split("Requesting program interpreter: ").nth(1)?;
            Some(rest.trim_end_matches(']').to_owned())
        });
        let stack = segments.lines().find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // GNU_STACK offset vaddr paddr filesz memsz FLAGS... align
            (fields.first() == Some(&"GNU_STACK") && fields.len() >= 8)
                .then(|| fields[6..fields.len() - 1].concat())
        });
        let dynamic = readelf(&["-dW"], file);
        let needed = dynamic
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_owned()))
            .collect();
        let mut exports = Vec::new();
        let mut imports = Vec::new();
        let mut versions = Vec::new();
        for line in readelf(&["--dyn-syms", "-W"], file).lines() {
            // Num: Value Size Type Bind Vis Ndx Name[@version] [(n)]
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8
                || !f[0].ends_with(':')
                || f[0].trim_end_matches(':').parse::<u32>().is_err()
            {
                continue;
            }
            let (kind, bind, ndx) = (f[3], f[4], f[6]);
            if kind == "SECTION" || bind == "LOCAL" {
                continue;
            }
            let (name, version) = match f[7].split_once('@') {
                Some((name, version)) => (name, Some(version.trim_start_matches('@'))),
                None => (f[7], None),
            };
            versions.extend(version.map(str::to_owned));
            if ndx == "UND" {
                imports.push((name.to_owned(), bind == "WEAK"));
            } else {
                exports.push(name.to_owned());
            }
        }
        exports.sort();
        // The names in "Version needs section" (not the file's own version definitions).
        let mut in_needs = false;
        for line in readelf(&["-VW"], file).lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                in_needs = line.starts_with("Version needs section");
            } else if let Some(rest) = line.split("Name: ").nth(1).filter(|_| in_needs) {
                versions.extend(rest.split_whitespace().next().map(str::to_owned));
            }
        }
        versions.sort();
        versions.dedup();
        Elf {
            machine,
            interpreter,
            dynamic,
            needed,
            stack,
            exports,
            imports,
            versions,
        }
    }
}

/// `GLIBC_2.2.5` as `[2, 2, 5]`; `None` for any other name.
fn glibc_version(name: &str) -> Option<Vec<u32>> {
    name.strip_prefix("GLIBC_")?
        .split('.')
        .map(|n| n.parse().ok())
        .collect()
}

/// Every way `file` breaks the gate, one line each.
fn gate(file: &Path, machine: &str) -> Vec<String> {
    let elf = Elf::read(file);
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(format!("{}: {what}", file.display()));
    if elf.machine != machine {
        problem(format!("built for {:?}, not {machine}", elf.machine));
    }
    let mut needed = elf.needed.clone();
    needed.sort();
    if needed != NEEDED {
        problem(format!("NEEDED {needed:?}, not exactly {NEEDED:?}"));
    }
    for version in &elf.versions {
        match glibc_version(version) {
            Some(v) if v <= NEWEST_GLIBC.to_vec() => {}
            _ => problem(format!(
                "requires symbol version {version} (at most GLIBC_2.17)"
            )),
        }
    }
    if elf.exports != EXPORTS {
        problem(format!(
            "exports {:?}, not exactly {EXPORTS:?}",
            elf.exports
        ));
    }
    for (name, weak) in &elf.imports {
        match IMPORTS.iter().find(|(allowed, _)| allowed == name) {
            None => problem(format!("imports {name}, which is not in the allow-list")),
            Some((_, true)) if !weak => problem(format!("imports {name} strong, not weak")),
            Some(_) => {}
        }
    }
    for tag in ["(RPATH)", "(RUNPATH)", "TEXTREL"] {
        if elf.dynamic.contains(tag) {
            problem(format!("has {tag} in its dynamic section"));
        }
    }
    match &elf.stack {
        None => problem("has no PT_GNU_STACK (the stack would be executable)".into()),
        Some(flags) if flags.contains('E') => problem(format!("has an executable stack ({flags})")),
        Some(_) => {}
    }
    if elf.interpreter.is_some() {
        problem("has a program interpreter".into());
    }
    problems
}

fn assert_clean(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "the portability gate failed:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_tested_library_passes_the_elf_gate() {
    assert_clean(gate(library(), X86_64));
}

#[test]
fn every_dist_library_passes_the_elf_gate() {
    let Some(dist) = dist() else { return };
    let mut folders: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut expected: Vec<String> = ARCHES
        .iter()
        .map(|(arch, _)| format!("keepalive-shim-{VERSION}-{arch}-linux"))
        .collect();
    expected.sort();
    assert_eq!(folders, expected, "the folders in {}", dist.display());
    let mut problems = Vec::new();
    for (arch, machine) in ARCHES {
        problems.extend(gate(
            &folder(&dist, arch).join("libkeepalive_shim.so"),
            machine,
        ));
    }
    assert_clean(problems);
}

#[test]
fn the_shipped_x86_64_library_is_the_tested_file() {
    let Some(dist) = dist() else { return };
    let shipped = folder(&dist, "x86_64").join("libkeepalive_shim.so");
    assert!(
        std::fs::read(&shipped).unwrap() == std::fs::read(library()).unwrap(),
        "{} differs from the tested {}: run scripts/dist.sh after building",
        shipped.display(),
        library().display()
    );
}

#[test]
fn sha256sums_verifies_and_covers_the_archives_and_their_binaries() {
    let Some(dist) = dist() else { return };
    let check = output_ok(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dist),
    );
    let listed = String::from_utf8_lossy(&check.stdout);
    for (arch, _) in ARCHES {
        let name = format!("keepalive-shim-{VERSION}-{arch}-linux");
        for file in [
            format!("{name}.tar.gz"),
            format!("{name}/libkeepalive_shim.so"),
            format!("{name}/keepalive-shim"),
        ] {
            assert!(
                listed.contains(&format!("{file}: OK")),
                "SHA256SUMS does not cover {file}:\n{listed}"
            );
        }
        // The archive holds the folder: the same files, the same library.
        let archive = dist.join(format!("{name}.tar.gz"));
        let list = output_ok(Command::new("tar").arg("-tzf").arg(&archive));
        let mut entries: Vec<&str> = std::str::from_utf8(&list.stdout).unwrap().lines().collect();
        entries.sort();
        let expected: Vec<String> = [
            "",
            "LICENSE",
            "README.md",
            "keepalive-shim",
            "libkeepalive_shim.so",
        ]
        .iter()
        .map(|file| format!("{name}/{file}"))
        .collect();
        assert_eq!(entries, expected, "{}", archive.display());
        let inside = output_ok(
            Command::new("tar")
                .arg("-xzOf")
                .arg(&archive)
                .arg(format!("{name}/libkeepalive_shim.so")),
        );
        assert!(
            inside.stdout == std::fs::read(dist.join(&name).join("libkeepalive_shim.so")).unwrap(),
            "the library in {} differs from the one in its folder",
            archive.display()
        );
    }
}

/// The shipped tools are static and run: natively, and the aarch64 one under qemu-aarch64. Both
/// print the same `check` report (one source), with a variable set to show it is read.
#[test]
fn the_shipped_tools_are_static_and_run() {
    let Some(dist) = dist() else { return };
    let qemu = have_from("qemu-aarch64", "qemu-user");
    let mut reports = Vec::new();
    for (arch, machine) in ARCHES {
        let tool = folder(&dist, arch).join("keepalive-shim");
        let elf = Elf::read(&tool);
        assert_eq!(elf.machine, machine, "{}", tool.display());
        assert_eq!(elf.interpreter, None, "{} must be static", tool.display());
        assert!(
            elf.needed.is_empty(),
            "{} needs {:?}",
            tool.display(),
            elf.needed
        );
        if arch == "aarch64" && !qemu {
            continue;
        }
        let tool_run = |args: &[&str]| {
            let mut cmd = if arch == "aarch64" {
                let mut cmd = command(false, "qemu-aarch64");
                cmd.arg(&tool);
                cmd
            } else {
                command(false, &tool)
            };
            cmd.args(args).env("KEEPALIVE_IDLE", "45");
            String::from_utf8(output_ok(&mut cmd).stdout).unwrap()
        };
        assert_eq!(
            tool_run(&["--version"]).trim(),
            format!("keepalive-shim {VERSION}"),
            "{arch} --version"
        );
        let report = tool_run(&["check"]);
        assert!(report.contains("45s"), "{arch} check:\n{report}");
        // The library each preloads is the one beside it, in its own folder.
        let library = report.lines().next().unwrap_or_default();
        assert!(
            library.ends_with(&format!("{arch}-linux/libkeepalive_shim.so.")),
            "{arch}: {library}"
        );
        reports.push(report.lines().skip(1).collect::<Vec<_>>().join("\n"));
    }
    reports.dedup();
    assert_eq!(
        reports.len(),
        1,
        "the tools' check reports differ: {reports:#?}"
    );
}

/// options_client.c built by `compiler`.
fn client(compiler: &str) -> &'static Path {
    build_with(compiler, "options_client.c", &["-O2", "-Wall", "-Werror"])
}

/// The five options the client printed, after checking it exited 0 with nothing on stderr.
fn options(cmd: &mut Command) -> [i64; 5] {
    let out = output_ok(cmd);
    let stderr = stderr(&out);
    assert!(stderr.is_empty(), "{cmd:?} wrote to stderr: {stderr}");
    five(&serde_json::from_slice(&out.stdout).expect("options_client prints JSON"))
}

#[test]
fn a_musl_program_gets_the_options_from_the_host_library() {
    if !have_from("musl-gcc", "musl-tools") {
        return;
    }
    let client = client("musl-gcc");
    let elf = Elf::read(client);
    assert_eq!(
        elf.interpreter.as_deref(),
        Some("/lib/ld-musl-x86_64.so.1"),
        "musl-gcc must make a dynamically linked musl program"
    );
    assert_eq!(
        options(&mut command(false, client)),
        KERNEL,
        "without the library"
    );
    assert_eq!(
        options(&mut command(true, client)),
        OURS,
        "with the library"
    );
    assert_eq!(
        options(command(true, client).env("KEEPALIVE_IDLE", "45")),
        [1, 45, 10, 3, 75_000],
        "KEEPALIVE_IDLE=45 under musl"
    );
}

#[test]
fn an_aarch64_program_under_qemu_gets_the_options_from_the_dist_library() {
    let Some(dist) = dist() else { return };
    if !have_from("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
        || !have_from("qemu-aarch64", "qemu-user")
    {
        return;
    }
    let lib = folder(&dist, "aarch64").join("libkeepalive_shim.so");
    let lib = lib.to_str().unwrap();
    let client = client("aarch64-linux-gnu-gcc");
    let elf = Elf::read(client);
    assert_eq!(elf.machine, AARCH64);
    // Like /bin/sh on a glibc of 2.34 or later, it does not link libdl: the library's own NEEDED
    // entries must bring what it uses.
    assert_eq!(
        elf.needed,
        ["libc.so.6"],
        "the client must link the C library only"
    );
    assert_eq!(
        options(&mut qemu_aarch64(client, &[])),
        KERNEL,
        "without the library"
    );
    // LD_BIND_NOW: every symbol of the program and the library is resolved at start.
    let preload = [("LD_PRELOAD", lib), ("LD_BIND_NOW", "1")];
    assert_eq!(
        options(&mut qemu_aarch64(client, &preload)),
        OURS,
        "with the library"
    );
    assert_eq!(
        options(&mut qemu_aarch64(
            client,
            &[preload[0], preload[1], ("KEEPALIVE_IDLE", "45")]
        )),
        [1, 45, 10, 3, 75_000],
        "KEEPALIVE_IDLE=45 on aarch64"
    );
}
