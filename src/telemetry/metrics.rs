//! Prometheus metrics, served on the admin listener's `/metrics` in the
//! OpenMetrics text format (`prometheus-client`).
//!
//! - Per-rpc metrics come from the request log layer ([`super::requests`]),
//!   which already sees every call's method, code and duration: a latency
//!   histogram and the calls (and streams) in flight. Labels follow the
//!   OpenTelemetry RPC conventions (`rpc_service`, `rpc_method`,
//!   `rpc_grpc_status_code`) and only take values from the descriptor set, so a
//!   client sending made-up paths cannot grow them.
//! - Queue gauges are read from Redis by [`sample`] on an interval, so every
//!   Redwire instance exports the same numbers; at most `--metrics-max-queues`
//!   queues are exported (the first by tenant and name), and
//!   `redwire_metrics_queues_omitted` counts the rest; streams (length, dead
//!   letters, per group lag and pending) likewise, up to `--metrics-max-streams`.
//! - PubSub and Lock counters (deliveries, drops, grants, waits, lost holds)
//!   are this instance's own, counted where they happen.
//! - Process gauges (memory, CPU, open files) are read from `/proc/self`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tokio_util::sync::CancellationToken;

use crate::queue::QueueStore;
use crate::redis::keys;
use crate::redis::keys::{QueueCounters, QueueMeta};
use crate::stream::StreamStore;

/// The labels of one rpc, looked up once per call when it starts.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    rpc_service: &'static str,
    rpc_method: &'static str,
}

/// What [`Metrics::call_started`] hands the call: its labels, and the
/// counters of the messages it receives and sends on each streaming side.
#[derive(Debug)]
pub struct StartedCall {
    /// The call's labels.
    pub rpc: RpcLabels,
    /// The request messages counter, when the client streams.
    pub received: Option<Counter>,
    /// The reply messages counter, when the server streams.
    pub sent: Option<Counter>,
}

/// The labels of one finished call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc_service: &'static str,
    rpc_method: &'static str,
    rpc_grpc_status_code: &'static str,
}

/// The labels of one queue.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    tenant: String,
    queue: String,
}

/// The queue event counters exported one to one: the meta field each comes
/// from, its metric's name and help. The dead-letter counters are exported by
/// reason ([`DEAD_LETTERED`]).
const QUEUE_EVENTS: [(&str, &str, &str); 5] = [
    (
        QueueMeta::ENQUEUED,
        "redwire_queue_jobs_enqueued",
        "Jobs created (a repeated job id counts once)",
    ),
    (
        QueueMeta::STARTED,
        "redwire_queue_jobs_started",
        "Deliveries started (leases handed out)",
    ),
    (
        QueueMeta::COMPLETED,
        "redwire_queue_jobs_completed",
        "Jobs acknowledged",
    ),
    (
        QueueMeta::RETRIED,
        "redwire_queue_jobs_retried",
        "Failed deliveries to be retried (Nack, an expired lease, a consumer that left with the job)",
    ),
    (
        QueueMeta::EXPIRED,
        "redwire_queue_leases_expired",
        "Leases that ran out before the job was settled (the job was retried or dead-lettered)",
    ),
];

/// The name and help of the dead-letter counter, whose `reason` is `rejected`
/// (a permanent Nack, [`QueueMeta::DEAD_REJECTED`]) or `max_attempts` (the
/// rest of [`QueueMeta::DEAD_LETTERED`]).
const DEAD_LETTERED: (&str, &str) = (
    "redwire_queue_jobs_dead_lettered",
    "Jobs moved to the dead letters, by reason: rejected (a permanent Nack) or max_attempts (out of attempts)",
);

/// The value of the counter `field` (one of [`QueueMeta::COUNTERS`]).
fn counter(counters: &QueueCounters, field: &str) -> u64 {
    QueueMeta::COUNTERS
        .iter()
        .position(|known| *known == field)
        .map_or(0, |i| counters[i])
}

/// The labels of one queue's dead letters of one reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    tenant: String,
    queue: String,
    reason: &'static str,
}

