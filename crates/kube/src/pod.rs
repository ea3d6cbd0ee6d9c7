//! The mutation itself, on a pod as a JSON value (a pod, or a workload's pod template): the
//! volume the library is delivered in, the init container that copies it there, and in every
//! regular container the read-only mount, `LD_PRELOAD` and the per-pod `KEEPALIVE_*` variables,
//! with the rails: a literal `LD_PRELOAD` keeps its entries, a `valueFrom` one is left alone, a
//! container's own settings win, opted-out and Windows pods are not touched, names someone else
//! already uses are never reused, and a second pass changes nothing.

use crate::annotations::{self, Choice, STATUS};
use crate::config::{Config, Delivery, IMAGE_TOOL};
use crate::error::shown;
use keepalive_shim_policy::preload::LIBRARY_NAME;
use serde_json::{Map, Value, json};
use std::fmt;

/// The init container that copies the library ([`Delivery::Copy`]).
pub const INIT_CONTAINER: &str = "keepalive-shim-copy";
/// The volume that holds the library, in the pod's `spec.volumes`.
pub const VOLUME: &str = "keepalive-shim";

/// What happened to one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    /// It preloads the library; the text says what of its own it kept, if anything.
    Injected(String),
    /// Left as it was, and why.
    Skipped(String),
}

/// As the status annotation shows it: `injected`, `injected; …`, `skipped: …`.
impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerStatus::Injected(note) if note.is_empty() => f.write_str("injected"),
            ContainerStatus::Injected(note) => write!(f, "injected; {note}"),
            ContainerStatus::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

/// Why a whole pod was not injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Label or annotation `keepalive-shim.io/inject: "false"` (or a value that is neither yes
    /// nor no). Not touched.
    OptedOut,
    /// `spec.os.name: windows` or node selector `kubernetes.io/os: windows`. Not touched.
    Windows,
    /// A node selector `kubernetes.io/arch` other than `amd64` or `arm64`, the architectures
    /// the keepalive-shim image is built for (its init container could not start). Not touched.
    Architecture,
    /// A volume named [`VOLUME`] or a container named [`INIT_CONTAINER`] that keepalive-shim did
    /// not add (for example the hand-made setup of `examples/kubernetes/deployment.yaml`). Not
    /// touched.
    Conflict,
    /// No container could be injected (each one's reason is in the status annotation, the only
    /// change made).
    NoContainer,
    /// Everything was already in place: a second pass (the API server re-invokes mutating
    /// webhooks). Not touched.
    AlreadyInjected,
    /// Not a pod: no `spec.containers` list, or fields of the wrong type. Not touched.
    Invalid,
}

impl Skip {
    /// A short name for counting skips by reason (`opted_out`, `windows`, …).
    pub fn reason(self) -> &'static str {
        match self {
            Skip::OptedOut => "opted_out",
            Skip::Windows => "windows",
            Skip::Architecture => "architecture",
            Skip::Conflict => "conflict",
            Skip::NoContainer => "no_container",
            Skip::AlreadyInjected => "already_injected",
            Skip::Invalid => "invalid",
        }
    }
}

/// What [`mutate_pod`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    /// The pod after the mutation (equal to the input when nothing was done).
    pub pod: Value,
    /// Whether `pod` differs from the input.
    pub changed: bool,
    /// `None` when the pod was injected (at least one container); else why not.
    pub skipped: Option<Skip>,
    /// Each regular container, by name (`#INDEX` for one without a name), in the pod's order.
    /// Empty when the pod was not looked into (opted out, Windows, conflict, invalid).
    pub containers: Vec<(String, ContainerStatus)>,
    /// For the person creating the pod: bad annotations, containers left alone, conflicts. One
    /// line each, values escaped.
    pub warnings: Vec<String>,
}

