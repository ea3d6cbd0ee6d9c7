//! The pod, played (issue 23, "How it is proven"): the webhook's own answer for the plain pod
//! of a ReplicaSet (crates/kube/tests/fixtures/plain-replicaset.json, `keepalive-shim webhook
//! review`, byte for byte what `webhook serve` answers: cli/tests/webhook.rs) is applied as the
//! API server applies it, and the patched pod is run in the tests' private Docker daemon as a
//! kubelet would run it: its emptyDir volumes as Docker volumes, its init container from the
//! shipped image archive (`docker load` of target/dist) with the command, user, read-only root,
//! dropped capabilities, no privilege escalation and limits the pod gives it, then the
//! application container, a Python `requests` client on the bullseye image, with the pod's
//! environment and mounts. Every field of the containers is translated or refused: a field the
//! play does not know fails the test, so the mutation cannot add one unseen.
//!
//! The client's live connection reads `1 30 10 3 60000` from inside, and `1 45 10 3 75000`
//! when the pod is annotated `keepalive-shim.io/idle: "45s"`; the same pod without the
//! webhook's patch reads the kernel's `0 7200 75 9 0`. In the dead-peer lab (a sandbox
//! container holding the pod's network namespace, with the lab's link moved in, as
//! tests/containers.rs plays a pod), a pod annotated for a fast keepalive (2 s, 1 s, 2 probes:
//! 4 s) has its request to a server whose link is cut fail within that bound, its options read
//! from the node by `keepalive-shim inspect`; without the patch the same client is still
//! blocked well after it.
//!
//! Needs root and target/dist (`scripts/dist.sh`); skipped otherwise, except under `CI=true`.

#[path = "../../crates/kube/tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use support::common::docker::{BASE_IMAGE, Container, Docker, SHIPPED_IMAGE, Volume, docker};
use support::common::lab::{Lab, SERVER4};
use support::common::{
    self, Background, KERNEL, OURS, assert_still_blocked, assert_within, command, five,
    inspected_five, output_ok, text,
};
use support::{patched, response};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");
/// `keepalive-shim.io/idle: 2s`, `interval: 1s`, `count: 2`: a silent peer is noticed after
/// 2 + 1 × 2 = 4 s.
const BOUND: f64 = 4.0;

/// The plain pod's AdmissionReview with `annotations` added to the pod.
fn review_with(annotations: &[(&str, &str)]) -> Value {
    let mut review = support::json("plain-replicaset.json");
    for (name, value) in annotations {
        review["request"]["object"]["metadata"]["annotations"][*name] = json!(value);
    }
    review
}

/// The pod as the API server stores it after the webhook's answer (`webhook review`), and the
/// pod as it was sent.
fn webhook_pod(annotations: &[(&str, &str)]) -> (Value, Value) {
    let review = review_with(annotations);
    let body = serde_json::to_vec(&review).unwrap();
    let mut child = command(false, CLI)
        .args(["webhook", "review"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "webhook review: {}",
        common::stderr(&out)
    );
    let uid = review["request"]["uid"].as_str().unwrap();
    let answer = response(&out.stdout, uid);
    assert!(answer.get("warnings").is_none(), "{answer}");
    let original = review["request"]["object"].clone();
    let pod = patched(&original, &answer).expect("the webhook patched the pod");
    (pod, original)
}

/// A Kubernetes quantity of memory (`32Mi`, `16Mi`) as Docker's bytes (`33554432`).
fn memory_bytes(quantity: &str) -> String {
    let (number, factor) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(suffix, f)| quantity.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((quantity, 1));
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("memory quantity {quantity:?}"));
    (n * factor).to_string()
}

/// A Kubernetes quantity of CPU (`100m`, `1`) as Docker's `--cpus` (`0.1`, `1`).
fn cpus(quantity: &str) -> String {
    match quantity.strip_suffix('m') {
        Some(milli) => format!("{}", milli.parse::<f64>().unwrap() / 1000.0),
        None => quantity.to_owned(),
    }
}

/// An error when `object` (of `what`) has a field not in `known`: one the play does not
/// translate.
fn only(what: &str, object: &Value, known: &[&str]) -> Result<(), String> {
    let unknown: Vec<&str> = object
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {object}"))
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}: fields the play does not translate: {unknown:?} in {object}"
        ))
    }
}

/// The pod's volumes as the play makes them: each emptyDir a Docker volume (removed when
/// dropped); the API server's own token volume (`kube-api-access-*`, projected) has no Docker
/// equivalent and is left out, with its mounts. Any other volume fails the test.
struct Volumes {
    docker: Vec<(String, Volume)>,
    left_out: Vec<String>,
}

