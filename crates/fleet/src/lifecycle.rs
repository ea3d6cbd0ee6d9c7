//! Attaching, replacing, detaching and listing, so that an operator can reason about what runs
//! where:
//!
//! - Every program and map of keepalive-shim is named `kas_…`; each program carries an info map
//!   (`kas_info`: the settings, the cgroup, the pin directory or the attaching process, as JSON,
//!   frozen), so `status` finds everything from the kernel alone.
//! - Attachments are links (`BPF_LINK_CREATE`). In the foreground the process holds them: they
//!   end with it, however it ends (the kernel releases a link when its last holder closes it).
//!   With `--pin DIR` they are pinned as `DIR/sock_ops` and `DIR/setsockopt` and outlive the
//!   process.
//! - Attaching again takes over, never stacks, and leaves no gap: the link of each hook already
//!   on the cgroup gets the new program atomically (`BPF_LINK_UPDATE`), so every connection is
//!   seen by exactly one of keepalive-shim's programs, the old or the new; the new process
//!   holds (or pins) the link, and the socket marks and the counts carry over (the new
//!   programs use the same maps when their layout is the same). The earlier holder notices,
//!   lets go of the links and only waits to be stopped (a DaemonSet's surge pod does not
//!   restart, and its exit detaches nothing).
//! - Only the cgroup given is touched, and of its programs only keepalive-shim's.
//! - Each attachment counts in its own map (`kas_cgcounts`, program/mod.rs `COUNT_*`), by the
//!   connection's own cgroup (counts.rs), shared by its two programs: `status` shows it, and
//!   `attach --metrics ADDR:PORT` serves it (with what `keepalive-shim metrics` serves) while
//!   it holds the attachment.

use super::counts;
use super::insn::Insn;
use super::preflight::{self, Cgroup};
use super::program::{self, Maps, Target};
use super::{btf, sys};
use keepalive_shim_observe::fleet::{FleetSeries, FleetSource};
use keepalive_shim_policy::config::{self, EX_CONFIG, Settings};
use keepalive_shim_policy::decide::{Defaults, KERNEL_DEFAULTS};
use keepalive_shim_policy::options::{COUNT, IDLE, INTERVAL};
use keepalive_shim_sys::say;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const PROG_SOCK_OPS: &str = "kas_sock_ops";
pub const PROG_SETSOCKOPT: &str = "kas_setsockopt";
const MAP_INFO: &str = "kas_info";
const MAP_MARKS: &str = "kas_marks";
/// The counts by cgroup (a per-CPU hash; earlier versions had one array, `kas_counts`).
const MAP_COUNTS: &str = "kas_cgcounts";
/// Cgroups the counts map holds at most, besides the entries for what did not fit and what is
/// gone.
const MAX_CGROUPS: u32 = 1024;
/// `BPF_MAP_TYPE_SK_STORAGE`, to recognise a marks map to carry over.
const MAP_TYPE_SK_STORAGE: u32 = 24;
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
    progs: Programs,
    /// What `attach` prints of each: hook, instructions, the verifier's statistics.
    summary: Vec<String>,
    /// The counts map, for `--metrics`.
    counts: OwnedFd,
    /// What was carried over from the attachment taken over.
    carried: Vec<&'static str>,
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

/// A map of the attachment taken over that the new programs can use as theirs (same name, type
/// and sizes).
fn carry_over(existing: &[Found], want: &sys::MapInfo) -> Option<OwnedFd> {
    existing
        .iter()
        .find_map(|f| map_where(&f.prog, |info| info == want))
}

/// The first map of `prog` whose [`sys::MapInfo`] passes `test`.
fn map_where(prog: &sys::ProgInfo, test: impl Fn(&sys::MapInfo) -> bool) -> Option<OwnedFd> {
    prog.map_ids.iter().find_map(|&id| {
        let map = sys::map_by_id(id).ok()?;
        test(&sys::map_info(map.as_raw_fd()).ok()?).then_some(map)
    })
}

