//! The admission webhook and `inject` as the API server, a cluster admin and a GitOps pipeline
//! meet them, through the built `keepalive-shim` (issue 23, "How it is proven"): `webhook certs`
//! makes a CA and a serving certificate; `webhook serve` with them is called over real HTTPS by
//! curl, which checks the certificate against that CA under the Service's DNS name (as the API
//! server does, `--resolve` standing in for the cluster's DNS). Every fixture AdmissionReview of
//! crates/kube/tests/fixtures gets, byte for byte, the answer `webhook review` prints for it,
//! and its patch gives the golden pod; bodies that are garbage, truncated, of the wrong kind or
//! too large get a 4xx or an allowed-with-warning answer and the next request is answered; slow
//! and idle clients do not stop it answering within a second; `/metrics` counts exactly the
//! reviews sent, by outcome; a certificate replaced on disk is served at the next handshake. The
//! folder `webhook certs` writes renders with `kubectl kustomize` as a component of
//! deploy/kubernetes into objects `kubernetes-validate --strict` accepts. `inject` and `webhook
//! review` as commands: golden output, stdin and files, exit codes and messages.
//!
//! Needs curl, and for the component kubectl and kubernetes-validate (`scripts/test.sh`
//! installs them); without them those tests are skipped, except under `CI=true`. No root.

#[path = "../../crates/kube/tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::common::{self, command, output_ok, scratch, text};
use support::{fixtures, patched, pretty, read, response};

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");
/// `webhook certs`' defaults, which are deploy/kubernetes' names.
const NAMESPACE: &str = "keepalive-shim-system";
const SERVICE: &str = "keepalive-shim-webhook";
/// The largest body the webhook reads by default (`keepalive_shim_kube::DEFAULT_MAX_BODY`).
const MAX_BODY: usize = 4 << 20;

/// The name the API server calls the webhook by: the Service's, in its namespace.
fn service_host() -> String {
    format!("{SERVICE}.{NAMESPACE}.svc")
}

/// A new folder of this test's own.
fn folder(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch().join(format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `keepalive-shim webhook certs --out DIR` (deploy/kubernetes' namespace and Service, the
/// defaults), which must succeed and say what it wrote.
fn certs(dir: &Path) {
    let out = output_ok(
        command(false, CLI)
            .args(["webhook", "certs", "--out"])
            .arg(dir),
    );
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&format!("wrote {}/", dir.display()))
            && said.contains(&format!("{SERVICE}.{NAMESPACE}")),
        "{said}"
    );
}

/// The fixture AdmissionReviews (not the golden pods), by name without `.json`, sorted.
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.ends_with(".golden.json"))
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    names
}

/// What `/metrics` must count for each fixture: (outcome, reason).
fn outcome_of(fixture: &str) -> (&'static str, &'static str) {
    match fixture {
        "plain-replicaset"
        | "ld-preload-literal"
        | "ld-preload-valuefrom"
        | "keepalive-env-set"
        | "good-annotations"
        | "bad-annotations"
        | "several-containers"
        | "no-volumes" => ("injected", ""),
        "opt-out-label" | "opt-out-annotation" => ("skipped", "opted_out"),
        "already-injected" => ("skipped", "already_injected"),
        "windows" => ("skipped", "windows"),
        "hand-made" => ("skipped", "conflict"),
        other => panic!("a new fixture, {other}: say here what the webhook counts for it"),
    }
}

/// The series `keepalive_shim_webhook_reviews_total{outcome="…",reason="…"}`.
fn reviews_series(outcome: &str, reason: &str) -> String {
    if reason.is_empty() {
        format!("keepalive_shim_webhook_reviews_total{{outcome=\"{outcome}\"}}")
    } else {
        format!("keepalive_shim_webhook_reviews_total{{outcome=\"{outcome}\",reason=\"{reason}\"}}")
    }
}

const WARNINGS: &str = "keepalive_shim_webhook_warnings_total";

/// An answer over HTTPS: the status, the body, and the seconds curl took.
struct Answer {
    status: u16,
    body: Vec<u8>,
    seconds: f64,
}

impl Answer {
    fn text(&self) -> String {
        text(&self.body)
    }
}

