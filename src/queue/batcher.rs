//! Group commit for single-job enqueues (unary `Enqueue` and `EnqueueStream`
//! messages): concurrent jobs for one queue share one script call, through the
//! lanes of [`GroupCommit`]. A batch is one atomic script call, as `EnqueueBatch`
//! is.
//!
//! Every enqueue call (these, and `EnqueueBatch` through
//! [`GroupCommit::commit_detached`]) also hands jobs to consumers of the queue
//! waiting in this process (`handoff.rs`). Both run to the end in a task that
//! nobody cancels: a claimed consumer must always get its [`Handed`], or its
//! credits stay reserved for good.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::handoff::{Claim, Handed, IdleConsumers};
use super::store::{Dequeued, Enqueued, NewJob, QueueStore, Taker};
use crate::error::{Error, Result};
use crate::group_commit::{Commit, GroupCommit, Weight};

/// Merges concurrent single-job enqueues per queue.
pub(super) type EnqueueBatcher = GroupCommit<Enqueuer>;

/// Enqueues a queue's batch of jobs in one script call, handing jobs to the
/// consumers of the queue waiting in this process.
#[derive(Debug)]
pub(super) struct Enqueuer {
    store: QueueStore,
    /// Consumers waiting for work, which take jobs straight from a batch.
    idle: Arc<IdleConsumers>,
}

impl Enqueuer {
    /// A batcher over `store` merging at most `max_jobs` jobs per script call and
    /// handing jobs to the consumers waiting in `idle`.
    pub(super) fn batcher(
        store: QueueStore,
        max_jobs: usize,
        idle: Arc<IdleConsumers>,
    ) -> EnqueueBatcher {
        GroupCommit::new(Self { store, idle }, max_jobs)
    }

    /// Enqueues `jobs` in one script call now, handing jobs to consumers waiting in
    /// this process. One outcome per job, in order.
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
            let handed = Box::new(Handed {
                claimed: taker.most,
                found,
            });
            if let Err(mpsc::error::SendError(handed)) = inbox.send(handed)
                && let Ok(lost) = handed.found
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
}

impl Commit for Enqueuer {
    type Item = NewJob;
    type Done = Enqueued;

    fn weight(job: &NewJob) -> Weight {
        Weight {
            items: 1,
            bytes: job.payload.len(),
        }
    }

    async fn commit(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.enqueue_now(queue, &jobs).await
    }
}
