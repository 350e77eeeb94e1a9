//! AWS credentials and the standard provider chain, in the order of the AWS
//! SDKs and tools reference guide ("Standardized credential providers",
//! "Understand the credential provider chain"):
//!
//! 1. environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`;
//! 2. the shared profile (`AWS_PROFILE`, default `default`) from
//!    `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE` (default
//!    `~/.aws/credentials` and `~/.aws/config`): static keys, or
//!    `role_arn` + `web_identity_token_file`;
//! 3. web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    (+ `AWS_ROLE_SESSION_NAME`), exchanged with STS
//!    `AssumeRoleWithWebIdentity`;
//! 4. container credentials (ECS, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `_TOKEN`;
//! 5. EC2 instance metadata, IMDSv2 only (a session token first), unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! A provider that is not configured passes to the next one; a provider
//! that is configured but fails stops the chain with its error (as the AWS
//! SDKs do), so a broken IRSA setup is reported as such, not as "no
//! credentials". Temporary credentials are cached and refreshed a margin
//! before they expire; if a refresh fails while the cached ones are still
//! valid, those are kept and the failure is logged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use crate::env::Environment;
use crate::error::{AwsError, AwsErrorKind};
use crate::profile::{self, Profile, ProfileChoice};

/// One set of AWS credentials. `Debug` shows only where they came from and
/// when they expire.
pub struct Credentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
    expiry: Option<OffsetDateTime>,
    source: &'static str,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from their parts; `expiry` is `None` for long-term keys.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: SecretString,
        session_token: Option<SecretString>,
        expiry: Option<OffsetDateTime>,
        source: &'static str,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token,
            expiry,
            source,
        }
    }

    /// The access key id (an identifier, not a secret, but still kept out
    /// of logs).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// When temporary credentials expire; `None` for long-term keys.
    pub fn expiry(&self) -> Option<OffsetDateTime> {
        self.expiry
    }

    /// Which provider of the chain gave them (`environment`, `profile`,
    /// `web-identity`, `container`, `instance-metadata`).
    pub fn source(&self) -> &'static str {
        self.source
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the secret goes only into the SigV4 signing key and into redaction lists"
    )]
    pub(crate) fn secret_access_key(&self) -> &str {
        self.secret_access_key.expose_secret()
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the token goes only into the x-amz-security-token header and redaction lists"
    )]
    pub(crate) fn session_token(&self) -> Option<&str> {
        self.session_token.as_ref().map(ExposeSecret::expose_secret)
    }

    /// The strings an error message must never repeat.
    pub(crate) fn redactions(&self) -> Vec<&str> {
        let mut out = vec![self.access_key_id.as_str(), self.secret_access_key()];
        out.extend(self.session_token());
        out
    }

    fn needs_refresh(&self, now: OffsetDateTime, margin: Duration) -> bool {
        self.expiry.is_some_and(|expiry| now + margin >= expiry)
    }

    fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expiry.is_some_and(|expiry| now >= expiry)
    }
}

/// Parses an `Expiration` timestamp (RFC 3339, as STS, ECS and IMDS send it).
fn parse_expiry(text: &str, operation: &str) -> Result<OffsetDateTime, AwsError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
        AwsError::new(
            AwsErrorKind::Credentials,
            operation,
            "the credentials' Expiration is not an RFC 3339 timestamp",
        )
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    access_key_id: Option<String>,
    secret_access_key: Option<Zeroizing<String>>,
    token: Option<Zeroizing<String>>,
    expiration: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

fn from_json_credentials(
    body: &[u8],
    operation: &str,
    source: &'static str,
) -> Result<Credentials, AwsError> {
    let invalid = |detail: &str| AwsError::new(AwsErrorKind::Credentials, operation, detail);
    let parsed: JsonCredentials = serde_json::from_slice(body)
        .map_err(|_| invalid("the credentials response is not the documented JSON object"))?;
    if let Some(code) = parsed.code.as_deref().filter(|code| *code != "Success") {
        return Err(AwsError::new(
            AwsErrorKind::Credentials,
            operation,
            format!(
                "the credentials endpoint answered {code}: {}",
                parsed.message.as_deref().unwrap_or("no message")
            ),
        ));
    }
    let (Some(access_key_id), Some(secret)) = (parsed.access_key_id, parsed.secret_access_key)
    else {
        return Err(invalid(
            "the credentials response lacks AccessKeyId or SecretAccessKey",
        ));
    };
    let expiry = parsed
        .expiration
        .as_deref()
        .map(|text| parse_expiry(text, operation))
        .transpose()?;
    Ok(Credentials::new(
        access_key_id,
        SecretString::from(secret.as_str()),
        parsed.token.map(|token| SecretString::from(token.as_str())),
        expiry,
        source,
    ))
}

