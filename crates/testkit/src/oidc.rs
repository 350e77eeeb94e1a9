//! A test OIDC issuer on loopback: keys generated at start (RSA-2048 and
//! P-256), OIDC discovery at `/.well-known/openid-configuration`, the JWKS at
//! `/jwks`, and signing of any token a test needs, including malformed and
//! malicious ones (`alg: none`, HS256 keyed with the public key, unknown
//! `kid`s). Tokens are shaped like GitHub Actions' or Kubernetes' by the
//! claims a test passes; see [`github_claims`] and [`kubernetes_claims`].

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
        let state = Arc::new(IssuerState {
            url: format!("http://{addr}"),
            keys,
            jwks_fetches: AtomicUsize::new(0),
            actions_claims,
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/actions-token", get(actions_token))
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
