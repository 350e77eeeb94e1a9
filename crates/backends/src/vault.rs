//! HashiCorp Vault / OpenBao over its documented HTTP API: KV v2 reads,
//! versions and deletion, Transit encryption, and the login methods a
//! deployment uses (token file, AppRole, JWT/OIDC, Kubernetes), with token
//! renewal before expiry and re-login when renewal fails.
//!
//! Sources: the Vault HTTP API reference (`/v1/{mount}/data/:path`,
//! `/v1/{mount}/metadata/:path`, `/v1/{mount}/delete/:path`,
//! `/v1/{mount}/destroy/:path`, `/v1/auth/token/lookup-self`,
//! `/v1/auth/token/renew-self`, `/v1/auth/{approle,jwt,kubernetes}/login`,
//! `/v1/transit/{encrypt,decrypt,rewrap}/:name`), which OpenBao keeps.
//! Tested against OpenBao's own `bao server -dev`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    BackendError, BackendErrorKind, BackendKind, BackendSecret, SecretBackend, SecretRef,
    VersionState,
};

/// How KeyForge logs in to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    /// A token read from a file (written by Vault Agent, or by hand). The
    /// file is read again when the token can no longer be renewed.
    TokenFile(PathBuf),
    /// AppRole: `role_id` (not a secret) and a `secret_id` read from a file
    /// at each login. `mount` is the auth mount path (`approle`).
    AppRole {
        /// Auth mount path, without `auth/` (default `approle`).
        mount: String,
        /// The role's id.
        role_id: String,
        /// A file holding the secret id.
        secret_id_file: PathBuf,
    },
    /// JWT/OIDC: a JWT read from a file at each login (a CI or workload
    /// identity token) for `role`, at the auth mount `mount` (`jwt`).
    Jwt {
        /// Auth mount path (default `jwt`).
        mount: String,
        /// The Vault role to log in as.
        role: String,
        /// A file holding the JWT.
        token_file: PathBuf,
    },
    /// Kubernetes: the pod's service-account token (default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`) for `role`,
    /// at the auth mount `mount` (`kubernetes`).
    Kubernetes {
        /// Auth mount path (default `kubernetes`).
        mount: String,
        /// The Vault role to log in as.
        role: String,
        /// The service-account token file.
        token_file: PathBuf,
    },
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenFile(path) => write!(f, "TokenFile({})", path.display()),
            Self::AppRole { mount, .. } => write!(f, "AppRole(auth/{mount})"),
            Self::Jwt { mount, role, .. } => write!(f, "Jwt(auth/{mount}, role {role})"),
            Self::Kubernetes { mount, role, .. } => {
                write!(f, "Kubernetes(auth/{mount}, role {role})")
            }
        }
    }
}

impl VaultAuth {
    fn describe(&self) -> String {
        match self {
            Self::TokenFile(path) => format!("the token in {}", path.display()),
            Self::AppRole { mount, .. } => format!("AppRole at auth/{mount}"),
            Self::Jwt { mount, role, .. } => format!("JWT at auth/{mount} as role {role}"),
            Self::Kubernetes { mount, role, .. } => {
                format!("Kubernetes at auth/{mount} as role {role}")
            }
        }
    }
}

/// What `rotate finish` does to the version rotated away from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OldVersionPolicy {
    /// Leave it (the default): it stays readable in Vault's history.
    #[default]
    Keep,
    /// Soft-delete it (`/delete`): undeletable by a Vault operator.
    Delete,
    /// Destroy it (`/destroy`): its data is gone for good.
    Destroy,
}

/// `[backends.vault]`.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// `http(s)://host:port` of the Vault or OpenBao server.
    pub address: String,
    /// A PEM file of the CA(s) that sign the server's certificate, trusted
    /// beside the system roots.
    pub ca_file: Option<PathBuf>,
    /// A Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// How to log in.
    pub auth: VaultAuth,
    /// What `rotate finish` does to the old version.
    pub old_versions: OldVersionPolicy,
    /// Renew the token when less than this is left of its TTL (or a third
    /// of the TTL, if that is shorter). Default 60 s.
    pub renew_margin: Duration,
    /// Timeout of one HTTP call. Default 10 s.
    pub timeout: Duration,
}

