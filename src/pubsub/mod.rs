//! `redwire.v1.PubSub`: publish, and subscription streams fed by the process's one
//! Redis subscriber (the [`hub`]).
//!
//! Each Subscribe call registers its channels, patterns, sharded channels and topic
//! patterns with the hub, waits until Redis confirmed them all, sends `subscribed`,
//! and then forwards what arrives in its bounded [`buffer`] (the slow-subscriber
//! policy lives there), with heartbeats on idle streams. The stream task has three
//! exits: the client goes away, the buffer overflows (Disconnect policy), or the
//! server shuts down (UNAVAILABLE).
//!
//! Redis names: channels and patterns are `rw:ps:<name>`, sharded channels
//! `rw:pss:<name>`. On a standalone Redis, sharded channels are classic channels in
//! that separate namespace (sharding only matters on a cluster).
//!
//! Each open subscription is counted in this instance's [`directory`], which
//! `ListChannels` reads.

pub mod buffer;
pub mod directory;
pub mod envelope;
pub mod hub;
mod topic;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use self::buffer::{Buffer, Next, SlowPolicy};
use self::directory::{Directory, Membership};
use self::hub::{Hub, Interest, Label, Target};
use self::topic::TopicPattern;
use crate::auth::Scope;
use crate::error::{Error, Reason, Result};
use crate::heartbeat;
use crate::page::{self, Page};
use crate::proto::pub_sub_server::PubSub;
use crate::proto::*;
use crate::redis::Redis;
use crate::redis::keys::{self, pubsub_channel};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::Producer;
use crate::validate::Limits;

/// Longest channel, pattern or topic name.
const MAX_CHANNEL_BYTES: usize = 256;
/// Events queued between a subscriber's task and its HTTP/2 stream; the bounded
/// buffer in front of it holds the rest.
const STREAM_CHANNEL: usize = 16;

/// PubSub settings from the config.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PubSubSettings {
    /// Default and largest per-subscriber PubSub buffer, in messages.
    #[arg(
        long = "pubsub-buffer-messages",
        value_name = "PUBSUB_BUFFER_MESSAGES",
        env = "REDWIRE_PUBSUB_BUFFER_MESSAGES",
        default_value_t = 1024
    )]
    pub buffer_messages: usize,

    /// Default and largest per-subscriber PubSub buffer, in payload bytes.
    #[arg(long = "pubsub-buffer-bytes", value_name = "PUBSUB_BUFFER_BYTES", env = "REDWIRE_PUBSUB_BUFFER_BYTES", default_value_t = 1024 * 1024)]
    pub buffer_bytes: usize,
}

/// The PubSub service.
#[derive(Debug, Clone)]
pub struct PubSubService {
    redis: Arc<Redis>,
    hub: Arc<Hub>,
    limits: Limits,
    settings: PubSubSettings,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    directory: Arc<Directory>,
}

