//! A tiny server on the crate, for trying it by hand and for proving the static musl builds:
//! `cargo run -p keepalive-shim-http --example serve -- 127.0.0.1:9877 [WEB_CONFIG]`, then
//! `curl http://127.0.0.1:9877/metrics`.

use keepalive_shim_http::{Limits, Method, Response, Security, Server};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9877".to_owned());
    let security = match args.next() {
        Some(path) => match keepalive_shim_http::load_web_config(std::path::Path::new(&path)) {
            Ok(security) => security,
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => Security::default(),
    };
    let listener = match std::net::TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = Server::new(Limits::default(), security)
        .route(Method::GET, "/metrics", |_| Response::text(200, "up 1\n"))
        .route(Method::POST, "/echo", |req| {
            Response::new(200, "application/octet-stream", req.body.clone())
        });
    eprintln!("{}", server.run(listener));
    std::process::ExitCode::FAILURE
}
