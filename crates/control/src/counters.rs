//! One interface for the counters admission reads and moves: budget
//! reservations, RPM/TPM limiters, places in flight.
//!
//! [`Counters`] has two implementations. [`LocalCounters`] is this crate's
//! in-memory code ([`crate::budget::reserve`], [`RateLimiter`],
//! [`InFlight`]): each instance counts alone, and it never waits.
//! [`crate::cluster::RedisCounters`] keeps the same counters in Redis, so
//! every instance of a cluster reads and moves one set of numbers (see that
//! module for the scripts and leases).
//!
//! Callers name each counter by the in-memory object the local
//! implementation moves and a stable name the shared one keys it by, so one
//! call site serves both.

use std::sync::Arc;

use keyforge_types::{BudgetId, BudgetLimit, BudgetScope, NanoUsd};
use time::OffsetDateTime;

use crate::budget::{BudgetCell, Exhausted, Reservation, SpendChange};
use crate::rate::{InFlight, InFlightGuard, RateDenied, RateGrant, RateLimiter};

/// The shared counters cannot be reached (Redis down, timed out, or it
/// answered with an error). The message names the failure, never a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared admission counters unavailable: {0}")]
pub struct Unavailable(pub String);

/// Why a request may not go now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A budget cannot cover the request's worst case.
    #[error(transparent)]
    Exhausted(Box<Exhausted>),
    /// Over an RPM or TPM limit.
    #[error("rate limit of {} per minute reached", .0.limit)]
    Rate(RateDenied),
    /// `max` requests are already in flight.
    #[error("{max} requests already in flight")]
    Full { max: u32 },
    #[error(transparent)]
    Unavailable(Unavailable),
}

/// One RPM or TPM limiter: the in-memory one, the name it is shared
/// under (unique per key and kind, e.g. `KEYID:rpm`) and the shared limit
/// (units per minute; the in-memory one may hold only this instance's
/// share of it).
#[derive(Debug, Clone, Copy)]
pub struct Limiter<'a> {
    pub name: &'a str,
    pub local: &'a RateLimiter,
    pub limit: u64,
}

/// One in-flight cap: the in-memory one, its shared name and the shared
/// maximum.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub name: &'a str,
    pub local: &'a Arc<InFlight>,
    pub max: u32,
}

/// Money held for one request, by whichever implementation reserved it.
/// A local hold frees itself when dropped; a shared one must be settled or
/// released, or it is freed when its lease expires.
#[derive(Debug)]
#[must_use = "a hold keeps budget until it is settled or released"]
pub enum Hold {
    Local(Reservation),
    Shared(SharedHold),
}

/// A reservation in the shared counters.
#[derive(Debug, Clone)]
pub struct SharedHold {
    /// Random, unique per reservation.
    pub(crate) id: String,
    pub(crate) amount: i64,
    pub(crate) budgets: Vec<(BudgetId, BudgetScope, BudgetLimit)>,
}

impl Hold {
    /// Nano-USD held.
    pub fn amount(&self) -> NanoUsd {
        match self {
            Self::Local(reservation) => reservation.amount(),
            Self::Shared(hold) => NanoUsd(hold.amount),
        }
    }
}

/// A place in flight, taken from whichever implementation.
#[derive(Debug)]
#[must_use = "the place is held until it is left (or its lease expires)"]
pub enum Entered {
    Local(InFlightGuard),
    Shared { name: String, id: String },
}

/// The counters admission moves. Every method answers in one step: the
/// local implementation without waiting, the shared one in one Redis round
/// trip (one atomic script).
#[async_trait::async_trait]
pub trait Counters: Send + Sync + std::fmt::Debug {
    /// Reserves `amount` against every budget in `cells` (sorted by id, no
    /// duplicates), or none of them.
    async fn reserve(
        &self,
        cells: &[Arc<BudgetCell>],
        amount: NanoUsd,
        now: OffsetDateTime,
    ) -> Result<Hold, Refusal>;

    /// Replaces the hold by the actual cost in the period current at `now`.
    async fn settle(
        &self,
        hold: Hold,
        actual: NanoUsd,
        now: OffsetDateTime,
    ) -> Result<Vec<SpendChange>, Unavailable>;

    /// Gives the whole hold back (the request cost nothing).
    async fn release(&self, hold: Hold) -> Result<(), Unavailable>;

    /// Takes `cost` units from a limiter at `now_ns` (Unix nanoseconds).
    async fn acquire(
        &self,
        limiter: Limiter<'_>,
        cost: u64,
        now_ns: i64,
    ) -> Result<RateGrant, Refusal>;

    /// Corrects an earlier take by `delta` units (negative gives back).
    async fn adjust(
        &self,
        limiter: Limiter<'_>,
        delta: i64,
        now_ns: i64,
    ) -> Result<(), Unavailable>;

    /// Takes a place in flight.
    async fn enter(&self, place: Place<'_>, now_ns: i64) -> Result<Entered, Refusal>;

    /// Leaves a place taken by [`Counters::enter`].
    async fn leave(&self, entered: Entered) -> Result<(), Unavailable>;
}

/// Today's in-memory counters: each instance counts alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalCounters;

#[async_trait::async_trait]
impl Counters for LocalCounters {
    async fn reserve(
        &self,
        cells: &[Arc<BudgetCell>],
        amount: NanoUsd,
        now: OffsetDateTime,
    ) -> Result<Hold, Refusal> {
        crate::budget::reserve(cells, amount, now)
            .map(Hold::Local)
            .map_err(Refusal::Exhausted)
    }

    async fn settle(
        &self,
        hold: Hold,
        actual: NanoUsd,
        now: OffsetDateTime,
    ) -> Result<Vec<SpendChange>, Unavailable> {
        match hold {
            Hold::Local(reservation) => Ok(reservation.settle(actual, now)),
            Hold::Shared(_) => Err(Unavailable(
                "a shared reservation cannot be settled by the local counters".into(),
            )),
        }
    }

    async fn release(&self, hold: Hold) -> Result<(), Unavailable> {
        drop(hold);
        Ok(())
    }

    async fn acquire(
        &self,
        limiter: Limiter<'_>,
        cost: u64,
        now_ns: i64,
    ) -> Result<RateGrant, Refusal> {
        limiter.local.acquire(cost, now_ns).map_err(Refusal::Rate)
    }

    async fn adjust(
        &self,
        limiter: Limiter<'_>,
        delta: i64,
        now_ns: i64,
    ) -> Result<(), Unavailable> {
        limiter.local.adjust(delta, now_ns);
        Ok(())
    }

    async fn enter(&self, place: Place<'_>, _now_ns: i64) -> Result<Entered, Refusal> {
        place
            .local
            .try_acquire()
            .map(Entered::Local)
            .ok_or(Refusal::Full {
                max: place.local.max(),
            })
    }

    async fn leave(&self, entered: Entered) -> Result<(), Unavailable> {
        drop(entered);
        Ok(())
    }
}
