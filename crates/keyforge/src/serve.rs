//! `keyforge serve`: prepare the data directory, load secrets, start the
//! gateway, stop cleanly on SIGINT/SIGTERM.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use keyforge_gateway::{Gateway, GatewayParts, SystemClock};
use keyforge_store::{PgStore, SqliteStore, Store};
use keyforge_types::random_base62;
use keyforge_vault::{MASTER_KEY_ENV, MasterKey, MasterKeySource, write_private_file};
use secrecy::SecretString;

use crate::config::ServeConfig;

pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";
pub(crate) const ADMIN_TOKEN_ENV: &str = "KEYFORGE_ADMIN_TOKEN";
/// The metrics token: `/metrics` on the main listener needs it. Its own
/// token, not the admin token: a Prometheus server holding it can read
/// metrics and nothing else.
const METRICS_TOKEN_FILE: &str = "metrics.token";
const METRICS_TOKEN_ENV: &str = "KEYFORGE_METRICS_TOKEN";
pub(crate) const MASTER_KEY_FILE: &str = "master.key";
/// Names a file holding the master key (a Docker or Kubernetes secret).
pub(crate) const MASTER_KEY_FILE_ENV: &str = "KEYFORGE_MASTER_KEY_FILE";
/// The systemd credential holding the master key
/// (`LoadCredential=master.key:/etc/keyforge/master.key`).
pub(crate) const MASTER_KEY_CREDENTIAL: &str = "master.key";
pub(crate) const DATABASE_FILE: &str = "keyforge.db";
/// Locked (`flock`, exclusive) by `keyforge serve` for as long as it runs,
/// and by `keyforge restore` and an offline `keyforge backup`: so a restore
/// never swaps the database under a server, and an audit entry written
/// without a server is the chain's only writer.
pub(crate) const LOCK_FILE: &str = "keyforge.lock";

