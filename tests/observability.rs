//! The admin listener against a real server: `/healthz` and `/readyz` follow the
//! process and Redis (and `redwire probe` says the same), a real Prometheus
//! scrapes `/metrics` with a token while a load runs and PromQL finds the queue
//! depths, the oldest job's age and the per-method call counts, and the queue
//! gauges stay bounded with 10,000 queues.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redwire::proto::*;
use support::auth::{AuthFile, with_token};
use support::http::{self, Answer, query_escape};
use support::{TestContext, eventually, get};
use tonic::Request;

const EVERYTHING: &str = "{ services = [\"*\"], actions = [\"*\"] }";

/// Redwire with an admin listener, sampling the gauges every 100 ms.
async fn sampling_often() -> TestContext {
    TestContext::standalone_with(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--metrics-interval",
        "100ms",
    ])
    .await
}

async fn admin_get(ctx: &TestContext, path: &str, token: Option<&str>) -> Answer {
    let admin = ctx.admin.expect("the context has an admin listener");
    http::get(admin, path, token).await.expect("admin answers")
}

/// `redwire probe` against `admin`: true when it exits 0.
fn probe(admin: SocketAddr, path: &str) -> bool {
    Command::new(env!("CARGO_BIN_EXE_redwire"))
        .args(["probe", "--admin", &admin.to_string(), "--path", path])
        .stderr(Stdio::null())
        .status()
        .expect("run redwire probe")
        .success()
}

