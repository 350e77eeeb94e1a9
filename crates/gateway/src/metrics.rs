//! Prometheus metrics: what `GET /metrics` exposes, in the text exposition
//! format, named by Prometheus conventions (base units, `_total`,
//! `_seconds`).
//!
//! Invariants:
//! - Recording on the request path is atomic adds on handles the families
//!   hand out: a family lookup takes a read lock (shared by every reader;
//!   the write lock only the first time a label set is seen), never a lock
//!   held across an `.await` or a database call.
//! - Label cardinality is bounded by the operator's configuration, never by
//!   what clients send: models are normalised to the names of the price
//!   table (others are `other`), statuses to their class (`2xx`), refusal
//!   reasons are the gateway's fixed `x-keyforge-error` codes, and key ids
//!   appear only with `[metrics] key_labels = true`.
//! - Gauges that describe state (budgets, the ledger queue, open
//!   connections) are read at scrape time from where that state lives, so
//!   they cannot drift from it.

use std::sync::atomic::AtomicI64;

use keyforge_providers::{Api, PriceSource, PriceTable};
use keyforge_store::LedgerRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use time::Date;

/// The label set of requests, tokens and cost.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    env: String,
    project: String,
    provider: String,
    model: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    env: String,
    project: String,
    provider: String,
    model: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    env: String,
    project: String,
    provider: String,
    model: String,
}

/// The `key_id` label, there only with `[metrics] key_labels = true`
/// (absent, not empty, otherwise).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct KeyIdLabel(Option<String>);

impl EncodeLabelSet for KeyIdLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(key_id) => [("key_id", key_id.as_str())].encode(encoder),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    env: String,
    provider: String,
    key_version: u32,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
    scope: &'static str,
    scope_name: String,
    period: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 160 s: LLM answers take from a few milliseconds (a
    // cached listing) to minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

fn overhead_histogram() -> Histogram {
    // 10 µs to about 80 ms: the gateway's own share of a request.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
}

/// The gateway's counters and histograms, recorded as requests pass.
#[derive(Debug)]
pub(crate) struct Metrics {
    key_labels: bool,
    requests: Family<(RequestLabels, KeyIdLabel), Counter>,
    tokens: Family<(TokenLabels, KeyIdLabel), Counter>,
    cost_nano_usd: Family<(CostLabels, KeyIdLabel), Counter>,
    upstream_latency: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    overhead: Histogram,
    upstream: Family<UpstreamLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    open_connections: Gauge,
}

/// The status class of an upstream status (`0`: no answer).
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// The model as the price table names it, or `other`: a client cannot add
/// a label value by sending a made-up model name.
pub(crate) fn model_label(
    prices: &PriceTable,
    api: Api,
    model: Option<&str>,
    date: Date,
) -> String {
    match model {
        Some(model) => match prices.lookup(api, model, date).1 {
            // Entries are names or globs (`gpt-4o-mini*`): the label is the
            // name the glob stands for.
            PriceSource::Table(entry) => entry.model.trim_end_matches('*').to_owned(),
            PriceSource::Fallback => "other".to_owned(),
        },
        None => "none".to_owned(),
    }
}

impl Metrics {
    pub(crate) fn new(key_labels: bool) -> Self {
        Self {
            key_labels,
            requests: Family::default(),
            tokens: Family::default(),
            cost_nano_usd: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            overhead: overhead_histogram(),
            upstream: Family::default(),
            refusals: Family::default(),
            open_connections: Gauge::default(),
        }
    }

    /// A finished request that reached (or was meant for) a provider, from
    /// its ledger record; `model` is already normalised by [`model_label`].
    pub(crate) fn record_settled(&self, record: &LedgerRecord, model: String) {
        let env = record.env.as_str().to_owned();
        let project = record
            .project
            .as_ref()
            .map(|project| project.as_str().to_owned())
            .unwrap_or_default();
        let provider = record.provider.as_str().to_owned();
        let key_id = KeyIdLabel(self.key_labels.then(|| record.key_id.as_str().to_owned()));
        let cost = CostLabels {
            env,
            project,
            provider,
            model,
        };
        self.requests
            .get_or_create(&(
                RequestLabels {
                    env: cost.env.clone(),
                    project: cost.project.clone(),
                    provider: cost.provider.clone(),
                    model: cost.model.clone(),
                    status: status_class(record.status),
                },
                key_id.clone(),
            ))
            .inc();
        for (direction, n) in [
            ("input", record.input_tokens + record.cached_input_tokens),
            ("output", record.output_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&(
                        TokenLabels {
                            env: cost.env.clone(),
                            project: cost.project.clone(),
                            provider: cost.provider.clone(),
                            model: cost.model.clone(),
                            direction,
                        },
                        key_id.clone(),
                    ))
                    .inc_by(n);
            }
        }
        self.upstream
            .get_or_create(&UpstreamLabels {
                env: cost.env.clone(),
                provider: cost.provider.clone(),
                key_version: record.provider_key_version,
                outcome: record.outcome,
            })
            .inc();
        self.cost_nano_usd
            .get_or_create(&(cost, key_id))
            .inc_by(u64::try_from(record.cost_nano_usd).unwrap_or(0));
    }

    /// Time from sending a request upstream to its response headers.
    pub(crate) fn observe_upstream_latency(&self, provider: &str, seconds: f64) {
        self.upstream_latency
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(seconds);
    }

    /// Time a request spent in the gateway itself.
    pub(crate) fn observe_overhead(&self, seconds: f64) {
        self.overhead.observe(seconds);
    }

    /// A request refused with `x-keyforge-error: reason`.
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts an open client connection until the guard drops.
    pub(crate) fn connection_opened(&self) -> ConnectionGauge {
        self.open_connections.inc();
        ConnectionGauge(self.open_connections.clone())
    }
}

