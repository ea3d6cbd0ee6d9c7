//! The manifests a cluster admin applies (`deploy/kubernetes/`), rendered by `kubectl
//! kustomize` as they would be applied: the base alone, and an overlay with the cert-manager and
//! fleet components. Checked for what the webhook's safety depends on (selectors, fail-open,
//! timeouts, reinvocation, names that must agree across objects), the webhook's pods against
//! the restricted Pod Security Standard, and every object against several Kubernetes versions'
//! schemas.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn deploy() -> PathBuf {
    common::root().join("deploy/kubernetes")
}

/// `kubectl kustomize DIR`, parsed; `None` when kubectl is missing (skipped through
/// `unavailable()`, which fails under CI=true).
fn render(dir: &Path) -> Option<Vec<Value>> {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !found.is_ok_and(|o| o.status.success()) {
        return common::unavailable("kubectl is missing (it renders deploy/kubernetes)");
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(serde_saphyr::from_multiple(&text).expect("kustomize's output is YAML"))
}

/// An overlay, as a user would write one, with the base and `components`.
fn overlay(components: &[&str]) -> PathBuf {
    let dir = common::scratch().join(format!("overlay-{}", components.join("-")));
    std::fs::create_dir_all(&dir).unwrap();
    // kustomize takes bases and components by relative path.
    let up = "../".repeat(
        dir.strip_prefix(common::root())
            .unwrap()
            .components()
            .count(),
    );
    let mut text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - \
         {up}deploy/kubernetes\ncomponents:\n"
    );
    for component in components {
        text.push_str(&format!(
            "  - {up}deploy/kubernetes/components/{component}\n"
        ));
    }
    std::fs::write(dir.join("kustomization.yaml"), text).unwrap();
    dir
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn the_webhook_configuration_fails_open_and_selects_only_labelled_namespaces() {
    let Some(objects) = render(&deploy()) else {
        return;
    };
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration"
        ]
    );
    let namespace = find(&objects, "Namespace", "keepalive-shim-system");
    let own = namespace["metadata"]["name"].as_str().unwrap();
    let config = find(&objects, "MutatingWebhookConfiguration", "keepalive-shim");
    let webhooks = config["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(strings(&webhook["admissionReviewVersions"]), ["v1"]);
    assert!(webhook["timeoutSeconds"].as_u64().unwrap() <= 5);
    assert_eq!(
        webhook["rules"],
        json!([{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["pods"], "scope": "Namespaced"
        }])
    );
    let namespaces = webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    assert!(namespaces.contains(&json!({
        "key": "keepalive-shim.io/inject", "operator": "In", "values": ["enabled"]
    })));
    let excluded = namespaces
        .iter()
        .find(|e| e["key"] == "kubernetes.io/metadata.name")
        .expect("namespaces excluded by name");
    assert_eq!(excluded["operator"], "NotIn");
    assert!(strings(&excluded["values"]).contains(&"kube-system"));
    assert!(
        strings(&excluded["values"]).contains(&own),
        "the webhook's own namespace is excluded"
    );
    let opt_out = &webhook["objectSelector"]["matchExpressions"][0];
    assert_eq!(opt_out["key"], "keepalive-shim.io/inject");
    assert_eq!(opt_out["operator"], "NotIn");
    assert!(strings(&opt_out["values"]).contains(&"false"));

    // The configuration calls the Service, which reaches the webhook's port.
    let service = find(&objects, "Service", "keepalive-shim-webhook");
    let called = &webhook["clientConfig"]["service"];
    assert_eq!(called["name"], service["metadata"]["name"]);
    assert_eq!(called["namespace"], service["metadata"]["namespace"]);
    assert_eq!(called["namespace"], own);
    assert_eq!(called["path"], "/mutate");
    assert_eq!(called["port"], 443);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}])
    );
}

