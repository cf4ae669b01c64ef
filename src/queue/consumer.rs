//! One `Consume` stream: a task that keeps up to `max_in_flight` jobs leased to
//! its client, applies the acks, nacks and extensions the client sends on the same
//! stream, and gives every job it still holds back to the queue when the stream
//! ends, breaks or the server shuts down (policy: the jobs become ready at once,
//! and the delivery counts as an attempt).
//!
//! A credit belongs to a lease: a held job whose lease has run out (an ack that
//! failed on a Redis error, a client that never answered) stops counting once its
//! lease deadline passes, since the reaper hands the job out again by then. So a
//! failed settle can delay this stream by at most one lease, never stall it.
//!
//! The task has three exits (client gone, request side closed, shutdown) and
//! waits, when it has credits but the queue is empty, on the queue's [`Signal`]:
//! no Redis connection and no polling while idle. While it waits it also offers
//! its credits to enqueues in this process, which then lease jobs to it in their
//! own script call (`handoff.rs`).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::futures::Notified;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::handoff::{Handed, IdleConsumers, Inbox};
use super::store::{Dequeued, Leased, QueueStore, Taker};
use super::{delivery, settle};
use crate::error::Error;
use crate::proto::{
    AckItem, ConsumeRequest, ConsumeResponse, ExtendItem, NackItem, Outcome, consume_request,
    consume_response,
};
use crate::redis::REDIS_RETRY;
use crate::streaming;
use crate::telemetry::traces;
use crate::time::{millis, proto_timestamp_ms as timestamp};
use crate::validate::{self, Limits};
use crate::waker::Signal;

/// Messages are boxed in the channel: tokio allocates a channel's first block of 32
/// slots when it is created, and a boxed slot is 8 bytes where a message is 200, so
/// an idle stream holds 256 bytes here instead of 6.4 KiB.
pub(super) type Outbound = mpsc::Sender<Box<Result<ConsumeResponse, Status>>>;

/// Go on, or end the stream with this status (None: the client left).
type Flow<T = ()> = ControlFlow<Option<Status>, T>;

/// A job leased to this stream.
struct Held {
    /// The delivery's lease token.
    token: String,
    /// When the lease has run out at the latest (measured from when this stream
    /// received the job, which is after Redis started the lease).
    lapses: Instant,
}

/// The state of one Consume stream.
pub(super) struct Consumer {
    store: QueueStore,
    limits: Limits,
    signal: Arc<Signal>,
    queue: String,
    max_in_flight: usize,
    lease: Duration,
    trace: traces::Consumer,
    /// Jobs leased to this stream, by id.
    held: HashMap<String, Held>,
    /// No held lease lapses before this (it may be earlier than the first one).
    next_lapse: Instant,
    tx: Outbound,
    shutdown: tokio_util::sync::CancellationToken,
    /// Where this consumer offers its free credits while it waits.
    idle: Arc<IdleConsumers>,
    /// Hand-offs arrive here; `inbox_tx` is the address offers carry.
    inbox: mpsc::UnboundedReceiver<Box<Handed>>,
    inbox_tx: Inbox,
    /// Credits offered now (0: no offer out).
    offered: usize,
    /// Credits of a claimed offer whose jobs have not arrived yet.
    pending: usize,
    /// There may be ready jobs: dequeue before waiting.
    look: bool,
    /// Redis failed the last dequeue: wait [`REDIS_RETRY`] before the next.
    redis_trouble: bool,
}

/// Where a new consumer takes its jobs from and how many.
pub(super) struct Subscription {
    pub(super) queue: String,
    pub(super) max_in_flight: usize,
    pub(super) lease: Duration,
    /// The Consume call's side of each delivery's trace.
    pub(super) trace: traces::Consumer,
}

/// What became of one ack, nack or extend sent on the stream.
enum Settled {
    /// Done; for an extend, the new lease deadline (ms since the epoch).
    Accepted(Option<u64>),
    /// The lease token is not the job's current lease: nothing changed.
    Stale,
    /// Refused (bad item) or failed (Redis): the job keeps its lease.
    Failed(Error),
}

