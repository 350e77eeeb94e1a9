//! Admission counters shared by every instance of a cluster, in Redis.
//!
//! Each operation is one Lua script, which Redis runs atomically:
//! - **reserve** checks `spent + reserved + amount <= limit` for every
//!   budget of the request and, only if all pass, adds the reservation to
//!   each (all or nothing). A reservation is a member of the budget's lease
//!   set with an expiry (`lease`, 5 minutes by default): one left by an
//!   instance that crashed is purged by the next script that touches the
//!   budget (a reservation, or a read of its **status**), instead of
//!   holding the budget for ever.
//! - **settle** removes the reservation and adds the actual cost to the
//!   spend of the period current at settlement; **release** only removes it.
//! - **rate** is GCRA, as [`crate::rate`], over one theoretical arrival
//!   time per limiter in microseconds; **adjust** corrects a TPM estimate.
//! - **enter** adds a lease to a key's in-flight set if it holds fewer
//!   than `max` live ones; **leave** removes it.
//!
//! Spend is rebuilt from the store: a marker key is written with the spend
//! of every budget's current period ([`SpendSource`]); a script that finds
//! the marker missing (Redis restarted empty, or was flushed) answers so,
//! and the caller rebuilds once and retries. While the marker is missing,
//! settlements release their reservations but add no spend: the store's
//! ledger, which the rebuild reads, already counts them.
//!
//! Keys (all under the configured prefix): `marker`,
//! `spent:BUDGET:PERIODSTARTMS`, `reserved:BUDGET`, `leases:BUDGET` (sorted
//! set, score = expiry in Unix ms), `held:BUDGET` (hash, reservation id ->
//! nano-USD), `rate:NAME`, `flight:NAME`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use keyforge_types::{BudgetId, BudgetLimit, NanoUsd, Period, random_base62};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation};
use time::OffsetDateTime;

use crate::budget::{BudgetCell, BudgetStatus, Exhausted, SpendChange, from_ms, period_bounds};
use crate::counters::{Counters, Entered, Hold, Limiter, Place, Refusal, SharedHold, Unavailable};
use crate::rate::{RateDenied, RateGrant, WINDOW_NS, nanos};

/// How long a reservation or a place in flight lives unless settled first.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

const RESERVE: &str = r"
-- KEYS[1] marker; per budget: spent, reserved, leases, held
-- ARGV: id, amount, now_ms, expires_ms, then one limit per budget
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local amount = tonumber(ARGV[2])
local now = ARGV[3]
local n = (#KEYS - 1) / 4
for i = 0, n - 1 do
  local b = 2 + i * 4
  local stale = redis.call('ZRANGEBYSCORE', KEYS[b + 2], '-inf', now)
  for _, rid in ipairs(stale) do
    local held = redis.call('HGET', KEYS[b + 3], rid)
    if held then
      redis.call('DECRBY', KEYS[b + 1], held)
      redis.call('HDEL', KEYS[b + 3], rid)
    end
  end
  if #stale > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[b + 2], '-inf', now) end
  local spent = tonumber(redis.call('GET', KEYS[b]) or '0')
  local reserved = tonumber(redis.call('GET', KEYS[b + 1]) or '0')
  if spent + reserved + amount > tonumber(ARGV[5 + i]) then
    return {i + 1, spent, reserved}
  end
end
for i = 0, n - 1 do
  local b = 2 + i * 4
  redis.call('INCRBY', KEYS[b + 1], ARGV[2])
  redis.call('ZADD', KEYS[b + 2], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[b + 3], ARGV[1], ARGV[2])
end
return {0}
";

const SETTLE: &str = r"
-- KEYS[1] marker; per budget: spent, reserved, leases, held
-- ARGV: id, actual, count ('1' settle, '0' release), then one spend TTL (ms, 0 none) per budget
local counted = ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 1
local out = {counted and 1 or 0}
local n = (#KEYS - 1) / 4
for i = 0, n - 1 do
  local b = 2 + i * 4
  local held = redis.call('HGET', KEYS[b + 3], ARGV[1])
  if held then
    redis.call('DECRBY', KEYS[b + 1], held)
    redis.call('HDEL', KEYS[b + 3], ARGV[1])
    redis.call('ZREM', KEYS[b + 2], ARGV[1])
  end
  if counted then
    out[#out + 1] = redis.call('INCRBY', KEYS[b], ARGV[2])
    local ttl = tonumber(ARGV[4 + i])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[b], ttl) end
  end
end
return out
";

const REBUILD: &str = r"
-- KEYS[1] marker, then spent keys; ARGV: one spend per key, one TTL (ms, 0 none) per key, the marker's value
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = #KEYS - 1
for i = 1, n do
  redis.call('SET', KEYS[i + 1], ARGV[i])
  local ttl = tonumber(ARGV[n + i])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i + 1], ttl) end
