//! `keyforge migrate`: an embedded install moved to a PostgreSQL store,
//! verified. The source is checked first (audit chain, ledger, row MACs
//! under the master key), copied row for row into an empty database in one
//! transaction (`keyforge_store::copy_sqlite_to_postgres`), and the copy is
//! checked the same way before the command reports success. The source's
//! data directory is locked meanwhile, so no server writes to it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use keyforge_store::{PgStore, SqliteStore, copy_sqlite_to_postgres, redact_url};

use crate::backup::verify_opened;
use crate::cli::AdminArgs;
use crate::client::offline_master_key;
use crate::config::DATABASE_URL_ENV;
use crate::output;
use crate::serve::lock_data_dir;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// The SQLite database to copy: `sqlite:///var/lib/keyforge/keyforge.db`
    /// or a path.
    #[arg(long, value_name = "SQLITE")]
    pub(crate) from: String,
    /// The PostgreSQL database to fill (it must hold no KeyForge data; no
    /// password here: argv is public) [env: KEYFORGE_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    pub(crate) to: Option<String>,
    /// `--data-dir`: where the master key is (or KEYFORGE_MASTER_KEY).
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
}

pub(crate) async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let from = PathBuf::from(args.from.strip_prefix("sqlite://").unwrap_or(&args.from));
    if !from.is_file() {
        bail!(
            "--from {}: no such SQLite database (give the keyforge.db of the data directory)",
            from.display()
        );
    }
    let url = match (
        &args.to,
        std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|u| !u.is_empty()),
    ) {
        (Some(url), _) => {
            if keyforge_store::url_has_password(url) {
                bail!(
                    "--to {} carries a password, and the command line is visible to every user (ps); set {DATABASE_URL_ENV} instead, or keep the password in PGPASSFILE or PGPASSWORD",
                    redact_url(url)
                );
            }
            url.clone()
        }
        (None, Some(url)) => url,
        (None, None) => bail!("give the PostgreSQL database: --to URL or {DATABASE_URL_ENV}"),
    };
    if !keyforge_store::is_postgres_url(&url) {
        bail!(
            "the target must be a postgres:// URL, not `{}`",
            redact_url(&url)
        );
    }
    let master = offline_master_key(&args.admin)?;
    let data_dir = from
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let _lock = lock_data_dir(&data_dir)?.with_context(|| {
        format!(
            "a keyforge process (a server, or a restore) holds {}: stop it before migrating",
            data_dir.display()
        )
    })?;
    let source = SqliteStore::open(&from)
        .await
        .with_context(|| format!("cannot open {}", from.display()))?;
    let (checked, failing) = verify_opened(&source, &master).await?;
    if let Some(problem) = checked.verification.problem {
        bail!(
            "{} does not verify with this master key ({problem}); nothing copied",
            from.display()
        );
    }
    if !failing.is_empty() {
        bail!(
            "{} holds {} rows edited outside KeyForge (first: {} {}); nothing copied",
            from.display(),
            failing.len(),
            failing[0].table.as_str(),
            failing[0].id
        );
    }
    let shown = redact_url(&url);
    let target = PgStore::connect(&url)
        .await
        .with_context(|| format!("cannot open the PostgreSQL database {shown}"))?;
    let report = copy_sqlite_to_postgres(&source, &target)
        .await
        .with_context(|| format!("cannot copy into {shown}"))?;
    source.close().await;
    let (copied, failing) = verify_opened(&target, &master).await?;
    target.close().await;
    if let Some(problem) = copied.verification.problem {
        bail!("the copy in {shown} does not verify ({problem}); drop that database and try again");
    }
    if !failing.is_empty() {
        bail!(
            "the copy in {shown} holds {} rows whose MAC fails; drop that database and try again",
            failing.len()
        );
    }
    let counts: Vec<String> = report
        .tables
        .iter()
        .filter(|(_, rows)| *rows > 0)
        .map(|(table, rows)| format!("{table} {rows}"))
        .collect();
    output::line(&format!(
        "copied {} into {shown}: {}",
        from.display(),
        counts.join(", ")
    ))?;
    output::line(&format!(
        "verified on the target: audit chain intact ({} entries, {} signed checkpoints), {} ledger rows match it, every sealed row's MAC verifies",
        copied.verification.entries, copied.verification.checkpoints, copied.ledger_rows
    ))?;
    output::line(&format!(
        "next: start every instance with {DATABASE_URL_ENV} and this master key; {} is no longer used",
        from.display()
    ))
}
