//! A rate per source for endpoints anyone may call that cost the server work, such as
//! the registry's TSA.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::admission::source_of;

/// Requests per source and minute, as a token bucket per source (a burst of a tenth of
/// a minute's worth, at least one). For endpoints anyone may call that cost the server
/// work, such as the TSA.
pub struct RateLimit {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Sources a rate limit remembers; past it, sources whose bucket is full are forgotten.
const MAX_RATE_SOURCES: usize = 65_536;

impl RateLimit {
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimit {
            per_minute: per_minute.max(1),
            buckets: Mutex::default(),
        }
    }

    fn burst(&self) -> f64 {
        (f64::from(self.per_minute) / 10.0).max(1.0)
    }

    /// Whether `peer` may make one more request at `now`.
    pub fn allow(&self, peer: IpAddr, now: Instant) -> bool {
        let burst = self.burst();
        let rate = f64::from(self.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_RATE_SOURCES {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(source_of(peer)).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_are_limited_per_source() {
        let limit = RateLimit::per_minute(60);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // A burst of six (a tenth of a minute's worth), then one a second.
        let allowed = (0..10).filter(|_| limit.allow(a, t0)).count();
        assert_eq!(allowed, 6);
        assert!(limit.allow(b, t0), "another source has its own bucket");
        assert!(!limit.allow(a, t0 + Duration::from_millis(500)));
        assert!(limit.allow(a, t0 + Duration::from_millis(1600)));
        assert!(!limit.allow(a, t0 + Duration::from_millis(1700)));
        // A whole minute later the burst is back, no more.
        let later = t0 + Duration::from_secs(70);
        assert_eq!((0..10).filter(|_| limit.allow(a, later)).count(), 6);
    }
}
