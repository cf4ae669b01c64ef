//! `redwire.v1.Cache` against a real redis-server, over real gRPC.
//!
//! The core checks are plain functions run twice: once per check on its own
//! standalone Redis (in parallel), and all together on one 3-master cluster.

mod support;

use std::time::{Duration, Instant};

use prost_types::Duration as PbDuration;
use redwire::proto::*;
use support::{TestContext, eventually};
use tonic::{Code, Request};

fn ms(millis: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: millis / 1000,
        nanos: i32::try_from((millis % 1000) * 1_000_000).expect("nanos"),
    })
}

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

// ---------------------------------------------------------------- core checks

async fn strings_and_conditions(ctx: &TestContext) {
    let mut cache = ctx.cache();
    assert_eq!(get(ctx, "s:missing").await, None);
    set(ctx, "s:a", b"one").await;
    assert_eq!(get(ctx, "s:a").await.as_deref(), Some(&b"one"[..]));

    let cond = |key: &str, value: &[u8], condition: SetCondition, expected: &[u8]| SetRequest {
        key: key.into(),
        value: value.to_vec(),
        condition: condition as i32,
        expected: expected.to_vec(),
        ..Default::default()
    };
    // (key, value, condition, expected, written?)
    type Case = (
        &'static str,
        &'static [u8],
        SetCondition,
        &'static [u8],
        bool,
    );
    let cases: [Case; 7] = [
        ("s:a", b"x", SetCondition::IfAbsent, b"", false),
        ("s:b", b"two", SetCondition::IfAbsent, b"", true),
        ("s:c", b"x", SetCondition::IfPresent, b"", false),
        ("s:b", b"2", SetCondition::IfPresent, b"", true),
        ("s:b", b"3", SetCondition::IfEqual, b"wrong", false),
        ("s:b", b"3", SetCondition::IfEqual, b"2", true),
        ("s:absent", b"3", SetCondition::IfEqual, b"", false),
    ];
    for (key, value, condition, expected, written) in cases {
        let reply = cache
            .set(cond(key, value, condition, expected))
            .await
            .expect("conditional set")
            .into_inner();
        assert_eq!(reply.written, written, "{condition:?} set of {key}");
    }
    assert_eq!(get(ctx, "s:b").await.as_deref(), Some(&b"3"[..]));
    assert_eq!(get(ctx, "s:c").await, None);

    // Binary values round-trip untouched.
    let binary: Vec<u8> = (0..=255).collect();
    set(ctx, "s:bin", &binary).await;
    assert_eq!(get(ctx, "s:bin").await, Some(binary));

    let deleted = cache
        .delete(DeleteRequest {
            keys: vec!["s:a".into(), "s:b".into(), "s:never".into()],
        })
        .await
        .expect("delete")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 2);
    assert_eq!(get(ctx, "s:a").await, None);
}

