//! Traces that follow a job: a Python producer enqueues with its `traceparent`,
//! a Rust consumer dequeues (and consumes) and acks under its own, and an OTLP
//! trace receiver started here (a real gRPC server for the OTLP trace service)
//! gets Redwire's spans: the Enqueue server span under the producer's span, a
//! `send <queue>` producer span whose context every Delivery carries, and in
//! the consumer's trace the Dequeue/Consume and Ack server spans and a
//! `receive <queue>` span linked to the producer's. Stream entries and
//! published messages carry their producer's context the same way. Without an
//! exporter the producer's own context is stored and delivered as sent.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use redwire::proto::queue_client::QueueClient;
use redwire::proto::*;
use support::{RedisServer, TestContext, eventually, free_port, ms};
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The consumer's trace: its own span, under which it calls Redwire.
const CONSUMER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CONSUMER_SPAN: &str = "00f067aa0ba902b7";

/// What the OTLP receiver got: every span, and the resources' service names.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        for resource_spans in request.into_inner().resource_spans {
            if let Some(resource) = resource_spans.resource
                && let Some(name) = attribute(&resource.attributes, "service.name")
            {
                self.services.lock().expect("lock").push(name);
            }
            for scope_spans in resource_spans.scope_spans {
                self.spans.lock().expect("lock").extend(scope_spans.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves the OTLP trace service on a loopback port; returns its address.
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// The one span named `name` in trace `trace_id`, once it has arrived.
    async fn span(&self, name: &str, trace_id: &str) -> Span {
        eventually(
            Duration::from_secs(20),
            &format!("span {name:?} of trace {trace_id}"),
            || async {
                let spans = self.spans.lock().expect("lock");
                let found: Vec<&Span> = spans
                    .iter()
                    .filter(|span| span.name == name && hex(&span.trace_id) == trace_id)
                    .collect();
                match found.as_slice() {
                    [] => None,
                    [span] => Some((*span).clone()),
                    many => panic!("{} spans {name:?} in trace {trace_id}", many.len()),
                }
            },
        )
        .await
    }
}

/// The string value of attribute `key`.
fn attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(text)),
        } => Some(text.clone()),
        AnyValue {
            value: Some(any_value::Value::IntValue(number)),
        } => Some(number.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The trace id and span id of a `traceparent`.
fn ids(traceparent: &str) -> (&str, &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent:?}");
    (parts[1], parts[2])
}

/// The `redwire` binary exporting spans to `otlp`, on Redis at `redis_url`.
struct Redwire {
    child: Child,
    addr: String,
}

