//! Group commit: concurrent callers writing to one Redis key share one Redis call.
//!
//! Each key with writes in flight has a lane. The first caller opens it and a
//! flush task starts; callers that arrive while a call for that key is running
//! wait in the lane, and the next call takes all of them (up to `max_items` and
//! [`MAX_BATCH_BYTES`]; an item is never split). A caller alone pays only a task
//! hand-off: its call starts at once. Many callers pay one Redis call, one round
//! trip and one wake-up of Redis per batch instead of one each.
//!
//! One call per key at a time keeps each caller's items in the order it submitted
//! them. The flush runs in its own task, so a caller that goes away (its client
//! cancelled) never strands the others. Each caller gets its own item's outcome,
//! or the call's error.
//!
//! Users: enqueues of one queue (`queue::batcher`), appends to one stream
//! (`stream::StreamStore`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Payload bytes one merged call carries at most (a single larger item still goes
/// alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// What an item weighs against a batch's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    /// Entries it counts as against `max_items`.
    pub items: usize,
    /// Payload bytes it counts as against [`MAX_BATCH_BYTES`].
    pub bytes: usize,
}

/// The Redis call that commits a batch of items for one key.
pub trait Commit: Send + Sync + 'static {
    /// What a caller submits.
    type Item: Send + 'static;
    /// What a caller gets back for its item.
    type Done: Send + 'static;

    /// What `item` weighs against the batch limits.
    fn weight(item: &Self::Item) -> Weight;

    /// Commits `items` for `key` in one call: one outcome per item, in order, or
    /// one error for all of them.
    fn commit(
        &self,
        key: &str,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<Vec<Self::Done>>> + Send;
}

type Reply<T> = oneshot::Sender<Result<T>>;
type Lane<C> = Vec<(<C as Commit>::Item, Reply<<C as Commit>::Done>)>;

/// Merges concurrent submissions per key into calls of `C`.
pub struct GroupCommit<C: Commit> {
    committer: C,
    /// Key → items waiting for the next call. A lane exists exactly while its flush
    /// task runs.
    lanes: Mutex<HashMap<String, Lane<C>>>,
    max_items: usize,
}

impl<C: Commit + std::fmt::Debug> std::fmt::Debug for GroupCommit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("committer", &self.committer)
            .field("open_lanes", &self.lanes().len())
            .field("max_items", &self.max_items)
            .finish()
    }
}

impl<C: Commit> GroupCommit<C> {
    /// Merges at most `max_items` items' weight per call of `committer`.
    pub fn new(committer: C, max_items: usize) -> Self {
        Self {
            committer,
            lanes: Mutex::default(),
            max_items: max_items.max(1),
        }
    }

    /// Commits `item` for `key` in the next call for that key.
    pub async fn submit(self: &Arc<Self>, key: &str, item: C::Item) -> Result<C::Done> {
        let (reply, outcome) = oneshot::channel();
        let opened = {
            let mut lanes = self.lanes();
            match lanes.get_mut(key) {
                Some(lane) => {
                    lane.push((item, reply));
                    false
                }
                None => {
                    lanes.insert(key.to_owned(), vec![(item, reply)]);
                    true
                }
            }
        };
        if opened {
            tokio::spawn(self.clone().flush(key.to_owned()));
        }
        outcome
            .await
            .map_err(|_| Error::Internal("the group commit was dropped".into()))?
    }

    /// Commits `items` for `key` in one call now, outside the lanes, in a task of
    /// its own: a caller whose client goes away drops this future, never the call.
    pub async fn commit_detached(
        self: &Arc<Self>,
        key: String,
        items: Vec<C::Item>,
    ) -> Result<Vec<C::Done>> {
        let this = self.clone();
        tokio::spawn(async move { this.committer.commit(&key, items).await })
            .await
            .map_err(|e| Error::Internal(format!("the commit task failed: {e}")))?
    }

