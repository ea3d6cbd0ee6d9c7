//! `keepalive-shim fleet attach|detach|status`: the library's policy as BPF programs attached
//! to a cgroup v2, so every TCP connection made or accepted in it and its descendants gets
//! keepalive and a user timeout, with no preload: static and Go binaries too.
//!
//! - `insn.rs`: the instructions, one named constructor each, and labels for jumps.
//! - `program/`: the programs, generated from the library's `Settings` (`sock_ops.rs`,
//!   `setsockopt.rs`, what they share in `mod.rs`, the kernel's definitions in `abi.rs`).
//! - `btf.rs`: the kernel's type information, for the offsets the sock_ops program reads.
//! - `counts.rs`: what the programs counted, by cgroup (and pod).
//! - `sys.rs`: the `bpf()` system call.
//! - `preflight.rs`: kernel version, privileges, cgroup v2, bpffs.
//! - `lifecycle.rs`: attach (foreground or pinned), replace, detach, status.
//! - `interp.rs` (tests only): runs the generated programs on a model socket.

mod btf;
mod counts;
mod insn;
#[cfg(test)]
mod interp;
mod lifecycle;
mod preflight;
mod program;
mod sys;

use crate::config::Settings;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Give every TCP connection in a cgroup v2 keepalive, with a BPF program: no preload, any
/// binary (static and Go ones too).
///
/// The settings are read as the library reads them (KEEPALIVE_* variables, /etc/keepalive-shim.conf);
/// `keepalive-shim check` shows what would be attached.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim fleet attach --cgroup /sys/fs/cgroup/kubepods.slice     # foreground: detaches when stopped\n  \
    KEEPALIVE_IDLE=20s keepalive-shim fleet attach --cgroup /sys/fs/cgroup/system.slice \\\n      --pin /sys/fs/bpf/keepalive-shim    # stays attached until `fleet detach`\n  \
    keepalive-shim fleet attach --cgroup /sys/fs/cgroup/kubepods.slice --metrics 0.0.0.0:9878\n  \
    keepalive-shim fleet status\n  \
    keepalive-shim fleet detach --pin /sys/fs/bpf/keepalive-shim")]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Attach(AttachArgs),
    Detach(DetachArgs),
    Status(StatusArgs),
}

/// Attach the programs to a cgroup v2, taking over keepalive-shim's own programs there, if any,
/// without a gap (their links get the new programs in place).
///
/// Without --pin, stays in the foreground and the programs go when it stops (SIGTERM, SIGINT,
/// or death), unless another `fleet attach` has taken them over (then this one only waits to be
/// stopped): for a Kubernetes DaemonSet or a systemd service. With --pin, pins the attachment
/// under a directory of a bpf file system and returns; `fleet detach` removes it.
#[derive(clap::Args)]
pub struct AttachArgs {
    /// The cgroup v2 directory (a container's, a pod's, a node's root).
    #[arg(long, value_name = "PATH")]
    cgroup: PathBuf,
    /// Pin the attachment under this directory (on a bpf file system) and return.
    #[arg(long, value_name = "DIR", conflicts_with = "metrics")]
    pin: Option<PathBuf>,
    /// In the foreground, also serve Prometheus metrics on this address: this attachment's
    /// counts (mechanism="fleet", its cgroup) by the connection's own cgroup and pod, and what
    /// `keepalive-shim metrics` serves. Nothing listens unless asked.
    #[arg(long, value_name = "ADDR:PORT", value_parser = metrics_address)]
    metrics: Option<std::net::SocketAddr>,
}

