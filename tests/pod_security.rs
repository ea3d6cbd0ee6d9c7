//! The pod specs the project ships against the Pod Security Standards: every pod template in the
//! YAML of examples/kubernetes/ and deploy/kubernetes/ (when it exists) must pass the
//! `restricted` level, checked as a table of the standard's controls (Kubernetes' pod security
//! admission, its latest version) plus one rule of the project's own (explicit resources), except
//! the workloads the exemption table names, with why, the level they need and what they are held
//! to instead. Each rule is also shown to catch a pod that breaks it. No cluster is involved: the
//! checks read the manifests as the admission controller reads a pod.

mod common;

use common::pss::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A workload exempt from `restricted`: (kind, name, why, the level it needs, the rules it is
/// held to instead).
struct Exempt {
    kind: &'static str,
    name: &'static str,
    why: &'static str,
    needs: &'static str,
    instead: &'static [Named],
}

const EXEMPT: &[Exempt] = &[Exempt {
    kind: "DaemonSet",
    name: "keepalive-shim-fleet",
    why: "fleet mode loads BPF programs on the node's kubepods cgroup: root, CAP_SYS_ADMIN, \
          CAP_BPF, CAP_NET_ADMIN and the host's cgroup tree (a hostPath volume)",
    needs: "privileged (it runs in kube-system)",
    instead: &[
        ("Probes (liveness and readiness)", probes),
        ("Explicit resources", resources),
        ("Privileged Containers", privileged),
        ("Host Namespaces", host_namespaces),
    ],
}];

// ---- the manifests ----

/// A pod spec found in a manifest: where, the workload's kind and name, and the spec (with the
/// pod template's metadata under `__metadata`, for the AppArmor annotations).
struct Found {
    file: PathBuf,
    kind: String,
    name: String,
    spec: Value,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every *.yaml and *.yml file below `dir`, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The pod specs of one document: a Pod, a workload's template, a CronJob's job template, or
/// the items of a List.
fn pods_of(doc: &Value, file: &Path, out: &mut Vec<Found>) {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let (template, spec) = match kind {
        "List" => {
            for item in doc["items"].as_array().into_iter().flatten() {
                pods_of(item, file, out);
            }
            return;
        }
        "Pod" => (&doc["metadata"], &doc["spec"]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => (
            &doc["spec"]["template"]["metadata"],
            &doc["spec"]["template"]["spec"],
        ),
        "CronJob" => {
            let template = &doc["spec"]["jobTemplate"]["spec"]["template"];
            (&template["metadata"], &template["spec"])
        }
        _ => return,
    };
    assert!(
        spec["containers"].is_array(),
        "{}: {kind} {} has no pod spec with containers",
        file.display(),
        doc["metadata"]["name"]
    );
    let mut spec = spec.clone();
    spec["__metadata"] = template.clone();
    out.push(Found {
        file: file.to_owned(),
        kind: kind.to_owned(),
        name: doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        spec,
    });
}

/// Every pod spec in examples/kubernetes/ and deploy/kubernetes/.
fn shipped_pods() -> Vec<Found> {
    let mut files = Vec::new();
    for dir in ["examples/kubernetes", "deploy/kubernetes"] {
        yaml_files(&root().join(dir), &mut files);
    }
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
        for doc in &docs {
            pods_of(doc, file, &mut found);
        }
    }
    found
}

/// Every pod spec the project ships passes `restricted` and the project's rule, but the exempt
/// ones, which pass what the exemption table holds them to; the example Deployment is among the
/// checked, and each exemption names a workload that exists (a stale entry would hide nothing).
#[test]
fn shipped_pod_specs_pass_the_restricted_standard() {
    let found = shipped_pods();
    assert!(
        found
            .iter()
            .any(|f| f.file.ends_with("examples/kubernetes/deployment.yaml")
                && f.kind == "Deployment"),
        "the example Deployment was not found"
    );
    let mut failures = Vec::new();
    for f in &found {
        let what = format!(
            "{}: {} {}",
            f.file.strip_prefix(root()).unwrap().display(),
            f.kind,
            f.name
        );
        let broken = match EXEMPT.iter().find(|e| e.kind == f.kind && e.name == f.name) {
            Some(exempt) => {
                eprintln!(
                    "{what}: exempt from restricted ({}; needs {})",
                    exempt.why, exempt.needs
                );
                violations(&f.spec, exempt.instead)
            }
            None => {
                eprintln!("{what}: restricted, {} rules", RULES.len());
                violations(&f.spec, &restricted_rules())
            }
        };
        failures.extend(broken.into_iter().map(|b| format!("{what}: {b}")));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    for exempt in EXEMPT {
        assert!(
            found
                .iter()
                .any(|f| f.kind == exempt.kind && f.name == exempt.name),
            "the exemption of {} {} names nothing shipped",
            exempt.kind,
            exempt.name
        );
    }
}

/// A pod spec that passes every rule: the shape of the example's init container.
fn good_pod() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "v", "emptyDir": {}}],
        "containers": [{
            "name": "c",
            "image": "keepalive-shim:test",
            "ports": [{"containerPort": 8443}],
            "securityContext": {
                "runAsUser": 65532,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            },
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8443}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8443}},
        }],
    })
}

