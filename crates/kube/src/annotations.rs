//! The pod's own say: the opt-out (label or annotation `keepalive-shim.io/inject`) and the
//! per-pod settings (annotations `keepalive-shim.io/idle`, `interval`, `count`, `user-timeout`,
//! `force`, `exclude`, `include`), each checked by the parser the library itself uses and passed
//! on as its `KEEPALIVE_*` variable. A bad value is not passed on (the library's default then
//! applies) and gets a warning naming the annotation, the value and what is accepted, in the
//! library's own words.

use crate::error::shown;
use keepalive_shim_policy::config::{
    self, ACCEPT_BOOL, ACCEPT_COUNT, ACCEPT_RULE, ACCEPT_SECONDS, ACCEPT_USER_TIMEOUT,
};
use keepalive_shim_policy::rules::{self, MAX_RULES};
use serde_json::{Map, Value};

/// Every annotation and label this project reads or writes starts with this.
pub const PREFIX: &str = "keepalive-shim.io/";
/// Label or annotation: `"false"` (or `disabled`, `off`, `no`, `0`) keeps a pod out.
pub const INJECT: &str = "keepalive-shim.io/inject";
/// Annotation written on every pod the mutation touched: what each container got, as JSON.
pub const STATUS: &str = "keepalive-shim.io/status";

/// What an annotation's value is checked with.
#[derive(Clone, Copy)]
enum Kind {
    Seconds,
    Count,
    UserTimeout,
    Bool,
    Rules,
}

/// The per-pod settings: annotation, the variable it becomes, how it is checked.
const SETTINGS: [(&str, &str, Kind); 7] = [
    ("keepalive-shim.io/idle", config::IDLE, Kind::Seconds),
    (
        "keepalive-shim.io/interval",
        config::INTERVAL,
        Kind::Seconds,
    ),
    ("keepalive-shim.io/count", config::COUNT, Kind::Count),
    (
        "keepalive-shim.io/user-timeout",
        config::USER_TIMEOUT,
        Kind::UserTimeout,
    ),
    ("keepalive-shim.io/force", config::FORCE, Kind::Bool),
    ("keepalive-shim.io/exclude", config::EXCLUDE, Kind::Rules),
    ("keepalive-shim.io/include", config::INCLUDE, Kind::Rules),
];

/// libkeepalive's name for a variable, which the library honours where ours is unset: a
/// container that sets it has chosen that setting itself.
pub(crate) fn alias(variable: &str) -> Option<&'static str> {
    match variable {
        config::IDLE => Some(config::ALIAS_IDLE),
        config::INTERVAL => Some(config::ALIAS_INTERVAL),
        config::COUNT => Some(config::ALIAS_COUNT),
        _ => None,
    }
}

/// The longest part of a value shown in a warning.
const SHOWN: usize = 64;

/// What the annotations give every container: variables to add (unless the container sets
/// them), and the warnings about those that were not passed on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PodSettings {
    pub env: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
}

/// Reads the per-pod settings from `annotations`; unknown `keepalive-shim.io/` annotations get
/// a warning too (a typo would otherwise be silently ignored).
pub(crate) fn settings(annotations: Option<&Map<String, Value>>) -> PodSettings {
    let mut out = PodSettings::default();
    let Some(annotations) = annotations else {
        return out;
    };
    for (annotation, variable, kind) in SETTINGS {
        let Some(value) = annotations.get(annotation) else {
            continue;
        };
        let Some(text) = value.as_str() else {
            out.warnings.push(format!(
                "{annotation} is not a string; not passed on, so the default applies"
            ));
            continue;
        };
        let accepted = match kind {
            Kind::Seconds => config::parse_seconds(text).map(drop).ok_or(ACCEPT_SECONDS),
            Kind::Count => config::parse_count(text).map(drop).ok_or(ACCEPT_COUNT),
            Kind::UserTimeout => config::parse_user_timeout_ms(text)
                .map(drop)
                .ok_or(ACCEPT_USER_TIMEOUT),
            Kind::Bool => config::parse_bool(text).map(drop).ok_or(ACCEPT_BOOL),
            Kind::Rules => {
                if let Some(good) = rule_list(annotation, text, &mut out.warnings) {
                    out.env.push((variable, good));
                }
                continue;
            }
        };
        match accepted {
            Ok(()) => out.env.push((variable, text.to_owned())),
            Err(accept) => out.warnings.push(format!(
                "{annotation}=\"{}\" is not {accept}; not passed on, so the default applies",
                shown(text, SHOWN)
            )),
        }
    }
    let known = |key: &str| {
        key == INJECT || key == STATUS || SETTINGS.iter().any(|(name, _, _)| *name == key)
    };
    let unknown: Vec<&String> = annotations
        .keys()
        .filter(|key| key.starts_with(PREFIX) && !known(key))
        .collect();
    for key in unknown.iter().take(4) {
        out.warnings.push(format!(
            "unknown annotation {}: keepalive-shim reads inject, idle, interval, count, \
             user-timeout, force, exclude and include under {PREFIX}",
            shown(key, SHOWN)
        ));
    }
    out
}

