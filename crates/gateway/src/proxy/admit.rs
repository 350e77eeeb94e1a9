//! Spend control, before anything is forwarded: the key's requests in
//! flight, its requests and tokens per minute, then a reservation of the
//! request's worst-case cost against every budget that applies (the key's,
//! its project's, its environment's). What was taken is given back when the
//! response ends: unused tokens to the TPM limiter, the unspent part of the
//! reservation to the budgets ([`Admission::settle`]).
//!
//! A key with no limits and no budgets skips all of it, body parsing
//! included.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keyforge_control::{
    Counters, Entered, Exhausted, Hold, InFlightGuard, Limiter, Place, RateDenied, RateGrant,
    RateLimiter, Refusal, Reservation, SpendChange,
};
use keyforge_providers::{Api, ErrorClass, Units, Usage};
use keyforge_types::NanoUsd;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::RequestContext;
use super::authenticate::Authenticated;
use super::authorize::Target;
use crate::cluster::Cluster;
use crate::config::UnknownInput;
use crate::error::GatewayError;
use crate::snapshot::{KeyEntry, KeyLimiters, unix_ns};
use crate::state::AppState;

/// What a request holds while it is in flight.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) entry: Arc<KeyEntry>,
    /// What the request took from the key's limiters and from each
    /// ancestor's (a parent's limits bound its whole tree of keys).
    levels: Vec<Level>,
    reservation: Reservation,
    arrived_ns: i64,
    /// The key's own limits as OpenAI-style headers for the response.
    requests: Option<RateGrant>,
    tokens: Option<RateGrant>,
    settled: bool,
    /// The request's input in tokens, as estimated, when admission needed
    /// it: what is billed when the provider ran the request but never
    /// reported its usage.
    input_estimate: Option<u64>,
    /// What was reserved, when a budget applies: charged to a request of a
    /// token endpoint whose response reported no usage (an upstream that
    /// omits it), so the charge never exceeds the reservation.
    worst_cost: Option<NanoUsd>,
    /// Cluster mode: what the request took from the shared counters.
    shared: Option<Shared>,
}

/// What a request took from the counters shared in Redis; given back by a
/// task of its own when the request ends, off the response's path.
#[derive(Debug)]
struct Shared {
    cluster: Arc<Cluster>,
    /// The key, whose in-memory budget cells learn the cluster's spend.
    entry: Arc<KeyEntry>,
    alerts: crate::alerts::Alerts,
    places: Vec<Entered>,
    /// RPM limiters a place was taken from: (shared name, limit).
    requests: Vec<(String, u64)>,
    /// TPM limiters: (shared name, limit, tokens taken on the estimate).
    tokens: Vec<(String, u64, u64)>,
    hold: Option<Hold>,
}

/// Why the shared counters did not admit a request.
enum SharedRefusal {
    /// A limit or budget refused it: the same answer as in memory.
    Refused(GatewayError),
    /// Redis could not be reached.
    Unavailable(keyforge_control::Unavailable),
}

/// One key's limiters, and what this request took from them.
#[derive(Debug)]
struct Level {
    limiters: Arc<KeyLimiters>,
    in_flight: Option<InFlightGuard>,
    /// A place taken from the RPM limiter (given back if a later check fails).
    request_taken: bool,
    /// Tokens taken from the TPM limiter on the request's estimate.
    tpm_taken: u64,
}

/// The request's worst case, computed only when something needs it.
struct Estimate {
    /// Upper bound of input tokens (see `RequestFacts::worst_case`): bytes
    /// of the text the model reads, per-image bounds, or the model's context
    /// window where the input is not in the request.
    input_tokens: u64,
    /// A realistic input estimate, for rate limits.
    input_estimate_tokens: u64,
    /// Upper bound of output tokens: every copy at its cap, or at the
    /// model's maximum output where the request sets none.
    output_tokens: u64,
}

