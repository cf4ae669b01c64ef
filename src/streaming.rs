//! The kit every long-lived server stream is built from, so each stream task
//! says only what is its own:
//!
//! - [`ready_batch`]: what the client has already sent, read in one go, so acks
//!   that arrived together are applied in one Redis call;
//! - heartbeats after a quiet interval: [`crate::heartbeat::every`] around the
//!   reply channel;
//! - named waiters for "there may be news": [`crate::named`] and
//!   [`crate::waker`];
//! - the pause after a Redis failure: [`crate::redis::REDIS_RETRY`];
//! - the end: a task returns `Option<Status>` (None: the client left) and
//!   [`finish`] sends it.
//!
//! Every stream task has the same three exits: the client goes away, the
//! stream's own end condition, or the shutdown token.

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use futures::FutureExt;

/// How the request side ended while a batch was read.
pub type Ended = Option<Result<(), Status>>;

/// `first` and the messages the client has already sent after it, up to `most`
/// in all, without waiting; and how the request side ended meanwhile, if it
/// did (`Ok` for a clean close, the client's error for a break).
pub fn ready_batch<T>(first: T, inbound: &mut Streaming<T>, most: usize) -> (Vec<T>, Ended) {
    let mut batch = vec![first];
    while batch.len() < most {
        match inbound.message().now_or_never() {
            Some(Ok(Some(message))) => batch.push(message),
            Some(Ok(None)) => return (batch, Some(Ok(()))),
            Some(Err(status)) => return (batch, Some(Err(status))),
            None => break,
        }
    }
    (batch, None)
}

/// Sends the status a stream task ended with, if any (None: the client left and
/// there is no one to tell).
pub async fn finish<T>(tx: &mpsc::Sender<Result<T, Status>>, ending: Option<Status>) {
    if let Some(status) = ending {
        let _ = tx.send(Err(status)).await;
    }
}