async fn ttls_expire_and_update(ctx: &TestContext) {
    let mut cache = ctx.cache();
    cache
        .set(SetRequest {
            key: "t:short".into(),
            value: b"v".to_vec(),
            ttl: ms(60),
            ..Default::default()
        })
        .await
        .expect("set with ttl");
    eventually(Duration::from_secs(5), "t:short to expire", || async {
        get(ctx, "t:short").await.is_none().then_some(())
    })
    .await;

    cache
        .set(SetRequest {
            key: "t:long".into(),
            value: b"v".to_vec(),
            ttl: ms(100_000),
            ..Default::default()
        })
        .await
        .expect("set");
    let ttl = cache
        .get_ttl(GetTtlRequest {
            key: "t:long".into(),
        })
        .await
        .expect("ttl")
        .into_inner();
    assert!(ttl.exists);
    let left = ttl.ttl.expect("has a ttl");
    assert!(left.seconds > 90 && left.seconds <= 100, "ttl {left:?}");

    // keep_ttl keeps it; a plain set clears it.
    cache
        .set(SetRequest {
            key: "t:long".into(),
            value: b"w".to_vec(),
            keep_ttl: true,
            ..Default::default()
        })
        .await
        .expect("keep ttl");
    assert!(
        cache
            .get_ttl(GetTtlRequest {
                key: "t:long".into()
            })
            .await
            .expect("ttl")
            .into_inner()
            .ttl
            .is_some()
    );

    let persisted = cache
        .update_ttl(UpdateTtlRequest {
            key: "t:long".into(),
            change: Some(update_ttl_request::Change::Persist(true)),
        })
        .await
        .expect("persist")
        .into_inner();
    assert!(persisted.updated);
    let ttl = cache
        .get_ttl(GetTtlRequest {
            key: "t:long".into(),
        })
        .await
        .expect("ttl")
        .into_inner();
    assert!(ttl.exists && ttl.ttl.is_none());

    let updated = cache
        .update_ttl(UpdateTtlRequest {
            key: "t:long".into(),
            change: Some(update_ttl_request::Change::Ttl(PbDuration {
                seconds: 0,
                nanos: 50_000_000,
            })),
        })
        .await
        .expect("update ttl")
        .into_inner();
    assert!(updated.updated);
    eventually(
        Duration::from_secs(5),
        "t:long to expire after UpdateTtl",
        || async { get(ctx, "t:long").await.is_none().then_some(()) },
    )
    .await;
    let gone = cache
        .get_ttl(GetTtlRequest {
            key: "t:long".into(),
        })
        .await
        .expect("ttl")
        .into_inner();
    assert!(!gone.exists);
    let missing = cache
        .update_ttl(UpdateTtlRequest {
            key: "t:nothing".into(),
            change: Some(update_ttl_request::Change::Ttl(PbDuration {
                seconds: 5,
                nanos: 0,
            })),
        })
        .await
        .expect("update missing")
        .into_inner();
    assert!(!missing.updated);
}

async fn counters(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let incr = |delta: i64, ttl: Option<PbDuration>| IncrementRequest {
        key: "n:hits".into(),
        delta,
        ttl,
    };
    let first = cache
        .increment(incr(5, ms(100_000)))
        .await
        .expect("incr")
        .into_inner();
    assert_eq!((first.value, first.created), (5, true));
    let second = cache
        .increment(incr(-2, ms(1_000)))
        .await
        .expect("incr")
        .into_inner();
    assert_eq!((second.value, second.created), (3, false));
    // The TTL was applied on creation only: still about 100 s, not 1 s.
    let ttl = cache
        .get_ttl(GetTtlRequest {
            key: "n:hits".into(),
        })
        .await
        .expect("ttl")
        .into_inner();
    assert!(ttl.ttl.expect("ttl").seconds > 50);

    // Past 2^53 a double cannot hold every integer: the reply is still exact.
    let big = cache
        .increment(IncrementRequest {
            key: "n:big".into(),
            delta: (1 << 53) + 1,
            ttl: None,
        })
        .await
        .expect("incr")
        .into_inner();
    assert_eq!(big.value, (1 << 53) + 1);

    set(ctx, "n:text", b"abc").await;
    let err = cache
        .increment(IncrementRequest {
            key: "n:text".into(),
            delta: 1,
            ttl: None,
        })
        .await;
    assert_eq!(code(err), Code::FailedPrecondition);
}

async fn many_keys_round_trip(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let values: Vec<KeyValue> = (0..100)
        .map(|i| KeyValue {
            key: format!("m:{i}"),
            value: format!("value-{i}").into_bytes(),
            found: false,
        })
        .collect();
    let written = cache
        .set_many(SetManyRequest {
            values: values.clone(),
            ttl: ms(100_000),
        })
        .await
        .expect("set many")
        .into_inner()
        .written;
    assert_eq!(written, 100);
    let mut keys: Vec<String> = values.iter().map(|kv| kv.key.clone()).collect();
    keys.insert(50, "m:missing".into());
    let got = cache
        .get_many(GetManyRequest { keys: keys.clone() })
        .await
        .expect("get many")
        .into_inner();
    assert_eq!(got.values.len(), 101);
    for (key, kv) in keys.iter().zip(&got.values) {
        assert_eq!(&kv.key, key, "reply is in request order");
        if key == "m:missing" {
            assert!(!kv.found);
        } else {
            assert!(kv.found, "{key} found");
            assert_eq!(kv.value, format!("value-{}", &key[2..]).into_bytes());
        }
    }
    let ttl = cache
        .get_ttl(GetTtlRequest { key: "m:7".into() })
        .await
        .expect("ttl")
        .into_inner();
    assert!(ttl.ttl.is_some(), "SetMany applies its ttl");
    let deleted = cache
        .delete(DeleteRequest { keys })
        .await
        .expect("delete many")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 100);
}

