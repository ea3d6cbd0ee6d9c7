//! The default image is `keepalive-shim:VERSION`, the image `scripts/dist.sh` makes from the
//! workspace's version: this crate's version must be that one, and the manifests must name the
//! same image.

mod support;

use keepalive_shim_kube::{Config, VERSION};

/// The `version` of the root Cargo.toml's `[package]` table (the one scripts/dist.sh reads).
fn workspace_version() -> String {
    let text = std::fs::read_to_string(support::common::root().join("Cargo.toml")).unwrap();
    let mut in_package = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version = ") {
            return rest.trim_matches('"').to_owned();
        }
    }
    panic!("no [package] version in Cargo.toml");
}

#[test]
fn the_default_image_is_the_one_dist_makes() {
    assert_eq!(VERSION, workspace_version());
    let image = Config::default().image;
    assert_eq!(image, format!("keepalive-shim:{}", workspace_version()));
    for manifest in [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/components/fleet/daemonset.yaml",
    ] {
        let text = std::fs::read_to_string(support::common::root().join(manifest)).unwrap();
        assert!(text.contains(&format!("image: {image}\n")), "{manifest}");
    }
}
