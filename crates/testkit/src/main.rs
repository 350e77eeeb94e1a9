//! `keyforge-fake-upstream`: the testkit's fake provider as a process, for
//! benchmarks. Listens on `--listen` (default 127.0.0.1:9100); the provider
//! key it accepts is read from `FAKE_UPSTREAM_KEY`.

#![expect(
    clippy::print_stdout,
    reason = "a command-line tool reporting its address"
)]

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9100".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("unknown argument {other}"),
                ));
            }
        }
    }
    let key = std::env::var("FAKE_UPSTREAM_KEY").map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "set FAKE_UPSTREAM_KEY")
    })?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let fake = keyforge_testkit::FakeUpstream::serve_on(listener, &key)?;
    println!("fake upstream listening on {}", fake.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