/// The queues' event counters as last sampled from Redis, written as counters
/// at each scrape: they are Redis's totals, the same on every instance, not
/// something this process counts.
#[derive(Debug, Default)]
struct QueueEvents(Mutex<Vec<(QueueLabels, QueueCounters)>>);

impl QueueEvents {
    fn set(&self, snapshot: Vec<(QueueLabels, QueueCounters)>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

impl Collector for QueueEvents {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let snapshot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (field, name, help) in QUEUE_EVENTS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, counters) in snapshot.iter() {
                let value = counter(counters, field);
                ConstCounter::new(value).encode(family.encode_family(labels)?)?;
            }
        }
        let (name, help) = DEAD_LETTERED;
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, counters) in snapshot.iter() {
            let dead = counter(counters, QueueMeta::DEAD_LETTERED);
            let rejected = counter(counters, QueueMeta::DEAD_REJECTED);
            for (reason, value) in [
                ("rejected", rejected),
                ("max_attempts", dead.saturating_sub(rejected)),
            ] {
                let labels = DeadLetterLabels {
                    tenant: labels.tenant.clone(),
                    queue: labels.queue.clone(),
                    reason,
                };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The labels of one stream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    tenant: String,
    stream: String,
}

/// The labels of one consumer group of a stream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    tenant: String,
    stream: String,
    group: String,
}

/// The labels of one queue's jobs in one state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    tenant: String,
    queue: String,
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The error kind of an error reply from Redis.
const REPLY_ERROR: &str = "reply";

/// The kind of one Redis error, for `redwire_redis_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedisErrorLabels {
    kind: &'static str,
}

/// Which connection was opened again, for `redwire_redis_reconnects_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconnectLabels {
    connection: &'static str,
}

/// The Redis client's metrics, kept by `crate::redis` where every command
/// passes ([`crate::redis::Conn`]) and where the blocking pool and the
/// pub/sub connections are managed.
#[derive(Debug)]
pub struct RedisMetrics {
    command_duration: Histogram,
    errors: Family<RedisErrorLabels, Counter>,
    blocking_in_use: Gauge,
    blocking_refused: Counter,
    reconnects: Family<ReconnectLabels, Counter>,
}

impl Default for RedisMetrics {
    /// Unregistered metrics (a Redis handle made without a registry).
    fn default() -> Self {
        Self {
            command_duration: call_buckets(),
            errors: Family::default(),
            blocking_in_use: Gauge::default(),
            blocking_refused: Counter::default(),
            reconnects: Family::default(),
        }
    }
}

impl RedisMetrics {
    /// A command or pipeline on a shared connection took `elapsed`.
    pub fn command_took(&self, elapsed: Duration) {
        self.command_duration.observe(elapsed.as_secs_f64());
    }

    /// A command failed with `error`.
    pub fn command_failed(&self, error: &redis::RedisError) {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connection_dropped() || error.is_io_error() {
            "connection"
        } else if error.is_cluster_error() {
            "cluster"
        } else if matches!(
            error.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        ) {
            REPLY_ERROR
        } else {
            "other"
        };
        self.errors.get_or_create(&RedisErrorLabels { kind }).inc();
    }

    /// A command's reply held an error reply (the caller sees it as an error
    /// when it converts the reply).
    pub fn error_replied(&self) {
        self.errors
            .get_or_create(&RedisErrorLabels { kind: REPLY_ERROR })
            .inc();
    }

    /// A blocking-pool connection was checked out; it counts as in use until
    /// the guard drops.
    pub fn blocking_checked_out(&self) -> GaugeGuard {
        GaugeGuard::new(&self.blocking_in_use)
    }

    /// A blocking call was refused: every blocking-pool connection was busy.
    pub fn blocking_refused(&self) {
        self.blocking_refused.inc();
    }

    /// The `connection` (`pubsub`, `sharded_pubsub`) was lost; it is opened
    /// again.
    pub fn reconnected(&self, connection: &'static str) {
        self.reconnects
            .get_or_create(&ReconnectLabels { connection })
            .inc();
    }