impl Redwire {
    async fn start(redis_url: &str, otlp: std::net::SocketAddr) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_redwire"))
            .args(["--listen", &addr, "--redis-url", redis_url])
            .args(["--admin-listen", "off", "--health-interval", "100ms"])
            .args(["--log", "warn"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            // Export every 100 ms, so the test does not wait for the 5 s default.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .stdout(Stdio::null())
            .spawn()
            .expect("start redwire");
        let redwire = Self { child, addr };
        let health = HealthClient::new(redwire.channel());
        eventually(Duration::from_secs(30), "redwire serving", || {
            let mut health = health.clone();
            async move {
                let reply = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .ok()?;
                (reply.into_inner().status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        redwire
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_lazy()
    }

    /// Stops it with SIGTERM; true when it exited cleanly.
    fn stop(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Redwire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the Python producer printed.
struct Produced {
    trace_id: String,
    span_id: String,
    job_ids: HashMap<String, String>,
}

/// Runs tests/python/traced_producer.py against `addr`, one job per queue.
fn python_produces(addr: &str, queues: &[&str]) -> Produced {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/python-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test installs it (scripts/deps.sh, ensure_python_env)",
        python.display()
    );
    let output = Command::new(python)
        .arg(root.join("tests/python/traced_producer.py"))
        .arg(addr)
        .args(queues)
        .output()
        .expect("run the python producer");
    assert!(
        output.status.success(),
        "the python producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let text = |key: &str| json[key].as_str().expect(key).to_owned();
    let job_ids = json["job_ids"]
        .as_object()
        .expect("job_ids")
        .iter()
        .map(|(queue, id)| (queue.clone(), id.as_str().expect("id").to_owned()))
        .collect();
    Produced {
        trace_id: text("trace_id"),
        span_id: text("span_id"),
        job_ids,
    }
}

/// `message` carrying the consumer's `traceparent`.
fn as_consumer<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let traceparent = format!("00-{CONSUMER_TRACE}-{CONSUMER_SPAN}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    request
}

/// The span ids of the spans `span` links to, with their trace ids.
fn links(span: &Span) -> Vec<(String, String)> {
    span.links
        .iter()
        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_s_trace_goes_from_a_python_producer_to_a_rust_consumer() {
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let redis = RedisServer::start();
    let mut redwire = Redwire::start(&redis.url(), otlp).await;
    let produced = python_produces(&redwire.addr, &["traced", "traced-stream"]);
    let mut queue = QueueClient::new(redwire.channel());

    // Dequeue, look the job up, ack: the consumer's calls in its own trace.
    let dequeued = queue
        .dequeue(as_consumer(DequeueRequest {
            queue: "traced".into(),
            max_jobs: 1,
            wait: ms(10_000),
            ..Default::default()
        }))
        .await
        .expect("dequeue")
        .into_inner()
        .jobs;
    let [delivery] = dequeued.as_slice() else {
        panic!("one delivery expected, got {dequeued:?}");
    };
    assert_eq!(delivery.job_id, produced.job_ids["traced"]);
    let carried = delivery.trace_context.clone().expect("a trace context");
    let (trace_id, send_span_id) = ids(&carried.traceparent);
    assert_eq!(trace_id, produced.trace_id, "the producer's trace");
    assert_ne!(send_span_id, produced.span_id, "Redwire's send span");
    assert_eq!(carried.tracestate, "py=1", "the producer's tracestate");
    let job = queue
        .get_job(GetJobRequest {
            queue: "traced".into(),
            job_id: delivery.job_id.clone(),
        })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(job.trace_id, produced.trace_id);
    assert_eq!(job.trace_context, Some(carried.clone()));
    queue
        .ack(as_consumer(AckRequest {
            queue: "traced".into(),
            items: vec![AckItem {
                job_id: delivery.job_id.clone(),
                lease_token: delivery.lease_token.clone(),
                result: Vec::new(),
            }],
        }))
        .await
        .expect("ack");

    // A Consume stream carries the context too.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ConsumeRequest {
        message: Some(consume_request::Message::Subscribe(Subscribe {
            queue: "traced-stream".into(),
            max_in_flight: 1,
            ..Default::default()
        })),
    })
    .await
    .expect("subscribe");
    let mut stream = queue
        .consume(as_consumer(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .expect("consume")
        .into_inner();
    let streamed = loop {
        let reply = stream.message().await.expect("a message").expect("open");
        if let Some(consume_response::Message::Delivery(delivery)) = reply.message {
            break delivery;
        }
    };
    let streamed_context = streamed.trace_context.clone().expect("a trace context");
    let (streamed_trace, streamed_send_span) = ids(&streamed_context.traceparent);
    assert_eq!(streamed_trace, produced.trace_id);
    tx.send(ConsumeRequest {
        message: Some(consume_request::Message::Ack(AckItem {
            job_id: streamed.job_id.clone(),
            lease_token: streamed.lease_token.clone(),
            result: Vec::new(),
        })),
    })
    .await
    .expect("ack on the stream");
    drop(tx);
    while let Ok(Some(_)) = stream.message().await {}

    // The producer's trace: Enqueue under the Python span, send under Enqueue.
    let enqueues: Vec<Span> = eventually(Duration::from_secs(20), "two Enqueue spans", || {
        let spans = receiver.spans.lock().expect("lock").clone();
        async move {
            let found: Vec<Span> = spans
                .into_iter()
                .filter(|s| s.name == "redwire.v1.Queue/Enqueue")
                .collect();
            (found.len() == 2).then_some(found)
        }
    })
    .await;
    for enqueue in &enqueues {
        assert_eq!(hex(&enqueue.trace_id), produced.trace_id);
        assert_eq!(hex(&enqueue.parent_span_id), produced.span_id);
        assert_eq!(enqueue.kind, SpanKind::Server as i32);
        assert_eq!(
            attribute(&enqueue.attributes, "rpc.system").as_deref(),
            Some("grpc")
        );
        assert_eq!(
            attribute(&enqueue.attributes, "rpc.service").as_deref(),
            Some("redwire.v1.Queue")
        );
        assert_eq!(
            attribute(&enqueue.attributes, "rpc.method").as_deref(),
            Some("Enqueue")
        );
        assert_eq!(
            attribute(&enqueue.attributes, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
    }
    let enqueue_ids: Vec<String> = enqueues.iter().map(|s| hex(&s.span_id)).collect();
    let send = receiver.span("send traced", &produced.trace_id).await;
    assert_eq!(send.kind, SpanKind::Producer as i32);
    assert_eq!(
        hex(&send.span_id),
        send_span_id,
        "the context Delivery carries"
    );
    assert!(enqueue_ids.contains(&hex(&send.parent_span_id)));
    assert_eq!(
        attribute(&send.attributes, "messaging.destination.name").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attribute(&send.attributes, "messaging.message.id"),
        Some(produced.job_ids["traced"].clone())
    );

    // The consumer's trace: its calls under its span, receive linked to send.
    let dequeue = receiver
        .span("redwire.v1.Queue/Dequeue", CONSUMER_TRACE)
        .await;
    assert_eq!(hex(&dequeue.parent_span_id), CONSUMER_SPAN);
    let receive = receiver.span("receive traced", CONSUMER_TRACE).await;
    assert_eq!(receive.kind, SpanKind::Consumer as i32);
    assert_eq!(hex(&receive.parent_span_id), hex(&dequeue.span_id));
    assert_eq!(
        links(&receive),
        [(produced.trace_id.clone(), send_span_id.to_owned())],
        "receive links to the producer's send span"
    );
    let ack = receiver.span("redwire.v1.Queue/Ack", CONSUMER_TRACE).await;
    assert_eq!(hex(&ack.parent_span_id), CONSUMER_SPAN);
    let consume = receiver
        .span("redwire.v1.Queue/Consume", CONSUMER_TRACE)
        .await;
    let streamed_receive = receiver.span("receive traced-stream", CONSUMER_TRACE).await;
    assert_eq!(hex(&streamed_receive.parent_span_id), hex(&consume.span_id));
    assert_eq!(
        links(&streamed_receive),
        [(produced.trace_id.clone(), streamed_send_span.to_owned())]
    );
    assert_stream_entries_carry_their_producer(&redwire, &receiver).await;
    assert_messages_carry_their_publisher(&redwire, &receiver).await;
    assert!(
        receiver
            .services
            .lock()
            .expect("lock")
            .iter()
            .all(|name| name == "redwire"),
        "service.name defaults to redwire"
    );
    assert!(redwire.stop(), "redwire exits cleanly on SIGTERM");
}

/// An Append under one trace and a Tail under the consumer's: the entry
/// carries the `send` span's context and the tail's `receive` links to it.
async fn assert_stream_entries_carry_their_producer(redwire: &Redwire, receiver: &Receiver) {
    const PRODUCER_TRACE: &str = "5ce0e9a56015fec5aadfa328ae398115";
    let mut stream = redwire::proto::stream_client::StreamClient::new(redwire.channel());
    let mut append = Request::new(AppendRequest {
        stream: "traced-log".into(),
        fields: [("k".to_owned(), b"v".to_vec())].into(),
        ..Default::default()
    });
    let traceparent = format!("00-{PRODUCER_TRACE}-ab42124a3c573678-01");
    append
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    stream.append(append).await.expect("append");
    let mut tail = stream
        .tail(as_consumer(TailRequest {
            streams: vec![TailPosition {
                stream: "traced-log".into(),
                after: "0".into(),
            }],
            ..Default::default()
        }))
        .await
        .expect("tail")
        .into_inner();
    let entry = loop {
        let reply = tail.message().await.expect("a message").expect("open");
        if let Some(tail_response::Event::Entry(entry)) = reply.event {
            break entry;
        }
    };
    drop(tail);
    assert_eq!(entry.fields.len(), 1, "only the appended field: {entry:?}");
    let carried = entry.trace_context.expect("a trace context");
    let (trace_id, send_span_id) = ids(&carried.traceparent);
    assert_eq!(trace_id, PRODUCER_TRACE);
    let send = receiver.span("send traced-log", PRODUCER_TRACE).await;
    assert_eq!(hex(&send.span_id), send_span_id);
    let receive = receiver.span("receive traced-log", CONSUMER_TRACE).await;
    assert_eq!(
        links(&receive),
        [(PRODUCER_TRACE.to_owned(), send_span_id.to_owned())]
    );
}

/// A subscriber's message carries the context of the publisher's `send` span.
async fn assert_messages_carry_their_publisher(redwire: &Redwire, receiver: &Receiver) {
    const PUBLISHER_TRACE: &str = "6e0c63257de34c92bf9efcd03927272e";
    let mut pubsub = redwire::proto::pub_sub_client::PubSubClient::new(redwire.channel());
    let mut messages = pubsub
        .subscribe(SubscribeRequest {
            channels: vec!["traced-alerts".into()],
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    // `subscribed` first: a publish after it reaches this subscriber.
    messages.message().await.expect("subscribed").expect("open");
    let mut publish = Request::new(PublishRequest {
        channel: "traced-alerts".into(),
        payload: b"disk full".to_vec(),
        sharded: false,
    });
    let traceparent = format!("00-{PUBLISHER_TRACE}-4d1e00c0db9010db-01");
    publish
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    pubsub.publish(publish).await.expect("publish");
    let message = loop {
        let reply = messages.message().await.expect("a message").expect("open");
        if let Some(subscribe_response::Event::Message(message)) = reply.event {
            break message;
        }
    };
    assert_eq!(message.payload, b"disk full");
    let carried = message.trace_context.expect("a trace context");
    let (trace_id, send_span_id) = ids(&carried.traceparent);
    assert_eq!(trace_id, PUBLISHER_TRACE);
    let send = receiver.span("send traced-alerts", PUBLISHER_TRACE).await;
    assert_eq!(hex(&send.span_id), send_span_id);
}

/// Enqueue `queue` with `traceparent` (and a tracestate) as call metadata.
fn enqueue_with(queue: &str, traceparent: Option<&str>) -> Request<EnqueueRequest> {
    let mut request = Request::new(EnqueueRequest {
        queue: queue.into(),
        job: Some(JobSpec {
            payload: b"x".to_vec(),
            ..Default::default()
        }),
    });
    if let Some(traceparent) = traceparent {
        let metadata = request.metadata_mut();
        metadata.insert("traceparent", traceparent.parse().expect("ascii"));
        metadata.insert("tracestate", "vendor=7".parse().expect("ascii"));
    }
    request
}

#[tokio::test]
async fn without_an_exporter_the_producer_s_own_context_is_delivered() {
    let ctx = TestContext::standalone().await;
    let mut queue = ctx.queue();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for (traceparent, expected) in [
        (Some(traceparent), Some(traceparent)),
        (Some("00-not-a-traceparent-01"), None),
        (None, None),
    ] {
        queue
            .enqueue(enqueue_with("untraced", traceparent))
            .await
            .expect("enqueue");
        let jobs = queue
            .dequeue(DequeueRequest {
                queue: "untraced".into(),
                max_jobs: 1,
                wait: ms(5_000),
                ..Default::default()
            })
            .await
            .expect("dequeue")
            .into_inner()
            .jobs;
        let [delivery] = jobs.as_slice() else {
            panic!("one delivery expected, got {jobs:?}");
        };
        let carried = delivery.trace_context.as_ref();
        assert_eq!(
            carried.map(|c| c.traceparent.as_str()),
            expected,
            "sent {traceparent:?}"
        );
        let job = queue
            .get_job(GetJobRequest {
                queue: "untraced".into(),
                job_id: delivery.job_id.clone(),
            })
            .await
            .expect("get job")
            .into_inner()
            .job
            .expect("job");
        let expected_id = expected.map_or("", |traceparent| ids(traceparent).0);
        assert_eq!(job.trace_id, expected_id);
        if expected.is_some() {
            assert_eq!(carried.map(|c| c.tracestate.as_str()), Some("vendor=7"));
        }
    }
}

#[tokio::test]
async fn stream_entries_keep_the_producer_s_context_out_of_their_fields() {
    let ctx = TestContext::standalone().await;
    let mut stream = ctx.stream();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut append = Request::new(AppendRequest {
        stream: "log".into(),
        fields: [("k".to_owned(), b"v".to_vec())].into(),
        ..Default::default()
    });
    append
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    stream.append(append).await.expect("append");
    let entries = stream
        .range(RangeRequest {
            stream: "log".into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .entries;
    let [entry] = entries.as_slice() else {
        panic!("one entry expected, got {entries:?}");
    };
    assert_eq!(entry.fields, [("k".to_owned(), b"v".to_vec())].into());
    let carried = entry.trace_context.as_ref().expect("a trace context");
    assert_eq!(carried.traceparent, traceparent);

    // Redwire's field names are refused, and nothing is written.
    let refused = stream
        .append(AppendRequest {
            stream: "log".into(),
            fields: [("redwire.traceparent".to_owned(), b"forged".to_vec())].into(),
            ..Default::default()
        })
        .await;
    support::assert_invalid("fields[\"redwire.traceparent\"]", refused);
    let after = stream
        .range(RangeRequest {
            stream: "log".into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .entries;
    assert_eq!(after.len(), 1, "nothing appended");
}

#[tokio::test]
async fn published_messages_carry_the_publisher_s_context_and_bare_payloads_stay_bare() {
    let ctx = TestContext::standalone().await;
    let mut messages = ctx
        .pubsub()
        .subscribe(SubscribeRequest {
            channels: vec!["alerts".into()],
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    messages.message().await.expect("subscribed").expect("open");
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    // A payload that starts like an envelope must come back as it was sent.
    let tricky = vec![0, 1, 0, 2, b'h', b'i'];
    for (payload, context) in [
        (b"plain".to_vec(), None),
        (b"traced".to_vec(), Some(traceparent)),
        (tricky.clone(), None),
    ] {
        let mut publish = Request::new(PublishRequest {
            channel: "alerts".into(),
            payload: payload.clone(),
            sharded: false,
        });
        if let Some(traceparent) = context {
            publish
                .metadata_mut()
                .insert("traceparent", traceparent.parse().expect("ascii"));
        }
        ctx.pubsub().publish(publish).await.expect("publish");
        let message = loop {
            let reply = messages.message().await.expect("a message").expect("open");
            if let Some(subscribe_response::Event::Message(message)) = reply.event {
                break message;
            }
        };
        assert_eq!(message.payload, payload);
        assert_eq!(
            message.trace_context.map(|c| c.traceparent),
            context.map(str::to_owned)
        );
    }
}
