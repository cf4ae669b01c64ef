//! Test support: real Redis servers and an in-process Redwire, reached over real gRPC.
//!
//! - [`RedisServer`]: a `redis-server` child on a random loopback port with its own
//!   temp dir (AOF on), killed and reaped on drop; its log is printed when the test
//!   panics.
//! - [`RedisCluster`]: three such servers joined into a 3-master Redis Cluster,
//!   optionally with a replica each, and `CLUSTER FAILOVER` on request.
//! - [`proxy::FaultProxy`]: a loopback TCP proxy that resets or refuses
//!   connections, for network faults between Redwire and Redis.
//! - [`TestContext`]: Redwire running in this process on `127.0.0.1:0`, with typed
//!   clients, stopped through its shutdown future.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod auth;
pub mod http;
pub mod proxy;
pub mod tls;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redwire::proto::cache_client::CacheClient;
use redwire::proto::lock_client::LockClient;
use redwire::proto::pub_sub_client::PubSubClient;
use redwire::proto::queue_client::QueueClient;
use redwire::proto::stream_client::StreamClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Declares a test file's core checks once. Each named check function
/// (`async fn name(ctx: &TestContext)`) runs as its own `#[tokio::test]` on a
/// fresh standalone Redis (in `mod standalone`, so they run in parallel), and all
/// of them run in turn in the generated `run_core_checks_on(ctx)`, which the
/// file's cluster test calls: one list, so a check cannot miss the cluster.
#[macro_export]
macro_rules! core_checks {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let ctx = $crate::support::TestContext::standalone().await;
                    super::$name(&ctx).await;
                }
            )*
        }

        /// Every core check of this file, in turn, on `ctx`.
        async fn run_core_checks_on(ctx: &$crate::support::TestContext) {
            $($name(ctx).await;)*
        }
    };
}

/// A Cache Set of `key` to the text `value`.
pub fn set(key: &str, value: &str) -> redwire::proto::SetRequest {
    redwire::proto::SetRequest {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A Cache Get of `key`.
pub fn get(key: &str) -> redwire::proto::GetRequest {
    redwire::proto::GetRequest { key: key.into() }
}

/// A protobuf duration of `millis` milliseconds, as requests carry it.
pub fn ms(millis: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: i64::try_from(millis / 1000).expect("secs"),
        nanos: i32::try_from((millis % 1000) * 1_000_000).expect("nanos"),
    })
}

/// Asserts that a call was refused as bad input in `field`: INVALID_ARGUMENT
/// with a message that starts with the field's path (`"job.priority: ..."`).
pub fn assert_invalid<T: std::fmt::Debug>(field: &str, result: Result<T, tonic::Status>) {
    let status = result.expect_err(&format!("a bad {field} is refused"));
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{field}: {status:?}"
    );
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "the message names {field}: {status:?}"
    );
}

/// Calls of `command` (lower case, e.g. `xadd`) the Redis behind `conn` has run
/// since it started or last ran `CONFIG RESETSTAT`.
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| {
            rest.split(',')
                .next()
                .unwrap_or("0")
                .parse()
                .expect("calls")
        })
}

