//! Enqueueing: idempotent ids, whole batches, group commit, producer streams.

use super::*;

/// Concurrent enqueues with one job id make one job; one caller sees it created.
pub(crate) async fn concurrent_duplicate_ids_make_one_job(ctx: &TestContext) {
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
pub(crate) async fn an_id_repeated_in_one_call_counts_once(ctx: &TestContext) {
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
pub(crate) async fn a_full_size_batch_goes_through_whole(ctx: &TestContext) {
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
pub(crate) async fn concurrent_enqueues_each_get_their_own_outcome(ctx: &TestContext) {
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
pub(crate) async fn enqueue_stream_replies_in_order(ctx: &TestContext) {
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