    fn register(self: &Arc<Self>, r: &mut Registrar) {
        r.add(
            "redwire_redis_command_duration_seconds",
            "Round trip of commands and pipelines on the shared Redis connections (blocking commands, which wait on purpose, excluded)",
            self.command_duration.clone(),
        );
        r.add(
            "redwire_redis_errors",
            "Redis commands that failed, by kind: timeout (--redis-timeout), connection (lost or refused; the connection is opened again on the next command), cluster (MOVED/ASK/CLUSTERDOWN past the driver's retries), reply (an error reply), other",
            self.errors.clone(),
        );
        r.add(
            "redwire_redis_blocking_connections_in_use",
            "Connections of the blocking pool (--blocking-pool-size) held by blocking calls now",
            self.blocking_in_use.clone(),
        );
        r.add(
            "redwire_redis_blocking_refused",
            "Blocking calls refused because every blocking-pool connection was busy (RESOURCE_EXHAUSTED)",
            self.blocking_refused.clone(),
        );
        r.add(
            "redwire_redis_reconnects",
            "Pub/sub connections lost (each is opened again and its subscriptions renewed); the shared command connections reconnect on their next command and count as errors of kind connection",
            self.reconnects.clone(),
        );
    }
}

/// Every metric Redwire exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The Redis client's metrics, handed to the Redis handle.
    pub redis: Arc<RedisMetrics>,
    calls: Histograms<CallLabels>,
    active: Family<RpcLabels, Gauge>,
    messages_received: Family<RpcLabels, Counter>,
    messages_sent: Family<RpcLabels, Counter>,
    queue_jobs: Family<QueueStateLabels, Gauge>,
    queue_oldest_age: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    queue_paused: Family<QueueLabels, Gauge>,
    queue_rate_limited: Family<QueueLabels, Gauge>,
    queues_exported: Gauge,
    queues_omitted: Gauge,
    queue_events: Arc<QueueEvents>,
    stream_length: Family<StreamLabels, Gauge>,
    stream_dead_letters: Family<StreamLabels, Gauge>,
    group_lag: Family<GroupLabels, Gauge>,
    group_pending: Family<GroupLabels, Gauge>,
    streams_exported: Gauge,
    streams_omitted: Gauge,
    sample_failures: Counter,
    pubsub_subscribers: Gauge,
    pubsub_delivered: Counter,
    pubsub_dropped: Counter,
    pubsub_disconnects: Counter,
    lock_grants: Counter,
    lock_waits: Counter,
    lock_waiters: Gauge,
    lock_holds_lost: Counter,
    resident_bytes: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
}

/// Latency buckets from 50 µs doubling to about 13 s: most calls take well
/// under a millisecond, and long polls and blocking waits reach seconds.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Registers each metric as it is made.
struct Registrar(Registry);

