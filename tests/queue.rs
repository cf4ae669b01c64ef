//! `redwire.v1.Queue` against a real redis-server, over real gRPC: delivery,
//! leases, retries, dead letters, groups, rate limits, faults, idle consumers.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use redwire::queue::{JobRecord, NewJob, QueueStore, State, Taker};
use redwire::redis::{Redis, RedisSettings};
use support::{TestContext, command_calls, eventually};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// How long the crash test's clients back off before retrying a failed call, as a
/// real client would (this is client behaviour, not a wait for a condition).
const CLIENT_RETRY_BACKOFF: Duration = Duration::from_millis(50);

fn ms(millis: u64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: i64::try_from(millis / 1000).expect("secs"),
        nanos: i32::try_from((millis % 1000) * 1_000_000).expect("nanos"),
    })
}

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

// ---------------------------------------------------------------- hand-off

/// Jobs enqueued at once while a consumer has 2 credits: it gets 2, the rest waits
/// for an ack (hand-offs, like dequeues, never go past a consumer's credits).
async fn hand_offs_respect_credits(ctx: &TestContext) {
    let q = "handoff-credits";
    let mut consumer = Stream::open(ctx, q, 2, 30_000).await;
    futures::future::join_all((0..5).map(|i| enqueue(ctx, q, job(&format!("c{i}"))))).await;
    let first = consumer.delivery().await;
    consumer.delivery().await;
    let s = stats(ctx, q).await;
    assert_eq!((s.active, s.waiting), (2, 3), "{s:?}");
    consumer.ack(&first).await;
    assert!(consumer.outcome().await.ok);
    consumer.delivery().await;
    let s = stats(ctx, q).await;
    assert_eq!((s.active, s.waiting), (2, 2), "{s:?}");
}

/// An EnqueueBatch whose caller gives up while its script call runs still settles
/// the hand-off it claimed: the waiting consumer gets a job (its credit does not
/// stay reserved for a call that was dropped).
async fn a_cancelled_enqueue_batch_still_hands_off(ctx: &TestContext) {
    let q = "handoff-cancel";
    let mut consumer = Stream::open(ctx, q, 1, 30_000).await;
    // One round trip first, so the consumer is waiting with its credit on offer.
    enqueue(ctx, q, job("first")).await;
    let first = consumer.delivery().await;
    consumer.ack(&first).await;
    assert!(consumer.outcome().await.ok);
    // A thousand jobs take Redis far longer than the 5 ms deadline. On a busy
    // machine the deadline can pass before the server even starts the batch, and
    // then nothing is written; try again until a cancelled batch was written.
    let mut round = 0;
    support::eventually(
        Duration::from_secs(30),
        "a cancelled batch that was written",
        || {
            round += 1;
            let batch = round;
            async move {
                let jobs: Vec<JobSpec> = (0..1000).map(|i| job(&format!("b{batch}-{i}"))).collect();
                let mut request = tonic::Request::new(EnqueueBatchRequest {
                    queue: q.into(),
                    jobs,
                });
                request.set_timeout(Duration::from_millis(5));
                let cancelled = ctx
                    .queue()
                    .enqueue_batch(request)
                    .await
                    .expect_err("the deadline ends the call first");
                assert!(
                    matches!(cancelled.code(), Code::DeadlineExceeded | Code::Cancelled),
                    "{cancelled:?}"
                );
                // A batch is one script call: it is in Redis whole, or not at all.
                support::within(Duration::from_secs(2), || async {
                    let s = stats(ctx, q).await;
                    (s.waiting + s.active > 0).then_some(())
                })
                .await
            }
        },
    )
    .await;
    let d = consumer.delivery().await;
    assert!(d.payload.starts_with(b"b"), "{d:?}");
}

/// A job enqueued while a consumer of its queue waits in the same process is
/// leased by the enqueue's own script call: no dequeue script runs at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_gets_new_jobs_without_a_dequeue() {
    let ctx = TestContext::standalone().await;
    let q = "handoff";
    let mut conn = ctx.redis_connection(&format!("rw:q:{{{q}}}:jobs"));
    // A queue script's sha, as Redwire loads it. Loaded here first: a script's
    // first call otherwise logs a failed EVALSHA (NOSCRIPT) before redis-rs loads
    // it and calls again.
    let mut load = |operation: &str| {
        let code = redwire::queue::script_source(operation);
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(code)
            .query(&mut conn)
            .expect("script load");
        sha.into_bytes()
    };
    let enqueue_sha = load(include_str!("../src/queue/enqueue.lua"));
    let dequeue_sha = load(include_str!("../src/queue/dequeue.lua"));
    let ack_sha = load(include_str!("../src/queue/ack.lua"));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .query(&mut conn)
        .expect("log every command");
    let mut consumer = Stream::open(&ctx, q, 4, 30_000).await;
    // The consumer offers its credits once it has found the queue empty; until then
    // an enqueue wakes it to dequeue. Try until one round trip shows the hand-off.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    loop {
        round += 1;
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query(&mut conn)
            .expect("reset");
        let payload = format!("job {round}");
        enqueue(&ctx, q, job(&payload)).await;
        let d = consumer.delivery().await;
        assert_eq!(d.payload, payload.as_bytes());
        assert_eq!(d.attempt, 1);
        consumer.ack(&d).await;
        assert!(consumer.outcome().await.ok);
        type Entry = (i64, i64, i64, Vec<Vec<u8>>, String, String);
        let log: Vec<Entry> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query(&mut conn)
            .expect("slowlog");
        // Script calls by script (the background reaper's calls may come too).
        let calls = |script: &Vec<u8>| {
            log.iter()
                .filter(|(_, _, _, args, _, _)| args.get(1) == Some(script))
                .count()
        };
        if calls(&dequeue_sha) == 0 {
            // One enqueue and one ack: two script calls for the whole job.
            assert_eq!(
                (calls(&enqueue_sha), calls(&ack_sha)),
                (1, 1),
                "round {round}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every job still needed a dequeue after {round} rounds"
        );
    }
}

/// Redwire's queue store on the test's Redis: which script call leased a job is
/// not visible over gRPC.
fn direct_store(ctx: &mut TestContext) -> QueueStore {
    let settings = RedisSettings {
        blocking_pool_size: 1,
        command_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        tls: Default::default(),
        durable_replicas: 0,
    };
    let redis = Redis::standalone(&ctx.redis().url(), settings).expect("redis");
    QueueStore::new(Arc::new(redis))
}

