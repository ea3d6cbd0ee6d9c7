//! Bodies that are not what the API server sends: truncated, not JSON, the wrong kind, too
//! large, fields of the wrong type. Each gets a clear error (and, where a uid can be read, an
//! answer that allows the pod), never a panic; and whatever shape a pod has, a second pass
//! over the mutated pod changes nothing. A small mutation loop over the fixtures, as
//! cli/src/reach.rs's tests do over ELF headers.

mod support;

use keepalive_shim_kube::{
    Config, Error, Outcome, Skip, WARNING_MAX, WARNINGS_TOTAL, mutate_pod, review,
};
use serde_json::{Value, json};
use support::*;

const FIXTURES: [&str; 14] = [
    "plain-replicaset",
    "ld-preload-literal",
    "ld-preload-valuefrom",
    "keepalive-env-set",
    "opt-out-label",
    "opt-out-annotation",
    "good-annotations",
    "bad-annotations",
    "several-containers",
    "no-volumes",
    "already-injected",
    "windows",
    "hand-made",
    "plain-replicaset.golden",
];

fn failed(body: &[u8]) -> (Error, Option<Value>) {
    let reviewed = review(body, &Config::default());
    let Outcome::Failed(error) = reviewed.outcome else {
        panic!("not an error: {:?}", reviewed.outcome);
    };
    let response = reviewed
        .response
        .map(|r| serde_json::from_slice(&r).expect("an answer is JSON"));
    (error, response)
}

#[test]
fn truncated_bodies_are_not_json_and_get_no_answer() {
    let body = read("plain-replicaset.json");
    for len in (0..body.len() - 1).step_by(7) {
        let (error, response) = failed(&body[..len]);
        assert!(matches!(error, Error::NotJson(_)), "{len}: {error}");
        assert!(response.is_none());
        assert!(
            error
                .to_string()
                .starts_with("the request body is not JSON: ")
        );
    }
}