async fn concurrent_compare_and_set_has_one_winner(ctx: &TestContext) {
    set(ctx, "cas:x", b"v0").await;
    let attempts = (0..16).map(|i| {
        let mut cache = ctx.cache();
        async move {
            cache
                .set(SetRequest {
                    key: "cas:x".into(),
                    value: format!("writer-{i}").into_bytes(),
                    condition: SetCondition::IfEqual as i32,
                    expected: b"v0".to_vec(),
                    ..Default::default()
                })
                .await
                .expect("cas")
                .into_inner()
                .written
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, w)| **w)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one IF_EQUAL write wins: {results:?}"
    );
    assert_eq!(
        get(ctx, "cas:x").await,
        Some(format!("writer-{}", winners[0]).into_bytes())
    );
}

async fn hashes(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let fields = [("name", b"Ada".to_vec()), ("lang", b"en".to_vec())]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let added = cache
        .hash_set(HashSetRequest {
            key: "h:user".into(),
            fields,
        })
        .await
        .expect("hset")
        .into_inner()
        .added;
    assert_eq!(added, 2);
    let all = cache
        .hash_get(HashGetRequest {
            key: "h:user".into(),
            fields: vec![],
        })
        .await
        .expect("hgetall")
        .into_inner()
        .fields;
    assert_eq!(all.len(), 2);
    assert_eq!(all["name"], b"Ada");
    let some = cache
        .hash_get(HashGetRequest {
            key: "h:user".into(),
            fields: vec!["lang".into(), "nope".into()],
        })
        .await
        .expect("hmget")
        .into_inner()
        .fields;
    assert_eq!(some.len(), 1);
    assert_eq!(some["lang"], b"en");
    let visits = |delta| HashIncrementRequest {
        key: "h:user".into(),
        field: "visits".into(),
        delta,
    };
    assert_eq!(
        cache
            .hash_increment(visits(3))
            .await
            .expect("hincr")
            .into_inner()
            .value,
        3
    );
    assert_eq!(
        cache
            .hash_increment(visits(-1))
            .await
            .expect("hincr")
            .into_inner()
            .value,
        2
    );
    let deleted = cache
        .hash_delete(HashDeleteRequest {
            key: "h:user".into(),
            fields: vec!["name".into(), "nope".into()],
        })
        .await
        .expect("hdel")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
}

async fn sets(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let first = cache
        .set_add(SetAddRequest {
            key: "set:seen".into(),
            members: bytes(&["a", "b"]),
        })
        .await
        .expect("sadd")
        .into_inner();
    assert_eq!((first.added, first.added_count), (vec![true, true], 2));
    let second = cache
        .set_add(SetAddRequest {
            key: "set:seen".into(),
            members: bytes(&["b", "c", "c"]),
        })
        .await
        .expect("sadd")
        .into_inner();
    assert_eq!(
        (second.added, second.added_count),
        (vec![false, true, false], 1)
    );
    let contains = cache
        .set_contains(SetContainsRequest {
            key: "set:seen".into(),
            members: bytes(&["a", "z", "c"]),
        })
        .await
        .expect("smismember")
        .into_inner()
        .contains;
    assert_eq!(contains, vec![true, false, true]);
    let length = |c: &mut redwire::proto::cache_client::CacheClient<_>| {
        let mut c = c.clone();
        async move {
            c.set_length(SetLengthRequest {
                key: "set:seen".into(),
            })
            .await
            .expect("scard")
            .into_inner()
            .length
        }
    };
    assert_eq!(length(&mut cache).await, 3);
    let removed = cache
        .set_remove(SetRemoveRequest {
            key: "set:seen".into(),
            members: bytes(&["a", "q"]),
        })
        .await
        .expect("srem")
        .into_inner()
        .removed;
    assert_eq!(removed, 1);
    let mut all = cache
        .set_members(SetMembersRequest {
            key: "set:seen".into(),
        })
        .await
        .expect("smembers")
        .into_inner()
        .members;
    all.sort();
    assert_eq!(all, bytes(&["b", "c"]));
}

