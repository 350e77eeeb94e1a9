//! The budget promise, as a property: whatever hostile mix of requests a
//! key sends (every cap and multiplier field, floats, missing caps,
//! duplicate keys, stored input it does not carry, in every dialect, many
//! at once, streams cut at random points, clients leaving before the
//! headers) against an upstream that bills the most each request allows,
//! no budget's spend ever exceeds its limit, nothing stays reserved, and
//! every request the upstream received has a ledger row and a `key.use`
//! audit entry.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use futures_util::StreamExt;
use keyforge_providers::{Api, LimitTable};
use keyforge_testkit::MaxBilling;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The budget every case races for: a few dozen worst cases.
const BUDGET_NANO_USD: i64 = 250_000_000;

#[derive(Debug, Clone, Copy)]
enum Dialect {
    Chat,
    Completions,
    Responses,
    Anthropic,
    Gemini,
}

/// How an output cap is written.
#[derive(Debug, Clone, Copy)]
enum Cap {
    Missing,
    Int(u64),
    /// `16000.0`
    Float(u64),
    /// A cap the provider cannot read (negative): the model's maximum.
    Negative,
}

/// What the client does with its response.
#[derive(Debug, Clone, Copy)]
enum Client {
    ReadAll,
    /// Reads one chunk of the stream, then hangs up.
    CutAfterFirstChunk,
    /// Gives up before the upstream answers (the upstream thinks 400 ms).
    LeaveBeforeHeaders,
}

#[derive(Debug, Clone)]
struct Hostile {
    dialect: Dialect,
    cap: Cap,
    /// `n`, `best_of` or `candidateCount`, and whether written as a float.
    copies: Option<(u64, bool)>,
    /// Gemini's snake_case spellings (`generation_config`); on legacy
    /// completions, a list of prompts.
    snake_case: bool,
    stream: bool,
    /// Refers to input it does not carry (`previous_response_id`).
    stored_input: bool,
    /// Names `max_tokens` twice.
    duplicate: bool,
    client: Client,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        prop_oneof![
            Just(Dialect::Chat),
            Just(Dialect::Completions),
            Just(Dialect::Responses),
            Just(Dialect::Anthropic),
            Just(Dialect::Gemini),
        ],
        prop_oneof![
            Just(Cap::Missing),
            (1_u64..9_000).prop_map(Cap::Int),
            (1_u64..9_000).prop_map(Cap::Float),
            Just(Cap::Negative),
        ],
        proptest::option::of((1_u64..9, any::<bool>())),
        any::<bool>(),
        any::<bool>(),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.1),
        prop_oneof![
            3 => Just(Client::ReadAll),
            1 => Just(Client::CutAfterFirstChunk),
            1 => Just(Client::LeaveBeforeHeaders),
        ],
    )
        .prop_map(
            |(dialect, cap, copies, snake_case, stream, stored_input, duplicate, client)| Hostile {
                dialect,
                cap,
                copies,
                snake_case,
                stream,
                stored_input,
                duplicate,
                client,
            },
        )
}

fn number(value: u64, float: bool) -> String {
    if float {
        format!("{value}.0")
    } else {
        value.to_string()
    }
}

