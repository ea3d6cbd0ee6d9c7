//! The one finder of the preload library, for every command that needs it (`run`, `check`,
//! `system enable`, `copy-library`) and every layout the project ships:
//!
//! | layout | the tool | the library |
//! |---|---|---|
//! | `KEEPALIVE_SHIM_LIBRARY` | anywhere | where it says |
//! | a checkout (`cargo build --release`), an archive | `DIR/keepalive-shim` | `DIR/libkeepalive_shim.so` |
//! | the `.deb`, the `.rpm`, the image | `/usr/bin/keepalive-shim` | `/usr/lib/keepalive-shim/libkeepalive_shim.so` |
//! | a `/usr/local` install (the Docker recipe) | `PREFIX/bin/keepalive-shim` | `PREFIX/lib/libkeepalive_shim.so` |
//! | the tool copied elsewhere, the package installed | anywhere | `/usr/lib/keepalive-shim/libkeepalive_shim.so` |
//!
//! The path found is resolved (every link followed, made absolute): what the loader will open is
//! what is checked, written and shown.

use keepalive_shim_policy::config;
use keepalive_shim_policy::preload::{LIBRARY_NAME, char_name, unfit_char};
use std::path::{Path, PathBuf};

/// Where the packages and the image install the library.
pub const INSTALLED: &str = "/usr/lib/keepalive-shim/libkeepalive_shim.so";

/// The places looked at, in order, for a tool at `exe` (the variable aside).
pub fn candidates(exe: &Path) -> Vec<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let mut out = vec![
        dir.join(LIBRARY_NAME),
        dir.join("../lib/keepalive-shim").join(LIBRARY_NAME),
        dir.join("../lib").join(LIBRARY_NAME),
    ];
    if !out.iter().any(|c| same(c, Path::new(INSTALLED))) {
        out.push(PathBuf::from(INSTALLED));
    }
    out
}

/// Whether two paths name the same place once `..` is taken out.
fn same(a: &Path, b: &Path) -> bool {
    std::path::absolute(a).ok().map(|p| normal(&p)) == Some(normal(b))
}

fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The library: `KEEPALIVE_SHIM_LIBRARY` when set, else the first of [`candidates`] that is a
/// file, resolved. The error says where it looked.
pub fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(config::SHIM_LIBRARY) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(std::fs::canonicalize(&path).unwrap_or(path))
        } else {
            Err(format!(
                "{}={} does not name a file",
                config::SHIM_LIBRARY,
                path.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let candidates = candidates(&exe);
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(std::fs::canonicalize(candidate).unwrap_or_else(|_| candidate.clone()));
        }
    }
    let list: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(format!(
        "cannot find {LIBRARY_NAME}: looked in {}; set {} to its path",
        list.join(", "),
        config::SHIM_LIBRARY
    ))
}

/// The library, for `LD_PRELOAD`: [`find`], and an error naming the character when its path has
/// one the loader would split it on.
pub fn for_preload() -> Result<PathBuf, String> {
    let path = find()?;
    match unfit_char(&path.to_string_lossy()) {
        None => Ok(path),
        Some(c) => Err(format!(
            "the library's path {} has {} ({c:?}), on which LD_PRELOAD splits: the program would \
             run without it; install it in a directory whose path has no spaces or colons",
            path.display(),
            char_name(c)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_layout_is_looked_at() {
        let deb = candidates(Path::new("/usr/bin/keepalive-shim"));
        assert_eq!(
            deb,
            [
                PathBuf::from("/usr/bin/libkeepalive_shim.so"),
                PathBuf::from("/usr/bin/../lib/keepalive-shim/libkeepalive_shim.so"),
                PathBuf::from("/usr/bin/../lib/libkeepalive_shim.so"),
            ],
            "the packages' own place is the second, and not listed twice"
        );
        let archive = candidates(Path::new("/opt/ka/keepalive-shim"));
        assert_eq!(archive[0], Path::new("/opt/ka/libkeepalive_shim.so"));
        assert_eq!(archive.last().unwrap(), Path::new(INSTALLED));
        let local = candidates(Path::new("/usr/local/bin/keepalive-shim"));
        assert!(local.contains(&PathBuf::from("/usr/local/bin/../lib/libkeepalive_shim.so")));
    }
}
