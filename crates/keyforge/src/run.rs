//! `keyforge login` and `keyforge run`: short-lived keys for workloads.
//!
//! `login` trades an OIDC token (a file, an environment variable, or GitHub
//! Actions' token service) for a `kf_` key. `run` mints a key (the same way,
//! or with the admin token), starts a command with the providers' SDK
//! variables pointing at the gateway, forwards signals to it, and revokes the
//! key when it exits. The key reaches the child only through its own
//! environment (never argv, never KeyForge's own environment), and the child
//! never sees the admin token or a provider's real key.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use keyforge_gateway::admin::api::{
    CreateKeyRequest, CreatedKey, ErrorBody, ReachableProvider, RevokeResult, SelfView,
};
use keyforge_types::{BudgetLimit, EnvName, KeyLimits, ModelPattern, ProviderName, Ttl};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::cli::{LoginArgs, RunArgs, TokenSource};
use crate::client::{AdminClient, gateway_base};
use crate::serve::ADMIN_TOKEN_ENV;

/// Largest OIDC token read from a file or the environment.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// Turns a non-success answer into an error naming its code.
async fn answer(response: reqwest::Response, what: &str) -> anyhow::Result<Vec<u8>> {
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => bail!("{what}: {} ({})", body.error.message, body.error.code),
            Err(_) => bail!("{what}: KeyForge answered {status}"),
        }
    }
    Ok(bytes.to_vec())
}

fn unreachable(base: &str, error: reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach KeyForge at {base}: {} (is `keyforge serve` running? set KEYFORGE_ADDR to its address)",
        error.without_url()
    )
}

/// The workload's OIDC token, from where it was said to be.
async fn read_token(source: &TokenSource) -> anyhow::Result<SecretString> {
    let text = if let Some(path) = &source.oidc_token_file {
        read_limited(path)?
    } else if let Some(var) = &source.oidc_token_env {
        std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?
    } else if source.github_actions {
        github_actions_token(&source.audience).await?
    } else {
        bail!("give the OIDC token: --oidc-token-file, --oidc-token-env or --github-actions");
    };
    let text = text.trim();
    if text.is_empty() {
        bail!("the OIDC token is empty");
    }
    Ok(SecretString::from(text.to_owned()))
}

fn read_limited(path: &PathBuf) -> anyhow::Result<String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text)
}

/// Asks GitHub Actions' token service for an OIDC token for `audience` (the
/// job needs `permissions: id-token: write`).
async fn github_actions_token(audience: &str) -> anyhow::Result<String> {
    let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL").context(
        "ACTIONS_ID_TOKEN_REQUEST_URL is not set: run inside GitHub Actions with `permissions: id-token: write`",
    )?;
    let bearer = std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .context("ACTIONS_ID_TOKEN_REQUEST_TOKEN is not set")?;
    let mut url = reqwest::Url::parse(&url).context("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL")?;
    url.query_pairs_mut().append_pair("audience", audience);
    let response = http()?
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot reach GitHub's token service: {}",
                error.without_url()
            )
        })?;
    let status = response.status();
    if !status.is_success() {
        bail!("GitHub's token service answered {status}");
    }
    let body: serde_json::Value = response
        .json()
        .await
        .context("GitHub's token service did not answer JSON")?;
    body.get("value")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("GitHub's token service answered no `value`")
}

/// Exchanges the token at the gateway.
async fn exchange(
    base: &str,
    role: &str,
    token: &SecretString,
    ttl: Option<&str>,
) -> anyhow::Result<CreatedKey> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the OIDC token goes only into the exchange request's body"
    )]
    let body = json!({"role": role, "token": token.expose_secret(), "ttl": ttl});
    let response = http()?
        .post(format!("{base}/keyforge/v1/oidc/login"))
        .json(&body)
        .send()
        .await
        .map_err(|error| unreachable(base, error))?;
    let bytes = answer(response, "login refused").await?;
    serde_json::from_slice(&bytes).context("unexpected answer to the OIDC login")
}

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let base = gateway_base(args.addr.as_deref());
    let token = read_token(&args.token).await?;
    let created = exchange(&base, &args.role, &token, args.ttl.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&created)?)?;
    } else {
        // The key alone on stdout (for `$(keyforge login ...)`); the rest on
        // stderr.
        writeln!(out, "{}", created.key)?;
        let expires = created.view.expires_at.as_deref().unwrap_or("never");
        let _ = writeln!(
            std::io::stderr().lock(),
            "Logged in as role {}: key {} in environment {}, expires {expires}",
            args.role,
            created.view.id,
            created.view.env
        );
    }
    Ok(())
}