/// How often polling loops look again (they always end at a deadline).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, or gives up with `None` after
/// `timeout` (for a test that tries again when it does not happen).
pub async fn within<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`eventually`] for code outside the async runtime (starting servers): polls
/// `check` until it is true, or panics with `what` after `timeout`.
pub fn eventually_blocking(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A port on loopback that was free a moment ago (and so was `port + 10000`, the
/// cluster bus port).
pub fn free_port() -> u16 {
    loop {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if port < 55_000 && StdListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A real redis-server child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The TLS port, when started with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone redis-server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a redis-server with extra arguments (e.g. cluster mode).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redwire-test-")
            .tempdir()
            .expect("temp dir");
        let mut server = Self {
            child: None,
            port: 0,
            tls_port: None,
            dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        // A port picked free may be taken before redis binds it; try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        server.dump_log();
        panic!("redis-server did not start");
    }

    /// Starts a redis-server that also listens with TLS, requiring client
    /// certificates signed by `certs`' CA; the plain port stays for the test's own
    /// inspection.
    pub fn start_tls(certs: &tls::TestCerts, extra_args: &[&str]) -> Self {
        let tls_port = free_port();
        let mut args = certs.redis_args(tls_port);
        args.extend(extra_args.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Self::start_with(&args);
        server.tls_port = Some(tls_port);
        server
    }

    /// The `rediss://` URL of the TLS port (see [`RedisServer::start_tls`]).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns redis-server on `self.port` and waits for PING; false if it died.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.ping() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// True when `ROLE` says this server is a master.
    pub fn is_master(&self) -> bool {
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query(&mut self.connection())
            .unwrap_or_default();
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain synchronous connection for inspecting Redis from the test.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis")
    }

    /// kill -9, like a crash: nothing is flushed beyond what AOF everysec wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: a black hole. The kernel still accepts connections and takes
    /// bytes, but nothing answers until [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts redis-server again on the same port with its data gone, as a node
    /// that lost its disk (or ran without persistence) comes back.
    pub fn restart_empty(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path()).expect("data dir") {
            let path = entry.expect("entry").path();
            if path == self.log_path() {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove data");
            } else {
                std::fs::remove_file(&path).expect("remove data");
            }
        }
        self.restart();
    }

    /// Starts redis-server again on the same port and data dir (AOF replayed).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn dump_log(&self) {
        if let Ok(log) = std::fs::read_to_string(self.log_path()) {
            eprintln!(
                "---- redis-server :{} log ----\n{log}\n---- end of log ----",
                self.port
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        }
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback; [`RedisCluster::start_with_replicas`]
/// adds one replica per master.
pub struct RedisCluster {
    /// The masters, in slot order (node 0 owns slots 0..=5460), then the replicas
    /// (node 3 + i replicates node i).
    pub nodes: Vec<RedisServer>,
}

/// How long a cluster may take to form, sync its replicas or fail over.
const CLUSTER_READY: Duration = Duration::from_secs(30);

/// The slots each master owns, master `i` the `i`th range.
const SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// Cluster-mode flags of every node.
const CLUSTER_ARGS: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

impl RedisCluster {
    pub fn start() -> Self {
        let nodes = (0..3)
            .map(|_| RedisServer::start_with(&CLUSTER_ARGS))
            .collect();
        Self::join(nodes, RedisServer::port)
    }

    /// A cluster whose nodes talk TLS to clients and to each other
    /// (`tls-cluster yes`); TLS clients learn the nodes' TLS ports. Seeds:
    /// [`RedisCluster::tls_seeds`].
    pub fn start_tls(certs: &tls::TestCerts) -> Self {
        let mut args = CLUSTER_ARGS.to_vec();
        args.extend(["--tls-cluster", "yes"]);
        let nodes = (0..3)
            .map(|_| RedisServer::start_tls(certs, &args))
            .collect();
        // With tls-cluster the TLS port is the node's cluster port (its bus port
        // derives from it), so nodes meet on it.
        Self::join(nodes, |node| node.tls_port.expect("a tls node"))
    }

    /// Assigns a third of the slots to each node and introduces them, the second
    /// and third on `meet_port`; waits for `cluster_state:ok`.
    fn join(nodes: Vec<RedisServer>, meet_port: impl Fn(&RedisServer) -> u16) -> Self {
        for (node, (first, last)) in nodes.iter().zip(SLOT_RANGES) {
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut node.connection())
                .expect("assign slots");
        }
        let mut first = nodes[0].connection();
        for node in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(meet_port(node))
                .query(&mut first)
                .expect("cluster meet");
        }
        let cluster = Self { nodes };
        eventually_blocking(CLUSTER_READY, "cluster_state:ok", || cluster.is_ready());
        cluster
    }

    /// Every node says the cluster is ok and knows all the nodes.
    fn is_ready(&self) -> bool {
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        self.nodes.iter().all(|node| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut node.connection())
                .unwrap_or_default();
            info.contains("cluster_state:ok") && info.contains(&known)
        })
    }

    /// Three masters, each with one replica in sync (`CLUSTER REPLICATE`).
    pub fn start_with_replicas() -> Self {
        let mut cluster = Self::start();
        let masters: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query(&mut node.connection())
                    .expect("cluster myid")
            })
            .collect();
        for master in &masters {
            let replica = RedisServer::start_with(&CLUSTER_ARGS);
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(replica.port())
                .query(&mut cluster.nodes[0].connection())
                .expect("cluster meet");
            // A node can only be made a replica once it knows its master.
            eventually_blocking(CLUSTER_READY, "a replica to join its master", || {
                redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(master)
                    .query::<()>(&mut replica.connection())
                    .is_ok()
            });
            cluster.nodes.push(replica);
        }
        eventually_blocking(CLUSTER_READY, "the replicas to sync", || {
            cluster.is_ready() && cluster.replicas_in_sync()
        });
        cluster
    }

    /// Every replica's link to its master is up.
    fn replicas_in_sync(&self) -> bool {
        self.nodes[3..].iter().all(|node| {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut node.connection())
                .unwrap_or_default();
            info.contains("master_link_status:up")
        })
    }

    /// `CLUSTER FAILOVER` on the replica of master `index`: they swap roles with
    /// no write lost. Returns once the replica reports itself master.
    pub fn failover(&self, index: usize) {
        let replica = &self.nodes[3 + index];
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut replica.connection())
            .expect("cluster failover");
        eventually_blocking(CLUSTER_READY, "the failover", || replica.is_master());
    }

    /// Every node's URL, masters first.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `rediss://` seeds of a cluster made by [`RedisCluster::start_tls`].
    pub fn tls_seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::tls_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Which master (0, 1 or 2, as started) owns the slot of the Redis key or
    /// sharded channel `name`.
    pub fn shard_of(name: &str) -> usize {
        let slot = redwire::redis::keys::hash_slot(name.as_bytes());
        SLOT_RANGES
            .iter()
            .position(|(first, last)| (*first..=*last).contains(&slot))
            .expect("every slot has a range")
    }

    /// A connection to the node that owns `key`'s slot.
    pub fn connection_for(&self, key: &str) -> redis::Connection {
        self.nodes[Self::shard_of(key)].connection()
    }
}

