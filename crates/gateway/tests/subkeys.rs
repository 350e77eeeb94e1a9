//! Agent sub-keys: child keys that can only narrow their parent, spend
//! against the parent's budgets, die with the parent, and can be minted by a
//! `kf_` key allowed to (through `/keyforge/v1`, no admin token).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;
#[path = "support/reserve.rs"]
mod reserve;

use common::Harness;
use reqwest::Method;
use serde_json::{Value, json};

fn chat() -> Value {
    json!({"model": "agent-test-model", "max_tokens": 16,
           "messages": [{"role": "user", "content": "hello"}]})
}

async fn call(harness: &Harness, key: &str) -> (u16, Value) {
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A `kf_` key acting on itself.
async fn as_key(
    harness: &Harness,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = harness
        .http
        .request(method, harness.url(&format!("/keyforge/v1{path}")))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn setup() -> Harness {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("claude", "anthropic", "dev").await;
    harness
}

#[tokio::test]
async fn a_child_inherits_what_it_leaves_out_and_every_widening_is_refused() {
    let harness = setup().await;
    let (parent, _) = harness
        .create_key(json!({
            "name": "orchestrator", "env": "dev", "project": "agents",
            "providers": ["openai"], "models": ["agent-*"], "ttl": "2h",
            "limits": {"rpm": 60}, "on_anomaly": "suspend",
            "budgets": [{"amount": 1_000_000_000, "period": "day"}],
        }))
        .await;
    let (child, child_key) = harness
        .create_key(json!({"name": "agent-1", "parent": parent}))
        .await;
    let (status, view) = harness
        .admin(Method::GET, &format!("/keys/{child}"), None)
        .await;
    assert_eq!(status, 200, "{view}");
    let (_, parent_view) = harness
        .admin(Method::GET, &format!("/keys/{parent}"), None)
        .await;
    assert_eq!(view["parent"], parent.as_str());
    assert_eq!(view["env"], "dev");
    assert_eq!(view["project"], "agents");
    assert_eq!(view["scope"], parent_view["scope"]);
    assert_eq!(view["limits"]["rpm"], 60);
    assert_eq!(view["expires_at"], parent_view["expires_at"]);
    assert_eq!(view["on_anomaly"], "suspend");
    assert_eq!(view["origin"], "admin");
    // The parent's day budget is among the child's budgets.
    let budget_scopes: Vec<String> = view["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["scope"].to_string())
        .collect();
    assert!(
        budget_scopes.iter().any(|scope| scope.contains(&parent)),
        "{budget_scopes:?}"
    );
    assert_eq!(call(&harness, &child_key).await.0, 200);

    let widenings = [
        (json!({"providers": ["claude"]}), "provider `claude`"),
        (json!({"models": ["*"]}), "model pattern `*`"),
        (json!({"limits": {"rpm": 61}}), "rpm 61"),
        (json!({"ttl": "3h"}), "cannot outlive it"),
        (
            json!({"budgets": [{"amount": 2_000_000_000, "period": "day"}]}),
            "above the parent key's",
        ),
        (json!({"env": "prod"}), "parent's environment `dev`"),
        (json!({"project": "other"}), "parent's project `agents`"),
    ];
    for (extra, expected) in widenings {
        let mut spec = json!({"name": "too-wide", "parent": parent});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = harness.admin(Method::POST, "/keys", Some(spec)).await;
        assert_eq!(status, 403, "{extra}: {body}");
        assert_eq!(body["error"]["code"], "exceeds_parent", "{extra}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{extra}: {message}");
    }
    // Narrower is fine.
    let (status, body) = harness
        .admin(
            Method::POST,
            "/keys",
            Some(
                json!({"name": "narrow", "parent": parent, "models": ["agent-test-*"],
                        "ttl": "30m", "limits": {"rpm": 5},
                        "budgets": [{"amount": 100_000_000, "period": "day"}]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["limits"]["rpm"], 5);

    // The child inherited the parent's expiry: both end together.
    harness
        .clock
        .advance(std::time::Duration::from_secs(2 * 3600 + 60));
    let (status, body) = call(&harness, &child_key).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at"),
        "{body}"
    );

    // No such parent.
    let (status, body) = harness
        .admin(
            Method::POST,
            "/keys",
            Some(json!({"name": "orphan", "parent": "key_0000000000000000000000"})),
        )
        .await;
    assert!(status == 404 || status == 400, "{status} {body}");
}

#[tokio::test]
async fn a_minting_key_mints_children_whose_spend_counts_against_it() {
    let harness = setup().await;
    // One worst case fits; after one real request, a second does not.
    let worst = reserve::reserved_for(&harness, "/openai/v1/chat/completions", &chat()).await;
    let (parent, parent_key) = harness
        .create_key(json!({
            "name": "orchestrator", "env": "dev", "can_mint": true,
            "budgets": [{"amount": worst + 1, "period": "day"}],
        }))
        .await;
    let (_, plain_key) = harness
        .create_key(json!({"name": "plain", "env": "dev"}))
        .await;

    // A key without the right cannot mint.
    let (status, body) = as_key(
        &harness,
        &plain_key,
        Method::POST,
        "/keys",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "cannot_mint");
    // Without any key: 401.
    let response = harness
        .http
        .post(harness.url("/keyforge/v1/keys"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (status, minted) = as_key(
        &harness,
        &parent_key,
        Method::POST,
        "/keys",
        Some(json!({"name": "agent-1", "ttl": "10m"})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let child = minted["id"].as_str().unwrap().to_owned();
    let child_key = minted["key"].as_str().unwrap().to_owned();
    assert_eq!(minted["parent"], parent.as_str());
    assert_eq!(minted["origin"], format!("key:{parent}"));
    assert!(child_key.starts_with("kf_dev_"));

    // The child describes itself and the providers it reaches.
    let (status, me) = as_key(&harness, &child_key, Method::GET, "/keys/self", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["key"]["id"], child.as_str());
    let kinds: Vec<&str> = me["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["anthropic", "openai"]);

    // The child may not pass on a right it does not have.
    let (status, body) = as_key(
        &harness,
        &child_key,
        Method::POST,
        "/keys",
        Some(json!({"name": "grandchild"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // The child's spend is the parent's: its second request no longer fits
    // the parent's budget.
    let (status, body) = call(&harness, &child_key).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&harness, &child_key).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exhausted", "{body}");
    let (_, budgets) = harness.admin(Method::GET, "/budgets", None).await;
    let parent_budget = budgets["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"].to_string().contains(&parent))
        .unwrap()
        .clone();
    // The ledger is written in batches: wait for the child's row.
    let mut child_spend = 0;
    for _ in 0..100 {
        let (_, usage) = harness
            .admin(Method::GET, &format!("/usage?key={child}"), None)
            .await;
        child_spend = usage["total"]["cost_nano_usd"].as_i64().unwrap_or(0);
        if child_spend > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(child_spend > 0);
    assert_eq!(
        parent_budget["spent_nano_usd"], child_spend,
        "{parent_budget}"
    );
    // The parent is refused too: the budget is shared.
    assert_eq!(call(&harness, &parent_key).await.0, 429);

    // The mint is in the audit log, by the parent key.
    let audit = harness
        .http
        .get(harness.url("/admin/v1/audit?limit=50"))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let entry = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["kind"] == "key.create" && line["data"]["id"] == child.as_str())
        .unwrap();
    assert_eq!(entry["actor"], format!("key:{parent}"));
    assert!(!audit.contains(&child_key));
}

#[tokio::test]
async fn revoking_a_parent_stops_its_whole_tree_at_once() {
    let harness = setup().await;
    let (root, root_key) = harness
        .create_key(json!({"name": "root", "env": "dev", "can_mint": true}))
        .await;
    let (child, child_key) = harness
        .create_key(json!({"name": "child", "parent": root, "can_mint": true}))
        .await;
    let (status, minted) = as_key(
        &harness,
        &child_key,
        Method::POST,
        "/keys",
        Some(json!({"name": "grandchild"})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let grandchild = minted["id"].as_str().unwrap().to_owned();
    let grandchild_key = minted["key"].as_str().unwrap().to_owned();
    let (other, other_key) = harness
        .create_key(json!({"name": "bystander", "env": "dev"}))
        .await;
    for key in [&root_key, &child_key, &grandchild_key, &other_key] {
        assert_eq!(call(&harness, key).await.0, 200);
    }

    // A key can revoke inside its own tree only, and cannot tell whether a
    // key outside it exists.
    let (status, body) = as_key(
        &harness,
        &child_key,
        Method::POST,
        &format!("/keys/{other}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(call(&harness, &other_key).await.0, 200);

    let (status, body) = harness
        .admin(Method::POST, &format!("/keys/{root}/revoke"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "revoked");
    let mut expected = vec![child.clone(), grandchild.clone()];
    expected.sort();
    assert_eq!(body["descendants"], json!(expected));
    for key in [&root_key, &child_key, &grandchild_key] {
        let (status, body) = call(&harness, key).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("revoked"),
            "{body}"
        );
    }
    assert_eq!(call(&harness, &other_key).await.0, 200);
    // Nothing can be minted under a revoked key.
    let (status, body) = harness
        .admin(
            Method::POST,
            "/keys",
            Some(json!({"name": "late", "parent": child})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "parent_not_usable");
}

#[tokio::test]
async fn a_key_revokes_itself_and_its_children() {
    let harness = setup().await;
    let (_, parent_key) = harness
        .create_key(json!({"name": "job", "env": "dev", "can_mint": true}))
        .await;
    let (status, minted) = as_key(
        &harness,
        &parent_key,
        Method::POST,
        "/keys",
        Some(json!({"name": "step"})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let child_key = minted["key"].as_str().unwrap().to_owned();
    let (status, body) = as_key(
        &harness,
        &parent_key,
        Method::POST,
        "/keys/self/revoke",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["descendants"], json!([minted["id"]]));
    assert_eq!(call(&harness, &parent_key).await.0, 401);
    assert_eq!(call(&harness, &child_key).await.0, 401);
    // A revoked key can do nothing more here either.
    let (status, _) = as_key(&harness, &parent_key, Method::GET, "/keys/self", None).await;
    assert_eq!(status, 401);
}

/// A parent's rate limits bound its whole tree: ten agents under a parent
/// limited to 3 requests a minute make 3 requests a minute between them,
/// not 30.
#[tokio::test]
async fn a_parents_rate_limit_covers_all_its_children_together() {
    let harness = setup().await;
    let (parent, _) = harness
        .create_key(json!({"name": "team", "env": "dev", "limits": {"rpm": 3}}))
        .await;
    let (_, first) = harness
        .create_key(json!({"name": "agent-a", "parent": parent}))
        .await;
    let (_, second) = harness
        .create_key(json!({"name": "agent-b", "parent": parent}))
        .await;
    assert_eq!(call(&harness, &first).await.0, 200);
    assert_eq!(call(&harness, &first).await.0, 200);
    assert_eq!(call(&harness, &second).await.0, 200);
    let (status, body) = call(&harness, &second).await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("ancestor {parent}"))
            && message.contains("3 requests per minute"),
        "{message}"
    );
    // A minute later the tree has its allowance back.
    harness.clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(call(&harness, &second).await.0, 200);
}
