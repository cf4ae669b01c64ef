//! The bounded buffer between the hub and one subscriber stream.
//!
//! The hub never waits on a subscriber: it pushes into this buffer and moves on.
//! When the buffer is full (too many messages or bytes), the subscription's policy
//! applies, right here: `DropOldest` drops the oldest messages and counts them, so
//! the stream emits a gap event with the count before the next message; `Disconnect`
//! ends the stream with RESOURCE_EXHAUSTED. Either way memory stays bounded and other
//! subscribers are unaffected.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// What to do when a subscriber falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Drop the oldest buffered messages and report a gap.
    DropOldest,
    /// End the stream with RESOURCE_EXHAUSTED.
    Disconnect,
}

/// One message as the hub delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The user-facing channel name.
    pub channel: String,
    /// The Redis glob pattern that matched, as the user gave it.
    pub pattern: String,
    /// The topic pattern that matched, as the user gave it.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// True for a sharded channel.
    pub sharded: bool,
}

/// What the subscriber stream takes out of the buffer next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A message.
    Message(Delivered),
    /// Messages were lost: `dropped` counted here (0 when unknown), and why.
    Gap {
        /// How many messages were dropped, when known.
        dropped: u64,
        /// Why.
        reason: &'static str,
    },
    /// The buffer overflowed under the Disconnect policy.
    Overflow,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Delivered>,
    bytes: usize,
    dropped: u64,
    /// A gap of unknown size is pending (the Redis connection was lost).
    lost: bool,
    overflowed: bool,
}

/// A bounded per-subscriber buffer.
#[derive(Debug)]
pub struct Buffer {
    state: Mutex<State>,
    notify: Notify,
    max_messages: usize,
    max_bytes: usize,
    policy: SlowPolicy,
}

impl Buffer {
    /// An empty buffer with these limits and policy.
    pub fn new(max_messages: usize, max_bytes: usize, policy: SlowPolicy) -> Self {
        Self {
            state: Mutex::default(),
            notify: Notify::new(),
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
            policy,
        }
    }

    /// Adds a message without ever waiting, applying the slow-subscriber policy.
    pub fn push(&self, message: Delivered) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.overflowed {
            return;
        }
        let size = message.payload.len() + message.channel.len();
        let fits =
            |s: &State| s.queue.len() < self.max_messages && s.bytes + size <= self.max_bytes;
        if !fits(&state) {
            match self.policy {
                SlowPolicy::Disconnect => {
                    state.overflowed = true;
                    state.queue.clear();
                    state.bytes = 0;
                    drop(state);
                    self.notify.notify_one();
                    return;
                }
                SlowPolicy::DropOldest => {
                    while !fits(&state) {
                        let Some(old) = state.queue.pop_front() else {
                            break;
                        };
                        state.bytes -= old.payload.len() + old.channel.len();
                        state.dropped += 1;
                    }
                    if size > self.max_bytes {
                        // Larger than the whole buffer: it can only be dropped.
                        state.dropped += 1;
                        drop(state);
                        self.notify.notify_one();
                        return;
                    }
                }
            }
        }
        state.bytes += size;
        state.queue.push_back(message);
        drop(state);
        self.notify.notify_one();
    }

    /// Records that messages may have been lost (Redis reconnect).
    pub fn mark_lost(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.lost = true;
        }
        self.notify.notify_one();
    }

    /// The next item, waiting until there is one. Gaps come before the messages
    /// that follow them.
    pub async fn next(&self) -> Next {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(next) = self.try_next() {
                return next;
            }
            notified.await;
        }
    }

    fn try_next(&self) -> Option<Next> {
        let mut state = self.state.lock().ok()?;
        if state.overflowed {
            return Some(Next::Overflow);
        }
        if state.dropped > 0 {
            let dropped = std::mem::take(&mut state.dropped);
            return Some(Next::Gap {
                dropped,
                reason: "slow subscriber: the oldest buffered messages were dropped",
            });
        }
        if state.lost {
            state.lost = false;
            return Some(Next::Gap {
                dropped: 0,
                reason: "the Redis subscription was re-established; messages published meanwhile were lost",
            });
        }
        let message = state.queue.pop_front()?;
        state.bytes -= message.payload.len() + message.channel.len();
        Some(Next::Message(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &str) -> Delivered {
        Delivered {
            channel: "c".into(),
            pattern: String::new(),
            topic: String::new(),
            payload: payload.as_bytes().to_vec(),
            sharded: false,
        }
    }

    #[tokio::test]
    async fn drop_oldest_reports_a_gap_then_the_newest() {
        let buffer = Buffer::new(2, 1 << 20, SlowPolicy::DropOldest);
        for p in ["1", "2", "3", "4"] {
            buffer.push(msg(p));
        }
        assert_eq!(
            buffer.next().await,
            Next::Gap {
                dropped: 2,
                reason: "slow subscriber: the oldest buffered messages were dropped"
            }
        );
        assert_eq!(buffer.next().await, Next::Message(msg("3")));
        assert_eq!(buffer.next().await, Next::Message(msg("4")));
    }

    #[tokio::test]
    async fn byte_limits_count_too() {
        let buffer = Buffer::new(100, 10, SlowPolicy::DropOldest);
        buffer.push(msg("12345678"));
        buffer.push(msg("abcdefgh"));
        assert!(matches!(buffer.next().await, Next::Gap { dropped: 1, .. }));
        assert_eq!(buffer.next().await, Next::Message(msg("abcdefgh")));
    }

    #[tokio::test]
    async fn disconnect_policy_overflows() {
        let buffer = Buffer::new(1, 1 << 20, SlowPolicy::Disconnect);
        buffer.push(msg("1"));
        buffer.push(msg("2"));
        assert_eq!(buffer.next().await, Next::Overflow);
    }

    #[tokio::test]
    async fn lost_connections_are_a_gap_of_unknown_size() {
        let buffer = Buffer::new(4, 1 << 20, SlowPolicy::DropOldest);
        buffer.mark_lost();
        buffer.push(msg("after"));
        assert!(matches!(buffer.next().await, Next::Gap { dropped: 0, .. }));
        assert_eq!(buffer.next().await, Next::Message(msg("after")));
    }
}