/// The map of `prog` named `name`.
fn map_named(prog: &sys::ProgInfo, name: &str) -> Option<OwnedFd> {
    map_where(prog, |info| info.name == name)
}

/// Loads the programs for `s`, with the info map saying where and how they are attached; the
/// marks and counts of an attachment in `existing` carry over when their layout is the same.
fn build(
    s: &Settings,
    cg: &Cgroup,
    pin: Option<&Path>,
    existing: &[Found],
) -> Result<Built, String> {
    let defaults = program::node_defaults();
    let layout = btf::kernel_layout();
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
    let mut carried = Vec::new();
    let storage = if program::needs_storage(s) {
        let marks = sys::MapInfo {
            map_type: MAP_TYPE_SK_STORAGE,
            key_size: 4,
            value_size: 4,
            max_entries: 0,
            name: MAP_MARKS.to_owned(),
        };
        match carry_over(existing, &marks) {
            Some(m) => {
                carried.push("the socket marks");
                Some(m)
            }
            None => Some(
                sys::storage_map(MAP_MARKS)
                    .map_err(|e| format!("cannot create the socket-storage map: {e}"))?,
            ),
        }
    } else {
        None
    };
    let counts_info = sys::MapInfo {
        map_type: sys::MAP_TYPE_PERCPU_HASH,
        key_size: 8,
        value_size: counts::VALUE_SIZE as u32,
        max_entries: MAX_CGROUPS + 2,
        name: MAP_COUNTS.to_owned(),
    };
    let counts = match carry_over(existing, &counts_info) {
        Some(m) => {
            carried.push("the counts");
            m
        }
        None => sys::counts_map(
            MAP_COUNTS,
            counts::VALUE_SIZE,
            MAX_CGROUPS + 2,
            program::OTHER_KEY,
        )
        .map_err(|e| format!("cannot create the counts map: {e}"))?,
    };
    let maps = Maps {
        info: info_map.as_raw_fd(),
        storage: storage.as_ref().map(|m| m.as_raw_fd()),
        counts: Some(counts.as_raw_fd()),
    };
    // With what the kernel's BTF says; a kernel whose verifier refuses what that needs gets the
    // programs every kernel takes (read back, counted under the attached cgroup).
    let (progs, mut summary, layout) = match load_programs(s, &defaults, maps, layout, cg.id) {
        Ok((progs, summary)) => (progs, summary, layout),
        Err(e) if layout != btf::Layout::NONE => {
            let (progs, mut summary) = load_programs(s, &defaults, maps, btf::Layout::NONE, cg.id)?;
            let first = e.lines().next().unwrap_or_default().to_owned();
            summary.push(format!(
                "this kernel refused the programs that read the socket through BTF ({first}); \
                 attached the ones that read its options back"
            ));
            (progs, summary, btf::Layout::NONE)
        }
        Err(e) => return Err(e),
    };
    summary.push(if layout.cgroup.is_some() {
        "counts: by the connection's own cgroup".to_owned()
    } else {
        "counts: all under the attached cgroup (the programs cannot read a socket's own cgroup \
         on this kernel: it needs BTF, CONFIG_DEBUG_INFO_BTF)"
            .to_owned()
    });
    // The maps live as long as the programs that use them; these descriptors can go.
    drop((info_map, storage));
    Ok(Built {
        progs,
        summary,
        counts,
        carried,
    })
}

/// Loaded programs, by attach type.
type Programs = Vec<(u32, OwnedFd)>;