/// `keepalive-shim webhook serve --listen 127.0.0.1:0` with the certificate in a folder of
/// `webhook certs`; stopped (by its PID) when dropped. Its stderr is kept for the messages.
struct Webhook {
    child: Child,
    port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Webhook {
    fn start(dir: &Path, flags: &[&str]) -> Webhook {
        let mut child = command(false, CLI)
            .args(["webhook", "serve", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keepalive-shim webhook serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let port = first
            .strip_prefix("keepalive-shim: serving https://127.0.0.1:")
            .and_then(|rest| rest.split_once("/mutate (image "))
            .and_then(|(port, _)| port.parse().ok())
            .unwrap_or_else(|| panic!("webhook serve said {first:?}"));
        let log = Arc::new(Mutex::new(String::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = kept.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Webhook {
            child,
            port,
            dir: dir.to_owned(),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", service_host(), self.port)
    }

    /// curl as the API server calls the webhook: the CA `ca`, the Service's name resolved to
    /// the server's loopback address, no proxy.
    fn curl_with(&self, ca: &Path) -> Command {
        let mut cmd = command(false, "curl");
        cmd.args(["--silent", "--show-error", "--noproxy", "*", "--cacert"])
            .arg(ca)
            .arg("--resolve")
            .arg(format!("{}:{}:127.0.0.1", service_host(), self.port))
            .args(["--max-time", "20"]);
        cmd
    }

    /// One request with `args` (and `body` on stdin when given), trusting the folder's CA.
    fn request(&self, args: &[&str], path: &str, body: Option<&[u8]>) -> Answer {
        let mut cmd = self.curl_with(&self.dir.join("ca.crt"));
        cmd.args(args)
            .args([
                "--output",
                "-",
                "--write-out",
                "\n%{http_code} %{time_total}",
            ])
            .arg(self.url(path))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if body.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("run curl");
        if let Some(body) = body {
            let mut stdin = child.stdin.take().unwrap();
            let body = body.to_vec();
            // A large body is written while curl's output is read.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&body);
            });
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl {args:?} {path}: {}: {}\nserver log:\n{}",
            out.status,
            text(&out.stderr),
            self.log()
        );
        let stdout = out.stdout;
        let cut = stdout.iter().rposition(|&b| b == b'\n').unwrap();
        let tail = text(&stdout[cut + 1..]);
        let (status, seconds) = tail.split_once(' ').unwrap();
        Answer {
            status: status.parse().unwrap(),
            body: stdout[..cut].to_vec(),
            seconds: seconds.parse().unwrap(),
        }
    }

    /// `POST /mutate` with `body`, as the API server sends an AdmissionReview.
    fn post(&self, body: &[u8]) -> Answer {
        self.request(
            &[
                "--header",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ],
            "/mutate",
            Some(body),
        )
    }

    fn get(&self, path: &str) -> Answer {
        self.request(&[], path, None)
    }

    /// curl's exit status for `GET /healthz` trusting `ca` (0, or 60: the certificate does not
    /// verify) and what it said.
    fn handshake(&self, ca: &Path) -> (i32, String) {
        let mut cmd = self.curl_with(ca);
        cmd.args(["--output", "/dev/null"])
            .arg(self.url("/healthz"));
        let out = cmd.output().expect("run curl");
        (out.status.code().unwrap_or(-1), text(&out.stderr))
    }

    /// `/metrics`: each series and its value.
    fn metrics(&self) -> BTreeMap<String, u64> {
        let answer = self.get("/metrics");
        assert_eq!(answer.status, 200, "/metrics: {}", answer.text());
        answer
            .text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The server is still running and never said it panicked.
    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "webhook serve exited: {}",
            self.log()
        );
        assert!(!self.log().contains("panicked"), "{}", self.log());
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keepalive-shim ARGS` with `stdin`: its output.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(false, CLI)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keepalive-shim");
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// The counts `/metrics` gained between `before` and `after`, the series that did not move
/// left out.
fn gained(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(series, n)| (series.clone(), n - before.get(series).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// Every fixture AdmissionReview over HTTPS: 200, the very bytes `webhook review` prints for
/// it, a patch that gives the golden pod (or no patch, and no golden pod); `/metrics` rises by
/// exactly one review per fixture under its outcome, and by the warnings the answers carried.
#[test]
fn every_fixture_over_https_is_answered_as_webhook_review_answers_it() {
    let dir = folder("fixtures");
    certs(&dir);
    let mut webhook = Webhook::start(&dir, &[]);
    for probe in ["/healthz", "/readyz"] {
        let answer = webhook.get(probe);
        assert_eq!(
            (answer.status, answer.text()),
            (200, "ok\n".into()),
            "{probe}"
        );
    }
    let before = webhook.metrics();
    assert_eq!(before.get(&reviews_series("injected", "")), Some(&0));
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let names = fixture_names();
    assert!(names.len() >= 13, "{names:?}");
    for name in &names {
        let body = read(&format!("{name}.json"));
        let request: Value = serde_json::from_slice(&body).unwrap();
        let uid = request["request"]["uid"].as_str().unwrap();
        let answer = webhook.post(&body);
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());

        let reviewed = run(&["webhook", "review"], &body);
        assert_eq!(
            reviewed.status.code(),
            Some(0),
            "{name}: {}",
            common::stderr(&reviewed)
        );
        let mut over_https = answer.body.clone();
        over_https.push(b'\n');
        assert!(
            over_https == reviewed.stdout,
            "{name}: the webhook answered\n{}\nbut webhook review printed\n{}",
            text(&over_https),
            text(&reviewed.stdout)
        );

        let response = response(&answer.body, uid);
        let golden = fixtures().join(format!("{name}.golden.json"));
        match patched(&request["request"]["object"], &response) {
            Some(pod) => {
                let want = std::fs::read_to_string(&golden)
                    .unwrap_or_else(|e| panic!("{name} was patched: {}: {e}", golden.display()));
                assert!(
                    pretty(&pod) == want,
                    "{name}: the patched pod is not {}",
                    golden.display()
                );
            }
            None => assert!(!golden.exists(), "{name}: no patch, but a golden pod"),
        }
        let (outcome, reason) = outcome_of(name);
        *expected.entry(reviews_series(outcome, reason)).or_default() += 1;
        let warnings = response["warnings"].as_array().map_or(0, Vec::len) as u64;
        if warnings > 0 {
            *expected.entry(WARNINGS.into()).or_default() += warnings;
        }
    }
    let after = webhook.metrics();
    assert_eq!(gained(&before, &after), expected);
    webhook.assert_alive();
}

/// What the webhook does with bodies the API server would never send: each gets a 4xx, or an
/// allowed answer with a warning when it can be answered (a `uid`), and never stops the
/// server: the next request gets the plain pod's answer. `/metrics` counts each one that
/// reached the review by its kind of failure.
#[test]
fn bad_bodies_get_a_4xx_or_a_warning_and_the_next_request_is_answered() {
    let dir = folder("bad");
    certs(&dir);
    let mut webhook = Webhook::start(&dir, &[]);
    let plain = read("plain-replicaset.json");
    let plain_answer = webhook.post(&plain);
    assert_eq!(plain_answer.status, 200);
    let before = webhook.metrics();

    let mut deployment: Value = serde_json::from_slice(&plain).unwrap();
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    let mut update: Value = serde_json::from_slice(&plain).unwrap();
    update["request"]["operation"] = "UPDATE".into();
    let pod_alone =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&plain).unwrap()["request"]["object"])
            .unwrap();
    let mut v1beta1: Value = serde_json::from_slice(&plain).unwrap();
    v1beta1["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut deep = Vec::new();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    // Valid JSON, one byte too many.
    let mut oversized = br#"{"pad":""#.to_vec();
    oversized.resize(MAX_BODY - 2, b'x');
    oversized.extend(br#""}"#);
    oversized.push(b' ');
    assert_eq!(oversized.len(), MAX_BODY + 1);

    struct Bad {
        what: &'static str,
        body: Vec<u8>,
        /// curl's extra arguments.
        args: &'static [&'static str],
        status: u16,
        /// In the body (an AdmissionReview's warning, or the 4xx's text).
        says: &'static str,
        /// What /metrics counts it as (reason of outcome="failed"), if it reaches the review.
        counted: Option<&'static str>,
    }
    let json_type: &[&str] = &["--header", "Content-Type: application/json"];
    let chunked: &[&str] = &[
        "--header",
        "Content-Type: application/json",
        "--header",
        "Transfer-Encoding: chunked",
    ];
    let bad = vec![
        Bad {
            what: "garbage",
            body: b"\x00\xff\xfe not JSON at all \x1b[2J".to_vec(),
            args: json_type,
            status: 400,
            says: "the request body is not JSON",
            counted: Some("not_json"),
        },
        Bad {
            what: "empty",
            body: Vec::new(),
            args: json_type,
            status: 400,
            says: "the request body is not JSON",
            counted: Some("not_json"),
        },
        Bad {
            what: "truncated",
            body: plain[..plain.len() / 2].to_vec(),
            args: json_type,
            status: 400,
            says: "the request body is not JSON",
            counted: Some("not_json"),
        },
        Bad {
            what: "nested 100,000 deep",
            body: deep,
            args: json_type,
            status: 400,
            says: "recursion limit exceeded",
            counted: Some("not_json"),
        },
        Bad {
            what: "a pod, not an AdmissionReview",
            body: pod_alone,
            args: json_type,
            status: 400,
            says: "not an admission.k8s.io/v1 AdmissionReview request: apiVersion \"v1\" and \
                   kind \"Pod\"",
            counted: Some("not_admission_review"),
        },
        Bad {
            what: "an AdmissionReview v1beta1",
            body: serde_json::to_vec(&v1beta1).unwrap(),
            args: json_type,
            status: 200,
            says: "keepalive-shim did not inject this pod: not an admission.k8s.io/v1 \
                   AdmissionReview request",
            counted: Some("not_admission_review"),
        },
        Bad {
            what: "a Deployment",
            body: serde_json::to_vec(&deployment).unwrap(),
            args: json_type,
            status: 200,
            says: "keepalive-shim did not inject this pod: the AdmissionReview is about \
                   Deployment apps/v1 (resource deployments), operation CREATE",
            counted: Some("not_a_pod"),
        },
        Bad {
            what: "a pod's UPDATE",
            body: serde_json::to_vec(&update).unwrap(),
            args: json_type,
            status: 200,
            says: "operation UPDATE, not a pod being created",
            counted: Some("not_a_pod"),
        },
        Bad {
            what: "oversized, with its length",
            body: oversized.clone(),
            args: json_type,
            status: 413,
            says: "",
            counted: None,
        },
        Bad {
            what: "oversized, chunked",
            body: oversized,
            args: chunked,
            status: 413,
            says: "",
            counted: None,
        },
    ];
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for case in &bad {
        let answer = webhook.request(
            &[case.args, &["--data-binary", "@-"]].concat(),
            "/mutate",
            Some(&case.body),
        );
        let what = case.what;
        assert_eq!(answer.status, case.status, "{what}: {}", answer.text());
        if case.status == 200 {
            let response = response(&answer.body, "7e3f1a52-0c4b-4d8e-a1f2-5b6c7d8e9f01");
            assert!(response.get("patch").is_none(), "{what}: patched");
            let warnings = response["warnings"].as_array().expect("a warning");
            assert_eq!(warnings.len(), 1, "{what}");
            assert!(
                warnings[0].as_str().unwrap().contains(case.says),
                "{what}: {warnings:?}"
            );
            *expected.entry(WARNINGS.into()).or_default() += 1;
        } else {
            assert!(
                answer.text().contains(case.says),
                "{what}: {}",
                answer.text()
            );
        }
        if let Some(reason) = case.counted {
            *expected
                .entry(reviews_series("failed", reason))
                .or_default() += 1;
        }
        // The next request is answered, as before.
        let next = webhook.post(&plain);
        assert_eq!(next.status, 200, "after {what}");
        assert!(
            next.body == plain_answer.body,
            "after {what}: {}",
            next.text()
        );
        *expected.entry(reviews_series("injected", "")).or_default() += 1;
        webhook.assert_alive();
    }
    // Neither a wrong path nor a wrong method reaches the review.
    assert_eq!(webhook.get("/mutate").status, 405);
    assert_eq!(webhook.get("/validate").status, 404);
    assert_eq!(gained(&before, &webhook.metrics()), expected);
    webhook.assert_alive();
}

/// Slow and idle clients hold connections while the API server calls: three that connect and
/// send nothing, three that send a TLS ClientHello's first bytes one a second, and five (more
/// than the four handler slots) that send a review's body one byte a second after the
/// handshake. Every review sent meanwhile is answered within a second; the idle connections
/// are closed by the server's head deadline (5 s), not held for ever.
#[test]
fn slow_and_idle_clients_do_not_stop_it_answering() {
    let dir = folder("slow");
    certs(&dir);
    let mut webhook = Webhook::start(&dir, &[]);
    let plain = read("plain-replicaset.json");
    let addr = format!("127.0.0.1:{}", webhook.port);

    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let t0 = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribblers: Vec<_> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // A TLS record header and a ClientHello's start, a byte a second.
                for byte in [
                    0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ] {
                    if stop.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    let mut slow_bodies: Vec<Child> = (0..5)
        .map(|_| {
            let mut cmd = webhook.curl_with(&dir.join("ca.crt"));
            cmd.args([
                "--limit-rate",
                "1",
                "--header",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", "@-", "--output", "/dev/null"])
            .arg(webhook.url("/mutate"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            let mut child = cmd.spawn().unwrap();
            // Given at once; curl sends it one byte a second.
            child.stdin.take().unwrap().write_all(&plain).unwrap();
            child
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut times = Vec::new();
    for _ in 0..5 {
        let answer = webhook.post(&plain);
        assert_eq!(answer.status, 200, "{}", answer.text());
        times.push(answer.seconds);
    }
    eprintln!("reviews answered beside slow clients in {times:?} s");
    assert!(times.iter().all(|&s| s < 1.0), "{times:?}");
    for child in &mut slow_bodies {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a slow client was done already"
        );
    }
    // The idle connections are closed by the server (EOF or reset) at its head deadline.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue, // an alert before the close
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "an idle connection still open after {:.1} s",
                        t0.elapsed().as_secs_f64()
                    )
                }
                Err(_) => break, // reset
            }
        }
    }
    let closed = t0.elapsed().as_secs_f64();
    eprintln!("idle connections closed by the server after {closed:.1} s");
    assert!((4.0..8.0).contains(&closed), "{closed:.1} s");
    stop.store(true, Ordering::Relaxed);
    for child in &mut slow_bodies {
        let _ = child.kill();
        let _ = child.wait();
    }
    for dribbler in dribblers {
        dribbler.join().unwrap();
    }
    webhook.assert_alive();
}

/// cert-manager (or a second `webhook certs` run) replaces the files in place: the next
/// handshake gets the new certificate. curl trusting the new CA succeeds and trusting the old
/// one fails; a name the certificate is not for fails too.
#[test]
fn a_certificate_replaced_on_disk_is_served_at_the_next_handshake() {
    let dir = folder("rotate");
    certs(&dir);
    let webhook = Webhook::start(&dir, &[]);
    let old = dir.parent().unwrap().join(format!(
        "{}-old-ca.crt",
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(dir.join("ca.crt"), &old).unwrap();
    assert_eq!(webhook.handshake(&old), (0, String::new()));

    certs(&dir);
    let new = dir.join("ca.crt");
    assert_ne!(std::fs::read(&new).unwrap(), std::fs::read(&old).unwrap());
    let (code, said) = webhook.handshake(&new);
    assert_eq!(
        code,
        0,
        "the new CA: {said}\nserver log:\n{}",
        webhook.log()
    );
    // curl exits 60 when OpenSSL reports the failed verification as such, 35 when it reports
    // the signature check's error (both CAs have the same name; the old key does not verify).
    let (code, said) = webhook.handshake(&old);
    assert!(
        code == 60 || code == 35 && said.contains("EVP lib"),
        "the old CA must fail: {code} {said}"
    );
    // And it serves reviews under the new one.
    let answer = webhook.post(&read("plain-replicaset.json"));
    assert_eq!(answer.status, 200);

    // The certificate names the Service only.
    let mut cmd = command(false, "curl");
    cmd.args(["--silent", "--show-error", "--noproxy", "*", "--cacert"])
        .arg(&new)
        .arg("--resolve")
        .arg(format!("other.{NAMESPACE}.svc:{}:127.0.0.1", webhook.port))
        .args(["--output", "/dev/null"])
        .arg(format!(
            "https://other.{NAMESPACE}.svc:{}/healthz",
            webhook.port
        ));
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(60),
        "another name: {}",
        common::stderr(&out)
    );
}

/// `webhook certs`' folder as a kustomize component of deploy/kubernetes, in an overlay a user
/// writes: `kubectl kustomize` renders the Secret the webhook mounts (kubernetes.io/tls, the
/// certificate and key of the folder) and the MutatingWebhookConfiguration with the folder's CA
/// as its caBundle; every object validates with `kubernetes-validate --strict` for three
/// Kubernetes versions.
#[test]
fn the_certs_folder_is_a_kustomize_component_of_deploy_kubernetes() {
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !kubectl.is_ok_and(|o| o.status.success()) {
        common::unavailable::<()>("kubectl is missing (it renders deploy/kubernetes)");
        return;
    }
    let dir = folder("component");
    let certs_dir = dir.join("certs");
    certs(&certs_dir);
    let up = "../".repeat(
        dir.strip_prefix(common::root())
            .unwrap()
            .components()
            .count(),
    );
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - \
             {up}deploy/kubernetes\ncomponents:\n  - certs\n"
        ),
    )
    .unwrap();
    let out = output_ok(command(false, "kubectl").arg("kustomize").arg(&dir));
    let objects: Vec<Value> =
        serde_saphyr::from_multiple(&text(&out.stdout)).expect("kustomize's output is YAML");
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
    };
    let file = |name: &str| std::fs::read(certs_dir.join(name)).unwrap();
    // kustomize wraps a generated Secret's values at 76 columns; base64 decoders (the API
    // server's too) skip the line breaks.
    let decoded = |value: &Value| {
        let joined: String = value.as_str().unwrap().split_whitespace().collect();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, joined).unwrap()
    };
    let secret = find("Secret", "keepalive-shim-webhook-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    assert!(decoded(&secret["data"]["tls.crt"]) == file("tls.crt"));
    assert!(decoded(&secret["data"]["tls.key"]) == file("tls.key"));
    assert_eq!(secret["data"].as_object().unwrap().len(), 2);
    let config = find("MutatingWebhookConfiguration", "keepalive-shim");
    let bundle = &config["webhooks"][0]["clientConfig"]["caBundle"];
    assert!(!bundle.as_str().unwrap().contains('\n'), "{bundle}");
    assert!(
        decoded(bundle) == file("ca.crt"),
        "the caBundle is not ca.crt: {bundle}"
    );
    assert_eq!(
        config["webhooks"][0]["clientConfig"]["service"]["name"],
        SERVICE
    );
    assert_eq!(
        config["webhooks"][0]["clientConfig"]["service"]["namespace"],
        NAMESPACE
    );
    // The Deployment mounts the very Secret.
    let deployment = find("Deployment", SERVICE);
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "keepalive-shim-webhook-tls"),
        "{volumes:?}"
    );

    let labelled: Vec<(String, Value)> = objects
        .iter()
        .map(|o| {
            let label = format!(
                "{}-{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
            (label, o.clone())
        })
        .collect();
    let Some(failures) = support::validate(&labelled, &support::KUBERNETES) else {
        return;
    };
    assert!(failures.is_empty(), "{failures}");
}

// ---- the commands ----

/// `inject` from a file and from stdin: the bundle of every workload kind comes out as the
/// golden file, byte for byte, with the one warning on stderr naming the object; the golden
/// file run again comes out unchanged. YAML it cannot read, a missing file and a bad flag each
/// get their exit status and a message naming what is wrong, and nothing on stdout.
#[test]
fn inject_writes_the_golden_workloads_from_a_file_and_from_stdin() {
    let input = fixtures().join("workloads.yaml");
    let golden = read("workloads.golden.yaml");
    let warning = "keepalive-shim: warning: CronJob report: keepalive-shim.io/count=\"lots\" is \
                   not a whole number from 1 to 127; not passed on, so the default applies\n";
    let from_file = run(&["inject", input.to_str().unwrap()], b"");
    let from_stdin = run(&["inject"], &read("workloads.yaml"));
    let from_dash = run(&["inject", "-"], &read("workloads.yaml"));
    for (what, out) in [
        ("a file", from_file),
        ("stdin", from_stdin),
        ("-", from_dash),
    ] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}",
            common::stderr(&out)
        );
        assert!(
            out.stdout == golden,
            "{what}: not the golden file:\n{}",
            text(&out.stdout)
        );
        assert_eq!(common::stderr(&out), warning, "{what}");
    }
    let again = run(&["inject", "-"], &golden);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        again.stdout == golden,
        "a second run changed:\n{}",
        text(&again.stdout)
    );
    assert_eq!(
        common::stderr(&again),
        warning,
        "the annotation is still bad"
    );

    let bad_yaml = b"apiVersion: v1\nkind: Pod\n---\nkind: [unclosed\n";
    for (what, args, stdin, code, says) in [
        (
            "unreadable YAML",
            vec!["inject", "-"],
            &bad_yaml[..],
            65,
            "keepalive-shim: inject: stdin: YAML document 2 (from line 3): line 4, column 7: unclosed bracket",
        ),
        (
            "not UTF-8",
            vec!["inject"],
            &b"kind: Pod\nname: \xff\xfe\n"[..],
            65,
            "keepalive-shim: inject: stdin is not UTF-8 text",
        ),
        (
            "a missing file",
            vec!["inject", "/nonexistent/app.yaml"],
            &b""[..],
            66,
            "keepalive-shim: inject: cannot read /nonexistent/app.yaml: No such file",
        ),
        (
            "a bad pull policy",
            vec!["inject", "--pull-policy", "Sometimes", "-"],
            &b""[..],
            2,
            "keepalive-shim: inject: ",
        ),
    ] {
        let out = run(&args, stdin);
        let stderr = common::stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        assert!(stderr.starts_with(says), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: wrote {}", text(&out.stdout));
    }
    let out = run(&["inject", "--pull-policy", "Sometimes"], b"");
    assert!(
        common::stderr(&out).contains("\"Sometimes\""),
        "{}",
        common::stderr(&out)
    );
}

/// `webhook review`: a fixture in, the answer out (exit 0; with `--delivery image-volume`,
/// the patch gives that golden pod); a body that is not an AdmissionReview gets exit 65 and a
/// message naming what it is, with nothing on stdout when there is nothing to answer (no uid)
/// and the allowed answer when there is.
#[test]
fn webhook_review_answers_stdin_and_refuses_what_is_not_an_admission_review() {
    let plain = read("plain-replicaset.json");
    let request: Value = serde_json::from_slice(&plain).unwrap();
    let uid = request["request"]["uid"].as_str().unwrap();

    let out = run(&["webhook", "review", "--delivery", "image-volume"], &plain);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(common::stderr(&out), "");
    assert_eq!(out.stdout.last(), Some(&b'\n'));
    let pod = patched(&request["request"]["object"], &response(&out.stdout, uid)).unwrap();
    assert_eq!(
        pretty(&pod),
        text(&read("plain-replicaset.image-volume.golden.json"))
    );

    let pod_alone = serde_json::to_vec(&request["request"]["object"]).unwrap();
    let mut configmap = request.clone();
    configmap["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    configmap["request"]["resource"] =
        json!({"group": "", "version": "v1", "resource": "configmaps"});
    let configmap = serde_json::to_vec(&configmap).unwrap();
    for (what, body, says, answered) in [
        (
            "a pod alone",
            &pod_alone[..],
            "keepalive-shim: webhook review: not an admission.k8s.io/v1 AdmissionReview request: \
             apiVersion \"v1\" and kind \"Pod\" (expected admission.k8s.io/v1 and AdmissionReview)\n",
            false,
        ),
        (
            "YAML",
            &b"apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n"[..],
            "keepalive-shim: webhook review: the request body is not JSON: expected value at line \
             1 column 1\n",
            false,
        ),
        (
            "nothing",
            &b""[..],
            "keepalive-shim: webhook review: the request body is not JSON: EOF while parsing a \
             value at line 1 column 0\n",
            false,
        ),
        (
            "a ConfigMap's review",
            &configmap[..],
            "keepalive-shim: webhook review: the AdmissionReview is about ConfigMap v1 (resource \
             configmaps), operation CREATE, not a pod being created",
            true,
        ),
    ] {
        let out = run(&["webhook", "review"], body);
        let stderr = common::stderr(&out);
        assert_eq!(out.status.code(), Some(65), "{what}: {stderr}");
        assert!(stderr.starts_with(says), "{what}: {stderr}");
        if answered {
            let response = response(&out.stdout, uid);
            assert!(response.get("patch").is_none());
            assert_eq!(response["warnings"].as_array().unwrap().len(), 1);
        } else {
            assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
        }
    }
    // Too large: one byte over the limit is read, no more.
    let mut big = vec![b' '; MAX_BODY];
    big.extend(b"{}");
    let out = run(&["webhook", "review"], &big);
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(
        common::stderr(&out),
        format!(
            "keepalive-shim: webhook review: the request body is {} bytes, more than the {MAX_BODY} \
             accepted\n",
            MAX_BODY + 1
        )
    );
    let out = run(&["webhook", "review", "--delivery", "nfs"], &plain);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("\"nfs\""),
        "{}",
        common::stderr(&out)
    );
    assert!(out.stdout.is_empty());
}
