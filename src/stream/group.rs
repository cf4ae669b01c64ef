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
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::readers::StreamSignal;
use super::store::{ClaimWhat, StoredEntry, StreamStore};
use super::to_entry;
use crate::error::Error;
use crate::proto::{ReadGroupRequest, ReadGroupResponse, read_group_request, read_group_response};
use crate::redis::REDIS_RETRY;
use crate::streaming;
use crate::telemetry::traces;

type Outbound = mpsc::Sender<Result<ReadGroupResponse, Status>>;

/// Go on, or end the stream with this status (None: the client left).
type Flow<T = ()> = ControlFlow<Option<Status>, T>;

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
    pub(super) tx: Outbound,
    /// The ReadGroup call's side of each entry's trace.
    pub(super) trace: traces::Consumer,
    pub(super) shutdown: tokio_util::sync::CancellationToken,
}

/// Where a ReadGroup stream is.
struct Progress {
    /// Delivered and not acked yet.
    held: HashSet<String>,
    /// Where reading this consumer's own pending entries goes on; None once
    /// they are all delivered.
    history: Option<String>,
    /// When to look for idle entries of other consumers next (with `claim_idle`).
    claim_at: Option<Instant>,
    /// Redis failed the last fetch: wait [`REDIS_RETRY`] before the next.
    redis_trouble: bool,
}

impl GroupConsumer {
    pub(super) async fn run(self, mut inbound: Streaming<ReadGroupRequest>) {
        let ending = self.serve(&mut inbound).await;
        streaming::finish(&self.tx, ending).await;
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

    /// Sends one event; Break when the client is gone.
    async fn send(&self, event: read_group_response::Event) -> Flow {
        let response = ReadGroupResponse { event: Some(event) };
        match self.tx.send(Ok(response)).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(None),
        }
    }

    /// Delivers while there are credits and entries, waits for news otherwise.
    async fn serve(&self, inbound: &mut Streaming<ReadGroupRequest>) -> Option<Status> {
        let name = read_group_response::Event::Consumer(self.consumer.clone());
        if let ControlFlow::Break(ending) = self.send(name).await {
            return ending;
        }
        let mut progress = Progress {
            held: HashSet::new(),
            history: Some("0".to_owned()),
            claim_at: self.claim_idle.map(|_| Instant::now()),
            redis_trouble: false,
        };
        loop {
            let woken = self.signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            let credits = self.max_unacked.saturating_sub(progress.held.len());
            if credits > 0 && !progress.redis_trouble {
                match self.deliver(credits, &mut progress).await {
                    ControlFlow::Continue(true) => continue,
                    ControlFlow::Continue(false) => {}
                    ControlFlow::Break(ending) => return ending,
                }
            }

            let claim_wait = progress
                .claim_at
                .filter(|_| credits > 0)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let flow = tokio::select! {
                message = inbound.message() => {
                    self.apply_acks(message, inbound, &mut progress.held).await
                }
                () = &mut woken, if credits > 0 => ControlFlow::Continue(()),
                () = tokio::time::sleep_until(claim_wait), if progress.claim_at.is_some() && credits > 0 => {
                    ControlFlow::Continue(())
                }
                () = tokio::time::sleep(REDIS_RETRY), if progress.redis_trouble => {
                    progress.redis_trouble = false;
                    ControlFlow::Continue(())
                }
                () = self.tx.closed() => ControlFlow::Break(None),
                () = self.shutdown.cancelled() => ControlFlow::Break(Some(Error::ShuttingDown.into())),
            };
            if let ControlFlow::Break(ending) = flow {
                return ending;
            }
        }
    }

    /// Fetches up to `credits` entries and sends them; Continue(true) when some
    /// went out (there may be more).
    async fn deliver(&self, credits: usize, progress: &mut Progress) -> Flow<bool> {
        let claim_now = progress.claim_at.is_some_and(|at| at <= Instant::now());
        let entries = match self.fetch(credits, &mut progress.history, claim_now).await {
            Ok(entries) => entries,
            Err(e) if e.is_transient() => {
                tracing::warn!(stream = %self.stream, error = %e, "group consumer cannot reach redis; retrying");
                progress.redis_trouble = true;
                return ControlFlow::Continue(false);
            }
            Err(e) => return ControlFlow::Break(Some(e.into())),
        };
        if claim_now {
            progress.claim_at = self.claim_idle.map(|idle| Instant::now() + idle / 2);
        }
        let delivered = !entries.is_empty();
        for entry in entries {
            progress.held.insert(entry.id.clone());
            let entry = to_entry(&self.stream, entry);
            self.trace
                .received(&entry.stream, &entry.id, entry.trace_context.as_ref());
            self.send(read_group_response::Event::Entry(entry)).await?;
        }
        ControlFlow::Continue(delivered)
    }

    /// Applies the acks the client sent (this message and those already there)
    /// in one call, and confirms each.
    async fn apply_acks(
        &self,
        message: Result<Option<ReadGroupRequest>, Status>,
        inbound: &mut Streaming<ReadGroupRequest>,
        held: &mut HashSet<String>,
    ) -> Flow {
        let Ok(Some(first)) = message else {
            return ControlFlow::Break(None);
        };
        let (batch, ended) = streaming::ready_batch(first, inbound, usize::MAX);
        let mut ids = Vec::with_capacity(batch.len());
        for request in batch {
            match request.message {
                Some(read_group_request::Message::Ack(id)) => ids.push(id),
                _ => {
                    let refused = Error::invalid("message", "after open, only acks may be sent");
                    return ControlFlow::Break(Some(refused.into()));
                }
            }
        }
        if let Err(e) = self.store.ack(&self.stream, &self.group, &ids).await {
            return ControlFlow::Break(Some(e.into()));
        }
        for id in ids {
            held.remove(&id);
            self.send(read_group_response::Event::Acked(id)).await?;
        }
        match ended {
            None => ControlFlow::Continue(()),
            Some(_) => ControlFlow::Break(None),
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
