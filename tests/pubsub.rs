//! `redwire.v1.PubSub` against a real redis-server, over real gRPC.

mod support;

use std::time::Duration;

use redwire::proto::*;
use support::{TestContext, assert_invalid, eventually};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::codec::Streaming;

fn channels(names: &[&str]) -> SubscribeRequest {
    SubscribeRequest {
        channels: names.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Subscribes and checks the first event confirms the subscription.
async fn subscribe(ctx: &TestContext, request: SubscribeRequest) -> Streaming<SubscribeResponse> {
    let mut stream = ctx
        .pubsub()
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.sequence, 1);
    assert!(
        matches!(first.event, Some(subscribe_response::Event::Subscribed(_))),
        "{first:?}"
    );
    stream
}

async fn next(stream: &mut Streaming<SubscribeResponse>) -> SubscribeResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10s")
        .expect("stream open")
        .expect("not an error")
}

/// The next message, skipping heartbeats.
async fn message(stream: &mut Streaming<SubscribeResponse>) -> Message {
    loop {
        match next(stream).await.event {
            Some(subscribe_response::Event::Message(m)) => return m,
            Some(subscribe_response::Event::Heartbeat(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn publish(ctx: &TestContext, channel: &str, payload: &str, sharded: bool) -> i64 {
    ctx.pubsub()
        .publish(PublishRequest {
            channel: channel.into(),
            payload: payload.as_bytes().to_vec(),
            sharded,
        })
        .await
        .expect("publish")
        .into_inner()
        .receivers
}

// ---------------------------------------------------------------- core checks

/// A subscription is confirmed before any publish can miss it, and gets the channel's messages.
async fn channels_and_confirmation_before_publish(ctx: &TestContext) {
    let mut stream = subscribe(ctx, channels(&["news", "alerts"])).await;
    // Published right after the confirmation: never missed.
    let counts = [
        publish(ctx, "news", "n1", false).await,
        publish(ctx, "alerts", "a1", false).await,
        publish(ctx, "unrelated", "x", false).await,
    ];
    if matches!(ctx.backend, support::Backend::Standalone(_)) {
        // One Redis receiver: this process, however many gRPC subscribers it has.
        // (A cluster counts only the subscribers on the node that took the PUBLISH.)
        assert_eq!(counts, [1, 1, 0]);
    }
    let first = message(&mut stream).await;
    let second = message(&mut stream).await;
    let mut got = [
        (first.channel.clone(), first.payload.clone()),
        (second.channel.clone(), second.payload.clone()),
    ];
    if !matches!(ctx.backend, support::Backend::Standalone(_)) {
        // On a cluster two publishes may enter through different nodes and reach
        // the subscriber's node over the cluster bus in either order.
        got.sort();
        got.reverse();
    }
    assert_eq!(
        got,
        [
            ("news".to_owned(), b"n1".to_vec()),
            ("alerts".to_owned(), b"a1".to_vec())
        ]
    );
    assert!(first.pattern.is_empty() && first.topic.is_empty() && !first.sharded);
}

/// Every event of a subscription carries the next sequence number.
async fn sequence_numbers_count_every_event(ctx: &TestContext) {
    let mut stream = subscribe(ctx, channels(&["seq"])).await;
    for i in 0..3 {
        publish(ctx, "seq", &i.to_string(), false).await;
    }
    let sequences: Vec<u64> = [
        next(&mut stream).await,
        next(&mut stream).await,
        next(&mut stream).await,
    ]
    .iter()
    .map(|e| e.sequence)
    .collect();
    assert_eq!(sequences, vec![2, 3, 4]);
}

/// Pattern subscriptions get the messages of every matching channel, with the pattern named.
async fn glob_patterns(ctx: &TestContext) {
    let mut stream = subscribe(
        ctx,
        SubscribeRequest {
            patterns: vec!["sport.*".into()],
            ..Default::default()
        },
    )
    .await;
    publish(ctx, "weather.today", "no", false).await;
    publish(ctx, "sport.tennis", "yes", false).await;
    let m = message(&mut stream).await;
    assert_eq!(
        (m.channel.as_str(), m.pattern.as_str(), m.payload.as_slice()),
        ("sport.tennis", "sport.*", &b"yes"[..])
    );
}

/// Topic patterns match whole segments (`*` one, `>` the rest) and nothing else.
async fn topic_patterns_match_exactly(ctx: &TestContext) {
    let mut stream = subscribe(
        ctx,
        SubscribeRequest {
            topics: vec!["order.*.us".into(), "order.#".into()],
            ..Default::default()
        },
    )
    .await;
    publish(ctx, "orders.created.us", "not a word match", false).await;
    publish(ctx, "order.created.eu", "eu", false).await;
    publish(ctx, "order.created.us", "us", false).await;
    publish(ctx, "order", "bare", false).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = message(&mut stream).await;
        got.push((m.topic, String::from_utf8(m.payload).expect("utf8")));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("order.#".to_owned(), "bare".to_owned()),
            ("order.#".to_owned(), "eu".to_owned()),
            ("order.#".to_owned(), "us".to_owned()),
            ("order.*.us".to_owned(), "us".to_owned()),
        ]
    );
}

/// Sharded channels deliver their messages, flagged as sharded.
async fn sharded_channels(ctx: &TestContext) {
    let names: Vec<String> = (0..6).map(|i| format!("room-{i}")).collect();
    let mut stream = subscribe(
        ctx,
        SubscribeRequest {
            sharded_channels: names.clone(),
            ..Default::default()
        },
    )
    .await;
    // A classic publish on the same name does not reach sharded subscribers.
    publish(ctx, "room-0", "classic", false).await;
    for name in &names {
        // Sharded channels count on their own shard: exact on a cluster too.
        assert_eq!(publish(ctx, name, name, true).await, 1, "{name}");
    }
    let mut got = Vec::new();
    for _ in 0..names.len() {
        let m = message(&mut stream).await;
        assert!(m.sharded);
        assert_eq!(m.payload, m.channel.as_bytes());
        got.push(m.channel);
    }
    got.sort();
    assert_eq!(got, names);
}

/// Every page of ListChannels, `page_size` at a time.
async fn list_channels(ctx: &TestContext, page_size: u32) -> Vec<ChannelActivity> {
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ctx
            .pubsub()
            .list_channels(ListChannelsRequest {
                page_size,
                page_token,
            })
            .await
            .expect("list channels")
            .into_inner();
        listed.extend(page.channels);
        if page.next_page_token.is_empty() {
            return listed;
        }
        page_token = page.next_page_token;
    }
}

/// ListChannels shows each name with its open subscriptions, and a name goes
/// when its last subscription ends.
async fn list_channels_counts_open_subscriptions(ctx: &TestContext) {
    let first = subscribe(ctx, channels(&["desk-1"])).await;
    let second = subscribe(
        ctx,
        SubscribeRequest {
            patterns: vec!["desk-*".into()],
            topics: vec!["desk.#".into()],
            sharded_channels: vec!["desk-1".into()],
            ..channels(&["desk-1"])
        },
    )
    .await;
    let desks = |listed: Vec<ChannelActivity>| -> Vec<(String, SubscriptionKind, u64)> {
        listed
            .into_iter()
            .filter(|c| c.name.starts_with("desk"))
            .map(|c| {
                let kind = c.kind();
                (c.name, kind, c.subscribers)
            })
            .collect()
    };
    // Counted before Subscribe answers; one name a page, to walk the tokens.
    assert_eq!(
        desks(list_channels(ctx, 1).await),
        [
            ("desk-*".to_owned(), SubscriptionKind::Pattern, 1),
            ("desk-1".to_owned(), SubscriptionKind::Channel, 2),
            ("desk-1".to_owned(), SubscriptionKind::ShardedChannel, 1),
            ("desk.#".to_owned(), SubscriptionKind::Topic, 1),
        ]
    );
    drop(second);
    eventually(
        Duration::from_secs(10),
        "the closed subscription to leave",
        || async {
            let listed = desks(list_channels(ctx, 0).await);
            (listed == [("desk-1".to_owned(), SubscriptionKind::Channel, 1)]).then_some(())
        },
    )
    .await;
    drop(first);
    eventually(
        Duration::from_secs(10),
        "the last subscription to leave",
        || async { desks(list_channels(ctx, 0).await).is_empty().then_some(()) },
    )
    .await;
}

crate::core_checks!(
    channels_and_confirmation_before_publish,
    sequence_numbers_count_every_event,
    glob_patterns,
    topic_patterns_match_exactly,
    sharded_channels,
    list_channels_counts_open_subscriptions,
);

/// Every core check of this file passes on a real 3-master cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_checks_pass_on_a_three_master_cluster() {
    let ctx = TestContext::cluster().await;
    run_core_checks_on(&ctx).await;
}

// ---------------------------------------------------------------- the hub

/// Redis clients in pub/sub mode (`flags=P`), from CLIENT LIST.
fn pubsub_connections(conn: &mut redis::Connection) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .expect("client list");
    clients
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('P'))
        })
        .count()
}

