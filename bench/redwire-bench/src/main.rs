//! `redwire-bench`: the load generator. Drives a running Redwire through the
//! generated tonic clients (or, for the `direct-*` workloads, Redwire's own store
//! layer straight on Redis — the same Redis work without gRPC: the limit of the
//! design) and prints one JSON line of results per run.
//!
//! Closed loop by default (`--concurrency` workers, each issuing its next call when
//! the last returns); `--rate` switches to a fixed arrival rate whose latencies are
//! measured from each call's scheduled start, so queueing delay is not hidden
//! (coordinated omission). Latencies go into an HDR histogram; CPU seconds of the
//! Redwire and redis-server processes come from /proc when their pids are given.
//!
//! `scripts/bench` runs every workload against the peers and writes the tables.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use redwire::proto::cache_client::CacheClient;
use redwire::proto::lock_client::LockClient;
use redwire::proto::pub_sub_client::PubSubClient;
use redwire::proto::queue_client::QueueClient;
use redwire::proto::stream_client::StreamClient;
use redwire::proto::*;
use redwire::redis::keys::{Space, user_key};
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Unary Cache.Get of one small key.
    CacheGet,
    /// Unary Cache.Set of one small key.
    CacheSet,
    /// Cache.GetMany of `--batch` keys per call (ops count keys).
    CacheGetMany,
    /// Queue.Enqueue of no-op jobs.
    QueueEnqueue,
    /// Queue.EnqueueStream of no-op jobs: one producer stream per worker, each
    /// waiting for a job's reply before sending the next.
    QueueEnqueueStream,
    /// Consume (and ack) `--ops` pre-filled jobs with `--concurrency` consumers.
    QueueConsume,
    /// Producers (unary Enqueue) and consumers at once; latency is enqueue → handler.
    QueueE2e,
    /// As queue-e2e, with producers on EnqueueStream (one reply awaited per job).
    QueueE2eStream,
    /// One publisher, `--subscribers` subscribers; ops count deliveries.
    Pubsub,
    /// Stream.Append of one-field entries.
    StreamAppend,
    /// Stream.AppendStream of one-field entries: one producer stream per worker,
    /// each waiting for an entry's reply before sending the next.
    StreamAppendStream,
    /// ReadGroup + ack of `--ops` pre-filled entries with `--concurrency` consumers.
    StreamGroup,
    /// Acquire + release of one resource by `--concurrency` clients.
    Lock,
    /// Open `--subscribers` idle subscriptions and report memory and connections.
    Idle,
    /// Open `--subscribers` idle Consume streams on empty queues and report memory
    /// and connections.
    IdleConsumers,
    /// Unary grpc.health.v1.Health/Check: the same server and transport with no
    /// Redis behind it, the floor of any unary call's cost.
    GrpcFloor,
    /// Stream.AppendStream as stream-append-stream, each entry refused by
    /// validation (an empty stream name) before any Redis work: the floor of a
    /// producer-stream message's round trip.
    ProducerStreamFloor,
    /// Redwire's cache store directly on Redis: GET.
    DirectGet,
    /// Redwire's cache store directly on Redis: SET.
    DirectSet,
    /// Redwire's cache store directly on Redis: MGET of `--batch` keys (ops count
    /// keys).
    DirectGetMany,
    /// Redwire's queue store directly on Redis: enqueue, then lease and ack.
    DirectQueue,
    /// Redwire's stream store directly on Redis: XADD of one entry.
    DirectXadd,
    /// XREADGROUP (32 at a time) + XACK of `--ops` pre-filled entries, directly on
    /// Redis with `--concurrency` consumers.
    DirectStreamGroup,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for Redwire")]