/// Mutates one pod (a `Pod` object, or a workload's `spec.template`: `metadata` and `spec` are
/// all it reads). Never fails: what cannot be done is a [`Skip`] or a container's
/// [`ContainerStatus::Skipped`], with a warning.
pub fn mutate_pod(pod: &Value, cfg: &Config) -> Mutation {
    let mut mutated = pod.clone();
    let mut warnings = Vec::new();
    let (containers, mut skipped) = mutate(&mut mutated, cfg, &mut warnings);
    let changed = mutated != *pod;
    if skipped.is_none() && !changed {
        skipped = Some(Skip::AlreadyInjected);
    }
    Mutation {
        pod: mutated,
        changed,
        skipped,
        containers,
        warnings,
    }
}

type Statuses = Vec<(String, ContainerStatus)>;

fn mutate(pod: &mut Value, cfg: &Config, warnings: &mut Vec<String>) -> (Statuses, Option<Skip>) {
    let skip = |skip: Skip| (Vec::new(), Some(skip));
    let (labels, annotations) = match pod.get("metadata") {
        None => (Ok(None), Ok(None)),
        Some(Value::Object(m)) => (object(m.get("labels")), object(m.get("annotations"))),
        Some(_) => return invalid(warnings, "metadata is not an object"),
    };
    match annotations::choice(labels.ok().flatten(), annotations.ok().flatten()) {
        Choice::Inject => {}
        Choice::OptedOut(_) => return skip(Skip::OptedOut),
        Choice::Unclear(warning) => {
            warnings.push(warning);
            return skip(Skip::OptedOut);
        }
    }
    let (Ok(_), Ok(annotations)) = (labels, annotations) else {
        return invalid(
            warnings,
            "metadata.labels or metadata.annotations is not an object",
        );
    };
    let Some(spec) = pod.get("spec").and_then(Value::as_object) else {
        return invalid(warnings, "it has no spec");
    };
    let Some(containers) = spec.get("containers").and_then(Value::as_array) else {
        return invalid(warnings, "it has no spec.containers list");
    };
    if windows(spec) {
        return skip(Skip::Windows);
    }
    if let Some(arch) = foreign_architecture(spec) {
        warnings.push(format!(
            "keepalive-shim left this pod alone: it selects nodes of architecture {}, and the \
             keepalive-shim image has amd64 and arm64 only",
            shown(arch, 32)
        ));
        return skip(Skip::Architecture);
    }
    let (Ok(volumes), Ok(inits), Ok(ephemeral)) = (
        array(spec.get("volumes")),
        array(spec.get("initContainers")),
        array(spec.get("ephemeralContainers")),
    ) else {
        return invalid(
            warnings,
            "spec.volumes, spec.initContainers or spec.ephemeralContainers is not a list",
        );
    };
    if let Some(conflict) = conflict(cfg, containers, volumes, inits, ephemeral) {
        warnings.push(format!(
            "keepalive-shim left this pod alone: {conflict} (set up by hand, as \
             examples/kubernetes/deployment.yaml does?)"
        ));
        return skip(Skip::Conflict);
    }
    let settings = annotations::settings(annotations);
    warnings.extend(settings.warnings.iter().cloned());

    let library = cfg.library_path();
    let mount = cfg.mount_path.trim_end_matches('/');
    let mut updated = containers.clone();
    let mut statuses = Vec::with_capacity(updated.len());
    for (index, container) in updated.iter_mut().enumerate() {
        let name = match container.get("name").and_then(Value::as_str) {
            Some(name) => name.to_owned(),
            None => format!("#{index}"),
        };
        let status = match inject_container(container, &library, mount, &settings.env) {
            Ok(note) => ContainerStatus::Injected(note),
            Err(why) => {
                warnings.push(format!(
                    "container \"{}\" was not given keepalive-shim: {why}",
                    shown(&name, 64)
                ));
                ContainerStatus::Skipped(why)
            }
        };
        statuses.push((name, status));
    }
    let any = statuses
        .iter()
        .any(|(_, s)| matches!(s, ContainerStatus::Injected(_)));
    let has_volume = volumes.is_some_and(|v| v.iter().any(|v| named(v, VOLUME)));
    let has_init = inits.is_some_and(|v| v.iter().any(|c| named(c, INIT_CONTAINER)));

    // From here on the pod is changed; every lookup above was read-only.
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return invalid(warnings, "it has no spec");
    };
    if any {
        spec.insert("containers".into(), Value::Array(updated));
        if !has_volume {
            push(spec, "volumes", volume(cfg));
        }
        if cfg.delivery == Delivery::Copy && !has_init {
            push(spec, "initContainers", init_container(cfg));
        }
    }
    write_status(pod, &statuses);
    let skipped = (!any).then_some(Skip::NoContainer);
    (statuses, skipped)
}