impl Volumes {
    fn make(docker: &'static Docker, pod: &Value) -> Volumes {
        let mut made = Volumes {
            docker: Vec::new(),
            left_out: Vec::new(),
        };
        for volume in pod["spec"]["volumes"].as_array().unwrap() {
            let name = volume["name"].as_str().unwrap().to_owned();
            if volume.get("emptyDir").is_some() {
                only("a volume", volume, &["name", "emptyDir"]).unwrap();
                assert_eq!(volume["emptyDir"], json!({}), "{name}: a sized emptyDir");
                made.docker.push((name, docker.volume("emptydir")));
            } else {
                assert!(
                    name.starts_with("kube-api-access-") && volume.get("projected").is_some(),
                    "a volume the play cannot make: {volume}"
                );
                made.left_out.push(name);
            }
        }
        made
    }

    fn docker_name(&self, name: &str) -> Option<&str> {
        self.docker
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.name.as_str())
    }
}

/// `docker run`'s options, image and command for one of the pod's containers, as a kubelet
/// would run it: every field translated, or an error naming those that cannot be. `image` and `command` stand in for
/// the application's own (which no registry here has); the init container runs as the pod says.
fn container_args(
    container: &Value,
    volumes: &Volumes,
    stand_in: Option<(&str, &[&str])>,
) -> Result<Vec<String>, String> {
    let name = container["name"].as_str().unwrap();
    only(
        name,
        container,
        &[
            "name",
            "image",
            "imagePullPolicy",
            "command",
            "args",
            "env",
            "volumeMounts",
            "resources",
            "securityContext",
            "ports",
            "terminationMessagePath",
            "terminationMessagePolicy",
        ],
    )?;
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));

    for var in container["env"].as_array().into_iter().flatten() {
        only(name, var, &["name", "value"])?;
        let (n, v) = (
            var["name"].as_str().unwrap(),
            var["value"].as_str().unwrap(),
        );
        push(&["-e", &format!("{n}={v}")]);
    }
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        only(name, mount, &["name", "mountPath", "readOnly"])?;
        let volume = mount["name"].as_str().unwrap();
        let Some(docker_volume) = volumes.docker_name(volume) else {
            assert!(
                volumes.left_out.iter().any(|v| v == volume),
                "{name}: {mount}"
            );
            continue;
        };
        let mode = if mount["readOnly"] == true { ":ro" } else { "" };
        let path = mount["mountPath"].as_str().unwrap();
        push(&["-v", &format!("{docker_volume}:{path}{mode}")]);
    }
    let no_resources = json!({});
    let resources = container.get("resources").unwrap_or(&no_resources);
    only(name, resources, &["limits", "requests"])?;
    for (kind, values) in resources.as_object().unwrap() {
        for (resource, quantity) in values.as_object().unwrap() {
            let quantity = quantity.as_str().unwrap();
            match (kind.as_str(), resource.as_str()) {
                ("limits", "memory") => push(&["--memory", &memory_bytes(quantity)]),
                ("limits", "cpu") => push(&["--cpus", &cpus(quantity)]),
                ("requests", "memory") => push(&["--memory-reservation", &memory_bytes(quantity)]),
                // A request only weighs the container against others for the scheduler.
                ("requests", "cpu") => {}
                other => panic!("{name}: resource {other:?}"),
            }
        }
    }
    if let Some(context) = container.get("securityContext") {
        only(
            name,
            context,
            &[
                "runAsNonRoot",
                "runAsUser",
                "runAsGroup",
                "allowPrivilegeEscalation",
                "privileged",
                "readOnlyRootFilesystem",
                "capabilities",
                "seccompProfile",
            ],
        )?;
        let user = context["runAsUser"].as_u64();
        if context["runAsNonRoot"] == true {
            assert!(
                user.is_some_and(|u| u != 0),
                "{name}: runAsNonRoot without a user"
            );
        }
        if let Some(user) = user {
            let group = context["runAsGroup"].as_u64().unwrap_or(user);
            push(&["--user", &format!("{user}:{group}")]);
        }
        if context["allowPrivilegeEscalation"] == false {
            push(&["--security-opt", "no-new-privileges"]);
        }
        assert_ne!(context["privileged"], true, "{name}: privileged");
        if context["readOnlyRootFilesystem"] == true {
            push(&["--read-only"]);
        }
        if let Some(caps) = context.get("capabilities") {
            only(name, caps, &["drop", "add"])?;
            for cap in caps["drop"].as_array().into_iter().flatten() {
                push(&["--cap-drop", cap.as_str().unwrap()]);
            }
            for cap in caps["add"].as_array().into_iter().flatten() {
                push(&["--cap-add", cap.as_str().unwrap()]);
            }
        }
        // RuntimeDefault: the container runtime's own profile, Docker's default one.
        if let Some(seccomp) = context.get("seccompProfile") {
            assert_eq!(seccomp, &json!({"type": "RuntimeDefault"}), "{name}");
        }
    }
    match stand_in {
        Some((image, cmd)) => {
            push(&["--entrypoint", cmd[0], image]);
            push(&cmd[1..]);
        }
        None => {
            let pull = match container["imagePullPolicy"].as_str() {
                Some("Always") => "always",
                Some("Never") => "never",
                _ => "missing",
            };
            push(&["--pull", pull]);
            let command: Vec<&str> = container["command"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(container["args"].as_array().into_iter().flatten())
                .map(|v| v.as_str().unwrap())
                .collect();
            let image = container["image"].as_str().unwrap();
            match command.split_first() {
                Some((entrypoint, rest)) => {
                    push(&["--entrypoint", entrypoint, image]);
                    push(rest);
                }
                None => push(&[image]),
            }
        }
    }
    Ok(args)
}

