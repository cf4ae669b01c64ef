//! Queue workloads: enqueues (unary and on producer streams), consumers, and
//! end to end.

use std::time::Duration;

use redwire::proto::queue_client::QueueClient;
use redwire::proto::*;
use tokio_stream::StreamExt;

use crate::driver::*;
use crate::{Args, Workload};

/// One EnqueueStream per worker of `args`, on `client`.
pub(crate) async fn enqueue_streams(
    args: &Args,
    client: &QueueClient<Conn>,
) -> ProducerStreams<EnqueueStreamRequest, EnqueueStreamResponse> {
    producer_streams(args.concurrency, |requests| {
        let mut client = client.clone();
        async move {
            client
                .enqueue_stream(requests)
                .await
                .expect("enqueue stream")
                .into_inner()
        }
    })
    .await
}

/// Sends one job on worker `worker`'s stream and checks that it was enqueued.
pub(crate) async fn enqueue_on(
    streams: &ProducerStreams<EnqueueStreamRequest, EnqueueStreamResponse>,
    worker: usize,
    request: EnqueueRequest,
) {
    let EnqueueRequest { queue, job } = request;
    let message = EnqueueStreamRequest { queue, job };
    let reply = streams[worker].lock().await.call(message).await;
    assert!(
        matches!(
            reply.result,
            Some(enqueue_stream_response::Result::Enqueued(_))
        ),
        "enqueue failed: {reply:?}"
    );
}

/// Unary enqueues to one queue.
pub(crate) async fn enqueue(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
    let client = QueueClient::new(channel);
    let queue = format!("{prefix}-q");
    closed_loop(args, serde_json::json!({}), move |_, _| {
        let (mut client, queue, payload) = (client.clone(), queue.clone(), payload.clone());
        async move {
            client
                .enqueue(EnqueueRequest {
                    queue,
                    job: Some(JobSpec {
                        payload,
                        ..Default::default()
                    }),
                })
                .await
                .expect("enqueue");
        }
    })
    .await
}

/// Enqueues on one EnqueueStream per worker.
pub(crate) async fn enqueue_stream(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
    let queue = format!("{prefix}-qs");
    let streams = enqueue_streams(args, &QueueClient::new(channel)).await;
    closed_loop(args, serde_json::json!({}), move |worker, _| {
        let (streams, queue, payload) = (streams.clone(), queue.clone(), payload.clone());
        async move {
            let job = JobSpec {
                payload,
                ..Default::default()
            };
            let request = EnqueueRequest {
                queue,
                job: Some(job),
            };
            enqueue_on(&streams, worker, request).await;
        }
    })
    .await
}

/// Consumers ack every job at once. For e2e, producers run alongside and each
/// payload carries its enqueue time, so latency is enqueue → handler.
pub(crate) async fn consume(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let client = QueueClient::new(channel);
    let queue = format!(
        "{}-{}",
        args.prefix,
        match args.workload {
            Workload::QueueE2e => "e2e",
            Workload::QueueE2eStream => "e2es",
            _ => "c",
        }
    );
    let e2e = matches!(args.workload, Workload::QueueE2e | Workload::QueueE2eStream);
    if !e2e {
        for chunk in (0..args.ops).collect::<Vec<_>>().chunks(500) {
            let jobs = chunk
                .iter()
                .map(|_| JobSpec {
                    payload: payload.clone(),
                    ..Default::default()
                })
                .collect();
            client
                .clone()
                .enqueue_batch(EnqueueBatchRequest {
                    queue: queue.clone(),
                    jobs,
                })
                .await
                .expect("prefill");
        }
    }
    let hist = histogram();
    // Producers have their own connection, as separate services would.
    let producer_client = QueueClient::new(connect(args));
    let streams = if args.workload == Workload::QueueE2eStream {
        Some(enqueue_streams(args, &producer_client).await)
    } else {
        None
    };
    let progress = Progress::new(args.ops);
    let producers = e2e.then(|| {
        let producer_args = args.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            drive(&producer_args, histogram(), move |worker, _| {
                let (mut client, queue, streams) =
                    (producer_client.clone(), queue.clone(), streams.clone());
                async move {
                    let job = JobSpec {
                        payload: now_micros().to_string().into_bytes(),
                        ..Default::default()
                    };
                    let request = EnqueueRequest {
                        queue,
                        job: Some(job),
                    };
                    match streams {
                        Some(streams) => enqueue_on(&streams, worker, request).await,
                        None => {
                            client.enqueue(request).await.expect("enqueue");
                        }
                    }
                }
            })
            .await
        })
    });
    let streams_wanted = match args.consumer_streams {
        0 => args.concurrency,
        n => n,
    };
    let max_in_flight = args.max_in_flight;
    let consumers = (0..streams_wanted).map(|_| {
        let (mut client, queue, hist, progress) = (
            client.clone(),
            queue.clone(),
            hist.clone(),
            progress.clone(),
        );
        tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            tx.send(ConsumeRequest {
                message: Some(consume_request::Message::Subscribe(Subscribe {
                    queue,
                    max_in_flight,
                    lease: None,
                    heartbeat_interval: None,
                })),
            })
            .await
            .expect("subscribe");
            let mut stream = client
                .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("consume")
                .into_inner();
            while !progress.is_complete() {
                let Ok(Some(Ok(message))) =
                    tokio::time::timeout(Duration::from_millis(200), stream.next()).await
                else {
                    continue;
                };
                if let Some(consume_response::Message::Delivery(d)) = message.message {
                    if e2e && let Ok(sent) = String::from_utf8_lossy(&d.payload).parse::<u64>() {
                        let _ = hist
                            .lock()
                            .await
                            .record(now_micros().saturating_sub(sent).max(1));
                    }
                    progress.complete_one();
                    let ack = AckItem {
                        job_id: d.job_id,
                        lease_token: d.lease_token,
                        result: Vec::new(),
                    };
                    if tx
                        .send(ConsumeRequest {
                            message: Some(consume_request::Message::Ack(ack)),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        })
    });
    futures::future::join_all(consumers).await;
    if let Some(producers) = producers {
        let _ = producers.await;
    }
    Report {
        ops: progress.done(),
        elapsed: progress.elapsed(),
        hist: e2e.then_some(hist),
        extra: serde_json::json!({"consumer_streams": streams_wanted, "max_in_flight": max_in_flight}),
    }
}
