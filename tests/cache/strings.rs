//! Strings: conditions, TTLs, counters, many keys at once, compare-and-set.

use super::*;

/// Set and Get of strings, with the if-absent, if-present and compare-and-set conditions, and Delete.
pub(crate) async fn strings_and_conditions(ctx: &TestContext) {
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

/// A key set with a TTL expires, GetTtl reports what is left, and UpdateTtl changes or clears it.
pub(crate) async fn ttls_expire_and_update(ctx: &TestContext) {
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

/// Increment creates, adds to and keeps the TTL of counters.
pub(crate) async fn counters(ctx: &TestContext) {
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

/// An increment that would make one member's score NaN (inf + -inf) is refused
/// naming that member, and writes none of the others; a member given twice in one
/// call adds up.
pub(crate) async fn a_rejected_increment_writes_nothing(ctx: &TestContext) {
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

/// SetMany and GetMany move many keys in one call, with a shared TTL; missing keys come back not found.
pub(crate) async fn many_keys_round_trip(ctx: &TestContext) {
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

/// Concurrent compare-and-set calls on one key: exactly one wins.
pub(crate) async fn concurrent_compare_and_set_has_one_winner(ctx: &TestContext) {
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
