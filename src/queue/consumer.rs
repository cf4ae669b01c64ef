//! One `Consume` stream: a task that keeps up to `max_in_flight` jobs leased to
//! its client, applies the acks, nacks and extensions the client sends on the same
//! stream, and gives every job it still holds back to the queue when the stream
//! ends, breaks or the server shuts down (policy: the jobs become ready at once,
//! and the delivery counts as an attempt).
//!
//! The task has three exits (client gone, request side closed, shutdown) and
//! waits, when it has credits but the queue is empty, on the queue's [`Signal`]:
//! no Redis connection and no polling while idle. While it waits it also offers
//! its credits to enqueues in this process, which then lease jobs to it in their
//! own script call (`handoff.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::delivery;
use super::handoff::{Handed, IdleConsumers, Inbox};
use super::store::{Dequeued, Leased, QueueStore, Taker};
use crate::error::Error;
use crate::proto::{ConsumeRequest, ConsumeResponse, Outcome, consume_request, consume_response};
use crate::pubsub::waker::Signal;
use crate::time::{millis, proto_timestamp_ms as timestamp};
use crate::validate;

/// How long to wait before trying Redis again after it failed.
const REDIS_RETRY: Duration = Duration::from_millis(250);

/// Messages are boxed in the channel: tokio allocates a channel's first block of 32
/// slots when it is created, and a boxed slot is 8 bytes where a message is 200, so
/// an idle stream holds 256 bytes here instead of 6.4 KiB.
pub(super) type Outbound = mpsc::Sender<Box<Result<ConsumeResponse, Status>>>;

/// The state of one Consume stream.
pub(super) struct Consumer {
    pub(super) store: QueueStore,
    pub(super) signal: Arc<Signal>,
    pub(super) queue: String,
    pub(super) max_in_flight: usize,
    pub(super) lease: Duration,
    /// Jobs leased to this stream: id → lease token.
    pub(super) held: HashMap<String, String>,
    pub(super) tx: Outbound,
    pub(super) shutdown: tokio_util::sync::CancellationToken,
    /// Where this consumer offers its free credits while it waits.
    pub(super) idle: Arc<IdleConsumers>,
    /// Hand-offs arrive here; `inbox_tx` is the address offers carry.
    pub(super) inbox: mpsc::UnboundedReceiver<Box<Handed>>,
    pub(super) inbox_tx: Inbox,
    /// Credits offered now (0: no offer out).
    pub(super) offered: usize,
    /// Credits of a claimed offer whose jobs have not arrived yet.
    pub(super) pending: usize,
}

/// What woke a waiting consumer.
enum Event {
    /// The client sent messages (the first, and everything else already there).
    Requests(Vec<ConsumeRequest>),
    /// The client is gone or its request side ended or broke.
    ClientGone,
    /// Jobs may be ready.
    Woken,
    /// Time to try Redis again.
    Retry,
    /// The batcher settled a claim on this consumer's offer.
    Handed(Handed),
    /// The server is shutting down.
    Shutdown,
}

impl Consumer {
    /// Serves the stream, then gives back what it holds.
    pub(super) async fn run(mut self, mut inbound: Streaming<ConsumeRequest>) {
        let ending = self.serve(&mut inbound).await;
        // No more hand-offs: take those already sent, so they go back with the rest.
        self.withdraw_offer();
        self.inbox.close();
        let mut undelivered = Vec::new();
        while let Some(handed) = self.inbox.recv().await {
            if let Ok(found) = handed.found {
                undelivered.extend(found.jobs);
            }
        }
        self.give_back(undelivered).await;
        if let Some(status) = ending {
            let _ = self.tx.send(Box::new(Err(status))).await;
        }
    }

    /// Credits not used by held jobs or by a claimed offer.
    fn credits(&self) -> usize {
        self.max_in_flight
            .saturating_sub(self.held.len() + self.pending)
    }

    /// Takes back this consumer's standing offer; when the batcher claimed it
    /// already, its credits stay reserved until the [`Handed`] arrives.
    fn withdraw_offer(&mut self) {
        if self.offered > 0 && !self.idle.withdraw(&self.queue, &self.inbox_tx) {
            self.pending += self.offered;
        }
        self.offered = 0;
    }

