//! `redwire.v1.Lock` against real redis-servers, over real gRPC.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use support::{RedisServer, TestContext, assert_invalid, eventually, ms};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn acquire_req(resource: &str, ttl_ms: u64, wait_ms: u64) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        ttl: ms(ttl_ms),
        wait: ms(wait_ms),
        lease_id: String::new(),
    }
}

async fn acquire(ctx: &TestContext, resource: &str, ttl_ms: u64, wait_ms: u64) -> AcquireResponse {
    ctx.lock()
        .acquire(acquire_req(resource, ttl_ms, wait_ms))
        .await
        .expect("acquire")
        .into_inner()
}

async fn release(ctx: &TestContext, resource: &str, token: &str) -> Result<(), tonic::Status> {
    ctx.lock()
        .release(ReleaseRequest {
            resource: resource.into(),
            token: token.into(),
        })
        .await
        .map(drop)
}

async fn describe(ctx: &TestContext, resource: &str) -> DescribeResponse {
    ctx.lock()
        .describe(DescribeRequest {
            resource: resource.into(),
        })
        .await
        .expect("describe")
        .into_inner()
}

// ---------------------------------------------------------------- core checks

/// Contending clients never hold a lock at once, and each grant's fencing token is higher than the last.
async fn contention_never_overlaps_and_fences_increase(ctx: &TestContext) {
    let log: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::default();
    let workers = (0..32).map(|_| {
        let mut client = ctx.lock();
        let log = log.clone();
        async move {
            for _ in 0..4 {
                let grant = client
                    .acquire(acquire_req("ledger", 10_000, 60_000))
                    .await
                    .expect("acquire")
                    .into_inner();
                assert!(grant.acquired, "waited long enough to be granted");
                let start = Instant::now();
                tokio::task::yield_now().await;
                let end = Instant::now();
                log.lock()
                    .expect("log")
                    .push((grant.fencing_token, start, end));
                client
                    .release(ReleaseRequest {
                        resource: "ledger".into(),
                        token: grant.token,
                    })
                    .await
                    .expect("release");
            }
        }
    });
    futures::future::join_all(workers).await;
    let mut log = log.lock().expect("log").clone();
    assert_eq!(log.len(), 128);
    log.sort_by_key(|(_, start, _)| *start);
    for pair in log.windows(2) {
        let ((f1, _, end1), (f2, start2, _)) = (pair[0], pair[1]);
        assert!(start2 >= end1, "two holders overlapped");
        assert!(
            f2 > f1,
            "fencing tokens increase in grant order: {f1} then {f2}"
        );
    }
}

/// A holder whose lease ran out cannot release or extend the new holder's lock.
async fn expired_holders_are_fenced_off(ctx: &TestContext) {
    let stale = acquire(ctx, "printer", 100, 0).await;
    assert!(stale.acquired);
    // The holder "pauses" past its ttl; a waiter gets the lock when it runs out.
    let next = acquire(ctx, "printer", 10_000, 5_000).await;
    assert!(next.acquired, "granted once the stale lease ran out");
    assert!(next.fencing_token > stale.fencing_token);
    let refused = release(ctx, "printer", &stale.token)
        .await
        .expect_err("stale release");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let refused = ctx
        .lock()
        .extend(ExtendRequest {
            resource: "printer".into(),
            token: stale.token.clone(),
            ttl: ms(1000),
        })
        .await
        .expect_err("stale extend");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let extended = ctx
        .lock()
        .extend(ExtendRequest {
            resource: "printer".into(),
            token: next.token.clone(),
            ttl: ms(20_000),
        })
        .await
        .expect("holder extends");
    assert!(extended.into_inner().expire_time.is_some());
    let state = describe(ctx, "printer").await;
    assert!(state.held && state.fencing_token == next.fencing_token);
    assert!(state.ttl.expect("ttl").seconds >= 15);
    release(ctx, "printer", &next.token).await.expect("release");
    assert!(!describe(ctx, "printer").await.held);
}

