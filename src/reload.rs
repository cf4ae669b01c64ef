//! Files Redwire reads again while it runs (the auth file, the TLS certificate,
//! key and client CA): each is checked every [`RELOAD_CHECK`] and read again when
//! its modification time or length changed, and all are read again on SIGHUP.
//! A version that cannot be used is logged by its owner and the previous one
//! stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// How often watched files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync {
    /// Loads the files again if they changed since the last load (always when
    /// `force`); keeps the previous version when the new one is unusable.
    fn reload(&self, force: bool);
}

/// The files one setting is loaded from, and what they looked like when it was.
#[derive(Debug)]
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    loaded: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl WatchedFiles {
    /// Watches `paths`, taking their current state as loaded.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let loaded = Mutex::new(stamps(&paths));
        Self { paths, loaded }
    }

    /// True when some file changed since the last call that returned true (or
    /// since [`new`](Self::new)), or when `force`; the new state counts as loaded.
    pub fn changed(&self, force: bool) -> bool {
        let now = stamps(&self.paths);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if !force && now == *loaded {
            return false;
        }
        *loaded = now;
        true
    }
}

/// Modification time and length of each file, to notice a change.
fn stamps(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths.iter().map(|path| stamp(path)).collect()
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads `items` when their files change and all of them on SIGHUP, until
/// `shutdown`.
pub async fn watch(items: Vec<Arc<dyn Reload>>, shutdown: CancellationToken) {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticks = tokio::time::interval(RELOAD_CHECK);
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(signals) => signals.recv().await,
                None => std::future::pending().await,
            }
        };
        let force = tokio::select! {
            _ = ticks.tick() => false,
            _ = hangup => true,
            () = shutdown.cancelled() => return,
        };
        for item in &items {
            item.reload(force);
        }
    }
}
