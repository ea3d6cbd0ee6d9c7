//! The pod specs the project ships against the Pod Security Standards: every pod template in the
//! YAML of examples/kubernetes/ and deploy/kubernetes/ (when it exists) must pass the
//! `restricted` level, checked as a table of the standard's controls (Kubernetes' pod security
//! admission, its latest version) plus one rule of the project's own (explicit resources), except
//! the workloads the exemption table names, with why, the level they need and what they are held
//! to instead. Each rule is also shown to catch a pod that breaks it. No cluster is involved: the
//! checks read the manifests as the admission controller reads a pod.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The level a rule belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Level {
    /// In the standard's `baseline` (and so in `restricted`).
    Baseline,
    /// In the standard's `restricted` only.
    Restricted,
    /// Not the standard's: the project's own rule for every pod it ships.
    Project,
}

/// A check: what breaks a rule in a pod spec, one line each (empty when it passes).
type Check = fn(&Value) -> Vec<String>;

/// A rule's name and its check.
type Named = (&'static str, Check);

/// One control: its name as the standard's page gives it, and its check.
struct Rule {
    name: &'static str,
    level: Level,
    check: Check,
}

/// The controls of the restricted level (baseline's included) and the project's rule.
const RULES: &[Rule] = &[
    Rule {
        name: "HostProcess",
        level: Level::Baseline,
        check: host_process,
    },
    Rule {
        name: "Host Namespaces",
        level: Level::Baseline,
        check: host_namespaces,
    },
    Rule {
        name: "Privileged Containers",
        level: Level::Baseline,
        check: privileged,
    },
    Rule {
        name: "Host Ports",
        level: Level::Baseline,
        check: host_ports,
    },
    Rule {
        name: "Host Probes / Lifecycle Hooks",
        level: Level::Baseline,
        check: host_probes,
    },
    Rule {
        name: "AppArmor",
        level: Level::Baseline,
        check: app_armor,
    },
    Rule {
        name: "SELinux",
        level: Level::Baseline,
        check: se_linux,
    },
    Rule {
        name: "/proc Mount Type",
        level: Level::Baseline,
        check: proc_mount,
    },
    Rule {
        name: "Sysctls",
        level: Level::Baseline,
        check: sysctls,
    },
    Rule {
        name: "Volume Types (no hostPath)",
        level: Level::Restricted,
        check: volume_types,
    },
    Rule {
        name: "Privilege Escalation",
        level: Level::Restricted,
        check: privilege_escalation,
    },
    Rule {
        name: "Running as Non-root",
        level: Level::Restricted,
        check: run_as_non_root,
    },
    Rule {
        name: "Running as Non-root user",
        level: Level::Restricted,
        check: run_as_user,
    },
    Rule {
        name: "Seccomp",
        level: Level::Restricted,
        check: seccomp,
    },
    Rule {
        name: "Capabilities",
        level: Level::Restricted,
        check: capabilities,
    },
    Rule {
        name: "Explicit resources",
        level: Level::Project,
        check: resources,
    },
];

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

// ---- the pod spec's parts ----

/// Every container of a pod spec: containers, init containers, ephemeral containers.
fn containers(pod: &Value) -> Vec<&Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|key| pod[key].as_array())
        .flatten()
        .collect()
}

fn name(container: &Value) -> &str {
    container["name"].as_str().unwrap_or("(unnamed)")
}

/// The pod-level and every container's `securityContext`, each with who set it.
fn contexts(pod: &Value) -> Vec<(String, &Value)> {
    let mut all = vec![("the pod".to_owned(), &pod["securityContext"])];
    for c in containers(pod) {
        all.push((format!("container {}", name(c)), &c["securityContext"]));
    }
    all
}

// ---- baseline ----

fn host_process(pod: &Value) -> Vec<String> {
    contexts(pod)
        .into_iter()
        .filter(|(_, sc)| sc["windowsOptions"]["hostProcess"] == true)
        .map(|(who, _)| format!("{who} sets windowsOptions.hostProcess"))
        .collect()
}

fn host_namespaces(pod: &Value) -> Vec<String> {
    ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|key| pod[**key] == true)
        .map(|key| format!("the pod sets {key}: true"))
        .collect()
}

fn privileged(pod: &Value) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter(|c| c["securityContext"]["privileged"] == true)
        .map(|c| format!("container {} is privileged", name(c)))
        .collect()
}

fn host_ports(pod: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for c in containers(pod) {
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_u64().is_some_and(|p| p != 0) {
                bad.push(format!(
                    "container {} uses hostPort {}",
                    name(c),
                    port["hostPort"]
                ));
            }
        }
    }
    bad
}

fn host_probes(pod: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for c in containers(pod) {
        let handlers = [
            &c["livenessProbe"],
            &c["readinessProbe"],
            &c["startupProbe"],
            &c["lifecycle"]["postStart"],
            &c["lifecycle"]["preStop"],
        ];
        for handler in handlers {
            for kind in ["httpGet", "tcpSocket"] {
                if handler[kind]["host"]
                    .as_str()
                    .is_some_and(|h| !h.is_empty())
                {
                    bad.push(format!("container {} sends a {kind} to a host", name(c)));
                }
            }
        }
    }
    bad
}