/// An open client connection, counted in `keyforge_open_connections`.
#[derive(Debug)]
pub(crate) struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the scrape reads from the gateway's state.
pub(crate) struct Scrape<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) ledger: crate::ledger::LedgerStats,
    pub(crate) budgets: Vec<keyforge_control::BudgetStatus>,
    pub(crate) now_ms: i64,
}

impl Scrape<'_> {
    /// The exposition text (ending in `# EOF`).
    pub(crate) fn encode(self) -> Result<String, std::fmt::Error> {
        let m = self.metrics;
        let mut registry = Registry::with_prefix("keyforge");
        registry.register(
            "requests",
            "Requests forwarded to a provider, by environment, project, provider, model (as the price table names it, else `other`), key id (with [metrics] key_labels) and upstream status class (`none`: no answer)",
            m.requests.clone(),
        );
        registry.register(
            "tokens",
            "Tokens metered from responses, by direction (`input` includes cached input)",
            m.tokens.clone(),
        );
        registry.register(
            "cost_nano_usd",
            "Cost charged against budgets, in nano-USD (1e-9 USD; divide by 1e9 for dollars)",
            m.cost_nano_usd.clone(),
        );
        registry.register_with_unit(
            "upstream_latency",
            "Time from sending a request to a provider to its response headers",
            Unit::Seconds,
            m.upstream_latency.clone(),
        );
        registry.register_with_unit(
            "gateway_overhead",
            "Time a forwarded request spent in the gateway itself, excluding the wait for the provider",
            Unit::Seconds,
            m.overhead.clone(),
        );
        registry.register(
            "upstream_responses",
            "How requests sent to a provider key version ended (`ok`, `upstream_error`, `upstream_failed`, `upstream_cut`, `client_cancelled`, `key_revoked`)",
            m.upstream.clone(),
        );
        registry.register(
            "refusals",
            "Requests the gateway refused, by reason (the `x-keyforge-error` code)",
            m.refusals.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );

        let budgets = Family::<BudgetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for status in &self.budgets {
            let (scope, scope_name) = match &status.scope {
                keyforge_types::BudgetScope::Key(id) => ("key", id.as_str().to_owned()),
                keyforge_types::BudgetScope::Project(name) => ("project", name.as_str().to_owned()),
                keyforge_types::BudgetScope::Env(name) => ("env", name.as_str().to_owned()),
            };
            let limit = status.limit.amount.0;
            let ratio = if limit > 0 {
                status.spent.0 as f64 / limit as f64
            } else {
                1.0
            };
            budgets
                .get_or_create(&BudgetLabels {
                    budget: status.id.as_str().to_owned(),
                    scope,
                    scope_name,
                    period: status.limit.period.to_string(),
                })
                .set(ratio);
        }
        registry.register(
            "budget_utilisation_ratio",
            "Share of each budget spent in its current period (1 = the limit)",
            budgets,
        );

        let ledger = &self.ledger;
        let gauge = |value: u64| {
            let gauge = Gauge::<i64, AtomicI64>::default();
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            gauge
        };
        registry.register(
            "ledger_queue_depth",
            "Ledger records and audit entries queued for the writer now",
            gauge(ledger.queue_depth),
        );
        registry.register(
            "ledger_queue_capacity",
            "What the ledger queue holds at most",
            gauge(ledger.queue_capacity),
        );
        registry.register(
            "ledger_waiting_for_room",
            "Ledger records waiting for room in the full queue now",
            gauge(ledger.waiting_for_room),
        );
        let written = Counter::<u64>::default();
        written.inc_by(ledger.written_total);
        registry.register(
            "ledger_written",
            "Ledger records committed to the store since start",
            written,
        );
        // The writer's lag: while records wait, the time since its last
        // commit; nothing waiting is no lag.
        let waiting = ledger.queue_depth + ledger.waiting_for_room > 0;
        let last = ledger.last_commit_unix_ms;
        let lag = if waiting && last > 0 {
            (self.now_ms - last).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        let lag_gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        lag_gauge.set(lag);
        registry.register_with_unit(
            "audit_write_lag",
            "While ledger records or audit entries wait, the time since the writer last committed a batch (0 when nothing waits)",
            Unit::Seconds,
            lag_gauge,
        );

        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}
