//! The fault tier: Redis black-holed (SIGSTOP: connections accepted, nothing
//! answered), network faults through a TCP proxy (reset, refused, slow, black
//! hole), failovers and lost nodes on a cluster, and what must still hold. Each
//! test bounds its waits, so a regression fails instead of hanging.

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
    let jobs = |prefix: &str| -> Vec<EnqueueStreamRequest> {
        (0..4)
            .map(|i| EnqueueStreamRequest {
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
    let send = |requests: Vec<EnqueueStreamRequest>| {
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
    stream: &mut tonic::Streaming<SubscribeResponse>,
    wait: Duration,
) -> Option<subscribe_response::Event> {
    loop {
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(SubscribeResponse {
                event: Some(subscribe_response::Event::Heartbeat(_)),
                ..
            }))) => continue,
            Ok(Some(Ok(event))) => return event.event,
            Ok(other) => panic!("the subscription ended: {other:?}"),
            Err(_) => return None,
        }
    }
}

/// Subscribes with `request` and checks the first event confirms it.
async fn subscribed(
    ctx: &TestContext,
    request: SubscribeRequest,
) -> tonic::Streaming<SubscribeResponse> {
    let mut subscription = ctx
        .pubsub()
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    assert!(matches!(
        next_event(&mut subscription, HANG).await,
        Some(subscribe_response::Event::Subscribed(_))
    ));
    subscription
}

/// Publishes `payload` on a classic channel straight to `node` (classic PUBLISH
/// reaches every node of a cluster).
fn publish_on(node: &support::RedisServer, channel: &str, payload: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(redwire::redis::keys::pubsub_channel(None, channel, false))
        .arg(payload)
        .query(&mut node.connection())
        .expect("publish on a live node");
}

/// Reads `subscription`, calling `publish` (which publishes `payload`) before
/// each wait, until `payload` arrives (other payloads, left from an earlier phase,
/// are skipped); returns whether a gap event came first.
async fn gap_then_message<F, Fut>(
    subscription: &mut tonic::Streaming<SubscribeResponse>,
    payload: &str,
    mut publish: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + HANG;
    let mut gap = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{payload:?} never arrived after the fault"
        );
        publish().await;
        match next_event(subscription, Duration::from_millis(300)).await {
            Some(subscribe_response::Event::Gap(_)) => gap = true,
            Some(subscribe_response::Event::Message(m)) if m.payload == payload.as_bytes() => {
                return gap;
            }
            Some(subscribe_response::Event::Message(_)) | None => {}
            Some(other) => panic!("unexpected event {other:?}"),
        }
    }
}

/// Publishes `payload` on the sharded `channel` through Redwire; a failure while
/// the cluster settles is left to the caller's retry.
async fn publish_sharded(ctx: &TestContext, channel: &str, payload: &str) {
    let _ = ctx
        .pubsub()
        .publish(PublishRequest {
            channel: channel.into(),
            payload: payload.as_bytes().to_vec(),
            sharded: true,
        })
        .await;
}

/// On a cluster, killing the first seed node (where classic subscriptions went)
/// moves them to another node: the subscriber gets a gap event, then messages
/// again. Before, the hub reconnected to the dead seed forever: no message, no
/// gap, health SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_subscriptions_move_off_a_dead_first_seed_node() {
    let mut ctx = TestContext::cluster().await;
    let mut subscription = subscribed(&ctx, subscribe_to("news")).await;
    let cluster = ctx.cluster_mut();
    publish_on(&cluster.nodes[1], "news", "before");
    assert!(matches!(
        next_event(&mut subscription, HANG).await,
        Some(subscribe_response::Event::Message(_))
    ));

    cluster.nodes[0].kill();
    let gap = gap_then_message(&mut subscription, "after", || {
        publish_on(&cluster.nodes[1], "news", "after");
        std::future::ready(())
    })
    .await;
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
    let mut subscription = subscribed(&ctx, subscribe_to("alerts")).await;

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
    let gap = gap_then_message(&mut subscription, "after", || {
        publish_on(ctx.redis(), "alerts", "after");
        std::future::ready(())
    })
    .await;
    assert!(gap, "the subscriber was told messages may have been lost");
}