impl VaultSettings {
    /// Settings with the defaults for everything but the address and auth.
    pub fn new(address: impl Into<String>, auth: VaultAuth) -> Self {
        Self {
            address: address.into(),
            ca_file: None,
            namespace: None,
            auth,
            old_versions: OldVersionPolicy::Keep,
            renew_margin: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A Vault / OpenBao client. Cheap to clone; the token is shared.
#[derive(Clone)]
pub struct VaultBackend {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    address: String,
    namespace: Option<String>,
    auth: VaultAuth,
    old_versions: OldVersionPolicy,
    renew_margin: Duration,
    token: tokio::sync::Mutex<Option<Token>>,
    logins: AtomicU64,
    renewals: AtomicU64,
}

impl fmt::Debug for VaultBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultBackend")
            .field("address", &self.inner.address)
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

struct Token {
    secret: Zeroizing<String>,
    renewable: bool,
    /// When to renew (or log in again); `None` for a token that never
    /// expires (a root token).
    refresh_at: Option<Instant>,
    /// When Vault stops accepting it.
    expires_at: Option<Instant>,
}

const OP_LOGIN: &str = "auth:login";

/// The largest answer read from Vault: a KV v2 secret is at most a few
/// KiB, a metadata listing of many versions some tens.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

fn err(kind: BackendErrorKind, operation: &str, detail: impl Into<String>) -> BackendError {
    BackendError::new(BackendKind::Vault, kind, operation, detail)
}

fn config(detail: impl Into<String>) -> BackendError {
    err(BackendErrorKind::Config, "configuration", detail)
}

fn check_name(what: &str, name: &str) -> Result<(), BackendError> {
    if name.is_empty()
        || name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return Err(config(format!(
            "the Vault {what} '{name}' may hold only letters, digits and _-./, with no empty or '..' segment"
        )));
    }
    Ok(())
}

/// Reads a credential file, trimmed; the error names the file, never its
/// content.
fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>, BackendError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|error| {
        err(
            BackendErrorKind::Config,
            OP_LOGIN,
            format!("cannot read the {what} file {}: {error}", path.display()),
        )
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        err(
            BackendErrorKind::Config,
            OP_LOGIN,
            format!("the {what} file {} is not UTF-8 text", path.display()),
        )
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err(
            BackendErrorKind::Config,
            OP_LOGIN,
            format!("the {what} file {} is empty", path.display()),
        ));
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// Vault's `{"errors": [...]}`, with every credential KeyForge sent cut
/// out, bounded in length.
fn vault_errors(body: &Value, sent: &[&str]) -> String {
    let mut text = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    for secret in sent.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "[redacted]");
    }
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "no error text".to_owned()
    } else {
        text
    }
}

fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A JSON body that is wiped when dropped (it may hold a secret).
struct Body(Value);

impl Drop for Body {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
}