/// How the key of a run is revoked when the command ends.
enum Minted {
    /// Minted with the admin token: revoked through the admin API.
    Admin(AdminClient),
    /// Minted from an OIDC token: the key revokes itself.
    Oidc,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some((program, program_args)) = args.command.split_first() else {
        bail!(
            "give the command to run after `--`, as in `keyforge run --env dev -- python app.py`"
        );
    };
    let (created, minted, base) = match &args.role {
        Some(role) => {
            let base = gateway_base(args.admin.addr.as_deref());
            let token = read_token(&args.token).await?;
            let created = exchange(&base, role, &token, args.key_ttl.as_deref()).await?;
            (created, Minted::Oidc, base)
        }
        None => {
            let admin = AdminClient::resolve(&args.admin)?;
            let Some(env) = &args.env else {
                bail!("say which environment the key is for (--env), or use an OIDC role (--role)");
            };
            let env = EnvName::parse(env).context("--env")?;
            let ttl = args.key_ttl.clone().unwrap_or_else(|| "1h".to_owned());
            Ttl::parse(&ttl).context("--key-ttl")?;
            let name = args.name.clone().unwrap_or_else(|| {
                let program = std::path::Path::new(program)
                    .file_name()
                    .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
                let mut name = format!("run: {program}");
                name.truncate(name.char_indices().nth(100).map_or(name.len(), |(i, _)| i));
                name
            });
            let request = CreateKeyRequest {
                name,
                env: Some(env),
                parent: None,
                can_mint: false,
                providers: args
                    .providers
                    .iter()
                    .map(|p| ProviderName::parse(p))
                    .collect::<Result<Vec<_>, _>>()
                    .context("--provider")?,
                models: args
                    .models
                    .iter()
                    .map(|m| ModelPattern::parse(m))
                    .collect::<Result<Vec<_>, _>>()
                    .context("--model")?,
                ttl: Some(ttl),
                project: args
                    .project
                    .as_deref()
                    .map(keyforge_types::ProjectName::parse)
                    .transpose()
                    .context("--project")?,
                budgets: args
                    .budgets
                    .iter()
                    .map(|b| BudgetLimit::parse(b).with_context(|| format!("--budget {b}")))
                    .collect::<anyhow::Result<Vec<_>>>()?,
                limits: KeyLimits::default(),
                on_anomaly: keyforge_types::AnomalyAction::Alert,
                // Two runs of one command at once are two keys of one name.
                allow_duplicate_name: true,
            };
            let created: CreatedKey = admin
                .call(reqwest::Method::POST, "/keys", Some(&request))
                .await?;
            let base = admin.base().to_owned();
            (created, Minted::Admin(admin), base)
        }
    };
    let key = SecretString::from(created.key.clone());
    let key_id = created.view.id.clone();
    let providers = match describe(&base, &key).await {
        Ok(view) => view.providers,
        Err(error) => {
            revoke(&minted, &base, &key, &created).await;
            return Err(error);
        }
    };
    let variables = child_environment(
        &base,
        &key,
        &key_id.to_string(),
        &providers,
        &args.env_prefix,
    );
    let mut command = tokio::process::Command::new(program);
    command.args(program_args);
    // The child must not inherit the power to mint or revoke keys.
    command.env_remove(ADMIN_TOKEN_ENV);
    for (name, value) in &variables {
        #[expect(
            clippy::disallowed_methods,
            reason = "the key is handed to the child process in its environment, its one destination"
        )]
        let value = value.expose_secret();
        command.env(name, value);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            revoke(&minted, &base, &key, &created).await;
            return Err(anyhow::Error::from(error).context(format!("cannot start `{program}`")));
        }
    };
    let status = forward_signals_until_exit(&mut child).await;
    revoke(&minted, &base, &key, &created).await;
    let status = status.with_context(|| format!("waiting for `{program}`"))?;
    Ok(exit_code(status))
}

/// Revokes the run's key; a failure is reported, not fatal (the key still
/// expires on its own).
async fn revoke(minted: &Minted, base: &str, key: &SecretString, created: &CreatedKey) {
    let key_id = &created.view.id;
    let outcome = match minted {
        Minted::Admin(admin) => admin
            .call::<RevokeResult>(
                reqwest::Method::POST,
                &format!("/keys/{key_id}/revoke"),
                None::<&()>,
            )
            .await
            .map(drop),
        Minted::Oidc => revoke_self(base, key).await,
    };
    if let Err(error) = outcome {
        let expires = created.view.expires_at.as_deref().unwrap_or("never");
        let _ = writeln_stderr(&format!(
            "keyforge run: could not revoke key {key_id} ({error:#}); it stays valid until it expires ({expires})"
        ));
    }
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr().lock(), "{text}")
}

async fn describe(base: &str, key: &SecretString) -> anyhow::Result<SelfView> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the key authenticates its own description request"
    )]
    let response = http()?
        .get(format!("{base}/keyforge/v1/keys/self"))
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .map_err(|error| unreachable(base, error))?;
    let bytes = answer(response, "cannot describe the new key").await?;
    serde_json::from_slice(&bytes).context("unexpected answer describing the key")
}

async fn revoke_self(base: &str, key: &SecretString) -> anyhow::Result<()> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the key authenticates its own revocation"
    )]
    let response = http()?
        .post(format!("{base}/keyforge/v1/keys/self/revoke"))
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .map_err(|error| unreachable(base, error))?;
    answer(response, "revocation refused").await.map(drop)
}

