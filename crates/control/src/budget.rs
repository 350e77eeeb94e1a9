//! Budgets that hold under concurrency: reserve the worst case, settle to
//! the actual cost.
//!
//! Each budget is a [`BudgetCell`]: the period it is counting, what settled
//! requests spent in it, and what requests in flight have reserved. A
//! request may start only if, for every budget that applies to it,
//! `spent + reserved + its worst case <= limit`; the check and the
//! reservation happen under the locks of all those budgets at once, taken
//! in id order (so two requests can never deadlock), and either every
//! budget is reserved or none is.

use std::sync::Arc;
#[expect(
    clippy::disallowed_types,
    reason = "one short critical section per budget: a few integer operations, never across an await"
)]
use std::sync::{Mutex, MutexGuard, PoisonError};

use keyforge_types::{BudgetId, BudgetLimit, BudgetScope, NanoUsd, Period};
use time::OffsetDateTime;

/// One budget and its running totals for the current period.
#[derive(Debug)]
pub struct BudgetCell {
    id: BudgetId,
    scope: BudgetScope,
    /// This instance's share of the limit when it counts alone for a
    /// cluster of `share` instances (Redis unreachable, `[redis]
    /// on_unavailable = "local"`); 1 otherwise.
    share: i64,
    /// Locked only to check-and-reserve, settle or read a status: integer
    /// arithmetic and, once per period, a calendar computation.
    #[expect(clippy::disallowed_types, reason = "see the module's explanation")]
    state: Mutex<CellState>,
}

#[derive(Debug)]
struct CellState {
    limit: BudgetLimit,
    period_start_ms: i64,
    /// `i64::MAX` for `total`.
    period_end_ms: i64,
    /// Settled cost in this period (nano-USD).
    spent: i64,
    /// Worst-case cost of requests in flight, whatever period they began in.
    reserved: i64,
    /// The period in which this budget last refused a request.
    refused_in_period: Option<i64>,
}

/// A budget's totals, for the admin API and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub id: BudgetId,
    pub scope: BudgetScope,
    pub limit: BudgetLimit,
    pub period_start: OffsetDateTime,
    /// When the budget next resets; `None` for `total`.
    pub resets_at: Option<OffsetDateTime>,
    pub spent: NanoUsd,
    pub reserved: NanoUsd,
}

/// A request was refused because this budget cannot cover its worst case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("budget {} of {} is exhausted", .status.id, .status.scope)]
pub struct Exhausted {
    pub status: BudgetStatus,
    /// The worst-case cost the request needed.
    pub needed: NanoUsd,
    /// This is the budget's first refusal in its period (worth an alert).
    pub first_in_period: bool,
}

/// How a settlement moved one budget's spend: what alert thresholds read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendChange {
    pub id: BudgetId,
    pub scope: BudgetScope,
    pub limit: BudgetLimit,
    pub period_start_ms: i64,
    pub before: i64,
    pub after: i64,
}

impl SpendChange {
    /// The thresholds (percent of the limit) this change reached for the
    /// first time in its period: `before < t% <= after`.
    pub fn crossed<'a>(&'a self, thresholds: &'a [u8]) -> impl Iterator<Item = u8> + 'a {
        let limit = i128::from(self.limit.amount.0);
        thresholds.iter().copied().filter(move |&percent| {
            let line = limit * i128::from(percent);
            i128::from(self.before) * 100 < line && line <= i128::from(self.after) * 100
        })
    }
}

fn to_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn period_bounds(period: Period, now: OffsetDateTime) -> (i64, i64) {
    let start = period.start_of(now);
    let end = period.end_of(start).map_or(i64::MAX, to_ms);
    (to_ms(start), end)
}

impl CellState {
    /// Moves to the period that contains `now`. Reservations of requests
    /// still in flight carry over: they are released when those settle.
    fn roll(&mut self, now: OffsetDateTime) {
        let now_ms = to_ms(now);
        if now_ms >= self.period_end_ms || now_ms < self.period_start_ms {
            let (start, end) = period_bounds(self.limit.period, now);
            if start != self.period_start_ms {
                self.spent = 0;
            }
            self.period_start_ms = start;
            self.period_end_ms = end;
        }
    }

