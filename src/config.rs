//! Runtime configuration: one [`Config`] parsed from command-line flags, each with a
//! `REDWIRE_<FLAG>` environment variable as fallback. `redwire --help` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Every knob of a Redwire process.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "redwire",
    version,
    // A flag given twice takes its last value (scripts append overrides).
    args_override_self = true,
    about = "gRPC Cache, Lock, Queue, PubSub and Stream services on Redis"
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "REDWIRE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// URL of a standalone Redis (redis://host:port/db, rediss://, redis+unix:///path).
    /// When neither this nor --redis-cluster is set, Redwire starts its own redis-server.
    #[arg(long, env = "REDWIRE_REDIS_URL", conflicts_with = "redis_cluster")]
    pub redis_url: Option<String>,

    /// Durable mode: a write (enqueue, ack, nack, lease change, stream append, lock
    /// grant) is acknowledged only once this many replicas of its master have it
    /// (Redis WAIT, up to half of --redis-timeout); 0 acknowledges on the master.
    #[arg(long, env = "REDWIRE_DURABLE_REPLICAS", default_value_t = 0)]
    pub durable_replicas: u32,

    /// Comma-separated seed nodes of a Redis Cluster (redis://host:port,...). List
    /// several: classic pub/sub connects to one seed and moves to the next when it fails.
    #[arg(long, env = "REDWIRE_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,

    /// Redlock mode: comma-separated URLs of independent Redis servers (3 or 5) that
    /// the Lock service grants on by majority. Other services keep using the main Redis.
    #[arg(long, env = "REDWIRE_LOCK_REDLOCK", value_delimiter = ',')]
    pub lock_redlock: Vec<String>,

    /// TLS to Redis (`rediss://` URLs, standalone, cluster and Redlock nodes): a PEM
    /// file of CA certificates to trust instead of the system's.
    #[arg(long, env = "REDWIRE_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// TLS to Redis: a PEM client certificate for Redis servers that require one
    /// (`tls-auth-clients yes`); needs --redis-tls-key-file.
    #[arg(
        long,
        env = "REDWIRE_REDIS_TLS_CERT_FILE",
        requires = "redis_tls_key_file"
    )]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// TLS to Redis: the PEM private key of --redis-tls-cert-file.
    #[arg(
        long,
        env = "REDWIRE_REDIS_TLS_KEY_FILE",
        requires = "redis_tls_cert_file"
    )]
    pub redis_tls_key_file: Option<PathBuf>,

    /// Data directory of the embedded redis-server (used when no Redis is configured).
    #[arg(long, env = "REDWIRE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The redis-server program to run for the embedded Redis.
    #[arg(long, env = "REDWIRE_REDIS_SERVER_BIN", default_value = "redis-server")]
    pub redis_server_bin: PathBuf,

    /// Most dedicated Redis connections for blocking commands (ListPop with a wait).
    /// When all are busy, further blocking calls fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDWIRE_BLOCKING_POOL_SIZE", default_value_t = 64)]
    pub blocking_pool_size: usize,

    /// How long a Redis command may take before the call fails with UNAVAILABLE.
    #[arg(long, env = "REDWIRE_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// How long to wait for a Redis connection (pool checkout or connect).
    #[arg(long, env = "REDWIRE_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "REDWIRE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most concurrent gRPC streams (calls) on one HTTP/2 connection; long-lived
    /// Consume and subscription streams count too.
    #[arg(long, env = "REDWIRE_MAX_CONCURRENT_STREAMS", default_value_t = 4096)]
    pub max_concurrent_streams: u32,

    /// Most open client connections; one more is closed at once.
    #[arg(long, env = "REDWIRE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// How long a new connection may take to send its HTTP/2 preface before it
    /// is closed.
    #[arg(long, env = "REDWIRE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// How long a connection may stay open with no call in flight (gRPC's
    /// MAX_CONNECTION_IDLE); clients reconnect on their next call.
    #[arg(long, env = "REDWIRE_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How long a client connection may be silent before an HTTP/2 ping (and TCP
    /// keepalive) checks that its peer is still there.
    #[arg(long, env = "REDWIRE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a ping may go unanswered before the connection (and every stream
    /// on it) is closed: a peer that vanished without closing is found within
    /// interval + timeout.
    #[arg(long, env = "REDWIRE_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,

    /// Most bytes of replies that clients have not read yet, across all
    /// connections; a reply that does not fit ends RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDWIRE_REPLY_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub reply_buffer_bytes: usize,

    /// Largest key (or hash field name) accepted, in bytes.
    #[arg(long, env = "REDWIRE_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,

    /// Largest value (or member, or item) accepted, in bytes.
    #[arg(long, env = "REDWIRE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,

    /// Most keys, fields, members or values in one request.
    #[arg(long, env = "REDWIRE_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,

    /// Lease length of a queue delivery when the consumer does not choose one.
    #[arg(long, env = "REDWIRE_QUEUE_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub queue_lease: Duration,

    /// How often the background reaper expires leases and promotes delayed jobs.
    #[arg(long, env = "REDWIRE_QUEUE_REAP_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub queue_reap_interval: Duration,

    /// Default and largest per-subscriber PubSub buffer, in messages.
    #[arg(long, env = "REDWIRE_PUBSUB_BUFFER_MESSAGES", default_value_t = 1024)]
    pub pubsub_buffer_messages: usize,

    /// Default and largest per-subscriber PubSub buffer, in payload bytes.
    #[arg(long, env = "REDWIRE_PUBSUB_BUFFER_BYTES", default_value_t = 1024 * 1024)]
    pub pubsub_buffer_bytes: usize,

    /// Heartbeat interval of idle server streams (Subscribe, Tail, ReadGroup), below
    /// Envoy's 5-minute idle timeout.
    #[arg(long, env = "REDWIRE_HEARTBEAT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// How often the health checker pings Redis.
    #[arg(long, env = "REDWIRE_HEALTH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// How long shutdown waits for in-flight calls before exiting anyway.
    #[arg(long, env = "REDWIRE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Threads that serve calls; 0 means one per CPU core. On a machine where
    /// Redwire shares two or fewer cores with redis-server, 1 is faster (fewer
    /// cross-thread wake-ups; see docs/BENCHMARKS.md).
    #[arg(long, env = "REDWIRE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Log format.
    #[arg(long, env = "REDWIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax (RUST_LOG is honoured too).
    #[arg(long, env = "REDWIRE_LOG", default_value = "info")]
    pub log: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where Redwire finds Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One standalone Redis at this URL.
    Standalone(String),
    /// A Redis Cluster reached through these seed nodes.
    Cluster(Vec<String>),
    /// Start and supervise a redis-server child.
    Embedded,
}

