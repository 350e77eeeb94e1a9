//! `keyforge admin login --oidc` / `--id-token-file` and `admin logout`:
//! a human's admin session from the gateway's `[admin.oidc]` issuer.
//!
//! The device flow is RFC 8628: the issuer's discovery document names its
//! `device_authorization_endpoint` and `token_endpoint`; the CLI asks for a
//! device code, prints the verification URI and user code to stderr, then
//! polls the token endpoint every `interval` seconds (five more after each
//! `slow_down`, section 3.5) until the user approves, denies, or the code
//! expires (`expires_in`). The ID token it gets goes to the gateway, whose
//! session token is kept in a 0600 file in the user's config directory and
//! used by later admin commands that are given no other token. It is never
//! printed unless `--print`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use keyforge_gateway::admin::sessions::{AdminLoginRequest, AdminLoginResponse, AdminOidcInfo};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::client::gateway_base;

/// The session file, beside nothing else, in `<config dir>/keyforge/`.
const SESSION_FILE: &str = "admin-session.json";

/// What the session file holds. The gateway it belongs to is kept so a
/// session is never sent to another gateway.
#[derive(Serialize, Deserialize)]
struct StoredSession {
    gateway: String,
    token: String,
    session: String,
    identity: String,
    role: String,
    /// Unix seconds.
    expires_at: i64,
}

fn session_path() -> anyhow::Result<PathBuf> {
    dirs::config_dir()
        .map(|dir| dir.join("keyforge").join(SESSION_FILE))
        .context("cannot determine a config directory for this user (set HOME or XDG_CONFIG_HOME)")
}

/// The stored session token for the gateway at `base`, if one is stored
/// for it and not yet expired.
pub(crate) fn stored_token(base: &str) -> Option<SecretString> {
    let path = session_path().ok()?;
    let text = crate::serve::read_admin_token_file(&path).ok()?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the session file is parsed to find the token for this gateway"
    )]
    let stored: StoredSession =
        serde_json::from_str(secrecy::ExposeSecret::expose_secret(&text)).ok()?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (stored.gateway == base && now < stored.expires_at).then(|| SecretString::from(stored.token))
}

fn write_session(path: &Path, stored: &StoredSession) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A new file each time, made 0600 when created: never a moment when
    // another user could read it.
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(serde_json::to_string(stored)?.as_bytes())?;
    Ok(())
}

/// An OAuth error answer (RFC 6749 section 5.2, RFC 8628 section 3.5).
#[derive(Deserialize)]
struct OauthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    device_authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

/// RFC 8628 section 3.2.
#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
}

/// RFC 8628 section 3.4's form body, percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> anyhow::Result<(reqwest::StatusCode, Vec<u8>)> {
    let response = http
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!("cannot reach the issuer at {url}: {}", error.without_url())
        })?;
    let status = response.status();
    Ok((status, response.bytes().await?.to_vec()))
}

/// The device flow: returns the ID token.
async fn device_flow(http: &reqwest::Client, info: &AdminOidcInfo) -> anyhow::Result<String> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        info.issuer.trim_end_matches('/')
    );
    let discovery: Discovery = http
        .get(&discovery_url)
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot reach the issuer at {discovery_url}: {}",
                error.without_url()
            )
        })?
        .error_for_status()
        .map_err(|error| {
            anyhow::anyhow!("the issuer's discovery document: {}", error.without_url())
        })?
        .json()
        .await
        .context("the issuer's discovery document is not JSON")?;
    let (Some(device_endpoint), Some(token_endpoint)) = (
        discovery.device_authorization_endpoint,
        discovery.token_endpoint,
    ) else {
        bail!(
            "the issuer {} does not offer the device flow (no device_authorization_endpoint in its discovery document); log in elsewhere and pass --id-token-file",
            info.issuer
        );
    };
    let (status, body) = post_form(
        http,
        &device_endpoint,
        form(&[("client_id", &info.client_id), ("scope", &info.scopes)]),
    )
    .await?;
    if !status.is_success() {
        let error: Option<OauthError> = serde_json::from_slice(&body).ok();
        bail!(
            "the issuer refused the device authorization: {}",
            error.map_or_else(|| status.to_string(), |e| e.error)
        );
    }
    let device: DeviceAuthorization =
        serde_json::from_slice(&body).context("the issuer's device authorization answer")?;
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "To log in, open {} and enter the code {}",
        device.verification_uri, device.user_code
    );
    if let Some(complete) = &device.verification_uri_complete {
        let _ = writeln!(stderr, "(or open {complete})");
    }
    let _ = writeln!(stderr, "Waiting for approval...");
    // Section 3.5: 5 seconds when the issuer names no interval.
    let mut interval = Duration::from_secs(device.interval.unwrap_or(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(device.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            bail!("the device code expired before it was approved; run the login again");
        }
        let (status, body) = post_form(
            http,
            &token_endpoint,
            form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device.device_code),
                ("client_id", &info.client_id),
            ]),
        )
        .await?;
        if status.is_success() {
            let answer: TokenAnswer =
                serde_json::from_slice(&body).context("the issuer's token answer")?;
            return answer.id_token.context(
                "the issuer answered no id_token: ask for the `openid` scope (admin.oidc.scopes)",
            );
        }
        let error: OauthError = serde_json::from_slice(&body)
            .with_context(|| format!("the issuer's token endpoint answered {status}"))?;
        match error.error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            "access_denied" => bail!("the login was denied at the issuer"),
            "expired_token" => {
                bail!("the device code expired before it was approved; run the login again")
            }
            other => bail!(
                "the issuer refused the login: {other}{}",
                error
                    .error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        }
    }
}

