//! Attaching, replacing, detaching and listing, so that an operator can reason about what runs
//! where:
//!
//! - Every program and map of keepalive-shim is named `kas_…`; each program carries an info map
//!   (`kas_info`: the settings, the cgroup, the pin directory or the attaching process, as JSON,
//!   frozen), so `status` finds everything from the kernel alone.
//! - Attachments are links (`BPF_LINK_CREATE`). In the foreground the process holds them: they
//!   end with it, however it ends. With `--pin DIR` they are pinned as `DIR/sock_ops` and
//!   `DIR/setsockopt` and outlive the process.
//! - Attaching again replaces, never stacks: a link pinned at the same place gets the new
//!   program atomically (`BPF_LINK_UPDATE`); any other keepalive-shim link on that cgroup is
//!   detached once the new one is in place (so no connection goes uncovered in between).
//! - Only the cgroup given is touched, and of its programs only keepalive-shim's.
//! - Each attachment counts in its own map (`kas_counts`, program.rs `COUNT_*`), shared by its
//!   two programs: `status` shows it per attachment, and `attach --metrics ADDR:PORT` serves it
//!   (with what `keepalive-shim metrics` serves) while it holds the attachment.

use super::insn::Insn;
use super::preflight::{self, Cgroup};
use super::program::{self, Maps};
use super::sys;
use keepalive_shim_observe::fleet::{FleetCounts, FleetSeries, FleetSource};
use keepalive_shim_policy::config::{self, EX_CONFIG, Settings};
use keepalive_shim_policy::decide::{Defaults, KERNEL_DEFAULTS};
use keepalive_shim_policy::options::{COUNT, IDLE, INTERVAL};
use keepalive_shim_sys::say;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub const PROG_SOCK_OPS: &str = "kas_sock_ops";
pub const PROG_SETSOCKOPT: &str = "kas_setsockopt";
const MAP_INFO: &str = "kas_info";
const MAP_MARKS: &str = "kas_marks";
const MAP_COUNTS: &str = "kas_counts";
/// The counts map's value: one u64 per counter.
const COUNTS_SIZE: usize = 8 * program::COUNTERS;
/// `fleet attach --metrics`: process series at most (as `metrics --max-processes`' default).
const DEFAULT_MAX_PROCESSES: usize = 500;
/// Room for the info JSON (64 rules of each kind fit).
const INFO_SIZE: usize = 16 * 1024;

/// The two hooks, by attach type: what the pin file is called.
const HOOKS: [(u32, &str); 2] = [
    (sys::ATTACH_CGROUP_SOCK_OPS, "sock_ops"),
    (sys::ATTACH_CGROUP_SETSOCKOPT, "setsockopt"),
];

fn hook_name(attach_type: u32) -> &'static str {
    HOOKS
        .iter()
        .find(|(t, _)| *t == attach_type)
        .map_or("?", |(_, n)| n)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    say!("{message}");
    ExitCode::FAILURE
}

/// The programs built for one attachment.
struct Built {
    /// sock_ops, and setsockopt when it has work: (attach type, program).
    progs: Vec<(u32, OwnedFd)>,
    /// What `attach` prints of each: hook, instructions, the verifier's statistics.
    summary: Vec<String>,
    /// The counts map, for `--metrics`.
    counts: OwnedFd,
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "idle_s": s.idle_s,
        "interval_s": s.interval_s,
        "count": s.count,
        "user_timeout_ms": s.user_timeout_ms,
        "user_timeout_explicit": s.user_timeout_explicit,
        "force": s.force,
        "exclude": s.exclude.to_string(),
        "include": s.include.to_string(),
    })
}

/// The values of idle, interval and count that read back as nobody's choice: the kernel's
/// defaults and the node's sysctls where they differ, for `fleet status`.
fn not_a_programs_own(d: &Defaults) -> Value {
    let of = |i: usize| {
        let mut v = vec![KERNEL_DEFAULTS[i]];
        if d.fresh[i] != KERNEL_DEFAULTS[i] {
            v.push(d.fresh[i]);
        }
        v
    };
    json!({ "idle": of(IDLE), "interval": of(INTERVAL), "count": of(COUNT) })
}

