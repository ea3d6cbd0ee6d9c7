//! What the mutation gives a pod, as one value: the image, how the library reaches the pod (an
//! init container's copy, or an image volume), the init container's resources, where the
//! library is mounted, and the largest request body `review` reads. [`Config::check`] names any
//! field a caller (a command-line flag) got wrong.

use crate::Error;
use keepalive_shim_policy::preload::{LIBRARY_NAME, char_name, unfit_char};

/// This crate's version, which is the workspace's: the default image is `keepalive-shim:VERSION`,
/// the image `scripts/dist.sh` makes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the library is mounted in every container, by default.
pub const DEFAULT_MOUNT_PATH: &str = "/keepalive-shim";

/// Where the keepalive-shim image holds the library: with an image volume, the library is at
/// `MOUNT_PATH/usr/lib/keepalive-shim/libkeepalive_shim.so`.
pub const IMAGE_LIBRARY_DIR: &str = "usr/lib/keepalive-shim";

/// The tool in the keepalive-shim image: the init container runs `TOOL copy-library MOUNT_PATH`.
pub const IMAGE_TOOL: &str = "/usr/bin/keepalive-shim";

/// The init container's user by default: non-zero, as the restricted Pod Security Standard asks
/// (the image is `FROM scratch` and names none); the `emptyDir` it writes into is writable by
/// every user.
pub const DEFAULT_RUN_AS_USER: u32 = 65532;

/// The largest AdmissionReview body read by default. The API server stores objects of at most
/// 1.5 MiB in etcd and limits requests to 3 MiB; an AdmissionReview carries the object once
/// (twice for an UPDATE, which this webhook is not registered for).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// How the library reaches the pod's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// An init container from the keepalive-shim image copies the library into an `emptyDir`
    /// volume (the default: works on every Kubernetes version).
    Copy,
    /// The keepalive-shim image itself is mounted read-only as a volume (`spec.volumes[].image`:
    /// alpha in 1.31, beta and on by default in 1.35): no init container, nothing copied. Refused
    /// by API servers without the feature.
    ImageVolume,
}

impl Delivery {
    /// `copy` or `image-volume`.
    pub fn parse(text: &str) -> Result<Delivery, Error> {
        match text {
            "copy" => Ok(Delivery::Copy),
            "image-volume" => Ok(Delivery::ImageVolume),
            _ => Err(Error::config("delivery", text, "one of copy, image-volume")),
        }
    }
}

/// `imagePullPolicy` of the init container (or `pullPolicy` of the image volume).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn name(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }

    /// `Always`, `IfNotPresent` or `Never`, as Kubernetes spells them.
    pub fn parse(text: &str) -> Result<PullPolicy, Error> {
        match text {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            _ => Err(Error::config(
                "image pull policy",
                text,
                "one of Always, IfNotPresent, Never",
            )),
        }
    }
}

/// The init container's requests and limits, as Kubernetes quantities. Explicit and small, so
/// that namespaces with a `ResourceQuota` or a `LimitRange` accept the pod: `copy-library` reads
/// one 140 KB file and writes it, with a peak RSS of about 1 MiB (docs/kubernetes.md says how
/// that was measured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_request: "10m".into(),
            memory_request: "16Mi".into(),
            cpu_limit: "100m".into(),
            memory_limit: "32Mi".into(),
        }
    }
}