/// What woke a waiting consumer.
enum Event {
    /// The client sent messages (the first, and everything else already
    /// there); true when its request side ended after them.
    Requests(Vec<ConsumeRequest>, bool),
    /// The client is gone or its request side ended or broke.
    ClientGone,
    /// Jobs may be ready.
    Woken,
    /// A held job's lease may have run out.
    LeaseLapsed,
    /// Time to try Redis again.
    Retry,
    /// The batcher settled a claim on this consumer's offer.
    Handed(Handed),
    /// The server is shutting down.
    Shutdown,
}

impl Consumer {
    /// A consumer of `subscription`, sending deliveries and outcomes on `tx`.
    pub(super) fn new(
        store: QueueStore,
        limits: Limits,
        signal: Arc<Signal>,
        idle: Arc<IdleConsumers>,
        subscription: Subscription,
        tx: Outbound,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        Self {
            store,
            limits,
            signal,
            queue: subscription.queue,
            max_in_flight: subscription.max_in_flight,
            lease: subscription.lease,
            trace: subscription.trace,
            held: HashMap::new(),
            next_lapse: Instant::now() + subscription.lease,
            tx,
            shutdown,
            idle,
            inbox,
            inbox_tx,
            offered: 0,
            pending: 0,
            look: true,
            redis_trouble: false,
        }
    }

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