/// Waiters get the lock when it is released, and one whose wait runs out gives up in time.
async fn waiters_are_woken_by_release_and_give_up_in_time(ctx: &TestContext) {
    let holder = acquire(ctx, "door", 30_000, 0).await;
    assert!(holder.acquired);
    let waiter = {
        let mut client = ctx.lock();
        tokio::spawn(async move {
            let started = Instant::now();
            let grant = client
                .acquire(acquire_req("door", 30_000, 20_000))
                .await
                .expect("wait")
                .into_inner();
            (grant, started.elapsed())
        })
    };
    eventually(
        Duration::from_secs(10),
        "the waiter to register",
        || async { (describe(ctx, "door").await.waiters == 1).then_some(()) },
    )
    .await;
    // A second waiter with a short wait gives up while the lock is held.
    let short = acquire(ctx, "door", 30_000, 200).await;
    assert!(!short.acquired);
    // And one whose gRPC deadline is shorter than its wait returns before it.
    let mut request = Request::new(acquire_req("door", 30_000, 60_000));
    request.set_timeout(Duration::from_millis(500));
    let bounded = ctx
        .lock()
        .acquire(request)
        .await
        .expect("answers before the deadline")
        .into_inner();
    assert!(!bounded.acquired);

    release(ctx, "door", &holder.token).await.expect("release");
    let (grant, waited) = waiter.await.expect("task");
    assert!(grant.acquired, "the waiter got the lock after the release");
    assert!(
        waited < Duration::from_secs(20),
        "woken by the release, not by its wait ending"
    );
    assert_eq!(grant.fencing_token, holder.fencing_token + 1);
    release(ctx, "door", &grant.token).await.expect("release");
}

/// An Acquire retried with the same lease id gets the same grant, not a second one.
async fn retried_acquire_with_a_lease_id_is_idempotent(ctx: &TestContext) {
    let request = || AcquireRequest {
        lease_id: "job-42-attempt-1".into(),
        ..acquire_req("report", 10_000, 0)
    };
    let first = ctx
        .lock()
        .acquire(request())
        .await
        .expect("acquire")
        .into_inner();
    let retry = ctx
        .lock()
        .acquire(request())
        .await
        .expect("retry")
        .into_inner();
    assert!(first.acquired && retry.acquired);
    assert_eq!(
        (retry.token.as_str(), retry.fencing_token),
        (first.token.as_str(), first.fencing_token)
    );
    assert_eq!(first.token, "job-42-attempt-1");
    release(ctx, "report", &first.token).await.expect("release");
    assert_eq!(
        describe(ctx, "report").await.fencing_token,
        first.fencing_token,
        "no second grant"
    );
}

/// Hold keeps a lock past its TTL while the stream is open and releases it when the stream ends.
async fn hold_keeps_and_releases(ctx: &TestContext) {
    let mut hold = ctx
        .lock()
        .hold(HoldRequest {
            resource: "leader".into(),
            ttl: ms(200),
            wait: None,
            heartbeat_interval: None,
        })
        .await
        .expect("hold")
        .into_inner();
    let granted = match hold.next().await.expect("event").expect("ok").event {
        Some(hold_response::Event::Granted(g)) => g,
        other => panic!("expected a grant, got {other:?}"),
    };
    // 10x its ttl later it is still ours, renewed.
    let started = Instant::now();
    let mut renewals = 0;
    while started.elapsed() < Duration::from_secs(2) {
        match tokio::time::timeout(Duration::from_secs(5), hold.next())
            .await
            .expect("renewal")
            .expect("open")
            .expect("ok")
            .event
        {
            Some(hold_response::Event::Renewed(_)) => renewals += 1,
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            !acquire(ctx, "leader", 1000, 0).await.acquired,
            "nobody else gets it"
        );
    }
    assert!(renewals >= 5, "renewed {renewals} times");
    assert_eq!(
        describe(ctx, "leader").await.fencing_token,
        granted.fencing_token
    );
    drop(hold);
    // Closing the stream releases at once (not after the ttl).
    let next = acquire(ctx, "leader", 1000, 5_000).await;
    assert!(next.acquired && next.fencing_token > granted.fencing_token);
}

/// Holds `resource` from `here`, lines up three waiters on `here` and two on
/// `there`, and checks that Describe counts all five (local waiters queue behind
/// the first, but each one waits), then none once each was granted in turn.
async fn describe_counts_all_five_waiters(here: &TestContext, there: &TestContext, resource: &str) {
    let holder = acquire(here, resource, 20_000, 0).await;
    assert!(holder.acquired);
    let mut waiters = Vec::new();
    for i in 0..5 {
        let mut client = if i < 3 { here.lock() } else { there.lock() };
        let resource = resource.to_owned();
        waiters.push(tokio::spawn(async move {
            let granted = client
                .acquire(acquire_req(&resource, 5_000, 8_000))
                .await
                .expect("acquire")
                .into_inner();
            assert!(granted.acquired, "each waiter gets its turn");
            client
                .release(ReleaseRequest {
                    resource,
                    token: granted.token,
                })
                .await
                .expect("release");
        }));
    }
    eventually(
        Duration::from_secs(5),
        "Describe to count 5 waiters",
        || async { (describe(here, resource).await.waiters == 5).then_some(()) },
    )
    .await;
    release(here, resource, &holder.token)
        .await
        .expect("release");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    assert_eq!(describe(there, resource).await.waiters, 0);
}

