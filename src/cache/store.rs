//! Redis-facing Cache operations. Every function takes Redis keys that were already
//! built by the key schema (`crate::redis::keys`), and does its work in one atomic
//! step (a single command, a MULTI/EXEC pipeline or a script) unless it says it is
//! split per cluster slot.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::try_join_all;
use redis::{Script, Value};

use crate::error::{Error, Result};
use crate::redis::keys::hash_slot;
use crate::redis::{Conn, Redis};
use crate::time::millis;

static BOUNDED_READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("bounded_read.lua")));
static CAS_SET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cas_set.lua")));
static INCREMENT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("increment.lua")));
static SORTED_SET_INCREMENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("sorted_set_increment.lua")));
// Scripts cannot call each other, so the Bloom scripts share bloom.lua by prefix.
static BLOOM_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("bloom.lua"),
        include_str!("bloom_add.lua")
    ))
});
static BLOOM_CONTAINS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("bloom.lua"),
        include_str!("bloom_contains.lua")
    ))
});

/// When a write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only when the key is absent.
    IfAbsent,
    /// Only when the key exists.
    IfPresent,
    /// Only when the key holds exactly this value.
    IfEqual(Vec<u8>),
}

/// What happens to a key's TTL on write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No TTL (an old one is cleared).
    Never,
    /// Expire after this long.
    After(Duration),
    /// Keep whatever TTL the key has.
    Keep,
}

/// An end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Index 0.
    Front,
    /// Index -1.
    Back,
}

impl End {
    fn direction(self) -> &'static str {
        match self {
            End::Front => "LEFT",
            End::Back => "RIGHT",
        }
    }
}

/// One end of a score range: `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The score.
    pub score: f64,
    /// Whether the score itself is excluded.
    pub exclusive: bool,
}

/// A key's remaining life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist.
    Missing,
    /// The key never expires.
    Persistent,
    /// The key expires after this long.
    Expires(Duration),
}

/// The result of a pop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped {
    /// The Redis key of the list the values came from.
    pub key: String,
    /// The values, in pop order.
    pub values: Vec<Vec<u8>>,
}

/// What `sorted_set_put` did.
#[derive(Debug, Clone, PartialEq)]
pub enum SortedSetPut {
    /// Written: how many members are new, and each member's resulting score.
    Written {
        /// Members that were not in the set before.
        added: i64,
        /// The resulting scores, in request order.
        scores: Vec<f64>,
    },
    /// Nothing written: adding the member at this index would make its score NaN.
    NotANumber(usize),
}

/// Cache operations over a [`Redis`] handle.
#[derive(Debug, Clone)]
pub struct CacheStore {
    redis: Arc<Redis>,
    /// Largest reply a collection read may bring back, in bytes of values.
    max_reply_bytes: usize,
}

impl CacheStore {
    /// A store over `redis` whose collection reads refuse replies larger than
    /// `max_reply_bytes` before Redwire reads them.
    pub fn new(redis: Arc<Redis>, max_reply_bytes: usize) -> Self {
        Self {
            redis,
            max_reply_bytes,
        }
    }

