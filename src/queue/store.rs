//! Redis-facing Queue operations: each is one script call (or a short pipeline of
//! reads) on the keys of one queue, all in one cluster slot.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use redis::{Script, Value};

use super::record::{JobRecord, MAX_ERRORS_KEPT, MAX_PRIORITY, State};
use crate::error::{Error, Result};
use crate::redis::keys::{QUEUE_REGISTRY, QUEUE_WAKE_CHANNEL, QueueCounters, QueueKeys, QueueMeta};
use crate::redis::registry::NameRegistry;
use crate::redis::{Conn, Redis};
use crate::waker::{WAKE_SEPARATOR, wake_message};

/// A queue script: the generated [`script_facts`], the shared prelude
/// `queue.lua`, then the operation.
macro_rules! queue_script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(&script_source(include_str!($file))))
    };
}

/// The full source of the queue script whose operation is `operation` (the text
/// of one of `src/queue/*.lua` besides `queue.lua`), as Redwire loads it.
pub fn script_source(operation: &str) -> String {
    format!("{}{}{operation}", script_facts(), include_str!("queue.lua"))
}

/// The facts queue scripts share with Rust, written as Lua from their one Rust
/// source: the names of the scripts' KEYS ([`QueueKeys::NAMES`]), the limits on
/// priorities and kept errors, and the wake message format.
fn script_facts() -> String {
    format!(
        "{keys}{meta}local MAX_PRIORITY = {MAX_PRIORITY}\n\
         local MAX_ERRORS = {MAX_ERRORS_KEPT}\n\
         local function wake_message(count, name) return count .. '{WAKE_SEPARATOR}' .. name end\n",
        keys = QueueKeys::lua_table(),
        meta = QueueMeta::lua_table(),
    )
}

static ENQUEUE: LazyLock<Script> = queue_script!("enqueue.lua");
static DEQUEUE: LazyLock<Script> = queue_script!("dequeue.lua");
static ACK: LazyLock<Script> = queue_script!("ack.lua");
static NACK: LazyLock<Script> = queue_script!("nack.lua");
static EXTEND: LazyLock<Script> = queue_script!("extend.lua");
static REAP: LazyLock<Script> = queue_script!("reap.lua");
static REDRIVE: LazyLock<Script> = queue_script!("redrive.lua");
static PURGE: LazyLock<Script> = queue_script!("purge.lua");
static OLDEST: LazyLock<Script> = queue_script!("oldest.lua");
static DELETE: LazyLock<Script> = queue_script!("delete.lua");

/// Priority levels `oldest.lua` reads at most: a queue whose waiting jobs span
/// more levels reports the oldest of its highest ones.
const OLDEST_LEVELS: usize = 16;

/// A hash field that may be missing.
type MaybeBytes = Option<Vec<u8>>;

/// Jobs deleted per purge script call, so one call never blocks Redis for long.
const PURGE_CHUNK: usize = 1000;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id (made by the caller when the client gave none).
    pub id: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its options (state, counters and times are filled in by the script).
    pub record: JobRecord,
    /// Delay before delivery.
    pub delay_ms: u64,
    /// Earliest delivery instant, ms since the epoch (0 for none).
    pub deliver_at_ms: u64,
}

/// The outcome of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id.
    pub id: String,
    /// False when the id already existed.
    pub created: bool,
    /// The job's state after the call.
    pub state: State,
}

/// What one reap of a queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Leases that ran out (their jobs retried or dead-lettered).
    pub expired: i64,
    /// Delayed jobs that became ready.
    pub promoted: i64,
    /// Kept completed jobs removed.
    pub removed: i64,
}

/// A leased job.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The job's id.
    pub id: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its record after leasing (attempt, token, deadline).
    pub record: JobRecord,
}

/// A consumer waiting in this process that takes jobs straight from an enqueue
/// (see `handoff.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taker {
    /// Most jobs it takes.
    pub most: usize,
    /// Lease length for its jobs, ms.
    pub lease_ms: u64,
}

/// What a dequeue found.
#[derive(Debug, Clone, Default)]
pub struct Dequeued {
    /// The leased jobs.
    pub jobs: Vec<Leased>,
    /// Ms until more may be ready (the rate limit frees a slot, a delayed job falls
    /// due, a lease expires), when known.
    pub retry_in_ms: Option<u64>,
}

