//! The image archive of `scripts/dist.sh` (written by `scripts/image.sh`) as its readers take it:
//! one OCI image layout whose index.json names one image index, keepalive-shim:VERSION for
//! linux/amd64 and linux/arm64/v8, checked against the OCI image-spec (media types, fields,
//! every blob's digest and size, diff IDs, nothing unreferenced) and against the release folders
//! (each platform's layer holds their very files); rebuilt from the same folders, the same bytes;
//! skopeo pushes it to a registry (Debian's docker-registry, on loopback) under one tag for both
//! platforms, from which Docker pulls the host's image; containerd's `ctr images import
//! --all-platforms` takes both; `docker load` (Debian's docker.io 20.10, the tests' private
//! daemon) loads the amd64 image under the tag; and the image runs as 65532:65532, filling a
//! Docker volume as that user with the pod specs' restrictions, and as root for old recipes.
//! They need target/dist (`scripts/dist.sh`); the Docker ones root, the registry one skopeo and
//! docker-registry (`scripts/test.sh` installs them); without, they are skipped, except under
//! `CI=true`.

mod common;

use common::docker::{BASE_IMAGE, Docker, docker, shipped_image_archive};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The tag, as `scripts/image.sh` writes it.
const TAG: &str = concat!("keepalive-shim:", env!("CARGO_PKG_VERSION"));
/// The image's user and group: distroless's "nonroot".
const NONROOT: &str = "65532:65532";

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The release folder of one architecture (`x86_64`, `aarch64`) in target/dist.
fn folder(arch: &str) -> PathBuf {
    root().join(format!("target/dist/keepalive-shim-{VERSION}-{arch}-linux"))
}

/// `sha256sum FILE`: the hex digest.
fn sha256(file: &Path) -> String {
    let out = output_ok(Command::new("sha256sum").arg(file));
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// An archive unpacked into a folder of its own (`tar -xf`), to read as a layout.
struct Unpacked {
    dir: PathBuf,
}

impl Unpacked {
    fn new(archive: &Path, name: &str) -> Unpacked {
        let dir = scratch().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        output_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(&dir),
        );
        Unpacked { dir }
    }

    fn json(&self, path: &str) -> Value {
        let bytes = std::fs::read(self.dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
    }

    /// The blob a descriptor names, after checking the descriptor: a media type among
    /// `media_types`, a `sha256:` digest of 64 lowercase hex digits that is the blob's, the
    /// blob's size, and only the fields the image-spec defines for a descriptor. Its path.
    fn blob(&self, what: &str, descriptor: &Value, media_types: &[&str]) -> PathBuf {
        only_fields(
            what,
            descriptor,
            &[
                "mediaType",
                "digest",
                "size",
                "urls",
                "annotations",
                "data",
                "artifactType",
                "platform",
            ],
        );
        let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
        assert!(
            media_types.contains(&media_type),
            "{what}: mediaType {media_type:?}, not one of {media_types:?}"
        );
        let digest = descriptor["digest"].as_str().unwrap_or_default();
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .unwrap_or_else(|| panic!("{what}: digest {digest:?} is not sha256:<64 hex>"));
        let path = self.dir.join("blobs/sha256").join(hex);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{what}: blob {digest}: {e}"))
            .len();
        assert_eq!(descriptor["size"].as_u64(), Some(size), "{what}: size");
        assert_eq!(sha256(&path), hex, "{what}: the blob's digest");
        path
    }
}

/// The object has no field the image-spec does not define for it.
fn only_fields(what: &str, object: &Value, known: &[&str]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {object}"));
    for key in map.keys() {
        assert!(
            known.contains(&key.as_str()),
            "{what}: field {key:?} is not in the image-spec"
        );
    }
}

/// `platform` of an index entry, checked, as `os/architecture[/variant]`.
fn platform_of(what: &str, platform: &Value) -> String {
    only_fields(
        what,
        platform,
        &[
            "architecture",
            "os",
            "os.version",
            "os.features",
            "variant",
            "features",
        ],
    );
    let mut name = format!(
        "{}/{}",
        platform["os"].as_str().unwrap(),
        platform["architecture"].as_str().unwrap()
    );
    if let Some(variant) = platform["variant"].as_str() {
        name = format!("{name}/{variant}");
    }
    name
}

/// `tar --numeric-owner -tvf` of a gzip layer: (mode, owner, path) per entry.
fn layer_entries(layer: &Path) -> Vec<(String, String, String)> {
    let listing = text(
        &output_ok(
            Command::new("tar")
                .args(["--numeric-owner", "-tvzf"])
                .arg(layer),
        )
        .stdout,
    );
    listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].to_owned(), f[5].to_owned())
        })
        .collect()
}