fn new_job(payload: &str) -> NewJob {
    NewJob {
        id: format!("id-{payload}"),
        payload: payload.as_bytes().to_vec(),
        record: JobRecord {
            max_attempts: 3,
            ..Default::default()
        },
        delay_ms: 0,
        deliver_at_ms: 0,
    }
}

/// An enqueue that hands off leases in queue order (an older job of higher
/// priority first), each taker's jobs with its own lease; a job whose taker left
/// goes back to its place with no attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_hands_jobs_to_takers_in_queue_order() {
    let mut ctx = TestContext::standalone().await;
    let store = direct_store(&mut ctx);
    let q = "handoff-order";
    enqueue(
        &ctx,
        q,
        JobSpec {
            priority: 5,
            ..job("old")
        },
    )
    .await;
    let jobs = ["new1", "new2", "new3"].map(new_job);
    let takers = [
        Taker {
            most: 2,
            lease_ms: 10_000,
        },
        Taker {
            most: 1,
            lease_ms: 20_000,
        },
    ];
    let (enqueued, handed) = store
        .enqueue_handing_off(q, &jobs, &takers)
        .await
        .expect("enqueue");
    assert!(enqueued.iter().all(|e| e.created), "{enqueued:?}");
    let states: Vec<State> = enqueued.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [State::Active, State::Active, State::Waiting],
        "states after the call"
    );
    let order: Vec<&[u8]> = handed.jobs.iter().map(|j| j.payload.as_slice()).collect();
    assert_eq!(order, [b"old" as &[u8], b"new1", b"new2"]);
    let due: Vec<u64> = handed.jobs.iter().map(|j| j.record.due_ms).collect();
    assert_eq!(due[0], due[1], "the first taker's two jobs");
    assert_eq!(due[2] - due[1], 10_000, "the second taker's longer lease");
    for j in &handed.jobs {
        assert_eq!((j.record.state, j.record.attempts), (State::Active, 1));
    }
    let s = stats(&ctx, q).await;
    assert_eq!((s.active, s.waiting), (3, 1), "{s:?}");

    let lost = &handed.jobs[2];
    assert!(
        store
            .release_undelivered(q, &lost.id, &lost.record.token)
            .await
            .expect("release")
    );
    assert!(
        !store
            .release_undelivered(q, &lost.id, &lost.record.token)
            .await
            .expect("release again"),
        "a released lease is stale"
    );
    let next = dequeue(&ctx, q, 2, 0, 30_000).await;
    let order: Vec<&[u8]> = next.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(order, [b"new2" as &[u8], b"new3"], "new2 kept its place");
    assert_eq!(next[0].attempt, 1, "the undelivered lease was not counted");
}

/// A paused queue hands nothing off: the jobs wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_hands_nothing_off() {
    let mut ctx = TestContext::standalone().await;
    let store = direct_store(&mut ctx);
    let q = "handoff-paused";
    ctx.queue()
        .pause(PauseRequest { queue: q.into() })
        .await
        .expect("pause");
    let taker = Taker {
        most: 5,
        lease_ms: 10_000,
    };
    let (_, handed) = store
        .enqueue_handing_off(q, &[new_job("p")], &[taker])
        .await
        .expect("enqueue");
    assert!(handed.jobs.is_empty(), "{handed:?}");
    let s = stats(&ctx, q).await;
    assert_eq!((s.active, s.waiting), (0, 1), "{s:?}");
}

// ---------------------------------------------------------------- core checks

async fn enqueue_consume_ack(ctx: &TestContext) {
    let q = "core-flow";
    let created = enqueue(
        ctx,
        q,
        JobSpec {
            keep_completed: ms(60_000),
            attributes: [("kind".to_owned(), "welcome".to_owned())].into(),
            ..job("hello")
        },
    )
    .await;
    assert!(created.created);
    assert_eq!(created.state, JobState::Waiting as i32);
    let batch = ctx
        .queue()
        .enqueue_batch(EnqueueBatchRequest {
            queue: q.into(),
            jobs: (0..49).map(|i| job(&format!("push-{i}"))).collect(),
        })
        .await
        .expect("batch")
        .into_inner()
        .jobs;
    assert_eq!(batch.len(), 49);
    assert!(batch.iter().all(|j| j.created));

    let mut consumer = Stream::open(ctx, q, 10, 30_000).await;
    let first = consumer.delivery().await;
    assert_eq!(
        (
            first.job_id.as_str(),
            first.payload.as_slice(),
            first.attempt
        ),
        (created.job_id.as_str(), &b"hello"[..], 1)
    );
    assert_eq!(first.attributes["kind"], "welcome");
    consumer
        .send(consume_request::Message::Ack(AckItem {
            job_id: first.job_id.clone(),
            lease_token: first.lease_token.clone(),
            result: b"sent".to_vec(),
        }))
        .await;
    let mut seen = HashSet::from([first.job_id.clone()]);
    let mut accepted_acks = 0;
    while accepted_acks < 50 {
        match consumer.next().await {
            Received::Delivery(d) => {
                assert!(seen.insert(d.job_id.clone()), "delivered once");
                consumer.ack(&d).await;
            }
            Received::Outcome(o) => {
                assert!(o.ok && o.action == "ack", "{o:?}");
                accepted_acks += 1;
            }
        }
    }
    assert_eq!(seen.len(), 50);
    let job = ctx
        .queue()
        .get_job(GetJobRequest {
            queue: q.into(),
            job_id: created.job_id.clone(),
        })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(job.state, JobState::Completed as i32);
    assert_eq!((job.result.as_slice(), job.attempts), (&b"sent"[..], 1));
    eventually(Duration::from_secs(5), "all 50 completed", || async {
        let s = stats(ctx, q).await;
        (s.waiting == 0 && s.active == 0).then_some(())
    })
    .await;
    let missing = ctx
        .queue()
        .get_job(GetJobRequest {
            queue: q.into(),
            job_id: batch[0].job_id.clone(),
        })
        .await
        .expect_err("completed jobs without keep_completed are removed");
    assert_eq!(missing.code(), Code::NotFound);
}

