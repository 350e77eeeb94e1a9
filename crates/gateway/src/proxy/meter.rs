//! Metering on the way out: the response body is wrapped so every frame is
//! read by a [`Meter`] as it passes to the client (never buffered), and when
//! the body ends, fails or is dropped (the client went away), the request's
//! ledger record is written with its usage and cost.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use keyforge_providers::{
    Api, ImageQuality, ImageSize, Meter, PriceSource, PriceTable, Units, Usage, UsageSource,
    UsageStripper,
};
use keyforge_store::LedgerRecord;
use keyforge_types::NanoUsd;
use time::OffsetDateTime;

use keyforge_types::KeyId;

use super::admit::Admission;
use crate::alerts::Alerts;
use crate::clock::Clock;
use crate::floor::FloorStream;
use crate::ledger::LedgerWriter;
use crate::state::AppState;

/// How a request that was sent upstream ended: the ledger's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The response was delivered to its end.
    Ok,
    /// The client went away before the end; the provider ran the request.
    ClientCancelled,
    /// The provider's body broke off mid-way.
    UpstreamCut,
    /// The provider answered with an error status.
    UpstreamError,
    /// The provider gave no answer after the request was sent (timed out,
    /// closed the connection): it may have run the request.
    UpstreamFailed,
    /// The provider could not be reached: nothing was sent.
    Unreached,
    /// The key (or an ancestor) was revoked, suspended or expired while the
    /// response streamed: the gateway ended it.
    KeyRevoked,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::UpstreamCut => "upstream_cut",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamFailed | Outcome::Unreached => "upstream_failed",
            Outcome::KeyRevoked => "key_revoked",
        }
    }
}

/// A request that was handed to the upstream, until its ledger record is
/// written. It is written exactly once: by [`Settlement::settle`], or, if
/// the settlement is dropped first (the client went away at any point), on
/// drop, billed at least the request's input. So whatever reached a
/// provider leaves a ledger row and a `key.use` audit entry.
#[derive(Debug)]
pub(crate) struct Settlement {
    pending: Option<Pending>,
}

/// Everything the ledger record needs besides the usage.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: LedgerRecord,
    pub(crate) api: Api,
    pub(crate) arrived: OffsetDateTime,
    pub(crate) started: Instant,
    pub(crate) prices: Arc<PriceTable>,
    pub(crate) ledger: LedgerWriter,
    /// Rate-limit tokens and budget reservations the request holds.
    pub(crate) admission: Admission,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) alerts: Alerts,
    pub(crate) anomaly: keyforge_control::AnomalyConfig,
    /// The client's address, for the audit entry (keyed-hashed there).
    pub(crate) client: Option<std::net::IpAddr>,
    /// A POST that can be billed (not a token count): a success without
    /// usage is charged `unmetered_cost`, never recorded as free.
    pub(crate) billable: bool,
    /// What the request's input is estimated at, in tokens: billed when the
    /// provider ran the request but never said what it used. Computed at
    /// admission when a limit needed it, else from `input` on that rare path.
    pub(crate) input_estimate: Option<u64>,
    pub(crate) input: keyforge_providers::InputSize,
    /// What a non-token endpoint bills, as the request asked for it.
    pub(crate) units: Units,
    pub(crate) limits: Arc<keyforge_providers::LimitTable>,
    pub(crate) unmetered_cost: NanoUsd,
    /// Added to the priced cost when the usage holds units no entry prices.
    pub(crate) unpriced_fallback: NanoUsd,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Settlement {
    pub(crate) fn new(pending: Pending) -> Self {
        Self {
            pending: Some(pending),
        }
    }

    pub(crate) fn api(&self) -> Option<Api> {
        self.pending.as_ref().map(|pending| pending.api)
    }

    /// The key's own rate limits, as OpenAI-style response headers.
    pub(crate) fn write_rate_headers(&self, headers: &mut http::HeaderMap) {
        if let Some(pending) = self.pending.as_ref() {
            pending.admission.write_headers(headers);
        }
    }

    /// The request's input in tokens, as estimated: the meter bills it for a
    /// stream cut before the provider reported its input.
    pub(crate) fn input_estimate(&self) -> u64 {
        self.pending.as_ref().map_or(0, Pending::input_estimate)
    }

    /// The upstream's status code, once known.
    pub(crate) fn set_status(&mut self, status: u16) {
        if let Some(pending) = self.pending.as_mut() {
            pending.record.status = status;
        }
    }

    /// Prices `usage`, settles the request's budgets and limits, and writes
    /// the record. Only the first call does anything.
    pub(crate) fn settle(&mut self, usage: Usage, source: UsageSource, outcome: Outcome) {
        if let Some(pending) = self.pending.take() {
            pending.settle(usage, source, outcome);
        }
    }
}

