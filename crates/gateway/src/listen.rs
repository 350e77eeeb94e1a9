//! What keeps slow or numerous clients from exhausting the gateway: a cap on
//! open connections (global and per client address), a backoff when
//! `accept` fails (out of file descriptors), a total deadline and a size
//! limit on every request body outside the proxy (which bounds its own),
//! and rate-limited warnings so a flood cannot flood the log either.
//!
//! Without these, 1,019 connections each sending a body one byte every two
//! seconds to an unauthenticated route exhausted the process's file
//! descriptors (`accept failed: Too many open files`) and `/healthz`
//! stopped answering.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};

use crate::admin::AdminError;
use crate::state::AppState;

/// Largest body accepted by `/admin/v1` and `/keyforge/v1` (413 above it):
/// axum's own default, which these routes had before; their requests are
/// small JSON documents.
pub(crate) const MAX_API_BODY_BYTES: usize = 2 * 1024 * 1024;

/// First wait after a failed `accept`; doubled on each failure in a row.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// Longest wait after a failed `accept`.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counts of open connections, global and per client address.
#[expect(
    clippy::disallowed_types,
    reason = "a few integer operations per connection accepted or closed, never across an await, never on the request path"
)]
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max: usize,
    per_client: usize,
    /// (open in all, open per address). A `std::sync::Mutex`: taken once
    /// when a connection is accepted and once when it closes, for a few
    /// integer operations, never across an `.await`; the request path
    /// never takes it.
    open: std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Global,
    /// `max_connections_per_client` are open from this address.
    PerClient,
}

/// One admitted connection; its slot is given back when it is dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
}

impl ConnectionLimits {
    #[expect(
        clippy::disallowed_types,
        reason = "the connection counts' lock, explained at the field"
    )]
    pub(crate) fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            per_client: per_client.max(1),
            open: std::sync::Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a slot for a connection from `client`, or says which cap is
    /// reached. `proxy`: `client` is a trusted proxy, whose connections
    /// carry many clients, so only the global cap applies to it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        proxy: bool,
    ) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_client) = &mut *open;
        if *total >= self.max {
            return Err(Refusal::Global);
        }
        let mine = per_client.entry(client).or_insert(0);
        if *mine >= self.per_client && !proxy {
            return Err(Refusal::PerClient);
        }
        *mine += 1;
        *total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            client,
        })
    }

    /// Open connections (in all, from `client`).
    #[cfg(test)]
    fn open(&self, client: IpAddr) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        (open.0, open.1.get(&client).copied().unwrap_or(0))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_client) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            // Forgetting idle addresses keeps the map as small as the set
            // of clients connected now.
            if *mine == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// What a refused connection is sent before it is closed: a complete
/// HTTP/1.1 503 that tells clients (and their retry logic) to come back.
pub(crate) fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let message = match refusal {
        Refusal::Global => "the gateway has as many open connections as it accepts; retry shortly",
        Refusal::PerClient => {
            "this address has as many open connections to the gateway as it may; close some or retry shortly"
        }
    };
    let body = serde_json::json!({"error": {"code": "too_many_connections", "message": message}})
        .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Exponential backoff for a failing `accept`: out of file descriptors
/// (EMFILE, ENFILE) it fails again at once, so retrying without a pause
/// spins a core and starves the connections that would free them.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    pub(crate) fn new() -> Self {
        Self {
            next: ACCEPT_BACKOFF_FIRST,
        }
    }

    /// The wait after one more failure in a row.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(ACCEPT_BACKOFF_MAX);
        wait
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = ACCEPT_BACKOFF_FIRST;
    }
}

/// Lets one warning through per interval and counts the ones it held back,
/// so a flood of refusals logs a line a second, not a line a connection.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    start: Instant,
    interval_ms: i64,
    /// Milliseconds since `start` of the last warning let through
    /// (`i64::MIN`: none yet).
    last_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            last_ms: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a warning may be logged now, `n` being how many were
    /// held back since the last one; `None` to stay quiet.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    fn allow_at(&self, now_ms: i64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != i64::MIN && now_ms.saturating_sub(last) < self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self
            .last_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Reads the whole request body within `body_read_timeout` and
