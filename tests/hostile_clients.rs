//! Slow, idle and hostile clients: what one client (or many) may cost the server,
//! and that the clients who behave keep being served meanwhile.

mod support;

use std::time::{Duration, Instant};

use redwire::proto::cache_client::CacheClient;
use redwire::proto::pub_sub_client::PubSubClient;
use redwire::proto::*;
use support::{RedisServer, TestContext, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tonic::Code;

/// Far longer than any bound under test: a connection still open after this
/// was never going to be closed.
const HANG: Duration = Duration::from_secs(20);

/// The HTTP/2 client preface and an empty SETTINGS frame: a handshake begun.
const HTTP2_HANDSHAKE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

async fn open_raw(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("tcp connect")
}

/// Reads until the server closes the connection; panics after [`HANG`].
async fn closed_by_server(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(HANG, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    outcome.expect("the server closed the connection");
}

/// The baseline: an ordinary Cache call succeeds (the hostile cases below are measured against it).
async fn cache_works(ctx: &TestContext) {
    ctx.cache()
        .set(SetRequest {
            key: "alive".into(),
            value: b"yes".to_vec(),
            ..Default::default()
        })
        .await
        .expect("a well-behaved client is served");
}

/// Connections that never send the HTTP/2 preface, or only part of it, are closed
/// after `--handshake-timeout`, while a real client is served throughout. Before,
/// they stayed open forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_the_handshake_are_closed() {
    let ctx = TestContext::standalone_with(&["--handshake-timeout", "300ms"]).await;
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut conn = open_raw(ctx.addr).await;
        if i % 2 == 0 {
            conn.write_all(&HTTP2_HANDSHAKE[..10]).await.expect("write");
        }
        silent.push(conn);
    }
    cache_works(&ctx).await;
    futures::future::join_all(silent.into_iter().map(closed_by_server)).await;
    cache_works(&ctx).await;
}

/// A subscription to `channel` through `client`, its `subscribed` event read.
async fn subscribed(
    mut client: PubSubClient<tonic::transport::Channel>,
    channel: &str,
) -> tonic::Streaming<SubscribeResponse> {
    let mut subscription = client
        .subscribe(SubscribeRequest {
            channels: vec![channel.into()],
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = subscription.next().await.expect("an event").expect("ok");
    assert!(matches!(
        first.event,
        Some(subscribe_response::Event::Subscribed(_))
    ));
    subscription
}

/// A connection with no call in flight is closed after `--idle-timeout`; one
/// that carries a long-lived stream is not, and the stream still delivers after
/// the idle connection beside it was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_not_those_with_an_open_stream() {
    let ctx = TestContext::standalone_with(&["--idle-timeout", "500ms"]).await;
    let mut subscription = subscribed(ctx.pubsub(), "news").await;

    let mut idle = open_raw(ctx.addr).await;
    idle.write_all(HTTP2_HANDSHAKE).await.expect("handshake");
    let opened = Instant::now();
    closed_by_server(idle).await;
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "closed only once idle past the timeout"
    );

    // A separate connection publishes: the subscriber's is the one under test.
    let publisher = ctx.fresh_channel();
    PubSubClient::new(publisher)
        .publish(PublishRequest {
            channel: "news".into(),
            payload: b"still here".to_vec(),
            sharded: false,
        })
        .await
        .expect("publish");
    let message = loop {
        let event = tokio::time::timeout(HANG, subscription.next())
            .await
            .expect("an event")
            .expect("the stream is open")
            .expect("ok");
        match event.event {
            Some(subscribe_response::Event::Message(m)) => break m,
            Some(subscribe_response::Event::Heartbeat(_)) => continue,
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(message.payload, b"still here");
}

/// Past `--max-connections`, a new connection is closed at once, the open ones
/// keep being served, and a slot freed is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_and_the_open_ones_served() {
    let ctx = TestContext::standalone_with(&["--max-connections", "3"]).await;
    cache_works(&ctx).await; // the context's own channel: connection 1
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = open_raw(ctx.addr).await;
        conn.write_all(HTTP2_HANDSHAKE).await.expect("handshake");
        held.push(conn);
    }
    // The server counts a connection once it accepted it: poll until the cap is
    // what refuses the next one.
    eventually(HANG, "a connection past the cap to be closed", || async {
        let mut extra = open_raw(ctx.addr).await;
        let mut buf = [0u8; 64];
        let closed = matches!(
            tokio::time::timeout(Duration::from_secs(1), extra.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        );
        closed.then_some(())
    })
    .await;
    cache_works(&ctx).await;

    drop(held);
    eventually(HANG, "a freed slot to accept a new client", || async {
        let channel = ctx.fresh_channel();
        CacheClient::new(channel)
            .get(GetRequest {
                key: "alive".into(),
            })
            .await
            .ok()
    })
    .await;
}

/// A client that vanishes without closing its connection (its host lost power, a
/// NAT forgot it: a black hole on the path) loses its connection and streams
/// within `--keepalive-interval` + `--keepalive-timeout`: the server stops
/// holding its subscription, so Redis stops counting the channel's subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_stream_is_let_go_after_the_keepalive() {
    let mut ctx = TestContext::standalone_with(&[
        "--keepalive-interval",
        "500ms",
        "--keepalive-timeout",
        "500ms",
    ])
    .await;
    let proxy = support::proxy::FaultProxy::start(ctx.addr).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", proxy.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect through the proxy");
    let _subscription = subscribed(PubSubClient::new(channel), "vanish").await;
    let mut redis = ctx.redis().connection();
    let mut subscribers = move || {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(redwire::redis::keys::pubsub_channel(None, "vanish", false))
            .query::<Vec<(String, i64)>>(&mut redis)
            .expect("numsub")
            .remove(0);
        count
    };
    assert_eq!(subscribers(), 1);

    proxy.black_hole(true);
    eventually(HANG, "the vanished subscriber to be let go", || {
        std::future::ready((subscribers() == 0).then_some(()))
    })
    .await;
    cache_works(&ctx).await;
}

