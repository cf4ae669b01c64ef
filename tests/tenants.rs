//! Tenants, name patterns and quotas against a real server over real gRPC: two
//! tenants using the same names in all five services never see each other's
//! data, messages, wake-ups, lists or lock waiters, and the default tenant keeps
//! today's keys; grants' name patterns allow and deny (deny wins); a tenant over
//! its rate or payload quota gets RESOURCE_EXHAUSTED, and nothing is written.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use redwire::proto::*;
use support::auth::{AuthFile, with_token};
use support::{TestContext, eventually, get, ms, set};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

const EVERYTHING: &str = "{ services = [\"*\"], actions = [\"*\"] }";

/// Requests on behalf of one token.
#[derive(Clone)]
struct As(String);

impl As {
    fn of(file: &AuthFile, name: &str) -> Self {
        Self(file.token(name).to_owned())
    }

    fn req<T>(&self, message: T) -> Request<T> {
        with_token(Request::new(message), &self.0)
    }
}

fn enqueue(queue: &str, payload: &str) -> EnqueueRequest {
    EnqueueRequest {
        queue: queue.into(),
        job: Some(JobSpec {
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        }),
    }
}

fn append(stream: &str, value: &str) -> AppendRequest {
    AppendRequest {
        stream: stream.into(),
        fields: HashMap::from([("v".to_owned(), value.as_bytes().to_vec())]),
        ..Default::default()
    }
}

fn acquire(resource: &str, wait_ms: u64) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        ttl: ms(30_000),
        wait: ms(wait_ms),
        ..Default::default()
    }
}

fn describe(resource: &str) -> DescribeRequest {
    DescribeRequest {
        resource: resource.into(),
    }
}

/// The next event of a server stream that is not a heartbeat, within 10 s.
async fn next_event<T, E>(stream: &mut tonic::Streaming<T>, event: impl Fn(T) -> Option<E>) -> E {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10s")
            .expect("stream open")
            .expect("not an error");
        if let Some(event) = event(message) {
            return event;
        }
    }
}

