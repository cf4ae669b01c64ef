//! The index of held locks that `ListLocks` reads (`rw:l:held:{index}:*` on
//! the main Redis; see `crate::redis::keys::HELD_LOCKS`).
//!
//! A lock call does not wait for it: each grant, renewal and release is handed
//! to one background task per process, which every [`FLUSH_EVERY`] sends what
//! came in as one script call (`held.lua`), keeping only the last change per
//! resource (this instance's changes arrive in the order they happened). So a
//! busy lock costs Redis one small script per interval, not one per call, and
//! ListLocks lags by about an interval. A batch that fails is dropped: the
//! index then misses those changes until the next renewal, or a released lock
//! stays in it until its lease would have ended (ListLocks reads each lock's
//! state before it shows it, so it never shows a free lock as held).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Script;
use tokio::sync::mpsc;

use crate::redis::Redis;
use crate::redis::keys::HELD_LOCKS;
use crate::time::millis;

/// How often the changes of the last interval go to Redis.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// The most changes one script call carries.
const MAX_BATCH: usize = 500;

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Granted for this long.
    Grant(Duration),
    /// Renewed for this long.
    Renew(Duration),
    /// Released.
    Release,
}

#[derive(Debug)]
struct Update {
    resource: String,
    token: String,
    change: Change,
}

/// The sending side of the index task, started on first use.
#[derive(Debug, Clone)]
pub(super) struct HeldIndex {
    main: Arc<Redis>,
    updates: Arc<OnceLock<mpsc::UnboundedSender<Update>>>,
}

impl HeldIndex {
    /// The index on `main`.
    pub(super) fn new(main: Arc<Redis>) -> Self {
        Self {
            main,
            updates: Arc::default(),
        }
    }

    /// Records that `token`'s lease of `resource` changed.
    pub(super) fn record(&self, resource: &str, token: &str, change: Change) {
        let updates = self.updates.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(flush_loop(self.main.clone(), rx));
            tx
        });
        // The task ends only when every sender is gone, so this cannot fail
        // while `self` lives.
        let _ = updates.send(Update {
            resource: resource.to_owned(),
            token: token.to_owned(),
            change,
        });
    }

    /// The qualified names of the locks whose lease, by the index, has not
    /// ended, in no order.
    pub(super) async fn held(&self) -> crate::error::Result<Vec<String>> {
        let now = millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(HELD_LOCKS[0])
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(&mut self.main.conn().await?)
            .await?)
    }
}

/// Collects updates and sends each interval's as one batch, until every
/// sender is gone.
async fn flush_loop(main: Arc<Redis>, mut updates: mpsc::UnboundedReceiver<Update>) {
    static HELD: std::sync::LazyLock<Script> =
        std::sync::LazyLock::new(|| Script::new(include_str!("held.lua")));
    // The last change per resource: this instance's arrive in order.
    let mut pending: HashMap<String, Update> = HashMap::new();
    while let Some(first) = updates.recv().await {
        pending.insert(first.resource.clone(), first);
        tokio::time::sleep(FLUSH_EVERY).await;
        while let Ok(update) = updates.try_recv() {
            pending.insert(update.resource.clone(), update);
        }
        let batch: Vec<Update> = pending.drain().map(|(_, update)| update).collect();
        for chunk in batch.chunks(MAX_BATCH) {
            send(&main, &HELD, chunk).await;
        }
    }
}

/// Sends one batch of changes; a failure is only logged (see the module docs).
async fn send(main: &Redis, script: &Script, updates: &[Update]) {
    let mut invocation = script.prepare_invoke();
    invocation.key(HELD_LOCKS[0]).key(HELD_LOCKS[1]);
    for update in updates {
        let (what, ttl) = match update.change {
            Change::Grant(ttl) => ("grant", ttl),
            Change::Renew(ttl) => ("renew", ttl),
            Change::Release => ("release", Duration::ZERO),
        };
        invocation
            .arg(&update.resource)
            .arg(&update.token)
            .arg(what)
            .arg(millis(ttl));
    }
    let sent: crate::error::Result<i64> =
        async { Ok(invocation.invoke_async(&mut main.conn().await?).await?) }.await;
    if let Err(error) = sent {
        tracing::debug!(changes = updates.len(), %error, "the held-lock index missed a batch");
    }
}
