//! Test support: a faithful fake of the OpenAI, Anthropic and Gemini APIs on
//! loopback. It answers in each provider's JSON and SSE formats with usage
//! blocks and error shapes, checks the provider key it is sent, and records
//! every request so tests can assert what reached "the provider".
//!
//! Token counts are deterministic: input tokens are the whitespace-separated
//! words of the prompt text, output tokens the words generated (one per SSE
//! delta), capped by the request's max tokens.
//!
//! Special models change behaviour: `fake-error-500` (a provider 500),
//! `fake-rate-limit` (a provider 429), `fake-slow` (a stream of one word
//! every 100 ms, for cancellation tests).
//!
//! [`WebhookSink`] receives alert webhooks and can fail the first few.
//! [`TestIssuer`] is an OIDC issuer (discovery, JWKS, signing) for workload
//! identity tests. [`tls`] makes a CA and server certificates at test time.
//!
//! Only ever a dev-dependency of KeyForge's crates (and the fake-upstream
//! binary the benchmarks run).

mod fake;
mod oidc;
pub mod tls;
mod webhook;

pub use fake::{FakeUpstream, MaxBilling, RecordedRequest, fake_provider_key};
pub use oidc::{ACTIONS_REQUEST_TOKEN, TestIssuer, github_claims, kubernetes_claims};
pub use webhook::WebhookSink;