impl Estimate {
    fn of(
        state: &AppState,
        ctx: &RequestContext,
        target: &Target,
        has_budget: bool,
    ) -> Result<Self, GatewayError> {
        if !reports_tokens(&target.upstream_path) {
            // Billed per unit or not at all: the reservation is the units'
            // price or the endpoint's fallback charge (see `admit`).
            return Ok(Self {
                input_tokens: 0,
                input_estimate_tokens: 0,
                output_tokens: 0,
            });
        }
        let worst = target.facts.worst_case(
            &state.limits,
            target.provider.kind.api(),
            ctx.model.as_deref().unwrap_or(""),
        );
        let mut input_tokens = worst.input_tokens;
        if let Some(field) = worst.unknown_input {
            match state.config.spend.unknown_input {
                UnknownInput::Refuse if has_budget => {
                    return Err(GatewayError::client(
                        ErrorClass::InvalidRequest,
                        "unknown_input",
                        format!(
                            "this request's input is not in the request (`{field}`), so its cost cannot be bounded, and this gateway refuses such requests for keys with a budget; send the input itself"
                        ),
                    ));
                }
                UnknownInput::Bound(Some(tokens)) => input_tokens = tokens,
                UnknownInput::Bound(None) | UnknownInput::Refuse => {}
            }
        }
        Ok(Self {
            input_tokens,
            input_estimate_tokens: worst.input_estimate_tokens.min(input_tokens),
            output_tokens: worst.output_tokens,
        })
    }

    /// Tokens counted against a TPM limit: the input as estimated plus the
    /// output bound. A rate limit smooths traffic; only budgets need the
    /// strict upper bound.
    fn rate_tokens(&self) -> u64 {
        self.input_estimate_tokens
            .saturating_add(self.output_tokens)
    }

    /// The most the request can cost: its token bounds, tier and units
    /// priced as the provider would (long-context rates apply when the
    /// input bound crosses their threshold; Anthropic input may be written
    /// to a one-hour cache at twice the input rate, so it is priced at the
    /// dearer of the two). Also says whether some unit has no price.
    fn worst_cost(
        &self,
        state: &AppState,
        ctx: &RequestContext,
        target: &Target,
    ) -> (NanoUsd, bool) {
        let api = target.provider.kind.api();
        let model = ctx.model.as_deref().unwrap_or("");
        let date = ctx.arrived.date();
        let facts = &target.facts;
        let mut usage = Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            service_tier: facts.service_tier.unwrap_or_default(),
            ..Usage::default()
        };
        match facts.units {
            Units::Images { count, variant } => {
                usage.images = count;
                usage.image_variant = variant;
            }
            Units::SpeechCharacters(chars) => usage.speech_chars = chars,
            Units::Tokens => {}
        }
        if reads_audio(&target.upstream_path) {
            usage.audio_ms = facts
                .input
                .text_bytes
                .saturating_mul(1000)
                .div_ceil(AUDIO_MIN_BYTES_PER_SECOND);
        }
        let priced = state.prices.price(api, model, date, &usage);
        let mut cost = priced.cost;
        if api == Api::Anthropic {
            let cached = Usage {
                input_tokens: 0,
                cache_write_1h_tokens: self.input_tokens,
                ..usage
            };
            cost = NanoUsd(
                cost.0
                    .max(state.prices.price(api, model, date, &cached).cost.0),
            );
        }
        (cost, priced.unpriced)
    }
}

/// The fewest bytes a second of audio takes in any format OpenAI's audio
/// endpoints accept (Opus's lowest bitrate, 6 kbit/s, RFC 6716 §2.1.1):
/// an upload's bytes so bound its duration, which is billed per minute.
const AUDIO_MIN_BYTES_PER_SECOND: u64 = 750;

/// OpenAI's endpoints billed per minute of input audio.
fn reads_audio(upstream_path: &str) -> bool {
    let path = upstream_path.split('?').next().unwrap_or(upstream_path);
    path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations")
}

/// Whether a request can cost money: every POST except token counting
/// (Anthropic `/v1/messages/count_tokens`, Gemini `:countTokens`), which
/// providers do not bill.
pub(crate) fn is_billable(method: &Method, upstream_path: &str) -> bool {
    let path = upstream_path.split('?').next().unwrap_or(upstream_path);
    method == Method::POST && !path.ends_with("/count_tokens") && !path.ends_with(":countTokens")
}

