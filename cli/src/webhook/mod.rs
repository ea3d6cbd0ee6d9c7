//! `keepalive-shim webhook serve|review|certs`: the mutating admission webhook that preloads the
//! library into every pod of a labelled namespace (`keepalive_shim_kube` decides the mutation),
//! the same answer for one AdmissionReview on stdin, and certificates for clusters without
//! cert-manager.

mod serve;

use crate::mutation::MutationArgs;
use keepalive_shim_kube::{Outcome, certs};
use keepalive_shim_sys::say;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// The admission webhook: every new pod of a namespace labelled keepalive-shim.io/inject=enabled
/// preloads the library (deploy/kubernetes installs it; docs/kubernetes.md).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Serve POST /mutate (AdmissionReview v1) over HTTPS, with /healthz, /readyz and /metrics.
    Serve(serve::ServeArgs),
    /// Answer one AdmissionReview read on stdin, on stdout: exactly what `serve` would answer.
    ///
    /// Exit 0 when the request was an AdmissionReview for a pod; 65 (with the reason on stderr)
    /// when it was not, and nothing on stdout when there is nothing to answer (no uid).
    #[command(after_help = "Examples:\n  \
        keepalive-shim webhook review < review.json | jq -r .response.patch | base64 -d")]
    Review(ReviewArgs),
    /// Make a CA and a serving certificate for the webhook's Service, and the kustomize
    /// component that installs them (for clusters without cert-manager).
    #[command(after_help = "Examples:\n  \
        keepalive-shim webhook certs --namespace keepalive-shim-system \\\n      \
        --service keepalive-shim-webhook --out overlays/prod/certs\n  \
        # then, in overlays/prod/kustomization.yaml:\n  \
        #   resources:  [../../deploy/kubernetes]\n  \
        #   components: [certs]")]
    Certs(CertsArgs),
}

#[derive(clap::Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    mutation: MutationArgs,
}

#[derive(clap::Args)]
pub struct CertsArgs {
    /// The webhook's namespace.
    #[arg(long, value_name = "NS", default_value = "keepalive-shim-system")]
    namespace: String,
    /// The webhook's Service.
    #[arg(long, value_name = "NAME", default_value = "keepalive-shim-webhook")]
    service: String,
    /// The folder to write ca.crt, tls.crt, tls.key (0600) and kustomization.yaml into (made if
    /// missing; existing files are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn main(args: Args) -> ExitCode {
    match args.action {
        Action::Serve(args) => serve::main(args),
        Action::Review(args) => review(args),
        Action::Certs(args) => make_certs(args),
    }
}

fn review(args: ReviewArgs) -> ExitCode {
    let config = match args.mutation.config() {
        Ok(c) => c,
        Err(e) => {
            say!("webhook review: {e}");
            return ExitCode::from(2);
        }
    };
    let mut body = Vec::new();
    // One byte more than the largest body: review() then says it is too large.
    if let Err(e) = std::io::stdin()
        .take(config.max_body as u64 + 1)
        .read_to_end(&mut body)
    {
        say!("webhook review: cannot read stdin: {e}");
        return ExitCode::from(66);
    }
    let reviewed = keepalive_shim_kube::review(&body, &config);
    if let Some(response) = &reviewed.response {
        keepalive_shim_sys::output::write_all(1, response);
        keepalive_shim_sys::output::write_all(1, b"\n");
    }
    match &reviewed.outcome {
        Outcome::Failed(e) => {
            say!("webhook review: {e}");
            ExitCode::from(65)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn make_certs(args: CertsArgs) -> ExitCode {
    let files = match certs::make(&args.namespace, &args.service) {
        Ok(files) => files,
        Err(e) => {
            say!("webhook certs: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        say!("webhook certs: {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    for (name, contents, secret) in &files.0 {
        let path = args.out.join(name);
        let mode = if *secret { 0o600 } else { 0o644 };
        if let Err(e) = keepalive_shim_sys::fs::write_new(&path, contents.as_bytes(), mode, None) {
            say!("webhook certs: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    keepalive_shim_sys::output::out(format_args!(
        "wrote {}/{{ca.crt,tls.crt,tls.key,kustomization.yaml}}: a kustomize component for {}.{}; \
         the serving certificate is valid {} days",
        args.out.display(),
        args.service,
        args.namespace,
        certs::SERVING_DAYS
    ));
    ExitCode::SUCCESS
}