    /// Returns the status to end the stream with, or `None` when the client left.
    async fn serve(&mut self, inbound: &mut Streaming<ConsumeRequest>) -> Option<Status> {
        let mut redis_trouble = false;
        // Look for work only with a reason: at start, after a wake-up, when acks
        // free credits of a full consumer, or after a full batch (more may wait).
        // An ack alone makes no job ready, so it does not cost a dequeue.
        let mut look = true;
        loop {
            let credits = self.credits();
            let signal = self.signal.clone();
            let woken = signal.notified();
            tokio::pin!(woken);
            // Only a stream with credits listens: a full one must not swallow the
            // wake-up another consumer could use.
            if credits > 0 {
                woken.as_mut().enable();
            }

            if credits > 0 && look && !redis_trouble {
                look = false;
                match self
                    .store
                    .dequeue(&self.queue, credits, millis(self.lease))
                    .await
                {
                    Ok(found) => {
                        look = found.jobs.len() == credits;
                        if look {
                            // More may be ready than this stream can take.
                            self.signal.pass_on();
                        }
                        if self.take(found).await.is_err() {
                            return None;
                        }
                        if look {
                            continue;
                        }
                    }
                    Err(Error::Unavailable(e)) => {
                        tracing::warn!(queue = %self.queue, error = %e, "consumer cannot reach redis; retrying");
                        redis_trouble = true;
                    }
                    Err(e) => return Some(e.into()),
                }
            }

            // Waiting with credits to spare: enqueues in this process may hand jobs
            // straight to this consumer meanwhile.
            let free = self.credits();
            if free > 0 && !redis_trouble {
                let taker = Taker {
                    most: free,
                    lease_ms: millis(self.lease),
                };
                self.idle.offer(&self.queue, taker, &self.inbox_tx);
                self.offered = free;
            }

            let event = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(first)) => {
                        // Apply everything the client already sent in one go (acks batch).
                        let mut batch = vec![first];
                        while let Some(Ok(Some(next))) = inbound.message().now_or_never() {
                            batch.push(next);
                        }
                        Event::Requests(batch)
                    }
                    Ok(None) => Event::ClientGone,
                    Err(status) => {
                        tracing::debug!(queue = %self.queue, %status, "consumer stream broke");
                        Event::ClientGone
                    }
                },
                Some(handed) = self.inbox.recv() => Event::Handed(*handed),
                () = &mut woken, if credits > 0 => Event::Woken,
                () = tokio::time::sleep(REDIS_RETRY), if redis_trouble => Event::Retry,
                () = self.tx.closed() => Event::ClientGone,
                () = self.shutdown.cancelled() => Event::Shutdown,
            };
            self.withdraw_offer();
            match event {
                Event::Requests(batch) => {
                    let was_full = self.credits() == 0;
                    if let Err(status) = self.handle(batch).await {
                        return Some(status);
                    }
                    look |= was_full && self.credits() > 0;
                }
                Event::Handed(handed) => {
                    self.pending = self.pending.saturating_sub(handed.claimed);
                    // The producers got a failed call's error; this consumer's own
                    // next dequeue meets any lasting trouble.
                    if let Ok(found) = handed.found {
                        // As many as claimed: more may be ready.
                        look |= found.jobs.len() == handed.claimed;
                        if self.take(found).await.is_err() {
                            return None;
                        }
                    }
                }
                // A claim may have used the last credit while the wake-up was on
                // its way: hand it to a consumer that can take the work.
                Event::Woken if self.credits() == 0 => self.signal.pass_on(),
                Event::Woken => look = true,
                Event::Retry => {
                    redis_trouble = false;
                    look = true;
                }
                Event::ClientGone => return None,
                Event::Shutdown => return Some(Error::ShuttingDown.into()),
            }
        }
    }

    /// Holds and delivers leased jobs, and arms the wake-up for when more may be
    /// ready. Err when the client is gone.
    async fn take(&mut self, found: Dequeued) -> Result<(), ()> {
        if let Some(ms) = found.retry_in_ms {
            self.signal
                .wake_at(Instant::now() + Duration::from_millis(ms));
        }
        for job in found.jobs {
            self.held.insert(job.id.clone(), job.record.token.clone());
            let message = consume_response::Message::Delivery(delivery(&self.queue, job));
            self.send(message).await?;
        }
        Ok(())
    }

    async fn send(&self, message: consume_response::Message) -> Result<(), ()> {
        self.tx
            .send(Box::new(Ok(ConsumeResponse {
                message: Some(message),
            })))
            .await
            .map_err(|_| ())
    }

    /// Applies acks (as one batch), nacks and extensions; answers each with an Outcome.
    async fn handle(&mut self, batch: Vec<ConsumeRequest>) -> Result<(), Status> {
        let mut acks = Vec::new();
        let mut others = Vec::new();
        for request in batch {
            match request.message {
                Some(consume_request::Message::Ack(ack)) => acks.push(ack),
                Some(consume_request::Message::Subscribe(_)) => {
                    return Err(Error::invalid(
                        "message",
                        "subscribe may only be the first message",
                    )
                    .into());
                }
                Some(other) => others.push(other),
                None => return Err(Error::invalid("message", "is required").into()),
            }
        }
        if !acks.is_empty() {
            let items: Vec<(String, String, Vec<u8>)> = acks
                .into_iter()
                .map(|a| (a.job_id, a.lease_token, a.result))
                .collect();
            let results = match self.store.ack(&self.queue, &items).await {
                Ok(accepted) => accepted.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e.to_string()); items.len()],
            };
            for ((id, token, _), result) in items.into_iter().zip(results) {
                self.report("ack", id, token, result.map(|ok| ok.then_some(0)))
                    .await;
            }
        }
        for message in others {
            match message {
                consume_request::Message::Nack(nack) => {
                    let retry_after =
                        validate::duration("nack.retry_after", nack.retry_after.as_ref());
                    let result = match retry_after {
                        Ok(retry_after) => self
                            .store
                            .nack(
                                &self.queue,
                                &nack.job_id,
                                &nack.lease_token,
                                &nack.error,
                                nack.permanent,
                                retry_after.map(millis),
                            )
                            .await
                            .map(|outcome| outcome.map(|_| 0))
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    self.report("nack", nack.job_id, nack.lease_token, result)
                        .await;
                }
                consume_request::Message::Extend(extend) => {
                    let lease = validate::ttl("extend.lease", extend.lease.as_ref())
                        .map(|l| l.unwrap_or(self.lease));
                    let result = match lease {
                        Ok(lease) => self
                            .store
                            .extend(
                                &self.queue,
                                &extend.job_id,
                                &extend.lease_token,
                                millis(lease),
                            )
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    self.report("extend", extend.job_id, extend.lease_token, result)
                        .await;
                }
                consume_request::Message::Ack(_) | consume_request::Message::Subscribe(_) => {}
            }
        }
        Ok(())
    }

    /// Sends an Outcome and frees the credit of a job this stream no longer holds.
    /// `result`: Ok(Some(deadline ms or 0)) accepted, Ok(None) stale token, Err(text) failed.
    async fn report(
        &mut self,
        action: &str,
        job_id: String,
        token: String,
        result: Result<Option<u64>, String>,
    ) {
        let finished = action != "extend";
        let stale = matches!(result, Ok(None));
        let (ok, error, deadline) = match result {
            Ok(Some(deadline)) => (true, String::new(), deadline),
            Ok(None) => (
                false,
                "the lease token is not the job's current lease".to_owned(),
                0,
            ),
            Err(e) => (false, e, 0),
        };
        // A job acked or nacked, or whose lease is no longer ours, frees its credit.
        if ((ok && finished) || stale) && self.held.get(&job_id) == Some(&token) {
            self.held.remove(&job_id);
        }
        let outcome = Outcome {
            job_id,
            action: action.to_owned(),
            ok,
            error,
            lease_deadline: (ok && !finished).then(|| timestamp(deadline)),
        };
        let _ = self.send(consume_response::Message::Outcome(outcome)).await;
    }

    /// Gives every held job back to the queue at once (counting the attempt), and
    /// the `undelivered` hand-offs (not counting it).
    async fn give_back(&mut self, undelivered: Vec<Leased>) {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() && undelivered.is_empty() {
            return;
        }
        let store = &self.store;
        let queue = &self.queue;
        let delivered = join_all(held.iter().map(|(id, token)| async move {
            store
                .nack(queue, id, token, "consumer disconnected", false, Some(0))
                .await
                .map(|_| ())
        }));
        let not_delivered = join_all(undelivered.iter().map(|job| async move {
            store
                .release_undelivered(queue, &job.id, &job.record.token)
                .await
                .map(|_| ())
        }));
        let (delivered, not_delivered) = futures::join!(delivered, not_delivered);
        let failed = delivered
            .iter()
            .chain(&not_delivered)
            .filter(|r| r.is_err())
            .count();
        let returned = held.len() + undelivered.len() - failed;
        tracing::debug!(queue = %self.queue, returned, failed, "consumer gave its jobs back");
    }
}