    /// Stops counting held jobs whose lease has run out, and notes when the next
    /// of the others runs out.
    fn drop_lapsed(&mut self) {
        let now = Instant::now();
        self.held.retain(|_, held| held.lapses > now);
        self.next_lapse = self
            .held
            .values()
            .map(|held| held.lapses)
            .min()
            .unwrap_or(now + self.lease);
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
            if credits > 0 && self.look && !self.redis_trouble {
                match self.look_for_work(credits).await {
                    ControlFlow::Continue(true) => continue,
                    ControlFlow::Continue(false) => {}
                    ControlFlow::Break(ending) => return ending,
                }
            }
            self.offer_credits();
            let event = self.next_event(inbound, woken, credits).await;
            self.withdraw_offer();
            if let ControlFlow::Break(ending) = self.on_event(event).await {
                return ending;
            }
        }
    }

    /// Leases up to `credits` ready jobs and delivers them; Continue(true) when
    /// it took a full batch (more may be ready).
    async fn look_for_work(&mut self, credits: usize) -> Flow<bool> {
        self.look = false;
        let found = match self
            .store
            .dequeue(&self.queue, credits, millis(self.lease))
            .await
        {
            Ok(found) => found,
            Err(e) if e.is_transient() => {
                tracing::warn!(queue = %self.queue, error = %e, "consumer cannot reach redis; retrying");
                self.redis_trouble = true;
                return ControlFlow::Continue(false);
            }
            Err(e) => return ControlFlow::Break(Some(e.into())),
        };
        self.look = found.jobs.len() == credits;
        if self.look {
            // More may be ready than this stream can take.
            self.signal.pass_on();
        }
        self.take(found).await?;
        ControlFlow::Continue(self.look)
    }

    /// Waiting with credits to spare: enqueues in this process may hand jobs
    /// straight to this consumer meanwhile.
    fn offer_credits(&mut self) {
        let free = self.credits();
        if free > 0 && !self.redis_trouble {
            let taker = Taker {
                most: free,
                lease_ms: millis(self.lease),
            };
            self.idle.offer(&self.queue, taker, &self.inbox_tx);
            self.offered = free;
        }
    }

    /// Waits for whatever happens first.
    async fn next_event(
        &mut self,
        inbound: &mut Streaming<ConsumeRequest>,
        woken: Pin<&mut Notified<'_>>,
        credits: usize,
    ) -> Event {
        tokio::select! {
            message = inbound.message() => match message {
                // Apply everything the client already sent in one go (acks batch).
                Ok(Some(first)) => {
                    let (batch, ended) = streaming::ready_batch(first, inbound, usize::MAX);
                    Event::Requests(batch, ended.is_some())
                }
                Ok(None) => Event::ClientGone,
                Err(status) => {
                    tracing::debug!(queue = %self.queue, %status, "consumer stream broke");
                    Event::ClientGone
                }
            },
            Some(handed) = self.inbox.recv() => Event::Handed(*handed),
            () = woken, if credits > 0 => Event::Woken,
            () = tokio::time::sleep(REDIS_RETRY), if self.redis_trouble => Event::Retry,
            () = tokio::time::sleep_until(self.next_lapse), if !self.held.is_empty() => {
                Event::LeaseLapsed
            }
            () = self.tx.closed() => Event::ClientGone,
            () = self.shutdown.cancelled() => Event::Shutdown,
        }
    }

    /// Acts on one event. Looks for work again only with a reason: after a
    /// wake-up, when acks or lapsed leases free credits of a full consumer, or
    /// after a full hand-off (more may wait); an ack alone makes no job ready,
    /// so it does not cost a dequeue.
    async fn on_event(&mut self, event: Event) -> Flow {
        match event {
            Event::Requests(batch, ended) => {
                let was_full = self.credits() == 0;
                if let Err(status) = self.handle(batch).await {
                    return ControlFlow::Break(Some(status));
                }
                if ended {
                    return ControlFlow::Break(None);
                }
                self.look |= was_full && self.credits() > 0;
            }
            Event::Handed(handed) => {
                self.pending = self.pending.saturating_sub(handed.claimed);
                // The producers got a failed call's error; this consumer's own
                // next dequeue meets any lasting trouble.
                if let Ok(found) = handed.found {
                    // As many as claimed: more may be ready.
                    self.look |= found.jobs.len() == handed.claimed;
                    self.take(found).await?;
                }
            }
            // A claim may have used the last credit while the wake-up was on
            // its way: hand it to a consumer that can take the work.
            Event::Woken if self.credits() == 0 => self.signal.pass_on(),
            Event::Woken => self.look = true,
            Event::LeaseLapsed => {
                let was_full = self.credits() == 0;
                self.drop_lapsed();
                self.look |= was_full && self.credits() > 0;
            }
            Event::Retry => {
                self.redis_trouble = false;
                self.look = true;
            }
            Event::ClientGone => return ControlFlow::Break(None),
            Event::Shutdown => return ControlFlow::Break(Some(Error::ShuttingDown.into())),
        }
        ControlFlow::Continue(())
    }

    /// Holds and delivers leased jobs, and arms the wake-up for when more may be
    /// ready. Break when the client is gone.
    async fn take(&mut self, found: Dequeued) -> Flow {
        if let Some(ms) = found.retry_in_ms {
            self.signal
                .wake_at(Instant::now() + Duration::from_millis(ms));
        }
        let lapses = Instant::now() + self.lease;
        self.next_lapse = self.next_lapse.min(lapses);
        for job in found.jobs {
            let token = job.record.token.clone();
            self.held.insert(job.id.clone(), Held { token, lapses });
            let message =
                consume_response::Message::Delivery(delivery(&self.queue, job, &self.trace));
            self.send(message).await?;
        }
        ControlFlow::Continue(())
    }

    /// Sends one message; Break when the client is gone.
    async fn send(&self, message: consume_response::Message) -> Flow {
        let response = ConsumeResponse {
            message: Some(message),
        };
        match self.tx.send(Box::new(Ok(response))).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(None),
        }
    }

    /// Applies acks (as one batch), nacks and extensions; answers each with an Outcome.
    async fn handle(&mut self, batch: Vec<ConsumeRequest>) -> Result<(), Status> {
        let mut acks = Vec::new();
        let mut others = Vec::new();
        for request in batch {
            match validate::required("message", request.message)? {
                consume_request::Message::Ack(ack) => acks.push(ack),
                consume_request::Message::Subscribe(_) => {
                    return Err(Error::invalid(
                        "message",
                        "subscribe may only be the first message",
                    )
                    .into());
                }
                other => others.push(other),
            }
        }
        if !acks.is_empty() {
            self.ack(acks).await;
        }
        for message in others {
            match message {
                consume_request::Message::Nack(item) => self.nack(item).await,
                consume_request::Message::Extend(item) => self.extend(item).await,
                consume_request::Message::Ack(_) | consume_request::Message::Subscribe(_) => {}
            }
        }
        Ok(())
    }

    /// Acks the valid items in one Redis call; refuses the others one by one.
    async fn ack(&mut self, items: Vec<AckItem>) {
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            match settle::ack(&self.limits, "ack", &item) {
                Ok(()) => checked.push((item.job_id, item.lease_token, item.result)),
                Err(e) => {
                    self.report("ack", item.job_id, &item.lease_token, Settled::Failed(e))
                        .await;
                }
            }
        }
        if checked.is_empty() {
            return;
        }
        let accepted = self.store.ack(&self.queue, &checked).await;
        for (i, (id, token, _)) in checked.into_iter().enumerate() {
            let settled = match &accepted {
                Ok(accepted) if accepted.get(i) == Some(&true) => Settled::Accepted(None),
                Ok(_) => Settled::Stale,
                Err(e) => Settled::Failed(e.clone()),
            };
            self.report("ack", id, &token, settled).await;
        }
    }

    async fn nack(&mut self, item: NackItem) {
        let settled = match settle::nack(&self.limits, "nack", &item) {
            Ok(retry_after_ms) => match self
                .store
                .nack(
                    &self.queue,
                    &item.job_id,
                    &item.lease_token,
                    &item.error,
                    item.permanent,
                    retry_after_ms,
                )
                .await
            {
                Ok(Some(_)) => Settled::Accepted(None),
                Ok(None) => Settled::Stale,
                Err(e) => Settled::Failed(e),
            },
            Err(e) => Settled::Failed(e),
        };
        self.report("nack", item.job_id, &item.lease_token, settled)
            .await;
    }

    async fn extend(&mut self, item: ExtendItem) {
        let settled = match settle::extend("extend", &item, self.lease) {
            Ok(lease) => match self
                .store
                .extend(&self.queue, &item.job_id, &item.lease_token, millis(lease))
                .await
            {
                Ok(Some(deadline)) => {
                    if let Some(held) = self
                        .held
                        .get_mut(&item.job_id)
                        .filter(|held| held.token == item.lease_token)
                    {
                        held.lapses = Instant::now() + lease;
                    }
                    Settled::Accepted(Some(deadline))
                }
                Ok(None) => Settled::Stale,
                Err(e) => Settled::Failed(e),
            },
            Err(e) => Settled::Failed(e),
        };
        self.report("extend", item.job_id, &item.lease_token, settled)
            .await;
    }

    /// Sends an Outcome, and frees the credit of a job this stream no longer
    /// holds: acked or nacked, or its lease no longer ours.
    async fn report(&mut self, action: &str, job_id: String, token: &str, settled: Settled) {
        let finished = match &settled {
            Settled::Accepted(_) => action != "extend",
            Settled::Stale => true,
            Settled::Failed(_) => false,
        };
        if finished
            && self
                .held
                .get(&job_id)
                .is_some_and(|held| held.token == token)
        {
            self.held.remove(&job_id);
        }
        let (ok, error, lease_deadline) = match settled {
            Settled::Accepted(deadline) => (true, String::new(), deadline.map(timestamp)),
            Settled::Stale => (false, settle::stale(&job_id).to_string(), None),
            Settled::Failed(e) => (false, e.to_string(), None),
        };
        let outcome = Outcome {
            job_id,
            action: action.to_owned(),
            ok,
            error,
            lease_expire_time: lease_deadline,
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
        let delivered = join_all(held.iter().map(|(id, held)| async move {
            store
                .nack(
                    queue,
                    id,
                    &held.token,
                    "consumer disconnected",
                    false,
                    Some(0),
                )
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