async fn leaderboard(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let players: Vec<ScoredMember> = (0..20)
        .map(|i| ScoredMember {
            member: format!("player-{i:02}").into_bytes(),
            score: f64::from(i) * 10.0,
        })
        .collect();
    let put = cache
        .sorted_set_put(SortedSetPutRequest {
            key: "z:board".into(),
            members: players,
            increment: false,
        })
        .await
        .expect("zadd")
        .into_inner();
    assert_eq!(put.added, 20);
    let top = cache
        .sorted_set_range(SortedSetRangeRequest {
            key: "z:board".into(),
            start: 0,
            stop: 9,
            descending: true,
        })
        .await
        .expect("top 10")
        .into_inner()
        .members;
    assert_eq!(top.len(), 10);
    assert_eq!(top[0].member, b"player-19");
    assert_eq!(top[0].score, 190.0);
    assert_eq!(top[9].member, b"player-10");
    assert!(top.windows(2).all(|w| w[0].score > w[1].score));

    // Increment moves player-00 to the top.
    let bumped = cache
        .sorted_set_put(SortedSetPutRequest {
            key: "z:board".into(),
            members: vec![
                ScoredMember {
                    member: b"player-00".to_vec(),
                    score: 500.0,
                },
                ScoredMember {
                    member: b"newcomer".to_vec(),
                    score: 1.5,
                },
            ],
            increment: true,
        })
        .await
        .expect("zincrby")
        .into_inner();
    assert_eq!((bumped.added, bumped.scores), (1, vec![500.0, 1.5]));
    let rank = cache
        .sorted_set_rank(SortedSetRankRequest {
            key: "z:board".into(),
            member: b"player-00".to_vec(),
            descending: true,
        })
        .await
        .expect("rank")
        .into_inner();
    assert_eq!((rank.found, rank.rank, rank.score), (true, 0, 500.0));
    let absent = cache
        .sorted_set_rank(SortedSetRankRequest {
            key: "z:board".into(),
            member: b"nobody".to_vec(),
            descending: false,
        })
        .await
        .expect("rank")
        .into_inner();
    assert!(!absent.found);

    // Scores in (20, 60], second page of two.
    let page = cache
        .sorted_set_range_by_score(SortedSetRangeByScoreRequest {
            key: "z:board".into(),
            min: Some(ScoreBound {
                score: 20.0,
                exclusive: true,
            }),
            max: Some(ScoreBound {
                score: 60.0,
                exclusive: false,
            }),
            descending: false,
            offset: 2,
            count: 2,
        })
        .await
        .expect("by score")
        .into_inner()
        .members;
    let names: Vec<&[u8]> = page.iter().map(|m| m.member.as_slice()).collect();
    assert_eq!(names, vec![&b"player-05"[..], &b"player-06"[..]]);
    let highest = cache
        .sorted_set_range_by_score(SortedSetRangeByScoreRequest {
            key: "z:board".into(),
            descending: true,
            count: 1,
            ..Default::default()
        })
        .await
        .expect("by score desc")
        .into_inner()
        .members;
    assert_eq!(highest[0].member, b"player-00");

    let removed = cache
        .sorted_set_remove(SortedSetRemoveRequest {
            key: "z:board".into(),
            members: vec![b"newcomer".to_vec(), b"ghost".to_vec()],
        })
        .await
        .expect("zrem")
        .into_inner()
        .removed;
    assert_eq!(removed, 1);
}