/// The pod played up to its application: its volumes made, each init container run to its end
/// (it must exit 0 with nothing on stderr), in `network` (`none`, or the sandbox's).
struct Pod {
    volumes: Volumes,
    app: Value,
}

fn start_pod(docker: &'static Docker, pod: &Value, network: &str) -> Pod {
    let volumes = Volumes::make(docker, pod);
    for init in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = init["name"].as_str().unwrap();
        let image = init["image"].as_str().unwrap();
        assert_eq!(image, SHIPPED_IMAGE, "{name}: the image the webhook names");
        let args = container_args(init, &volumes, None).unwrap();
        // Created, then started attached: `docker run --network container:…` prints the
        // daemon's warning that the host does not forward IPv4 (true, and irrelevant here).
        let container = docker.container("init");
        let label = docker.label();
        let mut all = vec!["create", "--name", &container.name, "--label", &label];
        all.extend(["--network", network]);
        all.extend(args.iter().map(String::as_str));
        eprintln!("init container {name}: docker {}", all.join(" "));
        docker.ok(&all);
        let out = docker
            .cmd()
            .args(["start", "-a", &container.name])
            .output()
            .expect("docker start");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "init container {name}: {}: {}",
            out.status,
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "/keepalive-shim/libkeepalive_shim.so\n");
    }
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "the plain pod has one container");
    Pod {
        volumes,
        app: containers[0].clone(),
    }
}

/// tests/programs mounted read-only at /app in the application's container.
fn programs_mount() -> String {
    format!(
        "type=bind,source={},target=/app,readonly",
        common::root().join("tests/programs").display()
    )
}

/// The five options the application's `requests` connection reads, run in the played `pod`.
fn app_options(docker: &'static Docker, pod: &Pod) -> [i64; 5] {
    let program = ["python3", "/app/requests_options.py"];
    let args = container_args(&pod.app, &pod.volumes, Some((BASE_IMAGE, &program))).unwrap();
    let mount = programs_mount();
    let mut all = vec!["--network", "none", "--mount", &mount];
    all.extend(args.iter().map(String::as_str));
    let out: Output = docker.run("app", &all);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{}: {stderr}",
        out.status
    );
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    five(&json)
}

/// The webhook's pod, and the pod without its patch, run: the connection's options from
/// inside. The defaults, then `keepalive-shim.io/idle: "45s"` (the user timeout follows:
/// 45 + 10 × 3 s).
#[test]
fn the_webhooks_pod_runs_and_its_connections_get_the_options() {
    let t0 = Instant::now();
    let Some(docker) = docker() else { return };
    let Some(_image) = docker.shipped_image() else {
        return;
    };
    for (annotations, expected) in [
        (&[][..], OURS),
        (
            &[("keepalive-shim.io/idle", "45s")][..],
            [1, 45, 10, 3, 75_000],
        ),
    ] {
        let (pod, original) = webhook_pod(annotations);
        let played = start_pod(docker, &pod, "none");
        assert_eq!(
            app_options(docker, &played),
            expected,
            "{annotations:?}, patched"
        );
        let unpatched = start_pod(docker, &original, "none");
        assert_eq!(
            app_options(docker, &unpatched),
            KERNEL,
            "{annotations:?}, unpatched"
        );
    }
    eprintln!("played in {:.1} s", t0.elapsed().as_secs_f64());
}