async fn delay_and_priority(ctx: &TestContext) {
    let q = "timing";
    let delayed = enqueue(
        ctx,
        q,
        JobSpec {
            delay: ms(400),
            ..job("later")
        },
    )
    .await;
    assert_eq!(delayed.state, JobState::Delayed as i32);
    let info = ctx
        .queue()
        .get_job(GetJobRequest {
            queue: q.into(),
            job_id: delayed.job_id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .job
        .expect("job");
    let due = to_ms(&info.due_time);
    assert_eq!(due - to_ms(&info.enqueue_time), 400);

    for (payload, priority) in [("low", 1), ("high", 9), ("mid", 5), ("high-2", 9)] {
        enqueue(
            ctx,
            q,
            JobSpec {
                priority,
                ..job(payload)
            },
        )
        .await;
    }
    let order: Vec<Vec<u8>> = dequeue(ctx, q, 4, 0, 30_000)
        .await
        .into_iter()
        .map(|d| d.payload)
        .collect();
    assert_eq!(
        order,
        vec![
            b"high".to_vec(),
            b"high-2".to_vec(),
            b"mid".to_vec(),
            b"low".to_vec()
        ]
    );

    // The delayed job comes once its time has come, not before.
    let got = dequeue(ctx, q, 1, 5_000, 30_000).await;
    assert_eq!(got.len(), 1, "delivered soon after its delay");
    assert_eq!(got[0].job_id, delayed.job_id);
    assert!(
        started_ms(&got[0], 30_000) >= due,
        "not delivered before its time"
    );
}

async fn lease_expiry_redelivers_once(ctx: &TestContext) {
    let q = "leases";
    enqueue(
        ctx,
        q,
        JobSpec {
            max_attempts: Some(5),
            backoff: Some(Backoff {
                delay: ms(1),
                ..Default::default()
            }),
            ..job("slow")
        },
    )
    .await;
    let first = dequeue(ctx, q, 1, 0, 100)
        .await
        .pop()
        .expect("first delivery");
    assert_eq!(first.attempt, 1);
    // The worker "pauses" past its lease; the job comes back with attempt 2.
    let second = dequeue(ctx, q, 1, 5_000, 30_000)
        .await
        .pop()
        .expect("redelivered");
    assert_eq!(
        (second.job_id.as_str(), second.attempt),
        (first.job_id.as_str(), 2)
    );
    let stale = ack(ctx, q, &first, b"")
        .await
        .expect_err("the old worker's ack is refused");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(stale.message().contains("lease"), "{stale:?}");
    assert!(
        dequeue(ctx, q, 1, 0, 30_000).await.is_empty(),
        "redelivered exactly once"
    );
    ack(ctx, q, &second, b"")
        .await
        .expect("the current holder completes it");
    let again = ack(ctx, q, &second, b"").await.expect_err("completed once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let s = stats(ctx, q).await;
    assert_eq!((s.waiting, s.active, s.dead), (0, 0, 0));
}

async fn dropped_stream_gives_jobs_back(ctx: &TestContext) {
    let q = "dropped";
    for i in 0..5 {
        enqueue(ctx, q, job(&format!("j{i}"))).await;
    }
    let mut consumer = Stream::open(ctx, q, 5, 60_000).await;
    let mut held = HashSet::new();
    for _ in 0..5 {
        held.insert(consumer.delivery().await.job_id);
    }
    drop(consumer);
    // The 60 s lease is far away: getting them back now proves the hand-back.
    let mut back = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.len() < 5 && Instant::now() < deadline {
        for d in dequeue(ctx, q, 5, 200, 60_000).await {
            assert_eq!(d.attempt, 2);
            back.insert(d.job_id);
        }
    }
    assert_eq!(back, held, "none lost");
}

async fn extend_lease_keeps_a_job(ctx: &TestContext) {
    let q = "extend";
    enqueue(ctx, q, job("long")).await;
    // A lease long enough that a loaded test machine's stall between two extends
    // does not outlast it (200 ms did, once), short enough to be extended 5 times.
    let mut consumer = Stream::open(ctx, q, 1, 600).await;
    let d = consumer.delivery().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        consumer
            .send(consume_request::Message::Extend(ExtendItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                lease: None,
            }))
            .await;
        let outcome = consumer.outcome().await;
        assert!(outcome.ok && outcome.action == "extend", "{outcome:?}");
        assert!(
            dequeue(ctx, q, 1, 50, 30_000).await.is_empty(),
            "not redelivered while extended"
        );
    }
    consumer.ack(&d).await;
    assert!(consumer.outcome().await.ok, "acked after 5x its lease");
    let unary = ctx
        .queue()
        .extend_lease(ExtendLeaseRequest {
            queue: q.into(),
            item: Some(ExtendItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                lease: None,
            }),
        })
        .await
        .expect_err("no lease to extend after ack");
    assert_eq!(unary.code(), Code::FailedPrecondition);
}

async fn failing_handler_dead_letters_once(ctx: &TestContext) {
    let q = "mail";
    let backoff = Backoff {
        delay: ms(150),
        ..Default::default()
    };
    let id = enqueue(
        ctx,
        q,
        JobSpec {
            max_attempts: Some(3),
            backoff: Some(backoff),
            ..job("to: ada")
        },
    )
    .await
    .job_id;
    let mut starts = Vec::new();
    for attempt in 1..=3 {
        let d = dequeue(ctx, q, 1, 5_000, 30_000)
            .await
            .pop()
            .expect("a delivery");
        assert_eq!((d.job_id.as_str(), d.attempt), (id.as_str(), attempt));
        starts.push(started_ms(&d, 30_000));
        let reply = ctx
            .queue()
            .nack(NackRequest {
                queue: q.into(),
                item: Some(NackItem {
                    job_id: d.job_id.clone(),
                    lease_token: d.lease_token.clone(),
                    error: format!("smtp 451 try {attempt}"),
                    ..Default::default()
                }),
            })
            .await
            .expect("nack")
            .into_inner();
        let expected = if attempt < 3 {
            JobState::Delayed
        } else {
            JobState::Dead
        };
        assert_eq!(reply.state, expected as i32);
    }
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= 150),
        "retries spaced by the backoff: {starts:?}"
    );
    assert!(
        dequeue(ctx, q, 1, 300, 30_000).await.is_empty(),
        "exactly max_attempts deliveries"
    );
    let dead = ctx
        .queue()
        .list_dead(ListDeadRequest {
            queue: q.into(),
            ..Default::default()
        })
        .await
        .expect("list dead")
        .into_inner();
    assert_eq!(dead.total, 1);
    assert_eq!(dead.jobs[0].job_id, id);
    assert_eq!(
        dead.jobs[0].errors.last().map(String::as_str),
        Some("smtp 451 try 3")
    );
    assert_eq!(dead.jobs[0].errors.len(), 3);

    let redriven = ctx
        .queue()
        .redrive(RedriveRequest {
            queue: q.into(),
            job_ids: vec![],
        })
        .await
        .expect("redrive")
        .into_inner()
        .redriven;
    assert_eq!(redriven, 1);
    let back = dequeue(ctx, q, 1, 1_000, 30_000)
        .await
        .pop()
        .expect("redriven job");
    assert_eq!((back.job_id.as_str(), back.attempt), (id.as_str(), 1));
    ack(ctx, q, &back, b"").await.expect("ack");
    assert_eq!(stats(ctx, q).await.dead, 0);
}

