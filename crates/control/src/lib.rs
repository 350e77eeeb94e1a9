//! Admission control: whether a request may go now, and what it may spend.
//!
//! - [`budget`]: money budgets per key, project and environment. A request
//!   reserves its worst-case cost against every budget that applies, all or
//!   none, before it is forwarded; when its response ends it settles to the
//!   actual cost and releases the rest. Concurrent requests therefore never
//!   push spend past a budget, and finished requests never hold any of it.
//! - [`rate`]: per-key requests per minute and tokens per minute (GCRA, one
//!   atomic per limiter) and requests in flight (one atomic counter).
//! - [`anomaly`]: each key compared with its own recent past (request and
//!   token spikes, new client addresses, bursts of refused requests).
//!
//! - [`counters`]: one interface ([`Counters`]) over the counters above,
//!   with two implementations: [`LocalCounters`] (the in-memory code, each
//!   instance alone) and [`cluster::RedisCounters`] (shared by every
//!   instance of a cluster: one atomic Lua script per operation, leases on
//!   reservations and places in flight, spend rebuilt from the store).
//!
//! Invariants: apart from [`cluster`], this crate does no I/O and never
//! waits. The local request path
//! takes at most one short `std::sync::Mutex` per applicable budget (a few
//! integer operations, never across an `.await`); rate limiters are
//! lock-free. State is rebuilt from the store's ledger by the caller at start.

pub mod anomaly;
pub mod budget;
pub mod cluster;
pub mod counters;
pub mod rate;

pub use anomaly::{AnomalyConfig, Finding, KeyWatch};
pub use budget::{BudgetCell, BudgetStatus, Exhausted, Reservation, SpendChange, reserve};
pub use cluster::{BudgetSpend, RedisCounters, RedisSettings, SpendSource};
pub use counters::{
    Counters, Entered, Hold, Limiter, LocalCounters, Place, Refusal, SharedHold, Unavailable,
};
pub use rate::{InFlight, InFlightGuard, RateDenied, RateGrant, RateLimiter};
