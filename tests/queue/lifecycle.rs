//! A job's life: delivery, delay and priority, leases, retries with backoff, dead
//! letters, ordering groups, pause and rate limits.

use super::*;

/// A job goes through enqueue, delivery on Consume and ack, and its record says so.
pub(crate) async fn enqueue_consume_ack(ctx: &TestContext) {
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

/// Delayed jobs wait for their time, and higher priorities are delivered first.
pub(crate) async fn delay_and_priority(ctx: &TestContext) {
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

/// A job whose lease runs out is delivered again once, with the attempt counted.
pub(crate) async fn lease_expiry_redelivers_once(ctx: &TestContext) {
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

/// A Consume stream that goes away gives its jobs back to the queue at once.
pub(crate) async fn dropped_stream_gives_jobs_back(ctx: &TestContext) {
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

/// Extending a lease keeps the job from being redelivered.
pub(crate) async fn extend_lease_keeps_a_job(ctx: &TestContext) {
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

/// A job that fails every attempt is dead-lettered once, with its errors, and can be redriven.
pub(crate) async fn failing_handler_dead_letters_once(ctx: &TestContext) {
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

/// Retries of a failing job wait longer each time with exponential backoff.
pub(crate) async fn exponential_backoff_grows(ctx: &TestContext) {
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

/// Jobs of one ordering group are delivered one at a time, in order.
pub(crate) async fn ordering_groups(ctx: &TestContext) {
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

/// A paused queue delivers nothing until resumed, and a rate limit caps deliveries per window.
pub(crate) async fn pause_resume_and_rate_limit(ctx: &TestContext) {
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

/// Lease tokens cannot be guessed from one another: each carries 128 random bits,
/// and a delivery's token shares nothing with the next call's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_tokens_are_unguessable() {
    let ctx = TestContext::standalone().await;
    for i in 0..3 {
        enqueue(&ctx, "tokens", job(&format!("j{i}"))).await;
    }
    let first = dequeue(&ctx, "tokens", 2, 0, 30_000).await;
    let second = dequeue(&ctx, "tokens", 1, 0, 30_000).await;
    let tokens: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|d| d.lease_token.as_str())
        .collect();
    assert_eq!(tokens.len(), 3);
    let secret = |token: &str| token.split('.').next().expect("secret").to_owned();
    for token in &tokens {
        let random = secret(token);
        assert!(
            random.len() >= 32 && random.bytes().all(|c| c.is_ascii_hexdigit()),
            "a lease token carries 128 random bits: {token}"
        );
    }
    assert_ne!(tokens[0], tokens[1], "two leases of one call differ");
    assert_ne!(
        secret(tokens[0]),
        secret(tokens[2]),
        "calls do not share randomness"
    );
}
