//! Server-level behaviour: health follows Redis, reflection, graceful shutdown,
//! message limits, and the embedded redis-server.

mod support;

use std::time::Duration;

use redwire::proto::*;
use support::TestContext;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

/// The services server reflection lists, taken from the descriptor set (not from
/// the server's own list of what it registered).
async fn reflected_services(ctx: &TestContext) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(ctx.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

/// Every Redwire service reflection lists (all but the `grpc.*` infrastructure),
/// and "" for the whole server.
async fn health_names(ctx: &TestContext) -> Vec<String> {
    let mut names: Vec<String> = reflected_services(ctx)
        .await
        .into_iter()
        .filter(|name| !name.starts_with("grpc."))
        .collect();
    names.push(String::new());
    names
}

/// Health answers for every service reflection lists, and each flips to
/// NOT_SERVING with Redis down and back to SERVING without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_redis_down_and_up_without_restart() {
    let mut ctx = TestContext::standalone().await;
    let names = health_names(&ctx).await;
    assert_eq!(names.len(), 6, "five services and the server: {names:?}");
    // PubSub turns SERVING once its own connection is up, within a health
    // interval of the others.
    for name in &names {
        ctx.wait_for_health(name, ServingStatus::Serving).await;
    }

    ctx.redis().kill();
    for name in &names {
        ctx.wait_for_health(name, ServingStatus::NotServing).await;
    }
    let status = ctx
        .cache()
        .get(GetRequest { key: "k".into() })
        .await
        .expect_err("redis is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    ctx.redis().restart();
    for name in &names {
        ctx.wait_for_health(name, ServingStatus::Serving).await;
    }
    support::eventually(Duration::from_secs(10), "calls to work again", || async {
        let mut cache = ctx.cache();
        let set = cache
            .set(SetRequest {
                key: "k".into(),
                value: b"back".to_vec(),
                ..Default::default()
            })
            .await;
        set.ok().map(|_| ())
    })
    .await;
    let value = ctx
        .cache()
        .get(GetRequest { key: "k".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(value.value, b"back");
}

/// Server reflection lists every Redwire service and health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    let ctx = TestContext::standalone().await;
    let names = reflected_services(&ctx).await;
    for expected in [
        "redwire.v1.Cache",
        "redwire.v1.Queue",
        "redwire.v1.PubSub",
        "redwire.v1.Lock",
        "redwire.v1.Stream",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}

/// Shutdown reports NOT_SERVING first and ends blocking calls within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_first_and_ends_blocking_calls_within_grace() {
    let mut ctx = TestContext::standalone().await;
    let mut watch = ctx
        .health()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let mut cache = ctx.cache();
    let blocked = tokio::spawn(async move {
        cache
            .list_pop(ListPopRequest {
                keys: vec!["never-filled".into()],
                wait: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
    });
    let redis_url = ctx.redis().url();
    support::eventually(Duration::from_secs(10), "the pop to block", || async {
        let mut conn = redis::Client::open(redis_url.as_str())
            .ok()?
            .get_connection()
            .ok()?;
        let info: String = redis::cmd("INFO").arg("clients").query(&mut conn).ok()?;
        info.contains("blocked_clients:1").then_some(())
    })
    .await;

    // A producer stream open at shutdown: its replies so far arrived, then it ends
    // with UNAVAILABLE (resend what got no reply).
    let (producer, requests) = tokio::sync::mpsc::channel(4);
    let mut replies = ctx
        .queue()
        .enqueue_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("enqueue stream")
        .into_inner();
    producer
        .send(EnqueueStreamRequest {
            queue: "before-shutdown".into(),
            job: Some(JobSpec::default()),
        })
        .await
        .expect("send");
    let reply = replies.message().await.expect("reply").expect("a reply");
    assert!(
        matches!(
            reply.result,
            Some(enqueue_stream_response::Result::Enqueued(_))
        ),
        "{reply:?}"
    );

    let took = ctx.stop().await;
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}, past the 5s grace"
    );
    let ended = replies
        .message()
        .await
        .expect_err("the producer stream ends with an error");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let status = blocked
        .await
        .expect("task")
        .expect_err("the blocked call ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let next = watch.next().await;
    if let Some(Ok(update)) = next {
        assert_eq!(
            update.status,
            ServingStatus::NotServing as i32,
            "NOT_SERVING is announced first"
        );
    }
}

/// Messages over --max-message-bytes are refused and the server stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_and_the_server_stays_healthy() {
    let ctx = TestContext::standalone_with(&["--max-message-bytes", "65536"]).await;
    let status = ctx
        .cache()
        .set(SetRequest {
            key: "big".into(),
            value: vec![7; 100_000],
            ..Default::default()
        })
        .await
        .expect_err("too large");
    // tonic's decoder answers OUT_OF_RANGE and says which limit was hit.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("65536"), "{status:?}");
    assert_eq!(ctx.health_status("").await, Some(ServingStatus::Serving));
    let get = ctx
        .cache()
        .get(GetRequest { key: "big".into() })
        .await
        .expect("get")
        .into_inner();
    assert!(!get.found, "nothing was written");
}

/// The embedded Redis keeps its data in the data dir and stops with the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_redis_persists_to_the_data_dir_and_stops_with_the_server() {
    let mut ctx = TestContext::embedded().await;
    ctx.cache()
        .set(SetRequest {
            key: "e".into(),
            value: b"embedded".to_vec(),
            ..Default::default()
        })
        .await
        .expect("set on the embedded redis");
    let support::Backend::Embedded(dir) = &ctx.backend else {
        unreachable!()
    };
    let data = dir.path().join("data");
    let socket = data.join("redis.sock");
    let url = format!("redis+unix://{}", socket.display());
    ctx.stop().await;

    // SHUTDOWN flushed the AOF, and the server is gone.
    let aof_dir = data.join("appendonlydir");
    let aof: String = std::fs::read_dir(&aof_dir)
        .expect("appendonlydir exists")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    assert!(
        aof.contains("rw:c:e") && aof.contains("embedded"),
        "the write reached the AOF"
    );
    let still_up = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
        .is_ok();
    assert!(!still_up, "the embedded redis-server stopped with Redwire");
}

/// The embedded redis-server's data directory (AOF, RDB: every stored value) is
/// open to Redwire's user only, even when it existed with a wider mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::Builder::new()
        .prefix("rw-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ctx = TestContext::embedded_in(dir).await;
    let mode = std::fs::metadata(&data)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
    drop(ctx);
}

/// A redis-server left behind by a killed run is shut down cleanly first, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_left_behind_by_a_killed_run_is_shut_down_first_and_loses_nothing() {
    // A redis-server on the data dir's socket, as a Redwire killed with -9 leaves it.
    let dir = tempfile::Builder::new()
        .prefix("rw-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let socket = data.join("redis.sock");
    let mut orphan = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(&data)
        .arg("--logfile")
        .arg(data.join("orphan.log"))
        .spawn()
        .expect("start the orphan");
    let url = format!("redis+unix://{}", socket.display());
    let mut conn = support::eventually(Duration::from_secs(10), "the orphan to answer", || async {
        redis::Client::open(url.as_str())
            .ok()?
            .get_connection()
            .ok()
    })
    .await;
    let _: () = redis::cmd("SET")
        .arg("rw:c:left")
        .arg("behind")
        .query(&mut conn)
        .expect("write");
    drop(conn);

    let ctx = TestContext::embedded_in(dir).await;
    // Redwire waited for the orphan to stop answering before starting its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = orphan.try_wait().expect("wait on the orphan") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan did not exit"
        );
        tokio::task::yield_now().await;
    };
    assert!(
        status.success(),
        "the orphan was shut down cleanly: {status:?}"
    );
    let value = ctx
        .cache()
        .get(GetRequest { key: "left".into() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        value.value, b"behind",
        "its data was flushed and loaded by the new redis-server"
    );
}

