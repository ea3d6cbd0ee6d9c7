//! The Pod Security Standards' `restricted` level (Kubernetes' latest version of it, as the pod
//! security admission controller checks it) as one table of rules over a pod spec, plus the
//! project's own rules (explicit resources; probes for the exempt): used by the tests of what the
//! project ships (tests/pod_security.rs) and of what the webhook adds to a pod (crates/kube).
//! From kubernetes.io/docs/concepts/security/pod-security-standards (baseline and restricted
//! controls), with image volumes allowed since 1.33.

use serde_json::Value;

/// The level a rule belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    /// In the standard's `baseline` (and so in `restricted`).
    Baseline,
    /// In the standard's `restricted` only.
    Restricted,
    /// Not the standard's: the project's own rule for every pod it ships.
    Project,
}

/// A check: what breaks a rule in a pod spec, one line each (empty when it passes).
pub type Check = fn(&Value) -> Vec<String>;

/// A rule's name and its check.
pub type Named = (&'static str, Check);

/// One control: its name as the standard's page gives it, and its check.
pub struct Rule {
    pub name: &'static str,
    pub level: Level,
    pub check: Check,
}

/// The controls of the restricted level (baseline's included) and the project's rule.
pub const RULES: &[Rule] = &[
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

// ---- the pod spec's parts ----

/// Every container of a pod spec: containers, init containers, ephemeral containers.
pub fn containers(pod: &Value) -> Vec<&Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|key| pod[key].as_array())
        .flatten()
        .collect()
}

pub fn name(container: &Value) -> &str {
    container["name"].as_str().unwrap_or("(unnamed)")
}

/// The pod-level and every container's `securityContext`, each with who set it.
pub fn contexts(pod: &Value) -> Vec<(String, &Value)> {
    let mut all = vec![("the pod".to_owned(), &pod["securityContext"])];
    for c in containers(pod) {
        all.push((format!("container {}", name(c)), &c["securityContext"]));
    }
    all
}

// ---- baseline ----

pub fn host_process(pod: &Value) -> Vec<String> {
    contexts(pod)
        .into_iter()
        .filter(|(_, sc)| sc["windowsOptions"]["hostProcess"] == true)
        .map(|(who, _)| format!("{who} sets windowsOptions.hostProcess"))
        .collect()
}

pub fn host_namespaces(pod: &Value) -> Vec<String> {
    ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|key| pod[**key] == true)
        .map(|key| format!("the pod sets {key}: true"))
        .collect()
}

pub fn privileged(pod: &Value) -> Vec<String> {
    containers(pod)
        .into_iter()
        .filter(|c| c["securityContext"]["privileged"] == true)
        .map(|c| format!("container {} is privileged", name(c)))
        .collect()
}

pub fn host_ports(pod: &Value) -> Vec<String> {
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

pub fn host_probes(pod: &Value) -> Vec<String> {
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

pub fn app_armor(pod: &Value) -> Vec<String> {
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

pub fn se_linux(pod: &Value) -> Vec<String> {
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

pub fn proc_mount(pod: &Value) -> Vec<String> {
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

pub fn sysctls(pod: &Value) -> Vec<String> {
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

pub fn volume_types(pod: &Value) -> Vec<String> {
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

pub fn privilege_escalation(pod: &Value) -> Vec<String> {
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

pub fn run_as_non_root(pod: &Value) -> Vec<String> {
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

pub fn run_as_user(pod: &Value) -> Vec<String> {
    contexts(pod)
        .into_iter()
        .filter(|(_, sc)| sc["runAsUser"] == 0)
        .map(|(who, _)| format!("{who} sets runAsUser: 0"))
        .collect()
}

pub fn seccomp(pod: &Value) -> Vec<String> {
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

pub fn capabilities(pod: &Value) -> Vec<String> {
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

pub fn resources(pod: &Value) -> Vec<String> {
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

pub fn probes(pod: &Value) -> Vec<String> {
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

/// What breaks the rules in a pod spec, each line naming the rule.
pub fn violations(spec: &Value, rules: &[Named]) -> Vec<String> {
    rules
        .iter()
        .flat_map(|(rule, check)| check(spec).into_iter().map(move |v| format!("{rule}: {v}")))
        .collect()
}

pub fn restricted_rules() -> Vec<Named> {
    RULES.iter().map(|r| (r.name, r.check)).collect()
}