/// Everything the mutation needs to know; `Config::default()` is what the webhook and `inject`
/// use without flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The keepalive-shim image (`keepalive-shim:VERSION`, or a registry's copy of it).
    pub image: String,
    pub pull_policy: PullPolicy,
    pub delivery: Delivery,
    /// The init container's requests and limits ([`Delivery::Copy`] only).
    pub resources: Resources,
    /// The init container's user and group ([`Delivery::Copy`] only); never 0. `None` leaves
    /// them to the platform: OpenShift's `restricted-v2` SCC refuses a user outside the
    /// namespace's range and assigns one itself (the pod must then run on an image that names a
    /// non-root user, or with such an SCC; `runAsNonRoot` stays).
    pub run_as_user: Option<u32>,
    /// Where the volume is mounted in every container (and the init container).
    pub mount_path: String,
    /// The library's file name: what `copy-library` writes (always `libkeepalive_shim.so` for
    /// the keepalive-shim image), or what the image volume holds in [`IMAGE_LIBRARY_DIR`].
    pub library: String,
    /// The largest AdmissionReview body `review` reads, in bytes.
    pub max_body: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            image: format!("keepalive-shim:{VERSION}"),
            pull_policy: PullPolicy::IfNotPresent,
            delivery: Delivery::Copy,
            resources: Resources::default(),
            run_as_user: Some(DEFAULT_RUN_AS_USER),
            mount_path: DEFAULT_MOUNT_PATH.into(),
            library: LIBRARY_NAME.into(),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// What a quantity may be, for the messages.
const ACCEPT_QUANTITY: &str = "a Kubernetes quantity (like 10m, 0.1, 16Mi, 1G)";

impl Config {
    /// The path `LD_PRELOAD` names in every container.
    pub fn library_path(&self) -> String {
        let mount = self.mount_path.trim_end_matches('/');
        match self.delivery {
            Delivery::Copy => format!("{mount}/{}", self.library),
            Delivery::ImageVolume => format!("{mount}/{IMAGE_LIBRARY_DIR}/{}", self.library),
        }
    }

    /// Every field a caller may have got wrong; the first problem found, naming the field, the
    /// value and what is accepted.
    pub fn check(&self) -> Result<(), Error> {
        if self.image.is_empty()
            || self
                .image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::config(
                "image",
                &self.image,
                "an image reference without spaces (like keepalive-shim:0.1.0 or \
                 registry.example.com/keepalive-shim:0.1.0)",
            ));
        }
        for (field, value) in [
            ("init container cpu request", &self.resources.cpu_request),
            (
                "init container memory request",
                &self.resources.memory_request,
            ),
            ("init container cpu limit", &self.resources.cpu_limit),
            ("init container memory limit", &self.resources.memory_limit),
        ] {
            if !is_quantity(value) {
                return Err(Error::config(field, value, ACCEPT_QUANTITY));
            }
        }
        // The API server refuses a pod whose request is above its limit: every pod would fail.
        let r = &self.resources;
        for (field, request, limit) in [
            ("init container cpu request", &r.cpu_request, &r.cpu_limit),
            (
                "init container memory request",
                &r.memory_request,
                &r.memory_limit,
            ),
        ] {
            if quantity(request).unwrap_or(0.0) > quantity(limit).unwrap_or(0.0) {
                return Err(Error::config(
                    field,
                    request,
                    &format!("at most the limit, {limit}"),
                ));
            }
        }
        if self.run_as_user == Some(0) {
            return Err(Error::config(
                "init container user",
                "0",
                "a user id other than 0 (the restricted Pod Security Standard refuses root)",
            ));
        }
        const ACCEPT_MOUNT: &str = "an absolute path of at most 256 bytes, not /, without \
            `..` and without spaces or colons (LD_PRELOAD splits on them)";
        let mount = &self.mount_path;
        if !mount.starts_with('/')
            || mount.trim_end_matches('/').is_empty()
            || mount.len() > 256
            || mount.split('/').any(|part| part == "..")
            || mount.chars().any(char::is_control)
        {
            return Err(Error::config("mount path", mount, ACCEPT_MOUNT));
        }
        if let Some(c) = unfit_char(mount) {
            return Err(Error::config(
                "mount path",
                mount,
                &format!("{ACCEPT_MOUNT}; it has {}", char_name(c)),
            ));
        }
        let library = &self.library;
        if library.is_empty()
            || library == "."
            || library == ".."
            || library.len() > 255
            || library.contains('/')
            || library.chars().any(char::is_control)
            || unfit_char(library).is_some()
        {
            return Err(Error::config(
                "library",
                library,
                "a file name (no `/`, spaces or colons), like libkeepalive_shim.so",
            ));
        }
        if self.max_body == 0 {
            return Err(Error::config(
                "largest request body",
                "0",
                "a size in bytes above 0",
            ));
        }
        Ok(())
    }
}