impl Drop for Settlement {
    /// Never settled: the client went away while the request was with the
    /// provider (or between steps). The provider ran it: bill its input.
    fn drop(&mut self) {
        self.settle(
            Usage::default(),
            UsageSource::None,
            Outcome::ClientCancelled,
        );
    }
}

impl Pending {
    /// The request's input in tokens, as estimated (see `input_estimate`).
    fn input_estimate(&self) -> u64 {
        self.input_estimate.unwrap_or_else(|| {
            let model = self.record.model.as_deref().unwrap_or("");
            let (limits, _) = self.limits.lookup(self.api, model);
            self.input.estimate(limits.image_tokens)
        })
    }

    fn settle(mut self, mut usage: Usage, mut source: UsageSource, outcome: Outcome) {
        if !self.billable {
            // Reading a stored object (`GET /v1/responses/{id}`, a chat
            // completion by id) repeats the usage of the request that made
            // it, which was billed then: providers do not bill retrievals.
            usage = Usage::default();
            source = UsageSource::None;
        }
        let success = (200..400).contains(&self.record.status);
        // The provider ran the request but its usage never arrived (cut
        // before it was reported, or no answer at all): its input is billed
        // on the request's estimate.
        let ran_unreported = match outcome {
            Outcome::ClientCancelled | Outcome::UpstreamCut | Outcome::KeyRevoked => {
                success || self.record.status == 0
            }
            Outcome::UpstreamFailed => true,
            Outcome::Ok | Outcome::UpstreamError | Outcome::Unreached => false,
        };
        if self.billable
            && ran_unreported
            && usage.input_tokens == 0
            && usage.cached_input_tokens == 0
        {
            let estimate = self.input_estimate();
            usage.input_tokens = estimate;
            if source == UsageSource::None && estimate > 0 {
                source = UsageSource::Estimated;
            }
        }
        // Units the request fixes and the response does not repeat: the
        // characters of speech (the response is audio), the images asked
        // for when the response did not say.
        if success && outcome != Outcome::Unreached {
            match self.units {
                Units::Images { count, variant } => {
                    if usage.images == 0 && source == UsageSource::None {
                        usage.images = count;
                        source = UsageSource::Estimated;
                    }
                    if usage.image_variant.size == ImageSize::Unspecified {
                        usage.image_variant.size = variant.size;
                    }
                    if usage.image_variant.quality == ImageQuality::Unspecified {
                        usage.image_variant.quality = variant.quality;
                    }
                }
                Units::SpeechCharacters(chars) => {
                    usage.speech_chars = chars;
                    if source == UsageSource::None {
                        source = UsageSource::Reported;
                    }
                }
                Units::Tokens => {}
            }
        }
        let record = &mut self.record;
        record.input_tokens = usage.input_tokens;
        record.cached_input_tokens = usage.cached_input_tokens;
        record.cache_write_tokens = usage.cache_write_tokens + usage.cache_write_1h_tokens;
        record.output_tokens = usage.output_tokens;
        record.reasoning_tokens = usage.reasoning_tokens;
        record.outcome = outcome.as_str();
        record.usage_source = match source {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
        };
        let model = record.model.as_deref().unwrap_or("");
        let (cost, priced_by) = match source {
            UsageSource::Reported | UsageSource::Estimated => {
                let priced = self
                    .prices
                    .price(self.api, model, self.arrived.date(), &usage);
                let priced_by = match priced.source {
                    PriceSource::Table(_) => "table",
                    PriceSource::Fallback => "fallback",
                };
                if priced.unpriced {
                    // Units no entry prices: the per-request fallback on top.
                    (
                        priced.cost.0.saturating_add(self.unpriced_fallback.0),
                        "unmetered",
                    )
                } else {
                    (priced.cost.0, priced_by)
                }
            }
            // A success that said nothing the table can price: charged the
            // per-request fallback and flagged, unless the table prices the
            // model at zero (moderation).
            UsageSource::None if self.billable && success && outcome != Outcome::Unreached => {
                let (prices, price_source) =
                    self.prices.lookup(self.api, model, self.arrived.date());
                // Free only where the table says so for every unit: a model
                // priced per minute or per image has zero token prices too.
                let free = matches!(price_source, PriceSource::Table(entry) if entry.units.is_empty())
                    && prices.input == 0
                    && prices.output == 0;
                if free {
                    (0, "table")
                } else {
                    (self.unmetered_cost.0, "unmetered")
                }
            }
            UsageSource::None => (0, "none"),
        };
        record.cost_nano_usd = cost;
        record.priced_by = priced_by;
        if priced_by == "unmetered" {
            self.alerts.raise(crate::alerts::Raised::Unmetered {
                key_id: record.key_id.clone(),
                provider: record.provider.clone(),
                model: record.model.clone(),
                charged: NanoUsd(cost),
            });
        }
        record.latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
        let now = self.clock.now();
        let entry = self.admission.entry.clone();
        let changes = self.admission.settle(NanoUsd(cost), tokens, now);
        self.alerts.observe(&changes);
        if let Some(finding) =
            entry
                .watch
                .on_tokens(crate::snapshot::unix_ms(now), tokens, &self.anomaly)
        {
            super::watch::report(&self.alerts, &entry, [finding], now);
        }
        let model = crate::metrics::model_label(
            &self.prices,
            self.api,
            self.record.model.as_deref(),
            self.arrived.date(),
        );
        self.metrics.record_settled(&self.record, model);
        self.ledger.record(self.record, self.client);
    }
}