/// Two tenants (and the default one) with every grant, using the same names.
fn tenants_file() -> AuthFile {
    AuthFile::with_tenants(
        "[[tenants]]\nname = \"acme\"\n[[tenants]]\nname = \"globex\"\n",
        &[
            ("acme", Some("acme"), EVERYTHING),
            ("globex", Some("globex"), EVERYTHING),
            ("legacy", None, EVERYTHING),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_the_same_names_see_nothing_of_each_other() {
    let file = tenants_file();
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let (acme, globex, legacy) = (
        As::of(&file, "acme"),
        As::of(&file, "globex"),
        As::of(&file, "legacy"),
    );

    // Cache: one key name, three values, in three key spaces.
    let mut cache = ctx.cache();
    for (who, value) in [(&acme, "a"), (&globex, "g"), (&legacy, "l")] {
        cache.set(who.req(set("k", value))).await.expect("set");
    }
    for (who, value) in [(&acme, "a"), (&globex, "g"), (&legacy, "l")] {
        let found = cache
            .get(who.req(get("k")))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(found.value, value.as_bytes());
    }
    let mut redis = ctx.redis_connection("rw:c:k");
    let raw: Option<String> = redis::cmd("GET")
        .arg("rw:c:k")
        .query(&mut redis)
        .expect("get");
    assert_eq!(
        raw.as_deref(),
        Some("l"),
        "the default tenant keeps today's keys"
    );
    let raw: Option<String> = redis::cmd("GET")
        .arg("rw:acme/c:k")
        .query(&mut redis)
        .expect("get");
    assert_eq!(raw.as_deref(), Some("a"));

    // Queue: globex's consumer waits on `mail` while acme enqueues there; what
    // it gets first is globex's own job.
    let (tx, requests) = mpsc::channel(8);
    tx.send(ConsumeRequest {
        message: Some(consume_request::Message::Subscribe(Subscribe {
            queue: "mail".into(),
            max_in_flight: 1,
            lease: ms(30_000),
            heartbeat_interval: None,
        })),
    })
    .await
    .expect("subscribe");
    let mut queue = ctx.queue();
    let mut consumer = queue
        .consume(globex.req(ReceiverStream::new(requests)))
        .await
        .expect("consume")
        .into_inner();
    queue
        .enqueue(acme.req(enqueue("mail", "acme")))
        .await
        .expect("acme enqueues");
    queue
        .enqueue(globex.req(enqueue("mail", "globex")))
        .await
        .expect("globex enqueues");
    let delivery = next_event(&mut consumer, |m: ConsumeResponse| match m.message {
        Some(consume_response::Message::Delivery(d)) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(delivery.payload, b"globex");
    assert_eq!(
        delivery.queue, "mail",
        "names come back as the tenant wrote them"
    );
    let acme_stats = queue
        .stats(acme.req(StatsRequest {
            queue: "mail".into(),
        }))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!((acme_stats.waiting, acme_stats.active), (1, 0));
    let taken = queue
        .dequeue(acme.req(DequeueRequest {
            queue: "mail".into(),
            max_jobs: 5,
            ..Default::default()
        }))
        .await
        .expect("dequeue")
        .into_inner();
    let payloads: Vec<_> = taken.jobs.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, [b"acme".to_vec()]);
    queue
        .enqueue(legacy.req(enqueue("other", "l")))
        .await
        .expect("legacy enqueues");
    for (who, expected) in [
        (&acme, vec!["mail"]),
        (&globex, vec!["mail"]),
        (&legacy, vec!["other"]),
    ] {
        let listed = queue
            .list_queues(who.req(ListQueuesRequest::default()))
            .await
            .expect("list queues")
            .into_inner();
        assert_eq!(listed.queues, expected);
    }

    // PubSub: acme's publish on `alerts` reaches none of globex's subscriptions.
    let mut pubsub = ctx.pubsub();
    let mut subscriber = pubsub
        .subscribe(globex.req(SubscribeRequest {
            channels: vec!["alerts".into()],
            patterns: vec!["al*".into()],
            ..Default::default()
        }))
        .await
        .expect("subscribe")
        .into_inner();
    next_event(&mut subscriber, |m: SubscribeResponse| match m.event {
        Some(subscribe_response::Event::Subscribed(s)) => Some(s),
        _ => None,
    })
    .await;
    let publish = |who: &As, payload: &str| {
        who.req(PublishRequest {
            channel: "alerts".into(),
            payload: payload.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    let reached = pubsub
        .publish(publish(&acme, "acme"))
        .await
        .expect("publish");
    assert_eq!(reached.into_inner().receivers, 0);
    let reached = pubsub
        .publish(publish(&globex, "globex"))
        .await
        .expect("publish");
    assert_eq!(
        reached.into_inner().receivers,
        2,
        "the channel and the pattern"
    );
    let message = next_event(&mut subscriber, |m: SubscribeResponse| match m.event {
        Some(subscribe_response::Event::Message(m)) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(
        (message.payload.as_slice(), message.channel.as_str()),
        (&b"globex"[..], "alerts")
    );

    // Stream: globex tails `orders` while both append; it sees only its own.
    let mut streams = ctx.stream();
    let mut tail = streams
        .tail(globex.req(TailRequest {
            streams: vec![TailPosition {
                stream: "orders".into(),
                after: String::new(),
            }],
            heartbeat_interval: None,
        }))
        .await
        .expect("tail")
        .into_inner();
    let started = next_event(&mut tail, |m: TailResponse| match m.event {
        Some(tail_response::Event::Started(s)) => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(started.streams[0].stream, "orders");
    streams
        .append(acme.req(append("orders", "acme")))
        .await
        .expect("append");
    streams
        .append(globex.req(append("orders", "globex")))
        .await
        .expect("append");
    let entry = next_event(&mut tail, |m: TailResponse| match m.event {
        Some(tail_response::Event::Entry(e)) => Some(e),
        _ => None,
    })
    .await;
    assert_eq!(
        (entry.fields["v"].as_slice(), entry.stream.as_str()),
        (&b"globex"[..], "orders")
    );
    let range = streams
        .range(acme.req(RangeRequest {
            stream: "orders".into(),
            ..Default::default()
        }))
        .await
        .expect("range")
        .into_inner();
    let values: Vec<_> = range
        .entries
        .iter()
        .map(|e| e.fields["v"].clone())
        .collect();
    assert_eq!(values, [b"acme".to_vec()]);

    // Lock: both tenants hold `invoice-7` at once; globex's waiter counts only
    // on globex's lock, and acme's release does not hand it globex's.
    let mut locks = ctx.lock();
    let globex_hold = locks
        .acquire(globex.req(acquire("invoice-7", 0)))
        .await
        .expect("acquire");
    let globex_hold = globex_hold.into_inner();
    assert!(globex_hold.acquired);
    let acme_hold = locks
        .acquire(acme.req(acquire("invoice-7", 0)))
        .await
        .expect("acquire");
    let acme_hold = acme_hold.into_inner();
    assert!(
        acme_hold.acquired,
        "another tenant's lock of the same name is not in the way"
    );
    let mut waiting_locks = ctx.lock();
    let waiter_as = globex.clone();
    let waiter = tokio::spawn(async move {
        waiting_locks
            .acquire(waiter_as.req(acquire("invoice-7", 20_000)))
            .await
            .map(|r| r.into_inner().acquired)
    });
    eventually(
        Duration::from_secs(10),
        "globex's waiter is counted",
        || {
            let mut locks = ctx.lock();
            let ask = globex.req(describe("invoice-7"));
            async move { (locks.describe(ask).await.ok()?.into_inner().waiters == 1).then_some(()) }
        },
    )
    .await;
    let acme_view = locks
        .describe(acme.req(describe("invoice-7")))
        .await
        .expect("describe");
    assert_eq!(acme_view.into_inner().waiters, 0);
    locks
        .release(acme.req(ReleaseRequest {
            resource: "invoice-7".into(),
            token: acme_hold.token,
        }))
        .await
        .expect("acme releases");
    let globex_view = locks
        .describe(globex.req(describe("invoice-7")))
        .await
        .expect("describe");
    let globex_view = globex_view.into_inner();
    assert!(
        globex_view.held && globex_view.waiters == 1,
        "{globex_view:?}"
    );
    assert!(
        !waiter.is_finished(),
        "the waiter still waits for globex's lock"
    );
    locks
        .release(globex.req(ReleaseRequest {
            resource: "invoice-7".into(),
            token: globex_hold.token,
        }))
        .await
        .expect("globex releases");
    let granted = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is answered")
        .expect("joined")
        .expect("acquire");
    assert!(granted, "globex's release hands globex's waiter the lock");
}

/// The `field` and `name` metadata of a name refusal.
fn refused_name(status: &Status) -> (String, String) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    (
        info.metadata["field"].clone(),
        info.metadata["name"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_patterns_allow_and_deny_and_deny_wins() {
    let grants = r#"{ services = ["queue"], actions = ["write", "read"], names = ["mail-*"], deny = ["mail-secret*"] },
        { services = ["cache"], actions = ["*"], names = ["public:*"] },
        { services = ["pubsub"], actions = ["*"], names = ["news.*"], deny = ["news.internal"] }"#;
    let file = AuthFile::new(&[("narrow", grants), ("wide", EVERYTHING)]);
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let (narrow, wide) = (As::of(&file, "narrow"), As::of(&file, "wide"));

    let mut queue = ctx.queue();
    queue
        .enqueue(narrow.req(enqueue("mail-eu", "x")))
        .await
        .expect("allowed");
    let denied = queue
        .enqueue(narrow.req(enqueue("mail-secret-1", "x")))
        .await
        .expect_err("denied");
    assert_eq!(
        refused_name(&denied),
        ("queue".into(), "mail-secret-1".into())
    );
    assert!(
        denied.message().contains("is denied"),
        "{}",
        denied.message()
    );
    let outside = queue
        .enqueue(narrow.req(enqueue("billing", "x")))
        .await
        .expect_err("outside");
    assert_eq!(refused_name(&outside).1, "billing");
    let stats = queue
        .stats(wide.req(StatsRequest {
            queue: "mail-secret-1".into(),
        }))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.waiting, 0, "nothing was written for the refused call");
    queue
        .enqueue(wide.req(enqueue("billing", "x")))
        .await
        .expect("wide enqueues");
    let listed = queue
        .list_queues(narrow.req(ListQueuesRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.queues,
        ["mail-eu"],
        "lists show only the names the grants cover"
    );

    let mut cache = ctx.cache();
    cache
        .set(narrow.req(set("public:motd", "hi")))
        .await
        .expect("allowed");
    let many = cache
        .get_many(narrow.req(GetManyRequest {
            keys: vec!["public:motd".into(), "private:x".into()],
        }))
        .await
        .expect_err("one key is outside");
    assert_eq!(refused_name(&many), ("keys[1]".into(), "private:x".into()));

    let mut pubsub = ctx.pubsub();
    let pattern = pubsub
        .subscribe(narrow.req(SubscribeRequest {
            patterns: vec!["news.*".into()],
            ..Default::default()
        }))
        .await
        .expect_err("a pattern could reach news.internal");
    assert_eq!(refused_name(&pattern).0, "patterns[0]");
    let internal = pubsub
        .publish(narrow.req(PublishRequest {
            channel: "news.internal".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        }))
        .await
        .expect_err("denied");
    assert_eq!(
        refused_name(&internal),
        ("channel".into(), "news.internal".into())
    );
    pubsub
        .publish(narrow.req(PublishRequest {
            channel: "news.sports".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        }))
        .await
        .expect("allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quota_is_refused_and_others_are_not() {
    let file = AuthFile::with_tenants(
        "[[tenants]]\nname = \"tiny\"\ncalls_per_second = 5\nmax_payload_bytes = 1024\n\
         [[tenants]]\nname = \"big\"\n",
        &[
            ("tiny", Some("tiny"), EVERYTHING),
            ("big", Some("big"), EVERYTHING),
        ],
    );
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let (tiny, big) = (As::of(&file, "tiny"), As::of(&file, "big"));
    let mut cache = ctx.cache();

    // Five calls may come at once; calls faster than five a second run out.
    let mut refusal = None;
    for _ in 0..100 {
        if let Err(status) = cache.get(tiny.req(get("k"))).await {
            refusal = Some(status);
            break;
        }
    }
    let refusal = refusal.expect("the rate runs out within 100 back-to-back calls");
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    let details = refusal.get_error_details();
    assert_eq!(
        details.error_info().expect("ErrorInfo").reason,
        "QUOTA_EXCEEDED"
    );
    let retry = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_millis(200),
        "{retry:?}"
    );
    cache
        .get(big.req(get("k")))
        .await
        .expect("another tenant is not limited");
    eventually(Duration::from_secs(5), "tiny may call again", || {
        let mut cache = ctx.cache();
        let ask = tiny.req(get("k"));
        async move { cache.get(ask).await.ok().map(drop) }
    })
    .await;

    // A message over max_payload_bytes is refused before anything is written.
    let big_value = "x".repeat(2_000);
    let too_large = eventually(Duration::from_secs(5), "the payload refusal", || {
        let mut cache = ctx.cache();
        let ask = tiny.req(set("k", &big_value));
        async move {
            match cache.set(ask).await {
                Err(status) if status.code() == Code::ResourceExhausted => {
                    let details = status.get_error_details();
                    let reason = details.error_info().expect("ErrorInfo").reason.clone();
                    // Past any rate refusal left over from above.
                    (reason == "PAYLOAD_TOO_LARGE").then_some(status)
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    })
    .await;
    assert!(
        too_large.message().contains("max_payload_bytes of 1024"),
        "{}",
        too_large.message()
    );
    assert!(
        too_large.get_error_details().retry_info().is_none(),
        "a retry cannot help"
    );
    let mut redis = ctx.redis_connection("rw:tiny/c:k");
    let stored: Option<String> = redis::cmd("GET")
        .arg("rw:tiny/c:k")
        .query(&mut redis)
        .expect("get");
    assert_eq!(stored, None, "nothing was written");
    cache
        .set(big.req(set("k", &big_value)))
        .await
        .expect("the other tenant has no payload quota");
    let health = ctx.health_status("").await;
    assert!(health.is_some(), "the server is still healthy");
}
