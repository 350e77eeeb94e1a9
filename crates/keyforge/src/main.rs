//! The `keyforge` binary: parses flags, loads configuration, wires the crates
//! together and maps failures to exit codes. No business logic lives here.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (from clap).

mod admin_login;
mod backup;
mod cli;
mod client;
mod config;
mod migrate;
mod output;
mod panic_hook;
mod run;
mod scan;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc: the proxy allocates a few small buffers per request, and glibc's
/// malloc cost about a sixth of the gateway's CPU under load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held until exit: dropping it flushes the log lines still queued.
    let log_format = cli.log_format;
    let _log_guard = init_tracing(log_format);
    panic_hook::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::from(error)),
    };
    // `run` exits with its child's code.
    let command = match cli.command {
        Command::Run(args) => {
            return match runtime.block_on(run::run(args)) {
                Ok(code) => code,
                Err(error) => fail(&error),
            };
        }
        // `scan` has exit codes of its own (2 for usage and I/O errors).
        Command::Scan(args) => return scan::scan(args),
        other => other,
    };
    let result = runtime.block_on(async {
        match command {
            Command::Run(_) | Command::Scan(_) => Ok(()),
            Command::Redact(args) => scan::redact(args),
            Command::Hook(command) => scan::hook(command),
            Command::Login(args) => run::login(args).await,
            Command::Serve(args) => {
                let config = config::resolve(&args, &config::EnvOverrides::from_process())?;
                serve::run(config, log_format == cli::LogFormat::Json).await
            }
            Command::Provider(command) => client::provider(command).await,
            Command::Key(command) => client::key(command).await,
            Command::Budget(command) => client::budget(command).await,
            Command::Rotate(command) => client::rotate(command).await,
            Command::Alerts(command) => client::alerts(command).await,
            Command::Audit(command) => client::audit(command).await,
            Command::Admin(command) => client::admin(command).await,
            Command::Usage {
                key,
                env,
                project,
                since,
                until,
                month,
                by,
                format,
                json,
                admin,
            } => {
                let filter = client::UsageFilter {
                    key,
                    env,
                    project,
                    since,
                    until,
                    month,
                };
                let format = match (format, json) {
                    (Some(format), _) => format,
                    (None, true) => cli::UsageFormat::Json,
                    (None, false) => cli::UsageFormat::Table,
                };
                client::usage(filter, by, format, admin).await
            }
            Command::Prices { json, admin } => client::prices(json, admin).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
            Command::Migrate(args) => migrate::migrate(args).await,
            Command::Status { json, admin } => client::status(json, admin).await,
            Command::Doctor {
                check_providers,
                json,
                admin,
            } => client::doctor(check_providers, json, admin).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// Whether writing our output failed because its reader closed the pipe.
/// Every command's output ends here, `--json` included: a `serde_json`
/// write error hides its `io::Error` from the error chain (its `source` is
/// the io error's own source), so it is asked for the kind directly.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn fail(error: &anyhow::Error) -> ExitCode {
    // The reader went away (`keyforge alerts log | head`): nothing to
    // report, as with any Unix filter.
    if is_broken_pipe(error) {
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
    ExitCode::FAILURE
}

/// Logs go to stderr through a background writer, so a request never waits
/// on the terminal or a log file; the writer is lossless (a full queue slows
/// logging callers rather than dropping lines). `KEYFORGE_LOG` (or
/// `RUST_LOG`) sets the filter, as in `KEYFORGE_LOG=debug` or
/// `KEYFORGE_LOG=keyforge_gateway=trace`.
fn init_tracing(format: cli::LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = std::env::var("KEYFORGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        cli::LogFormat::Json => builder.json().init(),
        // Escape codes only where a terminal reads them, never in files.
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}