/// A thousand local subscribers of one channel share one Redis subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_share_one_redis_subscription() {
    let mut ctx = TestContext::standalone().await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(subscribe(&ctx, channels(&["fanout"])).await);
    }
    let numsub: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("rw:ps:fanout")
        .query(&mut ctx.redis().connection())
        .expect("numsub");
    assert_eq!(numsub.1, 1, "Redis sees one subscriber for the channel");
    assert_eq!(
        pubsub_connections(&mut ctx.redis().connection()),
        1,
        "one pub/sub connection"
    );
    for i in 0..5 {
        assert_eq!(publish(&ctx, "fanout", &format!("m{i}"), false).await, 1);
    }
    for stream in &mut streams {
        for i in 0..5 {
            assert_eq!(message(stream).await.payload, format!("m{i}").into_bytes());
        }
    }

    // When the last subscriber leaves, Redis is told.
    drop(streams);
    let url = ctx.redis().url();
    eventually(
        Duration::from_secs(10),
        "PUBSUB NUMSUB to drop to 0",
        || async {
            let mut conn = redis::Client::open(url.as_str())
                .ok()?
                .get_connection()
                .ok()?;
            let (_, count): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("rw:ps:fanout")
                .query(&mut conn)
                .ok()?;
            (count == 0).then_some(())
        },
    )
    .await;
}