/// [`MAX_API_BODY_BYTES`] before the handler runs, for `/admin/v1` and
/// `/keyforge/v1` (the proxy bounds its bodies itself, as it streams them).
/// A body still arriving at the deadline is answered 408 and the
/// connection closed, so a client trickling bytes holds a connection for
/// the deadline at most.
pub(crate) async fn bounded_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = state.config.body_read_timeout;
    let (parts, body) = request.into_parts();
    let collected =
        tokio::time::timeout(deadline, Limited::new(body, MAX_API_BODY_BYTES).collect()).await;
    let refusal = match collected {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, axum::body::Body::from(collected.to_bytes()));
            return next.run(request).await;
        }
        Err(_) => AdminError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms (limits.body_read_timeout)",
                deadline.as_millis()
            ),
        ),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => AdminError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a request body here is at most {MAX_API_BODY_BYTES} bytes"),
        ),
        Ok(Err(_)) => AdminError::bad_request("the request body could not be read"),
    };
    // The rest of the body may still be on its way: the connection cannot
    // carry another request, so say so and let hyper close it.
    let mut response = refusal.into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// A connection whose writes give up when the client stops reading: a write
/// that makes no progress for `limit` (the client's receive window stays
/// full) fails, and hyper closes the connection, freeing its place. Reads
/// pass through untouched; pauses of the response itself (a slow upstream)
/// are not stalls, since nothing is being written then.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// The write is pending: has it been pending too long?
    fn poll_stall<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading its response",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(result) => {
                this.stalled = None;
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => this.poll_stall(cx),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Ready(result) => {
                this.stalled = None;
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => this.poll_stall(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Ready(result) => {
                this.stalled = None;
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => this.poll_stall(cx),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_hold_globally_and_per_address_and_slots_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let one = IpAddr::from([10, 0, 0, 1]);
        let two = IpAddr::from([10, 0, 0, 2]);
        let three = IpAddr::from([10, 0, 0, 3]);
        let a = limits.admit(one, false).unwrap();
        let _b = limits.admit(one, false).unwrap();
        assert_eq!(limits.admit(one, false).unwrap_err(), Refusal::PerClient);
        let _c = limits.admit(two, false).unwrap();
        assert_eq!(limits.admit(three, false).unwrap_err(), Refusal::Global);
        assert_eq!(limits.open(one), (3, 2));
        drop(a);
        assert_eq!(limits.open(one), (2, 1));
        assert!(
            limits.admit(three, false).is_ok(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn a_trusted_proxy_is_held_only_to_the_global_cap() {
        let limits = ConnectionLimits::new(3, 1);
        let proxy = IpAddr::from([10, 0, 0, 1]);
        let _a = limits.admit(proxy, true).unwrap();
        let _b = limits.admit(proxy, true).unwrap();
        let _c = limits.admit(proxy, true).unwrap();
        assert_eq!(limits.admit(proxy, true).unwrap_err(), Refusal::Global);
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut backoff = AcceptBackoff::new();
        let waits: Vec<u128> = (0..10).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(5));
    }

    #[test]
    fn warnings_are_let_through_once_per_interval() {
        let limiter = WarnLimiter::new(Duration::from_secs(1));
        let check = |at_ms: i64, expected: Option<u64>| {
            assert_eq!(limiter.allow_at(at_ms), expected, "at {at_ms} ms");
        };
        check(0, Some(0));
        check(10, None);
        check(999, None);
        check(1000, Some(2));
        check(1500, None);
        check(5000, Some(1));
    }

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let text = String::from_utf8(refusal_response(Refusal::PerClient)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
