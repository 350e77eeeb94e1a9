//! A webhook receiver on loopback: records every POST it gets and can be
//! told to fail the first N with a 500, to test retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;

#[derive(Debug, Default)]
struct SinkState {
    fail_first: AtomicUsize,
    attempts: AtomicUsize,
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    received: std::sync::Mutex<Vec<(String, serde_json::Value)>>,
}

/// A running webhook receiver. It stops when the test's runtime ends.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
}

impl WebhookSink {
    /// Starts on 127.0.0.1; the first `fail_first` requests get a 500.
    pub async fn start(fail_first: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState {
            fail_first: AtomicUsize::new(fail_first),
            ..SinkState::default()
        });
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    /// A URL on this receiver, with a path like Slack's secret ones.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every POST accepted (2xx), as (path, JSON body).
    pub fn received(&self) -> Vec<(String, serde_json::Value)> {
        self.state
            .received
            .lock()
            .map(|guard| guard.clone())
            .unwrap_or_default()
    }

    /// Every request, accepted or failed.
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<Arc<SinkState>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> StatusCode {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if let Ok(mut received) = state.received.lock() {
        received.push((uri.path().to_owned(), value));
    }
    StatusCode::OK
}