#[test]
fn garbage_is_refused_with_a_clear_error() {
    for (body, kind, message) in [
        (
            &b""[..],
            "not_json",
            "the request body is not JSON: EOF while parsing",
        ),
        (
            b"GET / HTTP/1.1\r\n\r\n",
            "not_json",
            "the request body is not JSON",
        ),
        (b"\xff\xfe\x00", "not_json", "the request body is not JSON"),
        (
            b"[]",
            "not_admission_review",
            "the body is a list, not an object",
        ),
        (
            b"{}",
            "not_admission_review",
            "apiVersion \"\" and kind \"\"",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "not_admission_review",
            "it has no request object",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
            "no_uid",
            "has no request.uid",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
            "no_uid",
            "has no request.uid",
        ),
    ] {
        let (error, response) = failed(body);
        assert_eq!(error.kind(), kind, "{error}");
        assert!(error.to_string().contains(message), "{error}");
        assert!(response.is_none(), "nothing to answer without a uid");
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (error, _) = failed(deep.as_bytes());
    assert!(error.to_string().contains("recursion limit"), "{error}");
}

/// A request with a uid is answered `allowed: true` whatever is wrong with it, with a warning
/// saying what.
#[test]
fn wrong_requests_with_a_uid_are_allowed_with_a_warning() {
    let plain = json("plain-replicaset.json");
    type Change = fn(&mut Value);
    let cases: [(Change, &str); 6] = [
        (
            |r| r["apiVersion"] = "admission.k8s.io/v1beta1".into(),
            "apiVersion \"admission.k8s.io/v1beta1\" and kind \"AdmissionReview\"",
        ),
        (
            |r| {
                r["request"]["kind"] =
                    json!({"group": "apps", "version": "v1", "kind": "Deployment"});
                r["request"]["resource"] =
                    json!({"group": "apps", "version": "v1", "resource": "deployments"});
            },
            "about Deployment apps/v1 (resource deployments), operation CREATE, not a pod",
        ),
        (
            |r| r["request"]["operation"] = "UPDATE".into(),
            "about Pod v1 (resource pods), operation UPDATE",
        ),
        (
            |r| r["request"]["subResource"] = "ephemeralcontainers".into(),
            "(resource pods/ephemeralcontainers)",
        ),
        (
            |r| r["request"]["object"] = Value::Null,
            "request.object is not a pod object",
        ),
        (
            |r| r["request"]["kind"]["kind"] = "Pod\u{1b}[31m\n".into(),
            "about Pod\\u{1b}[31m\\n v1",
        ),
    ];
    for (change, message) in cases {
        let mut request = plain.clone();
        change(&mut request);
        let body = serde_json::to_vec(&request).unwrap();
        let reviewed = review(&body, &Config::default());
        assert!(matches!(reviewed.outcome, Outcome::Failed(_)), "{message}");
        let answer = response(
            reviewed.response.as_deref().unwrap(),
            "7e3f1a52-0c4b-4d8e-a1f2-5b6c7d8e9f01",
        );
        assert!(answer.get("patch").is_none());
        let warning = answer["warnings"][0].as_str().unwrap();
        assert!(
            warning.starts_with("keepalive-shim did not inject this pod: ")
                && warning.contains(message),
            "{warning}"
        );
        assert!(!warning.chars().any(char::is_control), "{warning:?}");
    }
}

#[test]
fn oversized_bodies_are_refused_before_reading() {
    let body = read("plain-replicaset.json");
    let small = Config {
        max_body: body.len() - 1,
        ..Config::default()
    };
    let reviewed = review(&body, &small);
    assert_eq!(
        reviewed.outcome,
        Outcome::Failed(Error::TooLarge {
            size: body.len(),
            max: body.len() - 1
        })
    );
    assert!(reviewed.response.is_none());
    let exact = Config {
        max_body: body.len(),
        ..Config::default()
    };
    assert_eq!(review(&body, &exact).outcome, Outcome::Injected);
    let huge = vec![b' '; Config::default().max_body + 1];
    assert!(matches!(
        review(&huge, &Config::default()).outcome,
        Outcome::Failed(Error::TooLarge { .. })
    ));
}

/// Pods of the wrong shape are left alone with a warning, not refused.
#[test]
fn pods_of_the_wrong_shape_are_left_alone() {
    let plain = json("plain-replicaset.json");
    for change in [
        |p: &mut Value| p["spec"]["containers"] = json!({}),
        |p: &mut Value| p["spec"] = json!([]),
        |p: &mut Value| p["metadata"] = json!("x"),
        |p: &mut Value| p["metadata"]["annotations"] = json!([1]),
        |p: &mut Value| p["spec"]["volumes"] = json!(5),
        |p: &mut Value| p["spec"]["initContainers"] = json!("x"),
    ] {
        let mut request = plain.clone();
        change(&mut request["request"]["object"]);
        let body = serde_json::to_vec(&request).unwrap();
        let reviewed = review(&body, &Config::default());
        assert_eq!(reviewed.outcome, Outcome::Skipped(Skip::Invalid));
        assert!(reviewed.warnings[0].starts_with("keepalive-shim left this pod alone: "));
        let answer = response(
            reviewed.response.as_deref().unwrap(),
            "7e3f1a52-0c4b-4d8e-a1f2-5b6c7d8e9f01",
        );
        assert!(answer.get("patch").is_none());
    }
    // One container of the wrong shape is skipped; the others are injected.
    let mut pod = json("several-containers.json")["request"]["object"].clone();
    pod["spec"]["containers"][1]["env"] = json!("LD_PRELOAD=x");
    let mutation = mutate_pod(&pod, &Config::default());
    assert_eq!(mutation.skipped, None);
    assert_eq!(
        mutation.containers[1].1.to_string(),
        "skipped: its env is not a list"
    );
}

/// Warnings stay within what the API server passes on: each at most 256 characters, all of
/// them within 4 KiB, on one line.
#[test]
fn warnings_are_bounded() {
    let mut request = json("plain-replicaset.json");
    let annotations: serde_json::Map<String, Value> = (0..200)
        .map(|i| (format!("keepalive-shim.io/typo{i}"), json!("x")))
        .chain([(
            "keepalive-shim.io/exclude".to_owned(),
            json!(format!("{}\n", "bad".repeat(500))),
        )])
        .collect();
    request["request"]["object"]["metadata"]["annotations"] = Value::Object(annotations);
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, &Config::default());
    assert_eq!(reviewed.outcome, Outcome::Injected);
    let total: usize = reviewed.warnings.iter().map(String::len).sum();
    assert!(total <= WARNINGS_TOTAL, "{total}");
    for warning in &reviewed.warnings {
        assert!(warning.chars().count() <= WARNING_MAX, "{warning}");
        assert!(!warning.chars().any(char::is_control), "{warning:?}");
    }
}