impl VaultBackend {
    /// Checks `settings` and builds the client. Makes no network call.
    /// Errors (`Config`): an address that is not an http(s) URL, a CA file
    /// that cannot be read or holds no certificate, a bad mount name.
    pub fn new(settings: &VaultSettings) -> Result<Self, BackendError> {
        let url = url::Url::parse(&settings.address).map_err(|_| {
            config(format!(
                "the Vault address '{}' is not a URL like https://vault.internal:8200",
                settings.address
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
        {
            return Err(config(
                "the Vault address must be http(s)://host[:port] with no user info or query",
            ));
        }
        match &settings.auth {
            VaultAuth::TokenFile(_) => {}
            VaultAuth::AppRole { mount, role_id, .. } => {
                check_name("auth mount", mount)?;
                if role_id.trim().is_empty() {
                    return Err(config("the AppRole role_id is empty"));
                }
            }
            VaultAuth::Jwt { mount, role, .. } | VaultAuth::Kubernetes { mount, role, .. } => {
                check_name("auth mount", mount)?;
                if role.trim().is_empty() {
                    return Err(config("the Vault role to log in as is empty"));
                }
            }
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|error| {
                config(format!(
                    "cannot read the Vault CA file {}: {error}",
                    path.display()
                ))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certificates| !certificates.is_empty())
                .ok_or_else(|| {
                    config(format!(
                        "the Vault CA file {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|error| config(format!("cannot build the HTTP client: {error}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                address: settings.address.trim_end_matches('/').to_owned(),
                namespace: settings.namespace.clone(),
                auth: settings.auth.clone(),
                old_versions: settings.old_versions,
                renew_margin: settings.renew_margin,
                token: tokio::sync::Mutex::new(None),
                logins: AtomicU64::new(0),
                renewals: AtomicU64::new(0),
            }),
        })
    }

    /// How many logins and token renewals this client has made:
    /// `(logins, renewals)`, for `keyforge status` and tests.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.inner.logins.load(Ordering::Relaxed),
            self.inner.renewals.load(Ordering::Relaxed),
        )
    }

    /// Sends one request. `token` is sent as `X-Vault-Token` when given.
    /// Returns the status and the JSON body (`Null` when empty).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        operation: &str,
    ) -> Result<(u16, Body), BackendError> {
        let url = format!("{}/v1/{path}", self.inner.address);
        let mut request = match method {
            Method::Get => self.inner.http.get(&url),
            Method::Post => self.inner.http.post(&url),
            Method::Put => self.inner.http.put(&url),
        };
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(namespace) = &self.inner.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| {
            err(
                BackendErrorKind::Unavailable,
                operation,
                format!(
                    "cannot reach Vault at {}: {}",
                    self.inner.address,
                    if error.is_timeout() {
                        "timed out".to_owned()
                    } else if error.is_connect() {
                        "connection failed".to_owned()
                    } else {
                        "request failed".to_owned()
                    }
                ),
            )
        })?;
        let status = response.status().as_u16();
        // Read in chunks up to MAX_ANSWER_BYTES: a faulty or hostile server
        // cannot make KeyForge hold an answer of any size.
        let mut response = response;
        // Sized from the announced length up front, so the buffer holding
        // a secret is not reallocated (and an old copy freed unwiped).
        let announced = response
            .content_length()
            .and_then(|length| usize::try_from(length).ok())
            .unwrap_or(0)
            .min(MAX_ANSWER_BYTES);
        let mut bytes = Zeroizing::new(Vec::with_capacity(announced));
        loop {
            let chunk = response.chunk().await.map_err(|_| {
                err(
                    BackendErrorKind::Unavailable,
                    operation,
                    "the connection to Vault broke while reading its answer",
                )
            })?;
            let Some(chunk) = chunk else { break };
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(err(
                    BackendErrorKind::Unavailable,
                    operation,
                    format!(
                        "Vault answered HTTP {status} with more than {} KiB; KeyForge reads no more",
                        MAX_ANSWER_BYTES / 1024
                    ),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                err(
                    BackendErrorKind::Unavailable,
                    operation,
                    format!("Vault answered HTTP {status} with a body that is not JSON"),
                )
            })?
        };
        Ok((status, Body(value)))
    }

    /// Maps a non-2xx answer to an error; `sent` are the credentials of
    /// the request, cut out of Vault's text.
    fn status_error(status: u16, body: &Value, operation: &str, sent: &[&str]) -> BackendError {
        let text = vault_errors(body, sent);
        let kind = match status {
            400 => BackendErrorKind::Invalid,
            401 => BackendErrorKind::Auth,
            403 => BackendErrorKind::AccessDenied,
            404 => BackendErrorKind::NotFound,
            _ => BackendErrorKind::Unavailable,
        };
        let detail = match status {
            503 => format!("Vault is sealed, in standby or unavailable (HTTP 503): {text}"),
            _ => format!("HTTP {status}: {text}"),
        };
        err(kind, operation, detail)
    }

    /// A token that is good for a while: logs in or renews as needed.
    async fn token(&self) -> Result<Zeroizing<String>, BackendError> {
        let mut slot = self.inner.token.lock().await;
        let now = Instant::now();
        if let Some(token) = slot.as_ref()
            && token.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(token.secret.clone());
        }
        if let Some(old) = slot.take()
            && old.renewable
            && old.expires_at.is_none_or(|at| now < at)
        {
            match self.renew(&old).await {
                Ok(Some(renewed)) => {
                    let secret = renewed.secret.clone();
                    *slot = Some(renewed);
                    return Ok(secret);
                }
                Ok(None) => tracing::info!(
                    "vault: the token reached its maximum TTL; logging in again with {}",
                    self.inner.auth.describe()
                ),
                Err(error) => tracing::warn!(
                    "vault: token renewal failed ({error}); logging in again with {}",
                    self.inner.auth.describe()
                ),
            }
        }
        let fresh = self.login().await?;
        let secret = fresh.secret.clone();
        *slot = Some(fresh);
        Ok(secret)
    }