impl PubSubService {
    /// A PubSub service publishing through `redis` and subscribing through `hub`;
    /// subscriptions that ask for no heartbeat interval get `heartbeat`.
    pub fn new(
        redis: Arc<Redis>,
        hub: Arc<Hub>,
        limits: Limits,
        settings: PubSubSettings,
        heartbeat: Duration,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            redis,
            hub,
            limits,
            settings,
            heartbeat,
            metrics,
            shutdown,
            directory: Arc::default(),
        }
    }

    /// Turns a request into hub interests in the call's tenant (validating
    /// every name, and checking the grants cover it).
    fn interests(&self, scope: &Scope, req: &SubscribeRequest) -> Result<Vec<Interest>> {
        let tenant = scope.tenant();
        let total =
            req.channels.len() + req.patterns.len() + req.sharded_channels.len() + req.topics.len();
        if total == 0 {
            return Err(Error::invalid(
                "channels",
                "subscribe to at least one channel, pattern, sharded channel or topic",
            ));
        }
        if total > self.limits.max_batch {
            return Err(Error::invalid(
                "channels",
                format!(
                    "{total} subscriptions in one call; the limit is {}",
                    self.limits.max_batch
                ),
            ));
        }
        let mut interests = Vec::with_capacity(total);
        for (i, c) in req.channels.iter().enumerate() {
            let field = format!("channels[{i}]");
            channel_name(&field, c)?;
            scope.allow(&field, c)?;
            interests.push(Interest {
                target: Target::Channel(pubsub_channel(tenant, c, false)),
                label: Label::Channel,
            });
        }
        for (i, p) in req.patterns.iter().enumerate() {
            let field = format!("patterns[{i}]");
            glob_pattern(&field, p)?;
            scope.allow_pattern(&field, p)?;
            interests.push(Interest {
                target: Target::Pattern(pubsub_channel(tenant, p, false)),
                label: Label::Pattern(p.clone()),
            });
        }
        for (i, s) in req.sharded_channels.iter().enumerate() {
            let field = format!("sharded_channels[{i}]");
            channel_name(&field, s)?;
            scope.allow(&field, s)?;
            let name = pubsub_channel(tenant, s, true);
            interests.push(Interest {
                target: if self.redis.is_cluster() {
                    Target::Sharded(name)
                } else {
                    Target::Channel(name)
                },
                label: Label::Sharded,
            });
        }
        for (i, t) in req.topics.iter().enumerate() {
            let field = format!("topics[{i}]");
            topic_pattern(&field, t)?;
            let matcher = TopicPattern::parse(t);
            if matcher.is_exact() {
                scope.allow(&field, t)?;
            } else {
                scope.allow_pattern(&field, t)?;
            }
            let glob = pubsub_channel(tenant, &matcher.glob(), false);
            interests.push(Interest {
                target: if matcher.is_exact() {
                    Target::Channel(glob)
                } else {
                    Target::Pattern(glob)
                },
                label: Label::Topic(t.clone(), matcher),
            });
        }
        Ok(interests)
    }

    fn buffer(&self, req: &SubscribeRequest) -> Result<Buffer> {
        let policy = match SlowSubscriberPolicy::try_from(req.slow_policy) {
            Ok(SlowSubscriberPolicy::Unspecified | SlowSubscriberPolicy::DropOldest) => {
                SlowPolicy::DropOldest
            }
            Ok(SlowSubscriberPolicy::Disconnect) => SlowPolicy::Disconnect,
            Err(_) => {
                return Err(Error::invalid(
                    "slow_policy",
                    format!("unknown policy {}", req.slow_policy),
                ));
            }
        };
        let pick = |asked: u32, max: usize, field: &str| match usize::try_from(asked)
            .unwrap_or(usize::MAX)
        {
            0 => Ok(max),
            n if n <= max => Ok(n),
            n => Err(Error::invalid(
                field,
                format!("is {n}; the server allows at most {max}"),
            )),
        };
        Ok(Buffer::new(
            pick(
                req.buffer_messages,
                self.settings.buffer_messages,
                "buffer_messages",
            )?,
            pick(req.buffer_bytes, self.settings.buffer_bytes, "buffer_bytes")?,
            policy,
        ))
    }
}

fn check_chars(field: &str, value: &str, allowed: impl Fn(char) -> bool, what: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_CHANNEL_BYTES {
        return Err(Error::invalid(
            field,
            format!("is longer than {MAX_CHANNEL_BYTES} bytes"),
        ));
    }
    match value.chars().find(|c| !allowed(*c)) {
        Some(bad) => Err(Error::invalid(
            field,
            format!("may only contain {what} (found {bad:?})"),
        )),
        None => Ok(()),
    }
}

fn channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@')
}

/// A channel name: letters, digits and `-_.:/@`.
fn channel_name(field: &str, value: &str) -> Result<()> {
    check_chars(field, value, channel_char, "letters, digits and -_.:/@")
}

/// A Redis glob over channel names.
fn glob_pattern(field: &str, value: &str) -> Result<()> {
    check_chars(
        field,
        value,
        |c| channel_char(c) || matches!(c, '*' | '?' | '[' | ']' | '^' | '\\'),
        "letters, digits, -_.:/@ and the glob characters *?[]^\\",
    )
}

/// A topic pattern: `.`-separated words, each `*`, `#` or literal.
fn topic_pattern(field: &str, value: &str) -> Result<()> {
    check_chars(
        field,
        value,
        |c| channel_char(c) || matches!(c, '*' | '#'),
        "letters, digits, -_.:/@ and the wildcards * and #",
    )?;
    for word in value.split('.') {
        let wildcard = word == "*" || word == "#";
        if word.is_empty() || (!wildcard && word.contains(['*', '#'])) {
            return Err(Error::invalid(
                field,
                format!("word {word:?}: each `.`-separated word is `*`, `#` or a literal"),
            ));
        }
    }
    Ok(())
}

impl hub::Listener for Buffer {
    fn deliver(&self, message: buffer::Delivered) {
        self.push(message);
    }

    fn lost(&self) {
        self.mark_lost();
    }
}

/// The stream type of Subscribe.
pub type SubscribeStream = ReceiverStream<std::result::Result<SubscribeResponse, Status>>;

