//! A Prometheus of a test's own (Debian's `prometheus` package): started on loopback with a
//! scrape configuration of the test's (one target, one scrape a second), queried through its
//! HTTP API (`/api/v1/query`), stopped by PID when dropped, also when the test fails. Also the
//! endpoint side: `keepalive-shim metrics` on a free loopback port, and one plain HTTP exchange.

use super::{output_ok, scratch};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prometheus scrapes the endpoint this often.
pub const SCRAPE_S: f64 = 1.0;
/// The endpoint (`metrics` and `fleet attach --metrics`) answers from a scrape at most this
/// old (cli/src/endpoint.rs), so a count reaches Prometheus up to this much later again.
pub const FRESH_S: f64 = 1.0;
/// What a loaded machine (CI: 2 cores, test binaries' tests in parallel) may add to the
/// above before a count shows: a scrape started late, a timer fired late. Measured here: a count
/// reached Prometheus 5.9-6.0 s after a 4 s bound; the worst case without load is 6.1 s.
pub const SLACK_S: f64 = 1.0;

/// A child process killed by PID and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus of this test's own: its folder under target/, its config, its port.
pub struct Prometheus {
    _child: Killed,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(target: &str) -> Prometheus {
        let dir = scratch().join("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n\
             scrape_configs:\n  - job_name: keepalive-shim\n    scrape_interval: {SCRAPE_S}s\n    \
             scrape_timeout: {SCRAPE_S}s\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // A free port, taken back just before Prometheus binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus");
        let prometheus = Prometheus {
            _child: Killed(child),
            port,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(60);
        while !prometheus.ready() {
            assert!(
                Instant::now() < end,
                "Prometheus not ready within 60 s: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    fn ready(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The value of the instant query `q` (a single series), `None` while it has none.
    pub fn query(&self, q: &str) -> Option<f64> {
        let out = output_ok(Command::new("curl").args([
            "-sfG",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            "--data-urlencode",
            &format!("query={q}"),
        ]));
        let v: Value = serde_json::from_slice(&out.stdout).expect("Prometheus' JSON");
        assert_eq!(v["status"], "success", "{q}: {v}");
        let result = v["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{q}: more than one series: {v}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits at most `within` seconds until `q` is `want`: the seconds it took.
    pub fn until(&self, q: &str, want: f64, within: f64) -> f64 {
        let t0 = Instant::now();
        loop {
            let now = self.query(q);
            if now == Some(want) {
                return t0.elapsed().as_secs_f64();
            }
            assert!(
                t0.elapsed().as_secs_f64() < within,
                "{q} is {now:?}, not {want}, after {within} s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `CLI metrics --listen 127.0.0.1:0 ARGS…` (without `LD_PRELOAD`), killed when dropped, and the
/// address it serves (from its first line on stderr).
pub fn metrics_endpoint(cli: &str, args: &[&str]) -> (Killed, String) {
    use std::io::BufRead;
    let mut child = Command::new(cli)
        .args(["metrics", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keepalive-shim metrics");
    let mut line = String::new();
    let stderr = child.stderr.take().unwrap();
    std::io::BufReader::new(stderr)
        .read_line(&mut line)
        .unwrap();
    let child = Killed(child);
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics\n"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr)
}

/// One HTTP exchange with `addr`: `request` sent as it is, the whole response read (the server
/// closes, or the request said `Connection: close`).
pub fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `GET /metrics` from `addr`: the whole response.
pub fn scrape(addr: &str) -> String {
    http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
}