#[test]
fn the_webhook_deployment_is_highly_available_probed_and_restricted() {
    let Some(objects) = render(&deploy()) else {
        return;
    };
    let deployment = find(&objects, "Deployment", "keepalive-shim-webhook");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pdb = find(&objects, "PodDisruptionBudget", "keepalive-shim-webhook");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        labels["app.kubernetes.io/name"]
    );
    let service = find(&objects, "Service", "keepalive-shim-webhook");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/name"],
        labels["app.kubernetes.io/name"]
    );
    let spec = &deployment["spec"]["template"]["spec"];
    assert!(
        !spec["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .is_empty(),
        "replicas spread over nodes"
    );
    let container = &spec["containers"][0];
    let mut command = strings(&container["command"]);
    command.extend(strings(&container["args"]));
    assert_eq!(
        command.join(" "),
        "/usr/bin/keepalive-shim webhook serve --listen 0.0.0.0:8443 --tls-cert /tls/tls.crt \
         --tls-key /tls/tls.key"
    );
    assert_eq!(container["ports"][0]["containerPort"], 8443);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path);
        assert_eq!(get["scheme"], "HTTPS");
        assert_eq!(get["port"], "https");
    }
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(container["resources"][kind][resource].is_string());
        }
    }
    assert_eq!(
        common::pss::violations(spec, &common::pss::restricted_rules()),
        Vec::<String>::new(),
        "the webhook's pods pass the restricted standard"
    );
    let namespace = find(&objects, "Namespace", "keepalive-shim-system");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    assert_eq!(
        labels["keepalive-shim.io/inject"], "false",
        "the webhook is never injected"
    );
}

#[test]
fn the_components_give_certificates_and_the_fleet_daemonset() {
    let Some(objects) = render(&overlay(&["cert-manager", "fleet"])) else {
        return;
    };
    let deployment = find(&objects, "Deployment", "keepalive-shim-webhook");
    let secret = &deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"];
    let certificate = find(&objects, "Certificate", "keepalive-shim-webhook");
    assert_eq!(&certificate["spec"]["secretName"], secret);
    let service = find(&objects, "Service", "keepalive-shim-webhook");
    let host = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    let names = strings(&certificate["spec"]["dnsNames"]);
    assert!(names.contains(&host.as_str()), "{names:?}");
    assert!(names.contains(&format!("{host}.cluster.local").as_str()));
    // Self-signed root → CA certificate → CA issuer → serving certificate.
    let issuer = &certificate["spec"]["issuerRef"]["name"];
    let ca_issuer = find(&objects, "Issuer", issuer.as_str().unwrap());
    let ca = find(&objects, "Certificate", "keepalive-shim-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let root = find(
        &objects,
        "Issuer",
        ca["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    assert!(root["spec"]["selfSigned"].is_object());
    let config = find(&objects, "MutatingWebhookConfiguration", "keepalive-shim");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!(
            "{}/{}",
            certificate["metadata"]["namespace"].as_str().unwrap(),
            certificate["metadata"]["name"].as_str().unwrap()
        )
    );

    let fleet = find(&objects, "DaemonSet", "keepalive-shim-fleet");
    assert_eq!(
        fleet["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    let container = &fleet["spec"]["template"]["spec"]["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/metrics", "{probe}");
    }
}

#[test]
fn every_rendered_object_is_valid_for_several_kubernetes_versions() {
    let Some(objects) = render(&overlay(&["cert-manager", "fleet"])) else {
        return;
    };
    // cert-manager's kinds are custom resources: no schema of Kubernetes' knows them.
    let (custom, core): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| {
        o["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("cert-manager.io/")
    });
    assert_eq!(custom.len(), 4);
    let named: Vec<(String, Value)> = core
        .iter()
        .map(|o| {
            let label = format!("{}-{}", o["kind"].as_str().unwrap(), o["metadata"]["name"]);
            (label.replace('"', ""), (*o).clone())
        })
        .collect();
    assert_eq!(named.len(), 7);
    let Some(failures) = validate(&named, &KUBERNETES) else {
        return;
    };
    assert!(failures.is_empty(), "{failures}");
}
