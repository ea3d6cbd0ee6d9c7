//! Whether a preload library can reach a program at all, read from its executable file: a
//! statically linked binary has no program interpreter to load it, a Go binary makes its network
//! system calls without libc, and a setuid or setgid binary runs in the loader's secure mode.

use keepalive_shim_policy::config::Settings;
use keepalive_shim_supervisor as supervisor;
use keepalive_shim_sys::elf::{Elf, HOST_MACHINE, machine_name};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Finds `program` as `execvp` would: a name with a slash is a path, anything else is looked up
/// in `PATH`.
pub fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        // A path that names nothing is no program (and no dynamically linked one).
        let path = PathBuf::from(program);
        return path.exists().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// What keeps the library out of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No program interpreter: nothing loads a library into it.
    Static,
    /// Go: system calls without libc.
    Go,
    /// setuid or setgid for another user: the loader's secure mode ignores `LD_PRELOAD`.
    Setid,
    /// 32-bit, or another architecture: the library cannot be loaded into it, and the
    /// supervisor's filter (this architecture's system calls) does not see its calls either.
    Architecture,
}

/// One reason the library would not reach a program, with the sentence for the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obstacle {
    pub kind: Kind,
    pub message: String,
}

impl std::fmt::Display for Obstacle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why the library would not reach `path`; empty when nothing stands in its way.
pub fn obstacles(path: &Path) -> Vec<Obstacle> {
    reasons_at(path, 0)
        .into_iter()
        .map(|(kind, message)| Obstacle { kind, message })
        .collect()
}

fn reasons_at(path: &Path, depth: usize) -> Vec<(Kind, String)> {
    let mut found = Vec::new();
    let Ok(meta) = path.metadata() else {
        return found;
    };
    // The loader's secure mode starts when exec changes the credentials.
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if meta.mode() & libc::S_ISUID != 0 && meta.uid() != uid {
        found.push((
            Kind::Setid,
            format!(
                "{} is setuid: the loader ignores LD_PRELOAD for it",
                path.display()
            ),
        ));
    }
    if meta.mode() & libc::S_ISGID != 0 && meta.gid() != gid {
        found.push((
            Kind::Setid,
            format!(
                "{} is setgid: the loader ignores LD_PRELOAD for it",
                path.display()
            ),
        ));
    }
    let mut head = Vec::new();
    if File::open(path)
        .and_then(|f| f.take(256).read_to_end(&mut head))
        .is_err()
    {
        return found;
    }
    if head.starts_with(b"#!") && depth < 4 {
        // A script: what matters is its interpreter (through `env NAME`, the named program).
        let line = head[2..].split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let interpreter = words.next().map(PathBuf::from);
        let target = match (interpreter, words.next()) {
            (Some(i), Some(name)) if i.ends_with("env") && !name.starts_with('-') => resolve(name),
            (i, _) => i,
        };
        if let Some(target) = target {
            found.extend(reasons_at(&target, depth + 1));
        }
        return found;
    }
    if let Ok(Some(elf)) = std::fs::read(path).map(|bytes| Elf::parse(&bytes)) {
        if !elf.class64 {
            found.push((
                Kind::Architecture,
                format!(
                    "{} is a 32-bit program: the 64-bit library cannot be loaded into it",
                    path.display()
                ),
            ));
        } else if elf.machine != HOST_MACHINE {
            found.push((
                Kind::Architecture,
                format!(
                    "{} is built for {}: the library next to this tool is for {}",
                    path.display(),
                    machine_name(elf.machine),
                    machine_name(HOST_MACHINE)
                ),
            ));
        }
        // One library file serves glibc and musl programs alike (it needs only libc.so.6 and
        // libdl.so.2, which musl's loader provides itself, and no symbol version above
        // GLIBC_2.17): the interpreter's C library is no obstacle, its absence is.
        if elf.interpreter.is_none() {
            found.push((
                Kind::Static,
                format!(
                    "{} is statically linked (no program interpreter): no preload library \
                     reaches it",
                    path.display()
                ),
            ));
        }
        if elf.go {
            found.push((
                Kind::Go,
                format!(
                    "{} is a Go program: Go makes its network system calls without libc, so \
                     no preload library reaches its sockets (Go enables a 15 s keepalive itself)",
                    path.display()
                ),
            ));
        }
    }
    found
}

/// How `keepalive-shim run` reaches a program.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The library where it can enter the command, the seccomp supervisor where it cannot.
    Auto,
    /// The library alone (`LD_PRELOAD`).
    Preload,
    /// The seccomp supervisor alone: any program, and every program it starts.
    Seccomp,
    /// Both: the library's rules in every dynamically linked program, and the supervisor for
    /// every program of the tree, however linked.
    Both,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Preload => "preload",
            Mode::Seccomp => "seccomp",
            Mode::Both => "both",
        }
    }
}