/// A slow subscriber gets a gap event for what it missed, and others are not slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_gets_a_gap_and_does_not_slow_others() {
    let ctx = TestContext::standalone().await;
    let mut slow = subscribe(
        &ctx,
        SubscribeRequest {
            buffer_messages: 20,
            ..channels(&["firehose"])
        },
    )
    .await;
    let mut fast = subscribe(&ctx, channels(&["firehose"])).await;
    // Well past what HTTP/2 flow control lets the client buffer (2 MiB a stream).
    let total = 1500;
    let payload = "x".repeat(8192);
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < total {
            message(&mut fast).await;
            received += 1;
        }
        (received, fast)
    });
    for _ in 0..total {
        publish(&ctx, "firehose", &payload, false).await;
    }
    let (received, _fast) = reader.await.expect("fast reader");
    assert_eq!(received, total, "the fast subscriber got everything");

    // Only now does the slow one read: some messages, a gap with the count, the newest.
    let mut delivered = 0u64;
    let mut dropped = 0u64;
    while delivered + dropped < total as u64 {
        match next(&mut slow).await.event {
            Some(subscribe_response::Event::Message(_)) => delivered += 1,
            Some(subscribe_response::Event::Gap(gap)) => {
                assert!(gap.dropped > 0 && gap.reason.contains("slow"), "{gap:?}");
                dropped += gap.dropped;
            }
            Some(subscribe_response::Event::Heartbeat(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(dropped > 0, "the slow subscriber's buffer overflowed");
    assert_eq!(
        delivered + dropped,
        total as u64,
        "every message is delivered or counted as dropped"
    );
    // ListChannels counts the drops against the channel (the gap is sent
    // right after the count, so it is there once the gap arrived).
    let listed = list_channels(&ctx, 0).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].subscribers, listed[0].dropped), (2, dropped));
}