/// Parses the container credentials endpoint's answer (the ECS task role
/// and EKS Pod Identity agent send the same JSON object):
/// `{"AccessKeyId": …, "SecretAccessKey": …, "Token": …, "Expiration": "2026-…Z"}`,
/// documented in the Amazon ECS developer guide, "Task IAM role".
pub fn parse_container_response(body: &[u8]) -> Result<Credentials, AwsError> {
    from_json_credentials(body, "container-credentials", "container")
}

/// Parses IMDS's `/latest/meta-data/iam/security-credentials/ROLE` answer:
/// `{"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": …, "SecretAccessKey": …,
/// "Token": …, "Expiration": …}`, documented in the Amazon EC2 user guide,
/// "Retrieve security credentials from instance metadata".
pub fn parse_imds_response(body: &[u8]) -> Result<Credentials, AwsError> {
    from_json_credentials(body, "instance-metadata", "instance-metadata")
}

/// Parses STS's `AssumeRoleWithWebIdentity` XML answer (query protocol):
/// `AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/Credentials/
/// {AccessKeyId,SecretAccessKey,SessionToken,Expiration}`.
pub fn parse_sts_response(body: &str) -> Result<Credentials, AwsError> {
    let operation = "sts:AssumeRoleWithWebIdentity";
    let invalid = |detail: &str| AwsError::new(AwsErrorKind::Credentials, operation, detail);
    let document =
        roxmltree::Document::parse(body).map_err(|_| invalid("STS answered with invalid XML"))?;
    let credentials = document
        .descendants()
        .find(|node| node.has_tag_name("Credentials"))
        .ok_or_else(|| invalid("STS's answer has no Credentials element"))?;
    let field = |name: &str| {
        credentials
            .children()
            .find(|node| node.has_tag_name(name))
            .and_then(|node| node.text())
            .map(str::trim)
            .ok_or_else(|| invalid(&format!("STS's Credentials lack {name}")))
    };
    Ok(Credentials::new(
        field("AccessKeyId")?,
        SecretString::from(field("SecretAccessKey")?),
        Some(SecretString::from(field("SessionToken")?)),
        Some(parse_expiry(field("Expiration")?, operation)?),
        "web-identity",
    ))
}

/// The code and message of a query-protocol error document
/// (`ErrorResponse/Error/{Code,Message}`).
pub(crate) fn parse_xml_error(body: &str) -> (Option<String>, Option<String>) {
    let Ok(document) = roxmltree::Document::parse(body) else {
        return (None, None);
    };
    let text = |name: &str| {
        document
            .descendants()
            .find(|node| node.has_tag_name(name))
            .and_then(|node| node.text())
            .map(str::to_owned)
    };
    (text("Code"), text("Message"))
}

/// How the chain reaches the outside: the HTTP client, the STS endpoint
/// and the region.
#[derive(Debug, Clone)]
pub(crate) struct ChainSettings {
    pub(crate) http: reqwest::Client,
    pub(crate) sts_endpoint: String,
    pub(crate) profile: ProfileChoice,
    pub(crate) refresh_margin: Duration,
}

/// The standard chain with a cache in front of it.
#[derive(Debug)]
pub(crate) struct CredentialChain {
    env: Environment,
    settings: ChainSettings,
    // A tokio mutex: a refresh awaits STS or a metadata endpoint, and
    // concurrent callers should wait for that one refresh, not start theirs.
    cache: tokio::sync::Mutex<Option<Arc<Credentials>>>,
}

enum Loaded {
    Found(Credentials),
    NotConfigured,
}

impl CredentialChain {
    pub(crate) fn new(env: Environment, settings: ChainSettings) -> Self {
        Self {
            env,
            settings,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Valid credentials, from the cache or freshly loaded.
    pub(crate) async fn get(&self) -> Result<Arc<Credentials>, AwsError> {
        let mut cache = self.cache.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(cached) = cache.as_ref()
            && !cached.needs_refresh(now, self.settings.refresh_margin)
        {
            return Ok(Arc::clone(cached));
        }
        match self.load().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *cache = Some(Arc::clone(&fresh));
                Ok(fresh)
            }
            Err(error) => match cache.as_ref() {
                Some(cached) if !cached.is_expired(now) => {
                    tracing::warn!(%error, "AWS credentials refresh failed; using the cached ones until they expire");
                    Ok(Arc::clone(cached))
                }
                _ => Err(error),
            },
        }
    }

