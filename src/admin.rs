//! The admin HTTP listener (`--admin-listen`, default `127.0.0.1:9464`): plain
//! HTTP/1.1 for probes and scrapers, apart from the gRPC port.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 while Redis answers and the server is not shutting
//!   down, 503 with the reason otherwise (readiness).
//! - `GET /metrics`: Prometheus metrics ([`crate::telemetry::metrics`]). With
//!   `--auth-file` it needs `authorization: Bearer <token>` of a token of the
//!   default tenant, since it shows every tenant's queue names.
//! - `/console/`: the operator console ([`crate::console`]), whose api calls
//!   the gRPC services with the person's token.
//!
//! It keeps answering while the gRPC server drains, so `/readyz` says 503 then,
//! and stops after it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::console::Console;
use crate::health::Readiness;
use crate::telemetry::metrics::Metrics;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin listener's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct AdminSettings {
    /// Address of the admin HTTP listener (/metrics, /healthz, /readyz,
    /// /console/), or `off`. Beyond loopback only with --auth-file or
    /// --insecure.
    #[arg(
        id = "admin_listen",
        long = "admin-listen",
        value_name = "ADMIN_LISTEN",
        env = "REDWIRE_ADMIN_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub listen: AdminAddress,

    /// How often the queue and process gauges are read (from Redis and /proc).
    #[arg(id = "metrics_interval", long = "metrics-interval", value_name = "METRICS_INTERVAL", env = "REDWIRE_METRICS_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Most queues in the queue gauges (the first by tenant and name); the rest
    /// are counted in redwire_metrics_queues_omitted.
    #[arg(
        id = "metrics_max_queues",
        long = "metrics-max-queues",
        value_name = "METRICS_MAX_QUEUES",
        env = "REDWIRE_METRICS_MAX_QUEUES",
        default_value_t = 1000
    )]
    pub max_queues: usize,

    /// Most streams in the stream gauges (the first by tenant and name); the
    /// rest are counted in redwire_metrics_streams_omitted.
    #[arg(
        id = "metrics_max_streams",
        long = "metrics-max-streams",
        value_name = "METRICS_MAX_STREAMS",
        env = "REDWIRE_METRICS_MAX_STREAMS",
        default_value_t = 1000
    )]
    pub max_streams: usize,
}

/// Where the admin listener listens: an address, or nowhere (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddress(pub Option<SocketAddr>);

impl FromStr for AdminAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(Self(None));
        }
        text.parse()
            .map(|addr| Self(Some(addr)))
            .map_err(|e| format!("{text:?} is neither an address (host:port) nor `off`: {e}"))
    }
}

/// What the admin listener answers from.
#[derive(Debug)]
pub struct Admin {
    /// The metrics `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports.
    pub readiness: Arc<Readiness>,
    /// The tokens `/metrics` takes, when auth is configured.
    pub auth: Option<Arc<Auth>>,
    /// The operator console.
    pub console: Console,
}

impl Admin {
    /// The response to one request.
    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if path == "/console" || path.starts_with("/console/") {
            return self.console.respond(request).await;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.readiness.check() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => {
                if let Some(auth) = &self.auth
                    && let Err(e) = auth.check_operator(request.headers())
                {
                    let status = match e.reason() {
                        crate::error::Reason::PermissionDenied => StatusCode::FORBIDDEN,
                        _ => StatusCode::UNAUTHORIZED,
                    };
                    return text(status, format!("{e}\n"));
                }
                let mut response = text(StatusCode::OK, self.metrics.encode());
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz, /readyz and /console/ are served\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves `admin` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening (/metrics, /healthz, /readyz, /console/)");
    }
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let admin = admin.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.respond(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "admin connection failed");
                    }
                }
                () = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_an_address_or_off() {
        assert_eq!("off".parse::<AdminAddress>(), Ok(AdminAddress(None)));
        let addr: SocketAddr = "127.0.0.1:9464".parse().expect("addr");
        assert_eq!("127.0.0.1:9464".parse(), Ok(AdminAddress(Some(addr))));
        assert!("nowhere".parse::<AdminAddress>().is_err());
    }
}
