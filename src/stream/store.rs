//! Redis-facing Stream operations over the keys of `crate::redis::keys::stream_keys`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Script, Value};

use crate::error::{Error, Reason, RedisReply, Result};
use crate::group_commit::{Commit, Weight};
use crate::redis::keys::{self, STREAM_REGISTRY, stream_keys};
use crate::redis::registry::NameRegistry;
use crate::redis::{Conn, Redis};
use crate::time::millis;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("claim.lua")));
static APPEND_CHECKED: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("append.lua")));

/// An entry as stored: id, fields, and (for group reads) its delivery count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry id.
    pub id: String,
    /// Field name → value.
    pub fields: HashMap<String, Vec<u8>>,
    /// Deliveries to the group (0 when not a group read).
    pub deliveries: u64,
}

/// An entry's fields: name → value.
pub type Fields = HashMap<String, Vec<u8>>;

/// Entries whose ids Redis chooses, appended with one trimming: what one caller
/// puts in a stream's group commit (a unary Append, a run of AppendStream
/// messages, an AppendBatch). Its entries stay together and in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntries {
    /// How each entry's XADD trims the stream.
    pub trim: Option<Trim>,
    /// The entries' fields, in append order.
    pub fields: Vec<Fields>,
}

/// How to trim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trim {
    /// Keep about this many newest entries.
    MaxLength(u64, bool),
    /// Drop ids below this one.
    MinId(String, bool),
}

impl Trim {
    /// The trimming arguments of XADD / XTRIM: strategy, `=` or `~`, threshold.
    fn args(&self) -> (&'static str, &'static str, String) {
        let (kind, threshold, exact) = match self {
            Trim::MaxLength(n, exact) => ("MAXLEN", n.to_string(), *exact),
            Trim::MinId(id, exact) => ("MINID", id.clone(), *exact),
        };
        (kind, if exact { "=" } else { "~" }, threshold)
    }

    fn add_to(&self, cmd: &mut redis::Cmd) {
        let (kind, exactness, threshold) = self.args();
        cmd.arg(kind).arg(exactness).arg(threshold);
    }
}

/// XADDs of (trimming, id or `*`, fields) to `key` in one pipeline, all or nothing
/// (MULTI/EXEC) when there are several: an id chosen by Redis cannot be refused,
/// and callers send an explicit id alone.
fn xadds<'a>(
    key: &str,
    entries: impl IntoIterator<Item = (Option<&'a Trim>, &'a str, &'a Fields)>,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (trim, id, fields) in entries {
        pipe.add_command(xadd(key, trim, id, fields));
    }
    if pipe.len() > 1 {
        pipe.atomic();
    }
    pipe
}

/// `XADD key [trim] id name value ...`.
fn xadd(key: &str, trim: Option<&Trim>, id: &str, fields: &Fields) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key);
    if let Some(trim) = trim {
        trim.add_to(&mut cmd);
    }
    cmd.arg(id);
    for (name, value) in fields {
        cmd.arg(name).arg(value);
    }
    cmd
}

/// Pending summary: count, first id, last id, per consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// Pending entries.
    pub count: i64,
    /// Smallest pending id.
    pub first_id: String,
    /// Greatest pending id.
    pub last_id: String,
    /// (consumer, pending).
    pub consumers: Vec<(String, i64)>,
}

/// One pending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingItem {
    /// Entry id.
    pub id: String,
    /// Holder.
    pub consumer: String,
    /// Idle time.
    pub idle: Duration,
    /// Deliveries.
    pub deliveries: u64,
}

/// What a claim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Where a scan continues ("0-0" when done).
    pub next_start: String,
    /// Entries now owned by the claimer.
    pub entries: Vec<StoredEntry>,
    /// Entries dead-lettered instead.
    pub dead_lettered: Vec<String>,
}

/// A group as Info shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Name.
    pub name: String,
    /// Pending entries.
    pub pending: i64,
    /// Last delivered id.
    pub last_delivered_id: String,
    /// Lag (-1 unknown).
    pub lag: i64,
    /// (name, pending, idle ms).
    pub consumers: Vec<(String, i64, u64)>,
    /// Dead-letter policy.
    pub max_deliveries: u32,
}

