//! Files written so that a reader sees the old content or the new, never a part: a new file
//! beside the old one (never following a link), written, `fsync`ed, renamed over it, and the
//! folder `fsync`ed; an exclusive lock on a folder while a file in it is read and replaced; a
//! file read only when it is a regular file and not a link.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Puts `bytes` at `path` with `mode` (and `owner`, uid and gid, when given): a new file beside it
/// (never followed if it is a link), written, `fsync`ed, renamed over `path`, and the folder
/// `fsync`ed.
pub fn write_new(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .unwrap_or(OsStr::new("tmp"))
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.keepalive-shim-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `text` as [`write_new`] does, keeping the old file's mode and owner
/// (else 0644, this process's).
pub fn replace(path: &Path, text: &[u8]) -> io::Result<()> {
    let old = fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    write_new(path, text, mode, old.map(|m| (m.uid(), m.gid())))
}

/// The contents of `path`, `None` when there is none; an error when it is a link or not a regular
/// file (never followed, never a FIFO waited on).
pub fn read_if_present(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(io::Error::other(
                "it is a symbolic link (not replaced; edit the file it points to)",
            ));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(io::Error::other("it is not a regular file"));
        }
        Ok(_) => {}
    }
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    let mut out = Vec::new();
    io::Read::read_to_end(&mut file, &mut out)?;
    Ok(Some(out))
}

/// Removes `path` and syncs its folder.
pub fn remove_synced(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// An exclusive lock on a folder, held until dropped.
pub struct Lock {
    _dir: File,
}

/// Takes an exclusive lock on folder `dir` (waiting for another holder).
pub fn lock(dir: &Path) -> io::Result<Lock> {
    let file = File::open(dir)?;
    // SAFETY: flock on a descriptor we own; the lock goes with the descriptor.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Lock { _dir: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_links_are_not_followed() {
        let dir = std::env::temp_dir().join(format!("kas-sys-fs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let path = dir.join("file");
        assert_eq!(read_if_present(&path).unwrap(), None);
        write_new(&path, b"one", 0o640, None).unwrap();
        assert_eq!(read_if_present(&path).unwrap().unwrap(), b"one");
        replace(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_if_present(&link).is_err());
        let _lock = lock(&dir).unwrap();
        remove_synced(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
