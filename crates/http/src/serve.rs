//! The accept loop, one task per connection (TLS, hyper's HTTP/1.1, the watchdog), and what
//! happens to each request: rate limit, basic auth, routing, the body under its limit and
//! deadline, a handler slot, the handler on the blocking pool, the response.

use crate::conn::{self, Body, Watch, Watched};
use crate::{Handler, Limits, Request, Response, Route, Security, Server};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What every connection shares.
struct Shared {
    limits: Limits,
    security: Security,
    routes: Vec<Route>,
    handlers: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

pub async fn accept_loop(server: Server, listener: tokio::net::TcpListener) -> std::io::Error {
    let Server {
        limits,
        security,
        routes,
        log,
    } = server;
    let tls = security
        .tls
        .as_ref()
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.server_config(log.clone())));
    let shared = Arc::new(Shared {
        handlers: Arc::new(Semaphore::new(limits.max_handlers)),
        limits,
        security,
        routes,
        tls,
    });
    let connections = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        // Beyond max_connections nothing is accepted: new connections wait in the backlog.
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return std::io::Error::other("the connection limit was closed");
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if transient(&e) => {
                // Out of descriptors or memory, or a connection reset before it was accepted:
                // not a reason to stop, nor to spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return e,
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection(stream, peer, &shared).await;
            drop(permit);
        });
    }
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(
            23 /* ENFILE */ | 24 /* EMFILE */ | 105 /* ENOBUFS */ | 12 /* ENOMEM */ | 71 /* EPROTO */
        )
    )
}

async fn connection(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let limits = &shared.limits;
    let watch = Arc::new(Watch::new(
        limits.head_timeout,
        limits.exchange_timeout,
        limits.idle_timeout,
    ));
    let io = Watched::new(stream, Arc::clone(&watch));
    let work = async {
        match &shared.tls {
            Some(acceptor) => match acceptor.accept(io).await {
                Ok(tls) => http(tls, peer, shared, &watch).await,
                Err(_) => false,
            },
            None => http(io, peer, shared, &watch).await,
        }
    };
    let finished = tokio::select! {
        finished = work => finished,
        _ = watch.expired() => false,
    };
    if finished
        && let Some(spare) = watch.take_spare()
        && let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(spare))
    {
        conn::linger(stream).await;
    }
}