/// A stream as Info shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Entries.
    pub length: i64,
    /// First id.
    pub first_id: String,
    /// Last id.
    pub last_id: String,
    /// Groups.
    pub groups: Vec<GroupState>,
    /// Dead letters.
    pub dead_letters: i64,
}

/// The reply of `XPENDING key group`: count, first id, last id, per-consumer counts.
type XPendingSummary = (
    i64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, i64)>>,
);

/// Stream operations over a [`Redis`] handle.
#[derive(Debug, Clone)]
pub struct StreamStore {
    redis: Arc<Redis>,
    /// Every stream that was ever appended to (qualified names).
    registry: NameRegistry,
}

/// The error of a call on the stream with qualified name `stream`, which does
/// not exist (named as its tenant wrote it).
fn missing_stream(stream: &str) -> Error {
    let stream = keys::user_name(stream);
    Error::refused(
        Reason::StreamNotFound,
        format!("there is no stream {stream:?}"),
    )
    .with("stream", stream)
}

/// Maps NOGROUP to NOT_FOUND naming the group and stream, and any other
/// NOT_FOUND (the stream itself is missing) to one naming the stream.
fn no_group(stream: &str, group: &str) -> impl Fn(redis::RedisError) -> Error {
    let (stream, group) = (stream.to_owned(), group.to_owned());
    move |e| {
        if RedisReply::NoGroup.matches(&e) {
            let name = keys::user_name(&stream);
            return Error::refused(
                Reason::GroupNotFound,
                format!("stream {name:?} has no group {group:?}"),
            )
            .with("stream", name)
            .with("group", &group);
        }
        match Error::from(e) {
            err if err.reason() == Reason::StreamNotFound => missing_stream(&stream),
            other => other,
        }
    }
}

