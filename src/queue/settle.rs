//! Settling leased jobs: the checks on ack, nack and extend items and the one
//! stale-lease error, shared by the unary `Ack` / `Nack` / `ExtendLease` RPCs and
//! the Consume stream, so the two paths cannot drift apart.
//!
//! `at` is the item's path in the request (`items[3]`, `item`, or `ack` on the
//! stream); it is formatted only when a check fails.

use std::fmt::Display;
use std::time::Duration;

use crate::error::{Error, Reason, Result};
use crate::proto::{AckItem, ExtendItem, NackItem};
use crate::time::millis;
use crate::validate::{self, Limits};

/// Checks an ack item: a valid job id and a result within the value limit.
pub(super) fn ack(limits: &Limits, at: impl Display, item: &AckItem) -> Result<()> {
    validate::name(format_args!("{at}.job_id"), &item.job_id)?;
    limits.value(format_args!("{at}.result"), &item.result)
}

/// Checks a nack item: a valid job id, an error text within the value limit and
/// a well-formed retry delay. Returns the delay in ms (None: the job's backoff).
pub(super) fn nack(limits: &Limits, at: impl Display, item: &NackItem) -> Result<Option<u64>> {
    validate::name(format_args!("{at}.job_id"), &item.job_id)?;
    limits.value(format_args!("{at}.error"), item.error.as_bytes())?;
    let retry_after =
        validate::duration(format_args!("{at}.retry_after"), item.retry_after.as_ref())?;
    Ok(retry_after.map(millis))
}

/// Checks an extend item: a valid job id and a positive lease. Returns the new
/// lease length, `default_lease` when the item has none.
pub(super) fn extend(
    at: impl Display,
    item: &ExtendItem,
    default_lease: Duration,
) -> Result<Duration> {
    validate::name(format_args!("{at}.job_id"), &item.job_id)?;
    let lease = validate::ttl(format_args!("{at}.lease"), item.lease.as_ref())?;
    Ok(lease.unwrap_or(default_lease))
}

/// The refusal of an ack, nack or extend whose lease token is not the job's
/// current lease.
pub(super) fn stale(job_id: &str) -> Error {
    Error::refused(
        Reason::LeaseStale,
        format!(
            "job {job_id:?}: the lease token is not the job's current lease (it expired, was redelivered, or the job finished)"
        ),
    )
    .with("job_id", job_id)
}
