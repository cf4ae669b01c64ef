//! A TCP proxy on loopback between Redwire and a Redis, for the network faults a
//! process cannot show by itself: every connection reset at once (a load balancer
//! or NAT dropping its table) and new connections refused. (A Redis that accepts
//! and never answers is `RedisServer::pause`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let refusing = Arc::new(AtomicBool::new(false));
        let (resets, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            target,
            refusing.clone(),
            resets.clone(),
        ));
        Self {
            addr,
            refusing,
            resets,
            task,
        }
    }

    /// A `redis://` URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// While true, every new connection is reset at once.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Resets every connection open through the proxy, both sides.
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
    refusing: Arc<AtomicBool>,
    resets: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        reset_on_close(&client);
        if refusing.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        reset_on_close(&server);
        tokio::spawn(relay(client, server, resets.subscribe()));
    }
}

/// Makes closing `stream` send a reset instead of a FIN.
fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Relays bytes both ways until either side closes or the proxy resets all.
async fn relay(mut client: TcpStream, mut server: TcpStream, mut resets: watch::Receiver<u64>) {
    resets.mark_unchanged();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = resets.changed() => {}
    }
}