async fn lists(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let push = |key: &str, items: &[&str], end: ListEnd, only_if_exists: bool, max_length: i64| {
        ListPushRequest {
            key: key.into(),
            values: bytes(items),
            end: end as i32,
            only_if_exists,
            max_length,
        }
    };
    assert_eq!(
        cache
            .list_push(push("l:q", &["a", "b"], ListEnd::Unspecified, false, 0))
            .await
            .expect("push")
            .into_inner()
            .length,
        2
    );
    assert_eq!(
        cache
            .list_push(push("l:q", &["z"], ListEnd::Front, false, 0))
            .await
            .expect("push")
            .into_inner()
            .length,
        3
    );
    let range = |key: &str| ListRangeRequest {
        key: key.into(),
        start: 0,
        stop: -1,
    };
    assert_eq!(
        cache
            .list_range(range("l:q"))
            .await
            .expect("range")
            .into_inner()
            .values,
        bytes(&["z", "a", "b"])
    );
    assert_eq!(
        cache
            .list_push(push("l:none", &["x"], ListEnd::Back, true, 0))
            .await
            .expect("pushx")
            .into_inner()
            .length,
        0
    );
    assert_eq!(
        cache
            .list_length(ListLengthRequest {
                key: "l:none".into()
            })
            .await
            .expect("llen")
            .into_inner()
            .length,
        0
    );

    // A capped "recent items" list keeps the newest values.
    for i in 0..10 {
        cache
            .list_push(push(
                "l:recent",
                &[&i.to_string()],
                ListEnd::Front,
                false,
                3,
            ))
            .await
            .expect("capped push");
    }
    assert_eq!(
        cache
            .list_range(range("l:recent"))
            .await
            .expect("range")
            .into_inner()
            .values,
        bytes(&["9", "8", "7"])
    );

    // Default pop takes from the front: FIFO with the default push.
    let pop = cache
        .list_pop(ListPopRequest {
            keys: vec!["l:empty".into(), "l:q".into()],
            count: 2,
            ..Default::default()
        })
        .await
        .expect("pop")
        .into_inner();
    assert_eq!(
        (pop.found, pop.key.as_str(), pop.values),
        (true, "l:q", bytes(&["z", "a"]))
    );
    let back = cache
        .list_pop(ListPopRequest {
            keys: vec!["l:recent".into()],
            end: ListEnd::Back as i32,
            ..Default::default()
        })
        .await
        .expect("pop back")
        .into_inner();
    assert_eq!(back.values, bytes(&["7"]));

    // Rotating a circular list.
    cache
        .list_push(push("l:ring", &["1", "2", "3"], ListEnd::Back, false, 0))
        .await
        .expect("push ring");
    let moved = cache
        .list_move(ListMoveRequest {
            source: "l:ring".into(),
            destination: "l:ring".into(),
            ..Default::default()
        })
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!((moved.moved, moved.value), (true, b"1".to_vec()));
    assert_eq!(
        cache
            .list_range(range("l:ring"))
            .await
            .expect("range")
            .into_inner()
            .values,
        bytes(&["2", "3", "1"])
    );
    let none = cache
        .list_move(ListMoveRequest {
            source: "l:void".into(),
            destination: "l:void".into(),
            ..Default::default()
        })
        .await
        .expect("move from empty")
        .into_inner();
    assert!(!none.moved);
}

async fn blocking_pop_is_woken_by_a_push(ctx: &TestContext) {
    let mut popper = ctx.cache();
    let waiting = tokio::spawn(async move {
        popper
            .list_pop(ListPopRequest {
                keys: vec!["bp:jobs".into()],
                wait: ms(30_000),
                ..Default::default()
            })
            .await
    });
    // Push only once the pop is really blocked inside Redis.
    let redis_key = "rw:c:bp:jobs";
    eventually(
        Duration::from_secs(10),
        "the pop to block in redis",
        || async { (blocked_clients(ctx, redis_key) > 0).then_some(()) },
    )
    .await;
    let started = Instant::now();
    ctx.cache()
        .list_push(ListPushRequest {
            key: "bp:jobs".into(),
            values: vec![b"job-1".to_vec()],
            ..Default::default()
        })
        .await
        .expect("push");
    let popped = waiting.await.expect("task").expect("pop").into_inner();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken by the push, not by the wait running out"
    );
    assert_eq!(
        (popped.found, popped.key.as_str(), popped.values),
        (true, "bp:jobs", vec![b"job-1".to_vec()])
    );

    // An empty list times out with found = false after the wait.
    let empty = ctx
        .cache()
        .list_pop(ListPopRequest {
            keys: vec!["bp:empty".into()],
            wait: ms(150),
            ..Default::default()
        })
        .await
        .expect("pop with short wait")
        .into_inner();
    assert!(!empty.found);
}

