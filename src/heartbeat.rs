//! Heartbeats on long-lived server streams (Subscribe, Tail, ReadGroup, Consume,
//! Hold): one rule for the interval a client may ask for, one message, and one
//! stream adapter that sends it when nothing else was sent for that long.
//!
//! Proxies cut streams that stay silent past their idle timeout (nginx's
//! `grpc_read_timeout`, 60 s by default), and a client cannot tell a quiet stream
//! from a dead one. A heartbeat after every `heartbeat_interval` of silence keeps
//! the stream open and tells the client it is alive.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::Result;
use crate::proto::Heartbeat;
use crate::validate;

/// Shortest heartbeat interval a client may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The interval a stream request asks for in `field`, or `default` when absent.
pub fn interval(
    field: &str,
    requested: Option<&prost_types::Duration>,
    default: Duration,
) -> Result<Duration> {
    validate::at_least(field, requested, MIN_INTERVAL).map(|d| d.unwrap_or(default))
}

/// A heartbeat sent now.
pub fn now() -> Heartbeat {
    Heartbeat {
        time: Some(SystemTime::now().into()),
    }
}

/// Wraps `inner` so that a `heartbeat()` item goes out after every `interval`
/// without an item from `inner`. Ends when `inner` ends.
pub fn every<S, F>(interval: Duration, inner: S, heartbeat: F) -> Heartbeats<S, F>
where
    S: Stream + Unpin,
    F: FnMut() -> S::Item,
{
    let now = Instant::now();
    Heartbeats {
        inner,
        heartbeat,
        interval,
        last_sent: now,
        timer: Box::pin(tokio::time::sleep_until(now + interval)),
    }
}

/// See [`every`].
pub struct Heartbeats<S, F> {
    inner: S,
    heartbeat: F,
    interval: Duration,
    /// When the last item went out.
    last_sent: Instant,
    /// Fires at the earliest moment a heartbeat may be due. A message only
    /// notes `last_sent`; the timer is moved when it fires early, so a busy
    /// stream does not touch the timer wheel per message.
    timer: Pin<Box<Sleep>>,
}

impl<S, F> Stream for Heartbeats<S, F>
where
    S: Stream + Unpin,
    F: FnMut() -> S::Item + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.last_sent = Instant::now();
            return Poll::Ready(item);
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.last_sent + this.interval;
            if Instant::now() < due {
                // Something went out since the timer was set: wait from then.
                this.timer.as_mut().reset(due);
                continue;
            }
            this.last_sent = Instant::now();
            this.timer.as_mut().reset(this.last_sent + this.interval);
            return Poll::Ready(Some((this.heartbeat)()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_heartbeats_and_a_busy_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<&str>(4);
        let mut stream = every(
            Duration::from_secs(1),
            tokio_stream::wrappers::ReceiverStream::new(rx),
            || "heartbeat",
        );
        let started = Instant::now();
        assert_eq!(stream.next().await, Some("heartbeat"));
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        tokio::time::sleep(Duration::from_millis(600)).await;
        tx.send("message").await.expect("send");
        assert_eq!(stream.next().await, Some("message"));
        // The message restarted the quiet period.
        let after_message = Instant::now();
        assert_eq!(stream.next().await, Some("heartbeat"));
        assert_eq!(after_message.elapsed(), Duration::from_secs(1));

        drop(tx);
        assert_eq!(stream.next().await, None);
    }

    #[test]
    fn intervals_under_the_minimum_are_refused_naming_the_field() {
        let short = prost_types::Duration {
            seconds: 0,
            nanos: 50_000_000,
        };
        let err = interval("subscribe.heartbeat_interval", Some(&short), Duration::ZERO)
            .expect_err("too short");
        assert!(
            err.to_string()
                .starts_with("subscribe.heartbeat_interval: must be at least 100ms"),
            "{err}"
        );
        let default = interval("heartbeat_interval", None, Duration::from_secs(30));
        assert_eq!(default.expect("absent"), Duration::from_secs(30));
    }
}
