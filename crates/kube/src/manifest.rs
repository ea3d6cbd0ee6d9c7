//! `inject`: Kubernetes YAML in, the same YAML out with every pod template mutated by
//! [`mutate_pod`], for GitOps pipelines (as `linkerd inject` and `istioctl kube-inject` do).
//!
//! The stream is split into documents at their `---` lines (YAML forbids a `---` at the start
//! of a line inside content, so the split is exact); each document is read on its own. A
//! document whose pods are unchanged — another kind, an opted-out pod, one already injected — is
//! written back byte for byte, comments and all. A changed document is written anew from its
//! value: its comments are lost, its keys come out sorted, and strings that YAML 1.1 readers
//! (Kubernetes' own) would take for something else (`yes`, `on`, `1.0`) are quoted.

use crate::error::Error;
use crate::pod::mutate_pod;
use crate::{Config, Mutation};
use serde_json::Value;

/// What [`inject`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The YAML stream, every document in its place.
    pub yaml: String,
    /// One line per warning, each starting with the object it is about
    /// (`Deployment web: …`).
    pub warnings: Vec<String>,
    /// How many pod templates (or pods) were mutated.
    pub injected: usize,
}

/// Injects every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
/// Job and CronJob (and each of them inside a `List`) of a YAML stream; everything else passes
/// through unchanged. An error names the document that cannot be read. Comments in changed
/// documents are lost (see the module's documentation).
pub fn inject(yaml: &str, cfg: &Config) -> Result<Injected, Error> {
    let mut out = Injected {
        yaml: String::with_capacity(yaml.len() + 1024),
        warnings: Vec::new(),
        injected: 0,
    };
    for (index, document) in documents(yaml).into_iter().enumerate() {
        let number = index + 1;
        let line = document.line;
        let yaml_error = |message: String| Error::Yaml {
            document: number,
            line,
            message,
        };
        let body = document.body();
        let value: Value = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str_with_options(body, read_options()).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| {
                        let first = line + usize::from(!document.marker.is_empty());
                        let at = first + (l.line() as usize).saturating_sub(1);
                        format!("line {at}, column {}: ", l.column())
                    })
                    .unwrap_or_default();
                yaml_error(format!(
                    "{at}{}",
                    first_line(&e.without_snippet().to_string())
                ))
            })?
        };
        let mut value = value;
        let mut warnings = Vec::new();
        let count = mutate_object(&mut value, cfg, &mut warnings);
        out.warnings.extend(warnings);
        if count == 0 {
            out.yaml.push_str(document.text);
            continue;
        }
        out.injected += count;
        let text = serde_saphyr::to_string_with_options(&value, write_options())
            .map_err(|e| yaml_error(format!("cannot be written back: {e}")))?;
        // What is written must read back as what was meant.
        let back: Result<Value, _> = serde_saphyr::from_str_with_options(&text, read_options());
        if back.ok().as_ref() != Some(&value) {
            return Err(yaml_error(
                "the injected document does not read back the same; nothing written".into(),
            ));
        }
        out.yaml.push_str(document.marker);
        out.yaml.push_str(&text);
        if !text.ends_with('\n') {
            out.yaml.push('\n');
        }
        // What followed the content (a `...` line, trailing comments) stays.
        out.yaml.push_str(document.trailer);
    }
    Ok(out)
}

/// Deep enough for any Kubernetes object (CRDs' schemas included); the other limits are the
/// parser's defaults against alias bombs.
fn read_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_depth: 128 },
    }
}

/// Long strings stay on one line (quoted where needed), not folded.
fn write_options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        folded_wrap_chars: usize::MAX,
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Mutates the pods in one object (a workload's template, a pod, a list's items); how many
/// changed. Warnings start with the object's kind and name.
fn mutate_object(object: &mut Value, cfg: &Config, warnings: &mut Vec<String>) -> usize {
    let Some(kind) = object.get("kind").and_then(Value::as_str) else {
        return 0;
    };
    let api = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let group = api.rsplit_once('/').map_or("", |(group, _)| group);
    let path: &[&str] = match (group, kind) {
        ("", "Pod") => &[],
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => &["spec", "template"],
        ("batch", "CronJob") => &["spec", "jobTemplate", "spec", "template"],
        (_, kind) if kind == "List" || kind.ends_with("List") => {
            let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) else {
                return 0;
            };
            return items
                .iter_mut()
                .map(|item| mutate_object(item, cfg, warnings))
                .sum();
        }
        _ => return 0,
    };
    let label = format!(
        "{kind} {}",
        object
            .get("metadata")
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or("(no name)")
    );
    let mut pod = &mut *object;
    for key in path {
        match pod.get_mut(*key) {
            Some(inner) => pod = inner,
            None => return 0,
        }
    }
    let Mutation {
        pod: mutated,
        changed,
        warnings: found,
        ..
    } = mutate_pod(pod, cfg);
    warnings.extend(found.into_iter().map(|w| format!("{label}: {w}")));
    if changed {
        *pod = mutated;
        1
    } else {
        0
    }
}