    /// Runs the read `command` on `keys` with `args` through `bounded_read.lua`:
    /// a reply over the limit fails RESOURCE_EXHAUSTED inside Redis.
    async fn bounded_read<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        command: &str,
        keys: &[&str],
        args: &[String],
    ) -> Result<T> {
        let mut invocation = BOUNDED_READ.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        invocation.arg(self.max_reply_bytes).arg(command);
        for arg in args {
            invocation.arg(arg);
        }
        Ok(invocation.invoke_async(conn).await?)
    }

    async fn conn(&self) -> Result<Conn> {
        self.redis.conn().await
    }

    /// Groups key indexes by cluster slot (one group on a standalone Redis).
    fn by_slot<'a>(&self, keys: impl Iterator<Item = &'a String>) -> Vec<Vec<usize>> {
        if !self.redis.is_cluster() {
            return vec![keys.enumerate().map(|(i, _)| i).collect()];
        }
        let mut groups: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, key) in keys.enumerate() {
            groups.entry(hash_slot(key.as_bytes())).or_default().push(i);
        }
        groups.into_values().collect()
    }

    /// Fails with INVALID_ARGUMENT when, on a cluster, `keys` span several slots.
    pub fn require_one_slot(&self, field: &str, keys: &[&String]) -> Result<()> {
        if self.redis.is_cluster() {
            let mut slots = keys.iter().map(|k| hash_slot(k.as_bytes()));
            if let Some(first) = slots.next()
                && slots.any(|s| s != first)
            {
                return Err(Error::invalid(
                    field,
                    "on a Redis Cluster these keys must map to one slot, and they do not",
                ));
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ strings

    /// GET.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    /// SET with a condition and expiry; returns whether it wrote.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        condition: &Condition,
        expiry: Expiry,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        if let Condition::IfEqual(expected) = condition {
            let (ttl_ms, keep) = match expiry {
                Expiry::Never => (0, false),
                Expiry::After(d) => (millis(d), false),
                Expiry::Keep => (0, true),
            };
            let written: i64 = CAS_SET
                .key(key)
                .arg(expected)
                .arg(value)
                .arg(ttl_ms)
                .arg(if keep { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await?;
            return Ok(written == 1);
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        match expiry {
            Expiry::Never => {}
            Expiry::After(d) => {
                cmd.arg("PX").arg(millis(d));
            }
            Expiry::Keep => {
                cmd.arg("KEEPTTL");
            }
        }
        match condition {
            Condition::IfAbsent => {
                cmd.arg("NX");
            }
            Condition::IfPresent => {
                cmd.arg("XX");
            }
            Condition::Always | Condition::IfEqual(_) => {}
        }
        let reply: Option<String> = cmd.query_async(&mut conn).await?;
        Ok(reply.is_some())
    }

    /// DEL, split per cluster slot; returns how many keys existed.
    pub async fn delete(&self, keys: &[String]) -> Result<i64> {
        let conn = self.conn().await?;
        let calls = self.by_slot(keys.iter()).into_iter().map(|group| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("DEL");
            for i in group {
                cmd.arg(&keys[i]);
            }
            async move { cmd.query_async::<i64>(&mut conn).await }
        });
        Ok(try_join_all(calls).await?.into_iter().sum())
    }

    /// MGET, split per cluster slot; values in `keys` order.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let conn = self.conn().await?;
        let groups = self.by_slot(keys.iter());
        let calls = groups.iter().map(|group| {
            let mut conn = conn.clone();
            let group_keys: Vec<&str> = group.iter().map(|&i| keys[i].as_str()).collect();
            async move {
                self.bounded_read::<Vec<Option<Vec<u8>>>>(&mut conn, "MGET", &group_keys, &[])
                    .await
            }
        });
        let replies = try_join_all(calls).await?;
        let total: usize = replies.iter().flatten().flatten().map(Vec::len).sum();
        if total > self.max_reply_bytes {
            return Err(Error::reply_too_large(self.max_reply_bytes));
        }
        let mut values = vec![None; keys.len()];
        for (group, reply) in groups.iter().zip(replies) {
            for (&i, value) in group.iter().zip(reply) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    /// SETs many values with one expiry: one MULTI/EXEC per cluster slot.
    pub async fn set_many(
        &self,
        entries: &[(String, Vec<u8>)],
        ttl: Option<Duration>,
    ) -> Result<()> {
        let conn = self.conn().await?;
        let calls = self
            .by_slot(entries.iter().map(|(k, _)| k))
            .into_iter()
            .map(|group| {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                pipe.atomic();
                for i in group {
                    let (key, value) = &entries[i];
                    let cmd = pipe.cmd("SET").arg(key).arg(value);
                    if let Some(ttl) = ttl {
                        cmd.arg("PX").arg(millis(ttl));
                    }
                    cmd.ignore();
                }
                async move { pipe.query_async::<()>(&mut conn).await }
            });
        try_join_all(calls).await?;
        Ok(())
    }

    /// INCRBY with a TTL for a counter this call creates; returns (value, created).
    pub async fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<(i64, bool)> {
        let (value, created): (String, i64) = INCREMENT
            .key(key)
            .arg(delta)
            .arg(ttl.map_or(0, millis))
            .invoke_async(&mut self.conn().await?)
            .await?;
        let value = value
            .parse()
            .map_err(|_| Error::Internal(format!("INCRBY left {value:?}, not an integer")))?;
        Ok((value, created == 1))
    }

    /// PTTL.
    pub async fn ttl(&self, key: &str) -> Result<Ttl> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(match ms {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        })
    }

    /// PEXPIRE (Some) or PERSIST (None); returns whether anything changed.
    pub async fn update_ttl(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let cmd = match ttl {
            Some(ttl) => {
                let mut cmd = redis::cmd("PEXPIRE");
                cmd.arg(key).arg(millis(ttl));
                cmd
            }
            None => {
                let mut cmd = redis::cmd("PERSIST");
                cmd.arg(key);
                cmd
            }
        };
        let changed: i64 = cmd.query_async(&mut self.conn().await?).await?;
        Ok(changed == 1)
    }

    // ------------------------------------------------------------ hashes

    /// HSET; returns how many fields are new.
    pub async fn hash_set(&self, key: &str, fields: &HashMap<String, Vec<u8>>) -> Result<i64> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key);
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        Ok(cmd.query_async(&mut self.conn().await?).await?)
    }

    /// HMGET (some fields) or HGETALL (no fields); missing fields are left out.
    pub async fn hash_get(&self, key: &str, fields: &[String]) -> Result<HashMap<String, Vec<u8>>> {
        let mut conn = self.conn().await?;
        if fields.is_empty() {
            let all: HashMap<Vec<u8>, Vec<u8>> =
                self.bounded_read(&mut conn, "HGETALL", &[key], &[]).await?;
            return Ok(all
                .into_iter()
                .map(|(f, v)| (String::from_utf8_lossy(&f).into_owned(), v))
                .collect());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(key)
            .arg(fields)
            .query_async(&mut conn)
            .await?;
        Ok(fields
            .iter()
            .zip(values)
            .filter_map(|(f, v)| v.map(|v| (f.clone(), v)))
            .collect())
    }

    /// HDEL; returns how many fields existed.
    pub async fn hash_delete(&self, key: &str, fields: &[String]) -> Result<i64> {
        Ok(redis::cmd("HDEL")
            .arg(key)
            .arg(fields)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    /// HINCRBY.
    pub async fn hash_increment(&self, key: &str, field: &str, delta: i64) -> Result<i64> {
        Ok(redis::cmd("HINCRBY")
            .arg(key)
            .arg(field)
            .arg(delta)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    // ------------------------------------------------------------ sets

    /// SADD, atomically with SMISMEMBER to tell which members were new (a member
    /// given twice is new at most once).
    pub async fn set_add(&self, key: &str, members: &[Vec<u8>]) -> Result<Vec<bool>> {
        let (before, _): (Vec<bool>, i64) = redis::pipe()
            .atomic()
            .cmd("SMISMEMBER")
            .arg(key)
            .arg(members)
            .cmd("SADD")
            .arg(key)
            .arg(members)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(first_occurrences_new(members, &before))
    }

    /// SREM.
    pub async fn set_remove(&self, key: &str, members: &[Vec<u8>]) -> Result<i64> {
        Ok(redis::cmd("SREM")
            .arg(key)
            .arg(members)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    /// SMEMBERS.
    pub async fn set_members(&self, key: &str) -> Result<Vec<Vec<u8>>> {
        self.bounded_read(&mut self.conn().await?, "SMEMBERS", &[key], &[])
            .await
    }

    /// SMISMEMBER.
    pub async fn set_contains(&self, key: &str, members: &[Vec<u8>]) -> Result<Vec<bool>> {
        Ok(redis::cmd("SMISMEMBER")
            .arg(key)
            .arg(members)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    /// SCARD.
    pub async fn set_length(&self, key: &str) -> Result<i64> {
        Ok(redis::cmd("SCARD")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    // ------------------------------------------------------------ sorted sets

    /// Sets (ZADD) or adds to (`increment`) members' scores in one atomic step;
    /// returns how many members are new and every member's resulting score. An
    /// increment that would make a score NaN (inf + -inf) writes nothing and names
    /// the member's index.
    pub async fn sorted_set_put(
        &self,
        key: &str,
        members: &[(Vec<u8>, f64)],
        increment: bool,
    ) -> Result<SortedSetPut> {
        if increment {
            return self.sorted_set_increment(key, members).await;
        }
        let names: Vec<&Vec<u8>> = members.iter().map(|(m, _)| m).collect();
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("ZMSCORE").arg(key).arg(&names);
        let zadd = pipe.cmd("ZADD").arg(key);
        for (member, score) in members {
            zadd.arg(score).arg(member);
        }
        zadd.ignore();
        pipe.cmd("ZMSCORE").arg(key).arg(&names);
        let (before, after): (Vec<Option<f64>>, Vec<Option<f64>>) =
            pipe.query_async(&mut self.conn().await?).await?;
        let existed: Vec<bool> = before.iter().map(Option::is_some).collect();
        let added = first_occurrences_new(members.iter().map(|(m, _)| m), &existed)
            .into_iter()
            .filter(|&new| new)
            .count();
        Ok(SortedSetPut::Written {
            added: i64::try_from(added).unwrap_or(i64::MAX),
            scores: after.into_iter().map(|s| s.unwrap_or(f64::NAN)).collect(),
        })
    }

    async fn sorted_set_increment(
        &self,
        key: &str,
        members: &[(Vec<u8>, f64)],
    ) -> Result<SortedSetPut> {
        let mut invocation = SORTED_SET_INCREMENT.prepare_invoke();
        invocation.key(key);
        for (member, increment) in members {
            invocation.arg(member).arg(increment);
        }
        let reply: Vec<Value> = invocation.invoke_async(&mut self.conn().await?).await?;
        let unexpected =
            || Error::Internal("unexpected reply from sorted_set_increment.lua".into());
        let number =
            |value: &Value| redis::from_redis_value_ref::<f64>(value).map_err(|_| unexpected());
        match reply.as_slice() {
            [Value::Int(-1), added, scores @ ..] => Ok(SortedSetPut::Written {
                added: redis::from_redis_value_ref(added).map_err(|_| unexpected())?,
                scores: scores.iter().map(number).collect::<Result<_>>()?,
            }),
            [Value::Int(index)] => Ok(SortedSetPut::NotANumber(
                usize::try_from(*index).map_err(|_| unexpected())?,
            )),
            _ => Err(unexpected()),
        }
    }

    /// ZRANGE by rank WITHSCORES.
    pub async fn sorted_set_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
        descending: bool,
    ) -> Result<Vec<(Vec<u8>, f64)>> {
        let mut args = vec![start.to_string(), stop.to_string()];
        if descending {
            args.push("REV".into());
        }
        args.push("WITHSCORES".into());
        self.bounded_read(&mut self.conn().await?, "ZRANGE", &[key], &args)
            .await
    }

    /// ZRANGE BYSCORE WITHSCORES with optional paging.
    pub async fn sorted_set_range_by_score(
        &self,
        key: &str,
        min: Option<Bound>,
        max: Option<Bound>,
        descending: bool,
        offset: i64,
        count: i64,
    ) -> Result<Vec<(Vec<u8>, f64)>> {
        let min = score_arg(min, "-inf");
        let max = score_arg(max, "+inf");
        let mut args = if descending {
            vec![max, min, "BYSCORE".into(), "REV".into()]
        } else {
            vec![min, max, "BYSCORE".into()]
        };
        if offset > 0 || count > 0 {
            let count = if count > 0 { count } else { -1 };
            args.extend(["LIMIT".into(), offset.to_string(), count.to_string()]);
        }
        args.push("WITHSCORES".into());
        self.bounded_read(&mut self.conn().await?, "ZRANGE", &[key], &args)
            .await
    }

    /// ZRANK/ZREVRANK with ZSCORE; `None` when the member is absent.
    pub async fn sorted_set_rank(
        &self,
        key: &str,
        member: &[u8],
        descending: bool,
    ) -> Result<Option<(i64, f64)>> {
        let (rank, score): (Option<i64>, Option<f64>) = redis::pipe()
            .cmd(if descending { "ZREVRANK" } else { "ZRANK" })
            .arg(key)
            .arg(member)
            .cmd("ZSCORE")
            .arg(key)
            .arg(member)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(rank.zip(score))
    }

    /// ZREM.
    pub async fn sorted_set_remove(&self, key: &str, members: &[Vec<u8>]) -> Result<i64> {
        Ok(redis::cmd("ZREM")
            .arg(key)
            .arg(members)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    // ------------------------------------------------------------ lists

    /// LPUSH/RPUSH (or the X variants), then LTRIM to `max_length`, atomically;
    /// returns the final length.
    pub async fn list_push(
        &self,
        key: &str,
        values: &[Vec<u8>],
        end: End,
        only_if_exists: bool,
        max_length: i64,
    ) -> Result<i64> {
        let push = match (end, only_if_exists) {
            (End::Front, false) => "LPUSH",
            (End::Front, true) => "LPUSHX",
            (End::Back, false) => "RPUSH",
            (End::Back, true) => "RPUSHX",
        };
        let mut pipe = redis::pipe();
        pipe.atomic().cmd(push).arg(key).arg(values).ignore();
        if max_length > 0 {
            // Keep the newest values: those nearest the end we pushed to.
            let (start, stop) = match end {
                End::Front => (0, max_length - 1),
                End::Back => (-max_length, -1),
            };
            pipe.cmd("LTRIM").arg(key).arg(start).arg(stop).ignore();
        }
        pipe.cmd("LLEN").arg(key);
        let (length,): (i64,) = pipe.query_async(&mut self.conn().await?).await?;
        Ok(length)
    }

    /// LMPOP without waiting. On a cluster, keys in different slots are tried one
    /// slot group at a time, in request order; each pop is atomic.
    pub async fn list_pop(
        &self,
        keys: &[String],
        end: End,
        count: usize,
    ) -> Result<Option<Popped>> {
        let mut conn = self.conn().await?;
        for group in self.slot_runs(keys) {
            let mut cmd = redis::cmd("LMPOP");
            cmd.arg(group.len())
                .arg(group)
                .arg(end.direction())
                .arg("COUNT")
                .arg(count);
            let reply: Option<(String, Vec<Vec<u8>>)> = cmd.query_async(&mut conn).await?;
            if let Some((key, values)) = reply {
                return Ok(Some(Popped { key, values }));
            }
        }
        Ok(None)
    }

    /// Splits `keys` into runs of consecutive keys sharing a slot (one run on a
    /// standalone Redis), keeping their order.
    fn slot_runs<'k>(&self, keys: &'k [String]) -> Vec<&'k [String]> {
        if !self.redis.is_cluster() {
            return vec![keys];
        }
        let mut runs = Vec::new();
        let mut start = 0;
        for i in 1..=keys.len() {
            if i == keys.len() || hash_slot(keys[i].as_bytes()) != hash_slot(keys[start].as_bytes())
            {
                runs.push(&keys[start..i]);
                start = i;
            }
        }
        runs
    }

    /// BLMPOP on a dedicated connection, waiting at most `wait` (at least 1 ms).
    pub async fn list_pop_wait(
        &self,
        keys: &[String],
        end: End,
        count: usize,
        wait: Duration,
    ) -> Result<Option<Popped>> {
        let mut cmd = redis::cmd("BLMPOP");
        cmd.arg(format!("{:.3}", wait.as_secs_f64()))
            .arg(keys.len())
            .arg(keys)
            .arg(end.direction())
            .arg("COUNT")
            .arg(count);
        let mut conn = self.redis.blocking().await?;
        let reply: Option<(String, Vec<Vec<u8>>)> = conn.query(&cmd, wait).await?;
        Ok(reply.map(|(key, values)| Popped { key, values }))
    }

    /// LRANGE.
    pub async fn list_range(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>> {
        let args = [start.to_string(), stop.to_string()];
        self.bounded_read(&mut self.conn().await?, "LRANGE", &[key], &args)
            .await
    }

    /// LLEN.
    pub async fn list_length(&self, key: &str) -> Result<i64> {
        Ok(redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await?)
    }

    /// LMOVE.
    pub async fn list_move(
        &self,
        source: &str,
        destination: &str,
        from: End,
        to: End,
    ) -> Result<Option<Vec<u8>>> {
        Ok(redis::cmd("LMOVE")
            .arg(source)
            .arg(destination)
            .arg(from.direction())
            .arg(to.direction())
            .query_async(&mut self.conn().await?)
            .await?)
    }

    // ------------------------------------------------------------ Bloom filters

    /// Adds items; `bits` and `hashes` size a filter this call creates.
    pub async fn bloom_add(
        &self,
        key: &str,
        items: &[Vec<u8>],
        bits: u64,
        hashes: u32,
    ) -> Result<Vec<bool>> {
        let reply: Vec<i64> = BLOOM_ADD
            .key(key)
            .arg(bits)
            .arg(hashes)
            .arg(items)
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(reply.into_iter().map(|v| v == 1).collect())
    }

    /// Tests items.
    pub async fn bloom_contains(&self, key: &str, items: &[Vec<u8>]) -> Result<Vec<bool>> {
        let reply: Vec<i64> = BLOOM_CONTAINS
            .key(key)
            .arg(items)
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(reply.into_iter().map(|v| v == 1).collect())
    }
}

/// For each item: true when it did not exist before and is its first occurrence
/// in the request.
fn first_occurrences_new<'a, T: AsRef<[u8]> + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    existed: &[bool],
) -> Vec<bool> {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    items
        .into_iter()
        .zip(existed)
        .map(|(item, &existed)| seen.insert(item.as_ref()) && !existed)
        .collect()
}

fn score_arg(bound: Option<Bound>, unbounded: &str) -> String {
    match bound {
        None => unbounded.to_owned(),
        Some(Bound { score, exclusive }) => {
            let number = if score == f64::INFINITY {
                "+inf".to_owned()
            } else if score == f64::NEG_INFINITY {
                "-inf".to_owned()
            } else {
                format!("{score}")
            };
            if exclusive {
                format!("({number}")
            } else {
                number
            }
        }
    }
}

/// The Bloom filter size for `expected` items at false-positive rate `rate`:
/// (bits, hash functions), from m = -n ln p / (ln 2)^2 and k = m/n ln 2.
pub fn bloom_size(expected: u64, rate: f64) -> (u64, u32) {
    let n = expected.max(1) as f64;
    let ln2 = std::f64::consts::LN_2;
    let bits = (-n * rate.ln() / (ln2 * ln2)).ceil().max(64.0);
    let hashes = ((bits / n) * ln2).round().clamp(1.0, 30.0);
    (bits as u64, hashes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_size_matches_the_textbook_formula() {
        // 1,000,000 items at 1%: about 9.59 bits per item and 7 hash functions.
        let (bits, hashes) = bloom_size(1_000_000, 0.01);
        assert_eq!(bits, 9_585_059);
        assert_eq!(hashes, 7);
    }

    #[test]
    fn duplicates_in_a_request_are_new_once() {
        let items = [b"a".to_vec(), b"b".to_vec(), b"a".to_vec()];
        assert_eq!(
            first_occurrences_new(&items, &[false, true, false]),
            vec![true, false, false]
        );
    }

    #[test]
    fn score_bounds_use_redis_syntax() {
        assert_eq!(score_arg(None, "-inf"), "-inf");
        assert_eq!(
            score_arg(
                Some(Bound {
                    score: 1.5,
                    exclusive: true
                }),
                "-inf"
            ),
            "(1.5"
        );
        assert_eq!(
            score_arg(
                Some(Bound {
                    score: f64::INFINITY,
                    exclusive: false
                }),
                "-inf"
            ),
            "+inf"
        );
    }
}