#[tonic::async_trait]
impl PubSub for PubSubService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let scope = Scope::of(&request);
        let producer = Producer::of(&request);
        let req = request.into_inner();
        channel_name("channel", &req.channel)?;
        scope.allow("channel", &req.channel)?;
        self.limits.value("payload", &req.payload)?;
        let send = producer.send(&req.channel, 1, None);
        let message = envelope::seal(req.payload, send.context.as_ref());
        let command = if req.sharded && self.redis.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let receivers: i64 = async {
            redis::cmd(command)
                .arg(pubsub_channel(scope.tenant(), &req.channel, req.sharded))
                .arg(&message)
                .query_async(&mut self.redis.conn().await?)
                .await
                .map_err(Error::from)
        }
        .instrument(send.span)
        .await?;
        Ok(Response::new(PublishResponse { receivers }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let interests = self.interests(&scope, &req)?;
        let heartbeat = heartbeat::interval(
            "heartbeat_interval",
            req.heartbeat_interval.as_ref(),
            self.heartbeat,
        )?;
        let buffer = Arc::new(self.buffer(&req)?);
        let subscription = self.hub.subscribe(buffer.clone(), interests).await?;
        let membership = self.directory.join(directory_names(&scope, &req));

        let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
        let confirmed = SubscribeResponse {
            sequence: 1,
            event: Some(subscribe_response::Event::Subscribed(Subscribed {
                channels: req.channels,
                patterns: req.patterns,
                sharded_channels: req.sharded_channels,
                topics: req.topics,
            })),
        };
        tx.send(Ok(confirmed))
            .await
            .map_err(|_| Error::Internal("subscription stream closed at once".into()))?;
        let shutdown = self.shutdown.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _counted = metrics.subscriber();
            forward(buffer, tx, heartbeat, &metrics, &membership, shutdown).await;
            drop(subscription);
            drop(membership);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_channels(
        &self,
        request: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let page = Page::of(&self.limits, req.page_size, &req.page_token)?;
        let (listed, more) = self.directory.page(
            |qualified| scope.listed(qualified),
            page.after.as_deref(),
            page.size,
        );
        let next_page_token =
            page::next_token(listed.last().map(|(position, _)| position.as_str()), more);
        Ok(Response::new(ListChannelsResponse {
            channels: listed.into_iter().map(|(_, activity)| activity).collect(),
            next_page_token,
        }))
    }
}

/// The names of a subscription, qualified by the caller's tenant, for the
/// directory.
fn directory_names(scope: &Scope, req: &SubscribeRequest) -> Vec<(String, SubscriptionKind)> {
    let kinds = [
        (&req.channels, SubscriptionKind::Channel),
        (&req.patterns, SubscriptionKind::Pattern),
        (&req.sharded_channels, SubscriptionKind::ShardedChannel),
        (&req.topics, SubscriptionKind::Topic),
    ];
    kinds
        .into_iter()
        .flat_map(|(names, kind)| {
            names
                .iter()
                .map(move |name| (keys::qualify(scope.tenant(), name).into_owned(), kind))
        })
        .collect()
}

/// Moves events from the buffer to the gRPC stream until one of the three exits.
async fn forward(
    buffer: Arc<Buffer>,
    tx: mpsc::Sender<std::result::Result<SubscribeResponse, Status>>,
    heartbeat: Duration,
    metrics: &Metrics,
    membership: &Membership,
    shutdown: CancellationToken,
) {
    let mut sequence = 1;
    let mut idle_until = Instant::now() + heartbeat;
    loop {
        let event = tokio::select! {
            next = buffer.next() => match next {
                Next::Message(m) => {
                    metrics.pubsub_delivered();
                    let (payload, trace_context) = envelope::open(m.payload);
                    subscribe_response::Event::Message(Message {
                    channel: m.channel,
                    pattern: m.pattern,
                    topic: m.topic,
                    payload,
                    sharded: m.sharded,
                    trace_context,
                })
                }
                Next::Gap { dropped, reason } => {
                    metrics.pubsub_dropped(dropped);
                    membership.dropped(dropped);
                    subscribe_response::Event::Gap(Gap {
                        dropped,
                        reason: reason.to_owned(),
                    })
                }
                Next::Overflow => {
                    metrics.pubsub_disconnected();
                    let status = Error::refused(
                        Reason::SubscriberTooSlow,
                        "subscriber too slow: its buffer overflowed (slow_policy DISCONNECT)",
                    );
                    let _ = tx.send(Err(status.into())).await;
                    return;
                }
            },
            () = tokio::time::sleep_until(idle_until) => {
                subscribe_response::Event::Heartbeat(heartbeat::now())
            }
            () = tx.closed() => return,
            () = shutdown.cancelled() => {
                let _ = tx.send(Err(Error::ShuttingDown.into())).await;
                return;
            }
        };
        sequence += 1;
        let sent = tokio::select! {
            sent = tx.send(Ok(SubscribeResponse { sequence, event: Some(event) })) => sent.is_ok(),
            () = shutdown.cancelled() => false,
        };
        if !sent {
            return;
        }
        idle_until = Instant::now() + heartbeat;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_by_kind() {
        assert!(channel_name("c", "orders/eu@v1:created").is_ok());
        assert!(channel_name("c", "orders*").is_err());
        assert!(channel_name("c", "a{b}").is_err());
        assert!(glob_pattern("p", "orders.[ab]?*").is_ok());
        assert!(topic_pattern("t", "order.*.us").is_ok());
        assert!(topic_pattern("t", "order.#").is_ok());
        assert!(topic_pattern("t", "order.a*").is_err());
        assert!(topic_pattern("t", "order..us").is_err());
    }
}
