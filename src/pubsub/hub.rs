//! The hub: the one Redis subscriber of this process. Every gRPC subscriber, and
//! the queue waker, register *interests* here; the hub keeps a reference count per
//! Redis channel or pattern, so Redis sees one SUBSCRIBE per channel however many
//! clients listen, and an UNSUBSCRIBE when the last one leaves.
//!
//! Connections: one classic pub/sub connection (channels, patterns, topic globs;
//! on a cluster it goes to one node, since classic PUBLISH reaches every node), and
//! on a cluster one RESP3 cluster connection for sharded channels (redis-rs routes
//! SSUBSCRIBE to each shard and re-subscribes after failovers and slot moves).
//!
//! A single task owns both connections and all state, so subscribe, unsubscribe and
//! dispatch never race. It hands each message to listeners without waiting
//! ([`Listener::deliver`] must not block; subscriber buffers are bounded). When the
//! classic connection drops (Redis restart, `CLIENT KILL TYPE pubsub`), the hub
//! reconnects with backoff, re-subscribes everything, and tells every listener that
//! messages may have been lost ([`Listener::lost`]). Sharded subscriptions that
//! Redis ends by itself (the shard's master stepped down in a failover, or the
//! slot moved) or that a lost node took with it are subscribed again, retried
//! until the new master answers, with the same gap. It also pings the classic
//! connection every [`LIVENESS_PING`]: a node that stops answering (hung, or
//! partitioned without a reset) is left the same way. On a cluster each reconnect
//! goes to the next seed node (`Redis::pubsub`), so the death of one node moves
//! classic subscriptions and wake-ups to another. [`Hub::is_live`] says whether the
//! classic connection is up; health reports PubSub NOT_SERVING while it is not.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Msg, PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::buffer::Delivered;
use super::topic::TopicPattern;
use crate::error::{Error, Result};
use crate::redis::keys;
use crate::redis::{REDIS_RETRY, Redis};

/// Receives what the hub dispatches. Implementations must return at once.
pub trait Listener: Send + Sync {
    /// A message for one of the listener's interests.
    fn deliver(&self, message: Delivered);
    /// The Redis subscription was re-established; messages may have been lost.
    fn lost(&self);
}

/// A Redis-level subscription target (full Redis names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// SUBSCRIBE to a channel.
    Channel(String),
    /// PSUBSCRIBE to a glob pattern.
    Pattern(String),
    /// SSUBSCRIBE to a sharded channel (clusters only).
    Sharded(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Channel(name) => write!(f, "channel {name}"),
            Self::Pattern(name) => write!(f, "pattern {name}"),
            Self::Sharded(name) => write!(f, "sharded channel {name}"),
        }
    }
}

/// How a message on a target is presented to one listener.
#[derive(Debug, Clone)]
pub enum Label {
    /// A plain channel subscription.
    Channel,
    /// A sharded channel subscription.
    Sharded,
    /// A Redis glob subscription, as the user wrote the pattern.
    Pattern(String),
    /// A topic subscription, as the user wrote it, filtered exactly.
    Topic(String, TopicPattern),
}

/// One thing a listener wants: a Redis target and how to label its messages.
#[derive(Debug, Clone)]
pub struct Interest {
    /// What to subscribe to in Redis.
    pub target: Target,
    /// How to present and filter its messages.
    pub label: Label,
}

enum Command {
    Subscribe {
        id: u64,
        listener: Arc<dyn Listener>,
        interests: Vec<Interest>,
        reply: oneshot::Sender<Result<()>>,
    },
    Unsubscribe {
        id: u64,
    },
}

/// How often the hub checks that its classic connection still answers.
pub const LIVENESS_PING: Duration = Duration::from_secs(1);

/// Handle to the hub task.
#[derive(Debug)]
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    live: Arc<AtomicBool>,
}

/// Keeps a subscription alive; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe { id: self.id });
    }
}

impl Hub {
    /// Starts the hub task; it runs until `shutdown`.
    pub fn start(
        redis: Arc<Redis>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let live = Arc::new(AtomicBool::new(false));
        let task = HubTask {
            live: live.clone(),
            ping_at: Instant::now() + LIVENESS_PING,
            sharded_pending: HashSet::new(),
            sharded_retry_at: Instant::now(),
            redis,
            commands: rx,
            listeners: HashMap::new(),
            interests: HashMap::new(),
            owned: HashMap::new(),
            classic: None,
            sharded: None,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(100),
            connected_once: false,
        };
        let handle = tokio::spawn(task.run(shutdown));
        (
            Arc::new(Self {
                commands: tx,
                next_id: AtomicU64::new(1),
                live,
            }),
            handle,
        )
    }