async fn exponential_backoff_grows(ctx: &TestContext) {
    let q = "expo";
    enqueue(
        ctx,
        q,
        JobSpec {
            max_attempts: Some(4),
            backoff: Some(Backoff {
                exponential: true,
                delay: ms(50),
                max_delay: ms(150),
                jitter: 0.0,
            }),
            ..job("x")
        },
    )
    .await;
    let mut dues = Vec::new();
    for _ in 0..3 {
        let d = dequeue(ctx, q, 1, 5_000, 30_000)
            .await
            .pop()
            .expect("delivery");
        let reply = ctx
            .queue()
            .nack(NackRequest {
                queue: q.into(),
                item: Some(NackItem {
                    job_id: d.job_id.clone(),
                    lease_token: d.lease_token.clone(),
                    error: "no".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("nack")
            .into_inner();
        dues.push(to_ms(&reply.retry_time) - started_ms(&d, 30_000));
    }
    // 50, 100, then capped at 150 (plus the few ms between start and nack).
    let expected = [50, 100, 150];
    for (got, want) in dues.iter().zip(expected) {
        assert!(
            *got >= want && *got < want + 40,
            "retry delays {dues:?} vs {expected:?}"
        );
    }
}

async fn concurrent_duplicate_ids_make_one_job(ctx: &TestContext) {
    let q = "idem";
    let attempts = (0..20).map(|i| {
        let mut client = ctx.queue();
        async move {
            client
                .enqueue(EnqueueRequest {
                    queue: q.into(),
                    job: Some(JobSpec {
                        job_id: "reservation-42".into(),
                        ..job(&format!("attempt {i}"))
                    }),
                })
                .await
                .expect("enqueue")
                .into_inner()
        }
    });
    let replies = futures::future::join_all(attempts).await;
    assert_eq!(replies.iter().filter(|r| r.created).count(), 1);
    assert!(replies.iter().all(|r| r.job_id == "reservation-42"));
    assert_eq!(stats(ctx, q).await.waiting, 1);
}

/// The scripts read and write a whole batch with one command per hash or set, so a
/// job id repeated inside one call must still count once, as it would one by one.
async fn an_id_repeated_in_one_call_counts_once(ctx: &TestContext) {
    let q = "repeat";
    let same = |payload: &str| JobSpec {
        job_id: "twice".into(),
        ..job(payload)
    };
    let replies = ctx
        .queue()
        .enqueue_batch(EnqueueBatchRequest {
            queue: q.into(),
            jobs: vec![same("first"), job("other"), same("second")],
        })
        .await
        .expect("batch")
        .into_inner()
        .jobs;
    let created: Vec<bool> = replies.iter().map(|r| r.created).collect();
    assert_eq!(created, [true, true, false]);
    assert_eq!(replies[2].state, JobState::Waiting as i32);
    assert_eq!(stats(ctx, q).await.waiting, 2);

    let leased = dequeue(ctx, q, 10, 0, 30_000).await;
    assert_eq!(leased.len(), 2, "the repeated id is one job");
    let first = leased.iter().find(|d| d.job_id == "twice").expect("twice");
    assert_eq!(first.payload, b"first", "the first of the repeats wins");
    let item = |d: &Delivery| AckItem {
        job_id: d.job_id.clone(),
        lease_token: d.lease_token.clone(),
        result: Vec::new(),
    };
    let accepted = ctx
        .queue()
        .ack(AckRequest {
            queue: q.into(),
            items: vec![item(first), item(first), item(&leased[0]), item(&leased[1])],
        })
        .await
        .expect("ack")
        .into_inner()
        .accepted;
    let twice_first = leased[0].job_id == "twice";
    // Each job's first ack is accepted; every repeat finds it already finished.
    assert_eq!(accepted, [true, false, !twice_first, twice_first]);
    let s = stats(ctx, q).await;
    assert_eq!((s.waiting, s.active), (0, 0));
}

/// A batch of the largest allowed size is more values than one variadic command
/// carries in the scripts (they split at 1,000), and must still land whole.
async fn a_full_size_batch_goes_through_whole(ctx: &TestContext) {
    let q = "full-batch";
    let n = 1000;
    let replies = ctx
        .queue()
        .enqueue_batch(EnqueueBatchRequest {
            queue: q.into(),
            jobs: (0..n).map(|i| job(&format!("job {i}"))).collect(),
        })
        .await
        .expect("batch")
        .into_inner()
        .jobs;
    assert!(replies.len() == n && replies.iter().all(|r| r.created));
    let leased = dequeue(ctx, q, 1000, 0, 30_000).await;
    assert_eq!(leased.len(), n);
    let payloads: HashSet<&[u8]> = leased.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(
        payloads.len(),
        n,
        "every job delivered once, with its own payload"
    );
    assert_eq!(stats(ctx, q).await.active, 1000);
    let accepted = ctx
        .queue()
        .ack(AckRequest {
            queue: q.into(),
            items: leased
                .iter()
                .map(|d| AckItem {
                    job_id: d.job_id.clone(),
                    lease_token: d.lease_token.clone(),
                    result: Vec::new(),
                })
                .collect(),
        })
        .await
        .expect("ack")
        .into_inner()
        .accepted;
    assert!(accepted.len() == n && accepted.iter().all(|a| *a));
    let s = stats(ctx, q).await;
    assert_eq!((s.waiting, s.active), (0, 0));
}

/// Concurrent single enqueues share script calls (group commit); each caller
/// still gets the outcome of its own job.
async fn concurrent_enqueues_each_get_their_own_outcome(ctx: &TestContext) {
    let q = "burst";
    let calls = (0..100).map(|i| {
        let mut client = ctx.queue();
        async move {
            let payload = format!("job {i}");
            let reply = client
                .enqueue(EnqueueRequest {
                    queue: q.into(),
                    job: Some(job(&payload)),
                })
                .await
                .expect("enqueue")
                .into_inner();
            (reply, payload)
        }
    });
    let replies = futures::future::join_all(calls).await;
    assert!(replies.iter().all(|(r, _)| r.created));
    let sent: HashMap<String, String> = replies
        .into_iter()
        .map(|(r, payload)| (r.job_id, payload))
        .collect();
    assert_eq!(sent.len(), 100, "every caller got its own job id");
    let delivered = dequeue(ctx, q, 100, 0, 30_000).await;
    assert_eq!(delivered.len(), 100);
    for d in &delivered {
        let payload = String::from_utf8(d.payload.clone()).expect("utf-8");
        assert_eq!(sent.get(&d.job_id), Some(&payload), "job {}", d.job_id);
    }
}

/// Jobs sent on EnqueueStream without waiting get one reply each, in order; a bad
/// job gets its own failure naming the field and the stream goes on; the jobs of
/// each queue are delivered in the order sent.
async fn enqueue_stream_replies_in_order(ctx: &TestContext) {
    let queues = ["produce-a", "produce-b"];
    let (tx, rx) = mpsc::channel(64);
    let mut replies = ctx
        .queue()
        .enqueue_stream(ReceiverStream::new(rx))
        .await
        .expect("enqueue stream")
        .into_inner();
    let mut sent = Vec::new();
    for i in 0..40 {
        let queue = queues[i % 2];
        let mut spec = job(&format!("job {i}"));
        let mut queue = queue.to_owned();
        match i {
            10 => queue = "not a queue name".into(),
            21 => spec.priority = 5_000,
            30 | 32 => spec.job_id = "same-id".into(),
            _ => {}
        }
        sent.push((queue.clone(), spec.payload.clone()));
        tx.send(EnqueueStreamRequest {
            queue,
            job: Some(spec),
        })
        .await
        .expect("send");
    }
    drop(tx);
    let mut outcomes = Vec::new();
    while let Some(reply) = replies.message().await.expect("reply stream") {
        outcomes.push(reply.result.expect("a result"));
    }
    assert_eq!(outcomes.len(), 40, "one reply per job, then the end");
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (10, enqueue_stream_response::Result::Failed(f)) => {
                assert_eq!(f.code, Code::InvalidArgument as i32);
                assert!(f.message.contains("queue"), "{f:?}");
            }
            (21, enqueue_stream_response::Result::Failed(f)) => {
                assert_eq!(f.code, Code::InvalidArgument as i32);
                assert!(f.message.contains("job.priority"), "{f:?}");
            }
            (32, enqueue_stream_response::Result::Enqueued(e)) => {
                assert!(!e.created, "the second job with one id is the first one");
                assert_eq!(e.job_id, "same-id");
            }
            (10 | 21, other) => panic!("job {i}: expected a failure, got {other:?}"),
            (_, enqueue_stream_response::Result::Enqueued(e)) => assert!(e.created, "job {i}"),
            (_, other) => panic!("job {i}: expected enqueued, got {other:?}"),
        }
    }
    for queue in queues {
        let expected: Vec<Vec<u8>> = sent
            .iter()
            .enumerate()
            .filter(|(i, (q, _))| q == queue && ![21, 32].contains(i))
            .map(|(_, (_, payload))| payload.clone())
            .collect();
        let delivered: Vec<Vec<u8>> = dequeue(ctx, queue, 100, 0, 30_000)
            .await
            .into_iter()
            .map(|d| d.payload)
            .collect();
        assert_eq!(
            delivered, expected,
            "queue {queue}: every job once, in order"
        );
    }
}

/// One wake-up for several jobs reaches as many one-credit consumers as needed:
/// each consumer that fills up passes the wake-up on.
async fn one_wake_up_serves_several_small_consumers(ctx: &TestContext) {
    let q = "baton";
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Stream::open(ctx, q, 1, 30_000).await);
    }
    ctx.queue()
        .enqueue_batch(EnqueueBatchRequest {
            queue: q.into(),
            jobs: vec![job("a"), job("b"), job("c")],
        })
        .await
        .expect("enqueue batch");
    let mut payloads = HashSet::new();
    for stream in &mut streams {
        match stream.next().await {
            Received::Delivery(d) => {
                payloads.insert(d.payload);
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    assert_eq!(payloads.len(), 3, "each consumer got a different job");
}

async fn ordering_groups(ctx: &TestContext) {
    let q = "groups";
    let jobs: Vec<(&str, &str)> = vec![
        ("a", "a1"),
        ("a", "a2"),
        ("b", "b1"),
        ("a", "a3"),
        ("", "free1"),
        ("b", "b2"),
        ("", "free2"),
    ];
    for (group, payload) in &jobs {
        enqueue(
            ctx,
            q,
            JobSpec {
                group: (*group).into(),
                ..job(payload)
            },
        )
        .await;
    }
    let mut consumer = Stream::open(ctx, q, 10, 30_000).await;
    let mut in_flight: HashMap<String, Delivery> = HashMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut done = 0;
    // First round: only the head of each group plus the free jobs.
    for _ in 0..4 {
        let d = consumer.delivery().await;
        in_flight.insert(d.job_id.clone(), d);
    }
    let groups: Vec<&str> = in_flight
        .values()
        .map(|d| d.group.as_str())
        .filter(|g| !g.is_empty())
        .collect();
    assert_eq!(groups.len(), 2, "one job per group in flight: {groups:?}");
    while done < jobs.len() {
        // With nothing in flight, read until the next delivery arrives.
        while in_flight.is_empty() {
            match consumer.next().await {
                Received::Outcome(o) => assert!(o.ok, "{o:?}"),
                Received::Delivery(d) => {
                    in_flight.insert(d.job_id.clone(), d);
                }
            }
        }
        // Ack any job in flight; the next of its group may follow only after that.
        let next = in_flight
            .keys()
            .next()
            .cloned()
            .expect("something in flight");
        let d = in_flight.remove(&next).expect("held");
        let payload = String::from_utf8(d.payload.clone()).expect("utf8");
        order.entry(d.group.clone()).or_default().push(payload);
        consumer.ack(&d).await;
        done += 1;
        // Take whatever else arrives until the ack is confirmed.
        loop {
            match consumer.next().await {
                Received::Outcome(o) => {
                    assert!(o.ok, "{o:?}");
                    break;
                }
                Received::Delivery(d) => {
                    assert!(
                        d.group.is_empty() || in_flight.values().all(|h| h.group != d.group),
                        "two jobs of group {} in flight",
                        d.group
                    );
                    in_flight.insert(d.job_id.clone(), d);
                }
            }
        }
    }
    assert_eq!(order["a"], vec!["a1", "a2", "a3"], "FIFO within group a");
    assert_eq!(order["b"], vec!["b1", "b2"], "FIFO within group b");
}

async fn pause_resume_and_rate_limit(ctx: &TestContext) {
    let q = "limited";
    ctx.queue()
        .pause(PauseRequest { queue: q.into() })
        .await
        .expect("pause");
    enqueue(ctx, q, job("held back")).await;
    assert!(
        dequeue(ctx, q, 1, 300, 30_000).await.is_empty(),
        "a paused queue delivers nothing"
    );
    let s = stats(ctx, q).await;
    assert!(
        s.paused && s.waiting == 1,
        "enqueue still works while paused: {s:?}"
    );
    let waiting = {
        let mut client = ctx.queue();
        tokio::spawn(async move {
            client
                .dequeue(DequeueRequest {
                    queue: "limited".into(),
                    max_jobs: 1,
                    wait: ms(10_000),
                    lease: ms(30_000),
                })
                .await
        })
    };
    ctx.queue()
        .resume(ResumeRequest { queue: q.into() })
        .await
        .expect("resume");
    let woken = waiting
        .await
        .expect("task")
        .expect("dequeue")
        .into_inner()
        .jobs;
    assert_eq!(woken.len(), 1, "resume wakes waiting consumers");
    ack(ctx, q, &woken[0], b"").await.expect("ack");

    ctx.queue()
        .set_rate_limit(SetRateLimitRequest {
            queue: q.into(),
            max: 3,
            window: ms(500),
        })
        .await
        .expect("rate limit");
    for i in 0..9 {
        enqueue(ctx, q, job(&format!("mail {i}"))).await;
    }
    let mut consumer = Stream::open(ctx, q, 9, 30_000).await;
    let mut starts = Vec::new();
    while starts.len() < 9 {
        match consumer.next().await {
            Received::Delivery(d) => {
                starts.push(started_ms(&d, 30_000));
                consumer.ack(&d).await;
            }
            Received::Outcome(o) => assert!(o.ok),
        }
    }
    starts.sort_unstable();
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|s| **s < start + 500).count();
        assert!(
            in_window <= 3,
            "more than 3 starts in a 500 ms window: {starts:?}"
        );
    }
    let s = stats(ctx, q).await;
    assert_eq!(
        (s.rate_limit_max, to_ms_duration(&s.rate_limit_window)),
        (3, 500)
    );
}

fn to_ms_duration(d: &Option<PbDuration>) -> i64 {
    let d = d.as_ref().expect("duration");
    d.seconds * 1000 + i64::from(d.nanos / 1_000_000)
}

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
);

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

