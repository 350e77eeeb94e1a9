//! Cluster mode's admission: the counters every instance shares in Redis
//! (`keyforge_control::RedisCounters`), and where their spend is rebuilt
//! from when Redis comes back empty (the store's ledger, the same figures
//! the in-memory budgets are built from).

use std::sync::Arc;

use keyforge_control::{BudgetCell, BudgetSpend, RedisCounters, RedisSettings, SpendSource};
use keyforge_store::Store;
use keyforge_types::NanoUsd;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::config::{OnUnavailable, RedisConfig};
use crate::snapshot::unix_ms;

/// The shared counters and what to do when they cannot be reached.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) counters: RedisCounters,
    on_unavailable: Option<OnUnavailable>,
}

impl Cluster {
    pub(crate) fn new(config: &RedisConfig, store: Arc<dyn Store>) -> Result<Self, String> {
        let settings = RedisSettings {
            prefix: config.prefix.clone(),
            lease: config.lease,
            ..RedisSettings::default()
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "the Redis URL (and its password) goes only to the Redis client"
        )]
        let url = config.url.expose_secret();
        let counters = RedisCounters::new(url, settings, Arc::new(StoreSpend { store }))
            .map_err(|error| error.to_string())?;
        Ok(Self {
            counters,
            on_unavailable: config.on_unavailable,
        })
    }

    /// Whether a request of a key with (or without) a budget is refused
    /// while Redis is unreachable, rather than counted locally.
    pub(crate) fn fails_closed(&self, has_budget: bool) -> bool {
        match self.on_unavailable {
            Some(OnUnavailable::FailClosed) => true,
            Some(OnUnavailable::Local) => false,
            None => has_budget,
        }
    }
}

/// Spend per budget from the store's ledger.
#[derive(Debug)]
struct StoreSpend {
    store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl SpendSource for StoreSpend {
    async fn current_spend(&self, now: OffsetDateTime) -> Result<Vec<BudgetSpend>, String> {
        let budgets = self
            .store
            .list_budgets()
            .await
            .map_err(|error| error.to_string())?;
        let mut figures = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let since = BudgetCell::period_start(budget.limit, now);
            let spent = self
                .store
                .spend_since(&budget.scope, unix_ms(since))
                .await
                .map_err(|error| error.to_string())?;
            figures.push(BudgetSpend {
                id: budget.id,
                limit: budget.limit,
                spent: NanoUsd(spent),
            });
        }
        Ok(figures)
    }
}
