//! Named wake-ups without polling, owned by neither service: the Queue (ready
//! jobs) and the Lock (released locks) each have one [`Waker`], which listens on
//! its pub/sub channel through the process's hub ([`crate::pubsub::hub`]);
//! scripts publish `"<count> <name>"` there, and the waker wakes one
//! local waiter of that name, which passes the wake-up on when it could not take
//! everything. Idle waiters hold no Redis connection: they
//! wait on a [`Signal`] in memory.
//!
//! Pub/sub is lossy while the connection is down, so after every re-subscription
//! all waiters are woken once to look for work. Delayed jobs and rate limits are covered
//! by [`Signal::wake_at`], one timer per name however many waiters there are.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::named::Named;
use crate::pubsub::buffer::Delivered;
use crate::pubsub::hub::{Hub, Interest, Label, Listener, Target};
use crate::redis::REDIS_RETRY;

/// What separates the count from the name in a wake message.
pub const WAKE_SEPARATOR: char = ' ';

/// The wake message announcing that `count` things named `name` are ready
/// (`"<count> <name>"`). Queue scripts build the same text with the Lua
/// `wake_message` generated from [`WAKE_SEPARATOR`] (`queue::store`).
pub fn wake_message(count: u64, name: &str) -> String {
    format!("{count}{WAKE_SEPARATOR}{name}")
}

/// The count and name of a wake message, if it is one.
fn parse_wake_message(text: &str) -> Option<(u64, &str)> {
    let (count, name) = text.split_once(WAKE_SEPARATOR)?;
    Some((count.parse().ok()?, name))
}

/// The waiters of one name (a queue, a lock resource) in this process.
#[derive(Debug, Default)]
pub struct Signal {
    notify: Notify,
    /// The earliest armed wake-up timer, if any.
    timer: Mutex<Option<Instant>>,
}

impl Signal {
    /// Resolves when this name may have news (work, a free lock). Create it (and `enable` it) before
    /// looking for work, so a wake-up in between is not lost.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Wakes the next waiter: called by a waiter that took all it could while more
    /// may be ready.
    pub fn pass_on(&self) {
        self.notify.notify_one();
    }

    /// Wakes one waiter at `at` (a delayed job's due time, the rate limit's next
    /// slot). Only the earliest pending timer runs.
    pub fn wake_at(self: &Arc<Self>, at: Instant) {
        {
            let mut timer = self.timer();
            if timer.is_some_and(|current| current <= at && current > Instant::now()) {
                return;
            }
            *timer = Some(at);
        }
        let signal = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(signal) = signal.upgrade() {
                let mut timer = signal.timer();
                if *timer == Some(at) {
                    *timer = None;
                }
                drop(timer);
                signal.notify.notify_one();
            }
        });
    }

    /// The armed timer, also after a panic elsewhere while it was locked (it
    /// holds one plain value).
    fn timer(&self) -> MutexGuard<'_, Option<Instant>> {
        self.timer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The per-process wake-ups of one channel.
#[derive(Debug)]
pub struct Waker {
    channel: &'static str,
    signals: Named<Signal>,
}

impl Waker {
    /// A waker for the wake-up messages published on `channel`.
    pub fn new(channel: &'static str) -> Self {
        Self {
            channel,
            signals: Named::default(),
        }
    }

    /// The signal of `name`; it lives while some waiter holds it.
    pub fn signal(&self, name: &str) -> Arc<Signal> {
        self.signals.get_or_default(name)
    }

    /// Wakes one waiter of `name`, however many jobs or locks became free: the
    /// waiter takes what it can and passes the wake-up on when there may be more
    /// ([`Signal::pass_on`]). Waking one per free item instead would send several
    /// waiters to Redis for a batch the first one takes whole.
    fn wake(&self, name: &str) {
        if let Some(signal) = self.signals.get(name) {
            signal.notify.notify_one();
        }
    }

    fn wake_everyone(&self) {
        for signal in self.signals.all() {
            signal.notify.notify_waiters();
            signal.notify.notify_one();
        }
    }

    /// Handles one wake message, `"<count> <name>"`.
    fn dispatch(&self, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        if let Some((count, name)) = parse_wake_message(&text)
            && count > 0
        {
            self.wake(name);
        }
    }

    /// Subscribes to the wake channel through the process's pub/sub hub and stays
    /// subscribed until `shutdown` (retrying while Redis is unreachable).
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>, shutdown: CancellationToken) {
        let wanted = || {
            vec![Interest {
                target: Target::Channel(self.channel.to_owned()),
                label: Label::Channel,
            }]
        };
        loop {
            match hub.subscribe(self.clone(), wanted()).await {
                Ok(subscription) => {
                    // Anything published before we listened: look for work once.
                    self.wake_everyone();
                    shutdown.cancelled().await;
                    drop(subscription);
                    return;
                }
                Err(e) => {
                    tracing::debug!(channel = self.channel, error = %e, "waker cannot subscribe yet")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(REDIS_RETRY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

impl Listener for Waker {
    fn deliver(&self, message: Delivered) {
        self.dispatch(&message.payload);
    }

    /// Wake messages may have been missed while the hub reconnected.
    fn lost(&self) {
        self.wake_everyone();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wake_messages_reach_the_named_queue_only() {
        let waker = Waker::new("test");
        let mail = waker.signal("mail");
        let other = waker.signal("other");
        let mail_woken = mail.notified();
        let other_woken = other.notified();
        tokio::pin!(mail_woken, other_woken);
        mail_woken.as_mut().enable();
        other_woken.as_mut().enable();
        waker.dispatch(b"1 mail");
        assert!(futures::poll!(mail_woken).is_ready());
        assert!(futures::poll!(other_woken).is_pending());
    }

    #[tokio::test]
    async fn malformed_messages_are_ignored() {
        let waker = Waker::new("test");
        let _signal = waker.signal("q");
        waker.dispatch(b"garbage");
        waker.dispatch(b"x q");
    }

    #[tokio::test(start_paused = true)]
    async fn wake_at_wakes_one_waiter_when_due() {
        let waker = Waker::new("test");
        let signal = waker.signal("q");
        let woken = signal.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        signal.wake_at(Instant::now() + Duration::from_millis(50));
        assert!(futures::poll!(woken.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(futures::poll!(woken).is_ready());
    }
}
