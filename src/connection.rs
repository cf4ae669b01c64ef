//! What one client connection may cost the server, enforced where connections
//! are accepted and where replies leave.
//!
//! - **Accepting** ([`incoming`]): at most `--max-connections` client connections;
//!   one over the cap is closed at once (the client sees UNAVAILABLE and can try
//!   another instance) instead of queueing in the kernel. A failed `accept` (out of
//!   file descriptors, say) is logged and retried after a pause, so the listener
//!   never spins a core while the connections already open are served as usual.
//! - **Handshake timeout**: a connection that has not sent its HTTP/2 preface
//!   and first frame within `--handshake-timeout` (the TLS handshake included)
//!   is closed.
//! - **TLS** ([`crate::tls`]): each connection's handshake runs on the
//!   connection's own task as its first reads and writes, so a slow handshaker
//!   never holds up `accept`.
//! - **Idle timeout**: a connection with no call in flight for `--idle-timeout`
//!   is closed (gRPC's `MAX_CONNECTION_IDLE`; clients reconnect on their next
//!   call). A long-lived stream counts as a call, so subscribers are never cut.
//!   HTTP/2 keepalive pings (see `server.rs`) close connections whose peer is gone.
//! - **Reply memory** ([`ReplyLayer`]): every reply message counts against
//!   `--reply-buffer-bytes`, shared by all connections, until HTTP/2 has room to
//!   send it; one larger than [`REPLY_CHUNK`] is handed over a chunk at a time, so
//!   the part a client has not read stays in one place. A reply that does not fit
//!   ends RESOURCE_EXHAUSTED; clients that never read cannot make the server hold
//!   more than that budget.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::codegen::{Bytes, Service, http};
use tonic::transport::server::Connected;

use crate::error::{Error, Reason};
use crate::tls::{ClientNames, Tls};

/// Bytes of the HTTP/2 client preface plus the header of its first frame
/// (SETTINGS): what a client must send for its handshake to count as begun.
const HANDSHAKE_BYTES: usize = 24 + 9;

/// How long the listener pauses after a failed `accept` before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Largest piece of a reply handed to HTTP/2 at once; larger replies are split
/// and stay counted against the reply budget until fully handed over.
pub const REPLY_CHUNK: usize = 64 * 1024;

/// Limits on client connections, from the config.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ConnectionLimits {
    /// Most open client connections; one more is closed at once.
    #[arg(long, env = "REDWIRE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most concurrent gRPC streams (calls) on one HTTP/2 connection; long-lived
    /// Consume and subscription streams count too.
    #[arg(long, env = "REDWIRE_MAX_CONCURRENT_STREAMS", default_value_t = 4096)]
    pub max_concurrent_streams: u32,

    /// How long a new connection may take to send its HTTP/2 preface before it
    /// is closed.
    #[arg(long, env = "REDWIRE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// How long a connection may stay open with no call in flight (gRPC's
    /// MAX_CONNECTION_IDLE); clients reconnect on their next call.
    #[arg(long, env = "REDWIRE_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// How long a client connection may be silent before an HTTP/2 ping (and TCP
    /// keepalive) checks that its peer is still there.
    #[arg(long, env = "REDWIRE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    /// How long a ping may go unanswered before the connection (and every stream
    /// on it) is closed: a peer that vanished without closing is found within
    /// interval + timeout.
    #[arg(long, env = "REDWIRE_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,
}

/// Accepted client connections, within `limits`. The stream never yields an
/// error: accept failures are handled here, not by the server loop.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = io::Result<ClientConnection>> {
    let open = Arc::new(AtomicUsize::new(0));
    let keepalive = socket2::TcpKeepalive::new().with_time(limits.keepalive_interval);
    futures::stream::unfold(
        (listener, open, keepalive, tls),
        move |(listener, open, keepalive, tls)| async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting a connection failed; retrying shortly");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                if open.load(Ordering::Relaxed) >= limits.max_connections {
                    tracing::warn!(
                        %peer,
                        max = limits.max_connections,
                        "connection refused: --max-connections reached"
                    );
                    drop(stream);
                    continue;
                }
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(error = %err, "setting TCP_NODELAY failed");
                }
                if let Err(err) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                    tracing::debug!(error = %err, "setting TCP keepalive failed");
                }
                let io = match &tls {
                    Some(tls) => Io::Handshaking(Box::new(tls.acceptor().accept(stream))),
                    None => Io::Plain(stream),
                };
                let connection = ClientConnection::new(io, peer, &open, limits);
                return Some((Ok(connection), (listener, open, keepalive, tls)));
            }
        },
    )
}