/// Which Redis a [`TestContext`] serves.
pub enum Backend {
    Standalone(RedisServer),
    Cluster(RedisCluster),
    /// Redwire's own embedded redis-server, in this temp dir.
    Embedded(tempfile::TempDir),
    /// The Redis of another context (see [`TestContext::beside`]), owned there.
    Shared,
}

/// Redwire running in-process over a real Redis, with clients.
pub struct TestContext {
    pub backend: Backend,
    pub addr: SocketAddr,
    /// The admin listener's address, when the flags ask for one
    /// (`--admin-listen 127.0.0.1:0`).
    pub admin: Option<SocketAddr>,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), redwire::ServeError>>>,
}

impl TestContext {
    /// Redwire over its own fresh standalone Redis.
    pub async fn standalone() -> Self {
        Self::standalone_with(&[]).await
    }

    /// Redwire over `cluster`, reached with `redis_args` (e.g. `rediss://` seeds
    /// and TLS flags).
    pub async fn over_cluster(cluster: RedisCluster, redis_args: &[&str]) -> Self {
        Self::start(Backend::Cluster(cluster), redis_args, &[]).await
    }

    /// Redwire over `redis`, reached with `redis_args` (e.g. a `rediss://` URL and
    /// TLS flags). With `ready`, waits until health is SERVING.
    pub async fn over(redis: RedisServer, redis_args: &[&str], ready: bool) -> Self {
        let backend = Backend::Standalone(redis);
        if ready {
            Self::start(backend, redis_args, &[]).await
        } else {
            Self::start_unready(backend, redis_args, &[]).await
        }
    }

    /// Like [`standalone`](Self::standalone), with extra Redwire flags.
    pub async fn standalone_with(extra: &[&str]) -> Self {
        let redis = RedisServer::start();
        let url = redis.url();
        Self::start(Backend::Standalone(redis), &["--redis-url", &url], extra).await
    }

    /// A plain connection to the Redis that owns `redis_key` (any topology but
    /// embedded).
    pub fn redis_connection(&self, redis_key: &str) -> redis::Connection {
        match &self.backend {
            Backend::Standalone(redis) => redis.connection(),
            Backend::Cluster(cluster) => cluster.connection_for(redis_key),
            Backend::Embedded(_) => panic!("no direct connection to the embedded redis"),
            Backend::Shared => panic!("use the context that owns the redis"),
        }
    }

    /// Redwire over its own fresh 3-master cluster.
    pub async fn cluster() -> Self {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("cluster start");
        let seeds = cluster.seeds();
        Self::start(Backend::Cluster(cluster), &["--redis-cluster", &seeds], &[]).await
    }