pub(crate) async fn run(config: ServeConfig, json_logs: bool) -> anyhow::Result<()> {
    disable_core_dumps()?;
    forbid_inspection()?;
    let file_limit_note = ensure_file_limit(config.gateway.max_connections);
    prepare_data_dir(&config.data_dir)?;
    // The embedded store's file is this process's alone: a second server on
    // the same data directory is refused at once. With PostgreSQL the data
    // directory holds only local files (master key, tokens), and any
    // number of instances share the database.
    let _data_dir_lock = match &config.database {
        Some(_) => None,
        None => Some(lock_data_dir(&config.data_dir)?.with_context(|| {
            format!(
                "another keyforge process (a server, or a restore) holds the data directory {}",
                config.data_dir.display()
            )
        })?),
    };

    let (master_key, master_source) =
        load_master_key(&config.data_dir, true)?.context("no master key")?;
    let (admin_token, admin_created) = load_or_create_admin_token(&config.data_dir)?;
    let (metrics_token, metrics_created) = load_or_create_token(
        &config.data_dir,
        METRICS_TOKEN_ENV,
        METRICS_TOKEN_FILE,
        "kfmetrics_",
    )?;

    let store: Arc<dyn Store> = match &config.database {
        Some(url) => Arc::new(PgStore::connect(url).await.with_context(|| {
            format!(
                "cannot open the PostgreSQL database {}",
                keyforge_store::redact_url(url)
            )
        })?),
        None => Arc::new(
            SqliteStore::open(&config.data_dir.join(DATABASE_FILE))
                .await
                .context("cannot open the database")?,
        ),
    };
    // What `doctor` checks about this start (master key file mode,
    // exposure, backups).
    let mut gateway_config = config.gateway;
    gateway_config.deployment = keyforge_gateway::Deployment {
        master_key_file: match &master_source {
            MasterKeySource::Environment => None,
            MasterKeySource::File(path) | MasterKeySource::CreatedFile(path) => Some(path.clone()),
        },
        listen: Some(config.listen),
        tls: config.tls.is_some(),
        data_dir: Some(config.data_dir.clone()),
        embedded_store: config.database.is_none(),
    };
    let gateway = Gateway::new(GatewayParts {
        config: gateway_config,
        store,
        master_key,
        admin_token,
        admin_token_created: admin_created.is_some(),
        clock: Arc::new(SystemClock),
        prices: config.prices,
        limits: config.limits,
        metrics_token: Some(metrics_token),
    })
    .await?;
    // Read before the listener opens: a bad certificate stops the start.
    let tls = match &config.tls {
        Some(files) => Some(
            keyforge_gateway::TlsCertificates::load(files.clone()).context(
                "cannot serve TLS (--tls-cert/--tls-key, `[server] tls_cert`/`tls_key`)",
            )?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };

    let (providers, keys) = gateway.counts();
    let mut notes = Vec::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    notes.push(format!("KeyForge listening on {scheme}://{local}"));
    if let Some(tls) = &tls {
        notes.push(format!(
            "TLS: {} ({} certificate(s) in the chain), key {}; HTTP/2 and HTTP/1.1; SIGHUP re-reads both",
            tls.files().cert.display(),
            tls.current().chain_len,
            tls.files().key.display()
        ));
    }
    notes.push(format!("data directory: {}", config.data_dir.display()));
    notes.push(match &config.database {
        Some(url) => format!(
            "store: PostgreSQL {} (shared; every instance needs the same master key)",
            keyforge_store::redact_url(url)
        ),
        None => format!(
            "store: SQLite {}",
            config.data_dir.join(DATABASE_FILE).display()
        ),
    });
    notes.push(match &master_source {
        MasterKeySource::Environment => format!("master key: from {MASTER_KEY_ENV}"),
        MasterKeySource::File(path) => format!("master key: {}", path.display()),
        MasterKeySource::CreatedFile(path) => format!("master key: created {} (mode 0600; back it up: without it the stored provider keys cannot be decrypted)", path.display()),
    });
    notes.push(match admin_created {
        Some(path) => format!(
            "admin token: created {} (mode 0600; the CLI reads it from there)",
            path.display()
        ),
        None => "admin token: loaded".to_owned(),
    });
    notes.push(match metrics_created {
        Some(path) => format!(
            "metrics token: created {} (mode 0600; GET /metrics needs it as a bearer token)",
            path.display()
        ),
        None => "metrics token: loaded".to_owned(),
    });
    if let Some(metrics) = &metrics_listener {
        let addr = metrics.local_addr()?;
        let scheme = if config.metrics_tls { "https" } else { "http" };
        notes.push(format!(
            "metrics on {scheme}://{addr}/metrics (no token on this listener)"
        ));
        if !addr.ip().is_loopback() {
            notes.push(format!("warning: the metrics listener {addr} is beyond loopback and needs no token; anyone who reaches it reads your traffic's projects, models and spend"));
        }
    }
    notes.push(format!("{providers} provider(s), {keys} virtual key(s)"));
    notes.extend(file_limit_note);
    if !local.ip().is_loopback() && tls.is_none() {
        notes.push("warning: listening beyond loopback over plain HTTP: keys cross the network in clear; serve TLS with --tls-cert FILE --tls-key FILE (or put KeyForge behind a TLS terminator and set `[server] trusted_proxies`)".to_owned());
    }
    let mut stderr = std::io::stderr().lock();
    // Before anyone can read that the gateway is up.
    let shutdown = shutdown_signal();
    let reloads = match &tls {
        Some(tls) => Some(reload_on_sighup(tls.clone())?),
        None => None,
    };
    for note in &notes {
        if json_logs {
            // Every stderr line is then one JSON object.
            tracing::info!("{note}");
        } else {
            writeln!(stderr, "{note}")?;
        }
    }
    drop(stderr);
    tracing::info!(address = %local, providers, keys, "gateway started");

    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_tls = if config.metrics_tls {
        tls.clone()
    } else {
        None
    };
    let metrics_task = metrics_listener.map(|metrics| {
        tokio::spawn(keyforge_gateway::serve_metrics(
            metrics,
            gateway.clone(),
            metrics_tls,
            async move {
                let _ = metrics_stopped.await;
            },
        ))
    });
    match tls {
        Some(tls) => keyforge_gateway::serve_tls(listener, gateway, tls, shutdown).await?,
        None => keyforge_gateway::serve(listener, gateway, shutdown).await?,
    }
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    drop(metrics_stop);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Where the master key is read from, first found wins:
/// `KEYFORGE_MASTER_KEY`; the file `KEYFORGE_MASTER_KEY_FILE` names (a
/// mounted secret); systemd's credential `master.key` (`LoadCredential=`,
/// in `$CREDENTIALS_DIRECTORY`); the data directory's `master.key`,
/// created if absent when `create` (else `None`). Files must be readable
/// by their owner only, and the one `KEYFORGE_MASTER_KEY_FILE` names must
/// exist.
pub(crate) fn load_master_key(
    data_dir: &Path,
    create: bool,
) -> anyhow::Result<Option<(MasterKey, MasterKeySource)>> {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(text) = std::env::var(MASTER_KEY_ENV)
        .ok()
        .filter(|value| !value.is_empty())
    {
        return Ok(Some(MasterKey::load_or_create(
            Some(&text),
            &data_dir.join(MASTER_KEY_FILE),
        )?));
    }
    if let Some(path) = var(MASTER_KEY_FILE_ENV).map(PathBuf::from) {
        let key = MasterKey::from_file(&path).context(MASTER_KEY_FILE_ENV)?;
        return Ok(Some((key, MasterKeySource::File(path))));
    }
    if let Some(directory) = var("CREDENTIALS_DIRECTORY").map(PathBuf::from) {
        let path = directory.join(MASTER_KEY_CREDENTIAL);
        if path.exists() {
            let key = MasterKey::from_file(&path)
                .context("the systemd credential master.key ($CREDENTIALS_DIRECTORY)")?;
            return Ok(Some((key, MasterKeySource::File(path))));
        }
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    if !create && !path.exists() {
        return Ok(None);
    }
    Ok(Some(MasterKey::load_or_create(None, &path)?))
}

/// Re-reads the TLS certificate and key on every SIGHUP. The handler is
/// installed now, before the start notes, so a reload sent as soon as the
/// gateway says it is up never kills it (SIGHUP's default action).
fn reload_on_sighup(
    tls: keyforge_gateway::TlsCertificates,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let cert = tls.files().cert.display().to_string();
            match tls.reload() {
                Ok(loaded) => {
                    tracing::info!(
                        cert,
                        chain_len = loaded.chain_len,
                        "TLS certificate reloaded; new connections get it"
                    );
                }
                Err(error) => {
                    tracing::warn!(error = %error, "TLS reload failed; still serving the previous certificate");
                }
            }
        }
    }))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM right after the
