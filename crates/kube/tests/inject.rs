//! `inject` over a multi-document bundle with every workload kind, a `List`, and documents it
//! must leave alone: the output is compared with a golden file; documents left alone come out
//! byte for byte; a second run changes nothing at all; every object validates against several
//! Kubernetes versions' schemas; YAML it cannot read is an error naming the document and line.

mod support;

use keepalive_shim_kube::{Config, Error, inject};
use serde_json::Value;
use support::*;

fn bundle() -> String {
    String::from_utf8(read("workloads.yaml")).unwrap()
}

/// The documents of a stream, split at `---` lines as `inject` splits them.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if (line == "---\n" || line.starts_with("--- ")) && !docs.last().unwrap().is_empty() {
            docs.push(String::new());
        }
        docs.last_mut().unwrap().push_str(line);
    }
    docs
}

#[test]
fn the_bundle_is_injected_as_its_golden_file() {
    let injected = inject(&bundle(), &Config::default()).unwrap();
    golden("workloads.golden.yaml", &injected.yaml);
    // Deployment web, Pod debug-, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, and the
    // Deployment inside the List.
    assert_eq!(injected.injected, 8);
    assert_eq!(
        injected.warnings,
        vec![
            "CronJob report: keepalive-shim.io/count=\"lots\" is not a whole number from 1 to \
             127; not passed on, so the default applies"
        ]
    );
}

#[test]
fn documents_left_alone_come_out_byte_for_byte() {
    let input = bundle();
    let injected = inject(&input, &Config::default()).unwrap();
    let before = documents(&input);
    let after = documents(&injected.yaml);
    assert_eq!(before.len(), after.len());
    let mut same = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        if a == b {
            same.push(kind_and_name(b));
        } else {
            let content = a.split("\n...\n").next().unwrap();
            assert!(
                !content.contains("# "),
                "a changed document is written anew: {a}"
            );
        }
    }
    assert_eq!(
        same,
        [
            "ConfigMap shop-settings",
            "Deployment batch",
            "DaemonSet iis",
            "Service web"
        ]
    );
    assert!(
        injected
            .yaml
            .ends_with("...\n# The end marker and this comment stay after the injected list.\n")
    );
}

fn kind_and_name(document: &str) -> String {
    let value: Value = serde_saphyr::from_str(document.trim_start_matches("---\n")).unwrap();
    format!(
        "{} {}",
        value["kind"].as_str().unwrap(),
        value["metadata"]["name"].as_str().unwrap()
    )
}

#[test]
fn a_second_run_changes_nothing_at_all() {
    let once = inject(&bundle(), &Config::default()).unwrap();
    let twice = inject(&once.yaml, &Config::default()).unwrap();
    assert_eq!(twice.injected, 0);
    assert_eq!(twice.yaml, once.yaml);
}

#[test]
fn what_is_written_keeps_its_types_for_kubernetes_yaml_readers() {
    let injected = inject(&bundle(), &Config::default()).unwrap();
    // `yes` unquoted is a boolean to Kubernetes' YAML 1.1 reader, and an env value must be a
    // string.
    let lines: Vec<&str> = injected.yaml.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| *l == "- name: KEEPALIVE_FORCE")
        .expect("KEEPALIVE_FORCE passed on");
    assert_eq!(lines[at + 1], "value: \"yes\"");
}

#[test]
fn every_object_is_valid_for_several_kubernetes_versions() {
    let injected = inject(&bundle(), &Config::default()).unwrap();
    let mut objects: Vec<(String, Value)> = Vec::new();
    for value in serde_saphyr::from_multiple::<Value>(&injected.yaml).unwrap() {
        // The schemas know no `List`: its items are validated one by one.
        let items = match value["kind"].as_str() {
            Some("List") => value["items"].as_array().unwrap().clone(),
            _ => vec![value],
        };
        for item in items {
            let label = format!("{}-{}", item["kind"].as_str().unwrap(), objects.len());
            objects.push((label, item));
        }
    }
    assert_eq!(objects.len(), 13);
    let Some(failures) = validate(&objects, &KUBERNETES) else {
        return;
    };
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn yaml_that_cannot_be_read_names_its_document_and_line() {
    let text = "apiVersion: v1\nkind: ConfigMap\n---\n# second\nkind: Pod\nspec: [1, 2\n";
    let error = inject(text, &Config::default()).unwrap_err();
    let Error::Yaml { document, line, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!((*document, *line), (2, 3));
    assert!(
        error
            .to_string()
            .starts_with("YAML document 2 (from line 3): line 6, column"),
        "{error}"
    );
    // An alias bomb is refused by the parser's limits, not expanded.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, \
             *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    assert!(matches!(
        inject(&bomb, &Config::default()),
        Err(Error::Yaml { .. })
    ));
}

#[test]
fn streams_without_workloads_pass_through_untouched() {
    for text in [
        "",
        "\n",
        "# only a comment\n",
        "---\n---\n",
        "just a string\n",
        "- a\n- b\n",
        "kind: Deployment\napiVersion: example.com/v1\nspec: {template: {spec: {containers: []}}}\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        "%YAML 1.2\n---\na: 1\n",
        "a: 1\r\n---\r\nb: 2\r\n",
    ] {
        let injected = inject(text, &Config::default()).unwrap();
        assert_eq!(injected.yaml, text);
        assert_eq!(injected.injected, 0);
    }
}