/// The value of a Kubernetes quantity without a sign (`10m` is 0.01, `16Mi` 16777216): a number
/// (`1`, `0.5`, `.5`, `1.`) and one suffix: none, `m`, `k`, `M`, `G`, `T`, `P`, `E`,
/// `Ki`…`Ei`, or an exponent `e3`, `E-2`; `None` for anything else. An exponent too large to
/// compute with is a quantity still, of value 0.
fn quantity(text: &str) -> Option<f64> {
    let number = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (digits, suffix) = text.split_at(number);
    let value: f64 = digits.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exponent.parse::<i32>().map_or(0.0, |e| 10f64.powi(e))
        }
    };
    Some(value * scale)
}

/// Whether `text` is a quantity [`quantity`] reads.
fn is_quantity(text: &str) -> bool {
    quantity(text).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_names_this_version() {
        let config = Config::default();
        assert_eq!(config.check(), Ok(()));
        assert_eq!(config.image, format!("keepalive-shim:{VERSION}"));
        assert_eq!(
            config.library_path(),
            "/keepalive-shim/libkeepalive_shim.so"
        );
        let image = Config {
            delivery: Delivery::ImageVolume,
            mount_path: "/opt/ka/".into(),
            ..Config::default()
        };
        assert_eq!(
            image.library_path(),
            "/opt/ka/usr/lib/keepalive-shim/libkeepalive_shim.so"
        );
    }

    #[test]
    fn quantities() {
        for good in [
            "10m", "0.1", ".5", "1.", "16Mi", "1G", "1e3", "2E-2", "100", "1Ei",
        ] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in [
            "", "m", "-1", "+1", "1.2.3", "10 m", "16MB", "1e", "1ki", "1mi", "abc", ".",
        ] {
            assert!(!is_quantity(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_bad_field_is_named_with_its_value() {
        type Change = fn(&mut Config);
        let cases: [(Change, &str); 11] = [
            (|c| c.image = "a b".into(), "image \"a b\""),
            (|c| c.image = String::new(), "image \"\""),
            (
                |c| c.resources.memory_limit = "32MB".into(),
                "init container memory limit \"32MB\"",
            ),
            (|c| c.run_as_user = Some(0), "init container user \"0\""),
            (|c| c.mount_path = "ka".into(), "mount path \"ka\""),
            (|c| c.mount_path = "/".into(), "mount path \"/\""),
            (
                |c| c.mount_path = "/a:b".into(),
                "mount path \"/a:b\" is not an absolute path",
            ),
            (|c| c.library = "x/y.so".into(), "library \"x/y.so\""),
            (|c| c.max_body = 0, "largest request body \"0\""),
            (
                |c| c.resources.cpu_request = "0.2".into(),
                "init container cpu request \"0.2\" is not at most the limit, 100m",
            ),
            (
                |c| c.resources.memory_limit = "1e6".into(),
                "init container memory request \"16Mi\" is not at most the limit, 1e6",
            ),
        ];
        for (change, expected) in cases {
            let mut config = Config::default();
            change(&mut config);
            let message = config.check().unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
        assert!(
            Delivery::parse("copy-library")
                .unwrap_err()
                .to_string()
                .contains("one of copy, image-volume")
        );
        assert_eq!(
            PullPolicy::parse("ifnotpresent").unwrap_err().to_string(),
            "image pull policy \"ifnotpresent\" is not one of Always, IfNotPresent, Never"
        );
    }
}
