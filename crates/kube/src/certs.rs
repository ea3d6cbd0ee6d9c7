//! Certificates for clusters without cert-manager (`keepalive-shim webhook certs`): a CA of the
//! webhook's own and a serving certificate for its Service's DNS names, signed by it, and the
//! kustomize component that puts both where they go: the certificate and key in the Secret the
//! webhook mounts (`keepalive-shim-webhook-tls`), the CA in the MutatingWebhookConfiguration's
//! `caBundle`. Pure: the files' contents are returned, the command writes them.

use crate::error::Error;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The Secret the webhook's Deployment mounts (`deploy/kubernetes/deployment.yaml`).
pub const SECRET: &str = "keepalive-shim-webhook-tls";
/// The MutatingWebhookConfiguration (`deploy/kubernetes/mutatingwebhookconfiguration.yaml`).
pub const CONFIGURATION: &str = "keepalive-shim";
/// How long the serving certificate is valid; the CA lives ten times as long.
pub const SERVING_DAYS: i64 = 730;

/// What `webhook certs` writes: file name and contents, and whether the file is secret (0600).
pub struct Files(pub Vec<(&'static str, String, bool)>);

/// Whether `name` is an RFC 1123 label, as Kubernetes names namespaces and Services.
fn is_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The CA, the serving certificate for `service` in `namespace` (every name the API server may
/// use: `SERVICE`, `SERVICE.NAMESPACE`, `SERVICE.NAMESPACE.svc`, and `….cluster.local`), its key,
/// and the kustomize component.
pub fn make(namespace: &str, service: &str) -> Result<Files, Error> {
    const ACCEPT: &str = "a Kubernetes name: lowercase letters, digits and '-', at most 63";
    if !is_label(namespace) {
        return Err(Error::config("namespace", namespace, ACCEPT));
    }
    if !is_label(service) {
        return Err(Error::config("service", service, ACCEPT));
    }
    let failed = |e: rcgen::Error| Error::config("certificate", &e.to_string(), "none");
    let now = OffsetDateTime::now_utc();
    let from = now - Duration::hours(1);

    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "keepalive-shim webhook CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = from;
    ca.not_after = now + Duration::days(SERVING_DAYS * 10);
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);

    let names = vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let key = KeyPair::generate().map_err(failed)?;
    let mut serving = CertificateParams::new(names.clone()).map_err(failed)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, names[2].clone());
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.not_before = from;
    serving.not_after = now + Duration::days(SERVING_DAYS);
    let cert = serving.signed_by(&key, &issuer).map_err(failed)?;

    let ca_pem = ca_cert.pem();
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let kustomization = format!(
        "# Made by `keepalive-shim webhook certs --namespace {namespace} --service {service}`: the
# webhook's serving certificate (valid {SERVING_DAYS} days; run the command again and re-apply
# to renew it) and the CA the API server checks it with. Use it from an overlay:
#   resources:  [<path of>/deploy/kubernetes]
#   components: [<path of this folder>]
# tls.key is the webhook's private key: keep this folder out of version control, or encrypt it.
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
secretGenerator:
  - name: {SECRET}
    namespace: {namespace}
    type: kubernetes.io/tls
    files:
      - tls.crt
      - tls.key
    options:
      disableNameSuffixHash: true
patches:
  - target:
      group: admissionregistration.k8s.io
      version: v1
      kind: MutatingWebhookConfiguration
      name: {CONFIGURATION}
    patch: |-
      - op: add
        path: /webhooks/0/clientConfig/caBundle
        value: {bundle}
"
    );
    Ok(Files(vec![
        ("ca.crt", ca_pem, false),
        ("tls.crt", cert.pem(), false),
        ("tls.key", key.serialize_pem(), true),
        ("kustomization.yaml", kustomization, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_files_made() {
        assert!(make("Bad_Name", "x").is_err());
        assert!(make("ns", "-x").is_err());
        let files = make("keepalive-shim-system", "keepalive-shim-webhook").unwrap();
        let names: Vec<&str> = files.0.iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            ["ca.crt", "tls.crt", "tls.key", "kustomization.yaml"]
        );
        assert!(files.0[0].1.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(files.0[2].1.contains("PRIVATE KEY") && files.0[2].2);
        assert!(files.0[3].1.contains("name: keepalive-shim-webhook-tls"));
        assert!(
            files.0[3]
                .1
                .contains("path: /webhooks/0/clientConfig/caBundle")
        );
    }
}
