//! Every long-lived stream (Subscribe, Tail, ReadGroup, Consume, Hold) has the
//! same heartbeat: `heartbeat_interval` in its first request, a `Heartbeat`
//! message with the server's time after that long without another message, and
//! one rule for the interval (at least 100ms, named in the error).

mod support;

use std::time::Duration;

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use support::TestContext;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

/// The interval every stream here asks for.
const INTERVAL: Duration = Duration::from_millis(200);

/// Far longer than the interval: a heartbeat not here by then never came.
const HANG: Duration = Duration::from_secs(10);

fn interval(duration: Duration) -> Option<PbDuration> {
    Some(PbDuration::try_from(duration).expect("duration"))
}

/// Reads `stream` until `heartbeat` picks a Heartbeat out of an item; returns it.
async fn first_heartbeat<T, S>(
    stream: &mut S,
    heartbeat: impl Fn(T) -> Option<Heartbeat>,
) -> Heartbeat
where
    S: tokio_stream::Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    loop {
        let next = tokio::time::timeout(HANG, stream.next()).await;
        let item = next
            .expect("a heartbeat in time")
            .expect("the stream is open")
            .expect("not an error");
        if let Some(beat) = heartbeat(item) {
            return beat;
        }
    }
}

/// Asserts `beat` carries a server time close to now.
fn is_recent(beat: &Heartbeat) {
    let time = beat.time.expect("a heartbeat carries the server's time");
    let sent = std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(time.seconds).expect("after 1970"),
            u32::try_from(time.nanos).expect("nanos"),
        );
    let age = std::time::SystemTime::now()
        .duration_since(sent)
        .unwrap_or_default();
    assert!(age < HANG, "the heartbeat's time is {age:?} old");
}

