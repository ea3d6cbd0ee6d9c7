//! `keepalive-shim webhook serve`: the admission webhook over HTTPS on the tool's one HTTP server.
//! `POST /mutate` answers an AdmissionReview with `keepalive_shim_kube::review` (never a denial:
//! on any problem with the request it still allows the pod, with a warning); `/healthz` and
//! `/readyz` for the kubelet; `/metrics` its own counts in Prometheus' text format. The
//! certificate and key are re-read when their files change (cert-manager rotates them in place).
//! Bodies are read up to the mutation's limit, slow clients are cut by the server's deadlines,
//! and at most a few reviews run at once, so a few bad clients cannot stop it answering the API
//! server.

use crate::mutation::MutationArgs;
use keepalive_shim_http::{Limits, Method, Request, Response, Security, Server, StatusCode, Tls};
use keepalive_shim_kube::{Outcome, Reviewed};
use keepalive_shim_observe::prometheus::{self, Family, labels};
use keepalive_shim_sys::say;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serve the admission webhook over HTTPS.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim webhook serve --listen 0.0.0.0:8443 --tls-cert /tls/tls.crt --tls-key /tls/tls.key\n  \
    (deploy/kubernetes runs it so, with the Secret keepalive-shim-webhook-tls mounted at /tls)")]
pub struct ServeArgs {
    /// The address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// The serving certificate (PEM, the chain after it); re-read when it changes.
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// Its private key (PEM); re-read when it changes.
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// Log every review's outcome to stderr (warnings and errors are always logged).
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    mutation: MutationArgs,
}

/// What the webhook counted, for `/metrics`.
struct Counts {
    /// By (outcome, reason): injected/"", skipped/reason, failed/kind; `injected` from the start,
    /// so a rate() has a series from the first scrape.
    reviews: BTreeMap<(&'static str, &'static str), u64>,
    warnings: u64,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            reviews: BTreeMap::from([(("injected", ""), 0)]),
            warnings: 0,
        }
    }
}

impl Counts {
    fn add(&mut self, r: &Reviewed) {
        let key = match &r.outcome {
            Outcome::Injected => ("injected", ""),
            Outcome::Skipped(skip) => ("skipped", skip.reason()),
            Outcome::Failed(e) => ("failed", e.kind()),
        };
        *self.reviews.entry(key).or_default() += 1;
        self.warnings += r.warnings.len() as u64;
    }

    fn text(&self) -> String {
        let reviews = self
            .reviews
            .iter()
            .map(|((outcome, reason), n)| {
                let l = if reason.is_empty() {
                    labels(&[("outcome", outcome)])
                } else {
                    labels(&[("outcome", outcome), ("reason", reason)])
                };
                (l, n.to_string())
            })
            .collect();
        prometheus::text(&[
            prometheus::build_info(),
            Family {
                name: "keepalive_shim_webhook_reviews_total",
                help: "AdmissionReviews answered, by outcome: injected (at least one container \
                       preloads the library), skipped (reason: why the pod was left as it was), \
                       failed (reason: what was wrong with the request; the pod was still \
                       allowed).",
                kind: "counter",
                samples: reviews,
            },
            Family {
                name: "keepalive_shim_webhook_warnings_total",
                help: "Kubernetes warnings sent back (a bad annotation, an LD_PRELOAD left alone, \
                       a request that was not a pod).",
                kind: "counter",
                samples: vec![(String::new(), self.warnings.to_string())],
            },
        ])
    }
}

pub fn main(args: ServeArgs) -> ExitCode {
    let config = match args.mutation.config() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            say!("webhook serve: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match Tls::from_files(&args.tls_cert, &args.tls_key) {
        Ok(tls) => tls,
        Err(e) => {
            say!("webhook serve: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            say!("webhook serve: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    say!(
        "serving https://{}/mutate (image {})",
        listener.local_addr().unwrap_or(args.listen),
        config.image
    );
    let counts = Arc::new(Mutex::new(Counts::default()));
    let limits = Limits {
        // The API server sends one object (at most a few MiB); its own timeout is a few seconds.
        max_body: config.max_body,
        exchange_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let security = Security {
        tls: Some(tls),
        ..Security::default()
    };
    let (review_counts, metric_counts) = (Arc::clone(&counts), counts);
    let verbose = args.verbose;
    let server = Server::new(limits, security)
        .route(Method::POST, "/mutate", move |request| {
            mutate(request, &config, &review_counts, verbose)
        })
        .route(Method::GET, "/healthz", |_| Response::text(200, "ok\n"))
        .route(Method::GET, "/readyz", |_| Response::text(200, "ok\n"))
        .route(Method::GET, "/metrics", move |_| {
            let text = match metric_counts.lock() {
                Ok(c) => c.text(),
                Err(poisoned) => poisoned.into_inner().text(),
            };
            Response::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
        });
    let why = server.run(listener);
    say!("webhook serve: {why}");
    ExitCode::FAILURE
}

/// One review: 200 with the AdmissionReview, or 400 when the body cannot be answered at all.
fn mutate(
    request: &Request,
    config: &keepalive_shim_kube::Config,
    counts: &Mutex<Counts>,
    verbose: bool,
) -> Response {
    let reviewed = keepalive_shim_kube::review(&request.body, config);
    match counts.lock() {
        Ok(mut c) => c.add(&reviewed),
        Err(poisoned) => poisoned.into_inner().add(&reviewed),
    }
    let pod = if reviewed.pod.is_empty() {
        "a pod"
    } else {
        reviewed.pod.as_str()
    };
    match &reviewed.outcome {
        Outcome::Failed(e) => say!("webhook: {pod}: {e} (allowed as it is)"),
        Outcome::Injected if verbose => say!("webhook: {pod}: injected"),
        Outcome::Skipped(skip) if verbose => say!("webhook: {pod}: left alone: {}", skip.reason()),
        _ => {}
    }
    if verbose {
        for warning in &reviewed.warnings {
            say!("webhook: {pod}: warning: {warning}");
        }
    }
    match reviewed.response {
        Some(body) => Response::new(200, "application/json", body),
        None => {
            let message = match &reviewed.outcome {
                Outcome::Failed(e) => format!("{e}\n"),
                _ => "not an AdmissionReview\n".to_owned(),
            };
            Response::text(StatusCode::BAD_REQUEST.as_u16(), message)
        }
    }
}