async fn blocking_pop_respects_the_deadline(ctx: &TestContext) {
    let mut request = Request::new(ListPopRequest {
        keys: vec!["dl:jobs".into()],
        wait: ms(60_000),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(400));
    let result = ctx.cache().list_pop(request).await;
    // The server ends the wait before the deadline and answers "nothing found".
    let reply = result.expect("the pop answers before the caller's deadline");
    assert!(!reply.into_inner().found);
    // No Redis connection stays blocked on the key afterwards.
    eventually(
        Duration::from_secs(5),
        "no client blocked on dl:jobs",
        || async { (blocked_clients(ctx, "rw:c:dl:jobs") == 0).then_some(()) },
    )
    .await;
    // And a value pushed now is not swallowed by a forgotten pop.
    ctx.cache()
        .list_push(ListPushRequest {
            key: "dl:jobs".into(),
            values: vec![b"kept".to_vec()],
            ..Default::default()
        })
        .await
        .expect("push");
    let length = ctx
        .cache()
        .list_length(ListLengthRequest {
            key: "dl:jobs".into(),
        })
        .await
        .expect("llen");
    assert_eq!(length.into_inner().length, 1);
}

/// Clients blocked in Redis (on the node that owns `redis_key`, on a cluster).
fn blocked_clients(ctx: &TestContext, redis_key: &str) -> u64 {
    let mut conn = ctx.redis_connection(redis_key);
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut conn)
        .expect("info clients");
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("blocked_clients in INFO")
}

async fn bloom_filter_rates(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let items: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("user-{i}").into_bytes())
        .collect();
    let mut newly_added = 0;
    for chunk in items.chunks(1000) {
        let added = cache
            .bloom_add(BloomAddRequest {
                key: "bf:users".into(),
                items: chunk.to_vec(),
                expected_items: 10_000,
                false_positive_rate: 0.01,
            })
            .await
            .expect("bloom add")
            .into_inner()
            .added;
        newly_added += added.iter().filter(|a| **a).count();
    }
    assert!(
        newly_added > 9_800,
        "almost all items were new: {newly_added}"
    );
    for chunk in items.chunks(1000) {
        let contains = cache
            .bloom_contains(BloomContainsRequest {
                key: "bf:users".into(),
                items: chunk.to_vec(),
            })
            .await
            .expect("bloom contains")
            .into_inner()
            .contains;
        assert!(
            contains.iter().all(|c| *c),
            "a Bloom filter has no false negatives"
        );
    }
    let mut false_positives = 0;
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(1000) {
        let probes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|i| format!("stranger-{i}").into_bytes())
            .collect();
        let contains = cache
            .bloom_contains(BloomContainsRequest {
                key: "bf:users".into(),
                items: probes,
            })
            .await
            .expect("bloom contains")
            .into_inner()
            .contains;
        false_positives += contains.iter().filter(|c| **c).count();
    }
    let rate = false_positives as f64 / 10_000.0;
    assert!(
        (0.003..=0.02).contains(&rate),
        "false-positive rate {rate} should be near 0.01"
    );

    let unknown = cache
        .bloom_contains(BloomContainsRequest {
            key: "bf:none".into(),
            items: vec![b"x".to_vec()],
        })
        .await
        .expect("contains on a missing filter")
        .into_inner();
    assert_eq!(unknown.contains, vec![false]);
    set(ctx, "bf:plain", b"not a filter").await;
    let wrong = cache
        .bloom_add(BloomAddRequest {
            key: "bf:plain".into(),
            items: vec![b"x".to_vec()],
            ..Default::default()
        })
        .await;
    assert_eq!(code(wrong), Code::FailedPrecondition);
    assert_eq!(
        get(ctx, "bf:plain").await.as_deref(),
        Some(&b"not a filter"[..])
    );
}

