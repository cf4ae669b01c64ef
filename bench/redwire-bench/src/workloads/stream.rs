//! Stream workloads: appends (unary and on producer streams) and group reads.

use std::time::Duration;

use redwire::proto::stream_client::StreamClient;
use redwire::proto::*;
use tokio_stream::StreamExt;

use crate::driver::*;
use crate::{Args, Workload};

/// Unary appends to one stream.
pub(crate) async fn append(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
    let client = StreamClient::new(channel);
    let stream = format!("{prefix}-s");
    closed_loop(args, serde_json::json!({}), move |_, _| {
        let (mut client, stream, payload) = (client.clone(), stream.clone(), payload.clone());
        async move {
            client
                .append(AppendRequest {
                    stream,
                    fields: [("v".to_owned(), payload)].into(),
                    ..Default::default()
                })
                .await
                .expect("append");
        }
    })
    .await
}

/// Appends on one AppendStream per worker; as the producer-stream floor, appends
/// the server refuses before any Redis work.
pub(crate) async fn append_stream(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
    let client = StreamClient::new(channel);
    let floor = args.workload == Workload::ProducerStreamFloor;
    let stream = if floor {
        String::new()
    } else {
        format!("{prefix}-ss")
    };
    let streams = producer_streams(args.concurrency, |requests| {
        let mut client = client.clone();
        async move {
            client
                .append_stream(requests)
                .await
                .expect("append stream")
                .into_inner()
        }
    })
    .await;
    closed_loop(args, serde_json::json!({}), move |worker, _| {
        let (streams, stream, payload) = (streams.clone(), stream.clone(), payload.clone());
        async move {
            let request = AppendStreamRequest {
                stream,
                fields: [("v".to_owned(), payload)].into(),
                ..Default::default()
            };
            let reply = streams[worker].lock().await.call(request).await;
            match (floor, &reply.result) {
                (false, Some(append_stream_response::Result::Appended(_))) => {}
                (true, Some(append_stream_response::Result::Failed(failure)))
                    if failure.code == tonic::Code::InvalidArgument as i32 => {}
                _ => panic!("unexpected append reply: {reply:?}"),
            }
        }
    })
    .await
}

pub(crate) async fn group(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let client = StreamClient::new(channel);
    let stream = format!("{}-sg", args.prefix);
    client
        .clone()
        .create_group(CreateGroupRequest {
            stream: stream.clone(),
            group: "g".into(),
            start: "0".into(),
            max_deliveries: 0,
        })
        .await
        .expect("group");
    for chunk in (0..args.ops).collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|_| NewEntry {
                fields: [("v".to_owned(), payload.clone())].into(),
                id: String::new(),
            })
            .collect();
        client
            .clone()
            .append_batch(AppendBatchRequest {
                stream: stream.clone(),
                entries,
                trim: None,
            })
            .await
            .expect("prefill");
    }
    let progress = Progress::new(args.ops);
    let consumers = (0..args.concurrency).map(|i| {
        let (mut client, stream, progress) = (client.clone(), stream.clone(), progress.clone());
        tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            let open = OpenGroup {
                stream,
                group: "g".into(),
                consumer: format!("c{i}"),
                max_unacked: 32,
                claim_idle: None,
                heartbeat_interval: None,
            };
            tx.send(ReadGroupRequest {
                message: Some(read_group_request::Message::Open(open)),
            })
            .await
            .expect("open");
            let mut events = client
                .read_group(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("read group")
                .into_inner();
            while !progress.is_complete() {
                let Ok(Some(Ok(event))) =
                    tokio::time::timeout(Duration::from_millis(200), events.next()).await
                else {
                    continue;
                };
                if let Some(read_group_response::Event::Entry(e)) = event.event {
                    progress.complete_one();
                    if tx
                        .send(ReadGroupRequest {
                            message: Some(read_group_request::Message::Ack(e.id)),
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
    Report {
        ops: progress.done(),
        elapsed: progress.elapsed(),
        hist: None,
        extra: serde_json::json!({}),
    }
}