/// Endpoints whose responses report token usage, which the meter reads:
/// OpenAI chat completions, completions, responses and embeddings,
/// Anthropic messages, Gemini content generation and embeddings. Other
/// endpoints (images, audio, moderation, files, batches, ...) bill units or
/// nothing the gateway can read.
pub(crate) fn reports_tokens(upstream_path: &str) -> bool {
    let path = upstream_path.split('?').next().unwrap_or(upstream_path);
    const SUFFIXES: [&str; 9] = [
        "/chat/completions",
        "/completions",
        "/responses",
        "/embeddings",
        "/messages",
        ":generateContent",
        ":streamGenerateContent",
        ":embedContent",
        ":batchEmbedContents",
    ];
    SUFFIXES.iter().any(|suffix| path.ends_with(suffix))
}

/// Endpoints that start work whose cost the request does not bound: batches
/// of requests held in a file, Assistants runs over a whole thread,
/// fine-tuning jobs. `None` for everything else.
fn unbounded_work(upstream_path: &str) -> Option<&'static str> {
    let path = upstream_path.split('?').next().unwrap_or(upstream_path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., "batches"] => Some("a batch of requests"),
        [.., "threads", "runs"] | [.., "threads", _, "runs"] => Some("an Assistants run"),
        [.., "runs", _, "submit_tool_outputs"] => Some("an Assistants run"),
        [.., "fine_tuning", "jobs"] => Some("a fine-tuning job"),
        [.., last] if last.ends_with(":batchGenerateContent") => Some("a batch of requests"),
        _ => None,
    }
}

