//! `redwire.v1.Queue`: an at-least-once job queue.
//!
//! Layout: `store.rs` (one script call per operation), `record.rs` (the job record
//! the scripts share with Rust), `batcher.rs` (group commit of concurrent single-job
//! enqueues: unary Enqueue and EnqueueStream), `consumer.rs` (Consume streams),
//! `handoff.rs` (batched enqueues lease jobs straight to waiting Consume streams),
//! `reaper.rs` (background lease expiry and delayed promotion), and the scripts:
//! `queue.lua` (shared prelude: key list, record format, group hand-over, backoff),
//! `enqueue.lua`, `dequeue.lua`, `ack.lua`, `nack.lua`, `extend.lua`, `reap.lua`,
//! `redrive.lua`, `purge.lua`. Idle consumers are woken through
//! `crate::waker` (channel `rw:q:wake`).
//!
//! Keys (all `rw:q:{<queue>}:<part>`, one cluster slot per queue): jobs, payloads,
//! results, waiting, delayed, active, dead, completed, backlog, groups, meta, rate;
//! `queue.lua` documents each. The registry `rw:queues` lists queue names
//! (qualified with their tenant, see `crate::redis::keys`; a tenant's keys start
//! `rw:<tenant>/q:`). Handlers turn the request's queue name into its qualified
//! name through the call's `crate::auth::Scope`, and everything below works
//! with that.

mod batcher;
mod consumer;
mod handoff;
mod reaper;
mod record;
mod settle;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use batcher::{EnqueueBatcher, Enqueuer};
use handoff::IdleConsumers;
use record::MAX_PRIORITY;
pub use record::{JobRecord, State};
pub use store::{
    Dequeued, Enqueued, Leased, NewJob, QueueStore, Stats, StoredJob, Taker, script_source,
};

use crate::auth::Scope;
use crate::deadline;
use crate::error::{Error, Reason, Result};
use crate::heartbeat;
use crate::page::{self, Page};
use crate::producer::{self, Replies};
use crate::proto::queue_server::Queue;
use crate::proto::*;
use crate::redis::keys::{self, QUEUE_WAKE_CHANNEL};
use crate::telemetry::traces::{self, Producer};
use crate::time::{millis, proto_duration, proto_timestamp_ms as timestamp};
use crate::validate::{self, Limits};
use crate::waker::Waker;

/// Deliveries allowed when a job does not say.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most attributes on one job.
const MAX_ATTRIBUTES: usize = 64;
/// Default base retry delay.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Default longest retry delay (exponential backoff).
const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(3600);

/// Queue settings from the config.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct QueueSettings {
    /// Lease length of a queue delivery when the consumer does not choose one.
    #[arg(long = "queue-lease", value_name = "QUEUE_LEASE", env = "REDWIRE_QUEUE_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub default_lease: Duration,

    /// How often the background reaper expires leases and promotes delayed jobs.
    #[arg(long = "queue-reap-interval", value_name = "QUEUE_REAP_INTERVAL", env = "REDWIRE_QUEUE_REAP_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub reap_interval: Duration,
}

/// The Queue service.
#[derive(Debug, Clone)]
pub struct QueueService {
    store: QueueStore,
    batcher: Arc<EnqueueBatcher>,
    idle: Arc<IdleConsumers>,
    waker: Arc<Waker>,
    limits: Limits,
    settings: QueueSettings,
    heartbeat: Duration,
    shutdown: CancellationToken,
}

impl QueueService {
    /// A Queue service; call [`QueueService::spawn_background`] to start its tasks.
    /// Consume streams that ask for no heartbeat interval get `heartbeat`.
    pub fn new(
        store: QueueStore,
        limits: Limits,
        settings: QueueSettings,
        heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let idle = Arc::new(IdleConsumers::default());
        Self {
            batcher: Arc::new(Enqueuer::batcher(
                store.clone(),
                limits.max_batch,
                idle.clone(),
            )),
            idle,
            store,
            waker: Arc::new(Waker::new(QUEUE_WAKE_CHANNEL)),
            limits,
            settings,
            heartbeat,
            shutdown,
        }
    }