/// On a cluster, health means every master answers: with one master down (a
/// third of the slots unserved) every service is NOT_SERVING, and SERVING again
/// once it is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_follows_a_master_down_and_back() {
    let mut ctx = TestContext::cluster().await;
    let cluster = ctx.cluster_mut();
    cluster.nodes[1].kill();
    ctx.wait_for_health("", ServingStatus::NotServing).await;
    ctx.wait_for_health("redwire.v1.Queue", ServingStatus::NotServing)
        .await;
    let cluster = ctx.cluster_mut();
    cluster.nodes[1].restart();
    ctx.wait_for_health("", ServingStatus::Serving).await;
}

/// A standalone master with one replica, the replica's link up.
fn master_with_replica() -> (support::RedisServer, support::RedisServer) {
    let master = support::RedisServer::start();
    let port = master.port().to_string();
    let replica = support::RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    support::eventually_blocking(HANG, "the replica to sync", || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.connection())
            .expect("info");
        info.contains("master_link_status:up")
    });
    (master, replica)
}

/// Durable mode (`--durable-replicas 1`): an enqueue, an append and a lock grant
/// are acknowledged only once the replica has them, so a failover onto it keeps
/// them; with the replica stalled (a lagging replica), each is answered
/// DEADLINE_EXCEEDED naming the mode instead of OK. Before, they were acknowledged
/// on the master alone and a failover onto a lagging replica lost them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_acknowledges_only_what_a_replica_has() {
    let (master, replica) = master_with_replica();
    let url = master.url();
    let ctx = TestContext::over(
        master,
        &[
            "--redis-url",
            &url,
            "--durable-replicas",
            "1",
            "--redis-timeout",
            "1s",
        ],
        true,
    )
    .await;
    let append = || AppendRequest {
        stream: "orders".into(),
        fields: [("n".to_owned(), b"1".to_vec())].into(),
        ..Default::default()
    };
    let enqueue = || EnqueueRequest {
        queue: "mail".into(),
        job: Some(JobSpec {
            payload: b"hi".to_vec(),
            ..Default::default()
        }),
    };
    let acquire = |resource: &str| AcquireRequest {
        resource: resource.into(),
        ttl: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    };

    let id = ctx
        .stream()
        .append(append())
        .await
        .expect("append")
        .into_inner()
        .id;
    let job = ctx
        .queue()
        .enqueue(enqueue())
        .await
        .expect("enqueue")
        .into_inner()
        .job_id;
    ctx.lock()
        .acquire(acquire("invoice-7"))
        .await
        .expect("acquire");
    // Acknowledged means on the replica already: read it there, no waiting.
    let mut on_replica = replica.connection();
    let (stream, _, _) = redwire::redis::keys::stream_keys("orders");
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg(&id)
        .arg(&id)
        .query(&mut on_replica)
        .expect("xrange");
    assert_eq!(entries.len(), 1, "the appended entry is on the replica");
    let jobs = &redwire::redis::keys::QueueKeys::new("mail").jobs;
    let stored: bool = redis::cmd("HEXISTS")
        .arg(jobs)
        .arg(&job)
        .query(&mut on_replica)
        .expect("hexists");
    assert!(stored, "the enqueued job is on the replica");

    replica.pause();
    let outcomes = [
        ctx.stream().append(append()).await.map(drop),
        ctx.queue().enqueue(enqueue()).await.map(drop),
        ctx.lock().acquire(acquire("invoice-8")).await.map(drop),
    ];
    replica.resume();
    for (call, outcome) in ["append", "enqueue", "acquire"].iter().zip(outcomes) {
        let status = outcome.expect_err(&format!("{call} not acknowledged while the replica lags"));
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().contains("--durable-replicas"),
            "{status:?}"
        );
    }
    ctx.stream()
        .append(append())
        .await
        .expect("acknowledged again once the replica keeps up");
}