impl Registrar {
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }

    fn collect<C: Collector>(&mut self, collector: Arc<C>) -> Arc<C> {
        self.0.register_collector(Box::new(collector.clone()));
        collector
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut r = Registrar(Registry::default());
        let redis = Arc::new(RedisMetrics::default());
        redis.register(&mut r);
        Self {
            redis,
            calls: r.add(
                "rpc_server_call_duration_seconds",
                "Duration of gRPC calls, from the request's arrival to the end of the reply (streams: until they end)",
                Family::new_with_constructor(call_buckets),
            ),
            active: r.add(
                "redwire_rpc_server_active_calls",
                "Calls in flight; for streaming rpcs the open streams",
                Family::default(),
            ),
            messages_received: r.add(
                "redwire_rpc_server_stream_messages_received",
                "Messages received on client-streaming rpcs (Consume, ReadGroup, EnqueueStream, AppendStream, Hold)",
                Family::default(),
            ),
            messages_sent: r.add(
                "redwire_rpc_server_stream_messages_sent",
                "Messages sent on server-streaming rpcs (Subscribe, Tail, Consume, ReadGroup, Hold, ...; heartbeats included)",
                Family::default(),
            ),
            queue_jobs: r.add(
                "redwire_queue_jobs",
                "Jobs of a queue per state (waiting includes jobs behind their ordering group), read from Redis",
                Family::default(),
            ),
            queue_oldest_age: r.add(
                "redwire_queue_oldest_waiting_age_seconds",
                "Time since the oldest job ready for delivery was enqueued (0 when none waits)",
                Family::default(),
            ),
            queue_paused: r.add(
                "redwire_queue_paused",
                "1 while the queue's deliveries are paused",
                Family::default(),
            ),
            queue_rate_limited: r.add(
                "redwire_queue_rate_limited",
                "1 while the queue has a rate limit",
                Family::default(),
            ),
            queues_exported: r.add(
                "redwire_metrics_queues_exported",
                "Queues whose gauges are exported",
                Gauge::default(),
            ),
            queues_omitted: r.add(
                "redwire_metrics_queues_omitted",
                "Queues left out of the queue gauges by --metrics-max-queues",
                Gauge::default(),
            ),
            queue_events: r.collect(Arc::default()),
            stream_length: r.add(
                "redwire_stream_length",
                "Entries in a stream, read from Redis",
                Family::default(),
            ),
            stream_dead_letters: r.add(
                "redwire_stream_dead_letters",
                "Entries in a stream's dead-letter stream",
                Family::default(),
            ),
            group_lag: r.add(
                "redwire_stream_group_lag",
                "Entries of the stream a consumer group has not read yet (absent when Redis cannot tell)",
                Family::default(),
            ),
            group_pending: r.add(
                "redwire_stream_group_pending",
                "Entries delivered to a group's consumers and not acknowledged",
                Family::default(),
            ),
            streams_exported: r.add(
                "redwire_metrics_streams_exported",
                "Streams whose gauges are exported",
                Gauge::default(),
            ),
            streams_omitted: r.add(
                "redwire_metrics_streams_omitted",
                "Streams left out of the stream gauges by --metrics-max-streams",
                Gauge::default(),
            ),
            sample_failures: r.add(
                "redwire_metrics_sample_failures",
                "Samples of the queue gauges that failed (Redis did not answer)",
                Counter::default(),
            ),
            pubsub_subscribers: r.add(
                "redwire_pubsub_subscribers",
                "Open Subscribe streams on this instance",
                Gauge::default(),
            ),
            pubsub_delivered: r.add(
                "redwire_pubsub_messages_delivered",
                "Messages handed to Subscribe streams",
                Counter::default(),
            ),
            pubsub_dropped: r.add(
                "redwire_pubsub_messages_dropped",
                "Messages dropped for slow subscribers (each reported to its subscriber as a gap)",
                Counter::default(),
            ),
            pubsub_disconnects: r.add(
                "redwire_pubsub_disconnects",
                "Subscribe streams ended for falling behind (slow_policy DISCONNECT)",
                Counter::default(),
            ),
            lock_grants: r.add(
                "redwire_lock_grants",
                "Locks granted (Acquire and Hold)",
                Counter::default(),
            ),
            lock_waits: r.add(
                "redwire_lock_waits",
                "Acquires and Holds that found the lock held and waited (contention)",
                Counter::default(),
            ),
            lock_waiters: r.add(
                "redwire_lock_waiters",
                "Callers waiting for a lock on this instance now",
                Gauge::default(),
            ),
            lock_holds_lost: r.add(
                "redwire_lock_holds_lost",
                "Hold streams whose lock was lost (expired, taken over, or renewal failed)",
                Counter::default(),
            ),
            resident_bytes: r.add(
                "process_resident_memory_bytes",
                "Resident memory of the Redwire process",
                Gauge::default(),
            ),
            cpu_seconds: r.add(
                "process_cpu_seconds",
                "CPU time (user and system) of the Redwire process",
                Counter::default(),
            ),
            open_fds: r.add(
                "process_open_fds",
                "Open file descriptors of the Redwire process",
                Gauge::default(),
            ),
            // Last: fields are made in order, so every metric is registered.
            registry: r.0,
        }
    }

    /// A call to `path` started: its labels (for [`Metrics::call_ended`]),
    /// and the counters of its stream messages, for each side that streams.
    pub fn call_started(&self, path: &str) -> StartedCall {
        let shape = rpc_shape(path);
        let labels = shape.labels;
        self.active.get_or_create(&labels).inc();
        let counter = |family: &Family<RpcLabels, Counter>, streams: bool| {
            streams.then(|| family.get_or_create(&labels).clone())
        };
        StartedCall {
            rpc: labels,
            received: counter(&self.messages_received, shape.client_streaming),
            sent: counter(&self.messages_sent, shape.server_streaming),
        }
    }

    /// The call `rpc` ended with `code` after `elapsed`.
    pub fn call_ended(&self, rpc: RpcLabels, code: &'static str, elapsed: Duration) {
        self.active.get_or_create(&rpc).dec();
        let labels = CallLabels {
            rpc_service: rpc.rpc_service,
            rpc_method: rpc.rpc_method,
            rpc_grpc_status_code: code,
        };
        self.calls
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A Subscribe stream opened; it counts until the guard drops.
    pub fn subscriber(&self) -> GaugeGuard {
        GaugeGuard::new(&self.pubsub_subscribers)
    }

    /// A message went to a subscriber.
    pub fn pubsub_delivered(&self) {
        self.pubsub_delivered.inc();
    }

    /// `count` messages were dropped for a slow subscriber.
    pub fn pubsub_dropped(&self, count: u64) {
        self.pubsub_dropped.inc_by(count);
    }

    /// A slow subscriber was disconnected.
    pub fn pubsub_disconnected(&self) {
        self.pubsub_disconnects.inc();
    }

    /// A lock was granted.
    pub fn lock_granted(&self) {
        self.lock_grants.inc();
    }

    /// A caller found a lock held and waits; it counts as a waiter until the
    /// guard drops.
    pub fn lock_waiter(&self) -> GaugeGuard {
        self.lock_waits.inc();
        GaugeGuard::new(&self.lock_waiters)
    }

    /// A Hold lost its lock.
    pub fn lock_hold_lost(&self) {
        self.lock_holds_lost.inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Replaces the queue gauges with `queues` (qualified name, stats, oldest
    /// waiting age), of `total` registered queues.
    fn set_queues(&self, queues: &[(String, crate::queue::Stats, f64)], total: usize) {
        self.queue_jobs.clear();
        self.queue_oldest_age.clear();
        self.queue_paused.clear();
        self.queue_rate_limited.clear();
        let mut events = Vec::with_capacity(queues.len());
        for (qualified, stats, oldest_age) in queues {
            let (tenant, name) = labels_of(qualified);
            let queue = QueueLabels {
                tenant,
                queue: name,
            };
            for (state, count) in [
                ("waiting", stats.waiting),
                ("delayed", stats.delayed),
                ("active", stats.active),
                ("completed", stats.completed),
                ("dead", stats.dead),
            ] {
                let labels = QueueStateLabels {
                    tenant: queue.tenant.clone(),
                    queue: queue.queue.clone(),
                    state,
                };
                self.queue_jobs.get_or_create(&labels).set(count);
            }
            self.queue_oldest_age.get_or_create(&queue).set(*oldest_age);
            self.queue_paused
                .get_or_create(&queue)
                .set(i64::from(stats.paused));
            self.queue_rate_limited
                .get_or_create(&queue)
                .set(i64::from(stats.rate_max > 0));
            events.push((queue, stats.counters));
        }
        self.queue_events.set(events);
        self.queues_exported
            .set(i64::try_from(queues.len()).unwrap_or(i64::MAX));
        self.queues_omitted
            .set(i64::try_from(total - queues.len()).unwrap_or(i64::MAX));
    }

    /// Replaces the stream gauges with `streams` (qualified name and state), of
    /// `total` registered streams.
    fn set_streams(&self, streams: &[(String, crate::stream::StreamState)], total: usize) {
        self.stream_length.clear();
        self.stream_dead_letters.clear();
        self.group_lag.clear();
        self.group_pending.clear();
        for (qualified, state) in streams {
            let (tenant, name) = labels_of(qualified);
            let stream = StreamLabels {
                tenant,
                stream: name,
            };
            self.stream_length.get_or_create(&stream).set(state.length);
            self.stream_dead_letters
                .get_or_create(&stream)
                .set(state.dead_letters);
            for group in &state.groups {
                let labels = GroupLabels {
                    tenant: stream.tenant.clone(),
                    stream: stream.stream.clone(),
                    group: group.name.clone(),
                };
                if group.lag >= 0 {
                    self.group_lag.get_or_create(&labels).set(group.lag);
                }
                self.group_pending.get_or_create(&labels).set(group.pending);
            }
        }
        self.streams_exported
            .set(i64::try_from(streams.len()).unwrap_or(i64::MAX));
        self.streams_omitted
            .set(i64::try_from(total - streams.len()).unwrap_or(i64::MAX));
    }

    /// Reads the process gauges from `/proc/self` (Linux; elsewhere they stay 0).
    fn sample_process(&self, last_cpu: &mut f64) {
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss);
        }
        if let Some(cpu) = cpu_seconds()
            && cpu > *last_cpu
        {
            self.cpu_seconds.inc_by(cpu - *last_cpu);
            *last_cpu = cpu;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(fds.count()).unwrap_or(i64::MAX));
        }
    }
}

