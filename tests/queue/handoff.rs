//! Hand-offs: an enqueue leases new jobs straight to consumers waiting in the
//! same process, within their credits, in queue order, never to a paused queue.

use super::*;

/// Jobs enqueued at once while a consumer has 2 credits: it gets 2, the rest waits
/// for an ack (hand-offs, like dequeues, never go past a consumer's credits).
pub(crate) async fn hand_offs_respect_credits(ctx: &TestContext) {
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
pub(crate) async fn a_cancelled_enqueue_batch_still_hands_off(ctx: &TestContext) {
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
pub(crate) async fn a_waiting_consumer_gets_new_jobs_without_a_dequeue() {
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
    let enqueue_sha = load(include_str!("../../src/queue/enqueue.lua"));
    let dequeue_sha = load(include_str!("../../src/queue/dequeue.lua"));
    let ack_sha = load(include_str!("../../src/queue/ack.lua"));
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
pub(crate) fn direct_store(ctx: &mut TestContext) -> QueueStore {
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

pub(crate) fn new_job(payload: &str) -> NewJob {
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
pub(crate) async fn an_enqueue_hands_jobs_to_takers_in_queue_order() {
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
pub(crate) async fn a_paused_queue_hands_nothing_off() {
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

/// One wake-up for several jobs reaches as many one-credit consumers as needed:
/// each consumer that fills up passes the wake-up on.
pub(crate) async fn one_wake_up_serves_several_small_consumers(ctx: &TestContext) {
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