    /// Starts the waker (listening through the process's pub/sub `hub`) and the
    /// reaper; they stop with the shutdown token.
    pub fn spawn_background(
        &self,
        hub: Arc<crate::pubsub::hub::Hub>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.waker.clone().run(hub, self.shutdown.clone())),
            tokio::spawn(reaper::run(
                self.store.clone(),
                self.settings.reap_interval,
                self.shutdown.clone(),
            )),
        ]
    }

    fn lease(&self, field: &str, lease: Option<&prost_types::Duration>) -> Result<Duration> {
        Ok(validate::ttl(field, lease)?.unwrap_or(self.settings.default_lease))
    }

    /// Validates a job spec and turns it into a job to enqueue. Every field is
    /// named, so a field added to the proto is a compile error here until it is
    /// handled.
    fn new_job(&self, field: &str, spec: JobSpec) -> Result<NewJob> {
        let JobSpec {
            payload,
            attributes,
            job_id,
            delay,
            deliver_time,
            priority,
            max_attempts,
            backoff,
            group,
            keep_completed,
        } = spec;
        // Field paths are formatted only when a check fails: this runs per job.
        self.limits
            .value(format_args!("{field}.payload"), &payload)?;
        self.check_attributes(field, &attributes)?;
        let id = if job_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            validate::name(format_args!("{field}.job_id"), &job_id)?;
            job_id
        };
        if !group.is_empty() {
            validate::name(format_args!("{field}.group"), &group)?;
        }
        let delay =
            validate::duration(format_args!("{field}.delay"), delay.as_ref())?.unwrap_or_default();
        let deliver_at_ms = deliver_at_ms(field, deliver_time, delay)?;
        validate::at_most(format_args!("{field}.priority"), priority, MAX_PRIORITY)?;
        let max_attempts = match max_attempts {
            None => DEFAULT_MAX_ATTEMPTS,
            Some(0) => {
                let at = format!("{field}.max_attempts");
                return Err(Error::invalid(at, "must be at least 1"));
            }
            Some(n) => n,
        };
        let backoff = RetryBackoff::from_spec(field, backoff.unwrap_or_default())?;
        let keep = validate::ttl(
            format_args!("{field}.keep_completed"),
            keep_completed.as_ref(),
        )?;
        let record = JobRecord {
            max_attempts,
            priority,
            group,
            backoff_exponential: u8::from(backoff.exponential),
            backoff_ms: backoff.base_ms,
            backoff_cap_ms: backoff.cap_ms,
            jitter_permille: backoff.jitter_permille,
            keep_completed_ms: keep.map_or(0, millis),
            attributes,
            ..Default::default()
        };
        Ok(NewJob {
            id,
            payload,
            record,
            delay_ms: millis(delay),
            deliver_at_ms,
        })
    }

    /// At most [`MAX_ATTRIBUTES`] attributes (in `{field}.attributes`), each name
    /// a key and each value a value within the limits.
    fn check_attributes(&self, field: &str, attributes: &HashMap<String, String>) -> Result<()> {
        let len = attributes.len();
        validate::at_most_entries(format_args!("{field}.attributes"), len, MAX_ATTRIBUTES)?;
        for (name, value) in attributes {
            let at_name = format_args!("{field}.attributes[{name:?}]");
            self.limits.key(at_name, name)?;
            self.limits.value(at_name, value.as_bytes())?;
        }
        Ok(())
    }

    /// Validates and enqueues one job (group-committed with concurrent ones)
    /// in a `send` span of `producer`, storing its trace context with the job.
    async fn enqueue_one(
        &self,
        scope: &Scope,
        producer: &Producer,
        req: EnqueueRequest,
    ) -> Result<Enqueued> {
        let queue = scope.name("queue", &req.queue)?;
        let mut job = self.new_job("job", req.job.unwrap_or_default())?;
        let send = producer.send(&req.queue, 1, Some(&job.id));
        job.record.set_trace_context(send.context);
        self.batcher.submit(&queue, job).instrument(send.span).await
    }

    /// A page of the jobs of `queue` in `listed` (ListJobs, and ListDead).
    async fn job_page(
        &self,
        scope: &Scope,
        queue: &str,
        listed: State,
        page_size: u32,
        page_token: &str,
    ) -> Result<ListJobsResponse> {
        let queue = scope.name("queue", queue)?;
        let page = Page::of(&self.limits, page_size, page_token)?;
        let (jobs, total, next) = self
            .store
            .list_jobs(&queue, listed, page.after.as_deref(), page.size)
            .await?;
        Ok(ListJobsResponse {
            jobs: jobs.into_iter().map(job_info).collect(),
            total,
            next_page_token: next.as_deref().map(page::token).unwrap_or_default(),
        })
    }

    /// Leases up to `max` jobs, waiting until `until` for the first one.
    async fn take(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        until: Instant,
    ) -> Result<Vec<Leased>> {
        let signal = self.waker.signal(queue);
        loop {
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let found = self.store.dequeue(queue, max, millis(lease)).await?;
            if found.jobs.len() == max {
                // More may be ready than this call can take.
                signal.pass_on();
            }
            if !found.jobs.is_empty() || Instant::now() >= until {
                return Ok(found.jobs);
            }
            if let Some(ms) = found.retry_in_ms {
                signal.wake_at(Instant::now() + Duration::from_millis(ms));
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(until) => {}
                () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
            }
        }
    }
}

