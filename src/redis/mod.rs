//! The connection layer: how Redwire talks to Redis, by purpose.
//!
//! - **Shared connections** ([`Redis::conn`]) carry ordinary commands and scripts.
//!   They are multiplexed (concurrent calls pipeline on one socket) and reconnect by
//!   themselves, so a Redis restart needs no Redwire restart.
//! - **Pub/sub connections** ([`Redis::pubsub`]) are opened by the one owner per
//!   process that needs them (the queue waker), never per client.
//! - **Dedicated connections** ([`Redis::blocking`]) carry blocking commands such as
//!   BLMPOP, which would stall every other caller on a shared socket. They come from a
//!   bounded deadpool pool; a blocking call that is cancelled (client gone, deadline)
//!   closes its connection instead of returning a still-blocked one to the pool.
//!
//! Submodules: `conn` (one connection type over standalone and cluster), `keys`
//! (the key schema and cluster slots), `embedded` (a supervised redis-server child).

mod conn;
pub mod embedded;
pub mod keys;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, Pool, PoolError, RecycleResult};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, FromRedisValue, IntoConnectionInfo,
    RedisError, TlsCertificates,
};
use tokio::sync::OnceCell;

pub use conn::Conn;
use conn::Link;

use crate::error::{Error, Reason, Result};
use crate::telemetry::metrics::{GaugeGuard, RedisMetrics};

/// How many shared multiplexed connections a standalone Redis gets. Two keep one
/// large reply from stalling every other call; more buy nothing on one Redis thread.
const SHARED_CONNECTIONS: usize = 2;

/// How long a background or streaming task (a waker's subscription, a stream
/// reader, a Consume or ReadGroup stream) waits after Redis failed it before
/// trying again: soon enough to resume within a blip, slow enough not to spin.
pub const REDIS_RETRY: Duration = Duration::from_millis(250);

/// TCP settings for every Redis connection. redis-rs leaves Nagle's algorithm on by
/// default; with small pipelined commands that costs a delayed-ACK stall (~40 ms)
/// on many requests.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

/// A client for `url` with [`tcp_settings`], and the configured certificates when
/// there are any (they need a `rediss://` URL).
fn client(url: &str, field: &str, tls: Option<&TlsCertificates>) -> Result<Client> {
    let info = url
        .into_connection_info()
        .map_err(|e| Error::invalid(field, e.to_string()))?
        .set_tcp_settings(tcp_settings());
    match tls {
        Some(certificates) => Client::build_with_tls(info, certificates.clone()),
        None => Client::open(info),
    }
    .map_err(|e| Error::invalid(field, e.to_string()))
}

/// How Redwire talks to Redis, from the config (`--redis-*` and friends).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisSettings {
    /// Most dedicated Redis connections for blocking commands (ListPop with a wait).
    /// When all are busy, further blocking calls fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDWIRE_BLOCKING_POOL_SIZE", default_value_t = 64)]
    pub blocking_pool_size: usize,

    /// How long a Redis command may take before the call fails with UNAVAILABLE.
    #[arg(long = "redis-timeout", value_name = "REDIS_TIMEOUT", env = "REDWIRE_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// How long to wait for a Redis connection (pool checkout or connect).
    #[arg(long, env = "REDWIRE_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Durable mode: a write (enqueue, ack, nack, lease change, stream append, lock
    /// grant) is acknowledged only once this many replicas of its master have it
    /// (Redis WAIT, up to half of --redis-timeout); 0 acknowledges on the master.
    #[arg(long, env = "REDWIRE_DURABLE_REPLICAS", default_value_t = 0)]
    pub durable_replicas: u32,

    /// The PEM files for `rediss://` connections.
    #[command(flatten)]
    pub tls: TlsFiles,
}