    fn token_from(&self, secret: Zeroizing<String>, ttl_s: u64, renewable: bool) -> Token {
        let now = Instant::now();
        if ttl_s == 0 {
            return Token {
                secret,
                renewable,
                refresh_at: None,
                expires_at: None,
            };
        }
        let ttl = Duration::from_secs(ttl_s);
        let margin = self.inner.renew_margin.min(ttl / 3);
        Token {
            secret,
            renewable,
            refresh_at: Some(now + ttl - margin),
            expires_at: Some(now + ttl),
        }
    }

    /// Renews `old`; `Ok(None)` when Vault gave back too little TTL to be
    /// worth keeping (the token reached its maximum TTL).
    async fn renew(&self, old: &Token) -> Result<Option<Token>, BackendError> {
        let operation = "auth:renew-self";
        let (status, body) = self
            .send(
                Method::Post,
                "auth/token/renew-self",
                Some(&json!({})),
                Some(&old.secret),
                operation,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(Self::status_error(
                status,
                &body.0,
                operation,
                &[&old.secret],
            ));
        }
        let ttl = body.0["auth"]["lease_duration"].as_u64().unwrap_or(0);
        let renewable = body.0["auth"]["renewable"].as_bool().unwrap_or(false);
        let margin = self.inner.renew_margin.min(Duration::from_secs(ttl) / 3);
        if ttl == 0 || Duration::from_secs(ttl) <= margin.max(Duration::from_secs(1)) {
            return Ok(None);
        }
        tracing::debug!("vault: token renewed for {ttl} s");
        self.inner.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(Some(self.token_from(old.secret.clone(), ttl, renewable)))
    }