/// Acks that fail on a Redis error (writes paused past `--redis-timeout`) must not
/// keep their credits forever: once the leases run out, the same stream delivers
/// again. Before, a stream with all its credits on failed acks stalled silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_stream_keeps_delivering_after_acks_fail_on_a_redis_error() {
    let mut ctx = TestContext::standalone_with(&["--redis-timeout", "300ms"]).await;
    let q = "ack-fault";
    for i in 0..2 {
        enqueue(&ctx, q, job(&format!("before-{i}"))).await;
    }
    let lease_ms = 1_500;
    let mut consumer = Stream::open(&ctx, q, 2, lease_ms).await;
    let first = [consumer.delivery().await, consumer.delivery().await];

    let mut redis = ctx.redis().connection();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_000)
        .arg("WRITE")
        .query(&mut redis)
        .expect("pause writes");
    for d in &first {
        consumer.ack(d).await;
    }
    for _ in &first {
        let outcome = consumer.outcome().await;
        assert!(
            !outcome.ok && outcome.error.contains("may or may not have taken effect"),
            "an ack during the pause has an unknown outcome: {outcome:?}"
        );
    }

    // New work, enqueued once Redis takes writes again (ids make retries safe).
    let wanted: HashSet<String> = (0..2).map(|i| format!("after-{i}")).collect();
    for id in &wanted {
        eventually(
            Duration::from_secs(10),
            "an enqueue after the pause",
            || {
                let mut client = ctx.queue();
                let spec = JobSpec {
                    job_id: id.clone(),
                    ..job(id)
                };
                async move {
                    client
                        .enqueue(EnqueueRequest {
                            queue: q.into(),
                            job: Some(spec),
                        })
                        .await
                        .ok()
                }
            },
        )
        .await;
    }
    let mut seen = HashSet::new();
    while !wanted.is_subset(&seen) {
        match consumer.next().await {
            Received::Delivery(d) => {
                consumer.ack(&d).await;
                seen.insert(d.job_id);
            }
            Received::Outcome(_) => {}
        }
    }
}

