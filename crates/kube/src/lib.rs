//! keepalive-shim for Kubernetes: one pod mutation behind three entry points. The admission
//! webhook (`keepalive-shim webhook serve`) and `keepalive-shim webhook review` call [`review`]
//! with an AdmissionReview body; `keepalive-shim inject` calls [`inject`] with YAML; both come
//! down to [`mutate_pod`] on a pod as a JSON value (never typed structs: a typed round trip would
//! drop fields a newer API server sends, and the patch would then remove them).
//!
//! What a pod gets (with the default [`Config`]): an `emptyDir` volume [`VOLUME`], an init
//! container [`INIT_CONTAINER`] from the keepalive-shim image that copies the library into it
//! (restricted security context, small explicit resources), and in every regular container the
//! volume mounted read-only at `/keepalive-shim`, `LD_PRELOAD` naming the library first, and the
//! `KEEPALIVE_*` variables of the pod's `keepalive-shim.io/*` annotations. The annotation
//! [`STATUS`] says what each container got. Pure computation: no I/O, no clock, no threads.
//!
//! For the entry points: build the [`Config`] from flags and call [`Config::check`] once (its
//! error names the field, the value and what is accepted); then per request [`review`] (HTTP 200
//! with [`Reviewed::response`], or 400 with the error when it is `None`) or per file [`inject`].
//! Counters: [`Outcome::Injected`], [`Outcome::Skipped`] by [`Skip::reason`],
//! [`Outcome::Failed`] by [`Error::kind`], and `Reviewed::warnings.len()`.

mod annotations;
pub mod certs;
mod config;
mod error;
mod manifest;
mod pod;
mod review;

pub use annotations::{INJECT, PREFIX, STATUS};
pub use config::{
    Config, DEFAULT_MAX_BODY, DEFAULT_MOUNT_PATH, DEFAULT_RUN_AS_USER, Delivery, IMAGE_LIBRARY_DIR,
    IMAGE_TOOL, PullPolicy, Resources, VERSION,
};
pub use error::Error;
pub use manifest::{Injected, inject};
pub use pod::{ContainerStatus, INIT_CONTAINER, Mutation, Skip, VOLUME, mutate_pod};
pub use review::{ADMISSION_API_VERSION, Outcome, Reviewed, WARNING_MAX, WARNINGS_TOTAL, review};
