//! One log line per gRPC call, written by a tower layer around every service
//! once the call has ended: method, status code, duration and peer as fields,
//! plus the error's reason and message when it failed. The same place records
//! the call's metrics ([`super::metrics`]): it is the one place that sees
//! every call start and end with the code the client sees.
//!
//! Each call also gets its span ([`traces::server_span`]): the context of the
//! lines logged while it runs, and the exported server span when traces are on.
//!
//! The code is read where it leaves the server, from the response headers (an
//! error answered at once) or the trailers (every other call), so it is the
//! code the client sees, whichever layer produced it. A reply the client
//! abandoned before its trailers is logged as `CANCELLED`.
//!
//! Levels: server failures (`INTERNAL`, `UNKNOWN`, `DATA_LOSS`) at error;
//! `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and `DEADLINE_EXCEEDED`, which an
//! operator should notice when they pile up, at warn; every other call at debug.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tonic::Code;
use tonic::codegen::{Service, http};
use tonic_types::StatusExt;

use tracing::Instrument;

use prometheus_client::metrics::counter::Counter;

use super::metrics::{Metrics, RpcLabels};
use super::traces;
use crate::connection::ClientInfo;
use crate::error::code_name;
use crate::framing::MessageFramer;

/// Logs and measures every call that passes through it; see the module
/// documentation.
#[derive(Debug, Clone, Default)]
pub struct RequestLogLayer {
    metrics: Arc<Metrics>,
}

impl RequestLogLayer {
    /// Records calls' metrics in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RequestLogLayer {
    type Service = RequestLogService<S>;

    fn layer(&self, inner: S) -> RequestLogService<S> {
        RequestLogService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`RequestLogLayer`].
#[derive(Debug, Clone)]
pub struct RequestLogService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ResBody> Service<http::Request<tonic::body::Body>> for RequestLogService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let started = self.metrics.call_started(request.uri().path());
        let span = traces::server_span(request.uri().path(), request.headers());
        // Only the streaming sides are counted: a unary call has one message.
        let request = match started.received {
            Some(received) => request.map(|body| {
                tonic::body::Body::new(CountedRequest {
                    inner: body,
                    messages: Messages::new(received),
                })
            }),
            None => request,
        };
        let mut call = Call {
            metrics: self.metrics.clone(),
            rpc: started.rpc,
            sent: started.sent.map(Messages::new),
            span: span.clone(),
            // Shares the request's bytes: no allocation per call.
            path: request.uri().path_and_query().cloned(),
            peer: request
                .extensions()
                .get::<ClientInfo>()
                .map(|info| info.peer),
            started: Instant::now(),
            logged: false,
        };
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = response.await?;
                // An error answered at once carries its status in the headers.
                if response.headers().contains_key("grpc-status") {
                    call.finish(response.headers());
                }
                Ok(response.map(|inner| LoggedBody { inner, call }))
            }
            .instrument(span),
        )
    }
}

/// The fields of one line, so each level writes the same ones.
struct Line<'a> {
    method: &'a str,
    peer: Option<std::net::SocketAddr>,
    code: &'static str,
    reason: &'a str,
    error: &'a str,
    duration_ms: f64,
}

/// Writes `$line` at `$level` with message `$message`. `error`, not `message`:
/// a field named `message` would be a second "message" key next to the event's
/// own in JSON logs.
macro_rules! write_line {
    ($level:ident, $line:expr, $message:expr) => {{
        let line = $line;
        tracing::$level!(
            method = line.method,
            code = line.code,
            duration_ms = line.duration_ms,
            peer = line.peer.map(tracing::field::display),
            reason = (!line.reason.is_empty()).then_some(line.reason),
            error = (!line.error.is_empty()).then_some(line.error),
            "{}",
            $message
        )
    }};
}

/// What is known of a call until its line is written.
#[derive(Debug)]
struct Call {
    metrics: Arc<Metrics>,
    rpc: RpcLabels,
    /// Counts the reply's messages, when the server streams.
    sent: Option<Messages>,
    /// The call's span; it ends when the call's line is written and the
    /// reply body is gone.
    span: tracing::Span,
    path: Option<http::uri::PathAndQuery>,
    peer: Option<std::net::SocketAddr>,
    started: Instant,
    logged: bool,
}

impl Call {
    /// Writes the call's line from the headers or trailers holding its status.
    fn finish(&mut self, status_headers: &http::HeaderMap) {
        let code = status_headers
            .get("grpc-status")
            .map_or(Code::Unknown, |value| Code::from_bytes(value.as_bytes()));
        if code == Code::Ok {
            self.log(code, "", "");
            return;
        }
        let status = tonic::Status::from_header_map(status_headers);
        let reason = status
            .as_ref()
            .and_then(|status| status.get_details_error_info())
            .map(|info| info.reason)
            .unwrap_or_default();
        let message = status.as_ref().map_or("", |status| status.message());
        self.log(code, &reason, message);
    }

    /// Writes the line once, at the level the code calls for.
    fn log(&mut self, code: Code, reason: &str, error: &str) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let method = self.path.as_ref().map_or("", |path| path.path());
        self.metrics.call_ended(self.rpc, code_name(code), elapsed);
        traces::finish_server_span(&self.span, code, error);
        let line = Line {
            method,
            peer: self.peer,
            code: code_name(code),
            reason,
            error,
            duration_ms: millis(elapsed),
        };
        match code {
            Code::Internal | Code::Unknown | Code::DataLoss => {
                write_line!(error, line, "request failed")
            }
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                write_line!(warn, line, "request failed")
            }
            Code::Ok => write_line!(debug, line, "request"),
            Code::Cancelled => write_line!(debug, line, "request cancelled"),
            _ => write_line!(debug, line, "request rejected"),
        }
    }
}

/// A duration in milliseconds with microsecond precision, for log fields.
fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e3
}

/// A reply body that writes its call's line when the trailers pass, or when it
/// is dropped without them (the client went away; see `Drop for Call`).
#[derive(Debug)]
pub struct LoggedBody<B> {
    inner: B,
    call: Call,
}

/// A call dropped before its line was written (the client went away, or the
/// reply never started) is written as cancelled, so its in-flight gauge
/// always comes down again.
impl Drop for Call {
    fn drop(&mut self) {
        self.log(Code::Cancelled, "", "the reply was abandoned");
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body<Data = bytes::Bytes> + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(trailers) = frame.trailers_ref() {
                this.call.finish(trailers);
            } else if let (Some(data), Some(sent)) = (frame.data_ref(), &mut this.call.sent) {
                sent.count(data);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the gRPC messages in a body's data frames.
#[derive(Debug)]
struct Messages {
    framer: MessageFramer,
    counter: Counter,
}

impl Messages {
    fn new(counter: Counter) -> Self {
        Self {
            framer: MessageFramer::default(),
            counter,
        }
    }

    fn count(&mut self, data: &[u8]) {
        let started = self.framer.count(data);
        if started > 0 {
            self.counter.inc_by(started);
        }
    }
}

pin_project_lite::pin_project! {
    /// A client-streaming call's request body, counting its messages.
    struct CountedRequest {
        #[pin]
        inner: tonic::body::Body,
        messages: Messages,
    }
}

impl Body for CountedRequest {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.messages.count(data);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