    fn fits(&self, amount: i64, share: i64) -> bool {
        self.spent
            .saturating_add(self.reserved)
            .saturating_add(amount)
            <= self.limit.amount.0 / share
    }
}

impl BudgetCell {
    /// A budget whose current period has already spent `spent` (from the
    /// ledger).
    pub fn new(
        id: BudgetId,
        scope: BudgetScope,
        limit: BudgetLimit,
        spent: NanoUsd,
        now: OffsetDateTime,
    ) -> Self {
        let (period_start_ms, period_end_ms) = period_bounds(limit.period, now);
        #[expect(clippy::disallowed_types, reason = "see the module's explanation")]
        let state = Mutex::new(CellState {
            limit,
            period_start_ms,
            period_end_ms,
            spent: spent.0,
            reserved: 0,
            refused_in_period: None,
        });
        Self {
            id,
            scope,
            share: 1,
            state,
        }
    }

    /// The same budget, enforced locally at `1 / instances` of its limit
    /// (what one instance of a cluster may spend while it counts alone).
    /// Its status still reports the whole limit.
    #[must_use]
    pub fn with_share(mut self, instances: u32) -> Self {
        self.share = i64::from(instances.max(1));
        self
    }

    pub fn id(&self) -> &BudgetId {
        &self.id
    }

    pub fn scope(&self) -> &BudgetScope {
        &self.scope
    }

    /// The start of the period containing `now` for this budget's period
    /// (to count the ledger's spend in it).
    pub fn period_start(limit: BudgetLimit, now: OffsetDateTime) -> OffsetDateTime {
        limit.period.start_of(now)
    }

    fn lock(&self) -> MutexGuard<'_, CellState> {
        // The state is a handful of integers updated together; a panic
        // while holding the lock cannot leave it half-written in a way that
        // matters more than refusing every later request would.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the amount (an operator set the budget again). Spend and
    /// reservations stay; a new period length starts counting afresh only
    /// if the period itself changed, which the store never does (a period
    /// is part of a budget's identity).
    pub fn set_limit(&self, limit: BudgetLimit) {
        let mut state = self.lock();
        state.limit = limit;
    }

    /// The budget's limit now.
    pub fn limit(&self) -> BudgetLimit {
        self.lock().limit
    }

    /// Records a refusal made elsewhere (by shared counters) in the period
    /// starting at `period_start_ms`; true if it is this budget's first
    /// refusal in that period here (worth an alert).
    pub(crate) fn note_refusal(&self, period_start_ms: i64) -> bool {
        let mut state = self.lock();
        let first = state.refused_in_period != Some(period_start_ms);
        state.refused_in_period = Some(period_start_ms);
        first
    }

    /// Cluster mode: the shared counters reported `spent` for the period
    /// starting at `period_start_ms`. Kept (never lowered), so that an
    /// instance that must count alone (Redis unreachable, `local`) starts
    /// from the cluster's spend as last seen, not from its own: with each
    /// of N instances allowed `limit / N` on top of that, they cannot
    /// together pass the limit.
    pub fn observe_spent(&self, period_start_ms: i64, spent: NanoUsd, now: OffsetDateTime) {
        let mut state = self.lock();
        state.roll(now);
        if state.period_start_ms == period_start_ms && spent.0 > state.spent {
            state.spent = spent.0;
        }
    }

    pub fn status(&self, now: OffsetDateTime) -> BudgetStatus {
        let mut state = self.lock();
        state.roll(now);
        self.status_of(&state)
    }

    fn status_of(&self, state: &CellState) -> BudgetStatus {
        BudgetStatus {
            id: self.id.clone(),
            scope: self.scope.clone(),
            limit: state.limit,
            period_start: from_ms(state.period_start_ms),
            resets_at: (state.period_end_ms != i64::MAX).then(|| from_ms(state.period_end_ms)),
            spent: NanoUsd(state.spent),
            reserved: NanoUsd(state.reserved),
        }
    }
}

