//! TLS on the listener, end to end with real clients: HTTP/1.1 and HTTP/2
//! (ALPN), streams over both, a reload seen by new connections while an
//! open stream goes on, a bad reload that changes nothing, clear refusals
//! of bad files that never show a key, and handshakes that time out.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup must fail the test loudly"
)]

#[expect(
    dead_code,
    reason = "this file starts its gateways only through the TLS constructor"
)]
mod common;

use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use keyforge_gateway::{GatewayConfig, TlsCertificates, TlsError, TlsFiles};
use keyforge_testkit::tls::{KeyKind, ServerCert, TestCa, pem_block};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
    files: TlsFiles,
    first: ServerCert,
}

fn pki() -> Pki {
    let ca = TestCa::new("KeyForge test CA").unwrap();
    let first = ca.server_cert(KeyKind::EcdsaP256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = first.write(dir.path()).unwrap();
    Pki {
        ca,
        dir,
        files: TlsFiles { cert, key },
        first,
    }
}

fn client(ca: &TestCa, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .tls_info(true)
        .timeout(Duration::from_secs(20));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn served_cert(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the response carries its TLS session's certificate")
        .to_vec()
}

async fn start(pki: &Pki, config: GatewayConfig, http1_only: bool) -> (Harness, TlsCertificates) {
    let tls = TlsCertificates::load(pki.files.clone()).unwrap();
    let store = keyforge_store::SqliteStore::open_in_memory().await.unwrap();
    let (harness, _) = Harness::start_serving_tls(
        config,
        std::sync::Arc::new(store),
        keyforge_vault::MasterKey::generate(),
        Some((tls.clone(), client(&pki.ca, http1_only))),
    )
    .await;
    harness.add_provider("openai", "openai", "dev").await;
    (harness, tls)
}

fn chat(stream: bool, model: &str) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn http2_and_http1_over_tls_proxy_and_stream() {
    let pki = pki();
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let (harness, _tls) = start(&pki, GatewayConfig::default(), http1_only).await;
        assert!(harness.base.starts_with("https://127.0.0.1:"));
        let (_, key) = harness
            .create_key(json!({"name": "app", "env": "dev"}))
            .await;
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat(false, "gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(served_cert(&response), pki.first.cert_der);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion", "{body}");
        // A stream arrives event by event, whole, over either protocol.
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat(true, "fake-slow"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), version);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{version:?}"
        );
        let mut stream = response.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: {"), "{first:?}");
        assert_eq!(
            harness.upstream.streams_cancelled(),
            0,
            "the first event came before the upstream finished"
        );
        let mut text = String::from_utf8(first.to_vec()).unwrap();
        while let Some(chunk) = stream.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        assert!(text.ends_with("data: [DONE]\n\n"), "{version:?}: {text}");
        // The admin API works through TLS too.
        let (status, _) = harness.admin(reqwest::Method::GET, "/keys", None).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn plain_http_to_a_tls_listener_gets_no_answer() {
    let pki = pki();
    let (harness, _tls) = start(&pki, GatewayConfig::default(), false).await;
    let plain = harness.base.replace("https://", "http://");
    let result = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn a_reload_reaches_new_connections_while_an_open_stream_goes_on() {
    let pki = pki();
    let (harness, tls) = start(&pki, GatewayConfig::default(), false).await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat(true, "fake-slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(served_cert(&response), pki.first.cert_der);
    let mut stream = response.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();

    // The certificate is renewed (a new key too) while the stream is open.
    let second = pki.ca.server_cert(KeyKind::Rsa2048).unwrap();
    second.write(pki.dir.path()).unwrap();
    let loaded = tls.reload().unwrap();
    assert_eq!(loaded.chain_len, 1);

    // A new connection (a new client: the old one would reuse its h2
    // connection) is served the new certificate.
    let fresh = client(&pki.ca, false);
    let response = fresh.get(harness.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_cert(&response), second.cert_der);

    // The open stream was not dropped: it ends whole.
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(harness.upstream.streams_cancelled(), 0);
}

#[tokio::test]
async fn a_bad_reload_keeps_serving_the_certificate_in_force() {
    let pki = pki();
    let (harness, tls) = start(&pki, GatewayConfig::default(), false).await;
    let other = pki.ca.server_cert(KeyKind::EcdsaP256).unwrap();
    // A renewal half done: the new certificate, the old key.
    std::fs::write(&pki.files.cert, &other.cert_pem).unwrap();
    let error = tls.reload().unwrap_err();
    assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
    // A truncated file.
    std::fs::write(&pki.files.cert, &other.cert_pem[..other.cert_pem.len() / 2]).unwrap();
    assert!(tls.reload().is_err());
    let response = client(&pki.ca, false)
        .get(harness.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_cert(&response), pki.first.cert_der);
}

/// Every way a certificate or key file can be wrong: refused with a
/// message that names the file and never holds a line of the key.
#[test]
fn bad_files_are_refused_clearly_and_never_show_the_key() {
    let pki = pki();
    let dir = pki.dir.path();
    let other = pki.ca.server_cert(KeyKind::EcdsaP256).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good_cert = pki.files.cert.clone();
    let good_key = pki.files.key.clone();
    let cases: Vec<(&str, TlsFiles, &str)> = vec![
        (
            "missing certificate",
            TlsFiles {
                cert: dir.join("absent.pem"),
                key: good_key.clone(),
            },
            "cannot read the TLS certificate file",
        ),
        (
            "missing key",
            TlsFiles {
                cert: good_cert.clone(),
                key: dir.join("absent-key.pem"),
            },
            "cannot read the TLS key file",
        ),
        (
            "empty certificate file",
            TlsFiles {
                cert: write("empty.pem", ""),
                key: good_key.clone(),
            },
            "holds no PEM certificate",
        ),
        (
            "key given as the certificate",
            TlsFiles {
                cert: good_key.clone(),
                key: good_key.clone(),
            },
            "holds no PEM certificate",
        ),
        (
            "certificate given as the key",
            TlsFiles {
                cert: good_cert.clone(),
                key: good_cert.clone(),
            },
            "holds no private key in PEM",
        ),
        (
            "key of another certificate",
            TlsFiles {
                cert: good_cert.clone(),
                key: write("other-key.pem", &other.key_pem),
            },
            "does not belong to the first certificate",
        ),
        (
            "corrupt key",
            TlsFiles {
                cert: good_cert.clone(),
                key: write(
                    "corrupt-key.pem",
                    &pem_block("PRIVATE KEY", &pki.first.key_der[..20]),
                ),
            },
            "cannot sign TLS handshakes",
        ),
        (
            "key base64 broken",
            TlsFiles {
                cert: good_cert.clone(),
                key: write("broken-key.pem", &pki.first.key_pem.replacen('M', "!", 3)),
            },
            "holds no private key in PEM",
        ),
    ];
    // Key material that must never appear in a message.
    let key_lines: Vec<String> = [&pki.first.key_pem, &other.key_pem]
        .iter()
        .flat_map(|pem| pem.lines())
        .filter(|line| !line.starts_with("-----"))
        .map(|line| line.chars().take(16).collect())
        .collect();
    for (name, files, expected) in cases {
        let error = TlsCertificates::load(files.clone())
            .map(|_| ())
            .expect_err(name);
        let message = error.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        let named = if expected.contains("certificate file") || expected.contains("PEM certificate")
        {
            &files.cert
        } else {
            &files.key
        };
        assert!(
            message.contains(&named.display().to_string()),
            "{name}: the message names the file: {message}"
        );
        for line in &key_lines {
            assert!(
                !message.contains(line.as_str()),
                "{name}: key bytes in {message}"
            );
        }
        let debug = format!("{error:?}");
        for line in &key_lines {
            assert!(
                !debug.contains(line.as_str()),
                "{name}: key bytes in {debug}"
            );
        }
    }
}

#[test]
fn every_pem_key_form_and_a_chain_are_accepted() {
    let ca = TestCa::new("KeyForge test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa2048] {
        let cert = ca.server_cert(kind).unwrap();
        let (cert_path, key_path) = cert.write(dir.path()).unwrap();
        // PKCS#8.
        let loaded = TlsCertificates::load(TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
        })
        .unwrap();
        assert_eq!(loaded.current().chain_len, 1);
        // PKCS#1 (RSA) or SEC1 (EC).
        let legacy = cert.legacy_key_pem(kind).unwrap();
        assert!(
            legacy.starts_with("-----BEGIN RSA PRIVATE KEY-----")
                || legacy.starts_with("-----BEGIN EC PRIVATE KEY-----")
        );
        std::fs::write(&key_path, legacy).unwrap();
        TlsCertificates::load(TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
        })
        .unwrap_or_else(|error| panic!("{kind:?} legacy key: {error}"));
        // A chain: the server's certificate, then the CA's.
        std::fs::write(&cert_path, format!("{}{}", cert.cert_pem, ca.cert_pem)).unwrap();
        let loaded = TlsCertificates::load(TlsFiles {
            cert: cert_path,
            key: key_path,
        })
        .unwrap();
        assert_eq!(loaded.current().chain_len, 2);
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_loses_its_slot() {
    let pki = pki();
    let config = GatewayConfig {
        max_connections_per_client: 1,
        tls_handshake_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    };
    let (harness, _tls) = start(&pki, config, false).await;
    let address: std::net::SocketAddr =
        harness.base.trim_start_matches("https://").parse().unwrap();
    // Clients from 127.0.0.2: the harness's own pooled connection (from
    // 127.0.0.1) holds no slot of theirs.
    let here = std::net::IpAddr::from([127, 0, 0, 2]);
    let fresh = || {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.cert_pem.as_bytes()).unwrap()])
            .local_address(here)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((here, 0).into()).unwrap();
    let mut silent = socket.connect(address).await.unwrap();
    let started = std::time::Instant::now();
    // While the silent client (it sends nothing) holds the address's only
    // slot, a real client from there is refused ...
    let refused = fresh().get(harness.url("/healthz")).send().await;
    assert!(refused.is_err(), "the slot is taken: {refused:?}");
    // ... the gateway closes the silent one at the handshake deadline ...
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the gateway closed the connection");
    assert_eq!(read.unwrap(), 0);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // ... and the address is served again.
    let response = fresh().get(harness.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_metrics_listener_serves_https_too() {
    let pki = pki();
    let (harness, tls) = start(&pki, GatewayConfig::default(), false).await;
    let store = keyforge_store::SqliteStore::open_in_memory().await.unwrap();
    let gateway = keyforge_gateway::Gateway::new(keyforge_gateway::GatewayParts {
        config: GatewayConfig::default(),
        store: std::sync::Arc::new(store),
        master_key: keyforge_vault::MasterKey::generate(),
        admin_token: secrecy::SecretString::from(format!(
            "kfadmin_{}",
            keyforge_types::random_base62(43)
        )),
        admin_token_created: false,
        clock: std::sync::Arc::new(keyforge_gateway::SystemClock),
        prices: keyforge_providers::PriceTable::shipped().unwrap(),
        limits: keyforge_providers::LimitTable::shipped().unwrap(),
        metrics_token: None,
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(keyforge_gateway::serve_metrics(
        listener,
        gateway,
        Some(tls),
        std::future::pending(),
    ));
    let response = harness
        .http
        .get(format!("https://{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_cert(&response), pki.first.cert_der);
    let text = response.text().await.unwrap();
    assert!(text.contains("keyforge_open_connections"), "{text}");
    let plain = reqwest::Client::new()
        .get(format!("http://{address}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP on the TLS metrics listener: {plain:?}"
    );
}