/// On a cluster with replicas, a sharded subscription follows its shard through a
/// `CLUSTER FAILOVER` (Redis ends the subscription when the master steps down:
/// the subscriber gets a gap event, then messages again) and through kill -9 of
/// the new master (its replica takes over; messages again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriptions_follow_failovers() {
    const CHANNEL: &str = "orders-events";
    let mut ctx = TestContext::replicated_cluster(&[]).await;
    let shard =
        support::RedisCluster::shard_of(&redwire::redis::keys::pubsub_channel(None, CHANNEL, true));
    let mut subscription = subscribed(
        &ctx,
        SubscribeRequest {
            sharded_channels: vec![CHANNEL.into()],
            ..Default::default()
        },
    )
    .await;
    gap_then_message(&mut subscription, "before", || {
        publish_sharded(&ctx, CHANNEL, "before")
    })
    .await;

    let cluster = ctx.cluster_mut();
    cluster.failover(shard);
    let gap = gap_then_message(&mut subscription, "after failover", || {
        publish_sharded(&ctx, CHANNEL, "after failover")
    })
    .await;
    assert!(gap, "a gap event after the failover");

    let cluster = ctx.cluster_mut();
    // The subscription may sit on the replica that takes over (Redis sends a
    // shard's messages to its replicas too), so a gap is not required here.
    cluster.nodes[3 + shard].kill();
    gap_then_message(&mut subscription, "after kill", || {
        publish_sharded(&ctx, CHANNEL, "after kill")
    })
    .await;
}

/// Durable mode across a real failover onto a lagging replica: appends made while
/// the shard's replica is stalled (SIGSTOP, with more data than the kernel's socket
/// buffers hold, so the rest waits in the master) are not acknowledged, so when the
/// master dies and that replica takes over, every append that was acknowledged is
/// there. In the default mode those appends are acknowledged and then lost: Redis
/// replication is asynchronous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_keeps_acknowledged_appends_through_a_failover() {
    const STREAM: &str = "ledger";
    let mut ctx = TestContext::replicated_cluster(&[
        "--durable-replicas",
        "1",
        "--redis-timeout",
        "400ms",
        "--max-value-bytes",
        "4194304",
        "--max-message-bytes",
        "5000000",
    ])
    .await;
    let (key, _, _) = redwire::redis::keys::stream_keys(STREAM);
    let shard = support::RedisCluster::shard_of(&key);
    let append = |n: usize| AppendRequest {
        stream: STREAM.into(),
        fields: [
            ("n".to_owned(), n.to_string().into_bytes()),
            (
                "pad".to_owned(),
                vec![b'x'; if n < 10 { 1 } else { 4 << 20 }],
            ),
        ]
        .into(),
        ..Default::default()
    };
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        let reply = ctx.stream().append(append(n)).await.expect("append");
        acknowledged.push(reply.into_inner().id);
    }

    let cluster = ctx.cluster_mut();
    cluster.nodes[3 + shard].pause();
    for n in 10..18 {
        if let Ok(reply) = ctx.stream().append(append(n)).await {
            acknowledged.push(reply.into_inner().id);
        }
    }
    let cluster = ctx.cluster_mut();
    cluster.nodes[shard].kill();
    cluster.nodes[3 + shard].resume();

    let promoted = &cluster.nodes[3 + shard];
    eventually(
        Duration::from_secs(30),
        "the replica to take over",
        || async { promoted.is_master().then_some(()) },
    )
    .await;
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query(&mut promoted.connection())
        .expect("xrange");
    let stored: Vec<String> = entries.ids.into_iter().map(|e| e.id).collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged appends lost in the failover: {lost:?}"
    );
    assert!(acknowledged.len() >= 10);
}

