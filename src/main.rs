//! The `redwire` binary: parse the config, set up logging, serve until SIGINT or
//! SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use redwire::Config;
use redwire::config::Command;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(command) = &config.command {
        return run_command(command);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(serve(config)),
        Err(e) => {
            eprintln!("redwire: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a subcommand (no server).
fn run_command(command: &Command) -> ExitCode {
    match command {
        Command::MintToken {
            name,
            services,
            actions,
        } => match redwire::auth::keyring::mint_block(name, services, actions) {
            Ok(block) => match std::io::stdout().write_all(block.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("redwire: cannot print the token: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("redwire: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: Config) -> ExitCode {
    redwire::telemetry::init(&config);
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("redwire: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    match redwire::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redwire: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
