//! A test OIDC issuer on loopback: keys generated at start (RSA-2048 and
//! P-256), OIDC discovery at `/.well-known/openid-configuration`, the JWKS at
//! `/jwks`, and signing of any token a test needs, including malformed and
//! malicious ones (`alg: none`, HS256 keyed with the public key, unknown
//! `kid`s). Tokens are shaped like GitHub Actions' or Kubernetes' by the
//! claims a test passes; see [`github_claims`] and [`kubernetes_claims`].
//!
//! It also speaks the OAuth 2.0 device authorization grant (RFC 8628) for
//! humans' logins: `POST /device/code` and `POST /token` (named in the
//! discovery document), with the wire format of sections 3.1 to 3.5 (form
//! bodies; `authorization_pending`, `slow_down`, `access_denied`,
//! `expired_token` as 400 `{"error": ...}`). A test plays the user with
//! [`TestIssuer::approve_device`] and [`TestIssuer::deny_device`], and
//! reads what clients did in [`TestIssuer::device_log`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// One signing key of the issuer.
#[derive(Debug)]
enum SigningKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

#[derive(Debug)]
struct IssuerState {
    url: String,
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    keys: std::sync::Mutex<Vec<(String, Arc<SigningKey>)>>,
    jwks_fetches: AtomicUsize,
    /// Claims of the token the fake GitHub Actions token service hands out.
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    actions_claims: std::sync::Mutex<Option<Value>>,
    /// The device authorization grant's codes (RFC 8628).
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    device: std::sync::Mutex<DeviceState>,
}

/// What the device endpoints hand out and remember.
#[derive(Debug)]
struct DeviceState {
    /// `interval` of new device codes, seconds.
    interval: u64,
    /// `expires_in` of new device codes, seconds.
    expires_in: u64,
    /// Answer `slow_down` to this many polls that are otherwise on time
    /// (an issuer under load), then go on as usual.
    forced_slow_downs: usize,
    grants: Vec<DeviceGrant>,
    log: DeviceLog,
}

#[derive(Debug)]
struct DeviceGrant {
    client_id: String,
    device_code: String,
    user_code: String,
    issued: std::time::Instant,
    expires_in: std::time::Duration,
    /// The interval the client must keep, raised by each `slow_down`.
    interval: std::time::Duration,
    last_poll: Option<std::time::Instant>,
    decision: DeviceDecision,
}

#[derive(Debug, Clone)]
enum DeviceDecision {
    Pending,
    Approved(Value),
    Denied,
    /// Exchanged for tokens: the device code is used up.
    Done,
}

/// What the token endpoint answered to device-code polls, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceLog {
    /// One entry per poll: `authorization_pending`, `slow_down`,
    /// `access_denied`, `expired_token`, `invalid_grant`, or `tokens`.
    pub answers: Vec<String>,
    /// Polls that came sooner than the interval in force (the client did
    /// not wait `interval`, or did not add 5 s after a `slow_down`); each
    /// was answered `slow_down`, as RFC 8628 section 3.5 says.
    pub too_early: usize,
    /// Scopes of the device authorization requests, in order.
    pub scopes: Vec<String>,
}

/// The bearer token the fake GitHub Actions token service expects (what
/// GitHub puts in `ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
pub const ACTIONS_REQUEST_TOKEN: &str = "actions-request-token-for-tests";

/// A running test issuer. It stops when the test's runtime ends.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    pub addr: SocketAddr,
    state: Arc<IssuerState>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    fn jwk(&self, kid: &str) -> Value {
        match self {
            SigningKey::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            SigningKey::Ec(pair) => {
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                })
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                if pair
                    .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .is_err()
                {
                    return Vec::new();
                }
                signature
            }
            SigningKey::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
        }
    }
}

fn generate_rsa() -> std::io::Result<SigningKey> {
    RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map(SigningKey::Rsa)
        .map_err(|_| std::io::Error::other("RSA key generation failed"))
}