/// Loads the programs for `s`, with the info map saying where and how they are attached.
fn build(s: &Settings, cg: &Cgroup, pin: Option<&Path>) -> Result<Built, String> {
    let defaults = program::node_defaults();
    let info = json!({
        "tool": "keepalive-shim",
        "version": env!("CARGO_PKG_VERSION"),
        "cgroup": cg.path,
        "cgroup_id": cg.id,
        "pin": pin,
        "pid": if pin.is_none() { Some(std::process::id()) } else { None },
        "attached_at": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "settings": settings_json(s),
        "not_a_programs_own": not_a_programs_own(&defaults),
    });
    let text = serde_json::to_vec(&info).map_err(|e| e.to_string())?;
    if text.len() >= INFO_SIZE {
        return Err("the settings do not fit the info map".into());
    }
    let info_map = sys::info_map(MAP_INFO, &text, INFO_SIZE)
        .map_err(|e| format!("cannot create the info map: {e}"))?;
    let storage = if program::needs_storage(s) {
        Some(
            sys::storage_map(MAP_MARKS)
                .map_err(|e| format!("cannot create the socket-storage map: {e}"))?,
        )
    } else {
        None
    };
    let counts = sys::counts_map(MAP_COUNTS, COUNTS_SIZE)
        .map_err(|e| format!("cannot create the counts map: {e}"))?;
    let maps = Maps {
        info: info_map.as_raw_fd(),
        storage: storage.as_ref().map(|m| m.as_raw_fd()),
        counts: Some(counts.as_raw_fd()),
    };
    let mut built = Built {
        progs: Vec::new(),
        summary: Vec::new(),
        counts,
    };
    let mut load = |prog_type, attach_type, name: &str, insns: Vec<Insn>| -> Result<(), String> {
        let loaded = sys::prog_load(prog_type, attach_type, name, &insns, true)
            .map_err(|e| format!("{name}: {e}"))?;
        built.summary.push(format!(
            "{}: {} instructions ({})",
            hook_name(attach_type),
            insns.len(),
            loaded.stats.unwrap_or_default()
        ));
        built.progs.push((attach_type, loaded.fd));
        Ok(())
    };
    load(
        sys::PROG_TYPE_SOCK_OPS,
        sys::ATTACH_CGROUP_SOCK_OPS,
        PROG_SOCK_OPS,
        program::sock_ops(s, &defaults, maps),
    )?;
    if let Some(insns) = program::setsockopt(s, maps) {
        load(
            sys::PROG_TYPE_CGROUP_SOCKOPT,
            sys::ATTACH_CGROUP_SETSOCKOPT,
            PROG_SETSOCKOPT,
            insns,
        )?;
    }
    // The maps live as long as the programs that use them; these descriptors can go.
    drop((info_map, storage));
    Ok(built)
}

/// One of keepalive-shim's links, as found in the kernel.
struct Found {
    link: OwnedFd,
    info: sys::LinkInfo,
    prog: sys::ProgInfo,
    /// The info map's JSON.
    meta: Value,
}

fn is_ours(prog: &sys::ProgInfo) -> bool {
    prog.name == PROG_SOCK_OPS || prog.name == PROG_SETSOCKOPT
}