/// Clients that never read their replies (HTTP/2 window shut) cannot make the
/// server hold more than `--reply-buffer-bytes` of replies: a large reply that
/// does not fit ends RESOURCE_EXHAUSTED naming the flag, small calls go on, and
/// the budget is back once those clients go away. Before, each stalled reply
/// stayed in memory (200 replies of 4 MiB: 832 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cannot_hold_more_than_the_reply_budget() {
    const VALUE: usize = 512 * 1024;
    let ctx = TestContext::standalone_with(&["--reply-buffer-bytes", "3300000"]).await;
    let keys: Vec<String> = (0..3).map(|i| format!("big{i}")).collect();
    ctx.cache()
        .set_many(SetManyRequest {
            values: keys
                .iter()
                .map(|key| KeyValue {
                    key: key.clone(),
                    value: vec![b'x'; VALUE],
                    found: true,
                })
                .collect(),
            ttl: None,
        })
        .await
        .expect("set_many");
    let get_many = GetManyRequest { keys };
    let stalled = fill_the_reply_budget(&ctx, "/redwire.v1.Cache/GetMany", &get_many, || async {
        ctx.cache().get_many(get_many.clone()).await.map(drop)
    })
    .await;
    assert!(stalled >= 2, "one stalled reply cannot fill the budget");
}

/// Small replies count too: streams that never read 48 KiB replies, each under
/// the size that is split, fill the same budget, so a connection's total is not
/// `--max-concurrent-streams` times a small reply. Before, only replies over
/// 64 KiB were counted and no small reply was ever refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_unread_replies_share_the_same_budget() {
    const VALUE: usize = 48 * 1024;
    let ctx = TestContext::standalone_with(&["--reply-buffer-bytes", "1000000"]).await;
    ctx.cache()
        .set(SetRequest {
            key: "small".into(),
            value: vec![b'x'; VALUE],
            ..Default::default()
        })
        .await
        .expect("set");
    let get = GetRequest {
        key: "small".into(),
    };
    let stalled = fill_the_reply_budget(&ctx, "/redwire.v1.Cache/Get", &get, || async {
        ctx.cache().get(get.clone()).await.map(drop)
    })
    .await;
    // 1,000,000 bytes hold 20 of these replies; one racing a normal call may
    // have been refused itself.
    assert!(
        (19..=21).contains(&stalled),
        "{stalled} stalled replies filled the budget"
    );
}

/// Adds stalled readers of `path` until a normal client's same call (`call`) is
/// refused RESOURCE_EXHAUSTED naming the flag; checks small calls still work and
/// that the budget is back once the stalled readers go. Returns how many it took.
async fn fill_the_reply_budget<F, Fut>(
    ctx: &TestContext,
    path: &str,
    request: &impl prost::Message,
    call: F,
) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut stalled = Vec::new();
    let deadline = Instant::now() + HANG;
    let refused = loop {
        match call().await {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            _ => {
                assert!(Instant::now() < deadline, "no reply was ever refused");
                stalled.push(StalledReader::call(ctx.addr, path, request).await);
            }
        }
    };
    assert!(
        refused.message().contains("--reply-buffer-bytes"),
        "{refused:?}"
    );
    cache_works(ctx).await;

    let count = stalled.len();
    drop(stalled);
    eventually(HANG, "the budget to be back", || async {
        call().await.ok()
    })
    .await;
    count
}

/// A raw HTTP/2 client whose stream window is zero: it sends one gRPC request and
/// never lets a byte of the reply through.
struct StalledReader {
    _client: h2::client::SendRequest<bytes::Bytes>,
    _response: http::Response<h2::RecvStream>,
    connection: tokio::task::JoinHandle<()>,
}

