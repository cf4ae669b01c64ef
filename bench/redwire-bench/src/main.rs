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

mod driver;
mod metrics;
mod otlp_sink;
mod workloads;

use clap::{Parser, ValueEnum};

use driver::Report;
use metrics::cpu_seconds;
use workloads::{cache, direct, floor, idle, lock, operator, pubsub, queue, stream};

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
    /// The operator's reads at scale: seeds `--jobs` jobs in one queue and
    /// `--queues` queues, then times ListQueues, ListJobs (first and a deep
    /// page), GetJob, Stats, GetHistory and, with `--admin`, the console's api.
    Operator,
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
    /// Not a load: an OTLP trace receiver on `--listen` that counts spans and
    /// drops them, until killed (the collector for the cost of tracing).
    OtlpSink,
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
    /// Where `otlp-sink` listens.
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: std::net::SocketAddr,
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
    /// Jobs the operator workload puts in its big queue.
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Queues of one job the operator workload creates.
    #[arg(long, default_value_t = 1_000)]
    queues: u64,
    /// Redwire's admin listener, for the operator workload's console calls.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// A name prefix, so repeated runs do not share keys.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// A bearer token sent with every call (for a Redwire with --auth-file).
    #[arg(long, env = "REDWIRE_TOKEN")]
    token: Option<String>,
    /// Connect over TLS, trusting this PEM CA for the server's certificate
    /// (issued for `localhost`).
    #[arg(long, env = "REDWIRE_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
}

/// Runs the chosen workload.
async fn run(args: &Args, channel: driver::Conn) -> Report {
    let payload = vec![b'x'; args.payload_bytes];
    match args.workload {
        Workload::CacheGet | Workload::CacheSet => cache::get_or_set(args, channel, payload).await,
        Workload::GrpcFloor => floor::grpc(args, channel, payload).await,
        Workload::CacheGetMany => cache::get_many(args, channel, payload).await,
        Workload::QueueEnqueue => queue::enqueue(args, channel, payload).await,
        Workload::QueueEnqueueStream => queue::enqueue_stream(args, channel, payload).await,
        Workload::QueueConsume | Workload::QueueE2e | Workload::QueueE2eStream => {
            queue::consume(args, channel, payload).await
        }
        Workload::Pubsub => pubsub::publish_subscribe(args, channel, payload).await,
        Workload::StreamAppend => stream::append(args, channel, payload).await,
        Workload::StreamAppendStream | Workload::ProducerStreamFloor => {
            stream::append_stream(args, channel, payload).await
        }
        Workload::StreamGroup => stream::group(args, channel, payload).await,
        Workload::Lock => lock::acquire_release(args, channel, payload).await,
        Workload::Operator => operator::operator(args, channel, payload).await,
        Workload::Idle | Workload::IdleConsumers => idle::idle(args, channel).await,
        Workload::DirectGet
        | Workload::DirectSet
        | Workload::DirectGetMany
        | Workload::DirectQueue
        | Workload::DirectXadd
        | Workload::DirectStreamGroup => direct::direct(args, payload).await,
        Workload::OtlpSink => unreachable!("otlp-sink serves instead of measuring"),
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
        .block_on(async {
            if args.workload == Workload::OtlpSink {
                otlp_sink::serve(args.listen).await;
            } else {
                measure(args).await;
            }
        });
}

/// Runs the workload and prints its JSON line.
async fn measure(args: Args) {
    let channel = driver::connect(&args);
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
