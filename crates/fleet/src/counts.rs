//! What the programs counted, by cgroup: the counts map (a per-CPU hash from a cgroup's ID to
//! its counters, program/mod.rs `COUNT_*`) read and summed over the CPUs, each ID named by its path
//! below the attached cgroup (found by walking that directory tree: on cgroup v2 a cgroup's ID
//! is its directory's inode number), and, where the path names a Kubernetes pod, the pod's UID.
//!
//! The number of series is bounded twice: the map holds at most `fleet attach --max-cgroups`
//! cgroups (what does not fit is counted under one "other" entry, by the programs), and a
//! cgroup that is gone is folded into one "gone" entry when the map is read (under a lock on
//! the attached cgroup's directory, so two readers never fold it twice), so its counts stay in
//! the attachment's totals and its series ends. The walk is bounded too (directories, depth),
//! names are taken as the bytes they are (shown lossily), and nothing is followed: a cgroup
//! file system has no links, and the walk opens only directories.

use super::program::{self, COUNTERS, GONE_KEY, OTHER_KEY};
use super::sys;
use keepalive_shim_observe::fleet::FleetCounts;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The counters of one key of the map: a u64 each.
pub const VALUE_SIZE: usize = 8 * COUNTERS;
/// Directories the walk visits at most, and how deep it goes.
const MAX_DIRS: usize = 20_000;
const MAX_DEPTH: usize = 32;

/// One series: a cgroup below the attached one (or it), or a folded entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    /// Its path relative to the attached cgroup (`.` for the attached cgroup itself); `None`
    /// for a folded entry.
    pub path: Option<String>,
    /// The Kubernetes pod its path names.
    pub pod_uid: Option<String>,
    /// `other` (the map was full at its first event) or `gone` (cgroups removed since).
    pub folded: Option<&'static str>,
    pub counts: FleetCounts,
}

fn counts_from(sum: &[u64; COUNTERS]) -> FleetCounts {
    FleetCounts {
        connections_configured: sum[program::COUNT_CONNECTIONS_CONFIGURED],
        accepted_configured: sum[program::COUNT_ACCEPTED_CONFIGURED],
        connections_excluded: sum[program::COUNT_EXCLUDED],
        options_left_to_program: std::array::from_fn(|i| sum[program::COUNT_LEFT_TO_PROGRAM + i]),
        timed_out: sum[program::COUNT_TIMED_OUT],
        aborted: sum[program::COUNT_ABORTED],
    }
}

/// Every CPU's counters of one key, one after another, summed.
fn sum(bytes: &[u8]) -> [u64; COUNTERS] {
    let mut out = [0u64; COUNTERS];
    for cpu in bytes.chunks_exact(VALUE_SIZE) {
        for (i, v) in cpu.chunks_exact(8).enumerate() {
            out[i] = out[i].wrapping_add(u64::from_ne_bytes(v.try_into().unwrap_or_default()));
        }
    }
    out
}

/// The attachment's totals: every series added up.
pub fn total(series: &[Series]) -> FleetCounts {
    let mut t = [0u64; COUNTERS];
    for s in series {
        let c = &s.counts;
        let mut add = |i: usize, v: u64| t[i] = t[i].wrapping_add(v);
        add(
            program::COUNT_CONNECTIONS_CONFIGURED,
            c.connections_configured,
        );
        add(program::COUNT_ACCEPTED_CONFIGURED, c.accepted_configured);
        add(program::COUNT_EXCLUDED, c.connections_excluded);
        for (i, v) in c.options_left_to_program.iter().enumerate() {
            add(program::COUNT_LEFT_TO_PROGRAM + i, *v);
        }
        add(program::COUNT_TIMED_OUT, c.timed_out);
        add(program::COUNT_ABORTED, c.aborted);
    }
    counts_from(&t)
}