end
redis.call('SET', KEYS[1], ARGV[2 * n + 1])
return 1
";

const RATE: &str = r"
-- KEYS[1] theoretical arrival time (Unix us); ARGV: now_us, increment_us, window_us
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = math.max(tat, now) + tonumber(ARGV[2])
if new - now > tonumber(ARGV[3]) then return {0, math.max(tat, now)} end
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.max(1, math.ceil((new - now) / 1000)))
return {1, new}
";

const ADJUST: &str = r"
-- KEYS[1] theoretical arrival time (Unix us); ARGV: now_us, delta_us (signed)
local now = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new
if delta > 0 then new = math.max(tat, now) + delta else new = math.max(tat + delta, math.min(now, tat)) end
if new > now then
  redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.max(1, math.ceil((new - now) / 1000)))
else
  redis.call('DEL', KEYS[1])
end
return 1
";

const ENTER: &str = r"
-- KEYS[1] lease set; ARGV: id, now_ms, expires_ms, max, lease_ms
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

const STATUS: &str = r"
-- KEYS: spent, reserved, leases, held of one budget; ARGV: now_ms
-- Purges expired reservations first (as reserve does), so what a budget
-- shows as held never counts an instance that died.
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, rid in ipairs(stale) do
  local held = redis.call('HGET', KEYS[4], rid)
  if held then
    redis.call('DECRBY', KEYS[2], held)
    redis.call('HDEL', KEYS[4], rid)
  end
end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1]) end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(redis.call('GET', KEYS[2]) or '0')}
";

static SCRIPTS: LazyLock<[Script; 7]> =
    LazyLock::new(|| [RESERVE, SETTLE, REBUILD, RATE, ADJUST, ENTER, STATUS].map(Script::new));

#[derive(Clone, Copy)]
enum Op {
    Reserve = 0,
    Settle = 1,
    Rebuild = 2,
    Rate = 3,
    Adjust = 4,
    Enter = 5,
    Status = 6,
}

fn script(op: Op) -> &'static Script {
    &SCRIPTS[op as usize]
}

/// One budget's settled spend in its current period, from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpend {
    pub id: BudgetId,
    pub limit: BudgetLimit,
    pub spent: NanoUsd,
}

/// Where spend is rebuilt from when Redis lost it: the store's ledger, the
/// same figures the in-memory budgets are built from at start.
#[async_trait::async_trait]
pub trait SpendSource: Send + Sync + std::fmt::Debug {
    /// Every budget's spend in the period containing `now`.
    async fn current_spend(&self, now: OffsetDateTime) -> Result<Vec<BudgetSpend>, String>;
}

/// How to reach Redis and name keys in it.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Put before every key (`keyforge:` by default), so one Redis can
    /// serve several clusters or tests.
    pub prefix: String,
    /// Lifetime of a reservation or a place in flight that is never
    /// settled (an instance that crashed).
    pub lease: Duration,
    /// How long one call may wait for Redis before the request is answered
    /// as if Redis were down.
    pub timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            prefix: "keyforge:".into(),
            lease: DEFAULT_LEASE,
            timeout: Duration::from_millis(500),
        }
    }
}

/// Admission counters in Redis; see the module documentation.
pub struct RedisCounters {
    connection: ConnectionManager,
    settings: RedisSettings,
    source: Arc<dyn SpendSource>,
    /// Whether the last call reached Redis: logged when it changes, shown
    /// by the gateway's status.
    reachable: AtomicBool,
}

impl std::fmt::Debug for RedisCounters {
    /// The connection (and so the URL and its password) is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("settings", &self.settings)
            .field("reachable", &self.reachable)
            .finish_non_exhaustive()
    }
}

fn to_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// How long a period's spend key is kept (ms from `now_ms`, on the
/// caller's clock, so a skew between it and Redis's does not matter): until
/// a day after the period ends; 0 (for ever) for `total`.
fn spend_ttl(limit: BudgetLimit, period_end_ms: i64, now_ms: i64) -> i64 {
    if limit.period == Period::Total || period_end_ms == i64::MAX {
        0
    } else {
        period_end_ms
            .saturating_add(86_400_000)
            .saturating_sub(now_ms)
            .max(1)
    }
}