    /// Forgets the cached credentials (AWS said they expired).
    pub(crate) async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn load(&self) -> Result<Credentials, AwsError> {
        if let Loaded::Found(credentials) = self.load_environment()? {
            return Ok(credentials);
        }
        if let Loaded::Found(credentials) = self.load_profile().await? {
            return Ok(credentials);
        }
        if let (Some(token_file), Some(role_arn)) = (
            self.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.env.get("AWS_ROLE_ARN"),
        ) {
            return self
                .web_identity(token_file, role_arn, self.env.get("AWS_ROLE_SESSION_NAME"))
                .await;
        }
        if let Loaded::Found(credentials) = self.load_container().await? {
            return Ok(credentials);
        }
        if let Loaded::Found(credentials) = self.load_instance_metadata().await? {
            return Ok(credentials);
        }
        Err(AwsError::new(
            AwsErrorKind::Credentials,
            "credentials",
            format!(
                "no AWS credentials found (tried: environment AWS_ACCESS_KEY_ID, profile '{}', \
                 AWS_WEB_IDENTITY_TOKEN_FILE, container credentials, instance metadata)",
                self.settings.profile.name
            ),
        ))
    }

    fn load_environment(&self) -> Result<Loaded, AwsError> {
        match (
            self.env.get("AWS_ACCESS_KEY_ID"),
            self.env.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Ok(Loaded::Found(Credentials::new(
                id.trim(),
                SecretString::from(secret.trim()),
                self.env
                    .get("AWS_SESSION_TOKEN")
                    .map(|token| SecretString::from(token.trim())),
                None,
                "environment",
            ))),
            (None, None) => Ok(Loaded::NotConfigured),
            _ => Err(AwsError::new(
                AwsErrorKind::Config,
                "credentials",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together",
            )),
        }
    }

    async fn load_profile(&self) -> Result<Loaded, AwsError> {
        let choice = &self.settings.profile;
        let Some(profile) = profile::load(&self.env, choice)? else {
            if choice.explicit {
                return Err(AwsError::config(format!(
                    "AWS profile '{}' is not defined in the shared config or credentials file",
                    choice.name
                )));
            }
            return Ok(Loaded::NotConfigured);
        };
        self.use_profile(&profile).await
    }

    async fn use_profile(&self, profile: &Profile) -> Result<Loaded, AwsError> {
        let name = &self.settings.profile.name;
        match (
            profile.get("aws_access_key_id"),
            profile.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => {
                return Ok(Loaded::Found(Credentials::new(
                    id,
                    SecretString::from(secret),
                    profile.get("aws_session_token").map(SecretString::from),
                    None,
                    "profile",
                )));
            }
            (None, None) => {}
            _ => {
                return Err(AwsError::config(format!(
                    "AWS profile '{name}' has only one of aws_access_key_id and aws_secret_access_key"
                )));
            }
        }
        if let (Some(role_arn), Some(token_file)) = (
            profile.get("role_arn"),
            profile.get("web_identity_token_file"),
        ) {
            return self
                .web_identity(token_file, role_arn, profile.get("role_session_name"))
                .await
                .map(Loaded::Found);
        }
        for unsupported in [
            "source_profile",
            "credential_source",
            "credential_process",
            "sso_session",
            "sso_start_url",
        ] {
            if profile.get(unsupported).is_some() {
                return Err(AwsError::config(format!(
                    "AWS profile '{name}' uses {unsupported}, which KeyForge does not support; \
                     use static keys, web_identity_token_file, or the environment"
                )));
            }
        }
        Ok(Loaded::NotConfigured)
    }

