//! Per-key rate limits: requests per minute, tokens per minute, requests in
//! flight.
//!
//! RPM and TPM use GCRA (the generic cell rate algorithm): one atomic
//! "theoretical arrival time" per limiter. Each request pushes it forward by
//! its cost (one request, or its token estimate) times `60 s / limit`; a
//! request is admitted while that time stays within a minute of now. This
//! allows a full minute's allowance in a burst, then a steady rate, with no
//! window edges to game and no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

/// The window every limit is expressed over.
pub(crate) const WINDOW_NS: i64 = 60_000_000_000;

/// A request-or-token rate limit over one minute.
#[derive(Debug)]
pub struct RateLimiter {
    /// Units (requests or tokens) per minute.
    limit: u64,
    /// Theoretical arrival time, Unix nanoseconds: when the limiter would
    /// be empty again.
    tat_ns: AtomicI64,
}

/// Admitted; what OpenAI-style `x-ratelimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGrant {
    pub limit: u64,
    pub remaining: u64,
    /// Until the limiter is back to its full allowance.
    pub reset: Duration,
}

/// Refused: retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDenied {
    pub limit: u64,
    pub remaining: u64,
    pub retry_after: Duration,
    pub reset: Duration,
    /// The request alone costs more than a minute's allowance: it can never
    /// be admitted.
    pub too_large: bool,
}

pub(crate) fn nanos(duration_ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(duration_ns).unwrap_or(0))
}

impl RateLimiter {
    /// `limit` units per minute; zero is treated as one.
    pub fn new(limit: u64) -> Self {
        Self {
            limit: limit.max(1),
            tat_ns: AtomicI64::new(i64::MIN),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How far `cost` units push the arrival time.
    pub(crate) fn increment(&self, cost: u64) -> i64 {
        let ns = i128::from(cost) * i128::from(WINDOW_NS) / i128::from(self.limit);
        i64::try_from(ns).unwrap_or(i64::MAX)
    }

    pub(crate) fn remaining(&self, tat_ns: i64, now_ns: i64) -> u64 {
        let used = tat_ns.saturating_sub(now_ns).max(0);
        let free = WINDOW_NS.saturating_sub(used).max(0);
        let units = i128::from(free) * i128::from(self.limit) / i128::from(WINDOW_NS);
        u64::try_from(units).unwrap_or(0)
    }

    /// Admits `cost` units at `now_ns` (Unix nanoseconds) or says when to
    /// retry.
    pub fn acquire(&self, cost: u64, now_ns: i64) -> Result<RateGrant, RateDenied> {
        let increment = self.increment(cost);
        let mut tat = self.tat_ns.load(Ordering::Acquire);
        loop {
            let base = tat.max(now_ns);
            let new_tat = base.saturating_add(increment);
            let used = new_tat.saturating_sub(now_ns);
            if used > WINDOW_NS {
                return Err(RateDenied {
                    limit: self.limit,
                    remaining: self.remaining(tat, now_ns),
                    retry_after: nanos(used - WINDOW_NS),
                    reset: nanos(tat.saturating_sub(now_ns)),
                    too_large: increment > WINDOW_NS,
                });
            }
            match self.tat_ns.compare_exchange_weak(
                tat,
                new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(RateGrant {
                        limit: self.limit,
                        remaining: self.remaining(new_tat, now_ns),
                        reset: nanos(used),
                    });
                }
                Err(current) => tat = current,
            }
        }
    }

    /// Corrects an earlier estimate: `delta` more units (or fewer, when
    /// negative) were used than acquired.
    pub fn adjust(&self, delta: i64, now_ns: i64) {
        if delta == 0 {
            return;
        }
        let magnitude = self.increment(delta.unsigned_abs());
        let mut tat = self.tat_ns.load(Ordering::Acquire);
        loop {
            let new_tat = if delta > 0 {
                tat.max(now_ns).saturating_add(magnitude)
            } else {
                // Never give back time that has already passed.
                tat.saturating_sub(magnitude).max(now_ns.min(tat))
            };
            match self.tat_ns.compare_exchange_weak(
                tat,
                new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(current) => tat = current,
            }
        }
    }

    /// Replays a past request (rebuilding state after a restart); always
    /// admitted.
    pub fn replay(&self, cost: u64, at_ns: i64) {
        let increment = self.increment(cost);
        let _ = self
            .tat_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(at_ns).saturating_add(increment))
            });
    }
}

