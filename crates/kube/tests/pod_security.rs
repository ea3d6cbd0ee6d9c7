//! What keepalive-shim adds to a pod passes the `restricted` Pod Security Standard and the
//! project's rule of explicit resources, checked with the project's one table of rules
//! (tests/common/pss.rs, whose every rule tests/pod_security.rs shows to catch what it is for):
//! the init container on its own (no help from a pod-level security context) and the volume,
//! for both deliveries.

mod support;

use keepalive_shim_kube::{Config, Delivery, INIT_CONTAINER, VOLUME, mutate_pod};
use serde_json::{Value, json};
use support::common::pss::{restricted_rules, violations};
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
    let init = mutated["spec"]["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == INIT_CONTAINER))
        .cloned();
    let spec = match &init {
        Some(c) => json!({ "volumes": [volume], "initContainers": [c] }),
        None => json!({ "volumes": [volume] }),
    };
    (spec, init.unwrap_or(Value::Null))
}

#[test]
fn the_init_container_and_its_volume_are_restricted() {
    let (spec, init) = ours(Delivery::Copy);
    assert_eq!(violations(&spec, &restricted_rules()), Vec::<String>::new());
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
    assert_eq!(violations(&spec, &restricted_rules()), Vec::<String>::new());
}
