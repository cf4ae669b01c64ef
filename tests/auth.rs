//! Authentication and authorization against a real server over real gRPC: every
//! rpc of the descriptor set refuses a missing token and a token without the
//! grant, and serves a granted one; the auth file is reloaded when it changes;
//! a non-loopback listener needs auth or `--insecure`; `redwire mint-token`
//! prints a block the auth file accepts.

mod support;

use std::time::Duration;

use prost::Message;
use redwire::proto::*;
use support::auth::{AuthFile, with_token};
use support::{TestContext, eventually};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

/// Every Redwire rpc, as `/package.Service/Method`, from the descriptor set the
/// server registers for reflection.
fn every_rpc() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(redwire::proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
}

/// Calls `path` with an empty request message (and `token`, if any), as a unary
/// call within 2 s; an rpc that streams gets its one message as its stream.
async fn call(channel: Channel, path: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = Request::new(());
    request.set_timeout(Duration::from_secs(2));
    if let Some(token) = token {
        request = with_token(request, token);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = path.parse().expect("path");
    grpc.unary(request, path, codec).await.map(drop)
}

/// One table over every rpc in the descriptor set: no token is UNAUTHENTICATED,
/// a token with no grant is PERMISSION_DENIED naming the rpc's permission, and a
/// token granted everything gets past the checks (whatever the empty request
/// then gets, it is not an auth error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_its_token_and_its_grant() {
    let file = AuthFile::new(&[
        ("nobody", ""),
        ("everything", "{ services = [\"*\"], actions = [\"*\"] }"),
    ]);
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let rpcs = every_rpc();
    assert!(rpcs.len() > 60, "{rpcs:?}");
    for rpc in &rpcs {
        let missing = call(ctx.channel.clone(), rpc, None).await;
        let status = missing.expect_err(rpc);
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{rpc} without a token: {status:?}"
        );

        let denied = call(ctx.channel.clone(), rpc, Some(file.token("nobody"))).await;
        let status = denied.expect_err(rpc);
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{rpc} without a grant: {status:?}"
        );
        let permission = redwire::auth::permissions::permission_of(rpc).expect("permission");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "PERMISSION_DENIED");
        assert_eq!(info.metadata["permission"], permission.to_string());
        assert!(
            status.message().contains(&permission.to_string()),
            "{status:?}"
        );

        let granted = call(ctx.channel.clone(), rpc, Some(file.token("everything"))).await;
        if let Err(status) = granted {
            assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ),
                "{rpc} with every grant: {status:?}"
            );
        }
    }
    // Health stays open for probes.
    assert!(ctx.health_status("").await.is_some());
}

/// Grants are per service and action class: a queue producer may enqueue but
/// not purge, and may not touch the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_allow_their_services_and_actions_only() {
    let file = AuthFile::new(&[(
        "producer",
        "{ services = [\"queue\"], actions = [\"write\", \"read\"] }",
    )]);
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let token = file.token("producer");
    let mut queue = ctx.queue();
    let enqueue = EnqueueRequest {
        queue: "mail".into(),
        job: Some(JobSpec {
            payload: b"hi".to_vec(),
            ..Default::default()
        }),
    };
    queue
        .enqueue(with_token(Request::new(enqueue), token))
        .await
        .expect("a producer enqueues");
    let stats = queue
        .stats(with_token(
            Request::new(StatsRequest {
                queue: "mail".into(),
            }),
            token,
        ))
        .await
        .expect("and reads stats")
        .into_inner();
    assert_eq!(stats.waiting, 1);
    let purge = queue
        .purge(with_token(
            Request::new(PurgeRequest {
                queue: "mail".into(),
            }),
            token,
        ))
        .await
        .expect_err("a producer may not purge");
    assert_eq!(purge.code(), Code::PermissionDenied);
    assert!(purge.message().contains("queue:admin"), "{purge:?}");
    let get = ctx
        .cache()
        .get(with_token(
            Request::new(GetRequest { key: "k".into() }),
            token,
        ))
        .await
        .expect_err("nor read the cache");
    assert!(get.message().contains("cache:read"), "{get:?}");
    let waiting = queue
        .stats(with_token(
            Request::new(StatsRequest {
                queue: "mail".into(),
            }),
            token,
        ))
        .await
        .expect("stats")
        .into_inner()
        .waiting;
    assert_eq!(waiting, 1, "the refused purge removed nothing");
}