    /// True while the classic pub/sub connection is up (and answered its last ping).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Registers `interests` for `listener` and returns once Redis confirmed every
    /// subscription (so a publish after this returns reaches the listener).
    pub async fn subscribe(
        &self,
        listener: Arc<dyn Listener>,
        interests: Vec<Interest>,
    ) -> Result<Subscription> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                id,
                listener,
                interests,
                reply,
            })
            .map_err(|_| Error::ShuttingDown)?;
        let subscription = Subscription {
            id,
            commands: self.commands.clone(),
        };
        answer.await.map_err(|_| Error::ShuttingDown)??;
        Ok(subscription)
    }
}

struct Registered {
    id: u64,
    label: Label,
}

struct Classic {
    sink: PubSubSink,
    stream: PubSubStream,
}

struct Sharded {
    conn: ClusterConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

struct HubTask {
    redis: Arc<Redis>,
    commands: mpsc::UnboundedReceiver<Command>,
    listeners: HashMap<u64, Arc<dyn Listener>>,
    interests: HashMap<Target, Vec<Registered>>,
    owned: HashMap<u64, Vec<Target>>,
    classic: Option<Classic>,
    sharded: Option<Sharded>,
    retry_at: Instant,
    backoff: Duration,
    connected_once: bool,
    /// Mirrors `classic.is_some()` for [`Hub::is_live`].
    live: Arc<AtomicBool>,
    /// When the classic connection is pinged next.
    ping_at: Instant,
    /// Sharded channels (Redis names) to subscribe again: Redis dropped them (a
    /// failover or slot move) or the connection was lost.
    sharded_pending: HashSet<String>,
    /// When `sharded_pending` is tried next.
    sharded_retry_at: Instant,
}

impl HubTask {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if self.classic.is_none() && Instant::now() >= self.retry_at {
                self.connect_classic().await;
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                message = next_classic(&mut self.classic) => match message {
                    Some(message) => self.dispatch_classic(&message),
                    None => {
                        tracing::warn!("pub/sub connection lost; re-subscribing");
                        self.redis.metrics().reconnected("pubsub");
                        self.drop_classic();
                        self.retry_at = Instant::now();
                    }
                },
                () = tokio::time::sleep_until(self.ping_at), if self.classic.is_some() => {
                    self.ping_classic().await;
                }
                push = next_push(&mut self.sharded) => match push {
                    Some(push) => self.on_push(push),
                    None => {
                        tracing::warn!("sharded pub/sub connection lost; re-subscribing");
                        self.redis.metrics().reconnected("sharded_pubsub");
                        self.sharded = None;
                        self.resubscribe_all_sharded();
                    }
                },
                () = tokio::time::sleep_until(self.sharded_retry_at), if !self.sharded_pending.is_empty() => {
                    self.retry_sharded().await;
                }
                () = tokio::time::sleep_until(self.retry_at), if self.classic.is_none() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Opens the classic connection and subscribes every current target.
    async fn connect_classic(&mut self) {
        let result = async {
            let (mut sink, stream) = self.redis.pubsub().await?.split();
            let (channels, patterns) = self.classic_targets();
            let timeout = self.redis.command_timeout();
            if !channels.is_empty() {
                bounded(timeout, sink.subscribe(&channels)).await?;
            }
            if !patterns.is_empty() {
                bounded(timeout, sink.psubscribe(&patterns)).await?;
            }
            Ok::<_, Error>(Classic { sink, stream })
        }
        .await;
        match result {
            Ok(classic) => {
                self.classic = Some(classic);
                self.live.store(true, Ordering::Relaxed);
                self.ping_at = Instant::now() + LIVENESS_PING;
                self.backoff = Duration::from_millis(100);
                if self.connected_once {
                    tracing::info!("pub/sub connection re-established");
                    self.tell_lost(|t| !matches!(t, Target::Sharded(_)));
                }
                self.connected_once = true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "pub/sub connection failed");
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Leaves the classic connection; the run loop reconnects (to the next node).
    fn drop_classic(&mut self) {
        self.classic = None;
        self.live.store(false, Ordering::Relaxed);
    }

    /// Pings the classic connection; one that does not answer in time is left.
    async fn ping_classic(&mut self) {
        self.ping_at = Instant::now() + LIVENESS_PING;
        let timeout = self.redis.command_timeout();
        let Some(classic) = self.classic.as_mut() else {
            return;
        };
        if let Err(e) = bounded(timeout, classic.sink.ping::<redis::Value>()).await {
            tracing::warn!(error = %e, "pub/sub connection does not answer; reconnecting");
            self.drop_classic();
            self.retry_at = Instant::now();
        }
    }

    fn classic_targets(&self) -> (Vec<String>, Vec<String>) {
        let mut channels = Vec::new();
        let mut patterns = Vec::new();
        for target in self.interests.keys() {
            match target {
                Target::Channel(c) => channels.push(c.clone()),
                Target::Pattern(p) => patterns.push(p.clone()),
                Target::Sharded(_) => {}
            }
        }
        (channels, patterns)
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                id,
                listener,
                interests,
                reply,
            } => {
                let result = self.subscribe(id, listener, interests).await;
                if result.is_err() {
                    self.unsubscribe(id).await;
                }
                let _ = reply.send(result);
            }
            Command::Unsubscribe { id } => self.unsubscribe(id).await,
        }
    }