/// A missing redis-server program gets one clear error line, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_redis_server_gets_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = redwire::Config::from_args([
        "redwire",
        "--data-dir",
        &dir.path().display().to_string(),
        "--redis-server-bin",
        "/nonexistent/redis-server",
    ])
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = redwire::run(config, listener, std::future::pending())
        .await
        .expect_err("no redis-server to run");
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(
        message.contains("apt-get install -y redis-server"),
        "{message}"
    );
    assert!(message.contains("--redis-url"), "{message}");
}

/// Passes request bytes through unchanged, to send what no generated client
/// would: truncated messages, invalid UTF-8 in a string field.
#[derive(Debug, Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Request bytes that are not a valid message of the method's type are the
/// client's mistake: INVALID_ARGUMENT (before: INTERNAL), and the server stays
/// healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_bodies_are_invalid_argument() {
    let ctx = TestContext::standalone().await;
    let bodies: [(&str, Vec<u8>); 3] = [
        // Field 1 (key) says 5 bytes follow; one does.
        ("truncated", vec![0x0a, 0x05, b'k']),
        // Field 1 (key, a string) holds bytes that are not UTF-8.
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        // A tag with wire type 7, which does not exist.
        ("bad wire type", vec![0x0f]),
    ];
    for (what, body) in bodies {
        let mut grpc = tonic::client::Grpc::new(ctx.channel.clone());
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/redwire.v1.Cache/Get");
        let status = grpc
            .unary(tonic::Request::new(body), path, RawBytes)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    assert_eq!(ctx.health_status("").await, Some(ServingStatus::Serving));
}

/// DeleteConsumer on a stream that does not exist is NOT_FOUND naming the
/// stream (before: INTERNAL and an error log line per call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_consumer_on_a_missing_stream_is_not_found() {
    let ctx = TestContext::standalone().await;
    let status = ctx
        .stream()
        .delete_consumer(DeleteConsumerRequest {
            stream: "never-made".into(),
            group: "g".into(),
            consumer: "c".into(),
        })
        .await
        .expect_err("no such stream");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("never-made"), "{status:?}");
}

/// Redis refusing Redwire's credentials (none given, or a wrong password) is
/// UNAVAILABLE saying so: the operator's to fix, not INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_redis_credentials_are_unavailable() {
    for password in [None, Some("not-the-password")] {
        let redis = support::RedisServer::start();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg("s3cret")
            .query(&mut redis.connection())
            .expect("require a password");
        let url = match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", redis.port()),
            None => format!("redis://127.0.0.1:{}", redis.port()),
        };
        let ctx = TestContext::over(redis, &["--redis-url", &url], false).await;
        let status = ctx
            .cache()
            .get(GetRequest { key: "k".into() })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unavailable, "{password:?}: {status:?}");
        assert!(
            status.message().contains("credentials"),
            "{password:?}: {status:?}"
        );
    }
}