/// PEM files for TLS to Redis (`rediss://` URLs: standalone, cluster and Redlock
/// nodes). None given trusts the system's CAs and sends no client certificate.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFiles {
    /// TLS to Redis (`rediss://` URLs, standalone, cluster and Redlock nodes): a PEM
    /// file of CA certificates to trust instead of the system's.
    #[arg(
        id = "redis_tls_ca_file",
        long = "redis-tls-ca-file",
        value_name = "PEM_FILE",
        env = "REDWIRE_REDIS_TLS_CA_FILE"
    )]
    pub ca_file: Option<PathBuf>,

    /// TLS to Redis: a PEM client certificate for Redis servers that require one
    /// (`tls-auth-clients yes`); needs --redis-tls-key-file.
    #[arg(
        id = "redis_tls_cert_file",
        long = "redis-tls-cert-file",
        value_name = "PEM_FILE",
        env = "REDWIRE_REDIS_TLS_CERT_FILE",
        requires = "redis_tls_key_file"
    )]
    pub cert_file: Option<PathBuf>,

    /// TLS to Redis: the PEM private key of --redis-tls-cert-file.
    #[arg(
        id = "redis_tls_key_file",
        long = "redis-tls-key-file",
        value_name = "PEM_FILE",
        env = "REDWIRE_REDIS_TLS_KEY_FILE",
        requires = "redis_tls_cert_file"
    )]
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files into the driver's certificates; None when no file is
    /// given (a `rediss://` URL then trusts the system's CAs).
    fn load(&self) -> Result<Option<TlsCertificates>> {
        if self.ca_file.is_none() && self.cert_file.is_none() {
            return Ok(None);
        }
        let read = |field: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| Error::invalid(field, format!("cannot read {}: {e}", path.display())))
        };
        let root_cert = self
            .ca_file
            .as_deref()
            .map(|path| read("redis_tls_ca_file", path))
            .transpose()?;
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read("redis_tls_cert_file", cert)?,
                client_key: read("redis_tls_key_file", key)?,
            }),
            _ => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// Where the shared connections go.
enum Shared {
    Standalone {
        conns: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
        seeds: Vec<String>,
    },
}

