//! One connection's deadlines: a watchdog that drops the connection when the phase it is in
//! (waiting for a head, in an exchange, idle between requests) lasts too long, and the socket
//! wrapper and response body that tell it when the phase changes. hyper has a head timeout of
//! its own but nothing for bodies, handlers, slow readers or keep-alive; this covers them all
//! with one clock per connection.

use bytes::Bytes;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Accepted (TLS handshake) or a request begun: its head must be complete by the deadline.
    Head,
    /// A request's head was read: the response must be handed over by the deadline.
    Exchange,
    /// A response was handed over: the next request must begin by the deadline.
    Idle,
}

struct State {
    phase: Phase,
    deadline: Instant,
    /// A response went out before its request's body was read: drain a little before closing,
    /// so that the client reads the response instead of a reset.
    unread_body: bool,
    /// Then a second descriptor of the socket, for that drain after hyper closed its own.
    spare: Option<OwnedFd>,
}

/// The clock of one connection.
pub struct Watch {
    state: Mutex<State>,
    changed: Notify,
    head: Duration,
    /// The exchange timeout and a moment more, so that a 503 sent at the exchange deadline
    /// gets written before the watchdog would close the connection.
    exchange: Duration,
    idle: Duration,
}

impl Watch {
    pub fn new(head: Duration, exchange: Duration, idle: Duration) -> Watch {
        Watch {
            state: Mutex::new(State {
                phase: Phase::Head,
                deadline: Instant::now() + head,
                unread_body: false,
                spare: None,
            }),
            changed: Notify::new(),
            head,
            exchange: exchange + Duration::from_secs(1),
            idle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn enter(&self, phase: Phase, within: Duration) {
        let mut state = self.lock();
        state.phase = phase;
        state.deadline = Instant::now() + within;
        drop(state);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection begins a request.
    fn read_some(&self) {
        let idle = self.lock().phase == Phase::Idle;
        if idle {
            self.enter(Phase::Head, self.head);
        }
    }

    /// A request's head was read.
    pub fn exchange_started(&self) {
        self.enter(Phase::Exchange, self.exchange);
    }

    /// The response's body was handed to the connection.
    pub fn response_done(&self) {
        self.enter(Phase::Idle, self.idle);
    }

    /// The response goes out before the request's body was read.
    pub fn body_left_unread(&self) {
        self.lock().unread_body = true;
    }

    /// The second descriptor of a connection that answered before reading a body.
    pub fn take_spare(&self) -> Option<OwnedFd> {
        self.lock().spare.take()
    }

    /// The socket is writing an answer: if it leaves a body unread, keep a second descriptor.
    fn writing(&self, stream: &TcpStream) {
        let mut state = self.lock();
        if state.unread_body && state.spare.is_none() {
            state.spare = stream.as_fd().try_clone_to_owned().ok();
        }
    }

    /// Returns when the deadline of the phase the connection is in has passed.
    pub async fn expired(&self) {
        loop {
            let deadline = self.lock().deadline;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// The accepted socket, telling its [`Watch`] when bytes arrive.
pub struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl Watched {
    pub fn new(stream: TcpStream, watch: Arc<Watch>) -> Watched {
        Watched { stream, watch }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watch.writing(&self.stream);
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch.writing(&self.stream);
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body of one piece that tells the [`Watch`] when it has been handed over (hyper
/// drops a body once it has taken all of it).
pub struct Body {
    data: Option<Bytes>,
    watch: Arc<Watch>,
}

impl Body {
    pub fn new(data: Bytes, watch: Arc<Watch>) -> Body {
        Body {
            data: Some(data),
            watch,
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.watch.response_done();
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(
            self.data
                .take()
                .filter(|d| !d.is_empty())
                .map(|d| Ok(http_body::Frame::data(d))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.is_empty())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// After a response went out unread body and all: half-close, then read and drop what the
/// client still sends, for at most a second and 256 KiB, so that the close does not reset the
/// connection under the client's feet before it read the response.
pub async fn linger(stream: TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut stream = stream;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    let until = Instant::now() + Duration::from_secs(1);
    let mut left: usize = 256 << 10;
    let mut buf = [0u8; 8192];
    while left > 0 {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}
