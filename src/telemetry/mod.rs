//! Logging setup: tracing to stderr as text or JSON, filtered by `--log` (or
//! RUST_LOG when set). Text is coloured only when stderr is a terminal and
//! `NO_COLOR` is unset or empty (<https://no-color.org>); JSON never is.
//!
//! [`requests`] writes one line per call, from a tower layer around every service.

pub mod metrics;
pub mod requests;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global tracing subscriber; later calls are ignored (tests start
/// many servers in one process).
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