    async fn login(&self) -> Result<Token, BackendError> {
        let (mount, body, sent) = match &self.inner.auth {
            VaultAuth::TokenFile(path) => {
                let secret = read_secret_file(path, "Vault token")?;
                let operation = "auth:token lookup-self";
                let (status, body) = self
                    .send(
                        Method::Get,
                        "auth/token/lookup-self",
                        None,
                        Some(&secret),
                        operation,
                    )
                    .await?;
                if !(200..300).contains(&status) {
                    let mut error = Self::status_error(status, &body.0, operation, &[&secret]);
                    if status == 403 || status == 401 {
                        error = err(
                            BackendErrorKind::Auth,
                            operation,
                            format!(
                                "Vault refused the token in {} (expired or revoked?)",
                                path.display()
                            ),
                        );
                    }
                    return Err(error);
                }
                let ttl = body.0["data"]["ttl"].as_u64().unwrap_or(0);
                let renewable = body.0["data"]["renewable"].as_bool().unwrap_or(false);
                tracing::info!(
                    "vault: using the token in {} (TTL {ttl} s{})",
                    path.display(),
                    if renewable { ", renewable" } else { "" }
                );
                self.inner.logins.fetch_add(1, Ordering::Relaxed);
                return Ok(self.token_from(secret, ttl, renewable));
            }
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                let secret_id = read_secret_file(secret_id_file, "AppRole secret_id")?;
                let body = json!({ "role_id": role_id, "secret_id": secret_id.as_str() });
                (mount, body, secret_id)
            }
            VaultAuth::Jwt {
                mount,
                role,
                token_file,
            }
            | VaultAuth::Kubernetes {
                mount,
                role,
                token_file,
            } => {
                let jwt = read_secret_file(token_file, "JWT")?;
                let body = json!({ "role": role, "jwt": jwt.as_str() });
                (mount, body, jwt)
            }
        };
        let mut body = Body(body);
        let operation = format!("auth:{mount} login");
        let result = self
            .send(
                Method::Post,
                &format!("auth/{mount}/login"),
                Some(&body.0),
                None,
                &operation,
            )
            .await;
        wipe(&mut body.0);
        let (status, answer) = result?;
        if !(200..300).contains(&status) {
            let mut error = Self::status_error(status, &answer.0, &operation, &[&sent]);
            if matches!(status, 400 | 401 | 403) {
                error = err(
                    BackendErrorKind::Auth,
                    &operation,
                    format!(
                        "Vault refused the login with {}: {}",
                        self.inner.auth.describe(),
                        vault_errors(&answer.0, &[&sent])
                    ),
                );
            }
            return Err(error);
        }
        let auth = &answer.0["auth"];
        let Some(client_token) = auth["client_token"].as_str() else {
            return Err(err(
                BackendErrorKind::Unavailable,
                &operation,
                "Vault's login answer has no auth.client_token",
            ));
        };
        let secret = Zeroizing::new(client_token.to_owned());
        let ttl = auth["lease_duration"].as_u64().unwrap_or(0);
        let renewable = auth["renewable"].as_bool().unwrap_or(false);
        tracing::info!(
            "vault: logged in with {} (TTL {ttl} s{})",
            self.inner.auth.describe(),
            if renewable { ", renewable" } else { "" }
        );
        self.inner.logins.fetch_add(1, Ordering::Relaxed);
        Ok(self.token_from(secret, ttl, renewable))
    }

    /// A call with the current token. When Vault answers 403 (the token
    /// was revoked or expired early) the token is dropped and the call is
    /// retried once after a fresh login.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        operation: &str,
    ) -> Result<Body, BackendError> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let (status, answer) = self
                .send(method, path, body, Some(&token), operation)
                .await?;
            if (200..300).contains(&status) {
                return Ok(answer);
            }
            if status == 403 && !retried {
                retried = true;
                *self.inner.token.lock().await = None;
                continue;
            }
            return Err(Self::status_error(status, &answer.0, operation, &[&token]));
        }
    }

    fn kv_check(reference: &SecretRef) -> Result<(), BackendError> {
        if reference.backend != BackendKind::Vault {
            return Err(config(format!("{reference} is not a vault:// reference")));
        }
        Ok(())
    }

    /// Every version's state from `/metadata`: (version, live) pairs,
    /// newest first, where live means neither deleted nor destroyed.
    pub async fn kv_versions(
        &self,
        reference: &SecretRef,
    ) -> Result<Vec<(u64, bool)>, BackendError> {
        Self::kv_check(reference)?;
        let answer = self
            .call(
                Method::Get,
                &format!("{}/metadata/{}", reference.mount, reference.path),
                None,
                "kv2:metadata",
            )
            .await
            .map_err(|error| with_reference(error, reference))?;
        let mut versions: Vec<(u64, bool)> = answer.0["data"]["versions"]
            .as_object()
            .map(|map| {
                map.iter()
                    .filter_map(|(number, state)| {
                        let number = number.parse::<u64>().ok()?;
                        let deleted = state["deletion_time"]
                            .as_str()
                            .is_some_and(|t| !t.is_empty());
                        let destroyed = state["destroyed"].as_bool().unwrap_or(false);
                        Some((number, !deleted && !destroyed))
                    })
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_by_key(|version| std::cmp::Reverse(version.0));
        Ok(versions)
    }

    /// Writes a new version of a KV v2 secret (`data` is a JSON object);
    /// returns its version number. Used by tests and tooling, never by
    /// the gateway (KeyForge only reads provider keys).
    pub async fn kv_write(&self, reference: &SecretRef, data: &Value) -> Result<u64, BackendError> {
        Self::kv_check(reference)?;
        let answer = self
            .call(
                Method::Post,
                &format!("{}/data/{}", reference.mount, reference.path),
                Some(&json!({ "data": data })),
                "kv2:write",
            )
            .await
            .map_err(|error| with_reference(error, reference))?;
        answer.0["data"]["version"].as_u64().ok_or_else(|| {
            err(
                BackendErrorKind::Unavailable,
                "kv2:write",
                "Vault's answer has no data.version",
            )
        })
    }

    /// One Transit call, `POST {mount}/{action}/{key}` with `body` (wiped
    /// after it is sent), returning the string `data.{field}` of Vault's
    /// answer.
    async fn transit(
        &self,
        mount: &str,
        action: &str,
        key: &str,
        mut body: Body,
        field: &str,
    ) -> Result<Zeroizing<String>, BackendError> {
        check_name("transit mount", mount)?;
        check_name("transit key", key)?;
        let operation = format!("transit:{action}");
        let result = self
            .call(
                Method::Post,
                &format!("{mount}/{action}/{key}"),
                Some(&body.0),
                &operation,
            )
            .await;
        wipe(&mut body.0);
        let answer = result?;
        answer.0["data"][field]
            .as_str()
            .map(|value| Zeroizing::new(value.to_owned()))
            .ok_or_else(|| {
                err(
                    BackendErrorKind::Unavailable,
                    &operation,
                    format!("Vault's answer has no data.{field}"),
                )
            })
    }

    /// Encrypts `plaintext` with the Transit key `key` at `mount`
    /// (`transit`); returns Vault's `vault:vN:…` ciphertext.
    pub async fn transit_encrypt(
        &self,
        mount: &str,
        key: &str,
        plaintext: &[u8],
    ) -> Result<String, BackendError> {
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(plaintext));
        let body = Body(json!({ "plaintext": encoded.as_str() }));
        let ciphertext = self
            .transit(mount, "encrypt", key, body, "ciphertext")
            .await?;
        Ok(ciphertext.as_str().to_owned())
    }

    /// Decrypts a Transit `ciphertext` with `key` at `mount`.
    pub async fn transit_decrypt(
        &self,
        mount: &str,
        key: &str,
        ciphertext: &str,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let body = Body(json!({ "ciphertext": ciphertext }));
        let encoded = self
            .transit(mount, "decrypt", key, body, "plaintext")
            .await?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| {
                err(
                    BackendErrorKind::Unavailable,
                    "transit:decrypt",
                    "Vault's data.plaintext is not base64",
                )
            })
    }

    /// Re-encrypts `ciphertext` under the newest version of `key` (after
    /// `transit/keys/:name/rotate`) without KeyForge seeing the plaintext.
    pub async fn transit_rewrap(
        &self,
        mount: &str,
        key: &str,
        ciphertext: &str,
    ) -> Result<String, BackendError> {
        let body = Body(json!({ "ciphertext": ciphertext }));
        let ciphertext = self
            .transit(mount, "rewrap", key, body, "ciphertext")
            .await?;
        Ok(ciphertext.as_str().to_owned())
    }
}

