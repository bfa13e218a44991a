//! `loadgen run`, `loadgen http`, `loadgen audit` and `loadgen merge`. Exit codes are k6's
//! (see `loadgen::exit`), plus 113 when the ledger audit finds a violation.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use loadgen::cli::{self, Command};
use loadgen::exit::{self, Failure};

fn main() -> ExitCode {
    let cli = match cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            return exit_code(
                Failure::invalid_config(first.trim_start_matches("error: ")).report(),
            );
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOADGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            let failure = Failure::new(
                exit::RUNTIME_FAILED,
                format!("cannot start the runtime: {e}"),
            );
            return exit_code(failure.report());
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => loadgen::command::run(*args, interrupt_on_ctrl_c()).await,
            Command::Http(args) => loadgen::raw::command(*args, interrupt_on_ctrl_c()).await,
            Command::Audit(args) => loadgen::command::audit(args).await,
            Command::Merge(args) => loadgen::merge::command(args),
        }
    });
    exit_code(result.unwrap_or_else(Failure::report))
}

/// A flag Ctrl-C sets (a graceful stop); a second Ctrl-C exits at once.
fn interrupt_on_ctrl_c() -> Arc<AtomicBool> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping gracefully (Ctrl-C again to force)…");
            flag.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(exit::INTERRUPTED);
            }
        }
    });
    interrupt
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}
