//! `keyforge backup`, `keyforge backup verify` and `keyforge restore`.
//!
//! A backup is one SQLite file written by `VACUUM INTO` (see
//! `keyforge_store::SqliteStore::write_backup`): the sealed provider keys,
//! virtual-key hashes, budgets, the ledger and the audit log. It never
//! holds the master key, without which its provider keys cannot be opened.
//!
//! Invariants:
//! - The audit chain has one writer. While `keyforge serve` holds the data
//!   directory's lock, a backup is asked of the server, whose ledger task
//!   writes the `store.backup` entry; otherwise this process takes the
//!   lock and appends the entry itself ([`stored_audit::append_offline`]).
//! - Nothing is restored that does not pass the checks `backup verify`
//!   prints (SQLite's integrity check, a known schema, the audit chain and
//!   ledger verified with the master key), and a restore never runs while
//!   a server holds the data directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keyforge_gateway::admin::api::{BackupRequest, BackupResult};
use keyforge_gateway::stored_audit::{self, BACKUP_KIND, StoreVerification};
use keyforge_store::{SqliteStore, check_file, checkpoint_file, sync_dir};
use keyforge_vault::MasterKey;
use time::OffsetDateTime;

use crate::cli::AdminArgs;
use crate::client::{AdminClient, offline_master_key};
use crate::config::default_data_dir;
use crate::output;
use crate::serve::{DATABASE_FILE, lock_data_dir, prepare_data_dir};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    pub(crate) command: Option<BackupCommand>,
    /// The file to write (mode 0600; refused if it exists, unless --force).
    #[arg(long, required = true)]
    pub(crate) to: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Restore FILE into a scratch directory and check it as `restore`
    /// would: integrity, schema, audit chain, ledger and row MACs (needs the master
    /// key: KEYFORGE_MASTER_KEY or --data-dir with master.key).
    Verify { file: PathBuf },
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup to restore (written by `keyforge backup`).
    #[arg(long)]
    pub(crate) from: PathBuf,
    /// Data directory to restore into [env: KEYFORGE_DATA_DIR; default: the
    /// platform data dir]; its master.key (or KEYFORGE_MASTER_KEY) must be
    /// the key the backup was made under.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
}

fn data_dir_of(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match explicit.cloned().or_else(|| {
        std::env::var_os("KEYFORGE_DATA_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }) {
        Some(dir) => Ok(dir),
        None => default_data_dir(),
    }
}

pub(crate) async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BackupCommand::Verify { file }) => {
            let master = offline_master_key(&args.admin)?;
            let report = check_backup(&file, &file, &master).await?;
            print_report(&file, &report)
        }
        None => {
            let to = args.to.context("give the file to write: --to FILE")?;
            take_backup(&to, args.force, &args.admin).await
        }
    }
}

/// Online through the running server when it holds the data directory (or
/// there is no local database: a server elsewhere, at `--addr`); offline,
/// under the data directory's lock, otherwise.
async fn take_backup(to: &Path, force: bool, admin: &AdminArgs) -> anyhow::Result<()> {
    if let Some(setting) =
        crate::config::postgres_setting(&crate::config::EnvOverrides::from_process())?
    {
        bail!(
            "{setting} names a PostgreSQL store; back it up with pg_dump (for example `pg_dump --format=custom --file=keyforge.dump DATABASE`) and keep the master key apart; `keyforge backup` copies the embedded SQLite store only"
        );
    }
    let to = std::path::absolute(to).with_context(|| format!("{}", to.display()))?;
    if !force && to.exists() {
        bail!("{} exists; give --force to replace it", to.display());
    }
    let data_dir = data_dir_of(admin.data_dir.as_ref())?;
    let database = data_dir.join(DATABASE_FILE);
    if database.exists()
        && let Some(lock) = lock_data_dir(&data_dir)?
    {
        offline_backup(&database, &to, force, admin).await?;
        // For `keyforge doctor` ("no backup ever taken"); the copy is made
        // either way.
        if let Err(error) = keyforge_gateway::admin::backup::record_backup(
            &data_dir,
            &to,
            OffsetDateTime::now_utc(),
        ) {
            eprintln!("warning: could not record the backup for `keyforge doctor`: {error}");
        }
        drop(lock);
        return output::line(&format!(
            "backed up {} to {} (no server running; store.backup recorded in its audit log)",
            database.display(),
            to.display()
        ));
    }
    let request = BackupRequest {
        to: to.to_string_lossy().into_owned(),
        force,
    };
    let done: BackupResult = AdminClient::resolve(admin)?
        .call(reqwest::Method::POST, "/backup", Some(&request))
        .await?;
    output::line(&format!(
        "backed up the running gateway's store to {} (store.backup recorded in its audit log)",
        done.to
    ))
}

