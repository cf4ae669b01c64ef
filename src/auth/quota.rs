//! Tenants and their quotas: how many calls per second a tenant's callers may
//! make together, and how large one request message may be.
//!
//! The call rate is a token bucket per tenant holding one second of calls, so a
//! tenant may burst up to `calls_per_second` at once and then gets that many per
//! second. It is kept in this process's memory: with several Redwire instances
//! behind a balancer, each allows the rate (a shared budget would cost a Redis
//! round trip per call). A reload of the auth file starts the buckets full.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Reason};
use crate::framing::MessageFramer;

/// What a tenant may use; None for no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Calls per second over all of the tenant's callers (bursts of up to as
    /// many).
    pub calls_per_second: Option<u32>,
    /// Largest request message, in bytes (the encoded protobuf message, so a
    /// job's payload plus its few bytes of fields).
    pub max_payload_bytes: Option<usize>,
}

impl Quota {
    /// Why the quota cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.calls_per_second == Some(0) {
            return Err("calls_per_second must be at least 1".into());
        }
        if self.max_payload_bytes == Some(0) {
            return Err("max_payload_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// A tenant of the auth file: its name (its key space) and what it may use.
#[derive(Debug)]
pub struct Tenant {
    /// The name, as keys and audit lines carry it.
    pub name: Arc<str>,
    /// Its limits.
    pub quota: Quota,
    bucket: Mutex<Bucket>,
}

/// The calls a tenant may still make now.
#[derive(Debug)]
struct Bucket {
    calls: f64,
    filled_at: Instant,
}

impl Tenant {
    /// A tenant with a full bucket.
    pub fn new(name: &str, quota: Quota) -> Self {
        Self {
            name: name.into(),
            bucket: Mutex::new(Bucket {
                calls: f64::from(quota.calls_per_second.unwrap_or(0)),
                filled_at: Instant::now(),
            }),
            quota,
        }
    }

    /// Takes one call from the tenant's rate; `QUOTA_EXCEEDED` with the time
    /// until the next call is allowed when it is spent.
    pub fn admit(&self) -> Result<(), Error> {
        let Some(rate) = self.quota.calls_per_second else {
            return Ok(());
        };
        let rate = f64::from(rate);
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.filled_at).as_secs_f64();
        bucket.calls = (bucket.calls + elapsed * rate).min(rate);
        bucket.filled_at = now;
        if bucket.calls >= 1.0 {
            bucket.calls -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.calls) / rate);
        Err(Error::refused(
            Reason::QuotaExceeded,
            format!(
                "tenant {} is over its quota of {rate} calls per second; retry in {} ms",
                self.name,
                wait.as_millis().max(1)
            ),
        )
        .with("tenant", &self.name)
        .with("limit", rate)
        .retry_after(wait))
    }

    /// The refusal of a request message of `len` bytes, if it is over the
    /// tenant's `max_payload_bytes`.
    pub fn check_payload(&self, len: usize) -> Result<(), Error> {
        match self.quota.max_payload_bytes {
            Some(max) if len > max => Err(Error::refused(
                Reason::PayloadTooLarge,
                format!(
                    "a request message of {len} bytes is over tenant {}'s max_payload_bytes of {max}",
                    self.name
                ),
            )
            .with("tenant", &self.name)
            .with("limit", max)),
            _ => Ok(()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with `PAYLOAD_TOO_LARGE` at the prefix of the
    /// first message longer than its tenant allows, before the message is read:
    /// the handler sees the error instead of the message, so nothing of it is
    /// written.
    pub struct PayloadLimit<B> {
        #[pin]
        inner: B,
        tenant: Arc<Tenant>,
        framer: MessageFramer,
    }
}

impl<B> PayloadLimit<B> {
    /// Limits `inner` to messages of at most `tenant`'s `max_payload_bytes`.
    pub fn new(inner: B, tenant: Arc<Tenant>) -> Self {
        Self {
            inner,
            tenant,
            framer: MessageFramer::default(),
        }
    }
}

impl<B> http_body::Body for PayloadLimit<B>
where
    B: http_body::Body<Data = bytes::Bytes, Error = tonic::Status>,
{
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let tenant = &*this.tenant;
            if let Err(refusal) = this.framer.feed(data, |len| tenant.check_payload(len)) {
                return std::task::Poll::Ready(Some(Err(tonic::Status::from(refusal))));
            }
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_allows_a_burst_then_refills_over_time() {
        let quota = Quota {
            calls_per_second: Some(4),
            max_payload_bytes: None,
        };
        let tenant = Tenant::new("acme", quota);
        for _ in 0..4 {
            tenant.admit().expect("within the burst");
        }
        let refused = tenant.admit().expect_err("the burst is spent");
        assert_eq!(refused.reason(), Reason::QuotaExceeded);
        let status = tonic::Status::from(refused);
        let details = tonic_types::StatusExt::get_error_details(&status);
        let retry = details.retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(250)).await;
        tenant.admit().expect("one call refilled");
        assert!(tenant.admit().is_err());
    }

    #[test]
    fn payloads_over_the_limit_are_refused() {
        let quota = Quota {
            calls_per_second: None,
            max_payload_bytes: Some(10),
        };
        let tenant = Tenant::new("acme", quota);
        assert!(tenant.check_payload(10).is_ok());
        let refused = tenant.check_payload(11).expect_err("over");
        assert_eq!(refused.reason(), Reason::PayloadTooLarge);
        assert!(refused.to_string().contains("max_payload_bytes of 10"));
    }
}
