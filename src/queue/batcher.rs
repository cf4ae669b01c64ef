//! Group commit for single-job enqueues (unary `Enqueue` and `EnqueueStream`
//! messages): concurrent jobs for one queue share one script call.
//!
//! Each queue with enqueues in flight has a lane. The first caller opens it and a
//! flush task starts; callers that arrive while a script call is running wait in the
//! lane, and the next call takes all of them (up to `max_jobs` jobs and
//! [`MAX_BATCH_BYTES`] of payload). A caller alone pays only a task hand-off: its
//! script call starts at once. Many producers pay one script call, one Redis round
//! trip and one wake-up per batch instead of per job.
//!
//! The flush runs in its own task, so a caller that goes away (its client
//! cancelled) never strands the others. A batch is one atomic script call, as
//! `EnqueueBatch` is; each caller gets its own job's outcome, or the batch's error.
//! Every enqueue call (these, and `EnqueueBatch` through
//! [`EnqueueBatcher::enqueue_detached`]) also hands jobs to consumers of the queue
//! waiting in this process (`handoff.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use super::handoff::{Claim, Handed, IdleConsumers};
use super::store::{Dequeued, Enqueued, NewJob, QueueStore, Taker};
use crate::error::{Error, Result};

/// Payload bytes one merged script call carries at most (a single larger job still
/// goes alone).
const MAX_BATCH_BYTES: usize = 1 << 20;

type Reply = oneshot::Sender<Result<Enqueued>>;

/// Merges concurrent single-job enqueues per queue.
#[derive(Debug)]
pub(super) struct EnqueueBatcher {
    store: QueueStore,
    /// Queue → jobs waiting for the next script call. A lane exists exactly while
    /// its flush task runs.
    lanes: Mutex<HashMap<String, Vec<(NewJob, Reply)>>>,
    max_jobs: usize,
    /// Consumers waiting for work, which take jobs straight from a batch.
    idle: Arc<IdleConsumers>,
}

impl EnqueueBatcher {
    /// A batcher over `store` merging at most `max_jobs` jobs per script call and
    /// handing jobs to the consumers waiting in `idle`.
    pub(super) fn new(store: QueueStore, max_jobs: usize, idle: Arc<IdleConsumers>) -> Self {
        Self {
            store,
            lanes: Mutex::default(),
            max_jobs: max_jobs.max(1),
            idle,
        }
    }

    /// Enqueues `job` on `queue`, in the next script call for that queue.
    pub(super) async fn enqueue(self: &Arc<Self>, queue: &str, job: NewJob) -> Result<Enqueued> {
        let (reply, outcome) = oneshot::channel();
        let opened = {
            let mut lanes = self.lanes();
            match lanes.get_mut(queue) {
                Some(lane) => {
                    lane.push((job, reply));
                    false
                }
                None => {
                    lanes.insert(queue.to_owned(), vec![(job, reply)]);
                    true
                }
            }
        };
        if opened {
            tokio::spawn(self.clone().flush(queue.to_owned()));
        }
        outcome
            .await
            .map_err(|_| Error::Internal("the enqueue batch was dropped".into()))?
    }

    /// Runs script calls for `queue` until its lane is empty, then closes the lane.
    async fn flush(self: Arc<Self>, queue: String) {
        loop {
            let Some(batch) = self.next_batch(&queue) else {
                return;
            };
            let (jobs, replies): (Vec<NewJob>, Vec<Reply>) = batch.into_iter().unzip();
            match self.enqueue_now(&queue, &jobs).await {
                Ok(outcomes) => {
                    for (outcome, reply) in outcomes.into_iter().zip(replies) {
                        let _ = reply.send(Ok(outcome));
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

    /// Enqueues `jobs` in one script call now, in a task of its own (for
    /// `EnqueueBatch`): a caller whose client goes away drops this future, but a
    /// claimed consumer must always get its [`Handed`], or its credits stay
    /// reserved for good.
    pub(super) async fn enqueue_detached(
        self: &Arc<Self>,
        queue: String,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>> {
        let batcher = self.clone();
        tokio::spawn(async move { batcher.enqueue_now(&queue, &jobs).await })
            .await
            .map_err(|e| Error::Internal(format!("the enqueue task failed: {e}")))?
    }

    /// Enqueues `jobs` in one script call now, handing jobs to consumers waiting in
    /// this process. One outcome per job, in order. Runs to the end in a task that
    /// nobody cancels (a lane's flush task, or [`Self::enqueue_detached`]).
    async fn enqueue_now(&self, queue: &str, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        let claims = self.idle.claim(queue, jobs.len());
        let takers: Vec<Taker> = claims.iter().map(|c| c.taker).collect();
        let result = self
            .store
            .enqueue_handing_off(queue, jobs, &takers)
            .await
            .and_then(|(outcomes, handed)| {
                if outcomes.len() == jobs.len() {
                    Ok((outcomes, handed))
                } else {
                    Err(Error::Internal(format!(
                        "enqueue returned {} outcomes for {} jobs",
                        outcomes.len(),
                        jobs.len()
                    )))
                }
            });
        match result {
            Ok((outcomes, handed)) => {
                self.hand_over(queue, claims, Ok(handed)).await;
                Ok(outcomes)
            }
            Err(e) => {
                self.hand_over(queue, claims, Err(e.clone())).await;
                Err(e)
            }
        }
    }

    /// Settles every claim of a batch: each consumer gets its share of the leased
    /// jobs, in claim order (or the call's error). Jobs of a consumer that left
    /// meanwhile go back to the queue, their attempt not counted.
    async fn hand_over(&self, queue: &str, claims: Vec<Claim>, handed: Result<Dequeued>) {
        let (mut jobs, retry_in_ms, error) = match handed {
            Ok(found) => (found.jobs.into_iter(), found.retry_in_ms, None),
            Err(e) => (Vec::new().into_iter(), None, Some(e)),
        };
        let mut undelivered = Vec::new();
        for Claim { taker, inbox } in claims {
            let found = match &error {
                Some(e) => Err(e.clone()),
                None => Ok(Dequeued {
                    jobs: jobs.by_ref().take(taker.most).collect(),
                    retry_in_ms,
                }),
            };
            let handed = Handed {
                claimed: taker.most,
                found,
            };
            if let Err(mpsc::error::SendError(Handed {
                found: Ok(lost), ..
            })) = inbox.send(handed)
            {
                undelivered.extend(lost.jobs);
            }
        }
        for job in undelivered {
            if let Err(e) = self
                .store
                .release_undelivered(queue, &job.id, &job.record.token)
                .await
            {
                // The lease runs out and the reaper retries the job.
                tracing::warn!(queue, job = %job.id, error = %e, "could not give back a job whose consumer left");
            }
        }
    }

    /// The lanes. Nothing panics while holding the lock, and a lane left half
    /// updated is still consistent, so a poisoned lock is used as it is.
    fn lanes(&self) -> MutexGuard<'_, HashMap<String, Vec<(NewJob, Reply)>>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next batch off `queue`'s lane, or closes the lane when it is empty.
    fn next_batch(&self, queue: &str) -> Option<Vec<(NewJob, Reply)>> {
        let mut lanes = self.lanes();
        let lane = lanes.get_mut(queue)?;
        if lane.is_empty() {
            lanes.remove(queue);
            return None;
        }
        let mut bytes = 0;
        let mut take = 0;
        for (job, _) in lane.iter() {
            if take == self.max_jobs || (take > 0 && bytes + job.payload.len() > MAX_BATCH_BYTES) {
                break;
            }
            bytes += job.payload.len();
            take += 1;
        }
        Some(lane.drain(..take).collect())
    }
}
