//! The `restricted` Pod Security Standard (Kubernetes' "latest" version of it, as the Pod
//! Security admission controller checks it), written as a table of rules: each rule looks at a
//! pod's spec and one of its containers and says what it finds wrong. From
//! kubernetes.io/docs/concepts/security/pod-security-standards (baseline and restricted
//! controls), with image volumes allowed since 1.33 (kubernetes/kubernetes#130394).

use serde_json::Value;

/// A rule: its name, and the problem it finds in (pod spec, container), if any.
pub type Check = fn(&Value, &Value) -> Option<String>;

pub const RULES: &[(&str, Check)] = &[
    ("host namespaces", host_namespaces),
    ("privileged containers", privileged),
    ("HostProcess", host_process),
    ("hostPath volumes", host_path),
    ("host ports", host_ports),
    ("AppArmor", app_armor),
    ("SELinux", se_linux),
    ("/proc mount type", proc_mount),
    ("sysctls", sysctls),
    ("volume types", volume_types),
    ("privilege escalation", privilege_escalation),
    ("running as non-root", run_as_non_root),
    ("running as a non-root user", run_as_user),
    ("seccomp", seccomp),
    ("capabilities", capabilities),
];

/// Every rule the pod's `container` breaks, as "rule: problem".
pub fn violations(spec: &Value, container: &Value) -> Vec<String> {
    RULES
        .iter()
        .filter_map(|(name, check)| check(spec, container).map(|why| format!("{name}: {why}")))
        .collect()
}

fn ctx<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get("securityContext").and_then(|s| s.get(key))
}

fn host_namespaces(spec: &Value, _: &Value) -> Option<String> {
    ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .find(|k| spec.get(*k) == Some(&Value::Bool(true)))
        .map(|k| format!("{k} is true"))
}

fn privileged(_: &Value, c: &Value) -> Option<String> {
    (ctx(c, "privileged") == Some(&Value::Bool(true))).then(|| "privileged is true".into())
}

fn host_process(spec: &Value, c: &Value) -> Option<String> {
    let on = |v: &Value| {
        ctx(v, "windowsOptions").and_then(|w| w.get("hostProcess")) == Some(&Value::Bool(true))
    };
    (on(spec) || on(c)).then(|| "windowsOptions.hostProcess is true".into())
}

fn volumes(spec: &Value) -> impl Iterator<Item = &Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn host_path(spec: &Value, _: &Value) -> Option<String> {
    volumes(spec)
        .find(|v| v.get("hostPath").is_some())
        .map(|v| format!("volume {} is a hostPath", v["name"]))
}

fn host_ports(_: &Value, c: &Value) -> Option<String> {
    c.get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("hostPort").and_then(Value::as_u64).unwrap_or(0) != 0)
        .map(|p| format!("hostPort {}", p["hostPort"]))
}

fn app_armor(spec: &Value, c: &Value) -> Option<String> {
    for v in [spec, c] {
        if let Some(kind) = ctx(v, "appArmorProfile").and_then(|p| p.get("type"))
            && kind != "RuntimeDefault"
            && kind != "Localhost"
        {
            return Some(format!("appArmorProfile.type {kind}"));
        }
    }
    None
}

fn se_linux(spec: &Value, c: &Value) -> Option<String> {
    const TYPES: [&str; 5] = [
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    for v in [spec, c] {
        let Some(options) = ctx(v, "seLinuxOptions") else {
            continue;
        };
        let kind = options.get("type").and_then(Value::as_str).unwrap_or("");
        if !TYPES.contains(&kind) {
            return Some(format!("seLinuxOptions.type {kind}"));
        }
        if options.get("user").is_some() || options.get("role").is_some() {
            return Some("seLinuxOptions.user or role set".into());
        }
    }
    None
}

fn proc_mount(_: &Value, c: &Value) -> Option<String> {
    ctx(c, "procMount")
        .filter(|m| *m != "Default")
        .map(|m| format!("procMount {m}"))
}

fn sysctls(spec: &Value, _: &Value) -> Option<String> {
    const SAFE: [&str; 10] = [
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
    ctx(spec, "sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .find(|name| !SAFE.contains(name))
        .map(|name| format!("sysctl {name}"))
}

fn volume_types(spec: &Value, _: &Value) -> Option<String> {
    const ALLOWED: [&str; 9] = [
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
    volumes(spec)
        .filter_map(Value::as_object)
        .flat_map(|v| v.keys())
        .find(|k| *k != "name" && !ALLOWED.contains(&k.as_str()))
        .map(|k| format!("a {k} volume"))
}

fn privilege_escalation(_: &Value, c: &Value) -> Option<String> {
    (ctx(c, "allowPrivilegeEscalation") != Some(&Value::Bool(false)))
        .then(|| "allowPrivilegeEscalation is not false".into())
}

fn run_as_non_root(spec: &Value, c: &Value) -> Option<String> {
    let container = ctx(c, "runAsNonRoot").and_then(Value::as_bool);
    let pod = ctx(spec, "runAsNonRoot").and_then(Value::as_bool);
    match (container, pod) {
        (Some(true), _) | (None, Some(true)) => None,
        _ => Some("runAsNonRoot is not true".into()),
    }
}

fn run_as_user(spec: &Value, c: &Value) -> Option<String> {
    [spec, c]
        .into_iter()
        .any(|v| ctx(v, "runAsUser").and_then(Value::as_u64) == Some(0))
        .then(|| "runAsUser is 0".into())
}

fn seccomp(spec: &Value, c: &Value) -> Option<String> {
    let kind = |v: &Value| {
        ctx(v, "seccompProfile")
            .and_then(|p| p.get("type"))
            .cloned()
    };
    match kind(c).or_else(|| kind(spec)) {
        Some(k) if k == "RuntimeDefault" || k == "Localhost" => None,
        Some(k) => Some(format!("seccompProfile.type {k}")),
        None => Some("no seccompProfile".into()),
    }
}

fn capabilities(_: &Value, c: &Value) -> Option<String> {
    let caps = ctx(c, "capabilities");
    let list = |key: &str| -> Vec<String> {
        caps.and_then(|c| c.get(key))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    if !list("drop").iter().any(|d| d == "ALL") {
        return Some("capabilities.drop lacks ALL".into());
    }
    list("add")
        .into_iter()
        .find(|a| a != "NET_BIND_SERVICE")
        .map(|a| format!("capability {a} added"))
}
