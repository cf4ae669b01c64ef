//! Open streams follow the auth file: a reply body that ends its call with the
//! refusal a new call would get once the caller's token is revoked, expires, or
//! loses the grant.
//!
//! Nothing runs while a call's replies flow: the body starts to watch the first
//! time it waits for the handler (a unary call never does), and then wakes only
//! when a reload takes effect (the file is checked every second, so a revoked
//! stream ends within about a second of the edit) or when its token's `expires`
//! passes. Ending the body drops the handler's stream, which is how every stream
//! notices that its client left: `Consume` gives its jobs back, `Hold` releases
//! its lock, subscriptions unsubscribe.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures::Stream;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::WatchStream;
use tonic::codegen::Bytes;

use super::{Auth, Caller};
use crate::error::{Error, Reason};

/// What a body needs to check its caller again.
#[derive(Debug)]
pub(super) struct Watch {
    auth: Arc<Auth>,
    caller: Caller,
    /// Armed at the first wait: reloads, and the token's expiry.
    armed: Option<Armed>,
}

#[derive(Debug)]
struct Armed {
    reloads: WatchStream<()>,
    expiry: Option<Pin<Box<Sleep>>>,
}

impl Watch {
    pub(super) fn new(auth: Arc<Auth>, caller: Caller) -> Self {
        Self {
            auth,
            caller,
            armed: None,
        }
    }

    /// The refusal to end the call with, if the caller is no longer allowed.
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Option<Error> {
        let armed = self.armed.as_mut()?;
        if let Some(expiry) = armed.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            return Some(Error::refused(
                Reason::Unauthenticated,
                format!("token {} has expired", self.caller.principal.name),
            ));
        }
        let mut reloaded = false;
        while let Poll::Ready(Some(())) = Pin::new(&mut armed.reloads).poll_next(cx) {
            reloaded = true;
        }
        if !reloaded {
            return None;
        }
        self.auth.recheck(&self.caller).err()
    }

    /// Starts watching, if not yet: from now on reloads and expiry wake the body.
    fn arm(&mut self, cx: &mut Context<'_>) -> Option<Error> {
        if self.armed.is_some() {
            return None;
        }
        let expiry = self.caller.principal.expires().map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Box::pin(tokio::time::sleep_until(Instant::now() + left))
        });
        self.armed = Some(Armed {
            reloads: WatchStream::from_changes(self.auth.reloads()),
            expiry,
        });
        // A reload between the call's check and now is seen by the recheck.
        self.auth
            .recheck(&self.caller)
            .err()
            .or_else(|| self.poll_revoked(cx))
    }
}

/// A reply body that ends with the caller's refusal once the caller is no
/// longer allowed (see the module docs).
#[derive(Debug)]
pub struct Revocable<B> {
    /// None once the call was ended.
    inner: Option<B>,
    watch: Option<Watch>,
}

impl<B> Revocable<B> {
    pub(super) fn new(inner: B, watch: Option<Watch>) -> Self {
        Self {
            inner: Some(inner),
            watch,
        }
    }

    /// Drops the handler's body and ends the reply with `refusal`.
    fn end(&mut self, refusal: Error) -> Frame<Bytes> {
        self.inner = None;
        if let Some(watch) = &self.watch {
            tracing::info!(principal = %watch.caller.principal.name, reason = %refusal, "ending a stream whose caller lost its access");
        }
        Frame::trailers(refusal.into_trailers())
    }
}

impl<B> Body for Revocable<B>
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(refusal) = this.watch.as_mut().and_then(|w| w.poll_revoked(cx)) {
            return Poll::Ready(Some(Ok(this.end(refusal))));
        }
        let frame = Pin::new(inner).poll_frame(cx);
        if frame.is_pending()
            && let Some(refusal) = this.watch.as_mut().and_then(|w| w.arm(cx))
        {
            return Poll::Ready(Some(Ok(this.end(refusal))));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B: Default> Default for Revocable<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}