/// Opens a Consume stream on `queue` with one credit; keep the sender to keep
/// the stream open.
async fn consume(
    ctx: &TestContext,
    queue: &str,
) -> (
    tokio::sync::mpsc::Sender<ConsumeRequest>,
    tonic::Streaming<ConsumeResponse>,
) {
    let (tx, requests) = tokio::sync::mpsc::channel(4);
    tx.send(ConsumeRequest {
        message: Some(consume_request::Message::Subscribe(Subscribe {
            queue: queue.into(),
            max_in_flight: 1,
            lease: None,
            heartbeat_interval: None,
        })),
    })
    .await
    .expect("subscribe");
    let deliveries = ctx
        .queue()
        .consume(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("consume")
        .into_inner();
    (tx, deliveries)
}

/// Queue wake-ups do not depend on one node: with consumers on one Redwire and
/// producers on another, killing the first seed node (where both hubs' pub/sub
/// connections went) moves the wake-ups to another node, and an idle consumer
/// gets a job enqueued afterwards. Before, it got nothing (an idle consumer does
/// not poll; it waits for its wake-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_wake_ups_move_off_a_dead_first_seed_node() {
    let mut producer = TestContext::replicated_cluster(&[]).await;
    let consumer_side = producer.beside().await;
    let (tx, mut deliveries) = consume(&consumer_side, "mail").await;

    let cluster = producer.cluster_mut();
    cluster.nodes[0].kill();
    let deadline = Instant::now() + HANG;
    loop {
        assert!(
            Instant::now() < deadline,
            "the idle consumer was never woken"
        );
        let _ = producer
            .queue()
            .enqueue(EnqueueRequest {
                queue: "mail".into(),
                job: Some(JobSpec {
                    payload: b"wake".to_vec(),
                    ..Default::default()
                }),
            })
            .await;
        let next = tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await;
        if let Ok(Some(Ok(ConsumeResponse {
            message: Some(consume_response::Message::Delivery(delivery)),
        }))) = next
        {
            assert_eq!(delivery.payload, b"wake");
            break;
        }
    }
    drop(tx);
}

/// A Redwire whose only way to its Redis is a fault proxy, with `redis_timeout`.
async fn behind_a_proxy(redis_timeout: &str) -> (support::proxy::FaultProxy, TestContext) {
    let redis = support::RedisServer::start();
    let target = format!("127.0.0.1:{}", redis.port()).parse().expect("addr");
    let proxy = support::proxy::FaultProxy::start(target).await;
    let url = proxy.url();
    let args = ["--redis-url", &url, "--redis-timeout", redis_timeout];
    let ctx = TestContext::over(redis, &args, true).await;
    (proxy, ctx)
}

/// Network faults between Redwire and Redis, through a TCP proxy: every Redis
/// connection reset and new ones refused for a while (a load balancer or NAT
/// losing its state), then allowed again. Meanwhile health is NOT_SERVING; after,
/// it is SERVING, calls work, a subscriber gets a gap then messages, and an idle
/// consumer gets a job enqueued afterwards, all without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_reset_and_refused_by_the_network_recover() {
    let (proxy, mut ctx) = behind_a_proxy("500ms").await;
    let mut subscription = subscribed(&ctx, subscribe_to("alerts")).await;
    let (tx, mut deliveries) = consume(&ctx, "mail").await;

    proxy.refuse(true);
    proxy.reset_all();
    ctx.wait_for_health("", ServingStatus::NotServing).await;
    proxy.refuse(false);
    all_back(&mut ctx, &mut subscription, &mut deliveries).await;
    drop(tx);
}

