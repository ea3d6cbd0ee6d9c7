//! What this crate's tests share: the fixtures, golden files that `KEEPALIVE_SHIM_BLESS=1`
//! rewrites (and nothing else does), applying an answer's patch, and `kubernetes-validate`.
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

#[path = "../../../../tests/common/mod.rs"]
pub mod common;

/// crates/kube's fixtures, from the workspace's root: the same folder whichever package's
/// tests include this module (the webhook's in cli/tests too).
pub fn fixtures() -> PathBuf {
    common::root().join("crates/kube/tests/fixtures")
}

pub fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json(name: &str) -> Value {
    serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Whether golden files are being rewritten (`KEEPALIVE_SHIM_BLESS=1`).
pub fn blessing() -> bool {
    std::env::var("KEEPALIVE_SHIM_BLESS").as_deref() == Ok("1")
}

/// Compares `got` with the golden file `name` (or writes it, when blessing). Returns the path.
pub fn golden(name: &str, got: &str) -> PathBuf {
    let path = fixtures().join(name);
    if blessing() {
        std::fs::write(&path, got).unwrap();
        return path;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (KEEPALIVE_SHIM_BLESS=1 cargo test -p keepalive-shim-kube writes it)",
            path.display()
        )
    });
    assert!(
        want == got,
        "{name} differs from what was made (KEEPALIVE_SHIM_BLESS=1 rewrites it; review the \
         diff):\n--- golden\n{want}\n--- made\n{got}"
    );
    path
}

/// Pretty JSON with a final newline, as the goldens are written.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    text
}

/// The response of an AdmissionReview answer, checked for what every answer must be: v1,
/// the request's uid, allowed.
pub fn response(answer: &[u8], uid: &str) -> Value {
    let review: Value = serde_json::from_slice(answer).expect("the answer is JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = review["response"].clone();
    assert_eq!(response["uid"], uid);
    assert_eq!(response["allowed"], true, "fail open: every answer allows");
    response
}

/// `object` with the response's patch applied, as the API server applies it; `None` when the
/// response has no patch.
pub fn patched(object: &Value, response: &Value) -> Option<Value> {
    let encoded = response.get("patch")?.as_str().expect("patch is a string");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is a JSON Patch");
    assert!(
        !patch.0.is_empty(),
        "a patch is sent only when there is something to change"
    );
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies");
    Some(object)
}

/// An AdmissionReview request for `pod` (CREATE in `namespace`).
pub fn request_for(pod: &Value, uid: &str, namespace: &str) -> Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false,
        }
    })
}

/// The Kubernetes versions every output is validated against: the oldest and newest
/// `kubernetes-validate` knows here and one between (image volumes need 1.31 or later).
pub const KUBERNETES: [&str; 3] = ["1.29.0", "1.33.0", "1.37.0"];
pub const KUBERNETES_IMAGE_VOLUME: [&str; 3] = ["1.31.0", "1.33.0", "1.37.0"];

/// `kubernetes-validate --strict` on each object (named by its label in the messages), for each
/// version: the failures as text (empty when every object is valid); `None` when the tool is
/// missing (skipped through `unavailable()`, which fails under CI=true). An object without
/// `metadata.name` (a pod with `generateName`) is given one for the run: the tool names objects
/// by it in its messages.
pub fn validate(objects: &[(String, Value)], versions: &[&str]) -> Option<String> {
    let found = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    if !found.is_ok_and(|o| o.status.success()) {
        return common::unavailable(
            "kubernetes-validate is missing (pip install kubernetes-validate; scripts/test.sh \
             installs it)",
        );
    }
    let dir = common::scratch().join(format!("validate-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (label, object) in objects {
        let mut object = object.clone();
        if object["metadata"].get("name").is_none() && object["metadata"].is_object() {
            object["metadata"]["name"] = "generated".into();
        }
        let file = dir.join(format!("{}.json", label.replace('/', "_")));
        std::fs::write(&file, pretty(&object)).unwrap();
        files.push(file);
    }
    let mut failures = String::new();
    for version in versions {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        if !out.status.success() || !out.stdout.is_empty() {
            failures.push_str(&format!(
                "kubernetes-validate --strict -k {version}:\n{}{}\n",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Some(failures)
}

/// A number no other call in this process got.
fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