/// The mode `run` gives a command whose executable has `obstacles` when `requested` is asked
/// for, and why. `privileged`: this process may install a filter without `no_new_privs`
/// (`CAP_SYS_ADMIN`), so a setuid program keeps its privilege under the supervisor.
///
/// `auto` looks at the command's own executable only (a script: its interpreter): a wrapper
/// script gets the library, and a statically linked program it starts later gets nothing;
/// `--mode both` or `--mode seccomp` covers every program of the tree.
pub fn choose(requested: Mode, obstacles: &[Obstacle], privileged: bool) -> (Mode, String) {
    if requested != Mode::Auto {
        return (
            requested,
            format!("--mode {} was asked for", requested.name()),
        );
    }
    let first = |kind: Kind| obstacles.iter().find(|o| o.kind == kind);
    if obstacles.is_empty() {
        return (
            Mode::Preload,
            "it is dynamically linked: the preload library reaches it (auto looks at the \
             command alone: a statically linked or Go program it starts later gets nothing; \
             --mode both covers the whole tree)"
                .to_owned(),
        );
    }
    if let Some(o) = first(Kind::Architecture) {
        return (
            Mode::Preload,
            format!(
                "{o}, and the supervisor's filter sees only this architecture's system calls: \
                 neither reaches it"
            ),
        );
    }
    if let Some(o) = first(Kind::Setid).filter(|_| !privileged) {
        return (
            Mode::Preload,
            format!(
                "{o}, and under the supervisor it would run without its privilege \
                 (no_new_privs, needed without CAP_SYS_ADMIN): left as it is (as root, \
                 --mode seccomp reaches it with its privilege)"
            ),
        );
    }
    (
        Mode::Seccomp,
        format!("{}: the seccomp supervisor reaches it", obstacles[0]),
    )
}

/// `keepalive-shim check`'s section on modes: which one `run` would give `command` (when one
/// is given) and why, and whether the seccomp supervisor can work here; with the mode chosen
/// (`None` without a command, or when it is not found).
pub fn check_section(
    command: &[std::ffi::OsString],
    settings: &Settings,
) -> (String, Option<Mode>) {
    use supervisor::kernel;
    let mut out = String::new();
    let version = kernel::running();
    let here = match (kernel::choose(version), version) {
        (Ok(trap), Some((major, minor))) => format!(
            "on this machine the seccomp supervisor can run (Linux {major}.{minor}: it traps \
             {}())",
            trap.name()
        ),
        (Ok(trap), None) => format!(
            "on this machine the seccomp supervisor would trap {}()",
            trap.name()
        ),
        (Err(why), _) => format!("on this machine the seccomp supervisor cannot run: {why}"),
    };
    let rules = if settings.has_rules() {
        "\n  Destination rules (KEEPALIVE_EXCLUDE, KEEPALIVE_INCLUDE) cannot apply under the \
         supervisor: it decides from system-call registers and never reads the program's memory, \
         where connect()'s destination is; every TCP socket it reaches is configured."
    } else {
        ""
    };
    let Some(program) = command.first() else {
        out.push_str(&format!(
            "Mode: `keepalive-shim run` (--mode auto) preloads the library into dynamically \
             linked programs and starts the seccomp supervisor for statically linked and Go \
             programs; {here}. `keepalive-shim check -- COMMAND` says which a command gets.{rules}\n"
        ));
        return (out, None);
    };
    let name = program.to_string_lossy();
    let Some(path) = resolve(&name) else {
        out.push_str(&format!("Mode for {name}: command not found.\n"));
        return (out, None);
    };
    let obstacles = obstacles(&path);
    let (mode, why) = choose(Mode::Auto, &obstacles, supervisor::privileged());
    let mechanism = match mode {
        Mode::Seccomp => "the seccomp supervisor",
        _ => "the preload library",
    };
    out.push_str(&format!(
        "Mode for {name}: `keepalive-shim run` (--mode auto) would use {mechanism}: {why}.\n  \
         {}{}.{}\n",
        here[..1].to_uppercase(),
        &here[1..],
        if mode == Mode::Seccomp { rules } else { "" }
    ));
    for o in obstacles
        .iter()
        .filter(|o| mode == Mode::Preload || o.kind != obstacles[0].kind)
    {
        out.push_str(&format!("  warning: {o}\n"));
    }
    (out, Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_has_nothing_in_the_way() {
        let sh = resolve("sh").expect("sh on PATH");
        assert!(obstacles(&sh).is_empty());
    }

    fn obstacle(kind: Kind) -> Obstacle {
        Obstacle {
            kind,
            message: format!("./x is {kind:?}"),
        }
    }

    #[test]
    fn auto_preloads_where_it_can_and_supervises_where_it_cannot() {
        assert_eq!(choose(Mode::Auto, &[], false).0, Mode::Preload);
        for kind in [Kind::Static, Kind::Go] {
            let (mode, why) = choose(Mode::Auto, &[obstacle(kind)], false);
            assert_eq!(mode, Mode::Seccomp, "{why}");
            assert!(why.ends_with("the seccomp supervisor reaches it"), "{why}");
        }
        // A setuid program would lose its privilege under no_new_privs: not without root.
        assert_eq!(
            choose(Mode::Auto, &[obstacle(Kind::Setid)], false).0,
            Mode::Preload
        );
        assert_eq!(
            choose(Mode::Auto, &[obstacle(Kind::Setid)], true).0,
            Mode::Seccomp
        );
        let arch = [obstacle(Kind::Static), obstacle(Kind::Architecture)];
        assert_eq!(choose(Mode::Auto, &arch, true).0, Mode::Preload);
        // Asked for, given.
        assert_eq!(choose(Mode::Both, &[], false).0, Mode::Both);
        assert_eq!(choose(Mode::Preload, &arch, false).0, Mode::Preload);
    }
}