fn invalid(warnings: &mut Vec<String>, why: &str) -> (Statuses, Option<Skip>) {
    warnings.push(format!("keepalive-shim left this pod alone: {why}"));
    (Vec::new(), Some(Skip::Invalid))
}

/// An optional object field: `Ok(None)` when absent or null, `Err` when of another type.
fn object(value: Option<&Value>) -> Result<Option<&Map<String, Value>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(()),
    }
}

/// An optional list field: `Ok(None)` when absent or null, `Err` when of another type.
fn array(value: Option<&Value>) -> Result<Option<&Vec<Value>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(()),
    }
}

fn named(value: &Value, name: &str) -> bool {
    value.get("name").and_then(Value::as_str) == Some(name)
}

/// Appends `item` to the list `spec[key]`, making the list when it is absent.
fn push(spec: &mut Map<String, Value>, key: &str, item: Value) {
    match spec.get_mut(key) {
        Some(Value::Array(list)) => list.push(item),
        _ => {
            spec.insert(key.into(), Value::Array(vec![item]));
        }
    }
}

/// A Windows pod: `spec.os.name` or the node selector says so. The library is a Linux one.
fn windows(spec: &Map<String, Value>) -> bool {
    let is_windows = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("windows"))
    };
    is_windows(spec.get("os").and_then(|os| os.get("name")))
        || is_windows(
            spec.get("nodeSelector")
                .and_then(|s| s.get("kubernetes.io/os")),
        )
}

/// The architecture the pod's node selector asks for, when the image has none for it.
fn foreign_architecture(spec: &Map<String, Value>) -> Option<&str> {
    let arch = spec
        .get("nodeSelector")
        .and_then(|s| s.get("kubernetes.io/arch"))
        .and_then(Value::as_str)?;
    (arch != "amd64" && arch != "arm64").then_some(arch)
}

/// Names the pod already uses for something keepalive-shim did not add, if any: our volume
/// name for another kind of volume (or, with the copy, without our init container beside it),
/// our init container's name without our volume, or on a regular or ephemeral container.
fn conflict(
    cfg: &Config,
    containers: &[Value],
    volumes: Option<&Vec<Value>>,
    inits: Option<&Vec<Value>>,
    ephemeral: Option<&Vec<Value>>,
) -> Option<String> {
    let ours_named = |list: &[Value]| list.iter().any(|c| named(c, INIT_CONTAINER));
    if ours_named(containers) || ephemeral.is_some_and(|e| ours_named(e)) {
        return Some(format!("a container is already named {INIT_CONTAINER}"));
    }
    let volume = volumes.and_then(|v| v.iter().find(|v| named(v, VOLUME)));
    let init = inits.is_some_and(|i| ours_named(i));
    match (cfg.delivery, volume) {
        (Delivery::Copy, Some(v)) if v.get("emptyDir").is_some() && init => None,
        (Delivery::ImageVolume, Some(v)) if v.get("image").is_some() => None,
        (_, Some(_)) => Some(format!(
            "it already has a volume named {VOLUME} that keepalive-shim did not add"
        )),
        (Delivery::Copy, None) if init => Some(format!(
            "it already has an init container named {INIT_CONTAINER} that keepalive-shim did \
             not add"
        )),
        (_, None) => None,
    }
}

