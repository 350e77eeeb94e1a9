//! A real gateway on 127.0.0.1:0 in-process, in front of the testkit's fake
//! upstream, with a small builder API.

#![expect(
    clippy::unwrap_used,
    reason = "test support: a failed setup must fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use keyforge_gateway::{Gateway, GatewayConfig, GatewayParts, ManualClock};
use keyforge_store::SqliteStore;
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use keyforge_vault::MasterKey;
use secrecy::SecretString;
use serde_json::{Value, json};
use time::macros::datetime;

/// The metrics token of every harness (`/metrics` on the main listener).
pub(crate) const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdefghij";

pub(crate) struct Harness {
    pub(crate) base: String,
    pub(crate) admin_token: String,
    pub(crate) upstream: FakeUpstream,
    pub(crate) provider_key: String,
    pub(crate) clock: ManualClock,
    pub(crate) http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::start_with(GatewayConfig::default()).await
    }

    pub(crate) async fn start_with(config: GatewayConfig) -> Self {
        let store = SqliteStore::open_in_memory().await.unwrap();
        Self::start_with_store(config, Arc::new(store), MasterKey::generate()).await
    }

    pub(crate) async fn start_with_store(
        config: GatewayConfig,
        store: Arc<dyn keyforge_store::Store>,
        master_key: MasterKey,
    ) -> Self {
        Self::start_serving(config, store, master_key).await.0
    }

    /// Also returns the gateway being served, for what has no HTTP route
    /// (a ledger retention round now).
    pub(crate) async fn start_serving(
        config: GatewayConfig,
        store: Arc<dyn keyforge_store::Store>,
        master_key: MasterKey,
    ) -> (Self, Gateway) {
        Self::start_serving_tls(config, store, master_key, None).await
    }

    /// Serves HTTPS with `tls` if given, with its client (which must
    /// trust the certificate's issuer); `base` is then
    /// `https://127.0.0.1:PORT`.
    pub(crate) async fn start_serving_tls(
        config: GatewayConfig,
        store: Arc<dyn keyforge_store::Store>,
        master_key: MasterKey,
        tls: Option<(keyforge_gateway::TlsCertificates, reqwest::Client)>,
    ) -> (Self, Gateway) {
        let admin_token = format!("kfadmin_{}", keyforge_types::random_base62(43));
        Self::start_serving_as(config, store, master_key, tls, admin_token).await
    }

    /// With the legacy admin token `admin_token`: a deployment restarted on
    /// the same store keeps its `admin.token`, and the owner it became at
    /// the first start answers to it.
    pub(crate) async fn start_serving_as(
        config: GatewayConfig,
        store: Arc<dyn keyforge_store::Store>,
        master_key: MasterKey,
        tls: Option<(keyforge_gateway::TlsCertificates, reqwest::Client)>,
        admin_token: String,
    ) -> (Self, Gateway) {
        let provider_key = fake_provider_key("provider");
        let upstream = FakeUpstream::start(&provider_key).await.unwrap();
        let clock = ManualClock::new(datetime!(2026-06-01 12:00:00 UTC));
        let gateway = Gateway::new(GatewayParts {
            config,
            store,
            master_key,
            admin_token: SecretString::from(admin_token.clone()),
            admin_token_created: false,
            clock: Arc::new(clock.clone()),
            prices: keyforge_providers::PriceTable::shipped().unwrap(),
            limits: keyforge_providers::LimitTable::shipped().unwrap(),
            metrics_token: Some(SecretString::from(METRICS_TOKEN.to_owned())),
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let (base, http) = match tls {
            None => {
                tokio::spawn(keyforge_gateway::serve(listener, gateway.clone(), stopped));
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                (format!("http://{address}"), http)
            }
            Some((tls, http)) => {
                tokio::spawn(keyforge_gateway::serve_tls(
                    listener,
                    gateway.clone(),
                    tls,
                    stopped,
                ));
                (format!("https://{address}"), http)
            }
        };
        let harness = Self {
            base,
            admin_token,
            upstream,
            provider_key,
            clock,
            http,
            _shutdown: shutdown,
        };
        (harness, gateway)
    }

    pub(crate) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Adds a provider pointing at the fake upstream with the right key
    /// (without the key check, so the fake records only the test's requests).
    pub(crate) async fn add_provider(&self, name: &str, kind: &str, env: &str) {
        self.add_provider_with(
            name,
            kind,
            env,
            &self.upstream.base_url(),
            &self.provider_key.clone(),
        )
        .await;
    }

    pub(crate) async fn add_provider_with(
        &self,
        name: &str,
        kind: &str,
        env: &str,
        base_url: &str,
        api_key: &str,
    ) {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/providers", Some(json!({"name": name, "kind": kind, "env": env, "base_url": base_url, "api_key": api_key, "skip_check": true})))
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Creates a key and returns (id, key text).
    pub(crate) async fn create_key(&self, spec: Value) -> (String, String) {
        let (status, body) = self.admin(reqwest::Method::POST, "/keys", Some(spec)).await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
