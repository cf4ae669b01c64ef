//! Producer streams (`Queue.EnqueueStream`, `Stream.AppendStream`): a long-lived
//! request stream on which every message gets exactly one reply, in order.
//!
//! Why they exist: a unary call costs a new HTTP/2 stream, request and response
//! headers, trailers and a task on each side, which on a small machine is more CPU
//! than the Redis work behind one enqueue or append. A message on an open stream
//! costs one DATA frame each way.
//!
//! One task per stream reads the messages. Those that have already arrived when it
//! looks (at most `max_batch`) go to the service as one batch, so a client that
//! sends many before reading replies pays one round of Redis work per batch, and a
//! client that waits for each reply pays one per message. The next batch is read
//! once the replies of this one are queued, which keeps replies in request order.
//!
//! The stream ends after the last reply when the client closes its side; with the
//! client's error when its side breaks; and at shutdown with UNAVAILABLE, after
//! the replies to every message already received.

use std::future::Future;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::error::Error;
use crate::proto::Failure;
use crate::streaming;

/// The reply stream a producer-stream handler returns.
pub type Replies<T> = ReceiverStream<Result<T, Status>>;

/// Serves `inbound`: `handle` gets each batch of messages and returns one reply per
/// message, in the same order.
pub(crate) fn serve<Req, Resp, H, Fut>(
    inbound: Streaming<Req>,
    max_batch: usize,
    shutdown: CancellationToken,
    handle: H,
) -> Replies<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    H: FnMut(Vec<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<Resp>> + Send + 'static,
{
    let max_batch = max_batch.max(1);
    let (tx, rx) = mpsc::channel(max_batch);
    tokio::spawn(run(inbound, max_batch, shutdown, handle, tx));
    ReceiverStream::new(rx)
}

async fn run<Req, Resp, H, Fut>(
    mut inbound: Streaming<Req>,
    max_batch: usize,
    shutdown: CancellationToken,
    mut handle: H,
    tx: mpsc::Sender<Result<Resp, Status>>,
) where
    H: FnMut(Vec<Req>) -> Fut,
    Fut: Future<Output = Vec<Resp>>,
{
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = tx.send(Err(Error::ShuttingDown.into())).await;
                return;
            }
            () = tx.closed() => return,
            message = inbound.message() => match message {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            },
        };
        let (batch, ended) = streaming::ready_batch(first, &mut inbound, max_batch);
        for reply in handle(batch).await {
            if tx.send(Ok(reply)).await.is_err() {
                return;
            }
        }
        match ended {
            None => {}
            Some(Ok(())) => return,
            Some(Err(status)) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}

/// One message's error as the `Failure` of its reply: the status code, message
/// and reason the same request would get as a unary call.
pub(crate) fn failure(err: Error) -> Failure {
    let reason = err.reason().as_str().to_owned();
    let status = Status::from(err);
    Failure {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason,
    }
}
