//! `keepalive-shim copy-library DIR`: copies the library into a folder, atomically: the default
//! command of the init-container image (which has no `cp`), filling the volume a pod preloads it
//! from.

use crate::library;
use crate::preload_file::unfit;
use keepalive_shim_policy::preload::LIBRARY_NAME as LIBRARY;
use keepalive_shim_sys::{fs, say};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Copy the library into a folder, atomically: for an init container's shared volume.
///
/// Writes DIR/libkeepalive_shim.so (mode 0644) through a temporary file in DIR and a rename, so
/// a program starting meanwhile sees the old file or the new one, never a part; then prints
/// that path. DIR must exist (the volume's mount point: a missing one is a mistake in the pod's
/// spec, not a folder to make), and the path must be one LD_PRELOAD can carry (no space or
/// ':'). The default command of the keepalive-shim image, which has no `cp`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim copy-library /keepalive-shim    # the image's default command\n  \
    LD_PRELOAD=$(keepalive-shim copy-library /opt/ka) myapp")]
pub struct Args {
    /// The folder to copy the library into; it must exist.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The library to copy [default: KEEPALIVE_SHIM_LIBRARY, else the library next to this
    /// executable (., ../lib/keepalive-shim/, ../lib/), else /usr/lib/keepalive-shim/].
    #[arg(long, value_name = "PATH")]
    library: Option<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    let source = match args.library {
        Some(path) => path,
        None => match library::find() {
            Ok(path) => path,
            Err(e) => {
                say!("copy-library: {e}; nothing written");
                return ExitCode::FAILURE;
            }
        },
    };
    match copy_into(&source, &args.dir) {
        Ok(path) => {
            keepalive_shim_sys::output::out(format_args!("{}", path.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("copy-library: {e}; nothing written");
            ExitCode::FAILURE
        }
    }
}

/// Copies the library `source` to `dir/libkeepalive_shim.so` (see [`Args`]); the
/// absolute path written.
fn copy_into(source: &Path, dir: &Path) -> Result<PathBuf, String> {
    let bytes = std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Err(format!("{} is not an ELF file", source.display()));
    }
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a folder", dir.display())),
        Err(e) => {
            return Err(format!(
                "{}: {e} (mount the shared volume there, or make the folder first)",
                dir.display()
            ));
        }
    }
    let target = dir.join(LIBRARY);
    if let Some(why) = unfit(target.as_os_str().as_bytes()) {
        return Err(why);
    }
    fs::write_new(&target, &bytes, 0o644, None).map_err(|e| {
        // The image's own folder there is read-only (and so is a read-only root): what is
        // missing is the volume the pod's spec should mount.
        let hint = match e.raw_os_error() {
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => {
                " (mount the shared volume there: an emptyDir in Kubernetes, -v in Docker)"
            }
            _ => "",
        };
        format!("cannot write {}: {e}{hint}", target.display())
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A new empty folder for one test, removed first if a killed run left it.
    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ks-system-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The folder's entries, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn copy_library_writes_the_file_0644_and_replaces_it() {
        let base = folder("copy");
        let source = base.join("source.so");
        std::fs::write(&source, b"\x7fELF first").unwrap();
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o700)).unwrap();
        let volume = base.join("volume");
        std::fs::create_dir(&volume).unwrap();
        let written = copy_into(&source, &volume).unwrap();
        assert_eq!(written, volume.join(LIBRARY));
        assert_eq!(std::fs::read(&written).unwrap(), b"\x7fELF first");
        let mode = std::fs::metadata(&written).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        // Again, with new contents: replaced, nothing else left in the folder.
        std::fs::write(&source, b"\x7fELF second").unwrap();
        assert_eq!(copy_into(&source, &volume).unwrap(), written);
        assert_eq!(std::fs::read(&written).unwrap(), b"\x7fELF second");
        assert_eq!(listing(&volume), [LIBRARY]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn copy_library_refuses_and_writes_nothing() {
        let base = folder("refuse");
        let source = base.join("source.so");
        std::fs::write(&source, b"\x7fELF").unwrap();
        let why = copy_into(&source, &base.join("missing")).unwrap_err();
        assert!(why.contains("mount the shared volume"), "{why}");
        assert!(
            !base.join("missing").exists(),
            "a missing folder is not made"
        );
        let why = copy_into(&source, &source).unwrap_err();
        assert!(why.contains("is not a folder"), "{why}");
        let spaced = base.join("my volume");
        std::fs::create_dir(&spaced).unwrap();
        let why = copy_into(&source, &spaced).unwrap_err();
        assert!(why.contains("a space"), "{why}");
        let text = base.join("text.so");
        std::fs::write(&text, b"not a library").unwrap();
        let volume = base.join("volume");
        std::fs::create_dir(&volume).unwrap();
        let why = copy_into(&text, &volume).unwrap_err();
        assert!(why.contains("not an ELF file"), "{why}");
        let why = copy_into(&base.join("absent.so"), &volume).unwrap_err();
        assert!(why.contains("absent.so"), "{why}");
        assert!(listing(&volume).is_empty() && listing(&spaced).is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
