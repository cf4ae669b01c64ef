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
