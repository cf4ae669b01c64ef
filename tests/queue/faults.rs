//! Faults and scale: Redis errors, restarts and script flushes, deadlines, many
//! idle consumers.

use super::*;

/// How long the crash test's clients back off before retrying a failed call, as a
/// real client would (this is client behaviour, not a wait for a condition).
pub(crate) const CLIENT_RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Acks that fail on a Redis error (writes paused past `--redis-timeout`) must not
/// keep their credits forever: once the leases run out, the same stream delivers
/// again. Before, a stream with all its credits on failed acks stalled silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_consume_stream_keeps_delivering_after_acks_fail_on_a_redis_error() {
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

/// How far into a short-deadline call the job arrives (scenario timing, not a
/// wait for a condition).
pub(crate) const ARRIVES_AFTER: Duration = Duration::from_millis(40);

/// A Dequeue whose gRPC deadline (150 ms) is shorter than its wait still hands
/// over a job enqueued 40 ms into the call, every time: Redwire's own wait ends
/// just before the deadline, not 150 ms before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_dequeue_with_a_short_deadline_gets_a_job_that_arrives_in_time() {
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

/// Queue calls keep working after SCRIPT FLUSH in the middle of a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn script_flush_mid_run_is_survived() {
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

/// A thousand idle Consume streams hold a handful of Redis connections, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn a_thousand_idle_consumers_share_a_handful_of_connections() {
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

/// Killing and restarting Redis under load loses no acknowledged enqueue and no acknowledged ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn redis_kill_and_restart_loses_no_acknowledged_work() {
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