fn with_reference(error: BackendError, reference: &SecretRef) -> BackendError {
    if error.kind() == BackendErrorKind::NotFound {
        return err(
            BackendErrorKind::NotFound,
            "kv2",
            format!("{reference}: no such secret or version in Vault (or the policy hides it)"),
        );
    }
    error
}

/// The value of `field` (or the only field) of a KV v2 `data` object.
fn select(
    data: &Value,
    reference: &SecretRef,
    version: u64,
) -> Result<Zeroizing<String>, BackendError> {
    let invalid = |detail: String| err(BackendErrorKind::Invalid, "kv2:read", detail);
    let Some(map) = data.as_object() else {
        return Err(invalid(format!(
            "{reference} version {version} holds no data"
        )));
    };
    let (name, value) = match &reference.field {
        Some(field) => match map.get(field) {
            Some(value) => (field.as_str(), value),
            None => {
                let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(err(
                    BackendErrorKind::NotFound,
                    "kv2:read",
                    format!(
                        "{reference} version {version} has no field #{field} (its fields: {})",
                        names.join(", ")
                    ),
                ));
            }
        },
        None => {
            if map.len() != 1 {
                let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(invalid(format!(
                    "{reference} version {version} has {} fields ({}); name one with #FIELD",
                    map.len(),
                    names.join(", ")
                )));
            }
            let Some((name, value)) = map.iter().next() else {
                return Err(invalid(format!(
                    "{reference} version {version} holds no data"
                )));
            };
            (name.as_str(), value)
        }
    };
    match value {
        Value::String(text) if !text.is_empty() => Ok(Zeroizing::new(text.clone())),
        Value::String(_) => Err(invalid(format!(
            "field #{name} of {reference} version {version} is empty"
        ))),
        _ => Err(invalid(format!(
            "field #{name} of {reference} version {version} is not a string"
        ))),
    }
}