impl RedisCounters {
    /// Counters at `url` (`redis://[:password@]host:port[/db]`). Connects
    /// lazily and reconnects by itself; a bad URL is refused here, an
    /// unreachable server only when a call needs it.
    pub fn new(
        url: &str,
        settings: RedisSettings,
        source: Arc<dyn SpendSource>,
    ) -> Result<Self, Unavailable> {
        let client = redis::Client::open(url).map_err(|_| {
            Unavailable(
                "the Redis URL is not valid (expected redis://[:password@]host:port[/db])".into(),
            )
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| Unavailable(format!("cannot set up the Redis client: {error}")))?;
        Ok(Self {
            connection,
            settings,
            source,
            reachable: AtomicBool::new(true),
        })
    }

    /// Whether the last call reached Redis.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.settings.prefix)
    }

    fn marker(&self) -> String {
        format!("{}marker", self.settings.prefix)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Runs one script, noting whether Redis answered.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut connection = self.connection.clone();
        let outcome = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<T>(&mut connection),
        )
        .await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Unavailable(error.to_string())),
            Err(_) => Err(Unavailable(format!(
                "Redis did not answer within {} ms",
                self.settings.timeout.as_millis()
            ))),
        };
        match &result {
            Ok(_) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!("redis reachable again: admission counters are shared");
                }
            }
            Err(error) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %error.0, "redis unreachable: admission follows [redis] on_unavailable until it is back");
                }
            }
        }
        result
    }

    /// Writes every budget's spend from the store and the marker, unless
    /// the marker is there already (another instance rebuilt first).
    /// Returns whether this call rebuilt.
    pub async fn rebuild(&self, now: OffsetDateTime) -> Result<bool, Unavailable> {
        let figures = self.source.current_spend(now).await.map_err(|error| {
            Unavailable(format!(
                "cannot read spend from the store to rebuild Redis: {error}"
            ))
        })?;
        let mut invocation = script(Op::Rebuild).prepare_invoke();
        invocation.key(self.marker());
        let mut expiries = Vec::with_capacity(figures.len());
        for figure in &figures {
            let (start, end) = period_bounds(figure.limit.period, now);
            invocation.key(self.key("spent", &format!("{}:{start}", figure.id)));
            expiries.push(spend_ttl(figure.limit, end, to_ms(now)));
        }
        for figure in &figures {
            invocation.arg(figure.spent.0);
        }
        for expiry in expiries {
            invocation.arg(expiry);
        }
        invocation.arg(to_ms(now));
        let rebuilt: i64 = self.run(&invocation).await?;
        if rebuilt == 1 {
            tracing::info!(
                budgets = figures.len(),
                "redis spend rebuilt from the store"
            );
        }
        Ok(rebuilt == 1)
    }

    /// A budget's totals as the cluster sees them: the shared spend of
    /// its current period and what requests in flight on every instance
    /// hold. Expired reservations (an instance that died before settling)
    /// are purged first, so they stop showing once their lease is over
    /// even while no request touches the budget.
    pub async fn status(
        &self,
        cell: &BudgetCell,
        now: OffsetDateTime,
    ) -> Result<BudgetStatus, Unavailable> {
        let mut status = cell.status(now);
        let mut invocation = script(Op::Status).prepare_invoke();
        self.budget_keys(&mut invocation, cell.id(), to_ms(status.period_start));
        invocation.arg(to_ms(now));
        let answer: Vec<i64> = self.run(&invocation).await?;
        let value = |index: usize| answer.get(index).copied().unwrap_or(0);
        status.spent = NanoUsd(value(0));
        status.reserved = NanoUsd(value(1).max(0));
        Ok(status)
    }

    fn budget_keys(&self, invocation: &mut ScriptInvocation<'_>, id: &BudgetId, start_ms: i64) {
        invocation
            .key(self.key("spent", &format!("{id}:{start_ms}")))
            .key(self.key("reserved", id.as_str()))
            .key(self.key("leases", id.as_str()))
            .key(self.key("held", id.as_str()));
    }

    async fn try_reserve(
        &self,
        cells: &[Arc<BudgetCell>],
        limits: &[BudgetLimit],
        id: &str,
        amount: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, Unavailable> {
        let now_ms = to_ms(now);
        let mut invocation = script(Op::Reserve).prepare_invoke();
        invocation.key(self.marker());
        for (cell, limit) in cells.iter().zip(limits) {
            let (start, _) = period_bounds(limit.period, now);
            self.budget_keys(&mut invocation, cell.id(), start);
        }
        invocation
            .arg(id)
            .arg(amount)
            .arg(now_ms)
            .arg(now_ms.saturating_add(self.lease_ms()));
        for limit in limits {
            invocation.arg(limit.amount.0);
        }
        self.run(&invocation).await
    }

    async fn finish(
        &self,
        hold: &SharedHold,
        actual: i64,
        count: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<i64>, Unavailable> {
        let mut invocation = script(Op::Settle).prepare_invoke();
        invocation.key(self.marker());
        let mut expiries = Vec::with_capacity(hold.budgets.len());
        for (id, _, limit) in &hold.budgets {
            let (start, end) = period_bounds(limit.period, now);
            self.budget_keys(&mut invocation, id, start);
            expiries.push(spend_ttl(*limit, end, to_ms(now)));
        }
        invocation
            .arg(&hold.id)
            .arg(actual)
            .arg(if count { "1" } else { "0" });
        for expiry in expiries {
            invocation.arg(expiry);
        }
        self.run(&invocation).await
    }

    fn rate_key(&self, limiter: Limiter<'_>) -> String {
        self.key("rate", limiter.name)
    }
}

#[async_trait::async_trait]
impl Counters for RedisCounters {
    async fn reserve(
        &self,
        cells: &[Arc<BudgetCell>],
        amount: NanoUsd,
        now: OffsetDateTime,
    ) -> Result<Hold, Refusal> {
        let amount = amount.0.max(0);
        let limits: Vec<BudgetLimit> = cells.iter().map(|cell| cell.limit()).collect();
        let id = random_base62(20);
        let mut answer = self
            .try_reserve(cells, &limits, &id, amount, now)
            .await
            .map_err(Refusal::Unavailable)?;
        if answer.first() == Some(&-1) {
            // Redis lost its data: rebuild spend from the store, once.
            self.rebuild(now).await.map_err(Refusal::Unavailable)?;
            answer = self
                .try_reserve(cells, &limits, &id, amount, now)
                .await
                .map_err(Refusal::Unavailable)?;
        }
        match answer.as_slice() {
            [0] => Ok(Hold::Shared(SharedHold {
                id,
                amount,
                budgets: cells
                    .iter()
                    .zip(&limits)
                    .map(|(cell, limit)| (cell.id().clone(), cell.scope().clone(), *limit))
                    .collect(),
            })),
            [index, spent, reserved] if *index >= 1 => {
                let position = usize::try_from(*index - 1).unwrap_or(0);
                let (Some(cell), Some(limit)) = (cells.get(position), limits.get(position)) else {
                    return Err(Refusal::Unavailable(Unavailable(
                        "Redis answered a reservation with an unknown budget".into(),
                    )));
                };
                let (start, end) = period_bounds(limit.period, now);
                let first_in_period = cell.note_refusal(start);
                cell.observe_spent(start, NanoUsd(*spent), now);
                Err(Refusal::Exhausted(Box::new(Exhausted {
                    status: BudgetStatus {
                        id: cell.id().clone(),
                        scope: cell.scope().clone(),
                        limit: *limit,
                        period_start: from_ms(start),
                        resets_at: (end != i64::MAX).then(|| from_ms(end)),
                        spent: NanoUsd(*spent),
                        reserved: NanoUsd(*reserved),
                    },
                    needed: NanoUsd(amount),
                    first_in_period,
                })))
            }
            _ => Err(Refusal::Unavailable(Unavailable(
                "Redis answered a reservation in an unexpected shape (is the marker key being rebuilt?)".into(),
            ))),
        }
    }

    async fn settle(
        &self,
        hold: Hold,
        actual: NanoUsd,
        now: OffsetDateTime,
    ) -> Result<Vec<SpendChange>, Unavailable> {
        let hold = match hold {
            Hold::Shared(hold) => hold,
            Hold::Local(reservation) => return Ok(reservation.settle(actual, now)),
        };
        let actual = actual.0.max(0);
        let answer = self.finish(&hold, actual, true, now).await?;
        if answer.first() != Some(&1) || actual == 0 {
            return Ok(Vec::new());
        }
        Ok(hold
            .budgets
            .iter()
            .zip(answer.iter().skip(1))
            .map(|((id, scope, limit), after)| SpendChange {
                id: id.clone(),
                scope: scope.clone(),
                limit: *limit,
                period_start_ms: period_bounds(limit.period, now).0,
                before: after.saturating_sub(actual),
                after: *after,
            })
            .collect())
    }

    async fn release(&self, hold: Hold) -> Result<(), Unavailable> {
        match hold {
            Hold::Shared(hold) => self
                .finish(&hold, 0, false, OffsetDateTime::now_utc())
                .await
                .map(drop),
            Hold::Local(reservation) => {
                drop(reservation);
                Ok(())
            }
        }
    }

    async fn acquire(
        &self,
        limiter: Limiter<'_>,
        cost: u64,
        now_ns: i64,
    ) -> Result<RateGrant, Refusal> {
        // The shared limit's arithmetic (the in-memory limiter may hold
        // only this instance's share).
        let shared = crate::rate::RateLimiter::new(limiter.limit);
        let local = &shared;
        let increment_ns = local.increment(cost);
        let now_us = now_ns / 1000;
        let mut invocation = script(Op::Rate).prepare_invoke();
        invocation
            .key(self.rate_key(limiter))
            .arg(now_us)
            .arg(increment_ns.saturating_add(999) / 1000)
            .arg(WINDOW_NS / 1000);
        let answer: Vec<i64> = self.run(&invocation).await.map_err(Refusal::Unavailable)?;
        let now_ns = now_us.saturating_mul(1000);
        match answer.as_slice() {
            [1, tat_us] => {
                let tat_ns = tat_us.saturating_mul(1000);
                Ok(RateGrant {
                    limit: local.limit(),
                    remaining: local.remaining(tat_ns, now_ns),
                    reset: nanos(tat_ns.saturating_sub(now_ns)),
                })
            }
            [0, base_us] => {
                let base_ns = base_us.saturating_mul(1000);
                let used = base_ns.saturating_add(increment_ns).saturating_sub(now_ns);
                Err(Refusal::Rate(RateDenied {
                    limit: local.limit(),
                    remaining: local.remaining(base_ns, now_ns),
                    retry_after: nanos(used.saturating_sub(WINDOW_NS)),
                    reset: nanos(base_ns.saturating_sub(now_ns)),
                    too_large: increment_ns > WINDOW_NS,
                }))
            }
            _ => Err(Refusal::Unavailable(Unavailable(
                "Redis answered a rate limit in an unexpected shape".into(),
            ))),
        }
    }

    async fn adjust(
        &self,
        limiter: Limiter<'_>,
        delta: i64,
        now_ns: i64,
    ) -> Result<(), Unavailable> {
        if delta == 0 {
            return Ok(());
        }
        let magnitude_us =
            crate::rate::RateLimiter::new(limiter.limit).increment(delta.unsigned_abs()) / 1000;
        let signed = if delta > 0 {
            magnitude_us
        } else {
            -magnitude_us
        };
        let mut invocation = script(Op::Adjust).prepare_invoke();
        invocation
            .key(self.rate_key(limiter))
            .arg(now_ns / 1000)
            .arg(signed);
        self.run::<i64>(&invocation).await.map(drop)
    }

    async fn enter(&self, place: Place<'_>, now_ns: i64) -> Result<Entered, Refusal> {
        let now_ms = now_ns / 1_000_000;
        let id = random_base62(20);
        let name = self.key("flight", place.name);
        let mut invocation = script(Op::Enter).prepare_invoke();
        invocation
            .key(&name)
            .arg(&id)
            .arg(now_ms)
            .arg(now_ms.saturating_add(self.lease_ms()))
            .arg(place.max.max(1))
            .arg(self.lease_ms());
        let entered: i64 = self.run(&invocation).await.map_err(Refusal::Unavailable)?;
        if entered == 1 {
            Ok(Entered::Shared { name, id })
        } else {
            Err(Refusal::Full { max: place.max })
        }
    }

    async fn leave(&self, entered: Entered) -> Result<(), Unavailable> {
        let Entered::Shared { name, id } = entered else {
            return Ok(());
        };
        let mut connection = self.connection.clone();
        let removed = tokio::time::timeout(
            self.settings.timeout,
            redis::cmd("ZREM")
                .arg(&name)
                .arg(&id)
                .query_async::<i64>(&mut connection),
        )
        .await;
        match removed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Unavailable(error.to_string())),
            Err(_) => Err(Unavailable("Redis did not answer in time".into())),
        }
    }
}