/// Describe counts the waiters of every Redwire instance, not just its own.
async fn describe_counts_every_waiter_on_every_instance(ctx: &TestContext) {
    let other = ctx.beside().await;
    describe_counts_all_five_waiters(ctx, &other, "busy-desk").await;
}

/// The held locks ListLocks shows whose resource starts with `prefix`, one
/// page of `page_size` at a time: (resource, fencing token).
async fn held_locks(ctx: &TestContext, prefix: &str, page_size: u32) -> Vec<(String, u64)> {
    let mut held = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ctx
            .lock()
            .list_locks(ListLocksRequest {
                page_size,
                page_token,
            })
            .await
            .expect("list locks")
            .into_inner();
        for lock in page.locks {
            assert!(lock.ttl.is_some(), "a held lock has a ttl: {lock:?}");
            if lock.resource.starts_with(prefix) {
                held.push((lock.resource, lock.fencing_token));
            }
        }
        if page.next_page_token.is_empty() {
            return held;
        }
        page_token = page.next_page_token;
    }
}

/// ListLocks shows what is held, with its fencing token, and drops a lock
/// when it is released, when its Hold ends and when its lease runs out.
async fn list_locks_shows_what_is_held(ctx: &TestContext) {
    let b = acquire(ctx, "ledger-b", 30_000, 0).await;
    let a = acquire(ctx, "ledger-a", 30_000, 0).await;
    let short = acquire(ctx, "ledger-d", 300, 0).await;
    let mut hold = ctx
        .lock()
        .hold(HoldRequest {
            resource: "ledger-c".into(),
            ttl: ms(300),
            wait: None,
            heartbeat_interval: None,
        })
        .await
        .expect("hold")
        .into_inner();
    let c = match hold.next().await.expect("event").expect("ok").event {
        Some(hold_response::Event::Granted(granted)) => granted,
        other => panic!("expected a grant, got {other:?}"),
    };
    let everything = vec![
        ("ledger-a".to_owned(), a.fencing_token),
        ("ledger-b".to_owned(), b.fencing_token),
        ("ledger-c".to_owned(), c.fencing_token),
        ("ledger-d".to_owned(), short.fencing_token),
    ];
    // The index is written beside each grant, so the first listing may lag.
    eventually(Duration::from_secs(10), "every grant listed", || async {
        (held_locks(ctx, "ledger-", 1).await == everything).then_some(())
    })
    .await;
    // ledger-d runs out; ledger-c stays, renewed by its Hold well past its ttl.
    release(ctx, "ledger-a", &a.token).await.expect("release");
    let renewed = vec![
        ("ledger-b".to_owned(), b.fencing_token),
        ("ledger-c".to_owned(), c.fencing_token),
    ];
    eventually(
        Duration::from_secs(10),
        "the released and run-out locks to go",
        || async { (held_locks(ctx, "ledger-", 0).await == renewed).then_some(()) },
    )
    .await;
    drop(hold);
    eventually(Duration::from_secs(10), "the ended Hold to go", || async {
        (held_locks(ctx, "ledger-", 0).await == [("ledger-b".to_owned(), b.fencing_token)])
            .then_some(())
    })
    .await;
    release(ctx, "ledger-b", &b.token).await.expect("release");
}

crate::core_checks!(
    contention_never_overlaps_and_fences_increase,
    expired_holders_are_fenced_off,
    waiters_are_woken_by_release_and_give_up_in_time,
    retried_acquire_with_a_lease_id_is_idempotent,
    hold_keeps_and_releases,
    describe_counts_every_waiter_on_every_instance,
    list_locks_shows_what_is_held,
);

/// Every core check of this file passes on a real 3-master cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_checks_pass_on_a_three_master_cluster() {
    let ctx = TestContext::cluster().await;
    run_core_checks_on(&ctx).await;
}

