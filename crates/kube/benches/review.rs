//! What one AdmissionReview costs the webhook, measured in one process: `review` of each
//! fixture, interleaved round by round with a baseline, reading the same body as JSON and
//! writing it back (the least any webhook does with a request); the medians of both, their
//! ratio with its interquartile range, and reviews per second on one core.
//!
//! `cargo bench -p keepalive-shim-kube --bench review` (prints one Markdown row per fixture).

use keepalive_shim_kube::{Config, review};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

const ROUNDS: usize = 200;
const PER_ROUND: usize = 50;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn quartiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 4], values[values.len() * 3 / 4])
}

/// Nanoseconds per call of `f`, over one block of `PER_ROUND` calls.
fn block(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_ROUND {
        f();
    }
    start.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let config = Config::default();
    println!(
        "| fixture | bytes | review (median) | baseline: JSON read + write | ratio (IQR) | reviews/s, one core |"
    );
    println!("|---|---|---|---|---|---|");
    for name in [
        "plain-replicaset",
        "several-containers",
        "bad-annotations",
        "already-injected",
    ] {
        let body = std::fs::read(fixtures.join(format!("{name}.json"))).unwrap();
        let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let run_review = || {
                black_box(review(black_box(&body), &config));
            };
            let run_base = || {
                let value: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
                black_box(serde_json::to_vec(&value).unwrap());
            };
            // Alternate which goes first, so warm caches favour neither.
            let (r, b) = if round % 2 == 0 {
                let r = block(run_review);
                (r, block(run_base))
            } else {
                let b = block(run_base);
                (block(run_review), b)
            };
            ours.push(r);
            base.push(b);
            ratios.push(r / b);
        }
        let review_ns = median(&mut ours);
        let base_ns = median(&mut base);
        let (low, high) = quartiles(&mut ratios);
        println!(
            "| {name} | {} | {:.1} µs | {:.1} µs | {:.2}× ({low:.2}–{high:.2}) | {:.0} |",
            body.len(),
            review_ns / 1000.0,
            base_ns / 1000.0,
            median(&mut ratios),
            1e9 / review_ns
        );
    }
}
