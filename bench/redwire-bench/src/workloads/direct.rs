//! The `direct-*` workloads: the same Redis work as the gRPC ones through
//! Redwire's store layer, without gRPC (the limit of the design).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redwire::redis::Redis;
use redwire::redis::keys::{Space, user_key};

use crate::driver::*;
use crate::{Args, Workload};

/// SET through the cache store as Cache.Set does it with no condition and no expiry.
pub(crate) async fn store_set(store: &redwire::cache::CacheStore, key: &str, value: &[u8]) {
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
pub(crate) async fn direct(args: &Args, payload: Vec<u8>) -> Report {
    let settings = redwire::redis::RedisSettings {
        blocking_pool_size: 4,
        command_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        tls: Default::default(),
        durable_replicas: 0,
    };
    let redis = Arc::new(Redis::standalone(&args.redis_url, settings).expect("redis"));
    match args.workload {
        Workload::DirectGet | Workload::DirectSet => cache_get_or_set(args, redis, payload).await,
        Workload::DirectGetMany => cache_get_many(args, redis, payload).await,
        Workload::DirectXadd => xadd(args, redis, payload).await,
        Workload::DirectStreamGroup => stream_group(args, redis, payload).await,
        Workload::DirectQueue => queue_round_trip(args, redis, payload).await,
        other => unreachable!("{other:?} is not a direct workload"),
    }
}

/// GET or SET of one key, as Cache.Get and Cache.Set do it.
async fn cache_get_or_set(args: &Args, redis: Arc<Redis>, payload: Vec<u8>) -> Report {
    let store = redwire::cache::CacheStore::new(redis, usize::MAX);
    let key = user_key(None, Space::Cache, &format!("{}:k", args.prefix));
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

/// MGET of `--batch` keys, as Cache.GetMany does it.
async fn cache_get_many(args: &Args, redis: Arc<Redis>, payload: Vec<u8>) -> Report {
    let store = redwire::cache::CacheStore::new(redis, usize::MAX);
    let keys: Vec<String> = (0..args.batch)
        .map(|i| user_key(None, Space::Cache, &format!("{}:m{i}", args.prefix)))
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

/// One XADD per call, as Stream.Append does it.
async fn xadd(args: &Args, redis: Arc<Redis>, payload: Vec<u8>) -> Report {
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

/// XREADGROUP and XACK of a prefilled stream in batches of 32, as ReadGroup does it.
async fn stream_group(args: &Args, redis: Arc<Redis>, payload: Vec<u8>) -> Report {
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
    workers_report(started, workers).await
}

/// Enqueue, lease and ack batches of 32 jobs through the queue scripts.
async fn queue_round_trip(args: &Args, redis: Arc<Redis>, payload: Vec<u8>) -> Report {
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
    workers_report(started, workers).await
}

/// The report of workers that each return how many operations they did.
async fn workers_report(
    started: Instant,
    workers: impl Iterator<Item = tokio::task::JoinHandle<u64>>,
) -> Report {
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