/// xorshift64: the same sequence on every run, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Random byte edits of every fixture: never a panic; any answer is JSON that allows the pod.
#[test]
fn mutated_bodies_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for fixture in FIXTURES {
        let original = read(&format!("{fixture}.json"));
        for _ in 0..300 {
            let mut body = original.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(body.len());
                match rng.below(4) {
                    0 => body[at] = rng.next() as u8,
                    1 => body[at] = b"{}[]\",:0n\\"[rng.below(10)],
                    2 => {
                        let end = (at + rng.below(40)).min(body.len());
                        body.drain(at..end);
                    }
                    _ => {
                        let end = (at + rng.below(40)).min(body.len());
                        let copy = body[at..end].to_vec();
                        let to = rng.below(body.len());
                        body.splice(to..to, copy);
                    }
                }
                if body.is_empty() {
                    break;
                }
            }
            let reviewed = review(&body, &Config::default());
            if let Some(answer) = reviewed.response {
                let answer: Value = serde_json::from_slice(&answer).expect("JSON");
                assert_eq!(answer["response"]["allowed"], true);
            }
        }
    }
}

/// Values that make a pod's shape interesting to the mutation.
fn odd_value(rng: &mut Rng) -> Value {
    let values = [
        Value::Null,
        json!(0),
        json!(true),
        json!(""),
        json!("windows"),
        json!("false"),
        json!([]),
        json!({}),
        json!([{}]),
        json!([{"name": "LD_PRELOAD", "value": "/a.so"}]),
        json!([{"name": "LD_PRELOAD", "valueFrom": {}}]),
        json!([{"name": "keepalive-shim", "emptyDir": {}}]),
        json!([{"name": "keepalive-shim", "mountPath": "/keepalive-shim"}]),
        json!([{"name": "other", "mountPath": "/keepalive-shim/x"}]),
        json!([{"name": "keepalive-shim-copy", "image": "x"}]),
        json!({"keepalive-shim.io/idle": "5", "keepalive-shim.io/count": "x"}),
        json!({"keepalive-shim.io/inject": "false"}),
        json!({"name": "keepalive-shim"}),
        json!("/keepalive-shim/libkeepalive_shim.so"),
    ];
    values[rng.below(values.len())].clone()
}

/// Every JSON pointer in `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                pointers(inner, format!("{at}/{key}"), out);
            }
        }
        Value::Array(list) => {
            for (i, inner) in list.iter().enumerate() {
                pointers(inner, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Random structural edits of every fixture's pod (a field replaced by a value of another type,
/// by one of ours, or removed): the mutation never panics, its patch applies, and a second pass
/// over the mutated pod changes nothing.
#[test]
fn whatever_the_pod_a_second_pass_changes_nothing() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let config = Config::default();
    let (mut changed, mut runs) = (0, 0);
    for fixture in FIXTURES {
        let request = json(&format!("{fixture}.json"));
        let original = request["request"]
            .get("object")
            .cloned()
            .unwrap_or_else(|| request.clone());
        let mut all = Vec::new();
        pointers(&original, String::new(), &mut all);
        for _ in 0..300 {
            let mut pod = original.clone();
            for _ in 0..1 + rng.below(3) {
                let at = &all[rng.below(all.len())];
                if at.is_empty() {
                    continue;
                }
                if rng.below(4) == 0 {
                    let (parent, key) = at.rsplit_once('/').unwrap();
                    if let Some(Value::Object(map)) = pod.pointer_mut(parent) {
                        map.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                } else if let Some(slot) = pod.pointer_mut(at) {
                    *slot = odd_value(&mut rng);
                }
            }
            let first = mutate_pod(&pod, &config);
            runs += 1;
            changed += usize::from(first.changed);
            let patch = json_patch::diff(&pod, &first.pod);
            let mut applied = pod.clone();
            json_patch::patch(&mut applied, &patch).expect("the patch applies");
            assert_eq!(applied, first.pod);
            let second = mutate_pod(&first.pod, &config);
            assert!(
                !second.changed,
                "{fixture}: a second pass changed\n{}\ninto\n{}",
                pretty(&first.pod),
                pretty(&second.pod)
            );
        }
    }
    // The edits leave many pods injectable and make many not: both sides are exercised.
    assert!(
        changed > runs / 4 && changed < runs * 3 / 4,
        "{changed} of {runs}"
    );
}
