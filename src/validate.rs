//! Request validation shared by every service. Each check names the request field
//! it rejects, e.g. `values[3].key: must not be empty`.

use std::fmt::Display;
use std::time::Duration;

use crate::error::{Error, Result};

/// Size limits on what a request carries, from the config.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Largest key (or hash field name) accepted, in bytes.
    #[arg(long, env = "REDWIRE_MAX_KEY_BYTES", default_value_t = 1024)]
    pub max_key_bytes: usize,

    /// Largest value (or member, or item) accepted, in bytes.
    #[arg(long, env = "REDWIRE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,

    /// Most keys, fields, members or values in one request.
    #[arg(long, env = "REDWIRE_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
}

impl Limits {
    /// A key (or field name): not empty, not too long.
    ///
    /// `field` is formatted only when the check fails (pass `format_args!` for a
    /// field inside a list), so a valid request allocates nothing here.
    pub fn key(&self, field: impl Display, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid(field.to_string(), "must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::invalid(
                field.to_string(),
                format!(
                    "is {} bytes; the limit is {} bytes",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A value: not too long (empty values are fine).
    pub fn value(&self, field: impl Display, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::invalid(
                field.to_string(),
                format!(
                    "is {} bytes; the limit is {} bytes",
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A list of entries: at least one, at most `max_batch`.
    pub fn batch<T>(&self, field: &str, items: &[T]) -> Result<()> {
        self.entries(field, items.len())
    }

    /// `len` entries of a list or map: at least one, at most `max_batch`.
    pub fn entries(&self, field: impl Display, len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::invalid(
                field.to_string(),
                "must contain at least one entry",
            ));
        }
        at_most_entries(field, len, self.max_batch)
    }

    /// A requested number of items (jobs, entries, values): `default` when 0, and
    /// at most `max_batch`.
    pub fn count(&self, field: &str, value: u32, default: u32) -> Result<usize> {
        let n = usize::try_from(if value == 0 { default } else { value }).unwrap_or(usize::MAX);
        if n > self.max_batch {
            return Err(Error::invalid(
                field,
                format!("is {n}; the limit is {}", self.max_batch),
            ));
        }
        Ok(n)
    }

    /// A non-empty batch of keys, each valid.
    pub fn keys(&self, field: &str, keys: &[String]) -> Result<()> {
        self.batch(field, keys)?;
        keys.iter()
            .enumerate()
            .try_for_each(|(i, key)| self.key(format_args!("{field}[{i}]"), key))
    }

    /// A non-empty batch of values, each within the size limit.
    pub fn values(&self, field: &str, values: &[Vec<u8>]) -> Result<()> {
        self.batch(field, values)?;
        values
            .iter()
            .enumerate()
            .try_for_each(|(i, value)| self.value(format_args!("{field}[{i}]"), value))
    }
}

/// Longest queue, job id or group name.
pub const MAX_NAME_BYTES: usize = 200;

/// A name (queue, job id, ordering group): 1 to 200 bytes of ASCII letters, digits
/// and `-_.:`. The narrow alphabet keeps names safe in keys, logs and URLs.
///
/// Here too `field` is formatted only when the check fails.
pub fn name(field: impl Display, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field.to_string(), "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field.to_string(),
            format!("is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(Error::invalid(
            field.to_string(),
            format!("may only contain letters, digits and -_.: (found {bad:?})"),
        ));
    }
    Ok(())
}

/// A protobuf duration that may be absent or zero (a wait). Negative or malformed
/// durations are rejected.
pub fn duration(
    field: impl Display + Copy,
    value: Option<&prost_types::Duration>,
) -> Result<Option<Duration>> {
    let Some(d) = value else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Error::invalid(
            field.to_string(),
            "must be a non-negative duration",
        ));
    }
    let seconds = u64::try_from(d.seconds)
        .map_err(|_| Error::invalid(field.to_string(), "is out of range"))?;
    let nanos =
        u32::try_from(d.nanos).map_err(|_| Error::invalid(field.to_string(), "is out of range"))?;
    Ok(Some(Duration::new(seconds, nanos)))
}