/// Each rule catches a pod that breaks it, and that pod breaks no other rule: the table's rules
/// can fail, one by one.
#[test]
fn every_rule_catches_what_it_forbids() {
    assert!(
        violations(&good_pod(), &restricted_rules()).is_empty(),
        "{:?}",
        violations(&good_pod(), &restricted_rules())
    );
    // (rule, a change to the good pod: a JSON pointer and the value put there)
    let cases: &[(&str, &str, Value)] = &[
        (
            "HostProcess",
            "/securityContext/windowsOptions",
            json!({"hostProcess": true}),
        ),
        ("Host Namespaces", "/hostNetwork", json!(true)),
        ("Host Namespaces", "/hostPID", json!(true)),
        (
            "Privileged Containers",
            "/containers/0/securityContext/privileged",
            json!(true),
        ),
        ("Host Ports", "/containers/0/ports/0/hostPort", json!(443)),
        (
            "Host Probes / Lifecycle Hooks",
            "/containers/0/livenessProbe/httpGet/host",
            json!("10.0.0.1"),
        ),
        (
            "AppArmor",
            "/securityContext/appArmorProfile",
            json!({"type": "Unconfined"}),
        ),
        (
            "AppArmor",
            "/__metadata",
            json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}),
        ),
        (
            "SELinux",
            "/securityContext/seLinuxOptions",
            json!({"type": "spc_t"}),
        ),
        (
            "SELinux",
            "/securityContext/seLinuxOptions",
            json!({"user": "system_u"}),
        ),
        (
            "/proc Mount Type",
            "/containers/0/securityContext/procMount",
            json!("Unmasked"),
        ),
        (
            "Sysctls",
            "/securityContext/sysctls",
            json!([{"name": "net.core.somaxconn", "value": "1024"}]),
        ),
        (
            "Volume Types (no hostPath)",
            "/volumes/0",
            json!({"name": "v", "hostPath": {"path": "/"}}),
        ),
        (
            "Volume Types (no hostPath)",
            "/volumes/0",
            json!({"name": "v", "nfs": {"server": "x", "path": "/"}}),
        ),
        (
            "Privilege Escalation",
            "/containers/0/securityContext/allowPrivilegeEscalation",
            json!(true),
        ),
        (
            "Privilege Escalation",
            "/containers/0/securityContext/allowPrivilegeEscalation",
            Value::Null,
        ),
        (
            "Running as Non-root",
            "/securityContext/runAsNonRoot",
            Value::Null,
        ),
        (
            "Running as Non-root",
            "/containers/0/securityContext/runAsNonRoot",
            json!(false),
        ),
        (
            "Running as Non-root user",
            "/containers/0/securityContext/runAsUser",
            json!(0),
        ),
        (
            "Running as Non-root user",
            "/securityContext/runAsUser",
            json!(0),
        ),
        ("Seccomp", "/securityContext/seccompProfile", Value::Null),
        (
            "Seccomp",
            "/containers/0/securityContext/seccompProfile",
            json!({"type": "Unconfined"}),
        ),
        (
            "Capabilities",
            "/containers/0/securityContext/capabilities/drop",
            json!(["NET_RAW"]),
        ),
        (
            "Capabilities",
            "/containers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN"]),
        ),
        (
            "Explicit resources",
            "/containers/0/resources/limits",
            json!({}),
        ),
        (
            "Explicit resources",
            "/containers/0/resources/requests/cpu",
            Value::Null,
        ),
    ];
    for rule in RULES {
        assert!(
            cases.iter().any(|(r, _, _)| *r == rule.name),
            "no case breaks rule {:?} ({:?})",
            rule.name,
            rule.level
        );
    }
    for (rule, pointer, value) in cases {
        let mut pod = good_pod();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() {
            &mut pod
        } else {
            if pod.pointer(parent).is_none() {
                let (grand, leaf) = parent.rsplit_once('/').unwrap();
                let grand = if grand.is_empty() {
                    &mut pod
                } else {
                    pod.pointer_mut(grand).unwrap()
                };
                grand[leaf] = json!({});
            }
            pod.pointer_mut(parent).unwrap()
        };
        match target {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value.clone(),
            object => object[key] = value.clone(),
        }
        let broken = violations(&pod, &restricted_rules());
        assert!(
            !broken.is_empty() && broken.iter().all(|b| b.starts_with(&format!("{rule}: "))),
            "{pointer} = {value}: expected rule {rule:?} alone, got {broken:?}"
        );
    }
    // The exempt's own rules: a container without probes.
    let mut pod = good_pod();
    pod["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    assert_eq!(
        probes(&pod),
        ["container c has no readinessProbe"],
        "the probes rule"
    );
}
