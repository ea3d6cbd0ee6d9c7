//! The metrics endpoint: `/metrics` over HTTP, for `keepalive-shim metrics` and `fleet attach
//! --metrics`, each scrape read by `keepalive_shim_observe` within its budget. Two connections
//! served at once, eight waiting, any more closed; five seconds to send a request. The request
//! is parsed with `httparse` (the parser hyper uses, no dependencies of its own); the rest is
//! `std::net`.

use keepalive_shim_observe::fleet::FleetSource;
use keepalive_shim_observe::prometheus;
use keepalive_shim_observe::scrape::{Budget, Scraper};
use keepalive_shim_sys::say;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Connections served at once, and waiting.
const WORKERS: usize = 2;
const QUEUE: usize = 8;
/// To send a whole request, and to take the answer.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// The largest request head read.
const MAX_REQUEST: usize = 8192;

/// The listening socket for `addr`, said on stderr (`serving http://ADDR/metrics`), or why not.
pub fn listen(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    say!("serving http://{bound}/metrics");
    Ok(listener)
}

/// Serves `/metrics` on `listener` until it fails: the processes with the library, the
/// supervisors, and, when given, fleet mode's counts from `fleet`.
pub fn serve_forever(listener: TcpListener, budget: Budget, fleet: Option<FleetSource>) {
    let reader = Arc::new(Mutex::new(Scraper::default()));
    let fleet = Arc::new(fleet);
    let (tx, rx) = mpsc::sync_channel::<TcpStream>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..WORKERS {
        let rx = Arc::clone(&rx);
        let reader = Arc::clone(&reader);
        let fleet = Arc::clone(&fleet);
        std::thread::spawn(move || {
            loop {
                let next = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                match next {
                    Ok(stream) => serve(stream, &reader, budget, fleet.as_ref().as_ref()),
                    Err(_) => return,
                }
            }
        });
    }
    for stream in listener.incoming() {
        match stream {
            // A full queue: the connection is closed (dropped) at once.
            Ok(stream) => drop(tx.try_send(stream)),
            // Out of descriptors, or the like: not a busy loop.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// The request in `head` (a complete request head), answered how.
fn route(method: &str, path: &str) -> Asked {
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Asked::MethodNotAllowed,
    };
    if path.split('?').next() == Some("/metrics") {
        Asked::Metrics { head }
    } else {
        Asked::NotFound
    }
}

/// Reads one request head from `stream`: what it asks, or `None` when the client went away or
/// took too long.
fn read_request(stream: &mut TcpStream) -> Option<Asked> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = stream.read(&mut buf[len..]).ok()?;
        if n == 0 {
            return None;
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return Some(route(req.method.unwrap_or(""), req.path.unwrap_or("")));
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return Some(Asked::Bad),
        }
    }
}

fn serve(
    mut stream: TcpStream,
    reader: &Mutex<Scraper>,
    budget: Budget,
    fleet: Option<&FleetSource>,
) {
    let _ = stream.set_write_timeout(Some(REQUEST_TIME));
    let Some(asked) = read_request(&mut stream) else {
        return;
    };
    let (status, extra, body, head) = match asked {
        Asked::Metrics { head } => {
            let text = match reader.lock() {
                Ok(mut r) => {
                    let s = r.scrape(budget);
                    let fleet = fleet.map(|read| read()).unwrap_or_default();
                    prometheus::render(&s, &fleet, budget.series)
                }
                Err(_) => String::new(),
            };
            ("200 OK", "", text, head)
        }
        Asked::NotFound => (
            "404 Not Found",
            "",
            "keepalive-shim serves /metrics only\n".to_owned(),
            false,
        ),
        Asked::MethodNotAllowed => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "GET or HEAD only\n".to_owned(),
            false,
        ),
        Asked::Bad => ("400 Bad Request", "", "bad request\n".to_owned(), false),
    };
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        response.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&response);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Let the client read the answer before the close (a close with unread data would reset).
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read(&mut [0u8; 512]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed() {
        assert_eq!(route("GET", "/metrics"), Asked::Metrics { head: false });
        assert_eq!(route("HEAD", "/metrics?x=1"), Asked::Metrics { head: true });
        assert_eq!(route("GET", "/"), Asked::NotFound);
        assert_eq!(route("GET", "/metricsx"), Asked::NotFound);
        assert_eq!(route("POST", "/metrics"), Asked::MethodNotAllowed);
    }
}
