//! TLS with rustls (the `ring` provider): a certificate and key read from files and read again
//! when the files change. cert-manager rotates a Secret mounted in a pod by swapping the
//! directory's `..data` symlink, so the files are compared by what they point to (device, inode,
//! size, modification time) at every handshake, a stat of each; a changed pair is loaded and
//! used for the next handshakes, and a pair that cannot be used (unreadable, not PEM, a key that
//! does not match the certificate) leaves the previous one in place, logged once per change.

use crate::Logger;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Where a PEM text comes from: a file (read again when it changes) or the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// exporter-toolkit's `client_auth_type`, those values that verify what they get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert`.
    #[default]
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional, but verified when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`.
    Require,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

/// What TLS is asked for (exporter-toolkit's `tls_server_config`).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    /// The CAs a client certificate must chain to (read once, at start).
    pub client_ca: Option<Pem>,
    /// TLS 1.0 and 1.1 are not offered by rustls: a minimum below 1.2 means 1.2.
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites by their IANA (and Go) names, in the server's order; empty: all.
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// Key exchange groups by Go's names (`X25519`, `CurveP256`, `CurveP384`); empty: all.
    pub curve_preferences: Vec<String>,
}

impl TlsSettings {
    /// A certificate and a key from files, everything else as default.
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            cert: Pem::File(cert.into()),
            key: Pem::File(key.into()),
            client_auth: ClientAuth::None,
            client_ca: None,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
            prefer_server_cipher_suites: true,
            curve_preferences: Vec::new(),
        }
    }
}

/// TLS ready to serve: the settings checked and the first certificate loaded.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
    resolver: Arc<Reloading>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.resolver.cert)
            .finish()
    }
}

impl Tls {
    /// A certificate and key from files (the webhook's `--tls-cert`, `--tls-key`).
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Tls, String> {
        Tls::new(&TlsSettings::files(cert, key))
    }

    /// Checks the settings and loads the certificate; an error says what is wrong and where.
    pub fn new(settings: &TlsSettings) -> Result<Tls, String> {
        // rustls 0.23.48 marks the ring provider deprecated because it has no post-quantum key
        // exchange (X25519MLKEM768 is aws-lc-rs only); aws-lc-rs needs cmake and a heavier
        // build for the static musl tool, and X25519 remains what clients negotiate here.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        choose_suites(&mut provider, &settings.cipher_suites)?;
        choose_groups(&mut provider, &settings.curve_preferences)?;
        let versions = versions(settings.min_version, settings.max_version)?;
        let provider = Arc::new(provider);
        let first = load_pair(&settings.cert, &settings.key, &provider)?;
        let resolver = Arc::new(Reloading {
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(first)),
            seen: Mutex::new(Seen {
                loaded: stamp(&settings.cert, &settings.key),
                failed: None,
            }),
            log: OnceLock::new(),
        });
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls_server_config: {e}"))?;
        let builder = match (settings.client_auth, &settings.client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(
                    "tls_server_config: client_auth_type asks for client certificates, but no \
                     client_ca_file (or client_ca) says which CAs to trust"
                        .to_owned(),
                );
            }
            (auth, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: not a usable CA certificate: {e}", name(ca)))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = if auth == ClientAuth::VerifyIfGiven {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| format!("{}: {e}", name(ca)))?,
                )
            }
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ignore_client_order = settings.prefer_server_cipher_suites;
        Ok(Tls {
            config: Arc::new(config),
            resolver,
        })
    }

    pub(crate) fn server_config(&self, log: Logger) -> Arc<ServerConfig> {
        let _ = self.resolver.log.set(log);
        Arc::clone(&self.config)
    }
}

fn versions(
    min: TlsVersion,
    max: TlsVersion,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    if max < TlsVersion::Tls12 {
        return Err(
            "tls_server_config.max_version: this server offers TLS 1.2 and 1.3 only; give TLS12 \
             or TLS13"
                .to_owned(),
        );
    }
    if min > max {
        return Err("tls_server_config: min_version is above max_version".to_owned());
    }
    let mut out = Vec::new();
    if min <= TlsVersion::Tls12 {
        out.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

fn choose_suites(provider: &mut CryptoProvider, names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let tls12 =
        |s: &rustls::SupportedCipherSuite| matches!(s, rustls::SupportedCipherSuite::Tls12(_));
    let suite_name = |s: &rustls::SupportedCipherSuite| {
        s.suite()
            .as_str()
            .map_or_else(|| format!("{:?}", s.suite()), str::to_owned)
    };
    let offered: Vec<String> = provider
        .cipher_suites
        .iter()
        .filter(|s| tls12(s))
        .map(suite_name)
        .collect();
    let mut chosen = Vec::new();
    for name in names {
        // Go also accepts the ChaCha20 suites without their "_SHA256".
        let wanted = if name.ends_with("_CHACHA20_POLY1305") {
            format!("{name}_SHA256")
        } else {
            name.clone()
        };
        let Some(suite) = provider
            .cipher_suites
            .iter()
            .find(|s| tls12(s) && suite_name(s) == wanted)
        else {
            return Err(format!(
                "tls_server_config.cipher_suites: {name:?} is not offered here; accepted: {}",
                offered.join(", ")
            ));
        };
        chosen.push(*suite);
    }
    chosen.extend(provider.cipher_suites.iter().filter(|s| !tls12(s)).copied());
    provider.cipher_suites = chosen;
    Ok(())
}

fn choose_groups(provider: &mut CryptoProvider, names: &[String]) -> Result<(), String> {
    use rustls::NamedGroup;
    if names.is_empty() {
        return Ok(());
    }
    let mut chosen = Vec::new();
    for name in names {
        let group = match name.as_str() {
            "X25519" => NamedGroup::X25519,
            "CurveP256" | "P256" => NamedGroup::secp256r1,
            "CurveP384" | "P384" => NamedGroup::secp384r1,
            _ => {
                return Err(format!(
                    "tls_server_config.curve_preferences: {name:?} is not offered here; \
                     accepted: X25519, CurveP256, CurveP384"
                ));
            }
        };
        if let Some(kx) = provider.kx_groups.iter().find(|g| g.name() == group) {
            chosen.push(*kx);
        }
    }
    provider.kx_groups = chosen;
    Ok(())
}

/// PEM files are small: anything larger is not one.
const MAX_PEM: u64 = 1 << 20;

fn name(pem: &Pem) -> String {
    match pem {
        Pem::File(path) => path.display().to_string(),
        Pem::Inline(_) => "the inline PEM text".to_owned(),
    }
}

fn read(pem: &Pem) -> Result<Vec<u8>, String> {
    match pem {
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
        Pem::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut bytes = Vec::new();
            file.take(MAX_PEM + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes.len() as u64 > MAX_PEM {
                return Err(format!(
                    "{}: larger than {MAX_PEM} bytes, not a PEM file",
                    path.display()
                ));
            }
            Ok(bytes)
        }
    }
}

fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(pem)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", name(pem)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (a PEM \"BEGIN CERTIFICATE\" block)",
            name(pem)
        ));
    }
    Ok(certs)
}

fn load_pair(cert: &Pem, key: &Pem, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let certs = certificates(cert)?;
    let key_bytes = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| format!("{}: no private key in it: {e}", name(key)))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: not a usable private key: {e}", name(key)))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "the key in {} does not belong to the certificate in {}: {e}",
            name(key),
            name(cert)
        )
    })?;
    Ok(pair)
}

/// Device, inode, size, modification time (seconds, nanoseconds).
type FileStamp = (u64, u64, u64, i64, i64);

/// What the two files were when last looked at: device, inode, size, modification time of what
/// each path leads to; or why they could not be looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stamp {
    Inline,
    Files([FileStamp; 2]),
    Missing(String),
}

fn stamp(cert: &Pem, key: &Pem) -> Stamp {
    let one = |pem: &Pem| -> Result<Option<FileStamp>, String> {
        match pem {
            Pem::Inline(_) => Ok(None),
            Pem::File(path) => std::fs::metadata(path)
                .map(|m| Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())))
                .map_err(|e| format!("{}: {e}", path.display())),
        }
    };
    match (one(cert), one(key)) {
        (Ok(None), Ok(None)) => Stamp::Inline,
        (Ok(c), Ok(k)) => Stamp::Files([c.unwrap_or_default(), k.unwrap_or_default()]),
        (Err(e), _) | (_, Err(e)) => Stamp::Missing(e),
    }
}

struct Seen {
    loaded: Stamp,
    /// The files as they were when they last failed to load (not tried again until they change).
    failed: Option<Stamp>,
}

/// Hands each handshake the certificate, loading it again when its files changed.
struct Reloading {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
    log: OnceLock<Logger>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .finish()
    }
}

impl Reloading {
    fn say(&self, line: &str) {
        match self.log.get() {
            Some(log) => log(line),
            None => crate::stderr_line(line),
        }
    }

    fn reload_if_changed(&self) {
        let now = stamp(&self.cert, &self.key);
        if now == Stamp::Inline {
            return;
        }
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if now == seen.loaded || seen.failed.as_ref() == Some(&now) {
            return;
        }
        let loaded = match &now {
            Stamp::Missing(e) => Err(e.clone()),
            _ => load_pair(&self.cert, &self.key, &self.provider),
        };
        match loaded {
            Ok(pair) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(pair);
                }
                seen.loaded = now;
                seen.failed = None;
                self.say(&format!(
                    "TLS: loaded the new certificate from {}",
                    name(&self.cert)
                ));
            }
            Err(e) => {
                seen.failed = Some(now);
                self.say(&format!(
                    "TLS: the changed certificate and key cannot be used ({e}); still serving \
                     the previous certificate"
                ));
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// A relative path in a configuration file is taken from the file's folder.
pub(crate) fn beside(dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        dir.join(path)
    }
}
