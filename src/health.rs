//! Health: `grpc.health.v1.Health` reports SERVING for "" and every Redwire service
//! only while Redis answers. A background task pings Redis every
//! `--health-interval` and flips the status both ways by itself; shutdown sets
//! NOT_SERVING before anything else stops, then ends open `Watch` streams.
//!
//! A service that needs a connection of its own besides the shared ones (PubSub:
//! the hub's subscriber connection) is SERVING only while that is up too
//! ([`OwnConnection`]); "" and the other services do not depend on it. On a
//! cluster the ping goes to every master (redis-rs routes PING to all primaries),
//! so one master down makes every service NOT_SERVING: calls on its slots fail.

use std::collections::HashMap;
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

/// Whether the server is ready for calls, for the admin listener's `/readyz`:
/// Redis answers (as the health loop last found) and shutdown has not begun.
#[derive(Debug)]
pub struct Readiness {
    redis_up: std::sync::atomic::AtomicBool,
    shutdown: CancellationToken,
}

impl Readiness {
    /// Not ready until the health loop first reaches Redis; not ready once
    /// `shutdown` fires.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            redis_up: std::sync::atomic::AtomicBool::new(false),
            shutdown,
        }
    }

    /// Why the server is not ready, if it is not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.shutdown.is_cancelled() {
            Err("shutting down")
        } else if !self.redis_up.load(std::sync::atomic::Ordering::Relaxed) {
            Err("redis does not answer")
        } else {
            Ok(())
        }
    }

    fn set_redis_up(&self, up: bool) {
        self.redis_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A service that also needs a connection of its own, and whether it is up.
pub struct OwnConnection {
    /// The service's gRPC name.
    pub service: &'static str,
    /// True while the connection is up.
    pub is_up: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Pings Redis every `interval` and mirrors the result (and each of `own`
/// connections) in `health` and `readiness` until `shutdown` fires.
pub async fn watch_redis(
    redis: Arc<Redis>,
    health: Health,
    readiness: Arc<Readiness>,
    interval: Duration,
    own: Vec<OwnConnection>,
    shutdown: CancellationToken,
) {
    let mut redis_status = None;
    let mut current: HashMap<&'static str, ServingStatus> = HashMap::new();
    loop {
        let status = match redis.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if redis_status != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %e, "redis does not answer; reporting NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        readiness.set_redis_up(status == ServingStatus::Serving);
        if redis_status != Some(status) && status == ServingStatus::Serving {
            tracing::info!("redis answers; reporting SERVING");
        }
        redis_status = Some(status);
        for name in health.names() {
            let own_down = own.iter().any(|c| c.service == *name && !(c.is_up)());
            let wanted = if own_down {
                ServingStatus::NotServing
            } else {
                status
            };
            if current.get(name) != Some(&wanted) {
                if own_down && status == ServingStatus::Serving {
                    tracing::warn!(
                        service = name,
                        "its own Redis connection is down; reporting NOT_SERVING"
                    );
                }
                health.reporter.set_service_status(*name, wanted).await;
                current.insert(name, wanted);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
