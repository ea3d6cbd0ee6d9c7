//! keepalive-shim's command-line tool.
fn main() {}
