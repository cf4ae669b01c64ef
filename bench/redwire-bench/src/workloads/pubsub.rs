//! The PubSub workload: publishers and subscribers on one channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redwire::proto::pub_sub_client::PubSubClient;
use redwire::proto::*;
use tokio_stream::StreamExt;

use crate::Args;
use crate::driver::*;
use crate::metrics::*;

pub(crate) async fn publish_subscribe(args: &Args, channel: Conn, _payload: Vec<u8>) -> Report {
    let client = PubSubClient::new(channel);
    let name = format!("{}-fanout", args.prefix);
    let hist = histogram();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..args.subscribers {
        let mut stream = client
            .clone()
            .subscribe(SubscribeRequest {
                channels: vec![name.clone()],
                ..Default::default()
            })
            .await
            .expect("subscribe")
            .into_inner();
        stream.next().await.expect("subscribed").expect("ok");
        let (hist, delivered, expect) = (hist.clone(), delivered.clone(), args.ops);
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < expect {
                let Ok(Some(Ok(event))) =
                    tokio::time::timeout(Duration::from_secs(5), stream.next()).await
                else {
                    return;
                };
                if let Some(subscribe_response::Event::Message(m)) = event.event {
                    got += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Ok(sent) = String::from_utf8_lossy(&m.payload).parse::<u64>() {
                        let _ = hist
                            .lock()
                            .await
                            .record(now_micros().saturating_sub(sent).max(1));
                    }
                }
            }
        }));
    }
    let redis_cpu_before = redis_cpu_seconds(&args.redis_url);
    let started = Instant::now();
    let publisher = Args {
        concurrency: 1,
        ..args.clone()
    };
    drive(&publisher, histogram(), move |_, _| {
        let (mut client, name) = (client.clone(), name.clone());
        async move {
            client
                .publish(PublishRequest {
                    channel: name,
                    payload: now_micros().to_string().into_bytes(),
                    sharded: false,
                })
                .await
                .expect("publish");
        }
    })
    .await;
    futures::future::join_all(readers).await;
    let elapsed = started.elapsed();
    let redis_us_per_publish = redis_cpu_before
        .zip(redis_cpu_seconds(&args.redis_url))
        .map(|(before, after)| (after - before) * 1e6 / args.ops.max(1) as f64);
    Report {
        ops: delivered.load(Ordering::Relaxed),
        elapsed,
        hist: Some(hist),
        extra: serde_json::json!({
            "subscribers": args.subscribers,
            "published": args.ops,
            "redis_cpu_us_per_publish": redis_us_per_publish,
        }),
    }
}