/// Acks, nacks and extensions on the Consume stream are checked exactly like the
/// unary calls (same rules, same field names after the item's prefix), and a
/// stale lease is refused with the same message on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consume_stream_checks_settles_like_the_unary_calls() {
    let ctx = TestContext::standalone_with(&["--max-value-bytes", "16"]).await;
    let q = "settle-checks";
    enqueue(&ctx, q, job("1")).await;
    let mut consumer = Stream::open(&ctx, q, 1, 30_000).await;
    let d = consumer.delivery().await;
    let too_big = vec![b'x'; 17];

    let refusals = [
        (
            consume_request::Message::Ack(AckItem {
                job_id: "no spaces".into(),
                lease_token: d.lease_token.clone(),
                result: Vec::new(),
            }),
            "ack.job_id: ",
        ),
        (
            consume_request::Message::Ack(AckItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                result: too_big.clone(),
            }),
            "ack.result: ",
        ),
        (
            consume_request::Message::Nack(NackItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                error: "e".repeat(17),
                ..Default::default()
            }),
            "nack.error: ",
        ),
        (
            consume_request::Message::Extend(ExtendItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                lease: Some(PbDuration {
                    seconds: -1,
                    nanos: 0,
                }),
            }),
            "extend.lease: ",
        ),
    ];
    for (message, field) in refusals {
        consumer.send(message).await;
        let outcome = consumer.outcome().await;
        assert!(
            !outcome.ok && outcome.error.starts_with(field),
            "{field}: {outcome:?}"
        );
    }
    // The refused items changed nothing: the job is still leased to this stream.
    assert_eq!(stats(&ctx, q).await.active, 1);

    let unary = ctx
        .queue()
        .ack(AckRequest {
            queue: q.into(),
            items: vec![AckItem {
                job_id: d.job_id.clone(),
                lease_token: d.lease_token.clone(),
                result: too_big,
            }],
        })
        .await
        .expect_err("too big for the unary ack as well");
    assert_eq!(unary.code(), Code::InvalidArgument);
    assert!(
        unary.message().starts_with("items[0].result: "),
        "{unary:?}"
    );

    consumer
        .send(consume_request::Message::Ack(AckItem {
            job_id: d.job_id.clone(),
            lease_token: "not-the-lease".into(),
            result: Vec::new(),
        }))
        .await;
    let stale_on_stream = consumer.outcome().await;
    let stale_unary = ack(
        &ctx,
        q,
        &Delivery {
            lease_token: "not-the-lease".into(),
            ..d.clone()
        },
        b"",
    )
    .await
    .expect_err("a stale unary ack");
    assert_eq!(stale_unary.code(), Code::FailedPrecondition);
    assert_eq!(stale_on_stream.error, stale_unary.message());
}

