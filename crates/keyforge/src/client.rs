//! The admin commands: a small client of the running server's admin API.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context, bail};
use keyforge_gateway::admin::api::{
    AlertLog, AlertWebhookList, AlertWebhookView, BudgetList, BudgetView, BulkRevokeRequest,
    BulkRevokeResult, CreateAlertRequest, CreateKeyRequest, CreateProviderRequest, CreatedKey,
    DoctorReport, ErrorBody, FinishRequest, KeyList, KeyView, PriceList, PromoteRequest,
    ProviderList, ProviderView, RemovedProvider, RevokeResult, RotateKeyRequest, RotatedKey,
    RotationStatus, SetBudgetRequest, StartRotationRequest, StatusReport, TestAlertReport,
    TestAlertRequest, UpdateKeyRequest, UpdateProviderRequest, UpdatedKey, UsageReport,
};
use keyforge_types::{
    AlertId, AnomalyAction, BudgetId, BudgetLimit, BudgetScope, EnvName, KeyId, KeyLimits,
    ModelPattern, Period, ProjectName, ProviderName, SecretError, Ttl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::{
    AdminArgs, AdminCommand, AlertsCommand, AuditCommand, BudgetCommand, KeyCommand,
    ProviderCommand, ProviderTarget, RotateCommand, TailFormat, UsageFormat,
};
use crate::config::{DEFAULT_LISTEN, default_data_dir};
use crate::output;
use crate::serve::{ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE, read_admin_token_file};

/// A resolved connection to the admin API.
pub(crate) struct AdminClient {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

/// PEM file of CA certificates the CLI trusts, besides the system's, for
/// a gateway serving TLS with a private CA's certificate.
const CA_CERT_ENV: &str = "KEYFORGE_CA_CERT";

/// The gateway's base URL: `--addr`, else `KEYFORGE_ADDR`, else the
/// default listen address.
pub(crate) fn gateway_base(addr: Option<&str>) -> String {
    let base = addr
        .map(str::to_owned)
        .or_else(|| {
            std::env::var("KEYFORGE_ADDR")
                .ok()
                .filter(|value| !value.is_empty())
        })
        .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}"));
    let base = if base.contains("://") {
        base
    } else {
        format!("http://{base}")
    };
    base.trim_end_matches('/').to_owned()
}

/// The CLI's HTTP client: no redirects, and the CA certificates of
/// `KEYFORGE_CA_CERT` trusted beside the system's.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    // A gateway serving TLS with a certificate of a private CA: the CA
    // is trusted beside the system's roots.
    if let Some(path) = std::env::var_os(CA_CERT_ENV).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        let pem = std::fs::read(&path)
            .with_context(|| format!("cannot read {CA_CERT_ENV} {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certificates| !certificates.is_empty())
            .with_context(|| {
                format!("{CA_CERT_ENV} {} holds no PEM certificate", path.display())
            })?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder.build()?)
}

impl AdminClient {
    pub(crate) fn resolve(args: &AdminArgs) -> anyhow::Result<Self> {
        let base = gateway_base(args.addr.as_deref());
        let token = match std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|value| !value.trim().is_empty())
        {
            Some(token) => SecretString::from(token.trim().to_owned()),
            // A human's session (`keyforge admin login`) for this gateway,
            // unless a data directory is named on the command line.
            None if args.data_dir.is_none()
                && let Some(token) = crate::admin_login::stored_token(&base) =>
            {
                token
            }
            None => {
                let dir = match args.data_dir.clone().or_else(|| {
                    std::env::var_os("KEYFORGE_DATA_DIR")
                        .filter(|v| !v.is_empty())
                        .map(PathBuf::from)
                }) {
                    Some(dir) => dir,
                    None => default_data_dir()?,
                };
                let path = dir.join(ADMIN_TOKEN_FILE);
                read_admin_token_file(&path).with_context(|| format!("no admin token: set {ADMIN_TOKEN_ENV}, or run on the gateway's machine where {} exists", path.display()))?
            }
        };
        let http = http_client()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let bytes = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from {}/admin/v1{path}", self.base))
    }

    /// For endpoints that answer text (JSON lines).
    async fn text(&self, path: &str) -> anyhow::Result<String> {
        let bytes = self.send(reqwest::Method::GET, path, NO_BODY).await?;
        String::from_utf8(bytes).context("the audit log is not text")
    }

    /// For endpoints that answer `204 No Content`.
    async fn call_no_content(&self, method: reqwest::Method, path: &str) -> anyhow::Result<()> {
        self.send(method, path, NO_BODY).await.map(drop)
    }

    /// For endpoints that answer text and say more in headers.
    async fn text_with_headers(
        &self,
        path: &str,
    ) -> anyhow::Result<(String, reqwest::header::HeaderMap)> {
        let (bytes, headers) = self.send_full(reqwest::Method::GET, path, NO_BODY).await?;
        let text = String::from_utf8(bytes).context("the audit log is not text")?;
        Ok((text, headers))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<Vec<u8>> {
        self.send_full(method, path, body)
            .await
            .map(|(bytes, _)| bytes)
    }

    async fn send_full(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<(Vec<u8>, reqwest::header::HeaderMap)> {
        let url = format!("{}/admin/v1{path}", self.base);
        #[expect(
            clippy::disallowed_methods,
            reason = "the admin token goes into the Authorization header of the admin request"
        )]
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| {
            anyhow::anyhow!("cannot reach KeyForge at {}: {} (is `keyforge serve` running? set KEYFORGE_ADDR to its address)", self.base, error.without_url())
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => bail!("{} ({})", body.error.message, body.error.code),
                Err(_) => bail!("KeyForge answered {status}"),
            }
        }
        Ok((bytes.to_vec(), headers))
    }
}