/// Gives one container the mount, `LD_PRELOAD` and the per-pod variables; `Err(why)` leaves it
/// untouched. `Ok(note)`: what of the container's own was kept (empty when nothing), worded the
/// same on every pass so that a second pass writes the same status.
fn inject_container(
    container: &mut Value,
    library: &str,
    mount: &str,
    settings: &[(&'static str, String)],
) -> Result<String, String> {
    let Some(fields) = container.as_object_mut() else {
        return Err("it is not an object".into());
    };
    let mut env = match fields.get("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(env)) => env.clone(),
        Some(_) => return Err("its env is not a list".into()),
    };
    let mut mounts = match fields.get("volumeMounts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(mounts)) => mounts.clone(),
        Some(_) => return Err("its volumeMounts is not a list".into()),
    };
    for other in &mounts {
        let path = other.get("mountPath").and_then(Value::as_str).unwrap_or("");
        let path = path.trim_end_matches('/');
        let inside = path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if inside && !named(other, VOLUME) {
            return Err(format!(
                "another volume is mounted at {}, where the library's volume goes",
                shown(path, 64)
            ));
        }
    }
    let mut notes = Vec::new();

    // LD_PRELOAD: the last entry of that name is the one the kubelet uses.
    let name_of = |e: &Value| e.get("name").and_then(Value::as_str).map(str::to_owned);
    match env
        .iter()
        .rposition(|e| name_of(e).as_deref() == Some("LD_PRELOAD"))
    {
        None => env.push(json!({ "name": "LD_PRELOAD", "value": library })),
        Some(at) => {
            let entry = &mut env[at];
            if entry.get("valueFrom").is_some() {
                return Err(format!(
                    "its LD_PRELOAD is set with valueFrom, which keepalive-shim cannot read and \
                     leaves alone (add {library} to that value to preload the library)"
                ));
            }
            let value = match entry.get("value") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err("its LD_PRELOAD value is not a string".into()),
            };
            let entries: Vec<&str> = value.split([':', ' ']).filter(|e| !e.is_empty()).collect();
            if !entries.contains(&library) {
                // Another copy of the library, by its file name: the webhook sees no files.
                if let Some(other) = entries
                    .iter()
                    .find(|e| e.rsplit('/').next() == Some(LIBRARY_NAME))
                {
                    return Err(format!(
                        "its LD_PRELOAD already names {}",
                        shown(other, 128)
                    ));
                }
                let joined = if entries.is_empty() {
                    library.to_owned()
                } else {
                    format!("{library}:{value}")
                };
                if let Some(fields) = entry.as_object_mut() {
                    fields.insert("value".into(), Value::String(joined));
                }
            }
            if entries.iter().any(|e| *e != library) {
                notes.push("LD_PRELOAD keeps its other entries".to_owned());
            }
        }
    }

    // The per-pod settings, where the container has not chosen its own.
    let mut own = Vec::new();
    for (variable, value) in settings {
        let alias = annotations::alias(variable);
        let existing = env.iter().rev().find(|e| {
            let name = name_of(e);
            name.as_deref() == Some(*variable) || (alias.is_some() && name.as_deref() == alias)
        });
        match existing {
            None => env.push(json!({ "name": variable, "value": value })),
            Some(e) => {
                let same = named(e, variable)
                    && e.get("valueFrom").is_none()
                    && e.get("value").and_then(Value::as_str) == Some(value.as_str());
                if !same {
                    own.push(name_of(e).unwrap_or_default());
                }
            }
        }
    }
    if !own.is_empty() {
        notes.push(format!(
            "its own {} kept over the annotations",
            own.join(", ")
        ));
    }

    let at_mount = |m: &Value| {
        m.get("mountPath")
            .and_then(Value::as_str)
            .is_some_and(|p| p.trim_end_matches('/') == mount)
    };
    if !mounts.iter().any(|m| named(m, VOLUME) && at_mount(m)) {
        mounts.push(json!({ "name": VOLUME, "mountPath": mount, "readOnly": true }));
    }
    fields.insert("env".into(), Value::Array(env));
    fields.insert("volumeMounts".into(), Value::Array(mounts));
    Ok(notes.join("; "))
}

/// The volume the library is delivered in.
fn volume(cfg: &Config) -> Value {
    match cfg.delivery {
        Delivery::Copy => json!({ "name": VOLUME, "emptyDir": {} }),
        Delivery::ImageVolume => json!({
            "name": VOLUME,
            "image": { "reference": cfg.image, "pullPolicy": cfg.pull_policy.name() },
        }),
    }
}

/// The init container that copies the library into the volume: the image's tool, explicit
/// small resources, and a security context the restricted Pod Security Standard accepts.
fn init_container(cfg: &Config) -> Value {
    let mount = cfg.mount_path.trim_end_matches('/');
    let r = &cfg.resources;
    json!({
        "name": INIT_CONTAINER,
        "image": cfg.image,
        "imagePullPolicy": cfg.pull_policy.name(),
        "command": [IMAGE_TOOL, "copy-library", mount],
        "resources": {
            "requests": { "cpu": r.cpu_request, "memory": r.memory_request },
            "limits": { "cpu": r.cpu_limit, "memory": r.memory_limit },
        },
        "securityContext": security_context(cfg.run_as_user),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{ "name": VOLUME, "mountPath": mount }],
    })
}

