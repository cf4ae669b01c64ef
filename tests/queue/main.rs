//! `redwire.v1.Queue` against a real redis-server, over real gRPC: delivery,
//! leases, retries, dead letters, groups, rate limits, faults, idle consumers,
//! and the operator rpcs (listing by state, deleting a job, the history).

#[path = "../support/mod.rs"]
mod support;

mod enqueue;
mod faults;
mod handoff;
mod input;
mod lifecycle;
mod operator;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use redwire::queue::{JobRecord, NewJob, QueueStore, State, Taker};
use redwire::redis::{Redis, RedisSettings};
use support::{TestContext, assert_invalid, command_calls, eventually, ms};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn to_ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp");
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

fn job(payload: &str) -> JobSpec {
    JobSpec {
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

async fn enqueue(ctx: &TestContext, queue: &str, spec: JobSpec) -> EnqueueResponse {
    ctx.queue()
        .enqueue(EnqueueRequest {
            queue: queue.into(),
            job: Some(spec),
        })
        .await
        .expect("enqueue")
        .into_inner()
}

async fn dequeue(
    ctx: &TestContext,
    queue: &str,
    max: u32,
    wait_ms: u64,
    lease_ms: u64,
) -> Vec<Delivery> {
    ctx.queue()
        .dequeue(DequeueRequest {
            queue: queue.into(),
            max_jobs: max,
            wait: ms(wait_ms),
            lease: ms(lease_ms),
        })
        .await
        .expect("dequeue")
        .into_inner()
        .jobs
}

async fn ack(
    ctx: &TestContext,
    queue: &str,
    d: &Delivery,
    result: &[u8],
) -> Result<AckResponse, tonic::Status> {
    ctx.queue()
        .ack(AckRequest {
            queue: queue.into(),
            items: vec![AckItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                result: result.to_vec(),
            }],
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn stats(ctx: &TestContext, queue: &str) -> StatsResponse {
    ctx.queue()
        .stats(StatsRequest {
            queue: queue.into(),
        })
        .await
        .expect("stats")
        .into_inner()
}

/// The server time a delivery started: its lease deadline minus its lease.
fn started_ms(d: &Delivery, lease_ms: u64) -> i64 {
    to_ms(&d.lease_expire_time) - i64::try_from(lease_ms).expect("lease")
}

/// What a Consume stream sends besides heartbeats.
#[derive(Debug)]
enum Received {
    Delivery(Delivery),
    Outcome(Outcome),
}

/// A Consume stream: send requests with `tx`, read responses from `rx`.
struct Stream {
    tx: mpsc::Sender<ConsumeRequest>,
    rx: tonic::Streaming<ConsumeResponse>,
}

impl Stream {
    async fn open(ctx: &TestContext, queue: &str, max_in_flight: u32, lease_ms: u64) -> Self {
        let (tx, requests) = mpsc::channel(64);
        tx.send(ConsumeRequest {
            message: Some(consume_request::Message::Subscribe(Subscribe {
                queue: queue.into(),
                max_in_flight,
                lease: ms(lease_ms),
                heartbeat_interval: None,
            })),
        })
        .await
        .expect("subscribe");
        let rx = ctx
            .queue()
            .consume(ReceiverStream::new(requests))
            .await
            .expect("consume")
            .into_inner();
        Self { tx, rx }
    }

    /// The next delivery or outcome, heartbeats skipped.
    async fn next(&mut self) -> Received {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.rx.next())
                .await
                .expect("a message within 10s")
                .expect("stream open")
                .expect("not an error");
            match message.message.expect("message set") {
                consume_response::Message::Delivery(d) => return Received::Delivery(d),
                consume_response::Message::Outcome(o) => return Received::Outcome(o),
                consume_response::Message::Heartbeat(_) => {}
            }
        }
    }

    async fn delivery(&mut self) -> Delivery {
        match self.next().await {
            Received::Delivery(d) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    async fn outcome(&mut self) -> Outcome {
        match self.next().await {
            Received::Outcome(o) => o,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    async fn send(&self, message: consume_request::Message) {
        self.tx
            .send(ConsumeRequest {
                message: Some(message),
            })
            .await
            .expect("send on the stream");
    }

    async fn ack(&self, d: &Delivery) {
        self.send(consume_request::Message::Ack(AckItem {
            job_id: d.job_id.clone(),
            lease_token: d.lease_token.clone(),
            result: Vec::new(),
        }))
        .await;
    }
}

fn to_ms_duration(d: &Option<PbDuration>) -> i64 {
    let d = d.as_ref().expect("duration");
    d.seconds * 1000 + i64::from(d.nanos / 1_000_000)
}

use enqueue::*;
use handoff::*;
use lifecycle::*;
use operator::*;

crate::core_checks!(
    enqueue_consume_ack,
    delay_and_priority,
    lease_expiry_redelivers_once,
    dropped_stream_gives_jobs_back,
    extend_lease_keeps_a_job,
    failing_handler_dead_letters_once,
    exponential_backoff_grows,
    concurrent_duplicate_ids_make_one_job,
    an_id_repeated_in_one_call_counts_once,
    a_full_size_batch_goes_through_whole,
    concurrent_enqueues_each_get_their_own_outcome,
    enqueue_stream_replies_in_order,
    one_wake_up_serves_several_small_consumers,
    hand_offs_respect_credits,
    a_cancelled_enqueue_batch_still_hands_off,
    ordering_groups,
    pause_resume_and_rate_limit,
    list_jobs_pages_through_each_state,
    delete_job_takes_out_one_job_no_consumer_holds,
    history_counts_each_minute_in_redis,
);

/// Every core check of this file passes on a real 3-master cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_checks_pass_on_a_three_master_cluster() {
    let ctx = TestContext::cluster().await;
    run_core_checks_on(&ctx).await;
    let queues = ctx
        .queue()
        .list_queues(ListQueuesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .queues;
    assert!(
        queues.contains(&"core-flow".to_owned()) && queues.contains(&"groups".to_owned()),
        "{queues:?}"
    );
}
