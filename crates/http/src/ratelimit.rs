//! exporter-toolkit's `rate_limit`: a token bucket of `burst` tokens refilled one per
//! `interval`, shared by all clients; a request that finds it empty gets 429.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One token per `interval`, at most `burst` saved up.
#[derive(Clone, Debug)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    bucket: Arc<Mutex<(f64, Instant)>>,
}

impl RateLimit {
    /// `None` when `interval` is zero (no limit), as in exporter-toolkit. A zero burst lets
    /// nothing through, so it is refused.
    pub fn new(interval: Duration, burst: u32) -> Result<Option<RateLimit>, String> {
        if interval.is_zero() {
            return Ok(None);
        }
        if burst == 0 {
            return Err("rate_limit.burst: 0 would refuse every request; give 1 or more".into());
        }
        Ok(Some(RateLimit {
            interval,
            burst,
            bucket: Arc::new(Mutex::new((f64::from(burst), Instant::now()))),
        }))
    }

    /// Takes a token if there is one.
    pub(crate) fn allow(&self) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            return true;
        };
        let now = Instant::now();
        let earned = now.duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        bucket.0 = (bucket.0 + earned).min(f64::from(self.burst));
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whole seconds until a token is due, for `Retry-After`.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.interval.as_secs().max(1)
    }
}

/// A Go duration (`1s`, `500ms`, `1m30s`, `1.5h`; units ns, us, µs, ms, s, m, h) as
/// exporter-toolkit's YAML takes it; `None` when it is not one.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let number: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = after;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "1", "s", "1x", "-1s", "1..2s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_bucket_empties_and_refills() {
        let limit = RateLimit::new(Duration::from_millis(100), 2)
            .unwrap()
            .unwrap();
        assert!(limit.allow());
        assert!(limit.allow());
        assert!(!limit.allow());
        std::thread::sleep(Duration::from_millis(120));
        assert!(limit.allow());
        assert!(RateLimit::new(Duration::ZERO, 0).unwrap().is_none());
        assert!(RateLimit::new(Duration::from_secs(1), 0).is_err());
    }
}