/// A cap on requests in flight.
#[derive(Debug)]
pub struct InFlight {
    max: u32,
    current: AtomicU32,
}

/// One request in flight; dropping it frees its place.
#[derive(Debug)]
#[must_use = "the place is freed when the guard is dropped"]
pub struct InFlightGuard {
    counter: Arc<InFlight>,
}

impl InFlight {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            current: AtomicU32::new(0),
        })
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// A place, or `None` when `max` requests are in flight.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlightGuard> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current < self.max).then_some(current + 1)
            })
            .ok()
            .map(|_| InFlightGuard {
                counter: self.clone(),
            })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.counter.current.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    const T0: i64 = 1_800_000_000 * SECOND;

    #[test]
    fn a_minute_of_requests_then_a_steady_rate() {
        let rpm = RateLimiter::new(60);
        for n in 0..60 {
            let grant = rpm.acquire(1, T0).unwrap();
            assert_eq!(grant.remaining, 59 - n);
        }
        let denied = rpm.acquire(1, T0).unwrap_err();
        assert_eq!(denied.retry_after, Duration::from_secs(1));
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.reset, Duration::from_secs(60));
        assert!(!denied.too_large);
        // One request a second comes back.
        assert!(rpm.acquire(1, T0 + SECOND / 2).is_err());
        assert!(rpm.acquire(1, T0 + SECOND).is_ok());
        assert!(rpm.acquire(1, T0 + SECOND).is_err());
        // A quiet minute refills the whole allowance.
        let grant = rpm.acquire(1, T0 + 61 * SECOND).unwrap();
        assert_eq!(grant.remaining, 59);
    }

    #[test]
    fn tokens_are_weighted_and_corrected() {
        let tpm = RateLimiter::new(1000);
        assert_eq!(tpm.acquire(600, T0).unwrap().remaining, 400);
        let denied = tpm.acquire(600, T0).unwrap_err();
        // 200 tokens short: 200 / 1000 of a minute.
        assert_eq!(denied.retry_after, Duration::from_secs(12));
        // The first request used only 100 tokens: 500 come back.
        tpm.adjust(-500, T0);
        assert_eq!(tpm.acquire(600, T0).unwrap().remaining, 300);
        // A request bigger than a minute's allowance can never pass.
        assert!(tpm.acquire(1001, T0 + 3600 * SECOND).unwrap_err().too_large);
        // Using more than estimated takes from what is left.
        let fresh = RateLimiter::new(1000);
        fresh.acquire(100, T0).unwrap();
        fresh.adjust(800, T0);
        assert!(fresh.acquire(101, T0).is_err());
        assert!(fresh.acquire(100, T0).is_ok());
    }

    #[test]
    fn refunds_never_go_below_now() {
        let tpm = RateLimiter::new(1000);
        tpm.acquire(1000, T0).unwrap();
        // Long after, a huge refund cannot create more than a full minute.
        tpm.adjust(-1_000_000, T0 + 120 * SECOND);
        assert_eq!(tpm.acquire(1000, T0 + 120 * SECOND).unwrap().remaining, 0);
        assert!(tpm.acquire(1, T0 + 120 * SECOND).is_err());
    }

    #[test]
    fn replayed_history_counts() {
        let rpm = RateLimiter::new(3);
        rpm.replay(1, T0 - 10 * SECOND);
        rpm.replay(1, T0 - 5 * SECOND);
        rpm.replay(1, T0 - SECOND);
        // Three requests in the last minute: the fourth waits.
        assert!(rpm.acquire(1, T0).is_err());
        assert!(rpm.acquire(1, T0 + 10 * SECOND).is_ok());
    }

    #[test]
    fn concurrent_acquires_admit_exactly_the_limit() {
        let rpm = Arc::new(RateLimiter::new(1000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let rpm = rpm.clone();
                std::thread::spawn(move || (0..500).filter(|_| rpm.acquire(1, T0).is_ok()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 1000);
    }

    #[test]
    fn in_flight_places_are_returned() {
        let in_flight = InFlight::new(2);
        let a = in_flight.try_acquire().unwrap();
        let b = in_flight.try_acquire().unwrap();
        assert!(in_flight.try_acquire().is_none());
        drop(a);
        let c = in_flight.try_acquire().unwrap();
        assert_eq!(in_flight.current(), 2);
        drop((b, c));
        assert_eq!(in_flight.current(), 0);
    }
}