/// A slow and then a black-holed network between Redwire and Redis, through the
/// TCP proxy. With every byte delayed 100 ms each way, calls are slower but all
/// succeed, and a subscriber and an idle consumer still get what is sent. With the
/// path black-holed (connections open, nothing flows), calls end within the Redis
/// timeout (700 ms here; asserted under 3 s) and health goes NOT_SERVING; once the
/// path heals, everything works again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_then_black_holed_network_to_redis_slows_calls_and_heals() {
    let (proxy, mut ctx) = behind_a_proxy("700ms").await;
    let mut subscription = subscribed(&ctx, subscribe_to("alerts")).await;
    let (tx, mut deliveries) = consume(&ctx, "mail").await;
    let enqueue = |payload: &'static str| EnqueueRequest {
        queue: "mail".into(),
        job: Some(JobSpec {
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        }),
    };
    proxy.delay(Duration::from_millis(100));
    let set = SetRequest {
        key: "k".into(),
        value: b"slow".to_vec(),
        ..Default::default()
    };
    ctx.cache().set(set.clone()).await.expect("a slow set");
    let got = ctx.cache().get(GetRequest { key: "k".into() }).await;
    assert_eq!(got.expect("a slow get").into_inner().value, b"slow");
    publish_on(ctx.redis(), "alerts", "slow");
    assert!(matches!(
        next_event(&mut subscription, HANG).await,
        Some(subscribe_response::Event::Message(m)) if m.payload == b"slow"
    ));
    ctx.queue()
        .enqueue(enqueue("slow"))
        .await
        .expect("a slow enqueue");
    let delivery = next_delivery(&mut deliveries, "slow").await;
    tx.send(ConsumeRequest {
        message: Some(consume_request::Message::Ack(AckItem {
            job_id: delivery.job_id,
            lease_token: delivery.lease_token,
            result: Vec::new(),
        })),
    })
    .await
    .expect("ack");
    // The ack frees the consumer's one credit for the job sent after the fault.
    let outcome = loop {
        let next = tokio::time::timeout(HANG, deliveries.next()).await;
        if let Ok(Some(Ok(ConsumeResponse {
            message: Some(consume_response::Message::Outcome(outcome)),
        }))) = next
        {
            break outcome;
        }
        assert!(next.is_ok(), "no outcome of the ack in time");
    };
    assert!(outcome.ok, "{outcome:?}");

    proxy.delay(Duration::ZERO);
    proxy.black_hole(true);
    for _ in 0..3 {
        let started = Instant::now();
        let status = ctx
            .cache()
            .set(set.clone())
            .await
            .expect_err("nothing flows");
        let took = started.elapsed();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{status:?}"
        );
        assert!(took < Duration::from_secs(3), "a set took {took:?}");
    }
    ctx.wait_for_health("", ServingStatus::NotServing).await;

    proxy.black_hole(false);
    all_back(&mut ctx, &mut subscription, &mut deliveries).await;
    drop(tx);
}

/// After a network fault heals: health is SERVING, calls work, the subscriber
/// (to "alerts") gets a gap then messages, and the idle consumer (of "mail") gets
/// a job enqueued now, all without a restart.
async fn all_back(
    ctx: &mut TestContext,
    subscription: &mut tonic::Streaming<SubscribeResponse>,
    deliveries: &mut tonic::Streaming<ConsumeResponse>,
) {
    ctx.wait_for_health("", ServingStatus::Serving).await;
    ctx.cache()
        .set(SetRequest {
            key: "k".into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .expect("calls work again");
    let gap = gap_then_message(subscription, "after", || {
        publish_on(ctx.redis(), "alerts", "after");
        std::future::ready(())
    })
    .await;
    assert!(gap, "the subscriber was told messages may have been lost");
    ctx.queue()
        .enqueue(EnqueueRequest {
            queue: "mail".into(),
            job: Some(JobSpec {
                payload: b"after".to_vec(),
                ..Default::default()
            }),
        })
        .await
        .expect("enqueue");
    next_delivery(deliveries, "after").await;
}

/// The next delivery on a Consume stream, outcomes and heartbeats skipped.
async fn next_delivery(
    deliveries: &mut tonic::Streaming<ConsumeResponse>,
    payload: &str,
) -> Delivery {
    let deadline = Instant::now() + HANG;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), deliveries.next()).await;
        let next = next.unwrap_or_else(|_| panic!("no delivery of {payload:?} in time"));
        match next {
            Some(Ok(ConsumeResponse {
                message: Some(consume_response::Message::Delivery(delivery)),
            })) => {
                assert_eq!(delivery.payload, payload.as_bytes());
                return delivery;
            }
            Some(Ok(_)) => continue,
            other => panic!("the stream ended: {other:?}"),
        }
    }
}
