//! An issuer's signing keys: given in the configuration, or fetched (through
//! OIDC discovery or a JWKS URL) and cached. A token naming a `kid` the cache
//! does not know triggers one refetch (at most every [`MIN_REFETCH`]), which
//! is how an issuer's key rotation is picked up; a failed refetch keeps
//! serving the keys fetched before, for up to [`STALE_LIMIT`].

use std::time::Duration;

use time::OffsetDateTime;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jsonwebtoken::jwk::JwkSet;

use super::config::{IssuerConfig, JwksSource};
use crate::upstream::UpstreamClient;

/// A `kid` miss refetches at most this often (a flood of tokens with made-up
/// `kid`s cannot turn into a flood of fetches).
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Keys fetched before are used this long past a failing refresh.
const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
struct Cached {
    set: Arc<JwkSet>,
    fetched: OffsetDateTime,
}

#[derive(Debug)]
pub(crate) struct Jwks {
    source: JwksSource,
    issuer_url: String,
    refresh: Duration,
    cache: tokio::sync::Mutex<(Option<Cached>, Option<OffsetDateTime>)>,
}

/// Why no keys could be had.
#[derive(Debug)]
pub(crate) struct Unavailable(pub(crate) String);

impl Jwks {
    pub(crate) fn new(issuer: &IssuerConfig) -> Self {
        Self {
            source: issuer.jwks.clone(),
            issuer_url: issuer.url.clone(),
            refresh: issuer.jwks_refresh,
            cache: tokio::sync::Mutex::new((None, None)),
        }
    }

    /// The key set to verify a token naming `kid` with: the cached one when
    /// fresh and knowing `kid`, else a fresh fetch.
    pub(crate) async fn keys_for(
        &self,
        http: &UpstreamClient,
        kid: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Arc<JwkSet>, Unavailable> {
        // Times come from the gateway's clock (tests move it).
        let since = |at: OffsetDateTime| (now - at).unsigned_abs();
        if let JwksSource::Static(set) = &self.source {
            return Ok(Arc::new(set.clone()));
        }
        // One fetch at a time per issuer; waiters reuse its result.
        let mut guard = self.cache.lock().await;
        let (cached, last_attempt) = &mut *guard;
        let knows_kid = |set: &JwkSet| kid.is_none_or(|kid| set.find(kid).is_some());
        if let Some(cached) = cached.as_ref()
            && since(cached.fetched) < self.refresh
            && knows_kid(&cached.set)
        {
            return Ok(cached.set.clone());
        }
        let may_fetch = last_attempt.is_none_or(|at| since(at) >= MIN_REFETCH);
        if may_fetch {
            *last_attempt = Some(now);
            match self.fetch(http).await {
                Ok(set) => {
                    let set = Arc::new(set);
                    *cached = Some(Cached {
                        set: set.clone(),
                        fetched: now,
                    });
                    return Ok(set);
                }
                Err(error) => {
                    if let Some(stale) = cached.as_ref()
                        && since(stale.fetched) < STALE_LIMIT
                    {
                        tracing::warn!(issuer = %self.issuer_url, error = %error.0, "JWKS refresh failed; using the keys fetched before");
                        return Ok(stale.set.clone());
                    }
                    return Err(error);
                }
            }
        }
        // Fetched moments ago: answer from what we have (an unknown `kid`
        // is then reported as such).
        match cached.as_ref() {
            Some(cached) if since(cached.fetched) < STALE_LIMIT => Ok(cached.set.clone()),
            _ => Err(Unavailable(
                "the issuer's keys could not be fetched a moment ago; retry in a few seconds"
                    .into(),
            )),
        }
    }

    async fn fetch(&self, http: &UpstreamClient) -> Result<JwkSet, Unavailable> {
        let jwks_url = match &self.source {
            JwksSource::Url(url) => url.clone(),
            JwksSource::Discovery => {
                let url = format!("{}/.well-known/openid-configuration", self.issuer_url);
                let document = get_json(http, &url).await?;
                let issuer = document.get("issuer").and_then(|v| v.as_str());
                if issuer.map(super::config::normalize_issuer) != Some(self.issuer_url.as_str()) {
                    return Err(Unavailable(format!(
                        "the discovery document at {url} is for issuer {issuer:?}, not {}",
                        self.issuer_url
                    )));
                }
                document
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        Unavailable(format!("the discovery document at {url} has no jwks_uri"))
                    })?
                    .to_owned()
            }
            JwksSource::Static(set) => return Ok(set.clone()),
        };
        let document = get_json(http, &jwks_url).await?;
        let set: JwkSet = serde_json::from_value(document)
            .map_err(|error| Unavailable(format!("{jwks_url} is not a JWKS document: {error}")))?;
        tracing::info!(issuer = %self.issuer_url, keys = set.keys.len(), "fetched the issuer's signing keys");
        Ok(set)
    }
}

async fn get_json(http: &UpstreamClient, url: &str) -> Result<serde_json::Value, Unavailable> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| Unavailable(format!("`{url}` is not a URL")))?;
    if !(uri.scheme_str() == Some("https") || super::config::is_loopback_http(url)) {
        return Err(Unavailable(format!(
            "{url}: keys are fetched over https only (plain http only on loopback)"
        )));
    }
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let response = tokio::time::timeout(FETCH_TIMEOUT, http.request(request))
        .await
        .map_err(|_| Unavailable(format!("{url}: timed out")))?
        .map_err(|error| Unavailable(format!("{url}: {error}")))?;
    let status = response.status();
    let body = tokio::time::timeout(
        FETCH_TIMEOUT,
        http_body_util::Limited::new(response.into_body(), MAX_DOCUMENT_BYTES).collect(),
    )
    .await
    .map_err(|_| Unavailable(format!("{url}: timed out")))?
    .map_err(|error| Unavailable(format!("{url}: {error}")))?
    .to_bytes();
    if !status.is_success() {
        return Err(Unavailable(format!("{url}: HTTP {}", status.as_u16())));
    }
    serde_json::from_slice(&body).map_err(|error| Unavailable(format!("{url}: not JSON: {error}")))
}