/// The request as the client writes it: (path, model, body text).
fn build(request: &Hostile) -> (String, &'static str, String) {
    let cap = match request.cap {
        Cap::Missing => None,
        Cap::Int(value) => Some(number(value, false)),
        Cap::Float(value) => Some(number(value, true)),
        Cap::Negative => Some("-1".to_owned()),
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    let text = json!("please write a long story about budgets").to_string();
    let wait = matches!(request.client, Client::LeaveBeforeHeaders);
    let (path, model) = match request.dialect {
        Dialect::Chat | Dialect::Completions | Dialect::Responses => {
            let (path, cap_field, copies_field) = match request.dialect {
                Dialect::Chat => ("/openai/v1/chat/completions", "max_completion_tokens", "n"),
                Dialect::Completions => ("/openai/v1/completions", "max_tokens", "best_of"),
                _ => ("/openai/v1/responses", "max_output_tokens", "n"),
            };
            fields.push(("model".into(), json!("gpt-4o-mini").to_string()));
            match request.dialect {
                Dialect::Chat => fields.push((
                    "messages".into(),
                    json!([{"role": "user", "content": "please write a long story"}]).to_string(),
                )),
                // A list of prompts (each gets its completions) when the
                // snake_case flag is drawn.
                Dialect::Completions if request.snake_case => fields.push((
                    "prompt".into(),
                    json!(["first story", "second story", "third story"]).to_string(),
                )),
                Dialect::Completions => fields.push(("prompt".into(), text.clone())),
                _ => fields.push(("input".into(), text.clone())),
            }
            if let Some(cap) = &cap {
                fields.push((cap_field.into(), cap.clone()));
            }
            if let Some((copies, float)) = request.copies
                && !matches!(request.dialect, Dialect::Responses)
            {
                fields.push((copies_field.into(), number(copies, float)));
            }
            if request.stored_input && matches!(request.dialect, Dialect::Responses) {
                fields.push((
                    "previous_response_id".into(),
                    json!("resp_earlier").to_string(),
                ));
            }
            (path.to_owned(), "gpt-4o-mini")
        }
        Dialect::Anthropic => {
            fields.push(("model".into(), json!("claude-3-5-haiku-latest").to_string()));
            fields.push((
                "messages".into(),
                json!([{"role": "user", "content": "please write a long story"}]).to_string(),
            ));
            if let Some(cap) = &cap {
                fields.push(("max_tokens".into(), cap.clone()));
            }
            (
                "/anthropic/v1/messages".to_owned(),
                "claude-3-5-haiku-latest",
            )
        }
        Dialect::Gemini => {
            let (config, max, count) = if request.snake_case {
                ("generation_config", "max_output_tokens", "candidate_count")
            } else {
                ("generationConfig", "maxOutputTokens", "candidateCount")
            };
            let mut inner = Vec::new();
            if let Some(cap) = &cap {
                inner.push(format!("\"{max}\":{cap}"));
            }
            if let Some((copies, float)) = request.copies {
                inner.push(format!("\"{count}\":{}", number(copies.min(8), float)));
            }
            fields.push((
                "contents".into(),
                json!([{"parts": [{"text": "please write a long story"}]}]).to_string(),
            ));
            fields.push((config.into(), format!("{{{}}}", inner.join(","))));
            let method = if request.stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            (
                format!("/gemini/v1beta/models/gemini-2.0-flash:{method}"),
                "gemini-2.0-flash",
            )
        }
    };
    if request.stream && !matches!(request.dialect, Dialect::Gemini) {
        fields.push(("stream".into(), "true".into()));
    }
    if wait {
        fields.push(("metadata_tag".into(), json!("fake-wait").to_string()));
    }
    if request.duplicate {
        fields.push(("max_tokens".into(), "1".into()));
        fields.push(("max_tokens".into(), "8000".into()));
    }
    let body = fields
        .iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect::<Vec<_>>()
        .join(",");
    (path, model, format!("{{{body}}}"))
}

/// Sends the request as the client behaves; returns the request id and the
/// reservation the gateway reported, when the response's headers arrived.
async fn send(harness: &Harness, key: &str, request: &Hostile) -> Option<(String, i64)> {
    let (path, _, body) = build(request);
    let mut builder = harness
        .http
        .post(harness.url(&path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(body);
    if matches!(request.client, Client::LeaveBeforeHeaders) {
        builder = builder.timeout(Duration::from_millis(100));
    }
    let Ok(response) = builder.send().await else {
        return None;
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reserved = header("x-keyforge-request-id")
        .zip(header("x-keyforge-reserved-nano-usd").and_then(|v| v.parse::<i64>().ok()));
    match request.client {
        Client::CutAfterFirstChunk => {
            let mut stream = response.bytes_stream();
            let _ = stream.next().await;
        }
        _ => {
            let _ = response.bytes().await;
        }
    }
    reserved
}

/// The `key.use` entries of `key_id`'s requests.
async fn key_uses(harness: &Harness, key_id: &str) -> Vec<Value> {
    let text = harness
        .http
        .get(harness.url("/admin/v1/audit?limit=10000"))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|entry| entry["kind"] == "key.use")
        .flat_map(|entry| {
            entry["data"]["uses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|used| used["key_id"] == key_id)
        .collect()
}

async fn ledger_rows(harness: &Harness, key_id: &str) -> u64 {
    let (_, report) = harness
        .admin(
            reqwest::Method::GET,
            &format!("/usage?key={key_id}&since=1d"),
            None,
        )
        .await;
    report["total"]["requests"].as_u64().unwrap_or(0)
}

async fn run_case(requests: Vec<Hostile>) {
    let harness = Harness::start().await;
    for (name, kind) in [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("gemini", "gemini"),
    ] {
        harness.add_provider(name, kind, "dev").await;
    }
    let (key_id, key) = harness
        .create_key(json!({"name": "hostile", "env": "dev", "budgets": [{"amount": BUDGET_NANO_USD, "period": "day"}]}))
        .await;
    // The upstream bills every uncapped request the model's maximum output:
    // the most a provider can bill. The three models share the table's
    // smallest maximum so one figure serves them all.
    let limits = LimitTable::shipped().unwrap();
    let uncapped = [
        (Api::OpenAi, "gpt-4o-mini"),
        (Api::Anthropic, "claude-3-5-haiku-latest"),
        (Api::Gemini, "gemini-2.0-flash"),
    ]
    .iter()
    .map(|(api, model)| limits.lookup(*api, model).0.max_output_tokens)
    .min()
    .unwrap();
    harness.upstream.bill_maximum(Some(MaxBilling {
        uncapped_output_tokens: uncapped,
        stored_input_tokens: 100_000,
    }));
    let mut reserved = std::collections::HashMap::new();
    for wave in requests.chunks(6) {
        let answers = futures_util::future::join_all(
            wave.iter().map(|request| send(&harness, &key, request)),
        )
        .await;
        reserved.extend(answers.into_iter().flatten());
    }
    // Requests whose client left are settled in the background.
    let received = harness.upstream.requests().len() as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    while ledger_rows(&harness, &key_id).await < received {
        assert!(
            Instant::now() < deadline,
            "the upstream received {received} requests, the ledger has {}",
            ledger_rows(&harness, &key_id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        ledger_rows(&harness, &key_id).await,
        received,
        "{requests:#?}"
    );
    let uses = key_uses(&harness, &key_id).await;
    assert_eq!(uses.len() as u64, received);
    // Each request's reservation was an upper bound of what it was billed.
    let mut checked = 0;
    for used in &uses {
        if let Some(held) = reserved.get(used["request_id"].as_str().unwrap()) {
            let cost = used["cost_nano_usd"].as_i64().unwrap();
            assert!(cost <= *held, "billed {cost} > reserved {held}: {used}");
            checked += 1;
        }
    }
    assert!(checked > 0, "no admitted request reported its reservation");
    let (_, budgets) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    for budget in budgets["budgets"].as_array().unwrap() {
        let spent = budget["spent_nano_usd"].as_i64().unwrap();
        assert!(
            spent <= BUDGET_NANO_USD,
            "overshoot: {budget} after {requests:#?}"
        );
        assert_eq!(budget["reserved_nano_usd"], 0, "{budget}");
    }
    // A new day: the daily budget starts afresh.
    harness.clock.advance(Duration::from_secs(86_400));
    let (_, budgets) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    assert_eq!(budgets["budgets"][0]["spent_nano_usd"], 0, "{budgets}");
}

#[test]
fn no_hostile_mix_overshoots_a_budget_or_goes_unrecorded() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 6,
        max_shrink_iters: 20,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(&proptest::collection::vec(hostile(), 24..36), |requests| {
            runtime.block_on(run_case(requests));
            Ok(())
        })
        .unwrap();
}
