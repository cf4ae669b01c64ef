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

/// The health reporter and the names it reports on: "" (the whole server) and
/// every service the server registers (see `server::Services`, which builds the
/// list as it registers them, so no service can lack a health entry).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Arc<[&'static str]>,
}

impl Health {
    /// Health for "" and each of `services`.
    pub fn new(reporter: HealthReporter, services: &[&'static str]) -> Self {
        let names = std::iter::once("")
            .chain(services.iter().copied())
            .collect();
        Self { reporter, names }
    }

    /// The names reported on, "" first.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Sets every name to `status`.
    pub async fn set_all(&self, status: ServingStatus) {
        for name in self.names.iter() {
            self.reporter.set_service_status(*name, status).await;
        }
    }

    /// Ends every open `Watch` stream (after they were told NOT_SERVING), so that
    /// health watchers do not hold the graceful shutdown open.
    pub async fn close_watchers(&mut self) {
        for name in self.names.iter() {
            self.reporter.clear_service_status(name).await;
        }
    }
}

/// Pings Redis every `interval` and mirrors the result in `health` until
/// `shutdown` fires.
pub async fn watch_redis(
    redis: Arc<Redis>,
    health: Health,
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
            health.set_all(status).await;
            current = Some(status);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
