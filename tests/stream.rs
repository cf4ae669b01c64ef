//! `redwire.v1.Stream` against a real redis-server, over real gRPC.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redwire::proto::*;
use support::{TestContext, assert_invalid, command_calls, eventually, ms};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::Streaming;

fn fields(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

async fn append(ctx: &TestContext, stream: &str, n: u32) -> String {
    ctx.stream()
        .append(AppendRequest {
            stream: stream.into(),
            fields: fields(&[("n", &n.to_string())]),
            ..Default::default()
        })
        .await
        .expect("append")
        .into_inner()
        .id
}

fn number(entry: &Entry) -> u32 {
    String::from_utf8(entry.fields["n"].clone())
        .expect("utf8")
        .parse()
        .expect("number")
}

async fn create_group(
    ctx: &TestContext,
    stream: &str,
    group: &str,
    start: &str,
    max_deliveries: u32,
) {
    ctx.stream()
        .create_group(CreateGroupRequest {
            stream: stream.into(),
            group: group.into(),
            start: start.into(),
            max_deliveries,
        })
        .await
        .expect("create group");
}

/// A ReadGroup stream.
struct Reader {
    tx: mpsc::Sender<ReadGroupRequest>,
    rx: Streaming<ReadGroupResponse>,
    consumer: String,
}

impl Reader {
    async fn open(ctx: &TestContext, open: OpenGroup) -> Result<Self, tonic::Status> {
        let (tx, requests) = mpsc::channel(64);
        tx.send(ReadGroupRequest {
            message: Some(read_group_request::Message::Open(open)),
        })
        .await
        .expect("send open");
        let mut rx = ctx
            .stream()
            .read_group(ReceiverStream::new(requests))
            .await?
            .into_inner();
        let consumer = match next_event(&mut rx).await {
            read_group_response::Event::Consumer(name) => name,
            other => panic!("expected the consumer name first, got {other:?}"),
        };
        Ok(Self { tx, rx, consumer })
    }

    async fn entry(&mut self) -> Entry {
        loop {
            match next_event(&mut self.rx).await {
                read_group_response::Event::Entry(e) => return e,
                read_group_response::Event::Acked(_) | read_group_response::Event::Heartbeat(_) => {
                    continue;
                }
                other => panic!("expected an entry, got {other:?}"),
            }
        }
    }

    async fn ack(&self, id: &str) {
        self.tx
            .send(ReadGroupRequest {
                message: Some(read_group_request::Message::Ack(id.to_owned())),
            })
            .await
            .expect("send ack");
    }
}

async fn next_event(rx: &mut Streaming<ReadGroupResponse>) -> read_group_response::Event {
    tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("an event within 10s")
        .expect("stream open")
        .expect("not an error")
        .event
        .expect("event set")
}

fn open(stream: &str, group: &str, consumer: &str, max_unacked: u32) -> OpenGroup {
    OpenGroup {
        stream: stream.into(),
        group: group.into(),
        consumer: consumer.into(),
        max_unacked,
        claim_idle: None,
        heartbeat_interval: None,
    }
}

/// The next entry of a Tail, skipping heartbeats.
async fn next_entry(tail: &mut Streaming<TailResponse>) -> Entry {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("an entry within 10s")
            .expect("open")
            .expect("ok");
        if let Some(tail_response::Event::Entry(e)) = event.event {
            return e;
        }
    }
}

// ---------------------------------------------------------------- core checks