struct Args {
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Redwire's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Redis URL (for direct-* workloads and idle's connection count).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Operations to run.
    #[arg(long, default_value_t = 10_000)]
    ops: u64,
    /// Concurrent workers (closed loop) or in-flight limit (fixed rate).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Fixed arrival rate in operations per second; 0 runs closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 16)]
    payload_bytes: usize,
    /// Keys per GetMany call.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Subscribers for pubsub; open streams for idle and idle-consumers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Load generator threads; 0 means one per CPU core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Redwire's pid, for CPU and memory figures.
    #[arg(long)]
    redwire_pid: Option<u32>,
    /// redis-server's pid, for CPU figures.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Consume streams in the queue workloads; 0 means one per `--concurrency`.
    #[arg(long, default_value_t = 0)]
    consumer_streams: usize,
    /// Jobs each Consume stream may hold at once.
    #[arg(long, default_value_t = 32)]
    max_in_flight: u32,
    /// A name prefix, so repeated runs do not share keys.
    #[arg(long, default_value = "bench")]
    prefix: String,
}

/// CPU seconds (user + system) of a process so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A section of Redis's `INFO`, or None when Redis cannot be asked.
fn redis_info(url: &str, section: &str) -> Option<String> {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("INFO").arg(section).query(&mut c))
        .ok()
}

/// The number that follows `prefix` at the start of a line of `INFO` text
/// ("used_cpu_sys:", "cmdstat_evalsha:calls=").
fn info_number(info: &str, prefix: &str) -> Option<f64> {
    info.lines().find_map(|line| {
        let rest = line.strip_prefix(prefix)?;
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// Redis's own CPU seconds so far, from `INFO cpu` (getrusage: microseconds, where
/// /proc's utime and stime tick at 10 ms), for per-message figures too small for
/// ticks.
fn redis_cpu_seconds(url: &str) -> Option<f64> {
    let info = redis_info(url, "cpu")?;
    Some(info_number(&info, "used_cpu_sys:")? + info_number(&info, "used_cpu_user:")?)
}

/// How many times Redis has run `command` so far, scripts' calls included.
fn redis_command_calls(url: &str, command: &str) -> u64 {
    redis_info(url, "commandstats")
        .and_then(|info| info_number(&info, &format!("cmdstat_{command}:calls=")))
        .unwrap_or(0.0) as u64
}

/// Resident memory of a process in bytes, from /proc/<pid>/status.
fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn now_micros() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0),
    )
    .unwrap_or(0)
}

fn ms(n: u64) -> Option<prost_types::Duration> {
    Some(redwire::time::proto_duration(Duration::from_millis(n)))
}

type Hist = Arc<Mutex<Histogram<u64>>>;

fn histogram() -> Hist {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ))
}

/// Runs `op(worker, i)` `ops` times from `concurrency` workers (closed loop), or at
/// `rate`; latency counts from each call's scheduled start.
async fn drive<F, Fut>(args: &Args, hist: Hist, op: F) -> Duration
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tickets = Arc::new(Tickets::new(args, started));
    let workers = (0..args.concurrency).map(|worker| {
        let (tickets, hist, op) = (tickets.clone(), hist.clone(), op.clone());
        tokio::spawn(async move {
            loop {
                let Some((i, scheduled)) = tickets.next().await else {
                    return;
                };
                op(worker, i).await;
                let micros = u64::try_from(scheduled.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let _ = hist.lock().await.record(micros);
            }
        })
    });
    futures::future::join_all(workers).await;
    started.elapsed()
}

/// Hands out operation numbers with their scheduled start: at once in a closed loop,
/// or at `--rate` from a pacing thread. Tokio's timers tick in milliseconds and would
/// release each millisecond's calls in one burst; a thread sleeping to every slot
/// spreads them (to the OS timer's slack, tens of µs). A late slot still counts
/// from its scheduled time, so queueing is not hidden (coordinated omission). The
/// closed loop takes a number with one atomic add, no lock, as it runs per operation.
enum Tickets {
    ClosedLoop { next: AtomicU64, ops: u64 },
    Paced(Mutex<tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>>),
}

impl Tickets {
    fn new(args: &Args, started: Instant) -> Self {
        if args.rate == 0 {
            return Self::ClosedLoop {
                next: AtomicU64::new(0),
                ops: args.ops,
            };
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (ops, rate) = (args.ops, args.rate as f64);
        std::thread::spawn(move || {
            for i in 0..ops {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send((i, at)).is_err() {
                    return;
                }
            }
        });
        Self::Paced(Mutex::new(rx))
    }

    async fn next(&self) -> Option<(u64, Instant)> {
        match self {
            Self::ClosedLoop { next, ops } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                (i < *ops).then(|| (i, Instant::now()))
            }
            Self::Paced(rx) => rx.lock().await.recv().await,
        }
    }
}