/// What the restricted Pod Security Standard asks of a container, and the user when one is
/// configured.
fn security_context(user: Option<u32>) -> Value {
    let mut context = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some(user) = user {
        context["runAsUser"] = json!(user);
        context["runAsGroup"] = json!(user);
    }
    context
}

/// Writes the status annotation: each container's status, as a JSON object by name.
fn write_status(pod: &mut Value, statuses: &Statuses) {
    if statuses.is_empty() {
        return;
    }
    let status: Map<String, Value> = statuses
        .iter()
        .map(|(name, status)| (name.clone(), Value::String(status.to_string())))
        .collect();
    let text = Value::Object(status).to_string();
    let Some(pod) = pod.as_object_mut() else {
        return;
    };
    let metadata = pod
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if annotations.is_null() {
        *annotations = Value::Object(Map::new());
    }
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(STATUS.into(), Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(container: Value) -> Value {
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [container] } })
    }

    fn env_of(mutation: &Mutation) -> Vec<(String, String)> {
        mutation.pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let value = e["value"].as_str().unwrap_or("(valueFrom)");
                (e["name"].as_str().unwrap().to_owned(), value.to_owned())
            })
            .collect()
    }

    fn status(mutation: &Mutation) -> String {
        mutation.containers[0].1.to_string()
    }

    #[test]
    fn ld_preload_gets_ours_first_once_and_the_last_entry_is_the_one() {
        let config = Config::default();
        let ours = config.library_path();
        for (given, expected) in [
            ("", ours.clone()),
            ("  ", ours.clone()),
            ("/a.so", format!("{ours}:/a.so")),
            ("/a.so /b.so", format!("{ours}:/a.so /b.so")),
            ("$(EXTRA)", format!("{ours}:$(EXTRA)")),
            (&format!("/a.so:{ours}"), format!("/a.so:{ours}")),
        ] {
            let m = mutate_pod(
                &pod(json!({ "name": "c", "env": [{ "name": "LD_PRELOAD", "value": given }] })),
                &config,
            );
            assert_eq!(env_of(&m)[0], ("LD_PRELOAD".into(), expected), "{given:?}");
        }
        // Two entries of the same name: the kubelet uses the last, so that one is changed.
        let m = mutate_pod(
            &pod(json!({ "name": "c", "env": [
                { "name": "LD_PRELOAD", "valueFrom": { "configMapKeyRef": { "name": "x", "key": "y" } } },
                { "name": "LD_PRELOAD", "value": "/a.so" },
            ] })),
            &config,
        );
        assert_eq!(env_of(&m)[1].1, format!("{ours}:/a.so"));
        // Another copy of the library, set up by hand: left to it.
        let m = mutate_pod(
            &pod(json!({ "name": "c", "env": [
                { "name": "LD_PRELOAD", "value": "/opt/ka/libkeepalive_shim.so" }] })),
            &config,
        );
        assert_eq!(m.skipped, Some(Skip::NoContainer));
        assert_eq!(
            status(&m),
            "skipped: its LD_PRELOAD already names /opt/ka/libkeepalive_shim.so"
        );
    }

    #[test]
    fn mounts_are_never_doubled_nor_stacked() {
        let config = Config::default();
        // Ours already there, written with a trailing slash: not added again.
        let ours = pod(json!({ "name": "c",
            "env": [{ "name": "LD_PRELOAD", "value": config.library_path() }],
            "volumeMounts": [{ "name": VOLUME, "mountPath": "/keepalive-shim/" }] }));
        let m = mutate_pod(&ours, &config);
        assert_eq!(
            m.pod["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Another volume at our path, or below it: the container is left alone.
        for path in ["/keepalive-shim", "/keepalive-shim/", "/keepalive-shim/sub"] {
            let m = mutate_pod(
                &pod(json!({ "name": "c",
                    "volumeMounts": [{ "name": "data", "mountPath": path }] })),
                &config,
            );
            assert_eq!(m.skipped, Some(Skip::NoContainer), "{path}");
            assert!(status(&m).starts_with("skipped: another volume is mounted at"));
        }
        // Beside it is fine.
        let m = mutate_pod(
            &pod(json!({ "name": "c",
                "volumeMounts": [{ "name": "data", "mountPath": "/keepalive-shim-data" }] })),
            &config,
        );
        assert_eq!(m.skipped, None);
    }

    #[test]
    fn names_in_use_leave_the_pod_alone() {
        let config = Config::default();
        let mut taken = pod(json!({ "name": INIT_CONTAINER }));
        let m = mutate_pod(&taken, &config);
        assert_eq!((m.skipped, m.changed), (Some(Skip::Conflict), false));
        taken = pod(json!({ "name": "c" }));
        taken["spec"]["initContainers"] = json!([{ "name": INIT_CONTAINER, "image": "x" }]);
        assert_eq!(mutate_pod(&taken, &config).skipped, Some(Skip::Conflict));
        taken = pod(json!({ "name": "c" }));
        taken["spec"]["volumes"] = json!([{ "name": VOLUME, "configMap": { "name": "x" } }]);
        assert_eq!(mutate_pod(&taken, &config).skipped, Some(Skip::Conflict));
        // With an image volume, our emptyDir is someone else's.
        let image = Config {
            delivery: Delivery::ImageVolume,
            ..Config::default()
        };
        taken["spec"]["volumes"] = json!([{ "name": VOLUME, "emptyDir": {} }]);
        assert_eq!(mutate_pod(&taken, &image).skipped, Some(Skip::Conflict));
    }

    #[test]
    fn platforms_without_an_image_are_left_alone() {
        let config = Config::default();
        for (selector, skip) in [
            (
                json!({ "kubernetes.io/os": "windows" }),
                Some(Skip::Windows),
            ),
            (
                json!({ "kubernetes.io/arch": "s390x" }),
                Some(Skip::Architecture),
            ),
            (json!({ "kubernetes.io/arch": "arm64" }), None),
            (json!({ "kubernetes.io/os": "linux" }), None),
        ] {
            let mut p = pod(json!({ "name": "c" }));
            p["spec"]["nodeSelector"] = selector.clone();
            let m = mutate_pod(&p, &config);
            assert_eq!(m.skipped, skip, "{selector}");
            assert_eq!(m.changed, skip.is_none());
        }
    }

    #[test]
    fn the_user_may_be_left_to_the_platform() {
        let config = Config {
            run_as_user: None,
            ..Config::default()
        };
        let m = mutate_pod(&pod(json!({ "name": "c" })), &config);
        let context = &m.pod["spec"]["initContainers"][0]["securityContext"];
        assert_eq!(context["runAsNonRoot"], true);
        assert!(context.get("runAsUser").is_none() && context.get("runAsGroup").is_none());
    }
}
