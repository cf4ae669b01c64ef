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
        Command::Client(command) => redwire::cli::run(command),
        Command::Probe { admin, path } => match probe(*admin, path) {
            Ok(status_line) if status_line.split_whitespace().nth(1) == Some("200") => {
                ExitCode::SUCCESS
            }
            Ok(status_line) => {
                eprintln!("redwire: {admin}{path}: {status_line}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("redwire: {admin}{path}: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The status line of `GET path` on the admin listener at `admin`, within 2 s.
fn probe(admin: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{BufRead, BufReader};
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&admin, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line)?;
    Ok(status_line.trim_end().to_owned())
}

async fn serve(config: Config) -> ExitCode {
    let telemetry = match redwire::telemetry::init(&config) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("redwire: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("redwire: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let admin = match config.admin.listen.0 {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(admin) => Some(admin),
            Err(e) => {
                eprintln!("redwire: cannot listen on {addr} (--admin-listen): {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let listeners = redwire::Listeners {
        grpc: listener,
        admin,
    };
    let result = redwire::run(config, listeners, shutdown_signal()).await;
    // Exporting the last spans blocks until the collector answers or times out.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
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