/// Who made an offline backup: the local user (no admin token is involved).
fn local_actor() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(user) if !user.is_empty() => format!("local:{user}"),
        _ => format!("local:uid-{}", rustix::process::getuid().as_raw()),
    }
}

async fn offline_backup(
    database: &Path,
    to: &Path,
    force: bool,
    admin: &AdminArgs,
) -> anyhow::Result<()> {
    let master = offline_master_key(admin)?;
    let store = SqliteStore::open(database)
        .await
        .context("cannot open the database")?;
    // A checkpoint signed under another master key would break the chain:
    // the log must verify with this key before anything is appended.
    let checked =
        stored_audit::verify_store(&store, &stored_audit::checkpoint_key(&master)).await?;
    if let Some(problem) = checked.verification.problem {
        store.close().await;
        bail!(
            "the audit log of {} does not verify with this master key ({problem}); nothing written",
            database.display()
        );
    }
    let data = serde_json::json!({
        "to": to.to_string_lossy(),
        "force": force,
        "online": false,
    });
    let result = async {
        stored_audit::append_offline(
            &store,
            &master,
            OffsetDateTime::now_utc(),
            BACKUP_KIND,
            &local_actor(),
            data,
        )
        .await?;
        store.write_backup(to, force).await
    }
    .await;
    store.close().await;
    result.with_context(|| format!("cannot back up to {}", to.display()))
}

/// What a backup was checked for.
struct BackupReport {
    schema_version: i64,
    store: StoreVerification,
}

/// Copies `file` into a fresh private scratch directory and checks the copy
/// (the backup itself is never opened for writing): SQLite's integrity
/// check, a schema this build knows, then the audit chain and the ledger
/// with the master key, after opening it as a server would (older schemas
/// upgraded).
async fn check_backup(
    file: &Path,
    shown: &Path,
    master: &MasterKey,
) -> anyhow::Result<BackupReport> {
    let scratch = ScratchDir::create()?;
    let copy = scratch.path.join(DATABASE_FILE);
    copy_private(file, &copy)?;
    let file_check = check_file(&copy)
        .await
        .with_context(|| format!("{} is not a usable KeyForge backup", shown.display()))?;
    let store = SqliteStore::open(&copy)
        .await
        .with_context(|| format!("cannot open {} as a store", shown.display()))?;
    let checked = verify_opened(&store, master).await;
    store.close().await;
    let (checked, sealed_rows_failing) = checked?;
    if let Some(problem) = &checked.verification.problem {
        bail!(
            "{}: the audit log does not verify (tampered with, or another master key): {problem} ({} entries read before it)",
            shown.display(),
            checked.verification.entries
        );
    }
    if !sealed_rows_failing.is_empty() {
        const SHOWN: usize = 10;
        let rows: Vec<String> = sealed_rows_failing
            .iter()
            .take(SHOWN)
            .map(|row| format!("{:?} {}", row.table, row.id))
            .collect();
        bail!(
            "{}: {} rows fail their MAC under this master key (edited since they were written): {}",
            shown.display(),
            sealed_rows_failing.len(),
            rows.join(", ")
        );
    }
    Ok(BackupReport {
        schema_version: file_check.schema_version,
        store: checked,
    })
}

/// The audit chain and ledger, then the MACs of the security-relevant rows
/// (providers, key versions, keys, budgets, webhooks), checked under the
/// master key as a gateway would at start.
pub(crate) async fn verify_opened(
    store: &dyn keyforge_store::Store,
    master: &MasterKey,
) -> anyhow::Result<(StoreVerification, Vec<keyforge_store::RowFailure>)> {
    use keyforge_store::RowMac;
    let checked = stored_audit::verify_store(store, &stored_audit::checkpoint_key(master)).await?;
    store
        .install_row_mac(RowMac::new(&master.derive(RowMac::LABEL)))
        .await?;
    let failing = store.integrity_failures().await?;
    Ok((checked, failing))
}

