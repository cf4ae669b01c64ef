//! One `ReadGroup` stream: a task that keeps up to `max_unacked` entries delivered
//! to its consumer, applies the acks the client sends on the same stream, and
//! waits on the stream's shared reader when there is nothing to read.
//!
//! Order of delivery: first this consumer's own pending entries (a consumer
//! resuming under its name picks up where it left off), then, when `claim_idle`
//! is set, entries of other consumers idle that long (past the group's
//! max_deliveries they are dead-lettered instead, see `claim.lua`), then new ones.
//! Exits: the client goes away, the request side closes, or shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::readers::StreamSignal;
use super::store::{ClaimWhat, StoredEntry, StreamStore};
use super::to_entry;
use crate::error::Error;
use crate::proto::{ReadGroupRequest, ReadGroupResponse, read_group_request, read_group_response};
use crate::redis::REDIS_RETRY;

type Outbound = mpsc::Sender<Result<ReadGroupResponse, Status>>;

/// The state of one ReadGroup stream.
pub(super) struct GroupConsumer {
    pub(super) store: StreamStore,
    pub(super) signal: Arc<StreamSignal>,
    pub(super) stream: String,
    pub(super) group: String,
    pub(super) consumer: String,
    /// True when Redwire made the name up (the consumer is removed at the end when
    /// it holds nothing).
    pub(super) ephemeral: bool,
    pub(super) max_unacked: usize,
    pub(super) claim_idle: Option<Duration>,
    pub(super) heartbeat: Duration,
    pub(super) tx: Outbound,
    pub(super) shutdown: tokio_util::sync::CancellationToken,
}

impl GroupConsumer {
    pub(super) async fn run(self, mut inbound: Streaming<ReadGroupRequest>) {
        let ending = self.serve(&mut inbound).await;
        if let Some(status) = ending {
            let _ = self.tx.send(Err(status)).await;
        }
        if self.ephemeral {
            let idle = self
                .store
                .pending_detail(
                    &self.stream,
                    &self.group,
                    Duration::ZERO,
                    ("-", "+"),
                    1,
                    Some(&self.consumer),
                )
                .await;
            if idle.is_ok_and(|p| p.is_empty()) {
                let _ = self
                    .store
                    .delete_consumer(&self.stream, &self.group, &self.consumer)
                    .await;
            }
        }
    }

    async fn send(&self, event: read_group_response::Event) -> bool {
        self.tx
            .send(Ok(ReadGroupResponse { event: Some(event) }))
            .await
            .is_ok()
    }

    async fn serve(&self, inbound: &mut Streaming<ReadGroupRequest>) -> Option<Status> {
        if !self
            .send(read_group_response::Event::Consumer(self.consumer.clone()))
            .await
        {
            return None;
        }
        let mut held: HashSet<String> = HashSet::new();
        let mut history = Some("0".to_owned());
        let mut claim_at = self.claim_idle.map(|_| Instant::now());
        let mut redis_trouble = false;
        let mut idle_until = Instant::now() + self.heartbeat;
        loop {
            let woken = self.signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            let credits = self.max_unacked.saturating_sub(held.len());
            if credits > 0 && !redis_trouble {
                let claim_now = claim_at.is_some_and(|at| at <= Instant::now());
                match self.fetch(credits, &mut history, claim_now).await {
                    Ok(entries) => {
                        if claim_now {
                            claim_at = self.claim_idle.map(|idle| Instant::now() + idle / 2);
                        }
                        if !entries.is_empty() {
                            for entry in entries {
                                held.insert(entry.id.clone());
                                let event = read_group_response::Event::Entry(to_entry(
                                    &self.stream,
                                    entry,
                                ));
                                if !self.send(event).await {
                                    return None;
                                }
                            }
                            idle_until = Instant::now() + self.heartbeat;
                            continue;
                        }
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(stream = %self.stream, error = %e, "group consumer cannot reach redis; retrying");
                        redis_trouble = true;
                    }
                    Err(e) => return Some(e.into()),
                }
            }

            let claim_wait = claim_at
                .filter(|_| credits > 0)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(first)) => {
                        let mut batch = vec![first];
                        while let Some(Ok(Some(next))) = inbound.message().now_or_never() {
                            batch.push(next);
                        }
                        let mut ids = Vec::new();
                        for request in batch {
                            match request.message {
                                Some(read_group_request::Message::Ack(id)) => ids.push(id),
                                _ => return Some(Error::invalid("message", "after open, only acks may be sent").into()),
                            }
                        }
                        match self.store.ack(&self.stream, &self.group, &ids).await {
                            Ok(_) => {
                                for id in ids {
                                    held.remove(&id);
                                    if !self.send(read_group_response::Event::Acked(id)).await {
                                        return None;
                                    }
                                }
                            }
                            Err(e) => return Some(e.into()),
                        }
                    }
                    Ok(None) | Err(_) => return None,
                },
                () = &mut woken, if credits > 0 => {}
                () = tokio::time::sleep_until(claim_wait), if claim_at.is_some() && credits > 0 => {}
                () = tokio::time::sleep(REDIS_RETRY), if redis_trouble => redis_trouble = false,
                () = tokio::time::sleep_until(idle_until) => {
                    if !self.send(read_group_response::Event::Heartbeat(crate::heartbeat::now())).await {
                        return None;
                    }
                    idle_until = Instant::now() + self.heartbeat;
                }
                () = self.tx.closed() => return None,
                () = self.shutdown.cancelled() => return Some(Error::ShuttingDown.into()),
            }
        }
    }

    /// Up to `credits` entries: own pending ones first, then claimed, then new.
    async fn fetch(
        &self,
        credits: usize,
        history: &mut Option<String>,
        claim: bool,
    ) -> crate::Result<Vec<StoredEntry>> {
        if let Some(cursor) = history.as_deref() {
            let mut entries = self
                .store
                .read_group(&self.stream, &self.group, &self.consumer, cursor, credits)
                .await?;
            if let Some(last) = entries.last() {
                let range = (entries[0].id.clone(), last.id.clone());
                *history = Some(range.1.clone());
                let counts = self
                    .store
                    .pending_detail(
                        &self.stream,
                        &self.group,
                        Duration::ZERO,
                        (&range.0, &range.1),
                        credits,
                        Some(&self.consumer),
                    )
                    .await?;
                for entry in &mut entries {
                    entry.deliveries = counts
                        .iter()
                        .find(|p| p.id == entry.id)
                        .map_or(0, |p| p.deliveries);
                }
                return Ok(entries);
            }
            *history = None;
        }
        if claim && let Some(idle) = self.claim_idle {
            let claimed = self
                .store
                .claim(
                    &self.stream,
                    &self.group,
                    &self.consumer,
                    idle,
                    ClaimWhat::Scan {
                        start: "-",
                        count: credits,
                    },
                )
                .await?;
            if !claimed.entries.is_empty() {
                return Ok(claimed.entries);
            }
        }
        self.store
            .read_group(&self.stream, &self.group, &self.consumer, ">", credits)
            .await
    }
}