/// Handle to the configured Redis (standalone or cluster). Cheap to share by `Arc`.
pub struct Redis {
    shared: Shared,
    /// Where pub/sub connections go: the standalone Redis, or the cluster's seed
    /// nodes in turn (classic PUBLISH reaches every node of a cluster).
    pubsub_urls: Vec<String>,
    /// Which of `pubsub_urls` the next pub/sub connection tries first.
    pubsub_next: AtomicUsize,
    blocking: Pool<BlockingManager>,
    settings: RedisSettings,
    /// The certificates read from `settings.tls` when this handle was built.
    tls: Option<TlsCertificates>,
    /// Latencies, errors, blocking-pool use and reconnects.
    metrics: Arc<RedisMetrics>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Prepares connections to a standalone Redis at `url`. Connecting happens
    /// lazily, so Redwire starts (NOT_SERVING) even while Redis is down.
    pub fn standalone(url: &str, settings: RedisSettings) -> Result<Self> {
        let tls = settings.tls.load()?;
        let client = client(url, "redis_url", tls.as_ref())?;
        // No response timeout of the driver's: `Conn` bounds every command.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(settings.connect_timeout))
            // One retry per failed connect: a refusal (wrong certificate, wrong
            // password, nothing listening) reaches the caller with its own error
            // at once; the next command connects again.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conns = (0..SHARED_CONNECTIONS)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let blocking = BlockingManager::Standalone {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(None),
        };
        Ok(Self {
            pubsub_urls: vec![url.to_owned()],
            pubsub_next: AtomicUsize::new(0),
            shared: Shared::Standalone {
                conns,
                next: AtomicUsize::new(0),
            },
            blocking: build_blocking_pool(blocking, &settings)?,
            settings,
            tls,
            metrics: Arc::default(),
        })
    }

    /// Prepares connections to a Redis Cluster through its seed nodes.
    pub fn cluster(seeds: &[String], settings: RedisSettings) -> Result<Self> {
        let tls = settings.tls.load()?;
        let build = |response_timeout: Duration| {
            cluster_builder(seeds, &settings, tls.as_ref())
                .response_timeout(response_timeout)
                .build()
                .map_err(|e| Error::invalid("redis_cluster", e.to_string()))
        };
        let client = build(settings.command_timeout)?;
        // Blocking commands bound their own wait; the driver's timeout must not cut them.
        let blocking = BlockingManager::Cluster(build(Duration::from_secs(24 * 3600))?);
        Ok(Self {
            pubsub_urls: if seeds.is_empty() {
                return Err(Error::invalid(
                    "redis_cluster",
                    "needs at least one seed node",
                ));
            } else {
                seeds.to_vec()
            },
            pubsub_next: AtomicUsize::new(0),
            shared: Shared::Cluster {
                client: Box::new(client),
                conn: OnceCell::new(),
                seeds: seeds.to_vec(),
            },
            blocking: build_blocking_pool(blocking, &settings)?,
            settings,
            tls,
            metrics: Arc::default(),
        })
    }

    /// This handle, counting its commands in `metrics` (registered ones, so
    /// `/metrics` shows them).
    pub fn with_metrics(mut self, metrics: Arc<RedisMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Where this handle counts its commands, reconnects and blocking calls.
    pub fn metrics(&self) -> &Arc<RedisMetrics> {
        &self.metrics
    }

    /// True when talking to a Redis Cluster (multi-key calls must respect slots).
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared, Shared::Cluster { .. })
    }

    /// A shared connection for ordinary (non-blocking) commands.
    pub async fn conn(&self) -> Result<Conn> {
        match &self.shared {
            Shared::Standalone { conns, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % conns.len();
                Ok(Conn::shared(
                    Link::Managed(conns[i].clone()),
                    self.settings.command_timeout,
                    self.metrics.clone(),
                ))
            }
            Shared::Cluster { client, conn, .. } => {
                let conn = self.cluster_connection(client, conn).await?;
                Ok(Conn::shared(
                    Link::Cluster(conn.clone()),
                    self.settings.command_timeout,
                    self.metrics.clone(),
                ))
            }
        }
    }

    /// The shared cluster connection, connecting on first use.
    async fn cluster_connection<'a>(
        &self,
        client: &ClusterClient,
        conn: &'a OnceCell<ClusterConnection>,
    ) -> Result<&'a ClusterConnection> {
        let timeout = self.settings.connect_timeout;
        conn.get_or_try_init(|| async {
            tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| Error::Unavailable("timed out connecting to the cluster".into()))?
                .map_err(Error::from)
        })
        .await
    }

    /// A dedicated connection for one blocking command. Fails with
    /// RESOURCE_EXHAUSTED when every dedicated connection is busy.
    pub async fn blocking(&self) -> Result<BlockingConn> {
        match self.blocking.get().await {
            Ok(object) => Ok(BlockingConn {
                object: Some(object),
                settled: true,
                command_timeout: self.settings.command_timeout,
                _in_use: self.metrics.blocking_checked_out(),
                metrics: self.metrics.clone(),
            }),
            Err(PoolError::Timeout(managed::TimeoutType::Wait)) => Err({
                self.metrics.blocking_refused();
                Error::refused(
                    Reason::BlockingPoolExhausted,
                    format!(
                        "all {} connections for blocking calls are busy",
                        self.settings.blocking_pool_size
                    ),
                )
                .with("limit", self.settings.blocking_pool_size)
            }),
            Err(PoolError::Backend(e)) => Err(e.into()),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// A new connection in pub/sub mode (the caller subscribes and owns it). On a
    /// cluster each call starts at the next seed node and tries each in turn, so a
    /// reconnect after a node died or hung lands on another one.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        let first = self.pubsub_next.fetch_add(1, Ordering::Relaxed);
        let count = self.pubsub_urls.len();
        let mut failure = Error::Internal("no pub/sub node configured".into());
        for i in 0..count {
            let url = &self.pubsub_urls[(first + i) % count];
            match self.pubsub_at(url).await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => {
                    tracing::debug!(error = %e, "pub/sub connection failed; trying the next node");
                    failure = e;
                }
            }
        }
        Err(failure)
    }

    async fn pubsub_at(&self, url: &str) -> Result<redis::aio::PubSub> {
        let client = client(url, "redis_url", self.tls.as_ref())?;
        tokio::time::timeout(self.settings.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| Error::Unavailable("timed out opening a pub/sub connection".into()))?
            .map_err(Error::from)
    }

    /// On a cluster: a new RESP3 cluster connection whose pushes (sharded pub/sub
    /// messages, disconnect notices) arrive on the returned channel. redis-rs routes
    /// SSUBSCRIBE to each channel's shard and re-subscribes after topology changes.
    pub async fn sharded_pubsub(
        &self,
    ) -> Result<(
        redis::cluster_async::ClusterConnection,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    )> {
        let Shared::Cluster { seeds, .. } = &self.shared else {
            return Err(Error::Internal(
                "sharded pub/sub connections are for clusters".into(),
            ));
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = cluster_builder(seeds, &self.settings, self.tls.as_ref())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .response_timeout(self.settings.command_timeout)
            .push_sender(tx)
            .build()?;
        let conn =
            tokio::time::timeout(self.settings.connect_timeout, client.get_async_connection())
                .await
                .map_err(|_| Error::Unavailable("timed out connecting to the cluster".into()))??;
        Ok((conn, rx))
    }

    /// Checks that Redis answers. On a cluster: every slot has a master and every
    /// master answers (a master that died before a replica replaced it still owns
    /// its slots, and calls on them fail).
    pub async fn ping(&self) -> Result<()> {
        let timeout = self.settings.command_timeout;
        let outcome = tokio::time::timeout(timeout, async {
            if let Shared::Cluster { client, conn, .. } = &self.shared {
                let conn = self.cluster_connection(client, conn).await?;
                return ping_every_master(conn.clone()).await;
            }
            let reply: String = redis::cmd("PING")
                .query_async(&mut self.conn().await?)
                .await?;
            if reply == "PONG" {
                Ok(())
            } else {
                Err(Error::Unavailable(format!(
                    "unexpected PING reply {reply:?}"
                )))
            }
        });
        outcome
            .await
            .map_err(|_| Error::Unavailable("PING timed out".into()))?
    }

    /// In durable mode (`--durable-replicas N`), waits until N replicas have every
    /// write made so far on `conn` (Redis WAIT, for up to half the Redis timeout).
    /// Fewer in time: OUTCOME_UNKNOWN, since the write is on the master but a
    /// failover now could lose it. Without durable mode, returns at once.
    pub async fn await_replicas(&self, conn: &mut Conn) -> Result<()> {
        let wanted = self.settings.durable_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let wait = self.settings.command_timeout / 2;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let acked: i64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(wait_ms)
            .query_async(conn)
            .await?;
        if acked >= i64::from(wanted) {
            Ok(())
        } else {
            Err(Error::OutcomeUnknown(format!(
                "written on the master, but only {acked} of {wanted} replicas had it within \
                 {wait_ms} ms (--durable-replicas); a failover now could lose it"
            )))
        }
    }

    /// How long one ordinary command may take.
    pub fn command_timeout(&self) -> Duration {
        self.settings.command_timeout
    }
}