/// Counts per state and settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Waiting (including group backlog).
    pub waiting: i64,
    /// Delayed.
    pub delayed: i64,
    /// Active.
    pub active: i64,
    /// Kept completed.
    pub completed: i64,
    /// Dead.
    pub dead: i64,
    /// Deliveries paused.
    pub paused: bool,
    /// Rate limit: starts per window (0 = none).
    pub rate_max: u32,
    /// Rate limit window in ms.
    pub rate_window_ms: u64,
    /// Events since the queue was created ([`QueueMeta::COUNTERS`]).
    pub counters: QueueCounters,
}

/// One job as stored.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// The job's id.
    pub id: String,
    /// Its record.
    pub record: JobRecord,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its result (kept completed jobs).
    pub result: Option<Vec<u8>>,
}

/// Queue operations over a [`Redis`] handle.
#[derive(Debug, Clone)]
pub struct QueueStore {
    redis: Arc<Redis>,
    /// Every queue that ever had a job (qualified names).
    registry: NameRegistry,
}

impl QueueStore {
    /// A store over `redis`.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            registry: NameRegistry::new(QUEUE_REGISTRY),
        }
    }

    async fn conn(&self) -> Result<Conn> {
        self.redis.conn().await
    }

    /// Runs a queue script with the queue's keys and `args`; in durable mode, its
    /// writes are on the replicas when this returns.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        queue: &str,
        args: &[&[u8]],
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in QueueKeys::new(queue).in_script_order() {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn().await?;
        let reply = invocation.invoke_async(&mut conn).await?;
        self.redis.await_replicas(&mut conn).await?;
        Ok(reply)
    }

    /// Enqueues `jobs` atomically (an existing id is returned as it is) and, in the same script call, leases ready jobs to `takers`
    /// (consumers waiting in this process) as a dequeue would: the first taker's
    /// jobs come first in the returned [`Dequeued`], up to its `most`.
    pub async fn enqueue_handing_off(
        &self,
        queue: &str,
        jobs: &[NewJob],
        takers: &[Taker],
    ) -> Result<(Vec<Enqueued>, Dequeued)> {
        self.registry.add(&self.redis, queue).await?;
        let records = jobs
            .iter()
            .map(|j| j.record.encode())
            .collect::<Result<Vec<_>>>()?;
        let numbers: Vec<(String, String)> = jobs
            .iter()
            .map(|j| (j.delay_ms.to_string(), j.deliver_at_ms.to_string()))
            .collect();
        let taker_numbers: Vec<(String, String)> = takers
            .iter()
            .map(|t| (t.most.to_string(), t.lease_ms.to_string()))
            .collect();
        let (count, taker_count) = (jobs.len().to_string(), takers.len().to_string());
        let mut args: Vec<&[u8]> = vec![
            QUEUE_WAKE_CHANNEL.as_bytes(),
            queue.as_bytes(),
            count.as_bytes(),
        ];
        for ((job, record), (delay, at)) in jobs.iter().zip(&records).zip(&numbers) {
            args.extend([
                job.id.as_bytes(),
                &job.payload,
                record,
                delay.as_bytes(),
                at.as_bytes(),
            ]);
        }
        args.push(taker_count.as_bytes());
        for (most, lease) in &taker_numbers {
            args.extend([most.as_bytes(), lease.as_bytes()]);
        }
        let secret = if takers.is_empty() {
            String::new()
        } else {
            crate::token::unguessable()
        };
        args.push(secret.as_bytes());
        let reply: Vec<Value> = self.invoke(&ENQUEUE, queue, &args).await?;
        if reply.len() < jobs.len() * 3 {
            return Err(unexpected("enqueue"));
        }
        let (enqueued, handed) = reply.split_at(jobs.len() * 3);
        let enqueued = enqueued
            .chunks(3)
            .map(|c| match c {
                [id, created, state] => Ok(Enqueued {
                    id: text(id)?,
                    created: int(created)? == 1,
                    state: State::parse(&text(state)?)?,
                }),
                _ => Err(unexpected("enqueue")),
            })
            .collect::<Result<_>>()?;
        let handed = if takers.is_empty() {
            Dequeued::default()
        } else {
            leased(handed, "enqueue")?
        };
        Ok((enqueued, handed))
    }

    /// Leases up to `max` jobs for `lease_ms`.
    pub async fn dequeue(&self, queue: &str, max: usize, lease_ms: u64) -> Result<Dequeued> {
        let (max, lease) = (max.to_string(), lease_ms.to_string());
        let secret = crate::token::unguessable();
        let args: [&[u8]; 3] = [max.as_bytes(), lease.as_bytes(), secret.as_bytes()];
        let reply: Vec<Value> = self.invoke(&DEQUEUE, queue, &args).await?;
        leased(&reply, "dequeue")
    }

    /// Completes jobs: (id, lease token, result). True per accepted item.
    pub async fn ack(&self, queue: &str, items: &[(String, String, Vec<u8>)]) -> Result<Vec<bool>> {
        let count = items.len().to_string();
        let mut args: Vec<&[u8]> = vec![
            QUEUE_WAKE_CHANNEL.as_bytes(),
            queue.as_bytes(),
            count.as_bytes(),
        ];
        for (id, token, result) in items {
            args.extend([id.as_bytes(), token.as_bytes(), result.as_slice()]);
        }
        let reply: Vec<i64> = self.invoke(&ACK, queue, &args).await?;
        Ok(reply.into_iter().map(|v| v == 1).collect())
    }

    /// Fails a leased job; `None` when the token is stale. Otherwise the new state
    /// and its due time (ms; 0 when not delayed).
    pub async fn nack(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        error: &str,
        permanent: bool,
        retry_after_ms: Option<u64>,
    ) -> Result<Option<(State, u64)>> {
        let retry = retry_after_ms.map_or_else(|| "-1".to_owned(), |ms| ms.to_string());
        let failure = Failure {
            error,
            permanent,
            retry_after_ms: &retry,
            undelivered: false,
        };
        self.fail(queue, id, token, failure).await
    }

    /// Gives back a leased job that never reached its client (its consumer left
    /// before a hand-off arrived): back in its place in the queue, no attempt
    /// counted. False when the lease is no longer current.
    pub async fn release_undelivered(&self, queue: &str, id: &str, token: &str) -> Result<bool> {
        let failure = Failure {
            error: "",
            permanent: false,
            retry_after_ms: "0",
            undelivered: true,
        };
        let outcome = self.fail(queue, id, token, failure).await?;
        Ok(outcome.is_some())
    }

    /// Runs nack.lua on a leased job.
    async fn fail(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        failure: Failure<'_>,
    ) -> Result<Option<(State, u64)>> {
        let args: [&[u8]; 8] = [
            QUEUE_WAKE_CHANNEL.as_bytes(),
            queue.as_bytes(),
            id.as_bytes(),
            token.as_bytes(),
            failure.error.as_bytes(),
            if failure.permanent { b"1" } else { b"0" },
            failure.retry_after_ms.as_bytes(),
            if failure.undelivered { b"1" } else { b"0" },
        ];
        let reply: Vec<Value> = self.invoke(&NACK, queue, &args).await?;
        match reply.as_slice() {
            [ok] if int(ok)? == 0 => Ok(None),
            [_, state, due] => Ok(Some((
                State::parse(&text(state)?)?,
                u64::try_from(int(due)?).unwrap_or(0),
            ))),
            _ => Err(unexpected("nack")),
        }
    }

    /// Extends a lease to `lease_ms` from now; the new deadline, or `None` when stale.
    pub async fn extend(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<Option<u64>> {
        let lease = lease_ms.to_string();
        let args: [&[u8]; 3] = [id.as_bytes(), token.as_bytes(), lease.as_bytes()];
        let reply: Vec<i64> = self.invoke(&EXTEND, queue, &args).await?;
        match reply.as_slice() {
            [0] => Ok(None),
            [1, deadline] => Ok(Some(u64::try_from(*deadline).unwrap_or(0))),
            _ => Err(unexpected("extend")),
        }
    }

    /// Background upkeep: expires lapsed leases, promotes due jobs, removes kept
    /// completed jobs past their time.
    pub async fn reap(&self, queue: &str, limit: usize) -> Result<Reaped> {
        let limit = limit.to_string();
        let args: [&[u8]; 3] = [
            QUEUE_WAKE_CHANNEL.as_bytes(),
            queue.as_bytes(),
            limit.as_bytes(),
        ];
        let (expired, promoted, removed): (i64, i64, i64) =
            self.invoke(&REAP, queue, &args).await?;
        Ok(Reaped {
            expired,
            promoted,
            removed,
        })
    }

    /// Moves dead jobs (these ids, or the oldest `limit`) back to waiting.
    pub async fn redrive(&self, queue: &str, ids: &[String], limit: usize) -> Result<i64> {
        let limit = limit.to_string();
        let mut args: Vec<&[u8]> = vec![
            QUEUE_WAKE_CHANNEL.as_bytes(),
            queue.as_bytes(),
            limit.as_bytes(),
        ];
        args.extend(ids.iter().map(|id| id.as_bytes()));
        self.invoke(&REDRIVE, queue, &args).await
    }

    /// Deletes the job `id` unless a consumer holds it; returns the state it
    /// had, `Some(Active)` when it was left alone, None when there is no job.
    pub async fn delete_job(&self, queue: &str, id: &str) -> Result<Option<State>> {
        let args: [&[u8]; 3] = [
            QUEUE_WAKE_CHANNEL.as_bytes(),
            queue.as_bytes(),
            id.as_bytes(),
        ];
        let state: Option<String> = self.invoke(&DELETE, queue, &args).await?;
        state.as_deref().map(State::parse).transpose()
    }

    /// The queue's [`QueueMeta::HISTORY`] counts per minute, for the 60 minutes
    /// ending with the current one (Redis server time), oldest first: the
    /// minute (since the epoch) and one count per counter.
    pub async fn history(
        &self,
        queue: &str,
    ) -> Result<Vec<(u64, [u64; QueueMeta::HISTORY.len()])>> {
        let history = &QueueKeys::new(queue).history;
        let mut conn = self.conn().await?;
        let ((seconds, _), fields): ((u64, u64), HashMap<String, u64>) = redis::pipe()
            .cmd("TIME")
            .hgetall(history)
            .query_async(&mut conn)
            .await?;
        let now = seconds / 60;
        let minutes = (now.saturating_sub(59)..=now)
            .map(|minute| {
                let mut counts = [0; QueueMeta::HISTORY.len()];
                for (count, field) in counts.iter_mut().zip(QueueMeta::HISTORY) {
                    let slot = format!("{field}:{}", minute % 60);
                    if fields.get(&format!("{slot}@")) == Some(&minute) {
                        *count = fields.get(&slot).copied().unwrap_or(0);
                    }
                }
                (minute, counts)
            })
            .collect();
        Ok(minutes)
    }

    /// Deletes every pending (waiting, delayed) or dead job, in chunks.
    pub async fn purge(&self, queue: &str, dead: bool) -> Result<i64> {
        let chunk = PURGE_CHUNK.to_string();
        let kind: &[u8] = if dead { b"dead" } else { b"pending" };
        let mut total = 0;
        loop {
            let deleted: i64 = self
                .invoke(&PURGE, queue, &[kind, chunk.as_bytes()])
                .await?;
            total += deleted;
            if deleted == 0 {
                return Ok(total);
            }
        }
    }

    /// Ms since the oldest job ready for delivery was enqueued (None when no
    /// job waits). A read: no replica confirmation in durable mode.
    pub async fn oldest_waiting_ms(&self, queue: &str) -> Result<Option<u64>> {
        let mut invocation = OLDEST.prepare_invoke();
        for key in QueueKeys::new(queue).in_script_order() {
            invocation.key(key);
        }
        invocation.arg(OLDEST_LEVELS);
        let age: i64 = invocation.invoke_async(&mut self.conn().await?).await?;
        Ok(u64::try_from(age).ok())
    }

    /// Reads a job.
    pub async fn get_job(&self, queue: &str, id: &str) -> Result<Option<StoredJob>> {
        let keys = QueueKeys::new(queue);
        let (record, payload, result): (MaybeBytes, MaybeBytes, MaybeBytes) = redis::pipe()
            .cmd("HGET")
            .arg(&keys.jobs)
            .arg(id)
            .cmd("HGET")
            .arg(&keys.payloads)
            .arg(id)
            .cmd("HGET")
            .arg(&keys.results)
            .arg(id)
            .query_async(&mut self.conn().await?)
            .await?;
        record
            .map(|r| {
                Ok(StoredJob {
                    id: id.to_owned(),
                    record: JobRecord::decode(&r)?,
                    payload: payload.unwrap_or_default(),
                    result,
                })
            })
            .transpose()
    }

    /// Counts per state and the queue's settings.
    pub async fn stats(&self, queue: &str) -> Result<Stats> {
        let keys = QueueKeys::new(queue);
        #[allow(clippy::type_complexity)]
        let (waiting, backlog, delayed, active, completed, dead, meta, counters): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            (Option<String>, Option<u32>, Option<u64>),
            Vec<Option<u64>>,
        ) = redis::pipe()
            .zcard(&keys.waiting)
            .zcard(&keys.backlog)
            .zcard(&keys.delayed)
            .zcard(&keys.active)
            .zcard(&keys.completed)
            .zcard(&keys.dead)
            .cmd("HMGET")
            .arg(&keys.meta)
            .arg(&[
                QueueMeta::PAUSED,
                QueueMeta::RATE_MAX,
                QueueMeta::RATE_WINDOW,
            ])
            .cmd("HMGET")
            .arg(&keys.meta)
            .arg(&QueueMeta::COUNTERS)
            .query_async(&mut self.conn().await?)
            .await?;
        let mut events = QueueCounters::default();
        for (slot, value) in events.iter_mut().zip(counters) {
            *slot = value.unwrap_or(0);
        }
        Ok(Stats {
            waiting: waiting + backlog,
            delayed,
            active,
            completed,
            dead,
            paused: meta.0.as_deref() == Some("1"),
            rate_max: meta.1.unwrap_or(0),
            rate_window_ms: meta.2.unwrap_or(0),
            counters: events,
        })
    }

    /// A page of at most `size` jobs in `state`, in the order of the state's
    /// index (see `queue.lua`), after `after` (a position this returned for an
    /// earlier page); the index's total; and the position the next page starts
    /// after (`None` on the last page).
    pub async fn list_jobs(
        &self,
        queue: &str,
        state: State,
        after: Option<&str>,
        size: usize,
    ) -> Result<(Vec<StoredJob>, i64, Option<String>)> {
        let keys = QueueKeys::new(queue);
        let index = match state {
            State::Waiting => &keys.waiting,
            State::Delayed => &keys.delayed,
            State::Active => &keys.active,
            State::Completed => &keys.completed,
            State::Dead => &keys.dead,
        };
        let mut conn = self.conn().await?;
        let start = match after.map(index_position) {
            None => 0,
            Some(None) => {
                return Err(Error::invalid(
                    "page_token",
                    "is not a page token this server gave out",
                ));
            }
            Some(Some((score, id))) => {
                // Where the last job listed is now, or where it would be if it
                // left the index meanwhile (redriven, purged, delivered).
                let (rank, earlier, same_score): (Option<usize>, usize, Vec<String>) =
                    redis::pipe()
                        .zrank(index, id)
                        .zcount(index, "-inf", format!("({score}"))
                        .zrangebyscore(index, score, score)
                        .query_async(&mut conn)
                        .await?;
                rank.map_or_else(
                    || {
                        earlier
                            + same_score
                                .iter()
                                .filter(|other| other.as_str() < id)
                                .count()
                    },
                    |rank| rank + 1,
                )
            }
        };
        let last = start + size.max(1) - 1;
        let (page, total): (Vec<(String, f64)>, i64) = redis::pipe()
            .zrange_withscores(
                index,
                isize::try_from(start).unwrap_or(isize::MAX),
                isize::try_from(last).unwrap_or(isize::MAX),
            )
            .zcard(index)
            .query_async(&mut conn)
            .await?;
        let more = usize::try_from(total).is_ok_and(|total| total > last + 1);
        let next = page
            .last()
            .filter(|_| more)
            .map(|(id, score)| format!("{score}/{id}"));
        let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
        if ids.is_empty() {
            return Ok((Vec::new(), total, None));
        }
        let (records, payloads): (Vec<MaybeBytes>, Vec<MaybeBytes>) = redis::pipe()
            .cmd("HMGET")
            .arg(&keys.jobs)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&keys.payloads)
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        let jobs = ids
            .into_iter()
            .zip(records)
            .zip(payloads)
            .filter_map(|((id, record), payload)| {
                record.map(|r| {
                    Ok(StoredJob {
                        id,
                        record: JobRecord::decode(&r)?,
                        payload: payload.unwrap_or_default(),
                        result: None,
                    })
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((jobs, total, next))
    }

    /// Pauses or resumes deliveries; resuming wakes consumers.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let meta = &QueueKeys::new(queue).meta;
        let mut conn = self.conn().await?;
        if paused {
            let _: () = redis::cmd("HSET")
                .arg(meta)
                .arg(QueueMeta::PAUSED)
                .arg(1)
                .query_async(&mut conn)
                .await?;
        } else {
            let _: () = redis::cmd("HDEL")
                .arg(meta)
                .arg(QueueMeta::PAUSED)
                .query_async(&mut conn)
                .await?;
            let _: () = redis::cmd("PUBLISH")
                .arg(QUEUE_WAKE_CHANNEL)
                .arg(wake_message(u64::from(u32::MAX), queue))
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Sets (max > 0) or clears the rate limit.
    pub async fn set_rate_limit(&self, queue: &str, max: u32, window_ms: u64) -> Result<()> {
        let meta = &QueueKeys::new(queue).meta;
        let mut conn = self.conn().await?;
        if max > 0 {
            let _: () = redis::cmd("HSET")
                .arg(meta)
                .arg(QueueMeta::RATE_MAX)
                .arg(max)
                .arg(QueueMeta::RATE_WINDOW)
                .arg(window_ms)
                .query_async(&mut conn)
                .await?;
        } else {
            let _: () = redis::cmd("HDEL")
                .arg(meta)
                .arg(QueueMeta::RATE_MAX)
                .arg(QueueMeta::RATE_WINDOW)
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Every registered queue (qualified names, every tenant's), sorted.
    pub async fn list_queues(&self) -> Result<Vec<String>> {
        self.registry.all(&self.redis).await
    }

    /// A page of at most `size` queue names after `after`, sorted, and whether
    /// more follow: the names `visible` returns for registered qualified names.
    pub async fn queue_page(
        &self,
        visible: impl Fn(&str) -> Option<String>,
        after: Option<&str>,
        size: usize,
    ) -> Result<(Vec<String>, bool)> {
        self.registry.page(&self.redis, visible, after, size).await
    }
}

/// A job's place in a state's index, as `list_jobs` writes it into a page
/// token: its score there and its id.
fn index_position(position: &str) -> Option<(f64, &str)> {
    let (died, id) = position.split_once('/')?;
    Some((died.parse().ok()?, id))
}

/// How nack.lua fails a job (its ARGV[5..8]).
struct Failure<'a> {
    error: &'a str,
    permanent: bool,
    /// Ms, or "-1" for the job's backoff.
    retry_after_ms: &'a str,
    /// The lease never reached a client: the attempt is not counted.
    undelivered: bool,
}

/// Parses what `lease()` in queue.lua returns: the hint, then 3 values per job.
fn leased(reply: &[Value], script: &str) -> Result<Dequeued> {
    let (hint, rest) = reply.split_first().ok_or_else(|| unexpected(script))?;
    let jobs = rest
        .chunks(3)
        .map(|c| match c {
            [id, payload, record] => Ok(Leased {
                id: text(id)?,
                payload: bytes(payload)?,
                record: JobRecord::decode(&bytes(record)?)?,
            }),
            _ => Err(unexpected(script)),
        })
        .collect::<Result<Vec<_>>>()?;
    let hint = int(hint)?;
    Ok(Dequeued {
        retry_in_ms: (hint > 0).then(|| u64::try_from(hint).unwrap_or(0)),
        jobs,
    })
}

fn unexpected(what: &str) -> Error {
    Error::Internal(format!("unexpected reply from the {what} script"))
}

fn text(value: &Value) -> Result<String> {
    redis::from_redis_value_ref(value)
        .map_err(|e| Error::Internal(format!("unexpected script reply: {e}")))
}

fn bytes(value: &Value) -> Result<Vec<u8>> {
    redis::from_redis_value_ref(value)
        .map_err(|e| Error::Internal(format!("unexpected script reply: {e}")))
}

fn int(value: &Value) -> Result<i64> {
    redis::from_redis_value_ref(value)
        .map_err(|e| Error::Internal(format!("unexpected script reply: {e}")))
}
