//! Slow and numerous clients cannot exhaust the gateway: a body trickled a
//! byte at a time is cut at `body_read_timeout` on every route that reads
//! one before any credential is checked, one address cannot hold more than
//! `max_connections_per_client` connections, and `/healthz` answers
//! throughout. (Regression: 1,019 such connections exhausted the file
//! descriptors and `/healthz` stopped answering.)

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test loudly"
)]

#[expect(dead_code, reason = "this test needs only part of the shared harness")]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Harness;
use keyforge_gateway::GatewayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DEADLINE: Duration = Duration::from_millis(300);
const PER_CLIENT: usize = 40;
const SLOW_CONNECTIONS: usize = 80;
const ROUTES: [&str; 4] = [
    "/keyforge/v1/leaks",
    "/keyforge/v1/oidc/login",
    "/keyforge/v1/keys",
    "/admin/v1/keys",
];

#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Answered 408 and closed, this long after the headers were sent.
    Cut(Duration),
    /// Refused at once (a 503, or closed before anything was read).
    Refused { got_503: bool },
}

/// Sends a request head announcing a 1,000-byte body, then a byte every
/// 50 ms, until the gateway answers or closes.
async fn trickle(mut stream: TcpStream, route: &'static str) -> Fate {
    let head = format!(
        "POST {route} HTTP/1.1\r\nhost: keyforge\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n["
    );
    let started = Instant::now();
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            _ = tick.tick() => {
                // Writes fail once the gateway has closed; the read says how.
                let _ = stream.write_all(b" ").await;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            panic!("{route}: the slow body was never cut");
        }
    }
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 408") {
        assert!(text.contains("body_timeout"), "{text}");
        Fate::Cut(started.elapsed())
    } else {
        let got_503 = text.starts_with("HTTP/1.1 503");
        assert!(got_503 || text.is_empty(), "{route}: {text}");
        if got_503 {
            assert!(
                text.to_ascii_lowercase().contains("retry-after: 1"),
                "{text}"
            );
        }
        Fate::Refused { got_503 }
    }
}

/// `GET /healthz` from `from` (another loopback address than the slow
/// clients', so their cap does not apply to it).
async fn healthz(addr: SocketAddr, from: [u8; 4]) -> bool {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("Linux routes all of 127/8 to loopback");
    let Ok(mut stream) = socket.connect(addr).await else {
        return false;
    };
    let request = "GET /healthz HTTP/1.1\r\nhost: keyforge\r\nconnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await;
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_and_one_address_cannot_take_every_connection() {
    let harness = Harness::start_with(GatewayConfig {
        body_read_timeout: DEADLINE,
        max_connections_per_client: PER_CLIENT,
        max_connections: 200,
        ..GatewayConfig::default()
    })
    .await;
    let addr: SocketAddr = harness.base.trim_start_matches("http://").parse().unwrap();
    assert!(healthz(addr, [127, 0, 0, 2]).await);

    // Every connection is open before the first body starts, so the first
    // `PER_CLIENT` accepted hold their slots while the rest are refused.
    let mut streams = Vec::new();
    for _ in 0..SLOW_CONNECTIONS {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    let slow: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| tokio::spawn(trickle(stream, ROUTES[i % ROUTES.len()])))
        .collect();
    // While they trickle, another client is served.
    let mut checks = 0;
    while !slow.iter().all(tokio::task::JoinHandle::is_finished) {
        assert!(
            healthz(addr, [127, 0, 0, 2]).await,
            "/healthz stopped answering"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(checks > 0);

    let mut cut = Vec::new();
    let mut refused = 0;
    let mut refused_with_503 = 0;
    for task in slow {
        match task.await.unwrap() {
            Fate::Cut(after) => cut.push(after),
            Fate::Refused { got_503 } => {
                refused += 1;
                refused_with_503 += usize::from(got_503);
            }
        }
    }
    assert_eq!(cut.len(), PER_CLIENT, "one address holds at most its cap");
    assert_eq!(refused, SLOW_CONNECTIONS - PER_CLIENT);
    assert!(refused_with_503 > 0, "refusals say 503 with Retry-After");
    for after in &cut {
        assert!(*after >= DEADLINE, "cut before the deadline: {after:?}");
    }
    // The slots are free again, for the slow clients' own address too.
    assert!(healthz(addr, [127, 0, 0, 1]).await);
}

/// Found by a tester: a client that pipelines requests and never reads the
/// answers held its connection (and its place under the caps) for ever.
/// Once its receive window is full for `write_stall_timeout`, the gateway
/// closes the connection.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let harness = Harness::start_with(GatewayConfig {
        write_stall_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    let addr: SocketAddr = harness.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    const REQUESTS: usize = 200_000;
    tokio::spawn(async move {
        let all = b"GET /healthz HTTP/1.1\r\nhost: k\r\n\r\n".repeat(REQUESTS);
        let _ = write.write_all(&all).await;
    });
    // The client reads nothing for two seconds, well past the limit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut total = 0;
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the connection was still open after {total} bytes"),
        }
    }
    // Each answer is over 60 bytes: far fewer than all of them arrived.
    assert!(
        total < REQUESTS * 60 / 2,
        "{total} bytes: the gateway kept writing"
    );
}