impl StreamStore {
    /// A store over `redis`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            registry: NameRegistry::new(STREAM_REGISTRY),
        }
    }

    /// Every stream that was ever appended to (qualified names), sorted.
    pub async fn list_streams(&self) -> Result<Vec<String>> {
        self.registry.all(&self.redis).await
    }

    /// A page of stream names; see [`NameRegistry::page`].
    pub async fn stream_page(
        &self,
        visible: impl Fn(&str) -> Option<String>,
        after: Option<&str>,
        size: usize,
    ) -> Result<(Vec<String>, bool)> {
        self.registry.page(&self.redis, visible, after, size).await
    }

    async fn conn(&self) -> Result<Conn> {
        self.redis.conn().await
    }

    /// XADDs entries, several in one MULTI/EXEC (one alone needs none); returns
    /// their ids.
    pub async fn append(
        &self,
        stream: &str,
        entries: &[(String, Fields)],
        trim: Option<&Trim>,
    ) -> Result<Vec<String>> {
        self.registry.add(&self.redis, stream).await?;
        let key = stream_keys(stream).0;
        if entries.len() > 1 && entries.iter().any(|(id, _)| !id.is_empty()) {
            return self.append_checked(&key, entries, trim).await;
        }
        let pipe = xadds(
            &key,
            entries.iter().map(|(id, fields)| {
                let id = if id.is_empty() { "*" } else { id.as_str() };
                (trim, id, fields)
            }),
        );
        self.query_ids(&pipe).await
    }

    /// XADDs runs of entries whose ids Redis chooses, each run with its own
    /// trimming, all in one MULTI/EXEC (one entry alone needs none); returns each
    /// run's ids. This is one group commit of appends to `stream`.
    async fn append_runs(&self, stream: &str, runs: &[NewEntries]) -> Result<Vec<Vec<String>>> {
        self.registry.add(&self.redis, stream).await?;
        let key = stream_keys(stream).0;
        let total: usize = runs.iter().map(|run| run.fields.len()).sum();
        let pipe = xadds(
            &key,
            runs.iter().flat_map(|run| {
                let trim = run.trim.as_ref();
                run.fields.iter().map(move |fields| (trim, "*", fields))
            }),
        );
        let ids = self.query_ids(&pipe).await?;
        if ids.len() != total {
            return Err(Error::Internal(format!(
                "redis returned {} ids for {total} entries",
                ids.len()
            )));
        }
        let mut ids = ids.into_iter();
        Ok(runs
            .iter()
            .map(|run| ids.by_ref().take(run.fields.len()).collect())
            .collect())
    }

    /// Runs a pipeline of XADDs; returns their ids (in durable mode, once the
    /// replicas have them).
    async fn query_ids(&self, pipe: &redis::Pipeline) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let ids = pipe.query_async(&mut conn).await.map_err(|e| {
            if RedisReply::IdNotAboveLast.matches(&e) {
                Error::invalid("id", "must be greater than the stream's last id")
            } else {
                Error::from(e)
            }
        })?;
        self.redis.await_replicas(&mut conn).await?;
        Ok(ids)
    }

    /// Appends a batch with explicit ids all or nothing (`append.lua`).
    async fn append_checked(
        &self,
        key: &str,
        entries: &[(String, Fields)],
        trim: Option<&Trim>,
    ) -> Result<Vec<String>> {
        let mut invocation = APPEND_CHECKED.prepare_invoke();
        invocation.key(key);
        match trim.map(Trim::args) {
            Some((kind, exactness, threshold)) => {
                invocation.arg(3).arg(kind).arg(exactness).arg(threshold);
            }
            None => {
                invocation.arg(0);
            }
        }
        for (id, fields) in entries {
            invocation
                .arg(if id.is_empty() { "*" } else { id.as_str() })
                .arg(fields.len());
            for (name, value) in fields {
                invocation.arg(name).arg(value);
            }
        }
        let mut conn = self.conn().await?;
        let mut reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
        self.redis.await_replicas(&mut conn).await?;
        match reply.first() {
            Some(Value::Int(-1)) => reply
                .drain(1..)
                .map(|id| {
                    redis::from_redis_value::<String>(id)
                        .map_err(|e| Error::Internal(format!("unexpected append reply: {e}")))
                })
                .collect(),
            Some(Value::Int(refused)) => Err(Error::invalid(
                format!("entries[{refused}].id"),
                "must be greater than the stream's last id and the ids before it",
            )),
            _ => Err(Error::Internal(
                "unexpected reply from the append script".into(),
            )),
        }
    }

    /// XRANGE / XREVRANGE with COUNT.
    pub async fn range(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        reverse: bool,
        count: usize,
    ) -> Result<Vec<StoredEntry>> {
        let key = stream_keys(stream).0;
        let mut cmd = redis::cmd(if reverse { "XREVRANGE" } else { "XRANGE" });
        cmd.arg(&key).arg(start).arg(end).arg("COUNT").arg(count);
        let reply: Value = cmd.query_async(&mut self.conn().await?).await?;
        entries(&reply, false)
    }

    /// Entries after `after` (non-blocking), at most `count`.
    pub async fn read_after(
        &self,
        stream: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<StoredEntry>> {
        self.range(stream, &format!("({after}"), "+", false, count)
            .await
    }

    /// The last entry id, or None when the stream is empty or missing.
    pub async fn last_id(&self, stream: &str) -> Result<Option<String>> {
        Ok(self
            .range(stream, "+", "-", true, 1)
            .await?
            .pop()
            .map(|e| e.id))
    }

    /// XREAD BLOCK on a dedicated connection: entries after `after`, waiting up to `wait`.
    pub async fn block_read(
        &self,
        stream: &str,
        after: &str,
        wait: Duration,
    ) -> Result<Vec<StoredEntry>> {
        let key = stream_keys(stream).0;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(millis(wait).max(1));
        cmd.arg("STREAMS").arg(&key).arg(after);
        let mut conn = self.redis.blocking().await?;
        let reply: Value = conn.query(&cmd, wait).await?;
        match reply {
            Value::Nil => Ok(Vec::new()),
            other => {
                // [[key, entries]] (RESP2) or {key: entries} (RESP3).
                let streams: Vec<(String, Value)> = redis::from_redis_value_ref(&other)
                    .map_err(|e| Error::Internal(format!("unexpected XREAD reply: {e}")))?;
                streams
                    .into_iter()
                    .map(|(_, v)| entries(&v, false))
                    .next()
                    .unwrap_or(Ok(Vec::new()))
            }
        }
    }

    /// XGROUP CREATE ... MKSTREAM (or updates settings when it exists); true when created.
    pub async fn create_group(
        &self,
        stream: &str,
        group: &str,
        start: &str,
        max_deliveries: u32,
    ) -> Result<bool> {
        let (key, _, groups) = stream_keys(stream);
        let mut conn = self.conn().await?;
        let created = match redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async::<()>(&mut conn)
            .await
        {
            Ok(()) => true,
            Err(e) if RedisReply::GroupExists.matches(&e) => false,
            Err(e) if RedisReply::InvalidStreamId.matches(&e) => {
                return Err(Error::invalid(
                    "start",
                    "is not a stream id, \"$\" or \"0\"",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let _: () = redis::cmd("HSET")
            .arg(&groups)
            .arg(group)
            .arg(max_deliveries)
            .query_async(&mut conn)
            .await?;
        Ok(created)
    }

    /// XGROUP DESTROY; true when it existed.
    pub async fn destroy_group(&self, stream: &str, group: &str) -> Result<bool> {
        let (key, _, groups) = stream_keys(stream);
        let mut conn = self.conn().await?;
        let destroyed: i64 = match redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(&key)
            .arg(group)
            .query_async(&mut conn)
            .await
        {
            Ok(n) => n,
            // No stream: no group.
            Err(e) if RedisReply::NoSuchKey.matches(&e) => 0,
            Err(e) => return Err(e.into()),
        };
        let _: i64 = redis::cmd("HDEL")
            .arg(&groups)
            .arg(group)
            .query_async(&mut conn)
            .await?;
        Ok(destroyed == 1)
    }

    /// XGROUP DELCONSUMER; returns its pending count.
    pub async fn delete_consumer(&self, stream: &str, group: &str, consumer: &str) -> Result<i64> {
        let key = stream_keys(stream).0;
        redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(&key)
            .arg(group)
            .arg(consumer)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(no_group(stream, group))
    }

    /// XREADGROUP (non-blocking): `after` is ">" for new entries, or an id to re-read
    /// this consumer's own pending entries after it.
    pub async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<StoredEntry>> {
        let key = stream_keys(stream).0;
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&key)
            .arg(after)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(no_group(stream, group))?;
        let fresh = after == ">";
        match reply {
            Value::Nil => Ok(Vec::new()),
            other => {
                let streams: Vec<(String, Value)> = redis::from_redis_value_ref(&other)
                    .map_err(|e| Error::Internal(format!("unexpected XREADGROUP reply: {e}")))?;
                let mut list = streams
                    .into_iter()
                    .map(|(_, v)| entries(&v, true))
                    .next()
                    .unwrap_or(Ok(Vec::new()))?;
                if fresh {
                    list.iter_mut().for_each(|e| e.deliveries = 1);
                }
                Ok(list)
            }
        }
    }

    /// XACK (in durable mode, acknowledged once the replicas have it).
    pub async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<i64> {
        let key = stream_keys(stream).0;
        let mut conn = self.conn().await?;
        let acked = redis::cmd("XACK")
            .arg(&key)
            .arg(group)
            .arg(ids)
            .query_async(&mut conn)
            .await?;
        self.redis.await_replicas(&mut conn).await?;
        Ok(acked)
    }

    /// XPENDING summary.
    pub async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        let key = stream_keys(stream).0;
        let (count, first, last, consumers): XPendingSummary = redis::cmd("XPENDING")
            .arg(&key)
            .arg(group)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(no_group(stream, group))?;
        Ok(PendingSummary {
            count,
            first_id: first.unwrap_or_default(),
            last_id: last.unwrap_or_default(),
            consumers: consumers.unwrap_or_default(),
        })
    }

    /// XPENDING detail between two ids ("-" and "+" for all), oldest first.
    pub async fn pending_detail(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        range: (&str, &str),
        count: usize,
        consumer: Option<&str>,
    ) -> Result<Vec<PendingItem>> {
        let key = stream_keys(stream).0;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&key)
            .arg(group)
            .arg("IDLE")
            .arg(millis(min_idle))
            .arg(range.0)
            .arg(range.1)
            .arg(count);
        if let Some(consumer) = consumer {
            cmd.arg(consumer);
        }
        let items: Vec<(String, String, u64, u64)> = cmd
            .query_async(&mut self.conn().await?)
            .await
            .map_err(no_group(stream, group))?;
        Ok(items
            .into_iter()
            .map(|(id, consumer, idle, deliveries)| PendingItem {
                id,
                consumer,
                idle: Duration::from_millis(idle),
                deliveries,
            })
            .collect())
    }

    /// Claims idle entries (a scan from `start`, or the given ids), dead-lettering
    /// those past the group's max_deliveries.
    pub async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        what: ClaimWhat<'_>,
    ) -> Result<Claimed> {
        let (key, dead, groups) = stream_keys(stream);
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(&key)
            .key(&dead)
            .key(&groups)
            .arg(group)
            .arg(consumer)
            .arg(millis(min_idle))
            .arg(stream);
        match what {
            ClaimWhat::Scan { start, count } => {
                invocation.arg("scan").arg(start).arg(count);
            }
            ClaimWhat::Ids(ids) => {
                invocation.arg("ids").arg(ids);
            }
        }
        let reply: Vec<Value> = invocation
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(no_group(stream, group))?;
        let [next, claimed, dead] = reply.as_slice() else {
            return Err(Error::Internal(
                "unexpected reply from the claim script".into(),
            ));
        };
        let next_start: String =
            redis::from_redis_value_ref(next).map_err(|e| Error::Internal(e.to_string()))?;
        let dead_lettered: Vec<String> =
            redis::from_redis_value_ref(dead).map_err(|e| Error::Internal(e.to_string()))?;
        let claimed: Vec<(String, Value, u64)> =
            redis::from_redis_value_ref(claimed).map_err(|e| Error::Internal(e.to_string()))?;
        let entries = claimed
            .into_iter()
            .map(|(id, fields, deliveries)| {
                Ok(StoredEntry {
                    id,
                    fields: field_map(&fields)?,
                    deliveries,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Claimed {
            next_start,
            entries,
            dead_lettered,
        })
    }

    /// XINFO STREAM / GROUPS / CONSUMERS, the group settings and the dead-letter length.
    pub async fn info(&self, stream: &str) -> Result<StreamState> {
        let (key, dead, groups_key) = stream_keys(stream);
        let mut conn = self.conn().await?;
        let info: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                if RedisReply::NoSuchKey.matches(&e) {
                    missing_stream(stream)
                } else {
                    e.into()
                }
            })?;
        let info = pairs(&info)?;
        let entry_id = |name: &str| -> String {
            info.get(name)
                .and_then(|v| {
                    redis::from_redis_value_ref::<Option<(String, Value)>>(v)
                        .ok()
                        .flatten()
                })
                .map(|(id, _)| id)
                .unwrap_or_default()
        };
        let mut state = StreamState {
            length: int_of(info.get("length")),
            first_id: entry_id("first-entry"),
            last_id: entry_id("last-entry"),
            ..Default::default()
        };
        let groups: Vec<Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        let policies: HashMap<String, u32> = redis::cmd("HGETALL")
            .arg(&groups_key)
            .query_async(&mut conn)
            .await?;
        for group in groups {
            let g = pairs(&group)?;
            let name = text_of(g.get("name"));
            let consumers: Vec<Value> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&key)
                .arg(&name)
                .query_async(&mut conn)
                .await?;
            let consumers = consumers
                .iter()
                .map(|c| {
                    let c = pairs(c)?;
                    Ok((
                        text_of(c.get("name")),
                        int_of(c.get("pending")),
                        u64::try_from(int_of(c.get("idle"))).unwrap_or(0),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            state.groups.push(GroupState {
                max_deliveries: policies.get(&name).copied().unwrap_or(0),
                pending: int_of(g.get("pending")),
                last_delivered_id: text_of(g.get("last-delivered-id")),
                lag: g.get("lag").map_or(-1, |v| {
                    redis::from_redis_value_ref::<Option<i64>>(v)
                        .ok()
                        .flatten()
                        .unwrap_or(-1)
                }),
                consumers,
                name,
            });
        }
        state.dead_letters = redis::cmd("XLEN").arg(&dead).query_async(&mut conn).await?;
        Ok(state)
    }

    /// XTRIM; returns entries removed.
    pub async fn trim(&self, stream: &str, trim: &Trim) -> Result<i64> {
        let key = stream_keys(stream).0;
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(&key);
        trim.add_to(&mut cmd);
        Ok(cmd.query_async(&mut self.conn().await?).await?)
    }
}

/// What to claim.
#[derive(Debug, Clone, Copy)]
pub enum ClaimWhat<'a> {
    /// Scan pending entries from `start` ("-" or "(<id>"), at most `count`.
    Scan {
        /// Range start.
        start: &'a str,
        /// Most entries.
        count: usize,
    },
    /// These entries.
    Ids(&'a [String]),
}

/// Appends to one stream from concurrent callers share one MULTI/EXEC.
impl Commit for StreamStore {
    type Item = NewEntries;
    type Done = Vec<String>;

    fn weight(entries: &NewEntries) -> Weight {
        Weight {
            items: entries.fields.len(),
            bytes: entries
                .fields
                .iter()
                .flat_map(|fields| fields.iter())
                .map(|(name, value)| name.len() + value.len())
                .sum(),
        }
    }

    async fn commit(&self, stream: &str, runs: Vec<NewEntries>) -> Result<Vec<Vec<String>>> {
        self.append_runs(stream, &runs).await
    }
}

/// Parses `[[id, [f, v, ...]], ...]`.
fn entries(reply: &Value, allow_deleted: bool) -> Result<Vec<StoredEntry>> {
    let list: Vec<(String, Value)> = redis::from_redis_value_ref(reply)
        .map_err(|e| Error::Internal(format!("unexpected entries reply: {e}")))?;
    list.into_iter()
        .filter(|(_, fields)| !(allow_deleted && matches!(fields, Value::Nil)))
        .map(|(id, fields)| {
            Ok(StoredEntry {
                id,
                fields: field_map(&fields)?,
                deliveries: 0,
            })
        })
        .collect()
}

fn field_map(fields: &Value) -> Result<HashMap<String, Vec<u8>>> {
    let flat: Vec<Vec<u8>> = redis::from_redis_value_ref(fields)
        .map_err(|e| Error::Internal(format!("unexpected fields: {e}")))?;
    Ok(flat
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((String::from_utf8_lossy(name).into_owned(), value.clone())),
            _ => None,
        })
        .collect())
}

/// A flat `[name, value, ...]` reply (or a RESP3 map) as a map.
fn pairs(reply: &Value) -> Result<HashMap<String, Value>> {
    match reply {
        Value::Map(items) => Ok(items
            .iter()
            .filter_map(|(k, v)| {
                redis::from_redis_value_ref::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone()))
            })
            .collect()),
        Value::Array(items) => Ok(items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => redis::from_redis_value_ref::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone())),
                _ => None,
            })
            .collect()),
        other => Err(Error::Internal(format!("unexpected XINFO reply {other:?}"))),
    }
}

fn int_of(value: Option<&Value>) -> i64 {
    value
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or(0)
}

fn text_of(value: Option<&Value>) -> String {
    value
        .and_then(|v| redis::from_redis_value_ref(v).ok())
        .unwrap_or_default()
}