/// start notes (a supervisor stopping a fresh instance) must shut down
/// gracefully, not kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |signal: std::io::Result<tokio::signal::unix::Signal>| async move {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(terminate) => {}
            () = wait(interrupt) => {}
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}

/// A core dump of the gateway would hold decrypted provider keys.
fn disable_core_dumps() -> anyhow::Result<()> {
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0).context("cannot disable core dumps")
}

/// Makes the process non-dumpable (`PR_SET_DUMPABLE` 0, prctl(2)): beyond
/// core dumps, Linux then lets no process of the same user `ptrace` it or
/// read its memory (`/proc/<pid>/mem`), and makes its `/proc/<pid>` files,
/// `environ` among them, owned by root. A compromised tool running as the
/// same user can no longer lift decrypted provider keys, the master key or
/// the admin token out of the gateway. (Root still can.)
fn forbid_inspection() -> anyhow::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make the process non-dumpable (prctl PR_SET_DUMPABLE)")
}

/// Files the process needs open besides client connections: the database
/// and its WAL, upstream connections, logs.
const FILE_HEADROOM: u64 = 256;

/// The open-files limit (soft, hard) the process should ask for so that
/// `max_connections` client connections leave [`FILE_HEADROOM`], and a
/// warning when the hard limit does not allow it. `None`: leave it.
fn file_limit_plan(soft: u64, hard: u64, max_connections: usize) -> (Option<u64>, Option<String>) {
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(FILE_HEADROOM);
    if soft >= needed {
        (None, None)
    } else if hard >= needed {
        (Some(needed), None)
    } else {
        (
            (hard > soft).then_some(hard),
            Some(format!(
                "warning: this process may open {hard} files, fewer than limits.max_connections ({max_connections}) plus {FILE_HEADROOM} for the database and upstreams; lower max_connections or raise `ulimit -n` (systemd LimitNOFILE=)"
            )),
        )
    }
}