fn state(state: State) -> JobState {
    match state {
        State::Waiting => JobState::Waiting,
        State::Delayed => JobState::Delayed,
        State::Active => JobState::Active,
        State::Completed => JobState::Completed,
        State::Dead => JobState::Dead,
    }
}

fn enqueued(e: Enqueued) -> EnqueueResponse {
    EnqueueResponse {
        job_id: e.id,
        created: e.created,
        state: state(e.state) as i32,
    }
}

/// One EnqueueStream reply.
fn enqueue_stream_reply(outcome: Result<Enqueued>) -> EnqueueStreamResponse {
    EnqueueStreamResponse {
        result: Some(match outcome {
            Ok(e) => enqueue_stream_response::Result::Enqueued(enqueued(e)),
            Err(e) => enqueue_stream_response::Result::Failed(producer::failure(e)),
        }),
    }
}

/// A job leased from the queue with qualified name `queue`, as its tenant sees
/// it; `trace` records the hand-over.
fn delivery(queue: &str, job: Leased, trace: &traces::Consumer) -> Delivery {
    let queue = keys::user_name(queue);
    let trace_context = job.record.trace_context();
    trace.received(queue, &job.id, trace_context.as_ref());
    Delivery {
        trace_context,
        queue: queue.to_owned(),
        job_id: job.id,
        payload: job.payload,
        attributes: job.record.attributes,
        attempt: job.record.attempts,
        max_attempts: job.record.max_attempts,
        lease_token: job.record.token,
        lease_expire_time: Some(timestamp(job.record.due_ms)),
        group: job.record.group,
    }
}

fn job_info(job: StoredJob) -> JobInfo {
    let trace_context = job.record.trace_context();
    let r = job.record;
    JobInfo {
        trace_id: trace_context
            .as_ref()
            .map(traces::trace_id)
            .unwrap_or_default(),
        trace_context,
        job_id: job.id,
        state: state(r.state) as i32,
        payload: job.payload,
        attributes: r.attributes,
        attempts: r.attempts,
        max_attempts: r.max_attempts,
        errors: r.errors,
        result: job.result.unwrap_or_default(),
        priority: r.priority,
        group: r.group,
        enqueue_time: Some(timestamp(r.enqueued_ms)),
        due_time: (r.due_ms > 0).then(|| timestamp(r.due_ms)),
    }
}

