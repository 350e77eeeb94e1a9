//! The worst case the gateway reserves for a request, as an operator sees
//! it: the `x-keyforge-reserved-nano-usd` header. Included by the test
//! binaries that need it (`#[path = "support/reserve.rs"] mod reserve;`).

#![expect(
    clippy::unwrap_used,
    reason = "test support: a failed probe must fail the test loudly"
)]

use serde_json::{Value, json};

use crate::common::Harness;

/// The worst case the gateway reserves for `body` sent to `path`, as it
/// reports it in `x-keyforge-reserved-nano-usd`, read from a request on
/// a probe key of environment `dev` with a large budget of its own.
pub(crate) async fn reserved_for(harness: &Harness, path: &str, body: &Value) -> i64 {
    let (_, probe) = harness
        .create_key(
            json!({"name": format!("probe-{}", keyforge_types::random_base62(6)), "env": "dev",
                           "budgets": [{"amount": 1_000_000_000_000_i64, "period": "day"}]}),
        )
        .await;
    let response = harness
        .http
        .post(harness.url(path))
        .bearer_auth(&probe)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reserved = response.headers()["x-keyforge-reserved-nano-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    response.bytes().await.unwrap();
    reserved
}