/// One platform's image as the layout gives it.
struct PlatformImage {
    manifest_digest: String,
    config_digest: String,
    config: Value,
    layer: PathBuf,
}

/// The layout, checked from index.json down (see the file's doc), returning each platform's
/// image by `os/architecture[/variant]`, and the image index's digest.
fn check_layout(layout: &Unpacked) -> (String, Vec<(String, PlatformImage)>) {
    assert_eq!(
        layout.json("oci-layout"),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    let mut referenced = BTreeSet::new();
    let mut refer = |path: &Path| {
        referenced.insert(path.file_name().unwrap().to_string_lossy().into_owned());
    };

    let top = layout.json("index.json");
    only_fields(
        "index.json",
        &top,
        &[
            "schemaVersion",
            "mediaType",
            "artifactType",
            "manifests",
            "subject",
            "annotations",
        ],
    );
    assert_eq!(top["schemaVersion"], 2, "index.json");
    assert_eq!(top["mediaType"], INDEX, "index.json");
    let entries = top["manifests"].as_array().expect("index.json: manifests");
    assert_eq!(entries.len(), 1, "index.json names one image: {top}");
    let entry = &entries[0];
    assert_eq!(
        entry["annotations"],
        json!({
            "io.containerd.image.name": format!("docker.io/library/{TAG}"),
            "org.opencontainers.image.ref.name": VERSION,
        }),
        "index.json: the tag"
    );
    assert!(
        entry.get("platform").is_none(),
        "the index serves every platform"
    );
    let index_path = layout.blob("index.json's entry", entry, &[INDEX]);
    refer(&index_path);
    let index_digest = entry["digest"].as_str().unwrap().to_owned();

    let index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    only_fields(
        "the image index",
        &index,
        &[
            "schemaVersion",
            "mediaType",
            "artifactType",
            "manifests",
            "subject",
            "annotations",
        ],
    );
    assert_eq!(index["schemaVersion"], 2, "the image index");
    assert_eq!(index["mediaType"], INDEX, "the image index");
    let mut images = Vec::new();
    for (n, descriptor) in index["manifests"].as_array().unwrap().iter().enumerate() {
        let what = format!("the image index's manifest {n}");
        let platform = platform_of(&what, &descriptor["platform"]);
        let manifest_path = layout.blob(&what, descriptor, &[MANIFEST]);
        refer(&manifest_path);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        let what = format!("the {platform} manifest");
        only_fields(
            &what,
            &manifest,
            &[
                "schemaVersion",
                "mediaType",
                "artifactType",
                "config",
                "layers",
                "subject",
                "annotations",
            ],
        );
        assert_eq!(manifest["schemaVersion"], 2, "{what}");
        assert_eq!(manifest["mediaType"], MANIFEST, "{what}");
        let config_path = layout.blob(&format!("{what}'s config"), &manifest["config"], &[CONFIG]);
        refer(&config_path);
        let config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{what}: one layer");
        let layer = layout.blob(&format!("{what}'s layer"), &layers[0], &[LAYER]);
        refer(&layer);

        let what = format!("the {platform} config");
        only_fields(
            &what,
            &config,
            &[
                "created",
                "author",
                "architecture",
                "os",
                "os.version",
                "os.features",
                "variant",
                "config",
                "rootfs",
                "history",
            ],
        );
        only_fields(
            &format!("{what}'s config"),
            &config["config"],
            &[
                "User",
                "ExposedPorts",
                "Env",
                "Entrypoint",
                "Cmd",
                "Volumes",
                "WorkingDir",
                "Labels",
                "StopSignal",
                "ArgsEscaped",
            ],
        );
        // The config's platform is the index's.
        let mut own = json!({"os": config["os"], "architecture": config["architecture"]});
        if let Some(variant) = config.get("variant") {
            own["variant"] = variant.clone();
        }
        assert_eq!(platform_of(&what, &own), platform, "{what}: its platform");
        // The diff ID is the digest of the uncompressed layer.
        let plain = layout
            .dir
            .with_extension(format!("{}.tar", platform.replace('/', "-")));
        let out = output_ok(Command::new("gzip").arg("-dc").arg(&layer));
        std::fs::write(&plain, &out.stdout).unwrap();
        assert_eq!(
            config["rootfs"],
            json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&plain))]}),
            "{what}: rootfs"
        );
        let created = config["created"].as_str().unwrap();
        assert!(
            created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
            "{what}: created {created:?} is not RFC 3339 UTC"
        );
        for entry in config["history"].as_array().unwrap() {
            only_fields(
                &format!("{what}'s history"),
                entry,
                &["created", "author", "created_by", "comment", "empty_layer"],
            );
        }
        images.push((
            platform,
            PlatformImage {
                manifest_digest: descriptor["digest"].as_str().unwrap().to_owned(),
                config_digest: manifest["config"]["digest"].as_str().unwrap().to_owned(),
                config,
                layer,
            },
        ));
    }

    // Nothing unreferenced, nothing else in the archive's layout.
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(layout.dir.join("blobs/sha256")).unwrap() {
        present.insert(entry.unwrap().file_name().to_string_lossy().into_owned());
    }
    assert_eq!(
        present, referenced,
        "blobs/sha256 holds exactly what is referenced"
    );
    let mut top_level: Vec<String> = std::fs::read_dir(&layout.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top_level.sort();
    assert_eq!(
        top_level,
        ["blobs", "index.json", "manifest.json", "oci-layout"]
    );
    (index_digest, images)
}

