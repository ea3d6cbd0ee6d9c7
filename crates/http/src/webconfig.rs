//! `--web.config.file`: Prometheus exporter-toolkit's web configuration (YAML), read as strictly
//! as exporter-toolkit reads it: an unknown key is an error that names it. Supported:
//! `tls_server_config` (cert_file/key_file re-read when they change, or cert/key inline;
//! client_auth_type, client_ca_file/client_ca, min_version, max_version, cipher_suites,
//! prefer_server_cipher_suites, curve_preferences), `http_server_config` (`headers`; `http2` is
//! accepted and has no effect: the server speaks HTTP/1.1), `basic_auth_users`, `rate_limit`.
//! Refused with a reason: `client_auth_type` values that do not verify the certificate, and
//! `client_allowed_sans`. Relative file names are taken from the configuration file's folder.

use crate::tls::{ClientAuth, Pem, TlsSettings, TlsVersion, beside};
use crate::{BasicAuth, HeaderName, HeaderValue, RateLimit, Security, Tls};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsServerConfig>,
    http_server_config: Option<HttpServerConfig>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RateLimitConfig>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitConfig {
    interval: Option<serde_json::Value>,
    burst: Option<u32>,
}

/// A web configuration file larger than this is refused.
const MAX_FILE: u64 = 1 << 20;

/// Reads and checks the file at `path`; the error names the file, the key, the value and what
/// is accepted.
pub fn load(path: &Path) -> Result<Security, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("--web.config.file {shown}: {e}"))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("--web.config.file {shown}: {e}"))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "--web.config.file {shown}: larger than {MAX_FILE} bytes"
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).map_err(|e| format!("--web.config.file {shown}: {e}"))
}

/// The same from the file's text; relative file names are taken from `dir`.
pub fn parse(text: &str, dir: &Path) -> Result<Security, String> {
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        match value {
            serde_json::Value::Null => File::default(),
            // Read again from the text, so that a mistake is told with its line and the
            // section it is in.
            serde_json::Value::Object(_) => {
                serde_saphyr::from_str(text).map_err(|e| e.to_string())?
            }
            _ => {
                return Err(
                    "not a YAML mapping (of tls_server_config, http_server_config, \
                     basic_auth_users, rate_limit), but a sequence or a single value"
                        .to_owned(),
                );
            }
        }
    };
    let mut security = Security::default();
    if let Some(tls) = file.tls_server_config {
        security.tls = tls_settings(tls, dir)?
            .map(|settings| Tls::new(&settings))
            .transpose()
            .map_err(|e| {
                if e.starts_with("tls_server_config") {
                    e
                } else {
                    format!("tls_server_config: {e}")
                }
            })?;
    }
    if let Some(http) = file.http_server_config {
        let _ = http.http2;
        for (name, value) in http.headers.unwrap_or_default() {
            if let Some(header) = response_header(&name, &value)? {
                security.headers.push(header);
            }
        }
    }
    if let Some(users) = file.basic_auth_users
        && !users.is_empty()
    {
        security.auth = Some(BasicAuth::new(users)?);
    }
    if let Some(limit) = file.rate_limit {
        let interval = match &limit.interval {
            None => std::time::Duration::ZERO,
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(0) => {
                std::time::Duration::ZERO
            }
            Some(serde_json::Value::String(s)) => crate::ratelimit::parse_go_duration(s)
                .ok_or_else(|| {
                    format!(
                        "rate_limit.interval: {s:?} is not a duration (like 1s, 500ms, 1m; 0 turns \
                         the limit off)"
                    )
                })?,
            Some(other) => {
                return Err(format!(
                    "rate_limit.interval: {other:?} is not a duration (like 1s, 500ms, 1m; 0 \
                     turns the limit off)"
                ));
            }
        };
        security.rate_limit = RateLimit::new(interval, limit.burst.unwrap_or(0))?;
    }
    Ok(security)
}