fn app_armor(pod: &Value) -> Vec<String> {
    let mut bad: Vec<String> = contexts(pod)
        .into_iter()
        .filter(|(_, sc)| sc["appArmorProfile"]["type"] == "Unconfined")
        .map(|(who, _)| format!("{who} is Unconfined by AppArmor"))
        .collect();
    // The annotations, on the pod template's metadata, are looked up by the caller's `meta`.
    if let Some(annotations) = pod["__metadata"]["annotations"].as_object() {
        for (key, value) in annotations {
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && value == "unconfined"
            {
                bad.push(format!("annotation {key}: unconfined"));
            }
        }
    }
    bad
}

fn se_linux(pod: &Value) -> Vec<String> {
    let allowed = [
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut bad = Vec::new();
    for (who, sc) in contexts(pod) {
        let options = &sc["seLinuxOptions"];
        if let Some(t) = options["type"].as_str()
            && !allowed.contains(&t)
        {
            bad.push(format!("{who} sets seLinuxOptions.type {t}"));
        }
        for key in ["user", "role"] {
            if options[key].as_str().is_some_and(|v| !v.is_empty()) {
                bad.push(format!("{who} sets seLinuxOptions.{key}"));
            }
        }
    }
    bad
}

fn proc_mount(pod: &Value) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter(|c| {
            c["securityContext"]["procMount"]
                .as_str()
                .is_some_and(|m| m != "Default")
        })
        .map(|c| format!("container {} sets procMount", name(c)))
        .collect()
}

fn sysctls(pod: &Value) -> Vec<String> {
    let safe = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    pod["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !safe.contains(n))
        .map(|n| format!("the pod sets sysctl {n}"))
        .collect()
}

// ---- restricted ----

fn volume_types(pod: &Value) -> Vec<String> {
    // `image` since Kubernetes 1.33.
    let allowed = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut bad = Vec::new();
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        for key in volume.as_object().into_iter().flat_map(|m| m.keys()) {
            if key != "name" && !allowed.contains(&key.as_str()) {
                bad.push(format!("volume {} is a {key}", volume["name"]));
            }
        }
    }
    bad
}

fn privilege_escalation(pod: &Value) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter(|c| c["securityContext"]["allowPrivilegeEscalation"] != false)
        .map(|c| {
            format!(
                "container {} does not set allowPrivilegeEscalation: false",
                name(c)
            )
        })
        .collect()
}

fn run_as_non_root(pod: &Value) -> Vec<String> {
    let pod_level = pod["securityContext"]["runAsNonRoot"] == true;
    let mut bad = Vec::new();
    for c in containers(pod) {
        let own = &c["securityContext"]["runAsNonRoot"];
        if *own == false {
            bad.push(format!("container {} sets runAsNonRoot: false", name(c)));
        } else if !pod_level && *own != true {
            bad.push(format!("container {}: runAsNonRoot is not true", name(c)));
        }
    }
    bad
}

fn run_as_user(pod: &Value) -> Vec<String> {
    contexts(pod)
        .into_iter()
        .filter(|(_, sc)| sc["runAsUser"] == 0)
        .map(|(who, _)| format!("{who} sets runAsUser: 0"))
        .collect()
}

fn seccomp(pod: &Value) -> Vec<String> {
    let fine = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let pod_level = fine(&pod["securityContext"]);
    let mut bad = Vec::new();
    for (who, sc) in contexts(pod) {
        if sc["seccompProfile"]["type"] == "Unconfined" {
            bad.push(format!("{who} is Unconfined by seccomp"));
        }
    }
    for c in containers(pod) {
        if !pod_level && !fine(&c["securityContext"]) {
            bad.push(format!(
                "container {}: no RuntimeDefault or Localhost seccomp profile",
                name(c)
            ));
        }
    }
    bad
}

fn capabilities(pod: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for c in containers(pod) {
        let caps = &c["securityContext"]["capabilities"];
        let drops_all = caps["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if !drops_all {
            bad.push(format!(
                "container {} does not drop ALL capabilities",
                name(c)
            ));
        }
        for add in caps["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                bad.push(format!("container {} adds {add}", name(c)));
            }
        }
    }
    bad
}

// ---- the project's, and the exempt's ----

fn resources(pod: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for c in containers(pod) {
        if c.get("targetContainerName").is_some() {
            continue; // ephemeral containers take no resources
        }
        let r = &c["resources"];
        for (part, key) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            if r[part][key].is_null() {
                bad.push(format!("container {} has no {part}.{key}", name(c)));
            }
        }
    }
    bad
}

fn probes(pod: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for c in pod["containers"].as_array().into_iter().flatten() {
        for probe in ["livenessProbe", "readinessProbe"] {
            if !c[probe].is_object() {
                bad.push(format!("container {} has no {probe}", name(c)));
            }
        }
    }
    bad
}

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

/// What breaks the rules in a pod spec, each line naming the rule.
fn violations(spec: &Value, rules: &[Named]) -> Vec<String> {
    rules
        .iter()
        .flat_map(|(rule, check)| check(spec).into_iter().map(move |v| format!("{rule}: {v}")))
        .collect()
}

fn restricted_rules() -> Vec<Named> {
    RULES.iter().map(|r| (r.name, r.check)).collect()
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
