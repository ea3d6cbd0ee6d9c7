//! The webhook's answers, as the API server would see them: each fixture AdmissionReview
//! (written to the v1 schema as the API server sends it, after the ServiceAccount plugin added
//! its token volume) is answered by `review`, the answer's patch applied with the json-patch
//! crate and the result compared with a golden pod; a second pass over every golden pod changes
//! nothing; every golden pod validates against several Kubernetes versions' schemas. Goldens
//! are rewritten only with `KEEPALIVE_SHIM_BLESS=1`.

mod support;

use keepalive_shim_kube::{Config, Delivery, Outcome, Skip, review};
use serde_json::Value;
use support::*;

/// One fixture: its file, the configuration, what the answer must say.
struct Case {
    fixture: &'static str,
    image_volume: bool,
    outcome: Outcome,
    /// Each warning must contain one of these, in order; no other warnings.
    warnings: &'static [&'static str],
    /// `Some(status)`: the status annotation the golden pod carries; `None`: no patch at all.
    status: Option<&'static str>,
}

const DEFAULTS: &str = r#"{"web":"injected"}"#;

fn cases() -> Vec<Case> {
    use Outcome::*;
    vec![
        Case {
            fixture: "plain-replicaset",
            image_volume: false,
            outcome: Injected,
            warnings: &[],
            status: Some(DEFAULTS),
        },
        Case {
            fixture: "plain-replicaset",
            image_volume: true,
            outcome: Injected,
            warnings: &[],
            status: Some(DEFAULTS),
        },
        Case {
            fixture: "ld-preload-literal",
            image_volume: false,
            outcome: Injected,
            warnings: &[],
            status: Some(r#"{"cache":"injected; LD_PRELOAD keeps its other entries"}"#),
        },
        Case {
            fixture: "ld-preload-valuefrom",
            image_volume: false,
            outcome: Injected,
            warnings: &[
                "container \"report\" was not given keepalive-shim: its LD_PRELOAD is \
                         set with valueFrom",
            ],
            status: Some(
                r#"{"log-shipper":"injected","report":"skipped: its LD_PRELOAD is set with valueFrom, which keepalive-shim cannot read and leaves alone (add /keepalive-shim/libkeepalive_shim.so to that value to preload the library)"}"#,
            ),
        },
        Case {
            fixture: "keepalive-env-set",
            image_volume: false,
            outcome: Injected,
            warnings: &[],
            status: Some(
                r#"{"ledger":"injected; its own KEEPALIVE_IDLE, KEEPCNT kept over the annotations"}"#,
            ),
        },
        Case {
            fixture: "opt-out-label",
            image_volume: false,
            outcome: Skipped(Skip::OptedOut),
            warnings: &[],
            status: None,
        },
        Case {
            fixture: "opt-out-annotation",
            image_volume: false,
            outcome: Skipped(Skip::OptedOut),
            warnings: &[],
            status: None,
        },
        Case {
            fixture: "good-annotations",
            image_volume: false,
            outcome: Injected,
            warnings: &[],
            status: Some(r#"{"orders":"injected"}"#),
        },
        Case {
            fixture: "bad-annotations",
            image_volume: false,
            outcome: Injected,
            warnings: &[
                "keepalive-shim.io/idle=\"0\" is not whole seconds from 1 to 32767 (like 30, \
                 90s, 2m); not passed on, so the default applies",
                "keepalive-shim.io/count=\"many\" is not a whole number from 1 to 127",
                "keepalive-shim.io/user-timeout=\"-1\" is not a duration from 0 to 2147483647ms",
                "keepalive-shim.io/force=\"maybe\" is not one of 1/0, true/false, on/off, yes/no",
                "keepalive-shim.io/exclude: entry \"10.0.0.0/88\" is not an IP address, a CIDR \
                 range",
                "unknown annotation keepalive-shim.io/idel",
            ],
            status: Some(r#"{"search":"injected"}"#),
        },
        Case {
            fixture: "several-containers",
            image_volume: false,
            outcome: Injected,
            warnings: &[],
            status: Some(r#"{"checkout":"injected","metrics":"injected"}"#),
        },
        Case {
            fixture: "no-volumes",
            image_volume: false,
            outcome: Injected,
            warnings: &[],
            status: Some(r#"{"debug":"injected"}"#),
        },
        Case {
            fixture: "already-injected",
            image_volume: false,
            outcome: Skipped(Skip::AlreadyInjected),
            warnings: &[],
            status: None,
        },
        Case {
            fixture: "windows",
            image_volume: false,
            outcome: Skipped(Skip::Windows),
            warnings: &[],
            status: None,
        },
        Case {
            fixture: "hand-made",
            image_volume: false,
            outcome: Skipped(Skip::Conflict),
            warnings: &[
                "keepalive-shim left this pod alone: it already has a volume named \
                         keepalive-shim that keepalive-shim did not add",
            ],
            status: None,
        },
    ]
}

fn config(image_volume: bool) -> Config {
    Config {
        delivery: if image_volume {
            Delivery::ImageVolume
        } else {
            Delivery::Copy
        },
        ..Config::default()
    }
}

fn golden_name(case: &Case) -> String {
    let suffix = if case.image_volume {
        ".image-volume"
    } else {
        ""
    };
    format!("{}{suffix}.golden.json", case.fixture)
}

/// Answers one fixture and checks the answer against the case; the pod after the patch.
fn answer(case: &Case) -> Value {
    let body = read(&format!("{}.json", case.fixture));
    let request: Value = serde_json::from_slice(&body).unwrap();
    let uid = request["request"]["uid"].as_str().unwrap();
    let object = &request["request"]["object"];
    let reviewed = review(&body, &config(case.image_volume));
    let what = golden_name(case);
    assert_eq!(reviewed.outcome, case.outcome, "{what}");
    assert_eq!(
        reviewed.warnings.len(),
        case.warnings.len(),
        "{what}: {:#?}",
        reviewed.warnings
    );
    for (got, want) in reviewed.warnings.iter().zip(case.warnings) {
        assert!(got.contains(want), "{what}: warning {got:?} lacks {want:?}");
    }
    let response = response(reviewed.response.as_deref().expect("an answer"), uid);
    match (patched(object, &response), case.status) {
        (None, None) => object.clone(),
        (Some(pod), Some(status)) => {
            assert_eq!(
                pod["metadata"]["annotations"]["keepalive-shim.io/status"], status,
                "{what}"
            );
            pod
        }
        (got, _) => panic!(
            "{what}: patch {:?}, expected {:?}",
            got.is_some(),
            case.status
        ),
    }
}

#[test]
fn every_fixture_is_answered_as_its_golden_pod() {
    for case in cases() {
        let pod = answer(&case);
        if case.status.is_some() {
            golden(&golden_name(&case), &pretty(&pod));
        }
    }
}

#[test]
fn a_second_pass_over_every_golden_pod_changes_nothing() {
    for case in cases().iter().filter(|c| c.status.is_some()) {
        let name = golden_name(case);
        let pod = json(&name);
        let body = serde_json::to_vec(&request_for(&pod, "second-pass", "shop")).unwrap();
        let reviewed = review(&body, &config(case.image_volume));
        let response = response(reviewed.response.as_deref().unwrap(), "second-pass");
        assert!(
            response.get("patch").is_none(),
            "{name}: the second pass patched: {response}"
        );
        assert_eq!(
            reviewed.outcome,
            Outcome::Skipped(Skip::AlreadyInjected),
            "{name}"
        );
        assert_eq!(reviewed.warnings.len(), case.warnings.len(), "{name}");
    }
}

/// The API server sends the reinvocation the pod as it stored it: with its own defaults in our
/// init container. The fixture is the plain pod's golden with those defaults, and a mount
/// another webhook added to the container after us; it must still be left as it is.
#[test]
fn the_already_injected_fixture_is_the_golden_pod_after_the_api_servers_defaults() {
    let fixture = json("already-injected.json");
    let golden = json("plain-replicaset.golden.json");
    let mut expected = golden.clone();
    let init = &mut expected["spec"]["initContainers"][0];
    init["terminationMessagePath"] = "/dev/termination-log".into();
    expected["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tmp", "mountPath": "/tmp"}));
    expected["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tmp", "emptyDir": {}}));
    assert_eq!(fixture["request"]["object"], expected);
}

#[test]
fn every_golden_pod_is_valid_for_several_kubernetes_versions() {
    let mut copies = Vec::new();
    let mut images = Vec::new();
    for case in cases().iter().filter(|c| c.status.is_some()) {
        let name = golden_name(case);
        let pod = (name.clone(), json(&name));
        if case.image_volume {
            images.push(pod);
        } else {
            copies.push(pod);
        }
    }
    let Some(copy_failures) = validate(&copies, &KUBERNETES) else {
        return;
    };
    let image_failures = validate(&images, &KUBERNETES_IMAGE_VOLUME).unwrap_or_default();
    assert!(
        copy_failures.is_empty() && image_failures.is_empty(),
        "{copy_failures}{image_failures}"
    );
}

/// The patch's operations, decoded.
fn operations(fixture: &str) -> Vec<Value> {
    let body = read(fixture);
    let request: Value = serde_json::from_slice(&body).unwrap();
    let reviewed = review(&body, &Config::default());
    let uid = request["request"]["uid"].as_str().unwrap();
    let response = response(reviewed.response.as_deref().unwrap(), uid);
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        response["patch"].as_str().unwrap(),
    )
    .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn the_patch_escapes_keys_and_adds_whole_lists_where_there_were_none() {
    let ops = operations("no-volumes.json");
    let paths: Vec<&str> = ops.iter().map(|op| op["path"].as_str().unwrap()).collect();
    for whole in [
        "/metadata/annotations",
        "/spec/volumes",
        "/spec/initContainers",
    ] {
        assert!(
            paths.contains(&whole),
            "{whole} absent before: added whole: {paths:?}"
        );
    }
    let ops = operations("good-annotations.json");
    let paths: Vec<&str> = ops.iter().map(|op| op["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"/metadata/annotations/keepalive-shim.io~1status"),
        "{paths:?}"
    );
}

/// The validation above can fail: an unknown field in the init container, or an image volume
/// for a Kubernetes version without them, is refused.
#[test]
fn schema_validation_refuses_what_kubernetes_would() {
    let mut pod = json("plain-replicaset.golden.json");
    pod["spec"]["initContainers"][0]["sizeLimit"] = "1Mi".into();
    let Some(failures) = validate(&[("unknown-field".into(), pod)], &["1.33.0"]) else {
        return;
    };
    assert!(failures.contains("sizeLimit"), "{failures}");
    let image = json("plain-replicaset.image-volume.golden.json");
    let failures = validate(&[("image-volume".into(), image)], &["1.29.0"]).unwrap();
    assert!(failures.contains("image"), "{failures}");
}

/// For log lines: the namespace from the request (the pod's own may be empty), the name or the
/// `generateName` the API server will complete.
#[test]
fn the_pod_is_named_for_logs_as_the_api_server_will_name_it() {
    for (fixture, expected) in [
        ("plain-replicaset", "shop/web-7d4b9c6f5d-*"),
        ("no-volumes", "tools/debug"),
    ] {
        let reviewed = review(&read(&format!("{fixture}.json")), &Config::default());
        assert_eq!(reviewed.pod, expected);
    }
    let reviewed = review(b"{", &Config::default());
    assert_eq!(reviewed.pod, "");
}