async fn wrong_type_is_failed_precondition(ctx: &TestContext) {
    let mut cache = ctx.cache();
    cache
        .list_push(ListPushRequest {
            key: "wt:list".into(),
            values: vec![b"x".to_vec()],
            ..Default::default()
        })
        .await
        .expect("push");
    let status = cache
        .get(GetRequest {
            key: "wt:list".into(),
        })
        .await
        .expect_err("get on a list");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("different kind of value"),
        "{status:?}"
    );
    // The same inside a MULTI/EXEC pipeline.
    let sadd = cache
        .set_add(SetAddRequest {
            key: "wt:list".into(),
            members: vec![b"m".to_vec()],
        })
        .await;
    assert_eq!(code(sadd), Code::FailedPrecondition);
}

/// An increment that would make one member's score NaN (inf + -inf) is refused
/// naming that member, and writes none of the others; a member given twice in one
/// call adds up.
async fn a_rejected_increment_writes_nothing(ctx: &TestContext) {
    let mut cache = ctx.cache();
    let member = |name: &str, score: f64| ScoredMember {
        member: name.as_bytes().to_vec(),
        score,
    };
    let put = |members: Vec<ScoredMember>, increment: bool| SortedSetPutRequest {
        key: "z:atomic".into(),
        members,
        increment,
    };
    cache
        .sorted_set_put(put(vec![member("top", f64::INFINITY)], false))
        .await
        .expect("zadd +inf");
    let refused = cache
        .sorted_set_put(put(
            vec![
                member("new", 5.0),
                member("top", f64::NEG_INFINITY),
                member("next", 7.0),
            ],
            true,
        ))
        .await
        .expect_err("inf + -inf is not a number");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().starts_with("members[1].score: "),
        "{refused:?}"
    );
    let all = cache
        .sorted_set_range(SortedSetRangeRequest {
            key: "z:atomic".into(),
            start: 0,
            stop: -1,
            descending: false,
        })
        .await
        .expect("range")
        .into_inner()
        .members;
    assert_eq!(all.len(), 1, "only the first put is stored: {all:?}");
    assert_eq!(all[0].score, f64::INFINITY);

    let twice = cache
        .sorted_set_put(put(vec![member("a", 1.0), member("a", 2.0)], true))
        .await
        .expect("increment twice")
        .into_inner();
    assert_eq!((twice.added, twice.scores), (1, vec![1.0, 3.0]));
}