/// What the counts map `map` holds.
fn read_counts(map: std::os::fd::RawFd) -> Option<FleetCounts> {
    let bytes = sys::map_lookup(map, COUNTS_SIZE).ok()?;
    let at = |i: usize| {
        bytes
            .get(8 * i..8 * i + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    Some(FleetCounts {
        connections_configured: at(program::COUNT_CONNECTIONS_CONFIGURED),
        accepted_configured: at(program::COUNT_ACCEPTED_CONFIGURED),
        connections_excluded: at(program::COUNT_EXCLUDED),
        options_left_to_program: std::array::from_fn(|i| at(program::COUNT_LEFT_TO_PROGRAM + i)),
        timed_out: at(program::COUNT_TIMED_OUT),
        aborted: at(program::COUNT_ABORTED),
    })
}

/// The counts of the attachment a program of ours belongs to (`None`: a program from before
/// fleet mode counted).
fn counts_of(prog: &sys::ProgInfo) -> Option<FleetCounts> {
    prog.map_ids.iter().find_map(|&id| {
        let map = sys::map_by_id(id).ok()?;
        if sys::map_name(map.as_raw_fd()).ok().as_deref() != Some(MAP_COUNTS) {
            return None;
        }
        read_counts(map.as_raw_fd())
    })
}

/// The info map's JSON of a program of ours.
fn meta_of(prog: &sys::ProgInfo) -> Value {
    for &id in &prog.map_ids {
        let Ok(map) = sys::map_by_id(id) else {
            continue;
        };
        if sys::map_name(map.as_raw_fd()).ok().as_deref() != Some(MAP_INFO) {
            continue;
        }
        if let Ok(bytes) = sys::map_lookup(map.as_raw_fd(), INFO_SIZE) {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            if let Ok(v) = serde_json::from_slice(&bytes[..end]) {
                return v;
            }
        }
    }
    Value::Null
}

/// Every cgroup link of keepalive-shim on this machine (`cgroup_id` 0: detached, still open).
fn our_links() -> Vec<Found> {
    let mut out = Vec::new();
    for id in sys::link_ids() {
        let Ok(link) = sys::link_by_id(id) else {
            continue;
        };
        let Ok(info) = sys::link_info(link.as_raw_fd()) else {
            continue;
        };
        if info.link_type != sys::LINK_TYPE_CGROUP {
            continue;
        }
        let Ok(prog_fd) = sys::prog_by_id(info.prog_id) else {
            continue;
        };
        let Ok(prog) = sys::prog_info(prog_fd.as_raw_fd()) else {
            continue;
        };
        if !is_ours(&prog) {
            continue;
        }
        let meta = meta_of(&prog);
        out.push(Found {
            link,
            info,
            prog,
            meta,
        });
    }
    out
}

/// Detaches `found`, and removes its pin when the pin is still this link.
fn remove(found: &Found) -> Result<(), String> {
    sys::link_detach(found.link.as_raw_fd())
        .map_err(|e| format!("cannot detach link {}: {e}", found.info.id))?;
    if let Some(dir) = found.meta["pin"].as_str() {
        let path = Path::new(dir).join(hook_name(found.info.attach_type));
        unpin_if(&path, found.info.id);
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Removes the pin at `path` if it is the link `id`.
fn unpin_if(path: &Path, id: u32) {
    if let Ok(link) = sys::obj_get(path.as_os_str())
        && sys::link_info(link.as_raw_fd()).is_ok_and(|i| i.id == id)
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Reads the configuration as the library does, printing its warnings; `Err` with the exit
/// status when attaching must not go on.
fn settings() -> Result<Settings, ExitCode> {
    let loaded = config::from_process();
    for problem in &loaded.problems {
        say!("warning: {problem}");
    }
    if loaded.rejected() {
        say!("KEEPALIVE_STRICT is on and the configuration has problems: nothing attached");
        return Err(ExitCode::from(EX_CONFIG as u8));
    }
    if !loaded.settings.enabled {
        say!(
            "keepalive-shim is disabled (KEEPALIVE_ENABLE): nothing to attach; `keepalive-shim \
             fleet detach` removes an attachment"
        );
        return Err(ExitCode::from(EX_CONFIG as u8));
    }
    Ok(loaded.settings)
}

fn preflight(s: &Settings, path: &Path, pin: Option<&Path>) -> Result<Cgroup, String> {
    let version =
        preflight::kernel().map_err(|e| format!("cannot read the kernel version: {e}"))?;
    if let Some(problem) = preflight::kernel_problem(version, s.force) {
        return Err(problem);
    }
    preflight::privileges()?;
    preflight::raise_memlock(version);
    let cg = preflight::cgroup(path)?;
    if let Some(dir) = pin {
        preflight::bpffs(dir)?;
    }
    Ok(cg)
}

/// `fleet attach`.
pub fn attach(path: &Path, pin: Option<&Path>, metrics: Option<SocketAddr>) -> ExitCode {
    let s = match settings() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cg = match preflight(&s, path, pin) {
        Ok(cg) => cg,
        Err(e) => return fail(e),
    };
    // Bound before anything is attached: an address in use stops here.
    let listener = match metrics
        .map(|a| crate::endpoint::listen(a, false))
        .transpose()
    {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let built = match build(&s, &cg, pin) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let existing: Vec<Found> = our_links()
        .into_iter()
        .filter(|f| f.info.cgroup_id == cg.id)
        .collect();
    let result = match pin {
        Some(dir) => attach_pinned(&cg, dir, &built, &existing),
        None => attach_held(&cg, &built, &existing),
    };
    let (links, kept) = match result {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let how = match pin {
        Some(dir) => format!(
            "pinned under {} (stays until `keepalive-shim fleet detach --pin {}`)",
            dir.display(),
            dir.display()
        ),
        None => "held by this process: detached when it stops".to_string(),
    };
    keepalive_shim_sys::output::out(format_args!("attached to {}, {how}", cg.path.display()));
    for line in &built.summary {
        keepalive_shim_sys::output::out(format_args!("  {line}"));
    }
    keepalive_shim_sys::output::out(format_args!("  settings: {}", describe(&settings_json(&s))));
    let ids = |in_place: bool| -> Vec<String> {
        existing
            .iter()
            .filter(|f| kept.contains(&f.info.id) == in_place)
            .map(|f| f.info.id.to_string())
            .collect()
    };
    let (updated, removed) = (ids(true), ids(false));
    if !updated.is_empty() {
        keepalive_shim_sys::output::out(format_args!(
            "  replaced the programs of the pinned links in place (link {})",
            updated.join(", ")
        ));
    }
    if !removed.is_empty() {
        keepalive_shim_sys::output::out(format_args!(
            "  detached keepalive-shim's earlier attachment (link {})",
            removed.join(", ")
        ));
    }
    if pin.is_some() {
        return ExitCode::SUCCESS;
    }
    hold(&cg, links, listener.map(|l| (l, built.counts)))
}

/// Attaches with links pinned under `dir`: a link already pinned there (for this cgroup) gets
/// the new program atomically; a hook the new settings do not need is detached; every other
/// keepalive-shim link on the cgroup is removed afterwards.
fn attach_pinned(
    cg: &Cgroup,
    dir: &Path,
    built: &Built,
    existing: &[Found],
) -> Result<(Vec<OwnedFd>, Vec<u32>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut kept = Vec::new();
    for (attach_type, file) in HOOKS {
        let path = dir.join(file);
        let new = built.progs.iter().find(|(t, _)| *t == attach_type);
        let old = pinned_link(&path, cg)?;
        match (new, old) {
            (Some((_, prog)), Some((link, info))) => {
                let old_prog = sys::prog_by_id(info.prog_id)
                    .map_err(|e| format!("program {}: {e}", info.prog_id))?;
                sys::link_update(link.as_raw_fd(), prog.as_raw_fd(), old_prog.as_raw_fd())
                    .map_err(|e| {
                        format!("cannot replace the program of {}: {e}", path.display())
                    })?;
                kept.push(info.id);
            }
            (Some((_, prog)), None) => {
                let link = sys::link_create(prog.as_raw_fd(), cg.fd(), attach_type)
                    .map_err(|e| format!("cannot attach to {}: {e}", cg.path.display()))?;
                sys::obj_pin(link.as_raw_fd(), path.as_os_str())
                    .map_err(|e| format!("cannot pin {}: {e}", path.display()))?;
                if let Ok(info) = sys::link_info(link.as_raw_fd()) {
                    kept.push(info.id);
                }
            }
            (None, Some((link, _))) => {
                let _ = sys::link_detach(link.as_raw_fd());
                let _ = std::fs::remove_file(&path);
            }
            (None, None) => {}
        }
    }
    for found in existing.iter().filter(|f| !kept.contains(&f.info.id)) {
        remove(found)?;
    }
    Ok((Vec::new(), kept))
}

/// The link pinned at `path`, if any and attached to `cg`. A pin of a link no longer attached
/// (its cgroup removed, or detached) is removed; one attached elsewhere is an error.
fn pinned_link(path: &Path, cg: &Cgroup) -> Result<Option<(OwnedFd, sys::LinkInfo)>, String> {
    if !path.exists() {
        return Ok(None);
    }
    let link = sys::obj_get(path.as_os_str()).map_err(|e| format!("{}: {e}", path.display()))?;
    let info = sys::link_info(link.as_raw_fd())
        .map_err(|e| format!("{} is not a link: {e}", path.display()))?;
    let ours = sys::prog_by_id(info.prog_id)
        .and_then(|p| sys::prog_info(p.as_raw_fd()))
        .is_ok_and(|p| is_ours(&p));
    if !ours {
        return Err(format!(
            "{} is not keepalive-shim's: choose another --pin directory",
            path.display()
        ));
    }
    if info.cgroup_id == 0 {
        let _ = std::fs::remove_file(path);
        return Ok(None);
    }
    if info.cgroup_id != cg.id {
        return Err(format!(
            "{} holds keepalive-shim's attachment to another cgroup (id {}): detach it or \
             choose another --pin directory",
            path.display(),
            info.cgroup_id
        ));
    }
    Ok(Some((link, info)))
}

/// Attaches with links this process holds; removes keepalive-shim's earlier links on the
/// cgroup once the new ones are in place.
fn attach_held(
    cg: &Cgroup,
    built: &Built,
    existing: &[Found],
) -> Result<(Vec<OwnedFd>, Vec<u32>), String> {
    let mut links = Vec::new();
    for (attach_type, prog) in &built.progs {
        let link = sys::link_create(prog.as_raw_fd(), cg.fd(), *attach_type)
            .map_err(|e| format!("cannot attach to {}: {e}", cg.path.display()))?;
        links.push(link);
    }
    for found in existing {
        remove(found)?;
    }
    Ok((links, Vec::new()))
}

/// The foreground: waits for SIGTERM, SIGINT or SIGHUP, checking every few seconds that the
/// links are still attached (another `fleet attach` or `fleet detach`, or the cgroup's
/// removal, ends them); then detaches and exits.
fn hold(cg: &Cgroup, links: Vec<OwnedFd>, metrics: Option<(TcpListener, OwnedFd)>) -> ExitCode {
    keepalive_shim_sys::output::out(format_args!(
        "running in the foreground; stop with SIGTERM or SIGINT"
    ));
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a live sigset_t; the signals are valid; blocking them in this
    // single-threaded process lets sigtimedwait take them.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // Started with the signals blocked, so the serving threads inherit the mask and this
    // thread alone takes them.
    if let Some((listener, counts)) = metrics {
        let cgroup = cg.path.display().to_string();
        let read: FleetSource = Box::new(move || {
            read_counts(counts.as_raw_fd())
                .map(|counts| FleetSeries {
                    cgroup: cgroup.clone(),
                    counts,
                })
                .into_iter()
                .collect()
        });
        std::thread::spawn(move || {
            crate::endpoint::serve(
                listener,
                keepalive_shim_observe::scrape::Budget {
                    series: DEFAULT_MAX_PROCESSES,
                    ..Default::default()
                },
                Some(read),
                Default::default(),
            )
        });
    }
    let every = Duration::from_secs(2);
    let timeout = libc::timespec {
        tv_sec: every.as_secs() as _,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: set and timeout are live; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            for link in &links {
                let _ = sys::link_detach(link.as_raw_fd());
            }
            keepalive_shim_sys::output::out(format_args!(
                "detached from {} (signal {sig})",
                cg.path.display()
            ));
            return ExitCode::SUCCESS;
        }
        let gone = links
            .iter()
            .any(|l| sys::link_info(l.as_raw_fd()).map_or(true, |i| i.cgroup_id == 0));
        if gone {
            say!(
                "the attachment to {} was removed (by `fleet detach`, another `fleet attach`, \
                 or the cgroup's removal); exiting",
                cg.path.display()
            );
            return ExitCode::SUCCESS;
        }
    }
}

/// `fleet detach`.
pub fn detach(path: Option<&Path>, pin: Option<&Path>) -> ExitCode {
    if let Err(e) = preflight::privileges() {
        return fail(e);
    }
    let mut done = Vec::new();
    if let Some(dir) = pin {
        for (_, file) in HOOKS {
            let p = dir.join(file);
            if !p.exists() {
                continue;
            }
            let link = match sys::obj_get(p.as_os_str()) {
                Ok(l) => l,
                Err(e) => return fail(format!("{}: {e}", p.display())),
            };
            let ours = sys::link_info(link.as_raw_fd())
                .and_then(|i| sys::prog_by_id(i.prog_id))
                .and_then(|p| sys::prog_info(p.as_raw_fd()))
                .is_ok_and(|p| is_ours(&p));
            // A link already detached (its cgroup gone) has no program left to check.
            let detached = sys::link_info(link.as_raw_fd()).is_ok_and(|i| i.cgroup_id == 0);
            if !ours && !detached {
                return fail(format!(
                    "{} is not keepalive-shim's; left alone",
                    p.display()
                ));
            }
            if let Err(e) = sys::link_detach(link.as_raw_fd()) {
                return fail(format!("cannot detach {}: {e}", p.display()));
            }
            let _ = std::fs::remove_file(&p);
            done.push(format!("detached {}", p.display()));
        }
        let _ = std::fs::remove_dir(dir);
    }
    if let Some(path) = path {
        let cg = match preflight::cgroup(path) {
            Ok(cg) => cg,
            Err(e) => return fail(e),
        };
        for found in our_links().iter().filter(|f| f.info.cgroup_id == cg.id) {
            if let Err(e) = remove(found) {
                return fail(e);
            }
            done.push(format!(
                "detached {} from {} (link {})",
                hook_name(found.info.attach_type),
                cg.path.display(),
                found.info.id
            ));
        }
        // Programs of ours attached without a link (by another tool).
        for (attach_type, hook) in HOOKS {
            for id in sys::prog_query(cg.fd(), attach_type).unwrap_or_default() {
                let Ok(prog) = sys::prog_by_id(id) else {
                    continue;
                };
                if !sys::prog_info(prog.as_raw_fd()).is_ok_and(|p| is_ours(&p)) {
                    continue;
                }
                if sys::prog_detach(prog.as_raw_fd(), cg.fd(), attach_type).is_ok() {
                    done.push(format!(
                        "detached {hook} program {id} from {}",
                        cg.path.display()
                    ));
                }
            }
        }
    }
    if done.is_empty() {
        keepalive_shim_sys::output::out(format_args!(
            "nothing of keepalive-shim's was attached there"
        ));
    }
    for line in done {
        keepalive_shim_sys::output::out(format_args!("{line}"));
    }
    ExitCode::SUCCESS
}

/// The settings in a line: `idle 30s, interval 10s, count 3, user timeout 60s (derived), …`.
fn describe(s: &Value) -> String {
    let ms = s["user_timeout_ms"].as_u64().unwrap_or(0) as u32;
    let explicit = s["user_timeout_explicit"].as_bool().unwrap_or(false);
    let mut text = format!(
        "idle {}s, interval {}s, count {}, user timeout {}{}, force {}",
        s["idle_s"],
        s["interval_s"],
        s["count"],
        config::show_ms(ms),
        if explicit { "" } else { " (derived)" },
        if s["force"].as_bool().unwrap_or(false) {
            "on"
        } else {
            "off"
        }
    );
    for key in ["exclude", "include"] {
        if let Some(r) = s[key].as_str().filter(|r| *r != "none") {
            text.push_str(&format!(", {key} {r}"));
        }
    }
    text
}

/// `fleet status`.
pub fn status(path: Option<&Path>, as_json: bool) -> ExitCode {
    if let Err(e) = preflight::privileges() {
        return fail(e);
    }
    let cg = match path.map(preflight::cgroup).transpose() {
        Ok(cg) => cg,
        Err(e) => return fail(e),
    };
    // Which cgroup IDs to show, and what each is to the one asked about.
    let mut wanted: BTreeMap<u64, String> = BTreeMap::new();
    if let Some(cg) = &cg {
        wanted.insert(cg.id, "this cgroup".into());
        for (id, p) in cg.ancestors() {
            wanted.insert(id, format!("inherited from {}", p.display()));
        }
    }
    let found: Vec<Found> = our_links()
        .into_iter()
        .filter(|f| cg.is_none() || wanted.contains_key(&f.info.cgroup_id))
        .collect();
    let rows: Vec<Value> = found
        .iter()
        .map(|f| {
            json!({
                "cgroup": f.meta["cgroup"],
                "cgroup_id": f.info.cgroup_id,
                "attached": f.info.cgroup_id != 0,
                "relation": wanted.get(&f.info.cgroup_id),
                "hook": hook_name(f.info.attach_type),
                "link_id": f.info.id,
                "prog_id": f.prog.id,
                "prog_name": f.prog.name,
                "instructions": f.prog.xlated_insns,
                "pin": f.meta["pin"],
                "pid": f.meta["pid"],
                "settings": f.meta["settings"],
                "attached_at": f.meta["attached_at"],
                // The attachment's, shared by its programs.
                "counts": counts_of(&f.prog).map(|c| c.json()),
            })
        })
        .collect();
    let others = cg.as_ref().map(other_programs).unwrap_or_default();
    if as_json {
        keepalive_shim_sys::output::out(format_args!("{}", Value::Array(rows)));
        return ExitCode::SUCCESS;
    }
    if rows.is_empty() {
        match &cg {
            Some(cg) => keepalive_shim_sys::output::out(format_args!(
                "No keepalive-shim program is attached to {} or above it.",
                cg.path.display()
            )),
            None => keepalive_shim_sys::output::out(format_args!(
                "No keepalive-shim program is attached on this machine."
            )),
        }
    }
    let mut by_cgroup: BTreeMap<(u64, String), Vec<&Value>> = BTreeMap::new();
    for r in &rows {
        let name = r["cgroup"].as_str().unwrap_or("?").to_string();
        by_cgroup
            .entry((r["cgroup_id"].as_u64().unwrap_or(0), name))
            .or_default()
            .push(r);
    }
    for ((id, name), rows) in by_cgroup {
        let state = if id == 0 {
            // A link detached from its cgroup: the cgroup removed, or the link replaced by
            // another attachment or `fleet detach` while its holder still runs.
            if Path::new(&name).exists() {
                " — detached (replaced or detached by another command), still held".to_string()
            } else {
                " — detached (the cgroup was removed), still held".to_string()
            }
        } else {
            rows[0]["relation"]
                .as_str()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        };
        keepalive_shim_sys::output::out(format_args!("{name} (cgroup id {id}){state}"));
        for r in &rows {
            let held = match (r["pin"].as_str(), r["pid"].as_u64()) {
                (Some(pin), _) => format!("pinned under {pin}"),
                (None, Some(pid)) => format!("held by process {pid}"),
                _ => "held".to_string(),
            };
            keepalive_shim_sys::output::out(format_args!(
                "  {:<11} link {:<5} program {:<5} {} instructions, {held}",
                r["hook"].as_str().unwrap_or("?"),
                r["link_id"],
                r["prog_id"],
                r["instructions"]
            ));
        }
        keepalive_shim_sys::output::out(format_args!(
            "  settings: {}",
            describe(&rows[0]["settings"])
        ));
        if let Some(c) = rows.iter().find_map(|r| r["counts"].as_object()) {
            let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
            let own: Vec<String> = c
                .get("options_left_to_program")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect()
                })
                .unwrap_or_default();
            keepalive_shim_sys::output::out(format_args!(
                "  counted: {} outgoing and {} accepted connections configured, {} excluded; \
                 options left to the program: {}",
                n("connections_configured"),
                n("accepted_connections_configured"),
                n("connections_excluded"),
                if own.is_empty() {
                    "0".to_owned()
                } else {
                    own.join(", ")
                }
            ));
            keepalive_shim_sys::output::out(format_args!(
                "  ended: {} by a retransmission timeout (exact), {} aborted from established \
                 (keepalive probes unanswered, or a reset: not told apart)",
                n("connections_timed_out"),
                n("connections_aborted")
            ));
        }
    }
    for line in others {
        keepalive_shim_sys::output::out(format_args!("{line}"));
    }
    ExitCode::SUCCESS
}

/// Other programs attached to `cg` itself on the same hooks, named: they run alongside ours.
fn other_programs(cg: &Cgroup) -> Vec<String> {
    let mut out = Vec::new();
    for (attach_type, hook) in HOOKS {
        for id in sys::prog_query(cg.fd(), attach_type).unwrap_or_default() {
            let Ok(prog) = sys::prog_by_id(id) else {
                continue;
            };
            let Ok(info) = sys::prog_info(prog.as_raw_fd()) else {
                continue;
            };
            if !is_ours(&info) {
                out.push(format!(
                    "also attached to {} ({hook}, not keepalive-shim's): program {id} {:?}",
                    cg.path.display(),
                    info.name
                ));
            }
        }
    }
    out
}