/// Calls in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    calls: AtomicUsize,
    /// Milliseconds after `opened` when the last call ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            calls: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Counts a call until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> CallGuard {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    /// When the connection last became idle; None while a call is in flight.
    fn idle_since(&self) -> Option<Instant> {
        (self.calls.load(Ordering::Acquire) == 0).then(|| {
            self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
        })
    }
}

/// Keeps a connection's call count up while a call (and its reply) is alive.
#[derive(Debug)]
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every request on a connection can see of it (a request extension).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The names of the client's verified TLS certificate, if it sent one.
    pub client_names: ClientNames,
    activity: Arc<Activity>,
}

/// A connection's byte stream: plain TCP, or TLS once its handshake is done.
enum Io {
    Plain(TcpStream),
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain",
            Self::Handshaking(_) => "Handshaking",
            Self::Tls(_) => "Tls",
        })
    }
}

/// One accepted client connection: a TCP stream that closes itself when its
/// handshake or idle deadline passes, and frees its slot when dropped.
#[derive(Debug)]
pub struct ClientConnection {
    io: Io,
    info: ClientInfo,
    open: Arc<AtomicUsize>,
    limits: ConnectionLimits,
    /// Handshake bytes still expected; 0 once the handshake has begun.
    handshake_left: usize,
    deadline: Pin<Box<Sleep>>,
}

impl ClientConnection {
    fn new(io: Io, peer: SocketAddr, open: &Arc<AtomicUsize>, limits: ConnectionLimits) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Self {
            io,
            info: ClientInfo {
                peer,
                client_names: ClientNames::default(),
                activity: Arc::new(Activity::new()),
            },
            open: open.clone(),
            limits,
            handshake_left: HANDSHAKE_BYTES,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
        }
    }

    /// Fails once the handshake or idle deadline has passed; otherwise leaves
    /// the timer armed so the connection's task wakes when it passes.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.deadline.as_mut().poll(cx).is_ready() {
            if self.handshake_left > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 handshake within --handshake-timeout",
                ));
            }
            let next = match self.info.activity.idle_since() {
                Some(since) if since.elapsed() >= self.limits.idle_timeout => {
                    tracing::debug!(peer = %self.info.peer, "closing a connection idle past --idle-timeout");
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past --idle-timeout",
                    ));
                }
                Some(since) => since + self.limits.idle_timeout,
                None => Instant::now() + self.limits.idle_timeout,
            };
            self.deadline.as_mut().reset(next);
        }
        Ok(())
    }
}

impl ClientConnection {
    /// Drives the TLS handshake, if one is under way; ready once the stream can
    /// carry HTTP/2 bytes.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Io::Handshaking(accept) = &mut self.io {
            let tls = ready!(Pin::new(accept.as_mut()).poll(cx)).inspect_err(|e| {
                tracing::debug!(peer = %self.info.peer, error = %e, "tls handshake failed");
            })?;
            self.info.client_names.set_from(tls.get_ref().1);
            self.io = Io::Tls(Box::new(tls));
        }
        Poll::Ready(Ok(()))
    }

    /// The stream that carries HTTP/2 bytes, once the handshake is done.
    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Pin<&mut (dyn AsyncReadWrite + Send)>>> {
        ready!(self.poll_handshake(cx))?;
        Poll::Ready(Ok(match &mut self.io {
            Io::Plain(stream) => Pin::new(stream),
            Io::Tls(stream) => Pin::new(stream.as_mut()),
            Io::Handshaking(_) => {
                return Poll::Ready(Err(io::Error::other("tls handshake not finished")));
            }
        }))
    }
}

