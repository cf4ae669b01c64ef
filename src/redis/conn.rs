//! [`Conn`]: one connection type over every Redis topology, so commands and scripts
//! are written once and run on a standalone Redis or a Redis Cluster alike.
//!
//! A shared connection bounds every command by `--redis-timeout` itself: the
//! driver's response timeout does not cover a command that waits for the driver
//! to reconnect, and reconnecting to a Redis that accepts but never answers took
//! 19 s of retries (measured) where the timeout said 300 ms.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::time::Instant;

use crate::telemetry::metrics::RedisMetrics;

/// A Redis connection of any topology. Cloning is cheap: clones share the
/// underlying multiplexed socket(s).
#[derive(Clone)]
pub struct Conn {
    link: Link,
    /// How long one command may take; None for dedicated connections, whose
    /// blocking commands bound their own wait.
    limit: Option<Duration>,
    /// Where a shared connection's latencies and errors are counted.
    metrics: Option<Arc<RedisMetrics>>,
}

/// The socket(s) under a [`Conn`].
#[derive(Clone)]
pub(super) enum Link {
    /// A shared, self-reconnecting connection to a standalone Redis.
    Managed(ConnectionManager),
    /// A dedicated connection to a standalone Redis (blocking commands).
    Dedicated(MultiplexedConnection),
    /// A connection to a Redis Cluster (one multiplexed socket per node).
    Cluster(ClusterConnection),
}

impl Conn {
    /// A shared connection: every command ends within `limit`, and is
    /// counted in `metrics`.
    pub(super) fn shared(link: Link, limit: Duration, metrics: Arc<RedisMetrics>) -> Self {
        Self {
            link,
            limit: Some(limit),
            metrics: Some(metrics),
        }
    }

    /// A dedicated connection for blocking commands (no limit of its own;
    /// its guard, `BlockingConn`, counts its errors).
    pub(super) fn dedicated(link: Link) -> Self {
        Self {
            link,
            limit: None,
            metrics: None,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let call = match &mut self.link {
            Link::Managed(c) => c.req_packed_command(cmd),
            Link::Dedicated(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        };
        bounded(self.limit, self.metrics.as_deref(), call)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let call = match &mut self.link {
            Link::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        };
        bounded(self.limit, self.metrics.as_deref(), call)
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Managed(c) => c.get_db(),
            Link::Dedicated(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// A reply that may hold error replies: the driver hands those back as
/// values, and they become errors only when the caller converts them.
trait Reply {
    /// True when it holds an error reply. Looks no deeper than a
    /// transaction's replies, so a large reply is not walked.
    fn holds_error_reply(&self) -> bool;
}

impl Reply for Value {
    fn holds_error_reply(&self) -> bool {
        matches!(self, Value::ServerError(_))
    }
}

impl Reply for Vec<Value> {
    fn holds_error_reply(&self) -> bool {
        self.iter().any(|reply| match reply {
            // A transaction's EXEC answers with its commands' replies.
            Value::Array(replies) => replies.iter().any(Reply::holds_error_reply),
            reply => reply.holds_error_reply(),
        })
    }
}

/// `call`, failing with a timeout error (`is_timeout()`) after `limit`,
/// its round trip and any error counted in `metrics`.
fn bounded<'a, T: Reply + Send + 'a>(
    limit: Option<Duration>,
    metrics: Option<&'a RedisMetrics>,
    call: RedisFuture<'a, T>,
) -> RedisFuture<'a, T> {
    let Some(limit) = limit else {
        return call;
    };
    Box::pin(async move {
        let started = Instant::now();
        let reply = tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "--redis-timeout passed",
            )))
        });
        if let Some(metrics) = metrics {
            metrics.command_took(started.elapsed());
            match &reply {
                Err(e) => metrics.command_failed(e),
                Ok(value) if value.holds_error_reply() => metrics.error_replied(),
                Ok(_) => {}
            }
        }
        reply
    })
}