    async fn web_identity(
        &self,
        token_file: &str,
        role_arn: &str,
        session_name: Option<&str>,
    ) -> Result<Credentials, AwsError> {
        let operation = "sts:AssumeRoleWithWebIdentity";
        let token = Zeroizing::new(std::fs::read_to_string(token_file).map_err(|error| {
            AwsError::new(
                AwsErrorKind::Credentials,
                operation,
                format!("cannot read the web identity token file {token_file}: {error}"),
            )
        })?);
        let session_name = session_name.map_or_else(
            || format!("keyforge-{}", OffsetDateTime::now_utc().unix_timestamp()),
            str::to_owned,
        );
        let form: [(&str, &str); 5] = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", &session_name),
            ("WebIdentityToken", token.trim()),
        ];
        let body = Zeroizing::new(encode_form(&form));
        let response = self
            .settings
            .http
            .post(&self.settings.sts_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|error| crate::client::transport_error(operation, &error))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|error| crate::client::transport_error(operation, &error))?;
        if status != 200 {
            let (code, message) = parse_xml_error(&text);
            return Err(AwsError::from_response(
                operation,
                status,
                code.as_deref(),
                message.as_deref(),
                &[token.trim()],
            ));
        }
        parse_sts_response(&text)
    }

    async fn load_container(&self) -> Result<Loaded, AwsError> {
        let operation = "container-credentials";
        let uri = if let Some(full) = self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            validate_container_uri(full)?;
            full.to_owned()
        } else if let Some(relative) = self.env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("http://169.254.170.2{relative}")
        } else {
            return Ok(Loaded::NotConfigured);
        };
        let token = if let Some(path) = self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|error| {
                        AwsError::new(
                            AwsErrorKind::Credentials,
                            operation,
                            format!(
                                "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {error}"
                            ),
                        )
                    })?
                    .trim()
                    .to_owned(),
            ))
        } else {
            self.env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(|token| Zeroizing::new(token.trim().to_owned()))
        };
        let mut request = self.settings.http.get(&uri).timeout(Duration::from_secs(5));
        if let Some(token) = &token {
            if token.contains(['\r', '\n']) {
                return Err(AwsError::new(
                    AwsErrorKind::Config,
                    operation,
                    "the container authorization token contains a line break",
                ));
            }
            request = request.header("authorization", token.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|error| crate::client::transport_error(operation, &error))?;
        let status = response.status();
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|error| crate::client::transport_error(operation, &error))?
                .to_vec(),
        );
        if !status.is_success() {
            return Err(AwsError::new(
                AwsErrorKind::Credentials,
                operation,
                format!(
                    "the container credentials endpoint answered HTTP {}",
                    status.as_u16()
                ),
            ));
        }
        parse_container_response(&body).map(Loaded::Found)
    }

    async fn load_instance_metadata(&self) -> Result<Loaded, AwsError> {
        if self
            .env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        {
            return Ok(Loaded::NotConfigured);
        }
        let endpoint = self
            .env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or("http://169.254.169.254")
            .trim_end_matches('/')
            .to_owned();
        let http = &self.settings.http;
        let timeout = Duration::from_secs(1);
        // Off EC2 nothing answers: that means "not configured", not an error.
        let Ok(response) = http
            .put(format!("{endpoint}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(timeout)
            .send()
            .await
        else {
            return Ok(Loaded::NotConfigured);
        };
        let operation = "instance-metadata";
        let fail = |detail: String| AwsError::new(AwsErrorKind::Credentials, operation, detail);
        if !response.status().is_success() {
            return Err(fail(format!(
                "IMDSv2 refused a session token (HTTP {})",
                response.status().as_u16()
            )));
        }
        let token = Zeroizing::new(
            response
                .text()
                .await
                .map_err(|error| crate::client::transport_error(operation, &error))?,
        );
        let base = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
        let get = |url: String| {
            http.get(url)
                .header("x-aws-ec2-metadata-token", token.trim())
                .timeout(Duration::from_secs(5))
                .send()
        };
        let response = get(base.clone())
            .await
            .map_err(|error| crate::client::transport_error(operation, &error))?;
        if !response.status().is_success() {
            return Err(fail(
                "the instance has no IAM role (instance profile) attached".to_owned(),
            ));
        }
        let roles = response
            .text()
            .await
            .map_err(|error| crate::client::transport_error(operation, &error))?;
        let role = parse_imds_role_list(&roles)
            .ok_or_else(|| fail("the instance metadata lists no IAM role".to_owned()))?;
        let response = get(format!("{base}{role}"))
            .await
            .map_err(|error| crate::client::transport_error(operation, &error))?;
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|error| crate::client::transport_error(operation, &error))?
                .to_vec(),
        );
        parse_imds_response(&body).map(Loaded::Found)
    }
}

/// The role name in IMDS's `security-credentials/` listing (one per line;
/// an instance profile holds exactly one role).
pub fn parse_imds_role_list(body: &str) -> Option<&str> {
    body.lines().map(str::trim).find(|line| !line.is_empty())
}