/// The entries of an `exclude`/`include` list that the library accepts, as written, joined by
/// commas (at most [`MAX_RULES`] distinct ones, as many as the library keeps); `None` when
/// there are none. Each bad entry, and the entries past the limit, get a warning.
fn rule_list(annotation: &str, text: &str, warnings: &mut Vec<String>) -> Option<String> {
    let mut good: Vec<&str> = Vec::new();
    let mut kept: Vec<rules::Rule> = Vec::new();
    let mut over = 0usize;
    let mut bad = 0usize;
    for entry in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
    {
        match rules::parse_rule(entry) {
            Some(rule) if kept.contains(&rule) => {}
            Some(_) if kept.len() >= MAX_RULES => over += 1,
            Some(rule) => {
                kept.push(rule);
                good.push(entry);
            }
            None => {
                bad += 1;
                if bad <= 4 {
                    warnings.push(format!(
                        "{annotation}: entry \"{}\" is not {ACCEPT_RULE}; left out",
                        shown(entry, SHOWN)
                    ));
                }
            }
        }
    }
    if bad > 4 {
        warnings.push(format!(
            "{annotation}: {} more bad entries left out",
            bad - 4
        ));
    }
    if over > 0 {
        warnings.push(format!(
            "{annotation}: {over} entries past the first {MAX_RULES} left out (the library \
             keeps {MAX_RULES})"
        ));
    }
    (!good.is_empty()).then(|| good.join(","))
}

/// Whether the pod asked to be left alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    Inject,
    /// Opted out: `"label"` or `"annotation"`.
    OptedOut(&'static str),
    /// A value that is neither yes nor no: left alone (the pod may have meant to opt out),
    /// with this warning.
    Unclear(String),
}

/// `keepalive-shim.io/inject` as a label or an annotation: the label first (it is also what
/// the webhook configuration's `objectSelector` reads), then the annotation.
pub(crate) fn choice(
    labels: Option<&Map<String, Value>>,
    annotations: Option<&Map<String, Value>>,
) -> Choice {
    for (map, what) in [(labels, "label"), (annotations, "annotation")] {
        let Some(value) = map.and_then(|m| m.get(INJECT)) else {
            continue;
        };
        let text = value.as_str().unwrap_or("");
        match parse_inject(text) {
            Some(true) => {}
            Some(false) => return Choice::OptedOut(what),
            None => {
                return Choice::Unclear(format!(
                    "{what} {INJECT}=\"{}\" is not {ACCEPT_INJECT}; the pod is left alone, as if \
                     it had opted out",
                    shown(text, SHOWN)
                ));
            }
        }
    }
    Choice::Inject
}

const ACCEPT_INJECT: &str = "one of enabled/disabled, true/false, on/off, yes/no, 1/0";