/// A token removed from the file is refused within a few seconds, without a
/// restart, and a new one works (a file that does not parse is the unit tests').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_file_is_reloaded_when_it_changes() {
    let everything = "{ services = [\"*\"], actions = [\"*\"] }";
    let mut file = AuthFile::new(&[("old", everything)]);
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let old = file.token("old").to_owned();
    let get = |token: String| {
        let mut cache = ctx.cache();
        async move {
            cache
                .get(with_token(
                    Request::new(GetRequest { key: "k".into() }),
                    &token,
                ))
                .await
        }
    };
    get(old.clone()).await.expect("the old token works");

    file.write(&[("new", everything)]);
    let new = file.token("new").to_owned();
    eventually(Duration::from_secs(5), "the new token is accepted", || {
        let attempt = get(new.clone());
        async move { attempt.await.is_ok().then_some(()) }
    })
    .await;
    let refused = get(old).await.expect_err("the old token is revoked");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

/// Without auth, Redwire refuses to listen beyond loopback unless told
/// `--insecure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_listener_needs_auth_or_insecure() {
    let redis = support::RedisServer::start();
    let url = redis.url();
    let start = |extra: &[&str]| {
        let mut args = vec!["redwire", "--redis-url", &url, "--log", "warn"];
        args.extend_from_slice(extra);
        redwire::Config::from_args(args).expect("config")
    };
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let refused = redwire::run(start(&[]), listener, async {}).await;
    let message = refused
        .expect_err("a public listener without auth")
        .to_string();
    assert!(
        message.contains("--auth-file") && message.contains("--insecure"),
        "{message}"
    );

    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    redwire::run(start(&["--insecure"]), listener, async {})
        .await
        .expect("--insecure serves on a public address");

    let file = AuthFile::new(&[("a", "")]);
    let path = file.path().display().to_string();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    redwire::run(start(&["--auth-file", &path]), listener, async {})
        .await
        .expect("auth serves on a public address");
}

