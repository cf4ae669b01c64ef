//! Direct hand-off: jobs enqueued through the [`EnqueueBatcher`] go straight to
//! consumers of the queue that wait in this process, leased by the same script
//! call that stores them. A job then costs one script call less (no dequeue), and
//! its consumer needs no wake-up from Redis.
//!
//! A [`Consumer`] with free credits and nothing to do *offers* them here while it
//! waits, and *withdraws* the offer before it does anything that leases jobs
//! itself. The batcher *claims* whole offers before a script call; a claimed
//! consumer counts those credits as pending until the batcher sends it a
//! [`Handed`] (always exactly one per claim: the jobs, none, or the call's error).
//! A consumer that leaves closes its inbox and takes what is already in it; jobs
//! the batcher cannot deliver any more go back to the queue without counting the
//! attempt.
//!
//! The script leases in queue order (priority, then age), exactly as a dequeue
//! would, so a hand-off never overtakes a job that was waiting already.
//!
//! [`EnqueueBatcher`]: super::batcher::EnqueueBatcher
//! [`Consumer`]: super::consumer::Consumer

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use super::store::{Dequeued, Taker};
use crate::error::Result;

/// What a claimed consumer receives: how many credits were claimed, and the jobs
/// leased to it (at most that many), or the error of the script call.
#[derive(Debug)]
pub(super) struct Handed {
    pub(super) claimed: usize,
    pub(super) found: Result<Dequeued>,
}

/// Where a consumer receives hand-offs. Boxed for the same reason as a consumer's
/// outbound messages: a channel allocates 32 slots when it is created, and every
/// waiting consumer holds one.
pub(super) type Inbox = mpsc::UnboundedSender<Box<Handed>>;

/// A claimed offer: take jobs for `taker`, send them to `inbox`.
#[derive(Debug)]
pub(super) struct Claim {
    pub(super) taker: Taker,
    pub(super) inbox: Inbox,
}

/// The standing offers of this process's waiting consumers, per queue.
#[derive(Debug, Default)]
pub(super) struct IdleConsumers {
    /// Queue → offers, oldest first (claims take from the front, so the consumers
    /// of a queue take turns).
    offers: Mutex<HashMap<String, VecDeque<Claim>>>,
}

impl IdleConsumers {
    /// Offers `taker.most` credits of the consumer behind `inbox`, until withdrawn
    /// or claimed.
    pub(super) fn offer(&self, queue: &str, taker: Taker, inbox: &Inbox) {
        let claim = Claim {
            taker,
            inbox: inbox.clone(),
        };
        let mut offers = self.offers();
        match offers.get_mut(queue) {
            Some(waiting) => waiting.push_back(claim),
            None => {
                offers.insert(queue.to_owned(), VecDeque::from([claim]));
            }
        }
    }

    /// Takes back the offer of the consumer behind `inbox`. False when it was
    /// claimed already: a [`Handed`] is then on its way.
    pub(super) fn withdraw(&self, queue: &str, inbox: &Inbox) -> bool {
        let mut offers = self.offers();
        let Some(waiting) = offers.get_mut(queue) else {
            return false;
        };
        let Some(at) = waiting.iter().position(|c| c.inbox.same_channel(inbox)) else {
            return false;
        };
        waiting.remove(at);
        if waiting.is_empty() {
            offers.remove(queue);
        }
        true
    }

    /// Claims offers, oldest first, until they cover `jobs` jobs or run out.
    pub(super) fn claim(&self, queue: &str, jobs: usize) -> Vec<Claim> {
        let mut offers = self.offers();
        let Some(waiting) = offers.get_mut(queue) else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        let mut covered = 0;
        while covered < jobs
            && let Some(claim) = waiting.pop_front()
        {
            covered += claim.taker.most;
            claims.push(claim);
        }
        if waiting.is_empty() {
            offers.remove(queue);
        }
        claims
    }

    /// The offers. Every update leaves the map consistent, so a poisoned lock is
    /// used as it is.
    fn offers(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Claim>>> {
        self.offers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taker(most: usize) -> Taker {
        Taker {
            most,
            lease_ms: 1000,
        }
    }

    #[test]
    fn claims_take_whole_offers_oldest_first_until_the_jobs_are_covered() {
        let idle = IdleConsumers::default();
        let (a, _ra) = mpsc::unbounded_channel();
        let (b, _rb) = mpsc::unbounded_channel();
        let (c, _rc) = mpsc::unbounded_channel();
        idle.offer("q", taker(2), &a);
        idle.offer("q", taker(3), &b);
        idle.offer("q", taker(4), &c);
        let claims = idle.claim("q", 4);
        let mosts: Vec<usize> = claims.iter().map(|c| c.taker.most).collect();
        assert_eq!(mosts, [2, 3]);
        assert!(claims[0].inbox.same_channel(&a));
        // Claimed offers cannot be withdrawn; the rest can, once.
        assert!(!idle.withdraw("q", &a));
        assert!(!idle.withdraw("q", &b));
        assert!(idle.withdraw("q", &c));
        assert!(!idle.withdraw("q", &c));
        assert!(idle.claim("q", 1).is_empty());
    }

    #[test]
    fn offers_are_per_queue() {
        let idle = IdleConsumers::default();
        let (a, _ra) = mpsc::unbounded_channel();
        idle.offer("one", taker(5), &a);
        assert!(idle.claim("two", 1).is_empty());
        assert_eq!(idle.claim("one", 1).len(), 1);
    }
}
