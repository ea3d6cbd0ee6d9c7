//! What the server tests share: a real server on 127.0.0.1 in a thread, and a plain HTTP/1.1
//! client over a real socket that reads the answer as any client would.
#![allow(dead_code)]

use keepalive_shim_http::Server;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Serves `server` on a free port of 127.0.0.1 for the rest of the test process.
pub fn start(server: Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let error = server.run(listener);
        panic!("the server stopped: {error}");
    });
    addr
}

/// An answer as read off the socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one answer from `stream`: the head, then the body by `Content-Length` (or to the
/// end); `None` when the connection closes first or nothing comes within `wait`.
pub fn read_answer(stream: &mut TcpStream, head_request: bool, wait: Duration) -> Option<Answer> {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut answer = Answer {
        status,
        head,
        body: buf[head_end..].to_vec(),
    };
    let length = if head_request {
        Some(0)
    } else {
        answer
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
    };
    loop {
        if length.is_some_and(|l| answer.body.len() >= l) {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(answer)
}

/// Sends `raw` on a new connection and reads one answer.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.write_all(raw).ok()?;
    let head = raw.starts_with(b"HEAD ");
    read_answer(&mut stream, head, Duration::from_secs(10))
}

/// `GET path` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Option<Answer> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `GET path` and how long the answer took.
pub fn timed_get(addr: SocketAddr, path: &str) -> (Option<Answer>, Duration) {
    let started = Instant::now();
    let answer = get(addr, path);
    (answer, started.elapsed())
}

/// How long until the server closes `stream` (a read returns end of file or a reset), at
/// most `wait`; `None` if it is still open then. Whatever the server sends is read and dropped.
pub fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        let left = wait.checked_sub(started.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}
