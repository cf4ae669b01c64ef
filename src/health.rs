//! Health: `grpc.health.v1.Health` reports SERVING for "" and every Redwire service
//! only while Redis answers. A background task pings Redis every
//! `--health-interval` and flips the status both ways by itself; shutdown sets
//! NOT_SERVING before anything else stops, then ends open `Watch` streams.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::redis::Redis;

/// The service names health reports on: "" (the whole server) and each service.
pub const SERVICES: &[&str] = &[
    "",
    "redwire.v1.Cache",
    "redwire.v1.Queue",
    "redwire.v1.PubSub",
];

/// Sets every service in [`SERVICES`] to `status`.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(*service, status).await;
    }
}

/// Ends every open `Watch` stream (after they were told NOT_SERVING), so that
/// health watchers do not hold the graceful shutdown open.
pub async fn close_watchers(reporter: &mut HealthReporter) {
    for service in SERVICES {
        reporter.clear_service_status(service).await;
    }
}

/// Pings Redis every `interval` and mirrors the result in `reporter` until
/// `shutdown` fires.
pub async fn watch_redis(
    redis: Arc<Redis>,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut current = None;
    loop {
        let status = match redis.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if current != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %e, "redis does not answer; reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if current != Some(status) {
            if status == ServingStatus::Serving {
                tracing::info!("redis answers; reporting SERVING");
            }
            set_all(&reporter, status).await;
            current = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
