//! A TCP proxy on loopback between Redwire and a Redis, for the network faults a
//! process cannot show by itself: every connection reset at once (a load balancer
//! or NAT dropping its table), new connections refused, traffic black-holed
//! (packets dropped, the connection left open).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forwards everything.
    None = 0,
    /// Accepts and keeps connections but forwards no byte either way.
    BlackHole = 1,
    /// Closes every new connection at once.
    Refuse = 2,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<AtomicU8>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let (resets, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(listener, target, fault.clone(), resets.clone()));
        Self {
            addr,
            fault,
            resets,
            task,
        }
    }

    /// A `redis://` URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Resets (RST) every connection open through the proxy, both sides.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    fault: Arc<AtomicU8>,
    resets: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if fault.load(Ordering::SeqCst) == Fault::Refuse as u8 {
            reset(&client);
            continue;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            reset(&client);
            continue;
        };
        let (fault, reset_signal) = (fault.clone(), resets.subscribe());
        tokio::spawn(relay(client, server, fault, reset_signal));
    }
}

/// Closes `stream` with a reset instead of a FIN when it is dropped.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    fault: Arc<AtomicU8>,
    mut resets: watch::Receiver<u64>,
) {
    resets.mark_unchanged();
    reset(&client);
    reset(&server);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = forward(client_read, server_write, fault.clone());
    let down = forward(server_read, client_write, fault);
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = resets.changed() => {}
    }
}

/// Copies `from` to `to` until either side closes; black-holed bytes are dropped,
/// as a partitioned network drops packets.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if fault.load(Ordering::SeqCst) == Fault::BlackHole as u8 {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