/// The archive against the OCI image-spec and the release folders: one index, two platforms,
/// each FROM scratch with one layer holding the very files of its release folder (the tool
/// 0755 and the library 0644, owned by root) and the mount point /keepalive-shim, 0777 as an
/// emptyDir; runs as 65532:65532, entrypoint the tool, command `copy-library
/// /keepalive-shim`. manifest.json, what `docker load` reads, names only the amd64 image, under
/// the tag. SHA256SUMS lists the archive.
#[test]
fn image_archive_is_one_oci_index_for_both_platforms() {
    let Some(archive) = shipped_image_archive() else {
        return;
    };
    let dist = archive.parent().unwrap();
    let name = archive.file_name().unwrap().to_str().unwrap();
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(
        sums.lines()
            .any(|l| l == format!("{}  {name}", sha256(&archive))),
        "SHA256SUMS does not list {name} with its digest:\n{sums}"
    );
    let old: Vec<_> = std::fs::read_dir(dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("keepalive-shim-image_"))
        .collect();
    assert_eq!(old, [name], "one image archive in target/dist");

    let layout = Unpacked::new(&archive, "image-layout");
    let (_, images) = check_layout(&layout);
    let platforms: Vec<&str> = images.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);

    for (platform, image) in &images {
        let config = &image.config["config"];
        assert_eq!(config["User"], NONROOT, "{platform}: the user");
        assert_eq!(
            config["Entrypoint"],
            json!(["/usr/bin/keepalive-shim"]),
            "{platform}"
        );
        assert_eq!(
            config["Cmd"],
            json!(["copy-library", "/keepalive-shim"]),
            "{platform}"
        );
        assert_eq!(
            config["Labels"]["org.opencontainers.image.version"], VERSION,
            "{platform}"
        );

        let expected = [
            ("drwxrwxrwx", "0/0", "keepalive-shim/"),
            ("drwxr-xr-x", "0/0", "usr/"),
            ("drwxr-xr-x", "0/0", "usr/bin/"),
            ("-rwxr-xr-x", "0/0", "usr/bin/keepalive-shim"),
            ("drwxr-xr-x", "0/0", "usr/lib/"),
            ("drwxr-xr-x", "0/0", "usr/lib/keepalive-shim/"),
            (
                "-rw-r--r--",
                "0/0",
                "usr/lib/keepalive-shim/libkeepalive_shim.so",
            ),
        ];
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(m, o, p)| (m.to_string(), o.to_string(), p.to_string()))
            .collect();
        assert_eq!(
            layer_entries(&image.layer),
            expected,
            "{platform}: the layer"
        );
        let arch = if platform == "linux/amd64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let files = scratch().join(format!("files-{arch}"));
        std::fs::create_dir_all(&files).unwrap();
        output_ok(
            Command::new("tar")
                .arg("-xzf")
                .arg(&image.layer)
                .arg("-C")
                .arg(&files)
                .arg("usr"),
        );
        for (inside, shipped) in [
            (
                "usr/lib/keepalive-shim/libkeepalive_shim.so",
                "libkeepalive_shim.so",
            ),
            ("usr/bin/keepalive-shim", "keepalive-shim"),
        ] {
            assert!(
                std::fs::read(files.join(inside)).unwrap()
                    == std::fs::read(folder(arch).join(shipped)).unwrap(),
                "{platform}: {inside} differs from {}",
                folder(arch).join(shipped).display()
            );
        }
    }

    // What `docker load` reads: the amd64 image alone, under the tag.
    let amd64 = &images[0].1;
    let layer_path = format!(
        "blobs/sha256/{}",
        amd64.layer.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(
        layout.json("manifest.json"),
        json!([{
            "Config": amd64.config_digest.replace("sha256:", "blobs/sha256/"),
            "RepoTags": [TAG],
            "Layers": [layer_path],
        }])
    );
}

