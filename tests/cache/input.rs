//! Bad input and wrong types: clear codes naming the field, nothing written.

use super::*;

/// A call on a key holding another kind of value is FAILED_PRECONDITION, and the value is untouched.
pub(crate) async fn wrong_type_is_failed_precondition(ctx: &TestContext) {
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

/// Every kind of bad input is INVALID_ARGUMENT naming the field; nothing is written and the server stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn bad_input_gets_invalid_argument_naming_the_field_and_writes_nothing() {
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
        assert_invalid(field, result);
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
