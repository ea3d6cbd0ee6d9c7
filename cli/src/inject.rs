//! `keepalive-shim inject [FILE|-]`: the webhook's pod mutation, offline, for manifests kept in
//! Git (as `linkerd inject` and `istioctl kube-inject` do): Kubernetes YAML in, the same YAML out
//! with every pod and pod template mutated by the same function the webhook calls; documents that
//! change nothing come out byte for byte.

use crate::mutation::MutationArgs;
use keepalive_shim_sys::say;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// The largest input read: many manifests, but not an endless stream.
const MAX_INPUT: u64 = 64 << 20;

/// Add keepalive-shim to the pods of Kubernetes manifests, as the admission webhook would.
///
/// Reads YAML (several documents; Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
/// ReplicationController, Job, CronJob, and List) and writes it to stdout with each pod
/// template mutated; everything else is unchanged. Warnings (a bad annotation, a valueFrom
/// LD_PRELOAD left alone) go to stderr, naming the object. Comments inside a changed document
/// are not kept.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    keepalive-shim inject app.yaml | kubectl apply -f -\n  \
    kustomize build overlays/prod | keepalive-shim inject - > injected.yaml\n  \
    keepalive-shim inject --image registry.example.com/keepalive-shim:0.1.0 app.yaml")]
pub struct Args {
    /// The YAML file, or - (the default) for stdin.
    #[arg(value_name = "FILE|-", default_value = "-")]
    file: PathBuf,
    #[command(flatten)]
    mutation: MutationArgs,
}

pub fn main(args: Args) -> ExitCode {
    let config = match args.mutation.config() {
        Ok(c) => c,
        Err(e) => {
            say!("inject: {e}");
            return ExitCode::from(2);
        }
    };
    let mut bytes = Vec::new();
    let read = if args.file.as_os_str() == "-" {
        std::io::stdin().take(MAX_INPUT + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(&args.file).and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut bytes))
    };
    let shown = if args.file.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        args.file.display().to_string()
    };
    if let Err(e) = read {
        say!("inject: cannot read {shown}: {e}");
        return ExitCode::from(66);
    }
    if bytes.len() as u64 > MAX_INPUT {
        say!("inject: {shown} is larger than {} MiB", MAX_INPUT >> 20);
        return ExitCode::from(65);
    }
    let Ok(text) = String::from_utf8(bytes) else {
        say!("inject: {shown} is not UTF-8 text (Kubernetes YAML is)");
        return ExitCode::from(65);
    };
    match keepalive_shim_kube::inject(&text, &config) {
        Ok(out) => {
            for warning in &out.warnings {
                say!("warning: {warning}");
            }
            keepalive_shim_sys::output::write_all(1, out.yaml.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("inject: {shown}: {e}");
            ExitCode::from(65)
        }
    }
}