// ---------------------------------------------------------------- standalone

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_keys_are_stored_under_the_schema_with_braces_escaped() {
    let mut ctx = TestContext::standalone().await;
    set(&ctx, "user:{42}", b"v").await;
    let mut conn = ctx.redis().connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("keys");
    assert_eq!(keys, vec!["rw:c:user:%7B42%7D".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_survive_script_flush() {
    let mut ctx = TestContext::standalone().await;
    let cas = |expected: &[u8], value: &[u8]| SetRequest {
        key: "sf:k".into(),
        value: value.to_vec(),
        condition: SetCondition::IfEqual as i32,
        expected: expected.to_vec(),
        ..Default::default()
    };
    set(&ctx, "sf:k", b"a").await;
    assert!(
        ctx.cache()
            .set(cas(b"a", b"b"))
            .await
            .expect("cas")
            .into_inner()
            .written
    );
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut ctx.redis().connection())
        .expect("flush");
    assert!(
        ctx.cache()
            .set(cas(b"b", b"c"))
            .await
            .expect("cas after SCRIPT FLUSH")
            .into_inner()
            .written
    );
    assert_eq!(get(&ctx, "sf:k").await.as_deref(), Some(&b"c"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_invalid_argument_naming_the_field_and_writes_nothing() {
    let mut ctx = TestContext::standalone_with(&[
        "--max-key-bytes",
        "64",
        "--max-value-bytes",
        "1024",
        "--max-batch",
        "10",
    ])
    .await;
    let mut cache = ctx.cache();
    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "key",
            cache
                .set(SetRequest {
                    key: String::new(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "key",
            cache
                .set(SetRequest {
                    key: "k".repeat(65),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "value",
            cache
                .set(SetRequest {
                    key: "k".into(),
                    value: vec![0; 1025],
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "ttl",
            cache
                .set(SetRequest {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ttl: Some(PbDuration {
                        seconds: 0,
                        nanos: 1000,
                    }),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "ttl",
            cache
                .set(SetRequest {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ttl: Some(PbDuration {
                        seconds: -5,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "keep_ttl",
            cache
                .set(SetRequest {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ttl: ms(1000),
                    keep_ttl: true,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "condition",
            cache
                .set(SetRequest {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    condition: 99,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "keys",
            cache
                .get_many(GetManyRequest { keys: vec![] })
                .await
                .map(drop),
        ),
        (
            "keys",
            cache
                .get_many(GetManyRequest {
                    keys: (0..11).map(|i| i.to_string()).collect(),
                })
                .await
                .map(drop),
        ),
        (
            "values[1].key",
            cache
                .set_many(SetManyRequest {
                    values: vec![
                        KeyValue {
                            key: "ok".into(),
                            value: b"v".to_vec(),
                            found: false,
                        },
                        KeyValue {
                            key: String::new(),
                            value: b"v".to_vec(),
                            found: false,
                        },
                    ],
                    ttl: None,
                })
                .await
                .map(drop),
        ),
        (
            "members[1].score",
            cache
                .sorted_set_put(SortedSetPutRequest {
                    key: "z".into(),
                    members: vec![
                        ScoredMember {
                            member: b"a".to_vec(),
                            score: 1.0,
                        },
                        ScoredMember {
                            member: b"b".to_vec(),
                            score: f64::NAN,
                        },
                    ],
                    increment: false,
                })
                .await
                .map(drop),
        ),
        (
            "min.score",
            cache
                .sorted_set_range_by_score(SortedSetRangeByScoreRequest {
                    key: "z".into(),
                    min: Some(ScoreBound {
                        score: f64::NAN,
                        exclusive: false,
                    }),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "end",
            cache
                .list_push(ListPushRequest {
                    key: "l".into(),
                    values: vec![b"v".to_vec()],
                    end: 7,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "values",
            cache
                .list_push(ListPushRequest {
                    key: "l".into(),
                    values: vec![],
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "count",
            cache
                .list_pop(ListPopRequest {
                    keys: vec!["l".into()],
                    count: 11,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "change",
            cache
                .update_ttl(UpdateTtlRequest {
                    key: "k".into(),
                    change: None,
                })
                .await
                .map(drop),
        ),
        (
            "false_positive_rate",
            cache
                .bloom_add(BloomAddRequest {
                    key: "b".into(),
                    items: vec![b"i".to_vec()],
                    expected_items: 10,
                    false_positive_rate: 0.9,
                })
                .await
                .map(drop),
        ),
        (
            "expected_items",
            cache
                .bloom_add(BloomAddRequest {
                    key: "b".into(),
                    items: vec![b"i".to_vec()],
                    expected_items: u64::MAX / 2,
                    false_positive_rate: 0.01,
                })
                .await
                .map(drop),
        ),
        (
            "fields",
            cache
                .hash_set(HashSetRequest {
                    key: "h".into(),
                    fields: Default::default(),
                })
                .await
                .map(drop),
        ),
    ];
    for (field, result) in cases {
        let status = result.expect_err(&format!("a bad {field} is rejected"));
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "message names the field {field}: {:?}",
            status.message()
        );
    }
    let dbsize: i64 = redis::cmd("DBSIZE")
        .query(&mut ctx.redis().connection())
        .expect("dbsize");
    assert_eq!(dbsize, 0, "rejected calls wrote nothing");
    assert_eq!(
        ctx.health_status("").await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
    );
    set(&ctx, "still", b"works").await;
}

// ---------------------------------------------------------------- cluster

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