pub(crate) async fn admit(
    state: &AppState,
    ctx: &RequestContext,
    key: &Authenticated,
    target: &Target,
) -> Result<Admission, GatewayError> {
    let entry = &key.entry;
    let mut admission = Admission {
        entry: entry.clone(),
        levels: Vec::new(),
        reservation: Reservation::none(),
        arrived_ns: unix_ns(ctx.arrived),
        requests: None,
        tokens: None,
        settled: false,
        input_estimate: None,
        worst_cost: None,
        shared: None,
    };
    let chain = std::iter::once(entry).chain(entry.ancestors.iter());
    let limited: Vec<&Arc<KeyEntry>> = chain
        .filter(|level| {
            let l = &level.limiters;
            l.rpm.is_some() || l.tpm.is_some() || l.in_flight.is_some()
        })
        .collect();
    if limited.is_empty() && entry.budgets.is_empty() {
        return Ok(admission);
    }
    // Budgeted spend is not served while its ledger records cannot be
    // written (see ledger.rs): 503 rather than spend a crash would forget.
    if !entry.budgets.is_empty() && state.ledger.backlogged() {
        return Err(GatewayError {
            class: ErrorClass::Unavailable,
            code: "ledger_backlog",
            message: "the usage ledger is not keeping up; requests of keys with a budget are refused until it catches up; retry shortly".into(),
            // Logged like a rate-limit refusal (info, one line per request);
            // the backlog itself is warned about once per interval by the
            // writer, so an overload does not also flood the log at error.
            fault: crate::error::Fault::Client,
            headers: None,
        }
        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")));
    }
    let now_ns = unix_ns(ctx.arrived);
    let estimate =
        if limited.iter().any(|level| level.limiters.tpm.is_some()) || !entry.budgets.is_empty() {
            let estimate = Estimate::of(state, ctx, target, !entry.budgets.is_empty())?;
            admission.input_estimate = Some(estimate.input_estimate_tokens);
            Some(estimate)
        } else {
            None
        };
    if let Some(cluster) = &state.cluster {
        match admit_shared(
            state,
            cluster,
            ctx,
            target,
            &mut admission,
            &limited,
            estimate.as_ref(),
            now_ns,
        )
        .await
        {
            Ok(()) => return Ok(admission),
            Err(SharedRefusal::Refused(error)) => {
                if let Some(shared) = admission.shared.take() {
                    shared.give_back(None, now_ns, true);
                }
                return Err(error);
            }
            Err(SharedRefusal::Unavailable(reason)) => {
                if let Some(shared) = admission.shared.take() {
                    shared.give_back(None, now_ns, true);
                }
                if cluster.fails_closed(!entry.budgets.is_empty()) {
                    return Err(admission_unavailable(&reason));
                }
                // `local`: this instance counts alone, at its share of
                // each limit (the in-memory counters hold that share).
            }
        }
    }
    // On a refusal, what was taken so far is given back: in-flight places
    // and TPM tokens when `admission` drops, RPM places here.
    for level in limited {
        let own = Arc::ptr_eq(level, entry);
        if let Err(error) = admit_level(&mut admission, level, own, estimate.as_ref(), now_ns) {
            for taken in &admission.levels {
                if let (true, Some(rpm)) = (taken.request_taken, &taken.limiters.rpm) {
                    rpm.adjust(-1, now_ns);
                }
            }
            return Err(error);
        }
    }
    if !entry.budgets.is_empty()
        && ctx.billable
        && let Some(what) = unbounded_work(&target.upstream_path)
    {
        return Err(GatewayError::client(
            ErrorClass::PermissionDenied,
            "unbounded_cost",
            format!(
                "this request starts {what}, whose cost KeyForge cannot bound before it runs, so keys with a budget may not make it; use a key without a budget for such work"
            ),
        ));
    }
    if let (false, Some(estimate)) = (entry.budgets.is_empty(), &estimate) {
        let worst = reserved_cost(state, ctx, target, estimate);
        admission.worst_cost = Some(worst);
        admission.reservation = keyforge_control::reserve(&entry.budgets, worst, ctx.arrived)
            .map_err(|exhausted| {
                if exhausted.first_in_period {
                    state.alerts.exhausted(&exhausted.status);
                }
                budget_exhausted(&exhausted, ctx.arrived)
            })?;
    }
    Ok(admission)
}

/// What a budget reserves for the request: its worst case, plus the
/// fallback charge for units no price covers, and at least the fallback
/// for a billable endpoint that reports no tokens.
fn reserved_cost(
    state: &AppState,
    ctx: &RequestContext,
    target: &Target,
    estimate: &Estimate,
) -> NanoUsd {
    let (mut worst, unpriced) = estimate.worst_cost(state, ctx, target);
    let fallback = state.config.spend.unmetered_request_cost;
    if unpriced {
        // Units no entry prices are charged the fallback on top.
        worst = worst.saturating_add(fallback);
    }
    if ctx.billable && !reports_tokens(&target.upstream_path) {
        // An endpoint that bills no tokens: a success it reports
        // nothing priceable for is charged at least the fallback.
        worst = NanoUsd(worst.0.max(fallback.0));
    }
    worst
}

/// 503 in the dialect's shape: Redis is unreachable and this key may not
/// be served without the shared counters (`[redis] on_unavailable`).
fn admission_unavailable(reason: &keyforge_control::Unavailable) -> GatewayError {
    GatewayError {
        class: ErrorClass::Unavailable,
        code: "admission_unavailable",
        message: format!(
            "KeyForge cannot reach the admission counters its cluster shares ({}), and this key is not served unmetered; retry shortly",
            reason.0
        ),
        // One info line per request; the outage itself is warned about
        // once by the counters when Redis stops answering.
        fault: crate::error::Fault::Client,
        headers: None,
    }
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Cluster mode: the same steps as the in-memory path (places in flight,
/// RPM, TPM for the key and each limited ancestor, then every budget at
/// once), each one atomic script on the counters every instance shares.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts, passed down one step"
)]
async fn admit_shared(
    state: &AppState,
    cluster: &Arc<Cluster>,
    ctx: &RequestContext,
    target: &Target,
    admission: &mut Admission,
    limited: &[&Arc<KeyEntry>],
    estimate: Option<&Estimate>,
    now_ns: i64,
) -> Result<(), SharedRefusal> {
    let entry = admission.entry.clone();
    if !entry.budgets.is_empty()
        && ctx.billable
        && let Some(what) = unbounded_work(&target.upstream_path)
    {
        return Err(SharedRefusal::Refused(unbounded_cost(what)));
    }
    let counters = &cluster.counters;
    admission.shared = Some(Shared {
        cluster: cluster.clone(),
        entry: entry.clone(),
        alerts: state.alerts.clone(),
        places: Vec::new(),
        requests: Vec::new(),
        tokens: Vec::new(),
        hold: None,
    });
    let unavailable = SharedRefusal::Unavailable;
    for level in limited {
        let own = Arc::ptr_eq(level, &entry);
        let whose = whose(&entry, level, own);
        let limits = level.limiters.limits;
        let id = level.record.id.as_str();
        if let (Some(max), Some(local)) = (limits.max_parallel, &level.limiters.in_flight) {
            match counters
                .enter(
                    Place {
                        name: id,
                        local,
                        max,
                    },
                    now_ns,
                )
                .await
            {
                Ok(place) => push(admission, |shared| shared.places.push(place)),
                Err(Refusal::Full { max }) => {
                    return Err(SharedRefusal::Refused(too_many_parallel(&whose, max)));
                }
                Err(Refusal::Unavailable(reason)) => return Err(unavailable(reason)),
                Err(other) => {
                    return Err(unavailable(keyforge_control::Unavailable(
                        other.to_string(),
                    )));
                }
            }
        }
        if let (Some(rpm), Some(local)) = (limits.rpm, &level.limiters.rpm) {
            let name = format!("{id}:rpm");
            let limit = u64::from(rpm);
            match counters
                .acquire(
                    Limiter {
                        name: &name,
                        local,
                        limit,
                    },
                    1,
                    now_ns,
                )
                .await
            {
                Ok(grant) => {
                    if own {
                        admission.requests = Some(grant);
                    }
                    push(admission, |shared| shared.requests.push((name, limit)));
                }
                Err(Refusal::Rate(denied)) => {
                    return Err(SharedRefusal::Refused(rpm_exceeded(&whose, denied)));
                }
                Err(Refusal::Unavailable(reason)) => return Err(unavailable(reason)),
                Err(other) => {
                    return Err(unavailable(keyforge_control::Unavailable(
                        other.to_string(),
                    )));
                }
            }
        }
        if let (Some(limit), Some(local), Some(estimate)) =
            (limits.tpm, &level.limiters.tpm, estimate)
        {
            let name = format!("{id}:tpm");
            let tokens = estimate.rate_tokens();
            match counters
                .acquire(
                    Limiter {
                        name: &name,
                        local,
                        limit,
                    },
                    tokens,
                    now_ns,
                )
                .await
            {
                Ok(grant) => {
                    if own {
                        admission.tokens = Some(grant);
                    }
                    push(admission, |shared| {
                        shared.tokens.push((name, limit, tokens))
                    });
                }
                Err(Refusal::Rate(denied)) => {
                    return Err(SharedRefusal::Refused(tpm_exceeded(&whose, tokens, denied)));
                }
                Err(Refusal::Unavailable(reason)) => return Err(unavailable(reason)),
                Err(other) => {
                    return Err(unavailable(keyforge_control::Unavailable(
                        other.to_string(),
                    )));
                }
            }
        }
    }
    if let (false, Some(estimate)) = (entry.budgets.is_empty(), estimate) {
        let worst = reserved_cost(state, ctx, target, estimate);
        admission.worst_cost = Some(worst);
        match counters.reserve(&entry.budgets, worst, ctx.arrived).await {
            Ok(hold) => push(admission, |shared| shared.hold = Some(hold)),
            Err(Refusal::Exhausted(exhausted)) => {
                if exhausted.first_in_period {
                    state.alerts.exhausted(&exhausted.status);
                }
                return Err(SharedRefusal::Refused(budget_exhausted(
                    &exhausted,
                    ctx.arrived,
                )));
            }
            Err(Refusal::Unavailable(reason)) => return Err(unavailable(reason)),
            Err(other) => {
                return Err(unavailable(keyforge_control::Unavailable(
                    other.to_string(),
                )));
            }
        }
    }
    Ok(())
}

fn push(admission: &mut Admission, add: impl FnOnce(&mut Shared)) {
    if let Some(shared) = admission.shared.as_mut() {
        add(shared);
    }
}

impl Shared {
    /// Gives back what the request took, in a task of its own: the hold
    /// settled to `settle` (cost, tokens used, when) or released, TPM
    /// estimates corrected, places left; RPM places too when the request
    /// was refused (a refused request takes no place in any limiter).
    fn give_back(self, settle: Option<(NanoUsd, u64, OffsetDateTime)>, now_ns: i64, refused: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): the leases free everything.
            return;
        };
        runtime.spawn(async move {
            let counters = &self.cluster.counters;
            let used = settle.map_or(0, |(_, tokens, _)| i64::try_from(tokens).unwrap_or(i64::MAX));
            for (name, limit, taken) in &self.tokens {
                let local = RateLimiter::new(*limit);
                let delta = used - i64::try_from(*taken).unwrap_or(i64::MAX);
                if let Err(error) = counters.adjust(Limiter { name, local: &local, limit: *limit }, delta, now_ns).await {
                    tracing::debug!(error = %error, "a TPM correction did not reach Redis");
                }
            }
            if refused {
                for (name, limit) in &self.requests {
                    let local = RateLimiter::new(*limit);
                    let _ = counters.adjust(Limiter { name, local: &local, limit: *limit }, -1, now_ns).await;
                }
            }
            if let Some(hold) = self.hold {
                match settle {
                    Some((cost, _, now)) => match counters.settle(hold, cost, now).await {
                        Ok(changes) => {
                            for change in &changes {
                                if let Some(cell) = self.entry.budgets.iter().find(|cell| cell.id() == &change.id) {
                                    cell.observe_spent(change.period_start_ms, NanoUsd(change.after), now);
                                }
                            }
                            self.alerts.observe(&changes);
                        }
                        Err(error) => tracing::warn!(error = %error, cost = cost.0, "a settlement did not reach Redis: its reservation holds the budget until its lease ends; the ledger has the cost"),
                    },
                    None => {
                        if let Err(error) = counters.release(hold).await {
                            tracing::debug!(error = %error, "a release did not reach Redis: its lease frees it");
                        }
                    }
                }
            }
            for place in self.places {
                if let Err(error) = counters.leave(place).await {
                    tracing::debug!(error = %error, "a place in flight was not left in Redis: its lease frees it");
                }
            }
        });
    }
}