const NO_BODY: Option<&()> = None;

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            use std::fmt::Write as _;
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Reads the provider key from the chosen source; never from argv.
fn read_provider_key(
    name: &str,
    from_env: Option<&str>,
    from_file: Option<&PathBuf>,
) -> anyhow::Result<keyforge_types::ProviderSecret> {
    let text = if let Some(var) = from_env {
        std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?
    } else if let Some(path) = from_file {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("API key for provider {name} (input hidden): "))
            .context("cannot read the API key from the terminal")?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .context("cannot read the API key from stdin")?;
        text
    };
    let secret = keyforge_types::ProviderSecret::parse(&text)
        .map_err(|error: SecretError| anyhow::anyhow!("invalid API key: {error}"))?;
    Ok(secret)
}

/// A key given as its id (`key_...`) or as `name:ENV/NAME`. Names are
/// unique among the keys in force of an environment (unless created with
/// `--allow-duplicate-name`): a key in force is preferred to a revoked or
/// expired one of the same name, and several candidates are refused with
/// their ids.
pub(crate) async fn resolve_key(client: &AdminClient, text: &str) -> anyhow::Result<KeyId> {
    let Some(handle) = text.strip_prefix("name:") else {
        return Ok(KeyId::parse(text)?);
    };
    let Some((env, name)) = handle
        .split_once('/')
        .filter(|(_, name)| !name.trim().is_empty())
    else {
        bail!("a key name is written name:ENV/NAME (for example name:prod/checkout)");
    };
    let env = EnvName::parse(env).context("the environment in name:ENV/NAME")?;
    let list: KeyList = client.call(reqwest::Method::GET, "/keys", NO_BODY).await?;
    let named: Vec<&KeyView> = list
        .keys
        .iter()
        .filter(|key| key.env == env && key.name == name)
        .collect();
    let live: Vec<&KeyView> = named
        .iter()
        .copied()
        .filter(|key| key.status != "revoked" && key.status != "expired")
        .collect();
    let candidates = if live.is_empty() { named } else { live };
    match candidates.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!("no key named `{name}` in environment `{env}`"),
        several => bail!(
            "{} keys are named `{name}` in environment `{env}` ({}): give the id",
            several.len(),
            several
                .iter()
                .map(|key| key.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A limit flag of `key update`: a number, or `none` to remove the limit.
fn limit_change<T: std::str::FromStr + std::fmt::Display>(
    flag: &str,
    text: Option<&str>,
    max: T,
) -> anyhow::Result<Option<Option<T>>> {
    match text {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(text) => match text.parse::<T>() {
            Ok(value) => Ok(Some(Some(value))),
            // A whole number that does not fit: say how large one may be,
            // not that it is not a number.
            Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                bail!("{flag} is at most {max}, or `none` to remove the limit")
            }
            Err(_) => bail!("{flag} takes a whole number, or `none` to remove the limit"),
        },
    }
}

/// Finds a provider by name in an environment.
async fn provider_in_env(
    client: &AdminClient,
    name: &str,
    env: &str,
) -> anyhow::Result<keyforge_types::ProviderId> {
    let target = ProviderTarget {
        provider: name.to_owned(),
        env: Some(env.to_owned()),
    };
    resolve_provider(client, &target).await
}

pub(crate) async fn provider(command: ProviderCommand) -> anyhow::Result<()> {
    match command {
        ProviderCommand::Add {
            name,
            kind,
            env,
            base_url,
            from_env,
            from_file,
            no_check,
            force,
            admin,
        } => {
            let name = ProviderName::parse(&name)?;
            let env = EnvName::parse(&env)?;
            keyforge_providers::ProviderKind::parse(&kind)?;
            let client = AdminClient::resolve(&admin)?;
            let secret = read_provider_key(name.as_str(), from_env.as_deref(), from_file.as_ref())?;
            #[expect(
                clippy::disallowed_methods,
                reason = "the provider key is sent once to the admin API, which seals it"
            )]
            let api_key = secret.expose().to_owned();
            let request = CreateProviderRequest {
                name,
                kind,
                env,
                base_url,
                api_key,
                skip_check: no_check,
                allow_scoped_keys: force,
            };
            let view: ProviderView = client
                .call(reqwest::Method::POST, "/providers", Some(&request))
                .await?;
            output::warnings(&view.warnings);
            output::provider_added(&view)
        }
        ProviderCommand::Update {
            name,
            env,
            base_url,
            kind,
            no_check,
            json,
            admin,
        } => {
            if let Some(kind) = &kind {
                keyforge_providers::ProviderKind::parse(kind)?;
            }
            if base_url.is_none() && kind.is_none() {
                bail!("nothing to change: give --base-url or --kind");
            }
            let client = AdminClient::resolve(&admin)?;
            let id = provider_in_env(&client, &name, &env).await?;
            let request = UpdateProviderRequest {
                kind,
                base_url,
                skip_check: no_check,
            };
            let view: ProviderView = client
                .call(
                    reqwest::Method::PATCH,
                    &format!("/providers/{id}"),
                    Some(&request),
                )
                .await?;
            output::warnings(&view.warnings);
            if json {
                output::json(&view)
            } else {
                output::line(&format!(
                    "Updated provider `{}` ({}): {} at {}. Keys using it are unchanged.",
                    view.name, view.env, view.kind, view.base_url
                ))
            }
        }
        ProviderCommand::Remove {
            name,
            env,
            force,
            admin,
        } => {
            let client = AdminClient::resolve(&admin)?;
            let id = provider_in_env(&client, &name, &env).await?;
            let path = if force {
                format!("/providers/{id}?force=true")
            } else {
                format!("/providers/{id}")
            };
            let removed: RemovedProvider =
                client.call(reqwest::Method::DELETE, &path, NO_BODY).await?;
            let mut text = format!(
                "Removed provider `{}` ({}) and every version of its key.",
                removed.provider.name, removed.provider.env
            );
            if !removed.keys_reaching.is_empty() {
                text += &format!(
                    " {} keys in force could reach it; their requests to it are now refused.",
                    removed.keys_reaching.len()
                );
            }
            output::line(&text)
        }
        ProviderCommand::List { json, admin } => {
            let list: ProviderList = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/providers", NO_BODY)
                .await?;
            if json {
                output::json(&list)
            } else {
                output::provider_table(&list.providers)
            }
        }
    }
}