/// How far into a short-deadline call the job arrives (scenario timing, not a
/// wait for a condition).
const ARRIVES_AFTER: Duration = Duration::from_millis(40);

/// A Dequeue whose gRPC deadline (150 ms) is shorter than its wait still hands
/// over a job enqueued 40 ms into the call, every time: Redwire's own wait ends
/// just before the deadline, not 150 ms before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dequeue_with_a_short_deadline_gets_a_job_that_arrives_in_time() {
    let ctx = TestContext::standalone().await;
    for attempt in 0..5 {
        let q = format!("short-deadline-{attempt}");
        let mut request = tonic::Request::new(DequeueRequest {
            queue: q.clone(),
            max_jobs: 1,
            wait: ms(30_000),
            lease: ms(30_000),
        });
        request.set_timeout(Duration::from_millis(150));
        let mut client = ctx.queue();
        let call = tokio::spawn(async move { client.dequeue(request).await });
        tokio::time::sleep(ARRIVES_AFTER).await;
        let sent = enqueue(&ctx, &q, job("in time")).await;
        let jobs = call
            .await
            .expect("dequeue task")
            .expect("dequeue within its deadline")
            .into_inner()
            .jobs;
        assert_eq!(
            jobs.iter().map(|j| &j.job_id).collect::<Vec<_>>(),
            [&sent.job_id],
            "attempt {attempt}"
        );
    }
}