/// Reserves `amount` against every budget in `cells`, or none of them.
/// `cells` must be sorted by id (the lock order) and free of duplicates.
pub fn reserve(
    cells: &[Arc<BudgetCell>],
    amount: NanoUsd,
    now: OffsetDateTime,
) -> Result<Reservation, Box<Exhausted>> {
    let amount = amount.0.max(0);
    debug_assert!(cells.windows(2).all(|pair| pair[0].id < pair[1].id));
    let mut guards = Vec::with_capacity(cells.len());
    for cell in cells {
        let mut state = cell.lock();
        state.roll(now);
        if !state.fits(amount, cell.share) {
            let first_in_period = state.refused_in_period != Some(state.period_start_ms);
            state.refused_in_period = Some(state.period_start_ms);
            return Err(Box::new(Exhausted {
                status: cell.status_of(&state),
                needed: NanoUsd(amount),
                first_in_period,
            }));
        }
        guards.push(state);
    }
    for state in &mut guards {
        state.reserved = state.reserved.saturating_add(amount);
    }
    drop(guards);
    Ok(Reservation {
        cells: cells.to_vec(),
        amount,
        settled: false,
    })
}

/// Money held for one request in flight. Settle it with the actual cost;
/// dropping it unsettled releases everything (the request cost nothing).
#[derive(Debug)]
#[must_use = "a reservation holds budget until it is settled or dropped"]
pub struct Reservation {
    cells: Vec<Arc<BudgetCell>>,
    amount: i64,
    settled: bool,
}

impl Reservation {
    /// A reservation against no budget (the key has none).
    pub fn none() -> Self {
        Self {
            cells: Vec::new(),
            amount: 0,
            settled: false,
        }
    }

    pub fn amount(&self) -> NanoUsd {
        NanoUsd(self.amount)
    }

