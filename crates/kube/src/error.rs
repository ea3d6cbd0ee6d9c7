//! The one error type: a configuration field the caller got wrong, a request body that is not an
//! AdmissionReview for a pod, or YAML `inject` cannot read. Each message names what was wrong,
//! the value found (escaped, bounded) and what is accepted.

use core::fmt;
use keepalive_shim_policy::config::escape;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A [`Config`](crate::Config) field: its name, the value, what it accepts.
    Config {
        field: &'static str,
        value: String,
        accepted: String,
    },
    /// The request body is larger than [`Config::max_body`](crate::Config::max_body).
    TooLarge { size: usize, max: usize },
    /// The request body is not JSON (or is truncated): the parser's message, with the position.
    NotJson(String),
    /// JSON, but not an `admission.k8s.io/v1` `AdmissionReview` with a `request`: what was found.
    NotAdmissionReview(String),
    /// An AdmissionReview whose `request.uid` is missing or not a string: nothing can answer it.
    NoUid,
    /// An AdmissionReview about something other than a pod being created: what it is about.
    NotAPod(String),
    /// `inject`: a YAML document that cannot be read (1-based number, first line, the parser's
    /// message), or a mutated one that cannot be written back.
    Yaml {
        document: usize,
        line: usize,
        message: String,
    },
}

impl Error {
    pub(crate) fn config(field: &'static str, value: &str, accepted: &str) -> Error {
        Error::Config {
            field,
            value: value.into(),
            accepted: accepted.into(),
        }
    }

    /// A short name for counting errors by kind (`too_large`, `not_json`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::TooLarge { .. } => "too_large",
            Error::NotJson(_) => "not_json",
            Error::NotAdmissionReview(_) => "not_admission_review",
            Error::NoUid => "no_uid",
            Error::NotAPod(_) => "not_a_pod",
            Error::Yaml { .. } => "yaml",
        }
    }
}

/// `value` escaped onto one line and cut to at most `max` characters (`…` marks a cut): for
/// values from a request, which may be anything.
pub(crate) fn shown(value: &str, max: usize) -> String {
    cut(&escape(value), max)
}

/// `text` cut to at most `max` characters (`…` marks a cut), control characters (there should
/// be none: values are [`shown`]) replaced by `?`.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let clean = |c: char| if c.is_control() { '?' } else { c };
    if text.chars().count() <= max {
        return text.chars().map(clean).collect();
    }
    let mut cut: String = text.chars().take(max).map(clean).collect();
    cut.push('…');
    cut
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
                field,
                value,
                accepted,
            } => write!(f, "{field} \"{}\" is not {accepted}", shown(value, 300)),
            Error::TooLarge { size, max } => write!(
                f,
                "the request body is {size} bytes, more than the {max} accepted"
            ),
            Error::NotJson(why) => write!(f, "the request body is not JSON: {why}"),
            Error::NotAdmissionReview(why) => {
                write!(
                    f,
                    "not an admission.k8s.io/v1 AdmissionReview request: {why}"
                )
            }
            Error::NoUid => f.write_str(
                "the AdmissionReview has no request.uid (a string): it cannot be answered",
            ),
            Error::NotAPod(what) => write!(
                f,
                "the AdmissionReview is about {what}, not a pod being created: the webhook \
                 mutates pods on CREATE only (check the MutatingWebhookConfiguration's rules)"
            ),
            Error::Yaml {
                document,
                line,
                message,
            } => write!(f, "YAML document {document} (from line {line}): {message}"),
        }
    }
}

impl std::error::Error for Error {}
