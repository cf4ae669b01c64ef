//! Hashes, sets, sorted sets, lists (with blocking pops) and bloom filters.

use super::*;

/// HashSet, HashGet and HashDelete of fields, all and some.
pub(crate) async fn hashes(ctx: &TestContext) {
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

/// SetAdd, SetRemove, SetContains, SetLength and SetMembers.
pub(crate) async fn sets(ctx: &TestContext) {
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

/// Sorted sets as a leaderboard: put, rank, range by rank and by score, remove.
pub(crate) async fn leaderboard(ctx: &TestContext) {
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

/// List push, pop from either end, move between lists and length.
pub(crate) async fn lists(ctx: &TestContext) {
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

/// A ListPop that waits returns as soon as another client pushes.
pub(crate) async fn blocking_pop_is_woken_by_a_push(ctx: &TestContext) {
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

/// A ListPop that waits on an empty list ends by its deadline, not later.
pub(crate) async fn blocking_pop_respects_the_deadline(ctx: &TestContext) {
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
pub(crate) fn blocked_clients(ctx: &TestContext, redis_key: &str) -> u64 {
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

/// A bloom filter finds every added item and keeps false positives near the asked rate.
pub(crate) async fn bloom_filter_rates(ctx: &TestContext) {
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
