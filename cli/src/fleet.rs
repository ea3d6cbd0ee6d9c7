//! `keepalive-shim fleet attach|detach|status`: the arguments of fleet mode's commands, and the
//! metrics endpoint `attach --metrics` serves the attachment's counts on (the engine is
//! `crates/fleet`).

use crate::endpoint;
use keepalive_shim_observe::scrape::Budget;
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
        Command::Attach(a) => {
            // Bound before anything is attached: an address in use stops here.
            let server = match a
                .metrics
                .map(|addr| endpoint::listen(addr, false))
                .transpose()
            {
                Ok(listener) => listener.map(|listener| {
                    Box::new(move |source| {
                        let budget = Budget::default();
                        let why =
                            endpoint::serve(listener, budget, Some(source), Default::default());
                        keepalive_shim_sys::say!("fleet attach --metrics: {why}");
                    }) as keepalive_shim_fleet::MetricsServer
                }),
                Err(e) => {
                    keepalive_shim_sys::say!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            keepalive_shim_fleet::attach(&a.cgroup, a.pin.as_deref(), server)
        }
        Command::Detach(d) => keepalive_shim_fleet::detach(d.cgroup.as_deref(), d.pin.as_deref()),
        Command::Status(s) => keepalive_shim_fleet::status(s.cgroup.as_deref(), s.json),
    }
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