#[async_trait]
impl SecretBackend for VaultBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vault
    }

    async fn read(
        &self,
        reference: &SecretRef,
        version: Option<&str>,
    ) -> Result<BackendSecret, BackendError> {
        Self::kv_check(reference)?;
        let query = match version {
            Some(version) => {
                let number: u64 = version.parse().map_err(|_| {
                    err(
                        BackendErrorKind::Config,
                        "kv2:read",
                        format!("'{version}' is not a KV v2 version number"),
                    )
                })?;
                format!("?version={number}")
            }
            None => String::new(),
        };
        let answer = self
            .call(
                Method::Get,
                &format!("{}/data/{}{query}", reference.mount, reference.path),
                None,
                "kv2:read",
            )
            .await
            .map_err(|error| with_reference(error, reference))?;
        let number = answer.0["data"]["metadata"]["version"]
            .as_u64()
            .unwrap_or(0);
        let data = &answer.0["data"]["data"];
        if data.is_null() {
            return Err(err(
                BackendErrorKind::NotFound,
                "kv2:read",
                format!("{reference} version {number} is deleted or destroyed"),
            ));
        }
        let value = select(data, reference, number)?;
        Ok(BackendSecret {
            version: number.to_string(),
            value,
        })
    }

    async fn versions(&self, reference: &SecretRef) -> Result<VersionState, BackendError> {
        let versions = self.kv_versions(reference).await?;
        let current = versions
            .iter()
            .find(|(_, live)| *live)
            .map(|(number, _)| number.to_string())
            .ok_or_else(|| {
                err(
                    BackendErrorKind::NotFound,
                    "kv2:metadata",
                    format!("every version of {reference} is deleted or destroyed"),
                )
            })?;
        Ok(VersionState {
            current,
            pending: None,
        })
    }

    async fn promote(&self, _reference: &SecretRef, _version: &str) -> Result<bool, BackendError> {
        Ok(false)
    }

    async fn retire(
        &self,
        reference: &SecretRef,
        version: &str,
    ) -> Result<&'static str, BackendError> {
        Self::kv_check(reference)?;
        let number: u64 = version.parse().map_err(|_| {
            err(
                BackendErrorKind::Config,
                "kv2:retire",
                format!("'{version}' is not a KV v2 version number"),
            )
        })?;
        let body = json!({ "versions": [number] });
        match self.inner.old_versions {
            OldVersionPolicy::Keep => Ok("kept"),
            OldVersionPolicy::Delete => {
                self.call(
                    Method::Post,
                    &format!("{}/delete/{}", reference.mount, reference.path),
                    Some(&body),
                    "kv2:delete",
                )
                .await
                .map_err(|error| with_reference(error, reference))?;
                Ok("deleted")
            }
            OldVersionPolicy::Destroy => {
                self.call(
                    Method::Put,
                    &format!("{}/destroy/{}", reference.mount, reference.path),
                    Some(&body),
                    "kv2:destroy",
                )
                .await
                .map_err(|error| with_reference(error, reference))?;
                Ok("destroyed")
            }
        }
    }
}
