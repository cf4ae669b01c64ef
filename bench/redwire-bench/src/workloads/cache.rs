//! Cache workloads: Get, Set and GetMany of one key (or `--batch` keys).

use redwire::proto::cache_client::CacheClient;
use redwire::proto::*;

use crate::driver::*;
use crate::{Args, Workload};

/// CacheGet or CacheSet of one key, set once before the clock starts.
pub(crate) async fn get_or_set(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
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

/// CacheGetMany of `--batch` keys per call.
pub(crate) async fn get_many(args: &Args, channel: Conn, payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
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