/// How often a streaming response checks that its key may still be used.
const KEY_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Watches a response's key while it streams: revoking, suspending or the
/// expiry of the key or an ancestor (or a leak report revoking it) ends the
/// response within [`KEY_CHECK_EVERY`], not at the end of a ten-minute
/// stream. Each check is a lock-free snapshot load and a map lookup.
///
/// The timer starts the first time the response has to wait for the
/// upstream: a response that arrives whole (most JSON answers) never arms
/// one, and the key was checked at admission a moment before.
pub(crate) struct KeyGuard {
    state: Arc<AppState>,
    key_id: KeyId,
    every: Option<tokio::time::Interval>,
}

impl KeyGuard {
    pub(crate) fn new(state: Arc<AppState>, key_id: KeyId) -> Self {
        Self {
            state,
            key_id,
            every: None,
        }
    }

    /// Polls the timer once armed (registering the waker for the next
    /// check); true once the key may no longer be used.
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(every) = self.every.as_mut() else {
            return false;
        };
        while every.poll_tick(cx).is_ready() {
            let snapshot = self.state.snapshot.load();
            let usable = snapshot.key_by_id(&self.key_id).is_some_and(|entry| {
                crate::snapshot::entry_is_usable(entry, self.state.clock.now()).is_ok()
            });
            if !usable {
                return true;
            }
        }
        false
    }

    /// Starts the timer (the body waits for the upstream); its first tick
    /// checks the key at once. True if the key may no longer be used.
    fn arm(&mut self, cx: &mut Context<'_>) -> bool {
        if self.every.is_none() {
            let mut every = tokio::time::interval(KEY_CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            self.every = Some(every);
        }
        self.poll_revoked(cx)
    }
}

/// The upstream body, metered as it streams (and, when the gateway asked
/// for usage the client did not, stripped of it).
/// What a metered body reads: the upstream's body as it streams, or one
/// the gateway had to decode first (an upstream that compressed a success
/// although asked for `identity`).
pub(crate) enum UpstreamBody {
    Streaming(Incoming),
    Decoded(Option<Bytes>),
}

