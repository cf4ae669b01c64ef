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

/// How long before the caller's deadline Redwire's own waits end (Dequeue, Lock
/// Acquire: wake-ups, no Redis blocking command): room for the last Redis call
/// and the reply, also on a busy machine (10 ms was seen to be too little on two
/// cores running the test suite).
pub const OWN_WAIT_MARGIN: Duration = Duration::from_millis(50);

/// How long before the caller's deadline a Redis blocking command's timeout ends
/// (ListPop's BLMPOP). Redis 7.0 checks blocked clients' timeouts when its event
/// loop wakes, on an idle server only at its cron tick (every 100 ms at the
/// default `hz 10`): measured on an idle server, a BLPOP ended 35 to 91 ms after
/// its timeout. One tick plus room for the reply.
pub const REDIS_BLOCK_MARGIN: Duration = Duration::from_millis(110);

/// How long one of Redwire's own waits may last: the requested wait, cut so it
/// ends [`OWN_WAIT_MARGIN`] before the caller's deadline.
pub fn own_wait(requested: Duration, deadline: Option<Duration>) -> Duration {
    bounded(requested, deadline, OWN_WAIT_MARGIN)
}

/// How long a Redis blocking command may wait: the requested wait, cut so it
/// ends [`REDIS_BLOCK_MARGIN`] before the caller's deadline.
pub fn redis_block(requested: Duration, deadline: Option<Duration>) -> Duration {
    bounded(requested, deadline, REDIS_BLOCK_MARGIN)
}

fn bounded(requested: Duration, deadline: Option<Duration>, margin: Duration) -> Duration {
    match deadline {
        Some(left) => requested.min(left.saturating_sub(margin)),
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
    fn waits_end_their_margin_before_the_deadline() {
        let deadline = Some(Duration::from_millis(500));
        let long = Duration::from_secs(10);
        assert_eq!(own_wait(long, deadline), Duration::from_millis(450));
        assert_eq!(redis_block(long, deadline), Duration::from_millis(390));
        assert_eq!(
            own_wait(Duration::from_secs(1), None),
            Duration::from_secs(1)
        );
        assert_eq!(
            redis_block(Duration::from_secs(1), Some(Duration::from_millis(5))),
            Duration::ZERO
        );
    }
}