impl Config {
    /// Parses a config from explicit arguments (the first is the program name),
    /// still honouring the environment. Tests use it to build configs.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }

    /// Which Redis this config points at.
    pub fn redis_target(&self) -> RedisTarget {
        if !self.redis_cluster.is_empty() {
            RedisTarget::Cluster(self.redis_cluster.clone())
        } else if let Some(url) = &self.redis_url {
            RedisTarget::Standalone(url.clone())
        } else {
            RedisTarget::Embedded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_select_the_embedded_redis() {
        let config = Config::from_args(["redwire"]).expect("defaults parse");
        assert_eq!(config.listen, "127.0.0.1:50051".parse().expect("addr"));
        assert_eq!(config.redis_target(), RedisTarget::Embedded);
        assert_eq!(config.redis_timeout, Duration::from_secs(2));
    }

    #[test]
    fn cluster_seeds_are_comma_separated() {
        let config = Config::from_args(["redwire", "--redis-cluster", "redis://a:1,redis://b:2"])
            .expect("parse");
        assert_eq!(
            config.redis_target(),
            RedisTarget::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
    }

    #[test]
    fn url_and_cluster_conflict() {
        let result = Config::from_args([
            "redwire",
            "--redis-url",
            "redis://a:1",
            "--redis-cluster",
            "redis://b:2",
        ]);
        assert!(result.is_err());
    }
}