/// A Hold whose Redis dies reports the lock lost instead of pretending to hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_a_hold_reports_lost() {
    let mut ctx = TestContext::standalone().await;
    let mut hold = ctx
        .lock()
        .hold(HoldRequest {
            resource: "fragile".into(),
            ttl: ms(300),
            wait: None,
            heartbeat_interval: None,
        })
        .await
        .expect("hold")
        .into_inner();
    assert!(matches!(
        hold.next().await.expect("event").expect("ok").event,
        Some(hold_response::Event::Granted(_))
    ));
    ctx.redis().kill();
    let lost = loop {
        match tokio::time::timeout(Duration::from_secs(10), hold.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("ok")
            .event
        {
            Some(hold_response::Event::Renewed(_)) => continue,
            Some(hold_response::Event::Lost(reason)) => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(lost.contains("renewal failed"), "{lost}");
    assert!(hold.next().await.is_none(), "the stream ends after LOST");
}

/// How far into a short-deadline Acquire the lock is released (scenario timing,
/// not a wait for a condition).
const RELEASED_AFTER: Duration = Duration::from_millis(40);

/// An Acquire whose gRPC deadline (150 ms) is shorter than its wait still gets a
/// lock released 40 ms into the call, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_with_a_short_deadline_gets_a_lock_released_in_time() {
    let ctx = TestContext::standalone().await;
    for attempt in 0..5 {
        let resource = format!("short-deadline-{attempt}");
        let holder = acquire(&ctx, &resource, 30_000, 0).await;
        assert!(holder.acquired);
        let mut request = Request::new(acquire_req(&resource, 5_000, 30_000));
        request.set_timeout(Duration::from_millis(150));
        let mut client = ctx.lock();
        let call = tokio::spawn(async move { client.acquire(request).await });
        tokio::time::sleep(RELEASED_AFTER).await;
        release(&ctx, &resource, &holder.token)
            .await
            .expect("release");
        let reply = call
            .await
            .expect("acquire task")
            .expect("acquire within its deadline")
            .into_inner();
        assert!(reply.acquired, "attempt {attempt}: {reply:?}");
    }
}

/// Three independent redis-servers and a Redwire granting locks on them by
/// majority (its other services on a fourth, standalone Redis).
async fn redlock() -> (Vec<RedisServer>, TestContext) {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls = nodes
        .iter()
        .map(RedisServer::url)
        .collect::<Vec<_>>()
        .join(",");
    let ctx = TestContext::standalone_with(&["--lock-redlock", &urls]).await;
    (nodes, ctx)
}

/// In Redlock mode, Describe still counts every waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_describe_counts_every_waiter() {
    let (_nodes, ctx) = redlock().await;
    describe_counts_all_five_waiters(&ctx, &ctx, "quorum-desk").await;
}

fn to_system_time(t: &Option<prost_types::Timestamp>) -> std::time::SystemTime {
    let t = t.as_ref().expect("timestamp");
    std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).expect("after 1970"),
            u32::try_from(t.nanos).expect("nanos"),
        )
}

/// With one of three Redlock nodes hung (black-holed: it accepts but never
/// answers), a 1 s lock is still granted by the other two (before: each round
/// waited the whole Redis timeout on the hung node, longer than the lease), and
/// the reported expiry is never later than the key's expiry on the nodes that
/// granted it, so a holder never believes in a lease that is already gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_with_a_hung_node_grants_in_time_and_never_overstates_the_lease() {
    let (nodes, ctx) = redlock().await;
    nodes[2].pause();
    for attempt in 0..3 {
        let resource = format!("hung-{attempt}");
        let granted = acquire(&ctx, &resource, 1_000, 0).await;
        assert!(granted.acquired, "attempt {attempt}: {granted:?}");
        let expires = to_system_time(&granted.expire_time);
        // When the key really expires on the nodes that granted it: read after
        // the grant, so a later reading only moves it later.
        let owner = redwire::redis::keys::lock_keys(&resource)[0].clone();
        for node in &nodes[..2] {
            let asked = std::time::SystemTime::now();
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&owner)
                .query(&mut node.connection())
                .expect("pttl");
            let gone = asked + Duration::from_millis(u64::try_from(pttl).expect("a live key"));
            assert!(
                expires <= gone + Duration::from_millis(1),
                "attempt {attempt}: reported expiry {:?} after the key expires on a node",
                expires.duration_since(gone)
            );
        }
        release(&ctx, &resource, &granted.token)
            .await
            .expect("release");
    }
    nodes[2].resume();
}

/// A fencing token from a Redlock grant on `ctx`, released at once; None while
/// no majority grants (nodes restarting).
async fn redlock_fence(ctx: &TestContext, resource: &str) -> Option<u64> {
    let mut lock = ctx.lock();
    let granted = lock
        .acquire(acquire_req(resource, 10_000, 0))
        .await
        .ok()?
        .into_inner();
    if !granted.acquired {
        return None;
    }
    let _ = lock
        .release(ReleaseRequest {
            resource: resource.into(),
            token: granted.token,
        })
        .await;
    Some(granted.fencing_token)
}