    /// Replaces the reservation by the actual cost, in the period that is
    /// current now. The actual cost is charged in full even when it exceeds
    /// the reservation (a provider that ignored the request's token cap):
    /// the ledger is the truth, and later requests see it.
    pub fn settle(mut self, actual: NanoUsd, now: OffsetDateTime) -> Vec<SpendChange> {
        self.settled = true;
        let actual = actual.0.max(0);
        let mut changes = Vec::with_capacity(self.cells.len());
        for cell in &self.cells {
            let mut state = cell.lock();
            state.roll(now);
            state.reserved = state.reserved.saturating_sub(self.amount).max(0);
            let before = state.spent;
            state.spent = state.spent.saturating_add(actual);
            if actual > 0 {
                changes.push(SpendChange {
                    id: cell.id.clone(),
                    scope: cell.scope.clone(),
                    limit: state.limit,
                    period_start_ms: state.period_start_ms,
                    before,
                    after: state.spent,
                });
            }
        }
        changes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for cell in &self.cells {
            let mut state = cell.lock();
            state.reserved = state.reserved.saturating_sub(self.amount).max(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use keyforge_types::{EnvName, KeyId};
    use time::macros::datetime;

    use super::*;

    const USD: i64 = NanoUsd::PER_USD;

    fn cell(scope: BudgetScope, limit: &str, spent: i64) -> Arc<BudgetCell> {
        Arc::new(BudgetCell::new(
            BudgetId::generate(),
            scope,
            BudgetLimit::parse(limit).unwrap(),
            NanoUsd(spent),
            datetime!(2026-11-23 10:00 UTC),
        ))
    }

    fn sorted(mut cells: Vec<Arc<BudgetCell>>) -> Vec<Arc<BudgetCell>> {
        cells.sort_by(|a, b| a.id.cmp(&b.id));
        cells
    }

    fn key_scope() -> BudgetScope {
        BudgetScope::Key(KeyId::generate())
    }

    const NOW: OffsetDateTime = datetime!(2026-11-23 10:30 UTC);

    #[test]
    fn reserves_until_the_worst_case_no_longer_fits() {
        let budget = cell(key_scope(), "1usd/day", 0);
        let cells = [budget.clone()];
        let held: Vec<_> = (0..4)
            .map(|_| reserve(&cells, NanoUsd(USD / 4), NOW).unwrap())
            .collect();
        let refused = reserve(&cells, NanoUsd(1), NOW).unwrap_err();
        assert_eq!(refused.status.reserved, NanoUsd(USD));
        assert!(refused.first_in_period);
        assert!(
            !reserve(&cells, NanoUsd(1), NOW)
                .unwrap_err()
                .first_in_period
        );
        assert_eq!(
            refused.status.resets_at,
            Some(datetime!(2026-11-24 00:00 UTC))
        );
        // Settling below the worst case frees the difference at once.
        for reservation in held {
            assert_eq!(reservation.settle(NanoUsd(USD / 10), NOW).len(), 1);
        }
        let status = budget.status(NOW);
        assert_eq!(
            (status.spent, status.reserved),
            (NanoUsd(4 * USD / 10), NanoUsd(0))
        );
        assert!(reserve(&cells, NanoUsd(6 * USD / 10), NOW).is_ok());
    }

    #[test]
    fn all_budgets_or_none() {
        let key = cell(key_scope(), "10usd/month", 0);
        let env = cell(
            BudgetScope::Env(EnvName::parse("dev").unwrap()),
            "1usd/day",
            0,
        );
        let cells = sorted(vec![key.clone(), env.clone()]);
        let refused = reserve(&cells, NanoUsd(2 * USD), NOW).unwrap_err();
        assert_eq!(refused.status.id, env.id);
        // The key budget was not left holding anything.
        assert_eq!(key.status(NOW).reserved, NanoUsd(0));
        let held = reserve(&cells, NanoUsd(USD), NOW).unwrap();
        assert_eq!(key.status(NOW).reserved, NanoUsd(USD));
        assert_eq!(env.status(NOW).reserved, NanoUsd(USD));
        drop(held);
        assert_eq!(key.status(NOW).reserved, NanoUsd(0));
        assert_eq!(env.status(NOW).spent, NanoUsd(0));
    }

    #[test]
    fn periods_reset_spend_but_not_requests_in_flight() {
        let budget = cell(key_scope(), "1usd/hour", 0);
        let cells = [budget.clone()];
        reserve(&cells, NanoUsd(USD / 2), NOW)
            .unwrap()
            .settle(NanoUsd(USD / 2), NOW);
        let in_flight = reserve(&cells, NanoUsd(USD / 2), NOW).unwrap();
        assert!(reserve(&cells, NanoUsd(1), NOW).is_err());
        // The next hour: spend starts again, the request in flight still holds.
        let later = datetime!(2026-11-23 11:00 UTC);
        let status = budget.status(later);
        assert_eq!(
            (status.spent, status.reserved),
            (NanoUsd(0), NanoUsd(USD / 2))
        );
        assert!(reserve(&cells, NanoUsd(USD / 2 + 1), later).is_err());
        let changes = in_flight.settle(NanoUsd(USD / 5), later);
        assert_eq!(changes[0].before, 0);
        assert_eq!(changes[0].after, USD / 5);
        assert_eq!(budget.status(later).reserved, NanoUsd(0));
    }

    /// One instance of three counting alone may use a third of the limit;
    /// its status still reports the whole limit.
    #[test]
    fn a_shared_budget_counted_alone_allows_this_instances_share() {
        let budget = Arc::new(
            BudgetCell::new(
                BudgetId::generate(),
                key_scope(),
                BudgetLimit::parse("3usd/day").unwrap(),
                NanoUsd(0),
                NOW,
            )
            .with_share(3),
        );
        let cells = [budget.clone()];
        assert!(reserve(&cells, NanoUsd(USD + 1), NOW).is_err());
        let held = reserve(&cells, NanoUsd(USD), NOW).unwrap();
        let refused = reserve(&cells, NanoUsd(1), NOW).unwrap_err();
        assert_eq!(refused.status.limit.amount, NanoUsd(3 * USD));
        drop(held);
        // The cluster's spend, as last seen in Redis, counts against it.
        let start = period_bounds(Period::Day, NOW).0;
        budget.observe_spent(start, NanoUsd(USD / 2), NOW);
        budget.observe_spent(start, NanoUsd(USD / 4), NOW);
        assert_eq!(budget.status(NOW).spent, NanoUsd(USD / 2));
        assert!(reserve(&cells, NanoUsd(USD / 2 + 1), NOW).is_err());
        assert!(reserve(&cells, NanoUsd(USD / 2), NOW).is_ok());
    }

    #[test]
    fn a_total_budget_never_resets() {
        let budget = cell(key_scope(), "2usd/total", 2 * USD);
        let refused = reserve(&[budget], NanoUsd(1), datetime!(2030-01-01 00:00 UTC)).unwrap_err();
        assert_eq!(refused.status.resets_at, None);
    }

    #[test]
    fn overspend_reported_by_the_provider_is_charged() {
        let budget = cell(key_scope(), "1usd/day", 0);
        let cells = [budget.clone()];
        reserve(&cells, NanoUsd(USD / 10), NOW)
            .unwrap()
            .settle(NanoUsd(USD * 2), NOW);
        assert_eq!(budget.status(NOW).spent, NanoUsd(2 * USD));
        assert!(reserve(&cells, NanoUsd(0), NOW).is_err());
    }

    #[test]
    fn thresholds_are_crossed_once() {
        let change = |before, after| SpendChange {
            id: BudgetId::generate(),
            scope: key_scope(),
            limit: BudgetLimit::parse("100usd/month").unwrap(),
            period_start_ms: 0,
            before: before * USD,
            after: after * USD,
        };
        let all = [25, 50, 75, 100];
        let crossed = |before, after| change(before, after).crossed(&all).collect::<Vec<_>>();
        assert_eq!(crossed(0, 10), Vec::<u8>::new());
        assert_eq!(crossed(10, 25), [25]);
        assert_eq!(crossed(25, 26), Vec::<u8>::new());
        assert_eq!(crossed(24, 80), [25, 50, 75]);
        assert_eq!(crossed(99, 250), [100]);
    }

    /// Many threads race to reserve and settle against a small budget: the
    /// budget is never overshot, and once everything has settled, whatever
    /// is left can still be reserved (no reservation leaks).
    #[test]
    fn concurrent_requests_never_overshoot() {
        let key = cell(key_scope(), "1usd/day", 0);
        let env = cell(
            BudgetScope::Env(EnvName::parse("prod").unwrap()),
            "3usd/day",
            0,
        );
        let cells = Arc::new(sorted(vec![key.clone(), env.clone()]));
        let admitted = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cells, admitted, peak, key) =
                    (cells.clone(), admitted.clone(), peak.clone(), key.clone());
                std::thread::spawn(move || {
                    // Keep trying while settled spend leaves room for a
                    // worst case: refusals caused by others' reservations
                    // in flight are retried, so the loop ends only at the
                    // true limit.
                    while key.status(NOW).spent.0 + 3 * USD / 100 <= USD {
                        // Worst case 3 cents, actual 1 cent.
                        if let Ok(held) = reserve(&cells, NanoUsd(3 * USD / 100), NOW) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            let status = key.status(NOW);
                            peak.fetch_max(status.spent.0 + status.reserved.0, Ordering::Relaxed);
                            held.settle(NanoUsd(USD / 100), NOW);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let status = key.status(NOW);
        assert!(peak.load(Ordering::Relaxed) <= USD);
        assert_eq!(status.reserved, NanoUsd(0));
        // Admission stops only when the worst case no longer fits: 98 cents
        // spent leaves 2, less than the 3 a request needs.
        assert_eq!(admitted.load(Ordering::Relaxed), 98);
        assert_eq!(status.spent, NanoUsd(98 * USD / 100));
        assert_eq!(env.status(NOW).spent, NanoUsd(98 * USD / 100));
    }
}
