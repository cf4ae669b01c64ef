//! A TCP proxy on loopback between Redwire and a Redis, for the network faults a
//! process cannot show by itself: every connection reset at once (a load balancer
//! or NAT dropping its table), new connections refused, a slow link (every byte
//! delayed), and a black hole (bytes stop flowing both ways with no reset, as when
//! a route or firewall drops packets; TCP delivers them once the path heals).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

/// The faults in force, shared by every relayed connection.
struct Faults {
    refusing: AtomicBool,
    delay_ms: AtomicU64,
    /// True while bytes are held back (a black hole).
    black_hole: watch::Sender<bool>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
}

impl FaultProxy {
    /// A proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let faults = Arc::new(Faults {
            refusing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            black_hole: watch::channel(false).0,
            resets: watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, target, faults.clone()));
        Self { addr, faults, task }
    }

    /// A `redis://` URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// While true, every new connection is reset at once.
    pub fn refuse(&self, refusing: bool) {
        self.faults.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Resets every connection open through the proxy, both sides.
    pub fn reset_all(&self) {
        self.faults.resets.send_modify(|n| *n += 1);
    }

    /// Every byte read from here on reaches the other side `delay` later.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).expect("delay in ms fits u64");
        self.faults.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// While true, no byte goes through either way (they are held, in order, and
    /// delivered when it ends); connections stay open and new ones are accepted.
    pub fn black_hole(&self, on: bool) {
        self.faults.black_hole.send_replace(on);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, faults: Arc<Faults>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        reset_on_close(&client);
        if faults.refusing.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        reset_on_close(&server);
        tokio::spawn(relay(client, server, faults.clone()));
    }
}

/// Makes closing `stream` send a reset instead of a FIN.
fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Relays bytes both ways until either side closes or the proxy resets all.
async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let mut resets = faults.resets.subscribe();
    resets.mark_unchanged();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pipe(client_read, server_write, &faults) => {}
        _ = pipe(server_read, client_write, &faults) => {}
        _ = resets.changed() => {}
    }
}

/// Copies one direction, each chunk held until its delay has passed and no
/// black hole is in force. Returns when either end closes.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, faults: &Faults) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let delay = Duration::from_millis(faults.delay_ms.load(Ordering::SeqCst));
            if chunks
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async {
        let mut black_hole = faults.black_hole.subscribe();
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if black_hole.wait_for(|on| !on).await.is_err() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
}