/// Counts completed operations of a consuming workload and notes when the last
/// one completed, so the time consumers take to notice the end is not measured.
struct Progress {
    done: AtomicU64,
    total: u64,
    started: Instant,
    finished: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicU64::new(0),
            total,
            started: Instant::now(),
            finished: std::sync::Mutex::new(None),
        })
    }

    /// Counts one operation.
    fn complete_one(&self) {
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.total
            && let Ok(mut finished) = self.finished.lock()
        {
            *finished = Some(Instant::now());
        }
    }

    fn is_complete(&self) -> bool {
        self.done.load(Ordering::Relaxed) >= self.total
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// From the start to the last operation (or to now, if the run fell short).
    fn elapsed(&self) -> Duration {
        let finished = self.finished.lock().ok().and_then(|f| *f);
        finished.unwrap_or_else(Instant::now) - self.started
    }
}

/// Runs `op` `--ops` times (closed loop, or at `--rate`) and reports its latencies.
async fn closed_loop<F, Fut>(args: &Args, extra: serde_json::Value, op: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let hist = histogram();
    let elapsed = drive(args, hist.clone(), op).await;
    Report {
        ops: args.ops,
        elapsed,
        hist: Some(hist),
        extra,
    }
}

/// Runs one call per `--batch` operations (each call moves `--batch` keys), closed
/// loop or at `--rate`, and reports operations as keys with each call's latency.
async fn batched_loop<F, Fut>(args: &Args, op: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let calls = Args {
        ops: args.ops / args.batch.max(1) as u64,
        ..args.clone()
    };
    let hist = histogram();
    let elapsed = drive(&calls, hist.clone(), op).await;
    Report {
        ops: calls.ops * args.batch as u64,
        elapsed,
        hist: Some(hist),
        extra: serde_json::json!({"batch": args.batch}),
    }
}

struct Report {
    ops: u64,
    elapsed: Duration,
    hist: Option<Hist>,
    extra: serde_json::Value,
}

/// One worker's open producer stream (EnqueueStream, AppendStream): sends one
/// message and waits for its reply, as a unary call would, without a new call.
struct ProducerStream<Req, Resp> {
    tx: tokio::sync::mpsc::Sender<Req>,
    replies: tonic::Streaming<Resp>,
}

impl<Req, Resp> ProducerStream<Req, Resp> {
    async fn call(&mut self, request: Req) -> Resp {
        self.tx.send(request).await.expect("producer stream open");
        self.replies
            .message()
            .await
            .expect("producer stream reply")
            .expect("one reply per message")
    }
}

/// One producer stream per worker, opened by `open` before the clock starts.
type ProducerStreams<Req, Resp> = Arc<Vec<Mutex<ProducerStream<Req, Resp>>>>;

async fn producer_streams<Req, Resp, F, Fut>(workers: usize, open: F) -> ProducerStreams<Req, Resp>
where
    F: Fn(tokio_stream::wrappers::ReceiverStream<Req>) -> Fut,
    Fut: std::future::Future<Output = tonic::Streaming<Resp>>,
{
    let mut streams = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let replies = open(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        streams.push(Mutex::new(ProducerStream { tx, replies }));
    }
    Arc::new(streams)
}

