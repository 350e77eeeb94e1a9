//! The signed HTTP client shared by Secrets Manager and KMS: region and
//! endpoint resolution, SigV4 signing (the `aws-sigv4` crate), the AWS JSON
//! 1.1 protocol (`X-Amz-Target`, `application/x-amz-json-1.1`), error
//! mapping and retries with exponential backoff and full jitter.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::credentials::{ChainSettings, CredentialChain, Credentials};
use crate::env::Environment;
use crate::error::{AwsError, AwsErrorKind};
use crate::profile::{self, ProfileChoice};

/// What KeyForge's `[backends.aws]` (or `[master_key]`) section says about
/// AWS. Every field is optional; the environment and the shared profile
/// fill in the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// The region (`eu-west-1`); else `AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// then the profile's `region`.
    pub region: Option<String>,
    /// One endpoint for every service (`http://127.0.0.1:5000` for moto or
    /// LocalStack, a VPC endpoint); else `https://{service}.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// The shared-file profile; else `AWS_PROFILE`, then `default`.
    pub profile: Option<String>,
    /// Attempts per call for retryable errors (throttling, AWS down),
    /// first one included; default 4.
    pub max_attempts: Option<u32>,
}

/// The services KeyForge calls, with their signing names and JSON targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    SecretsManager,
    Kms,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Self::SecretsManager => "secretsmanager",
            Self::Kms => "kms",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            Self::SecretsManager => "secretsmanager",
            Self::Kms => "TrentService",
        }
    }
}

/// A configured AWS client: region, endpoints, the credential chain and
/// the retry policy. Cheap to clone (shared state behind an `Arc`).
#[derive(Debug, Clone)]
pub struct AwsClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    region: String,
    endpoint: Option<String>,
    credentials: CredentialChain,
    max_attempts: u32,
    base_delay: Duration,
}

/// How long before expiry temporary credentials are replaced. The AWS
/// SDKs use 5 minutes; STS sessions last at least 15.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

impl AwsClient {
    /// Resolves `settings` against `env` (region, endpoint, profile) into a
    /// client. Fails with a `Config` error when no region is found or the
    /// endpoint is not an http(s) URL. Makes no network call.
    pub fn new(settings: &AwsSettings, env: Environment) -> Result<Self, AwsError> {
        Self::with_refresh_margin(settings, env, DEFAULT_REFRESH_MARGIN)
    }