// ---------------------------------------------------------------- faults and scale

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_is_survived() {
    let mut ctx = TestContext::standalone().await;
    enqueue(&ctx, "flush", job("1")).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut ctx.redis().connection())
        .expect("flush");
    let d = dequeue(&ctx, "flush", 1, 0, 30_000)
        .await
        .pop()
        .expect("dequeue after SCRIPT FLUSH");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut ctx.redis().connection())
        .expect("flush");
    ack(&ctx, "flush", &d, b"")
        .await
        .expect("ack after SCRIPT FLUSH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_consumers_share_a_handful_of_connections() {
    let mut ctx = TestContext::standalone().await;
    let mut consumers = Vec::new();
    for _ in 0..1000 {
        consumers.push(Stream::open(&ctx, "idle", 1, 30_000).await);
    }
    // Wait until every consumer has looked for work and gone idle.
    let url = ctx.redis().url();
    let mut conn = ctx.redis().connection();
    eventually(
        Duration::from_secs(20),
        "the consumers to go idle",
        || async {
            let mut inspect = redis::Client::open(url.as_str())
                .ok()?
                .get_connection()
                .ok()?;
            let evals =
                command_calls(&mut inspect, "evalsha") + command_calls(&mut inspect, "eval");
            (evals >= 1000).then_some(())
        },
    )
    .await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut conn)
        .expect("client list");
    let others = clients
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .count();
    assert!(
        others <= 6,
        "1,000 idle consumers use {others} Redis connections:\n{clients}"
    );

    // They are live: one job reaches exactly one of them.
    enqueue(&ctx, "idle", job("wake one")).await;
    let mut streams = futures::stream::select_all(consumers.iter_mut().map(|c| &mut c.rx));
    let first = tokio::time::timeout(Duration::from_secs(10), streams.next())
        .await
        .expect("one consumer gets it")
        .expect("message")
        .expect("ok");
    assert!(matches!(
        first.message,
        Some(consume_response::Message::Delivery(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_and_restart_loses_no_acknowledged_work() {
    // fsync on every write: with `everysec` Redis may answer writes whose AOF write
    // it postponed behind a slow background fsync (up to 2 s), and a kill -9 then
    // loses them; that is Redis's documented limit, not one this test can check.
    let redis = support::RedisServer::start_with(&["--appendfsync", "always"]);
    let url = redis.url();
    let mut ctx = TestContext::over(redis, &["--redis-url", &url], true).await;
    let q = "crash";
    let total = 300;
    let keep = JobSpec {
        keep_completed: ms(3_600_000),
        ..Default::default()
    };
    let producer = {
        let client = ctx.queue();
        let keep = keep.clone();
        tokio::spawn(async move {
            let mut client = client;
            let mut acknowledged = Vec::new();
            for i in 0..total {
                let id = format!("job-{i}");
                // A producer retries until its enqueue is acknowledged.
                loop {
                    let reply = client
                        .enqueue(EnqueueRequest {
                            queue: q.into(),
                            job: Some(JobSpec {
                                job_id: id.clone(),
                                payload: id.clone().into_bytes(),
                                ..keep.clone()
                            }),
                        })
                        .await;
                    if reply.is_ok() {
                        acknowledged.push(id);
                        break;
                    }
                    tokio::time::sleep(CLIENT_RETRY_BACKOFF).await;
                }
            }
            acknowledged
        })
    };
    let consumer = {
        let mut client = ctx.queue();
        tokio::spawn(async move {
            let mut acked: HashSet<String> = HashSet::new();
            let mut redelivered_after_ack = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.len() < total && Instant::now() < deadline {
                let Ok(reply) = client
                    .dequeue(DequeueRequest {
                        queue: q.into(),
                        max_jobs: 10,
                        wait: ms(200),
                        lease: ms(2_000),
                    })
                    .await
                else {
                    tokio::time::sleep(CLIENT_RETRY_BACKOFF).await;
                    continue;
                };
                for d in reply.into_inner().jobs {
                    if acked.contains(&d.job_id) {
                        redelivered_after_ack.push(d.job_id.clone());
                    }
                    // A consumer retries an ack whose outcome it did not learn; a
                    // stale lease then means the first try applied (the job is
                    // completed) or the lease lapsed (it comes back).
                    let ack = AckRequest {
                        queue: q.into(),
                        items: vec![AckItem {
                            job_id: d.job_id.clone(),
                            lease_token: d.lease_token.clone(),
                            result: Vec::new(),
                        }],
                    };
                    let completed = loop {
                        match client.ack(ack.clone()).await {
                            Ok(_) => break true,
                            Err(e) if e.code() == Code::FailedPrecondition => {
                                let job = client
                                    .get_job(GetJobRequest {
                                        queue: q.into(),
                                        job_id: d.job_id.clone(),
                                    })
                                    .await;
                                let state = job.ok().and_then(|r| r.into_inner().job);
                                break state.is_some_and(|j| j.state == JobState::Completed as i32);
                            }
                            Err(_) => tokio::time::sleep(CLIENT_RETRY_BACKOFF).await,
                        }
                    };
                    if completed {
                        acked.insert(d.job_id);
                    }
                }
            }
            (acked, redelivered_after_ack)
        })
    };
    // Crash Redis in the middle of the run, then bring it back on its AOF.
    eventually(
        Duration::from_secs(30),
        "some progress before the crash",
        || async {
            let s = ctx
                .queue()
                .stats(StatsRequest { queue: q.into() })
                .await
                .ok()?
                .into_inner();
            (s.completed > 50).then_some(())
        },
    )
    .await;
    ctx.redis().kill();
    ctx.redis().restart();

    let acknowledged = producer.await.expect("producer");
    let (acked, redelivered_after_ack) = consumer.await.expect("consumer");
    assert_eq!(acknowledged.len(), total);
    assert!(
        redelivered_after_ack.is_empty(),
        "acked jobs came back: {redelivered_after_ack:?}"
    );
    // Every acknowledged enqueue ends completed (or dead), none lost.
    for id in &acknowledged {
        let job = ctx
            .queue()
            .get_job(GetJobRequest {
                queue: q.into(),
                job_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{id} lost: {e:?}"))
            .into_inner()
            .job
            .expect("job");
        assert!(
            job.state == JobState::Completed as i32 || job.state == JobState::Dead as i32,
            "{id} ended in state {}",
            job.state
        );
    }
    assert_eq!(
        acked.len(),
        total,
        "the consumer finished every job without a Redwire restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_codes_and_changes_nothing() {
    let mut ctx = TestContext::standalone_with(&["--max-value-bytes", "1024"]).await;
    let mut queue = ctx.queue();
    let enqueue_with = |queue_name: &str, spec: JobSpec| EnqueueRequest {
        queue: queue_name.into(),
        job: Some(spec),
    };
    let cases: Vec<(&str, Code, Result<(), tonic::Status>)> = vec![
        (
            "queue",
            Code::InvalidArgument,
            queue.enqueue(enqueue_with("", job("x"))).await.map(drop),
        ),
        (
            "queue",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with("has space", job("x")))
                .await
                .map(drop),
        ),
        (
            "job.delay",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        delay: Some(PbDuration {
                            seconds: -1,
                            nanos: 0,
                        }),
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.max_attempts",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        max_attempts: Some(0),
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.payload",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        payload: vec![0; 2048],
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.priority",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        priority: 1001,
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.job_id",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        job_id: "a/b".into(),
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.backoff.jitter",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        backoff: Some(Backoff {
                            jitter: 2.0,
                            ..Default::default()
                        }),
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.backoff.max_delay",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        backoff: Some(Backoff {
                            max_delay: Some(PbDuration {
                                seconds: -1,
                                nanos: 0,
                            }),
                            ..Default::default()
                        }),
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "job.deliver_time",
            Code::InvalidArgument,
            queue
                .enqueue(enqueue_with(
                    "q",
                    JobSpec {
                        delay: Some(PbDuration {
                            seconds: 5,
                            nanos: 0,
                        }),
                        deliver_time: Some(prost_types::Timestamp {
                            seconds: 2_000_000_000,
                            nanos: 0,
                        }),
                        ..job("x")
                    },
                ))
                .await
                .map(drop),
        ),
        (
            "jobs[1].group",
            Code::InvalidArgument,
            queue
                .enqueue_batch(EnqueueBatchRequest {
                    queue: "q".into(),
                    jobs: vec![
                        job("ok"),
                        JobSpec {
                            group: "bad group".into(),
                            ..job("x")
                        },
                    ],
                })
                .await
                .map(drop),
        ),
        (
            "window",
            Code::InvalidArgument,
            queue
                .set_rate_limit(SetRateLimitRequest {
                    queue: "q".into(),
                    max: 3,
                    window: None,
                })
                .await
                .map(drop),
        ),
        (
            "",
            Code::NotFound,
            queue
                .get_job(GetJobRequest {
                    queue: "q".into(),
                    job_id: "nope".into(),
                })
                .await
                .map(drop),
        ),
        (
            "",
            Code::FailedPrecondition,
            queue
                .ack(AckRequest {
                    queue: "q".into(),
                    items: vec![AckItem {
                        job_id: "nope".into(),
                        lease_token: "1".into(),
                        result: vec![],
                    }],
                })
                .await
                .map(drop),
        ),
        (
            "",
            Code::FailedPrecondition,
            queue
                .nack(NackRequest {
                    queue: "q".into(),
                    item: Some(NackItem {
                        job_id: "nope".into(),
                        lease_token: "1".into(),
                        ..Default::default()
                    }),
                })
                .await
                .map(drop),
        ),
    ];
    for (field, code, result) in cases {
        let status = result.expect_err(&format!("bad {field} rejected"));
        assert_eq!(status.code(), code, "{field}: {status:?}");
        if code == Code::InvalidArgument {
            assert!(
                status.message().starts_with(&format!("{field}:")),
                "names {field}: {status:?}"
            );
        }
    }
    // A Consume stream that does not start with subscribe is refused.
    let (tx, requests) = mpsc::channel(1);
    tx.send(ConsumeRequest {
        message: Some(consume_request::Message::Ack(AckItem::default())),
    })
    .await
    .expect("send");
    let refused = queue
        .consume(ReceiverStream::new(requests))
        .await
        .expect_err("subscribe first");
    assert_eq!(refused.code(), Code::InvalidArgument);

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rw:q:*")
        .query(&mut ctx.redis().connection())
        .expect("keys");
    assert!(keys.is_empty(), "rejected calls wrote nothing: {keys:?}");
}