    /// Redwire, with `extra` flags, over its own fresh cluster of three masters
    /// with a replica each.
    pub async fn replicated_cluster(extra: &[&str]) -> Self {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start_with_replicas)
            .await
            .expect("cluster start");
        let seeds = cluster.seeds();
        Self::start(
            Backend::Cluster(cluster),
            &["--redis-cluster", &seeds],
            extra,
        )
        .await
    }

    /// A second Redwire over the same Redis as `self`, as another instance behind
    /// a load balancer would be. Keep `self` alive while it runs.
    pub async fn beside(&self) -> Self {
        let redis_args = match &self.backend {
            Backend::Standalone(redis) => ["--redis-url".to_owned(), redis.url()],
            Backend::Cluster(cluster) => ["--redis-cluster".to_owned(), cluster.seeds()],
            Backend::Embedded(_) | Backend::Shared => {
                panic!("beside needs a context that owns a test redis")
            }
        };
        let redis_args = redis_args.each_ref().map(String::as_str);
        Self::start(Backend::Shared, &redis_args, &[]).await
    }

    /// Redwire with its embedded redis-server in a temp data dir.
    pub async fn embedded() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rw-")
            .tempdir()
            .expect("temp dir");
        Self::embedded_in(dir).await
    }

    /// Redwire with its embedded redis-server in `<dir>/data`.
    pub async fn embedded_in(dir: tempfile::TempDir) -> Self {
        let data = dir.path().join("data").display().to_string();
        Self::start(Backend::Embedded(dir), &["--data-dir", &data], &[]).await
    }

    async fn start(backend: Backend, redis_args: &[&str], extra: &[&str]) -> Self {
        let ctx = Self::start_unready(backend, redis_args, extra).await;
        ctx.wait_for_health("", ServingStatus::Serving).await;
        ctx
    }

    async fn start_unready(backend: Backend, redis_args: &[&str], extra: &[&str]) -> Self {
        let mut args = vec![
            "redwire",
            "--health-interval",
            "100ms",
            "--shutdown-grace",
            "5s",
            "--log",
            "warn",
        ];
        args.extend_from_slice(redis_args);
        args.extend_from_slice(extra);
        let config = redwire::Config::from_args(args).expect("test config parses");
        let _ = redwire::telemetry::init(&config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Library callers bind the admin listener themselves, as main does.
        let admin_listener = match config.admin.listen.0 {
            Some(admin) if extra.contains(&"--admin-listen") => Some(
                tokio::net::TcpListener::bind(admin)
                    .await
                    .expect("bind admin"),
            ),
            _ => None,
        };
        let admin = admin_listener
            .as_ref()
            .map(|l| l.local_addr().expect("admin addr"));
        let listeners = redwire::Listeners {
            grpc: listener,
            admin: admin_listener,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(redwire::run(config, listeners, async {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_lazy();
        Self {
            backend,
            addr,
            admin,
            channel,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// A channel of its own (a new HTTP/2 connection) to this server.
    pub fn fresh_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_lazy()
    }

    pub fn cache(&self) -> CacheClient<Channel> {
        CacheClient::new(self.channel.clone())
    }

    pub fn queue(&self) -> QueueClient<Channel> {
        QueueClient::new(self.channel.clone())
    }

    pub fn pubsub(&self) -> PubSubClient<Channel> {
        PubSubClient::new(self.channel.clone())
    }

    pub fn stream(&self) -> StreamClient<Channel> {
        StreamClient::new(self.channel.clone())
    }

    pub fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// The cluster behind this context.
    pub fn cluster_mut(&mut self) -> &mut RedisCluster {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster,
            _ => panic!("this context has no test cluster"),
        }
    }

    /// The standalone Redis behind this context.
    pub fn redis(&mut self) -> &mut RedisServer {
        match &mut self.backend {
            Backend::Standalone(redis) => redis,
            _ => panic!("this context has no standalone test redis"),
        }
    }

    /// The health status of `service`, or None when the call fails.
    pub async fn health_status(&self, service: &str) -> Option<ServingStatus> {
        let reply = self
            .health()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(reply.into_inner().status).ok()
    }

    pub async fn wait_for_health(&self, service: &str, want: ServingStatus) {
        eventually(
            Duration::from_secs(20),
            &format!("health {service:?} to be {want:?}"),
            || async { (self.health_status(service).await == Some(want)).then_some(()) },
        )
        .await;
    }

    /// Fires the shutdown future and waits for `run` to return; returns how long
    /// that took.
    pub async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
        started.elapsed()
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