/// When a job with `deliver_time` (in `{field}.deliver_time`) becomes due, in
/// ms since the epoch (0: now or after `delay`); a time and a delay together
/// are refused.
fn deliver_at_ms(
    field: &str,
    deliver_time: Option<prost_types::Timestamp>,
    delay: Duration,
) -> Result<u64> {
    let field = || format!("{field}.deliver_time");
    match deliver_time {
        None => Ok(0),
        Some(_) if !delay.is_zero() => {
            Err(Error::invalid(field(), "cannot be combined with delay"))
        }
        Some(t) if t.seconds < 0 || t.nanos < 0 => {
            Err(Error::invalid(field(), "must not be before 1970"))
        }
        Some(t) => Ok(u64::try_from(t.seconds).unwrap_or(0) * 1000
            + u64::try_from(t.nanos / 1_000_000).unwrap_or(0)),
    }
}

/// A job's retry backoff as the record stores it.
struct RetryBackoff {
    exponential: bool,
    base_ms: u64,
    /// Never below `base_ms`.
    cap_ms: u64,
    jitter_permille: u32,
}

impl RetryBackoff {
    /// Checks `backoff` (in `{field}.backoff`) and fills in the defaults.
    fn from_spec(field: &str, backoff: Backoff) -> Result<Self> {
        let Backoff {
            exponential,
            delay,
            max_delay,
            jitter,
        } = backoff;
        let base = validate::ttl(format_args!("{field}.backoff.delay"), delay.as_ref())?
            .unwrap_or(DEFAULT_BACKOFF);
        let cap = validate::ttl(
            format_args!("{field}.backoff.max_delay"),
            max_delay.as_ref(),
        )?
        .unwrap_or(DEFAULT_BACKOFF_CAP);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(Error::invalid(
                format!("{field}.backoff.jitter"),
                "must be between 0 and 1",
            ));
        }
        Ok(Self {
            exponential,
            base_ms: millis(base),
            cap_ms: millis(cap.max(base)),
            jitter_permille: (jitter * 1000.0).round() as u32,
        })
    }
}