fn error_of(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<keyforge_gateway::admin::api::ErrorBody>(body) {
        Ok(body) => anyhow::anyhow!("{} ({})", body.error.message, body.error.code),
        Err(_) => anyhow::anyhow!("KeyForge answered {status}"),
    }
}

/// `keyforge admin login`.
pub(crate) async fn login(
    addr: Option<&str>,
    oidc: bool,
    id_token_file: Option<&Path>,
    print: bool,
) -> anyhow::Result<()> {
    let base = gateway_base(addr);
    let http = crate::client::http_client()?;
    let id_token = match (oidc, id_token_file) {
        (_, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the ID token file {}", path.display()))?
            .trim()
            .to_owned(),
        (true, None) => {
            let url = format!("{base}/keyforge/v1/admin/oidc");
            let response = http.get(&url).send().await.map_err(|error| {
                anyhow::anyhow!("cannot reach KeyForge at {base}: {}", error.without_url())
            })?;
            let status = response.status();
            let body = response.bytes().await?;
            if !status.is_success() {
                return Err(error_of(status, &body));
            }
            let info: AdminOidcInfo =
                serde_json::from_slice(&body).context("unexpected answer from the gateway")?;
            device_flow(&http, &info).await?
        }
        (false, None) => bail!("give --oidc (the device flow) or --id-token-file FILE"),
    };
    let response = http
        .post(format!("{base}/keyforge/v1/admin/oidc/login"))
        .json(&AdminLoginRequest { id_token })
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!("cannot reach KeyForge at {base}: {}", error.without_url())
        })?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(error_of(status, &body));
    }
    let answer: AdminLoginResponse =
        serde_json::from_slice(&body).context("unexpected answer from the gateway")?;
    let expires_at = time::OffsetDateTime::parse(
        &answer.session.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .context("the session's expiry")?;
    let path = session_path()?;
    write_session(
        &path,
        &StoredSession {
            gateway: base.clone(),
            token: answer.token.clone(),
            session: answer.session.name.clone(),
            identity: answer.session.identity.clone(),
            role: answer.session.role.as_str().to_owned(),
            expires_at: expires_at.unix_timestamp(),
        },
    )?;
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "Logged in to {base} as {} ({}), session {} until {}. Admin commands use it until then; `keyforge admin logout` ends it here.",
        answer.session.identity,
        answer.session.role,
        answer.session.name,
        answer.session.expires_at
    );
    if print {
        crate::output::line(&answer.token)?;
    }
    Ok(())
}

/// `keyforge admin logout`: ends the stored session at its gateway (if it
/// still answers) and deletes the file, so a copy of it is worth nothing.
pub(crate) async fn logout() -> anyhow::Result<()> {
    let path = session_path()?;
    if let Some(stored) = crate::serve::read_admin_token_file(&path)
        .ok()
        .and_then(|text| {
            #[expect(
                clippy::disallowed_methods,
                reason = "the session file is parsed to end its session"
            )]
            let parsed =
                serde_json::from_str::<StoredSession>(secrecy::ExposeSecret::expose_secret(&text))
                    .ok();
            parsed
        })
    {
        let ended = crate::client::http_client()?
            .post(format!("{}/admin/v1/session/end", stored.gateway))
            .bearer_auth(&stored.token)
            .send()
            .await;
        let mut stderr = std::io::stderr();
        match ended {
            Ok(response) if response.status().is_success() => {
                let _ = writeln!(
                    stderr,
                    "Ended session {} at {}.",
                    stored.session, stored.gateway
                );
            }
            // Expired, revoked, or a restarted gateway: nothing to end.
            Ok(response) if response.status() == reqwest::StatusCode::UNAUTHORIZED => {}
            Ok(response) => {
                let _ = writeln!(
                    stderr,
                    "warning: {} did not end session {} ({}); it expires on its own",
                    stored.gateway,
                    stored.session,
                    response.status()
                );
            }
            Err(_) => {
                let _ = writeln!(
                    stderr,
                    "warning: cannot reach {} to end session {}; it expires on its own",
                    stored.gateway, stored.session
                );
            }
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => crate::output::line("Logged out: the stored admin session was deleted."),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            crate::output::line("No stored admin session.")
        }
        Err(error) => Err(error).with_context(|| format!("cannot delete {}", path.display())),
    }
}