/// Counts one in a gauge while alive.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The tenant label (empty for the default tenant) and the name label of a
/// qualified name.
fn labels_of(qualified: &str) -> (String, String) {
    let (tenant, name) = keys::split(qualified);
    (tenant.unwrap_or("").to_owned(), name.to_owned())
}

/// One rpc of the descriptor sets: its labels, and which sides stream.
#[derive(Debug, Clone, Copy)]
struct RpcShape {
    labels: RpcLabels,
    client_streaming: bool,
    server_streaming: bool,
}

/// Every rpc path Redwire serves (its own and health's), from the descriptor
/// sets the server is built from.
static RPCS: LazyLock<HashMap<String, RpcShape>> = LazyLock::new(|| {
    use prost::Message as _;
    let mut rpcs = HashMap::new();
    for encoded in [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        // The sets are compiled in; one that does not decode is a build bug
        // that the unit tests catch.
        let set = prost_types::FileDescriptorSet::decode(encoded).unwrap_or_default();
        for file in &set.file {
            for service in &file.service {
                // Leaked once: label values live as long as the process.
                let full: &'static str = format!("{}.{}", file.package(), service.name()).leak();
                for method in &service.method {
                    let name: &'static str = method.name().to_owned().leak();
                    let shape = RpcShape {
                        labels: RpcLabels {
                            rpc_service: full,
                            rpc_method: name,
                        },
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                    };
                    rpcs.insert(format!("/{full}/{name}"), shape);
                }
            }
        }
    }
    rpcs
});

