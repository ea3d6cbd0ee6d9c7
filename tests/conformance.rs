//! The conformance table (`crates/policy/src/cases.rs`) under the preload library: every row run
//! on real sockets by the one client (`tests/programs/conformance.c`, dynamically linked), once
//! with `target/release/libkeepalive_shim.so` preloaded and the row's settings in the
//! environment, which must give `row.expected(Mechanism::Library)`, and once bare, which must
//! give what the kernel alone gives (the row's own options over the kernel's defaults) — the
//! check that the client does what the row says. Every mismatching row is reported at once.
//! The other mechanisms run the same rows in `cli/tests/conformance.rs`.

mod common;

use common::*;
use keepalive_shim_policy::cases::{CASES, Case, Mechanism};
use std::path::Path;
use std::time::Instant;

/// The client, dynamically linked (the library reaches it).
fn client() -> &'static Path {
    build_c("conformance.c", &["-O2", "-Wall", "-Wextra"])
}

/// The five values the client printed for `case`, with the library preloaded or not, or what
/// went wrong.
fn run(case: &Case, preload: bool, beyond_table: bool) -> Result<[i64; 5], String> {
    let mut cmd = command(preload, client());
    cmd.args(case.args());
    if preload {
        cmd.envs(case.env.iter().copied());
    }
    if beyond_table {
        // The library remembers no descriptor: every socket is read back.
        cmd.env("KEEPALIVE_SHIM_TEST_TABLE_LIMIT", "0");
    }
    let out = cmd.output().map_err(|e| format!("run the client: {e}"))?;
    let stdout = text(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: {}{stdout}",
            out.status,
            stderr(&out).trim_end()
        ));
    }
    let line = stdout.lines().last().unwrap_or("");
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {stdout:?}"))?;
    Ok(five(&json))
}

/// `[i32; 5]` of the table as the `[i64; 5]` of `five()`.
fn wide(v: [i32; 5]) -> [i64; 5] {
    v.map(i64::from)
}

#[test]
fn every_row_of_the_table_under_the_library_and_bare() {
    // The library is built with the command the README gives a user (`cargo build --release`).
    library();
    client();
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for case in CASES {
        let checks = [
            (
                "library",
                true,
                false,
                wide(case.expected(Mechanism::Library)),
            ),
            (
                "beyond the table",
                true,
                true,
                wide(case.expected(Mechanism::LibraryBeyondTable)),
            ),
            ("bare", false, false, wide(case.without_shim())),
        ];
        for (what, preload, beyond, expected) in checks {
            let got = run(case, preload, beyond);
            let verdict = match &got {
                Ok(v) if *v == expected => "pass".to_string(),
                Ok(v) => format!("FAIL got {v:?}"),
                Err(e) => format!("FAIL {e}"),
            };
            eprintln!("{:<62} {what:<8} {verdict}", case.name);
            if got.as_ref() != Ok(&expected) {
                failures.push(format!(
                    "{} ({what}, args {:?}, env {:?}): expected {expected:?}, got {}",
                    case.name,
                    case.args(),
                    case.env,
                    match got {
                        Ok(v) => format!("{v:?}"),
                        Err(e) => e,
                    }
                ));
            }
        }
    }
    eprintln!(
        "{} rows in {:.2} s",
        CASES.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        3 * CASES.len(),
        failures.join("\n")
    );
}