fn print_report(file: &Path, report: &BackupReport) -> anyhow::Result<()> {
    let verification = &report.store.verification;
    output::line(&format!(
        "{}: SQLite integrity check ok, schema version {}",
        file.display(),
        report.schema_version
    ))?;
    let newest = match &report.store.newest {
        Some((seq, at)) => format!("last sequence {seq}, newest entry {at}"),
        None => "no entries".to_owned(),
    };
    output::line(&format!(
        "audit chain intact with this master key: {} entries, {} signed checkpoints, {newest}",
        verification.entries, verification.checkpoints
    ))?;
    output::line(&format!(
        "ledger: {} rows match the audit log; every sealed row's MAC verifies",
        report.store.ledger_rows
    ))
}

pub(crate) async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if let Some(setting) =
        crate::config::postgres_setting(&crate::config::EnvOverrides::from_process())?
    {
        bail!(
            "{setting} names a PostgreSQL store; `keyforge restore` restores the embedded SQLite store only (restore PostgreSQL with pg_restore from a pg_dump)"
        );
    }
    let data_dir = data_dir_of(args.data_dir.as_ref())?;
    prepare_data_dir(&data_dir)?;
    // Held until the swap is done, so no server starts on a half-restored
    // directory either.
    let _lock = lock_data_dir(&data_dir)?.with_context(|| {
        format!(
            "a keyforge server (or another restore) holds the data directory {}; stop it first",
            data_dir.display()
        )
    })?;
    let master = offline_master_key(&AdminArgs {
        addr: None,
        data_dir: Some(data_dir.clone()),
    })
    .context(
        "restoring needs the master key the backup was made under: put master.key in the data directory or set KEYFORGE_MASTER_KEY",
    )?;
    let database = data_dir.join(DATABASE_FILE);
    // The bytes checked are the bytes swapped in: first a private copy
    // beside the database (same file system, so the final rename is one
    // step), then the checks on it.
    let incoming =
        ScratchFile(data_dir.join(format!(".{DATABASE_FILE}.restore-{}", std::process::id())));
    let _ = std::fs::remove_file(&incoming.0);
    copy_private(&args.from, &incoming.0)?;
    let report = check_backup(&incoming.0, &args.from, &master)
        .await
        .context("nothing restored")?;

    let mut kept = None;
    if database.exists() {
        // The WAL's commits into the file first, so the file kept aside is
        // whole on its own.
        checkpoint_file(&database)
            .await
            .context("cannot checkpoint the current database")?;
        let stamp = OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let before = data_dir.join(format!("{DATABASE_FILE}.before-restore-{stamp}"));
        std::fs::hard_link(&database, &before)
            .with_context(|| format!("cannot keep the current database as {}", before.display()))?;
        kept = Some(before);
    }
    for suffix in ["-wal", "-shm"] {
        let side = data_dir.join(format!("{DATABASE_FILE}{suffix}"));
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", side.display()));
            }
        }
    }
    std::fs::rename(&incoming.0, &database)
        .with_context(|| format!("cannot move the backup into {}", database.display()))?;
    sync_dir(&data_dir)?;
    print_report(&args.from, &report)?;
    output::line(&format!("restored into {}", database.display()))?;
    if let Some(before) = kept {
        output::line(&format!("previous database kept as {}", before.display()))?;
    }
    Ok(())
}

/// Copies `from` to a new file `to` created 0600, fsynced.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut source =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    std::io::copy(&mut source, &mut target)
        .with_context(|| format!("cannot copy {}", from.display()))?;
    target.flush()?;
    target.sync_all()?;
    Ok(())
}

/// A file removed on drop if it is still there (a restore that failed).
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A private (0700) directory under the temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for attempt in 0..16u32 {
            let path = base.join(format!(
                "keyforge-backup-check-{}-{attempt}-{}",
                std::process::id(),
                keyforge_types::random_base62(8)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        bail!("cannot create a scratch directory under {}", base.display())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
