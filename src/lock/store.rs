//! Redis-facing lock operations, on one Redis (standalone or cluster) or, in
//! Redlock mode, on a majority of N independent Redis servers.
//!
//! Redlock: the same script runs on every node concurrently with the same token; a
//! grant needs a majority within the validity time (ttl minus elapsed time minus
//! clock drift). The granted fencing token is the highest counter among the
//! majority, and each node of the majority is raised to it, so any later majority
//! (which overlaps this one) grants a higher token: monotonic across changing
//! majorities. A failed attempt is undone on every node.
//!
//! A node restarted without its data counts from 1 again, and a majority of it and
//! a node that missed the last grants would grant a lower token. So in Redlock mode
//! no node grants a token below its own clock in ms since the epoch: tokens stay
//! monotonic across such a restart as long as the nodes' clocks do not go back and
//! the restart takes longer than the grants issued beyond one per ms before it.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use redis::Script;

use super::index::{Change, HeldIndex};
use crate::error::{Error, Result};
use crate::redis::Redis;
use crate::redis::keys::{LOCK_WAKE_CHANNEL, lock_keys};
use crate::time::millis as ms;
use crate::waker::wake_message;

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("acquire.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("release.lua")));
static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("extend.lua")));
static DESCRIBE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("describe.lua")));
static WAIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("wait.lua")));
static RAISE_FENCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("raise_fence.lua")));

/// How long a waiter counts as waiting (for Describe) before it must show up again.
const WAITER_PRESENCE: Duration = Duration::from_secs(10);

/// How often a waiter shows up again: well within [`WAITER_PRESENCE`].
pub(super) const WAITER_REFRESH: Duration = Duration::from_secs(3);

/// The outcome of one acquire attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Granted: the fencing token and when the lease ends at the earliest.
    Granted {
        /// Fencing token.
        fence: u64,
        /// The attempt's start plus the ttl (less the clock drift allowance in
        /// Redlock mode): every lease it took started after that start, so none
        /// ends before this.
        expires_at: SystemTime,
    },
    /// Held by someone else for about this long.
    Held(Duration),
}

/// A lock's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockState {
    /// Held now.
    pub held: bool,
    /// Time left when held.
    pub ttl: Option<Duration>,
    /// Last fencing token.
    pub fence: u64,
    /// Live waiters.
    pub waiters: i64,
}

/// The clock drift allowance of a Redlock lease, as in the Redlock description:
/// 1% of the ttl plus 2 ms.
fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// Lock operations.
#[derive(Debug, Clone)]
pub struct LockStore {
    /// Where wake-ups are published (the main Redis, which every instance's hub watches).
    main: Arc<Redis>,
    /// The index of held locks, for ListLocks.
    index: HeldIndex,
    /// The lock servers: the main Redis alone, or the Redlock nodes.
    nodes: Vec<Arc<Redis>>,
}

impl LockStore {
    /// Locks on the main Redis.
    pub fn single(main: Arc<Redis>) -> Self {
        Self {
            nodes: vec![main.clone()],
            index: HeldIndex::new(main.clone()),
            main,
        }
    }