    /// Runs calls for `key` until its lane is empty, then closes the lane.
    async fn flush(self: Arc<Self>, key: String) {
        while let Some(batch) = self.next_batch(&key) {
            let (items, replies): (Vec<C::Item>, Vec<Reply<C::Done>>) = batch.into_iter().unzip();
            let expected = items.len();
            match self.committer.commit(&key, items).await {
                Ok(outcomes) if outcomes.len() == expected => {
                    for (outcome, reply) in outcomes.into_iter().zip(replies) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcomes) => {
                    let e = Error::Internal(format!(
                        "a group commit returned {} outcomes for {expected} items",
                        outcomes.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// The lanes. Nothing panics while holding the lock, and a lane left half
    /// updated is still consistent, so a poisoned lock is used as it is.
    fn lanes(&self) -> MutexGuard<'_, HashMap<String, Lane<C>>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next batch off `key`'s lane, or closes the lane when it is empty.
    fn next_batch(&self, key: &str) -> Option<Lane<C>> {
        let mut lanes = self.lanes();
        let lane = lanes.get_mut(key)?;
        if lane.is_empty() {
            lanes.remove(key);
            return None;
        }
        let (mut items, mut bytes, mut take) = (0, 0, 0);
        for (item, _) in lane.iter() {
            let weight = C::weight(item);
            if take > 0
                && (items + weight.items > self.max_items || bytes + weight.bytes > MAX_BATCH_BYTES)
            {
                break;
            }
            items += weight.items;
            bytes += weight.bytes;
            take += 1;
        }
        Some(lane.drain(..take).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    use super::*;

    /// An item: its number and its weight in items.
    type Item = (u32, usize);

    /// Records each batch, and holds each call until the test releases it. Item 99
    /// fails its batch.
    #[derive(Debug)]
    struct Gate {
        batches: Mutex<Vec<Vec<u32>>>,
        release: Semaphore,
    }

    impl Commit for Arc<Gate> {
        type Item = Item;
        type Done = u32;

        fn weight(item: &Item) -> Weight {
            Weight {
                items: item.1,
                bytes: 0,
            }
        }

        async fn commit(&self, _key: &str, items: Vec<Item>) -> Result<Vec<u32>> {
            let numbers: Vec<u32> = items.iter().map(|(n, _)| *n).collect();
            self.batches.lock().expect("batches").push(numbers.clone());
            self.release.acquire().await.expect("open").forget();
            if numbers.contains(&99) {
                return Err(Error::Internal("item 99".into()));
            }
            Ok(numbers.iter().map(|n| n * 10).collect())
        }
    }

    fn setup(max_items: usize) -> (Arc<Gate>, Arc<GroupCommit<Arc<Gate>>>) {
        let gate = Arc::new(Gate {
            batches: Mutex::default(),
            release: Semaphore::new(0),
        });
        (gate.clone(), Arc::new(GroupCommit::new(gate, max_items)))
    }

    fn submit(lanes: &Arc<GroupCommit<Arc<Gate>>>, item: Item) -> JoinHandle<Result<u32>> {
        let lanes = lanes.clone();
        tokio::spawn(async move { lanes.submit("key", item).await })
    }

    /// Polls until `done` holds, or panics after a deadline.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn batches(gate: &Gate) -> Vec<Vec<u32>> {
        gate.batches.lock().expect("batches").clone()
    }

    /// A caller's outcome, which must be a success.
    async fn done(caller: JoinHandle<Result<u32>>) -> u32 {
        caller.await.expect("task").expect("committed")
    }

    fn waiting(lanes: &GroupCommit<Arc<Gate>>) -> usize {
        lanes.lanes().get("key").map_or(0, Vec::len)
    }

    #[tokio::test]
    async fn callers_arriving_during_a_call_share_the_next_and_get_their_own_outcome() {
        let (gate, lanes) = setup(16);
        let first = submit(&lanes, (1, 1));
        until("the first call", || batches(&gate).len() == 1).await;
        let others: Vec<_> = (2..=4).map(|n| submit(&lanes, (n, 1))).collect();
        until("three waiting callers", || waiting(&lanes) == 3).await;
        gate.release.add_permits(2);
        assert_eq!(done(first).await, 10);
        for (n, other) in (2..=4).zip(others) {
            assert_eq!(done(other).await, n * 10);
        }
        assert_eq!(batches(&gate), vec![vec![1], vec![2, 3, 4]]);
        until("the lane to close", || lanes.lanes().is_empty()).await;
    }

    #[tokio::test]
    async fn a_batch_stays_within_max_items_and_never_splits_an_item() {
        let (gate, lanes) = setup(4);
        let first = submit(&lanes, (1, 1));
        until("the first call", || batches(&gate).len() == 1).await;
        // Weights 3, 1, 2, 5: [3, 1] fill a batch of 4; 5 is over the limit but alone.
        let mut others = Vec::new();
        for (n, weight) in [(2, 3), (3, 1), (4, 2), (5, 5)] {
            others.push(submit(&lanes, (n, weight)));
            until("the caller to wait", || waiting(&lanes) == others.len()).await;
        }
        gate.release.add_permits(4);
        done(first).await;
        for other in others {
            done(other).await;
        }
        assert_eq!(batches(&gate), vec![vec![1], vec![2, 3], vec![4], vec![5]]);
    }

    #[tokio::test]
    async fn a_failed_call_fails_its_callers_only() {
        let (gate, lanes) = setup(2);
        let first = submit(&lanes, (1, 1));
        until("the first call", || batches(&gate).len() == 1).await;
        let failing = [submit(&lanes, (99, 1))];
        until("the caller to wait", || waiting(&lanes) == 1).await;
        let sharing = submit(&lanes, (2, 1));
        until("the caller to wait", || waiting(&lanes) == 2).await;
        let later = submit(&lanes, (3, 1));
        until("the caller to wait", || waiting(&lanes) == 3).await;
        gate.release.add_permits(3);
        assert_eq!(done(first).await, 10);
        for caller in failing.into_iter().chain([sharing]) {
            let e = caller.await.expect("task").expect_err("its batch failed");
            assert!(e.to_string().contains("item 99"), "{e}");
        }
        assert_eq!(done(later).await, 30);
        assert_eq!(batches(&gate), vec![vec![1], vec![99, 2], vec![3]]);
    }

    #[tokio::test]
    async fn a_detached_commit_bypasses_the_lanes() {
        let (gate, lanes) = setup(16);
        gate.release.add_permits(1);
        let done = lanes
            .commit_detached("key".into(), vec![(7, 1), (8, 1)])
            .await
            .expect("committed");
        assert_eq!(done, vec![70, 80]);
        assert!(lanes.lanes().is_empty());
    }
}