/// The shape of a call to `path`; labels `other` for a path that is no rpc of
/// Redwire's or health's (reflection, or made up).
fn rpc_shape(path: &str) -> RpcShape {
    RPCS.get(path).copied().unwrap_or(RpcShape {
        labels: RpcLabels {
            rpc_service: "other",
            rpc_method: "other",
        },
        client_streaming: false,
        server_streaming: false,
    })
}

/// Where the sampled gauges come from, and how many of each are exported.
#[derive(Debug)]
pub struct Sampled {
    /// The queues' store.
    pub queues: QueueStore,
    /// The streams' store.
    pub streams: StreamStore,
    /// Most queues exported.
    pub max_queues: usize,
    /// Most streams exported.
    pub max_streams: usize,
}

/// Samples the queue, stream and process gauges every `interval` until
/// `shutdown`.
pub async fn sample(
    metrics: Arc<Metrics>,
    sampled: Sampled,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last_cpu = 0.0;
    loop {
        metrics.sample_process(&mut last_cpu);
        match sample_queues(&sampled.queues, sampled.max_queues).await {
            Ok((queues, total)) => metrics.set_queues(&queues, total),
            Err(e) => {
                metrics.sample_failures.inc();
                tracing::debug!(error = %e, "cannot sample the queue gauges");
            }
        }
        match sample_streams(&sampled.streams, sampled.max_streams).await {
            Ok((streams, total)) => metrics.set_streams(&streams, total),
            Err(e) => {
                metrics.sample_failures.inc();
                tracing::debug!(error = %e, "cannot sample the stream gauges");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The stats of the first `max_queues` registered queues (sorted by qualified
/// name), and how many are registered.
async fn sample_queues(
    queues: &QueueStore,
    max_queues: usize,
) -> crate::Result<(Vec<(String, crate::queue::Stats, f64)>, usize)> {
    let mut names = queues.list_queues().await?;
    let total = names.len();
    names.truncate(max_queues);
    let mut sampled = Vec::with_capacity(names.len());
    for name in names {
        let stats = queues.stats(&name).await?;
        let waited_ms = queues.oldest_waiting_ms(&name).await?;
        let age = waited_ms.map_or(0.0, |ms| ms as f64 / 1e3);
        sampled.push((name, stats, age));
    }
    Ok((sampled, total))
}

/// The state of the first `max_streams` registered streams (sorted by
/// qualified name; a stream deleted since is skipped), and how many are
/// registered.
async fn sample_streams(
    streams: &StreamStore,
    max_streams: usize,
) -> crate::Result<(Vec<(String, crate::stream::StreamState)>, usize)> {
    let mut names = streams.list_streams().await?;
    let total = names.len();
    names.truncate(max_streams);
    let mut sampled = Vec::with_capacity(names.len());
    for name in names {
        match streams.info(&name).await {
            Ok(state) => sampled.push((name, state)),
            Err(e) if e.reason() == crate::error::Reason::StreamNotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((sampled, total))
}

/// Resident memory in bytes, from `/proc/self/status` (in kB there, whatever
/// the page size).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user and system), from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// The unit of `/proc/self/stat`'s times: `USER_HZ`, 100 on every Linux
/// architecture (the kernel scales its own tick rate to it).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_come_only_from_the_descriptor_set() {
        let names = |path| {
            let labels = rpc_shape(path).labels;
            (labels.rpc_service, labels.rpc_method)
        };
        assert_eq!(
            names("/redwire.v1.Queue/Enqueue"),
            ("redwire.v1.Queue", "Enqueue")
        );
        assert_eq!(
            names("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(names("/made.up/Path"), ("other", "other"));
        let served: Vec<_> = crate::auth::permissions::rpcs().collect();
        assert_eq!(RPCS.len(), served.len() + 2, "every rpc and health's two");
    }

    #[test]
    fn streaming_sides_come_from_the_descriptor_set() {
        let consume = rpc_shape("/redwire.v1.Queue/Consume");
        assert!(consume.client_streaming && consume.server_streaming);
        let tail = rpc_shape("/redwire.v1.Stream/Tail");
        assert!(!tail.client_streaming && tail.server_streaming);
        let get = rpc_shape("/redwire.v1.Cache/Get");
        assert!(!get.client_streaming && !get.server_streaming);
    }

    #[test]
    fn a_finished_call_is_counted_with_its_code() {
        let metrics = Metrics::new();
        let call = metrics.call_started("/redwire.v1.Cache/Get");
        assert!(call.received.is_none() && call.sent.is_none(), "unary");
        metrics.call_ended(call.rpc, "OK", Duration::from_micros(120));
        let text = metrics.encode();
        let count = "rpc_server_call_duration_seconds_count{rpc_service=\"redwire.v1.Cache\",rpc_method=\"Get\",rpc_grpc_status_code=\"OK\"} 1";
        assert!(text.contains(count), "{text}");
        let active = "redwire_rpc_server_active_calls{rpc_service=\"redwire.v1.Cache\",rpc_method=\"Get\"} 0";
        assert!(text.contains(active), "{text}");
    }

    #[test]
    fn every_queue_counter_of_the_key_schema_is_exported() {
        let mut fields: Vec<&str> = QUEUE_EVENTS.iter().map(|(field, _, _)| *field).collect();
        fields.extend([QueueMeta::DEAD_LETTERED, QueueMeta::DEAD_REJECTED]);
        fields.sort_unstable();
        let mut counters = QueueMeta::COUNTERS;
        counters.sort_unstable();
        assert_eq!(fields, counters);
    }

    #[test]
    fn the_process_gauges_read_proc() {
        let metrics = Metrics::new();
        let mut last_cpu = 0.0;
        metrics.sample_process(&mut last_cpu);
        assert!(metrics.resident_bytes.get() > 0);
        assert!(metrics.open_fds.get() > 0);
    }
}