/// The five options of the process `pid`'s connection to `peer`, read from the node by
/// `keepalive-shim inspect --json` (root: no capability inside the container is needed).
fn inspected(pid: u32, peer: &str) -> [i64; 5] {
    let out = output_ok(command(false, CLI).args(["inspect", "--json", &pid.to_string()]));
    let all: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    let conn = all
        .as_array()
        .expect("an array")
        .iter()
        .find(|c| c["peer"] == peer)
        .unwrap_or_else(|| panic!("no connection to {peer} in {all}"));
    assert_eq!(conn["source"], "socket", "{conn}");
    inspected_five(conn)
}

/// The dead-peer cut, once, in pods: the webhook's pod annotated for a fast keepalive and the
/// same pod unpatched, each a `requests.get` with no timeout to a server that accepted and never
/// answers; the server's link is cut. The webhook's pod fails within the bound; the unpatched
/// one is still blocked at twice the bound.
#[test]
fn the_webhooks_pod_notices_a_dead_peer_within_the_bound() {
    let t_test = Instant::now();
    let Some(docker) = docker() else { return };
    let Some(_image) = docker.shipped_image() else {
        return;
    };
    let Some(lab) = Lab::new() else { return };
    let server = lab.server("silent", 8080);
    let fast = [
        ("keepalive-shim.io/idle", "2s"),
        ("keepalive-shim.io/interval", "1s"),
        ("keepalive-shim.io/count", "2"),
    ];
    let (pod, original) = webhook_pod(&fast);
    // The annotations reached the container as the library's variables.
    let env: BTreeMap<&str, &str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["value"].as_str().unwrap()))
        .collect();
    assert_eq!(env.get("KEEPALIVE_IDLE"), Some(&"2s"), "{env:?}");

    // Like a pod's sandbox: it holds the network namespace the lab's link is moved into; the
    // init and application containers join it.
    let sandbox = docker.sandbox(&lab, &["--entrypoint", "sleep", BASE_IMAGE, "infinity"]);
    let network = format!("container:{}", sandbox.name);
    let url = format!("http://{SERVER4}:8080/");
    let program = ["python3", "/app/client.py", "get", &url];
    let mount = programs_mount();
    let label = docker.label();
    let app = |pod: &Pod, role: &str| -> (Container, Background) {
        let container = docker.container(role);
        let args = container_args(&pod.app, &pod.volumes, Some((BASE_IMAGE, &program))).unwrap();
        let mut all = vec!["create", "--name", &container.name, "--label", &label];
        all.extend(["--network", &network, "--mount", &mount]);
        all.extend(args.iter().map(String::as_str));
        docker.ok(&all);
        let mut start = docker.cmd();
        start.args(["start", "-a", &container.name]);
        (container, Background::spawn(start))
    };
    let patched_pod = start_pod(docker, &pod, &network);
    let unpatched_pod = start_pod(docker, &original, &network);
    let (with_container, mut with) = app(&patched_pod, "patched");
    let (without_container, mut without) = app(&unpatched_pod, "unpatched");
    server.expect_from(
        "request",
        &mut [
            ("the webhook's pod", &mut with),
            ("unpatched", &mut without),
        ],
        Duration::from_secs(20),
    );
    let peer = format!("{SERVER4}:8080");
    assert_eq!(
        inspected(docker.pid(&with_container.name), &peer),
        [1, 2, 1, 2, 4000],
        "the webhook's pod, read from the node"
    );
    assert_eq!(
        inspected(docker.pid(&without_container.name), &peer),
        KERNEL,
        "the unpatched pod, read from the node"
    );
    let t0 = lab.cut("server");

    let what = "the webhook's pod";
    let (line, seconds) = with.expect_timed(what, "result", t0, BOUND + 5.0);
    assert!(
        line.starts_with("result ReadTimeout ") || line.starts_with("result ConnectionError "),
        "{what}: {line}"
    );
    assert_within(what, seconds, BOUND);

    let what = "the unpatched pod";
    assert_still_blocked(what, &mut without, t0, 2.0 * BOUND);
    assert!(docker.running(&without_container.name), "{what}");
    eprintln!(
        "dead peer played in {:.1} s",
        t_test.elapsed().as_secs_f64()
    );
}

/// The translation refuses what it does not know, so a field the mutation adds is seen here.
#[test]
fn the_play_refuses_a_field_it_does_not_translate() {
    let init = json!({"name": "x", "image": "i", "restartPolicy": "Always"});
    let volumes = Volumes {
        docker: Vec::new(),
        left_out: Vec::new(),
    };
    let refused = container_args(&init, &volumes, None);
    assert_eq!(
        refused.unwrap_err(),
        r#"x: fields the play does not translate: ["restartPolicy"] in {"image":"i","name":"x","restartPolicy":"Always"}"#
    );
}