fn enqueue(queue: &str) -> EnqueueRequest {
    EnqueueRequest {
        queue: queue.into(),
        job: Some(JobSpec {
            payload: b"x".to_vec(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_liveness_does_not() {
    let mut ctx = TestContext::standalone_with(&["--admin-listen", "127.0.0.1:0"]).await;
    let admin = ctx.admin.expect("admin");
    assert_eq!(admin_get(&ctx, "/healthz", None).await.status, 200);
    eventually(Duration::from_secs(10), "ready", || async {
        (admin_get(&ctx, "/readyz", None).await.status == 200).then_some(())
    })
    .await;
    assert!(probe(admin, "/readyz"), "probe says ready");
    let missing = admin_get(&ctx, "/nope", None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/metrics"), "{}", missing.body);

    ctx.redis().kill();
    let unready = eventually(Duration::from_secs(10), "not ready", || async {
        let answer = admin_get(&ctx, "/readyz", None).await;
        (answer.status == 503).then_some(answer)
    })
    .await;
    assert!(
        unready.body.contains("redis does not answer"),
        "{}",
        unready.body
    );
    assert_eq!(
        admin_get(&ctx, "/healthz", None).await.status,
        200,
        "still alive"
    );
    assert!(!probe(admin, "/readyz"), "probe says not ready");
    assert!(probe(admin, "/healthz"), "probe says alive");

    ctx.redis().restart();
    eventually(Duration::from_secs(20), "ready again", || async {
        (admin_get(&ctx, "/readyz", None).await.status == 200).then_some(())
    })
    .await;
}

/// A Prometheus server started for one test, scraping one target every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: redwire\n    authorization:\n      \
                 credentials: {token}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write config");
        let addr = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("start prometheus (scripts/test installs it: ensure_prometheus)");
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// The value of the one series `promql` returns, if it returns one.
    async fn value(&self, promql: &str) -> Option<f64> {
        let target = format!("/api/v1/query?query={}", query_escape(promql));
        let answer = http::get(self.addr, &target, None).await.ok()?;
        let json: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        let result = json["data"]["result"].as_array()?;
        match result.as_slice() {
            [series] => series["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address no one listens on right now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Polls `promql` until it equals `want`, within 60 s (Prometheus starts, then
/// scrapes every second, and the gauges are sampled every 200 ms).
async fn until_equal(prometheus: &Prometheus, promql: &str, want: f64) {
    let found = support::within(Duration::from_secs(60), || async {
        (prometheus.value(promql).await == Some(want)).then_some(())
    })
    .await;
    if found.is_none() {
        panic!(
            "{promql} never became {want} (last: {:?}); prometheus log:\n{}",
            prometheus.value(promql).await,
            prometheus.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_queue_depths_ages_and_call_counts() {
    let file = AuthFile::with_tenants(
        "[[tenants]]\nname = \"acme\"\n",
        &[
            ("ops", None, EVERYTHING),
            ("acme", Some("acme"), EVERYTHING),
        ],
    );
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&[
        "--auth-file",
        &path,
        "--admin-listen",
        "127.0.0.1:0",
        "--metrics-interval",
        "200ms",
    ])
    .await;
    let (ops, acme) = (file.token("ops").to_owned(), file.token("acme").to_owned());
    assert_eq!(admin_get(&ctx, "/metrics", None).await.status, 401);
    let tenant = admin_get(&ctx, "/metrics", Some(&acme)).await;
    assert_eq!(tenant.status, 403, "{}", tenant.body);
    assert_eq!(admin_get(&ctx, "/metrics", Some(&ops)).await.status, 200);

    let mut queue = ctx.queue();
    for _ in 0..7 {
        queue
            .enqueue(with_token(Request::new(enqueue("mail")), &ops))
            .await
            .expect("enqueue");
    }
    for _ in 0..2 {
        queue
            .enqueue(with_token(Request::new(enqueue("mail")), &acme))
            .await
            .expect("enqueue");
    }
    // A load of Cache Gets runs while Prometheus scrapes.
    let load = {
        let mut cache = ctx.cache();
        let ops = ops.clone();
        tokio::spawn(async move {
            loop {
                let _ = cache.get(with_token(Request::new(get("k")), &ops)).await;
            }
        })
    };

    let prometheus = Prometheus::start(ctx.admin.expect("admin"), &ops);
    until_equal(
        &prometheus,
        r#"redwire_queue_jobs{tenant="",queue="mail",state="waiting"}"#,
        7.0,
    )
    .await;
    until_equal(
        &prometheus,
        r#"redwire_queue_jobs{tenant="acme",queue="mail",state="waiting"}"#,
        2.0,
    )
    .await;
    until_equal(
        &prometheus,
        r#"sum(rpc_server_call_duration_seconds_count{rpc_method="Enqueue",rpc_grpc_status_code="OK"})"#,
        9.0,
    )
    .await;
    until_equal(
        &prometheus,
        r#"count(redwire_queue_oldest_waiting_age_seconds{queue="mail"} > 0)"#,
        2.0,
    )
    .await;
    until_equal(
        &prometheus,
        r#"count(rpc_server_call_duration_seconds_count{rpc_service="redwire.v1.Cache",rpc_method="Get"} > 100)"#,
        1.0,
    )
    .await;
    load.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gauges_stay_bounded_with_ten_thousand_queues() {
    let ctx = sampling_often().await;
    let mut redis = ctx.redis_connection("rw:queues");
    let names: Vec<String> = (0..10_000).map(|i| format!("q{i:05}")).collect();
    let _: i64 = redis::cmd("SADD")
        .arg("rw:queues")
        .arg(&names)
        .query(&mut redis)
        .expect("register 10,000 queues");
    let metrics = eventually(
        Duration::from_secs(30),
        "a sample of all of them",
        || async {
            let answer = admin_get(&ctx, "/metrics", None).await;
            answer
                .body
                .contains("redwire_metrics_queues_omitted 9000")
                .then_some(answer.body)
        },
    )
    .await;
    assert!(
        metrics.contains("redwire_metrics_queues_exported 1000"),
        "{metrics}"
    );
    let series: HashMap<&str, usize> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split('{').next())
        .fold(HashMap::new(), |mut counts, name| {
            *counts.entry(name).or_default() += 1;
            counts
        });
    assert_eq!(
        series["redwire_queue_jobs"],
        5 * 1000,
        "five states per exported queue"
    );
    assert_eq!(series["redwire_queue_paused"], 1000);
    assert!(metrics.contains(r#"queue="q00999""#) && !metrics.contains(r#"queue="q01000""#));
}

/// `text` holds the sample line `line` exactly.
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pubsub_and_lock_metrics_count_what_happened() {
    use tokio_stream::StreamExt;
    let ctx = sampling_often().await;

    let mut streams = ctx.stream();
    for i in 0..5 {
        streams
            .append(AppendRequest {
                stream: "orders".into(),
                fields: HashMap::from([("n".to_owned(), vec![i])]),
                ..Default::default()
            })
            .await
            .expect("append");
    }
    streams
        .create_group(CreateGroupRequest {
            stream: "orders".into(),
            group: "billing".into(),
            start: "0".into(),
            ..Default::default()
        })
        .await
        .expect("create group");

    let mut subscriber = ctx
        .pubsub()
        .subscribe(SubscribeRequest {
            channels: vec!["alerts".into()],
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    // The first event confirms the subscription: publishes from here on reach it.
    let first = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await
        .expect("confirmed")
        .expect("open")
        .expect("ok");
    assert!(matches!(
        first.event,
        Some(subscribe_response::Event::Subscribed(_))
    ));
    let mut pubsub = ctx.pubsub();
    for _ in 0..3 {
        pubsub
            .publish(PublishRequest {
                channel: "alerts".into(),
                payload: b"x".to_vec(),
                ..Default::default()
            })
            .await
            .expect("publish");
    }
    let mut received = 0;
    while received < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("ok");
        if matches!(event.event, Some(subscribe_response::Event::Message(_))) {
            received += 1;
        }
    }

    let mut locks = ctx.lock();
    let acquire = |wait_ms| AcquireRequest {
        resource: "invoice-7".into(),
        ttl: support::ms(30_000),
        wait: support::ms(wait_ms),
        ..Default::default()
    };
    assert!(
        locks
            .acquire(acquire(0))
            .await
            .expect("acquire")
            .into_inner()
            .acquired
    );
    let waited = locks
        .acquire(acquire(200))
        .await
        .expect("acquire")
        .into_inner();
    assert!(!waited.acquired, "held by the first");

    let metrics = eventually(Duration::from_secs(10), "the stream gauges", || async {
        let body = admin_get(&ctx, "/metrics", None).await.body;
        has_line(
            &body,
            r#"redwire_stream_length{tenant="",stream="orders"} 5"#,
        )
        .then_some(body)
    })
    .await;
    for line in [
        r#"redwire_stream_group_lag{tenant="",stream="orders",group="billing"} 5"#,
        r#"redwire_stream_group_pending{tenant="",stream="orders",group="billing"} 0"#,
        r#"redwire_stream_dead_letters{tenant="",stream="orders"} 0"#,
        "redwire_pubsub_subscribers 1",
        "redwire_pubsub_messages_delivered_total 3",
        "redwire_lock_grants_total 1",
        "redwire_lock_waits_total 1",
        "redwire_lock_waiters 0",
    ] {
        assert!(has_line(&metrics, line), "{line} in\n{metrics}");
    }
    drop(subscriber);
    eventually(
        Duration::from_secs(10),
        "the subscriber is gone",
        || async {
            let body = admin_get(&ctx, "/metrics", None).await.body;
            has_line(&body, "redwire_pubsub_subscribers 0").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_event_counters_are_redis_totals() {
    let ctx = sampling_often().await;
    let mut queue = ctx.queue();
    for _ in 0..3 {
        queue.enqueue(enqueue("work")).await.expect("enqueue");
    }
    let jobs = queue
        .dequeue(DequeueRequest {
            queue: "work".into(),
            max_jobs: 2,
            ..Default::default()
        })
        .await
        .expect("dequeue")
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 2);
    queue
        .ack(AckRequest {
            queue: "work".into(),
            items: vec![AckItem {
                job_id: jobs[0].job_id.clone(),
                lease_token: jobs[0].lease_token.clone(),
                result: Vec::new(),
            }],
        })
        .await
        .expect("ack");
    queue
        .nack(NackRequest {
            queue: "work".into(),
            item: Some(NackItem {
                job_id: jobs[1].job_id.clone(),
                lease_token: jobs[1].lease_token.clone(),
                error: "broken".into(),
                permanent: true,
                retry_after: None,
            }),
        })
        .await
        .expect("nack");
    // One more job, with one attempt: failing it again dead-letters it.
    let mut last_chance = enqueue("work");
    if let Some(job) = &mut last_chance.job {
        job.max_attempts = Some(1);
    }
    queue.enqueue(last_chance).await.expect("enqueue");
    let jobs = queue
        .dequeue(DequeueRequest {
            queue: "work".into(),
            max_jobs: 2,
            ..Default::default()
        })
        .await
        .expect("dequeue")
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        queue
            .nack(NackRequest {
                queue: "work".into(),
                item: Some(NackItem {
                    job_id: job.job_id.clone(),
                    lease_token: job.lease_token.clone(),
                    error: "flaky".into(),
                    permanent: false,
                    retry_after: None,
                }),
            })
            .await
            .expect("nack");
    }
    let labels = r#"{tenant="",queue="work"}"#;
    let dead = |reason| {
        format!(
            r#"redwire_queue_jobs_dead_lettered_total{{tenant="",queue="work",reason="{reason}"}} 1"#
        )
    };
    let metrics = eventually(Duration::from_secs(10), "the counters", || async {
        let body = admin_get(&ctx, "/metrics", None).await.body;
        (has_line(&body, &dead("rejected")) && has_line(&body, &dead("max_attempts")))
            .then_some(body)
    })
    .await;
    for (name, value) in [
        ("redwire_queue_jobs_enqueued_total", 4),
        ("redwire_queue_jobs_started_total", 4),
        ("redwire_queue_jobs_completed_total", 1),
        ("redwire_queue_jobs_retried_total", 1),
        ("redwire_queue_leases_expired_total", 0),
    ] {
        let line = format!("{name}{labels} {value}");
        assert!(has_line(&metrics, &line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("# TYPE redwire_queue_jobs_enqueued counter"),
        "{metrics}"
    );
}

/// The value of the sample `name` (a full series, labels included) in `body`.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_client_metrics_count_commands_errors_the_blocking_pool_and_reconnects() {
    let mut ctx = TestContext::standalone_with(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--blocking-pool-size",
        "1",
    ])
    .await;
    let mut cache = ctx.cache();
    cache.set(support::set("plain", "v")).await.expect("set");
    cache.get(get("plain")).await.expect("get");
    // A list command on a string: Redis answers with an error reply.
    let wrong = cache
        .list_push(ListPushRequest {
            key: "plain".into(),
            values: vec![b"x".to_vec()],
            ..Default::default()
        })
        .await;
    assert_eq!(
        wrong.expect_err("WRONGTYPE").code(),
        tonic::Code::FailedPrecondition
    );

    // One blocking pop holds the only blocking connection; a second is refused.
    let pop = |wait_ms| ListPopRequest {
        keys: vec!["jobs".into()],
        wait: support::ms(wait_ms),
        ..Default::default()
    };
    let mut waiting = ctx.cache();
    let first = tokio::spawn(async move { waiting.list_pop(pop(20_000)).await });
    eventually(
        Duration::from_secs(10),
        "one blocking connection in use",
        || async {
            let body = admin_get(&ctx, "/metrics", None).await.body;
            has_line(&body, "redwire_redis_blocking_connections_in_use 1").then_some(())
        },
    )
    .await;
    let refused = cache.list_pop(pop(1_000)).await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::ResourceExhausted
    );
    cache
        .list_push(ListPushRequest {
            key: "jobs".into(),
            values: vec![b"job".to_vec()],
            ..Default::default()
        })
        .await
        .expect("push");
    let popped = first.await.expect("task").expect("pop").into_inner();
    assert_eq!(popped.values, [b"job".to_vec()]);

    let body = eventually(
        Duration::from_secs(10),
        "the blocking connection back",
        || async {
            let body = admin_get(&ctx, "/metrics", None).await.body;
            has_line(&body, "redwire_redis_blocking_connections_in_use 0").then_some(body)
        },
    )
    .await;
    assert!(
        has_line(&body, "redwire_redis_blocking_refused_total 1"),
        "{body}"
    );
    assert!(
        has_line(&body, r#"redwire_redis_errors_total{kind="reply"} 1"#),
        "{body}"
    );
    let commands = sample(&body, "redwire_redis_command_duration_seconds_count")
        .expect("the command histogram");
    assert!(commands >= 4.0, "set, get, push, push and more: {commands}");

    // Redis goes away: commands fail as connection errors, pub/sub reconnects.
    ctx.redis().kill();
    let _ = cache.get(get("plain")).await;
    ctx.redis().restart();
    let body = eventually(
        Duration::from_secs(20),
        "connection errors and a reconnect",
        || async {
            let body = admin_get(&ctx, "/metrics", None).await.body;
            let lost = sample(&body, r#"redwire_redis_errors_total{kind="connection"}"#);
            let reconnects = sample(
                &body,
                r#"redwire_redis_reconnects_total{connection="pubsub"}"#,
            );
            (lost.is_some_and(|n| n >= 1.0) && reconnects.is_some_and(|n| n >= 1.0)).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains("# HELP redwire_redis_errors "),
        "documented: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_messages_are_counted_per_rpc_each_way() {
    let ctx = TestContext::standalone_with(&["--admin-listen", "127.0.0.1:0"]).await;
    let requests: Vec<EnqueueStreamRequest> = (0..5)
        .map(|_| EnqueueStreamRequest {
            queue: "produced".into(),
            job: enqueue("produced").job,
        })
        .collect();
    use tokio_stream::StreamExt;
    let replies: Vec<_> = ctx
        .queue()
        .enqueue_stream(tokio_stream::iter(requests))
        .await
        .expect("enqueue stream")
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(replies.len(), 5);
    let series = |side| {
        format!(
            r#"redwire_rpc_server_stream_messages_{side}_total{{rpc_service="redwire.v1.Queue",rpc_method="EnqueueStream"}} 5"#
        )
    };
    let body = eventually(Duration::from_secs(10), "five each way", || async {
        let body = admin_get(&ctx, "/metrics", None).await.body;
        (has_line(&body, &series("received")) && has_line(&body, &series("sent"))).then_some(body)
    })
    .await;
    // Unary rpcs have no stream message series.
    assert!(
        !body.contains(
            r#"redwire_rpc_server_stream_messages_sent_total{rpc_service="redwire.v1.Cache""#
        ),
        "{body}"
    );
}
