//! The admission webhook's answer: an `admission.k8s.io/v1` AdmissionReview request body in,
//! the AdmissionReview response out, with what happened for the counters. The patch is the
//! difference between the pod and the mutated pod (RFC 6902, by the json-patch crate),
//! base64-encoded. It fails open: every request whose `uid` can be read is answered
//! `allowed: true`, with a warning when something was wrong, so keepalive-shim is never the
//! reason a pod cannot start.

use crate::error::{Error, cut, shown};
use crate::pod::{Skip, mutate_pod};
use crate::{Config, Mutation};
use base64::Engine;
use serde_json::{Map, Value, json};

/// The only AdmissionReview version answered (the webhook configuration asks for it alone).
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// The API server truncates longer warnings, and ignores those past 4096 bytes in all (from all
/// webhooks): each warning is cut to this, and they are sent up to [`WARNINGS_TOTAL`].
pub const WARNING_MAX: usize = 256;
pub const WARNINGS_TOTAL: usize = 2048;

/// What [`review`] made of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Reviewed {
    /// The AdmissionReview to answer with (HTTP 200, `application/json`). `None` when there is
    /// nothing to answer (the body is too large, not JSON, or has no `request.uid`): the server
    /// then answers 400 with the error's message, and `failurePolicy: Ignore` admits the pod.
    pub response: Option<Vec<u8>>,
    pub outcome: Outcome,
    /// The warnings sent in the response, as sent.
    pub warnings: Vec<String>,
    /// `NAMESPACE/NAME` of the pod for a log line (`NAMESPACE/GENERATENAME*` before the API
    /// server names it); empty when unknown.
    pub pod: String,
}

/// The three things to count.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The pod was mutated: at least one container preloads the library.
    Injected,
    /// Allowed without injecting (a patch may still carry the status annotation, for
    /// [`Skip::NoContainer`]).
    Skipped(Skip),
    /// The request was wrong; answered `allowed: true` with a warning when it had a `uid`.
    Failed(Error),
}

/// Answers one AdmissionReview request body. Never panics, whatever the bytes.
pub fn review(body: &[u8], cfg: &Config) -> Reviewed {
    let fail = |error: Error| Reviewed {
        response: None,
        outcome: Outcome::Failed(error),
        warnings: Vec::new(),
        pod: String::new(),
    };
    if body.len() > cfg.max_body {
        return fail(Error::TooLarge {
            size: body.len(),
            max: cfg.max_body,
        });
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return fail(Error::NotJson(e.to_string())),
    };
    let uid = request
        .get("request")
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str);
    let envelope = envelope(&request);
    let Some(uid) = uid else {
        // Nothing can be answered; a wrong kind of document says more than the missing uid.
        return fail(envelope.err().unwrap_or(Error::NoUid));
    };
    let pod = name(&request);
    let object = match envelope.and_then(pod_created) {
        Ok(object) => object,
        Err(error) => {
            let warnings = bounded(vec![format!(
                "keepalive-shim did not inject this pod: {error}"
            )]);
            return Reviewed {
                response: Some(answer(uid, None, &warnings)),
                outcome: Outcome::Failed(error),
                warnings,
                pod,
            };
        }
    };
    let Mutation {
        pod: mutated,
        changed,
        skipped,
        warnings,
        ..
    } = mutate_pod(object, cfg);
    let warnings = bounded(warnings);
    let patch = changed.then(|| {
        let patch = json_patch::diff(object, &mutated);
        let bytes = serde_json::to_vec(&patch).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    Reviewed {
        response: Some(answer(uid, patch.as_deref(), &warnings)),
        outcome: match skipped {
            None => Outcome::Injected,
            Some(skip) => Outcome::Skipped(skip),
        },
        warnings,
        pod,
    }
}

/// The request of an `admission.k8s.io/v1` AdmissionReview, or what is wrong with the body.
fn envelope(review: &Value) -> Result<&Map<String, Value>, Error> {
    let Some(fields) = review.as_object() else {
        return Err(Error::NotAdmissionReview(format!(
            "the body is {}, not an object",
            kind_of(review)
        )));
    };
    let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or("");
    if text("apiVersion") != ADMISSION_API_VERSION || text("kind") != "AdmissionReview" {
        return Err(Error::NotAdmissionReview(format!(
            "apiVersion \"{}\" and kind \"{}\" (expected {ADMISSION_API_VERSION} and \
             AdmissionReview)",
            shown(text("apiVersion"), 64),
            shown(text("kind"), 64)
        )));
    }
    fields
        .get("request")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::NotAdmissionReview("it has no request object".into()))
}

/// The pod of a request about a pod being created, or what the request is about instead.
fn pod_created(request: &Map<String, Value>) -> Result<&Value, Error> {
    let field = |outer: &str, inner: &str| {
        request
            .get(outer)
            .and_then(|v| v.get(inner))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (group, version, kind) = (
        field("kind", "group"),
        field("kind", "version"),
        field("kind", "kind"),
    );
    let resource = field("resource", "resource");
    let sub = request
        .get("subResource")
        .and_then(Value::as_str)
        .unwrap_or("");
    let operation = request
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("");
    if (group, version, kind, resource, sub, operation) != ("", "v1", "Pod", "pods", "", "CREATE") {
        let api = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        let resource = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        let operation = if operation.is_empty() {
            "none"
        } else {
            operation
        };
        let what = format!(
            "{} {} (resource {}), operation {}",
            shown(kind, 64),
            shown(&api, 64),
            shown(&resource, 64),
            shown(operation, 16)
        );
        return Err(Error::NotAPod(what));
    }
    match request.get("object") {
        Some(object @ Value::Object(_)) => Ok(object),
        _ => Err(Error::NotAdmissionReview(
            "request.object is not a pod object".into(),
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `NAMESPACE/NAME` (or `NAMESPACE/GENERATENAME*`) for logs: the namespace from the request, as
/// the API server sends it (a pod's own may be empty).
fn name(review: &Value) -> String {
    let request = review.get("request");
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let object = request.and_then(|r| r.get("object"));
    let metadata = object.and_then(|o| o.get("metadata"));
    let mut namespace = text(request.and_then(|r| r.get("namespace")));
    if namespace.is_empty() {
        namespace = text(metadata.and_then(|m| m.get("namespace")));
    }
    let mut pod = text(request.and_then(|r| r.get("name")));
    if pod.is_empty() {
        pod = text(metadata.and_then(|m| m.get("name")));
    }
    if pod.is_empty() {
        let generate = text(metadata.and_then(|m| m.get("generateName")));
        if !generate.is_empty() {
            pod = format!("{generate}*");
        }
    }
    shown(&format!("{namespace}/{pod}"), 256)
}

/// The warnings as the API server takes them: each on one line, at most [`WARNING_MAX`]
/// characters, at most [`WARNINGS_TOTAL`] bytes in all (a last one says how many were left
/// out).
fn bounded(warnings: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut total = 0;
    let count = warnings.len();
    for (i, warning) in warnings.into_iter().enumerate() {
        let one = cut(&warning, WARNING_MAX - 1);
        if total + one.len() > WARNINGS_TOTAL - 64 {
            out.push(format!(
                "keepalive-shim: {} more warnings left out",
                count - i
            ));
            break;
        }
        total += one.len();
        out.push(one);
    }
    out
}

/// The AdmissionReview response: allowed, with the patch and warnings when there are any.
fn answer(uid: &str, patch: Option<&str>, warnings: &[String]) -> Vec<u8> {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(patch);
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    let review = json!({
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "response": response,
    });
    serde_json::to_vec(&review).unwrap_or_default()
}