/// A node restarted without its data (its fencing counter back at 0) does not
/// make fences go back: node 0 misses five grants, node 1 comes back empty, and
/// the majority of the two still grants a higher token than any before (before:
/// node 0's stale counter + 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_fences_stay_monotonic_when_a_node_restarts_empty() {
    let (mut nodes, ctx) = redlock().await;
    let resource = "ledger";
    let mut highest = redlock_fence(&ctx, resource).await.expect("a first grant");
    nodes[0].kill();
    for _ in 0..5 {
        let fence = eventually(Duration::from_secs(10), "a grant by nodes 1 and 2", || {
            redlock_fence(&ctx, resource)
        })
        .await;
        assert!(fence > highest, "{fence} after {highest}");
        highest = fence;
    }
    nodes[1].restart_empty();
    nodes[0].restart();
    nodes[2].kill();
    let fence = eventually(Duration::from_secs(10), "a grant by nodes 0 and 1", || {
        redlock_fence(&ctx, resource)
    })
    .await;
    assert!(fence > highest, "{fence} after {highest}: fences went back");
}

/// Redlock grants with one of three nodes down and refuses with two down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_survives_one_node_down_and_refuses_with_two() {
    let (mut nodes, ctx) = redlock().await;

    let first = acquire(&ctx, "vault", 10_000, 0).await;
    assert!(first.acquired);
    assert!(
        !acquire(&ctx, "vault", 10_000, 0).await.acquired,
        "held on a majority"
    );
    release(&ctx, "vault", &first.token).await.expect("release");

    // Node 0 down: a majority (1, 2) still grants, with a higher fencing token.
    nodes[0].kill();
    let second = acquire(&ctx, "vault", 10_000, 0).await;
    assert!(second.acquired, "works with one node down");
    assert!(second.fencing_token > first.fencing_token);
    release(&ctx, "vault", &second.token)
        .await
        .expect("release");

    // Node 0 back (it missed the second grant), node 1 down: majority (0, 2).
    nodes[0].restart();
    nodes[1].kill();
    let third = eventually(
        Duration::from_secs(10),
        "a grant on the new majority",
        || async {
            let grant = ctx
                .lock()
                .acquire(acquire_req("vault", 10_000, 0))
                .await
                .ok()?
                .into_inner();
            grant.acquired.then_some(grant)
        },
    )
    .await;
    assert!(
        third.fencing_token > second.fencing_token,
        "monotonic across changing majorities"
    );
    release(&ctx, "vault", &third.token).await.expect("release");

    // Two nodes down: refused with a clear status.
    nodes[2].kill();
    let refused = ctx
        .lock()
        .acquire(acquire_req("vault", 10_000, 0))
        .await
        .expect_err("no majority");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("lock servers"), "{refused:?}");
}

/// Every kind of bad input is INVALID_ARGUMENT naming the field, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_invalid_argument_naming_the_field() {
    let ctx = TestContext::standalone().await;
    let mut lock = ctx.lock();
    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "resource",
            lock.acquire(acquire_req("", 1000, 0)).await.map(drop),
        ),
        (
            "resource",
            lock.acquire(acquire_req("has space", 1000, 0))
                .await
                .map(drop),
        ),
        (
            "ttl",
            lock.acquire(AcquireRequest {
                ttl: None,
                ..acquire_req("r", 1000, 0)
            })
            .await
            .map(drop),
        ),
        (
            "wait",
            lock.acquire(AcquireRequest {
                wait: Some(PbDuration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..acquire_req("r", 1000, 0)
            })
            .await
            .map(drop),
        ),
        (
            "lease_id",
            lock.acquire(AcquireRequest {
                lease_id: "a/b".into(),
                ..acquire_req("r", 1000, 0)
            })
            .await
            .map(drop),
        ),
        (
            "ttl",
            lock.hold(HoldRequest {
                resource: "r".into(),
                ttl: ms(10),
                wait: None,
                heartbeat_interval: None,
            })
            .await
            .map(drop),
        ),
    ];
    for (field, result) in cases {
        assert_invalid(field, result);
    }
    assert!(!describe(&ctx, "r").await.held, "nothing was granted");
}

/// A lock token (without a lease id) is 128 random bits, different per grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_tokens_are_unguessable() {
    let ctx = TestContext::standalone().await;
    let first = acquire(&ctx, "printer", 5_000, 0).await;
    release(&ctx, "printer", &first.token)
        .await
        .expect("release");
    let second = acquire(&ctx, "printer", 5_000, 0).await;
    for token in [&first.token, &second.token] {
        assert!(
            token.len() == 32 && token.bytes().all(|c| c.is_ascii_hexdigit()),
            "{token}"
        );
    }
    assert_ne!(first.token, second.token);
}
