//! The fault tier: Redis black-holed (SIGSTOP: connections accepted, nothing
//! answered), and what must still hold. Each test bounds its waits, so a
//! regression fails instead of hanging.

mod support;

use std::time::{Duration, Instant};

use redwire::proto::*;
use support::{TestContext, eventually};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

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

/// The next event of a subscription, heartbeats skipped; None if none comes
/// within `wait`.
async fn next_event(
    stream: &mut tonic::Streaming<SubscribeEvent>,
    wait: Duration,
) -> Option<subscribe_event::Event> {
    loop {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(SubscribeEvent {
                event: Some(subscribe_event::Event::Heartbeat(_)),
                ..
            }))) => continue,
            Ok(Some(Ok(event))) => return event.event,
            Ok(other) => panic!("the subscription ended: {other:?}"),
            Err(_) => return None,
        }
    }
}

/// Publishes `payload` on a classic channel straight to `node` (classic PUBLISH
/// reaches every node of a cluster).
fn publish_on(node: &support::RedisServer, channel: &str, payload: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}{channel}", redwire::redis::keys::PUBSUB_PREFIX))
        .arg(payload)
        .query(&mut node.connection())
        .expect("publish on a live node");
}

/// Reads `subscription` while publishing to `node` until a message arrives;
/// returns whether a gap event came first.
async fn gap_then_message(
    subscription: &mut tonic::Streaming<SubscribeEvent>,
    node: &support::RedisServer,
    channel: &str,
) -> bool {
    let deadline = Instant::now() + HANG;
    let mut gap = false;
    loop {
        assert!(Instant::now() < deadline, "no message after the fault");
        publish_on(node, channel, "after");
        match next_event(subscription, Duration::from_millis(300)).await {
            Some(subscribe_event::Event::Gap(_)) => gap = true,
            Some(subscribe_event::Event::Message(m)) => {
                assert_eq!(m.payload, b"after");
                return gap;
            }
            Some(other) => panic!("unexpected event {other:?}"),
            None => {}
        }
    }
}

/// On a cluster, killing the first seed node (where classic subscriptions went)
/// moves them to another node: the subscriber gets a gap event, then messages
/// again. Before, the hub reconnected to the dead seed forever: no message, no
/// gap, health SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_subscriptions_move_off_a_dead_first_seed_node() {
    let mut ctx = TestContext::cluster().await;
    let mut subscription = ctx
        .pubsub()
        .subscribe(subscribe_to("news"))
        .await
        .expect("subscribe")
        .into_inner();
    assert!(matches!(
        next_event(&mut subscription, HANG).await,
        Some(subscribe_event::Event::Subscribed(_))
    ));
    let support::Backend::Cluster(cluster) = &mut ctx.backend else {
        unreachable!("a cluster context")
    };
    publish_on(&cluster.nodes[1], "news", "before");
    assert!(matches!(
        next_event(&mut subscription, HANG).await,
        Some(subscribe_event::Event::Message(_))
    ));

    cluster.nodes[0].kill();
    let gap = gap_then_message(&mut subscription, &cluster.nodes[1], "news").await;
    assert!(gap, "the subscriber was told messages may have been lost");
}

/// PubSub's health follows the hub's own connection: while it cannot reconnect
/// (here Redis takes away the channel permissions, which also disconnects it),
/// PubSub is NOT_SERVING while "" and Cache stay SERVING on
/// the connections they hold; once it reconnects, SERVING again and subscribers
/// get a gap, then messages. Before, health said SERVING throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_health_follows_its_own_connection() {
    const PUBSUB: &str = "redwire.v1.PubSub";
    let mut ctx = TestContext::standalone().await;
    ctx.wait_for_health(PUBSUB, ServingStatus::Serving).await;
    let mut subscription = ctx
        .pubsub()
        .subscribe(subscribe_to("alerts"))
        .await
        .expect("subscribe")
        .into_inner();
    assert!(matches!(
        next_event(&mut subscription, HANG).await,
        Some(subscribe_event::Event::Subscribed(_))
    ));

    // Taking channel permissions away disconnects subscribers (Redis 7) and
    // refuses their SUBSCRIBE; the connections other services use are untouched.
    let mut admin = ctx.redis().connection();
    let acl = |rule: &str| -> redis::Cmd {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg("default").arg(rule);
        cmd
    };
    let _: () = acl("resetchannels").query(&mut admin).expect("acl");
    ctx.wait_for_health(PUBSUB, ServingStatus::NotServing).await;
    assert_eq!(ctx.health_status("").await, Some(ServingStatus::Serving));
    ctx.cache()
        .get(GetRequest { key: "k".into() })
        .await
        .expect("cache still served");

    let _: () = acl("allchannels").query(&mut admin).expect("acl");
    ctx.wait_for_health(PUBSUB, ServingStatus::Serving).await;
    let gap = gap_then_message(&mut subscription, ctx.redis(), "alerts").await;
    assert!(gap, "the subscriber was told messages may have been lost");
}

/// On a cluster, health means every master answers: with one master down (a
/// third of the slots unserved) every service is NOT_SERVING, and SERVING again
/// once it is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_follows_a_master_down_and_back() {
    let mut ctx = TestContext::cluster().await;
    let support::Backend::Cluster(cluster) = &mut ctx.backend else {
        unreachable!("a cluster context")
    };
    cluster.nodes[1].kill();
    ctx.wait_for_health("", ServingStatus::NotServing).await;
    ctx.wait_for_health("redwire.v1.Queue", ServingStatus::NotServing)
        .await;
    let support::Backend::Cluster(cluster) = &mut ctx.backend else {
        unreachable!("a cluster context")
    };
    cluster.nodes[1].restart();
    ctx.wait_for_health("", ServingStatus::Serving).await;
}