/// What a connection's stream must do, as one object type.
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connected for ClientConnection {
    type ConnectInfo = ClientInfo;

    fn connect_info(&self) -> ClientInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClientConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        let before = buf.filled().len();
        ready!(ready!(self.poll_stream(cx))?.poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if self.handshake_left > 0 && read > 0 {
            self.handshake_left = self.handshake_left.saturating_sub(read);
            if self.handshake_left == 0 {
                let idle_deadline = Instant::now() + self.limits.idle_timeout;
                self.deadline.as_mut().reset(idle_deadline);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_stream(cx))?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_stream(cx))?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
            Io::Handshaking(_) => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_stream(cx))?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            // Nothing was sent yet that needs a close_notify: close the socket.
            Io::Handshaking(accept) => match accept.get_mut() {
                Some(stream) => Pin::new(stream).poll_shutdown(cx),
                None => Poll::Ready(Ok(())),
            },
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The tower layer that counts calls per connection (for the idle timeout) and
/// holds every reply's bytes to the reply budget until HTTP/2 has taken them.
#[derive(Debug, Clone)]
pub struct ReplyLayer {
    budget: Arc<ReplyBudget>,
}

impl ReplyLayer {
    /// A layer whose replies share `budget_bytes` across the server.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: Arc::new(ReplyBudget {
                limit: budget_bytes,
                held: AtomicUsize::new(0),
            }),
        }
    }
}

/// Reply bytes the server holds for clients that have not taken them yet.
#[derive(Debug)]
struct ReplyBudget {
    limit: usize,
    held: AtomicUsize,
}

impl ReplyBudget {
    /// Counts `bytes` as held, unless that would pass the limit.
    fn try_hold(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl<S> tower_layer::Layer<S> for ReplyLayer {
    type Service = ReplyService<S>;

    fn layer(&self, inner: S) -> ReplyService<S> {
        ReplyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`ReplyLayer`].
#[derive(Debug, Clone)]
pub struct ReplyService<S> {
    inner: S,
    layer: ReplyLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ReplyService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ReplyBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = request
            .extensions()
            .get::<ClientInfo>()
            .map(|info| info.activity.begin());
        let budget = self.layer.budget.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| ReplyBody {
                inner,
                budget,
                _call: call,
                rest: Bytes::new(),
                held: 0,
                refused: false,
            }))
        })
    }
}

/// A reply body that counts each data frame against the reply budget until
/// HTTP/2 asks for the next one (it asks only once it has room to send what it
/// took), and hands frames larger than [`REPLY_CHUNK`] over a piece at a time.
#[derive(Debug)]
pub struct ReplyBody<B> {
    inner: B,
    budget: Arc<ReplyBudget>,
    _call: Option<CallGuard>,
    /// What is left of the large frame being handed over.
    rest: Bytes,
    /// Bytes of the frame in hand counted against the budget.
    held: usize,
    /// The reply was replaced by a RESOURCE_EXHAUSTED status; nothing follows.
    refused: bool,
}

impl<B> ReplyBody<B> {
    /// The next piece of the large frame in hand, if any.
    fn next_piece(&mut self) -> Option<Bytes> {
        if self.rest.is_empty() {
            return None;
        }
        let len = self.rest.len().min(REPLY_CHUNK);
        Some(self.rest.split_to(len))
    }

    /// The trailers that end a reply that does not fit the budget.
    fn refusal(&self, len: usize) -> Frame<Bytes> {
        let refusal = Error::refused(
            Reason::ReplyBudgetExhausted,
            format!(
                "the reply ({len} bytes) does not fit the server's reply budget \
                 (--reply-buffer-bytes {}) while other clients have not read theirs; retry shortly",
                self.budget.limit
            ),
        )
        .with("limit", self.budget.limit);
        Frame::trailers(refusal.into_trailers())
    }
}

impl<B> Drop for ReplyBody<B> {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

impl<B> Body for ReplyBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(None);
        }
        if let Some(piece) = this.next_piece() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        // HTTP/2 has room for more, so what it took last is on its way.
        this.budget.release(std::mem::take(&mut this.held));
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        if !this.budget.try_hold(data.len()) {
            this.refused = true;
            return Poll::Ready(Some(Ok(this.refusal(data.len()))));
        }
        this.held = data.len();
        if data.len() <= REPLY_CHUNK {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        this.rest = data;
        let piece = this.next_piece();
        Poll::Ready(piece.map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.refused || (self.rest.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.rest.is_empty() && !self.refused {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}
