//! The client's address behind trusted proxies, with real TCP clients on
//! loopback (127.0.0.1 plays the proxy, 127.0.0.2 a client that is not
//! one): the forwarding header is believed only from a trusted peer, and
//! the address it names is what the new-address alert and the leak-report
//! rate limit see.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed setup must fail the test loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use keyforge_control::AnomalyConfig;
use keyforge_gateway::{ClientAddressHeader, GatewayConfig, TrustedProxies};
use serde_json::{Value, json};

async fn harness(header: ClientAddressHeader) -> Harness {
    Harness::start_with(GatewayConfig {
        anomaly: AnomalyConfig {
            learning_minutes: 3,
            ..AnomalyConfig::default()
        },
        trusted_proxies: TrustedProxies {
            networks: vec!["127.0.0.1/32".parse().unwrap()],
            header,
        },
        ..GatewayConfig::default()
    })
    .await
}

fn from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap()
}

async fn ask(harness: &Harness, http: &reqwest::Client, key: &str, header: Option<(&str, &str)>) {
    let mut request = http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

async fn anomaly_messages(harness: &Harness, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = harness
            .admin(reqwest::Method::GET, "/alerts/log", None)
            .await;
        let messages: Vec<String> = log["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| alert["kind"] == "anomaly")
            .map(|alert| alert["message"].as_str().unwrap().to_owned())
            .collect();
        if messages.len() >= expected {
            // Room for an alert that should not be there to show up.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return messages;
        }
        assert!(Instant::now() < deadline, "{log:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_forwarded_client_of_a_trusted_proxy_is_the_new_address_and_a_spoof_is_not() {
    for (header, name, value) in [
        (
            ClientAddressHeader::XForwardedFor,
            "x-forwarded-for",
            "203.0.113.50, 198.51.100.7",
        ),
        (
            ClientAddressHeader::Forwarded,
            "forwarded",
            "for=203.0.113.50, for=\"198.51.100.7:4711\";proto=https",
        ),
    ] {
        let harness = harness(header).await;
        harness.add_provider("openai", "openai", "dev").await;
        let (_, key) = harness
            .create_key(json!({"name": "svc", "env": "dev"}))
            .await;
        let proxy = from([127, 0, 0, 1]);
        ask(&harness, &proxy, &key, None).await;
        harness.clock.advance(Duration::from_secs(2 * 3600));
        // Through the proxy: the rightmost hop it did not add is the client.
        ask(&harness, &proxy, &key, Some((name, value))).await;
        // A client that is no trusted proxy claims an address: ignored, the
        // alert names its own.
        ask(
            &harness,
            &from([127, 0, 0, 2]),
            &key,
            Some((name, "192.0.2.99")),
        )
        .await;
        let messages = anomaly_messages(&harness, 2).await;
        assert_eq!(messages.len(), 2, "{name}: {messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.contains("new client address, 198.51.100.7")),
            "{name}: {messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("new client address, 127.0.0.2")),
            "{name}: {messages:?}"
        );
        let all = messages.join("\n");
        assert!(
            !all.contains("203.0.113.50") && !all.contains("192.0.2.99"),
            "{all}"
        );
    }
}

/// Leak reports are rate-limited per client address: behind the proxy,
/// each forwarded client has its own allowance; a client that is not a
/// proxy cannot escape its limit by claiming other addresses.
#[tokio::test]
async fn leak_report_limits_follow_the_forwarded_client_only_from_a_trusted_proxy() {
    let harness = harness(ClientAddressHeader::XForwardedFor).await;
    let report = |http: reqwest::Client, forwarded: String| {
        let url = harness.url("/keyforge/v1/leaks");
        async move {
            http.post(url)
                .header("x-forwarded-for", forwarded)
                .json(&Value::Array(Vec::new()))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let proxy = from([127, 0, 0, 1]);
    for n in 0..40 {
        let status = report(proxy.clone(), format!("198.51.100.{n}")).await;
        assert_eq!(status, 200, "forwarded client {n}");
    }
    let spoofer = from([127, 0, 0, 2]);
    let mut statuses = Vec::new();
    for n in 0..40 {
        statuses.push(report(spoofer.clone(), format!("198.51.100.{n}")).await);
    }
    assert!(
        statuses[..30].iter().all(|status| *status == 200),
        "{statuses:?}"
    );
    assert!(
        statuses[30..].iter().all(|status| *status == 429),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn without_trusted_proxies_no_forwarding_header_is_read() {
    let harness = Harness::start().await;
    let mut statuses = Vec::new();
    for n in 0..31 {
        let response = harness
            .http
            .post(harness.url("/keyforge/v1/leaks"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .header("forwarded", format!("for=198.51.100.{n}"))
            .json(&Value::Array(Vec::new()))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[29], 200);
    assert_eq!(statuses[30], 429, "{statuses:?}");
}