impl StalledReader {
    async fn call(addr: std::net::SocketAddr, path: &str, request: &impl prost::Message) -> Self {
        let tcp = open_raw(addr).await;
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake(tcp)
            .await
            .expect("h2 handshake");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.expect("h2 ready");
        let head = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request head");
        let (response, mut body) = client.send_request(head, false).expect("send");
        let message = request.encode_to_vec();
        let mut framed = Vec::with_capacity(5 + message.len());
        framed.push(0);
        framed.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
        framed.extend_from_slice(&message);
        body.send_data(framed.into(), true).expect("send body");
        // The reply's headers are not flow-controlled: once they are here, the
        // server has its reply in hand.
        let response = response.await.expect("reply headers");
        Self {
            _client: client,
            _response: response,
            connection,
        }
    }
}

impl Drop for StalledReader {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// With its file descriptors used up by connections that never handshake,
/// Redwire neither spins a core on failing accepts nor stops serving the client
/// already connected, and accepts again once those connections time out. Runs the
/// real binary under `ulimit -n`, so the limit is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_neither_spins_nor_stops_open_clients() {
    let redis = RedisServer::start();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let script = format!(
        "ulimit -n 64 && exec \"$0\" --listen {addr} --redis-url {} --handshake-timeout 2s --health-interval 100ms --log error",
        redis.url()
    );
    let mut server = tokio::process::Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_redwire")])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redwire");
    let pid = server.id().expect("pid");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();
    let mut cache = CacheClient::new(channel);
    eventually(HANG, "redwire to serve", || async {
        cache.clone().get(GetRequest { key: "k".into() }).await.ok()
    })
    .await;

    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(open_raw(addr).await);
    }
    for _ in 0..20 {
        cache
            .get(GetRequest { key: "k".into() })
            .await
            .expect("the connected client is served while descriptors are out");
    }
    futures::future::join_all(silent.into_iter().map(closed_by_server)).await;
    let busy = (cpu_ticks(pid) - cpu_before) as f64 / clock_ticks_per_second();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        busy < 0.5 * elapsed,
        "redwire used {busy:.2} s of CPU in {elapsed:.2} s while out of descriptors"
    );
    let fresh = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();
    eventually(HANG, "a new client to be accepted", || async {
        CacheClient::new(fresh.clone())
            .get(GetRequest { key: "k".into() })
            .await
            .ok()
    })
    .await;
    server.kill().await.expect("kill");
}

/// User plus system CPU time of `pid`, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// A read whose reply could not be sent (over `--max-message-bytes`) is refused
/// inside Redis, before Redwire takes the reply in: RESOURCE_EXHAUSTED naming the
/// limit, for every collection read. A smaller read of the same data works.
/// Before, Redwire read all of it (a 100 MB list) and then failed OUT_OF_RANGE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_too_large_to_send_are_refused_before_they_are_read() {
    const VALUE: usize = 400 * 1024;
    let ctx = TestContext::standalone_with(&["--max-message-bytes", "1048576"]).await;
    let mut cache = ctx.cache();
    let values: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; VALUE]).collect();
    // One value per write: together they are over the limit, each is not.
    for (i, value) in values.iter().enumerate() {
        cache
            .list_push(ListPushRequest {
                key: "list".into(),
                values: vec![value.clone()],
                ..Default::default()
            })
            .await
            .expect("list_push");
        cache
            .set_add(SetAddRequest {
                key: "set".into(),
                members: vec![value.clone()],
            })
            .await
            .expect("set_add");
        cache
            .hash_set(HashSetRequest {
                key: "hash".into(),
                fields: [(format!("f{i}"), value.clone())].into(),
            })
            .await
            .expect("hash_set");
    }
    let keys: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    for (key, value) in keys.iter().zip(&values) {
        cache
            .set(SetRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .expect("set");
    }

    let refusals = [
        cache
            .list_range(ListRangeRequest {
                key: "list".into(),
                start: 0,
                stop: -1,
            })
            .await
            .map(drop),
        cache
            .set_members(SetMembersRequest { key: "set".into() })
            .await
            .map(drop),
        cache
            .hash_get(HashGetRequest {
                key: "hash".into(),
                fields: vec![],
            })
            .await
            .map(drop),
        cache
            .get_many(GetManyRequest { keys: keys.clone() })
            .await
            .map(drop),
    ];
    for refusal in refusals {
        let status = refusal.expect_err("a reply over the message limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("--max-message-bytes"),
            "{status:?}"
        );
    }
    let two = cache
        .list_range(ListRangeRequest {
            key: "list".into(),
            start: 0,
            stop: 1,
        })
        .await
        .expect("a range that fits")
        .into_inner();
    assert_eq!(two.values.len(), 2);
    let two = cache
        .get_many(GetManyRequest {
            keys: keys[..2].to_vec(),
        })
        .await
        .expect("fewer keys fit")
        .into_inner();
    assert_eq!(two.values.len(), 2);
}