    /// Locks on a majority of these independent Redis servers.
    pub fn redlock(main: Arc<Redis>, nodes: Vec<Arc<Redis>>) -> Self {
        Self {
            index: HeldIndex::new(main.clone()),
            main,
            nodes,
        }
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn redlock_mode(&self) -> bool {
        self.nodes.len() > 1
    }

    /// How long one node may take to answer for a lease of `ttl`: in Redlock mode
    /// a tenth of the ttl (as the Redlock description asks: small against the
    /// validity, so one hung node cannot use it up), never more than the Redis
    /// timeout.
    fn node_timeout(&self, ttl: Duration) -> Duration {
        let timeout = self.nodes[0].command_timeout();
        if self.redlock_mode() {
            timeout.min((ttl / 10).max(Duration::from_millis(5)))
        } else {
            timeout
        }
    }

    /// Runs a script on every node concurrently, each answer within `timeout`.
    async fn on_all<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
        timeout: Duration,
    ) -> Vec<Result<T>> {
        join_all(self.nodes.iter().map(|node| async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            tokio::time::timeout(timeout, async {
                let mut conn = node.conn().await?;
                let reply = invocation.invoke_async::<T>(&mut conn).await?;
                node.await_replicas(&mut conn).await?;
                Ok(reply)
            })
            .await
            .map_err(|_| Error::OutcomeUnknown("lock server did not answer in time".into()))?
        }))
        .await
    }

    fn too_few(&self, answered: usize) -> Error {
        Error::Unavailable(format!(
            "only {answered} of {} lock servers answered; a grant needs {}",
            self.nodes.len(),
            self.quorum()
        ))
    }

    /// One attempt to acquire `resource` for `token`. `ticket` registers the caller
    /// as a waiter when the lock is held.
    pub async fn acquire(
        &self,
        resource: &str,
        token: &str,
        ttl: Duration,
        ticket: Option<&str>,
    ) -> Result<Attempt> {
        let attempt = self.attempt(resource, token, ttl, ticket).await?;
        if matches!(attempt, Attempt::Granted { .. }) {
            self.index.record(resource, token, Change::Grant(ttl));
        }
        Ok(attempt)
    }

    /// The qualified names of the locks whose lease, by the index, has not
    /// ended, in no order.
    pub async fn held(&self) -> Result<Vec<String>> {
        self.index.held().await
    }

    async fn attempt(
        &self,
        resource: &str,
        token: &str,
        ttl: Duration,
        ticket: Option<&str>,
    ) -> Result<Attempt> {
        let keys = lock_keys(resource);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (ttl_ms, presence) = (ms(ttl).to_string(), ms(WAITER_PRESENCE).to_string());
        let started = SystemTime::now();
        let timeout = self.node_timeout(ttl);
        let clock_floor = if self.redlock_mode() { "1" } else { "0" };
        let replies: Vec<Result<(i64, u64, i64)>> = self
            .on_all(
                &ACQUIRE,
                &keys,
                &[token, &ttl_ms, ticket.unwrap_or(""), &presence, clock_floor],
                timeout,
            )
            .await;
        let held_for = replies
            .iter()
            .filter_map(|r| {
                r.as_ref()
                    .ok()
                    .filter(|(ok, _, _)| *ok == 0)
                    .map(|(_, _, pttl)| *pttl)
            })
            .max()
            .unwrap_or(0);
        if !self.redlock_mode() {
            return match replies.into_iter().next() {
                Some(Ok((1, fence, _))) => Ok(Attempt::Granted {
                    fence,
                    expires_at: started + ttl,
                }),
                Some(Ok(_)) => Ok(Attempt::Held(Duration::from_millis(
                    u64::try_from(held_for).unwrap_or(0),
                ))),
                Some(Err(e)) => Err(e),
                None => Err(self.too_few(0)),
            };
        }
        let granted = self
            .settle_majority(&keys, token, ttl, started, timeout, &replies)
            .await?;
        Ok(granted.unwrap_or(Attempt::Held(Duration::from_millis(
            u64::try_from(held_for.max(1)).unwrap_or(1),
        ))))
    }

    /// Redlock: the grant when a majority of nodes granted within the lease's
    /// validity and raised their fences to the highest token; otherwise undoes
    /// what this attempt took, and None (or an error when too few answered).
    async fn settle_majority(
        &self,
        keys: &[&str],
        token: &str,
        ttl: Duration,
        started: SystemTime,
        timeout: Duration,
        replies: &[Result<(i64, u64, i64)>],
    ) -> Result<Option<Attempt>> {
        let answered = replies.iter().filter(|r| r.is_ok()).count();
        let granted: Vec<u64> = replies
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|(ok, _, _)| *ok == 1)
            .map(|(_, fence, _)| *fence)
            .collect();
        let expires_at = started + ttl.saturating_sub(drift(ttl));
        if granted.len() >= self.quorum() && SystemTime::now() < expires_at {
            let fence = granted.iter().copied().max().unwrap_or(0);
            let fence_text = fence.to_string();
            let raised: Vec<Result<u64>> = self
                .on_all(
                    &RAISE_FENCE,
                    &[keys[1], keys[0]],
                    &[&fence_text, token],
                    timeout,
                )
                .await;
            // Valid only if the lease is still valid once the fences are raised.
            if raised.iter().filter(|r| r.is_ok()).count() >= self.quorum()
                && SystemTime::now() < expires_at
            {
                return Ok(Some(Attempt::Granted { fence, expires_at }));
            }
        }
        // Not granted: undo whatever this attempt took.
        self.on_all::<i64>(&RELEASE, &[keys[0]], &[token], timeout)
            .await;
        if answered < self.quorum() {
            return Err(self.too_few(answered));
        }
        Ok(None)
    }

    /// Keeps `ticket` counted as a waiter for another [`WAITER_PRESENCE`], on every
    /// node where it still waits. Best effort: a node that fails misses one refresh.
    pub async fn keep_waiting(&self, resource: &str, ticket: &str) {
        let waiters = &lock_keys(resource)[2];
        let presence = ms(WAITER_PRESENCE).to_string();
        let timeout = self.node_timeout(Duration::MAX);
        let _: Vec<Result<i64>> = self
            .on_all(&WAIT, &[waiters], &[ticket, &presence], timeout)
            .await;
    }

    /// Stops counting `ticket` as a waiter.
    pub async fn forget_waiter(&self, resource: &str, ticket: &str) {
        let waiters = &lock_keys(resource)[2];
        for node in &self.nodes {
            if let Ok(mut conn) = node.conn().await {
                let _: Result<i64, _> = redis::cmd("ZREM")
                    .arg(waiters)
                    .arg(ticket)
                    .query_async(&mut conn)
                    .await;
            }
        }
    }

    /// Releases; true when `token` held the lock (on any node). Wakes waiters.
    pub async fn release(&self, resource: &str, token: &str) -> Result<bool> {
        let keys = lock_keys(resource);
        let timeout = self.node_timeout(Duration::MAX);
        let replies: Vec<Result<i64>> = self.on_all(&RELEASE, &[&keys[0]], &[token], timeout).await;
        if replies.iter().all(Result::is_err) {
            return Err(self.too_few(0));
        }
        let released = replies.iter().any(|r| matches!(r, Ok(1)));
        if released {
            self.index.record(resource, token, Change::Release);
            let _: Result<i64, _> = redis::cmd("PUBLISH")
                .arg(LOCK_WAKE_CHANNEL)
                .arg(wake_message(1, resource))
                .query_async(&mut self.main.conn().await?)
                .await;
        }
        Ok(released)
    }

    /// Extends; when the extended lease ends at the earliest (from the call's
    /// start, as for a grant), or None when `token` does not hold the lock.
    pub async fn extend(
        &self,
        resource: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<SystemTime>> {
        let keys = lock_keys(resource);
        let started = SystemTime::now();
        let ttl_ms = ms(ttl).to_string();
        let replies: Vec<Result<i64>> = self
            .on_all(
                &EXTEND,
                &[&keys[0]],
                &[token, &ttl_ms],
                self.node_timeout(ttl),
            )
            .await;
        let answered = replies.iter().filter(|r| r.is_ok()).count();
        let extended = replies.iter().filter(|r| matches!(r, Ok(1))).count();
        if answered < self.quorum() {
            return Err(self.too_few(answered));
        }
        if extended < self.quorum() {
            return Ok(None);
        }
        self.index.record(resource, token, Change::Renew(ttl));
        let drift = if self.redlock_mode() {
            drift(ttl)
        } else {
            Duration::ZERO
        };
        Ok(Some(started + ttl.saturating_sub(drift)))
    }

    /// The lock's state (in Redlock mode, as a majority of nodes sees it).
    pub async fn describe(&self, resource: &str) -> Result<LockState> {
        let keys = lock_keys(resource);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let timeout = self.node_timeout(Duration::MAX);
        let replies: Vec<Result<(i64, i64, u64, i64)>> =
            self.on_all(&DESCRIBE, &keys, &[], timeout).await;
        let views: Vec<(i64, i64, u64, i64)> = replies.into_iter().filter_map(Result::ok).collect();
        if views.len() < self.quorum() {
            return Err(self.too_few(views.len()));
        }
        let holding: Vec<i64> = views.iter().filter(|v| v.0 == 1).map(|v| v.1).collect();
        let held = holding.len() >= self.quorum();
        Ok(LockState {
            held,
            ttl: held.then(|| {
                Duration::from_millis(
                    u64::try_from(holding.iter().copied().min().unwrap_or(0)).unwrap_or(0),
                )
            }),
            fence: views.iter().map(|v| v.2).max().unwrap_or(0),
            waiters: views.iter().map(|v| v.3).max().unwrap_or(0),
        })
    }
}