/// `enabled`/`disabled` (the namespace label's spelling, and Linkerd's) or the library's
/// booleans.
fn parse_inject(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => config::parse_bool(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn good_values_pass_as_written() {
        let annotations = map(json!({
            "keepalive-shim.io/idle": "2m",
            "keepalive-shim.io/interval": "5",
            "keepalive-shim.io/count": "4",
            "keepalive-shim.io/user-timeout": "1500ms",
            "keepalive-shim.io/force": "yes",
            "keepalive-shim.io/exclude": "10.0.0.0/8, :5432",
            "keepalive-shim.io/include": "[fd00::5]:443",
            "other.io/idle": "nonsense",
        }));
        let got = settings(Some(&annotations));
        assert_eq!(got.warnings, Vec::<String>::new());
        assert_eq!(
            got.env,
            vec![
                ("KEEPALIVE_IDLE", "2m".into()),
                ("KEEPALIVE_INTERVAL", "5".into()),
                ("KEEPALIVE_COUNT", "4".into()),
                ("KEEPALIVE_USER_TIMEOUT", "1500ms".into()),
                ("KEEPALIVE_FORCE", "yes".into()),
                ("KEEPALIVE_EXCLUDE", "10.0.0.0/8,:5432".into()),
                ("KEEPALIVE_INCLUDE", "[fd00::5]:443".into()),
            ]
        );
    }

    #[test]
    fn bad_values_are_named_and_not_passed_on() {
        let annotations = map(json!({
            "keepalive-shim.io/idle": "0",
            "keepalive-shim.io/count": "3\n\"x\"",
            "keepalive-shim.io/force": 1,
            "keepalive-shim.io/exclude": "10.0.0.0/88, :5432",
            "keepalive-shim.io/include": "nowhere",
            "keepalive-shim.io/idel": "30",
        }));
        let got = settings(Some(&annotations));
        assert_eq!(got.env, vec![("KEEPALIVE_EXCLUDE", ":5432".into())]);
        assert_eq!(
            got.warnings[0],
            "keepalive-shim.io/idle=\"0\" is not whole seconds from 1 to 32767 (like 30, 90s, \
             2m); not passed on, so the default applies"
        );
        assert_eq!(
            got.warnings[1],
            "keepalive-shim.io/count=\"3\\n\\\"x\\\"\" is not a whole number from 1 to 127; not \
             passed on, so the default applies"
        );
        assert!(got.warnings[2].starts_with("keepalive-shim.io/force is not a string"));
        assert!(got.warnings[3].starts_with(
            "keepalive-shim.io/exclude: entry \"10.0.0.0/88\" is not an IP address, a CIDR range"
        ));
        assert!(got.warnings[4].starts_with("keepalive-shim.io/include: entry \"nowhere\""));
        assert!(got.warnings[5].starts_with("unknown annotation keepalive-shim.io/idel"));
        assert_eq!(got.warnings.len(), 6);
    }

    #[test]
    fn rule_lists_keep_what_the_library_keeps() {
        let many: Vec<String> = (1..=40).map(|p| format!(":{p}")).collect();
        let mut warnings = Vec::new();
        let text = format!(":1 {}", many.join(","));
        let good = rule_list("keepalive-shim.io/exclude", &text, &mut warnings).unwrap();
        assert_eq!(good.split(',').count(), MAX_RULES);
        assert_eq!(
            warnings,
            vec![
                "keepalive-shim.io/exclude: 8 entries past the first 32 left out (the library \
                 keeps 32)"
            ]
        );
        warnings.clear();
        assert_eq!(rule_list("x", " , ", &mut warnings), None);
        let bad: Vec<String> = (0..10).map(|i| format!("bad{i}")).collect();
        assert_eq!(rule_list("x", &bad.join(" "), &mut warnings), None);
        assert_eq!(warnings.len(), 5);
        assert_eq!(warnings[4], "x: 6 more bad entries left out");
    }

    #[test]
    fn opting_out() {
        let yes = map(json!({ INJECT: "enabled" }));
        let no = map(json!({ INJECT: "false" }));
        let disabled = map(json!({ INJECT: "Disabled" }));
        let unclear = map(json!({ INJECT: "maybe" }));
        assert_eq!(choice(None, None), Choice::Inject);
        assert_eq!(choice(Some(&yes), Some(&yes)), Choice::Inject);
        assert_eq!(choice(Some(&no), None), Choice::OptedOut("label"));
        assert_eq!(
            choice(Some(&yes), Some(&disabled)),
            Choice::OptedOut("annotation")
        );
        assert_eq!(choice(Some(&no), Some(&yes)), Choice::OptedOut("label"));
        let Choice::Unclear(warning) = choice(None, Some(&unclear)) else {
            panic!("not unclear");
        };
        assert!(warning.starts_with(
            "annotation keepalive-shim.io/inject=\"maybe\" is not one of enabled/disabled"
        ));
    }
}
