//! The embedded Redis: when no Redis is configured, Redwire runs its own
//! `redis-server` child with persistence on (AOF, fsync every second) in a data
//! directory, reachable only through a unix socket in that directory. A supervisor
//! task restarts it if it dies, and [`EmbeddedRedis::stop`] shuts it down cleanly
//! (`SHUTDOWN`, which flushes the AOF) when Redwire exits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 100;
/// How long a fresh redis-server may take to answer (AOF loading included).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the embedded Redis could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// redis-server is not installed.
    #[error(
        "redis-server not found (looked for {0:?}): install it with `sudo apt-get install -y redis-server`, \
         or use an external Redis with --redis-url / REDWIRE_REDIS_URL"
    )]
    NotInstalled(PathBuf),
    /// The data directory cannot be used.
    #[error("data directory {path:?}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// redis-server started but did not become ready.
    #[error("redis-server did not start: {0} (see {1:?})")]
    NotReady(String, PathBuf),
    /// Spawning failed for another reason.
    #[error("starting redis-server: {0}")]
    Spawn(std::io::Error),
}

/// A supervised redis-server child.
#[derive(Debug)]
pub struct EmbeddedRedis {
    url: String,
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
}

/// What is needed to (re)start the child.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    url: String,
}

impl EmbeddedRedis {
    /// Starts redis-server with its data in `data_dir` and waits until it answers.
    pub async fn start(bin: &Path, data_dir: &Path) -> Result<Self, StartError> {
        let data_dir_err = |source| StartError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(data_dir_err)?;
        // Only Redwire's user may enter: the AOF and RDB files hold every stored
        // value, and redis-server creates them with the umask's (often 0644) mode.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(data_dir_err)?;
        let data_dir = std::fs::canonicalize(data_dir).map_err(data_dir_err)?;
        let socket = data_dir.join("redis.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(StartError::DataDir {
                path: data_dir,
                source: std::io::Error::other(
                    "path too long for a unix socket; choose a shorter --data-dir",
                ),
            });
        }
        let launch = Launch {
            url: format!("redis+unix://{}", socket.display()),
            bin: bin.to_path_buf(),
            data_dir,
            socket,
        };
        shut_down_stale_server(&launch).await;
        let child = launch.spawn_and_wait().await?;
        tracing::info!(socket = %launch.socket.display(), "embedded redis-server started");

        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(launch.clone(), child, stop.clone()));
        Ok(Self {
            url: launch.url,
            stop,
            supervisor,
        })
    }

    /// The URL to connect to the embedded Redis.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Shuts redis-server down (flushing the AOF) and waits for it to exit.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.supervisor.await {
            tracing::warn!(error = %e, "embedded redis supervisor failed");
        }
    }
}

impl Launch {
    fn log_file(&self) -> PathBuf {
        self.data_dir.join("redis.log")
    }

    async fn spawn_and_wait(&self) -> Result<Child, StartError> {
        let mut child = Command::new(&self.bin)
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&self.data_dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--logfile")
            .arg(self.log_file())
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StartError::NotInstalled(self.bin.clone()),
                _ => StartError::Spawn(e),
            })?;

        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartError::NotReady(
                    format!("exited with {status}"),
                    self.log_file(),
                ));
            }
            if ping(&self.url).await {
                return Ok(child);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StartError::NotReady(
                    "no answer within 30s".into(),
                    self.log_file(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Restarts the child when it dies; shuts it down when `stop` fires.
async fn supervise(launch: Launch, mut child: Child, stop: CancellationToken) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
                tracing::error!(%status, log = %launch.log_file().display(), "embedded redis-server exited; restarting");
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    match launch.spawn_and_wait().await {
                        Ok(new_child) => { child = new_child; break; }
                        Err(e) => tracing::error!(error = %e, "restarting embedded redis-server failed"),
                    }
                }
            }
            _ = stop.cancelled() => {
                shut_down(&launch.url).await;
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    tracing::warn!("embedded redis-server ignored SHUTDOWN; killing it");
                    let _ = child.kill().await;
                }
                tracing::info!("embedded redis-server stopped");
                return;
            }
        }
    }
}

/// A redis-server left behind by a Redwire that was killed would share our AOF;
/// ask it to shut down (it flushes first) before starting our own.
async fn shut_down_stale_server(launch: &Launch) {
    if !ping(&launch.url).await {
        return;
    }
    tracing::warn!(socket = %launch.socket.display(), "a redis-server from an earlier run is still up; shutting it down");
    shut_down(&launch.url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ping(&launch.url).await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(_))
    )
}

async fn shut_down(url: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        // The connection closes as the server exits, so the reply is an error by design.
        let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
    }
}
