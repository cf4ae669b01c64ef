//! Shared stream readers: one task per tailed stream per process blocks in
//! `XREAD BLOCK` on one dedicated connection and wakes every local Tail and
//! ReadGroup stream of that stream when entries arrive. Each of those then reads
//! from its *own* last id with a non-blocking call on the shared connections, so
//! many tailing clients do not each pin a Redis connection, and a wake-up can never
//! cause a gap or a duplicate. A reader ends when the last stream using it ends.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::StreamStore;
use crate::named::Named;
use crate::redis::REDIS_RETRY;

/// How long one XREAD BLOCK waits before the reader checks whether it is still needed.
const BLOCK: Duration = Duration::from_secs(1);

/// Wakes the local readers of one stream.
#[derive(Debug, Default)]
pub(super) struct StreamSignal {
    notify: Notify,
}

impl StreamSignal {
    /// Resolves after new entries arrived (or the reader recovered from an error).
    /// Create and `enable` it before reading, so a wake-up in between is not lost.
    pub(super) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// The per-process set of shared readers.
#[derive(Debug)]
pub(super) struct Readers {
    store: StreamStore,
    signals: Named<StreamSignal>,
    shutdown: CancellationToken,
}

impl Readers {
    /// An empty set over `store`; readers stop with `shutdown`.
    pub(super) fn new(store: StreamStore, shutdown: CancellationToken) -> Self {
        Self {
            store,
            signals: Named::default(),
            shutdown,
        }
    }

    /// The signal of `stream`, starting its reader if none runs.
    pub(super) fn signal(&self, stream: &str) -> Arc<StreamSignal> {
        self.signals.get_or_insert_with(stream, || {
            let signal = Arc::new(StreamSignal::default());
            tokio::spawn(read_loop(
                self.store.clone(),
                stream.to_owned(),
                Arc::downgrade(&signal),
                self.shutdown.clone(),
            ));
            signal
        })
    }
}

fn wake(signal: &Weak<StreamSignal>) {
    if let Some(signal) = signal.upgrade() {
        signal.notify.notify_waiters();
    }
}

async fn read_loop(
    store: StreamStore,
    stream: String,
    signal: Weak<StreamSignal>,
    shutdown: CancellationToken,
) {
    let mut last: Option<String> = None;
    while signal.strong_count() > 0 {
        let step = async {
            let after = match &last {
                Some(id) => id.clone(),
                None => {
                    let id = store
                        .last_id(&stream)
                        .await?
                        .unwrap_or_else(|| "0-0".to_owned());
                    // Entries may have come between a reader's own read and this
                    // starting point: let everyone look once.
                    wake(&signal);
                    id
                }
            };
            let entries = store.block_read(&stream, &after, BLOCK).await?;
            Ok::<_, crate::Error>((after, entries.last().map(|e| e.id.clone())))
        };
        tokio::select! {
            result = step => match result {
                Ok((after, newest)) => match newest {
                    Some(newest) => {
                        last = Some(newest);
                        wake(&signal);
                    }
                    None => last = Some(after),
                },
                Err(e) => {
                    tracing::debug!(stream, error = %e, "stream reader failed; retrying");
                    last = None;
                    tokio::select! {
                        () = tokio::time::sleep(REDIS_RETRY) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            },
            () = shutdown.cancelled() => return,
        }
    }
}
