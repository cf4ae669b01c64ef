//! Logging and tracing setup: logs to stderr as text or JSON, filtered by
//! `--log` (or RUST_LOG when set), and OpenTelemetry traces over OTLP when the
//! `OTEL_*` environment asks for them ([`traces`]). Text is coloured only when
//! stderr is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>); JSON never is.
//!
//! [`requests`] writes one line per call, from a tower layer around every
//! service; [`metrics`] is what `/metrics` serves.

pub mod metrics;
pub mod requests;
pub mod traces;

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

pub use traces::TraceSetupError;

/// What [`init`] installed that needs a clean stop: the trace exporter, whose
/// last batch is sent by [`Telemetry::shutdown`].
#[derive(Debug, Default)]
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// Installs the global tracing subscriber, with the OTLP exporter when the
/// environment configures one (inside the Tokio runtime). Later calls install
/// nothing (tests start many servers in one process).
pub fn init(config: &Config) -> Result<Telemetry, TraceSetupError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let logs = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = traces::provider_from_env()?;
    let exported = provider.as_ref().map(traces::layer);
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(exported)
        .try_init()
        .is_ok();
    // A provider no subscriber uses would export nothing; drop it.
    let provider = provider.filter(|_| installed);
    if provider.is_some() {
        traces::mark_exporting();
    }
    Ok(Telemetry { provider })
}
