//! `mock-api`: the Cooly backend emulation as a server.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM); 2 for bad flags
//! or environment (clap's own usage errors included); 1 when the server
//! cannot start (database, queue, address in use) or fails while running.

use clap::Parser;
use mock_api::config::{Config, LogFormat};
use mock_api::server;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "mock-api",
    version,
    about = "Emulates the Cooly image-generation backend for load tests"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}

#[tokio::main]
async fn main() {
    let config = match Cli::try_parse() {
        Ok(cli) => cli.config,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("mock-api: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    init_logs(config.log_format);
    let settings = match config.resolve() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("mock-api: {e}");
            std::process::exit(2);
        }
    };
    tracing::info!("config: {}", config.describe());
    let addr = config.listen_addr();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mock-api: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    if let Err(e) = server::run(listener, settings, shutdown).await {
        eprintln!("mock-api: {e}");
        std::process::exit(1);
    }
}
