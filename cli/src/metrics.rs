//! `keepalive-shim metrics --listen ADDR:PORT`: serves `/metrics` in Prometheus' text format,
//! from the processes of this node that have the preload library loaded and from their network
//! namespaces (read by `keepalive_shim_observe`, within a budget per scrape).

use crate::endpoint;
use keepalive_shim_observe::scrape::Budget;
use keepalive_shim_sys::say;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Serve Prometheus metrics: what keepalive-shim did in each process that has the library
/// loaded, and the connections the kernel ended after a timeout in their network namespaces.
///
/// Nothing listens unless asked: the address is required. Only `GET` and `HEAD` of `/metrics`
/// are answered; every other path gets 404. Run it as root to see every process.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim metrics --listen 127.0.0.1:9877\n  \
    keepalive-shim metrics --listen [::]:9877 --max-processes 200\n  \
    keepalive-shim metrics --listen :9877 --web.config.file /etc/keepalive-shim/web.yml\n  \
    curl -s http://127.0.0.1:9877/metrics")]
pub struct Args {
    /// The address and port to listen on (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// While at most this many processes have the library, each gets series of its own; with
    /// more, every process is counted in one series per network namespace and command (no pid
    /// label). Also the most network namespaces and supervisors shown.
    #[arg(long, default_value_t = 500, value_name = "N")]
    max_processes: usize,
    /// TLS, basic auth, response headers and a request rate, in Prometheus exporter-toolkit's
    /// format (tls_server_config, basic_auth_users, http_server_config, rate_limit).
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config: Option<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    let security = match endpoint::security(args.web_config.as_deref()) {
        Ok(s) => s,
        Err(message) => {
            say!("{message}");
            return ExitCode::from(2);
        }
    };
    let listener = match endpoint::listen(args.listen, security.tls.is_some()) {
        Ok(l) => l,
        Err(message) => {
            say!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let budget = Budget {
        series: args.max_processes,
        ..Budget::default()
    };
    let why = endpoint::serve(listener, budget, None, security);
    say!("metrics: {why}");
    ExitCode::FAILURE
}