/// A full container credentials URI must be HTTPS, or HTTP to loopback or
/// to the ECS (169.254.170.2) or EKS Pod Identity (169.254.170.23,
/// fd00:ec2::23) agent, as the AWS SDKs require.
pub fn validate_container_uri(uri: &str) -> Result<(), AwsError> {
    let parsed = reqwest::Url::parse(uri)
        .map_err(|_| AwsError::config("AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL"))?;
    let allowed_host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback()
                || ip.octets() == [169, 254, 170, 2]
                || ip.octets() == [169, 254, 170, 23]
        }
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.segments() == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23]
        }
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if parsed.scheme() == "https" || (parsed.scheme() == "http" && allowed_host) {
        Ok(())
    } else {
        Err(AwsError::config(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to loopback, \
             169.254.170.2, 169.254.170.23 or [fd00:ec2::23]",
        ))
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub(crate) fn encode_form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.extend(url::form_urlencoded::byte_serialize(name.as_bytes()));
        out.push('=');
        out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The documented answers, as data: there is no ECS agent, EKS Pod
    // Identity agent or EC2 metadata service on a test machine, and faking
    // one would only test the fake.

    #[test]
    fn parses_the_documented_container_response() {
        let secret = "s".repeat(40);
        let body = format!(
            r#"{{"AccessKeyId":"ASIA{id}","SecretAccessKey":"{secret}","Token":"{token}","Expiration":"2026-12-02T18:00:00Z","RoleArn":"arn:aws:iam::123456789012:role/app"}}"#,
            id = "Q".repeat(16),
            token = "t".repeat(60),
        );
        let credentials = parse_container_response(body.as_bytes()).unwrap();
        assert_eq!(
            credentials.access_key_id(),
            format!("ASIA{}", "Q".repeat(16))
        );
        assert_eq!(credentials.secret_access_key(), secret);
        assert_eq!(credentials.session_token(), Some("t".repeat(60).as_str()));
        assert_eq!(
            credentials.expiry(),
            Some(time::macros::datetime!(2026-12-02 18:00:00 UTC))
        );
        assert!(!format!("{credentials:?}").contains(&secret));
    }

    #[test]
    fn parses_the_documented_imds_response_and_role_list() {
        let body = format!(
            r#"{{"Code":"Success","LastUpdated":"2026-12-02T12:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIA{id}","SecretAccessKey":"{s}","Token":"{t}","Expiration":"2026-12-02T18:00:00.123Z"}}"#,
            id = "R".repeat(16),
            s = "k".repeat(40),
            t = "v".repeat(80),
        );
        let credentials = parse_imds_response(body.as_bytes()).unwrap();
        assert_eq!(credentials.source(), "instance-metadata");
        assert!(credentials.expiry().is_some());
        assert_eq!(
            parse_imds_role_list("\nmy-instance-role\n"),
            Some("my-instance-role")
        );
        assert_eq!(parse_imds_role_list("\n"), None);
        let refused = parse_imds_response(
            br#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"role cannot be assumed"}"#,
        )
        .unwrap_err();
        assert_eq!(refused.kind(), AwsErrorKind::Credentials);
        assert!(
            refused.to_string().contains("AssumeRoleUnauthorizedAccess"),
            "{refused}"
        );
    }

    #[test]
    fn refuses_incomplete_or_foreign_credential_documents() {
        for body in [
            &b"not json"[..],
            br#"{"AccessKeyId":"x"}"#,
            br#"{"AccessKeyId":"x","SecretAccessKey":"y","Expiration":"tomorrow"}"#,
        ] {
            assert_eq!(
                parse_container_response(body).unwrap_err().kind(),
                AwsErrorKind::Credentials
            );
        }
    }

    #[test]
    fn container_full_uri_must_be_https_or_a_known_agent() {
        for ok in [
            "https://creds.example.com/v1",
            "http://127.0.0.1:9911/creds",
            "http://169.254.170.2/v2/credentials/abc",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
        ] {
            validate_container_uri(ok).unwrap();
        }
        for bad in ["http://10.0.0.5/creds", "ftp://127.0.0.1/", "not a url"] {
            assert_eq!(
                validate_container_uri(bad).unwrap_err().kind(),
                AwsErrorKind::Config
            );
        }
    }

    #[test]
    fn parses_sts_credentials_and_errors() {
        let body = format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <AssumeRoleWithWebIdentityResult><Credentials><SessionToken>{t}</SessionToken>\
             <SecretAccessKey>{s}</SecretAccessKey><Expiration>2026-12-02T18:00:00Z</Expiration>\
             <AccessKeyId>ASIA{id}</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>\
             </AssumeRoleWithWebIdentityResponse>",
            t = "t".repeat(50),
            s = "s".repeat(40),
            id = "X".repeat(16)
        );
        let credentials = parse_sts_response(&body).unwrap();
        assert_eq!(credentials.source(), "web-identity");
        let (code, message) = parse_xml_error(
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad</Message></Error></ErrorResponse>",
        );
        assert_eq!(code.as_deref(), Some("InvalidIdentityToken"));
        assert_eq!(message.as_deref(), Some("bad"));
    }
}