/// `None` when the section asks for nothing, as exporter-toolkit serves plain HTTP then.
fn tls_settings(c: TlsServerConfig, dir: &Path) -> Result<Option<TlsSettings>, String> {
    let nothing = c.cert.is_none()
        && c.key.is_none()
        && c.cert_file.is_none()
        && c.key_file.is_none()
        && c.client_ca.is_none()
        && c.client_ca_file.is_none()
        && c.client_auth_type.is_none();
    if nothing {
        return Ok(None);
    }
    let pem = |inline: Option<String>,
               file: Option<PathBuf>,
               what: &str|
     -> Result<Option<Pem>, String> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(format!(
                "tls_server_config: both {what} and {what}_file are set; give one"
            )),
            (Some(text), None) => Ok(Some(Pem::Inline(text))),
            (None, Some(path)) => Ok(Some(Pem::File(beside(dir, path)))),
            (None, None) => Ok(None),
        }
    };
    let cert = pem(c.cert, c.cert_file, "cert")?
        .ok_or("tls_server_config: cert_file (or cert) is missing")?;
    let key =
        pem(c.key, c.key_file, "key")?.ok_or("tls_server_config: key_file (or key) is missing")?;
    let client_ca = pem(c.client_ca, c.client_ca_file, "client_ca")?;
    let client_auth = match c.client_auth_type.as_deref() {
        None | Some("") | Some("NoClientCert") => ClientAuth::None,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::Require,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert")) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other:?} accepts a certificate without \
                 verifying it, which this server does not do; use RequireAndVerifyClientCert \
                 (or VerifyClientCertIfGiven) with client_ca_file"
            ));
        }
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ));
        }
    };
    if c.client_allowed_sans
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(
            "tls_server_config.client_allowed_sans: not supported by keepalive-shim; trust a CA \
             that signs only the allowed clients (client_ca_file)"
                .to_owned(),
        );
    }
    let version = |value: Option<String>, key: &str, default: TlsVersion| match value.as_deref() {
        None | Some("") => Ok(default),
        Some("TLS10") => Ok(TlsVersion::Tls10),
        Some("TLS11") => Ok(TlsVersion::Tls11),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(other) => Err(format!(
            "tls_server_config.{key}: {other:?} is not one of TLS10, TLS11, TLS12, TLS13"
        )),
    };
    Ok(Some(TlsSettings {
        cert,
        key,
        client_auth,
        client_ca,
        min_version: version(c.min_version, "min_version", TlsVersion::Tls12)?,
        max_version: version(c.max_version, "max_version", TlsVersion::Tls13)?,
        cipher_suites: c.cipher_suites.unwrap_or_default(),
        prefer_server_cipher_suites: c.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences: c.curve_preferences.unwrap_or_default(),
    }))
}

/// One of exporter-toolkit's `http_server_config.headers`; `None` for a blank value.
fn response_header(name: &str, value: &str) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    const NAMES: &[&str] = &[
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "X-XSS-Protection",
        "Strict-Transport-Security",
    ];
    let Some(known) = NAMES.iter().find(|n| n.eq_ignore_ascii_case(name)) else {
        return Err(format!(
            "http_server_config.headers: {name:?} is not one of {}",
            NAMES.join(", ")
        ));
    };
    if value.is_empty() {
        return Ok(None);
    }
    let lower = value.to_ascii_lowercase();
    if *known == "X-Frame-Options" && lower != "deny" && lower != "sameorigin" {
        return Err(format!(
            "http_server_config.headers.X-Frame-Options: {value:?} is not deny or sameorigin"
        ));
    }
    if *known == "X-Content-Type-Options" && lower != "nosniff" {
        return Err(format!(
            "http_server_config.headers.X-Content-Type-Options: {value:?} is not nosniff"
        ));
    }
    let header = HeaderName::from_bytes(known.as_bytes()).map_err(|e| e.to_string())?;
    let value = HeaderValue::from_str(value).map_err(|_| {
        format!("http_server_config.headers.{known}: {value:?} has a control character")
    })?;
    Ok(Some((header, value)))
}
