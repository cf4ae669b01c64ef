//! The operator workload: how fast the listing rpcs and the console's api
//! answer at scale. Seeds one queue with `--jobs` waiting jobs (100,000 by
//! default) and `--queues` queues of one job each (1,000), then times `--ops` sequential calls of each read an operator makes, reporting
//! p50 and p99 per call in `extra`.

use std::time::{Duration, Instant};

use futures::future::join_all;
use redwire::proto::queue_client::QueueClient;
use redwire::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Args;
use crate::driver::*;

/// Jobs per EnqueueBatch while seeding (the server's default --max-batch).
const SEED_BATCH: usize = 1000;

pub(crate) async fn operator(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
    let client = QueueClient::new(channel).max_decoding_message_size(usize::MAX);
    let big = format!("{prefix}-big");
    seed(args, &client, &big, &payload).await;

    let mut timings = serde_json::Map::new();
    let mut calls = 0;
    let mut elapsed = Duration::ZERO;
    let mut time =
        async |name: &str, call: &mut dyn FnMut() -> futures::future::BoxFuture<'static, ()>| {
            let mut took = Vec::with_capacity(args.ops as usize);
            for _ in 0..args.ops {
                let started = Instant::now();
                call().await;
                took.push(started.elapsed());
            }
            calls += args.ops;
            elapsed += took.iter().sum::<Duration>();
            timings.insert(name.to_owned(), percentiles(&mut took));
        };

    let deep_token = deep_page_token(&client, &big, args.jobs / 2).await;
    let some_job = first_job(&client, &big).await;
    let c = client.clone();
    time("ListQueues (100 names)", &mut || {
        let mut c = c.clone();
        Box::pin(async move {
            c.list_queues(ListQueuesRequest {
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("list queues");
        })
    })
    .await;
    for (name, token) in [
        ("ListJobs waiting, first page (100)", String::new()),
        ("ListJobs waiting, page at 50% (100)", deep_token),
    ] {
        let (c, big) = (client.clone(), big.clone());
        time(name, &mut || {
            let (mut c, big, token) = (c.clone(), big.clone(), token.clone());
            Box::pin(async move {
                c.list_jobs(ListJobsRequest {
                    queue: big,
                    state: JobState::Waiting.into(),
                    page_size: 100,
                    page_token: token,
                })
                .await
                .expect("list jobs");
            })
        })
        .await;
    }
    let (c, b) = (client.clone(), big.clone());
    time("GetJob", &mut || {
        let (mut c, queue, job_id) = (c.clone(), b.clone(), some_job.clone());
        Box::pin(async move {
            c.get_job(GetJobRequest { queue, job_id })
                .await
                .expect("get job");
        })
    })
    .await;
    let (c, b) = (client.clone(), big.clone());
    time("Stats", &mut || {
        let (mut c, queue) = (c.clone(), b.clone());
        Box::pin(async move {
            c.stats(StatsRequest { queue }).await.expect("stats");
        })
    })
    .await;
    let (c, b) = (client.clone(), big.clone());
    time("GetHistory", &mut || {
        let (mut c, queue) = (c.clone(), b.clone());
        Box::pin(async move {
            c.get_history(GetHistoryRequest { queue })
                .await
                .expect("history");
        })
    })
    .await;
    if let Some(admin) = args.admin {
        for (name, path) in [
            ("console overview", "/console/api/overview".to_owned()),
            ("console queue page", format!("/console/api/queues/{big}")),
            (
                "console jobs page",
                format!("/console/api/queues/{big}/jobs?state=waiting"),
            ),
            (
                "console dead-letter groups",
                format!("/console/api/queues/{big}/dead-groups"),
            ),
        ] {
            let token = args.token.clone();
            time(name, &mut || {
                let (path, token) = (path.clone(), token.clone());
                Box::pin(async move { http_get(admin, &path, token.as_deref()).await })
            })
            .await;
        }
    }
    Report {
        ops: calls,
        elapsed,
        hist: None,
        extra: serde_json::json!({"jobs": args.jobs, "queues": args.queues, "calls": timings}),
    }
}

/// The p50 and p99 of `took`, in ms.
fn percentiles(took: &mut [Duration]) -> serde_json::Value {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    serde_json::json!({"p50_ms": at(0.5), "p99_ms": at(0.99)})
}

/// `jobs` waiting jobs in `big`, and `queues` queues of one job each.
async fn seed(args: &Args, client: &QueueClient<Conn>, big: &str, payload: &[u8]) {
    let spec = || JobSpec {
        payload: payload.to_vec(),
        ..Default::default()
    };
    let batches = (args.jobs as usize).div_ceil(SEED_BATCH);
    for chunk in (0..batches).collect::<Vec<_>>().chunks(8) {
        join_all(chunk.iter().map(|i| {
            let mut client = client.clone();
            let n = SEED_BATCH.min(args.jobs as usize - i * SEED_BATCH);
            let request = EnqueueBatchRequest {
                queue: big.to_owned(),
                jobs: (0..n).map(|_| spec()).collect(),
            };
            async move {
                client
                    .enqueue_batch(request)
                    .await
                    .expect("seed the big queue")
            }
        }))
        .await;
    }
    let names: Vec<String> = (0..args.queues)
        .map(|i| format!("{}-q{i:04}", args.prefix))
        .collect();
    for chunk in names.chunks(64) {
        join_all(chunk.iter().map(|queue| {
            let mut client = client.clone();
            let request = EnqueueRequest {
                queue: queue.clone(),
                job: Some(spec()),
            };
            async move { client.enqueue(request).await.expect("seed a queue") }
        }))
        .await;
    }
}

/// The page token `at` jobs into the waiting list of `queue`.
async fn deep_page_token(client: &QueueClient<Conn>, queue: &str, at: u64) -> String {
    let mut client = client.clone();
    let mut token = String::new();
    let mut seen = 0;
    while seen < at {
        let page = client
            .list_jobs(ListJobsRequest {
                queue: queue.to_owned(),
                state: JobState::Waiting.into(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("page through")
            .into_inner();
        seen += page.jobs.len() as u64;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    token
}

async fn first_job(client: &QueueClient<Conn>, queue: &str) -> String {
    let page = client
        .clone()
        .list_jobs(ListJobsRequest {
            queue: queue.to_owned(),
            state: JobState::Waiting.into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("first job")
        .into_inner();
    page.jobs.first().expect("a seeded job").job_id.clone()
}

/// One HTTP/1.1 GET on the admin listener, read to the end; panics unless 200.
async fn http_get(admin: std::net::SocketAddr, path: &str, token: Option<&str>) {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin listener");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read");
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&reply[..reply.len().min(200)])
    );
}
