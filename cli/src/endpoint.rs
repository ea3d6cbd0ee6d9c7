//! The metrics endpoint on the tool's one HTTP server (`keepalive_shim_http`), for `keepalive-shim
//! metrics` and `fleet attach --metrics`: `GET /metrics` answers a scrape read by
//! `keepalive_shim_observe` within its budget, and a scrape younger than a second is reused (one
//! computation for any number of requests meanwhile), so a flood of requests cannot hold a core
//! with reading `/proc`. TLS, basic auth, headers and a request rate come from a
//! `--web.config.file` in Prometheus exporter-toolkit's format.

use keepalive_shim_http::{Bytes, Fresh, Limits, Method, Response, Security, Server};
use keepalive_shim_observe::fleet::FleetSource;
use keepalive_shim_observe::prometheus;
use keepalive_shim_observe::scrape::{Budget, Scraper};
use keepalive_shim_sys::say;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// A scrape younger than this is answered again.
const FRESH: Duration = Duration::from_secs(1);

/// The web configuration of `--web.config.file` (none: plain HTTP, open to all).
pub fn security(web_config: Option<&Path>) -> Result<Security, String> {
    match web_config {
        None => Ok(Security::default()),
        Some(path) => keepalive_shim_http::load_web_config(path),
    }
}

/// The listening socket for `addr`, said on stderr (`serving http://ADDR/metrics`, https with
/// TLS), or why not.
pub fn listen(addr: SocketAddr, tls: bool) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    say!(
        "serving {}://{bound}/metrics",
        if tls { "https" } else { "http" }
    );
    Ok(listener)
}

/// Serves `/metrics` on `listener` until the process ends: the processes with the library, the
/// supervisors, and, when given, fleet mode's counts from `fleet`. The error: why it stopped.
pub fn serve(
    listener: TcpListener,
    budget: Budget,
    fleet: Option<FleetSource>,
    security: Security,
) -> String {
    let scraper = Mutex::new(Scraper::default());
    // The text is kept as `Bytes`: each answer shares it (a reference count), not a copy.
    let fresh: Fresh<Bytes> = Fresh::new(FRESH);
    let text = move || {
        let scrape = match scraper.lock() {
            Ok(mut s) => s.scrape(budget),
            Err(poisoned) => poisoned.into_inner().scrape(budget),
        };
        let fleet = fleet.as_ref().map(|read| read()).unwrap_or_default();
        Bytes::from(prometheus::render(&scrape, &fleet, budget.series))
    };
    let server =
        Server::new(Limits::default(), security).route(Method::GET, "/metrics", move |_| {
            let body = fresh.get(&text);
            Response::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::clone(&body),
            )
        });
    server.run(listener).to_string()
}