/// Slots of a Redis Cluster.
const CLUSTER_SLOTS: i64 = 16384;

/// Fails unless every cluster slot has a master (per `CLUSTER SLOTS`) and every
/// master answers PING.
async fn ping_every_master(mut conn: ClusterConnection) -> Result<()> {
    let unexpected = || Error::Internal("unexpected CLUSTER SLOTS reply".into());
    let ranges: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    let mut covered = 0;
    let mut masters = std::collections::BTreeSet::new();
    for range in &ranges {
        let Value::Array(parts) = range else {
            return Err(unexpected());
        };
        let [
            Value::Int(first),
            Value::Int(last),
            Value::Array(master),
            ..,
        ] = parts.as_slice()
        else {
            return Err(unexpected());
        };
        let [host, Value::Int(port), ..] = master.as_slice() else {
            return Err(unexpected());
        };
        let host: String = redis::from_redis_value_ref(host).map_err(|_| unexpected())?;
        let port = u16::try_from(*port).map_err(|_| unexpected())?;
        covered += last - first + 1;
        masters.insert((host, port));
    }
    if covered < CLUSTER_SLOTS {
        return Err(Error::Unavailable(format!(
            "{} of {CLUSTER_SLOTS} cluster slots have no master",
            CLUSTER_SLOTS - covered
        )));
    }
    let pings = masters.into_iter().map(|(host, port)| {
        let mut conn = conn.clone();
        async move {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            conn.route_command(redis::cmd("PING"), routing)
                .await
                .map_err(|e| {
                    Error::Unavailable(format!("cluster master {host}:{port} does not answer: {e}"))
                })
        }
    });
    futures::future::try_join_all(pings).await?;
    Ok(())
}

