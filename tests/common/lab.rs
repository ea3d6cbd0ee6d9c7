//! The dead-peer lab from the tests' side: `scripts/lab.sh` builds and removes the namespaces;
//! this runs programs inside them and removes the lab when dropped, also when a test fails.

use super::{Background, command, root};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SERVER4: &str = "10.77.0.2";
pub const SERVER6: &str = "fd77::2";

pub struct Lab {
    name: String,
}

fn lab_sh() -> Command {
    Command::new(root().join("scripts/lab.sh"))
}

/// Not root or no namespaces: skip, except under CI (which runs as root), where it is a failure.
fn skip(why: &str) -> Option<Lab> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the dead-peer lab is required under CI=true: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

impl Lab {
    /// A new lab with a name unique to this process and test, or `None` when it cannot be made.
    pub fn new() -> Option<Lab> {
        static SWEEP: Once = Once::new();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip("network namespaces need root");
        }
        SWEEP.call_once(|| {
            let _ = lab_sh().arg("sweep").status();
        });
        let name = format!(
            "kas-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match lab_sh().args(["up", &name]).output() {
            Ok(out) if out.status.success() => Some(Lab { name }),
            Ok(out) => skip(&format!(
                "lab.sh up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => skip(&format!("cannot run lab.sh: {e}")),
        }
    }

    /// `program` to run inside the client (`'c'`) or server (`'s'`) namespace, entered with
    /// setns() between fork and exec, so no wrapper process carries the preloaded library.
    pub fn command(&self, side: char, preload: bool, program: impl AsRef<OsStr>) -> Command {
        let path = format!("/run/netns/{}-{side}", self.name);
        let netns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut cmd = command(preload, program);
        // SAFETY: setns is async-signal-safe, and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    pub fn spawn(
        &self,
        side: char,
        preload: bool,
        vars: &[(&str, &str)],
        argv: &[&OsStr],
    ) -> Background {
        let mut cmd = self.command(side, preload, argv[0]);
        cmd.args(&argv[1..]).envs(vars.iter().copied());
        Background::spawn(cmd)
    }

    /// Takes the server's (`"server"`) or the client's (`"client"`) own link down.
    pub fn cut(&self, side: &str) {
        let status = lab_sh().args(["cut", &self.name, side]).status().unwrap();
        assert!(status.success(), "lab.sh cut {side}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab_sh().args(["down", &self.name]).status();
    }
}
