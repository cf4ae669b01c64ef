//! `redwire.v1.Cache` against a real redis-server, over real gRPC.
//!
//! The core checks are plain functions run twice: once per check on its own
//! standalone Redis (in parallel), and all together on one 3-master cluster.

#[path = "../support/mod.rs"]
mod support;

mod collections;
mod input;
mod storage;
mod strings;

use std::time::{Duration, Instant};

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use support::{TestContext, assert_invalid, eventually, ms};
use tonic::{Code, Request};

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("the call should fail").code()
}

/// Strings as byte values (set members, list values).
fn bytes(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

async fn set(ctx: &TestContext, key: &str, value: &[u8]) {
    let reply = ctx
        .cache()
        .set(SetRequest {
            key: key.into(),
            value: value.to_vec(),
            ..Default::default()
        })
        .await
        .expect("set");
    assert!(reply.into_inner().written);
}

async fn get(ctx: &TestContext, key: &str) -> Option<Vec<u8>> {
    let reply = ctx
        .cache()
        .get(GetRequest { key: key.into() })
        .await
        .expect("get")
        .into_inner();
    reply.found.then_some(reply.value)
}

use collections::*;
use input::*;
use strings::*;

crate::core_checks!(
    strings_and_conditions,
    ttls_expire_and_update,
    counters,
    many_keys_round_trip,
    concurrent_compare_and_set_has_one_winner,
    hashes,
    sets,
    leaderboard,
    a_rejected_increment_writes_nothing,
    lists,
    blocking_pop_is_woken_by_a_push,
    blocking_pop_respects_the_deadline,
    bloom_filter_rates,
    wrong_type_is_failed_precondition,
);

/// Every core check of this file passes on a real 3-master cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_checks_pass_on_a_three_master_cluster() {
    let ctx = TestContext::cluster().await;
    run_core_checks_on(&ctx).await;

    // GetMany above spanned slots; these two cannot be split and say so.
    let status = ctx
        .cache()
        .list_move(ListMoveRequest {
            source: "a".into(),
            destination: "b".into(),
            ..Default::default()
        })
        .await
        .expect_err("cross-slot LMOVE");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("destination:"), "{status:?}");
    let keys: Vec<String> = (0..10).map(|i| format!("pop-{i}")).collect();
    let status = ctx
        .cache()
        .list_pop(ListPopRequest {
            keys,
            wait: ms(1000),
            ..Default::default()
        })
        .await
        .expect_err("cross-slot BLMPOP");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("keys:"), "{status:?}");
}