/// Loads the sock_ops program and, when it has work, the setsockopt program: (attach type,
/// program) each, and what `attach` prints of them (instructions, the verifier's statistics).
fn load_programs(
    s: &Settings,
    defaults: &Defaults,
    maps: Maps,
    layout: btf::Layout,
    cgroup: u64,
) -> Result<(Programs, Vec<String>), String> {
    let target = Target { layout, cgroup };
    let mut progs = Vec::new();
    let mut summary = Vec::new();
    let mut load = |prog_type, attach_type, name: &str, insns: Vec<Insn>| -> Result<(), String> {
        let loaded = sys::prog_load(prog_type, attach_type, name, &insns, true)
            .map_err(|e| format!("{name}: {e}"))?;
        summary.push(format!(
            "{}: {} instructions ({})",
            hook_name(attach_type),
            insns.len(),
            loaded.stats.unwrap_or_default()
        ));
        progs.push((attach_type, loaded.fd));
        Ok(())
    };
    load(
        sys::PROG_TYPE_SOCK_OPS,
        sys::ATTACH_CGROUP_SOCK_OPS,
        PROG_SOCK_OPS,
        program::sock_ops(s, defaults, maps, target),
    )?;
    if let Some(insns) = program::setsockopt(s, maps, target) {
        load(
            sys::PROG_TYPE_CGROUP_SOCKOPT,
            sys::ATTACH_CGROUP_SETSOCKOPT,
            PROG_SETSOCKOPT,
            insns,
        )?;
    }
    Ok((progs, summary))
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

/// The counts map of an attachment a program of ours belongs to, by series (`None`: a
/// program from a version that counted otherwise). `root` is the attached cgroup, named by
/// the info map, and walked only if it is still the cgroup `id`.
fn counts_of(prog: &sys::ProgInfo, root: Option<&str>, id: u64) -> Option<Vec<counts::Series>> {
    let map = map_named(prog, MAP_COUNTS)?;
    let root = root
        .map(Path::new)
        .filter(|r| std::fs::metadata(r).is_ok_and(|m| m.ino() == id));
    counts::read(map.as_raw_fd(), root).ok()
}

/// The info map's JSON of a program of ours.
fn meta_of(prog: &sys::ProgInfo) -> Value {
    let Some(map) = map_named(prog, MAP_INFO) else {
        return Value::Null;
    };
    let Ok(bytes) = sys::map_lookup(map.as_raw_fd(), INFO_SIZE) else {
        return Value::Null;
    };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    serde_json::from_slice(&bytes[..end]).unwrap_or(Value::Null)
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
    if pinned_as(path, id) {
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
/// Serves the attachment's counts (with the node's) over HTTP on a listener the command bound
/// before anything was attached: called once, on a thread of its own, while this process holds
/// the attachment in the foreground.
pub type MetricsServer = Box<dyn FnOnce(FleetSource) + Send>;

/// `fleet attach`: builds, loads and attaches the programs (taking over keepalive-shim's own on
/// that cgroup without a gap), then returns when pinned, or holds them in the foreground.
pub fn attach(path: &Path, pin: Option<&Path>, metrics: Option<MetricsServer>) -> ExitCode {
    let s = match settings() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cg = match preflight(&s, path, pin) {
        Ok(cg) => cg,
        Err(e) => return fail(e),
    };
    let existing: Vec<Found> = our_links()
        .into_iter()
        .filter(|f| f.info.cgroup_id == cg.id)
        .collect();
    let built = match build(&s, &cg, pin, &existing) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let (links, said) = match take_over(&cg, pin, &built, existing) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let how = match pin {
        Some(dir) => format!(
            "pinned under {} (stays until `keepalive-shim fleet detach --pin {}`)",
            dir.display(),
            dir.display()
        ),
        None => {
            "held by this process: detached when it stops (unless another attach takes it over)"
                .to_string()
        }
    };
    keepalive_shim_sys::output::out(format_args!("attached to {}, {how}", cg.path.display()));
    for line in &built.summary {
        keepalive_shim_sys::output::out(format_args!("  {line}"));
    }
    keepalive_shim_sys::output::out(format_args!("  settings: {}", describe(&settings_json(&s))));
    for line in said {
        keepalive_shim_sys::output::out(format_args!("  {line}"));
    }
    if !built.carried.is_empty() {
        keepalive_shim_sys::output::out(format_args!(
            "  carried over from the attachment taken over: {}",
            built.carried.join(" and ")
        ));
    }
    if pin.is_some() {
        return ExitCode::SUCCESS;
    }
    let ours: Vec<u32> = built
        .progs
        .iter()
        .filter_map(|(_, p)| sys::prog_info(p.as_raw_fd()).ok().map(|i| i.id))
        .collect();
    hold(&cg, links, ours, metrics.map(|m| (m, built.counts)))
}

/// The link at `path`, when it is pinned there and is link `id`.
fn pinned_as(path: &Path, id: u32) -> bool {
    sys::obj_get(path.as_os_str())
        .and_then(|l| sys::link_info(l.as_raw_fd()))
        .is_ok_and(|i| i.id == id)
}

/// Puts the new programs on the cgroup without a gap: for each hook, keepalive-shim's link
/// already there gets the new program atomically (`BPF_LINK_UPDATE`), or a new link is made;
/// then each link is held by this process (`pin` none: an earlier pin is removed, this
/// process's descriptor keeps the link) or pinned under `pin`; last, the links of hooks the new
/// settings do not need, and any second link of a hook, are detached. Returns the links this
/// process holds and what it did, in words.
fn take_over(
    cg: &Cgroup,
    pin: Option<&Path>,
    built: &Built,
    existing: Vec<Found>,
) -> Result<(Vec<OwnedFd>, Vec<String>), String> {
    if let Some(dir) = pin {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (_, file) in HOOKS {
            let path = dir.join(file);
            if path.exists() {
                check_pin(&path, cg)?;
            }
        }
    }
    let mut held = Vec::new();
    let mut said = Vec::new();
    let mut rest: Vec<Found> = existing;
    for (attach_type, file) in HOOKS {
        let new = built.progs.iter().find(|(t, _)| *t == attach_type);
        let Some((_, prog)) = new else { continue };
        let old = rest
            .iter()
            .position(|f| f.info.attach_type == attach_type)
            .map(|i| rest.remove(i));
        let (link, id) = match old {
            Some(old) => {
                let old_prog = sys::prog_by_id(old.info.prog_id)
                    .map_err(|e| format!("program {}: {e}", old.info.prog_id))?;
                sys::link_update(old.link.as_raw_fd(), prog.as_raw_fd(), old_prog.as_raw_fd())
                    .map_err(|e| {
                        format!("cannot replace the program of link {}: {e}", old.info.id)
                    })?;
                let from = match (old.meta["pin"].as_str(), old.meta["pid"].as_u64()) {
                    (Some(dir), _) => format!("pinned under {dir}"),
                    (None, Some(pid)) => format!("held by process {pid}"),
                    _ => "held elsewhere".to_owned(),
                };
                said.push(format!(
                    "{file}: took over link {} ({from}), its program replaced in place",
                    old.info.id
                ));
                // Only this attachment keeps it from now on: an earlier pin elsewhere goes.
                if let Some(old_dir) = old.meta["pin"].as_str() {
                    let old_path = Path::new(old_dir).join(file);
                    if pin.is_none_or(|d| d.join(file) != old_path) {
                        unpin_if(&old_path, old.info.id);
                        let _ = std::fs::remove_dir(old_dir);
                    }
                }
                (old.link, old.info.id)
            }
            None => {
                let link = sys::link_create(prog.as_raw_fd(), cg.fd(), attach_type)
                    .map_err(|e| format!("cannot attach to {}: {e}", cg.path.display()))?;
                let id = sys::link_info(link.as_raw_fd()).map_or(0, |i| i.id);
                (link, id)
            }
        };
        match pin {
            Some(dir) => {
                let path = dir.join(file);
                if !pinned_as(&path, id) {
                    let _ = std::fs::remove_file(&path);
                    sys::obj_pin(link.as_raw_fd(), path.as_os_str())
                        .map_err(|e| format!("cannot pin {}: {e}", path.display()))?;
                }
            }
            None => held.push(link),
        }
    }
    // What the new settings do not need, and anything stacked by other versions.
    for found in &rest {
        remove(found)?;
        said.push(format!(
            "{}: detached link {} (not needed by these settings, or a second one)",
            hook_name(found.info.attach_type),
            found.info.id
        ));
    }
    if let Some(dir) = pin {
        for (attach_type, file) in HOOKS {
            if !built.progs.iter().any(|(t, _)| *t == attach_type) {
                let path = dir.join(file);
                if path.exists() {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    Ok((held, said))
}

/// A pin at `path` must be keepalive-shim's link to `cg` (or one left detached, removed here).
fn check_pin(path: &Path, cg: &Cgroup) -> Result<(), String> {
    let link = sys::obj_get(path.as_os_str()).map_err(|e| format!("{}: {e}", path.display()))?;
    let info = sys::link_info(link.as_raw_fd())
        .map_err(|e| format!("{} is not a link: {e}", path.display()))?;
    if info.cgroup_id == 0 {
        let _ = std::fs::remove_file(path);
        return Ok(());
    }
    let ours = sys::prog_by_id(info.prog_id)
        .and_then(|p| sys::prog_info(p.as_raw_fd()))
        .is_ok_and(|p| is_ours(&p));
    if !ours {
        return Err(format!(
            "{} is not keepalive-shim's: choose another --pin directory",
            path.display()
        ));
    }
    if info.cgroup_id != cg.id {
        return Err(format!(
            "{} holds keepalive-shim's attachment to another cgroup (id {}): detach it or \
             choose another --pin directory",
            path.display(),
            info.cgroup_id
        ));
    }
    Ok(())
}

/// The foreground: waits for SIGTERM, SIGINT or SIGHUP, checking every second that the links
/// still run this process's programs. Another `fleet attach` taking over (a rolling update's
/// new pod) gets a line, and this process lets go of the links and only waits to be stopped;
/// `fleet detach` or the cgroup's removal ends it. Whatever stops it, it detaches nothing
/// itself: the kernel releases a link when its last holder closes it, so the links go with this
/// process unless another attachment holds them.
fn hold(
    cg: &Cgroup,
    mut links: Vec<OwnedFd>,
    ours: Vec<u32>,
    metrics: Option<(MetricsServer, OwnedFd)>,
) -> ExitCode {
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
    // Whether this process still holds the attachment: its metrics show the counts only then
    // (the process that took over shows them, from the same map).
    let holding = Arc::new(AtomicBool::new(true));
    // Started with the signals blocked, so the serving threads inherit the mask and this
    // thread alone takes them.
    if let Some((serve, counts)) = metrics {
        let cgroup = cg.path.display().to_string();
        let root = cg.path.clone();
        let holding = Arc::clone(&holding);
        let read: FleetSource = Box::new(move || {
            if !holding.load(Ordering::Relaxed) {
                return Vec::new();
            }
            counts::read(counts.as_raw_fd(), Some(&root))
                .unwrap_or_default()
                .into_iter()
                .map(|s| FleetSeries {
                    cgroup: cgroup.clone(),
                    path: s.path,
                    pod_uid: s.pod_uid,
                    folded: s.folded.map(str::to_owned),
                    counts: s.counts,
                })
                .collect()
        });
        std::thread::spawn(move || serve(read));
    }
    let every = Duration::from_secs(1);
    let timeout = libc::timespec {
        tv_sec: every.as_secs() as _,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: set and timeout are live; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            let what = if links.is_empty() {
                "stopped (the attachment had been taken over: nothing detached)"
            } else {
                "detached"
            };
            keepalive_shim_sys::output::out(format_args!(
                "{what} from {} (signal {sig})",
                cg.path.display()
            ));
            return ExitCode::SUCCESS;
        }
        if links.is_empty() {
            continue;
        }
        let infos: Vec<Option<sys::LinkInfo>> = links
            .iter()
            .map(|l| sys::link_info(l.as_raw_fd()).ok())
            .collect();
        if infos
            .iter()
            .any(|i| i.as_ref().is_none_or(|i| i.cgroup_id == 0))
        {
            say!(
                "the attachment to {} was removed (by `fleet detach`, or the cgroup's removal); \
                 exiting",
                cg.path.display()
            );
            return ExitCode::SUCCESS;
        }
        let taken = infos.iter().flatten().find(|i| !ours.contains(&i.prog_id));
        if let Some(taken) = taken {
            let by = sys::prog_by_id(taken.prog_id)
                .ok()
                .and_then(|p| sys::prog_info(p.as_raw_fd()).ok())
                .map(|p| meta_of(&p))
                .map(|m| match (m["pin"].as_str(), m["pid"].as_u64()) {
                    (Some(dir), _) => format!("pinned under {dir}"),
                    (None, Some(pid)) => format!("process {pid}"),
                    _ => "another attachment".to_owned(),
                })
                .unwrap_or_else(|| "another program".to_owned());
            holding.store(false, Ordering::Relaxed);
            links.clear();
            keepalive_shim_sys::output::out(format_args!(
                "the attachment to {} was taken over by {by} (its programs now run on these \
                 links); this process holds nothing now and waits to be stopped",
                cg.path.display()
            ));
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
    // The counts of each attachment, read once (both hooks' programs share the map).
    let mut by_attachment: BTreeMap<u64, Value> = BTreeMap::new();
    for f in &found {
        if by_attachment.contains_key(&f.info.cgroup_id) {
            continue;
        }
        let series = counts_of(&f.prog, f.meta["cgroup"].as_str(), f.info.cgroup_id);
        by_attachment.insert(f.info.cgroup_id, series.map_or(Value::Null, series_json));
    }
    let rows: Vec<Value> = found
        .iter()
        .map(|f| {
            let counted = &by_attachment[&f.info.cgroup_id];
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
                // The attachment's, shared by its programs: the totals, and by cgroup.
                "counts": counted["total"],
                "by_cgroup": counted["by_cgroup"],
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
        if let Some(list) = rows.iter().find_map(|r| r["by_cgroup"].as_array()) {
            keepalive_shim_sys::output::out(format_args!(
                "  by cgroup (outgoing, accepted, excluded, timed out, aborted):"
            ));
            for (shown, c) in list.iter().enumerate() {
                if shown == STATUS_CGROUPS {
                    keepalive_shim_sys::output::out(format_args!(
                        "    … and {} more (`fleet status --json` lists them all)",
                        list.len() - shown
                    ));
                    break;
                }
                let n = |k: &str| c["counts"][k].as_u64().unwrap_or(0);
                let nothing = [
                    "connections_configured",
                    "accepted_connections_configured",
                    "connections_excluded",
                    "connections_timed_out",
                    "connections_aborted",
                ]
                .iter()
                .all(|k| n(k) == 0);
                if c["folded"].is_string() && nothing {
                    continue;
                }
                let name = match (c["path"].as_str(), c["folded"].as_str()) {
                    (Some(p), _) => p.to_owned(),
                    (None, Some(f)) => format!("({f})"),
                    _ => "?".to_owned(),
                };
                let pod = c["pod_uid"]
                    .as_str()
                    .map(|u| format!(" [pod {u}]"))
                    .unwrap_or_default();
                keepalive_shim_sys::output::out(format_args!(
                    "    {name}{pod}: {} {} {} {} {}",
                    n("connections_configured"),
                    n("accepted_connections_configured"),
                    n("connections_excluded"),
                    n("connections_timed_out"),
                    n("connections_aborted")
                ));
            }
        }
    }
    for line in others {
        keepalive_shim_sys::output::out(format_args!("{line}"));
    }
    ExitCode::SUCCESS
}

/// How many cgroups `fleet status` lists per attachment (`--json` lists all).
const STATUS_CGROUPS: usize = 50;

/// An attachment's counts for `fleet status --json`: `total`, and `by_cgroup` (each with its
/// `path` relative to the attached cgroup and `pod_uid`, or `folded`).
fn series_json(series: Vec<counts::Series>) -> Value {
    let total = counts::total(&series).json();
    let by_cgroup: Vec<Value> = series
        .into_iter()
        .map(|s| {
            json!({
                "path": s.path,
                "pod_uid": s.pod_uid,
                "folded": s.folded,
                "counts": s.counts.json(),
            })
        })
        .collect();
    json!({ "total": total, "by_cgroup": by_cgroup })
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