/// The stream type of Consume: the consumer's outbound channel, unboxed.
pub type ConsumeStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = std::result::Result<ConsumeResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl Queue for QueueService {
    async fn enqueue(
        &self,
        request: Request<EnqueueRequest>,
    ) -> Result<Response<EnqueueResponse>, Status> {
        let scope = Scope::of(&request);
        let producer = Producer::of(&request);
        let outcome = self
            .enqueue_one(&scope, &producer, request.into_inner())
            .await?;
        Ok(Response::new(enqueued(outcome)))
    }

    type EnqueueStreamStream = Replies<EnqueueStreamResponse>;

    async fn enqueue_stream(
        &self,
        request: Request<Streaming<EnqueueStreamRequest>>,
    ) -> Result<Response<Self::EnqueueStreamStream>, Status> {
        let service = self.clone();
        let scope = Scope::of(&request);
        let trace = Producer::of(&request);
        let replies = producer::serve(
            request.into_inner(),
            self.limits.max_batch,
            self.shutdown.clone(),
            move |batch: Vec<EnqueueStreamRequest>| {
                let (service, scope, trace) = (service.clone(), scope.clone(), trace.clone());
                async move {
                    // Polled in order, so jobs for one queue join its lane in order.
                    let outcomes = join_all(batch.into_iter().map(|message| {
                        let EnqueueStreamRequest { queue, job } = message;
                        service.enqueue_one(&scope, &trace, EnqueueRequest { queue, job })
                    }))
                    .await;
                    outcomes.into_iter().map(enqueue_stream_reply).collect()
                }
            },
        );
        Ok(Response::new(replies))
    }

    async fn enqueue_batch(
        &self,
        request: Request<EnqueueBatchRequest>,
    ) -> Result<Response<EnqueueBatchResponse>, Status> {
        let scope = Scope::of(&request);
        let producer = Producer::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?.into_owned();
        self.limits.batch("jobs", &req.jobs)?;
        let send = producer.send(&req.queue, req.jobs.len(), None);
        let jobs = req
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut job = self.new_job(&format!("jobs[{i}]"), spec)?;
                job.record.set_trace_context(send.context.clone());
                Ok(job)
            })
            .collect::<Result<Vec<_>>>()?;
        let result = self
            .batcher
            .commit_detached(queue, jobs)
            .instrument(send.span)
            .await?;
        Ok(Response::new(EnqueueBatchResponse {
            jobs: result.into_iter().map(enqueued).collect(),
        }))
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<Streaming<ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let scope = Scope::of(&request);
        let mut inbound = request.into_inner();
        let subscribe = match inbound.message().await? {
            Some(ConsumeRequest {
                message: Some(consume_request::Message::Subscribe(subscribe)),
            }) => subscribe,
            _ => {
                return Err(
                    Error::invalid("message", "the first message must be subscribe").into(),
                );
            }
        };
        let queue = scope
            .name("subscribe.queue", &subscribe.queue)?
            .into_owned();
        let max_in_flight =
            self.limits
                .count("subscribe.max_in_flight", subscribe.max_in_flight, 1)?;
        let lease = self.lease("subscribe.lease", subscribe.lease.as_ref())?;
        let heartbeat = heartbeat::interval(
            "subscribe.heartbeat_interval",
            subscribe.heartbeat_interval.as_ref(),
            self.heartbeat,
        )?;
        let (tx, rx) = tokio::sync::mpsc::channel(max_in_flight + 16);
        let consumer = consumer::Consumer::new(
            self.store.clone(),
            self.limits,
            self.waker.signal(&queue),
            self.idle.clone(),
            consumer::Subscription {
                queue,
                max_in_flight,
                lease,
                trace: traces::Consumer::current(),
            },
            tx,
            self.shutdown.clone(),
        );
        tokio::spawn(consumer.run(inbound));
        let outbound = tokio_stream::StreamExt::map(ReceiverStream::new(rx), |message| *message);
        Ok(Response::new(Box::pin(heartbeat::every(
            heartbeat,
            outbound,
            || {
                Ok(ConsumeResponse {
                    message: Some(consume_response::Message::Heartbeat(heartbeat::now())),
                })
            },
        ))))
    }

    async fn dequeue(
        &self,
        request: Request<DequeueRequest>,
    ) -> Result<Response<DequeueResponse>, Status> {
        let deadline = deadline::remaining(request.metadata());
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        let max = self.limits.count("max_jobs", req.max_jobs, 1)?;
        let lease = self.lease("lease", req.lease.as_ref())?;
        let wait = validate::duration("wait", req.wait.as_ref())?.unwrap_or_default();
        let until = Instant::now() + deadline::own_wait(wait, deadline);
        let jobs = self.take(&queue, max, lease, until).await?;
        let trace = traces::Consumer::current();
        Ok(Response::new(DequeueResponse {
            jobs: jobs
                .into_iter()
                .map(|job| delivery(&req.queue, job, &trace))
                .collect(),
        }))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        self.limits.batch("items", &req.items)?;
        let items = req
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                settle::ack(&self.limits, format_args!("items[{i}]"), &item)?;
                Ok((item.job_id, item.lease_token, item.result))
            })
            .collect::<Result<Vec<_>>>()?;
        let accepted = self.store.ack(&queue, &items).await?;
        if let ([(id, _, _)], [false]) = (items.as_slice(), accepted.as_slice()) {
            return Err(settle::stale(id).into());
        }
        Ok(Response::new(AckResponse { accepted }))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<NackResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        let item = validate::required("item", req.item)?;
        let retry_after_ms = settle::nack(&self.limits, "item", &item)?;
        let outcome = self
            .store
            .nack(
                &queue,
                &item.job_id,
                &item.lease_token,
                &item.error,
                item.permanent,
                retry_after_ms,
            )
            .await?;
        let (new_state, due) = outcome.ok_or_else(|| settle::stale(&item.job_id))?;
        Ok(Response::new(NackResponse {
            state: state(new_state) as i32,
            retry_time: (due > 0).then(|| timestamp(due)),
        }))
    }

    async fn extend_lease(
        &self,
        request: Request<ExtendLeaseRequest>,
    ) -> Result<Response<ExtendLeaseResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        let item = validate::required("item", req.item)?;
        let lease = settle::extend("item", &item, self.settings.default_lease)?;
        let deadline = self
            .store
            .extend(&queue, &item.job_id, &item.lease_token, millis(lease))
            .await?
            .ok_or_else(|| settle::stale(&item.job_id))?;
        Ok(Response::new(ExtendLeaseResponse {
            lease_expire_time: Some(timestamp(deadline)),
        }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        validate::name("job_id", &req.job_id)?;
        let job = self
            .store
            .get_job(&queue, &req.job_id)
            .await?
            .ok_or_else(|| job_refusal(Reason::JobNotFound, &req.queue, &req.job_id))?;
        Ok(Response::new(GetJobResponse {
            job: Some(job_info(job)),
        }))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let scope = Scope::of(&request);
        let name = request.into_inner().queue;
        let queue = scope.name("queue", &name)?;
        let s = self.store.stats(&queue).await?;
        Ok(Response::new(StatsResponse {
            waiting: s.waiting,
            delayed: s.delayed,
            active: s.active,
            completed: s.completed,
            dead: s.dead,
            paused: s.paused,
            rate_limit_max: s.rate_max,
            rate_limit_window: (s.rate_max > 0)
                .then(|| proto_duration(Duration::from_millis(s.rate_window_ms))),
        }))
    }

    async fn list_dead(
        &self,
        request: Request<ListDeadRequest>,
    ) -> Result<Response<ListDeadResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let page = self
            .job_page(
                &scope,
                &req.queue,
                State::Dead,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(ListDeadResponse {
            jobs: page.jobs,
            total: page.total,
            next_page_token: page.next_page_token,
        }))
    }

    async fn redrive(
        &self,
        request: Request<RedriveRequest>,
    ) -> Result<Response<RedriveResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        validate::at_most_entries("job_ids", req.job_ids.len(), self.limits.max_batch)?;
        for (i, id) in req.job_ids.iter().enumerate() {
            validate::name(format_args!("job_ids[{i}]"), id)?;
        }
        let redriven = self
            .store
            .redrive(&queue, &req.job_ids, self.limits.max_batch)
            .await?;
        Ok(Response::new(RedriveResponse { redriven }))
    }

    async fn purge_dead(
        &self,
        request: Request<PurgeDeadRequest>,
    ) -> Result<Response<PurgeDeadResponse>, Status> {
        let scope = Scope::of(&request);
        let name = request.into_inner().queue;
        let queue = scope.name("queue", &name)?;
        let purged = self.store.purge(&queue, true).await?;
        Ok(Response::new(PurgeDeadResponse { purged }))
    }

    async fn purge(
        &self,
        request: Request<PurgeRequest>,
    ) -> Result<Response<PurgeResponse>, Status> {
        let scope = Scope::of(&request);
        let name = request.into_inner().queue;
        let queue = scope.name("queue", &name)?;
        let purged = self.store.purge(&queue, false).await?;
        Ok(Response::new(PurgeResponse { purged }))
    }

    async fn pause(
        &self,
        request: Request<PauseRequest>,
    ) -> Result<Response<PauseResponse>, Status> {
        let scope = Scope::of(&request);
        let name = request.into_inner().queue;
        let queue = scope.name("queue", &name)?;
        self.store.set_paused(&queue, true).await?;
        Ok(Response::new(PauseResponse {}))
    }

    async fn resume(
        &self,
        request: Request<ResumeRequest>,
    ) -> Result<Response<ResumeResponse>, Status> {
        let scope = Scope::of(&request);
        let name = request.into_inner().queue;
        let queue = scope.name("queue", &name)?;
        self.store.set_paused(&queue, false).await?;
        Ok(Response::new(ResumeResponse {}))
    }

    async fn set_rate_limit(
        &self,
        request: Request<SetRateLimitRequest>,
    ) -> Result<Response<SetRateLimitResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        let window = if req.max > 0 {
            validate::ttl("window", req.window.as_ref())?
                .ok_or_else(|| Error::invalid("window", "is required when max > 0"))?
        } else {
            Duration::ZERO
        };
        self.store
            .set_rate_limit(&queue, req.max, millis(window))
            .await?;
        Ok(Response::new(SetRateLimitResponse {}))
    }

    async fn list_queues(
        &self,
        request: Request<ListQueuesRequest>,
    ) -> Result<Response<ListQueuesResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let page = Page::of(&self.limits, req.page_size, &req.page_token)?;
        let (queues, more) = self
            .store
            .queue_page(
                |qualified| scope.listed(qualified),
                page.after.as_deref(),
                page.size,
            )
            .await?;
        Ok(Response::new(ListQueuesResponse {
            next_page_token: page::next_after(&queues, more),
            queues,
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let listed = job_state("state", req.state)?;
        let page = self
            .job_page(&scope, &req.queue, listed, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(page))
    }

    async fn delete_job(
        &self,
        request: Request<DeleteJobRequest>,
    ) -> Result<Response<DeleteJobResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        validate::name("job_id", &req.job_id)?;
        match self.store.delete_job(&queue, &req.job_id).await? {
            None => Err(job_refusal(Reason::JobNotFound, &req.queue, &req.job_id).into()),
            Some(State::Active) => {
                Err(job_refusal(Reason::JobActive, &req.queue, &req.job_id).into())
            }
            Some(deleted) => Ok(Response::new(DeleteJobResponse {
                state: state(deleted) as i32,
            })),
        }
    }

    async fn get_history(
        &self,
        request: Request<GetHistoryRequest>,
    ) -> Result<Response<GetHistoryResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let queue = scope.name("queue", &req.queue)?;
        let minutes = self.store.history(&queue).await?;
        Ok(Response::new(GetHistoryResponse {
            minutes: minutes
                .into_iter()
                .map(|(minute, counts)| {
                    // In the order of QueueMeta::HISTORY.
                    let [enqueued, started, completed, retried, dead_lettered] = counts;
                    MinuteCounts {
                        start_time: Some(timestamp(minute * 60_000)),
                        enqueued,
                        started,
                        completed,
                        retried,
                        dead_lettered,
                    }
                })
                .collect(),
        }))
    }
}

/// A refusal about job `id` of `queue` (as the caller named it).
fn job_refusal(reason: Reason, queue: &str, id: &str) -> Error {
    let message = match reason {
        Reason::JobActive => format!(
            "job {id:?} of queue {queue:?} is leased to a consumer: nack it, or let its lease run out"
        ),
        _ => format!("queue {queue:?} has no job {id:?}"),
    };
    Error::refused(reason, message)
        .with("queue", queue)
        .with("job_id", id)
}

/// The job state named in `field`, which must be set.
fn job_state(field: &str, value: i32) -> Result<State> {
    match JobState::try_from(value) {
        Ok(JobState::Waiting) => Ok(State::Waiting),
        Ok(JobState::Delayed) => Ok(State::Delayed),
        Ok(JobState::Active) => Ok(State::Active),
        Ok(JobState::Completed) => Ok(State::Completed),
        Ok(JobState::Dead) => Ok(State::Dead),
        Ok(JobState::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, format!("{value} is not a job state"))),
    }
}
