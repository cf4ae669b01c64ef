//! Bad input: clear codes naming the field, the same rules on the Consume stream
//! as on the unary calls, and nothing written.

use super::*;

/// Acks, nacks and extensions on the Consume stream are checked exactly like the
/// unary calls (same rules, same field names after the item's prefix), and a
/// stale lease is refused with the same message on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn the_consume_stream_checks_settles_like_the_unary_calls() {
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

/// Every kind of bad input gets a clear code naming the field, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn bad_input_gets_clear_codes_and_changes_nothing() {
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
        if code == Code::InvalidArgument {
            assert_invalid(field, result);
        } else {
            let status = result.expect_err(&format!("{field}: refused"));
            assert_eq!(status.code(), code, "{field}: {status:?}");
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
