//! Rate limiting of failed authentication per source address: a token bucket that only failed
//! attempts drain, so a client guessing tokens gets 429 with `Retry-After` after a burst while
//! everyone who authenticates pays nothing but one branch.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures one address may make at once, and how many per second it earns back.
pub const BURST: f64 = 10.0;
pub const PER_SECOND: f64 = 10.0;
/// Addresses remembered before idle (refilled) ones are forgotten: bounds memory on a Pi.
const MAX_TRACKED: usize = 4096;

#[derive(Default)]
pub struct FailedAuthLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + earned).min(BURST);
        self.updated = now;
    }
}

impl FailedAuthLimiter {
    /// Records a failed attempt from `ip`: `Ok` while within the budget, else how long to wait.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| {
                bucket.refill(now);
                bucket.tokens < BURST
            });
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: BURST,
            updated: now,
        });
        bucket.refill(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / PER_SECOND;
            Err(Duration::from_secs_f64(wait))
        }
    }
}

/// upstream's 429 Status, with `Retry-After` in whole seconds (at least 1).
pub fn too_many_requests(wait: Duration) -> http::Response<axum::body::Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Too many failed authentication attempts, please try again later.",
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": wait.as_secs().max(1)},
        "code": 429,
    });
    let mut response = http::Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(wait.as_secs().max(1)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_is_allowed_then_refused_until_the_bucket_refills() {
        let limiter = FailedAuthLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for _ in 0..10 {
            assert!(limiter.failed(ip, start).is_ok());
        }
        let wait = limiter.failed(ip, start).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(
            limiter.failed(other, start).is_ok(),
            "others are not punished"
        );
        assert!(limiter
            .failed(ip, start + Duration::from_millis(150))
            .is_ok());
    }

    #[test]
    fn the_refusal_is_a_429_status_with_retry_after() {
        let response = too_many_requests(Duration::from_millis(300));
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    }
}
