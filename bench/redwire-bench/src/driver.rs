//! Running operations and timing them: the closed loop and the fixed arrival
//! rate (`Tickets`), the latency histogram, the report, and one producer stream
//! per worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Args;

pub(crate) fn now_micros() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0),
    )
    .unwrap_or(0)
}

pub(crate) fn ms(n: u64) -> Option<prost_types::Duration> {
    Some(redwire::time::proto_duration(Duration::from_millis(n)))
}

pub(crate) type Hist = Arc<Mutex<Histogram<u64>>>;

pub(crate) fn histogram() -> Hist {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ))
}

/// Runs `op(worker, i)` `ops` times from `concurrency` workers (closed loop), or at
/// `rate`; latency counts from each call's scheduled start.
pub(crate) async fn drive<F, Fut>(args: &Args, hist: Hist, op: F) -> Duration
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
pub(crate) enum Tickets {
    ClosedLoop { next: AtomicU64, ops: u64 },
    Paced(Mutex<tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>>),
}

impl Tickets {
    pub(crate) fn new(args: &Args, started: Instant) -> Self {
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

    pub(crate) async fn next(&self) -> Option<(u64, Instant)> {
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
pub(crate) struct Progress {
    pub(crate) done: AtomicU64,
    pub(crate) total: u64,
    pub(crate) started: Instant,
    pub(crate) finished: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    pub(crate) fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            done: AtomicU64::new(0),
            total,
            started: Instant::now(),
            finished: std::sync::Mutex::new(None),
        })
    }

    /// Counts one operation.
    pub(crate) fn complete_one(&self) {
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.total
            && let Ok(mut finished) = self.finished.lock()
        {
            *finished = Some(Instant::now());
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.done.load(Ordering::Relaxed) >= self.total
    }

    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// From the start to the last operation (or to now, if the run fell short).
    pub(crate) fn elapsed(&self) -> Duration {
        let finished = self.finished.lock().ok().and_then(|f| *f);
        finished.unwrap_or_else(Instant::now) - self.started
    }
}

/// Runs `op` `--ops` times (closed loop, or at `--rate`) and reports its latencies.
pub(crate) async fn closed_loop<F, Fut>(args: &Args, extra: serde_json::Value, op: F) -> Report
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
pub(crate) async fn batched_loop<F, Fut>(args: &Args, op: F) -> Report
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

pub(crate) struct Report {
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
    pub(crate) hist: Option<Hist>,
    pub(crate) extra: serde_json::Value,
}

/// One worker's open producer stream (EnqueueStream, AppendStream): sends one
/// message and waits for its reply, as a unary call would, without a new call.
pub(crate) struct ProducerStream<Req, Resp> {
    pub(crate) tx: tokio::sync::mpsc::Sender<Req>,
    pub(crate) replies: tonic::Streaming<Resp>,
}

impl<Req, Resp> ProducerStream<Req, Resp> {
    pub(crate) async fn call(&mut self, request: Req) -> Resp {
        self.tx.send(request).await.expect("producer stream open");
        self.replies
            .message()
            .await
            .expect("producer stream reply")
            .expect("one reply per message")
    }
}

/// One producer stream per worker, opened by `open` before the clock starts.
pub(crate) type ProducerStreams<Req, Resp> = Arc<Vec<Mutex<ProducerStream<Req, Resp>>>>;

pub(crate) async fn producer_streams<Req, Resp, F, Fut>(
    workers: usize,
    open: F,
) -> ProducerStreams<Req, Resp>
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

/// A connection to the target, sending `--token` (if any) with every call.
pub(crate) type Conn = InterceptedService<Channel, Token>;

/// Adds `authorization: Bearer <token>` to each call when there is a token.
#[derive(Clone)]
pub(crate) struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A new lazy connection to `--target` that sends `--token`, over TLS with
/// `--tls-ca`.
pub(crate) fn connect(args: &Args) -> Conn {
    let endpoint = match &args.tls_ca {
        None => Channel::from_shared(args.target.clone()).expect("target uri"),
        Some(ca) => {
            let ca = std::fs::read(ca).expect("read --tls-ca");
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            Channel::from_shared(args.target.replacen("http://", "https://", 1))
                .expect("target uri")
                .tls_config(tls)
                .expect("tls config")
        }
    };
    let channel = endpoint.connect_lazy();
    let token = args.token.as_ref().map(|token| {
        format!("Bearer {token}")
            .parse()
            .expect("the token is ASCII")
    });
    InterceptedService::new(channel, Token(token))
}