/// With slow_policy DISCONNECT, a subscriber whose buffer overflows is ended with RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disconnect_policy_ends_a_slow_stream() {
    let ctx = TestContext::standalone().await;
    let mut slow = subscribe(
        &ctx,
        SubscribeRequest {
            buffer_messages: 5,
            slow_policy: SlowSubscriberPolicy::Disconnect as i32,
            ..channels(&["burst"])
        },
    )
    .await;
    let payload = "y".repeat(8192);
    for _ in 0..1000 {
        publish(&ctx, "burst", &payload, false).await;
    }
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("ends")
        {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

async fn expect_gap_then_message(ctx: &TestContext, stream: &mut Streaming<SubscribeResponse>) {
    let gap = loop {
        match next(stream).await.event {
            Some(subscribe_response::Event::Gap(gap)) => break gap,
            Some(subscribe_response::Event::Heartbeat(_)) => continue,
            other => panic!("expected a gap, got {other:?}"),
        }
    };
    assert!(gap.reason.contains("re-established"), "{gap:?}");
    // The subscription is live again: publish (retrying while the connection that
    // publishes reconnects too) until Redis reports a receiver.
    eventually(
        Duration::from_secs(10),
        "a message after the reconnect",
        || async {
            let reply = ctx
                .pubsub()
                .publish(PublishRequest {
                    channel: "resilient".into(),
                    payload: b"after".to_vec(),
                    sharded: false,
                })
                .await
                .ok()?;
            (reply.into_inner().receivers > 0).then_some(())
        },
    )
    .await;
    assert_eq!(message(stream).await.payload, b"after");
}

/// Subscriptions resume after Redis kills the client connection or restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_client_kill_and_redis_restart() {
    let mut ctx = TestContext::standalone_with(&["--heartbeat", "60s"]).await;
    let mut stream = subscribe(&ctx, channels(&["resilient"])).await;

    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut ctx.redis().connection())
        .expect("client kill");
    expect_gap_then_message(&ctx, &mut stream).await;

    ctx.redis().kill();
    ctx.redis().restart();
    expect_gap_then_message(&ctx, &mut stream).await;
}

/// An idle subscription gets heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats() {
    let ctx = TestContext::standalone().await;
    let mut stream = subscribe(
        &ctx,
        SubscribeRequest {
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
            ..channels(&["quiet"])
        },
    )
    .await;
    for expected_sequence in [2, 3] {
        let event = next(&mut stream).await;
        assert!(
            matches!(event.event, Some(subscribe_response::Event::Heartbeat(_))),
            "{event:?}"
        );
        assert_eq!(event.sequence, expected_sequence);
    }
}

/// Shutdown ends open subscriptions with UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions_with_unavailable() {
    let mut ctx = TestContext::standalone().await;
    let mut stream = subscribe(&ctx, channels(&["bye"])).await;
    let took = ctx.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
}

/// Every kind of bad input is INVALID_ARGUMENT naming the field, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_invalid_argument_naming_the_field() {
    let ctx = TestContext::standalone().await;
    let mut client = ctx.pubsub();
    let cases: Vec<(&str, SubscribeRequest)> = vec![
        ("channels", SubscribeRequest::default()),
        ("channels[1]", channels(&["ok", ""])),
        ("channels[0]", channels(&["a b"])),
        ("channels[0]", channels(&["a{b}"])),
        (
            "topics[0]",
            SubscribeRequest {
                topics: vec!["order.a*".into()],
                ..Default::default()
            },
        ),
        (
            "patterns[0]",
            SubscribeRequest {
                patterns: vec!["a b*".into()],
                ..Default::default()
            },
        ),
        (
            "heartbeat_interval",
            SubscribeRequest {
                heartbeat_interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1000,
                }),
                ..channels(&["x"])
            },
        ),
        (
            "buffer_messages",
            SubscribeRequest {
                buffer_messages: 1_000_000,
                ..channels(&["x"])
            },
        ),
        (
            "slow_policy",
            SubscribeRequest {
                slow_policy: 9,
                ..channels(&["x"])
            },
        ),
    ];
    for (field, request) in cases {
        assert_invalid(field, client.subscribe(request).await.map(drop));
    }
    let published = client
        .publish(PublishRequest {
            channel: "bad channel".into(),
            ..Default::default()
        })
        .await;
    assert_invalid("channel", published.map(drop));
}