    async fn subscribe(
        &mut self,
        id: u64,
        listener: Arc<dyn Listener>,
        interests: Vec<Interest>,
    ) -> Result<()> {
        self.listeners.insert(id, listener);
        let mut new_targets = Vec::new();
        for interest in interests {
            let registered = self.interests.entry(interest.target.clone()).or_default();
            if registered.is_empty() {
                new_targets.push(interest.target.clone());
            }
            registered.push(Registered {
                id,
                label: interest.label,
            });
            self.owned.entry(id).or_default().push(interest.target);
        }
        if self.classic.is_none() {
            self.connect_classic().await;
        }
        let classic = self
            .classic
            .as_mut()
            .ok_or_else(|| Error::Unavailable("the pub/sub connection to Redis is down".into()))?;
        let (mut channels, mut patterns, mut sharded) = (Vec::new(), Vec::new(), Vec::new());
        for target in &new_targets {
            match target {
                Target::Channel(name) => channels.push(name),
                Target::Pattern(name) => patterns.push(name),
                Target::Sharded(name) => sharded.push(name),
            }
        }
        let timeout = self.redis.command_timeout();
        let classic_result = async {
            if !channels.is_empty() {
                bounded(timeout, classic.sink.subscribe(&channels)).await?;
            }
            if !patterns.is_empty() {
                bounded(timeout, classic.sink.psubscribe(&patterns)).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = classic_result {
            // Unanswered or failed: the connection is not to be trusted; the hub
            // reconnects and re-subscribes every target (with a gap event).
            self.drop_classic();
            return Err(e);
        }
        if !sharded.is_empty() {
            if self.sharded.is_none() {
                let (conn, pushes) = self.redis.sharded_pubsub().await?;
                self.sharded = Some(Sharded { conn, pushes });
            }
            let timeout = self.redis.command_timeout();
            for channel in sharded {
                self.ssubscribe(channel, timeout).await?;
            }
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, id: u64) {
        self.listeners.remove(&id);
        let Some(targets) = self.owned.remove(&id) else {
            return;
        };
        let timeout = self.redis.command_timeout();
        for target in targets {
            let Some(registered) = self.interests.get_mut(&target) else {
                continue;
            };
            registered.retain(|r| r.id != id);
            if !registered.is_empty() {
                continue;
            }
            self.interests.remove(&target);
            let result = match (&target, self.classic.as_mut(), self.sharded.as_mut()) {
                (Target::Channel(c), Some(classic), _) => {
                    bounded(timeout, classic.sink.unsubscribe(c)).await
                }
                (Target::Pattern(p), Some(classic), _) => {
                    bounded(timeout, classic.sink.punsubscribe(p)).await
                }
                (Target::Sharded(s), _, Some(shard)) => {
                    shard.conn.sunsubscribe(s).await.map_err(Error::from)
                }
                // Not connected: nothing to undo in Redis.
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %target, "unsubscribe failed");
                if !matches!(target, Target::Sharded(_)) {
                    // Unanswered: reconnect rather than trust the connection.
                    self.drop_classic();
                }
            }
        }
    }

    fn dispatch_classic(&self, message: &Msg) {
        let channel: String = message.get_channel().unwrap_or_default();
        let target = match message.get_pattern::<Option<String>>().ok().flatten() {
            Some(pattern) => Target::Pattern(pattern),
            None => Target::Channel(channel.clone()),
        };
        self.dispatch(&target, &channel, message.get_payload_bytes());
    }

    fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => {
                if let Some(message) = Msg::from_push_info(push) {
                    let channel: String = message.get_channel().unwrap_or_default();
                    self.dispatch(
                        &Target::Sharded(channel.clone()),
                        &channel,
                        message.get_payload_bytes(),
                    );
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("sharded pub/sub connection to a node lost; re-subscribing");
                self.redis.metrics().reconnected("sharded_pubsub");
                self.resubscribe_all_sharded();
            }
            // Redis ends sharded subscriptions itself when their shard's master
            // steps down or the slot moves; ours (an UNSUBSCRIBE we sent) have
            // already left `interests`.
            PushKind::SUnsubscribe => {
                let channel = push_channel(&push);
                if let Some(channel) = channel
                    && self
                        .interests
                        .contains_key(&Target::Sharded(channel.clone()))
                {
                    tracing::info!(%channel, "redis ended a sharded subscription (failover or slot move); re-subscribing");
                    self.tell_lost(|t| *t == Target::Sharded(channel.clone()));
                    self.sharded_pending.insert(channel);
                    self.sharded_retry_at = Instant::now();
                }
            }
            _ => {}
        }
    }

    /// Marks every sharded channel for re-subscription and tells their listeners
    /// that messages may have been lost.
    fn resubscribe_all_sharded(&mut self) {
        self.tell_lost(|t| matches!(t, Target::Sharded(_)));
        self.sharded_pending = self
            .interests
            .keys()
            .filter_map(|t| match t {
                Target::Sharded(channel) => Some(channel.clone()),
                _ => None,
            })
            .collect();
        self.sharded_retry_at = Instant::now();
    }

    /// Subscribes the pending sharded channels again (reconnecting if needed);
    /// what fails is retried shortly: a failover takes a few seconds to settle.
    async fn retry_sharded(&mut self) {
        self.sharded_retry_at = Instant::now() + REDIS_RETRY;
        if self.sharded.is_none() {
            match self.redis.sharded_pubsub().await {
                Ok((conn, pushes)) => self.sharded = Some(Sharded { conn, pushes }),
                Err(e) => {
                    tracing::debug!(error = %e, "sharded pub/sub connection failed");
                    return;
                }
            }
        }
        let timeout = self.redis.command_timeout();
        let pending: Vec<String> = self.sharded_pending.iter().cloned().collect();
        for channel in pending {
            if !self
                .interests
                .contains_key(&Target::Sharded(channel.clone()))
            {
                self.sharded_pending.remove(&channel);
                continue;
            }
            match self.ssubscribe(&channel, timeout).await {
                Ok(()) => {
                    self.sharded_pending.remove(&channel);
                }
                Err(e) => {
                    tracing::debug!(error = %e, %channel, "sharded re-subscribe failed; retrying")
                }
            }
        }
    }

    /// SSUBSCRIBEs `channel` on the sharded connection.
    async fn ssubscribe(&mut self, channel: &str, timeout: Duration) -> Result<()> {
        let Some(shard) = self.sharded.as_mut() else {
            return Err(Error::Unavailable("no sharded pub/sub connection".into()));
        };
        bounded(timeout, shard.conn.ssubscribe(channel)).await
    }

    /// Tells the listeners that own a target matching `affected` that messages
    /// may have been lost.
    fn tell_lost(&self, affected: impl Fn(&Target) -> bool) {
        for (id, listener) in &self.listeners {
            if self
                .owned
                .get(id)
                .is_some_and(|targets| targets.iter().any(&affected))
            {
                listener.lost();
            }
        }
    }

    fn dispatch(&self, target: &Target, redis_channel: &str, payload: &[u8]) {
        let Some(registered) = self.interests.get(target) else {
            return;
        };
        let channel = keys::user_channel(redis_channel);
        for r in registered {
            let Some(listener) = self.listeners.get(&r.id) else {
                continue;
            };
            let (pattern, topic, sharded) = match &r.label {
                Label::Channel => (String::new(), String::new(), false),
                Label::Sharded => (String::new(), String::new(), true),
                Label::Pattern(p) => (p.clone(), String::new(), false),
                Label::Topic(t, matcher) => {
                    if !matcher.matches(channel) {
                        continue;
                    }
                    (String::new(), t.clone(), false)
                }
            };
            listener.deliver(Delivered {
                channel: channel.to_owned(),
                pattern,
                topic,
                payload: payload.to_vec(),
                sharded,
            });
        }
    }
}

async fn next_classic(classic: &mut Option<Classic>) -> Option<Msg> {
    match classic {
        Some(c) => c.stream.next().await,
        None => std::future::pending().await,
    }
}

/// The channel a subscribe or unsubscribe push is about.
fn push_channel(push: &PushInfo) -> Option<String> {
    push.data
        .first()
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

async fn next_push(sharded: &mut Option<Sharded>) -> Option<PushInfo> {
    match sharded {
        Some(s) => s.pushes.recv().await,
        None => std::future::pending().await,
    }
}

/// A command on the classic pub/sub connection, bounded by the Redis timeout:
/// that connection has no response timeout of its own, and the hub is one task,
/// so one unanswered SUBSCRIBE would stall every subscriber and wake-up.
async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Unavailable("redis did not answer a pub/sub command in time".into()))?
        .map_err(Error::from)
}