/// Serves HTTP/1.1 on `io` until the client or the server closes it; whether it ended by itself.
async fn http<IO>(io: IO, peer: SocketAddr, shared: &Arc<Shared>, watch: &Arc<Watch>) -> bool
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|request| {
        let shared = Arc::clone(shared);
        let watch = Arc::clone(watch);
        async move { Ok::<_, Infallible>(exchange(request, peer, &shared, watch).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(shared.limits.max_head)
        .keep_alive(true)
        .half_close(false);
    builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
        .is_ok()
}

/// One request, answered.
async fn exchange(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    watch: Arc<Watch>,
) -> hyper::Response<Body> {
    watch.exchange_started();
    let deadline = Instant::now() + shared.limits.exchange_timeout;
    let (response, close) = answer(request, peer, shared, deadline, &watch).await;
    let mut out = hyper::Response::new(Body::new(response.body, Arc::clone(&watch)));
    *out.status_mut() = response.status;
    *out.headers_mut() = response.headers;
    // The framing is hyper's to write, from the body it is given: a handler's own would lie.
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out.headers_mut().remove(header::TRANSFER_ENCODING);
    for (name, value) in &shared.security.headers {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    if close {
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

fn plain(status: StatusCode, text: &str) -> Response {
    Response::text(status.as_u16(), format!("{text}\n"))
}

/// The response, and whether the connection closes after it (the body was not read).
async fn answer(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    deadline: Instant,
    watch: &Watch,
) -> (Response, bool) {
    // An answer before the body was read: the connection closes after it (a body may follow),
    // unless there is no body.
    let has_body = !http_body::Body::is_end_stream(request.body());
    let unread = |response: Response| {
        if has_body {
            watch.body_left_unread();
        }
        (response, has_body)
    };
    if let Some(limit) = &shared.security.rate_limit
        && !limit.allow()
    {
        return unread(
            plain(StatusCode::TOO_MANY_REQUESTS, "too many requests")
                .header(header::RETRY_AFTER, &limit.retry_after_secs().to_string()),
        );
    }
    let mut user = None;
    if let Some(auth) = &shared.security.auth {
        match auth
            .check(request.headers(), &shared.handlers, deadline)
            .await
        {
            crate::auth::Verdict::Allowed(name) => user = Some(name),
            crate::auth::Verdict::Denied => {
                return unread(
                    plain(StatusCode::UNAUTHORIZED, "unauthorized")
                        .header(header::WWW_AUTHENTICATE, "Basic"),
                );
            }
            crate::auth::Verdict::Busy => {
                return unread(plain(StatusCode::SERVICE_UNAVAILABLE, "busy, try again"));
            }
        }
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let method = request.method().clone();
    let handler = match find(&shared.routes, &method, &path) {
        Found::Handler(handler) => handler,
        Found::NoPath => return unread(plain(StatusCode::NOT_FOUND, "not found")),
        Found::NoMethod(allow) => {
            return unread(
                plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("method not allowed; allowed: {allow}"),
                )
                .header(header::ALLOW, &allow),
            );
        }
    };
    let (head, body) = request.into_parts();
    let limits = &shared.limits;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return unread(too_large(limits.max_body));
    }
    let body_deadline = deadline.min(Instant::now() + limits.body_timeout);
    let body = match tokio::time::timeout_at(body_deadline, read_body(body, limits.max_body)).await
    {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return unread(too_large(limits.max_body)),
        Ok(Err(BodyError::Broken)) => {
            return unread(plain(
                StatusCode::BAD_REQUEST,
                "the request body is malformed",
            ));
        }
        Err(_) => {
            return unread(plain(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} ms",
                    limits.body_timeout.as_millis()
                ),
            ));
        }
    };
    let request = Request {
        method,
        path,
        query,
        headers: head.headers,
        body,
        peer,
        user,
    };
    (run(handler, request, shared, deadline).await, false)
}

fn too_large(max: usize) -> Response {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than {max} bytes"),
    )
}

enum Found {
    Handler(Handler),
    NoPath,
    /// The methods that path answers, for `Allow`.
    NoMethod(String),
}

fn find(routes: &[Route], method: &Method, path: &str) -> Found {
    let mut allow: Vec<&str> = Vec::new();
    for route in routes.iter().filter(|r| r.path == path) {
        if route.method == method || (route.method == Method::GET && method == Method::HEAD) {
            return Found::Handler(Arc::clone(&route.handler));
        }
        allow.push(route.method.as_str());
        if route.method == Method::GET {
            allow.push("HEAD");
        }
    }
    if allow.is_empty() {
        Found::NoPath
    } else {
        allow.dedup();
        Found::NoMethod(allow.join(", "))
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

/// The whole body, refused as soon as it passes `max` bytes.
async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > max {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The handler's response, run on the blocking pool once a handler slot is free; 503 when no
/// slot frees or the handler does not finish before the exchange deadline.
async fn run(handler: Handler, request: Request, shared: &Shared, deadline: Instant) -> Response {
    let busy = || {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy; try again",
        )
        .header(header::RETRY_AFTER, "1")
    };
    let Ok(Ok(permit)) =
        tokio::time::timeout_at(deadline, Arc::clone(&shared.handlers).acquire_owned()).await
    else {
        return busy();
    };
    let task = tokio::task::spawn_blocking(move || {
        // The slot is held until the handler really ends, even past a 503 sent for it.
        let _permit = permit;
        handler(&request)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(response)) => response,
        // The handler panicked (possible only where panics unwind, as in tests).
        Ok(Err(_)) => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        Err(_) => busy(),
    }
}