impl UpstreamBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self {
            UpstreamBody::Streaming(incoming) => Pin::new(incoming).poll_frame(cx),
            UpstreamBody::Decoded(rest) => {
                Poll::Ready(rest.take().map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(incoming) => incoming.is_end_stream(),
            UpstreamBody::Decoded(rest) => rest.is_none(),
        }
    }
}

pub(crate) struct MeteredBody {
    inner: UpstreamBody,
    meter: Option<Meter>,
    stripper: Option<UsageStripper>,
    settlement: Option<Settlement>,
    guard: KeyGuard,
    /// The provider key floor, over what the client receives.
    floor: FloorStream,
    /// The last frame has been handed on.
    done: bool,
}

impl MeteredBody {
    pub(crate) fn new(
        inner: UpstreamBody,
        meter: Meter,
        stripper: Option<UsageStripper>,
        floor: FloorStream,
        settlement: Settlement,
        guard: KeyGuard,
    ) -> Self {
        Self {
            inner,
            meter: Some(meter),
            stripper,
            settlement: Some(settlement),
            guard,
            floor,
            done: false,
        }
    }

    /// Aborts rather than ends: the client must not take a cut response
    /// for a whole one. Dropping the body then closes the upstream
    /// connection, which stops the generation.
    fn revoked(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        self.done = true;
        self.finish(false, Outcome::KeyRevoked);
        Poll::Ready(Some(Err(
            "the KeyForge key was revoked, suspended or expired during the response".into(),
        )))
    }

    fn finish(&mut self, complete: bool, outcome: Outcome) {
        if let (Some(meter), Some(mut settlement)) = (self.meter.take(), self.settlement.take()) {
            let (usage, source) = meter.finish(complete);
            // A stream whose last event and usage arrived ended normally,
            // even if the client closed the connection before its end (the
            // official SDKs close right after `[DONE]`).
            let outcome = match (outcome, source) {
                (Outcome::ClientCancelled, UsageSource::Reported) => Outcome::Ok,
                (outcome, _) => outcome,
            };
            settlement.settle(usage, source, outcome);
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.guard.poll_revoked(cx) {
            return this.revoked();
        }
        loop {
            let frame = match this.inner.poll_frame(cx) {
                Poll::Pending if this.guard.arm(cx) => return this.revoked(),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    this.finish(false, Outcome::UpstreamCut);
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(None) => {
                    // The end: hand on what the stripper and the floor
                    // still hold.
                    this.done = true;
                    let rest = this
                        .stripper
                        .as_mut()
                        .map(UsageStripper::finish)
                        .unwrap_or_default();
                    let tail = this.floor.feed_last(rest);
                    this.finish(true, Outcome::Ok);
                    return Poll::Ready((!tail.is_empty()).then(|| Ok(Frame::data(tail))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            };
            if let Some(meter) = this.meter.as_mut() {
                meter.feed(&data);
            }
            // hyper stops polling a body that says it has ended, so the end
            // may never be observed as `None`.
            let ended = this.inner.is_end_stream();
            let data = match this.stripper.as_mut() {
                None => data,
                Some(stripper) if ended => {
                    let released = stripper.feed(&data);
                    crate::floor::join(released, stripper.finish())
                }
                Some(stripper) => stripper.feed(&data),
            };
            let data = if ended {
                this.floor.feed_last(data)
            } else {
                this.floor.feed(data)
            };
            if ended {
                this.done = true;
                this.finish(true, Outcome::Ok);
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if ended {
                return Poll::Ready(None);
            }
            // Everything in this frame was stripped: wait for the next.
        }
    }

    fn is_end_stream(&self) -> bool {
        // The floor may still hold a tail when the upstream has ended.
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Stripping and the key floor may change the length.
        SizeHint::default()
    }
}

impl Drop for MeteredBody {
    /// The client went away (or the server dropped the response): bill what
    /// was delivered.
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        let outcome = if complete {
            Outcome::Ok
        } else {
            Outcome::ClientCancelled
        };
        self.finish(complete, outcome);
    }
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody").finish_non_exhaustive()
    }
}