/// A time to live: absent, or at least one millisecond (Redis counts in ms).
pub fn ttl(
    field: impl Display + Copy,
    value: Option<&prost_types::Duration>,
) -> Result<Option<Duration>> {
    match duration(field, value)? {
        Some(d) if d < Duration::from_millis(1) => {
            Err(Error::invalid(field.to_string(), "must be at least 1ms"))
        }
        // Redis keeps expiry instants in ms since the epoch; centuries are plenty.
        Some(d) if d > Duration::from_secs(100 * 365 * 24 * 3600) => Err(Error::invalid(
            field.to_string(),
            "must be at most 100 years",
        )),
        other => Ok(other),
    }
}

/// `len` entries of a list or map: at most `max` (none is fine).
pub fn at_most_entries(field: impl Display, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::invalid(
            field.to_string(),
            format!("has {len} entries; the limit is {max}"),
        ));
    }
    Ok(())
}

/// A number that is at most `max`.
pub fn at_most(field: impl Display, value: u32, max: u32) -> Result<()> {
    if value > max {
        return Err(Error::invalid(
            field.to_string(),
            format!("must be at most {max}"),
        ));
    }
    Ok(())
}

/// A field the request must set.
pub fn required<T>(field: impl Display, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field.to_string(), "is required"))
}

/// A duration that, when present, is at least `min`.
pub fn at_least(
    field: impl Display + Copy,
    value: Option<&prost_types::Duration>,
    min: Duration,
) -> Result<Option<Duration>> {
    match duration(field, value)? {
        Some(d) if d < min => Err(Error::invalid(
            field.to_string(),
            format!("must be at least {}", humantime::format_duration(min)),
        )),
        other => Ok(other),
    }
}

/// A score: any number but NaN.
pub fn score(field: impl Display, value: f64) -> Result<()> {
    if value.is_nan() {
        return Err(Error::invalid(
            field.to_string(),
            "must be a number, not NaN",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 4,
        max_batch: 2,
    };

    fn field_of(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_checked_by_index() {
        assert_eq!(
            field_of(LIMITS.keys("keys", &["a".into(), String::new()])),
            "keys[1]"
        );
        assert_eq!(field_of(LIMITS.keys("keys", &[])), "keys");
        assert_eq!(
            field_of(LIMITS.keys("keys", &["a".into(), "b".into(), "c".into()])),
            "keys"
        );
        assert_eq!(field_of(LIMITS.key("key", "123456789")), "key");
        assert!(
            LIMITS
                .keys("keys", &["a".into(), "12345678".into()])
                .is_ok()
        );
    }

    #[test]
    fn counts_default_and_stay_within_the_batch_limit() {
        assert_eq!(LIMITS.count("count", 0, 1).expect("default"), 1);
        assert_eq!(LIMITS.count("count", 2, 1).expect("within"), 2);
        assert_eq!(field_of(LIMITS.count("count", 3, 1).map(drop)), "count");
    }

    #[test]
    fn values_may_be_empty_but_not_too_long() {
        assert!(LIMITS.value("value", b"").is_ok());
        assert_eq!(field_of(LIMITS.value("value", b"12345")), "value");
    }

    #[test]
    fn ttls_must_be_at_least_a_millisecond() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(ttl("ttl", None).expect("absent is fine"), None);
        assert_eq!(
            ttl("ttl", Some(&d(1, 500_000_000))).expect("valid"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            field_of(ttl("ttl", Some(&d(0, 999_999))).map(|_| ())),
            "ttl"
        );
        assert_eq!(field_of(ttl("ttl", Some(&d(-1, 0))).map(|_| ())), "ttl");
        assert_eq!(
            duration("wait", Some(&d(0, 0))).expect("zero wait"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn names_use_a_narrow_alphabet() {
        assert!(name("queue", "mail.out:v2_a-b").is_ok());
        assert_eq!(field_of(name("queue", "")), "queue");
        assert_eq!(field_of(name("queue", "a b")), "queue");
        assert_eq!(field_of(name("queue", "a{b}")), "queue");
        assert_eq!(field_of(name("queue", &"q".repeat(201))), "queue");
    }

    #[test]
    fn nan_scores_are_rejected() {
        assert_eq!(
            field_of(score("members[0].score", f64::NAN)),
            "members[0].score"
        );
        assert!(score("s", f64::INFINITY).is_ok());
    }
}
