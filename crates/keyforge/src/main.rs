//! The `keyforge` binary: parses flags, loads configuration, wires the crates
//! together and maps failures to exit codes. No business logic lives here.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (from clap).

mod cli;
mod client;
mod config;
mod output;
mod panic_hook;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    panic_hook::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::from(error)),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let config = config::resolve(&args, &config::EnvOverrides::from_process())?;
                serve::run(config).await
            }
            Command::Provider(command) => client::provider(command).await,
            Command::Key(command) => client::key(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
    ExitCode::FAILURE
}

/// Logs go to stderr; `KEYFORGE_LOG` (or `RUST_LOG`) sets the filter, as in
/// `KEYFORGE_LOG=debug` or `KEYFORGE_LOG=keyforge_gateway=trace`.
fn init_tracing() {
    let filter = std::env::var("KEYFORGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