/// Raises the soft open-files limit as far as `max_connections` needs
/// (within the hard limit); returns a note for the operator if it cannot.
fn ensure_file_limit(max_connections: usize) -> Option<String> {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return None;
    };
    let (raise, warning) = file_limit_plan(soft, hard, max_connections);
    if let Some(soft) = raise
        && let Err(error) = rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard)
    {
        tracing::warn!(error = %error, "cannot raise the open-files limit");
    }
    warning
}

/// Takes the data directory's lock without waiting; `None` while another
/// process holds it (a running `keyforge serve`).
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

pub(crate) fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => bail!(
            "data directory {} exists but is not a directory",
            dir.display()
        ),
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %dir.display(), "data directory is accessible to other users; consider chmod 700");
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display())),
        Err(error) => {
            Err(error).with_context(|| format!("cannot read data directory {}", dir.display()))
        }
    }
}

/// The server's admin token: `KEYFORGE_ADMIN_TOKEN` if set, else the 0600
/// file in the data directory, created on first start.
fn load_or_create_admin_token(dir: &Path) -> anyhow::Result<(SecretString, Option<PathBuf>)> {
    load_or_create_token(dir, ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE, "kfadmin_")
}

/// A server token: from `env` if set, else the 0600 file `file` in the data
/// directory, created on first start as `prefix` and 43 base62 characters.
fn load_or_create_token(
    dir: &Path,
    env: &str,
    file: &str,
    prefix: &str,
) -> anyhow::Result<(SecretString, Option<PathBuf>)> {
    if let Some(token) = std::env::var(env)
        .ok()
        .filter(|value| !value.trim().is_empty())
    {
        if token.trim().len() < 32 {
            bail!("{env} must be at least 32 characters long");
        }
        return Ok((SecretString::from(token.trim().to_owned()), None));
    }
    let path = dir.join(file);
    match read_admin_token_file(&path) {
        Ok(token) => Ok((token, None)),
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
        {
            let token = format!("{prefix}{}", random_base62(43));
            write_private_file(&path, format!("{token}\n").as_bytes())
                .with_context(|| format!("cannot create {}", path.display()))?;
            Ok((SecretString::from(token), Some(path)))
        }
        Err(error) => Err(error),
    }
}

pub(crate) fn read_admin_token_file(path: &Path) -> anyhow::Result<SecretString> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "token file {} can be read by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_leaves_room_for_every_connection() {
        fn check(soft: u64, hard: u64, max_connections: usize, raise: Option<u64>, warns: bool) {
            let (raised, warning) = file_limit_plan(soft, hard, max_connections);
            assert_eq!(raised, raise, "{soft}/{hard} for {max_connections}");
            assert_eq!(
                warning.is_some(),
                warns,
                "{soft}/{hard} for {max_connections}: {warning:?}"
            );
        }
        check(1024, 4096, 768, None, false);
        check(1024, 524_288, 2000, Some(2256), false);
        check(1024, 1024, 2000, None, true);
        check(256, 1024, 768, Some(1024), false);
        check(256, 800, 768, Some(800), true);
    }
}
