//! The caller's gRPC deadline, read from the `grpc-timeout` request header, so
//! blocking waits never outlast the call.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Time left until the caller's deadline, if it sent one.
pub fn remaining(metadata: &MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// How long before the caller's deadline a blocking wait ends. Redis checks
/// blocked clients' timeouts from its cron (every 100 ms at the default `hz 10`),
/// so a wait can overrun by that much; the margin leaves room for it and the reply.
pub const REPLY_MARGIN: Duration = Duration::from_millis(150);

/// How long a blocking command may wait: the requested wait, cut so it ends
/// [`REPLY_MARGIN`] before the caller's deadline.
pub fn bounded_wait(requested: Duration, deadline: Option<Duration>) -> Duration {
    match deadline {
        Some(left) => requested.min(left.saturating_sub(REPLY_MARGIN)),
        None => requested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn waits_end_before_the_deadline() {
        let wait = bounded_wait(Duration::from_secs(10), Some(Duration::from_millis(500)));
        assert_eq!(wait, Duration::from_millis(350));
        assert_eq!(
            bounded_wait(Duration::from_secs(1), None),
            Duration::from_secs(1)
        );
        assert_eq!(
            bounded_wait(Duration::from_secs(1), Some(Duration::from_millis(5))),
            Duration::ZERO
        );
    }
}