fn generate_ec() -> std::io::Result<SigningKey> {
    EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map(SigningKey::Ec)
        .map_err(|_| std::io::Error::other("EC key generation failed"))
}

impl TestIssuer {
    /// Starts on 127.0.0.1 with an RSA key (`rsa-1`) and an EC key (`ec-1`).
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        #[expect(
            clippy::disallowed_types,
            reason = "test support: a tiny critical section that never crosses an await"
        )]
        let (keys, actions_claims) = (
            std::sync::Mutex::new(vec![
                ("rsa-1".to_owned(), Arc::new(generate_rsa()?)),
                ("ec-1".to_owned(), Arc::new(generate_ec()?)),
            ]),
            std::sync::Mutex::new(None),
        );
        #[expect(
            clippy::disallowed_types,
            reason = "test support: a tiny critical section that never crosses an await"
        )]
        let device = std::sync::Mutex::new(DeviceState {
            interval: 1,
            expires_in: 600,
            forced_slow_downs: 0,
            grants: Vec::new(),
            log: DeviceLog::default(),
        });
        let state = Arc::new(IssuerState {
            url: format!("http://{addr}"),
            keys,
            jwks_fetches: AtomicUsize::new(0),
            actions_claims,
            device,
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/actions-token", get(actions_token))
            .route("/device/code", axum::routing::post(device_authorization))
            .route("/token", axum::routing::post(token))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    /// The issuer URL (`iss` of its tokens).
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// The JWKS document as served (for configuring it inline or as a file).
    pub fn jwks(&self) -> Value {
        jwks_document(&self.state)
    }

    /// Serves GitHub Actions' token service at [`Self::actions_url`]: it
    /// answers `{"value": <token>}` with these claims, `aud` set to the
    /// requested audience, to a request bearing [`ACTIONS_REQUEST_TOKEN`].
    pub fn serve_actions_token(&self, claims: Value) {
        if let Ok(mut slot) = self.state.actions_claims.lock() {
            *slot = Some(claims);
        }
    }

    /// What GitHub puts in `ACTIONS_ID_TOKEN_REQUEST_URL`.
    pub fn actions_url(&self) -> String {
        format!("{}/actions-token?api-version=2.0", self.state.url)
    }

    /// Sets `interval` and `expires_in` (seconds) of the device codes
    /// handed out from now on (defaults: 1 and 600).
    pub fn set_device_timing(&self, interval: u64, expires_in: u64) {
        if let Ok(mut device) = self.state.device.lock() {
            device.interval = interval;
            device.expires_in = expires_in;
        }
    }

    /// The next `count` polls that keep the interval are answered
    /// `slow_down` anyway (an issuer asking clients to back off).
    pub fn force_slow_downs(&self, count: usize) {
        if let Ok(mut device) = self.state.device.lock() {
            device.forced_slow_downs = count;
        }
    }

    /// The user codes handed out and not yet decided, oldest first.
    pub fn pending_user_codes(&self) -> Vec<String> {
        self.state
            .device
            .lock()
            .map(|device| {
                device
                    .grants
                    .iter()
                    .filter(|grant| matches!(grant.decision, DeviceDecision::Pending))
                    .map(|grant| grant.user_code.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user entered `user_code` and approved: the next poll gets an
    /// ID token with these claims (`iss`, `aud` = the client id, `iat`,
    /// `exp` in an hour and `nbf` filled in where the claims lack them),
    /// signed with RS256. Returns whether the code was known.
    pub fn approve_device(&self, user_code: &str, claims: Value) -> bool {
        self.decide_device(user_code, DeviceDecision::Approved(claims))
    }

    /// The user entered `user_code` and denied: the next poll gets
    /// `access_denied`.
    pub fn deny_device(&self, user_code: &str) -> bool {
        self.decide_device(user_code, DeviceDecision::Denied)
    }

    /// The device code of `user_code` expires now: the next poll gets
    /// `expired_token`.
    pub fn expire_device(&self, user_code: &str) -> bool {
        let Ok(mut device) = self.state.device.lock() else {
            return false;
        };
        match device
            .grants
            .iter_mut()
            .find(|grant| grant.user_code == user_code)
        {
            Some(grant) => {
                grant.expires_in = std::time::Duration::ZERO;
                true
            }
            None => false,
        }
    }

    fn decide_device(&self, user_code: &str, decision: DeviceDecision) -> bool {
        let Ok(mut device) = self.state.device.lock() else {
            return false;
        };
        match device
            .grants
            .iter_mut()
            .find(|grant| grant.user_code == user_code)
        {
            Some(grant) => {
                grant.decision = decision;
                true
            }
            None => false,
        }
    }

    /// What the token endpoint answered to device-code polls so far.
    pub fn device_log(&self) -> DeviceLog {
        self.state
            .device
            .lock()
            .map(|device| device.log.clone())
            .unwrap_or_default()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Adds a new RSA key under `kid` (a key rotation at the issuer); with
    /// `retire_others`, the old keys leave the JWKS.
    pub fn rotate(&self, kid: &str, retire_others: bool) -> std::io::Result<()> {
        let key = Arc::new(generate_rsa()?);
        let mut keys = self
            .state
            .keys
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        if retire_others {
            keys.clear();
        }
        keys.push((kid.to_owned(), key));
        Ok(())
    }

    fn key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        let keys = self.state.keys.lock().ok()?;
        keys.iter()
            .find(|(id, _)| id == kid)
            .map(|(_, key)| key.clone())
    }

    /// A token signed with RS256 by the key `rsa-1` (or the newest RSA key
    /// after a rotation that retired it).
    pub fn sign_rs256(&self, claims: &Value) -> String {
        let kid = self
            .state
            .keys
            .lock()
            .ok()
            .and_then(|keys| {
                keys.iter()
                    .rev()
                    .find(|(_, key)| matches!(**key, SigningKey::Rsa(_)))
                    .map(|(kid, _)| kid.clone())
            })
            .unwrap_or_default();
        self.sign_with_key(&kid, "RS256", claims)
    }

    /// A token signed with ES256 by the key `ec-1`.
    pub fn sign_es256(&self, claims: &Value) -> String {
        self.sign_with_key("ec-1", "ES256", claims)
    }

    /// A token whose header names `kid` and `alg`, signed by the key `kid`
    /// (or by nothing if the issuer has no such key: the signature is then
    /// random bytes).
    pub fn sign_with_key(&self, kid: &str, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match self.key(kid) {
            Some(key) => key.sign(signing_input.as_bytes()),
            None => vec![7; 256],
        };
        format!("{signing_input}.{}", b64(&signature))
    }

    /// An unsigned token (`alg: none`, empty signature).
    pub fn unsigned(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT"});
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    /// The classic algorithm confusion: HS256 keyed with the issuer's public
    /// RSA key (as its JWKS entry's text), which anyone can fetch.
    pub fn hs256_with_public_key(&self, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let secret = self
            .key("rsa-1")
            .map(|key| key.jwk("rsa-1").to_string())
            .unwrap_or_default();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", b64(tag.as_ref()))
    }
}

fn jwks_document(state: &IssuerState) -> Value {
    let keys: Vec<Value> = state
        .keys
        .lock()
        .map(|keys| keys.iter().map(|(kid, key)| key.jwk(kid)).collect())
        .unwrap_or_default();
    json!({ "keys": keys })
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "issuer": state.url,
        "jwks_uri": format!("{}/jwks", state.url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "device_authorization_endpoint": format!("{}/device/code", state.url),
        "token_endpoint": format!("{}/token", state.url),
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code"],
    }))
}

async fn actions_token(
    State(state): State<Arc<IssuerState>>,
    headers: http::HeaderMap,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<Value>, http::StatusCode> {
    let authorized = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {ACTIONS_REQUEST_TOKEN}"));
    if !authorized {
        return Err(http::StatusCode::UNAUTHORIZED);
    }
    let mut claims = state
        .actions_claims
        .lock()
        .ok()
        .and_then(|slot| slot.clone())
        .ok_or(http::StatusCode::NOT_FOUND)?;
    if let Some(audience) = query.get("audience") {
        claims["aud"] = json!(audience);
    }
    let issuer = TestIssuer {
        addr: "127.0.0.1:0"
            .parse()
            .map_err(|_| http::StatusCode::INTERNAL_SERVER_ERROR)?,
        state,
    };
    Ok(axum::Json(
        json!({"value": issuer.sign_rs256(&claims), "count": 1}),
    ))
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> axum::Json<Value> {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(jwks_document(&state))
}

/// Claims shaped like a GitHub Actions OIDC token for `repository` at
/// `git_ref`, issued by `issuer` for `audience`, valid from `now` (Unix
/// seconds) for five minutes, as GitHub issues them.
pub fn github_claims(
    issuer: &str,
    audience: &str,
    repository: &str,
    git_ref: &str,
    now: i64,
) -> Value {
    let owner = repository.split('/').next().unwrap_or_default();
    json!({
        "jti": format!("jti-{now}-{repository}"),
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "aud": audience,
        "ref": git_ref,
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "repository": repository,
        "repository_id": "123456789",
        "repository_owner": owner,
        "repository_owner_id": "987654",
        "run_id": "1000001",
        "run_number": "7",
        "run_attempt": "1",
        "repository_visibility": "private",
        "actor": "octocat",
        "actor_id": "1",
        "workflow": "CI",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "environment": "production",
        "job_workflow_ref": format!("{repository}/.github/workflows/ci.yml@{git_ref}"),
        "iss": issuer,
        "nbf": now - 5,
        "exp": now + 300,
        "iat": now,
    })
}

/// Claims shaped like a projected Kubernetes service-account token for
/// `namespace`/`service_account`.
pub fn kubernetes_claims(
    issuer: &str,
    audience: &str,
    namespace: &str,
    service_account: &str,
    now: i64,
) -> Value {
    json!({
        "aud": [audience],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": issuer,
        "jti": format!("k8s-{now}"),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-1", "uid": "2f5b0e6a-0000-4000-8000-000000000001"},
            "pod": {"name": format!("{service_account}-7d9f8"), "uid": "2f5b0e6a-0000-4000-8000-000000000002"},
            "serviceaccount": {"name": service_account, "uid": "2f5b0e6a-0000-4000-8000-000000000003"},
        },
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
    })
}

/// A random text of `len` characters from `alphabet`.
fn random_text(alphabet: &[u8], len: usize) -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = vec![0u8; len];
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes
        .iter()
        .map(|byte| char::from(alphabet[usize::from(*byte) % alphabet.len()]))
        .collect()
}

fn form_fields(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// An OAuth error answer: 400 with `{"error": ...}` (RFC 6749 section
/// 5.2), never cached.
fn oauth_error(code: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        http::StatusCode::BAD_REQUEST,
        [(http::header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": code})),
    )
        .into_response()
}

fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"))
}

/// RFC 8628 section 3.1/3.2: `client_id` (and `scope`) in a form body;
/// answers the device code, the user code (`XXXX-XXXX` of consonants, as
/// section 6.1 suggests), the verification URIs, `expires_in` and
/// `interval`.
async fn device_authorization(
    State(state): State<Arc<IssuerState>>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if !is_form(&headers) {
        return oauth_error("invalid_request");
    }
    let fields = form_fields(&body);
    let Some(client_id) = fields.get("client_id").filter(|id| !id.is_empty()) else {
        return oauth_error("invalid_client");
    };
    let Ok(mut device) = state.device.lock() else {
        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let consonants = b"BCDFGHJKLMNPQRSTVWXZ";
    let user_code = format!(
        "{}-{}",
        random_text(consonants, 4),
        random_text(consonants, 4)
    );
    let device_code = random_text(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        43,
    );
    let scope = fields.get("scope").cloned().unwrap_or_default();
    device.log.scopes.push(scope);
    let (interval, expires_in) = (device.interval, device.expires_in);
    device.grants.push(DeviceGrant {
        client_id: client_id.clone(),
        device_code: device_code.clone(),
        user_code: user_code.clone(),
        issued: std::time::Instant::now(),
        expires_in: std::time::Duration::from_secs(expires_in),
        interval: std::time::Duration::from_secs(interval),
        last_poll: None,
        decision: DeviceDecision::Pending,
    });
    let verification_uri = format!("{}/device", state.url);
    (
        [(http::header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
            "expires_in": expires_in,
            "interval": interval,
        })),
    )
        .into_response()
}

/// RFC 8628 section 3.4/3.5: the device access token request, polled.
async fn token(
    State(state): State<Arc<IssuerState>>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if !is_form(&headers) {
        return oauth_error("invalid_request");
    }
    let fields = form_fields(&body);
    if fields.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:device_code")
    {
        return oauth_error("unsupported_grant_type");
    }
    let device_code = fields.get("device_code").cloned().unwrap_or_default();
    let client_id = fields.get("client_id").cloned().unwrap_or_default();
    let (answer, claims) = {
        let Ok(mut guard) = state.device.lock() else {
            return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let device = &mut *guard;
        let now = std::time::Instant::now();
        let answer = match device
            .grants
            .iter_mut()
            .find(|grant| grant.device_code == device_code)
        {
            None => ("invalid_grant", None),
            Some(grant) if grant.client_id != client_id => ("invalid_client", None),
            Some(grant) if now.duration_since(grant.issued) >= grant.expires_in => {
                ("expired_token", None)
            }
            Some(grant) => {
                let early = grant
                    .last_poll
                    .is_some_and(|last| now.duration_since(last) < grant.interval);
                grant.last_poll = Some(now);
                if early {
                    device.log.too_early += 1;
                    grant.interval += std::time::Duration::from_secs(5);
                    ("slow_down", None)
                } else {
                    match grant.decision.clone() {
                        DeviceDecision::Pending if device.forced_slow_downs > 0 => {
                            device.forced_slow_downs -= 1;
                            grant.interval += std::time::Duration::from_secs(5);
                            ("slow_down", None)
                        }
                        DeviceDecision::Pending => ("authorization_pending", None),
                        DeviceDecision::Denied => ("access_denied", None),
                        DeviceDecision::Done => ("invalid_grant", None),
                        DeviceDecision::Approved(claims) => {
                            grant.decision = DeviceDecision::Done;
                            ("tokens", Some((claims, grant.client_id.clone())))
                        }
                    }
                }
            }
        };
        device.log.answers.push(answer.0.to_owned());
        answer
    };
    let Some((mut claims, client_id)) = claims else {
        return oauth_error(answer);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let defaults = [
        ("iss", json!(state.url)),
        ("aud", json!(client_id)),
        ("iat", json!(now)),
        ("nbf", json!(now)),
        ("exp", json!(now + 3600)),
    ];
    if let Some(object) = claims.as_object_mut() {
        for (name, value) in defaults {
            object.entry(name).or_insert(value);
        }
    }
    let issuer = TestIssuer {
        addr: "127.0.0.1:0"
            .parse()
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        state,
    };
    let id_token = issuer.sign_rs256(&claims);
    (
        [(http::header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "access_token": random_text(b"abcdefghijklmnopqrstuvwxyz0123456789", 32),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
        })),
    )
        .into_response()
}
