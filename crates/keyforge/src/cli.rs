//! Command-line surface (stage one: raw flags). `main` resolves these into
//! ready objects (config, admin client) before anything runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "keyforge",
    version,
    about = "Keeps LLM API keys safe: a gateway and vault that hands apps revocable, scoped kf_ keys instead of provider keys."
)]
pub(crate) struct Cli {
    /// Log line format on stderr: `text` (colours only on a terminal) or
    /// `json` (one object a line, for log shippers).
    #[arg(long, global = true, env = "KEYFORGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `fields` (with
    /// `message` and `request_id` where the line has one).
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the gateway (with no flags: an embedded gateway on 127.0.0.1:8787).
    Serve(ServeArgs),
    /// Configure provider API keys (held encrypted inside KeyForge).
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Create, inspect and revoke virtual keys (kf_...).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Blue/green rotation of a provider's API key, with zero downtime.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Set, list and remove budgets of projects and environments.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// The tamper-evident audit log: follow it, export it, verify it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Alert webhooks (budget thresholds, anomalies) and the log of alerts raised.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Named admins with roles (viewer, auditor, operator, owner): add,
    /// list, revoke, rotate a token; `whoami` shows the token in use.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Tokens and cost from the ledger, summed by key, model, day, environment or project.
    Usage {
        /// Only this key (its id or name:ENV/NAME).
        #[arg(long)]
        key: Option<String>,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// From when: a duration back from now (12h, 7d) or a time, RFC 3339
        /// or a UTC date (2026-11-01) [default: 30d].
        #[arg(long)]
        since: Option<String>,
        /// Until when, excluded: RFC 3339 or a UTC date (2026-12-01).
        #[arg(long)]
        until: Option<String>,
        /// One calendar month, UTC: 2026-11 (not with --since or --until).
        #[arg(long, conflicts_with_all = ["since", "until"])]
        month: Option<String>,
        /// key, model, day, env or project.
        #[arg(long, default_value = "key")]
        by: String,
        /// table (for people), json or csv (a header row, RFC 4180).
        #[arg(long, value_enum)]
        format: Option<UsageFormat>,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Each provider's health over the last 15 minutes: key rejected,
    /// provider failing or rate limiting, or healthy.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check the rotation policy, half-done rotations and the setup (master
    /// key file mode, exposure, backups, owner tokens); exits 1 when it
    /// finds something to act on (for cron and CI).
    Doctor {
        /// Also call each provider with its key (a models listing) and
        /// report the keys it refuses.
        #[arg(long)]
        check_providers: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Trade a workload's OIDC token (GitHub Actions, Kubernetes) for a
    /// short-lived key; prints the key on stdout.
    Login(LoginArgs),
    /// Run a command with a short-lived key in its environment (the SDKs'
    /// API key and base URL variables), revoked when the command exits.
    Run(RunArgs),
    /// Find leaked secrets (LLM keys, cloud tokens, private keys, kf_ keys)
    /// in files and directories (default .) or stdin (-). Exits 0 when
    /// nothing new is found, 1 on findings, 2 on usage or I/O errors.
    Scan(ScanArgs),
    /// Git hooks: `keyforge hook install` makes `git commit` refuse commits
    /// that add secrets (it runs `keyforge scan --staged`).
    #[command(subcommand)]
    Hook(HookCommand),
    /// Copy stdin to stdout with every secret replaced by [REDACTED:<rule>],
    /// line by line (for log pipelines).
    Redact(RedactArgs),
    /// The price table in force (shipped prices and configured overrides).
    Prices {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A consistent copy of the store (while `serve` runs, or not):
    /// `backup --to FILE`; `backup verify FILE` checks one.
    Backup(crate::backup::BackupArgs),
    /// Replace the data directory's database with a checked backup (refused
    /// while a server holds the directory; the old database is kept).
    Restore(crate::backup::RestoreArgs),
    /// Copy an embedded (SQLite) store into an empty PostgreSQL database and
    /// verify the copy under the master key: every key keeps its secret,
    /// spend and audit log carry over (no server may run on the source).
    Migrate(crate::migrate::MigrateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8787; env: KEYFORGE_LISTEN].
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Also serve `/metrics` (with `/healthz` and `/readyz`) on this
    /// address, without a token [config: `[metrics] listen`].
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Data directory [env: KEYFORGE_DATA_DIR; default: the platform data dir].
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// TOML configuration file [env: KEYFORGE_CONFIG].
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Keep the state in this PostgreSQL database, shared by every
    /// instance (`postgres://user@host:5432/db`; no password here: argv is
    /// public, use the environment, the config file or PGPASSFILE)
    /// [env: KEYFORGE_DATABASE_URL; config: `[store] database`; default:
    /// SQLite in the data directory].
    #[arg(long, value_name = "URL")]
    pub(crate) database: Option<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain,
    /// the server's certificate first; re-read on SIGHUP
    /// [config: `[server] tls_cert`].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The certificate's private key in PEM (PKCS#8, RSA or EC; not
    /// encrypted); re-read on SIGHUP [config: `[server] tls_key`].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Cluster mode: share admission counters (budgets, RPM/TPM, requests
    /// in flight) with the other instances in this Redis,
    /// `redis://host:port[/db]`. A password is refused here (argv is
    /// visible to every user): put the URL in KEYFORGE_REDIS_URL or
    /// `[redis] url` [env: KEYFORGE_REDIS_URL].
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ScanFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ScanArgs {
    #[command(subcommand)]
    pub(crate) command: Option<ScanCommand>,
    /// Files and directories to scan (default: .); `-` reads stdin.
    pub(crate) paths: Vec<PathBuf>,
    /// Scan every blob in the git history of REPO (default: .), each once,
    /// reporting the commit, author and path where it first appeared.
    #[arg(long, num_args = 0..=1, default_missing_value = ".", conflicts_with_all = ["paths", "staged"])]
    pub(crate) git: Option<PathBuf>,
    /// With --git: only commits not reachable from REV.
    #[arg(long, requires = "git")]
    pub(crate) since: Option<String>,
    /// With --git: also every object no ref or reflog reaches (dangling
    /// commits and blobs, as `git fsck --unreachable` lists them). Commits
    /// reachable only from the reflog (a deleted branch's) are always
    /// scanned.
    #[arg(long, requires = "git")]
    pub(crate) all_objects: bool,
    /// Scan what `git commit` is about to record (for a pre-commit hook).
    #[arg(long, conflicts_with = "paths")]
    pub(crate) staged: bool,
    /// Scan a container image archive (`docker save IMAGE -o image.tar`, or
    /// an OCI layout in a tar): every layer, files deleted by later layers
    /// included, and the image config.
    #[arg(long, conflicts_with_all = ["paths", "git", "staged"])]
    pub(crate) image: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ScanFormat,
    /// Leave out the findings recorded in this baseline file.
    #[arg(long)]
    pub(crate) baseline: Option<PathBuf>,
    /// A rule file adding rules or overriding built-in ones by id.
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
    /// Scan configuration (default: ./.keyforge-scan.toml when present).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Show whole secrets instead of masked previews.
    #[arg(long, conflicts_with = "redact")]
    pub(crate) show_secrets: bool,
    /// Show no character of any secret (for CI logs): `[REDACTED] (N chars)`.
    #[arg(long)]
    pub(crate) redact: bool,
    /// Scan binary files too.
    #[arg(long)]
    pub(crate) binary: bool,
    /// Print what was scanned and how fast on stderr (always on a terminal).
    #[arg(long)]
    pub(crate) stats: bool,
    /// Exit 2 when anything was not scanned (binary, unreadable, or over
    /// --max-file-size), even if nothing was found.
    #[arg(long)]
    pub(crate) fail_on_skip: bool,
    /// Skip (and count) files larger than this many bytes [default: no
    /// limit; large files are streamed].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_file_size: Option<u64>,
    /// Revoke every valid kf_ key found, at the gateway that issued it
    /// (KEYFORGE_ADDR or --addr); each is recorded in its audit log with
    /// where it was found.
    #[arg(long)]
    pub(crate) revoke: bool,
    /// Gateway address for --revoke [env: KEYFORGE_ADDR; default: http://127.0.0.1:8787].
    #[arg(long, requires = "revoke")]
    pub(crate) addr: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScanCommand {
    /// Print a baseline of the current findings (fingerprints, no secrets):
    /// `keyforge scan baseline create > .keyforge-baseline.json`.
    #[command(subcommand)]
    Baseline(BaselineCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum BaselineCommand {
    Create {
        /// Files and directories to scan (default: .).
        #[arg(conflicts_with = "git")]
        paths: Vec<PathBuf>,
        /// Record the findings of the git history of REPO (default: .)
        /// instead, for `keyforge scan --git --baseline FILE`.
        #[arg(long, num_args = 0..=1, default_missing_value = ".")]
        git: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum HookCommand {
    /// Install the pre-commit hook in the repository of the current directory.
    Install {
        /// Replace an existing pre-commit hook.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RedactArgs {
    /// A rule file adding rules or overriding built-in ones by id.
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
    /// The file name stdin stands for (`--path home/.pgpass`): rules
    /// limited to some files (.pgpass, .npmrc, config/master.key) then run
    /// only where that name matches, as `scan` would run them. Without it
    /// they all run.
    #[arg(long, value_name = "NAME")]
    pub(crate) path: Option<String>,
}

/// Where a workload's OIDC token comes from (never argv).
#[derive(Debug, Args, Clone)]
pub(crate) struct TokenSource {
    /// A file holding the token (a Kubernetes projected service-account token).
    #[arg(long, conflicts_with_all = ["oidc_token_env", "github_actions"])]
    pub(crate) oidc_token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[arg(long, conflicts_with = "github_actions")]
    pub(crate) oidc_token_env: Option<String>,
    /// Ask GitHub Actions' token service (needs `permissions: id-token: write`).
    #[arg(long)]
    pub(crate) github_actions: bool,
    /// The audience to ask GitHub for (the issuer's `audience` in KeyForge's config).
    #[arg(long, default_value = "keyforge")]
    pub(crate) audience: String,
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// The OIDC role to log in as (configured in `[[oidc.role]]`).
    #[arg(long)]
    pub(crate) role: String,
    #[command(flatten)]
    pub(crate) token: TokenSource,
    /// A lifetime for the key, up to the role's max_ttl (default: the role's ttl).
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    /// Gateway address [env: KEYFORGE_ADDR; default: http://127.0.0.1:8787].
    #[arg(long)]
    pub(crate) addr: Option<String>,
    /// Print the whole answer as JSON (the key included).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Mint the key from an OIDC token for this role (else with the admin token).
    #[arg(long)]
    pub(crate) role: Option<String>,
    #[command(flatten)]
    pub(crate) token: TokenSource,
    /// The key's lifetime (default 1h; with --role, the role's ttl).
    #[arg(long)]
    pub(crate) key_ttl: Option<String>,
    /// Environment of the key (with the admin token).
    #[arg(long, conflicts_with = "role")]
    pub(crate) env: Option<String>,
    /// Provider the key may use (repeatable; default: every provider of the environment).
    #[arg(long = "provider", conflicts_with = "role")]
    pub(crate) providers: Vec<String>,
    /// Model name or glob the key may use (repeatable; default: all).
    #[arg(long = "model", conflicts_with = "role")]
    pub(crate) models: Vec<String>,
    /// Project the key's spend counts against.
    #[arg(long, conflicts_with = "role")]
    pub(crate) project: Option<String>,
    /// A budget for the key (repeatable, one per period): 1usd/day.
    #[arg(long = "budget", conflicts_with = "role")]
    pub(crate) budgets: Vec<String>,
    /// Name of the key (default: `run: <command>`).
    #[arg(long, conflicts_with = "role")]
    pub(crate) name: Option<String>,
    /// Prefix for every variable set in the child (`APP_` gives APP_OPENAI_API_KEY).
    #[arg(long, default_value = "")]
    pub(crate) env_prefix: String,
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

/// How admin commands find the running server.
#[derive(Debug, Args, Clone)]
pub(crate) struct AdminArgs {
    /// Gateway address [env: KEYFORGE_ADDR; default: http://127.0.0.1:8787].
    #[arg(long, global = true)]
    pub(crate) addr: Option<String>,
    /// Data directory holding the local admin token, when KEYFORGE_ADMIN_TOKEN is not set.
    #[arg(long, global = true)]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProviderCommand {
    /// Add a provider; its API key is read from stdin (or --from-env / --from-file), never from argv.
    Add {
        /// Name, unique within the environment (used in URLs as /p/NAME).
        name: String,
        /// openai, anthropic, gemini or openai-compatible.
        #[arg(long)]
        kind: String,
        /// Environment whose keys may use this provider.
        #[arg(long)]
        env: String,
        /// API root (required for openai-compatible; defaults to the provider's public API).
        #[arg(long)]
        base_url: Option<String>,
        /// Read the API key from this environment variable.
        #[arg(long, conflicts_with = "from_file")]
        from_env: Option<String>,
        /// Read the API key from this file.
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// Do not test the key with an authenticated call first (for
        /// providers without a models endpoint).
        #[arg(long)]
        no_check: bool,
        /// Add it although keys in force are scoped to a removed provider
        /// of this name (they regain access to it).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a provider's base URL or kind in place (its key, id and the
    /// keys using it stay); the key is checked against the new base URL.
    Update {
        name: String,
        #[arg(long)]
        env: String,
        /// New API root (`https://api.openai.com` and `.../v1` are both accepted).
        #[arg(long)]
        base_url: Option<String>,
        /// New kind: openai, anthropic, gemini or openai-compatible.
        #[arg(long)]
        kind: Option<String>,
        /// Do not test the key against the new base URL first.
        #[arg(long)]
        no_check: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a provider and every version of its key. Refused while keys
    /// in force can reach it or a rotation is in progress, unless --force.
    Remove {
        name: String,
        #[arg(long)]
        env: String,
        /// Remove it even so (requests of those keys to it are then refused).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List providers (never their keys).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a virtual key; it is printed once and never again.
    Create {
        #[arg(long)]
        name: String,
        /// The key's environment (a child key is in its parent's).
        #[arg(long, required_unless_present = "parent")]
        env: Option<String>,
        /// Mint a child of this key (key_... or name:ENV/NAME): its scope, limits, budgets and
        /// lifetime can only narrow the parent's, its spend counts against the
        /// parent's budgets, and revoking the parent revokes it.
        #[arg(long)]
        parent: Option<String>,
        /// Let the new key mint child keys itself (through POST /keyforge/v1/keys).
        #[arg(long)]
        can_mint: bool,
        /// Provider this key may use (repeatable; default: every provider of its environment).
        #[arg(long = "provider")]
        providers: Vec<String>,
        /// Model name or glob this key may use, e.g. 'gpt-4o*' (repeatable; default: all).
        #[arg(long = "model")]
        models: Vec<String>,
        /// Lifetime: 30m, 12h, 90d (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
        /// Project the key belongs to (its spend counts against the project's budgets).
        #[arg(long)]
        project: Option<String>,
        /// A budget for this key alone: 50usd/month, 5usd/day (repeatable, one per period).
        #[arg(long = "budget")]
        budgets: Vec<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens (input + output) per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Requests in flight at once.
        #[arg(long)]
        max_parallel: Option<u32>,
        /// When the key behaves unlike itself: alert, or alert and suspend it.
        #[arg(long, default_value = "alert", value_parser = ["alert", "suspend"])]
        on_anomaly: String,
        /// Allow a name another key in force of the environment already has.
        #[arg(long)]
        allow_duplicate_name: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a key in place: name, project, scope, lifetime, limits,
    /// anomaly action and its own budgets (same secret, same id). Widening
    /// the scope needs --allow-widen; a child key never exceeds its parent.
    Update {
        /// The key: its id (key_...) or name:ENV/NAME.
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// New project, or `none` to take the key out of its project.
        #[arg(long)]
        project: Option<String>,
        /// The providers the key may use from now on (repeatable; replaces the list).
        #[arg(long = "provider", conflicts_with = "all_providers")]
        providers: Vec<String>,
        /// Let the key use every provider of its environment (a widening).
        #[arg(long)]
        all_providers: bool,
        /// The models the key may use from now on (repeatable; replaces the list).
        #[arg(long = "model", conflicts_with = "all_models")]
        models: Vec<String>,
        /// Let the key use every model (a widening).
        #[arg(long)]
        all_models: bool,
        /// New lifetime from now (30m, 12h, 90d), or `never`.
        #[arg(long)]
        ttl: Option<String>,
        /// Requests per minute, or `none`.
        #[arg(long)]
        rpm: Option<String>,
        /// Tokens per minute, or `none`.
        #[arg(long)]
        tpm: Option<String>,
        /// Requests in flight at once, or `none`.
        #[arg(long)]
        max_parallel: Option<String>,
        #[arg(long, value_parser = ["alert", "suspend"])]
        on_anomaly: Option<String>,
        /// Set the key's budget for a period: 100usd/month (repeatable, one per period).
        #[arg(long = "budget")]
        budgets: Vec<String>,
        /// Remove the key's budget of a period: hour, day, week, month, total (repeatable).
        #[arg(long = "remove-budget")]
        remove_budgets: Vec<String>,
        /// Allow the new scope to reach what the current one does not (audited as key.widen).
        #[arg(long)]
        allow_widen: bool,
        /// Allow a name another key in force of the environment already has.
        #[arg(long)]
        allow_duplicate_name: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List virtual keys (ids and prefixes, never the keys).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one key.
    Show {
        /// The key: its id (key_...) or name:ENV/NAME.
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key, or every key of an environment or project: refused
    /// from the very next request.
    Revoke {
        /// The key: its id (key_...) or name:ENV/NAME.
        #[arg(required_unless_present_any = ["env", "all_env", "project"], conflicts_with_all = ["env", "all_env", "project"])]
        id: Option<String>,
        /// Every key of this environment (with --yes).
        #[arg(long, conflicts_with = "all_env")]
        env: Option<String>,
        /// Everything a leaked key of this environment could reach: every key
        /// of the environment (with --yes).
        #[arg(long)]
        all_env: Option<String>,
        /// Every key of this project (with --yes; with --env, only there).
        #[arg(long)]
        project: Option<String>,
        /// Confirm a bulk revocation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Issue a successor secret for a key (same id, scope, budgets and
    /// history); the current secret keeps working for the grace period.
    Rotate {
        id: String,
        /// How long the current secret keeps working: 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Re-running with the same idempotency key returns the same successor.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Rotate even though an earlier secret is still in its grace period.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift a suspension set by anomaly detection.
    Resume {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BudgetCommand {
    /// Set a budget for a project, an environment or a key, e.g. `budget set --project checkout 50usd/month`.
    /// Setting it again for the same period changes the amount.
    Set {
        /// AMOUNT/PERIOD: 50usd/month, 5usd/day, 1usd/hour, 10usd/week, 200usd/total.
        limit: String,
        #[arg(long, conflicts_with_all = ["env", "key"], required_unless_present_any = ["env", "key"])]
        project: Option<String>,
        #[arg(long, conflicts_with = "key")]
        env: Option<String>,
        /// A key's own budget (its id or name:ENV/NAME); replaces the key's
        /// budget of the same period.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every budget (keys', projects', environments') and where it stands.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a budget by id.
    Remove {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCommand {
    /// Deliver alerts to a webhook (JSON with a Slack-compatible `text` field).
    Add {
        /// The webhook URL, or `-` to read it from stdin (webhook URLs such
        /// as Slack's carry a secret: keep them out of shell history).
        #[arg(long)]
        webhook: String,
        /// Budget percentages that alert this webhook, e.g. 50,90,100.
        #[arg(long, value_delimiter = ',', default_value = "25,50,75,100")]
        thresholds: Vec<u8>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List alert webhooks (scheme and host only; the URL stays sealed).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop delivering to a webhook.
    Remove {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send a test alert (marked as a test, naming you) to one webhook or
    /// to every one, and report how each delivery went.
    Test {
        /// The webhook's id (alr_...); every webhook when left out.
        webhook_id: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The latest alerts and how their deliveries went.
    Log {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Which provider a rotation command acts on.
#[derive(Debug, Args, Clone)]
pub(crate) struct ProviderTarget {
    /// Provider name (or its id, prv_...).
    pub(crate) provider: String,
    /// Environment, when the name exists in several.
    #[arg(long)]
    pub(crate) env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RotateCommand {
    /// Add a new key as "pending", after checking it against the provider. The
    /// key is read from stdin (or --from-env / --from-file), never from argv.
    Start {
        #[command(flatten)]
        target: ProviderTarget,
        #[arg(long, conflicts_with = "from_file")]
        from_env: Option<String>,
        #[arg(long)]
        from_file: Option<PathBuf>,
        /// Do not test the key with an authenticated call first (for
        /// providers without a models endpoint).
        #[arg(long)]
        no_check: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Each key version's stage and its requests in the last hour, day and week.
    Status {
        #[command(flatten)]
        target: ProviderTarget,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pending -> current (the old current stays valid as "previous"), or with
    /// --percent N let the pending key serve N % of requests first.
    Promote {
        #[command(flatten)]
        target: ProviderTarget,
        #[arg(long)]
        percent: Option<u8>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Retire the previous key; refused while it still carries traffic, unless --force.
    Finish {
        #[command(flatten)]
        target: ProviderTarget,
        #[arg(long)]
        force: bool,
        /// How long the previous key must have served nothing, e.g. 30m,
        /// 2h (up to 7d); default: the gateway's `[rotation] quiet_window`
        /// (15m).
        #[arg(long, value_name = "DURATION")]
        quiet_window: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the previous key current again (or stop a gradual rollout).
    Rollback {
        #[command(flatten)]
        target: ProviderTarget,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop the pending key.
    Cancel {
        #[command(flatten)]
        target: ProviderTarget,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How `keyforge usage` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UsageFormat {
    /// Columns for people, with a total.
    Table,
    /// The admin API's report as it is.
    Json,
    /// A header row, then one row per group (no total), RFC 4180 quoting.
    Csv,
}

/// How `audit tail` prints entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TailFormat {
    /// The stored JSON lines, unchanged (for scripts and SIEMs).
    Json,
    /// One line per entry: time, sequence, kind, actor, key, summary.
    Text,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the newest audit entries (JSON lines, or --format text), with
    /// filters; with -f, keep following.
    Tail {
        /// How many of the newest matching entries [default: 100].
        #[arg(short = 'n', long = "lines", conflicts_with = "after")]
        lines: Option<u32>,
        /// Every matching entry after this sequence number instead, oldest
        /// first (`--after 0`: the whole log).
        #[arg(long)]
        after: Option<u64>,
        /// Only this kind (`admin.key.create`), or kinds starting with a
        /// prefix (`admin.key.*`).
        #[arg(long)]
        kind: Option<String>,
        /// Only this actor (`admin:fin`, `gateway`).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries naming this key (its id or name:ENV/NAME), `key.use`
        /// batches included.
        #[arg(long)]
        key: Option<String>,
        /// From this time on (included): RFC 3339 or a UTC date, 2026-11-01.
        #[arg(long)]
        since: Option<String>,
        /// Before this time (excluded): RFC 3339 or a UTC date, 2026-12-01.
        #[arg(long, conflicts_with = "follow")]
        until: Option<String>,
        /// json (JSON lines, as stored) or text (one line per entry for people).
        #[arg(long, value_enum, default_value_t = TailFormat::Json)]
        format: TailFormat,
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write the log (or its last stretch) as JSON lines with signed
    /// checkpoints and end marker, for a SIEM; verifiable with `audit verify --file`.
    Export {
        /// Only entries from this far back: 24h, 7d.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check the hash chain and signatures: of the running gateway's log, or
    /// of an exported file (offline, with the master key).
    Verify {
        /// An exported file to verify instead of the gateway's log.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Add an admin; prints its token (kfa_...) once. Only owners add
    /// admins, and never with a role above their own.
    Add {
        /// A name of lowercase letters, digits and `-` (shown in the audit
        /// log as admin:NAME; never reused, even after revocation).
        name: String,
        /// viewer (read usage, budgets, keys, status), auditor (+ audit
        /// log), operator (+ change keys, budgets, rotations, alerts) or
        /// owner (+ providers, admins, backups).
        #[arg(long)]
        role: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every admin with its role and status (never a token or its hash).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke an admin, or end an OIDC session (`session-...`, from `admin
    /// list`): its token is refused from the next request on. The last
    /// owner cannot be revoked.
    Revoke {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Give an admin a new token (printed once); the old one stops working at once.
    RotateToken {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Log in as a human through the gateway's `[admin.oidc]` issuer and
    /// keep the short-lived session (0600, in the user's config directory);
    /// later admin commands use it when KEYFORGE_ADMIN_TOKEN and --data-dir
    /// are not given.
    Login {
        /// The OAuth 2.0 device flow (RFC 8628): prints a URL and a code to
        /// enter there, and waits for the approval.
        #[arg(long, required_unless_present = "id_token_file")]
        oidc: bool,
        /// An ID token from the issuer obtained some other way.
        #[arg(long)]
        id_token_file: Option<PathBuf>,
        /// Also print the session token to stdout (it is stored either way).
        #[arg(long)]
        print: bool,
        /// Gateway address [env: KEYFORGE_ADDR; default: http://127.0.0.1:8787].
        #[arg(long)]
        addr: Option<String>,
    },
    /// End the stored admin session of `admin login` at the gateway and
    /// delete it.
    Logout,
    /// The admin whose token this command uses, and its role.
    Whoami {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}
