//! TLS to Redis: `rediss://` with a CA and a client certificate the test makes,
//! against real redis-servers that require client certificates
//! (`tls-auth-clients yes`), for the main Redis (shared, pub/sub and blocking
//! connections), Redlock nodes, and a Redis Cluster whose bus is TLS too; and a
//! Redis ACL user with its password in the URL.

mod support;

use std::time::Duration;

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use support::tls::TestCerts;
use support::{RedisCluster, RedisServer, TestContext};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

/// Redwire over a TLS-only port of `redis` (and `redlock` nodes, when given),
/// trusting the test CA and presenting the test certificate when `client_cert`.
async fn over_tls(
    certs: &TestCerts,
    redis: RedisServer,
    redlock: &[RedisServer],
    client_cert: bool,
) -> TestContext {
    let mut args = vec!["--redis-url".to_owned(), redis.tls_url()];
    let tls = certs.redwire_args();
    args.extend(
        if client_cert { &tls[..] } else { &tls[..2] }
            .iter()
            .cloned(),
    );
    if !redlock.is_empty() {
        let urls: Vec<String> = redlock.iter().map(RedisServer::tls_url).collect();
        args.extend(["--lock-redlock".to_owned(), urls.join(",")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestContext::over(redis, &args, client_cert).await
}

/// A ListPop that waits (a dedicated connection from the blocking pool) gets
/// the value a push adds meanwhile.
async fn a_waiting_pop_is_woken_by_a_push(ctx: &TestContext, key: &str) {
    let mut popper = ctx.cache();
    let request = ListPopRequest {
        keys: vec![key.into()],
        wait: secs(10),
        ..Default::default()
    };
    let pop = tokio::spawn(async move { popper.list_pop(request).await });
    ctx.cache()
        .list_push(ListPushRequest {
            key: key.into(),
            values: vec![b"item".to_vec()],
            ..Default::default()
        })
        .await
        .expect("push");
    let popped = pop.await.expect("pop task").expect("pop").into_inner();
    assert_eq!(popped.values, vec![b"item".to_vec()]);
}

/// A subscription to `channel` (sharded or classic) goes live and gets what is
/// published to it.
async fn a_subscription_gets_a_message(ctx: &TestContext, channel: &str, sharded: bool) {
    let request = if sharded {
        SubscribeRequest {
            sharded_channels: vec![channel.into()],
            ..Default::default()
        }
    } else {
        SubscribeRequest {
            channels: vec![channel.into()],
            ..Default::default()
        }
    };
    let mut events = ctx
        .pubsub()
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("ok")
            .event
    };
    let first = next().await;
    assert!(
        matches!(first, Some(subscribe_response::Event::Subscribed(_))),
        "{first:?}"
    );
    ctx.pubsub()
        .publish(PublishRequest {
            channel: channel.into(),
            payload: b"hello".to_vec(),
            sharded,
        })
        .await
        .expect("publish");
    let Some(subscribe_response::Event::Message(message)) = next().await else {
        panic!("expected a message");
    };
    assert_eq!(message.payload, b"hello");
}

/// Every kind of connection works over mutual TLS: ordinary commands, the pub/sub
/// hub (Subscribe and queue wake-ups), the blocking pool (ListPop with a wait)
/// and the Redlock nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_works_over_mutual_tls() {
    let certs = TestCerts::generate();
    let redlock: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::start_tls(&certs, &[]))
        .collect();
    let ctx = over_tls(&certs, RedisServer::start_tls(&certs, &[]), &redlock, true).await;

    let mut cache = ctx.cache();
    cache
        .set(SetRequest {
            key: "tls:k".into(),
            value: b"over tls".to_vec(),
            ..Default::default()
        })
        .await
        .expect("set");
    let got = cache
        .get(GetRequest {
            key: "tls:k".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.value, b"over tls");

    // The blocking pool, and the pub/sub hub's connection.
    a_waiting_pop_is_woken_by_a_push(&ctx, "tls:list").await;
    a_subscription_gets_a_message(&ctx, "tls-news", false).await;

    // Redlock over three TLS nodes.
    let mut lock = ctx.lock();
    let granted = lock
        .acquire(AcquireRequest {
            resource: "tls-vault".into(),
            ttl: secs(10),
            ..Default::default()
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(granted.acquired && granted.fencing_token > 0, "{granted:?}");
    let state = lock
        .describe(DescribeRequest {
            resource: "tls-vault".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert!(state.held);
}

/// A 3-master cluster over TLS: keys in every slot range, a blocking pop, and a
/// sharded subscription (its own RESP3 cluster connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_works_over_mutual_tls() {
    let certs = TestCerts::generate();
    // Starting a cluster blocks (processes, polling); this test's runtime has
    // another worker thread for everything else meanwhile.
    let cluster = tokio::task::block_in_place(|| RedisCluster::start_tls(&certs));
    let mut args = vec!["--redis-cluster".to_owned(), cluster.tls_seeds()];
    args.extend(certs.redwire_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ctx = TestContext::over_cluster(cluster, &args).await;

    let mut cache = ctx.cache();
    for i in 0..12 {
        cache
            .set(SetRequest {
                key: format!("tls-cluster:{i}"),
                value: vec![i],
                ..Default::default()
            })
            .await
            .expect("set");
    }
    let many = cache
        .get_many(GetManyRequest {
            keys: (0..12).map(|i| format!("tls-cluster:{i}")).collect(),
        })
        .await
        .expect("get many")
        .into_inner();
    assert!(
        many.values.iter().all(|v| v.found) && many.values.len() == 12,
        "{many:?}"
    );

    a_waiting_pop_is_woken_by_a_push(&ctx, "tls-cluster:list").await;
    a_subscription_gets_a_message(&ctx, "tls-shard", true).await;
}

/// A Redis that requires client certificates refuses a Redwire that trusts its
/// CA but presents none: calls fail with UNAVAILABLE and health stays NOT_SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_client_certificate_redis_refuses_the_connection() {
    let certs = TestCerts::generate();
    let ctx = over_tls(&certs, RedisServer::start_tls(&certs, &[]), &[], false).await;
    let status = ctx
        .cache()
        .get(GetRequest { key: "k".into() })
        .await
        .expect_err("the handshake fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(ctx.health_status("").await, Some(ServingStatus::NotServing));
}

/// Certificates with a plain `redis://` URL are a configuration mistake, refused
/// at start with a message naming the URL flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_need_a_rediss_url() {
    let certs = TestCerts::generate();
    let redis = RedisServer::start();
    let mut args = vec!["redwire".to_owned(), "--redis-url".into(), redis.url()];
    args.extend(certs.redwire_args());
    let config = redwire::Config::from_args(args).expect("flags parse");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = redwire::run(config, listener, std::future::pending())
        .await
        .expect_err("refused at start");
    let message = error.to_string();
    assert!(
        message.contains("redis_url") && message.contains("rediss://"),
        "{message}"
    );
}

/// Redwire connects as the Redis ACL user and password in the URL
/// (`rediss://user:password@host`), with the default user switched off and the
/// commands an operator would take away (FLUSHALL, CONFIG, ...) denied: the
/// ordinary connection, the pub/sub hub (health SERVING needs it) and the
/// blocking pool all authenticate. A wrong password gets no data through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_and_password_in_the_url_are_used() {
    let certs = TestCerts::generate();
    let with_user = |password: &str| {
        let redis = RedisServer::start_tls(&certs, &[]);
        let mut admin = redis.connection();
        let _: () = redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                "redwire",
                "on",
                ">s3cret",
                "~*",
                "&*",
                "+@all",
                "-flushall",
                "-flushdb",
                "-config",
                "-shutdown",
                "-debug",
            ])
            .query(&mut admin)
            .expect("acl setuser");
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "default", "off"])
            .query(&mut admin)
            .expect("default user off");
        let url =
            redis
                .tls_url()
                .replacen("rediss://", &format!("rediss://redwire:{password}@"), 1);
        (redis, url)
    };
    let (redis, url) = with_user("s3cret");
    let mut args = vec!["--redis-url".to_owned(), url];
    args.extend(certs.redwire_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ctx = TestContext::over(redis, &args, true).await;
    ctx.cache()
        .set(SetRequest {
            key: "acl:k".into(),
            value: b"as redwire".to_vec(),
            ..Default::default()
        })
        .await
        .expect("set as the acl user");
    a_waiting_pop_is_woken_by_a_push(&ctx, "acl:list").await;

    let (redis, url) = with_user("s3cret");
    let wrong = url.replacen(":s3cret@", ":wrong@", 1);
    let mut args = vec!["--redis-url".to_owned(), wrong];
    args.extend(certs.redwire_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused_ctx = TestContext::over(redis, &args, false).await;
    let refused = refused_ctx
        .cache()
        .get(GetRequest {
            key: "acl:k".into(),
        })
        .await
        .expect_err("a wrong password gets nothing");
    assert_ne!(refused.code(), Code::Ok);
}
