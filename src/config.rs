//! Runtime configuration: one [`Config`] parsed from command-line flags, each with a
//! `REDWIRE_<FLAG>` environment variable as fallback. `redwire --help` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::admin::AdminSettings;
use crate::connection::ConnectionLimits;
use crate::pubsub::PubSubSettings;
use crate::queue::QueueSettings;
use crate::redis::RedisSettings;
use crate::tls::TlsSettings;
use crate::validate::Limits;

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
    /// Address the gRPC server listens on. Beyond loopback only with --auth-file,
    /// --tls-client-ca or --insecure.
    #[arg(long, env = "REDWIRE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// The auth file (TOML): bearer tokens, stored as SHA-256 hashes, with their
    /// grants; reloaded when it changes and on SIGHUP (docs/AUTH.md). Without
    /// one every call is allowed.
    #[arg(long, env = "REDWIRE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Serve without --auth-file or --tls-client-ca on a non-loopback address:
    /// for a network where something else authenticates callers.
    #[arg(long, env = "REDWIRE_INSECURE")]
    pub insecure: bool,

    /// TLS on the gRPC listener.
    #[command(flatten)]
    pub tls: TlsSettings,

    /// A subcommand instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// URL of a standalone Redis (redis://host:port/db, rediss://, redis+unix:///path).
    /// When neither this nor --redis-cluster is set, Redwire starts its own redis-server.
    #[arg(long, env = "REDWIRE_REDIS_URL", conflicts_with = "redis_cluster")]
    pub redis_url: Option<String>,

    /// Comma-separated seed nodes of a Redis Cluster (redis://host:port,...). List
    /// several: classic pub/sub connects to one seed and moves to the next when it fails.
    #[arg(long, env = "REDWIRE_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,

    /// Redlock mode: comma-separated URLs of independent Redis servers (3 or 5) that
    /// the Lock service grants on by majority. Other services keep using the main Redis.
    #[arg(long, env = "REDWIRE_LOCK_REDLOCK", value_delimiter = ',')]
    pub lock_redlock: Vec<String>,

    /// Data directory of the embedded redis-server (used when no Redis is configured).
    #[arg(long, env = "REDWIRE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The redis-server program to run for the embedded Redis.
    #[arg(long, env = "REDWIRE_REDIS_SERVER_BIN", default_value = "redis-server")]
    pub redis_server_bin: PathBuf,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "REDWIRE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most bytes of replies that clients have not read yet, across all
    /// connections; a reply that does not fit ends RESOURCE_EXHAUSTED.
    #[arg(long, env = "REDWIRE_REPLY_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub reply_buffer_bytes: usize,

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

    /// How Redwire talks to Redis: timeouts, pools, TLS, durable writes.
    #[command(flatten, next_help_heading = "Redis")]
    pub redis: RedisSettings,

    /// Size limits on keys, values and batches.
    #[command(flatten, next_help_heading = "Request limits")]
    pub limits: Limits,

    /// Limits on client connections.
    #[command(flatten, next_help_heading = "Connections")]
    pub connections: ConnectionLimits,

    /// Queue leases and the background reaper.
    #[command(flatten, next_help_heading = "Queue")]
    pub queue: QueueSettings,

    /// Per-subscriber PubSub buffers.
    #[command(flatten, next_help_heading = "PubSub")]
    pub pubsub: PubSubSettings,

    /// The admin HTTP listener and the metrics it serves.
    #[command(flatten, next_help_heading = "Admin and metrics")]
    pub admin: AdminSettings,
}

/// What `redwire <subcommand>` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints a new token and the auth-file block that grants it (only the
    /// token's hash goes in the file; the token is shown once).
    MintToken {
        /// Who will hold it, for logs and audit lines.
        #[arg(long)]
        name: String,
        /// Services it may use (cache, lock, pubsub, queue, stream, or *).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        services: Vec<String>,
        /// Actions it may take (read, write, consume, admin, or *).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        actions: Vec<String>,
    },
    /// Asks a running Redwire's admin listener whether it is ready (or alive)
    /// and exits 0 if so, 1 if not: a container health check that needs no
    /// curl.
    Probe {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9464")]
        admin: SocketAddr,
        /// What to ask: /readyz (Redis answers, not shutting down) or /healthz.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// The operator CLI: queue, stream, pubsub, lock and cache commands sent
    /// to a running Redwire over gRPC.
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
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
        assert_eq!(config.redis.command_timeout, Duration::from_secs(2));
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