/// Whose limits a refusal names.
fn whose(entry: &KeyEntry, level: &KeyEntry, own: bool) -> String {
    if own {
        format!("KeyForge key {}", level.record.id)
    } else {
        format!(
            "KeyForge key {}'s ancestor {} (its limits cover all its descendants)",
            entry.record.id, level.record.id
        )
    }
}

fn unbounded_cost(what: &str) -> GatewayError {
    GatewayError::client(
        ErrorClass::PermissionDenied,
        "unbounded_cost",
        format!(
            "this request starts {what}, whose cost KeyForge cannot bound before it runs, so keys with a budget may not make it; use a key without a budget for such work"
        ),
    )
}

fn too_many_parallel(whose: &str, max: u32) -> GatewayError {
    GatewayError::client(
        ErrorClass::RateLimited,
        "too_many_parallel_requests",
        format!("{whose} already has {max} requests in flight, its limit; retry when one finishes"),
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

fn rpm_exceeded(whose: &str, denied: RateDenied) -> GatewayError {
    rate_limited(
        format!(
            "{whose} is over its limit of {} requests per minute; retry in {}",
            denied.limit,
            human(denied.retry_after)
        ),
        denied,
        "requests",
    )
}

fn tpm_exceeded(whose: &str, tokens: u64, denied: RateDenied) -> GatewayError {
    if denied.too_large {
        return GatewayError::client(
            ErrorClass::RateLimited,
            "request_too_large_for_limit",
            format!(
                "this request may use up to {tokens} tokens (input estimate plus its output cap), more than the {} tokens per minute {whose} may use; lower the request's max tokens",
                denied.limit
            ),
        )
        .with_header(HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false"));
    }
    rate_limited(
        format!(
            "{whose} is over its limit of {} tokens per minute (this request may use up to {tokens}); retry in {}",
            denied.limit,
            human(denied.retry_after)
        ),
        denied,
        "tokens",
    )
}

/// Takes the request's place from one key's limiters: its own (`own`) or an
/// ancestor's.
fn admit_level(
    admission: &mut Admission,
    level: &KeyEntry,
    own: bool,
    estimate: Option<&Estimate>,
    now_ns: i64,
) -> Result<(), GatewayError> {
    let limiters = &level.limiters;
    let whose = if own {
        format!("KeyForge key {}", level.record.id)
    } else {
        format!(
            "KeyForge key {}'s ancestor {} (its limits cover all its descendants)",
            admission.entry.record.id, level.record.id
        )
    };
    admission.levels.push(Level {
        limiters: limiters.clone(),
        in_flight: None,
        request_taken: false,
        tpm_taken: 0,
    });
    let index = admission.levels.len() - 1;
    if let Some(in_flight) = &limiters.in_flight {
        let guard = in_flight.try_acquire().ok_or_else(|| {
            GatewayError::client(
                ErrorClass::RateLimited,
                "too_many_parallel_requests",
                format!(
                    "{whose} already has {} requests in flight, its limit; retry when one finishes",
                    in_flight.max()
                ),
            )
            .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
        })?;
        admission.levels[index].in_flight = Some(guard);
    }
    if let Some(rpm) = &limiters.rpm {
        match rpm.acquire(1, now_ns) {
            Ok(grant) => {
                admission.levels[index].request_taken = true;
                if own {
                    admission.requests = Some(grant);
                }
            }
            Err(denied) => {
                return Err(rate_limited(
                    format!(
                        "{whose} is over its limit of {} requests per minute; retry in {}",
                        denied.limit,
                        human(denied.retry_after)
                    ),
                    denied,
                    "requests",
                ));
            }
        }
    }
    if let (Some(tpm), Some(estimate)) = (&limiters.tpm, estimate) {
        let tokens = estimate.rate_tokens();
        match tpm.acquire(tokens, now_ns) {
            Ok(grant) => {
                admission.levels[index].tpm_taken = tokens;
                if own {
                    admission.tokens = Some(grant);
                }
            }
            Err(denied) if denied.too_large => {
                return Err(GatewayError::client(
                    ErrorClass::RateLimited,
                    "request_too_large_for_limit",
                    format!(
                        "this request may use up to {tokens} tokens (input estimate plus its output cap), more than the {} tokens per minute {whose} may use; lower the request's max tokens",
                        denied.limit
                    ),
                )
                .with_header(HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false")));
            }
            Err(denied) => {
                return Err(rate_limited(
                    format!(
                        "{whose} is over its limit of {} tokens per minute (this request may use up to {tokens}); retry in {}",
                        denied.limit,
                        human(denied.retry_after)
                    ),
                    denied,
                    "tokens",
                ));
            }
        }
    }
    Ok(())
}

impl Admission {
    pub(crate) fn input_estimate(&self) -> Option<u64> {
        self.input_estimate
    }

    /// What a success that reported nothing priceable is charged: the
    /// request's reserved worst case for token endpoints, else the
    /// configured per-request fallback.
    pub(crate) fn unmetered_cost(&self, upstream_path: &str, fallback: NanoUsd) -> NanoUsd {
        match self.worst_cost {
            Some(worst) if reports_tokens(upstream_path) => worst,
            Some(worst) => NanoUsd(worst.0.max(fallback.0)),
            None => fallback,
        }
    }

    /// The request is over: charge its actual cost to its budgets and give
    /// back what it did not use. Returns how each budget's spend moved.
    pub(crate) fn settle(
        mut self,
        cost: NanoUsd,
        tokens: u64,
        now: OffsetDateTime,
    ) -> Vec<SpendChange> {
        self.settled = true;
        if let Some(shared) = self.shared.take() {
            // Settled in Redis off the response's path; its alerts are
            // raised from there.
            shared.give_back(Some((cost, tokens, now)), unix_ns(now), false);
        }
        for level in &self.levels {
            if let Some(tpm) = &level.limiters.tpm {
                let delta = i64::try_from(tokens).unwrap_or(i64::MAX)
                    - i64::try_from(level.tpm_taken).unwrap_or(i64::MAX);
                tpm.adjust(delta, unix_ns(now));
            }
        }
        std::mem::replace(&mut self.reservation, Reservation::none()).settle(cost, now)
    }

    /// The key's own rate limits, as OpenAI reports an organisation's.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        for (grant, kind) in [(self.requests, "requests"), (self.tokens, "tokens")] {
            if let Some(grant) = grant {
                write_rate_headers(headers, kind, grant.limit, grant.remaining, grant.reset);
            }
        }
        // What this request's worst case held against its budgets, so an
        // operator can see why a budget refused or how tight it is.
        if let Some(worst) = self.worst_cost {
            headers.insert(RESERVED_HEADER, HeaderValue::from(worst.0));
        }
    }
}

impl Drop for Admission {
    /// Never settled (refused by a later check, or failed before reaching
    /// the provider): it used no tokens, and a refused request takes no
    /// place in any limiter. Reservations and in-flight places free
    /// themselves.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(shared) = self.shared.take() {
            shared.give_back(None, self.arrived_ns, false);
        }
        for level in &self.levels {
            if let Some(tpm) = &level.limiters.tpm {
                let taken = i64::try_from(level.tpm_taken).unwrap_or(i64::MAX);
                tpm.adjust(-taken, self.arrived_ns);
            }
        }
    }
}

/// Nano-USD reserved against the request's budgets (its worst case).
const RESERVED_HEADER: HeaderName = HeaderName::from_static("x-keyforge-reserved-nano-usd");

/// OpenAI's header names, per kind: limit, remaining, reset.
const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

fn write_rate_headers(
    headers: &mut HeaderMap,
    kind: &str,
    limit: u64,
    remaining: u64,
    reset: Duration,
) {
    let [limit_name, remaining_name, reset_name] = if kind == "requests" {
        REQUEST_HEADERS
    } else {
        TOKEN_HEADERS
    };
    headers.insert(limit_name, HeaderValue::from(limit));
    headers.insert(remaining_name, HeaderValue::from(remaining));
    if let Ok(value) = HeaderValue::from_str(&human(reset)) {
        headers.insert(reset_name, value);
    }
}

fn rate_limited(message: String, denied: RateDenied, kind: &str) -> GatewayError {
    let mut error = GatewayError::client(ErrorClass::RateLimited, "rate_limit_exceeded", message);
    let retry_ms = u64::try_from(denied.retry_after.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    error = error
        .with_header(
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_ms.div_ceil(1000)),
        )
        // The OpenAI and Anthropic SDKs prefer this precise form.
        .with_header(
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from(retry_ms),
        );
    write_rate_headers(
        error.headers_mut(),
        kind,
        denied.limit,
        denied.remaining,
        denied.reset,
    );
    error
}

fn budget_exhausted(exhausted: &Exhausted, now: OffsetDateTime) -> GatewayError {
    let status = &exhausted.status;
    let resets = match status.resets_at {
        Some(at) => format!("it resets at {}", at.format(&Rfc3339).unwrap_or_default()),
        None => "it is a total budget and does not reset".to_owned(),
    };
    let in_flight = if status.reserved.0 > 0 {
        format!(" and {} is held by requests in flight", status.reserved)
    } else {
        String::new()
    };
    let message = format!(
        "budget exhausted: the {} budget of {} ({}, {}) has {} spent{in_flight}; this request may cost up to {}; {resets}",
        period_adjective(status.limit.period),
        status.scope,
        status.limit,
        status.id,
        status.spent,
        exhausted.needed,
    );
    let mut error = GatewayError::client(ErrorClass::QuotaExceeded, "budget_exhausted", message)
        // Retrying at once cannot help: tell the SDKs not to.
        .with_header(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        );
    if let Some(at) = status.resets_at {
        let seconds = (at - now).whole_seconds().max(1);
        error = error.with_header(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    error
}

fn period_adjective(period: keyforge_types::Period) -> &'static str {
    match period {
        keyforge_types::Period::Hour => "hourly",
        keyforge_types::Period::Day => "daily",
        keyforge_types::Period::Week => "weekly",
        keyforge_types::Period::Month => "monthly",
        keyforge_types::Period::Total => "total",
    }
}

/// `850ms`, `12s`, `1.5s`, `6m0s`: the forms OpenAI's headers use.
fn human(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        let text = format!("{seconds:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text}s");
    }
    let whole = duration.as_secs();
    format!("{}m{}s", whole / 60, whole % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openai_headers() {
        let cases = [
            (Duration::from_millis(0), "0ms"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(1000), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(12_345), "12.345s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_secs(61), "1m1s"),
        ];
        for (duration, text) in cases {
            assert_eq!(human(duration), text);
        }
    }
}