/// The checks of `image_archive_is_one_oci_index_for_both_platforms` fail on a broken layout:
/// a blob whose bytes are not its digest's, and a descriptor whose size is wrong.
#[test]
fn image_layout_check_catches_a_bad_blob() {
    let Some(archive) = shipped_image_archive() else {
        return;
    };
    let layout = Unpacked::new(&archive, "image-layout-broken");
    let top = layout.json("index.json");
    let index = layout.blob("index.json's entry", &top["manifests"][0], &[INDEX]);
    let bytes = std::fs::read(&index).unwrap();
    let mut changed = bytes.clone();
    changed.push(b'\n');
    std::fs::write(&index, &changed).unwrap();
    let caught = std::panic::catch_unwind(|| check_layout(&layout));
    assert!(caught.is_err(), "a changed blob passed the check");
    std::fs::write(&index, &bytes).unwrap();
    let mut wrong = top.clone();
    wrong["manifests"][0]["size"] = json!(bytes.len() + 1);
    let caught =
        std::panic::catch_unwind(|| layout.blob("a wrong size", &wrong["manifests"][0], &[INDEX]));
    assert!(caught.is_err(), "a wrong size passed the check");
    check_layout(&layout);
}

/// The epoch scripts/dist.sh gave the archive: its configs' `created`.
fn epoch_of(archive: &Path) -> String {
    let layout = Unpacked::new(archive, "image-epoch");
    let (_, images) = check_layout(&layout);
    let created = images[0].1.config["created"].as_str().unwrap().to_owned();
    let out = output_ok(Command::new("date").args(["-u", "-d", &created, "+%s"]));
    text(&out.stdout).trim().to_owned()
}

/// `scripts/image.sh OUT VERSION LICENSE X86_64_DIR AARCH64_DIR` with SOURCE_DATE_EPOCH.
fn image_sh(out: &Path, epoch: Option<&str>, folders: [&Path; 2]) -> std::process::Output {
    let mut cmd = Command::new(root().join("scripts/image.sh"));
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .arg(out)
        .args([VERSION, "MIT OR Apache-2.0"])
        .args(folders);
    if let Some(epoch) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch);
    }
    cmd.output().expect("run scripts/image.sh")
}

