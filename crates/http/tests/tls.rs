//! TLS over real sockets with curl as the client: certificates the test makes (rcgen), laid out
//! as cert-manager mounts a Secret (`tls.crt -> ..data/tls.crt`, `..data -> ..TIMESTAMP`) and
//! rotated in place by swapping `..data`: new handshakes get the new certificate without a
//! restart, a broken new pair keeps the old one and is logged once. Client certificates from a
//! `--web.config.file`.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use keepalive_shim_http::{Limits, Method, Response, Security, Server, Tls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and its key: a server's for 127.0.0.1 and localhost, or a client's.
    fn issue(&self, name: &str, client: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A fresh folder `name` in this run's scratch folder (removed with it).
fn scratch(name: &str) -> PathBuf {
    let dir = common::scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Puts `cert` and `key` in `dir` the way the kubelet updates a Secret volume: a new
/// timestamped folder, then `..data` swapped to it with one rename.
fn publish(dir: &Path, version: &str, cert: &str, key: &str) {
    let folder = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tls.crt"), cert).unwrap();
    std::fs::write(folder.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// `curl` to `https://127.0.0.1:PORT/path` trusting `ca`; the HTTP status, or curl's exit code
/// as a negative number.
fn curl(addr: SocketAddr, path: &str, ca: &Path, extra: &[&str]) -> i32 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(format!("https://{addr}{path}"))
        .output()
        .unwrap();
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    } else {
        -out.status.code().unwrap_or(1000)
    }
}

fn metrics(security: Security, log: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    support::start(
        Server::new(Limits::default(), security)
            .route(Method::GET, "/metrics", |_| Response::text(200, "up 1\n"))
            .logger(move |line| log.lock().unwrap().push(line.to_owned())),
    )
}

#[test]
fn tls_follows_its_files_when_cert_manager_swaps_them() {
    if !common::have("curl", "Debian's curl; scripts/test.sh installs it") {
        return;
    }
    let dir = scratch("rotate");
    let (ca1, ca2, ca3) = (
        Ca::new("first CA"),
        Ca::new("second CA"),
        Ca::new("third CA"),
    );
    let ca1_pem = dir.join("ca1.pem");
    let ca2_pem = dir.join("ca2.pem");
    std::fs::write(&ca1_pem, ca1.pem()).unwrap();
    std::fs::write(&ca2_pem, ca2.pem()).unwrap();
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let (cert1, key1) = ca1.issue("server one", false);
    publish(&secret, "2026_01_01", &cert1, &key1);

    let tls = Tls::from_files(secret.join("tls.crt"), secret.join("tls.key")).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let addr = metrics(
        Security {
            tls: Some(tls),
            ..Security::default()
        },
        Arc::clone(&log),
    );
    assert_eq!(curl(addr, "/metrics", &ca1_pem, &[]), 200);
    assert_eq!(curl(addr, "/nope", &ca1_pem, &[]), 404);
    // curl's 60: the peer's certificate cannot be verified with the CA given.
    assert_eq!(curl(addr, "/metrics", &ca2_pem, &[]), -60);

    // Rotation: a new pair from another CA, swapped in; the next handshake has it.
    let (cert2, key2) = ca2.issue("server two", false);
    publish(&secret, "2026_02_01", &cert2, &key2);
    assert_eq!(curl(addr, "/metrics", &ca2_pem, &[]), 200);
    assert_eq!(curl(addr, "/metrics", &ca1_pem, &[]), -60);

    // A broken pair (a certificate with another certificate's key): the old pair stays, and
    // the problem is logged once however many handshakes come.
    let (cert3, _) = ca3.issue("server three", false);
    publish(&secret, "2026_03_01", &cert3, &key1);
    for _ in 0..5 {
        assert_eq!(curl(addr, "/metrics", &ca2_pem, &[]), 200);
    }
    let broken: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("cannot be used"))
        .cloned()
        .collect();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("does not belong"), "{broken:?}");
    // Not PEM at all: the same.
    publish(&secret, "2026_03_02", "garbage", "more garbage");
    assert_eq!(curl(addr, "/metrics", &ca2_pem, &[]), 200);

    // Fixed: the first CA's pair again.
    publish(&secret, "2026_04_01", &cert1, &key1);
    assert_eq!(curl(addr, "/metrics", &ca1_pem, &[]), 200);
    let lines = log.lock().unwrap().clone();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("loaded the new"))
            .count(),
        2,
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("cannot be used"))
            .count(),
        2,
        "{lines:?}"
    );

    // Plain HTTP to the TLS port: an error, quickly, and the server carries on.
    let plain = support::get(addr, "/metrics");
    assert!(plain.as_ref().is_none_or(|a| a.status >= 400), "{plain:?}");
    assert_eq!(curl(addr, "/metrics", &ca1_pem, &[]), 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_start_with_a_broken_pair_is_refused_with_the_file_named() {
    let dir = scratch("broken");
    let ca = Ca::new("a CA");
    let (cert, _) = ca.issue("server", false);
    let (_, other_key) = ca.issue("another", false);
    std::fs::write(dir.join("tls.crt"), &cert).unwrap();
    std::fs::write(dir.join("tls.key"), &other_key).unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    let error = Tls::from_files(dir.join("tls.crt"), dir.join("tls.key")).unwrap_err();
    assert!(error.contains("does not belong"), "{error}");
    let error = Tls::from_files(dir.join("missing.crt"), dir.join("tls.key")).unwrap_err();
    assert!(error.contains("missing.crt"), "{error}");
    let error = Tls::from_files(dir.join("empty"), dir.join("tls.key")).unwrap_err();
    assert!(
        error.contains("empty") && error.contains("no certificate"),
        "{error}"
    );
    let error = Tls::from_files(dir.join("tls.crt"), dir.join("empty")).unwrap_err();
    assert!(
        error.contains("empty") && error.contains("no private key"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn client_certificates_from_the_web_config() {
    if !common::have("curl", "Debian's curl; scripts/test.sh installs it") {
        return;
    }
    let dir = scratch("mtls");
    let (server_ca, client_ca, stranger_ca) = (
        Ca::new("server CA"),
        Ca::new("client CA"),
        Ca::new("stranger CA"),
    );
    let (cert, key) = server_ca.issue("server", false);
    let (client_cert, client_key) = client_ca.issue("prometheus", true);
    let (stranger_cert, stranger_key) = stranger_ca.issue("stranger", true);
    for (name, text) in [
        ("server.crt", cert),
        ("server.key", key),
        ("server-ca.pem", server_ca.pem()),
        ("client-ca.pem", client_ca.pem()),
        ("client.crt", client_cert),
        ("client.key", client_key),
        ("stranger.crt", stranger_cert),
        ("stranger.key", stranger_key),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let client = |who: &str| {
        [
            "--cert".to_owned(),
            dir.join(format!("{who}.crt")).display().to_string(),
            "--key".to_owned(),
            dir.join(format!("{who}.key")).display().to_string(),
        ]
    };
    let as_strs = |v: &[String; 4]| -> Vec<String> { v.to_vec() };
    let ca = dir.join("server-ca.pem");
    for (kind, without) in [
        ("RequireAndVerifyClientCert", false),
        ("VerifyClientCertIfGiven", true),
    ] {
        let config = dir.join(format!("{kind}.yml"));
        std::fs::write(
            &config,
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: {kind}\n  client_ca_file: client-ca.pem\n  min_version: TLS12\n"
            ),
        )
        .unwrap();
        let security = keepalive_shim_http::load_web_config(&config).unwrap();
        let addr = metrics(security, Arc::new(Mutex::new(Vec::new())));
        let good = as_strs(&client("client"));
        let good: Vec<&str> = good.iter().map(String::as_str).collect();
        let bad = as_strs(&client("stranger"));
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        assert_eq!(curl(addr, "/metrics", &ca, &good), 200, "{kind}");
        assert!(
            curl(addr, "/metrics", &ca, &bad) < 0,
            "{kind}: a stranger got in"
        );
        let none = curl(addr, "/metrics", &ca, &[]);
        if without {
            assert_eq!(none, 200, "{kind}");
        } else {
            assert!(none < 0, "{kind}: no certificate got {none}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls13_only_and_basic_auth_through_curl() {
    if !common::have("curl", "Debian's curl; scripts/test.sh installs it") {
        return;
    }
    let dir = scratch("tls13");
    let ca = Ca::new("a CA");
    let (cert, key) = ca.issue("server", false);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS13\n\
             basic_auth_users:\n  alice: {hash}\n"
        ),
    )
    .unwrap();
    let security = keepalive_shim_http::load_web_config(&dir.join("web.yml")).unwrap();
    let addr = metrics(security, Arc::new(Mutex::new(Vec::new())));
    let ca_pem = dir.join("ca.pem");
    assert_eq!(curl(addr, "/metrics", &ca_pem, &[]), 401);
    assert_eq!(curl(addr, "/metrics", &ca_pem, &["-u", "alice:wrong"]), 401);
    assert_eq!(
        curl(addr, "/metrics", &ca_pem, &["-u", "alice:s3cret"]),
        200
    );
    assert_eq!(
        curl(
            addr,
            "/metrics",
            &ca_pem,
            &["-u", "alice:s3cret", "--tlsv1.3"]
        ),
        200
    );
    // curl's 35: the handshake failed (TLS 1.2 at most is refused).
    assert_eq!(
        curl(
            addr,
            "/metrics",
            &ca_pem,
            &["-u", "alice:s3cret", "--tls-max", "1.2"]
        ),
        -35
    );
    let _ = std::fs::remove_dir_all(&dir);
}
