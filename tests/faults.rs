//! The fault tier: Redis black-holed (SIGSTOP: connections accepted, nothing
//! answered), and what must still hold. Each test bounds its waits, so a
//! regression fails instead of hanging.

mod support;

use std::time::{Duration, Instant};

use redwire::proto::*;
use support::{TestContext, eventually};
use tonic::Code;

/// Far longer than any bound under test: a call still waiting after this hangs.
const HANG: Duration = Duration::from_secs(15);

fn subscribe_to(channel: &str) -> SubscribeRequest {
    SubscribeRequest {
        channels: vec![channel.into()],
        ..Default::default()
    }
}

/// A Subscribe while Redis does not answer ends with UNAVAILABLE within the
/// Redis timeout (before, it waited as long as the outage lasted); once Redis
/// answers again, subscribing works without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_to_a_black_holed_redis_ends_within_the_redis_timeout() {
    let mut ctx = TestContext::standalone_with(&["--redis-timeout", "300ms"]).await;
    ctx.redis().pause();
    let outcome = tokio::time::timeout(HANG, ctx.pubsub().subscribe(subscribe_to("dark"))).await;
    ctx.redis().resume();
    let status = outcome
        .expect("the subscribe ended instead of hanging")
        .expect_err("nothing confirmed the subscription");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    eventually(
        Duration::from_secs(10),
        "subscribing to work again",
        || async { ctx.pubsub().subscribe(subscribe_to("light")).await.ok() },
    )
    .await;
}

/// With Redis black-holed at shutdown and work stuck on it for longer than the
/// grace (calls and the queue reaper waiting on a 20 s Redis timeout), Redwire
/// still exits within its grace: the grace bounds the whole exit, background
/// tasks included. Before, the exit waited for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_redis_black_holed_ends_within_the_grace() {
    let mut ctx = TestContext::standalone_with(&[
        "--redis-timeout",
        "20s",
        "--shutdown-grace",
        "1s",
        "--queue-reap-interval",
        "100ms",
    ])
    .await;
    ctx.redis().pause();
    let mut pubsub = ctx.pubsub();
    let stuck = tokio::spawn(async move { pubsub.subscribe(subscribe_to("stuck")).await });
    // A call that runs into its own deadline: while it waits, the server's Redis
    // calls (this one, the hub's SUBSCRIBE, the reaper's every 100 ms) are stuck.
    let mut request = tonic::Request::new(GetRequest { key: "k".into() });
    request.set_timeout(Duration::from_secs(1));
    let status = ctx
        .cache()
        .get(request)
        .await
        .expect_err("redis does not answer");
    // The server's DEADLINE_EXCEEDED, or tonic's own CANCELLED "Timeout expired".
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );

    let started = Instant::now();
    let stopped = tokio::time::timeout(HANG, ctx.stop()).await;
    ctx.redis().resume();
    stopped.expect("shutdown ended instead of waiting for Redis");
    // Grace 1 s; far under the 20 s Redis timeout the stuck calls wait for.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    stuck.abort();
}

/// A producer stream whose writes Redis did not answer in time says the outcome
/// is unknown (DEADLINE_EXCEEDED: "may or may not have taken effect"), not that
/// nothing was written; resending the same job ids once Redis answers gives
/// exactly those jobs, whichever way each went. With Redis gone (connection
/// refused) it says UNAVAILABLE: nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_streams_tell_an_unknown_outcome_from_a_refusal() {
    let mut ctx = TestContext::standalone_with(&["--redis-timeout", "300ms"]).await;
    let q = "unknown-outcome";
    let jobs = |prefix: &str| -> Vec<EnqueueRequest> {
        (0..4)
            .map(|i| EnqueueRequest {
                queue: q.into(),
                job: Some(JobSpec {
                    job_id: format!("{prefix}-{i}"),
                    payload: b"x".to_vec(),
                    ..Default::default()
                }),
            })
            .collect()
    };
    let queue = ctx.queue();
    // The reply code of each message (0 when enqueued).
    let send = |requests: Vec<EnqueueRequest>| {
        let mut client = queue.clone();
        async move {
            let mut replies = client
                .enqueue_stream(tokio_stream::iter(requests))
                .await
                .expect("enqueue stream")
                .into_inner();
            let mut codes = Vec::new();
            while let Some(reply) = tokio_stream::StreamExt::next(&mut replies).await {
                codes.push(match reply.expect("a reply").result {
                    Some(enqueue_stream_response::Result::Failed(f)) => f.code,
                    Some(enqueue_stream_response::Result::Enqueued(_)) => 0,
                    None => panic!("a reply without a result"),
                });
            }
            codes
        }
    };

    ctx.redis().pause();
    let codes = tokio::time::timeout(HANG, send(jobs("sent"))).await;
    ctx.redis().resume();
    let codes = codes.expect("replies in time");
    assert_eq!(codes, vec![Code::DeadlineExceeded as i32; 4]);
    eventually(
        Duration::from_secs(10),
        "the resent jobs to be enqueued",
        || {
            let send = send(jobs("sent"));
            async move { (send.await == vec![0; 4]).then_some(()) }
        },
    )
    .await;
    let stats = ctx
        .queue()
        .stats(StatsRequest { queue: q.into() })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        stats.waiting, 4,
        "each job once, whichever way it went first"
    );

    ctx.redis().kill();
    let codes = tokio::time::timeout(HANG, send(jobs("refused"))).await;
    let codes = codes.expect("replies in time");
    assert_eq!(codes, vec![Code::Unavailable as i32; 4]);
}

/// With Redis black-holed, every call ends near `--redis-timeout` (300 ms here;
/// asserted under 3 s), the first and every later one: before, a call that
/// waited for the driver to reconnect took 19 s of connect retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_black_holed_every_call_ends_within_the_redis_timeout() {
    let mut ctx = TestContext::standalone_with(&["--redis-timeout", "300ms"]).await;
    ctx.redis().pause();
    let bound = Duration::from_secs(3);
    for i in 0..4 {
        let started = Instant::now();
        let enqueue = ctx
            .queue()
            .enqueue(EnqueueRequest {
                queue: "dark".into(),
                job: Some(JobSpec {
                    job_id: format!("job-{i}"),
                    ..Default::default()
                }),
            })
            .await;
        let took = started.elapsed();
        let status = enqueue.expect_err("redis does not answer");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(took < bound, "enqueue {i} took {took:?}");

        let started = Instant::now();
        let get = ctx.cache().get(GetRequest { key: "k".into() }).await;
        let took = started.elapsed();
        assert_eq!(get.expect_err("no answer").code(), Code::DeadlineExceeded);
        assert!(took < bound, "get {i} took {took:?}");
    }
    ctx.redis().resume();
}