/// Reproducible: scripts/image.sh, run twice more on the release folders with dist.sh's epoch,
/// writes dist.sh's archive byte for byte; with another epoch, another archive (the times in
/// it do come from SOURCE_DATE_EPOCH). Without an epoch, with one that is not a number, or
/// with a folder missing a file, it refuses, naming what is wrong, and writes nothing.
#[test]
fn image_archive_is_reproducible() {
    let Some(archive) = shipped_image_archive() else {
        return;
    };
    let epoch = epoch_of(&archive);
    let folders = [folder("x86_64"), folder("aarch64")];
    let folders = [folders[0].as_path(), folders[1].as_path()];
    let shipped = std::fs::read(&archive).unwrap();
    for n in 1..=2 {
        let out = scratch().join(format!("image-again-{n}.tar"));
        let run = image_sh(&out, Some(&epoch), folders);
        assert!(run.status.success(), "image.sh: {}", stderr(&run));
        assert!(
            std::fs::read(&out).unwrap() == shipped,
            "build {n} differs from {}",
            archive.display()
        );
    }
    let later = (epoch.parse::<u64>().unwrap() + 1).to_string();
    let out = scratch().join("image-later.tar");
    let run = image_sh(&out, Some(&later), folders);
    assert!(run.status.success(), "image.sh: {}", stderr(&run));
    assert!(
        std::fs::read(&out).unwrap() != shipped,
        "another epoch, the same archive"
    );

    let out = scratch().join("image-refused.tar");
    let run = image_sh(&out, None, folders);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        stderr(&run),
        "image.sh: SOURCE_DATE_EPOCH is not set (seconds since 1970)\n"
    );
    let run = image_sh(&out, Some("yesterday"), folders);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        stderr(&run),
        "image.sh: SOURCE_DATE_EPOCH=yesterday: not a number of seconds since 1970\n"
    );
    let empty = scratch().join("empty-folder");
    std::fs::create_dir_all(&empty).unwrap();
    let run = image_sh(&out, Some(&epoch), [folders[0], &empty]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        stderr(&run),
        format!("image.sh: {}/keepalive-shim is missing\n", empty.display())
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

// ---- skopeo and a registry ----

/// Debian's docker-registry serving on a free loopback port, its storage in the test's scratch
/// folder; stopped (killed) when dropped.
struct Registry {
    child: std::process::Child,
    address: String,
}

impl Registry {
    fn start() -> Registry {
        let dir = scratch().join("registry");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: {address}\n  secret: keepalive-shim-test\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("run docker-registry");
        let registry = Registry { child, address };
        let t0 = Instant::now();
        while TcpStream::connect(&registry.address).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {} within 20 s",
                registry.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// skopeo with the test's environment (no preload); its stdout, which must succeed.
fn skopeo(args: &[&str]) -> String {
    let mut cmd = command(false, "skopeo");
    cmd.args(args);
    text(&output_ok(&mut cmd).stdout)
}

/// The archive pushed as one tag for both platforms, `skopeo copy --all oci-archive:ARCHIVE
/// docker://REGISTRY/keepalive-shim:VERSION` (the README's command, to Debian's
/// docker-registry on loopback): the registry serves the archive's very index (same digest),
/// and per platform its very manifest and layer; Docker 20.10 pulls from it the amd64 image (the same ID
/// as `docker load` gives), which runs. skopeo also loads the arm64 image into Docker, the way
/// the README gives arm64 hosts whose Docker reads only manifest.json.
#[test]
fn image_skopeo_pushes_one_tag_for_both_platforms_and_docker_pulls_it() {
    let Some(archive) = shipped_image_archive() else {
        return;
    };
    if !have("skopeo", "Debian's skopeo; scripts/test.sh installs it")
        || !have(
            "docker-registry",
            "Debian's docker-registry; scripts/test.sh installs it",
        )
    {
        return;
    }
    let layout = Unpacked::new(&archive, "image-skopeo");
    let (index_digest, images) = check_layout(&layout);
    let source = format!("oci-archive:{}", archive.display());

    // skopeo reads the archive as one index.
    let raw = skopeo(&["inspect", "--raw", &source]);
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["mediaType"], INDEX, "skopeo inspect --raw: {raw}");

    let registry = Registry::start();
    let tagged = format!("{}/keepalive-shim:{VERSION}", registry.address);
    let target = format!("docker://{tagged}");
    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &source,
        &target,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &target]);
    let dir = scratch().join("registry-index.json");
    std::fs::write(&dir, &raw).unwrap();
    assert_eq!(
        format!("sha256:{}", sha256(&dir)),
        index_digest,
        "the registry's index is not the archive's"
    );
    for (arch, variant, platform) in [
        ("amd64", None, "linux/amd64"),
        ("arm64", Some("v8"), "linux/arm64/v8"),
    ] {
        let mut args = vec!["inspect", "--tls-verify=false", "--override-arch", arch];
        if let Some(variant) = variant {
            args.extend(["--override-variant", variant]);
        }
        args.push(&target);
        let inspected: Value = serde_json::from_str(&skopeo(&args)).unwrap();
        let image = &images.iter().find(|(p, _)| p == platform).unwrap().1;
        let layer = format!(
            "sha256:{}",
            image.layer.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(inspected["Layers"], json!([layer]), "{platform}");
        assert_eq!(inspected["Architecture"], arch, "{platform}");
        // The platform's manifest, by its digest: the archive's bytes.
        let by_digest = format!(
            "docker://{}/keepalive-shim@{}",
            registry.address, image.manifest_digest
        );
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &by_digest]);
        let file = scratch().join("registry-manifest.json");
        std::fs::write(&file, &raw).unwrap();
        assert_eq!(
            format!("sha256:{}", sha256(&file)),
            image.manifest_digest,
            "{platform}: the registry's manifest"
        );
    }

    let Some(docker) = docker() else { return };
    docker.ok(&["pull", "--quiet", &tagged]);
    let pulled = docker.ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{.Os}}/{{.Architecture}}",
        &tagged,
    ]);
    let removed = docker.ok(&["image", "rm", &tagged]);
    assert_eq!(
        pulled,
        format!("{} linux/amd64", images[0].1.config_digest),
        "docker pull: {removed}"
    );

    // arm64 hosts: skopeo into Docker (here as if the host were arm64).
    let arm64 = format!("keepalive-shim/skopeo-arm64:{VERSION}");
    let mut cmd = command(false, "skopeo");
    cmd.args([
        "copy",
        "--quiet",
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        "--dest-daemon-host",
        docker.host(),
        &source,
        &format!("docker-daemon:{arm64}"),
    ]);
    output_ok(&mut cmd);
    let loaded = docker.ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{.Os}}/{{.Architecture}}",
        &arm64,
    ]);
    docker.ok(&["image", "rm", &arm64]);
    assert_eq!(loaded, format!("{} linux/arm64", images[1].1.config_digest));
    drop(registry);
}