/// Each long-lived stream sends heartbeats at the interval it asked for while idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_long_lived_stream_sends_heartbeats_when_idle() {
    let ctx = TestContext::standalone().await;

    let mut subscription = ctx
        .pubsub()
        .subscribe(SubscribeRequest {
            channels: vec!["quiet".into()],
            heartbeat_interval: interval(INTERVAL),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    is_recent(
        &first_heartbeat(&mut subscription, |r: SubscribeResponse| match r.event {
            Some(subscribe_response::Event::Heartbeat(beat)) => Some(beat),
            _ => None,
        })
        .await,
    );

    let mut tail = ctx
        .stream()
        .tail(TailRequest {
            streams: vec![TailPosition {
                stream: "quiet".into(),
                after: "$".into(),
            }],
            heartbeat_interval: interval(INTERVAL),
        })
        .await
        .expect("tail")
        .into_inner();
    is_recent(
        &first_heartbeat(&mut tail, |r: TailResponse| match r.event {
            Some(tail_response::Event::Heartbeat(beat)) => Some(beat),
            _ => None,
        })
        .await,
    );

    ctx.stream()
        .create_group(CreateGroupRequest {
            stream: "quiet".into(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .expect("create group");
    let (group_tx, group_rx) = mpsc::channel(1);
    group_tx
        .send(ReadGroupRequest {
            message: Some(read_group_request::Message::Open(OpenGroup {
                stream: "quiet".into(),
                group: "g".into(),
                heartbeat_interval: interval(INTERVAL),
                ..Default::default()
            })),
        })
        .await
        .expect("open");
    let mut group = ctx
        .stream()
        .read_group(ReceiverStream::new(group_rx))
        .await
        .expect("read group")
        .into_inner();
    is_recent(
        &first_heartbeat(&mut group, |r: ReadGroupResponse| match r.event {
            Some(read_group_response::Event::Heartbeat(beat)) => Some(beat),
            _ => None,
        })
        .await,
    );

    let (consume_tx, consume_rx) = mpsc::channel(1);
    consume_tx
        .send(ConsumeRequest {
            message: Some(consume_request::Message::Subscribe(Subscribe {
                queue: "quiet".into(),
                max_in_flight: 1,
                heartbeat_interval: interval(INTERVAL),
                ..Default::default()
            })),
        })
        .await
        .expect("subscribe");
    let mut consume = ctx
        .queue()
        .consume(ReceiverStream::new(consume_rx))
        .await
        .expect("consume")
        .into_inner();
    is_recent(
        &first_heartbeat(&mut consume, |r: ConsumeResponse| match r.message {
            Some(consume_response::Message::Heartbeat(beat)) => Some(beat),
            _ => None,
        })
        .await,
    );

    // A Hold waiting for a lock someone else holds, and one holding it between
    // renewals (ttl 6s renews every 2s, ten intervals apart): both beat.
    let mut holder = ctx
        .lock()
        .hold(HoldRequest {
            resource: "quiet".into(),
            ttl: interval(Duration::from_secs(6)),
            heartbeat_interval: interval(INTERVAL),
            ..Default::default()
        })
        .await
        .expect("hold")
        .into_inner();
    let mut waiter = ctx
        .lock()
        .hold(HoldRequest {
            resource: "quiet".into(),
            ttl: interval(Duration::from_secs(6)),
            heartbeat_interval: interval(INTERVAL),
            ..Default::default()
        })
        .await
        .expect("hold")
        .into_inner();
    let hold_heartbeat = |r: HoldResponse| match r.event {
        Some(hold_response::Event::Heartbeat(beat)) => Some(beat),
        Some(hold_response::Event::Granted(_)) | None => None,
        Some(other) => panic!("unexpected {other:?}"),
    };
    is_recent(&first_heartbeat(&mut holder, hold_heartbeat).await);
    is_recent(&first_heartbeat(&mut waiter, hold_heartbeat).await);

    drop((group_tx, consume_tx));
}

/// One rule for every stream: an interval under 100ms is INVALID_ARGUMENT,
/// with the field's path in the message and in the BadRequest detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_refuses_an_interval_under_100ms_naming_the_field() {
    let ctx = TestContext::standalone().await;
    let short = interval(Duration::from_millis(50));

    let subscribe = ctx
        .pubsub()
        .subscribe(SubscribeRequest {
            channels: vec!["x".into()],
            heartbeat_interval: short,
            ..Default::default()
        })
        .await;
    let tail = ctx
        .stream()
        .tail(TailRequest {
            streams: vec![TailPosition {
                stream: "x".into(),
                after: "$".into(),
            }],
            heartbeat_interval: short,
        })
        .await;
    let hold = ctx
        .lock()
        .hold(HoldRequest {
            resource: "x".into(),
            ttl: interval(Duration::from_secs(1)),
            heartbeat_interval: short,
            ..Default::default()
        })
        .await;
    let consume = ctx
        .queue()
        .consume(tokio_stream::iter(vec![ConsumeRequest {
            message: Some(consume_request::Message::Subscribe(Subscribe {
                queue: "x".into(),
                heartbeat_interval: short,
                ..Default::default()
            })),
        }]))
        .await;
    ctx.stream()
        .create_group(CreateGroupRequest {
            stream: "x".into(),
            group: "g".into(),
            ..Default::default()
        })
        .await
        .expect("create group");
    let group = ctx
        .stream()
        .read_group(tokio_stream::iter(vec![ReadGroupRequest {
            message: Some(read_group_request::Message::Open(OpenGroup {
                stream: "x".into(),
                group: "g".into(),
                heartbeat_interval: short,
                ..Default::default()
            })),
        }]))
        .await;

    let refusals = [
        ("heartbeat_interval", subscribe.err()),
        ("heartbeat_interval", tail.err()),
        ("heartbeat_interval", hold.err()),
        ("subscribe.heartbeat_interval", consume.err()),
        ("open.heartbeat_interval", group.err()),
    ];
    for (field, status) in refusals {
        let status = status.unwrap_or_else(|| panic!("{field}: 50ms was accepted"));
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), format!("{field}: must be at least 100ms"));
        let details = status.get_error_details();
        let violation = &details.bad_request().expect("BadRequest").field_violations[0];
        assert_eq!(violation.field, field);
    }
}
