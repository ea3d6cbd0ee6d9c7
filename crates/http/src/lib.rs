//! keepalive-shim's one HTTP(S) server: the metrics endpoint and the admission webhook both serve
//! on it. Idle and slow clients cannot hold it (deadlines for the head, the body, the exchange and
//! keep-alive; bounded connections and handler runs), bodies are read under a limit, TLS follows
//! its certificate files, and `--web.config.file` is read in Prometheus exporter-toolkit's format.
//!
//! ```no_run
//! use keepalive_shim_http::{Limits, Method, Response, Security, Server};
//! let listener = std::net::TcpListener::bind("127.0.0.1:9877").unwrap();
//! let server = Server::new(Limits::default(), Security::default())
//!     .route(Method::GET, "/metrics", |_req| Response::text(200, "up 1\n"));
//! let error = server.run(listener); // serves until the process ends
//! eprintln!("{error}");
//! ```
//!
//! Handlers are plain blocking functions (the metrics scrape reads `/proc`); each runs on a
//! thread of a small pool, at most [`Limits::max_handlers`] at once. The workspace builds with
//! `panic = "abort"`, so a handler must not panic: this crate itself is checked by clippy's
//! `unwrap_used`, `expect_used`, `panic` and `indexing_slicing` lints (below), and its tests
//! send it garbage of every kind.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

mod auth;
mod cache;
mod conn;
mod ratelimit;
mod serve;
mod tls;
mod webconfig;

pub use auth::BasicAuth;
pub use bytes::Bytes;
pub use cache::Fresh;
pub use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
pub use ratelimit::RateLimit;
pub use tls::{ClientAuth, Tls, TlsSettings, TlsVersion};
pub use webconfig::{load as load_web_config, parse as parse_web_config};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the server allows a client, and how much work it takes on at once.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From the connection's accept (TLS handshake included) to its first complete request head,
    /// and from the first byte of any later request to its complete head.
    pub head_timeout: Duration,
    /// From the end of a request's head to the end of its body.
    pub body_timeout: Duration,
    /// From the end of a request's head to its response: the body, the wait for a handler slot,
    /// the handler. A handler that overruns it gets 503 sent for it (it runs on to its end).
    pub exchange_timeout: Duration,
    /// Keep-alive: how long a connection may stay open without a new request once a response is
    /// handed over (this also bounds a client that does not read its response).
    pub idle_timeout: Duration,
    /// The request line and headers, in bytes (8 KiB to 1 MiB; larger heads get 431).
    pub max_head: usize,
    /// A request body, in bytes: a larger one gets 413 without being read.
    pub max_body: usize,
    /// Connections served at once. Beyond it new connections are not accepted: they wait in
    /// the kernel's listen backlog until one closes (deadlines make sure one does).
    pub max_connections: usize,
    /// Handlers (and password checks) running at once; more requests wait for a slot within
    /// their exchange deadline, then get 503.
    pub max_handlers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            exchange_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
            max_head: 16 << 10,
            max_body: 64 << 10,
            max_connections: 256,
            max_handlers: 4,
        }
    }
}

impl Limits {
    /// The limits with every value within reason: at least a minimum (a zero would make the
    /// server useless), and a timeout at most a day (an `Instant` plus `Duration::MAX` would
    /// overflow).
    fn sane(mut self) -> Limits {
        let within = |d: Duration| d.clamp(Duration::from_millis(10), Duration::from_secs(86_400));
        self.head_timeout = within(self.head_timeout);
        self.body_timeout = within(self.body_timeout);
        self.exchange_timeout = within(self.exchange_timeout);
        self.idle_timeout = within(self.idle_timeout);
        self.max_head = self.max_head.clamp(8192, 1 << 20);
        self.max_connections = self.max_connections.clamp(1, 1 << 20);
        self.max_handlers = self.max_handlers.clamp(1, 512);
        self
    }
}

/// Who may talk to the server, and what every response carries: TLS, basic auth, extra headers,
/// a request rate. `Security::default()` is plain HTTP, open to all. [`load_web_config`] makes
/// one from a `--web.config.file`.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub tls: Option<Tls>,
    pub auth: Option<BasicAuth>,
    /// Added to every response (exporter-toolkit's `http_server_config.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests beyond it get 429 (exporter-toolkit's `rate_limit`).
    pub rate_limit: Option<RateLimit>,
}

/// A request as a handler sees it: the head, and the body already read under the limit.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
    /// The user basic auth let in, when the server asks for it.
    pub user: Option<String>,
}

/// What a handler answers.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A response with this status (an invalid code becomes 500), `Content-Type` and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers: HeaderMap::new(),
            body: body.into(),
        }
        .header(header::CONTENT_TYPE, content_type)
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// The response with one more header; a value that is not a valid header value (a control
    /// character) is left out rather than sent.
    pub fn header(mut self, name: HeaderName, value: &str) -> Response {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.append(name, value);
        }
        self
    }
}

/// A handler: a blocking function from a request to a response. It must not panic (see the
/// crate's documentation).
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Where log lines go (one line each, no newline); by default stderr, and a failed write is
/// dropped, never a panic.
pub type Logger = Arc<dyn Fn(&str) + Send + Sync>;

struct Route {
    method: Method,
    path: String,
    handler: Handler,
}

/// The server: limits, security, routes. [`Server::run`] serves until the process ends.
pub struct Server {
    limits: Limits,
    security: Security,
    routes: Vec<Route>,
    log: Logger,
}

impl Server {
    pub fn new(limits: Limits, security: Security) -> Server {
        Server {
            limits: limits.sane(),
            security,
            routes: Vec::new(),
            log: Arc::new(stderr_line),
        }
    }

    /// Answers `method` on `path` (exact, without the query) with `handler`. A `GET` route also
    /// answers `HEAD` (same head, no body). Other methods on a known path get 405 with `Allow`,
    /// unknown paths 404.
    pub fn route(
        mut self,
        method: Method,
        path: &str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Server {
        self.routes.push(Route {
            method,
            path: path.to_owned(),
            handler: Arc::new(handler),
        });
        self
    }

    /// Log lines (a certificate that could not be reloaded) go to `log` instead of stderr.
    pub fn logger(mut self, log: impl Fn(&str) + Send + Sync + 'static) -> Server {
        self.log = Arc::new(log);
        self
    }

    /// Serves on `listener` until the process ends, on a runtime of one thread for the sockets
    /// and at most [`Limits::max_handlers`] threads for the handlers. Returns only when the
    /// runtime cannot be made or the listener cannot be used, with why.
    pub fn run(self, listener: std::net::TcpListener) -> std::io::Error {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(self.limits.max_handlers)
            .thread_name("keepalive-shim-http")
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return e,
        };
        runtime.block_on(async move {
            if let Err(e) = listener.set_nonblocking(true) {
                return e;
            }
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => serve::accept_loop(self, listener).await,
                Err(e) => e,
            }
        })
    }
}

/// One line to stderr, as the tool's others (`say!`); a failed write is dropped.
fn stderr_line(line: &str) {
    keepalive_shim_sys::say!("{line}");
}
