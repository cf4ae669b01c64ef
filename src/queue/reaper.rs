//! The background reaper: every `--queue-reap-interval` (with jitter, so several
//! Redwire instances do not fire together) it runs `reap.lua` on each known queue:
//! expired leases are retried or dead-lettered, due delayed jobs become ready, and
//! kept completed jobs past their time are removed. The scripts are atomic, bound
//! their work per call, and take time from Redis, so every instance may run them.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::QueueStore;

/// Most jobs each step of one reap call handles.
const REAP_LIMIT: usize = 500;
/// How many ticks between refreshes of the queue list.
const REFRESH_EVERY: u32 = 4;

/// Runs until `shutdown`.
pub(super) async fn run(store: QueueStore, interval: Duration, shutdown: CancellationToken) {
    let mut queues = Vec::new();
    let mut tick = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(jittered(interval)) => {}
            () = shutdown.cancelled() => return,
        }
        if tick.is_multiple_of(REFRESH_EVERY) {
            match store.list_queues().await {
                Ok(list) => queues = list,
                Err(e) => tracing::debug!(error = %e, "reaper cannot list queues"),
            }
        }
        tick = tick.wrapping_add(1);
        for queue in &queues {
            match store.reap(queue, REAP_LIMIT).await {
                Ok(reaped) if reaped.expired > 0 => {
                    tracing::info!(queue, expired = reaped.expired, "leases expired")
                }
                Ok(reaped) => tracing::trace!(
                    queue,
                    promoted = reaped.promoted,
                    removed = reaped.removed,
                    "reaped"
                ),
                Err(e) => tracing::debug!(queue, error = %e, "reap failed"),
            }
        }
    }
}

/// `interval` plus or minus up to a quarter of it, at random.
fn jittered(interval: Duration) -> Duration {
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    let quarter = interval / 4;
    let spread = u64::try_from(quarter.as_micros()).unwrap_or(0).max(1);
    interval - quarter + Duration::from_micros(random % (2 * spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(300) && d <= Duration::from_millis(500),
                "{d:?}"
            );
        }
    }
}