/// Appended entries come back from Range in order, forwards and backwards, within bounds.
async fn append_and_range(ctx: &TestContext) {
    let s = "events";
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(append(ctx, s, n).await);
    }
    let batch = ctx
        .stream()
        .append_batch(AppendBatchRequest {
            stream: s.into(),
            entries: (10..15)
                .map(|n| NewEntry {
                    fields: fields(&[("n", &n.to_string())]),
                    id: String::new(),
                })
                .collect(),
            trim: None,
        })
        .await
        .expect("batch")
        .into_inner()
        .ids;
    ids.extend(batch);
    let page = |start: String, reverse: bool| RangeRequest {
        stream: s.into(),
        start,
        end: String::new(),
        reverse,
        count: 6,
    };
    // Page forward with "(" + last id: every entry once, in order.
    let mut seen = Vec::new();
    let mut start = String::new();
    loop {
        let entries = ctx
            .stream()
            .range(page(start.clone(), false))
            .await
            .expect("range")
            .into_inner()
            .entries;
        if entries.is_empty() {
            break;
        }
        start = format!("({}", entries.last().expect("last").id);
        seen.extend(entries.iter().map(|e| e.id.clone()));
    }
    assert_eq!(seen, ids);
    let newest = ctx
        .stream()
        .range(page(String::new(), true))
        .await
        .expect("reverse")
        .into_inner()
        .entries;
    assert_eq!(number(&newest[0]), 14);
    assert_eq!(newest[0].stream, s);

    // Trim keeps the newest entries.
    let removed = ctx
        .stream()
        .trim(TrimRequest {
            stream: s.into(),
            trim: Some(Trimming {
                keep: Some(trimming::Keep::MaxLength(5)),
                exact: true,
            }),
        })
        .await
        .expect("trim")
        .into_inner()
        .removed;
    assert_eq!(removed, 10);
    let info = ctx
        .stream()
        .info(StreamInfoRequest { stream: s.into() })
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        (info.length, info.first_id.as_str(), info.last_id.as_str()),
        (5, ids[10].as_str(), ids[14].as_str())
    );
}

/// The first event of a Tail from `$` is `started`, naming the concrete id the
/// stream starts after; an entry appended once it arrived is always delivered
/// (30 tries, half of them on streams that already hold an entry).
async fn tail_from_now_confirms_its_start_and_misses_nothing(ctx: &TestContext) {
    for attempt in 0..30 {
        let stream = format!("live-{attempt}");
        let existing = if attempt % 2 == 0 {
            append(ctx, &stream, 0).await
        } else {
            "0-0".to_owned()
        };
        let mut tail = ctx
            .stream()
            .tail(TailRequest {
                streams: vec![TailPosition {
                    stream: stream.clone(),
                    after: "$".into(),
                }],
                heartbeat_interval: None,
            })
            .await
            .expect("tail")
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("a first event within 10s")
            .expect("open")
            .expect("ok")
            .event;
        let Some(tail_response::Event::Started(started)) = first else {
            panic!("attempt {attempt}: the first event is not `started`: {first:?}");
        };
        assert_eq!(
            started.streams,
            vec![TailPosition {
                stream: stream.clone(),
                after: existing,
            }],
            "attempt {attempt}"
        );
        let id = append(ctx, &stream, 1).await;
        let entry = next_entry(&mut tail).await;
        assert_eq!((number(&entry), entry.id), (1, id), "attempt {attempt}");
    }
}

/// A Tail resumed from its last id misses nothing and repeats nothing.
async fn tail_resumes_without_gap_or_duplicate(ctx: &TestContext) {
    let mut tail = ctx
        .stream()
        .tail(TailRequest {
            streams: vec![
                TailPosition {
                    stream: "t-a".into(),
                    after: "$".into(),
                },
                TailPosition {
                    stream: "t-b".into(),
                    after: "$".into(),
                },
            ],
            heartbeat_interval: None,
        })
        .await
        .expect("tail")
        .into_inner();
    let mut last: HashMap<String, String> = HashMap::new();
    let mut got: Vec<(String, u32)> = Vec::new();
    for n in 0..4 {
        append(ctx, if n % 2 == 0 { "t-a" } else { "t-b" }, n).await;
    }
    for _ in 0..4 {
        let e = next_entry(&mut tail).await;
        last.insert(e.stream.clone(), e.id.clone());
        got.push((e.stream.clone(), number(&e)));
    }
    drop(tail);
    // Appends while the client is away.
    for n in 4..8 {
        append(ctx, if n % 2 == 0 { "t-a" } else { "t-b" }, n).await;
    }
    let mut resumed = ctx
        .stream()
        .tail(TailRequest {
            streams: ["t-a", "t-b"]
                .iter()
                .map(|s| TailPosition {
                    stream: (*s).into(),
                    after: last[*s].clone(),
                })
                .collect(),
            heartbeat_interval: None,
        })
        .await
        .expect("resume")
        .into_inner();
    for n in 8..10 {
        append(ctx, if n % 2 == 0 { "t-a" } else { "t-b" }, n).await;
    }
    for _ in 0..6 {
        let e = next_entry(&mut resumed).await;
        got.push((e.stream.clone(), number(&e)));
    }
    let mut numbers: Vec<u32> = got.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (0..10).collect::<Vec<_>>(),
        "no gap, no duplicate: {got:?}"
    );
    assert!(
        got.iter().all(|(s, n)| (s == "t-a") == (n % 2 == 0)),
        "each entry names its stream"
    );
}

