//! `--web.config.file` in exporter-toolkit's format: read strictly (every mistake named), and
//! what it turns on, over real sockets: basic auth (401 with `WWW-Authenticate: Basic`, a
//! password checked once per distinct credential, not per scrape), response headers, the rate
//! limit.

mod support;

use keepalive_shim_http::{Limits, Method, Response, Security, Server, parse_web_config};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

fn error_of(yaml: &str) -> String {
    match parse_web_config(yaml, Path::new("/nonexistent")) {
        Ok(_) => panic!("accepted: {yaml}"),
        Err(e) => e,
    }
}

#[test]
fn mistakes_are_named() {
    let cases: &[(&str, &[&str])] = &[
        (
            "tls_server_configs:\n  cert_file: a\n",
            &["tls_server_configs"],
        ),
        (
            "tls_server_config:\n  cert_fil: a\n",
            &["cert_fil", "cert_file"],
        ),
        ("http_server_config:\n  http3: true\n", &["http3"]),
        ("rate_limit:\n  intervals: 1s\n", &["intervals"]),
        (
            "basic_auth_users:\n  alice: hunter2\n",
            &["alice", "bcrypt"],
        ),
        ("tls_server_config:\n  key_file: k\n", &["cert_file"]),
        ("tls_server_config:\n  cert_file: c\n", &["key_file"]),
        (
            "tls_server_config:\n  cert_file: c\n  cert: x\n  key_file: k\n",
            &["cert", "cert_file"],
        ),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  client_auth_type: RequireAnyClientCert\n",
            &["client_auth_type", "RequireAnyClientCert"],
        ),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  client_auth_type: Always\n",
            &["client_auth_type", "Always", "RequireAndVerifyClientCert"],
        ),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  min_version: TLS1.2\n",
            &["min_version", "TLS1.2", "TLS12"],
        ),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  client_allowed_sans: [a]\n",
            &["client_allowed_sans"],
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: me\n",
            &["X-Powered-By", "Content-Security-Policy"],
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            &["X-Frame-Options", "allow", "sameorigin"],
        ),
        (
            "rate_limit:\n  interval: soon\n  burst: 2\n",
            &["rate_limit.interval", "soon"],
        ),
        ("rate_limit:\n  interval: 1s\n", &["burst"]),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            &[
                "cipher_suites",
                "TLS_RSA_WITH_RC4_128_SHA",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ],
        ),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  curve_preferences: [CurveP521]\n",
            &["curve_preferences", "CurveP521", "X25519"],
        ),
        (
            "tls_server_config:\n  cert: x\n  key: y\n  max_version: TLS11\n",
            &["max_version", "TLS13"],
        ),
        ("tls_server_config: [\n", &["line"]),
        ("- just\n- a list\n", &["sequence", "mapping"]),
    ];
    for (yaml, words) in cases {
        let error = error_of(yaml);
        for word in *words {
            assert!(
                error.contains(word),
                "{yaml:?}: {error:?} does not say {word:?}"
            );
        }
    }
    // A file that names a missing certificate: the path in the message.
    let error = error_of("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n");
    assert!(error.contains("/nonexistent/nope.crt"), "{error}");
    // From a file: the file named too.
    let dir = std::env::temp_dir().join(format!("keepalive-shim-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yml");
    std::fs::write(&file, "basic_auth_user:\n  a: b\n").unwrap();
    let error = keepalive_shim_http::load_web_config(&file).unwrap_err();
    assert!(
        error.contains("web.yml") && error.contains("basic_auth_user"),
        "{error}"
    );
    let error = keepalive_shim_http::load_web_config(&dir.join("absent.yml")).unwrap_err();
    assert!(error.contains("absent.yml"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_choices_by_exporter_toolkit_names_are_accepted() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let indent = |pem: &str| pem.replace('\n', "\n    ");
    let yaml = format!(
        "tls_server_config:\n  cert: |\n    {}\n  key: |\n    {}\n  min_version: TLS10\n  \
         cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n    - \
         TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305\n  prefer_server_cipher_suites: false\n  \
         curve_preferences: [CurveP256, X25519]\n",
        indent(&cert.pem()),
        indent(&key.serialize_pem())
    );
    let security = parse_web_config(&yaml, Path::new(".")).unwrap();
    assert!(security.tls.is_some());
    assert!(security.auth.is_none());
}

#[test]
fn what_is_accepted() {
    for yaml in [
        "",
        "# nothing\n",
        "tls_server_config: {}\n",
        "http_server_config:\n  http2: false\n  headers:\n    X-Content-Type-Options: nosniff\n",
        "rate_limit:\n  interval: 0\n",
        "rate_limit:\n  interval: 1m30s\n  burst: 20\n",
        "basic_auth_users: {}\n",
    ] {
        if let Err(e) = parse_web_config(yaml, Path::new(".")) {
            panic!("{yaml:?} refused: {e}");
        }
    }
}

fn server(yaml: &str) -> std::net::SocketAddr {
    let security: Security = parse_web_config(yaml, Path::new(".")).unwrap();
    start(
        Server::new(Limits::default(), security).route(Method::GET, "/metrics", |req| {
            Response::text(200, format!("user {:?}\n", req.user))
        }),
    )
}

fn get_as(addr: std::net::SocketAddr, authorization: Option<&str>) -> (Answer, Duration) {
    let extra = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let started = Instant::now();
    let answer = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    (answer, started.elapsed())
}

fn basic(user: &str, password: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in raw.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// bcrypt at cost 10 takes tens of milliseconds optimised, longer in a test build: paid by every
/// request with a wrong password, and by the first with each right one only.
#[test]
fn basic_auth_checks_each_credential_once() {
    let hash = bcrypt::hash("correct horse", 10).unwrap();
    let other = bcrypt::hash("battery staple", 10).unwrap();
    let addr = server(&format!(
        "basic_auth_users:\n  alice: {hash}\n  bob: '{other}'\n"
    ));

    let (none, _) = get_as(addr, None);
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate").as_deref(), Some("Basic"));
    let (garbled, _) = get_as(addr, Some("Basic !!!"));
    assert_eq!(garbled.status, 401);
    let (bearer, _) = get_as(addr, Some("Bearer abc"));
    assert_eq!(bearer.status, 401);

    // Without the memory of passed credentials: every wrong password costs a bcrypt check.
    let wrong: Vec<Duration> = (0..3)
        .map(|_| {
            let (a, t) = get_as(addr, Some(&basic("alice", "wrong")));
            assert_eq!(a.status, 401);
            t
        })
        .collect();
    // An unknown user costs the same (timing does not tell who exists).
    let (unknown, unknown_took) = get_as(addr, Some(&basic("mallory", "x")));
    assert_eq!(unknown.status, 401);

    let (first, first_took) = get_as(addr, Some(&basic("alice", "correct horse")));
    assert_eq!(first.status, 200);
    assert!(first.text().contains("alice"), "{}", first.text());
    let again: Vec<Duration> = (0..20)
        .map(|_| {
            let (a, t) = get_as(addr, Some(&basic("alice", "correct horse")));
            assert_eq!(a.status, 200);
            t
        })
        .collect();
    let cost = *wrong.iter().min().unwrap();
    let slowest_again = *again.iter().max().unwrap();
    eprintln!(
        "bcrypt cost 10 per check: wrong {wrong:?}, unknown user {unknown_took:?}, first right \
         {first_took:?}; the next 20 right: at most {slowest_again:?}"
    );
    assert!(first_took >= cost / 2, "{first_took:?} vs {cost:?}");
    assert!(unknown_took >= cost / 2, "{unknown_took:?} vs {cost:?}");
    assert!(slowest_again < cost / 4, "{again:?} vs {cost:?}");
    // Another user, another first check.
    let (bob, bob_took) = get_as(addr, Some(&basic("bob", "battery staple")));
    assert_eq!(bob.status, 200);
    assert!(bob_took >= cost / 2, "{bob_took:?} vs {cost:?}");
    // A right user with a wrong password is not let in by the memory of the right one.
    let (a, _) = get_as(addr, Some(&basic("alice", "correct horsf")));
    assert_eq!(a.status, 401);
}

#[test]
fn headers_and_the_rate_limit() {
    let addr = server(
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
         Strict-Transport-Security: max-age=31536000\nrate_limit:\n  interval: 1h\n  burst: 3\n",
    );
    for _ in 0..3 {
        let ok = get(addr, "/metrics").unwrap();
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("x-frame-options").as_deref(), Some("deny"));
        assert_eq!(
            ok.header("strict-transport-security").as_deref(),
            Some("max-age=31536000")
        );
    }
    let limited = get(addr, "/metrics").unwrap();
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.header("x-frame-options").as_deref(), Some("deny"));
}