/// containerd (as on a kind or k3s node, or Docker with the containerd image store), through
/// the private Docker daemon's own containerd: `ctr images import --all-platforms` takes the
/// archive as one image, the tag's index, with both platforms' content (and no more); the
/// namespace is removed afterwards.
#[test]
fn image_ctr_imports_both_platforms() {
    let Some(archive) = shipped_image_archive() else {
        return;
    };
    let Some(_docker) = docker() else { return };
    if !have("ctr", "Debian's containerd, which docker.io brings") {
        return;
    }
    let layout = Unpacked::new(&archive, "image-ctr");
    let (index_digest, _) = check_layout(&layout);
    // The containerd dockerd started under its exec root (scripts/dockerd.sh), or the machine's
    // own, which dockerd uses instead when there is one.
    let socket = [
        root().join("target/docker/run/containerd/containerd.sock"),
        PathBuf::from("/run/containerd/containerd.sock"),
    ]
    .into_iter()
    .find(|s| s.exists())
    .expect("the Docker daemon's containerd socket");
    let namespace = format!("kas-{}-image", std::process::id());
    let ctr = |args: &[&str]| {
        let mut cmd = command(false, "ctr");
        cmd.arg("--address")
            .arg(&socket)
            .args(["--namespace", &namespace])
            .args(args);
        cmd.output().expect("run ctr")
    };
    let import = ctr(&[
        "images",
        "import",
        "--all-platforms",
        "--no-unpack",
        archive.to_str().unwrap(),
    ]);
    let listed = ctr(&["images", "ls"]);
    let content = ctr(&["content", "ls", "--quiet"]);
    // Cleaned up before any assertion: the image, then whatever content is left, then the
    // namespace.
    ctr(&[
        "images",
        "rm",
        "--sync",
        &format!("docker.io/library/{TAG}"),
    ]);
    for digest in text(&ctr(&["content", "ls", "--quiet"]).stdout).lines() {
        ctr(&["content", "rm", digest]);
    }
    let mut cmd = command(false, "ctr");
    cmd.arg("--address")
        .arg(&socket)
        .args(["namespaces", "rm", &namespace]);
    let removed = cmd.output().expect("run ctr");
    assert!(
        import.status.success(),
        "ctr images import: {}",
        stderr(&import)
    );
    let line = text(&listed.stdout);
    let line = line
        .lines()
        .find(|l| l.starts_with(&format!("docker.io/library/{TAG} ")))
        .unwrap_or_else(|| panic!("ctr images ls: {line}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], INDEX, "{line}");
    assert_eq!(fields[2], index_digest, "{line}");
    assert_eq!(
        fields[fields.len() - 2],
        "linux/amd64,linux/arm64/v8",
        "{line}"
    );
    let mut blobs: Vec<String> = text(&content.stdout).lines().map(str::to_owned).collect();
    // index.json itself may be kept as the import's root or already collected as garbage
    // (containerd does that in the background): it is not one of the image's blobs.
    let root = format!("sha256:{}", sha256(&layout.dir.join("index.json")));
    blobs.retain(|b| *b != root);
    blobs.sort();
    // Every blob of both platforms, and nothing else.
    let mut expected: Vec<String> = std::fs::read_dir(layout.dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    expected.sort();
    assert_eq!(blobs, expected, "every blob of both platforms imported");
    assert!(
        removed.status.success(),
        "ctr namespaces rm: {}",
        stderr(&removed)
    );
}

// ---- non-root, in Docker ----

/// `stat -c '%u:%g %a'` of the library in a volume, from the bullseye image.
fn owner_and_mode(docker: &'static Docker, volume: &str) -> String {
    let mount = format!("{volume}:/v:ro");
    let out = docker.run(
        "stat",
        &[
            "--network",
            "none",
            "-v",
            &mount,
            BASE_IMAGE,
            "stat",
            "-c",
            "%u:%g %a",
            "/v/libkeepalive_shim.so",
        ],
    );
    assert!(out.status.success(), "stat: {}", stderr(&out));
    text(&out.stdout).trim().to_owned()
}

/// The init container as the restricted Pod Security Standard runs it, in Docker: the image's
/// own user (65532:65532, no `--user`), a read-only root, no capability, no new privileges,
/// a fresh volume at /keepalive-shim: the library is copied there, owned by that user, 0644.
/// The same with `--user 65532:65532`, and as root (`--user 0:0`, old recipes), still with every
/// capability dropped: owned by root. The same volume mounted where the image prepared nothing
/// (Docker makes a volume with the owner and mode of the image's folder; no folder, root's
/// 0755): root may write it, the image's user may not. The mount point is what makes it work.
#[test]
fn image_runs_as_nonroot_and_fills_a_volume() {
    let Some(docker) = docker() else { return };
    let Some(image) = docker.shipped_image() else {
        return;
    };
    assert_eq!(
        docker.ok(&["image", "inspect", "-f", "{{.Config.User}}", image]),
        NONROOT
    );
    let restricted = [
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ];
    for (user, owner) in [
        (None, NONROOT),
        (Some("0:0"), "0:0"),
        (Some(NONROOT), NONROOT),
    ] {
        let what = user.map_or("the image's user".to_owned(), |u| format!("--user {u}"));
        let volume = docker.volume("emptydir");
        let mount = format!("{}:/keepalive-shim", volume.name);
        let mut args: Vec<&str> = restricted.to_vec();
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.extend(["-v", &mount, image]);
        let out = docker.run("init", &args);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{what}: {}: {}",
            out.status,
            stderr(&out)
        );
        assert_eq!(
            text(&out.stdout),
            "/keepalive-shim/libkeepalive_shim.so\n",
            "{what}"
        );
        assert_eq!(
            owner_and_mode(docker, &volume.name),
            format!("{owner} 644"),
            "{what}"
        );
    }

    // A volume where the image prepared nothing.
    for (user, works) in [(NONROOT, false), ("0:0", true)] {
        let volume = docker.volume("elsewhere");
        let mount = format!("{}:/elsewhere", volume.name);
        let mut args: Vec<&str> = restricted.to_vec();
        args.extend([
            "--user",
            user,
            "-v",
            &mount,
            image,
            "copy-library",
            "/elsewhere",
        ]);
        let out = docker.run("init", &args);
        assert_eq!(
            out.status.success(),
            works,
            "--user {user} into /elsewhere: {}",
            stderr(&out)
        );
        if !works {
            let stderr = stderr(&out);
            assert!(
                stderr.contains("/elsewhere/libkeepalive_shim.so")
                    && stderr.contains("Permission denied"),
                "--user {user} into /elsewhere: {stderr}"
            );
        }
    }
}

/// The image's user runs the tool with a read-only root and no capability: `--version`, and
/// `check` (the settings, and the library it would preload, found in /usr/lib/keepalive-shim/).
#[test]
fn image_tool_runs_as_its_user() {
    let Some(docker) = docker() else { return };
    let Some(image) = docker.shipped_image() else {
        return;
    };
    let out = docker.run(
        "version",
        &[
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            image,
            "--version",
        ],
    );
    assert!(out.status.success(), "--version: {}", stderr(&out));
    assert_eq!(text(&out.stdout), format!("keepalive-shim {VERSION}\n"));
    let out = docker.run(
        "check",
        &[
            "--network",
            "none",
            "--read-only",
            "--cap-drop",
            "ALL",
            image,
            "check",
        ],
    );
    assert!(out.status.success(), "check as {NONROOT}: {}", stderr(&out));
}

/// Why manifest.json names one image: Docker's own image store (20.10 here) loads every image
/// manifest.json lists under its tag, whatever its platform, and the last one keeps the tag.
/// The archive rewritten with both platforms under one tag (amd64 first): two images loaded,
/// the tag on arm64, the wrong one for this host.
#[test]
fn image_docker_load_of_both_platforms_under_one_tag_tags_the_last() {
    let Some(archive) = shipped_image_archive() else {
        return;
    };
    let Some(docker) = docker() else { return };
    let layout = Unpacked::new(&archive, "image-two-entries");
    let (_, images) = check_layout(&layout);
    let tag = "keepalive-shim/two-entries:test";
    let entries: Vec<Value> = images
        .iter()
        .map(|(_, image)| {
            json!({
                "Config": image.config_digest.replace("sha256:", "blobs/sha256/"),
                "RepoTags": [tag],
                "Layers": [format!("blobs/sha256/{}", image.layer.file_name().unwrap().to_string_lossy())],
            })
        })
        .collect();
    std::fs::write(
        layout.dir.join("manifest.json"),
        serde_json::to_vec(&entries).unwrap(),
    )
    .unwrap();
    let rewritten = scratch().join("image-two-entries.tar");
    output_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout.dir)
            .arg("-cf")
            .arg(&rewritten)
            .args(["blobs", "index.json", "manifest.json", "oci-layout"]),
    );
    let out = docker.ok(&[OsStr::new("load"), OsStr::new("-i"), rewritten.as_os_str()]);
    let platform = docker.ok(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", tag]);
    docker.ok(&["image", "rm", tag]);
    let loaded = out
        .lines()
        .filter(|l| l.starts_with("Loaded image"))
        .count();
    assert_eq!(loaded, 2, "docker load: {out}");
    assert_eq!(platform, "linux/arm64", "the tag is on the last image");
}