/// A cluster client builder for `seeds` with [`tcp_settings`], the connect timeout
/// and the configured certificates.
fn cluster_builder(
    seeds: &[String],
    settings: &RedisSettings,
    tls: Option<&TlsCertificates>,
) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .tcp_settings(tcp_settings())
        .connection_timeout(settings.connect_timeout);
    match tls {
        Some(certificates) => builder.certs(certificates.clone()),
        None => builder,
    }
}

fn build_blocking_pool(
    manager: BlockingManager,
    settings: &RedisSettings,
) -> Result<Pool<BlockingManager>> {
    Pool::builder(manager)
        .max_size(settings.blocking_pool_size.max(1))
        .wait_timeout(Some(Duration::from_millis(50)))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.command_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Internal(format!("building the blocking pool: {e}")))
}

/// Creates the dedicated connections of the blocking pool.
enum BlockingManager {
    Standalone {
        client: Client,
        config: AsyncConnectionConfig,
    },
    Cluster(ClusterClient),
}

impl managed::Manager for BlockingManager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        match self {
            BlockingManager::Standalone { client, config } => Ok(Conn::dedicated(Link::Dedicated(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            ))),
            BlockingManager::Cluster(client) => Ok(Conn::dedicated(Link::Cluster(
                client.get_async_connection().await?,
            ))),
        }
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<RedisError> {
        let _: String = redis::cmd("PING").query_async(conn).await?;
        Ok(())
    }
}

/// A dedicated connection checked out for a blocking command.
///
/// If the command does not finish cleanly (timed out, or the caller's future was
/// dropped because the client went away), the connection may still be blocked
/// inside Redis; dropping the guard then closes it rather than returning it to the
/// pool, and Redis ends the blocked command when it sees the socket close.
pub struct BlockingConn {
    object: Option<Object<BlockingManager>>,
    settled: bool,
    command_timeout: Duration,
    /// Counts the connection as in use until it drops.
    _in_use: GaugeGuard,
    metrics: Arc<RedisMetrics>,
}

impl BlockingConn {
    /// Runs `cmd`, which blocks inside Redis for at most `server_wait`.
    pub async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        server_wait: Duration,
    ) -> Result<T> {
        let object = self
            .object
            .as_mut()
            .ok_or_else(|| Error::Internal("blocking connection used after close".into()))?;
        self.settled = false;
        let limit = server_wait + self.command_timeout;
        let reply = tokio::time::timeout(limit, cmd.query_async::<T>(&mut **object))
            .await
            .map_err(|_| {
                Error::OutcomeUnknown("redis did not end a blocking command within its wait".into())
            })?;
        if let Err(e) = &reply {
            self.metrics.command_failed(e);
        }
        match reply {
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                Err(e.into())
            }
            other => {
                self.settled = true;
                Ok(other?)
            }
        }
    }
}

impl Drop for BlockingConn {
    fn drop(&mut self) {
        if let Some(object) = self.object.take()
            && !self.settled
        {
            // Detach from the pool; dropping the connection closes its socket.
            drop(Object::take(object));
        }
    }
}
