//! Idle streams: memory per open subscription or Consume stream.

use std::time::{Duration, Instant};

use redwire::proto::pub_sub_client::PubSubClient;
use redwire::proto::queue_client::QueueClient;
use redwire::proto::*;
use tokio_stream::StreamExt;

use crate::driver::*;
use crate::metrics::*;
use crate::{Args, Workload};

/// Opens `--subscribers` idle streams (subscriptions or Consume streams, spread
/// over 100 channels or queues) and reports Redwire's memory per stream and the
/// Redis connections in use while they are open.
pub(crate) async fn idle(args: &Args, channel: Conn) -> Report {
    let before = rss_bytes(args.redwire_pid);
    let started = Instant::now();
    let open = if args.workload == Workload::IdleConsumers {
        idle_consumers(args, channel).await
    } else {
        idle_subscriptions(args, channel).await
    };
    let after = rss_bytes(args.redwire_pid);
    let connections = redis_info(&args.redis_url, "clients")
        .and_then(|info| info_number(&info, "connected_clients:"))
        // Less the connection that asked.
        .map(|n| (n as u64).saturating_sub(1));
    let per_stream = before
        .zip(after)
        .map(|(b, a)| a.saturating_sub(b) / args.subscribers.max(1) as u64);
    drop(open);
    Report {
        ops: args.subscribers as u64,
        elapsed: started.elapsed(),
        hist: None,
        extra: serde_json::json!({"rss_bytes_per_stream": per_stream, "redis_connections": connections}),
    }
}

/// Idle subscriptions, each confirmed by its first event.
pub(crate) async fn idle_subscriptions(args: &Args, channel: Conn) -> Vec<Box<dyn Send>> {
    let client = PubSubClient::new(channel);
    let mut open: Vec<Box<dyn Send>> = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let mut stream = client
            .clone()
            .subscribe(SubscribeRequest {
                channels: vec![format!("{}-idle-{}", args.prefix, i % 100)],
                ..Default::default()
            })
            .await
            .expect("subscribe")
            .into_inner();
        stream.next().await.expect("subscribed").expect("ok");
        open.push(Box::new(stream));
    }
    open
}

/// Idle Consume streams on empty queues. A consumer looks for work once when it
/// opens (one lease, whose ZPOPMIN no other script runs: the reaper's calls do
/// not count), then waits without calling Redis; the streams count as open once
/// Redis has run that many ZPOPMINs.
pub(crate) async fn idle_consumers(args: &Args, channel: Conn) -> Vec<Box<dyn Send>> {
    let client = QueueClient::new(channel);
    let pops_before = redis_command_calls(&args.redis_url, "zpopmin");
    let mut open: Vec<Box<dyn Send>> = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(ConsumeRequest {
            message: Some(consume_request::Message::Subscribe(Subscribe {
                queue: format!("{}-idle-{}", args.prefix, i % 100),
                max_in_flight: 1,
                lease: None,
                heartbeat_interval: None,
            })),
        })
        .await
        .expect("subscribe");
        let stream = client
            .clone()
            .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("consume")
            .into_inner();
        // The request side stays open too: closing it ends the consumer.
        open.push(Box::new((tx, stream)));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while redis_command_calls(&args.redis_url, "zpopmin") < pops_before + args.subscribers as u64 {
        assert!(
            Instant::now() < deadline,
            "the consumers did not all look for work within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    open
}
