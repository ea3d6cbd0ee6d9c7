//! What keepalive-shim adds to a pod passes the `restricted` Pod Security Standard, checked
//! rule by rule (tests/support/pss.rs holds the rules as a table): the init container on its
//! own (no help from a pod-level security context) and the volume, for both deliveries. Each
//! rule is shown to catch what it is for, so this test can fail.

mod support;

use keepalive_shim_kube::{Config, Delivery, INIT_CONTAINER, VOLUME, mutate_pod};
use serde_json::{Value, json};
use support::pss::{RULES, violations};
use support::*;

/// What the mutation adds to the plain pod: a spec with only our volume, and our init
/// container (or, with an image volume, a container that only mounts it).
fn ours(delivery: Delivery) -> (Value, Value) {
    let pod = json("plain-replicaset.json")["request"]["object"].clone();
    let config = Config {
        delivery,
        ..Config::default()
    };
    let mutated = mutate_pod(&pod, &config).pod;
    let volume = mutated["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == VOLUME)
        .unwrap()
        .clone();
    let spec = json!({ "volumes": [volume] });
    let init = mutated["spec"]["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == INIT_CONTAINER))
        .cloned();
    (spec, init.unwrap_or(Value::Null))
}

#[test]
fn the_init_container_and_its_volume_are_restricted() {
    let (spec, init) = ours(Delivery::Copy);
    assert_eq!(violations(&spec, &init), Vec::<String>::new());
    // Explicit requests and limits, so quotas and LimitRanges accept the pod.
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                init["resources"][kind][resource].is_string(),
                "{kind}.{resource}"
            );
        }
    }
}

#[test]
fn the_image_volume_is_restricted_too() {
    let (spec, init) = ours(Delivery::ImageVolume);
    assert!(init.is_null(), "no init container with an image volume");
    let (_, copy_init) = ours(Delivery::Copy);
    assert_eq!(violations(&spec, &copy_init), Vec::<String>::new());
}

#[test]
fn every_rule_catches_what_it_is_for() {
    type Break = fn(&mut Value, &mut Value);
    let broken: &[(&str, Break)] = &[
        ("host namespaces", |s, _| s["hostNetwork"] = true.into()),
        ("privileged containers", |_, c| {
            c["securityContext"]["privileged"] = true.into()
        }),
        ("HostProcess", |_, c| {
            c["securityContext"]["windowsOptions"] = json!({"hostProcess": true})
        }),
        ("hostPath volumes", |s, _| {
            s["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}])
        }),
        ("host ports", |_, c| {
            c["ports"] = json!([{"containerPort": 80, "hostPort": 80}])
        }),
        ("AppArmor", |_, c| {
            c["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"})
        }),
        ("SELinux", |_, c| {
            c["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"})
        }),
        ("/proc mount type", |_, c| {
            c["securityContext"]["procMount"] = "Unmasked".into()
        }),
        (
            "sysctls",
            |s, _| {
                s["securityContext"] = json!({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]})
            },
        ),
        (
            "volume types",
            |s, _| s["volumes"] = json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
        ),
        ("privilege escalation", |_, c| {
            c["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("allowPrivilegeEscalation");
        }),
        ("running as non-root", |_, c| {
            c["securityContext"]["runAsNonRoot"] = false.into()
        }),
        ("running as a non-root user", |_, c| {
            c["securityContext"]["runAsUser"] = 0.into()
        }),
        ("seccomp", |_, c| {
            c["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})
        }),
        ("capabilities", |_, c| {
            c["securityContext"]["capabilities"]["add"] = json!(["NET_RAW"])
        }),
    ];
    assert_eq!(broken.len(), RULES.len(), "one broken case per rule");
    for (rule, breaking) in broken {
        let (mut spec, mut init) = ours(Delivery::Copy);
        breaking(&mut spec, &mut init);
        let found = violations(&spec, &init);
        assert!(
            found.iter().any(|f| f.starts_with(&format!("{rule}: "))),
            "{rule}: {found:?}"
        );
    }
}