/// `ADDR:PORT`, an IPv6 address with or without brackets (the downward API's `status.podIP`
/// has none).
fn metrics_address(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad = || format!("{text:?} is not ADDR:PORT (for example 10.0.0.5:9878 or [fd00::5]:9878)");
    let (ip, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Detach keepalive-shim's programs: those pinned under DIR, or every one attached to PATH.
#[derive(clap::Args)]
#[group(required = true, multiple = true)]
pub struct DetachArgs {
    /// Every keepalive-shim program attached to this cgroup (pinned or held by a process).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// The attachment pinned under this directory.
    #[arg(long, value_name = "DIR")]
    pin: Option<PathBuf>,
}

/// List keepalive-shim's programs attached anywhere on this machine, with their settings and
/// their counts by cgroup and pod.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Only this cgroup (and what reaches it from the cgroups above it).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// One JSON array, for scripts.
    #[arg(long)]
    json: bool,
}

pub fn main(args: Args) -> ExitCode {
    match args.command {
        Command::Attach(a) => lifecycle::attach(&a.cgroup, a.pin.as_deref(), a.metrics),
        Command::Detach(d) => lifecycle::detach(d.cgroup.as_deref(), d.pin.as_deref()),
        Command::Status(s) => lifecycle::status(s.cgroup.as_deref(), s.json),
    }
}

/// For `keepalive-shim check`: what `fleet attach` would attach with these settings.
pub fn check_section(s: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fleet mode (keepalive-shim fleet attach --cgroup PATH) would attach:"
    );
    if !s.enabled {
        let _ = writeln!(
            out,
            "  nothing: keepalive-shim is disabled (attach refuses)."
        );
        return out;
    }
    let maps = program::Maps {
        info: 0,
        storage: program::needs_storage(s).then_some(0),
        counts: Some(0),
    };
    let defaults = program::node_defaults();
    let target = program::Target {
        layout: btf::kernel_layout(),
        cgroup: 0,
    };
    let ops = program::sock_ops(s, &defaults, maps, target).len();
    let what = if s.force {
        "sets the five options on every connection made or accepted"
    } else {
        "sets the five options on every connection made or accepted, except those the program \
         chose itself (known from the setsockopt program, else read back): a program's own \
         keepalive and user timeout stand, and the user timeout follows its own idle, interval \
         and count"
    };
    let _ = writeln!(out, "  sock_ops program, {ops} instructions: {what}.");
    match program::setsockopt(s, maps, target) {
        Some(p) => {
            let what = if s.force {
                "a program's own value for any of the five becomes ours (KEEPALIVE_FORCE)"
            } else {
                "records the options a program chooses itself (configuring a socket not yet \
                 configured there and then), and a program that sets its own idle, interval or \
                 count gets the user timeout that follows them"
            };
            let _ = writeln!(
                out,
                "  setsockopt program, {} instructions: {what}.",
                p.len()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  no setsockopt program (KEEPALIVE_USER_TIMEOUT=0: nothing to follow; a program's \
                 own value equal to the kernel's default, set before connecting, reads back \
                 as nobody's)."
            );
        }
    }
    if s.has_rules() {
        let _ = writeln!(
            out,
            "  destination rules: honoured at connect ({} exclude, {} include); accepted \
             connections are configured whatever their address, as by the library.",
            s.exclude.len(),
            s.include.len()
        );
    }
    let _ = writeln!(
        out,
        "  not in fleet mode: KEEPALIVE_LOG (no per-connection log; `fleet status` shows what is \
         attached), and sockets made before their process joined the cgroup."
    );
    match preflight::kernel() {
        Ok(v) => {
            if let Some(problem) = preflight::kernel_problem(v, s.force) {
                let _ = writeln!(out, "  warning: {problem}.");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  warning: the kernel's version is unknown ({e}).");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::metrics_address;

    #[test]
    fn metrics_addresses_take_a_bare_ipv6_pod_ip() {
        assert_eq!(
            metrics_address("10.0.0.5:9878").unwrap().to_string(),
            "10.0.0.5:9878"
        );
        assert_eq!(
            metrics_address("fd00::5:9878").unwrap().to_string(),
            "[fd00::5]:9878"
        );
        assert_eq!(
            metrics_address("[fd00::5]:9878").unwrap().to_string(),
            "[fd00::5]:9878"
        );
        assert!(metrics_address("pod:9878").is_err());
        assert!(metrics_address("10.0.0.5").is_err());
    }
}