/// `redwire mint-token` prints an auth-file block with a fresh token in a
/// comment; the block, as written, lets that token make the granted calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_works_once_its_block_is_in_the_file() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_redwire"))
        .args([
            "mint-token",
            "--name",
            "reader",
            "--services",
            "cache",
            "--actions",
            "read",
        ])
        .output()
        .expect("run redwire mint-token");
    assert!(output.status.success(), "{output:?}");
    let block = String::from_utf8(output.stdout).expect("utf-8");
    let token = block
        .lines()
        .find_map(|line| line.strip_prefix("# token: "))
        .expect("the token line")
        .to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, &block).expect("write");
    let path = path.display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let mut cache = ctx.cache();
    let found = cache
        .get(with_token(
            Request::new(GetRequest { key: "k".into() }),
            &token,
        ))
        .await
        .expect("the minted token reads")
        .into_inner();
    assert!(!found.found);
    let write = cache
        .set(with_token(
            Request::new(SetRequest {
                key: "k".into(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
            &token,
        ))
        .await
        .expect_err("and only reads");
    assert_eq!(write.code(), Code::PermissionDenied);
}

/// Reads `stream` until it ends with an error, skipping what it still sends,
/// and returns that error.
async fn ending<T>(stream: &mut tonic::Streaming<T>, what: &str) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => panic!("{what} still open 10 s after its token was revoked"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("{what} ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

/// Removing a token from the file ends every long-lived stream it opened with
/// UNAUTHENTICATED; the Consume stream's job goes back to the queue and the
/// Hold's lock is released; a token that stays valid sees no error while the
/// file is rewritten under its calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_open_streams() {
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    let everything = "{ services = [\"*\"], actions = [\"*\"] }";
    let mut file = AuthFile::new(&[("doomed", everything), ("kept", everything)]);
    let path = file.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let doomed = file.token("doomed").to_owned();
    let kept = file.token("kept").to_owned();

    let mut subscribe = ctx
        .pubsub()
        .subscribe(with_token(
            Request::new(SubscribeRequest {
                channels: vec!["rev".into()],
                ..Default::default()
            }),
            &doomed,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    subscribe.message().await.expect("subscribed");
    let mut tail = ctx
        .stream()
        .tail(with_token(
            Request::new(TailRequest {
                streams: vec![TailPosition {
                    stream: "rev-tail".into(),
                    after: "$".into(),
                }],
                heartbeat_interval: None,
            }),
            &doomed,
        ))
        .await
        .expect("tail")
        .into_inner();
    tail.message().await.expect("tail started");
    let mut hold = ctx
        .lock()
        .hold(with_token(
            Request::new(HoldRequest {
                resource: "rev-lock".into(),
                ttl: support::ms(5_000),
                ..Default::default()
            }),
            &doomed,
        ))
        .await
        .expect("hold")
        .into_inner();
    hold.message().await.expect("granted");

    let mut stream_client = ctx.stream();
    stream_client
        .create_group(with_token(
            Request::new(CreateGroupRequest {
                stream: "rev-group".into(),
                group: "g".into(),
                start: "0".into(),
                ..Default::default()
            }),
            &kept,
        ))
        .await
        .expect("create group");
    let (group_tx, group_requests) = mpsc::channel(4);
    group_tx
        .send(ReadGroupRequest {
            message: Some(read_group_request::Message::Open(OpenGroup {
                stream: "rev-group".into(),
                group: "g".into(),
                consumer: "c".into(),
                max_unacked: 1,
                ..Default::default()
            })),
        })
        .await
        .expect("open group");
    let mut read_group = stream_client
        .read_group(with_token(
            Request::new(ReceiverStream::new(group_requests)),
            &doomed,
        ))
        .await
        .expect("read group")
        .into_inner();
    read_group.message().await.expect("consumer named");

    let mut queue = ctx.queue();
    queue
        .enqueue(with_token(
            Request::new(EnqueueRequest {
                queue: "rev-jobs".into(),
                job: Some(JobSpec {
                    payload: b"job".to_vec(),
                    ..Default::default()
                }),
            }),
            &kept,
        ))
        .await
        .expect("enqueue");
    let (consume_tx, consume_requests) = mpsc::channel(4);
    consume_tx
        .send(ConsumeRequest {
            message: Some(consume_request::Message::Subscribe(Subscribe {
                queue: "rev-jobs".into(),
                max_in_flight: 1,
                lease: support::ms(60_000),
                heartbeat_interval: None,
            })),
        })
        .await
        .expect("subscribe to the queue");
    let mut consume = queue
        .consume(with_token(
            Request::new(ReceiverStream::new(consume_requests)),
            &doomed,
        ))
        .await
        .expect("consume")
        .into_inner();
    consume.message().await.expect("the job delivered");

    // The kept token calls on while the file is rewritten without the other.
    let calls = tokio::spawn({
        let mut cache = ctx.cache();
        let kept = kept.clone();
        async move {
            for _ in 0..200 {
                let request = with_token(Request::new(GetRequest { key: "k".into() }), &kept);
                cache.get(request).await?;
            }
            Ok::<_, tonic::Status>(())
        }
    });
    file.keep(&["kept"]);

    for (what, status) in [
        ("Subscribe", ending(&mut subscribe, "Subscribe").await),
        ("Tail", ending(&mut tail, "Tail").await),
        ("Hold", ending(&mut hold, "Hold").await),
        ("ReadGroup", ending(&mut read_group, "ReadGroup").await),
        ("Consume", ending(&mut consume, "Consume").await),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    calls
        .await
        .expect("calls task")
        .expect("the kept token is never refused during the reload");

    let taken = eventually(
        Duration::from_secs(10),
        "the job is back in the queue",
        || {
            let mut queue = ctx.queue();
            let request = with_token(
                Request::new(DequeueRequest {
                    queue: "rev-jobs".into(),
                    max_jobs: 1,
                    ..Default::default()
                }),
                &kept,
            );
            async move {
                let jobs = queue.dequeue(request).await.ok()?.into_inner().jobs;
                (!jobs.is_empty()).then_some(jobs)
            }
        },
    )
    .await;
    assert_eq!(taken[0].payload, b"job");
    let acquired = ctx
        .lock()
        .acquire(with_token(
            Request::new(AcquireRequest {
                resource: "rev-lock".into(),
                ttl: support::ms(1_000),
                ..Default::default()
            }),
            &kept,
        ))
        .await
        .expect("acquire")
        .into_inner();
    assert!(acquired.acquired, "the Hold's lock was released");
}

/// A stream opened with a token that carries `expires` ends UNAUTHENTICATED
/// when that time passes, without any change to the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires() {
    let (token, hash) = redwire::auth::keyring::mint();
    let expires =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(2));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"brief\"\nsha256 = \"{hash}\"\nexpires = \"{expires}\"\n\
             grants = [{{ services = [\"pubsub\"], actions = [\"read\"] }}]\n"
        ),
    )
    .expect("write auth file");
    let path = path.display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let request = SubscribeRequest {
        channels: vec!["brief".into()],
        ..Default::default()
    };
    let mut subscribe = ctx
        .pubsub()
        .subscribe(with_token(Request::new(request), &token))
        .await
        .expect("subscribe before the token expires")
        .into_inner();
    let status = ending(&mut subscribe, "Subscribe").await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}