/// Consumers of one group share the entries; each group sees all of them.
async fn groups_share_and_each_group_sees_all(ctx: &TestContext) {
    let s = "orders";
    create_group(ctx, s, "billing", "$", 0).await;
    create_group(ctx, s, "shipping", "$", 0).await;
    let mut b1 = Reader::open(ctx, open(s, "billing", "b1", 5))
        .await
        .expect("b1");
    let mut b2 = Reader::open(ctx, open(s, "billing", "b2", 5))
        .await
        .expect("b2");
    let mut ship = Reader::open(ctx, open(s, "shipping", "", 20))
        .await
        .expect("shipping");
    assert!(
        ship.consumer.starts_with("rw-"),
        "a unique name is made: {}",
        ship.consumer
    );
    for n in 0..20 {
        append(ctx, s, n).await;
    }
    let mut shipped = HashSet::new();
    for _ in 0..20 {
        let e = ship.entry().await;
        assert_eq!(e.deliveries, 1);
        ship.ack(&e.id).await;
        shipped.insert(number(&e));
    }
    assert_eq!(shipped.len(), 20, "the shipping group saw every entry");
    let mut billed: HashMap<u32, &str> = HashMap::new();
    while billed.len() < 20 {
        let (e, who) = tokio::select! {
            e = b1.entry() => (e, "b1"),
            e = b2.entry() => (e, "b2"),
        };
        assert!(
            billed.insert(number(&e), who).is_none(),
            "entry {} delivered twice",
            number(&e)
        );
        if who == "b1" {
            b1.ack(&e.id).await
        } else {
            b2.ack(&e.id).await
        }
    }
    let by_b1 = billed.values().filter(|w| **w == "b1").count();
    assert!(
        by_b1 > 0 && by_b1 < 20,
        "the billing consumers shared the work: b1 took {by_b1}"
    );
    eventually(Duration::from_secs(5), "all acks applied", || async {
        let p = ctx
            .stream()
            .pending(PendingRequest {
                stream: s.into(),
                group: "billing".into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        (p.count == 0).then_some(())
    })
    .await;
}

/// Entries of a dead consumer are claimed by another, then dead-lettered once past max_deliveries.
async fn dead_consumers_are_claimed_then_dead_lettered_once(ctx: &TestContext) {
    let s = "payments";
    create_group(ctx, s, "charge", "$", 3).await;
    for n in 0..3 {
        append(ctx, s, n).await;
    }
    // A consumer takes everything and dies without acking.
    let mut doomed = Reader::open(ctx, open(s, "charge", "doomed", 10))
        .await
        .expect("open");
    for _ in 0..3 {
        doomed.entry().await;
    }
    drop(doomed);

    // Manual claim after min idle: delivery counts rise.
    let pending = eventually(Duration::from_secs(5), "entries idle 100ms", || async {
        let p = ctx
            .stream()
            .pending(PendingRequest {
                stream: s.into(),
                group: "charge".into(),
                detail: 10,
                min_idle: ms(100),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        (p.entries.len() == 3).then_some(p)
    })
    .await;
    assert!(
        pending
            .entries
            .iter()
            .all(|p| p.consumer == "doomed" && p.deliveries == 1)
    );
    let first = pending.entries[0].id.clone();
    let claimed = ctx
        .stream()
        .claim(ClaimRequest {
            stream: s.into(),
            group: "charge".into(),
            consumer: "rescuer".into(),
            min_idle: ms(100),
            ids: vec![first.clone()],
        })
        .await
        .expect("claim")
        .into_inner();
    assert_eq!(claimed.entries.len(), 1);
    assert_eq!(
        (
            claimed.entries[0].id.as_str(),
            claimed.entries[0].deliveries
        ),
        (first.as_str(), 2)
    );

    // Automatic claim on a live consumer, twice more: the first round takes all
    // three (deliveries 3, 2, 2); in the second the one already delivered 3 times
    // is dead-lettered instead and the other two reach 3.
    for (round, expected) in [(0, 3), (1, 2)] {
        let mut auto = Reader::open(
            ctx,
            OpenGroup {
                claim_idle: ms(100),
                ..open(s, "charge", &format!("auto-{round}"), 10)
            },
        )
        .await
        .expect("auto");
        let mut got = HashSet::new();
        while got.len() < expected {
            let e = auto.entry().await;
            got.insert(e.id.clone());
            if round == 1 {
                assert_eq!(e.deliveries, 3, "{e:?}");
            }
        }
        drop(auto);
    }
    // Every entry has been delivered 3 times by now (or will be dead-lettered at
    // the next claim): claim until the pending list is empty.
    eventually(
        Duration::from_secs(10),
        "all entries dead-lettered",
        || async {
            ctx.stream()
                .auto_claim(AutoClaimRequest {
                    stream: s.into(),
                    group: "charge".into(),
                    consumer: "sweeper".into(),
                    min_idle: ms(100),
                    start: String::new(),
                    count: 10,
                })
                .await
                .ok()?;
            let info = ctx
                .stream()
                .info(StreamInfoRequest { stream: s.into() })
                .await
                .ok()?
                .into_inner();
            (info.groups[0].pending == 0).then_some(())
        },
    )
    .await;
    let dl = ctx
        .stream()
        .range(RangeRequest {
            stream: "payments:dead".into(),
            ..Default::default()
        })
        .await
        .expect("dead-letter range")
        .into_inner()
        .entries;
    assert_eq!(dl.len(), 3, "each entry dead-lettered exactly once: {dl:?}");
    let origin_ids: HashSet<String> = dl
        .iter()
        .map(|e| String::from_utf8(e.fields["dead.id"].clone()).expect("utf8"))
        .collect();
    assert_eq!(origin_ids.len(), 3);
    assert!(
        dl.iter()
            .all(|e| e.fields["dead.group"] == b"charge" && e.fields.contains_key("n"))
    );
    assert!(
        dl.iter().all(|e| e.fields["dead.deliveries"] == b"3"),
        "{dl:?}"
    );
    let info = ctx
        .stream()
        .info(StreamInfoRequest { stream: s.into() })
        .await
        .expect("info")
        .into_inner();
    assert_eq!(
        (info.dead_letters, info.dead_letter_stream.as_str()),
        (3, "payments:dead")
    );
    assert_eq!(info.groups[0].max_deliveries, 3);
}

/// A consumer that resumes under its name gets its pending entries first.
async fn resuming_consumers_get_their_pending_entries_first(ctx: &TestContext) {
    let s = "resume";
    create_group(ctx, s, "g", "0", 0).await;
    for n in 0..3 {
        append(ctx, s, n).await;
    }
    let mut first = Reader::open(ctx, open(s, "g", "worker-1", 2))
        .await
        .expect("open");
    let a = first.entry().await;
    let b = first.entry().await;
    drop(first);
    append(ctx, s, 3).await;
    let mut again = Reader::open(ctx, open(s, "g", "worker-1", 10))
        .await
        .expect("resume");
    let replayed: Vec<u32> = vec![number(&again.entry().await), number(&again.entry().await)];
    assert_eq!(
        replayed,
        vec![number(&a), number(&b)],
        "own pending entries first"
    );
    let fresh: Vec<u32> = vec![number(&again.entry().await), number(&again.entry().await)];
    assert_eq!(fresh, vec![2, 3]);
}

/// The first 100 entries of `stream`, oldest first.
async fn first_entries(ctx: &TestContext, stream: &str) -> Vec<Entry> {
    ctx.stream()
        .range(RangeRequest {
            stream: stream.into(),
            count: 100,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .entries
}

/// Entries sent on AppendStream without waiting get one reply each, in order, and
/// land in the order sent; a bad entry (no fields, an id Redis refuses) gets its own
/// failure and writes nothing, and the stream goes on.
async fn append_stream_keeps_order(ctx: &TestContext) {
    let s = "produced";
    let first = append(ctx, s, 0).await;
    let (tx, rx) = mpsc::channel(64);
    let mut replies = ctx
        .stream()
        .append_stream(ReceiverStream::new(rx))
        .await
        .expect("append stream")
        .into_inner();
    for n in 1..=30u32 {
        let mut request = AppendStreamRequest {
            stream: s.into(),
            fields: fields(&[("n", &n.to_string())]),
            ..Default::default()
        };
        match n {
            10 => request.id = "1-1".into(), // below the stream's last id
            20 => request.fields.clear(),
            25 => request.stream = "other-stream".into(),
            _ => {}
        }
        tx.send(request).await.expect("send");
    }
    drop(tx);
    let mut ids = Vec::new();
    while let Some(reply) = replies.message().await.expect("reply stream") {
        ids.push(reply.result.expect("a result"));
    }
    assert_eq!(ids.len(), 30, "one reply per entry, then the end");
    let mut appended = vec![first];
    for (n, result) in (1..=30u32).zip(ids) {
        match (n, result) {
            (10, append_stream_response::Result::Failed(f)) => {
                assert_eq!(f.code, Code::InvalidArgument as i32, "{f:?}");
                assert!(f.message.contains("id"), "{f:?}");
            }
            (20, append_stream_response::Result::Failed(f)) => {
                assert_eq!(f.code, Code::InvalidArgument as i32, "{f:?}");
                assert!(f.message.contains("fields"), "{f:?}");
            }
            (10 | 20, other) => panic!("entry {n}: expected a failure, got {other:?}"),
            (25, append_stream_response::Result::Appended(_)) => {}
            (_, append_stream_response::Result::Appended(a)) => appended.push(a.id),
            (_, other) => panic!("entry {n}: expected appended, got {other:?}"),
        }
    }
    let stored = first_entries(ctx, s).await;
    let stored_ids: Vec<String> = stored.iter().map(|e| e.id.clone()).collect();
    assert_eq!(stored_ids, appended, "exactly the replied ids, in order");
    let numbers: Vec<u32> = stored
        .iter()
        .map(|e| {
            String::from_utf8_lossy(&e.fields["n"])
                .parse()
                .expect("number")
        })
        .collect();
    let expected: Vec<u32> = (0..=30).filter(|n| ![10, 20, 25].contains(n)).collect();
    assert_eq!(
        numbers, expected,
        "in the order sent, nothing from failed entries"
    );
}

/// AppendBatch with explicit ids is all or nothing: an id Redis would refuse (not
/// above the stream's last id or the id before it) fails the batch, names the
/// entry, and writes none of it.
async fn append_batch_with_explicit_ids_is_all_or_nothing(ctx: &TestContext) {
    let s = "ledger";
    let batch = |ids: &[&str], trim: Option<Trimming>| AppendBatchRequest {
        stream: s.into(),
        entries: ids
            .iter()
            .map(|id| NewEntry {
                fields: fields(&[("id", id)]),
                id: (*id).to_owned(),
            })
            .collect(),
        trim,
    };
    let stored = || async {
        first_entries(ctx, s)
            .await
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    let refused = |ids: &'static [&'static str], field: &'static str| async move {
        let status = ctx
            .stream()
            .append_batch(batch(ids, None))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{ids:?}: {status:?}");
        assert!(status.message().starts_with(field), "{ids:?}: {status:?}");
    };
    // An id Redis chooses (now) and then a smaller explicit one; 0-0 is never valid.
    refused(&["", "5-0"], "entries[1].id").await;
    refused(&["0-0", "1-0"], "entries[0].id").await;
    assert_eq!(stored().await, Vec::<String>::new(), "nothing was written");

    let ids = ctx
        .stream()
        .append_batch(batch(&["10-1", "10-2", "00011", ""], None))
        .await
        .expect("increasing ids")
        .into_inner()
        .ids;
    assert_eq!(&ids[..3], ["10-1", "10-2", "11-0"]);
    assert_eq!(stored().await, ids);

    // Above the last id (Redis chose it: now), then one below its predecessor.
    refused(&["99999999999990-0", "99999999999989-9"], "entries[1].id").await;
    refused(&["10-3"], "id").await;
    assert_eq!(stored().await, ids, "still only the first batch");

    let trimmed = Trimming {
        keep: Some(trimming::Keep::MaxLength(3)),
        exact: true,
    };
    let newest = ctx
        .stream()
        .append_batch(AppendBatchRequest {
            entries: vec![
                NewEntry {
                    fields: fields(&[("n", "1")]),
                    id: String::new(),
                },
                NewEntry {
                    fields: fields(&[("n", "2")]),
                    id: "99999999999999-0".into(),
                },
            ],
            ..batch(&[], Some(trimmed))
        })
        .await
        .expect("auto then a larger explicit id, trimmed")
        .into_inner()
        .ids;
    assert_eq!(newest[1], "99999999999999-0");
    assert_eq!(
        stored().await,
        [ids[3].clone(), newest[0].clone(), newest[1].clone()]
    );
}

/// Makes Redis hold every write command for `ms`.
fn pause_writes(redis: &mut redis::Connection, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query(redis)
        .expect("pause");
}

/// Appends to one stream that arrive while another is in flight share the next
/// Redis call (one MULTI/EXEC), unary calls and AppendStream producers alike, each
/// with its own trimming; every caller gets the id of its own entry, and each
/// producer's entries land in the order sent.
async fn concurrent_appends_share_calls_and_each_get_their_own_id(ctx: &TestContext) {
    let s = "busy";
    let mut redis = ctx.redis_connection("rw:s:{busy}");
    // Even entries trim the stream to about 1,000 entries, odd ones do not trim.
    fn entry(n: u32) -> AppendRequest {
        AppendRequest {
            stream: "busy".into(),
            fields: fields(&[("n", &n.to_string())]),
            trim: n.is_multiple_of(2).then_some(Trimming {
                keep: Some(trimming::Keep::MaxLength(1000)),
                exact: false,
            }),
            ..Default::default()
        }
    }
    let unary = |numbers: std::ops::Range<u32>| {
        futures::future::join_all(numbers.map(|n| {
            let mut client = ctx.stream();
            let request = entry(n);
            async move {
                let id = client
                    .append(request)
                    .await
                    .expect("append")
                    .into_inner()
                    .id;
                (n, id)
            }
        }))
    };

    // Unary appends alone: each would be a bare XADD without the group commit.
    // Redis holds writes for a moment, so that they pile up behind the first.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis)
        .expect("reset stats");
    pause_writes(&mut redis, 300);
    let mut replied: HashMap<String, u32> = unary(0..40)
        .await
        .into_iter()
        .map(|(n, id)| (id, n))
        .collect();
    assert_eq!(command_calls(&mut redis, "xadd"), 40);
    let shared = command_calls(&mut redis, "exec");
    assert!(
        (1..=20).contains(&shared),
        "40 concurrent appends took {shared} MULTI/EXECs"
    );

    // Unary calls and producers together, with different trimming.
    let producers = futures::future::join_all((1..=4).map(|p| {
        let mut client = ctx.stream();
        let requests: Vec<AppendStreamRequest> = (0..10)
            .map(|k| {
                let AppendRequest {
                    stream,
                    fields,
                    id,
                    trim,
                } = entry(p * 100 + k);
                AppendStreamRequest {
                    stream,
                    fields,
                    id,
                    trim,
                }
            })
            .collect();
        async move {
            let replies: Vec<AppendStreamResponse> = client
                .append_stream(tokio_stream::iter(requests))
                .await
                .expect("append stream")
                .into_inner()
                .collect::<Result<_, _>>()
                .await
                .expect("replies");
            assert_eq!(replies.len(), 10, "one reply per entry");
            (0..10)
                .zip(replies)
                .map(|(k, reply)| match reply.result {
                    Some(append_stream_response::Result::Appended(a)) => (p * 100 + k, a.id),
                    other => panic!("entry {p}/{k}: {other:?}"),
                })
                .collect::<Vec<_>>()
        }
    }));
    pause_writes(&mut redis, 300);
    let (more, produced) = tokio::join!(unary(40..60), producers);
    replied.extend(
        more.into_iter()
            .chain(produced.into_iter().flatten())
            .map(|(n, id)| (id, n)),
    );
    assert_eq!(replied.len(), 100, "one distinct id per entry");

    let stored = first_entries(ctx, s).await;
    assert_eq!(stored.len(), 100, "every entry once");
    for entry in &stored {
        assert_eq!(
            replied.get(&entry.id),
            Some(&number(entry)),
            "entry {}",
            entry.id
        );
    }
    for p in 1..=4 {
        let order: Vec<u32> = stored.iter().map(number).filter(|n| n / 100 == p).collect();
        assert_eq!(
            order,
            (0..10).map(|k| p * 100 + k).collect::<Vec<_>>(),
            "producer {p}"
        );
    }
}

crate::core_checks!(
    append_and_range,
    append_stream_keeps_order,
    append_batch_with_explicit_ids_is_all_or_nothing,
    concurrent_appends_share_calls_and_each_get_their_own_id,
    tail_resumes_without_gap_or_duplicate,
    tail_from_now_confirms_its_start_and_misses_nothing,
    groups_share_and_each_group_sees_all,
    dead_consumers_are_claimed_then_dead_lettered_once,
    resuming_consumers_get_their_pending_entries_first,
);

/// Every core check of this file passes on a real 3-master cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_checks_pass_on_a_three_master_cluster() {
    let ctx = TestContext::cluster().await;
    run_core_checks_on(&ctx).await;
}

/// Every kind of bad input gets a clear code naming the field, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_codes_and_changes_nothing() {
    let mut ctx = TestContext::standalone().await;
    let mut client = ctx.stream();
    let invalid: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "fields",
            client
                .append(AppendRequest {
                    stream: "s".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "stream",
            client
                .append(AppendRequest {
                    stream: "".into(),
                    fields: fields(&[("a", "b")]),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "id",
            client
                .append(AppendRequest {
                    stream: "s".into(),
                    fields: fields(&[("a", "b")]),
                    id: "not-an-id".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "start",
            client
                .range(RangeRequest {
                    stream: "s".into(),
                    start: "yesterday".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "streams[0].after",
            client
                .tail(TailRequest {
                    streams: vec![TailPosition {
                        stream: "s".into(),
                        after: "x-y".into(),
                    }],
                    heartbeat_interval: None,
                })
                .await
                .map(drop),
        ),
        (
            "ids[0]",
            client
                .ack(StreamAckRequest {
                    stream: "s".into(),
                    group: "g".into(),
                    ids: vec!["bad".into()],
                })
                .await
                .map(drop),
        ),
        (
            "trim",
            client
                .trim(TrimRequest {
                    stream: "s".into(),
                    trim: None,
                })
                .await
                .map(drop),
        ),
    ];
    for (field, result) in invalid {
        assert_invalid(field, result);
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rw:s:*")
        .query(&mut ctx.redis().connection())
        .expect("keys");
    assert!(keys.is_empty(), "rejected calls wrote nothing: {keys:?}");

    // Unknown groups are NOT_FOUND, naming the group.
    append(&ctx, "s", 1).await;
    let status = client
        .pending(PendingRequest {
            stream: "s".into(),
            group: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown group");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("nope"));
    let status = Reader::open(&ctx, open("s", "nope", "c", 1))
        .await
        .err()
        .expect("unknown group");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .info(StreamInfoRequest {
            stream: "never".into(),
        })
        .await
        .expect_err("no stream");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn list_streams_pages_through_the_registry() {
    let ctx = TestContext::standalone().await;
    let mut stream = ctx.stream();
    for name in ["b-log", "a-log", "c-log"] {
        stream
            .append(AppendRequest {
                stream: name.into(),
                fields: [("k".to_owned(), b"v".to_vec())].into(),
                ..Default::default()
            })
            .await
            .expect("append");
    }
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = stream
            .list_streams(ListStreamsRequest {
                page_size: 2,
                page_token,
            })
            .await
            .expect("list streams")
            .into_inner();
        assert!(page.streams.len() <= 2);
        names.extend(page.streams);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["a-log", "b-log", "c-log"]);
}
