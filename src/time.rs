//! Conversions between Rust time and the wire: protobuf durations and timestamps,
//! and the whole milliseconds Redis counts in. One place, so every service rounds
//! the same way.

use std::time::Duration;

/// Whole milliseconds (saturating), as Redis takes them (PX, PEXPIRE, BLOCK).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A protobuf duration (saturating).
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp from milliseconds since the Unix epoch (Redis server time).
pub fn proto_timestamp_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1_999)), 1);
        let d = proto_duration(Duration::from_millis(1_250));
        assert_eq!((d.seconds, d.nanos), (1, 250_000_000));
        let t = proto_timestamp_ms(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }
}