    /// As [`AwsClient::new`], replacing temporary credentials `margin`
    /// before they expire.
    pub fn with_refresh_margin(
        settings: &AwsSettings,
        env: Environment,
        margin: Duration,
    ) -> Result<Self, AwsError> {
        let choice = ProfileChoice::resolve(settings.profile.as_deref(), &env);
        let region = match settings
            .region
            .clone()
            .or_else(|| env.get("AWS_REGION").map(str::to_owned))
            .or_else(|| env.get("AWS_DEFAULT_REGION").map(str::to_owned))
        {
            Some(region) => region,
            None => profile::load(&env, &choice)?
                .and_then(|profile| profile.get("region").map(str::to_owned))
                .ok_or_else(|| {
                    AwsError::config(
                        "no AWS region: set region in [backends.aws], AWS_REGION, or the profile's region",
                    )
                })?,
        };
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(AwsError::config(format!(
                "AWS region '{region}' is not a region name like eu-west-1"
            )));
        }
        let endpoint = match &settings.endpoint {
            Some(endpoint) => {
                let url = reqwest::Url::parse(endpoint).map_err(|_| {
                    AwsError::config(format!("AWS endpoint '{endpoint}' is not a URL"))
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(AwsError::config(format!(
                        "AWS endpoint '{endpoint}' must be an http:// or https:// URL"
                    )));
                }
                Some(endpoint.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|error| AwsError::config(format!("cannot build the HTTP client: {error}")))?;
        let sts_endpoint = endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let credentials = CredentialChain::new(
            env,
            ChainSettings {
                http: http.clone(),
                sts_endpoint,
                profile: choice,
                refresh_margin: margin,
            },
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                region,
                endpoint,
                credentials,
                max_attempts: settings.max_attempts.unwrap_or(4).max(1),
                base_delay: Duration::from_millis(100),
            }),
        })
    }

    /// The resolved region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The credentials the next call will sign with (loaded or refreshed
    /// as needed).
    pub async fn credentials(&self) -> Result<Arc<Credentials>, AwsError> {
        self.inner.credentials.get().await
    }

    fn endpoint(&self, service: Service) -> String {
        match &self.inner.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!(
                "https://{}.{}.amazonaws.com",
                service.signing_name(),
                self.inner.region
            ),
        }
    }

    /// Calls `action` of `service` with the JSON 1.1 protocol and returns
    /// the response's JSON body. `body` is zeroized after sending, since it
    /// may hold a secret (`PutSecretValue`, `Encrypt`). Retryable failures
    /// are retried `max_attempts` times in all; expired credentials are
    /// reloaded once.
    pub(crate) async fn call_json(
        &self,
        service: Service,
        action: &str,
        body: &Value,
    ) -> Result<Zeroizing<Vec<u8>>, AwsError> {
        let operation = format!("{}:{action}", service.signing_name());
        let payload = Zeroizing::new(serde_json::to_vec(body).map_err(|error| {
            AwsError::new(
                AwsErrorKind::Invalid,
                &operation,
                format!("cannot encode: {error}"),
            )
        })?);
        let mut attempt = 0;
        let mut reloaded_credentials = false;
        loop {
            attempt += 1;
            match self.call_once(service, action, &operation, &payload).await {
                Ok(body) => return Ok(body),
                Err(error) if error.is_expired_credentials() && !reloaded_credentials => {
                    reloaded_credentials = true;
                    self.inner.credentials.invalidate().await;
                }
                Err(error) if error.is_retryable() && attempt < self.inner.max_attempts => {
                    let delay = backoff(self.inner.base_delay, attempt);
                    tracing::debug!(%error, attempt, delay_ms = delay.as_millis() as u64, "retrying AWS call");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn call_once(
        &self,
        service: Service,
        action: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AwsError> {
        let credentials = self.inner.credentials.get().await?;
        let url = format!("{}/", self.endpoint(service));
        let target = format!("{}.{action}", service.target_prefix());
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signed = sign_request(
            &credentials,
            &self.inner.region,
            service.signing_name(),
            &url,
            &headers,
            payload,
        )
        .map_err(|detail| AwsError::new(AwsErrorKind::Credentials, operation, detail))?;
        let mut request = self.inner.http.post(&url).body(payload.to_vec());
        for (name, value) in headers.iter().copied().chain(
            signed
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        ) {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(operation, &error))?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|error| transport_error(operation, &error))?
                .to_vec(),
        );
        if status == 200 {
            return Ok(body);
        }
        // JSON 1.1 errors are `{"__type": …, "message": …}`; the
        // authentication layer in front of a service may answer with the
        // query protocol's XML `<ErrorResponse>` instead.
        let (code, message) = match serde_json::from_slice::<Value>(&body) {
            Ok(parsed) => (
                parsed
                    .get("__type")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parsed
                    .get("message")
                    .or_else(|| parsed.get("Message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            ),
            Err(_) => crate::credentials::parse_xml_error(&String::from_utf8_lossy(&body)),
        };
        Err(AwsError::from_response(
            operation,
            status,
            code.or(error_type).as_deref(),
            message.as_deref(),
            &credentials.redactions(),
        ))
    }
}

/// Signs a POST of `payload` to `url` with SigV4 and returns the headers to
/// add (`authorization`, `x-amz-date`, `x-amz-security-token`). The error is
/// a description without any credential.
fn sign_request(
    credentials: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id(),
        credentials.secret_access_key(),
        credentials.session_token().map(str::to_owned),
        None,
        "keyforge",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| "cannot build the SigV4 signing parameters".to_owned())?
        .into();
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .ok_or_else(|| "the endpoint has no host".to_owned())?;
    let all_headers = headers
        .iter()
        .copied()
        .chain(std::iter::once(("host", host.as_str())));
    let request = SignableRequest::new("POST", url, all_headers, SignableBody::Bytes(payload))
        .map_err(|_| "the request cannot be signed".to_owned())?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|_| "SigV4 signing failed".to_owned())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// The delay before retry number `attempt` (1-based): full jitter over
/// `base * 2^attempt`, capped at 5 s ("Exponential Backoff And Jitter",
/// AWS Architecture Blog).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.min(10))
        .min(Duration::from_secs(5));
    let mut random = [0u8; 4];
    if aws_lc_rs::rand::fill(&mut random).is_err() {
        return ceiling;
    }
    let fraction = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX);
    ceiling.mul_f64(fraction.max(0.1))
}

/// A failure to reach AWS at all (refused, reset, timed out): the backend
/// is down, retryable. The reqwest error is described without its URL's
/// query (which never holds a secret here, but stays out on principle).
pub(crate) fn transport_error(operation: &str, error: &reqwest::Error) -> AwsError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let host = error
        .url()
        .and_then(|url| {
            url.host_str().map(|host| match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        })
        .unwrap_or_default();
    AwsError::new(
        AwsErrorKind::Unavailable,
        operation,
        format!("{what} talking to {host}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            let delay = backoff(base, attempt);
            assert!(delay <= Duration::from_secs(5), "{delay:?}");
            assert!(delay <= base * 2u32.pow(attempt.min(10)), "{delay:?}");
        }
    }

    #[test]
    fn region_and_endpoint_are_validated() {
        let env = Environment::from_pairs([], None);
        let error = AwsClient::new(&AwsSettings::default(), env.clone()).unwrap_err();
        assert_eq!(error.kind(), AwsErrorKind::Config);
        assert!(error.to_string().contains("region"), "{error}");
        for endpoint in ["ftp://127.0.0.1", "127.0.0.1:5000", "http://"] {
            let settings = AwsSettings {
                region: Some("eu-west-1".into()),
                endpoint: Some(endpoint.into()),
                ..AwsSettings::default()
            };
            let error = AwsClient::new(&settings, env.clone()).unwrap_err();
            assert_eq!(error.kind(), AwsErrorKind::Config, "{endpoint}");
        }
        let env = Environment::from_pairs([("AWS_REGION", "us-east-2")], None);
        let client = AwsClient::new(&AwsSettings::default(), env).unwrap();
        assert_eq!(client.region(), "us-east-2");
        assert_eq!(
            client.endpoint(Service::Kms),
            "https://kms.us-east-2.amazonaws.com"
        );
    }
}
