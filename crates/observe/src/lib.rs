//! Reading from outside what keepalive-shim did: the counters each copy of the preload library
//! and each seccomp supervisor publish in its own memory, the kernel's timeout count of their
//! network namespaces, and fleet mode's counts, shaped for `inspect`, `metrics` and `fleet status`.
//!
//! Every process read may be hostile: nothing is opened by a name it shows, every read is
//! bounded, a scrape has a budget of time and memory, and what is left out is counted.

pub mod counts;
pub mod fleet;
pub mod guard;
pub mod process;
pub mod prometheus;
pub mod scrape;

/// What `TCPAbortOnTimeout` counts, for people.
pub const TIMED_OUT_MEANS: &str = "connections the kernel ended after a timeout (TcpExt \
    TCPAbortOnTimeout): every program in the network namespace, with or without keepalive-shim; \
    keepalive probes unanswered, the user timeout, or retransmissions exhausted; since the \
    namespace was made";
