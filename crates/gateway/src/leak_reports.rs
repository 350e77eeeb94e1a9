//! The per-address rate limit of leak reports, held in the gateway's
//! state and used by the unauthenticated leak-report endpoint
//! (`admin/self_service.rs`).

/// Leak reports accepted per client address per minute (GCRA, so a burst
/// of this many, then one every `60 s / limit`).
pub(crate) const LEAK_REPORTS_PER_MINUTE: u64 = 30;

/// Client addresses whose report rate is remembered at once. A full table
/// first forgets addresses idle for a minute (their allowance is whole
/// again, so forgetting them loses nothing); if none is, new addresses are
/// refused with 429 until one is.
const MAX_TRACKED_REPORTERS: usize = 10_000;

/// Per-client-address rate limit of leak reports. The endpoint needs no
/// credential, so this (with the size and count bounds) is what keeps a
/// flood of reports from filling the audit log.
#[expect(
    clippy::disallowed_types,
    reason = "one map operation per leak report, never across an await, never on the request path"
)]
#[derive(Debug)]
pub(crate) struct LeakReportLimiter {
    per_minute: u64,
    /// Each address's limiter and when it last reported (Unix ns). A
    /// `std::sync::Mutex`: held for one map operation, never across an
    /// `.await`, and only on this unauthenticated, rarely used endpoint.
    reporters: std::sync::Mutex<
        std::collections::HashMap<std::net::IpAddr, (keyforge_control::RateLimiter, i64)>,
    >,
}

impl LeakReportLimiter {
    #[expect(
        clippy::disallowed_types,
        reason = "the reporters' lock, explained at the field"
    )]
    pub(crate) fn new(per_minute: u64) -> Self {
        Self {
            per_minute,
            reporters: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Admits one report from `client` at `now_ns`, or says how long to wait.
    pub(crate) fn admit(
        &self,
        client: std::net::IpAddr,
        now_ns: i64,
    ) -> Result<(), std::time::Duration> {
        const MINUTE_NS: i64 = 60_000_000_000;
        let mut reporters = self
            .reporters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !reporters.contains_key(&client) && reporters.len() >= MAX_TRACKED_REPORTERS {
            reporters.retain(|_, (_, last)| now_ns.saturating_sub(*last) < MINUTE_NS);
            if reporters.len() >= MAX_TRACKED_REPORTERS {
                return Err(std::time::Duration::from_secs(60));
            }
        }
        let (limiter, last) = reporters
            .entry(client)
            .or_insert_with(|| (keyforge_control::RateLimiter::new(self.per_minute), now_ns));
        *last = now_ns;
        limiter
            .acquire(1, now_ns)
            .map(|_| ())
            .map_err(|denied| denied.retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_reports_are_limited_per_address() {
        let limiter = LeakReportLimiter::new(3);
        let one = std::net::IpAddr::from([10, 0, 0, 1]);
        let two = std::net::IpAddr::from([10, 0, 0, 2]);
        let t0 = 1_000_000_000_000_i64;
        for _ in 0..3 {
            assert!(limiter.admit(one, t0).is_ok());
        }
        let wait = limiter.admit(one, t0).unwrap_err();
        assert_eq!(wait, std::time::Duration::from_secs(20));
        assert!(
            limiter.admit(two, t0).is_ok(),
            "another address has its own allowance"
        );
        assert!(
            limiter.admit(one, t0 + 20_000_000_000).is_ok(),
            "one report's worth refills in 20 s"
        );
    }
}