/// The variables the child gets: each SDK's key and base URL for the
/// providers the key reaches, and KeyForge's own. Where several providers
/// of one kind are in reach, the SDK variables point at the first by name;
/// every provider also has `KEYFORGE_BASE_URL_<NAME>`.
pub(crate) fn child_environment(
    base: &str,
    key: &SecretString,
    key_id: &str,
    providers: &[ReachableProvider],
    prefix: &str,
) -> Vec<(String, SecretString)> {
    let mut variables: Vec<(String, SecretString)> = Vec::new();
    let mut set = |name: &str, value: SecretString| {
        let name = format!("{prefix}{name}");
        if !variables.iter().any(|(existing, _)| *existing == name) {
            variables.push((name, value));
        }
    };
    let plain = |text: String| SecretString::from(text);
    set("KEYFORGE_API_KEY", key.clone());
    set("KEYFORGE_KEY_ID", plain(key_id.to_owned()));
    set("KEYFORGE_BASE_URL", plain(base.to_owned()));
    for provider in providers {
        let root = format!("{base}{}", provider.path);
        match provider.kind.as_str() {
            "openai" => {
                set("OPENAI_API_KEY", key.clone());
                set("OPENAI_BASE_URL", plain(format!("{root}/v1")));
            }
            "anthropic" => {
                set("ANTHROPIC_API_KEY", key.clone());
                set("ANTHROPIC_BASE_URL", plain(root.clone()));
            }
            "gemini" => {
                set("GEMINI_API_KEY", key.clone());
                set("GOOGLE_GEMINI_BASE_URL", plain(root.clone()));
            }
            _ => {}
        }
        let upper = provider
            .name
            .as_str()
            .to_ascii_uppercase()
            .replace('-', "_");
        set(&format!("KEYFORGE_BASE_URL_{upper}"), plain(root));
    }
    variables
}

/// Waits for the child, passing on the signals a supervisor or a terminal
/// sends (INT, TERM, HUP, QUIT, USR1, USR2), so the child decides how to
/// stop and `keyforge run` outlives it to revoke the key.
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::interrupt(), rustix::process::Signal::INT),
        (SignalKind::terminate(), rustix::process::Signal::TERM),
        (SignalKind::hangup(), rustix::process::Signal::HUP),
        (SignalKind::quit(), rustix::process::Signal::QUIT),
        (SignalKind::user_defined1(), rustix::process::Signal::USR1),
        (SignalKind::user_defined2(), rustix::process::Signal::USR2),
    ];
    let mut streams = Vec::new();
    for (kind, forwarded) in kinds {
        streams.push((signal(kind)?, forwarded));
    }
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (mut stream, forwarded) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(forwarded).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            status = child.wait() => return status,
            Some(forwarded) = rx.recv() => {
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process(pid, forwarded);
                }
            }
        }
    }
}

/// The child's exit code, or 128 + the signal that killed it (as shells do).
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "tests compare the handed-out values"
)]
mod tests {
    use super::*;

    fn provider(name: &str, kind: &str) -> ReachableProvider {
        ReachableProvider {
            name: ProviderName::parse(name).unwrap(),
            kind: kind.to_owned(),
            path: format!("/p/{name}"),
        }
    }

    #[test]
    fn the_child_gets_each_sdks_variables_for_the_providers_in_reach() {
        let key = SecretString::from("kf_dev_test".to_owned());
        let providers = [
            provider("claude", "anthropic"),
            provider("gemini", "gemini"),
            provider("openai", "openai"),
            provider("openai-eu", "openai"),
        ];
        let variables = child_environment("http://127.0.0.1:8787", &key, "key_x", &providers, "");
        let get = |name: &str| {
            variables
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.expose_secret().to_owned())
        };
        assert_eq!(get("OPENAI_API_KEY").unwrap(), "kf_dev_test");
        assert_eq!(
            get("OPENAI_BASE_URL").unwrap(),
            "http://127.0.0.1:8787/p/openai/v1"
        );
        assert_eq!(
            get("ANTHROPIC_BASE_URL").unwrap(),
            "http://127.0.0.1:8787/p/claude"
        );
        assert_eq!(get("GEMINI_API_KEY").unwrap(), "kf_dev_test");
        assert_eq!(
            get("GOOGLE_GEMINI_BASE_URL").unwrap(),
            "http://127.0.0.1:8787/p/gemini"
        );
        assert_eq!(
            get("KEYFORGE_BASE_URL_OPENAI_EU").unwrap(),
            "http://127.0.0.1:8787/p/openai-eu"
        );
        assert_eq!(get("KEYFORGE_KEY_ID").unwrap(), "key_x");

        let only_openai = child_environment("http://gw", &key, "key_x", &providers[2..3], "APP_");
        let names: Vec<&str> = only_openai.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"APP_OPENAI_API_KEY"));
        assert!(!names.iter().any(|n| n.contains("ANTHROPIC")));
        assert!(names.iter().all(|n| n.starts_with("APP_")));
    }
}