/// One EnqueueStream per worker of `args`, on `client`.
async fn enqueue_streams(
    args: &Args,
    client: &QueueClient<Channel>,
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
async fn enqueue_on(
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

async fn run(args: &Args, channel: Channel) -> Report {
    let payload = vec![b'x'; args.payload_bytes];
    let prefix = args.prefix.clone();
    match args.workload {
        Workload::CacheGet | Workload::CacheSet => {
            let client = CacheClient::new(channel);
            let key = format!("{prefix}:k");
            client
                .clone()
                .set(SetRequest {
                    key: key.clone(),
                    value: payload.clone(),
                    ..Default::default()
                })
                .await
                .expect("set");
            let get = args.workload == Workload::CacheGet;
            closed_loop(args, serde_json::json!({}), move |_, _| {
                let (mut client, key, payload) = (client.clone(), key.clone(), payload.clone());
                async move {
                    if get {
                        client.get(GetRequest { key }).await.expect("get");
                    } else {
                        client
                            .set(SetRequest {
                                key,
                                value: payload,
                                ..Default::default()
                            })
                            .await
                            .expect("set");
                    }
                }
            })
            .await
        }
        Workload::GrpcFloor => {
            let client = HealthClient::new(channel);
            closed_loop(args, serde_json::json!({}), move |_, _| {
                let mut client = client.clone();
                async move {
                    client
                        .check(HealthCheckRequest::default())
                        .await
                        .expect("health check");
                }
            })
            .await
        }
        Workload::CacheGetMany => {
            let client = CacheClient::new(channel);
            let keys: Vec<String> = (0..args.batch).map(|i| format!("{prefix}:m{i}")).collect();
            let values = keys
                .iter()
                .map(|k| KeyValue {
                    key: k.clone(),
                    value: payload.clone(),
                    found: false,
                })
                .collect();
            client
                .clone()
                .set_many(SetManyRequest { values, ttl: None })
                .await
                .expect("set many");
            batched_loop(args, move |_, _| {
                let (mut client, keys) = (client.clone(), keys.clone());
                async move {
                    client
                        .get_many(GetManyRequest { keys })
                        .await
                        .expect("get many");
                }
            })
            .await
        }
        Workload::QueueEnqueue => {
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
        Workload::QueueEnqueueStream => {
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
        Workload::QueueConsume | Workload::QueueE2e | Workload::QueueE2eStream => {
            queue_consume(args, channel, payload).await
        }
        Workload::Pubsub => pubsub(args, channel, payload).await,
        Workload::StreamAppend => {
            let client = StreamClient::new(channel);
            let stream = format!("{prefix}-s");
            closed_loop(args, serde_json::json!({}), move |_, _| {
                let (mut client, stream, payload) =
                    (client.clone(), stream.clone(), payload.clone());
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
        Workload::StreamAppendStream | Workload::ProducerStreamFloor => {
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
        Workload::StreamGroup => stream_group(args, channel, payload).await,
        Workload::Lock => {
            let client = LockClient::new(channel);
            let resource = format!("{prefix}-lock");
            closed_loop(args, serde_json::json!({}), move |_, _| {
                let (mut client, resource) = (client.clone(), resource.clone());
                async move {
                    let grant = client
                        .acquire(AcquireRequest {
                            resource: resource.clone(),
                            ttl: ms(5_000),
                            wait: ms(60_000),
                            lease_id: String::new(),
                        })
                        .await
                        .expect("acquire")
                        .into_inner();
                    client
                        .release(ReleaseRequest {
                            resource,
                            token: grant.token,
                        })
                        .await
                        .expect("release");
                }
            })
            .await
        }
        Workload::Idle | Workload::IdleConsumers => idle(args, channel).await,
        Workload::DirectGet
        | Workload::DirectSet
        | Workload::DirectGetMany
        | Workload::DirectQueue
        | Workload::DirectXadd
        | Workload::DirectStreamGroup => direct(args, payload).await,
    }
}

/// Consumers ack every job at once. For e2e, producers run alongside and each
/// payload carries its enqueue time, so latency is enqueue → handler.
async fn queue_consume(args: &Args, channel: Channel, payload: Vec<u8>) -> Report {
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
    let producer_client = QueueClient::new(
        Channel::from_shared(args.target.clone())
            .expect("target uri")
            .connect_lazy(),
    );
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

async fn pubsub(args: &Args, channel: Channel, _payload: Vec<u8>) -> Report {
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

async fn stream_group(args: &Args, channel: Channel, payload: Vec<u8>) -> Report {
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

/// Opens `--subscribers` idle streams (subscriptions or Consume streams, spread
/// over 100 channels or queues) and reports Redwire's memory per stream and the
/// Redis connections in use while they are open.
async fn idle(args: &Args, channel: Channel) -> Report {
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
async fn idle_subscriptions(args: &Args, channel: Channel) -> Vec<Box<dyn Send>> {
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
async fn idle_consumers(args: &Args, channel: Channel) -> Vec<Box<dyn Send>> {
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

/// SET through the cache store as Cache.Set does it with no condition and no expiry.
async fn store_set(store: &redwire::cache::CacheStore, key: &str, value: &[u8]) {
    store
        .set(
            key,
            value,
            &redwire::cache::Condition::Always,
            redwire::cache::Expiry::Never,
        )
        .await
        .expect("set");
}

/// The same Redis work as the gRPC workloads, through Redwire's store layer.
async fn direct(args: &Args, payload: Vec<u8>) -> Report {
    let settings = redwire::redis::RedisSettings {
        blocking_pool_size: 4,
        command_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        tls: Default::default(),
        durable_replicas: 0,
    };
    let redis =
        Arc::new(redwire::redis::Redis::standalone(&args.redis_url, settings).expect("redis"));
    match args.workload {
        Workload::DirectGet | Workload::DirectSet => {
            let store = redwire::cache::CacheStore::new(redis, usize::MAX);
            let key = user_key(Space::Cache, &format!("{}:k", args.prefix));
            store_set(&store, &key, &payload).await;
            let get = args.workload == Workload::DirectGet;
            closed_loop(args, serde_json::json!({}), move |_, _| {
                let (store, key, payload) = (store.clone(), key.clone(), payload.clone());
                async move {
                    if get {
                        store.get(&key).await.expect("get");
                    } else {
                        store_set(&store, &key, &payload).await;
                    }
                }
            })
            .await
        }
        Workload::DirectGetMany => {
            let store = redwire::cache::CacheStore::new(redis, usize::MAX);
            let keys: Vec<String> = (0..args.batch)
                .map(|i| user_key(Space::Cache, &format!("{}:m{i}", args.prefix)))
                .collect();
            let values: Vec<(String, Vec<u8>)> =
                keys.iter().map(|k| (k.clone(), payload.clone())).collect();
            store.set_many(&values, None).await.expect("set many");
            batched_loop(args, move |_, _| {
                let (store, keys) = (store.clone(), keys.clone());
                async move {
                    store.get_many(&keys).await.expect("mget");
                }
            })
            .await
        }
        Workload::DirectXadd => {
            let store = redwire::stream::StreamStore::new(redis);
            let stream = format!("{}-direct-s", args.prefix);
            closed_loop(args, serde_json::json!({}), move |_, _| {
                let (store, stream, payload) = (store.clone(), stream.clone(), payload.clone());
                async move {
                    let entry = (String::new(), [("v".to_owned(), payload)].into());
                    store.append(&stream, &[entry], None).await.expect("xadd");
                }
            })
            .await
        }
        Workload::DirectStreamGroup => {
            let store = redwire::stream::StreamStore::new(redis);
            let stream = format!("{}-direct-sg", args.prefix);
            store
                .create_group(&stream, "g", "0", 0)
                .await
                .expect("group");
            for chunk in (0..args.ops).collect::<Vec<_>>().chunks(500) {
                let entries: Vec<_> = chunk
                    .iter()
                    .map(|_| (String::new(), [("v".to_owned(), payload.clone())].into()))
                    .collect();
                store
                    .append(&stream, &entries, None)
                    .await
                    .expect("prefill");
            }
            let started = Instant::now();
            let workers = (0..args.concurrency).map(|w| {
                let (store, stream) = (store.clone(), stream.clone());
                tokio::spawn(async move {
                    let consumer = format!("c{w}");
                    let mut done = 0;
                    loop {
                        let entries = store
                            .read_group(&stream, "g", &consumer, ">", 32)
                            .await
                            .expect("xreadgroup");
                        if entries.is_empty() {
                            return done;
                        }
                        let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
                        done += ids.len() as u64;
                        store.ack(&stream, "g", &ids).await.expect("xack");
                    }
                })
            });
            let done: u64 = futures::future::join_all(workers)
                .await
                .into_iter()
                .map(|r| r.unwrap_or(0))
                .sum();
            Report {
                ops: done,
                elapsed: started.elapsed(),
                hist: None,
                extra: serde_json::json!({"batch": 32}),
            }
        }
        // DirectQueue (run() sends only direct workloads here).
        _ => {
            let store = redwire::queue::QueueStore::new(redis);
            let queue = format!("{}-direct", args.prefix);
            let started = Instant::now();
            let per_worker = args.ops / args.concurrency.max(1) as u64;
            let workers = (0..args.concurrency).map(|w| {
                let (store, queue, payload) = (store.clone(), queue.clone(), payload.clone());
                tokio::spawn(async move {
                    let mut done = 0;
                    while done < per_worker {
                        let jobs: Vec<redwire::queue::NewJob> = (0..32.min(per_worker - done))
                            .map(|i| redwire::queue::NewJob {
                                id: format!("{w}-{done}-{i}-{}", now_micros()),
                                payload: payload.clone(),
                                record: redwire::queue::JobRecord {
                                    max_attempts: 3,
                                    backoff_ms: 1000,
                                    backoff_cap_ms: 3_600_000,
                                    ..Default::default()
                                },
                                delay_ms: 0,
                                deliver_at_ms: 0,
                            })
                            .collect();
                        store
                            .enqueue_handing_off(&queue, &jobs, &[])
                            .await
                            .expect("enqueue");
                        let leased = store
                            .dequeue(&queue, jobs.len(), 30_000)
                            .await
                            .expect("dequeue")
                            .jobs;
                        let acks: Vec<(String, String, Vec<u8>)> = leased
                            .into_iter()
                            .map(|j| (j.id, j.record.token, Vec::new()))
                            .collect();
                        done += acks.len() as u64;
                        store.ack(&queue, &acks).await.expect("ack");
                    }
                    done
                })
            });
            let done: u64 = futures::future::join_all(workers)
                .await
                .into_iter()
                .map(|r| r.unwrap_or(0))
                .sum();
            Report {
                ops: done,
                elapsed: started.elapsed(),
                hist: None,
                extra: serde_json::json!({"batch": 32}),
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    runtime
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(measure(args));
}

/// Runs the workload and prints its JSON line.
async fn measure(args: Args) {
    let channel = Channel::from_shared(args.target.clone())
        .expect("target uri")
        .connect_lazy();
    let own_pid = Some(std::process::id());
    let (redwire_cpu, redis_cpu, own_cpu) = (
        cpu_seconds(args.redwire_pid),
        cpu_seconds(args.redis_pid),
        cpu_seconds(own_pid),
    );
    let report = run(&args, channel).await;
    let secs = report.elapsed.as_secs_f64();
    let per_k = |before: Option<f64>, pid| {
        before
            .zip(cpu_seconds(pid))
            .map(|(b, a)| (a - b) / (report.ops.max(1) as f64 / 1000.0))
    };
    let mut line = serde_json::json!({
        // A paced run is its own row: "CacheGet at 12000/s".
        "workload": if args.rate > 0 {
            format!("{:?} at {}/s", args.workload, args.rate)
        } else {
            format!("{:?}", args.workload)
        },
        "ops": report.ops,
        "seconds": secs,
        "ops_per_sec": report.ops as f64 / secs.max(1e-9),
        "concurrency": args.concurrency,
        "rate": args.rate,
        "redwire_cpu_s_per_1k": per_k(redwire_cpu, args.redwire_pid),
        "redis_cpu_s_per_1k": per_k(redis_cpu, args.redis_pid),
        "bench_cpu_s_per_1k": per_k(own_cpu, own_pid),
        "extra": report.extra,
    });
    if let Some(hist) = report.hist {
        let h = hist.lock().await;
        if !h.is_empty() {
            line["p50_us"] = h.value_at_quantile(0.50).into();
            line["p99_us"] = h.value_at_quantile(0.99).into();
            line["p999_us"] = h.value_at_quantile(0.999).into();
        }
    }
    println!("{line}");
}