pub(crate) async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            name,
            env,
            parent,
            can_mint,
            providers,
            models,
            ttl,
            project,
            budgets,
            rpm,
            tpm,
            max_parallel,
            on_anomaly,
            allow_duplicate_name,
            json,
            admin,
        } => {
            let env = env.as_deref().map(EnvName::parse).transpose()?;
            let client = AdminClient::resolve(&admin)?;
            let parent = match parent.as_deref() {
                Some(parent) => Some(resolve_key(&client, parent).await.context("--parent")?),
                None => None,
            };
            let project = project
                .as_deref()
                .map(ProjectName::parse)
                .transpose()
                .context("--project")?;
            let budgets = budgets
                .iter()
                .map(|b| BudgetLimit::parse(b).with_context(|| format!("--budget {b}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (flag, value) in [
                ("--rpm", rpm.map(u64::from)),
                ("--tpm", tpm),
                ("--max-parallel", max_parallel.map(u64::from)),
            ] {
                if value == Some(0) {
                    bail!("{flag} must be at least 1 (leave it out for no limit)");
                }
            }
            let on_anomaly = AnomalyAction::parse(&on_anomaly)
                .context("--on-anomaly must be alert or suspend")?;
            let providers = providers
                .iter()
                .map(|p| ProviderName::parse(p))
                .collect::<Result<Vec<_>, _>>()?;
            let models = models
                .iter()
                .map(|m| ModelPattern::parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(ttl) = &ttl {
                Ttl::parse(ttl)?;
            }
            let request = CreateKeyRequest {
                name,
                env,
                parent,
                can_mint,
                providers,
                models,
                ttl,
                project,
                budgets,
                limits: KeyLimits {
                    rpm,
                    tpm,
                    max_parallel,
                },
                on_anomaly,
                allow_duplicate_name,
            };
            let created: CreatedKey = client
                .call(reqwest::Method::POST, "/keys", Some(&request))
                .await?;
            output::warnings(&created.warnings);
            if json {
                output::json(&created)
            } else {
                output::key_created(&created)
            }
        }
        KeyCommand::List { json, admin } => {
            let list: KeyList = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/keys", NO_BODY)
                .await?;
            if json {
                output::json(&list)
            } else {
                output::key_table(&list.keys)
            }
        }
        KeyCommand::Show { id, json, admin } => {
            let client = AdminClient::resolve(&admin)?;
            let id = resolve_key(&client, &id).await?;
            let key: KeyView = client
                .call(reqwest::Method::GET, &format!("/keys/{id}"), NO_BODY)
                .await?;
            if json {
                output::json(&key)
            } else {
                output::key_detail(&key)
            }
        }
        KeyCommand::Revoke {
            id: None,
            env,
            all_env,
            project,
            yes,
            admin,
        } => {
            let env = env
                .or(all_env)
                .as_deref()
                .map(EnvName::parse)
                .transpose()
                .context("--env")?;
            let project = project
                .as_deref()
                .map(ProjectName::parse)
                .transpose()
                .context("--project")?;
            let what = match (&env, &project) {
                (Some(env), Some(project)) => {
                    format!("every key of project `{project}` in environment `{env}`")
                }
                (Some(env), None) => format!("every key of environment `{env}`"),
                (None, Some(project)) => format!("every key of project `{project}`"),
                (None, None) => bail!("give a key id, --env, --all-env or --project"),
            };
            if !yes {
                bail!("this revokes {what}; add --yes to confirm");
            }
            let result: BulkRevokeResult = AdminClient::resolve(&admin)?
                .call(
                    reqwest::Method::POST,
                    "/keys/revoke",
                    Some(&BulkRevokeRequest { env, project }),
                )
                .await?;
            output::line(&format!(
                "Revoked {} keys ({what}); they are refused from the next request on.{}",
                result.revoked.len(),
                result
                    .revoked
                    .iter()
                    .map(|id| format!("\n  {id}"))
                    .collect::<String>()
            ))
        }
        KeyCommand::Revoke {
            id: Some(id),
            admin,
            ..
        } => {
            let client = AdminClient::resolve(&admin)?;
            let id = resolve_key(&client, &id).await?;
            let result: RevokeResult = client
                .call(
                    reqwest::Method::POST,
                    &format!("/keys/{id}/revoke"),
                    NO_BODY,
                )
                .await?;
            output::revoked(&result)
        }
        KeyCommand::Rotate {
            id,
            grace,
            idempotency_key,
            force,
            json,
            admin,
        } => {
            Ttl::parse(&grace).with_context(|| format!("--grace {grace}"))?;
            let client = AdminClient::resolve(&admin)?;
            let id = resolve_key(&client, &id).await?;
            let request = RotateKeyRequest {
                grace: Some(grace),
                idempotency_key,
                force,
            };
            let rotated: RotatedKey = client
                .call(
                    reqwest::Method::POST,
                    &format!("/keys/{id}/rotate"),
                    Some(&request),
                )
                .await?;
            if json {
                output::json(&rotated)
            } else {
                output::key_rotated(&rotated)
            }
        }
        KeyCommand::Resume { id, admin } => {
            let client = AdminClient::resolve(&admin)?;
            let id = resolve_key(&client, &id).await?;
            let key: KeyView = client
                .call(
                    reqwest::Method::POST,
                    &format!("/keys/{id}/resume"),
                    NO_BODY,
                )
                .await?;
            output::line(&format!("Key {} is {} again.", key.id, key.status))
        }
        KeyCommand::Update {
            id,
            name,
            project,
            providers,
            all_providers,
            models,
            all_models,
            ttl,
            rpm,
            tpm,
            max_parallel,
            on_anomaly,
            budgets,
            remove_budgets,
            allow_widen,
            allow_duplicate_name,
            json,
            admin,
        } => {
            let project = match project.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(project) => Some(Some(ProjectName::parse(project).context("--project")?)),
            };
            let providers = if all_providers {
                Some(Vec::new())
            } else if providers.is_empty() {
                None
            } else {
                Some(
                    providers
                        .iter()
                        .map(|p| ProviderName::parse(p))
                        .collect::<Result<Vec<_>, _>>()
                        .context("--provider")?,
                )
            };
            let models = if all_models {
                Some(Vec::new())
            } else if models.is_empty() {
                None
            } else {
                Some(
                    models
                        .iter()
                        .map(|m| ModelPattern::parse(m))
                        .collect::<Result<Vec<_>, _>>()
                        .context("--model")?,
                )
            };
            let ttl = match ttl.as_deref() {
                None => None,
                Some("never") => Some(None),
                Some(text) => {
                    Ttl::parse(text).with_context(|| format!("--ttl {text}"))?;
                    Some(Some(text.to_owned()))
                }
            };
            let on_anomaly = on_anomaly
                .as_deref()
                .map(|text| {
                    AnomalyAction::parse(text).context("--on-anomaly must be alert or suspend")
                })
                .transpose()?;
            let budgets = budgets
                .iter()
                .map(|b| BudgetLimit::parse(b).with_context(|| format!("--budget {b}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let remove_budgets = remove_budgets
                .iter()
                .map(|p| Period::parse(p).with_context(|| format!("--remove-budget {p}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = UpdateKeyRequest {
                name,
                project,
                providers,
                models,
                ttl,
                rpm: limit_change("--rpm", rpm.as_deref(), u32::MAX)?,
                tpm: limit_change("--tpm", tpm.as_deref(), u64::MAX)?,
                max_parallel: limit_change("--max-parallel", max_parallel.as_deref(), u32::MAX)?,
                on_anomaly,
                budgets,
                remove_budgets,
                allow_widen,
                allow_duplicate_name,
            };
            let client = AdminClient::resolve(&admin)?;
            let id = resolve_key(&client, &id).await?;
            let updated: UpdatedKey = client
                .call(
                    reqwest::Method::PATCH,
                    &format!("/keys/{id}"),
                    Some(&request),
                )
                .await?;
            output::warnings(&updated.warnings);
            if json {
                output::json(&updated)
            } else {
                output::line(&format!(
                    "Updated key {} (`{}`, {}){}; the change applies from the next request.",
                    updated.view.id,
                    updated.view.name,
                    updated.view.env,
                    if updated.widened {
                        ", scope widened"
                    } else {
                        ""
                    }
                ))?;
                output::key_detail(&updated.view)
            }
        }
    }
}

/// Which part of the ledger `keyforge usage` sums.
#[derive(Debug, Default)]
pub(crate) struct UsageFilter {
    pub(crate) key: Option<String>,
    pub(crate) env: Option<String>,
    pub(crate) project: Option<String>,
    /// A duration back (`30d`) or a time (RFC 3339, `YYYY-MM-DD`).
    pub(crate) since: Option<String>,
    /// A time, excluded.
    pub(crate) until: Option<String>,
    /// `YYYY-MM`.
    pub(crate) month: Option<String>,
}

pub(crate) async fn usage(
    filter: UsageFilter,
    by: String,
    format: UsageFormat,
    admin: AdminArgs,
) -> anyhow::Result<()> {
    use keyforge_gateway::admin::range;
    if !matches!(by.as_str(), "key" | "model" | "day" | "env" | "project") {
        bail!("--by must be key, model, day, env or project");
    }
    // Checked here as the server checks them, so a typo costs no request.
    let mut query: Vec<(&str, String)> = vec![("by", by)];
    if let Some(month) = filter.month {
        range::parse_month(&month).map_err(|error| anyhow::anyhow!("--month: {error}"))?;
        query.push(("month", month));
    }
    if let Some(since) = filter.since {
        if Ttl::parse(&since).is_err() {
            let at = range::parse_instant(&since).map_err(|error| {
                anyhow::anyhow!("--since: {error}, or a duration back from now (12h, 30d)")
            })?;
            query.push(("since", output::rfc3339(at)));
        } else {
            query.push(("since", since));
        }
    }
    if let Some(until) = filter.until {
        let at =
            range::parse_instant(&until).map_err(|error| anyhow::anyhow!("--until: {error}"))?;
        query.push(("until", output::rfc3339(at)));
    }
    let client = AdminClient::resolve(&admin)?;
    if let Some(key) = filter.key {
        query.push(("key", resolve_key(&client, &key).await?.to_string()));
    }
    if let Some(env) = filter.env {
        query.push(("env", EnvName::parse(&env)?.to_string()));
    }
    if let Some(project) = filter.project {
        query.push(("project", ProjectName::parse(&project)?.to_string()));
    }
    let encoded: Vec<String> = query
        .iter()
        .map(|(name, value)| format!("{name}={}", query_escape(value)))
        .collect();
    let report: UsageReport = client
        .call(
            reqwest::Method::GET,
            &format!("/usage?{}", encoded.join("&")),
            NO_BODY,
        )
        .await?;
    match format {
        UsageFormat::Json => output::json(&report),
        UsageFormat::Table => output::usage_table(&report),
        UsageFormat::Csv => output::usage_csv(&report),
    }
}

pub(crate) async fn budget(command: BudgetCommand) -> anyhow::Result<()> {
    match command {
        BudgetCommand::Set {
            limit,
            project,
            env,
            key,
            json,
            admin,
        } => {
            let limit = BudgetLimit::parse(&limit)?;
            let client = AdminClient::resolve(&admin)?;
            let scope = match (project, env, key) {
                (Some(project), None, None) => {
                    BudgetScope::Project(ProjectName::parse(&project).context("--project")?)
                }
                (None, Some(env), None) => BudgetScope::Env(EnvName::parse(&env).context("--env")?),
                (None, None, Some(key)) => {
                    BudgetScope::Key(resolve_key(&client, &key).await.context("--key")?)
                }
                _ => bail!("give exactly one of --project NAME, --env ENV or --key ID"),
            };
            let request = SetBudgetRequest { scope, limit };
            let budget: BudgetView = client
                .call(reqwest::Method::POST, "/budgets", Some(&request))
                .await?;
            if json {
                output::json(&budget)
            } else {
                output::budget_set(&budget)
            }
        }
        BudgetCommand::List { json, admin } => {
            let list: BudgetList = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/budgets", NO_BODY)
                .await?;
            if json {
                output::json(&list)
            } else {
                output::budget_table(&list.budgets)
            }
        }
        BudgetCommand::Remove { id, admin } => {
            let id = BudgetId::parse(&id)?;
            AdminClient::resolve(&admin)?
                .call_no_content(reqwest::Method::DELETE, &format!("/budgets/{id}"))
                .await?;
            output::line(&format!("Removed budget {id}."))
        }
    }
}

/// Finds a provider's id from its name (and environment, when the name is
/// in several).
async fn resolve_provider(
    client: &AdminClient,
    target: &ProviderTarget,
) -> anyhow::Result<keyforge_types::ProviderId> {
    if target.provider.starts_with("prv_") {
        return Ok(keyforge_types::ProviderId::parse(&target.provider)?);
    }
    let name = ProviderName::parse(&target.provider)?;
    let env = target.env.as_deref().map(EnvName::parse).transpose()?;
    let list: ProviderList = client
        .call(reqwest::Method::GET, "/providers", NO_BODY)
        .await?;
    let matches: Vec<&ProviderView> = list
        .providers
        .iter()
        .filter(|p| p.name == name && env.as_ref().is_none_or(|env| &p.env == env))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => match env {
            Some(env) => bail!("no provider named `{name}` in environment `{env}`"),
            None => bail!("no provider named `{name}`"),
        },
        several => bail!(
            "provider `{name}` exists in environments {}: add --env",
            several
                .iter()
                .map(|p| p.env.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub(crate) async fn rotate(command: RotateCommand) -> anyhow::Result<()> {
    let (target, admin, json) = match &command {
        RotateCommand::Start {
            target,
            admin,
            json,
            ..
        }
        | RotateCommand::Status {
            target,
            admin,
            json,
            ..
        }
        | RotateCommand::Promote {
            target,
            admin,
            json,
            ..
        }
        | RotateCommand::Finish {
            target,
            admin,
            json,
            ..
        }
        | RotateCommand::Rollback {
            target,
            admin,
            json,
            ..
        }
        | RotateCommand::Cancel {
            target,
            admin,
            json,
            ..
        } => (target, admin, *json),
    };
    let client = AdminClient::resolve(admin)?;
    let id = resolve_provider(&client, target).await?;
    let base = format!("/providers/{id}/rotation");
    let status: RotationStatus = match &command {
        RotateCommand::Start {
            from_env,
            from_file,
            no_check,
            ..
        } => {
            let secret =
                read_provider_key(&target.provider, from_env.as_deref(), from_file.as_ref())?;
            #[expect(
                clippy::disallowed_methods,
                reason = "the new provider key is sent once to the admin API, which seals it"
            )]
            let api_key = secret.expose().to_owned();
            let request = StartRotationRequest {
                api_key,
                skip_check: *no_check,
            };
            client
                .call(reqwest::Method::POST, &base, Some(&request))
                .await?
        }
        RotateCommand::Status { .. } => client.call(reqwest::Method::GET, &base, NO_BODY).await?,
        RotateCommand::Promote { percent, .. } => {
            let request = PromoteRequest { percent: *percent };
            client
                .call(
                    reqwest::Method::POST,
                    &format!("{base}/promote"),
                    Some(&request),
                )
                .await?
        }
        RotateCommand::Finish {
            force,
            quiet_window,
            ..
        } => {
            let quiet_minutes = quiet_window
                .as_deref()
                .map(|text| -> anyhow::Result<u32> {
                    let seconds = Ttl::parse(text)
                        .with_context(|| format!("--quiet-window {text}"))?
                        .as_duration()
                        .as_secs();
                    u32::try_from(seconds / 60)
                        .ok()
                        .filter(|minutes| (1..=7 * 24 * 60).contains(minutes))
                        .with_context(|| format!("--quiet-window {text}: 1m to 7d"))
                })
                .transpose()?;
            let request = FinishRequest {
                force: *force,
                quiet_minutes,
            };
            client
                .call(
                    reqwest::Method::POST,
                    &format!("{base}/finish"),
                    Some(&request),
                )
                .await?
        }
        RotateCommand::Rollback { .. } => {
            client
                .call(reqwest::Method::POST, &format!("{base}/rollback"), NO_BODY)
                .await?
        }
        RotateCommand::Cancel { .. } => {
            client
                .call(reqwest::Method::POST, &format!("{base}/cancel"), NO_BODY)
                .await?
        }
    };
    output::warnings(&status.warnings);
    if json {
        return output::json(&status);
    }
    output::rotation_status(&status)?;
    if matches!(command, RotateCommand::Rollback { .. }) {
        let provider = &status.provider;
        output::line(&format!(
            "Next: the key rolled back from is retired and serves no request. If it was faulty or leaked, revoke it in the provider's console; then rotate again with a new key: `keyforge rotate start {} --env {}`.",
            provider.name, provider.env
        ))?;
    }
    Ok(())
}

pub(crate) async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail {
            lines,
            after,
            kind,
            actor,
            key,
            since,
            until,
            format,
            follow,
            admin,
        } => {
            let client = AdminClient::resolve(&admin)?;
            let instant = |flag: &str, text: Option<String>| -> anyhow::Result<Option<String>> {
                text.map(|text| {
                    keyforge_gateway::admin::range::parse_instant(&text)
                        .map(crate::output::rfc3339)
                        .map_err(|error| anyhow::anyhow!("{flag}: {error}"))
                })
                .transpose()
            };
            let mut filters: Vec<(&str, String)> = Vec::new();
            if let Some(kind) = kind {
                filters.push(("kind", kind));
            }
            if let Some(actor) = actor {
                filters.push(("actor", actor));
            }
            if let Some(key) = key {
                let id = resolve_key(&client, &key).await.context("--key")?;
                filters.push(("key", id.to_string()));
            }
            if let Some(since) = instant("--since", since)? {
                filters.push(("since", since));
            }
            if let Some(until) = instant("--until", until)? {
                filters.push(("until", until));
            }
            let filtered = !filters.is_empty();
            let query = |extra: &[(&str, String)]| {
                let pairs: Vec<String> = extra
                    .iter()
                    .chain(filters.iter())
                    .map(|(name, value)| format!("{name}={}", query_escape(value)))
                    .collect();
                format!("/audit?{}", pairs.join("&"))
            };
            let print = |line: &str| -> anyhow::Result<()> {
                match format {
                    TailFormat::Json => output::line(line),
                    TailFormat::Text => match output::audit_text_line(line) {
                        Some(text) => output::line(&text),
                        // Checkpoints are for verification, not for people.
                        None => Ok(()),
                    },
                }
            };
            let header_seq = |headers: &reqwest::header::HeaderMap, name: &str| {
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok())
            };
            let seq_of = |line: &str| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|entry| entry.get("seq").and_then(serde_json::Value::as_u64))
            };
            // Where following goes on from: the newest entry seen or scanned.
            let mut position = match after {
                Some(after) => after,
                None => {
                    let shown = lines.unwrap_or(100).clamp(1, 10_000);
                    // One more than shown: whether earlier entries match.
                    let wanted = shown as usize + 1;
                    let mut collected: Vec<String> = Vec::new();
                    let mut before: Option<u64> = None;
                    let mut head: Option<u64> = None;
                    loop {
                        let mut extra = vec![("last", (wanted - collected.len()).to_string())];
                        if let Some(before) = before {
                            extra.push(("before", before.to_string()));
                        }
                        let (text, headers) = client.text_with_headers(&query(&extra)).await?;
                        head = head.or(header_seq(
                            &headers,
                            keyforge_gateway::admin::audit_log::SCANNED_TO_HEADER,
                        ));
                        let mut older: Vec<String> = text.lines().map(str::to_owned).collect();
                        older.append(&mut collected);
                        collected = older;
                        before = header_seq(
                            &headers,
                            keyforge_gateway::admin::audit_log::NEXT_BEFORE_HEADER,
                        );
                        if collected.len() >= wanted || before.is_none() {
                            break;
                        }
                    }
                    let more = collected.len() > shown as usize;
                    let skip = collected.len().saturating_sub(shown as usize);
                    for line in &collected[skip..] {
                        print(line)?;
                    }
                    if more {
                        eprintln!(
                            "(the newest {shown} matching entries; earlier ones exist: `-n {}` shows more, `--after 0` shows every one)",
                            u64::from(shown).saturating_mul(10).min(10_000)
                        );
                    }
                    head.unwrap_or(0)
                }
            };
            // Forward: every entry after `position`, then (with -f) new ones.
            let forward_all = after.is_some();
            loop {
                if !forward_all && !follow {
                    return Ok(());
                }
                let extra = [
                    ("after", position.to_string()),
                    ("limit", "1000".to_owned()),
                ];
                let (text, headers) = client.text_with_headers(&query(&extra)).await?;
                let before = position;
                for line in text.lines() {
                    if let Some(seq) = seq_of(line) {
                        position = position.max(seq);
                    }
                    print(line)?;
                }
                if filtered
                    && let Some(scanned) = header_seq(
                        &headers,
                        keyforge_gateway::admin::audit_log::SCANNED_TO_HEADER,
                    )
                {
                    position = position.max(scanned);
                }
                if position == before {
                    // Caught up.
                    if !follow {
                        return Ok(());
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        AuditCommand::Export { since, admin } => {
            let path = match &since {
                Some(since) => {
                    Ttl::parse(since).with_context(|| format!("--since {since}"))?;
                    format!("/audit/export?since={since}")
                }
                None => "/audit/export".to_owned(),
            };
            let text = AdminClient::resolve(&admin)?.text(&path).await?;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        AuditCommand::Verify { file: None, admin } => {
            let verification: keyforge_gateway::audit::Verification = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/audit/verify", NO_BODY)
                .await?;
            report_verification(&verification, "the gateway's audit log")
        }
        AuditCommand::Verify {
            file: Some(file),
            admin,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let master = offline_master_key(&admin)?;
            let key = master.derive(keyforge_gateway::audit::CHECKPOINT_KEY_LABEL);
            let verification = keyforge_gateway::audit::verify(
                text.lines(),
                &keyforge_gateway::audit::CheckpointKey::new(key.as_slice()),
            );
            report_verification(&verification, &file.display().to_string())
        }
    }
}

/// The master key for offline verification: `KEYFORGE_MASTER_KEY`, or the
/// data directory's `master.key` (never created here).
pub(crate) fn offline_master_key(admin: &AdminArgs) -> anyhow::Result<keyforge_vault::MasterKey> {
    let data_dir = match &admin.data_dir {
        Some(dir) => dir.clone(),
        None => match std::env::var_os("KEYFORGE_DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => default_data_dir()?,
        },
    };
    // The server's own order of sources; never a key created here.
    crate::serve::load_master_key(&data_dir, false)?.map(|(key, _)| key).with_context(|| {
        format!(
            "verifying a file needs the master key: set {} or {}, or point --data-dir at the data directory holding master.key",
            keyforge_vault::MASTER_KEY_ENV,
            crate::serve::MASTER_KEY_FILE_ENV
        )
    })
}

fn report_verification(
    verification: &keyforge_gateway::audit::Verification,
    what: &str,
) -> anyhow::Result<()> {
    match &verification.problem {
        None => output::line(&format!(
            "{what}: intact ({} entries, {} signed checkpoints).",
            verification.entries, verification.checkpoints
        )),
        Some(problem) => bail!(
            "{what} has been tampered with: {problem} ({} entries read before it)",
            verification.entries
        ),
    }
}

pub(crate) async fn alerts(command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::Add {
            webhook,
            thresholds,
            json,
            admin,
        } => {
            let url = if webhook == "-" {
                read_stdin_line("webhook URL")?
            } else {
                webhook
            };
            let request = CreateAlertRequest {
                url,
                thresholds: Some(thresholds),
            };
            let view: AlertWebhookView = AdminClient::resolve(&admin)?
                .call(reqwest::Method::POST, "/alerts", Some(&request))
                .await?;
            if json {
                output::json(&view)
            } else {
                output::line(&format!(
                    "Added alert webhook {} ({}) for budget thresholds {:?} % and anomalies. Its URL is stored encrypted.",
                    view.id, view.url, view.thresholds
                ))
            }
        }
        AlertsCommand::List { json, admin } => {
            let list: AlertWebhookList = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/alerts", NO_BODY)
                .await?;
            if json {
                output::json(&list)
            } else {
                output::webhook_table(&list.webhooks)
            }
        }
        AlertsCommand::Remove { id, admin } => {
            let id = AlertId::parse(&id)?;
            AdminClient::resolve(&admin)?
                .call_no_content(reqwest::Method::DELETE, &format!("/alerts/{id}"))
                .await?;
            output::line(&format!("Removed alert webhook {id}."))
        }
        AlertsCommand::Test {
            webhook_id,
            json,
            admin,
        } => {
            let request = TestAlertRequest {
                webhook_id: webhook_id.as_deref().map(AlertId::parse).transpose()?,
            };
            let report: TestAlertReport = AdminClient::resolve(&admin)?
                .call(reqwest::Method::POST, "/alerts/test", Some(&request))
                .await?;
            if json {
                output::json(&report)?;
            } else {
                output::test_alerts(&report.outcomes)?;
            }
            let failed = report.outcomes.iter().filter(|o| !o.delivered).count();
            if failed > 0 {
                anyhow::bail!(
                    "{failed} of {} webhooks did not accept the test alert",
                    report.outcomes.len()
                );
            }
            Ok(())
        }
        AlertsCommand::Log { limit, json, admin } => {
            let log: AlertLog = AdminClient::resolve(&admin)?
                .call(
                    reqwest::Method::GET,
                    &format!("/alerts/log?limit={limit}"),
                    NO_BODY,
                )
                .await?;
            if json {
                output::json(&log)
            } else {
                output::alert_log(&log.alerts)
            }
        }
    }
}

/// One line from stdin (a webhook URL); never echoed.
fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let line = text.trim().to_owned();
    if line.is_empty() {
        bail!("no {what} on stdin");
    }
    Ok(line)
}

pub(crate) async fn status(json: bool, admin: AdminArgs) -> anyhow::Result<()> {
    let report: StatusReport = AdminClient::resolve(&admin)?
        .call(reqwest::Method::GET, "/status", NO_BODY)
        .await?;
    if json {
        output::json(&report)
    } else {
        output::status(&report)
    }
}

pub(crate) async fn doctor(
    check_providers: bool,
    json: bool,
    admin: AdminArgs,
) -> anyhow::Result<()> {
    let path = if check_providers {
        "/doctor?check_providers=true"
    } else {
        "/doctor"
    };
    let report: DoctorReport = AdminClient::resolve(&admin)?
        .call(reqwest::Method::GET, path, NO_BODY)
        .await?;
    if json {
        output::json(&report)?;
    } else {
        output::doctor(&report)?;
    }
    let warnings = report
        .findings
        .iter()
        .filter(|f| f.severity == "warning")
        .count();
    if warnings > 0 {
        bail!("{warnings} findings to act on");
    }
    Ok(())
}

pub(crate) async fn prices(json: bool, admin: AdminArgs) -> anyhow::Result<()> {
    let list: PriceList = AdminClient::resolve(&admin)?
        .call(reqwest::Method::GET, "/prices", NO_BODY)
        .await?;
    if json {
        output::json(&list)
    } else {
        output::price_table(&list)
    }
}

/// `keyforge admin ...`: named admins.
pub(crate) async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    use keyforge_gateway::admin::api::{AdminList, AdminView, AdminWithToken, CreateAdminRequest};
    use keyforge_types::{AdminName, AdminRole};
    match command {
        AdminCommand::Add {
            name,
            role,
            json,
            admin,
        } => {
            let request = CreateAdminRequest {
                name: AdminName::parse(&name)?,
                role: AdminRole::parse(&role)?,
            };
            let client = AdminClient::resolve(&admin)?;
            let created: AdminWithToken = client
                .call(reqwest::Method::POST, "/admins", Some(&request))
                .await?;
            if json {
                output::json(&created)
            } else {
                output::admin_token(&created, "Added")
            }
        }
        AdminCommand::List { json, admin } => {
            let list: AdminList = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/admins", NO_BODY)
                .await?;
            if json {
                output::json(&list)
            } else {
                output::admins(&list.admins, &list.sessions)
            }
        }
        AdminCommand::Revoke { name, json, admin } => {
            let name = AdminName::parse(&name)?;
            let view: AdminView = AdminClient::resolve(&admin)?
                .call(
                    reqwest::Method::POST,
                    &format!("/admins/{name}/revoke"),
                    NO_BODY,
                )
                .await?;
            if json {
                output::json(&view)
            } else {
                let what = if view.name.as_str().starts_with("session-") {
                    "session"
                } else {
                    "admin"
                };
                output::line(&format!(
                    "Revoked {what} {} ({}): its token is refused from now on.",
                    view.name, view.role
                ))
            }
        }
        AdminCommand::RotateToken { name, json, admin } => {
            let name = AdminName::parse(&name)?;
            let rotated: AdminWithToken = AdminClient::resolve(&admin)?
                .call(
                    reqwest::Method::POST,
                    &format!("/admins/{name}/rotate-token"),
                    NO_BODY,
                )
                .await?;
            if json {
                output::json(&rotated)
            } else {
                output::admin_token(&rotated, "New token for")
            }
        }
        AdminCommand::Login {
            oidc,
            id_token_file,
            print,
            addr,
        } => {
            crate::admin_login::login(addr.as_deref(), oidc, id_token_file.as_deref(), print).await
        }
        AdminCommand::Logout => crate::admin_login::logout().await,
        AdminCommand::Whoami { json, admin } => {
            let view: AdminView = AdminClient::resolve(&admin)?
                .call(reqwest::Method::GET, "/whoami", NO_BODY)
                .await?;
            if json {
                output::json(&view)
            } else {
                output::line(&format!("{} ({})", view.name, view.role))
            }
        }
    }
}