/// The cgroups below `root` (and it, as `.`) whose IDs are in `wanted`, by ID; `complete` when
/// the walk saw the whole tree (so an ID not found is gone).
fn walk(root: &Path, wanted: &[u64]) -> (BTreeMap<u64, String>, bool) {
    let mut found = BTreeMap::new();
    let mut queue: VecDeque<(PathBuf, String, usize)> = VecDeque::new();
    queue.push_back((root.to_path_buf(), ".".to_owned(), 0));
    let mut visited = 0;
    while let Some((dir, rel, depth)) = queue.pop_front() {
        if found.len() == wanted.len() {
            return (found, true);
        }
        visited += 1;
        if visited > MAX_DIRS {
            return (found, false);
        }
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if wanted.contains(&meta.ino()) {
            found.insert(meta.ino(), rel.clone());
        }
        if depth >= MAX_DEPTH {
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| is_dir(&e)))) {
                return (found, false);
            }
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !is_dir(&entry) {
                continue;
            }
            let name = shown(&entry.file_name());
            let child_rel = if rel == "." {
                name
            } else {
                format!("{rel}/{name}")
            };
            queue.push_back((entry.path(), child_rel, depth + 1));
        }
    }
    (found, true)
}

/// A directory's name as shown: its bytes as UTF-8 (lossily), control characters escaped
/// (a delegated cgroup's name is anyone's choice, and ends up on a terminal).
fn shown(name: &std::ffi::OsStr) -> String {
    name.to_string_lossy()
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn is_dir(entry: &std::fs::DirEntry) -> bool {
    entry.file_type().is_ok_and(|t| t.is_dir())
}

/// The UID of the Kubernetes pod `path` names, if any: the innermost component that is a
/// pod's cgroup, `kubepods-besteffort-pod<UID with _>.slice` (the systemd driver) or
/// `pod<UID>` (cgroupfs).
pub fn pod_uid(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|part| {
        let uid = if let Some(slice) = part.strip_suffix(".slice") {
            let (_, uid) = slice.rsplit_once("-pod")?;
            uid.replace('_', "-")
        } else {
            part.strip_prefix("pod")?.to_owned()
        };
        is_uid(&uid).then_some(uid)
    })
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An exclusive lock on the attached cgroup's directory while gone cgroups are folded, so two
/// readers (`fleet status` and the holder's metrics) never fold one twice; released on drop.
struct Lock(File);

impl Lock {
    fn take(root: &Path) -> Option<Lock> {
        let dir = File::open(root).ok()?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) };
        (rc == 0).then_some(Lock(dir))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlocks the descriptor this lock owns (closing it would too).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Adds `key`'s per-CPU counters to [`GONE_KEY`]'s and removes `key`.
fn fold_gone(map: RawFd, key: u64, size: usize) -> std::io::Result<()> {
    let Some(value) = sys::map_lookup_key(map, key, size)? else {
        return Ok(());
    };
    let mut gone = sys::map_lookup_key(map, GONE_KEY, size)?.unwrap_or_else(|| vec![0; size]);
    for (g, v) in gone.chunks_exact_mut(8).zip(value.chunks_exact(8)) {
        let sum = u64::from_ne_bytes(g.try_into().unwrap_or_default())
            .wrapping_add(u64::from_ne_bytes(v.try_into().unwrap_or_default()));
        g.copy_from_slice(&sum.to_ne_bytes());
    }
    sys::map_update(map, GONE_KEY, &gone)?;
    sys::map_delete(map, key)
}

/// The counts map `map` of the attachment to `root`, by series (live cgroups by path, then the
/// folded entries); the cgroups that are gone are folded first. Bounded by the map's size.
/// Without `root` (the attached cgroup is gone, or not the one attached), nothing is named
/// and nothing folded.
pub fn read(map: RawFd, root: Option<&Path>) -> std::io::Result<Vec<Series>> {
    let info = sys::map_info(map)?;
    let cpus = sys::possible_cpus()?;
    let size = info.value_size as usize * cpus;
    let mut keys = Vec::new();
    let mut key = None;
    while let Some(next) = sys::map_next_key(map, key)? {
        keys.push(next);
        if keys.len() > info.max_entries as usize + 2 {
            break;
        }
        key = Some(next);
    }
    let cgroups: Vec<u64> = keys
        .iter()
        .copied()
        .filter(|&k| k != OTHER_KEY && k != GONE_KEY)
        .collect();
    let (paths, complete) = match root {
        Some(root) => walk(root, &cgroups),
        None => (BTreeMap::new(), false),
    };
    let gone: Vec<u64> = cgroups
        .iter()
        .copied()
        .filter(|k| !paths.contains_key(k))
        .collect();
    let mut folded_gone = false;
    if let Some(root) = root.filter(|_| complete && !gone.is_empty())
        && let Some(_lock) = Lock::take(root)
    {
        for &k in &gone {
            folded_gone |= fold_gone(map, k, size).is_ok();
        }
    }
    let mut out = Vec::new();
    for (id, rel) in &paths {
        if let Some(bytes) = sys::map_lookup_key(map, *id, size)? {
            out.push(Series {
                pod_uid: pod_uid(rel),
                path: Some(rel.clone()),
                folded: None,
                counts: counts_from(&sum(&bytes)),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    for (k, name) in [(OTHER_KEY, "other"), (GONE_KEY, "gone")] {
        let present = keys.contains(&k) || (k == GONE_KEY && folded_gone);
        if !present {
            continue;
        }
        if let Some(bytes) = sys::map_lookup_key(map, k, size)? {
            out.push(Series {
                path: None,
                pod_uid: None,
                folded: Some(name),
                counts: counts_from(&sum(&bytes)),
            });
        }
    }
    // Cgroups still unresolved when the walk stopped early: counted, without a path.
    if !complete {
        let mut rest = [0u64; COUNTERS];
        for &k in &gone {
            if let Some(bytes) = sys::map_lookup_key(map, k, size)? {
                for (r, v) in rest.iter_mut().zip(sum(&bytes)) {
                    *r = r.wrapping_add(v);
                }
            }
        }
        if !gone.is_empty() {
            out.push(Series {
                path: None,
                pod_uid: None,
                folded: Some("unresolved"),
                counts: counts_from(&rest),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uids_from_both_cgroup_drivers() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let systemd = format!(
            "kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-abc.scope",
            uid.replace('-', "_")
        );
        assert_eq!(pod_uid(&systemd).as_deref(), Some(uid));
        let guaranteed = format!("kubepods-pod{}.slice", uid.replace('-', "_"));
        assert_eq!(pod_uid(&guaranteed).as_deref(), Some(uid));
        let cgroupfs = format!("besteffort/pod{uid}/0123456789abcdef");
        assert_eq!(pod_uid(&cgroupfs).as_deref(), Some(uid));
        for not in [
            ".",
            "system.slice/sshd.service",
            "kubepods-burstable.slice",
            "podcast",
            "pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
            "kubepods-podnot_a_uid.slice",
            "pod\"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        ] {
            assert_eq!(pod_uid(not), None, "{not}");
        }
    }

    #[test]
    fn the_walk_names_what_it_finds_and_says_when_it_saw_everything() {
        let root = std::env::temp_dir().join(format!("kas-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("c\n\u{1b}[31m")).unwrap();
        std::fs::write(root.join("a/file"), "").unwrap();
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        let (found, complete) = walk(&root, &[ino("a/b"), ino("."), 1]);
        assert!(complete);
        assert_eq!(found.get(&ino("a/b")).map(String::as_str), Some("a/b"));
        assert_eq!(found.get(&ino(".")).map(String::as_str), Some("."));
        assert_eq!(found.len(), 2, "an ID not there is not found: {found:?}");
        let (found, _) = walk(&root, &[ino("c\n\u{1b}[31m")]);
        assert_eq!(
            found.values().next().map(String::as_str),
            Some("c\\n\\u{1b}[31m"),
            "control characters escaped"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