/// One document of a stream, as slices of it.
struct Document<'a> {
    /// All of its text: the `---` line (if any), the content, the trailer.
    text: &'a str,
    /// The `---` line, when its content starts on the next line (else empty).
    marker: &'a str,
    /// What follows the last content line: a `...` line and anything after it.
    trailer: &'a str,
    /// The 1-based line the document starts on.
    line: usize,
}

impl<'a> Document<'a> {
    /// What the parser reads: everything but the marker and the trailer.
    fn body(&self) -> &'a str {
        &self.text[self.marker.len()..self.text.len() - self.trailer.len()]
    }
}

/// Whether `line` is a document marker (`---` or `...`) followed by nothing, a space or a tab.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Splits a stream before each `---` line. A `---` line with nothing after it but a comment is
/// the document's marker (kept as written); one with content (`--- !tag`, `--- |`) is part of
/// the document's body.
fn documents(yaml: &str) -> Vec<Document<'_>> {
    let mut starts = vec![(0usize, 1usize)];
    let mut offset = 0;
    for (number, line) in yaml.split_inclusive('\n').enumerate() {
        if offset > 0 && is_marker(line, "---") {
            starts.push((offset, number + 1));
        }
        offset += line.len();
    }
    // Directives (`%YAML 1.2`) come before the `---` of the document they belong to.
    let mut i = 1;
    while i < starts.len() {
        let head = &yaml[starts[i - 1].0..starts[i].0];
        let is_prefix = head.lines().any(|l| l.starts_with('%'))
            && head.lines().all(|l| {
                let l = l.trim();
                l.is_empty() || l.starts_with('#') || l.starts_with('%')
            });
        if is_prefix {
            starts.remove(i);
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (i, &(start, line)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(yaml.len(), |&(next, _)| next);
        let text = &yaml[start..end];
        let first = text.split_inclusive('\n').next().unwrap_or("");
        let marker = if is_marker(first, "---") && only_comment(&first[3..]) {
            first
        } else {
            ""
        };
        let trailer_at = text
            .split_inclusive('\n')
            .scan(0, |at, line| {
                let here = *at;
                *at += line.len();
                Some((here, line))
            })
            .find(|(at, line)| *at >= marker.len() && is_marker(line, "..."))
            .map_or(text.len(), |(at, _)| at);
        out.push(Document {
            text,
            marker,
            trailer: &text[trailer_at..],
            line,
        });
    }
    out
}

fn only_comment(rest: &str) -> bool {
    let rest = rest.trim();
    rest.is_empty() || rest.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_their_markers_only() {
        let yaml = "# head\na: 1\n---\nb: |\n  ---x\n  text\n--- # c\nc: 2\n...\n# tail\n---\n";
        let docs = documents(yaml);
        let texts: Vec<&str> = docs.iter().map(|d| d.text).collect();
        assert_eq!(
            texts,
            vec![
                "# head\na: 1\n",
                "---\nb: |\n  ---x\n  text\n",
                "--- # c\nc: 2\n...\n# tail\n",
                "---\n"
            ]
        );
        assert_eq!(texts.concat(), yaml);
        assert_eq!(docs[2].marker, "--- # c\n");
        assert_eq!(docs[2].body(), "c: 2\n");
        assert_eq!(docs[2].trailer, "...\n# tail\n");
        assert_eq!(docs[2].line, 7);
        let lines: Vec<usize> = docs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![1, 3, 7, 11]);
    }

    #[test]
    fn a_marker_with_content_belongs_to_the_body() {
        let docs = documents("--- !!map\na: 1\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].marker, "");
        assert_eq!(docs[0].body(), "--- !!map\na: 1\n");
        assert!(documents("----\n")[0].marker.is_empty());
        assert_eq!(documents("").len(), 1);
        let docs = documents("%YAML 1.2\n---\na: 1\n---\nb: 2\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].body(), "%YAML 1.2\n---\na: 1\n");
    }
}
