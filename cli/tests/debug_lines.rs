//! The same plan prints the same debug line under the preload library and under the seccomp
//! supervisor (one formatter, `crates/policy/src/show.rs`): one Python client, which makes a TCP
//! socket, sets its own idle of 100 s and connects to a local listener, run with
//! `KEEPALIVE_LOG=debug` under the library and under `keepalive-shim run --mode seccomp --trap
//! socket`; the text after each mechanism's own prefix (`fd N: ` and `pid T: fd N: `) must be the
//! same, line for line, for the socket made and the option set. Needs Linux 5.14 for the socket
//! trap; skipped elsewhere, except under CI=true.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use keepalive_shim_supervisor::{Trap, kernel};
use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_keepalive-shim");

const CLIENT: &str = "
import socket
server = socket.socket()
server.bind(('127.0.0.1', 0))
server.listen()
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 100)
s.connect(server.getsockname())
";

/// The lines about the client's sockets, each from its `fd N: ` on (the fd number kept: both
/// mechanisms see the same numbers), in order.
fn lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let at = l.find(" fd ")?;
            let rest = &l[at + 1..];
            (rest.contains("new TCP socket") || rest.contains("the program sets"))
                .then(|| rest.to_owned())
        })
        .collect()
}

#[test]
fn the_library_and_the_supervisor_print_one_plan_alike() {
    let version = keepalive_shim_sys::kernel::version().unwrap_or((0, 0));
    if version < kernel::minimum(Trap::Socket) {
        unavailable::<()>("the socket trap needs Linux 5.14");
        return;
    }
    let python = python();
    let preloaded = output_ok(
        command(true, python)
            .args(["-c", CLIENT])
            .env("KEEPALIVE_LOG", "debug"),
    );
    let supervised = output_ok(
        Command::new(CLI)
            .args([
                "run", "--mode", "seccomp", "--trap", "socket", "--log", "debug", "--",
            ])
            .arg(python)
            .args(["-c", CLIENT])
            .env_remove("LD_PRELOAD"),
    );
    let library = lines(&stderr(&preloaded));
    let supervisor = lines(&stderr(&supervised));
    assert_eq!(
        library.len(),
        3,
        "two sockets made, one option set: {library:#?}"
    );
    assert_eq!(library, supervisor, "the same plans, printed differently");
    assert!(
        library[2].contains(
            "the program sets TCP_KEEPIDLE=100; its value stands, and TCP_USER_TIMEOUT is now \
             130000ms"
        ),
        "{library:#?}"
    );
}
